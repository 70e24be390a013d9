"""A light install: `pip install` of the project without extras is the labeler alone, with no torch,
transformers or TRL (pyproject.toml; the boundary tests/test_boundary.py checks), and its `labeler` command works.

Builds and installs the project into a fresh virtual environment from a copy of its sources (so the
working tree gets no build/ folder), with pip's configured indexes. It needs those to be local (this
image has /opt/wheels and file:// indexes); elsewhere it skips rather than download half of PyPI.
"""

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.install
HEAVY = ("torch", "transformers", "trl", "peft", "accelerate")


def local_package_index() -> bool:
    config = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    return "file://" in config or "find-links='/" in config


@pytest.mark.skipif(not local_package_index(), reason="pip has no local package index here (file:// index or find-links)")
def test_base_install_is_the_labeler_without_torch(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in ("labeler", "rlhf"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    install = subprocess.run([bin_dir / "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]

    listed = subprocess.run([bin_dir / "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert not installed & set(HEAVY), f"the base install brought {sorted(installed & set(HEAVY))}"
    assert {"flask", "sqlalchemy", "gunicorn", "flask-limiter", "nh3"} <= installed

    helped = subprocess.run([bin_dir / "labeler", "--help"], capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "serve" in helped.stdout and "export" in helped.stdout, helped.stderr
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    init = subprocess.run([bin_dir / "labeler", "init-db", "--db", db], capture_output=True, text=True, timeout=120)
    assert init.returncode == 0 and "schema revision" in init.stdout, init.stderr
    # the training pipeline says what it needs instead of a traceback
    train = subprocess.run([bin_dir / "rlhf", "sft", "--help"], capture_output=True, text=True, timeout=120)
    assert train.returncode == 2 and "rlhf-loop[train]" in train.stderr and "Traceback" not in train.stderr
    assert subprocess.run([bin_dir / "rlhf", "--help"], capture_output=True, text=True, timeout=60).returncode == 0
