"""Generation throughput: `rlhf generate`'s batched sampling against one prompt at a time, same run.

    .venv/bin/python scripts/bench_generate.py
    .venv/bin/python scripts/bench_generate.py --batch-size 16 --new-tokens 32 --repeats 3

`rlhf.generate.generate_responses` (used by generate, the loop and eval) pads a batch on the left and
samples every prompt's K candidates in one `model.generate` call with the KV cache. The baseline is the
naive loop: the same function called once per prompt. Both produce exactly the same number of tokens
(min_new_tokens = max_new_tokens) for the same held-out prompts; the script prints new tokens per
second for each and the ratio batched/baseline (above 1: batching is faster). Timings alternate and the
best of --repeats counts. Run it on a quiet machine: two torch processes sharing two cores slow each
other down many times over (their threads wait on each other), which swamps any difference.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def time_generation(model, tokenizer, prompts: list[str], k: int, new_tokens: int, batch_size: int) -> float:
    """Seconds to produce len(prompts) x k x new_tokens tokens with the given batch size."""
    import torch

    from rlhf.generate import generate_responses

    # generate reads min_new_tokens from the generation config: no row stops early at EOS.
    model.generation_config.min_new_tokens = new_tokens
    started = time.perf_counter()
    responses = generate_responses(model, tokenizer, prompts, k=k, max_new_tokens=new_tokens,
                                   batch_size=batch_size, seed=0, progress=False)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    if len(responses) != len(prompts) or not all(all(r) for r in responses):
        raise SystemExit("generation returned empty responses: the benchmark would measure nothing")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model folder or smollm2-135m-instruct (the embedded default)")
    parser.add_argument("--batch-size", type=int, default=16, help="held-out prompts per batch (default 16)")
    parser.add_argument("--k", type=int, default=2, help="candidates per prompt (default 2)")
    parser.add_argument("--new-tokens", type=int, default=32, help="new tokens per candidate, forced (default 32)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side, alternating; the best counts")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.batch_size, args.k, args.new_tokens, args.repeats) < 1:
        parser.error("--batch-size, --k, --new-tokens and --repeats must be at least 1")

    import torch

    from rlhf.errors import RlhfError
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.prompt_set import load_prompt_set

    try:
        path = resolve_model_path(args.model, field="--model")
    except RlhfError as exc:
        parser.error(str(exc))
    tokenizer = load_tokenizer(path)
    heldout = load_prompt_set("heldout")
    if len(heldout) < args.batch_size:
        parser.error(f"--batch-size {args.batch_size}: the prompt set has only {len(heldout)} held-out prompts")
    prompts = [row["prompt"] for row in heldout[: args.batch_size]]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_causal_lm(path).to(device)
    time_generation(model, tokenizer, prompts[:2], 1, 2, 2)  # warm-up: first-call allocation and dispatch

    sides = {"batched": args.batch_size, "one_at_a_time": 1}
    best = {name: float("inf") for name in sides}
    order = list(sides)
    for _ in range(args.repeats):
        for name in order:
            best[name] = min(best[name], time_generation(model, tokenizer, prompts, args.k, args.new_tokens, sides[name]))
        order.reverse()

    tokens = args.batch_size * args.k * args.new_tokens
    figures = {
        "model": args.model, "device": device, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "k": args.k, "new_tokens": args.new_tokens, "repeats": args.repeats,
        "batched_seconds": round(best["batched"], 3), "baseline_seconds": round(best["one_at_a_time"], 3),
        "batched_tokens_per_s": round(tokens / best["batched"], 2),
        "baseline_tokens_per_s": round(tokens / best["one_at_a_time"], 2),
        "ratio_batched_over_baseline": round(best["one_at_a_time"] / best["batched"], 2),
    }
    print(f"generate {args.batch_size} prompts x {args.k} candidates x {args.new_tokens} new tokens on {device} ({args.model}):")
    print(f"  batched ({args.batch_size} prompts a call): {figures['batched_seconds']:8.2f} s  "
          f"{figures['batched_tokens_per_s']:8.1f} new tokens/s")
    print(f"  baseline (one prompt a call):  {figures['baseline_seconds']:8.2f} s  "
          f"{figures['baseline_tokens_per_s']:8.1f} new tokens/s")
    print(f"  ratio batched/baseline throughput: {figures['ratio_batched_over_baseline']:.2f}x")
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
