"""Every recipe YAML under rlhf/recipes/ parses with its stage's parser, so shipped recipes cannot rot.

The stage is the file's stem (recipes/smoke/dpo.yaml -> `rlhf dpo`); a YAML directly under recipes/ and
smoke/loop.yaml are loop recipes. Each file goes through the stage's
own `main` with `--help`: rlhf.config.parse_stage_args checks every key and type of the YAML against the
stage's dataclasses before argparse prints the help and exits 0, so a bad key fails as RlhfError here.
"""

import importlib
from pathlib import Path

import pytest
import yaml

from rlhf.config import find_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "rlhf" / "recipes"
CONFIGS = sorted(p for p in RECIPES.rglob("*.yaml") if p.relative_to(RECIPES).parts[0] not in ("accelerate", "data"))


def test_there_are_configs():
    stems = {p.relative_to(RECIPES).as_posix() for p in CONFIGS}
    assert {"quickstart.yaml", "smoke/loop.yaml", "smoke/sft.yaml", "smoke/dpo.yaml", "quickstart/dpo.yaml"} <= stems


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_config_parses(path, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # recipes find their example data from any folder
    stage = "loop" if path.parent == RECIPES else path.stem
    module = importlib.import_module(f"rlhf.{stage}")
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
            assert find_config(value, key.removesuffix("_config")).is_file(), f"{path}: {key} names a missing config {value}"
    for key, value in config.items():
        if key.endswith("_file") and isinstance(value, str) and value.startswith("data/"):
            assert (RECIPES / value).is_file(), f"{path}: {key} names a missing file {value}"
