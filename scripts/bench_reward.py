"""Reward-model step time and memory: `rlhf reward` (the quickstart recipe) against a plain TRL RewardTrainer script.

    .venv/bin/python scripts/bench_reward.py
    .venv/bin/python scripts/bench_reward.py --pairs 64 --heldout 16 --batch 8 --max-length 256

Both sides train one epoch on the same preference pairs (scripts/bench_dpo.py's, shaped like the quickstart's),
from the same model (the embedded SmolLM2-135M-Instruct, a one-output sequence classifier on top), with the
same pairs per optimizer step, the same maximum length, the same learning rate and LoRA on the same modules
(rank 16 on every projection of the recipe's top `lora_top_layers` layers, as rlhf/recipes/quickstart/reward.yaml),
so both take the same number of steps; then both score the same held-out pairs (`--heldout`, prompts not
trained on), as `rlhf reward` always does. The plain script is TRL's own trl/scripts/reward.py reduced to what
it runs: the model given to `RewardTrainer` by name (TRL loads AutoModelForSequenceClassification with one
label), `RewardConfig` with TRL's defaults for everything else (bfloat16 autocast, activation checkpointing,
one pass of `--batch` pairs a step), TRL's `ModelConfig` LoRA defaults (dropout 0.05), then
`trainer.evaluate` on the held-out pairs. Ours is the `rlhf reward` command with the shipped recipe (two passes
of half the pairs a step), its held-out pairs given as `--eval_file`.

Each side runs in its own process, one after the other (never together: two torch processes on the same
cores slow each other many times over). Its time is the whole command, from start to scored held-out pairs
(imports, loading, training, saving, scoring), so nothing is hidden outside the clock; seconds per step is the
trainer's own train_runtime over its optimizer steps. Peak memory is the child process's maximum resident set
(getrusage). The held-out accuracy of each side is printed as a check that both trained and scored the same
pairs (the pairs' answers are stitched by length, not quality: the figure itself means nothing here).
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

RECIPE = "quickstart/reward"


def write_train_heldout(folder: Path, pairs: int, heldout: int) -> tuple[Path, Path]:
    """bench_dpo's first `pairs` pairs to train on and the next `heldout` to score (other prompts of the set)."""
    write_pairs(folder / "all.jsonl", pairs + heldout)
    lines = (folder / "all.jsonl").read_text().splitlines(keepends=True)
    (folder / "train.jsonl").write_text("".join(lines[:pairs]))
    (folder / "heldout.jsonl").write_text("".join(lines[pairs:]))
    return folder / "train.jsonl", folder / "heldout.jsonl"


def read_recipe() -> dict:
    sys.path.insert(0, str(ROOT))
    from rlhf.config import find_config, read_yaml

    return read_yaml(find_config(RECIPE, "reward"))


def child_trl(args) -> None:
    """The plain TRL script: RewardConfig's defaults, TRL ModelConfig's LoRA defaults on the same modules."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoConfig
    from trl import RewardConfig, RewardTrainer

    dataset = load_dataset("json", data_files={"train": args.data, "test": args.heldout_data})
    layers = AutoConfig.from_pretrained(args.model).num_hidden_layers
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS, task_type="SEQ_CLS",
                             layers_to_transform=list(range(max(0, layers - args.top_layers), layers)))
    training_args = RewardConfig(output_dir=args.out, per_device_train_batch_size=args.batch,
                                 max_length=args.max_length, num_train_epochs=1, learning_rate=args.learning_rate,
                                 save_strategy="no", report_to=[], use_cpu=True, logging_steps=1)
    trainer = RewardTrainer(model=args.model, args=training_args, train_dataset=dataset["train"],
                            peft_config=peft_config)
    result = trainer.train()
    trainer.save_model(args.out)
    metrics = trainer.evaluate(dataset["test"])
    print(json.dumps({"train_runtime": result.metrics["train_runtime"], "steps": result.global_step,
                      "heldout_accuracy": metrics["eval_accuracy"], "bf16": training_args.bf16,
                      "gradient_checkpointing": training_args.gradient_checkpointing}))


def train_runtime(out: Path) -> float:
    """The trainer's train_runtime, from the last line of metrics.jsonl that has it (the end-of-training log)."""
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return next(m["train_runtime"] for m in reversed(lines) if "train_runtime" in m)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64, help="training pairs, one epoch (default 64)")
    parser.add_argument("--heldout", type=int, default=16, help="held-out pairs both sides score (default 16)")
    parser.add_argument("--batch", type=int, default=8, help="pairs per optimizer step (default 8, as the recipe)")
    parser.add_argument("--max-length", type=int, default=256, help="longest prompt + answer (default 256)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model folder or smollm2-135m-instruct (the embedded default); a tiny random model "
                             "(scripts/make_tiny_model.py) with --pairs 4 --heldout 2 --batch 2 runs it in seconds")
    parser.add_argument("--ours", default="", help="extra `rlhf reward` options for our side, e.g. "
                                                   "\"--activation_checkpointing false\" (to measure what each "
                                                   "setting brings)")
    parser.add_argument("--skip-trl", action="store_true", help="run our side only (no ratio)")
    parser.add_argument("--child", choices=["trl"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--heldout-data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--top-layers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--learning-rate", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_trl(args)
        return 0
    if min(args.pairs, args.heldout, args.batch, args.max_length) < 1:
        parser.error("--pairs, --heldout, --batch and --max-length must be at least 1")

    model = model_or_exit(parser, args.model)
    recipe = read_recipe()
    accumulation = accumulation_or_exit(parser, recipe, args.batch)
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-reward-") as tmp:
        train, heldout = write_train_heldout(Path(tmp), args.pairs, args.heldout)
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "datasets")  # nothing cached by a prior run: both children
        theirs = None if args.skip_trl else run_child([
            python, __file__, "--child", "trl", "--model", model, "--data", str(train), "--heldout-data", str(heldout),
            "--out", str(Path(tmp) / "trl"), "--batch", str(args.batch), "--max-length", str(args.max_length),
            "--top-layers", str(recipe["lora_top_layers"]), "--learning-rate", str(recipe["learning_rate"])])
        ours = run_child([python, "-m", "rlhf.cli", "reward", "--config", RECIPE, "--model_name_or_path", model,
                          "--train_file", str(train), "--eval_file", str(heldout),
                          "--output_dir", str(Path(tmp) / "ours"), "--max_train_rows", str(args.pairs),
                          "--per_device_train_batch_size", str(args.batch // accumulation),
                          "--max_length", str(args.max_length), "--save_strategy", "no", "--report_to", "none",
                          *args.ours.split()])
        summary = json.loads((Path(tmp) / "ours" / "summary.json").read_text())
        runtime = train_runtime(Path(tmp) / "ours")
    steps, per_step = summary["global_step"], runtime / max(summary["global_step"], 1)
    if theirs is None:
        print(json.dumps({"pairs": args.pairs, "steps": steps, "seconds": round(ours["seconds"], 1),
                          "seconds_per_step": round(per_step, 3), "peak_rss_gb": round(ours["peak_rss_gb"], 3)}))
        return 0
    trl_info = json.loads(theirs["stdout"].strip().splitlines()[-1])
    trl_per_step = trl_info["train_runtime"] / max(trl_info["steps"], 1)
    rows = {"rlhf reward (quickstart recipe)": (ours, steps, per_step, summary["heldout_accuracy"]),
            "plain TRL RewardTrainer": (theirs, trl_info["steps"], trl_per_step, trl_info["heldout_accuracy"])}
    print(f"{'side':<32} {'seconds':>8} {'steps':>6} {'s/step':>8} {'peak RSS (GB)':>14} {'held-out acc.':>14}")
    for name, (r, n, s, acc) in rows.items():
        print(f"{name:<32} {r['seconds']:>8.1f} {n:>6} {s:>8.2f} {r['peak_rss_gb']:>14.2f} {acc:>14.3f}")
    print(f"(plain TRL: bf16 {trl_info['bf16']}, activation checkpointing {trl_info['gradient_checkpointing']}; "
          f"{args.pairs} pairs, {args.batch} a step, {args.heldout} held out, max_length {args.max_length}; "
          f"s/step: the trainer's train_runtime over its steps)")
    if steps != trl_info["steps"]:
        print(f"warning: the sides took different numbers of steps ({steps} against {trl_info['steps']})")
    figures = {
        "pairs": args.pairs,
        "heldout": args.heldout,
        **step_figures(ours, theirs, steps, trl_info["steps"], per_step, trl_per_step),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
