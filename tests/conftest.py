import os

# No hub at run time, and quiet tokenizers: set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


import socket  # noqa: E402
import subprocess  # noqa: E402
import uuid  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The labeler's database-backed tests run once per backend: SQLite always, PostgreSQL when this URL names a
# server the tests may create databases on (scripts/pg_test_server.sh starts a throwaway one and sets it).
POSTGRES_URL = os.environ.get("LABELER_TEST_POSTGRES_URL", "")
BACKENDS = ["sqlite", "postgresql"]


def postgres_admin_engine():
    from sqlalchemy import create_engine

    return create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


def postgres_url_for(database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(POSTGRES_URL).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template():
    """A database migrated to head once per session; each test's database is a copy of it (CREATE DATABASE
    ... TEMPLATE, ~50 ms, instead of running every migration again)."""
    from labeler.db import upgrade_database

    name = f"labeler_template_{os.getpid()}"
    engine = postgres_admin_engine()
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    upgrade_database(postgres_url_for(name))
    yield name
    engine.dispose()  # a fresh connection: tests/labeler/test_crash.py restarts the server in between
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """'sqlite' or 'postgresql'; the PostgreSQL variant skips without LABELER_TEST_POSTGRES_URL."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("PostgreSQL: LABELER_TEST_POSTGRES_URL is not set (scripts/pg_test_server.sh sets it; make test runs it)")
    return request.param


@pytest.fixture
def new_database(backend, tmp_path, request):
    """new_database(migrated=True) -> URL of a database of this test's backend that nothing else uses:
    a SQLite file under tmp_path, or a fresh PostgreSQL database dropped when the test ends."""
    made: list[str] = []

    def make(migrated: bool = True) -> str:
        from labeler.db import upgrade_database

        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'labels-{len(made)}.db'}"
            made.append(url)
            if migrated:
                upgrade_database(url)
            return url
        name = f"labeler_test_{uuid.uuid4().hex[:12]}"
        template = request.getfixturevalue("postgres_template") if migrated else "template0"
        engine = postgres_admin_engine()
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        engine.dispose()
        made.append(name)
        return postgres_url_for(name)

    yield make
    if backend == "postgresql" and made:
        engine = postgres_admin_engine()
        with engine.connect() as conn:
            for name in made:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def serve_labeler(tmp_path_factory):
    """A function that starts `labeler serve --db URL` as a real subprocess on a free port and returns
    its base URL once it answers; the servers stop when the test module ends (module scope, so that
    module-scoped fixtures can share one server).

    The server's output goes to a log file (a pipe could fill up and stall the server) and is shown
    if it fails to start.
    """
    procs = []

    def start(db_url: str, secret_key: str = "test-secret-key-" + "x" * 16, log_path: Path | None = None,
              args: tuple = (), env: dict | None = None) -> str:
        port = free_port()
        folder = tmp_path_factory.mktemp("labeler-serve")
        log_path = log_path or folder / "server.log"
        env = {**os.environ, "LABELER_SECRET_KEY": secret_key, "LABELER_EXPORT_DIR": str(folder / "exports"), **(env or {})}
        env.pop("LABELER_DEBUG", None)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labeler.cli", "serve", "--db", db_url, "--host", "127.0.0.1", "--port", str(port), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT,
            )
        procs.append(proc)
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base_url}/api/v1/openapi.json", timeout=2) as response:
                    if response.status == 200:
                        return base_url
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"labeler serve did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session", autouse=True)
def eval_answer_cache(tmp_path_factory):
    """`rlhf eval`'s answer cache (rlhf/eval_cache.py) in a folder of this session's, for the stage processes too:
    no test reads answers that an earlier session, or the user's own runs, left in ~/.cache/rlhf-loop/eval."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLHF_EVAL_CACHE", str(tmp_path_factory.mktemp("eval-answer-cache")))
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 random Llama with the real SmolLM2 tokenizer (built once per session; the same
    function as scripts/make_tiny_model.py)."""
    from rlhf.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
