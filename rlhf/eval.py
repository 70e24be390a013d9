"""Compare policies on held-out prompts, judged by a reward model: reward, win rate, KL, length; plots.

    rlhf eval --config configs/smoke/eval.yaml
    rlhf eval --policies runs/q/sft runs/q/dpo runs/q/rl --reward_model_path runs/q/reward \\
              --prompts_file data/quickstart/prompts.jsonl --output_dir runs/q/eval

Each policy (a model folder or a LoRA adapter folder, merged onto its base) answers every prompt once,
through its chat template, with a fixed seed. Per policy:
  mean_reward     the reward model's mean score of its responses
  win_rate        fraction of prompts where its response outscores the reference policy's (ties count half)
  kl_to_reference mean over responses of sum_t [log p_policy(y_t) - log p_ref(y_t)] on the policy's own
                  sampled tokens: an unbiased estimate of KL(policy || reference) when sampling at
                  temperature 1 and top_p 1 (the defaults here); greedy or tempered decoding biases it
  mean_length     response length in tokens (EOS included when the policy stopped by itself)
Writes summary.json, responses.jsonl (one line per policy and prompt, with the prompt row's extra fields),
metrics.jsonl and rewards.png / lengths.png.
"""

from __future__ import annotations

import json
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


def win_rate(scores: list[float], reference_scores: list[float]) -> float:
    """Fraction of prompts where the policy's reward beats the reference's; a tie counts half."""
    if not scores or len(scores) != len(reference_scores):
        raise ValueError("win_rate needs equally long, non-empty score lists")
    points = sum(1.0 if s > r else 0.5 if s == r else 0.0 for s, r in zip(scores, reference_scores))
    return points / len(scores)


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

    set_seed(seed)
    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    texts = [tokenizer.apply_chat_template(build_messages(p), add_generation_prompt=True, tokenize=False) for p in prompts]
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {"do_sample": False}
    previous_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    samples: list[dict[str, Any]] = []
    try:
        for start in tqdm(range(0, len(texts), batch_size), desc="eval generate", unit="batch"):
            chunk = texts[start : start + batch_size]
            batch = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
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
    """log p(y_t | prompt, y_<t) under `model` for every response token of every sample."""
    import torch

    device = next(model.parameters()).device
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
            logps = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for i, s in enumerate(chunk):
            first = len(s["prompt_ids"])  # the logits at position t predict token t + 1
            positions = torch.arange(first - 1, first - 1 + len(s["response_ids"]), device=logps.device)
            tokens = torch.tensor(s["response_ids"], device=logps.device)
            result.append(logps[i, positions, tokens].tolist())
    return result


def evaluate_policies(policies: list[tuple[str, str]], reference: str, reward_model_path: str,
                      rows: list[dict[str, Any]], args: EvalArguments,
                      extra_metrics: ExtraMetrics | None = None) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Figures per policy name, and one record per (policy, prompt). `reference` is one of the names."""
    from rlhf.models import load_causal_lm, load_tokenizer
    from rlhf.reward import load_reward_model, score_texts

    prompts = [row["prompt"] for row in rows]
    paths = dict(policies)
    judge, judge_tokenizer = load_reward_model(reward_model_path)
    reference_model = load_causal_lm(paths[reference]).eval()
    reference_vocab = len(load_tokenizer(paths[reference]))
    records: dict[str, list[dict[str, Any]]] = {}
    logps: dict[str, tuple[list, list]] = {}  # per policy: its own and the reference's token log-probs
    for name, path in policies:
        tokenizer = load_tokenizer(path)
        if len(tokenizer) != reference_vocab:
            raise RlhfError(f"policy {name} ({path}) has a different vocabulary from the reference: no KL estimate")
        model = reference_model if name == reference else load_causal_lm(path).eval()
        print(f"[rlhf eval] {name}: generating {len(prompts)} responses", flush=True)
        samples = sample_responses(model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_p,
                                   args.batch_size, args.seed)
        rewards = score_texts(judge, judge_tokenizer, prompts, [s["text"] for s in samples], args.batch_size)
        own = token_logprobs(model, samples, args.batch_size)
        ref = own if model is reference_model else token_logprobs(reference_model, samples, args.batch_size)
        records[name] = [
            {"policy": name, "prompt": row["prompt"], "response": s["text"], "reward": r,
             "tokens": len(s["response_ids"]), "logp_policy": sum(lp), "logp_reference": sum(lr),
             "meta": {k: v for k, v in row.items() if k != "prompt"}}
            for row, s, r, lp, lr in zip(rows, samples, rewards, own, ref)
        ]
        logps[name] = (own, ref)
        if model is not reference_model:
            del model
    figures: dict[str, dict] = {}
    reference_rewards = [r["reward"] for r in records[reference]]
    for name, path in policies:
        recs = records[name]
        own, ref = logps[name]
        rewards = [r["reward"] for r in recs]
        figures[name] = {
            "path": path,
            "mean_reward": sum(rewards) / len(rewards),
            "win_rate": win_rate(rewards, reference_rewards),
            "kl_to_reference": kl_estimate(own, ref),
            "mean_length": sum(r["tokens"] for r in recs) / len(recs),
            "responses": len(recs),
        }
        if extra_metrics is not None:
            figures[name].update(extra_metrics(rows, recs))
    return figures, [r for name, _ in policies for r in records[name]]


def write_plots(out: Path, figures: dict[str, dict], records: list[dict[str, Any]], reference: str) -> list[str]:
    from rlhf.plots import plot_bars, plot_histograms

    names = list(figures)
    bars = plot_bars(out / "rewards.png", names, {
        "mean reward": [figures[n]["mean_reward"] for n in names],
        f"win rate vs {reference}": [figures[n]["win_rate"] for n in names],
    }, title="policies judged by the reward model")
    lengths = {n: [r["tokens"] for r in records if r["policy"] == n] for n in names}
    hist = plot_histograms(out / "lengths.png", lengths, title="response length", xlabel="tokens")
    return [bars.name, hist.name]


def main(argv: list[str] | None = None) -> int:
    import torch

    from rlhf.config import parse_stage_args, resolved_config
    from rlhf.data import data_hash, load_prompts
    from rlhf.models import resolve_model_path
    from rlhf.reward import check_reward_model
    from rlhf.runs import append_metrics, prepare_run_dir, write_summary

    args, config_path = parse_stage_args("eval", (EvalArguments,), argv, description=__doc__)
    source = config_path or "command line"
    if not args.policies:
        raise RlhfError(f"{source}: key 'policies' needs at least one model folder")
    for key in ("prompts_file", "reward_model_path"):
        if not getattr(args, key):
            raise RlhfError(f"{source}: key '{key}' is required")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise RlhfError(f"{source}: batch_size and max_new_tokens must be at least 1")
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
    rows = load_prompts(args.prompts_file)[: args.max_prompts]
    out = prepare_run_dir(args.output_dir, "eval", resolved_config(args), data_hash=data_hash(args.prompts_file),
                          config_path=config_path)

    torch.manual_seed(args.seed)
    figures, records = evaluate_policies(list(zip(names, paths)), reference, reward_path, rows, args)
    with open(out / "responses.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    for name, figs in figures.items():
        append_metrics(out, {"policy": name, **{k: v for k, v in figs.items() if k != "path"}})
    plots = write_plots(out, figures, records, reference)
    write_summary(out, {
        "reference": reference,
        "reward_model_path": args.reward_model_path,
        "prompts": len(rows),
        "policies": figures,
        "sampling": {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                     "seed": args.seed},
        "plots": plots,
    })
    for name, f in figures.items():
        print(f"[rlhf eval] {name:>16}: reward {f['mean_reward']:+.3f}  win {f['win_rate']:.2f}  "
              f"kl {f['kl_to_reference']:.3f}  length {f['mean_length']:.1f}")
    print(f"[rlhf eval] summary, responses and plots -> {out}")
    return 0
