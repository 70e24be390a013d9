"""Generation speed: `rlhf generate` against transformers' batched `generate` and one prompt at a time.

    .venv/bin/python scripts/bench_generate.py
    .venv/bin/python scripts/bench_generate.py --prompts 32 --k 4 --new-tokens 64 --repeats 2

All three sides sample the quickstart's way (K candidates per prompt, temperature 0.9, top_p 0.95, 64 new
tokens) for the same held-out prompts of the bundled set, on the embedded SmolLM2-135M-Instruct:
  ours        rlhf.generate.generate_responses as `rlhf generate` runs it: the model in `dtype: auto`
              (bfloat16 where the CPU has AVX512-BF16/AMX, else float32) and its top-candidates sampler;
  batched     the script a user writes: AutoModelForCausalLM.from_pretrained (float32, the model's dtype),
              `model.generate(do_sample=True, temperature, top_p, num_return_sequences=K)` on left-padded batches;
  one a time  the same call, one prompt per call.
Every side makes exactly prompts x K x new-tokens tokens (min_new_tokens = max_new_tokens: no row stops early),
so new tokens/s compare like with like. The best of --repeats counts; sides alternate.

Greedy outputs are then compared, text for text, on the same prompts: ours in float32 against transformers in
float32, and ours in its own dtype against transformers loaded in that dtype; both must be identical (the
pipeline adds nothing of its own). The share of identical greedy texts between bfloat16 and float32, and their
constraint pass counts, are printed as well: lower precision changes some answers, not their quality.
The last line is one JSON object with `speedup` (ours over batched) and `speedup_one_at_a_time`.
Run it on a quiet machine: two torch processes on the same cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hf_generate(model, tokenizer, texts: list[str], k: int, new_tokens: int, batch_size: int,
                sample: bool, seed: int = 0) -> list[str]:
    """The plain transformers way: left-padded batches through model.generate."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    tokenizer.padding_side = "left"
    out_texts = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = ({"do_sample": True, "temperature": 0.9, "top_p": 0.95, "num_return_sequences": k,
                   "min_new_tokens": new_tokens} if sample else {"do_sample": False})
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=new_tokens, pad_token_id=tokenizer.pad_token_id, **kwargs)
        out_texts += [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :],
                                                                skip_special_tokens=True)]
    return out_texts


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model folder or smollm2-135m-instruct (the embedded default)")
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts (default 32: one batch)")
    parser.add_argument("--k", type=int, default=4, help="candidates per prompt (default 4, as the quickstart)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per candidate, forced (default 64)")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per generate call (default 32)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per side, alternating; the best counts")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if min(args.prompts, args.k, args.new_tokens, args.batch_size, args.repeats) < 1:
        parser.error("--prompts, --k, --new-tokens, --batch-size and --repeats must be at least 1")

    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import AutoModelForCausalLM

    from rlhf.constraints import all_met
    from rlhf.errors import RlhfError
    from rlhf.generate import build_messages, generate_responses
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path
    from rlhf.prompt_set import load_prompt_set

    try:
        path = resolve_model_path(args.model, field="--model")
    except RlhfError as exc:
        parser.error(str(exc))
    rows = load_prompt_set("heldout")[: args.prompts]
    if len(rows) < args.prompts:
        parser.error(f"--prompts {args.prompts}: the prompt set has only {len(rows)} held-out prompts")
    prompts = [row["prompt"] for row in rows]
    tokenizer = load_tokenizer(path)
    texts = [tokenizer.apply_chat_template(build_messages(p), add_generation_prompt=True, tokenize=False) for p in prompts]
    dtype = resolve_dtype("auto")
    ours_model = load_causal_lm(path, dtype=dtype)
    ours_model.generation_config.min_new_tokens = args.new_tokens  # the same token count on every side
    plain = AutoModelForCausalLM.from_pretrained(path).eval()  # what a user's script gets: the model's own dtype

    def ours():
        return generate_responses(ours_model, tokenizer, prompts, args.k, max_new_tokens=args.new_tokens,
                                  temperature=0.9, top_p=0.95, batch_size=args.batch_size, seed=0, progress=False)

    sides = {
        "ours": ours,
        "batched": lambda: hf_generate(plain, tokenizer, texts, args.k, args.new_tokens, args.batch_size, True),
        "one_at_a_time": lambda: hf_generate(plain, tokenizer, texts, args.k, args.new_tokens, 1, True),
    }
    generate_responses(ours_model, tokenizer, prompts[:2], 1, max_new_tokens=2, batch_size=2, progress=False)  # warm-up
    hf_generate(plain, tokenizer, texts[:2], 1, 2, 2, True)
    best = {name: float("inf") for name in sides}
    order = list(sides)
    for _ in range(args.repeats):
        for name in order:
            seconds, _ = timed(sides[name])
            best[name] = min(best[name], seconds)
        order.reverse()
    tokens = args.prompts * args.k * args.new_tokens

    # Greedy outputs, text for text.
    ours_model.generation_config.min_new_tokens = None

    def ours_greedy(model):
        return [r[0] for r in generate_responses(model, tokenizer, prompts, 1, max_new_tokens=args.new_tokens,
                                                 temperature=0, batch_size=args.batch_size, progress=False)]

    greedy_plain = hf_generate(plain, tokenizer, texts, 1, args.new_tokens, args.batch_size, False)
    ours_fp32 = load_causal_lm(path, dtype="float32")
    same_fp32 = sum(a == b for a, b in zip(ours_greedy(ours_fp32), greedy_plain))
    greedy_ours = ours_greedy(ours_model)
    plain_same_dtype = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    same_dtype = sum(a == b for a, b in zip(greedy_ours, hf_generate(plain_same_dtype, tokenizer, texts, 1,
                                                                      args.new_tokens, args.batch_size, False)))
    agree = sum(a == b for a, b in zip(greedy_ours, greedy_plain))
    passed = {"ours": sum(all_met(r["constraints"], t) for r, t in zip(rows, greedy_ours)),
              "float32": sum(all_met(r["constraints"], t) for r, t in zip(rows, greedy_plain))}

    rate = {name: tokens / best[name] for name in sides}
    figures = {
        "model": args.model, "dtype": dtype, "threads": torch.get_num_threads(), "prompts": args.prompts, "k": args.k,
        "new_tokens": args.new_tokens, "batch_size": args.batch_size, "repeats": args.repeats,
        "new_tokens_per_s": round(rate["ours"], 1),
        "new_tokens_per_s_batched": round(rate["batched"], 1),
        "new_tokens_per_s_one_at_a_time": round(rate["one_at_a_time"], 1),
        "speedup": round(rate["ours"] / rate["batched"], 3),
        "speedup_one_at_a_time": round(rate["ours"] / rate["one_at_a_time"], 3),
        "greedy_identical_float32": same_fp32 == len(prompts),
        "greedy_identical_same_dtype": same_dtype == len(prompts),
        "greedy_same_text_vs_float32": f"{agree}/{len(prompts)}",
        "greedy_passes": {"ours": passed["ours"], "transformers_float32": passed["float32"], "of": len(prompts)},
    }
    print(f"{args.prompts} prompts x {args.k} candidates x {args.new_tokens} new tokens ({args.model}, "
          f"{torch.get_num_threads()} threads):")
    for name, label in (("ours", f"rlhf generate ({dtype})"), ("batched", "transformers batched (float32)"),
                        ("one_at_a_time", "transformers one prompt a call")):
        print(f"  {label:<34} {best[name]:8.2f} s {rate[name]:8.1f} new tokens/s")
    print(f"  speedup over batched {figures['speedup']:.2f}x, over one at a time {figures['speedup_one_at_a_time']:.2f}x")
    print(f"  greedy: ours float32 = transformers float32 on {same_fp32}/{len(prompts)} prompts; ours {dtype} = "
          f"transformers {dtype} on {same_dtype}/{len(prompts)}; {dtype} vs float32 same text on {agree}/{len(prompts)}, "
          f"constraints passed {passed['ours']} vs {passed['float32']}")
    if args.output:
        args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
