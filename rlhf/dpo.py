"""Direct preference optimisation with TRL's DPOTrainer, from an SFT checkpoint (LoRA by default).

    rlhf dpo --config quickstart/dpo
    rlhf dpo --model_name_or_path runs/quickstart/sft --train_file data/quickstart/preferences.jsonl --beta 0.1

`model_name_or_path` is usually the SFT stage's output folder: a LoRA adapter there is merged into its
base and a fresh LoRA is trained on top. With LoRA the reference model is the same network with the
adapter disabled, so no second copy is held in memory. Preferences are TRL's format: `prompt`, `chosen`,
`rejected` as strings or message lists. `beta` sets how far the policy may drift from the reference
(smaller = further). The summary records first/last loss, reward accuracy and margins, and held-out
figures when `eval_file` or `test_fraction` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import StageArguments

STAGE = "dpo"


@dataclass
class DpoArguments(StageArguments):
    train_file: str | None = field(
        default=None, metadata={"help": "JSONL, Parquet, a `datasets` folder or a labels folder (its preferences train "
                                       "split): prompt?, chosen, rejected."}
    )
    eval_file: str | None = field(default=None, metadata={"help": "Optional held-out preferences, same format (of a "
                                                                 "DatasetDict or labels folder: its test split)."})
    test_fraction: float = field(
        default=0.0,
        metadata={"help": "Without eval_file: hold out this share of train_file's prompts (a prompt's rows stay "
                          "together, as in `labeler export`; needs 10+ rows)."},
    )


def stage_defaults() -> dict:
    from rlhf.config import training_defaults

    return training_defaults(STAGE)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def build_trainer(model, tokenizer, training_args, train, evaluation, peft_config, start_path: str, callbacks: list):
    """TRL's DPOTrainer on `model`; with `peft_config` a fresh LoRA whose reference is the adapter disabled.

    The new adapter applies to the merged start model, the input folder `start_path`: load_causal_lm names the
    model it returns by that folder's absolute path, and PEFT copies the name into adapter_config.json.
    Used by `rlhf dpo` and, once per iteration, by `rlhf onpolicy`.
    """
    from trl import DPOTrainer

    from rlhf.models import shared_prefix_callback, short_backprop_callback

    trainer = DPOTrainer(
        model=model,
        ref_model=None,  # with LoRA: the adapter-disabled model; without: a frozen copy of the start model
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        # the reference forward starts from the policy's states below the lowest LoRA block (SharedFrozenPrefix)
        callbacks=[*(callbacks or []), short_backprop_callback(), shared_prefix_callback()],
    )
    return trainer


def loss_figures(logs: list[dict]) -> dict:
    """First/last loss, first/last-quarter mean loss and the last reward accuracy and margin of DPO's log lines."""
    logs = [m for m in logs if "loss" in m]
    losses = [m["loss"] for m in logs]
    head, tail = losses[: max(1, len(losses) // 4)], losses[-max(1, len(losses) // 4) :]
    return {
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        # single steps are noisy with tiny batches; the first and last quarter of the run say more
        "first_quarter_mean_loss": mean(head),
        "last_quarter_mean_loss": mean(tail),
        "last_reward_accuracy": logs[-1].get("rewards/accuracies") if logs else None,
        "last_reward_margin": logs[-1].get("rewards/margins") if logs else None,
    }


def main(argv: list[str] | None = None) -> int:
    from trl import DPOConfig, ModelConfig

    from rlhf.config import lora_config, model_load_kwargs, parse_stage_args, resolved_config, sample_rows
    from rlhf.data import data_hash, load_preferences, split_train_test
    from rlhf.errors import RlhfError
    from rlhf.models import fold_adapter_chain, load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.runs import metrics_callback, prepare_run_dir, read_metrics, resume_checkpoint, write_summary

    args, training_args, model_args, config_path = parse_stage_args(
        STAGE, (DpoArguments, DPOConfig, ModelConfig), argv, defaults=stage_defaults(), description=__doc__
    )
    source = config_path or "command line"
    if not args.train_file:
        raise RlhfError(f"{source}: key 'train_file' is required")
    model_path = resolve_model_path(model_args.model_name_or_path)
    peft_config = lora_config(model_args, args, model_path, source)  # checked before any run folder exists
    train = load_preferences(args.train_file)
    evaluation = load_preferences(args.eval_file, split="test") if args.eval_file else None
    if evaluation is None:
        train, evaluation = split_train_test(train, args.test_fraction, seed=training_args.seed)
    train = sample_rows(train, args, training_args.seed, source)
    config = resolved_config(args, training_args, model_args)
    out = prepare_run_dir(training_args.output_dir, STAGE, config, data_hash=data_hash(args.train_file),
                          config_path=config_path)

    load_kwargs = model_load_kwargs(model_args, training_args)  # attention, revision, remote code, 4/8-bit
    tokenizer = load_tokenizer(model_path, **load_kwargs)
    model = load_causal_lm(model_path, dtype=model_args.dtype or "float32", **load_kwargs)  # an SFT adapter is merged here
    trainer = build_trainer(model, tokenizer, training_args, train, evaluation, peft_config, model_path,
                            callbacks=[metrics_callback(out)])
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(out, training_args.resume_from_checkpoint))
    trainer.save_model(str(out))
    if model_args.use_peft and trainer.args.should_save:  # the process that saved (rank 0 under DDP)
        fold_adapter_chain(out)  # the new LoRA and the SFT adapter under it become one adapter on the base
    tokenizer.save_pretrained(str(out))

    summary = {
        "model_name_or_path": model_args.model_name_or_path,
        "train_rows": len(train),
        "steps": result.global_step,
        "beta": training_args.beta,
        **loss_figures(read_metrics(out)),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "use_peft": model_args.use_peft,
    }
    if evaluation is not None:
        summary["eval_rows"] = len(evaluation)
        figures = trainer.evaluate()
        summary.update({k: figures[k] for k in ("eval_loss", "eval_rewards/accuracies", "eval_rewards/margins") if k in figures})
    write_summary(out, summary)
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: close the TensorBoard writer
    print(f"[rlhf dpo] loss {summary['first_loss']} -> {summary['last_loss']}; saved to {out}")
    return 0
