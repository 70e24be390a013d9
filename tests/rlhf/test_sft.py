"""rlhf sft on the tiny model: real SFTTrainer, LoRA by default, full fine-tuning by option, resume."""

import json
from pathlib import Path

import torch

from rlhf.cli import main as cli
from rlhf.models import load_causal_lm
from rlhf.runs import read_metrics


def write_sft(path: Path, conversational: bool = True) -> Path:
    rows = []
    for i in range(6):
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
                         "completion": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]})
        else:
            rows.append({"prompt": f"What is {i} plus {i}?", "completion": f" {2 * i}."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def changed_weights(before, after) -> int:
    a, b = before.state_dict(), after.state_dict()
    return sum(not torch.equal(a[k], b[k]) for k in a)


def sft_args(tiny_model, data, out, *extra):
    return ["sft", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out),
            "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2", "--max_length", "64",
            *extra]


def test_sft_lora_trains_saves_and_reloads(tiny_model, tmp_path):
    out = tmp_path / "sft"
    assert cli(sft_args(tiny_model, write_sft(tmp_path / "sft.jsonl"), out)) == 0
    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    assert len(losses) == 3
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model).resolve())  # a loadable path, not an alias
    assert (out / "tokenizer_config.json").is_file() and (out / "run.json").is_file()
    assert json.loads((out / "run.json").read_text())["stage"] == "sft"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["first_loss"] == losses[0] and summary["last_loss"] == losses[-1]
    merged = load_causal_lm(str(out))
    assert changed_weights(load_causal_lm(tiny_model), merged) > 0  # LoRA merged into the projections
    assert merged.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False).shape[1] == 6
    assert list(out.glob("runs/*/events.out.tfevents.*"))  # TensorBoard under the run folder


def test_sft_full_finetune_and_resume(tiny_model, tmp_path):
    data = write_sft(tmp_path / "sft.jsonl", conversational=False)
    out = tmp_path / "full"
    assert cli(sft_args(tiny_model, data, out, "--use_peft", "false", "--save_steps", "2")) == 0
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()
    assert changed_weights(load_causal_lm(tiny_model), load_causal_lm(str(out))) > 0
    # a re-run with more steps resumes from checkpoint-3 instead of starting over
    assert cli(sft_args(tiny_model, data, out, "--use_peft", "false", "--save_steps", "2", "--max_steps", "4")) == 0
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert steps == [1, 2, 3, 4]


def test_lora_top_layers_and_max_train_rows(tiny_model, tmp_path, capsys):
    data = write_sft(tmp_path / "sft.jsonl")
    out = tmp_path / "top"
    assert cli(sft_args(tiny_model, data, out, "--lora_top_layers", "1", "--max_train_rows", "4")) == 0
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["layers_to_transform"] == [1]  # the top one of the tiny model's two layers
    assert adapter["lora_dropout"] == 0.0  # the project default
    merged, base = load_causal_lm(str(out)).state_dict(), load_causal_lm(tiny_model).state_dict()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed and all(".layers.1." in k for k in changed)  # layer 0 untouched
    assert json.loads((out / "summary.json").read_text())["train_rows"] == 4  # a sample of the 6 rows
    # out of range: an error naming the option and the model's layer count, before any run folder
    bad = tmp_path / "bad"
    assert cli(sft_args(tiny_model, data, bad, "--lora_top_layers", "0")) == 2
    assert "command line: lora_top_layers must be at least 1, got 0" in capsys.readouterr().err
    assert not bad.exists()
    # more than the model has (a 30-layer recipe on the 2-layer test model) means every layer
    every = tmp_path / "every"
    assert cli(sft_args(tiny_model, data, every, "--lora_top_layers", "12", "--max_steps", "1")) == 0
    assert json.loads((every / "adapter_config.json").read_text())["layers_to_transform"] is None
