"""Train a reward model on preference pairs (TRL RewardTrainer); report held-out accuracy and margin.

    rlhf reward --config smoke/reward
    rlhf reward --model_name_or_path runs/quickstart/sft --train_file data/quickstart/preferences.jsonl

The reward model is AutoModelForSequenceClassification (one output) built on the causal LM named by
`model_name_or_path` (a LoRA adapter folder is merged onto its base first). With LoRA (the default) the
adapter is a SEQ_CLS adapter, so PEFT trains and saves the `score` head next to the LoRA weights.

After training, the held-out pairs (`eval_file`, else a `test_fraction` split of `train_file`) are scored by
this module's own code: accuracy is the fraction of pairs with r(chosen) > r(rejected), margin the mean
r(chosen) - r(rejected). Both go to summary.json and metrics.jsonl.

`margin_from_rank_gap` (off by default) uses how far apart the annotators ranked a pair: it fills TRL's
`margin` column with margin_from_rank_gap * (rank_gap - 1) from the labeler export's `rank_gap`, and
RewardTrainer's loss becomes -log sigmoid(r(chosen) - r(rejected) - margin): neighbours in a ranking keep the
plain loss, a pair three levels apart must differ by 2 * margin_from_rank_gap before it stops pulling.

Other stages load the result with `load_reward_model(path)` and score with `score_texts(...)`, which
formats each (prompt, response) with the chat template exactly as RewardTrainer tokenized the pairs.
Stages that optimise against a reward model (rl, onpolicy) first call `check_reward_accuracy`: the quality
gate that refuses one whose held-out accuracy is below their `min_reward_accuracy`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.config import StageArguments
from rlhf.errors import RlhfError


# Conversations scored per forward pass. Scoring 92 held-out answers (float32, one thread, 2026-12-01): batch 16
# took 26.5 s and 0.35 GB above the loaded model, 32: 27.5 s and 0.70 GB, 96: 32.8 s and 2.10 GB.
SCORE_BATCH = 16


@dataclass
class RewardArguments(StageArguments):
    train_file: str | None = field(
        default=None,
        metadata={"help": "Preference pairs: JSONL/Parquet/datasets folder with prompt?, chosen, rejected."},
    )
    eval_file: str | None = field(
        default=None,
        metadata={"help": "Held-out preference pairs; when unset, `test_fraction` of train_file is held out."},
    )
    test_fraction: float = field(
        default=0.1,
        metadata={"help": "Without eval_file: the share of train_file's prompts held out for accuracy (a prompt's "
                          "pairs stay together, as in `labeler export`; 0 = none)."},
    )
    margin_from_rank_gap: float = field(
        default=0.0,
        metadata={"help": "Ask pairs ranked further apart for a larger reward difference: TRL's `margin` = this * "
                          "(rank_gap - 1), from train_file's `rank_gap` column (written by `labeler export`: rank levels "
                          "between chosen and rejected, 1 for neighbours, which keep the plain loss). 0 = off."},
    )


def format_conversation(prompt: str | list | None, response: str | list) -> str | list:
    """The conversation a reward model scores: prompt turns then the response as the assistant turn."""
    if prompt is None:
        return response  # implicit prompt: the response already holds the whole exchange
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    reply = [{"role": "assistant", "content": response}] if isinstance(response, str) else list(response)
    return turns + reply


def tokenize_conversation(tokenizer, conversation: str | list) -> list[int]:
    """Token ids as RewardTrainer makes them: chat template for messages, text + EOS for plain strings."""
    if isinstance(conversation, list):
        return list(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"])
    text = conversation if conversation.endswith(tokenizer.eos_token) else conversation + tokenizer.eos_token
    return list(tokenizer(text)["input_ids"])


def score_conversations(model, tokenizer, conversations: list, batch_size: int = 8) -> list[float]:
    """One scalar reward per conversation, batched with right padding (RewardTrainer's collation).

    Conversations are batched in length order (less padding, the same scores) and returned in input order.
    """
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    all_ids = [tokenize_conversation(tokenizer, c) for c in conversations]
    order = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
    scores: list[float] = [0.0] * len(all_ids)
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            ids = [all_ids[i] for i in batch]
            width = max(map(len, ids))
            input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(ids), width), dtype=torch.long)
            for i, row in enumerate(ids):
                input_ids[i, : len(row)] = torch.tensor(row)
                attention[i, : len(row)] = 1
            with torch.no_grad():
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            for i, x in zip(batch, logits[:, 0].float().cpu()):
                scores[i] = float(x)
    finally:
        model.train(was_training)
    return scores


def score_texts(model, tokenizer, prompts: list, responses: list, batch_size: int = SCORE_BATCH) -> list[float]:
    """Reward of each response to its prompt (prompt: string or messages; response: string)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    conversations = [format_conversation(p, r) for p, r in zip(prompts, responses)]
    return score_conversations(model, tokenizer, conversations, batch_size)


def pairwise_stats(chosen: list[float], rejected: list[float]) -> dict[str, float]:
    """Accuracy (fraction with r(chosen) > r(rejected); a tie counts as wrong) and mean margin."""
    if not chosen or len(chosen) != len(rejected):
        raise ValueError("pairwise_stats needs equally long, non-empty score lists")
    wins = sum(1 for c, r in zip(chosen, rejected) if c > r)
    margin = sum(c - r for c, r in zip(chosen, rejected)) / len(chosen)
    return {"accuracy": wins / len(chosen), "margin": margin}


def add_margin(dataset, coefficient: float, source: str):
    """`dataset` with TRL's `margin` column, coefficient * (rank_gap - 1), in place of its `rank_gap` column.

    rank_gap - 1 rather than rank_gap: pairs of neighbouring ranks (every pair of a K = 2 task, and most of a
    ranking's) keep today's loss exactly, so the option only adds what the distance between ranks says.
    """
    if "rank_gap" not in dataset.column_names:
        raise RlhfError(f"{source}: margin_from_rank_gap {coefficient} needs a 'rank_gap' column (`labeler export` "
                        f"writes one; labels exported before it have none: export them again); has "
                        f"{', '.join(dataset.column_names)}")
    gaps = dataset["rank_gap"]
    valid = [isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g) and g >= 1 for g in gaps]
    bad = next((i for i, ok in enumerate(valid) if not ok), None)
    if bad is not None:
        raise RlhfError(f"{source} row {bad}: field 'rank_gap' must be a number of at least 1 (1 = neighbouring "
                        f"ranks), got {gaps[bad]!r}")
    return dataset.remove_columns("rank_gap").add_column("margin", [coefficient * (g - 1) for g in gaps])


def build_reward_model(model_path: str, pad_token_id: int, seed: int = 42, **load_kwargs):
    """A one-output sequence classifier carrying the (merged) causal LM's transformer weights.

    Built from the config and the base model's state dict rather than from_pretrained, because an
    adapter input exists on disk only as base + adapter; the merged weights are never saved.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, set_seed

    from rlhf.models import load_causal_lm

    causal = load_causal_lm(model_path, **load_kwargs)  # named by its absolute folder: a LoRA on it records that as its base
    config = causal.config
    config.num_labels = 1
    config.pad_token_id = pad_token_id  # the classifier pools at the last non-pad token
    set_seed(seed)  # the score head is random: make it reproducible
    model = AutoModelForSequenceClassification.from_config(
        config, dtype=torch.float32,
        **{k: v for k, v in load_kwargs.items() if k in ("attn_implementation", "trust_remote_code")})
    body = getattr(model, model.base_model_prefix)
    body.load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
    model.name_or_path = causal.name_or_path
    return model


def check_reward_model(path: str) -> str:
    """Resolve `path` and make sure it holds a reward model, before a stage writes anything."""
    from transformers import AutoConfig

    from rlhf.models import is_adapter, resolve_model_path

    path = resolve_model_path(path, field="reward_model_path")
    if is_adapter(path):
        task = json.loads((Path(path) / "adapter_config.json").read_text()).get("task_type")
        if task != "SEQ_CLS":
            raise RlhfError(f"reward_model_path: {path} is not a reward model (adapter task_type {task!r}, "
                            "not SEQ_CLS); train one with `rlhf reward`")
        return path
    architectures = AutoConfig.from_pretrained(path).architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise RlhfError(f"reward_model_path: {path} is not a reward model (architectures {architectures}); "
                        "train one with `rlhf reward`")
    return path


MIN_REWARD_ACCURACY = 0.6  # the gate's default: a model that orders 6 held-out pairs in 10 rightly is barely a signal
MIN_REWARD_ACCURACY_HELP = (
    "Refuse a reward model whose held-out accuracy (its summary.json, written by `rlhf reward`) is below this "
    f"(default {MIN_REWARD_ACCURACY}): optimising against a near-chance judge only teaches its blind spots. "
    "0 turns the check off (e.g. a reward model trained elsewhere, with no summary.json)."
)


def check_reward_accuracy(path: str, threshold: float) -> float | None:
    """The reward model's held-out accuracy from `path`/summary.json; RlhfError (one line) when it is below
    `threshold`, when the figure is missing, or when it was measured on the training pairs. 0 skips the check
    and returns the figure when there is one."""
    summary_file = Path(path) / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    accuracy = summary.get("heldout_accuracy")
    if threshold <= 0:
        return accuracy
    override = "pass --min_reward_accuracy 0 to use it anyway"
    if accuracy is None:
        raise RlhfError(f"reward_model_path: {path} has no held-out accuracy (no summary.json from `rlhf reward`) to "
                        f"check against min_reward_accuracy {threshold}; {override}")
    if str(summary.get("heldout_source", "")).startswith("train_file itself"):
        raise RlhfError(f"reward_model_path: {path}: its accuracy {accuracy:.3f} was measured on its own training "
                        f"pairs (no held-out split), so min_reward_accuracy {threshold} cannot be checked; {override}")
    if accuracy < threshold:
        raise RlhfError(f"reward_model_path: {path}: held-out accuracy {accuracy:.3f} is below min_reward_accuracy "
                        f"{threshold}; train a better reward model (more pairs, more epochs) or {override}")
    return accuracy


def load_reward_model(path: str):
    """(model, tokenizer) of a trained reward model: a SEQ_CLS adapter folder (merged here) or a full folder."""
    from transformers import AutoModelForSequenceClassification

    from rlhf.models import adapter_base, is_adapter, load_tokenizer

    path = check_reward_model(path)
    tokenizer = load_tokenizer(path)
    if is_adapter(path):
        from peft import PeftModel

        base = build_reward_model(adapter_base(path), tokenizer.pad_token_id)
        model = PeftModel.from_pretrained(base, path).merge_and_unload()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer


def describe_by_source(by_source: dict[str, dict] | None) -> str:
    """"; edited pairs 0.921 (76); ranked pairs 0.524 (63)": per-source accuracy for a one-line report."""
    return "".join(f"; {src} pairs {v['accuracy']:.3f}{format_ci(v.get('ci'))} ({v['pairs']})"
                   for src, v in (by_source or {}).items())


def format_ci(ci: list[float] | None) -> str:
    """" [0.712, 0.835]" for an interval, "" for none: how every printed figure shows its 95% interval."""
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def score_pairs(model, tokenizer, dataset, batch_size: int) -> dict[str, Any]:
    """Held-out accuracy and margin of `model` on a preference dataset; with a `source` column (the labeler
    export's "ranked" / "edited") also the accuracy of each source, under "by_source"."""
    prompts = dataset["prompt"] if "prompt" in dataset.column_names else [None] * len(dataset)
    chosen = score_texts(model, tokenizer, prompts, dataset["chosen"], batch_size)
    rejected = score_texts(model, tokenizer, prompts, dataset["rejected"], batch_size)
    from labeler.stats import bootstrap_ci

    stats: dict[str, Any] = pairwise_stats(chosen, rejected)
    correct = [1.0 if c > r else 0.0 for c, r in zip(chosen, rejected)]
    stats["accuracy_ci"] = bootstrap_ci(correct)  # 95% bootstrap interval over held-out pairs
    if "source" in dataset.column_names:
        sources = list(dataset["source"])
        stats["by_source"] = {
            src: {"accuracy": sum(x for x, s in zip(correct, sources) if s == src) / sources.count(src),
                  "pairs": sources.count(src),
                  "ci": bootstrap_ci([x for x, s in zip(correct, sources) if s == src])}
            for src in sorted(set(sources), key=str)
        }
    return stats


def main(argv: list[str] | None = None) -> int:
    from trl import ModelConfig, RewardConfig, RewardTrainer

    from rlhf.config import lora_config, model_load_kwargs, parse_stage_args, resolved_config, sample_rows
    from rlhf.data import data_hash, load_preferences, split_train_test
    from rlhf.models import fold_adapter_chain, load_tokenizer, resolve_model_path, short_backprop_callback
    from rlhf.config import training_defaults
    from rlhf.runs import metrics_callback, prepare_run_dir, resume_checkpoint, write_summary

    # PEFT with task type SEQ_CLS trains and saves the score head with the adapter.
    defaults = training_defaults("reward", lora_task_type="SEQ_CLS")
    args, training_args, model_args, config_path = parse_stage_args(
        "reward", (RewardArguments, RewardConfig, ModelConfig), argv, defaults=defaults, description=__doc__
    )
    source = config_path or "command line"
    if not args.train_file:
        raise RlhfError(f"{source}: key 'train_file' is required (a preference file with chosen/rejected)")
    if not 0 <= args.test_fraction < 1:
        raise RlhfError(f"{source}: key 'test_fraction' must be in [0, 1), got {args.test_fraction}")
    if not (math.isfinite(args.margin_from_rank_gap) and args.margin_from_rank_gap >= 0):
        raise RlhfError(f"{source}: key 'margin_from_rank_gap' must be a number of at least 0 (0 = off), "
                        f"got {args.margin_from_rank_gap}")
    model_path = resolve_model_path(model_args.model_name_or_path)
    peft_config = lora_config(model_args, args, model_path, source)  # checked before any run folder exists
    dataset = load_preferences(args.train_file, extra=("rank_gap",) if args.margin_from_rank_gap else (), conversational=True)
    if args.margin_from_rank_gap:  # checked on the whole file, so an error names the file's row
        dataset = add_margin(dataset, args.margin_from_rank_gap, args.train_file)
    if args.eval_file:
        train_set, heldout = dataset, load_preferences(args.eval_file, extra=("source",), split="test", conversational=True)
        heldout_source = f"eval_file {args.eval_file}"
    else:
        train_set, heldout = split_train_test(dataset, args.test_fraction, seed=training_args.seed)
        heldout_source = f"test_fraction {args.test_fraction} of train_file"
    if heldout is None:
        # Too few rows to hold any out: the figure is then training accuracy, and summary.json says so.
        heldout, heldout_source = train_set, "train_file itself (fewer than 10 rows or test_fraction 0: no held-out split)"
    if "margin" in heldout.column_names:  # TRL's eval loss stays the plain one, comparable whatever the margin
        heldout = heldout.remove_columns("margin")
    train_set = sample_rows(train_set, args, training_args.seed, source)
    config = resolved_config(args, training_args, model_args)
    out = prepare_run_dir(training_args.output_dir, "reward", config, data_hash=data_hash(args.train_file),
                          config_path=config_path)

    load_kwargs = model_load_kwargs(model_args, training_args)  # attention, revision, remote code
    tokenizer = load_tokenizer(model_path, **load_kwargs)
    model = build_reward_model(model_path, tokenizer.pad_token_id, seed=training_args.seed, **load_kwargs)
    trainer = RewardTrainer(
        model=model,
        args=training_args,
        train_dataset=train_set,
        eval_dataset=heldout if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[metrics_callback(out), short_backprop_callback()],
    )
    result = trainer.train(resume_from_checkpoint=resume_checkpoint(out, training_args.resume_from_checkpoint))
    trainer.save_model(str(out))
    if peft_config is not None and trainer.args.should_save:  # the process that saved (rank 0 under DDP)
        fold_adapter_chain(out)  # an SFT adapter under the reward LoRA is folded in: one adapter on the base
    tokenizer.save_pretrained(str(out))

    stats = score_pairs(trainer.model, tokenizer, heldout, training_args.per_device_eval_batch_size)
    figures = {"heldout_accuracy": stats["accuracy"], "heldout_margin": stats["margin"]}
    trainer.log(dict(figures, heldout_accuracy_low=stats["accuracy_ci"][0], heldout_accuracy_high=stats["accuracy_ci"][1]))  # -> metrics.jsonl (metrics callback) and TensorBoard
    write_summary(out, {
        **figures,
        "heldout_accuracy_ci": stats["accuracy_ci"],
        "heldout_rows": len(heldout),
        "heldout_source": heldout_source,
        **({"heldout_accuracy_by_source": stats["by_source"]} if "by_source" in stats else {}),
        "train_rows": len(train_set),
        "train_loss": result.training_loss,
        "margin_from_rank_gap": args.margin_from_rank_gap,
        "global_step": trainer.state.global_step,
        "model_name_or_path": model_args.model_name_or_path,
        "use_peft": model_args.use_peft,
    })
    if hasattr(trainer, "end"):
        trainer.end()  # transformers >= 5.18: close the TensorBoard writer
    print(f"[rlhf reward] held-out accuracy {stats['accuracy']:.3f}{format_ci(stats['accuracy_ci'])}, margin {stats['margin']:.3f} "
          f"on {len(heldout)} pairs{describe_by_source(stats.get('by_source'))} -> {out}")
    return 0
