"""Online RL against the trained reward model: TRL GRPOTrainer (default) or RLOOTrainer.

    rlhf rl --config smoke
    rlhf rl --model_name_or_path runs/quickstart/sft --reward_model_path runs/quickstart/reward \\
            --prompts_file data/quickstart/prompts.jsonl --trainer rloo

The policy starts from `model_name_or_path` (an SFT adapter folder is merged onto its base, then a new
LoRA adapter is trained; with LoRA the reference policy is the adapter-disabled model). Each prompt is
sent through the chat template; `num_generations` completions per prompt are scored by the reward model
(`reward_model_path`, the output of `rlhf reward`), passed to TRL in `reward_funcs` with its tokenizer in
`reward_processing_classes`. GRPO normalises rewards within each prompt's group and optimises PPO's clipped
objective; RLOO uses the leave-one-out baseline. `beta` > 0 adds the KL penalty to the reference and makes
TRL log `kl` (metrics.jsonl, TensorBoard). Options after `--trainer` are GRPOConfig's or RLOOConfig's.
The reward model must pass the quality gate: its held-out accuracy (the reward stage's summary.json) at
least `min_reward_accuracy` (default 0.6); `--min_reward_accuracy 0` uses it anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlhf.config import StageArguments
from rlhf.errors import RlhfError
from rlhf.reward import MIN_REWARD_ACCURACY, MIN_REWARD_ACCURACY_HELP

TRAINERS = ("grpo", "rloo")


@dataclass
class RlArguments(StageArguments):
    prompts_file: str | None = field(
        default=None, metadata={"help": "JSONL/Parquet/datasets folder with a `prompt` column (string or messages)."}
    )
    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model folder written by `rlhf reward` (adapter or full model)."}
    )
    min_reward_accuracy: float = field(default=MIN_REWARD_ACCURACY, metadata={"help": MIN_REWARD_ACCURACY_HELP})
    trainer: str = field(
        default="grpo",
        metadata={"help": "grpo (TRL GRPOTrainer) or rloo (TRL RLOOTrainer).", "choices": list(TRAINERS)},
    )


def pick_trainer(argv: list[str]) -> str:
    """The trainer named by `--trainer` on the command line, else by the YAML, else grpo.

    Needed before parsing: GRPO and RLOO take different config dataclasses, and a key of one is
    an unknown key for the other.
    """
    from rlhf.config import find_config, read_yaml

    choice = "grpo"
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        choice = str(read_yaml(find_config(argv[argv.index("--config") + 1], "rl")).get("trainer", choice))
    for i, arg in enumerate(argv):
        if arg == "--trainer" and i + 1 < len(argv):
            choice = argv[i + 1]
        elif arg.startswith("--trainer="):
            choice = arg.split("=", 1)[1]
    if choice not in TRAINERS:
        raise RlhfError(f"key 'trainer' must be one of {', '.join(TRAINERS)}; got {choice!r}")
    return choice


def to_messages(prompt: str | list) -> list[dict[str, str]]:
    """Prompts go to TRL as messages so the policy generates through its chat template."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def stage_defaults() -> dict:
    from rlhf.config import training_defaults

    return training_defaults(
        "rl",
        # GRPO's default beta is 0 (no reference, no KL); the KL to the reference is one of our figures.
        beta=0.04,
        # LoRA needs a larger step than TRL's full-model default (1e-6).
        learning_rate=1e-5,
        # 4 completions per prompt, one prompt group per optimizer step: cheap enough for a CPU.
        num_generations=4,
        per_device_train_batch_size=4,
        max_completion_length=128,
        # Off here: TRL re-enables checkpointing after every generation, which re-adds the input-embedding hook
        # that makes backward run through the frozen layers (rlhf.models.short_backprop); on the 2-core CPU
        # that costs more time than the activations of 4 short completions cost memory.
        activation_checkpointing=False,
    )


def main(argv: list[str] | None = None) -> int:
    from trl import GRPOConfig, GRPOTrainer, ModelConfig, RLOOConfig, RLOOTrainer

    from rlhf.config import lora_config, model_load_kwargs, parse_stage_args, resolved_config
    from rlhf.data import data_hash, load_prompts
    from rlhf.models import fold_adapter_chain, is_adapter, load_causal_lm, load_tokenizer, resolve_model_path, short_backprop_callback
    from rlhf.reward import check_reward_accuracy, check_reward_model, load_reward_model
    from rlhf.runs import metrics_callback, prepare_run_dir, read_metrics, resume_checkpoint, write_summary

    argv = list(argv or [])
    kind = pick_trainer(argv)
    config_class, trainer_class = (GRPOConfig, GRPOTrainer) if kind == "grpo" else (RLOOConfig, RLOOTrainer)
    args, training_args, model_args, config_path = parse_stage_args(
        "rl", (RlArguments, config_class, ModelConfig), argv, defaults=stage_defaults(), description=__doc__
    )
    source = config_path or "command line"
    for key in ("prompts_file", "reward_model_path"):
        if not getattr(args, key):
            raise RlhfError(f"{source}: key '{key}' is required")
    model_path = resolve_model_path(model_args.model_name_or_path)
    peft_config = lora_config(model_args, args, model_path, source)  # checked before any run folder exists
    reward_path = check_reward_model(args.reward_model_path)
    reward_accuracy = check_reward_accuracy(reward_path, args.min_reward_accuracy)
    if not model_args.use_peft and is_adapter(model_path) and training_args.beta != 0:
        # TRL rebuilds the reference of a full model from its config path, which for a merged adapter is
        # the adapter's base, not the SFT policy: the KL would be measured against the wrong model.
        raise RlhfError(f"{source}: use_peft false with beta > 0 needs a full model folder; "
                        f"export {model_path} first (`rlhf export`) and name the exported folder")
    rows = load_prompts(args.prompts_file)

    import datasets

    train = datasets.Dataset.from_list([{"prompt": to_messages(row["prompt"])} for row in rows])
    config = resolved_config(args, training_args, model_args)
    out = prepare_run_dir(training_args.output_dir, "rl", config, data_hash=data_hash(args.prompts_file),
                          config_path=config_path)

    load_kwargs = model_load_kwargs(model_args, training_args)  # attention, revision, remote code, 4/8-bit
    tokenizer = load_tokenizer(model_path, **load_kwargs)
    policy = load_causal_lm(model_path, dtype=model_args.dtype or "float32", **load_kwargs)
    reward_model, reward_tokenizer = load_reward_model(reward_path)
    trainer = trainer_class(
        model=policy,
        reward_funcs=[reward_model],
        args=training_args,
        train_dataset=train,
        processing_class=tokenizer,
        reward_processing_classes=[reward_tokenizer],
        peft_config=peft_config,
        callbacks=[metrics_callback(out), short_backprop_callback()],
    )
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(out, training_args.resume_from_checkpoint))
    trainer.save_model(str(out))
    if peft_config is not None and trainer.args.should_save:  # the process that saved (rank 0 under DDP)
        fold_adapter_chain(out)  # the new LoRA and any adapter under it become one adapter on the full model
    tokenizer.save_pretrained(str(out))

    logged = [m for m in read_metrics(out) if "reward" in m]
    kls = [m["kl"] for m in logged if "kl" in m]
    summary = {
        "trainer": kind,
        "model_name_or_path": model_args.model_name_or_path,
        "reward_model_path": args.reward_model_path,
        "reward_model_accuracy": reward_accuracy,
        "prompts": len(train),
        "steps": result.global_step,
        "first_reward": logged[0]["reward"] if logged else None,
        "last_reward": logged[-1]["reward"] if logged else None,
        "last_kl": kls[-1] if kls else None,
        "beta": training_args.beta,
        "num_generations": training_args.num_generations,
        "train_runtime_s": result.metrics.get("train_runtime"),
        "use_peft": model_args.use_peft,
    }
    write_summary(out, summary)
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: close the TensorBoard writer
    print(f"[rlhf rl] {kind}: reward {summary['first_reward']} -> {summary['last_reward']}, "
          f"kl {summary['last_kl']}; saved to {out}")
    return 0
