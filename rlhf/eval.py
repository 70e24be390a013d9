"""Compare policies on held-out prompts, judged by a reward model: reward, win rate, KL, length; plots.

    rlhf eval --config smoke/eval
    rlhf eval --policies runs/q/sft runs/q/dpo runs/q/rl --reward_model_path runs/q/reward \\
              --prompts_file data/quickstart/prompts.jsonl --output_dir runs/q/eval

Each policy (a model folder or a LoRA adapter folder, merged onto its base) answers every prompt once,
through its chat template, with a fixed seed. Per policy:
  mean_reward     the reward model's mean score of its responses
  win_rate        fraction of prompts where its response outscores the reference policy's (ties count half)
  win_rate_lc     the same win rate controlled for length: what it would be at zero length difference
                  (see length_controlled_win_rate); a reward that pays for length shows as win_rate >> win_rate_lc
  kl_to_reference mean over responses of sum_t [log p_policy(y_t) - log p_ref(y_t)] on the policy's own
                  sampled tokens: an unbiased estimate of KL(policy || reference) when sampling at
                  temperature 1 and top_p 1 (the defaults here); greedy or tempered decoding biases it
  mean_length     response length in tokens (EOS included when the policy stopped by itself)
When prompt rows carry `constraints` (rlhf/data/prompts.jsonl, rlhf.constraints), also, over those rows:
  pass_rate_prompt       share of prompts whose response meets all of its constraints
  pass_rate_instruction  share of all constraints met
  pass_rate_by_type      {constraint type: share met}
Every figure has a bootstrap 95% interval over prompts (`<figure>_ci`: [low, high]); pass_rate_prompt_delta is
the policy's pass rate minus the reference's, with a paired interval (both resampled on the same prompts).

Pass rates want deterministic (greedy, `temperature: 0`) responses, the KL estimate wants temperature-1
samples. With `kl_prompts: N` and a temperature or top_p other than 1, the KL comes from a separate
temperature-1, top_p-1 sample on the first N prompts; summary.json's `kl_method` says which was used.
Writes summary.json, responses.jsonl (one line per policy and prompt, with the prompt row's extra fields),
metrics.jsonl and rewards.png / lengths.png (+ pass_rates.png / pass_rate_policies.png with constraints).

A policy's answers are cached (rlhf/eval_cache.py; eval_cache_dir, default $RLHF_CACHE/eval, i.e.
~/.cache/rlhf-loop/eval): the next eval of the same weights and tokenizer on the same prompts with the same
seed and sampling settings, software and CPU reads them instead of generating again (the reward model still
judges them). summary.json's `cached_policies` names those policies; `--eval_cache false` always generates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlhf.errors import RlhfError

# A hook the loop adds figures with (e.g. constraint pass rates): (prompt rows, one record per prompt) -> figures.
ExtraMetrics = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, float]]


@dataclass
class EvalArguments:
    policies: list[str] = field(
        default_factory=list, metadata={"help": "Policies to compare: model folders or LoRA adapter folders."}
    )
    policy_names: list[str] | None = field(
        default=None, metadata={"help": "Display names, one per policy; default: each folder's name."}
    )
    reference: str | None = field(
        default=None, metadata={"help": "Reference policy (a name or path among `policies`); default: the first."}
    )
    reward_model_path: str | None = field(default=None, metadata={"help": "Judge: a folder written by `rlhf reward`."})
    prompts_file: str | None = field(
        default=None, metadata={"help": "Held-out prompts: JSONL/Parquet/datasets folder with a `prompt` column."}
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use only the first N prompts."})
    output_dir: str = field(default="runs/default/eval", metadata={"help": "Run folder for summary, responses, plots."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest response, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature; 0 = greedy. The KL estimate is unbiased only at 1."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass; the KL estimate is unbiased only at 1."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate / scoring batch."})
    seed: int = field(default=42, metadata={"help": "Sampling seed, reset before each policy generates."})
    kl_prompts: int = field(
        default=0,
        metadata={"help": "0: estimate KL on the main responses. N > 0 with temperature or top_p other than 1: "
                          "estimate it on a separate temperature-1, top_p-1 sample of the first N prompts "
                          "(unbiased, while pass rates use the greedy responses)."},
    )
    kl_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest response of the separate KL sample; default: max_new_tokens."}
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "dtype of the judged responses' generation when the KL has its own sample (kl_prompts > 0): "
                          "auto = bfloat16 where the machine computes it natively (2-3x faster on such CPUs), else "
                          "float32. Every policy, the reference included, generates in the same dtype; the KL sample "
                          "and every log-probability stay in float32.",
                  "choices": ["auto", "float32", "bfloat16", "float16"]},
    )
    eval_cache: bool = field(
        default=True,
        metadata={"help": "Reuse a policy's answers (and KL sample) from an earlier eval of the same weights, tokenizer, "
                          "prompts, seed, sampling settings, dtype, software and CPU; false: always generate."},
    )
    eval_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Folder of the answer cache; default $RLHF_EVAL_CACHE, else $RLHF_CACHE/eval "
                          "(~/.cache/rlhf-loop/eval)."},
    )


def win_points(scores: list[float], reference_scores: list[float]) -> list[float]:
    """Per prompt: 1 when the policy's reward beats the reference's, 0.5 for a tie, 0 for a loss."""
    return [1.0 if s > r else 0.5 if s == r else 0.0 for s, r in zip(scores, reference_scores)]


def win_rate(scores: list[float], reference_scores: list[float]) -> float:
    """Fraction of prompts where the policy's reward beats the reference's; a tie counts half."""
    if not scores or len(scores) != len(reference_scores):
        raise ValueError("win_rate needs equally long, non-empty score lists")
    return sum(win_points(scores, reference_scores)) / len(scores)


# Ridge penalty on the length coefficient (a unit Gaussian prior): keeps the fit finite when length
# separates wins from losses perfectly (tiny evals), and weighs little against a hundred prompts.
LC_L2 = 1.0


def length_controlled_win_rate(points: list[float], length_diffs: list[float], l2: float = LC_L2) -> float:
    """The win rate at zero length difference: AlpacaEval's length-controlled win rate, reduced to one judge.

    A reward model that likes long answers gives a longer policy wins that are length, not quality. As in
    AlpacaEval-LC (Dubois et al. 2024), fit a logistic regression of the per-prompt outcome y (1 win, 0.5
    tie, 0 loss: a soft label) on x = tanh(d / std(d)), d = policy tokens - reference tokens:
        P(win) = sigmoid(a + b x),  maximising sum[y log p + (1 - y) log(1 - p)] - l2 b^2 / 2   (Newton)
    and report sigmoid(a), the predicted win rate where the two answers are equally long (x = 0). tanh of the
    standardised difference bounds the pull of a few runaway answers; d is not centred, so x = 0 still means
    equal length. Chosen over stratifying by length difference because it uses every prompt (a held-out set
    of ~100 has few equal-length pairs) and needs no bin edges. The ridge term (LC_L2) keeps b finite when
    length separates the outcomes perfectly. Special cases: every outcome the same -> that outcome (nothing
    for length to explain); the same difference on every prompt (std 0) -> x = 0, i.e. the raw win rate,
    since a constant length gap cannot be told apart from the policy's own effect.
    """
    import numpy as np  # a 2-parameter Newton fit, redone on every bootstrap resample: vectorised over prompts

    if not points or len(points) != len(length_diffs):
        raise ValueError("length_controlled_win_rate needs equally long, non-empty lists")
    if all(y == points[0] for y in points):
        return float(points[0])
    y, d = np.asarray(points, dtype=float), np.asarray(length_diffs, dtype=float)
    std = d.std()
    x = np.tanh(d / std) if std > 0 else np.zeros_like(d)

    def objective(a: float, b: float) -> float:  # sum[y log p + (1 - y) log(1 - p)] - l2 b^2 / 2, stably
        z = a + b * x
        return float(-(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)).sum() - l2 * b * b / 2)

    a, b = math.log(y.mean() / (1 - y.mean())), 0.0  # the fit without length: a start next to the optimum
    current = objective(a, b)
    for _ in range(100):
        p = np.exp(-np.logaddexp(0, -(a + b * x)))  # sigmoid without overflow
        ga, gb = float((y - p).sum()), float(((y - p) * x).sum()) - l2 * b
        w = p * (1 - p)
        haa, hab, hbb = float(w.sum()), float((w * x).sum()), float((w * x * x).sum()) + l2
        det = haa * hbb - hab * hab
        if det <= 1e-300:  # no curvature left (p saturated): the current point is as good as it gets
            break
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        step = 1.0  # halve the Newton step until the penalised likelihood does not fall
        while (trial := objective(a + step * da, b + step * db)) < current - 1e-12 and step > 1e-8:
            step /= 2
        if trial < current - 1e-12:  # no step helps: at the optimum up to rounding
            break
        a, b, current = a + step * da, b + step * db, trial
        if abs(step * da) < 1e-10 and abs(step * db) < 1e-10:
            break
    return 1 / (1 + math.exp(-a)) if a >= 0 else math.exp(a) / (1 + math.exp(a))


def length_controlled_figures(points: list[float], length_diffs: list[float]) -> dict[str, Any]:
    """win_rate_lc and its bootstrap 95% interval over prompts (the whole fit redone on each resample)."""
    from labeler.stats import bootstrap_ci

    pairs = list(zip(points, length_diffs))
    return {"win_rate_lc": length_controlled_win_rate(points, length_diffs),
            "win_rate_lc_ci": bootstrap_ci(pairs, lambda ps: length_controlled_win_rate([y for y, _ in ps],
                                                                                        [d for _, d in ps]))}


def kl_estimate(policy_logps: list[list[float]], reference_logps: list[list[float]]) -> float:
    """Mean over responses of sum_t (log p_policy - log p_ref), on tokens sampled from the policy."""
    if not policy_logps or len(policy_logps) != len(reference_logps):
        raise ValueError("kl_estimate needs one reference log-prob list per policy response")
    totals = []
    for lp, lr in zip(policy_logps, reference_logps):
        if len(lp) != len(lr):
            raise ValueError("policy and reference log-probs must cover the same tokens")
        totals.append(sum(a - b for a, b in zip(lp, lr)))
    return sum(totals) / len(totals)


def check_prompt_constraints(rows: list[dict[str, Any]], source: str) -> None:
    """Fail before any model loads when a prompt row's `constraints` are malformed (names the row)."""
    from rlhf.prompts import check_constraints

    for i, row in enumerate(rows, start=1):
        check_constraints(row.get("constraints"), f"{source} prompt {i}")


def constraint_pass_rates(rows: list[dict[str, Any]], responses: list[str]) -> dict[str, Any]:
    """Pass rates over the rows that carry constraints; {} when none does (plain prompts have no such figure).

    pass_rate_prompt: share of those prompts whose response meets all its constraints (constraints.all_met);
    pass_rate_instruction: share of all their constraints met; pass_rate_by_type: share met per type.
    """
    from rlhf.constraints import check_constraint

    if len(rows) != len(responses):
        raise ValueError(f"{len(rows)} prompt rows but {len(responses)} responses")
    prompts = prompts_passed = 0
    by_type: dict[str, list[int]] = {}  # type -> [met, total]
    for row, response in zip(rows, responses):
        constraints = row.get("constraints") or []
        if not constraints:
            continue
        met = [check_constraint(c, response) for c in constraints]
        prompts += 1
        prompts_passed += all(met)
        for c, ok in zip(constraints, met):
            counts = by_type.setdefault(c["type"], [0, 0])
            counts[0] += ok
            counts[1] += 1
    if not prompts:
        return {}
    total = sum(t for _, t in by_type.values())
    return {
        "pass_rate_prompt": prompts_passed / prompts,
        "pass_rate_instruction": sum(m for m, _ in by_type.values()) / total,
        "pass_rate_by_type": {k: m / t for k, (m, t) in sorted(by_type.items())},
        "constrained_prompts": prompts,
        "constraints": total,
    }


def interval_figures(recs: list[dict[str, Any]], reference_recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Bootstrap 95% intervals over prompts (labeler.stats) for one policy's figures; paired with the
    reference where two policies answered the same prompts: the length-controlled win rate (win_rate_lc,
    with its interval) needs both answers' lengths, and `pass_rate_prompt_delta` is this policy's
    prompt-level pass rate minus the reference's, and its interval resamples prompts for both at once."""
    from labeler.stats import bootstrap_ci, paired_bootstrap_ci

    rewards = [r["reward"] for r in recs]
    points = win_points(rewards, [q["reward"] for q in reference_recs])
    out: dict[str, Any] = {"mean_reward_ci": bootstrap_ci(rewards), "win_rate_ci": bootstrap_ci(points)}
    out.update(length_controlled_figures(points, [r["tokens"] - q["tokens"] for r, q in zip(recs, reference_recs)]))
    met = [r["constraints_met"] for r in recs if r.get("constraints_met")]
    if met:
        new = [float(all(m)) for m in met]
        old = [float(all(r["constraints_met"])) for r in reference_recs if r.get("constraints_met")]
        out["pass_rate_prompt_ci"] = bootstrap_ci(new)
        out["pass_rate_instruction_ci"] = bootstrap_ci(met, lambda ms: sum(map(sum, ms)) / sum(map(len, ms)))
        out["pass_rate_prompt_delta"] = sum(new) / len(new) - sum(old) / len(old)
        out["pass_rate_prompt_delta_ci"] = paired_bootstrap_ci(new, old)
    return out


def kl_method(args: EvalArguments) -> str:
    """How kl_to_reference is estimated: "separate_sample", "main_responses", or "main_responses_biased"
    (the main responses were greedy or tempered and no separate sample was asked for)."""
    unbiased_decoding = args.temperature == 1 and args.top_p == 1
    if args.kl_prompts > 0 and not unbiased_decoding:
        return "separate_sample"
    return "main_responses" if unbiased_decoding else "main_responses_biased"


def policy_names(paths: list[str], names: list[str] | None) -> list[str]:
    """Display names: the given list, else folder names, made unique with the parent folder when they clash."""
    if names:
        if len(names) != len(paths):
            raise RlhfError(f"policy_names has {len(names)} names for {len(paths)} policies")
        return list(names)
    short = [Path(p).name or p for p in paths]
    return [f"{Path(p).parent.name}/{s}" if short.count(s) > 1 else s for p, s in zip(paths, short)]


def eos_ids(model, tokenizer) -> set[int]:
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return ids | {tokenizer.eos_token_id}


def sample_responses(model, tokenizer, prompts: list, max_new_tokens: int, temperature: float, top_p: float,
                     batch_size: int, seed: int) -> list[dict[str, Any]]:
    """One response per prompt with its token ids: the KL estimate needs the exact sampled tokens.

    rlhf.generate.generate_responses returns decoded text only; re-tokenizing text does not give back
    the sampled tokens, so this variant keeps the ids (same chat template, left padding, KV cache).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    from rlhf.generate import build_messages
    from rlhf.models import generation_mode

    set_seed(seed)
    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    texts = [tokenizer.apply_chat_template(build_messages(p), add_generation_prompt=True, tokenize=False) for p in prompts]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    if temperature == 1.0 and top_p == 1.0:
        sampling["top_k"] = 0  # the model's own distribution, which the KL estimate needs: not transformers' top-50

    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    samples: list[dict[str, Any]] = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="eval generate", unit="batch"):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad(), generation_mode(model):
                out = model.generate(**batch, max_new_tokens=max_new_tokens, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id, **sampling)
            width = batch["input_ids"].shape[1]
            for row, text in enumerate(chunk):
                generated = out[row, width:].tolist()
                cut = next((i + 1 for i, t in enumerate(generated) if t in stop), len(generated))
                response_ids = generated[:cut]  # up to and including the first EOS; the rest is padding
                samples.append({
                    "prompt_ids": tokenizer(text, add_special_tokens=False)["input_ids"],
                    "response_ids": response_ids,
                    "text": tokenizer.decode(response_ids, skip_special_tokens=True).strip(),
                })
    finally:
        tokenizer.padding_side = previous_side
    return samples


def token_logprobs(model, samples: list[dict[str, Any]], batch_size: int) -> list[list[float]]:
    """log p(y_t | prompt, y_<t) under `model` for every response token of every sample.

    The LM head runs on each sample's response positions only (the decoder's hidden states, then the head):
    the full-vocabulary logits of a whole batch (92 samples x 130 tokens x 49,152 in float32: 2.3 GB, twice
    with the log-softmax) are never built.
    """
    import torch

    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    result: list[list[float]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        seqs = [s["prompt_ids"] + s["response_ids"] for s in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, seq in enumerate(seqs):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        with torch.no_grad():
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
            for i, s in enumerate(chunk):
                first = len(s["prompt_ids"])  # the hidden state at position t predicts token t + 1
                logits = head(hidden[i, first - 1 : first - 1 + len(s["response_ids"])]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                tokens = torch.tensor(s["response_ids"], device=logits.device)
                result.append(torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0].tolist())
    return result


def response_records(name: str, rows: list[dict[str, Any]], samples: list[dict[str, Any]],
                     rewards: list[float]) -> list[dict[str, Any]]:
    """One record per prompt (responses.jsonl's lines): the response, its reward and length in tokens, the
    row's other fields as `meta`, and `constraints_met` (one bool per constraint) where the row has some."""
    from rlhf.constraints import check_constraint

    recs = []
    for row, s, r in zip(rows, samples, rewards, strict=True):
        rec = {"policy": name, "prompt": row["prompt"], "response": s["text"], "reward": r,
               "tokens": len(s["response_ids"]), "meta": {k: v for k, v in row.items() if k != "prompt"}}
        if row.get("constraints"):
            rec["constraints_met"] = [check_constraint(c, s["text"]) for c in row["constraints"]]
        recs.append(rec)
    return recs


def policy_figures(rows: list[dict[str, Any]], recs: list[dict[str, Any]],
                   reference_recs: list[dict[str, Any]]) -> dict[str, Any]:
    """One policy's figures from its records, against the reference's records on the same prompts: mean
    reward, win rate (raw and length-controlled), mean length, pass rates where rows carry constraints, each
    with its bootstrap interval. Everything but the KL, which needs the models (`rlhf onpolicy` reuses this)."""
    rewards = [r["reward"] for r in recs]
    figures = {
        "mean_reward": sum(rewards) / len(rewards),
        "win_rate": win_rate(rewards, [r["reward"] for r in reference_recs]),
        "mean_length": sum(r["tokens"] for r in recs) / len(recs),
        "responses": len(recs),
    }
    figures.update(constraint_pass_rates(rows, [r["response"] for r in recs]))
    figures.update(interval_figures(recs, reference_recs))
    return figures


def answer_cache(args: EvalArguments, prompts: list, gen_dtype: str, kl_count: int | None, kl_tokens: int):
    """The answer cache for this eval's settings (rlhf.eval_cache), or None with `eval_cache: false`.
    `kl_count` None: the KL is estimated on the main responses, so there is no separate sample to key on."""
    if not args.eval_cache:
        return None
    import hashlib

    from rlhf.eval_cache import AnswerCache, default_cache_dir

    prompts_hash = hashlib.sha256(json.dumps(prompts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return AnswerCache(args.eval_cache_dir or default_cache_dir(), {
        "prompts": prompts_hash, "prompt_count": len(prompts),
        "sampling": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": args.top_p,
                     "batch_size": args.batch_size, "seed": args.seed, "dtype": gen_dtype},
        "kl_sample": None if kl_count is None else {"prompts": kl_count, "max_new_tokens": kl_tokens},
    })


def evaluate_policies(policies: list[tuple[str, str]], reference: str, reward_model_path: str,
                      rows: list[dict[str, Any]], args: EvalArguments,
                      extra_metrics: ExtraMetrics | None = None) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Figures per policy name, and one record per (policy, prompt). `reference` is one of the names.

    Rows with `constraints` add pass-rate figures and a per-record `constraints_met` list.
    One model is in memory at a time: each policy answers (and samples for the KL, with its own log-probs),
    then the reference scores every policy's KL sample, then the reward model judges every answer. Holding the
    judge, the reference and a policy together had made eval the quickstart's largest stage (6.2 GB).
    A policy found in the answer cache (rlhf.eval_cache, unless `eval_cache` is false) is not loaded at all: its
    answers, KL sample and own log-probs come from there, and its figure `answers_from_cache` is true.
    """
    import copy

    import torch

    from rlhf.models import load_causal_lm, load_tokenizer, resolve_dtype
    from rlhf.resources import release_memory
    from rlhf.reward import SCORE_BATCH, load_reward_model, score_texts

    check_prompt_constraints(rows, "eval")
    prompts = [row["prompt"] for row in rows]
    method = kl_method(args)
    # The judged responses may come from a low-precision copy only when the KL has its own (float32) sample.
    gen_dtype = resolve_dtype(args.dtype) if method == "separate_sample" else "float32"
    kl_count = min(args.kl_prompts, len(prompts)) if method == "separate_sample" else len(prompts)
    kl_tokens = args.kl_max_new_tokens or args.max_new_tokens
    paths = dict(policies)
    reference_vocab = len(load_tokenizer(paths[reference]))
    samples: dict[str, list[dict[str, Any]]] = {}
    kl_samples: dict[str, list[dict[str, Any]]] = {}
    own: dict[str, list[list[float]]] = {}
    cache = answer_cache(args, prompts, gen_dtype, kl_count if method == "separate_sample" else None, kl_tokens)
    for name, path in policies:
        tokenizer = load_tokenizer(path)
        if len(tokenizer) != reference_vocab:
            raise RlhfError(f"policy {name} ({path}) has a different vocabulary from the reference: no KL estimate")
        cached = cache.load(name, path) if cache else None
        if cached is not None:
            samples[name], own[name] = cached["samples"], cached["own_logprobs"]
            kl_samples[name] = samples[name] if cached["kl_samples"] is None else cached["kl_samples"]
            continue
        model = load_causal_lm(path).eval()
        print(f"[rlhf eval] {name}: generating {len(prompts)} responses", flush=True)
        generator = model if gen_dtype == "float32" else copy.deepcopy(model).to(getattr(torch, gen_dtype))
        samples[name] = sample_responses(generator, tokenizer, prompts, args.max_new_tokens, args.temperature,
                                         args.top_p, args.batch_size, args.seed)
        del generator
        kl_samples[name] = samples[name]
        if method == "separate_sample":
            print(f"[rlhf eval] {name}: sampling {kl_count} responses at temperature 1 for the KL", flush=True)
            kl_samples[name] = sample_responses(model, tokenizer, prompts[:kl_count], kl_tokens, 1.0, 1.0,
                                                args.batch_size, args.seed)
        own[name] = token_logprobs(model, kl_samples[name], args.batch_size)
        del model
        release_memory()
        if cache is not None:
            cache.store(path, samples[name], kl_samples[name] if method == "separate_sample" else None, own[name])
    ref = {reference: own[reference]}
    if len(policies) > 1:  # the reference scores the other policies' KL samples (not needed for itself)
        reference_model = load_causal_lm(paths[reference]).eval()
        ref.update({name: token_logprobs(reference_model, kl_samples[name], args.batch_size)
                    for name, _ in policies if name != reference})
        del reference_model
        release_memory()
    print(f"[rlhf eval] scoring {len(policies) * len(prompts)} responses with the reward model", flush=True)
    judge, judge_tokenizer = load_reward_model(reward_model_path)
    records: dict[str, list[dict[str, Any]]] = {}
    for name, _ in policies:
        rewards = score_texts(judge, judge_tokenizer, prompts, [s["text"] for s in samples[name]], SCORE_BATCH)
        recs = response_records(name, rows, samples[name], rewards)
        if kl_samples[name] is samples[name]:  # these log-probs are the KL estimate's terms
            for rec, lp, lr in zip(recs, own[name], ref[name]):
                rec["logp_policy"], rec["logp_reference"] = sum(lp), sum(lr)
        records[name] = recs
    del judge
    release_memory()
    figures: dict[str, dict] = {}
    for name, path in policies:
        recs = records[name]
        figures[name] = {"path": path, **policy_figures(rows, recs, records[reference]),
                         "kl_to_reference": kl_estimate(own[name], ref[name]), "kl_method": method,
                         "kl_responses": len(own[name]), "generation_dtype": gen_dtype,
                         "answers_from_cache": bool(cache and name in cache.hits)}
        if extra_metrics is not None:
            figures[name].update(extra_metrics(rows, recs))
    return figures, [r for name, _ in policies for r in records[name]]


def write_plots(out: Path, figures: dict[str, dict], records: list[dict[str, Any]], reference: str) -> list[str]:
    from rlhf.plots import plot_bars, plot_histograms

    names = list(figures)
    bars = plot_bars(out / "rewards.png", names, {
        "mean reward": [figures[n]["mean_reward"] for n in names],
        f"win rate vs {reference}": [figures[n]["win_rate"] for n in names],
        f"length-controlled win rate vs {reference}": [figures[n]["win_rate_lc"] for n in names],
    }, title="policies judged by the reward model")
    lengths = {n: [r["tokens"] for r in records if r["policy"] == n] for n in names}
    hist = plot_histograms(out / "lengths.png", lengths, title="response length", xlabel="tokens")
    written = [bars.name, hist.name]
    if all("pass_rate_prompt" in figures[n] for n in names):
        written += [p.name for p in write_pass_rate_plots(out, figures)]
    return written


def write_pass_rate_plots(out: Path, figures: dict[str, dict]) -> list[Path]:
    """pass_rate_policies.png (prompt- and instruction-level per policy) and pass_rates.png (per constraint type)."""
    from rlhf.plots import plot_grouped_bars

    names = list(figures)
    policies = plot_grouped_bars(out / "pass_rate_policies.png", names, {
        "prompt-level (all met)": [figures[n]["pass_rate_prompt"] for n in names],
        "instruction-level (share met)": [figures[n]["pass_rate_instruction"] for n in names],
    }, title="constraint pass rate per policy", ylabel="pass rate", ylim=(0.0, 1.0))
    types = sorted({t for n in names for t in figures[n]["pass_rate_by_type"]})
    by_type = plot_grouped_bars(out / "pass_rates.png", types, {
        n: [figures[n]["pass_rate_by_type"].get(t, float("nan")) for t in types] for n in names
    }, title="constraint pass rate per type", ylabel="share met", ylim=(0.0, 1.0))
    return [policies, by_type]


def check_args(args: EvalArguments, source: str) -> None:
    if not args.policies:
        raise RlhfError(f"{source}: key 'policies' needs at least one model folder")
    if not args.reward_model_path:
        raise RlhfError(f"{source}: key 'reward_model_path' is required")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise RlhfError(f"{source}: batch_size and max_new_tokens must be at least 1")
    if args.kl_prompts < 0:
        raise RlhfError(f"{source}: kl_prompts must be 0 (use the main responses) or a positive number")
    if args.kl_max_new_tokens is not None and args.kl_max_new_tokens < 1:
        raise RlhfError(f"{source}: kl_max_new_tokens must be at least 1")


def run_eval(args: EvalArguments, rows: list[dict[str, Any]] | None = None, config_path: str | None = None,
             extra_metrics: ExtraMetrics | None = None) -> dict[str, Any]:
    """The whole stage: validate, evaluate, write responses/metrics/plots/summary; returns the summary.

    `rows` lets a caller (the loop) pass prompt rows it already holds; otherwise `prompts_file` is read.
    """
    import torch

    from rlhf.config import resolved_config
    from rlhf.data import data_hash, load_prompts
    from rlhf.models import resolve_model_path
    from rlhf.reward import check_reward_model
    from rlhf.runs import append_metrics, prepare_run_dir, write_summary

    source = config_path or "command line"
    check_args(args, source)
    if rows is None:
        if not args.prompts_file:
            raise RlhfError(f"{source}: key 'prompts_file' is required")
        rows = load_prompts(args.prompts_file)
    rows = rows[: args.max_prompts]
    if not rows:
        raise RlhfError(f"{source}: no prompts to evaluate")
    check_prompt_constraints(rows, args.prompts_file or source)
    names = policy_names(args.policies, args.policy_names)
    if len(set(names)) != len(names):
        raise RlhfError(f"{source}: policy names must be unique, got {names}")
    paths = [resolve_model_path(p, field="policies") for p in args.policies]
    by_path = {p: n for p, n in zip(args.policies, names)}
    reference = args.reference or names[0]
    reference = by_path.get(reference, reference)
    if reference not in names:
        raise RlhfError(f"{source}: reference '{args.reference}' is neither a name nor a path in policies {names}")
    reward_path = check_reward_model(args.reward_model_path)
    rows_hash = data_hash(args.prompts_file) if args.prompts_file else None
    out = prepare_run_dir(args.output_dir, "eval", resolved_config(args), data_hash=rows_hash, config_path=config_path)

    torch.manual_seed(args.seed)
    figures, records = evaluate_policies(list(zip(names, paths)), reference, reward_path, rows, args, extra_metrics)
    with open(out / "responses.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    for name, figs in figures.items():
        append_metrics(out, {"policy": name, **flat_figures(figs)})
    plots = write_plots(out, figures, records, reference)
    method = kl_method(args)
    summary = {
        "reference": reference,
        "reward_model_path": args.reward_model_path,
        "prompts": len(rows),
        "policies": figures,
        "sampling": {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed},
        "kl_method": method,
        "plots": plots,
        # policies whose answers (and KL sample) an earlier eval had generated with the same inputs
        "cached_policies": [name for name, f in figures.items() if f.get("answers_from_cache")],
    }
    if method == "separate_sample":
        summary["kl_sample"] = {"prompts": min(args.kl_prompts, len(rows)), "temperature": 1.0, "top_p": 1.0,
                                "max_new_tokens": args.kl_max_new_tokens or args.max_new_tokens, "seed": args.seed}
    write_summary(out, summary)
    for name, f in figures.items():
        passed = (f"  pass {f['pass_rate_prompt']:.2f} [{f['pass_rate_prompt_ci'][0]:.2f}, {f['pass_rate_prompt_ci'][1]:.2f}]"
                  f"/{f['pass_rate_instruction']:.2f}") if "pass_rate_prompt" in f else ""
        print(f"[rlhf eval] {name:>16}: reward {f['mean_reward']:+.3f}  win {f['win_rate']:.2f}  "
              f"lc-win {f['win_rate_lc']:.2f} [{f['win_rate_lc_ci'][0]:.2f}, {f['win_rate_lc_ci'][1]:.2f}]  "
              f"kl {f['kl_to_reference']:.3f}  length {f['mean_length']:.1f}{passed}")
    if summary["cached_policies"]:
        print(f"[rlhf eval] answers from the cache (an earlier eval, the same model and inputs): "
              f"{', '.join(summary['cached_policies'])}; the reward model judged them afresh")
    if method == "main_responses_biased":
        print("[rlhf eval] note: KL estimated on greedy/tempered responses is biased; set kl_prompts for an unbiased one")
    print(f"[rlhf eval] summary, responses and plots -> {out}")
    return summary


def flat_figures(figures: dict[str, Any]) -> dict[str, Any]:
    """Scalars only, for metrics.jsonl: pass_rate_by_type becomes pass_rate_by_type/<type> keys."""
    flat = {k: v for k, v in figures.items() if k not in ("path", "pass_rate_by_type") and not k.endswith("_ci")}
    flat.update({f"{k}_low": v[0] for k, v in figures.items() if k.endswith("_ci") and v})
    flat.update({f"{k}_high": v[1] for k, v in figures.items() if k.endswith("_ci") and v})
    flat.update({f"pass_rate_by_type/{t}": v for t, v in figures.get("pass_rate_by_type", {}).items()})
    return flat


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args

    args, config_path = parse_stage_args("eval", (EvalArguments,), argv, description=__doc__)
    run_eval(args, config_path=config_path)
    return 0
