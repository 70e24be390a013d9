"""DPO training speed and memory: `rlhf dpo` (the quickstart recipe) against a plain TRL DPOTrainer script.

    .venv/bin/python scripts/bench_dpo.py
    .venv/bin/python scripts/bench_dpo.py --pairs 64 --batch 8 --max-length 256

Both sides train one epoch on the same preference pairs, from the same model (the embedded
SmolLM2-135M-Instruct), with the same pairs per optimizer step (ours in the recipe's passes: two of half of them),
the same maximum length and LoRA on the same modules (rank 16 on every projection of the top 12 layers, as
rlhf/recipes/quickstart/dpo.yaml), so both take the same number of steps. The plain script
is what a user writes from TRL's documentation: `DPOConfig` with TRL's defaults for everything else
(bfloat16 autocast, activation checkpointing, reference log-probs computed at every step) and TRL's
`ModelConfig` LoRA defaults (dropout 0.05). Ours is the `rlhf dpo` command with the shipped recipe.

Each side runs in its own process, one after the other (never together: two torch processes on the same
cores slow each other many times over). Its time is the whole command, from start to trained model (imports,
loading, any precomputation, training), so nothing is hidden outside the clock; pairs/s = pairs / seconds.
Peak memory is the child process's maximum resident set (getrusage). The last line is one JSON object with
`speedup` (ours / theirs, pairs/s) and `memory_ratio` (ours / theirs, peak RSS). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_pairs(path: Path, pairs: int) -> None:
    """`pairs` preference rows shaped like the quickstart's: a bundled prompt, two answers of 40-60 words
    stitched from the recipe's example answers (their content does not matter here, their length does)."""
    sys.path.insert(0, str(ROOT))
    from rlhf.prompt_set import load_prompt_set

    examples = [json.loads(line) for line in
                (ROOT / "rlhf/recipes/data/quickstart/preferences.jsonl").read_text().splitlines() if line.strip()]
    answers = [ex[side][-1]["content"] for ex in examples for side in ("chosen", "rejected")]
    prompts = load_prompt_set("train")

    def answer(start: int, words: int) -> list[dict]:
        text, j = [], start
        while len(text) < words:
            text += answers[j % len(answers)].split()
            j += 1
        return [{"role": "assistant", "content": " ".join(text[:words])}]

    rows = [{"prompt": [{"role": "user", "content": prompts[i % len(prompts)]["prompt"]}],
             "chosen": answer(i, 40 + i % 21), "rejected": answer(i + 7, 60 - i % 21)} for i in range(pairs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def run_child(argv: list[str]) -> dict:
    """Run a child process; return its stdout, wall seconds and peak RSS (GB).

    Its output goes to files, not pipes: nothing reads a pipe until the child is reaped (os.wait4, for the
    child's own rusage), so a child writing more than a pipe holds (64 KiB: progress bars, warnings) would block.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed:\n{stderr[-3000:]}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024**2, "stdout": stdout}


def child_trl(args) -> None:
    """The plain TRL script: DPOConfig's defaults, TRL ModelConfig's LoRA defaults on the same modules."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train")
    layers = model.config.num_hidden_layers
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM",
                             layers_to_transform=list(range(layers - 12, layers)))
    training_args = DPOConfig(output_dir=args.out, per_device_train_batch_size=args.batch, max_length=args.max_length,
                              num_train_epochs=1, learning_rate=5e-4, save_strategy="no", report_to=[],
                              use_cpu=True, logging_steps=1)
    trainer = DPOTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    result = trainer.train()
    print(json.dumps({"train_runtime": result.metrics["train_runtime"], "steps": result.global_step,
                      "bf16": training_args.bf16, "gradient_checkpointing": training_args.gradient_checkpointing}))


def model_or_exit(parser: argparse.ArgumentParser, name: str) -> str:
    """The --model folder (the embedded model's name resolves to its cache folder), or exit with the parser's error."""
    sys.path.insert(0, str(ROOT))
    from rlhf.errors import RlhfError
    from rlhf.models import resolve_model_path

    try:
        return resolve_model_path(name, field="--model")
    except RlhfError as exc:
        parser.error(str(exc))


def accumulation_or_exit(parser: argparse.ArgumentParser, recipe: dict, batch: int) -> int:
    """The recipe's gradient_accumulation_steps; exit with the parser's error unless --batch divides by it (our
    side passes batch / accumulation pairs or rows a pass, so that both sides take the same steps)."""
    accumulation = int(recipe.get("gradient_accumulation_steps", 1))
    if batch % accumulation:
        parser.error(f"--batch must be a multiple of the recipe's gradient_accumulation_steps ({accumulation})")
    return accumulation


def step_figures(ours: dict, theirs: dict, steps: int, steps_trl: int, per_step: float, per_step_trl: float) -> dict:
    """The JSON figures of a training benchmark with steps (bench_sft, bench_reward): seconds, seconds per
    step (the trainers' own run time over their steps), peak RSS and the ratios."""
    return {
        "steps": steps,
        "steps_trl": steps_trl,
        "seconds": round(ours["seconds"], 1),
        "seconds_trl": round(theirs["seconds"], 1),
        "seconds_per_step": round(per_step, 3),
        "seconds_per_step_trl": round(per_step_trl, 3),
        "peak_rss_gb": round(ours["peak_rss_gb"], 3),
        "peak_rss_gb_trl": round(theirs["peak_rss_gb"], 3),
        "speedup": round(theirs["seconds"] / ours["seconds"], 3),
        "speedup_per_step": round(per_step_trl / per_step, 3),
        "memory_ratio": round(ours["peak_rss_gb"] / theirs["peak_rss_gb"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="preference pairs, one epoch (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step (default 8, as the recipe)")
    parser.add_argument("--max-length", type=int, default=256, help="longest prompt + answer (default 256)")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model folder or smollm2-135m-instruct")
    parser.add_argument("--ours", default="", help="extra `rlhf dpo` options for our side, e.g. \"--bf16 false\" "
                                                   "(to measure what each setting brings)")
    parser.add_argument("--skip-trl", action="store_true", help="run our side only (no ratio)")
    parser.add_argument("--child", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_trl(args)
        return 0
    if min(args.pairs, args.batch, args.max_length) < 1:
        parser.error("--pairs, --batch and --max-length must be at least 1")

    model = model_or_exit(parser, args.model)
    from rlhf.config import find_config, read_yaml

    accumulation = accumulation_or_exit(parser, read_yaml(find_config("quickstart/dpo", "dpo")), args.batch)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-dpo-") as tmp:
        data = Path(tmp) / "pairs.jsonl"
        write_pairs(data, args.pairs)
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")  # nothing cached by a prior run: both children
        theirs = None if args.skip_trl else run_child([python, __file__, "--child", "trl", "--model", model, "--data", str(data),
                            "--out", str(Path(tmp) / "trl"), "--batch", str(args.batch),
                            "--max-length", str(args.max_length)])
        ours = run_child([python, "-m", "rlhf.cli", "dpo", "--config", "quickstart/dpo", "--model_name_or_path", model,
                          "--train_file", str(data), "--output_dir", str(Path(tmp) / "ours"),
                          "--max_train_rows", str(args.pairs), "--num_train_epochs", "1", "--per_device_train_batch_size", str(args.batch // accumulation),
                          "--max_length", str(args.max_length), "--save_strategy", "no", "--report_to", "none",
                          *args.ours.split()])
    if theirs is None:
        print(json.dumps({"pairs": args.pairs, "seconds": round(ours["seconds"], 1),
                          "pairs_per_s": round(args.pairs / ours["seconds"], 4),
                          "peak_rss_gb": round(ours["peak_rss_gb"], 3)}))
        return 0
    trl_info = json.loads(theirs["stdout"].strip().splitlines()[-1])
    rows = {"rlhf dpo (quickstart recipe)": ours, "plain TRL DPOTrainer": theirs}
    print(f"{'side':<30} {'seconds':>8} {'pairs/s':>8} {'peak RSS (GB)':>14}")
    for name, r in rows.items():
        print(f"{name:<30} {r['seconds']:>8.1f} {args.pairs / r['seconds']:>8.3f} {r['peak_rss_gb']:>14.2f}")
    print(f"(plain TRL: bf16 {trl_info['bf16']}, activation checkpointing {trl_info['gradient_checkpointing']}, "
          f"{trl_info['steps']} steps; {args.pairs} pairs, batch {args.batch}, max_length {args.max_length})")
    figures = {
        "pairs": args.pairs,
        "pairs_per_s": round(args.pairs / ours["seconds"], 4),
        "pairs_per_s_trl": round(args.pairs / theirs["seconds"], 4),
        "peak_rss_gb": round(ours["peak_rss_gb"], 3),
        "peak_rss_gb_trl": round(theirs["peak_rss_gb"], 3),
        "speedup": round(theirs["seconds"] / ours["seconds"], 3),
        "memory_ratio": round(ours["peak_rss_gb"] / theirs["peak_rss_gb"], 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
