"""`rlhf rl`: GRPO (and RLOO) on a tiny policy against a tiny reward model; KL to the reference logged."""

import json
from pathlib import Path

import pytest

import torch

from rlhf.cli import main as cli
from tests.rlhf.conftest import write_reward_folder


def write_prompts(path: Path) -> Path:
    rows = [{"prompt": "Name a colour."}, {"prompt": [{"role": "user", "content": "Say hello."}]},
            {"prompt": "Count to three."}, {"prompt": "Pick a fruit.", "constraints": [{"type": "max_words", "n": 5}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_rl(tiny_model, reward_folder, tmp_path, *extra):
    out = tmp_path / "rl"
    code = cli(["rl", "--model_name_or_path", tiny_model, "--reward_model_path", reward_folder,
                "--prompts_file", str(write_prompts(tmp_path / "prompts.jsonl")), "--output_dir", str(out),
                "--max_steps", "2", "--num_generations", "4", "--per_device_train_batch_size", "4",
                "--max_completion_length", "8", "--learning_rate", "1e-2", "--report_to", "none",
                "--save_strategy", "no", *extra])
    assert code == 0
    return out


def assert_trained(out: Path, tiny_model: str):
    from rlhf.models import load_causal_lm

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics), "loss was not logged"
    assert any("reward" in m for m in metrics), "reward was not logged"
    assert any("kl" in m for m in metrics), "KL to the reference was not logged"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["last_kl"] is not None and summary["beta"] > 0

    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model).resolve())
    trained, start = load_causal_lm(str(out)), load_causal_lm(tiny_model)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, start.model.layers[0].self_attn.q_proj.weight)
    ids = trained.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=3, do_sample=False)
    assert ids.shape[1] == 6


def test_grpo_trains_against_reward_model(tiny_model, reward_folder, tmp_path):
    out = run_rl(tiny_model, reward_folder, tmp_path)
    assert_trained(out, tiny_model)
    assert json.loads((out / "summary.json").read_text())["trainer"] == "grpo"


def test_rloo_trains_against_reward_model(tiny_model, reward_folder, tmp_path):
    out = run_rl(tiny_model, reward_folder, tmp_path, "--trainer", "rloo")
    assert_trained(out, tiny_model)
    assert json.loads((out / "summary.json").read_text())["trainer"] == "rloo"


def test_rl_rejects_a_policy_folder_as_reward_model(tiny_model, tmp_path, capsys):
    out = tmp_path / "rl"
    code = cli(["rl", "--model_name_or_path", tiny_model, "--reward_model_path", tiny_model,
                "--prompts_file", str(write_prompts(tmp_path / "p.jsonl")), "--output_dir", str(out), "--max_steps", "1"])
    assert code == 2 and "not a reward model" in capsys.readouterr().err
    assert not out.exists()


def test_rl_unknown_trainer_is_an_error(tiny_model, tmp_path, capsys):
    code = cli(["rl", "--trainer", "ppo", "--prompts_file", "x.jsonl", "--reward_model_path", tiny_model])
    assert code == 2 and "trainer" in capsys.readouterr().err


# --- the quality gate: a reward model below min_reward_accuracy is refused ---------------------------------


def test_rl_refuses_a_reward_model_below_the_gate_in_one_line(tiny_model, tmp_path, capsys):
    weak = write_reward_folder(tiny_model, tmp_path / "weak", accuracy=0.52)
    capsys.readouterr()  # building the folder printed progress bars; the stage's stderr is what counts
    out = tmp_path / "rl"
    code = cli(["rl", "--model_name_or_path", tiny_model, "--reward_model_path", weak,
                "--prompts_file", str(write_prompts(tmp_path / "p.jsonl")), "--output_dir", str(out), "--max_steps", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "held-out accuracy 0.520 is below min_reward_accuracy 0.6" in err and "--min_reward_accuracy 0" in err
    assert not out.exists()


def test_rl_gate_override_trains_on_a_weak_reward_model(tiny_model, tmp_path):
    weak = write_reward_folder(tiny_model, tmp_path / "weak", accuracy=0.52)
    out = run_rl(tiny_model, weak, tmp_path, "--min_reward_accuracy", "0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward_model_accuracy"] == 0.52 and summary["steps"] == 2


def test_rl_help_states_the_gate_and_its_default(capsys):
    with pytest.raises(SystemExit):
        cli(["rl", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--min_reward_accuracy" in text and "(default 0.6)" in text


def test_check_reward_accuracy_reads_the_reward_stage_summary(tmp_path):
    from rlhf.errors import RlhfError
    from rlhf.reward import check_reward_accuracy

    folder = tmp_path / "rm"
    folder.mkdir()
    with pytest.raises(RlhfError, match="no held-out accuracy"):
        check_reward_accuracy(str(folder), 0.6)  # no summary.json: nothing to check against
    assert check_reward_accuracy(str(folder), 0) is None  # the override needs no figure
    (folder / "summary.json").write_text(json.dumps({"heldout_accuracy": 0.6, "heldout_source": "eval_file x"}))
    assert check_reward_accuracy(str(folder), 0.6) == 0.6  # at the threshold passes
    with pytest.raises(RlhfError, match="held-out accuracy 0.600 is below min_reward_accuracy 0.61"):
        check_reward_accuracy(str(folder), 0.61)
    (folder / "summary.json").write_text(json.dumps({"heldout_accuracy": 0.9, "heldout_source":
                                                     "train_file itself (fewer than 10 rows or test_size 0: ...)"}))
    with pytest.raises(RlhfError, match="measured on its own training pairs"):
        check_reward_accuracy(str(folder), 0.6)
