import os

# No hub at run time, and quiet tokenizers: set before transformers is imported anywhere.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


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

    def start(db_url: str, secret_key: str = "test-secret-key-" + "x" * 16, log_path: Path | None = None) -> str:
        port = free_port()
        folder = tmp_path_factory.mktemp("labeler-serve")
        log_path = log_path or folder / "server.log"
        env = {**os.environ, "LABELER_SECRET_KEY": secret_key, "LABELER_EXPORT_DIR": str(folder / "exports")}
        env.pop("LABELER_DEBUG", None)
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labeler.cli", "serve", "--db", db_url, "--host", "127.0.0.1", "--port", str(port)],
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


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 2-layer, hidden-32 random Llama with the real SmolLM2 tokenizer (built once per session; the same
    function as scripts/make_tiny_model.py)."""
    from rlhf.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
