"""The project as a real package: build the wheel, install it into a fresh virtual environment outside the
checkout, and run both command lines and a smoke-sized loop from a recipe shipped inside the wheel.

Marked `package` (run with `make test-package`, not in `make test`): installing torch and the rest into a
new environment takes minutes even from the local pip cache. The wheel is built from a copy of the
checkout's files (tracked and not ignored), as a fresh clone would have them.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.package

ROOT = Path(__file__).resolve().parents[1]


def run(command, cwd, env=None, timeout=900):
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_wheel_installs_and_runs_a_shipped_recipe_outside_the_checkout(tmp_path):
    # The checkout's files, as a clone has them: no .venv, build/ or egg-info leftovers in the wheel.
    files = run(["git", "ls-files", "-co", "--exclude-standard"], ROOT).stdout.split("\n")
    source = tmp_path / "src"
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", tmp_path / "dist"], tmp_path)
    [wheel] = (tmp_path / "dist").glob("rlhf_loop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"rlhf/recipes/quickstart.yaml", "rlhf/recipes/smoke/loop.yaml", "rlhf/recipes/data/smoke/sft.jsonl",
            "rlhf/data/prompts.jsonl", "labeler/migrations/versions/0001_initial_schema.py"} <= set(names)
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    assert not [n for n in names if "__pycache__" in n]

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q"]
    run([*pip, "torch==2.13.0"], tmp_path)  # first, pinned: the CPU wheel in the local cache
    run([*pip, f"{wheel}[train]"], tmp_path)  # the training stages are the [train] extra (the base is the labeler)

    work = tmp_path / "work"  # outside the checkout: nothing of it on the path
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    where = run(["python", "-c", "import rlhf, labeler; print(rlhf.__file__); print(labeler.__file__)"], work, env).stdout
    assert all(line.startswith(str(venv)) for line in where.split()), where
    assert "loop" in run(["rlhf", "--help"], work, env).stdout
    assert "export" in run(["labeler", "--help"], work, env).stdout

    # The tiny random model (the checkout's script; it needs the embedded model's tokenizer, which the
    # fresh environment does not have), then the shipped smoke loop on it.
    tiny = tmp_path / "tiny-model"
    run([sys.executable, ROOT / "scripts" / "make_tiny_model.py", tiny], ROOT)
    run(["rlhf", "loop", "--config", "smoke", "--model_name_or_path", tiny, "--train_prompts", "6",
         "--heldout_prompts", "3"], work, env, timeout=1500)
    summary = json.loads((work / "runs" / "smoke" / "loop" / "summary.json").read_text())
    assert set(summary["heldout_pass_rate"]) == {"base", "sft", "final"}
    assert (work / "runs" / "smoke" / "loop" / "export" / "config.json").is_file()
    resolved = json.loads((work / "runs" / "smoke" / "loop" / "loop.yaml").read_text())
    assert resolved["sft_config"].startswith(str(venv)), "the stage recipes come from the installed package"
