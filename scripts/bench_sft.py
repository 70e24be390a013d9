"""SFT step time and memory: `rlhf sft` (the quickstart recipe) against a plain TRL SFTTrainer script.

    .venv/bin/python scripts/bench_sft.py
    .venv/bin/python scripts/bench_sft.py --rows 64 --batch 8 --max-length 256

Both sides train one epoch on the same prompt/completion rows, from the same model (the embedded
SmolLM2-135M-Instruct), with the same rows per optimizer step, the same maximum length, the same learning rate
and LoRA on the same modules (rank 16 on every projection of the recipe's top `lora_top_layers` layers, as
rlhf/recipes/quickstart/sft.yaml), so both take the same number of steps. The rows are shaped like the
quickstart's SFT split (a bundled train prompt and its top-ranked answer): the prompt and chosen answer of
scripts/bench_dpo.py's pairs. The plain script is what a user writes from TRL's documentation: `SFTConfig` with
TRL's defaults for everything else (bfloat16 autocast, activation checkpointing, one pass of `--batch` rows a
step) and TRL's `ModelConfig` LoRA defaults (dropout 0.05). Ours is the `rlhf sft` command with the shipped
recipe, given one epoch instead of the recipe's three.

Each side runs in its own process, one after the other (never together: two torch processes on the same
cores slow each other many times over). Its time is the whole command, from start to saved model (imports,
loading, training, saving), so nothing is hidden outside the clock; seconds per step is the trainer's own
train_runtime over its optimizer steps. Peak memory is the child process's maximum resident set (getrusage).
The last line is one JSON object with `speedup` (theirs / ours, whole command), `speedup_per_step` (the same
for seconds per step) and `memory_ratio` (ours / theirs, peak RSS). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench_dpo import ROOT, TARGETS, accumulation_or_exit, model_or_exit, run_child, step_figures, write_pairs

RECIPE = "quickstart/sft"


def write_sft_rows(path: Path, rows: int) -> None:
    """`rows` prompt/completion rows: each of bench_dpo's pairs with its chosen answer (40-60 words), as the
    labeler's SFT split takes the top-ranked answer of a task."""
    pairs = path.with_name("pairs.jsonl")
    write_pairs(pairs, rows)
    out = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in map(json.loads, pairs.read_text().splitlines())]
    path.write_text("".join(json.dumps(r) + "\n" for r in out))


def read_recipe() -> dict:
    sys.path.insert(0, str(ROOT))
    from rlhf.config import find_config, read_yaml

    return read_yaml(find_config(RECIPE, "sft"))


def child_trl(args) -> None:
    """The plain TRL script: SFTConfig's defaults, TRL ModelConfig's LoRA defaults on the same modules."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    dataset = load_dataset("json", data_files=args.data, split="train")
    layers = model.config.num_hidden_layers
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, task_type="CAUSAL_LM",
                             layers_to_transform=list(range(max(0, layers - args.top_layers), layers)))
    training_args = SFTConfig(output_dir=args.out, per_device_train_batch_size=args.batch, max_length=args.max_length,
                              num_train_epochs=1, learning_rate=args.learning_rate, save_strategy="no", report_to=[],
                              use_cpu=True, logging_steps=1)
    trainer = SFTTrainer(model=model, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(args.out)
    print(json.dumps({"train_runtime": result.metrics["train_runtime"], "steps": result.global_step,
                      "bf16": training_args.bf16, "gradient_checkpointing": training_args.gradient_checkpointing}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="prompt/completion rows, one epoch (default 64)")
    parser.add_argument("--batch", type=int, default=8, help="rows per optimizer step (default 8, as the recipe)")
    parser.add_argument("--max-length", type=int, default=256, help="longest prompt + completion (default 256)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model folder or smollm2-135m-instruct (the embedded default); a tiny random model "
                             "(scripts/make_tiny_model.py) with --rows 4 --batch 2 runs it in seconds")
    parser.add_argument("--ours", default="", help="extra `rlhf sft` options for our side, e.g. \"--bf16 false\" "
                                                   "(to measure what each setting brings)")
    parser.add_argument("--skip-trl", action="store_true", help="run our side only (no ratio)")
    parser.add_argument("--child", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--top-layers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--learning-rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_trl(args)
        return 0
    if min(args.rows, args.batch, args.max_length) < 1:
        parser.error("--rows, --batch and --max-length must be at least 1")

    model = model_or_exit(parser, args.model)
    recipe = read_recipe()
    accumulation = accumulation_or_exit(parser, recipe, args.batch)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        data = Path(tmp) / "sft.jsonl"
        write_sft_rows(data, args.rows)
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")  # nothing cached by a prior run: both children
        theirs = None if args.skip_trl else run_child([
            python, __file__, "--child", "trl", "--model", model, "--data", str(data), "--out", str(Path(tmp) / "trl"),
            "--batch", str(args.batch), "--max-length", str(args.max_length),
            "--top-layers", str(recipe["lora_top_layers"]), "--learning-rate", str(recipe["learning_rate"])])
        ours = run_child([python, "-m", "rlhf.cli", "sft", "--config", RECIPE, "--model_name_or_path", model,
                          "--train_file", str(data), "--output_dir", str(Path(tmp) / "ours"),
                          "--max_train_rows", str(args.rows), "--num_train_epochs", "1",
                          "--per_device_train_batch_size", str(args.batch // accumulation),
                          "--max_length", str(args.max_length), "--save_strategy", "no", "--report_to", "none",
                          *args.ours.split()])
        summary = json.loads((Path(tmp) / "ours" / "summary.json").read_text())
    steps, per_step = summary["steps"], summary["train_runtime_s"] / max(summary["steps"], 1)
    if theirs is None:
        print(json.dumps({"rows": args.rows, "steps": steps, "seconds": round(ours["seconds"], 1),
                          "seconds_per_step": round(per_step, 3), "peak_rss_gb": round(ours["peak_rss_gb"], 3)}))
        return 0
    trl_info = json.loads(theirs["stdout"].strip().splitlines()[-1])
    trl_per_step = trl_info["train_runtime"] / max(trl_info["steps"], 1)
    rows = {"rlhf sft (quickstart recipe)": (ours, steps, per_step),
            "plain TRL SFTTrainer": (theirs, trl_info["steps"], trl_per_step)}
    print(f"{'side':<30} {'seconds':>8} {'steps':>6} {'s/step':>8} {'peak RSS (GB)':>14}")
    for name, (r, n, s) in rows.items():
        print(f"{name:<30} {r['seconds']:>8.1f} {n:>6} {s:>8.2f} {r['peak_rss_gb']:>14.2f}")
    print(f"(plain TRL: bf16 {trl_info['bf16']}, activation checkpointing {trl_info['gradient_checkpointing']}; "
          f"{args.rows} rows, {args.batch} a step, max_length {args.max_length}; s/step: the trainer's train_runtime "
          f"over its steps)")
    if steps != trl_info["steps"]:
        print(f"warning: the sides took different numbers of steps ({steps} against {trl_info['steps']})")
    figures = {
        "rows": args.rows,
        **step_figures(ours, theirs, steps, trl_info["steps"], per_step, trl_per_step),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
