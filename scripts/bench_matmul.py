"""The CPU's arithmetic: matrix products in bfloat16 against float32, at the embedded model's shapes.

    .venv/bin/python scripts/bench_matmul.py

SmolLM2-135M's projections are 576 x 1536 (MLP), 576 x 576 (attention) and 576 x 49,152 (the LM head). Rows
are tokens: 2,048 for a training batch (16 sequences of 128), 128 for a decoding step of 128 sequences. For
each shape the script times the product in float32 and in bfloat16 (torch's default CPU kernels, all threads)
and prints GFLOP/s and the ratio. Where the CPU has AVX512-BF16 or AMX, bfloat16 is several times faster; this
is why `rlhf` computes in bfloat16 on such machines (`dtype: auto`, rlhf.models.native_bf16). The last line
is one JSON object with `speedup`: the geometric mean of the bfloat16 / float32 ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

SHAPES = [(2048, 576, 1536), (2048, 576, 576), (2048, 576, 49152), (128, 576, 1536), (128, 576, 49152)]


def seconds_per_product(a, b, repeats: int) -> float:
    for _ in range(2):
        a @ b  # warm-up: kernel selection and weight layout
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="products timed per shape and dtype (default 10)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from rlhf.models import native_bf16

    torch.manual_seed(0)
    ratios, rows = [], []
    print(f"{'rows x inner x cols':<22} {'float32 GFLOP/s':>16} {'bfloat16 GFLOP/s':>17} {'ratio':>6}")
    for m, k, n in SHAPES:
        a, b = torch.randn(m, k), torch.randn(k, n)
        flops = 2 * m * k * n
        f32 = seconds_per_product(a, b, args.repeats)
        b16 = seconds_per_product(a.bfloat16(), b.bfloat16(), args.repeats)
        ratios.append(f32 / b16)
        rows.append({"shape": [m, k, n], "float32_gflops": round(flops / f32 / 1e9, 1),
                     "bfloat16_gflops": round(flops / b16 / 1e9, 1), "ratio": round(f32 / b16, 2)})
        print(f"{f'{m} x {k} x {n}':<22} {flops / f32 / 1e9:>16.1f} {flops / b16 / 1e9:>17.1f} {f32 / b16:>6.2f}")
    speedup = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"bfloat16 over float32, geometric mean: {speedup:.2f}x ({torch.get_num_threads()} threads; "
          f"native bfloat16: {native_bf16()})")
    print(json.dumps({"threads": torch.get_num_threads(), "native_bf16": native_bf16(), "shapes": rows,
                      "speedup": round(speedup, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
