"""Resume after a kill: the last complete checkpoint, metrics.jsonl with each step once, the option honoured."""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from rlhf.cli import main as cli
from rlhf.runs import last_checkpoint, read_metrics, truncate_metrics


def sft_argv(tiny_model: str, tmp_path: Path, out: Path, *extra: str) -> list[str]:
    rows = [{"prompt": f"Q{i}?", "completion": f" Answer number {i}."} for i in range(8)]
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["sft", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out),
            "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
            "--max_length", "32", "--report_to", "none", *extra]


def test_truncate_metrics_keeps_whole_rows(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"st')
    assert truncate_metrics(tmp_path, 5) == 1  # only the line cut short goes
    assert [m["step"] for m in read_metrics(tmp_path)] == [1, 2, 3]
    assert truncate_metrics(tmp_path, 1) == 2 and [m["step"] for m in read_metrics(tmp_path)] == [1]
    assert truncate_metrics(tmp_path, 1) == 0


def test_killed_while_writing_trainer_state_resumes_from_the_checkpoint_before(tiny_model, tmp_path, capsys):
    out = tmp_path / "sft"
    argv = sft_argv(tiny_model, tmp_path, out)
    assert cli(argv) == 0
    uninterrupted = load_file(out / "adapter_model.safetensors")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

    # What a SIGKILL leaves while transformers writes checkpoint-4's trainer_state.json: the file exists but is
    # empty, the run's final save never happened, and metrics.jsonl already holds the rows up to step 4.
    (out / "checkpoint-4" / "trainer_state.json").write_text("")
    for name in ("adapter_model.safetensors", "adapter_config.json", "summary.json"):
        (out / name).unlink()
    assert last_checkpoint(out) == str(out / "checkpoint-2")
    capsys.readouterr()

    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "checkpoint-4: incomplete checkpoint" in printed
    assert f"resuming from {out / 'checkpoint-2'} (step 2)" in printed
    steps = [m["step"] for m in read_metrics(out) if "loss" in m]
    assert steps == [1, 2, 3, 4]  # each step once: the killed run's rows after step 2 were dropped
    assert sum("train_runtime" in m for m in read_metrics(out)) == 1
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4  # rewritten
    resumed = load_file(out / "adapter_model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)
    assert json.loads((out / "summary.json").read_text())["steps"] == 4


def test_resume_from_checkpoint_option_is_honoured(tiny_model, tmp_path, capsys):
    out = tmp_path / "sft"
    assert cli(sft_argv(tiny_model, tmp_path, out)) == 0
    shutil.rmtree(out / "checkpoint-4")
    saved = tmp_path / "kept-checkpoint"
    shutil.copytree(out / "checkpoint-2", saved)
    shutil.rmtree(out / "checkpoint-2")
    capsys.readouterr()
    # an explicit folder outside output_dir: training goes on from its step 2
    assert cli(sft_argv(tiny_model, tmp_path, out, "--resume_from_checkpoint", str(saved))) == 0
    assert f"resuming from {saved} (step 2)" in capsys.readouterr().out
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2, 3, 4]
    # false: from the start, though output_dir has checkpoints; the old rows give way to the new run's
    assert cli(sft_argv(tiny_model, tmp_path, out, "--resume_from_checkpoint", "false")) == 0
    assert "training from the start" in capsys.readouterr().out
    assert [m["step"] for m in read_metrics(out) if "loss" in m] == [1, 2, 3, 4]
    # a folder that is not a complete checkpoint is refused, naming it
    assert cli(sft_argv(tiny_model, tmp_path, out, "--resume_from_checkpoint", str(tmp_path / "nope"))) == 2
    assert f"{tmp_path / 'nope'} is not a complete checkpoint" in capsys.readouterr().err


def test_help_says_what_resume_from_checkpoint_does(capsys):
    import pytest

    with pytest.raises(SystemExit):
        cli(["dpo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "true (the default behaviour): the last complete checkpoint in output_dir; false: train from the start" in text
