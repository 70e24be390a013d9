"""`rlhf eval`: policies judged by a reward model; hand-computed win rate, KL estimate and pass rates."""

import json
import math

import pytest
import torch

from rlhf.cli import main as cli
from rlhf.constraints import count_words
from rlhf.eval import (EvalArguments, constraint_pass_rates, evaluate_policies, kl_estimate, kl_method,
                       length_controlled_figures, length_controlled_win_rate, policy_names, token_logprobs, win_rate)


def test_win_rate_counts_ties_half():
    # win, loss, tie, win -> (1 + 0 + 0.5 + 1) / 4
    assert win_rate([2.0, 0.0, 1.0, 5.0], [1.0, 3.0, 1.0, -1.0]) == pytest.approx(0.625)
    assert win_rate([1.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])


def test_length_controlled_win_rate_hand_computed():
    # 8 prompts where the policy answers 10 tokens longer: 6 wins (3/4); 4 where it is 10 shorter: 1 win (1/4).
    # Raw win rate 7/12. x = tanh(d / std(d)) takes two values +t and -t (d is not centred), so the fit without
    # the ridge is saturated: sigmoid(a + bt) = 3/4 and sigmoid(a - bt) = 1/4, hence a = (ln 3 - ln 3) / 2 = 0
    # and the win rate at equal length is sigmoid(0) = 1/2: the whole advantage was length.
    points = [1.0] * 6 + [0.0] * 2 + [1.0] + [0.0] * 3
    diffs = [10] * 8 + [-10] * 4
    assert sum(points) / len(points) == pytest.approx(7 / 12)
    assert length_controlled_win_rate(points, diffs, l2=0.0) == pytest.approx(0.5, abs=1e-9)
    # the default ridge shrinks the length effect, so part of the advantage stays with the policy
    assert 0.5 < length_controlled_win_rate(points, diffs) < 7 / 12
    # nothing for length to explain: equal lengths, or one gap on every prompt -> the raw win rate (1 + 0 + .5 + 1) / 4
    assert length_controlled_win_rate([1.0, 0.0, 0.5, 1.0], [0, 0, 0, 0]) == pytest.approx(0.625)
    assert length_controlled_win_rate([1.0, 0.0, 0.5, 1.0], [3, 3, 3, 3]) == pytest.approx(0.625)
    assert length_controlled_win_rate([0.5, 0.5, 0.5], [0, 4, -2]) == 0.5 and length_controlled_win_rate([1.0], [7]) == 1.0
    # length separates the outcomes: 4 longer answers all win, 2 shorter all lose. Without a ridge b -> infinity and
    # a solves 4 (1 - sigmoid(a + bt)) = 2 sigmoid(a - bt), i.e. 4 e^-a = 2 e^a: a = ln(2) / 2, sigmoid(a) = 2 - sqrt 2
    separated, gaps = [1.0] * 4 + [0.0] * 2, [5] * 4 + [-5] * 2
    assert length_controlled_win_rate(separated, gaps, l2=1e-6) == pytest.approx(2 - math.sqrt(2), abs=1e-3)
    assert 2 - math.sqrt(2) < length_controlled_win_rate(separated, gaps) < 4 / 6  # the ridge keeps it finite
    with pytest.raises(ValueError):
        length_controlled_win_rate([1.0], [1, 2])


def test_length_controlled_interval_brackets_the_figure():
    points = [1.0] * 6 + [0.0] * 2 + [1.0] + [0.0] * 3
    diffs = [10, 12, 8, 10, 9, 11, 10, 10, -10, -9, -11, -10]
    figures = length_controlled_figures(points, diffs)
    low, high = figures["win_rate_lc_ci"]
    assert low < figures["win_rate_lc"] < high and 0.0 <= low and high <= 1.0
    assert figures == length_controlled_figures(points, diffs)  # seeded: the same interval every time


def test_kl_estimate_is_mean_of_summed_logratios():
    policy = [[-1.0, -2.0], [-0.5]]
    reference = [[-1.5, -2.5], [-1.5]]
    # response 1: (-1 + 1.5) + (-2 + 2.5) = 1.0; response 2: -0.5 + 1.5 = 1.0; mean 1.0
    assert kl_estimate(policy, reference) == pytest.approx(1.0)
    assert kl_estimate([[-3.0]], [[-1.0]]) == pytest.approx(-2.0)  # one sample can be negative
    with pytest.raises(ValueError):
        kl_estimate([[-1.0, -2.0]], [[-1.0]])


def test_constraint_pass_rates_hand_computed():
    lower, commas = {"type": "lowercase", "params": {}}, {"type": "no_commas", "params": {}}
    rows = [
        {"prompt": "a", "constraints": [lower, commas]},
        {"prompt": "b", "constraints": [{"type": "max_words", "params": {"n": 5}}]},
        {"prompt": "c"},  # plain prompt: no constraint figure
        {"prompt": "d", "constraints": [lower, {"type": "max_words", "params": {"n": 3}}]},
        {"prompt": "e", "constraints": [commas]},
    ]
    responses = [
        "hello there, friend",       # lowercase yes, no commas no          -> prompt fails, 1 of 2
        "Short answer.",             # 2 words < 5                          -> prompt passes, 1 of 1
        "Anything, at all.",
        "all lowercase words here",  # lowercase yes, 4 words not < 3       -> prompt fails, 1 of 2
        "",                          # a blank response meets nothing       -> prompt fails, 0 of 1
    ]
    got = constraint_pass_rates(rows, responses)
    assert got["pass_rate_prompt"] == pytest.approx(1 / 4)
    assert got["pass_rate_instruction"] == pytest.approx(3 / 6)
    assert got["pass_rate_by_type"] == {"lowercase": 1.0, "max_words": 0.5, "no_commas": 0.0}
    assert got["constrained_prompts"] == 4 and got["constraints"] == 6
    assert constraint_pass_rates([{"prompt": "x"}, {"prompt": "y", "constraints": []}], ["a", "b"]) == {}
    with pytest.raises(ValueError):
        constraint_pass_rates(rows, responses[:2])


def test_kl_method_follows_decoding():
    assert kl_method(EvalArguments()) == "main_responses"
    assert kl_method(EvalArguments(kl_prompts=4)) == "main_responses"  # temperature 1 already: no second sample
    assert kl_method(EvalArguments(temperature=0.0)) == "main_responses_biased"
    assert kl_method(EvalArguments(temperature=0.0, kl_prompts=4)) == "separate_sample"
    assert kl_method(EvalArguments(top_p=0.9, kl_prompts=4)) == "separate_sample"


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
        {"prompt": "Name a colour."}, {"prompt": "Say hello.", "constraints": [{"type": "max_words", "params": {"n": 3}}]},
        {"prompt": [{"role": "user", "content": "Count to three."}]},
    ]))
    return {"reward": str(root / "reward"), "other": other, "adapter": str(root / "adapter"), "prompts": str(prompts)}


def test_eval_compares_policies(tiny_model, eval_inputs, tmp_path, capsys):
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
    points = [1.0 if a["reward"] > b["reward"] else 0.5 if a["reward"] == b["reward"] else 0.0 for a, b in zip(lora, base)]
    assert figs["lora"]["win_rate_lc"] == pytest.approx(
        length_controlled_win_rate(points, [a["tokens"] - b["tokens"] for a, b in zip(lora, base)]))
    assert figs["base"]["win_rate_lc"] == 0.5 and figs["base"]["win_rate_lc_ci"] == [0.5, 0.5]
    low, high = figs["lora"]["win_rate_lc_ci"]
    assert low <= figs["lora"]["win_rate_lc"] <= high
    assert lora[1]["meta"]["constraints"] == [{"type": "max_words", "params": {"n": 3}}]  # prompt fields pass through
    assert summary["kl_method"] == "main_responses"

    # one prompt of three carries a constraint: the pass rates are that response's check
    for name, recs in (("lora", lora), ("base", base)):
        met = recs[1]["constraints_met"]
        assert met == [count_words(recs[1]["response"]) < 3 and bool(recs[1]["response"].strip())]
        assert "constraints_met" not in recs[0]
        assert figs[name]["constrained_prompts"] == 1
        assert figs[name]["pass_rate_prompt"] == figs[name]["pass_rate_instruction"] == float(met[0])
        assert figs[name]["pass_rate_by_type"] == {"max_words": float(met[0])}

    for png in ("rewards.png", "lengths.png", "pass_rates.png", "pass_rate_policies.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    lora_metrics = next(m for m in metrics if m["policy"] == "lora")
    assert (lora_metrics["win_rate_lc"], lora_metrics["win_rate_lc_ci_low"]) == (figs["lora"]["win_rate_lc"], low)
    line = next(x for x in capsys.readouterr().out.splitlines() if " lora: reward" in x)
    assert f"lc-win {figs['lora']['win_rate_lc']:.2f} [{low:.2f}, {high:.2f}]" in line
    assert {m["policy"]: m["pass_rate_by_type/max_words"] for m in metrics} == {
        n: figs[n]["pass_rate_by_type"]["max_words"] for n in figs}


def test_eval_unknown_reference_is_an_error(tiny_model, eval_inputs, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli(["eval", "--policies", tiny_model, "--reference", "nope", "--reward_model_path", eval_inputs["reward"],
                "--prompts_file", eval_inputs["prompts"], "--output_dir", str(out)])
    assert code == 2 and "reference 'nope'" in capsys.readouterr().err
    assert not out.exists()


def test_greedy_eval_takes_kl_from_a_temperature_one_sample(tiny_model, eval_inputs):
    """Greedy responses for pass rates; the KL equals that of a plain temperature-1 eval of the first prompts."""
    from rlhf.data import load_prompts

    rows = load_prompts(eval_inputs["prompts"])
    policies = [("base", tiny_model), ("other", eval_inputs["other"])]
    greedy = EvalArguments(temperature=0.0, max_new_tokens=4, kl_prompts=2, kl_max_new_tokens=5, batch_size=2)
    figs, records = evaluate_policies(policies, "base", eval_inputs["reward"], rows, greedy)
    sampled = EvalArguments(temperature=1.0, max_new_tokens=5, batch_size=2)
    figs_t1, records_t1 = evaluate_policies(policies, "base", eval_inputs["reward"], rows[:2], sampled)

    assert figs["other"]["kl_method"] == "separate_sample" and figs["other"]["kl_responses"] == 2
    assert figs_t1["other"]["kl_method"] == "main_responses" and figs_t1["other"]["kl_responses"] == 2
    assert figs["other"]["kl_to_reference"] != 0.0
    assert figs["other"]["kl_to_reference"] == pytest.approx(figs_t1["other"]["kl_to_reference"], abs=1e-5)
    assert figs["base"]["kl_to_reference"] == pytest.approx(0.0)
    # the main responses stay greedy and cover every prompt; their log-probs are not KL terms
    assert len(records) == 6 and all(r["tokens"] <= 4 for r in records)
    assert all("logp_policy" not in r for r in records) and all("logp_policy" in r for r in records_t1)
    again, _ = evaluate_policies(policies[:1], "base", eval_inputs["reward"], rows,
                                 EvalArguments(temperature=0.0, max_new_tokens=4, batch_size=2, seed=7))
    assert again["base"]["mean_reward"] == pytest.approx(figs["base"]["mean_reward"])  # greedy: seed-independent


def test_eval_malformed_constraint_names_the_prompt(tiny_model, eval_inputs, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps(
        {"prompt": "b", "constraints": [{"type": "max_words", "n": 3}]}) + "\n")
    out = tmp_path / "eval"
    code = cli(["eval", "--policies", tiny_model, "--reward_model_path", eval_inputs["reward"],
                "--prompts_file", str(prompts), "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "prompt 2" in err and "missing param 'n'" in err
    assert not out.exists()


def cache_entries(folder) -> list:
    return sorted(p for p in folder.glob("*.json") if p.name != "file-hashes.json")


def test_a_second_eval_reads_the_answer_cache_and_gives_the_same_figures(tiny_model, eval_inputs, tmp_path, capsys):
    """The second eval (from the first one's config.yaml) generates nothing and writes the same figures and
    responses; `cached_policies` names the policies read from the cache."""
    cache = tmp_path / "cache"
    first = tmp_path / "first"
    assert cli(["eval", "--policies", tiny_model, eval_inputs["adapter"], "--policy_names", "base", "lora",
                "--reward_model_path", eval_inputs["reward"], "--prompts_file", eval_inputs["prompts"],
                "--output_dir", str(first), "--max_new_tokens", "5", "--batch_size", "2", "--temperature", "0",
                "--kl_prompts", "2", "--eval_cache_dir", str(cache)]) == 0
    summary = json.loads((first / "summary.json").read_text())
    assert summary["cached_policies"] == [] and len(cache_entries(cache)) == 2  # one entry per policy

    assert "lora: generating 3 responses" in capsys.readouterr().out
    second = tmp_path / "second"
    assert cli(["eval", "--config", str(first / "config.yaml"), "--output_dir", str(second)]) == 0
    again = json.loads((second / "summary.json").read_text())
    assert again["cached_policies"] == ["base", "lora"]
    log = capsys.readouterr().out
    assert "lora: answers from the cache" in log and "generating" not in log and "sampling" not in log
    for name in ("base", "lora"):
        assert again["policies"][name].pop("answers_from_cache") is True
        assert summary["policies"][name].pop("answers_from_cache") is False
    assert again["policies"] == summary["policies"]  # every figure, KL of the separate sample included
    assert (second / "responses.jsonl").read_text() == (first / "responses.jsonl").read_text()
    assert summary["policies"]["lora"]["kl_to_reference"] != 0.0 and summary["kl_method"] == "separate_sample"


def test_any_changed_input_misses_the_answer_cache(tiny_model, eval_inputs, tmp_path, capsys):
    """Prompts (texts or order), seed, max_new_tokens, temperature, batch_size or the weights changed: generated
    again. A copy of the same folder elsewhere hits (the key is the files' content); an unreadable, incomplete or
    mismatched entry is reported and replaced."""
    import shutil

    from safetensors.torch import load_file, save_file

    from rlhf.data import load_prompts

    cache = tmp_path / "cache"
    rows = load_prompts(eval_inputs["prompts"])

    def cached(path=tiny_model, rows=rows, folder=cache, **settings) -> bool:
        args = EvalArguments(**{"max_new_tokens": 4, "batch_size": 2, "eval_cache_dir": str(folder), **settings})
        figs, _ = evaluate_policies([("base", str(path))], "base", eval_inputs["reward"], rows, args)
        return figs["base"]["answers_from_cache"]

    assert not cached() and cached()  # stored, then read
    assert not cached(rows=rows[:2]) and not cached(rows=rows[::-1])
    assert not cached(rows=[{**rows[0], "prompt": "Name a color."}, *rows[1:]])
    assert not cached(seed=7) and not cached(max_new_tokens=5)
    assert not cached(temperature=0.5) and not cached(batch_size=3)
    assert not cached(eval_cache=False) and cached()  # switched off: neither read nor written

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    assert cached(path=copy)
    weights = load_file(copy / "model.safetensors")
    name = next(k for k in weights if k.endswith("q_proj.weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(copy / "model.safetensors"), metadata={"format": "pt"})  # same size, new content
    assert not cached(path=copy) and cached(path=copy)
    assert cached()  # the original folder's entry is untouched

    fresh = tmp_path / "fresh"
    assert not cached(folder=fresh)
    [entry] = cache_entries(fresh)
    good = json.loads(entry.read_text())
    for broken, warning in (("{ not json", "is unreadable"),
                            (json.dumps({**good, "samples": good["samples"][:2]}), "incomplete or malformed"),
                            (json.dumps({**good, "fingerprint": {**good["fingerprint"], "prompts": "x"}}), "other inputs")):
        entry.write_text(broken)
        capsys.readouterr()
        assert not cached(folder=fresh)
        assert warning in capsys.readouterr().out
        assert cached(folder=fresh)  # the entry was written again, whole
    assert not list(fresh.glob(".*.tmp"))  # no temporary file left behind
