"""Benchmark: CPU training steps with glibc keeping freed memory (what `rlhf` does) vs glibc's defaults.

    .venv/bin/python scripts/bench_malloc.py [--steps 6] [--batch 8] [--length 160]

Each variant runs in its own process (malloc settings are per process): LoRA forward + backward + AdamW
steps on the embedded SmolLM2-135M-Instruct with random token batches whose length varies from step to
step, as SFT batches do. The first step is a warm-up. Prints seconds per step for both and the ratio.
Run it on an otherwise idle machine: two torch processes on the same cores slow each other down.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
from rlhf.cli import keep_freed_memory
kept = keep_freed_memory()
import torch
from peft import LoraConfig, get_peft_model
from rlhf.models import load_causal_lm
steps, batch, length = map(int, sys.argv[1:4])
torch.manual_seed(0)
model = get_peft_model(load_causal_lm("smollm2-135m-instruct"), LoraConfig(
    r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
    target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
times = []
for step in range(steps + 1):
    n = length - 24 + (step * 7) % 48   # a different shape every step, as with real batches
    x = torch.randint(0, 40000, (batch, n))
    t = time.perf_counter()
    model(input_ids=x, labels=x).loss.backward()
    opt.step(); opt.zero_grad()
    if step:
        times.append(time.perf_counter() - t)
print(json.dumps({"kept": kept, "seconds_per_step": sum(times) / len(times)}))
"""


def run(keep: bool, args) -> dict:
    env = dict(os.environ, RLHF_KEEP_MALLOC="0" if keep else "1")
    out = subprocess.run([sys.executable, "-c", CHILD, str(args.steps), str(args.batch), str(args.length)],
                         env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        sys.exit(f"bench_malloc: the {'kept' if keep else 'default'} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step")
    parser.add_argument("--length", type=int, default=160, help="mean tokens per sequence")
    args = parser.parse_args()
    baseline = run(False, args)
    kept = run(True, args)
    if not kept["kept"]:
        print("note: mallopt was not applied here (not glibc/Linux): both runs use the defaults")
    print(f"glibc defaults:       {baseline['seconds_per_step']:.2f} s/step")
    print(f"freed memory kept:    {kept['seconds_per_step']:.2f} s/step")
    print(f"speed-up: {baseline['seconds_per_step'] / kept['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
