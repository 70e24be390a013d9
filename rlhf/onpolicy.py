"""On-policy DPO labelled by the reward model: sample, score, pair, DPO, repeat (TRL DPOTrainer, iterated).

    rlhf onpolicy --config smoke/onpolicy
    rlhf onpolicy --model_name_or_path runs/quickstart/sft --reward_model_path runs/quickstart/reward \\
                  --prompts_file rlhf/data/prompts.jsonl --iterations 3 --k 4 --reward_margin 0.5

People label hundreds of pairs; a reward model can judge many more fresh samples of the current policy.
Each of `iterations` iterations:
  1. sample `k` responses per prompt from the current policy (the SFT model `model_name_or_path` plus the
     LoRA adapter trained so far) on `prompts_per_iteration` prompts, rotating through `prompts_file`;
  2. score them with the reward model (`reward_model_path`, the output of `rlhf reward`);
  3. keep each prompt's (best, worst) pair when the reward gap exceeds `reward_margin`;
  4. run DPO (TRL's DPOTrainer, built as `rlhf dpo` builds it) on the kept pairs. The adapter carries
     over from iteration to iteration and the reference is always the SFT model (the adapter disabled),
     so `beta` bounds the drift from SFT, not just from the previous iteration.
Every iteration records, for the policy it sampled from: mean_reward, kl_to_reference (mean over samples of
sum_t [log p_policy(y_t) - log p_sft(y_t)] on the sampled tokens: unbiased at temperature 1 and top_p 1),
mean_length (tokens) and the kept pairs' mean reward gap, plus DPO's losses; to metrics.jsonl, TensorBoard,
summary.json's `per_iteration` and iterations.png. With `measure_final`, the final policy is sampled once more on the first
iteration's prompts (same seed), so first and final reward compare like for like.

The reward-hacking guard (off unless `eval_prompts_file` is set): after the iterations, the SFT model and the
policy after each iteration answer held-out prompts greedily, scored by the same reward model with rlhf.eval's
functions. Each per_iteration entry gets `heldout` (the policy after that iteration: the reward model's mean
score, win rate and length-controlled win rate vs the SFT model, mean length, and the pass rates where prompt
rows carry `constraints`, each with a bootstrap 95% interval); summary.json's `heldout_sft` is the start, and
guard.png draws them against the iteration: a reward that rises while the pass rate falls or the length runs
away is reward hacking. Without constraints the quality reference is the arena's human win rate.

Output: <output_dir>/iteration-N/ (samples.jsonl, pairs.jsonl, that iteration's adapter, summary.json), the
final adapter in <output_dir> itself (load it like `rlhf dpo`'s). A re-run skips finished iterations (those
with a summary.json) and resumes an interrupted DPO run from its last checkpoint. The reward model must pass
the quality gate `min_reward_accuracy`. Options after the stage's own are DPOConfig's (per iteration).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from rlhf.config import StageArguments
from rlhf.errors import RlhfError
from rlhf.prompts import rotate_prompts
from rlhf.reward import MIN_REWARD_ACCURACY, MIN_REWARD_ACCURACY_HELP

STAGE = "onpolicy"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class OnpolicyArguments(StageArguments):
    prompts_file: str | None = field(
        default=None, metadata={"help": "JSONL/Parquet/datasets folder with a `prompt` column: the prompts to sample on."}
    )
    prompt_split: str | None = field(
        default="train",
        metadata={"help": "When prompt rows carry a `split` field, use only rows of this split, so held-out prompts "
                          "stay unseen (rows without `split` are all used)."},
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model folder written by `rlhf reward` (adapter or full model)."}
    )
    min_reward_accuracy: float = field(default=MIN_REWARD_ACCURACY, metadata={"help": MIN_REWARD_ACCURACY_HELP})
    iterations: int = field(default=3, metadata={"help": "Rounds of sample -> score -> pair -> DPO."})
    prompts_per_iteration: int = field(
        default=64, metadata={"help": "Prompts sampled per iteration, rotating through the file (0 = all of them)."}
    )
    k: int = field(default=4, metadata={"help": "Responses sampled per prompt; the best and the worst make a pair."})
    reward_margin: float = field(
        default=0.5,
        metadata={"help": "Keep a prompt's (best, worst) pair only when their reward gap exceeds this. Rewards are "
                          "Bradley-Terry logits: a gap of 0.5 means the reward model prefers the best with p = 0.62."},
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled response, in tokens."})
    temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature (> 0). 1 with top_p 1 samples the policy itself: "
                                       "truly on-policy pairs and an unbiased KL estimate."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    batch_size: int = field(
        default=32, metadata={"help": "Sequences per generate call and per reward-scoring batch (log-prob batches "
                                      "for the KL: at most 16)."}
    )
    kl_samples: int = field(
        default=0, metadata={"help": "Estimate the KL from the first N samples only (0 = all of them): it costs a "
                                     "forward pass of the policy and one of the SFT model over those samples."}
    )
    measure_final: bool = field(
        default=True, metadata={"help": "After the last iteration, sample the final policy once more (on the first "
                                        "iteration's prompts) for its reward, KL and length."}
    )
    eval_prompts_file: str | None = field(
        default=None,
        metadata={"help": "The reward-hacking guard (off when unset): held-out prompts (JSONL/Parquet/datasets folder) "
                          "that the SFT model and the policy after each iteration answer greedily; their reward, pass "
                          "rate (rows with `constraints`) and length go to per_iteration's `heldout` and guard.png. "
                          "Rows of split `prompt_split` are left out: they train the policy."},
    )
    eval_max_prompts: int = field(default=0, metadata={"help": "Guard: only the first N held-out prompts (0 = all)."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Guard: longest greedy response, in tokens; default: max_new_tokens."}
    )


def select_pairs_by_reward(rewards: Sequence[float], margin: float) -> list[tuple[int, int]]:
    """One prompt's (chosen, rejected) pair from its samples' rewards: [(best, worst)] when the gap exceeds
    `margin`, else []. Among equal rewards the first index wins (best and worst alike), so the result is
    deterministic; equal rewards never make a pair, since the gap must be strictly larger than margin >= 0."""
    if margin < 0:
        raise ValueError(f"margin must be at least 0, got {margin}")
    if len(rewards) < 2:
        return []
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
    return [(best, worst)] if rewards[best] - rewards[worst] > margin else []


def stage_defaults() -> dict:
    from rlhf.config import training_defaults

    return training_defaults(
        STAGE,
        # One pass over each iteration's fresh pairs: the next iteration brings new ones.
        num_train_epochs=1,
        # LoRA needs a larger step than TRL's full-model default (1e-6), which is meant for full fine-tuning.
        learning_rate=5e-5,
        max_length=256,
    )


def check_args(args: OnpolicyArguments, model_args, source: str) -> None:
    for key in ("prompts_file", "reward_model_path"):
        if not getattr(args, key):
            raise RlhfError(f"{source}: key '{key}' is required")
    if args.iterations < 1:
        raise RlhfError(f"{source}: iterations must be at least 1, got {args.iterations}")
    if args.k < 2:
        raise RlhfError(f"{source}: k must be at least 2 (a pair needs two responses), got {args.k}")
    if args.reward_margin < 0:
        raise RlhfError(f"{source}: reward_margin must be at least 0, got {args.reward_margin}")
    if args.prompts_per_iteration < 0:
        raise RlhfError(f"{source}: prompts_per_iteration must be 0 (all) or more, got {args.prompts_per_iteration}")
    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise RlhfError(f"{source}: batch_size and max_new_tokens must be at least 1")
    if args.kl_samples < 0:
        raise RlhfError(f"{source}: kl_samples must be 0 (all samples) or more, got {args.kl_samples}")
    if args.temperature <= 0:
        raise RlhfError(f"{source}: temperature must be above 0: greedy decoding gives k identical responses")
    if args.eval_max_prompts < 0:
        raise RlhfError(f"{source}: eval_max_prompts must be 0 (all) or more, got {args.eval_max_prompts}")
    if args.eval_max_new_tokens is not None and args.eval_max_new_tokens < 1:
        raise RlhfError(f"{source}: eval_max_new_tokens must be at least 1, got {args.eval_max_new_tokens}")
    if not model_args.use_peft:
        raise RlhfError(f"{source}: use_peft false is not supported: the policy is a LoRA adapter over the SFT model, "
                        "which (adapter disabled) is DPO's reference in every iteration")


def device() -> str:
    """Where sampling and scoring run (DPOTrainer places its own model): CUDA when there is one, as in generate."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_judge(reward_path: str):
    """The reward model and its tokenizer, on the sampling device."""
    from rlhf.reward import load_reward_model

    model, tokenizer = load_reward_model(reward_path)
    return model.to(device()), tokenizer


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    tmp.replace(path)


def sample_and_score(policy_path: str, sft_path: str, tokenizer, judge, prompts: list, args: OnpolicyArguments,
                     seed: int) -> list[dict[str, Any]]:
    """k samples per prompt from the policy at `policy_path`, with reward and the log-probs of the KL estimate.

    The policy is loaded merged (plain generation speed); for the KL the SFT model scores the same sampled
    tokens (the first `kl_samples` of them). When the policy is the SFT model itself the KL is exactly 0 and
    both log-prob passes are skipped.
    """
    from rlhf.eval import sample_responses, token_logprobs
    from rlhf.models import load_causal_lm
    from rlhf.reward import SCORE_BATCH, score_texts

    repeated = [p for p in prompts for _ in range(args.k)]
    policy = load_causal_lm(policy_path).eval().to(device())
    samples = sample_responses(policy, tokenizer, repeated, args.max_new_tokens, args.temperature, args.top_p,
                               args.batch_size, seed)
    own = ref = []
    if policy_path != sft_path:
        kl_part = samples[: args.kl_samples] if args.kl_samples > 0 else samples
        # A log-prob batch holds batch x length x vocabulary floats twice (logits, log-softmax): 16 x 130 x 49k
        # x 4 bytes is 400 MB each on the embedded model, so it is capped below a large generation batch.
        logprob_batch = min(args.batch_size, 16)
        own = token_logprobs(policy, kl_part, logprob_batch)
        del policy
        ref = token_logprobs(load_causal_lm(sft_path).eval().to(device()), kl_part, logprob_batch)
    judge_model, judge_tokenizer = judge
    rewards = score_texts(judge_model, judge_tokenizer, repeated, [s["text"] for s in samples], SCORE_BATCH)
    return [
        {"prompt_index": i // args.k, "prompt": p, "response": s["text"], "tokens": len(s["response_ids"]),
         "reward": r, "logp_policy": sum(own[i]) if i < len(own) else None,
         "logp_reference": sum(ref[i]) if i < len(ref) else None}
        for i, (p, s, r) in enumerate(zip(repeated, samples, rewards))
    ]


def build_pairs(samples: list[dict[str, Any]], k: int, margin: float) -> list[dict[str, Any]]:
    """DPO rows (conversational) from each prompt's k samples: the pair select_pairs_by_reward keeps."""
    from rlhf.generate import build_messages

    pairs = []
    for start in range(0, len(samples), k):
        group = samples[start : start + k]
        for best, worst in select_pairs_by_reward([s["reward"] for s in group], margin):
            pairs.append({
                "prompt": build_messages(group[best]["prompt"]),
                "chosen": [{"role": "assistant", "content": group[best]["response"]}],
                "rejected": [{"role": "assistant", "content": group[worst]["response"]}],
                "reward_gap": group[best]["reward"] - group[worst]["reward"],
            })
    return pairs


def sample_figures(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """mean_reward, kl_to_reference (0 when the policy is the SFT model) and mean_length of a sample."""
    rewards = [s["reward"] for s in samples]
    kls = [s["logp_policy"] - s["logp_reference"] for s in samples if s["logp_policy"] is not None]
    return {
        "samples": len(samples),
        "kl_samples": len(kls),
        "mean_reward": sum(rewards) / len(rewards),
        "kl_to_reference": sum(kls) / len(kls) if kls else 0.0,
        "mean_length": sum(s["tokens"] for s in samples) / len(samples),
    }


def train_iteration(sft_path: str, previous: str | None, pairs: list[dict[str, Any]], tokenizer, training_args,
                    peft_config, args: OnpolicyArguments, out: Path, it_dir: Path, iteration: int, source: str):
    """DPO on one iteration's pairs: a fresh LoRA on the SFT model, loaded with the previous iteration's
    weights, so the reference (adapter disabled) stays the SFT model. Returns the train result."""
    import copy

    import datasets

    from rlhf.config import sample_rows
    from rlhf.dpo import build_trainer
    from rlhf.models import load_causal_lm
    from rlhf.runs import last_checkpoint, metrics_callback

    train = sample_rows(datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]),
                        args, training_args.seed + iteration, source)
    iteration_args = copy.copy(training_args)
    iteration_args.output_dir = str(it_dir)
    trainer = build_trainer(load_causal_lm(sft_path), tokenizer, iteration_args, train, None, peft_config, sft_path,
                            callbacks=[metrics_callback(out, extra={"iteration": iteration})])
    if previous is not None:
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        loaded = set_peft_model_state_dict(trainer.model, load_peft_weights(previous))
        if loaded.unexpected_keys:
            raise RlhfError(f"{previous}: adapter weights do not fit this stage's LoRA config "
                            f"({len(loaded.unexpected_keys)} unexpected, e.g. {loaded.unexpected_keys[0]}); "
                            f"was it trained with other lora_* settings? Remove {out} to start over")
    result = trainer.train(resume_from_checkpoint=last_checkpoint(it_dir))
    trainer.save_model(str(it_dir))
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: close the TensorBoard writer
    return result, len(train)


def main(argv: list[str] | None = None) -> int:
    from trl import DPOConfig, ModelConfig

    from rlhf.config import lora_config, parse_stage_args
    from rlhf.data import load_prompts
    from rlhf.models import load_tokenizer, resolve_model_path
    from rlhf.reward import check_reward_accuracy, check_reward_model
    from rlhf.runs import write_summary

    args, training_args, model_args, config_path = parse_stage_args(
        STAGE, (OnpolicyArguments, DPOConfig, ModelConfig), argv, defaults=stage_defaults(), description=__doc__
    )
    source = config_path or "command line"
    check_args(args, model_args, source)
    sft_path = resolve_model_path(model_args.model_name_or_path)
    peft_config = lora_config(model_args, args, sft_path, source)  # checked before any run folder exists
    reward_path = check_reward_model(args.reward_model_path)
    reward_accuracy = check_reward_accuracy(reward_path, args.min_reward_accuracy)
    rows = [r for r in load_prompts(args.prompts_file)
            if args.prompt_split is None or r.get("split", args.prompt_split) == args.prompt_split]
    if not rows:
        raise RlhfError(f"{args.prompts_file}: no prompt rows of split {args.prompt_split!r} (key 'prompt_split')")
    heldout_rows = load_heldout_rows(args) if args.eval_prompts_file else None
    out = prepare_out(args, training_args, model_args, config_path)

    tokenizer = load_tokenizer(sft_path)
    judge = None  # the reward model, loaded once the first iteration needs to sample
    writer = None
    if "tensorboard" in (training_args.report_to or []):
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out / "runs" / "iterations"))
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    previous: str | None = None  # the latest iteration folder with a trained adapter; None = the SFT model itself
    for iteration in tqdm(range(1, args.iterations + 1), desc="onpolicy", unit="iteration"):
        it_dir = out / f"iteration-{iteration}"
        if (it_dir / "summary.json").is_file():
            record = json.loads((it_dir / "summary.json").read_text())
            tqdm.write(f"[rlhf onpolicy] iteration {iteration}: done before, skipped")
        else:
            judge = judge or load_judge(reward_path)
            record = run_iteration(iteration, it_dir, previous, rows, sft_path, tokenizer, judge, training_args,
                                   peft_config, args, out, source)
            log_record(out, writer, record, f"iteration {iteration}")
        records.append(record)
        previous = str(it_dir) if record["trained"] else previous

    if previous is None:
        raise RlhfError(f"no iteration kept a pair: no prompt's reward gap exceeded reward_margin {args.reward_margin} "
                        f"in {args.iterations} iteration(s); lower reward_margin or raise k (and remove {out})")
    final = None
    if args.measure_final:
        final = measure_final_policy(out / "final", previous, rows, sft_path, tokenizer, reward_path, judge, args,
                                     training_args.seed, writer)
    heldout_sft = None
    if heldout_rows is not None:
        heldout_sft = measure_heldout(out, records, sft_path, tokenizer, reward_path, judge, heldout_rows, args,
                                      training_args.seed, writer)
    if writer is not None:
        writer.close()

    for name in ADAPTER_FILES:  # the stage's output folder is the final policy, like `rlhf dpo`'s
        shutil.copy2(Path(previous) / name, out / name)
    tokenizer.save_pretrained(str(out))
    trained = [r for r in records if r["trained"]]
    last = final or records[-1]
    summary = {
        "model_name_or_path": model_args.model_name_or_path,
        "reward_model_path": args.reward_model_path,
        "reward_model_accuracy": reward_accuracy,
        "prompts_file": args.prompts_file,
        "prompts": len(rows),
        "iterations": args.iterations,
        "k": args.k,
        "reward_margin": args.reward_margin,
        "beta": training_args.beta,
        "per_iteration": records,
        "final": final,
        "first_mean_reward": records[0]["mean_reward"],
        "last_mean_reward": last["mean_reward"],
        "last_kl_to_reference": last["kl_to_reference"],
        "last_mean_length": last["mean_length"],
        # iteration 1 sampled the SFT model on the same prompts with the same seed as the final measurement
        "final_reward_gain": final["mean_reward"] - records[0]["mean_reward"] if final else None,
        "kept_pairs": sum(r["kept_pairs"] for r in records),
        "steps": sum(r["steps"] for r in records),
        "first_loss": trained[0]["first_loss"],
        "last_loss": trained[-1]["last_loss"],
        "seconds": round(sum(r["seconds"] for r in records) + (final["seconds"] if final else 0), 2),
        "run_seconds": round(time.perf_counter() - started, 2),  # this invocation only (a resumed run is shorter)
        "policy": str(out),
        "use_peft": model_args.use_peft,
        "heldout_sft": heldout_sft,  # the guard's start; each per_iteration entry's `heldout` follows it
    }
    summary["plot"] = str(write_plot(out / "iterations.png", records, final))
    if heldout_sft is not None:
        summary["guard_plot"] = str(write_guard_plot(out / "guard.png", summary))
    write_summary(out, summary)
    print(f"[rlhf onpolicy] {args.iterations} iteration(s), {summary['kept_pairs']} pairs: mean reward "
          f"{summary['first_mean_reward']:.3f} -> {summary['last_mean_reward']:.3f}, kl {summary['last_kl_to_reference']:.3f}, "
          f"length {summary['last_mean_length']:.1f}; saved to {out}")
    return 0


def measure_final_policy(final_dir: Path, policy: str, rows: list[dict], sft_path: str, tokenizer, reward_path: str,
                         judge, args: OnpolicyArguments, seed: int, writer) -> dict[str, Any]:
    """The final policy sampled on the first iteration's prompts with its seed: reward, KL and length that
    compare like for like with iteration 1's figures (the SFT model's). Kept in final/summary.json."""
    from rlhf.runs import write_summary

    if (final_dir / "summary.json").is_file():
        final = json.loads((final_dir / "summary.json").read_text())
        if final["policy"] == policy:  # else measured before more iterations ran: measure again
            return final
    started = time.perf_counter()
    final_dir.mkdir(exist_ok=True)
    prompts = [r["prompt"] for r in rotate_prompts(rows, args.prompts_per_iteration, 1, seed)]
    samples = sample_and_score(policy, sft_path, tokenizer, judge or load_judge(reward_path), prompts, args, seed + 1)
    write_jsonl(final_dir / "samples.jsonl", samples)
    final = {"iteration": "final", "policy_after_iterations": args.iterations, "policy": policy,
             "prompts": len(prompts), **sample_figures(samples), "seconds": round(time.perf_counter() - started, 2)}
    log_record(final_dir.parent, writer, {**final, "iteration": args.iterations + 1}, "final policy")
    write_summary(final_dir, final)
    return final


def load_heldout_rows(args: OnpolicyArguments) -> list[dict]:
    """The guard's prompts: eval_prompts_file less the rows of the training split, the first eval_max_prompts;
    checked (constraints included) before any run folder exists."""
    from rlhf.data import load_prompts
    from rlhf.eval import check_prompt_constraints

    rows = load_prompts(args.eval_prompts_file)
    check_prompt_constraints(rows, args.eval_prompts_file)  # before filtering: "prompt N" is the file's Nth row
    same_file = Path(args.eval_prompts_file).resolve() == Path(args.prompts_file).resolve()
    if same_file and (args.prompt_split is None or not any("split" in r for r in rows)):
        raise RlhfError(f"{args.eval_prompts_file}: eval_prompts_file is the prompts_file and nothing marks held-out "
                        "rows (a `split` field, with prompt_split naming the training one): the guard would measure "
                        "the prompts the policy trains on")
    if args.prompt_split is not None:
        rows = [r for r in rows if r.get("split") != args.prompt_split]
    rows = rows[: args.eval_max_prompts or None]
    if not rows:
        raise RlhfError(f"{args.eval_prompts_file}: no held-out prompt rows (rows of split {args.prompt_split!r} "
                        "train the policy and are left out) (key 'eval_prompts_file')")
    return rows


def answer_heldout(policy_path: str, name: str, tokenizer, judge, rows: list[dict], args: OnpolicyArguments,
                   seed: int) -> list[dict[str, Any]]:
    """One greedy response per held-out prompt from the policy, scored by the reward model: rlhf.eval's records."""
    from rlhf.eval import response_records, sample_responses
    from rlhf.models import load_causal_lm
    from rlhf.reward import SCORE_BATCH, score_texts

    prompts = [r["prompt"] for r in rows]
    policy = load_causal_lm(policy_path).eval().to(device())
    samples = sample_responses(policy, tokenizer, prompts, args.eval_max_new_tokens or args.max_new_tokens, 0.0, 1.0,
                               args.batch_size, seed)
    del policy
    judge_model, judge_tokenizer = judge
    rewards = score_texts(judge_model, judge_tokenizer, prompts, [s["text"] for s in samples], SCORE_BATCH)
    return response_records(name, rows, samples, rewards)


def measure_heldout(out: Path, records: list[dict[str, Any]], sft_path: str, tokenizer, reward_path: str, judge,
                    rows: list[dict], args: OnpolicyArguments, seed: int, writer) -> dict[str, Any]:
    """The reward-hacking guard: the SFT model and the policy after each iteration (its adapter, or the policy
    before it when it kept no pair) answer the held-out prompts greedily. Sets each record's `heldout` (also in
    its iteration's summary.json) and returns the SFT model's figures. Figures come from rlhf.eval.policy_figures,
    with the SFT model's answers as the reference of the win rates. A record measured before with the same
    settings is kept, and the SFT model's answers are kept in heldout-sft.json, so a resumed run measures
    only new iterations (a policy's held-out answers are in its iteration's heldout.jsonl)."""
    from rlhf.eval import policy_figures
    from rlhf.runs import write_summary

    settings = {"prompts_file": args.eval_prompts_file, "prompts": len(rows), "decoding": "greedy",
                "max_new_tokens": args.eval_max_new_tokens or args.max_new_tokens}
    sft_file = out / "heldout-sft.json"  # the SFT model's answers: every win rate's reference
    kept_sft = json.loads(sft_file.read_text()) if sft_file.is_file() else {}
    fresh = (kept_sft.get("settings") != settings
             or [r["prompt"] for r in kept_sft["records"]] != [r["prompt"] for r in rows])
    if fresh:
        judge = judge or load_judge(reward_path)
        sft_recs = answer_heldout(sft_path, "sft", tokenizer, judge, rows, args, seed)
        tmp = sft_file.with_name(f".{sft_file.name}.tmp")
        tmp.write_text(json.dumps({"settings": settings, "records": sft_recs}, ensure_ascii=False))
        tmp.replace(sft_file)
    else:
        sft_recs = kept_sft["records"]
    sft = {"policy": sft_path, "policy_after_iterations": 0, "settings": settings,
           **policy_figures(rows, sft_recs, sft_recs)}
    if fresh:
        log_heldout(out, writer, sft)
    measured: dict[str, dict[str, Any]] = {sft_path: sft}  # policy -> figures: an unchanged policy is not redone
    policy = sft_path
    for record in records:
        it_dir = out / f"iteration-{record['iteration']}"
        policy = str(it_dir) if record["trained"] else policy
        kept = record.get("heldout")
        if kept and kept.get("settings") == settings and kept.get("policy") == policy:
            measured.setdefault(policy, kept)
            continue
        if policy not in measured:
            judge = judge or load_judge(reward_path)
            recs = answer_heldout(policy, f"iteration-{record['iteration']}", tokenizer, judge, rows, args, seed)
            write_jsonl(it_dir / "heldout.jsonl", recs)
            measured[policy] = {"policy": policy, "settings": settings, **policy_figures(rows, recs, sft_recs)}
        record["heldout"] = {**measured[policy], "policy_after_iterations": record["iteration"]}
        write_summary(it_dir, record)
        log_heldout(out, writer, record["heldout"])
    return sft


def log_heldout(out: Path, writer, figures: dict[str, Any]) -> None:
    """The guard's figures of one policy to metrics.jsonl (event "heldout"), TensorBoard and one printed line."""
    from rlhf.eval import flat_figures
    from rlhf.runs import append_metrics

    x = figures["policy_after_iterations"]
    scalars = {k: v for k, v in flat_figures(figures).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    append_metrics(out, {"event": "heldout", **scalars})
    if writer is not None:
        for key in ("mean_reward", "pass_rate_prompt", "win_rate_lc", "mean_length"):
            if key in scalars:
                writer.add_scalar(f"onpolicy/heldout_{key}", scalars[key], x)  # x: DPO iterations behind the policy
        writer.flush()
    passed = (f", pass {figures['pass_rate_prompt']:.2f} [{figures['pass_rate_prompt_ci'][0]:.2f}, "
              f"{figures['pass_rate_prompt_ci'][1]:.2f}]") if "pass_rate_prompt" in figures else ""
    tqdm.write(f"[rlhf onpolicy] held-out, policy after {x} iteration(s): reward {figures['mean_reward']:+.3f}{passed}, "
               f"lc-win vs sft {figures['win_rate_lc']:.2f}, length {figures['mean_length']:.1f}")


def guard_panels(summary: dict[str, Any]) -> dict[str, dict[str, tuple]]:
    """The guard's chart as plot_panels input, from an onpolicy summary.json: the reward model's score, the held-out
    pass rate (when prompts carry constraints), the win rate vs the SFT model (raw and length-controlled) and the
    length, against the DPO iterations behind the policy; held-out lines carry their 95% interval as a band."""
    records = summary.get("per_iteration") or []
    sampled = records + ([summary["final"]] if summary.get("final") else [])
    heldout = ([summary["heldout_sft"]] if summary.get("heldout_sft") else []) + [r["heldout"] for r in records
                                                                                   if r.get("heldout")]
    xs = [h["policy_after_iterations"] for h in heldout]

    def line(key: str) -> tuple:
        values = [h.get(key, float("nan")) for h in heldout]
        cis = [h.get(f"{key}_ci") or [v, v] for h, v in zip(heldout, values)]
        return xs, values, [c[0] for c in cis], [c[1] for c in cis]

    on_samples = [r["policy_after_iterations"] for r in sampled]
    panels: dict[str, dict[str, tuple]] = {"reward model score": {
        "training samples": (on_samples, [r["mean_reward"] for r in sampled])}}
    if heldout:
        panels["reward model score"]["held-out (greedy)"] = line("mean_reward")
        if all("pass_rate_prompt" in h for h in heldout):
            panels["held-out pass rate (all constraints met)"] = {"held-out (greedy)": line("pass_rate_prompt")}
        panels["held-out win rate vs the SFT model"] = {"raw win rate": line("win_rate")[:2],
                                                        "length-controlled": line("win_rate_lc")}
    panels["mean length (tokens)"] = {"training samples": (on_samples, [r["mean_length"] for r in sampled])}
    if heldout:
        panels["mean length (tokens)"]["held-out (greedy)"] = line("mean_length")[:2]
    return panels


def write_guard_plot(path: Path, summary: dict[str, Any]) -> Path:
    """guard.png: guard_panels drawn in one figure (the loop's report draws the same from the round's summary)."""
    from rlhf.plots import plot_panels

    panels = guard_panels(summary)
    title = "reward-hacking guard: reward score, quality and length per iteration"
    if summary.get("heldout_sft") and "held-out pass rate (all constraints met)" not in panels:
        title += "\n(no constraints on these prompts: the arena's human win rate is the quality reference)"
    return plot_panels(path, panels, title, "DPO iterations behind the policy (0 = the SFT model)")


def write_plot(path: Path, records: list[dict[str, Any]], final: dict[str, Any] | None) -> Path:
    """iterations.png: the sampled policy's mean reward, KL to the SFT model and length, and the kept pairs, over
    the number of DPO iterations behind the policy, so a reward that rises while the length runs away shows."""
    from rlhf.plots import plot_panels

    measured = records + ([final] if final else [])
    xs = [r["policy_after_iterations"] for r in measured]
    panels = {title: {"policy": (xs, [r[key] for r in measured])}
              for title, key in (("mean reward", "mean_reward"), ("KL to the SFT model", "kl_to_reference"),
                                 ("mean length (tokens)", "mean_length"))}
    panels["kept pairs"] = {"policy": ([r["policy_after_iterations"] for r in records], [r["kept_pairs"] for r in records])}
    return plot_panels(path, panels, "rlhf onpolicy: the sampled policy per iteration", "DPO iterations behind the policy")


def prepare_out(args, training_args, model_args, config_path) -> Path:
    from rlhf.config import resolved_config
    from rlhf.data import data_hash
    from rlhf.runs import prepare_run_dir

    return prepare_run_dir(training_args.output_dir, STAGE, resolved_config(args, training_args, model_args),
                           data_hash=data_hash(args.prompts_file), config_path=config_path)


def run_iteration(iteration: int, it_dir: Path, previous: str | None, rows: list[dict], sft_path: str, tokenizer,
                  judge, training_args, peft_config, args: OnpolicyArguments, out: Path, source: str) -> dict[str, Any]:
    """One iteration: sample and score (cached in samples.jsonl), pair, DPO; its record, also in its summary.json."""
    from rlhf.dpo import loss_figures
    from rlhf.runs import read_metrics, write_summary

    started = time.perf_counter()
    it_dir.mkdir(parents=True, exist_ok=True)
    seed = training_args.seed + iteration
    prompts = [r["prompt"] for r in rotate_prompts(rows, args.prompts_per_iteration, iteration, training_args.seed)]
    samples_file = it_dir / "samples.jsonl"
    if samples_file.is_file():  # an interrupted iteration: the samples and their scores are kept
        samples = read_jsonl(samples_file)
    else:
        samples = sample_and_score(previous or sft_path, sft_path, tokenizer, judge, prompts, args, seed)
        write_jsonl(samples_file, samples)
    pairs = build_pairs(samples, args.k, args.reward_margin)
    write_jsonl(it_dir / "pairs.jsonl", pairs)
    record: dict[str, Any] = {
        "iteration": iteration,
        "policy_after_iterations": iteration - 1,  # the figures below describe the policy that was sampled
        "policy": previous or sft_path,
        "prompts": len(prompts),
        **sample_figures(samples),
        "kept_pairs": len(pairs),
        "mean_kept_margin": sum(p["reward_gap"] for p in pairs) / len(pairs) if pairs else None,
        "trained": bool(pairs),
        "train_rows": 0,
        "steps": 0,
    }
    if pairs:
        result, train_rows = train_iteration(sft_path, previous, pairs, tokenizer, training_args, peft_config, args,
                                             out, it_dir, iteration, source)
        logs = [m for m in read_metrics(out) if m.get("iteration") == iteration]
        record.update({"train_rows": train_rows, "steps": result.global_step, **loss_figures(logs)})
        for checkpoint in it_dir.glob("checkpoint-*"):  # the iteration is complete: resume starts after it
            shutil.rmtree(checkpoint, ignore_errors=True)
    else:
        tqdm.write(f"[rlhf onpolicy] iteration {iteration}: no pair's reward gap exceeded {args.reward_margin}; "
                   "the policy is unchanged")
    record["seconds"] = round(time.perf_counter() - started, 2)
    write_summary(it_dir, record)  # written last: its presence marks the iteration done
    return record


def log_record(out: Path, writer, record: dict[str, Any], name: str) -> None:
    """An iteration's figures to metrics.jsonl and TensorBoard (x axis: the iteration) and one printed line."""
    from rlhf.runs import append_metrics

    figures = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    append_metrics(out, {"event": "iteration", **figures})
    if writer is not None:
        for key, value in figures.items():
            if key != "iteration":
                writer.add_scalar(f"onpolicy/{key}", value, record["iteration"])
        writer.flush()
    tqdm.write(f"[rlhf onpolicy] {name}: mean reward {record['mean_reward']:.3f}, "
               f"kl {record['kl_to_reference']:.3f}, length {record['mean_length']:.1f}"
               + (f", kept pairs {record['kept_pairs']}" if "kept_pairs" in record else ""))
