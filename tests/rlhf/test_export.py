"""rlhf export: merge an sft -> dpo adapter chain, model card with lineage and eval figures, plain reload."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.cli import main as cli
from rlhf.export import flatten_figures
from rlhf.models import load_causal_lm


def test_flatten_figures_hand_computed():
    assert flatten_figures({"b": {"win_rate": 0.123456, "n": 3}, "a": "x", "skip": [1, 2]}) == [
        ("a", "x"), ("b.n", 3), ("b.win_rate", 0.1235)]
    assert flatten_figures({"win_rate": 0.5, "win_rate_ci": [0.41234, 0.6], "odd_ci": [1, 2]}) == [
        ("win_rate", "0.5 [0.4123, 0.6]")]  # an interval without its figure is no row either


def test_export_chain_with_lineage_and_eval(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # stage configs name each other by relative paths, as in configs/
    sft_rows = [{"prompt": f"Q{i}?", "completion": f" A{i}."} for i in range(4)]
    pref_rows = [{"prompt": f"Q{i}?", "chosen": f" A{i}.", "rejected": " No idea."} for i in range(4)]
    Path("sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft_rows))
    Path("pref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pref_rows))
    common = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--max_length", "32"]
    assert cli(["sft", "--model_name_or_path", tiny_model, "--train_file", "sft.jsonl", "--output_dir", "runs/t/sft", *common]) == 0
    Path("dpo.yaml").write_text("model_name_or_path: runs/t/sft\ntrain_file: pref.jsonl\noutput_dir: runs/t/dpo\n")
    assert cli(["dpo", "--config", "dpo.yaml", *common]) == 0
    Path("runs/t/eval").mkdir()
    Path("runs/t/eval/summary.json").write_text(json.dumps({
        "win_rate": {"runs/t/dpo": 0.75}, "mean_reward": 1.5, "prompts": 8, "reference": "base",
        "policies": {"final": {"path": "runs/t/dpo", "pass_rate_prompt": 0.625, "pass_rate_prompt_ci": [0.25, 0.875]},
                     "base": {"path": tiny_model, "pass_rate_prompt": 0.5}}}))

    assert cli(["export", "--model_name_or_path", "runs/t/dpo", "--output_dir", "runs/t/export",
                "--eval_dir", "runs/t/eval", "--max_new_tokens", "4"]) == 0
    out = Path("runs/t/export")
    assert (out / "model.safetensors").is_file() and (out / "generation_config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    # plain transformers loads it, and it equals the rlhf-merged chain dpo -> sft -> tiny model
    plain = AutoModelForCausalLM.from_pretrained(out)
    merged = load_causal_lm("runs/t/dpo").state_dict()
    assert all(torch.allclose(v, merged[k]) for k, v in plain.state_dict().items())
    base = load_causal_lm(tiny_model).state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in plain.state_dict().items())
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(tiny_model).chat_template

    card = (out / "README.md").read_text()
    sft_hash = json.loads(Path("runs/t/sft/run.json").read_text())["data_hash"]
    dpo_hash = json.loads(Path("runs/t/dpo/run.json").read_text())["data_hash"]
    assert f"base_model: {tiny_model}" in card
    assert sft_hash in card and dpo_hash in card and card.index(sft_hash) < card.index(dpo_hash)
    assert "| 2 | dpo | `runs/t/dpo` | `dpo.yaml` |" in card
    assert "| win_rate.runs/t/dpo | 0.75 |" in card and "| mean_reward | 1.5 |" in card
    # the card is huggingface_hub's: its metadata parses back, with the exported policy's figures and interval
    from huggingface_hub import ModelCard

    data = ModelCard.load(out / "README.md").data
    assert data.license == "apache-2.0" and data.base_model == tiny_model and data.library_name == "transformers"
    assert {"rlhf-loop", "sft", "dpo"} <= set(data.tags) and data.datasets == ["pref.jsonl", "sft.jsonl"]
    [result] = data.eval_results
    assert (result.metric_type, result.metric_value, result.metric_args) == ("pass_rate_prompt", 0.625, {"ci95": [0.25, 0.875]})
    assert "| policies.final.pass_rate_prompt | 0.625 [0.25, 0.875] |" in card and "pass_rate_prompt_ci" not in card
    summary = json.loads((out / "summary.json").read_text())
    assert [s["stage"] for s in summary["lineage"]] == ["sft", "dpo"]
    assert summary["base_model"] == tiny_model and summary["check_new_tokens"] > 0


def test_export_full_folder_and_bad_eval_dir(tiny_model, tmp_path, capsys):
    out = tmp_path / "exp"
    code = cli(["export", "--model_name_or_path", tiny_model, "--output_dir", str(out), "--eval_dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "summary.json not found" in err and not out.exists()
    assert cli(["export", "--model_name_or_path", tiny_model, "--output_dir", str(out), "--max_new_tokens", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lineage"] == [] and summary["base_model"] == tiny_model
    assert cli(["export", "--model_name_or_path", str(out), "--output_dir", str(out)]) == 2  # never over its input
