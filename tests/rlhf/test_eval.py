"""`rlhf eval`: policies judged by a reward model; hand-computed win rate and KL estimate."""

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf.cli import main as cli
from rlhf.eval import kl_estimate, policy_names, token_logprobs, win_rate


def test_win_rate_counts_ties_half():
    # win, loss, tie, win -> (1 + 0 + 0.5 + 1) / 4
    assert win_rate([2.0, 0.0, 1.0, 5.0], [1.0, 3.0, 1.0, -1.0]) == pytest.approx(0.625)
    assert win_rate([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_kl_estimate_is_mean_of_summed_logratios():
    policy = [[-1.0, -2.0], [-0.5]]
    reference = [[-1.5, -2.5], [-1.5]]
    # response 1: (-1 + 1.5) + (-2 + 2.5) = 1.0; response 2: -0.5 + 1.5 = 1.0; mean 1.0
    assert kl_estimate(policy, reference) == pytest.approx(1.0)
    assert kl_estimate([[-3.0]], [[-1.0]]) == pytest.approx(-2.0)  # one sample can be negative
    with pytest.raises(ValueError):
        kl_estimate([[-1.0, -2.0]], [[-1.0]])


def test_policy_names_from_paths():
    assert policy_names(["runs/a/sft", "runs/a/dpo"], None) == ["sft", "dpo"]
    assert policy_names(["runs/a/sft", "runs/b/sft"], None) == ["a/sft", "b/sft"]
    assert policy_names(["x", "y"], ["base", "tuned"]) == ["base", "tuned"]


def test_token_logprobs_match_a_direct_computation(tiny_model):
    from rlhf.models import load_causal_lm

    model = load_causal_lm(tiny_model).eval()
    sample = {"prompt_ids": [1, 5, 9], "response_ids": [11, 2]}
    got = token_logprobs(model, [sample, {"prompt_ids": [1], "response_ids": [7]}], batch_size=2)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 5, 9, 11, 2]])).logits[0].log_softmax(-1)
    assert got[0] == pytest.approx([logits[2, 11].item(), logits[3, 2].item()], abs=1e-5)
    assert len(got[1]) == 1 and got[1][0] < 0


@pytest.fixture(scope="module")
def eval_inputs(tiny_model, tmp_path_factory):
    """A reward folder, a second full policy (other random weights) and a LoRA adapter policy on the tiny model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from rlhf.models import build_tiny_model, load_causal_lm
    from rlhf.reward import build_reward_model

    root = tmp_path_factory.mktemp("eval")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    build_reward_model(tiny_model, tok.pad_token_id).save_pretrained(root / "reward")
    tok.save_pretrained(root / "reward")
    other = build_tiny_model(root / "other", seed=1)
    peft_model = get_peft_model(load_causal_lm(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero adapter, so this policy differs from its base
    peft_model.peft_config["default"].base_model_name_or_path = tiny_model
    peft_model.save_pretrained(root / "adapter")
    tok.save_pretrained(root / "adapter")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in [
        {"prompt": "Name a colour."}, {"prompt": "Say hello.", "constraints": [{"type": "max_words", "n": 3}]},
        {"prompt": [{"role": "user", "content": "Count to three."}]},
    ]))
    return {"reward": str(root / "reward"), "other": other, "adapter": str(root / "adapter"), "prompts": str(prompts)}


def test_eval_compares_policies(tiny_model, eval_inputs, tmp_path):
    out = tmp_path / "eval"
    code = cli(["eval", "--policies", tiny_model, eval_inputs["other"], eval_inputs["adapter"],
                "--policy_names", "base", "other", "lora", "--reward_model_path", eval_inputs["reward"],
                "--prompts_file", eval_inputs["prompts"], "--output_dir", str(out), "--max_new_tokens", "6",
                "--batch_size", "2"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference"] == "base" and summary["prompts"] == 3
    figs = summary["policies"]
    assert set(figs) == {"base", "other", "lora"}
    # the reference against itself: every prompt a tie, zero KL
    assert figs["base"]["win_rate"] == pytest.approx(0.5) and figs["base"]["kl_to_reference"] == pytest.approx(0.0)
    for name in ("other", "lora"):
        assert 0.0 <= figs[name]["win_rate"] <= 1.0 and figs[name]["win_rate"] * 6 == round(figs[name]["win_rate"] * 6)
        assert math.isfinite(figs[name]["kl_to_reference"]) and figs[name]["kl_to_reference"] != 0.0
        assert 1 <= figs[name]["mean_length"] <= 6

    records = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(records) == 9
    lora = [r for r in records if r["policy"] == "lora"]
    base = [r for r in records if r["policy"] == "base"]
    # summary figures are the responses' figures
    assert figs["lora"]["mean_reward"] == pytest.approx(sum(r["reward"] for r in lora) / 3)
    expected_win = sum(1 if a["reward"] > b["reward"] else 0.5 if a["reward"] == b["reward"] else 0
                       for a, b in zip(lora, base)) / 3
    assert figs["lora"]["win_rate"] == pytest.approx(expected_win)
    assert figs["lora"]["kl_to_reference"] == pytest.approx(
        sum(r["logp_policy"] - r["logp_reference"] for r in lora) / 3)
    assert lora[1]["meta"]["constraints"] == [{"type": "max_words", "n": 3}]  # prompt fields pass through

    for png in ("rewards.png", "lengths.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_eval_unknown_reference_is_an_error(tiny_model, eval_inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli(["eval", "--policies", tiny_model, "--reference", "nope", "--reward_model_path", eval_inputs["reward"],
                "--prompts_file", eval_inputs["prompts"], "--output_dir", str(out)])
    assert code == 2 and "reference 'nope'" in capsys.readouterr().err
    assert not out.exists()
