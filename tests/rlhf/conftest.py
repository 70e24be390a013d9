"""Fixtures of the rlhf suite (the tiny model itself is tests/conftest.py's `tiny_model`)."""

import json
from pathlib import Path

import pytest


def write_reward_folder(tiny_model: str, out: Path, accuracy: float | None) -> str:
    """A full-model reward folder (random score head) on the tiny model, as `rlhf reward --use_peft false` saves,
    with the summary.json whose held-out accuracy the quality gate reads (none when `accuracy` is None)."""
    from transformers import AutoTokenizer

    from rlhf.reward import build_reward_model

    tok = AutoTokenizer.from_pretrained(tiny_model)
    build_reward_model(tiny_model, tok.pad_token_id).save_pretrained(out)
    tok.save_pretrained(out)
    if accuracy is not None:
        (out / "summary.json").write_text(json.dumps({"heldout_accuracy": accuracy, "heldout_rows": 20,
                                                      "heldout_source": "eval_file labels/preferences/test"}))
    return str(out)


@pytest.fixture(scope="module")
def reward_folder(tiny_model, tmp_path_factory) -> str:
    return write_reward_folder(tiny_model, tmp_path_factory.mktemp("rm") / "reward", accuracy=0.75)
