"""Eval time and memory: `rlhf eval` (the quickstart recipe) against transformers' batched `generate` plus a plain
reward-model scoring loop.

    .venv/bin/python scripts/bench_eval.py
    .venv/bin/python scripts/bench_eval.py --prompts 92 --policies 1 --batch-size 96 --new-tokens 64
    .venv/bin/python scripts/bench_eval.py --reward-model runs/quickstart/reward

Both sides answer the same held-out prompts of the bundled set (all 92 by default, as the quickstart's eval)
greedily, through the chat template, with the same batch size and number of new tokens (the recipe's,
rlhf/recipes/quickstart/eval.yaml), for `--policies` policies (the same model named `--policies` times: the
quickstart compares three), and score every answer with the same reward model: by default a one-output
classifier built on `--model` with a seeded random score head (its scores cost what a trained one's do), or a
folder written by `rlhf reward` (`--reward-model`; an adapter folder is merged into a full one first, outside the
clock).
  ours   the `rlhf eval` command with the shipped recipe: judged answers generated in `dtype: auto` (bfloat16
         where the CPU has AVX512-BF16/AMX), a separate temperature-1 sample of 16 prompts for the KL with its
         log-probs, one model in memory at a time, the reward model's scoring in length-sorted batches of 16;
         then pass rates, bootstrap intervals, plots and the run folder.
  plain  the script a user writes: the reward model (AutoModelForSequenceClassification.from_pretrained) and each
         policy (AutoModelForCausalLM.from_pretrained, float32: the model's dtype); `model.generate(do_sample=False)`
         on left-padded batches of `--batch-size` prompts, then one forward of the reward model per batch of
         `--score-batch` conversations (default: the same batch size; `rlhf eval` has one `batch_size` setting
         for both), right-padded, under torch.no_grad. It computes no KL, no pass rates, no intervals, no plots:
         ours does more work than the plain script.

Each side runs in its own process, one after the other (never together: two torch processes on the same
cores slow each other many times over). Its time is the whole command, from start to scored answers (imports,
loading, generating, scoring; ours also writes its run folder), so nothing is hidden outside the clock. Peak
memory is the child process's maximum resident set (getrusage). The answers are then compared text for text
(first policy): ours in bfloat16 differs from float32 on some prompts; `--ours "--dtype float32"` must give
identical texts and rewards equal to rounding, which shows the two sides do the same work on the same inputs.
The last line is one JSON object with `speedup` (theirs / ours, whole command) and `memory_ratio` (ours /
theirs, peak RSS). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench_dpo import ROOT, run_child

RECIPE = "quickstart/eval"


def read_recipe() -> dict:
    sys.path.insert(0, str(ROOT))
    from rlhf.config import find_config, read_yaml

    return read_yaml(find_config(RECIPE, "eval"))


def prepare_reward_model(model: str, reward_model: str | None, out: Path) -> str:
    """A full reward-model folder both sides load: `reward_model` as it is when it is one, merged when it is an
    adapter folder; without one, a one-output classifier on `model` with a seeded random score head."""
    from rlhf.models import is_adapter, load_tokenizer, resolve_model_path
    from rlhf.reward import build_reward_model, check_reward_model, load_reward_model

    if reward_model is not None:
        path = check_reward_model(reward_model)
        if not is_adapter(path):
            return path
        judge, tokenizer = load_reward_model(path)
    else:
        tokenizer = load_tokenizer(model)
        judge = build_reward_model(resolve_model_path(model), tokenizer.pad_token_id)
        judge.config.pad_token_id = tokenizer.pad_token_id
    judge.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def child_plain(args) -> None:
    """The plain script: transformers' batched generate for each policy, then the reward model batch by batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    prompts = [json.loads(line)["prompt"] for line in Path(args.data).read_text().splitlines() if line.strip()]
    reward_tokenizer = AutoTokenizer.from_pretrained(args.reward_model)
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.reward_model, num_labels=1).eval()
    results = []
    for _ in range(args.policies):
        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model).eval()
        tokenizer.padding_side = "left"
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                               tokenize=False) for p in prompts]
        responses = []
        for start in range(0, len(texts), args.batch_size):
            batch = tokenizer(texts[start : start + args.batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=args.new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            responses += [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :],
                                                                     skip_special_tokens=True)]
        conversations = [reward_tokenizer.apply_chat_template([{"role": "user", "content": p},
                                                               {"role": "assistant", "content": r}], tokenize=False)
                         for p, r in zip(prompts, responses)]
        reward_tokenizer.padding_side = "right"
        rewards = []
        for start in range(0, len(conversations), args.score_batch):
            batch = reward_tokenizer(conversations[start : start + args.score_batch], return_tensors="pt",
                                     padding=True, add_special_tokens=False)
            with torch.no_grad():
                rewards += reward_model(**batch).logits[:, 0].tolist()
        results.append({"responses": responses, "rewards": rewards})
    Path(args.out).write_text(json.dumps(results))
    print(json.dumps({"policies": len(results), "answers": sum(len(r["responses"]) for r in results)}))


def compare_answers(ours: list[dict], plain: dict) -> tuple[int, float | None]:
    """(answers with the same text, the largest reward difference among them) for one policy."""
    same = [(o["reward"], p) for o, text, p in zip(ours, plain["responses"], plain["rewards"]) if o["response"] == text]
    return len(same), max((abs(a - b) for a, b in same), default=None)


def main(argv: list[str] | None = None) -> int:
    recipe = read_recipe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=92, help="held-out prompts of the bundled set (default 92: all)")
    parser.add_argument("--policies", type=int, default=1,
                        help="policies to evaluate, each the same --model (default 1; the quickstart has 3)")
    parser.add_argument("--batch-size", type=int, default=recipe["batch_size"],
                        help=f"prompts per generate call (default {recipe['batch_size']}, as the recipe)")
    parser.add_argument("--score-batch", type=int,
                        help="the plain script's conversations per reward-model forward (default: --batch-size)")
    parser.add_argument("--new-tokens", type=int, default=recipe["max_new_tokens"],
                        help=f"longest answer, in tokens (default {recipe['max_new_tokens']}, as the recipe)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="policy: model folder or smollm2-135m-instruct (the embedded default); a tiny random "
                             "model (scripts/make_tiny_model.py) with --prompts 4 --batch-size 2 --new-tokens 4 "
                             "runs it in seconds")
    parser.add_argument("--reward-model", help="a reward-model folder written by `rlhf reward` (default: a random "
                                               "score head on --model, built here)")
    parser.add_argument("--ours", default="", help="extra `rlhf eval` options for our side, e.g. "
                                                   "\"--dtype float32\" (to measure what each setting brings)")
    parser.add_argument("--skip-plain", action="store_true", help="run our side only (no ratio)")
    parser.add_argument("--child", choices=["plain"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.score_batch = args.score_batch or args.batch_size
    if args.child:
        child_plain(args)
        return 0
    if min(args.prompts, args.policies, args.batch_size, args.score_batch, args.new_tokens) < 1:
        parser.error("--prompts, --policies, --batch-size, --score-batch and --new-tokens must be at least 1")

    sys.path.insert(0, str(ROOT))
    from rlhf.errors import RlhfError
    from rlhf.models import resolve_model_path
    from rlhf.prompt_set import load_prompt_set

    rows = load_prompt_set("heldout")[: args.prompts]
    if len(rows) < args.prompts:
        parser.error(f"--prompts {args.prompts}: the prompt set has only {len(rows)} held-out prompts")
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        try:
            model = resolve_model_path(args.model, field="--model")
            reward_model = prepare_reward_model(model, args.reward_model, Path(tmp) / "reward")
        except RlhfError as exc:
            parser.error(str(exc))
        data = Path(tmp) / "prompts.jsonl"
        data.write_text("".join(json.dumps({k: r[k] for k in ("id", "prompt", "constraints")}) + "\n" for r in rows))
        plain_out = Path(tmp) / "plain.json"
        theirs = None if args.skip_plain else run_child([
            python, __file__, "--child", "plain", "--model", model, "--reward-model", reward_model,
            "--data", str(data), "--out", str(plain_out), "--policies", str(args.policies),
            "--batch-size", str(args.batch_size), "--score-batch", str(args.score_batch),
            "--new-tokens", str(args.new_tokens)])
        names = [f"policy{i + 1}" for i in range(args.policies)]
        ours = run_child([python, "-m", "rlhf.cli", "eval", "--config", RECIPE, "--policies", *[model] * args.policies,
                          "--policy_names", *names, "--reward_model_path", reward_model, "--prompts_file", str(data),
                          "--output_dir", str(Path(tmp) / "ours"), "--batch_size", str(args.batch_size),
                          "--max_new_tokens", str(args.new_tokens), *args.ours.split()])
        summary = json.loads((Path(tmp) / "ours" / "summary.json").read_text())
        records = [json.loads(line) for line in (Path(tmp) / "ours" / "responses.jsonl").read_text().splitlines()]
        plain = json.loads(plain_out.read_text()) if theirs is not None else None
    answers = args.prompts * args.policies
    dtype = summary["policies"][names[0]]["generation_dtype"]
    if theirs is None:
        print(json.dumps({"prompts": args.prompts, "policies": args.policies, "seconds": round(ours["seconds"], 1),
                          "seconds_per_policy": round(ours["seconds"] / args.policies, 2),
                          "peak_rss_gb": round(ours["peak_rss_gb"], 3), "generation_dtype": dtype}))
        return 0
    same, reward_diff = compare_answers([r for r in records if r["policy"] == names[0]], plain[0])
    sides = {f"rlhf eval (quickstart recipe, {dtype})": ours, "plain generate + scoring (float32)": theirs}
    print(f"{'side':<42} {'seconds':>8} {'s/policy':>9} {'answers/s':>10} {'peak RSS (GB)':>14}")
    for name, r in sides.items():
        print(f"{name:<42} {r['seconds']:>8.1f} {r['seconds'] / args.policies:>9.1f} {answers / r['seconds']:>10.2f} "
              f"{r['peak_rss_gb']:>14.2f}")
    print(f"({args.prompts} prompts x {args.policies} policies, greedy, {args.new_tokens} new tokens, batches of "
          f"{args.batch_size}; the plain script scores {args.score_batch} a forward. Same answer text on "
          f"{same}/{args.prompts} prompts (ours {dtype}, plain float32), largest reward difference among them "
          f"{reward_diff if reward_diff is None else f'{reward_diff:.2e}'})")
    figures = {
        "prompts": args.prompts,
        "policies": args.policies,
        "batch_size": args.batch_size,
        "new_tokens": args.new_tokens,
        "generation_dtype": dtype,
        "seconds": round(ours["seconds"], 1),
        "seconds_plain": round(theirs["seconds"], 1),
        "seconds_per_policy": round(ours["seconds"] / args.policies, 2),
        "seconds_per_policy_plain": round(theirs["seconds"] / args.policies, 2),
        "peak_rss_gb": round(ours["peak_rss_gb"], 3),
        "peak_rss_gb_plain": round(theirs["peak_rss_gb"], 3),
        "speedup": round(theirs["seconds"] / ours["seconds"], 3),
        "memory_ratio": round(ours["peak_rss_gb"] / theirs["peak_rss_gb"], 3),
        "same_text": f"{same}/{args.prompts}",
        "max_reward_diff_same_text": reward_diff,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
