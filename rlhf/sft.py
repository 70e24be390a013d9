"""Supervised fine-tuning with TRL's SFTTrainer on prompt/completion or messages data (LoRA by default).

    rlhf sft --config quickstart/sft
    rlhf sft --train_file data/quickstart/sft.jsonl --max_steps 20 --output_dir runs/demo/sft

For prompt/completion data the loss covers only the completion (TRL's default). The input model may be a
model folder, a LoRA adapter folder (merged onto its base first) or `smollm2-135m-instruct`. The output
folder holds the LoRA adapter (or the full model with `--use_peft false`) plus the tokenizer; the next
stage (`rlhf dpo`, `rlhf rl`) names it as its `model_name_or_path`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import StageArguments

STAGE = "sft"


@dataclass
class SftArguments(StageArguments):
    train_file: str | None = field(
        default=None, metadata={"help": "JSONL, Parquet, a `datasets` folder or a labels folder (its sft train split): "
                                       "prompt + completion, or messages."}
    )
    eval_file: str | None = field(default=None, metadata={"help": "Optional held-out data in the same format (of a "
                                                                 "DatasetDict or labels folder: its test split)."})
    test_fraction: float = field(
        default=0.0,
        metadata={"help": "Without eval_file: hold out this share of train_file's prompts (a prompt's rows stay "
                          "together, as in `labeler export`; needs 10+ rows)."},
    )


def stage_defaults() -> dict:
    from rlhf.config import training_defaults

    return training_defaults(STAGE)


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, SFTConfig, SFTTrainer

    from rlhf.config import lora_config, model_load_kwargs, parse_stage_args, resolved_config, sample_rows
    from rlhf.data import data_hash, load_sft, split_train_test
    from rlhf.errors import RlhfError
    from rlhf.models import fold_adapter_chain, load_causal_lm, load_tokenizer, resolve_model_path, short_backprop_callback
    from rlhf.runs import metrics_callback, prepare_run_dir, read_metrics, resume_checkpoint, write_summary

    args, training_args, model_args, config_path = parse_stage_args(
        STAGE, (SftArguments, SFTConfig, ModelConfig), argv, defaults=stage_defaults(), description=__doc__
    )
    source = config_path or "command line"
    if not args.train_file:
        raise RlhfError(f"{source}: key 'train_file' is required")
    model_path = resolve_model_path(model_args.model_name_or_path)
    peft_config = lora_config(model_args, args, model_path, source)  # checked before any run folder exists
    train = load_sft(args.train_file)
    evaluation = load_sft(args.eval_file, split="test") if args.eval_file else None
    if evaluation is None:
        train, evaluation = split_train_test(train, args.test_fraction, seed=training_args.seed)
    train = sample_rows(train, args, training_args.seed, source)
    config = resolved_config(args, training_args, model_args)
    out = prepare_run_dir(training_args.output_dir, STAGE, config, data_hash=data_hash(args.train_file),
                          config_path=config_path)

    load_kwargs = model_load_kwargs(model_args, training_args)  # attention, revision, remote code, 4/8-bit
    tokenizer = load_tokenizer(model_path, **load_kwargs)
    model = load_causal_lm(model_path, dtype=model_args.dtype or "float32", **load_kwargs)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback(out), short_backprop_callback()],
    )
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(out, training_args.resume_from_checkpoint))
    trainer.save_model(str(out))
    if model_args.use_peft and trainer.args.should_save:  # the process that saved (rank 0 under DDP)
        fold_adapter_chain(out)  # an adapter on an adapter input becomes one adapter on the full model
    tokenizer.save_pretrained(str(out))

    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    summary = {
        "model_name_or_path": model_args.model_name_or_path,
        "train_rows": len(train),
        "steps": result.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "use_peft": model_args.use_peft,
    }
    if evaluation is not None:
        summary["eval_rows"] = len(evaluation)
        summary.update({k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
    write_summary(out, summary)
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: close the TensorBoard writer
    print(f"[rlhf sft] loss {summary['first_loss']} -> {summary['last_loss']}; saved to {out}")
    return 0
