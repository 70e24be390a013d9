"""Generation options that issue 12 asked to measure: a static KV cache, torch.compile, prompts sorted by length.

    .venv/bin/python scripts/measure_generate_options.py
    .venv/bin/python scripts/measure_generate_options.py --prompts 32 --k 4 --new-tokens 64 --repeats 2

The baseline is `rlhf generate`'s own path (rlhf.generate.generate_responses: the model in `dtype: auto`, the
dynamic KV cache, its top-candidates sampler), sampling the quickstart's way (K candidates per prompt,
temperature 0.9, top_p 0.95, 64 new tokens forced on every row so that each side makes the same tokens) on the
bundled train prompts, with the embedded SmolLM2-135M-Instruct. Each option is the same call with one change:
  static           `cache_implementation="static"` (a preallocated cache of fixed shape), compilation off;
  static+compile   the static cache with transformers' CompileConfig on the CPU (torch.compile, inductor,
                   `mode="default"`): the first call pays the compilation, reported on its own;
  sorted           the prompts in order of token length before batching (less left padding per batch), answers
                   put back in the input order (`rlhf generate`'s sort_by_length, on by default since this
                   measurement; the baseline turns it off); it only matters when there are several batches
                   (--sort-prompts, default 128 prompts in batches of 32, as the quickstart's generate stage).
Greedy answers of each cache option are compared, text for text, with the baseline's on the same prompts.
Best of --repeats per side, sides alternating. The last line is one JSON object: each option's `speedup`
(its new tokens/s over the baseline's) and whether its greedy text is identical.
Run it on a quiet machine: two torch processes on the same cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench_generate import timed  # this script's folder is on sys.path when it runs

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model folder or smollm2-135m-instruct (the embedded default)")
    parser.add_argument("--prompts", type=int, default=32, help="train prompts for the cache options (default 32: one batch)")
    parser.add_argument("--k", type=int, default=4, help="candidates per prompt (default 4, as the quickstart)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per candidate, forced (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per generate call (default 32)")
    parser.add_argument("--sort-prompts", type=int, default=128,
                        help="train prompts for the sorting comparison (default 128, the quickstart's; 0 skips it)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side, alternating; the best counts")
    parser.add_argument("--skip", default="", help="comma-separated sides to leave out: static, compile, sorted")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.prompts, args.k, args.new_tokens, args.batch_size, args.repeats) < 1 or args.sort_prompts < 0:
        parser.error("--prompts, --k, --new-tokens, --batch-size and --repeats must be at least 1, --sort-prompts at least 0")
    skip = {s for s in args.skip.split(",") if s}
    if skip - {"static", "compile", "sorted"}:
        parser.error(f"--skip: unknown side(s) {sorted(skip - {'static', 'compile', 'sorted'})}")

    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import CompileConfig

    from rlhf.errors import RlhfError
    from rlhf.generate import build_messages, generate_responses
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path
    from rlhf.prompt_set import load_prompt_set

    try:
        path = resolve_model_path(args.model, field="--model")
    except RlhfError as exc:
        parser.error(str(exc))
    train = load_prompt_set("train")
    if max(args.prompts, args.sort_prompts) > len(train):
        parser.error(f"the prompt set has only {len(train)} train prompts")
    prompts = [row["prompt"] for row in train[: args.prompts]]
    tokenizer = load_tokenizer(path)
    dtype = resolve_dtype("auto")
    model = load_causal_lm(path, dtype=dtype)
    base_config = model.generation_config

    def configured(cache: str | None, compile_: bool) -> GenerationConfig:
        config = GenerationConfig.from_dict(base_config.to_dict())
        config.cache_implementation = cache
        config.disable_compile = not compile_
        if compile_:
            config.compile_config = CompileConfig(mode="default")
            config.compile_config._compile_all_devices = True  # transformers compiles on CUDA only unless told
        return config

    def run(config: GenerationConfig, texts: list, k: int, greedy: bool = False, forced: bool = True,
            sort: bool = False):
        model.generation_config = config
        config.min_new_tokens = args.new_tokens if forced else None
        return generate_responses(model, tokenizer, texts, k, max_new_tokens=args.new_tokens,
                                  temperature=0 if greedy else 0.9, top_p=0.95, batch_size=args.batch_size,
                                  seed=0, progress=False, sort_by_length=sort)

    sides = {"dynamic": configured(None, False)}
    if "static" not in skip:
        sides["static"] = configured("static", False)
    if "compile" not in skip:
        sides["static+compile"] = configured("static", True)
    run(sides["dynamic"], prompts[:2], 1)  # warm-up
    first_call = {}
    if "static+compile" in sides:  # the compilation, timed on its own, on the shapes the timed calls use
        first_call["static+compile"], _ = timed(lambda: run(sides["static+compile"], prompts, args.k))
    best = {name: float("inf") for name in sides}
    order = list(sides)
    for _ in range(args.repeats):
        for name in order:
            seconds, _ = timed(lambda: run(sides[name], prompts, args.k))
            best[name] = min(best[name], seconds)
        order.reverse()
    tokens = len(prompts) * args.k * args.new_tokens
    greedy = {name: [r[0] for r in run(config, prompts, 1, greedy=True, forced=False)] for name, config in sides.items()}
    identical = {name: sum(a == b for a, b in zip(texts, greedy["dynamic"])) for name, texts in greedy.items()}

    figures = {"model": args.model, "dtype": dtype, "threads": torch.get_num_threads(), "prompts": len(prompts),
               "k": args.k, "new_tokens": args.new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
               "new_tokens_per_s": {name: round(tokens / s, 1) for name, s in best.items()},
               "seconds": {name: round(s, 4) for name, s in best.items()},
               "first_call_seconds": {name: round(s, 1) for name, s in first_call.items()},
               "speedup": {name: round(best["dynamic"] / s, 3) for name, s in best.items() if name != "dynamic"},
               "greedy_identical": {name: f"{n}/{len(prompts)}" for name, n in identical.items() if name != "dynamic"}}
    print(f"{len(prompts)} prompts x {args.k} candidates x {args.new_tokens} new tokens ({args.model}, {dtype}, "
          f"{torch.get_num_threads()} threads), best of {args.repeats}:")
    for name, s in best.items():
        extra = f", first call {first_call[name]:.1f} s (compilation)" if name in first_call else ""
        same = f", greedy identical {identical[name]}/{len(prompts)}" if name != "dynamic" else ""
        print(f"  {name:<16} {s:8.2f} s {tokens / s:8.1f} new tokens/s  x{best['dynamic'] / s:.2f}{same}{extra}")

    if args.sort_prompts and "sorted" not in skip:
        rows = [row["prompt"] for row in train[: args.sort_prompts]]
        lengths = [len(tokenizer.apply_chat_template(build_messages(p), add_generation_prompt=True, tokenize=True,
                                                     return_dict=True)["input_ids"]) for p in rows]
        by_length = sorted(range(len(rows)), key=lambda i: lengths[i])

        def in_order():
            return run(sides["dynamic"], rows, args.k)

        def sorted_then_restored():  # rlhf generate's sort_by_length
            return run(sides["dynamic"], rows, args.k, sort=True)

        sort_best = {"in_order": float("inf"), "sorted": float("inf")}
        for turn in range(args.repeats):
            for name, fn in ((("in_order", in_order), ("sorted", sorted_then_restored)) if turn % 2 == 0
                             else (("sorted", sorted_then_restored), ("in_order", in_order))):
                seconds, _ = timed(fn)
                sort_best[name] = min(sort_best[name], seconds)
        padded = {name: sum(max(ls) * len(ls) for ls in (
            [lengths[i] for i in order[s : s + args.batch_size]] for s in range(0, len(rows), args.batch_size)))
            for name, order in (("in_order", list(range(len(rows)))), ("sorted", by_length))}
        figures["sorting"] = {"prompts": len(rows), "seconds": {n: round(s, 2) for n, s in sort_best.items()},
                              "prompt_tokens_padded": padded, "prompt_tokens": sum(lengths),
                              "speedup": round(sort_best["in_order"] / sort_best["sorted"], 3)}
        print(f"{len(rows)} prompts in batches of {args.batch_size}: in input order {sort_best['in_order']:.2f} s, "
              f"sorted by length {sort_best['sorted']:.2f} s (x{figures['sorting']['speedup']:.2f}); prompt tokens "
              f"with padding {padded['in_order']} vs {padded['sorted']} (real {sum(lengths)})")
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
