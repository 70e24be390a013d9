"""Every YAML under configs/ parses with its stage's parser, so shipped recipes cannot rot.

The stage is the file's stem (configs/smoke/dpo.yaml -> `rlhf dpo`). Each file goes through the stage's
own `main` with `--help`: rlhf.config.parse_stage_args checks every key and type of the YAML against the
stage's dataclasses before argparse prints the help and exits 0, so a bad key fails as RlhfError here.
"""

import importlib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if "accelerate" not in p.relative_to(ROOT / "configs").parts)


def test_there_are_configs():
    stems = {p.relative_to(ROOT).as_posix() for p in CONFIGS}
    assert {"configs/smoke/sft.yaml", "configs/smoke/dpo.yaml", "configs/quickstart/dpo.yaml"} <= stems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_config_parses(path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # data paths in configs are relative to the repository root
    # A file directly under configs/ is a loop recipe (configs/quickstart.yaml); elsewhere the stem is the stage.
    stage = "loop" if path.parent == ROOT / "configs" else path.stem
    try:
        module = importlib.import_module(f"rlhf.{stage}")
    except ModuleNotFoundError as exc:
        if exc.name == f"rlhf.{stage}":
            pytest.skip(f"{path.name}: stage module rlhf.{stage} does not exist yet")
        raise
    with pytest.raises(SystemExit) as exc:
        module.main(["--config", str(path), "--help"])
    assert exc.value.code == 0
    capsys.readouterr()

    config = yaml.safe_load(path.read_text())
    recipe = path.parent.name
    if "output_dir" in config and stage != "loop":
        assert config["output_dir"] == f"runs/{recipe}/{path.stem}", "run folders are runs/<recipe>/<stage>"
    for key, value in config.items():
        if key.endswith("_config") and value:
            assert (ROOT / value).is_file(), f"{path}: {key} names a missing config {value}"
    for key, value in config.items():
        if key.endswith("_file") and isinstance(value, str) and value.startswith("data/"):
            assert (ROOT / value).is_file(), f"{path}: {key} names a missing file {value}"
