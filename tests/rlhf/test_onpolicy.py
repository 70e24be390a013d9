"""`rlhf onpolicy`: pairs chosen by the reward model (hand-computed), iterated DPO on a tiny model, resume, gate."""

import json
from pathlib import Path

import pytest

import torch

from rlhf.cli import main as cli
from rlhf.onpolicy import build_pairs, select_pairs_by_reward
from rlhf.prompts import rotate_prompts as iteration_prompts
from rlhf.runs import read_metrics
from tests.rlhf.conftest import write_reward_folder


# --- which pairs are kept: hand-computed ------------------------------------------------------------------


def test_best_and_worst_make_the_pair_when_the_gap_exceeds_the_margin():
    rewards = [0.1, 2.0, -1.0, 0.5]  # best index 1 (2.0), worst index 2 (-1.0): gap 3.0
    assert select_pairs_by_reward(rewards, 0.5) == [(1, 2)]
    assert select_pairs_by_reward(rewards, 2.99) == [(1, 2)]
    assert select_pairs_by_reward(rewards, 3.0) == []  # the gap must exceed the margin, not equal it
    assert select_pairs_by_reward(rewards, 10.0) == []


def test_ties_pick_the_first_index_and_equal_rewards_make_no_pair():
    # best 3.0 at indices 1 and 2, worst -2.0 at indices 3 and 4: the first of each
    assert select_pairs_by_reward([1.0, 3.0, 3.0, -2.0, -2.0], 0.0) == [(1, 3)]
    assert select_pairs_by_reward([-2.0, 3.0, -2.0, 3.0], 4.5) == [(1, 0)]
    assert select_pairs_by_reward([0.7, 0.7, 0.7], 0.0) == []  # all equal: no preference, even at margin 0
    assert select_pairs_by_reward([0.7, 0.7 + 1e-9], 0.0) == [(1, 0)]  # any strict gap clears margin 0
    assert select_pairs_by_reward([1.5], 0.0) == []  # one sample: nothing to compare
    with pytest.raises(ValueError):
        select_pairs_by_reward([1.0, 0.0], -0.1)


def test_build_pairs_takes_each_prompts_best_and_worst_text():
    def sample(prompt, response, reward):
        return {"prompt": prompt, "response": response, "reward": reward}

    samples = [sample("A?", "a1", 0.2), sample("A?", "a2", 1.4), sample("A?", "a3", -0.3),  # gap 1.7: kept
               sample("B?", "b1", 0.5), sample("B?", "b2", 0.9), sample("B?", "b3", 0.6),    # gap 0.4: dropped
               sample([{"role": "user", "content": "C?"}], "c1", -1.0), sample("C?", "c2", 0.0), sample("C?", "c3", 1.0)]
    pairs = build_pairs(samples, k=3, margin=0.5)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("a2", "a3"), ("c3", "c1")]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "A?"}]
    assert pairs[0]["reward_gap"] == pytest.approx(1.7) and pairs[1]["reward_gap"] == pytest.approx(2.0)
    assert pairs[1]["chosen"] == [{"role": "assistant", "content": "c3"}]


def test_iteration_prompts_rotate_through_the_file():
    rows = [{"prompt": str(i)} for i in range(5)]
    first, second, third = (iteration_prompts(rows, 2, i, seed=0) for i in (1, 2, 3))
    assert len(first) == len(second) == 2 and not {r["prompt"] for r in first} & {r["prompt"] for r in second}
    assert {r["prompt"] for r in first + second + third[:1]} == {str(i) for i in range(5)}  # all 5 seen by then
    assert third[1] == first[0]  # the sixth draw wraps around to the first
    assert iteration_prompts(rows, 0, 1, seed=0) == iteration_prompts(rows, 9, 1, seed=0) and len(rows) == 5


# --- the stage on a tiny model ------------------------------------------------------------------------------


def write_prompts(path: Path) -> Path:
    rows = [{"prompt": f"Say something about {topic}.", "split": "train"}
            for topic in ("tea", "rain", "bread", "maps", "owls", "glass")]
    rows += [{"prompt": "A held-out prompt the stage must never sample.", "split": "heldout"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_onpolicy(tiny_model, reward_folder, tmp_path, *extra) -> int:
    return cli(["onpolicy", "--model_name_or_path", tiny_model, "--reward_model_path", reward_folder,
                "--prompts_file", str(write_prompts(tmp_path / "prompts.jsonl")), "--output_dir", str(tmp_path / "op"),
                "--prompts_per_iteration", "3", "--k", "3", "--reward_margin", "0", "--max_new_tokens", "8",
                "--batch_size", "9", "--kl_samples", "6", "--max_steps", "2", "--per_device_train_batch_size", "2",
                "--learning_rate", "1e-2", "--max_length", "64", "--save_steps", "1", *extra])


def test_onpolicy_iterates_logs_each_iteration_and_resumes(tiny_model, reward_folder, tmp_path, capsys):
    from rlhf.models import load_causal_lm

    out = tmp_path / "op"
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--iterations", "1") == 0
    first = json.loads((out / "iteration-1" / "summary.json").read_text())
    first_metrics = read_metrics(out)

    # Two iterations now: the first is done and must not be redone; the second samples from its adapter.
    capsys.readouterr()
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--iterations", "2") == 0
    assert "iteration 1: done before, skipped" in capsys.readouterr().out
    assert json.loads((out / "iteration-1" / "summary.json").read_text()) == first
    metrics = read_metrics(out)
    assert metrics[: len(first_metrics)] == first_metrics  # appended to, never rewritten
    new = metrics[len(first_metrics) :]
    assert not any(m.get("iteration") == 1 for m in new), "iteration 1 was trained or measured again"

    # DPO's loss per iteration, tagged with its iteration; the first step of iteration 1 is log 2 (policy = SFT)
    losses = {i: [m for m in metrics if m.get("iteration") == i and "loss" in m] for i in (1, 2)}
    assert len(losses[1]) == 2 and len(losses[2]) == 2
    assert abs(losses[1][0]["loss"] - 0.6931) < 1e-3
    # policy != reference at iteration 2's first step: the adapter carried over from iteration 1 (a fresh LoRA
    # would be the SFT model) and the reference is still the SFT model (not a copy of the carried adapter)
    assert abs(losses[2][0]["loss"] - 0.6931) > 1e-4

    # per-iteration figures: metrics.jsonl, summary.json and TensorBoard
    figures = {m["iteration"]: m for m in metrics if m.get("event") == "iteration"}
    assert set(figures) == {1, 2, 3}  # 3 = the final policy's measurement
    for m in figures.values():
        assert {"mean_reward", "kl_to_reference", "mean_length"} <= set(m)
    assert figures[1]["kl_to_reference"] == 0.0  # iteration 1 samples the SFT model, which is the reference
    assert figures[1]["kl_samples"] == 0 and figures[2]["kl_samples"] == 6  # 6 of the 9 samples (kl_samples)
    assert figures[2]["kl_to_reference"] != 0.0 and figures[3]["kl_to_reference"] != 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["iteration"] for r in summary["per_iteration"]] == [1, 2]
    for record in summary["per_iteration"]:
        assert record["trained"] and record["kept_pairs"] >= 1 and record["steps"] == 2
        assert record["mean_kept_margin"] > 0 and record["prompts"] == 3 and record["samples"] == 9
        assert record["last_loss"] is not None
    assert summary["reward_model_accuracy"] == 0.75 and summary["steps"] == 4
    assert summary["final"]["policy"] == str(out / "iteration-2")
    assert summary["last_mean_reward"] == summary["final"]["mean_reward"]
    assert summary["final_reward_gain"] == pytest.approx(summary["final"]["mean_reward"] - figures[1]["mean_reward"])
    def sampled_prompts(folder):
        return [json.loads(x)["prompt"] for x in (out / folder / "samples.jsonl").read_text().splitlines()]

    # the final policy answers iteration 1's prompts (like for like); iteration 2 had the next ones
    assert sampled_prompts("final") == sampled_prompts("iteration-1") != sampled_prompts("iteration-2")
    assert list((out / "runs" / "iterations").glob("events.out.tfevents.*"))
    assert summary["plot"] == str(out / "iterations.png") and (out / "iterations.png").stat().st_size > 1000

    # the kept pairs are each prompt's best and worst sample by reward; held-out prompts were never sampled
    samples = [json.loads(x) for x in (out / "iteration-2" / "samples.jsonl").read_text().splitlines()]
    pairs = [json.loads(x) for x in (out / "iteration-2" / "pairs.jsonl").read_text().splitlines()]
    assert len(samples) == 9 and all("held-out" not in s["prompt"] for s in samples)
    for pair, group in zip(pairs, [g for g in (samples[i : i + 3] for i in (0, 3, 6))
                                   if max(s["reward"] for s in g) > min(s["reward"] for s in g)]):
        best = max(group, key=lambda s: s["reward"])
        worst = min(group, key=lambda s: s["reward"])
        assert pair["chosen"][0]["content"] == best["response"] and pair["rejected"][0]["content"] == worst["response"]
        assert pair["reward_gap"] == pytest.approx(best["reward"] - worst["reward"])

    # the output folder is the final policy: a LoRA over the SFT model, weights changed, reloads and generates
    assert not list((out / "iteration-1").glob("checkpoint-*")), "a finished iteration keeps no checkpoints"
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model).resolve())
    trained, start = load_causal_lm(str(out)), load_causal_lm(tiny_model)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, start.model.layers[0].self_attn.q_proj.weight)
    assert (out / "adapter_model.safetensors").read_bytes() == (out / "iteration-2" / "adapter_model.safetensors").read_bytes()
    assert trained.generate(torch.tensor([[1, 2]]), max_new_tokens=2, do_sample=False).shape[1] == 4


def write_heldout_prompts(path: Path) -> Path:
    """Held-out rows with constraints for the guard, and one train row that the guard must leave out."""
    words = {"type": "max_words", "params": {"n": 4}}
    rows = [{"prompt": "Name a fruit.", "constraints": [words], "split": "heldout"},
            {"prompt": "Describe the sea.", "constraints": [words, {"type": "lowercase", "params": {}}]},
            {"prompt": "A train prompt the guard must skip.", "split": "train"},
            {"prompt": "Say hi.", "split": "heldout"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_guard_measures_each_iterations_policy_on_heldout_prompts(tiny_model, reward_folder, tmp_path, capsys):
    from rlhf.eval import length_controlled_win_rate, sample_responses
    from rlhf.models import load_causal_lm, load_tokenizer

    out = tmp_path / "op"
    guard = ["--iterations", "2", "--measure_final", "false", "--eval_max_new_tokens", "6",
             "--eval_prompts_file", str(write_heldout_prompts(tmp_path / "heldout.jsonl"))]
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, *guard) == 0
    summary = json.loads((out / "summary.json").read_text())
    sft = summary["heldout_sft"]
    assert sft["policy"] == tiny_model and sft["policy_after_iterations"] == 0
    assert sft["settings"] == {"prompts_file": str(tmp_path / "heldout.jsonl"), "prompts": 3, "decoding": "greedy",
                               "max_new_tokens": 6}
    assert sft["win_rate"] == sft["win_rate_lc"] == 0.5  # the SFT model against its own answers
    sft_recs = json.loads((out / "heldout-sft.json").read_text())["records"]
    assert [r["prompt"] for r in sft_recs] == ["Name a fruit.", "Describe the sea.", "Say hi."]  # no train row

    for i, record in enumerate(summary["per_iteration"], start=1):
        heldout = record["heldout"]
        assert heldout["policy"] == str(out / f"iteration-{i}") and heldout["policy_after_iterations"] == i
        assert json.loads((out / f"iteration-{i}" / "summary.json").read_text())["heldout"] == heldout
        # the figures are the greedy answers' figures, scored by the reward model, against the SFT model's answers
        recs = [json.loads(x) for x in (out / f"iteration-{i}" / "heldout.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in recs] == [r["prompt"] for r in sft_recs] and all(r["tokens"] <= 6 for r in recs)
        assert heldout["mean_reward"] == pytest.approx(sum(r["reward"] for r in recs) / 3)
        assert heldout["mean_length"] == pytest.approx(sum(r["tokens"] for r in recs) / 3)
        met = [all(r["constraints_met"]) for r in recs[:2]]
        assert "constraints_met" not in recs[2] and len(recs[1]["constraints_met"]) == 2
        assert heldout["pass_rate_prompt"] == pytest.approx(sum(met) / 2) and heldout["constrained_prompts"] == 2
        low, high = heldout["pass_rate_prompt_ci"]
        assert low <= heldout["pass_rate_prompt"] <= high
        points = [1.0 if r["reward"] > s["reward"] else 0.5 if r["reward"] == s["reward"] else 0.0
                  for r, s in zip(recs, sft_recs)]
        assert heldout["win_rate"] == pytest.approx(sum(points) / 3)
        assert heldout["win_rate_lc"] == pytest.approx(
            length_controlled_win_rate(points, [r["tokens"] - s["tokens"] for r, s in zip(recs, sft_recs)]))

    # the answers are iteration 2's adapter's own greedy answers (batched as the stage batches them) ...
    last = [json.loads(x) for x in (out / "iteration-2" / "heldout.jsonl").read_text().splitlines()]
    greedy = sample_responses(load_causal_lm(str(out / "iteration-2")).eval(), load_tokenizer(tiny_model),
                              [r["prompt"] for r in last], 6, 0.0, 1.0, 9, seed=0)
    assert [g["text"] for g in greedy] == [r["response"] for r in last]
    # and not the SFT model's: the trained adapter answers differently (the tiny SFT model stops at once)
    assert [r["response"] for r in last] != [r["response"] for r in sft_recs]

    # the figures also go to metrics.jsonl (x: DPO iterations behind the policy), one line each, and the chart
    events = [m for m in read_metrics(out) if m.get("event") == "heldout"]
    assert [m["policy_after_iterations"] for m in events] == [0, 1, 2]
    assert events[2]["pass_rate_prompt"] == summary["per_iteration"][1]["heldout"]["pass_rate_prompt"]
    assert "pass_rate_prompt_ci_low" in events[2]
    printed = capsys.readouterr().out
    assert "held-out, policy after 2 iteration(s): reward" in printed and "lc-win vs sft" in printed
    assert summary["guard_plot"] == str(out / "guard.png") and (out / "guard.png").stat().st_size > 1000

    # a re-run finds every policy measured: nothing is answered or logged again
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, *guard) == 0
    assert json.loads((out / "summary.json").read_text())["per_iteration"] == summary["per_iteration"]
    assert len([m for m in read_metrics(out) if m.get("event") == "heldout"]) == 3


def test_onpolicy_refuses_a_weak_reward_model(tiny_model, tmp_path, capsys):
    weak = write_reward_folder(tiny_model, tmp_path / "weak", accuracy=0.55)
    capsys.readouterr()  # building the folder printed progress bars; the stage's stderr is what counts
    assert run_onpolicy(tiny_model, weak, tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "held-out accuracy 0.550 is below min_reward_accuracy 0.6" in err and "--min_reward_accuracy 0" in err
    assert not (tmp_path / "op").exists()
    # a lower threshold lets it past the gate, to the next check (which comes after the gate)
    assert run_onpolicy(tiny_model, weak, tmp_path, "--min_reward_accuracy", "0.5", "--prompt_split", "test") == 2
    assert "no prompt rows of split 'test'" in capsys.readouterr().err


def test_onpolicy_checks_its_options_before_any_work(tiny_model, reward_folder, tmp_path, capsys):
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--k", "1") == 2
    assert "k must be at least 2" in capsys.readouterr().err
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--temperature", "0") == 2
    assert "temperature must be above 0" in capsys.readouterr().err
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--prompt_split", "test") == 2
    assert "no prompt rows of split 'test'" in capsys.readouterr().err
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--eval_max_prompts", "-1") == 2
    assert "eval_max_prompts must be 0 (all) or more" in capsys.readouterr().err
    # the guard's prompts are checked before any work: only train rows left, or a malformed constraint
    train_only = tmp_path / "train_only.jsonl"
    train_only.write_text(json.dumps({"prompt": "p", "split": "train"}) + "\n")
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--eval_prompts_file", str(train_only)) == 2
    assert f"{train_only}: no held-out prompt rows" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "constraints": [{"type": "max_words", "params": {}}]}) + "\n")
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--eval_prompts_file", str(bad)) == 2
    assert f"{bad} prompt 1" in capsys.readouterr().err
    assert not (tmp_path / "op").exists()


def test_an_interrupted_iteration_keeps_its_scored_samples(tiny_model, reward_folder, tmp_path):
    """An iteration without its summary.json is redone from its samples.jsonl: no new sampling or scoring.

    The samples' rewards are rewritten by hand so that exactly one prompt has a gap over the margin; the
    redone iteration must pair that prompt's two chosen samples and nothing else."""
    out = tmp_path / "op"
    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--iterations", "1", "--measure_final", "false") == 0
    it_dir = out / "iteration-1"
    samples = [json.loads(x) for x in (it_dir / "samples.jsonl").read_text().splitlines()]
    for i, s in enumerate(samples):
        s["reward"] = {4: 5.0, 5: -5.0}.get(i, 0.0)  # prompt 2 (samples 3-5): best sample 4, worst sample 5
    (it_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    (it_dir / "summary.json").unlink()  # as if stopped before the iteration finished

    assert run_onpolicy(tiny_model, reward_folder, tmp_path, "--iterations", "1", "--measure_final", "false",
                        "--reward_margin", "1.0") == 0
    pairs = [json.loads(x) for x in (it_dir / "pairs.jsonl").read_text().splitlines()]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"], p["reward_gap"]) for p in pairs] == [
        (samples[4]["response"], samples[5]["response"], 10.0)]
    record = json.loads((it_dir / "summary.json").read_text())
    assert record["kept_pairs"] == 1 and record["mean_kept_margin"] == 10.0 and record["mean_reward"] == 0.0
    assert json.loads((out / "summary.json").read_text())["final"] is None
