"""schemathesis against a live `labeler serve` and its own /api/v1/openapi.json: every phase (examples,
coverage, fuzzing, stateful), every check, once with an admin's token and once with an annotator's.
It asserts no server error (5xx), no answer that breaks the document (status, content type, body
schema, headers), no schema-invalid request accepted, and no schema-valid request refused with 400.

One allowance, in the config below: a schema-valid request may be refused with 422 when it breaks a
rule that depends on stored rows (a ranking names exactly the task's responses; a task has its
project's k responses; a score is for one of the project's criteria), which no schema can state.
The annotator's run pins the project name and task id to real ones so that the fuzzer reaches the
lease and submit code, not only 404s. Examples per operation are bounded to keep it near a minute.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MAX_EXAMPLES = 12
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]
"""
PINNED = """
[parameters]
"path.name" = "demo"
"path.task_id" = 1
"""


def schemathesis_cli() -> list[str]:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "schemathesis.cli"]


def run_schemathesis(base_url: str, token: str, config: str, tmp_path: Path, name: str) -> dict:
    config_path = tmp_path / f"{name}.toml"
    config_path.write_text(config, encoding="utf-8")
    report = tmp_path / f"{name}.json"
    command = [*schemathesis_cli(), "--config-file", str(config_path), "run", f"{base_url}/api/v1/openapi.json",
               "-H", f"Authorization: Bearer {token}", "--max-examples", str(MAX_EXAMPLES), "--seed", "11", "-w", "1",
               "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "30",
               "--report", "json", "--report-json-path", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)  # its cache stays in tmp
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(report.read_text(encoding="utf-8"))
    assert done.returncode == 0 and result["failures"] == [] and result["errors"] == [], done.stdout[-6000:]
    return result


@pytest.fixture
def fuzz_world(make_user, make_project, make_token, live_server):
    admin, annotator = make_user("admin", role="admin"), make_user("annotator")
    make_project("demo", n_tasks=5, k=2, criteria=["helpful"])
    return {"url": live_server, "admin": make_token(admin), "annotator": make_token(annotator)}


@pytest.mark.parametrize("role, config", [("admin", CONFIG), ("annotator", CONFIG + PINNED)])
def test_the_api_keeps_its_openapi_document_under_schemathesis(fuzz_world, tmp_path, role, config):
    result = run_schemathesis(fuzz_world["url"], fuzz_world[role], config, tmp_path, role)
    assert result["operations"]["tested"] == result["operations"]["total"] == 9
    assert result["test_cases"]["generated"] >= 100  # it really ran
    assert result["phases"]["coverage"]["status"] == result["phases"]["fuzzing"]["status"] == "success"
