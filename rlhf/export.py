"""Export a policy as a plain Hugging Face folder: merged weights, tokenizer, chat template, model card.

    rlhf export --model_name_or_path runs/quickstart/dpo --output_dir runs/quickstart/export
    rlhf export --config smoke/export --eval_dir runs/smoke/eval
    rlhf export --model_name_or_path runs/quickstart/dpo --reward_model_path runs/quickstart/reward ...

A LoRA adapter folder is merged into its base (adapter chains such as dpo -> sft -> base are merged in
turn); a full model folder is copied as is. The folder gets safetensors weights, the tokenizer with its
chat template, generation_config.json and a README.md model card naming the base model, every stage
that led here (walked back through the run folders' run.json and config.yaml) with its config and data
hash, and the eval figures when `--eval_dir` names an eval run. Finally the folder is reloaded with plain
`transformers` and generates once, as a check that it stands on its own.

With `--reward_model_path` the reward model is exported too, merged, into <output_dir>/reward: a plain
sequence classifier (one output) that `AutoModelForSequenceClassification.from_pretrained` loads, checked
by reloading it and scoring one answer as rlhf's own loader does. With `--gguf q8_0` (or f16) the folder
also gets a GGUF written by llama.cpp's own converter and an Ollama Modelfile (rlhf/gguf_export.py),
checked by reloading the GGUF with transformers and comparing logits and greedy output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf.errors import RlhfError

STAGE = "export"
# The hyperparameters a reader of the model card wants first; the full config follows in a details block.
CARD_KEYS = ("train_file", "prompts_file", "learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
             "gradient_accumulation_steps", "max_length", "beta", "loss_type", "use_peft", "lora_r", "lora_alpha", "seed")


@dataclass
class ExportArguments:
    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "The policy to export: a stage's output folder (LoRA adapter or full model) or a model folder."},
    )
    output_dir: str = field(default="runs/default/export", metadata={"help": "Where the exported folder goes."})
    eval_dir: str | None = field(
        default=None, metadata={"help": "An `rlhf eval` run folder; its summary.json figures go into the model card."}
    )
    gguf: str | None = field(
        default=None,
        metadata={"help": "Also write <output_dir>/<name>-<type>.gguf with llama.cpp's converter, and an Ollama Modelfile: "
                          "f16, q8_0, bf16 or f32."},
    )
    license: str = field(
        default="apache-2.0",
        metadata={"help": "License in the model card: the base model's (the embedded SmolLM2-135M-Instruct is Apache-2.0)."},
    )
    reward_model_path: str | None = field(
        default=None,
        metadata={"help": "A reward model (`rlhf reward` output) to export as well, merged, into <output_dir>/reward: "
                          "it loads with AutoModelForSequenceClassification.from_pretrained."},
    )
    check_prompt: str = field(
        default="Give me one tip for staying focused while studying.",
        metadata={"help": "Prompt for the reload-and-generate check after saving."},
    )
    max_new_tokens: int = field(default=48, metadata={"help": "Length of the check generation (greedy)."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype of the export: float32, bfloat16 or float16."})


def trace_lineage(model_path: str, model_name: str) -> tuple[str, list[dict[str, Any]]]:
    """Walk back from a stage folder through each stage's `model_name_or_path` to the base model.

    Returns the base model's name and the stages, oldest first, each with its folder, config and data hash.
    """
    from rlhf.runs import read_run_info

    stages: list[dict[str, Any]] = []
    name, seen = model_name, set()
    folder = Path(model_path)
    while folder.is_dir() and (folder / "run.json").is_file() and folder.resolve() not in seen:
        seen.add(folder.resolve())
        info = read_run_info(folder)
        config_file = folder / "config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        stages.append({"stage": info.get("stage"), "folder": str(folder), "config_file": info.get("config_file"),
                       "data_hash": info.get("data_hash"), "labels": info.get("labels") or [],
                       "config": config or {}})
        name = (config or {}).get("model_name_or_path")
        if not name:
            break
        folder = Path(name).expanduser()
    return str(name), stages[::-1]


def flatten_figures(summary: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Scalar figures of an eval summary.json as (dotted key, value) rows for the card's table.

    A figure's bootstrap interval (`<figure>_ci`: [low, high], as `rlhf eval` writes them) goes into the
    figure's own row as "value [low, high]" rather than a row of its own.
    """
    rows: list[tuple[str, Any]] = []
    for key, value in sorted(summary.items()):
        interval = summary.get(f"{key}_ci")
        if key.endswith("_ci") and key[:-3] in summary:
            continue
        if isinstance(value, dict):
            rows += flatten_figures(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float, str, bool)):
            shown = round(value, 4) if isinstance(value, float) else value
            if is_interval(interval):
                shown = f"{shown} [{round(interval[0], 4)}, {round(interval[1], 4)}]"
            rows.append((f"{prefix}{key}", shown))
    return rows


def is_interval(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def base_model_id(base_model: str) -> str:
    """The base model as the Hub knows it: the embedded model's cache folder stands for its hub id."""
    from rlhf.models import EMBEDDED_HUB_ID, EMBEDDED_NAME, cache_dir

    if base_model == EMBEDDED_NAME or Path(base_model).resolve() == (cache_dir() / EMBEDDED_NAME).resolve():
        return EMBEDDED_HUB_ID
    return base_model


def eval_results(summary: dict[str, Any] | None, model_path: str) -> list:
    """huggingface_hub EvalResults for the exported policy's figures in an eval summary (the policy whose path
    is the exported folder, else the one named "final"); the 95% interval rides in metric_args."""
    from huggingface_hub import EvalResult

    policies = (summary or {}).get("policies") or {}
    target = Path(model_path).resolve()
    name = next((n for n, f in policies.items() if f.get("path") and Path(str(f["path"])).resolve() == target),
                "final" if "final" in policies else None)
    if name is None:
        return []
    results = []
    for key, value in sorted(policies[name].items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        interval = policies[name].get(f"{key}_ci")
        results.append(EvalResult(
            task_type="text-generation", dataset_type="rlhf-loop/heldout-prompts",
            dataset_name=f"held-out prompts ({summary.get('prompts', '?')})", metric_type=key,
            metric_value=float(value), metric_name=f"{key} ({name})",
            metric_args={"ci95": [float(v) for v in interval]} if is_interval(interval) else None,
            dataset_args={"reference_policy": summary.get("reference")}))
    return results


def write_model_card(out: Path, base_model: str, stages: list[dict[str, Any]], eval_figures: list[tuple[str, Any]] | None,
                     eval_dir: str | None, license: str = "apache-2.0", eval_summary: dict[str, Any] | None = None,
                     model_path: str = "", reward: dict[str, Any] | None = None,
                     gguf: dict[str, Any] | None = None) -> None:
    """README.md through huggingface_hub's ModelCard: metadata (license, base model, datasets, tags, the eval
    figures as model-index results) and a body with the lineage, the labels by content hash and the figures."""
    from huggingface_hub import ModelCard, ModelCardData

    stage_names = [str(s["stage"]) for s in stages if s["stage"]]
    data_files = [str(s["config"].get("train_file") or s["config"].get("prompts_file")) for s in stages
                  if s["config"].get("train_file") or s["config"].get("prompts_file")]
    results = eval_results(eval_summary, model_path)
    card_data = ModelCardData(
        license=license, base_model=base_model_id(base_model), library_name="transformers",
        pipeline_tag="text-generation", datasets=sorted(set(data_files)) or None,
        tags=["rlhf-loop", "trl", *sorted(set(stage_names)), *(["gguf"] if gguf else [])], model_name=out.name if results else None,
        eval_results=results or None,
    )
    lines = [f"# {out.name}", "",
             f"Exported by `rlhf export` (rlhf-loop) from **{base_model}**"
             + (f" through {len(stages)} stage(s): {' -> '.join(str(s['stage']) for s in stages)}." if stages else "."),
             "LoRA adapters are merged; load it with `AutoModelForCausalLM.from_pretrained` and chat through the "
             "tokenizer's chat template.", "", "## Lineage", "",
             "| # | stage | run folder | config file | data hash (sha256) |", "|---|---|---|---|---|",
             f"| 0 | base | `{base_model}` | | |"]
    for i, s in enumerate(stages, start=1):
        lines.append(f"| {i} | {s['stage']} | `{s['folder']}` | `{s['config_file'] or '-'}` | `{s['data_hash'] or '-'}` |")
    labelled = [(i, s, labels) for i, s in enumerate(stages, start=1) for labels in s.get("labels") or []]
    if labelled:
        lines += ["", "## Labels", "", "Stages trained on labels from the labeler, by the labels id and content hash "
                  "their rows carry (`labels_id`, `labels_hash`):", "",
                  "| # | stage | labels id | content hash (sha256) | rows (by source) |", "|---|---|---|---|---|"]
        lines += [f"| {i} | {s['stage']} | {labels.get('id')} | `{labels.get('content_hash')}` | {label_rows(labels)} |"
                  for i, s, labels in labelled]
    for i, s in enumerate(stages, start=1):
        key_values = {k: s["config"][k] for k in CARD_KEYS if k in s["config"]}
        lines += ["", f"### {i}. {s['stage']}", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | `{v}` |" for k, v in key_values.items()]
        lines += ["", "<details><summary>full resolved config</summary>", "", "```yaml",
                  yaml.safe_dump(s["config"], sort_keys=True).strip(), "```", "", "</details>"]
    if eval_figures is not None:
        lines += ["", "## Evaluation", "", f"From `{eval_dir}/summary.json` (intervals: bootstrap 95% over prompts):", "",
                  "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in eval_figures]
    if reward:
        lines += ["", "## Reward model", "", f"`reward/` holds the reward model of this run ({reward['source']}), merged: "
                  "`AutoModelForSequenceClassification.from_pretrained(\"<this folder>/reward\")`, one output, "
                  "scoring a conversation through the chat template."
                  + "".join(f" Trained on labels {labels.get('id')} (`{labels.get('content_hash')}`): {label_rows(labels)} pairs."
                            for labels in reward.get("labels") or [])]
    if gguf:
        lines += ["", "## GGUF (llama.cpp, Ollama)", "",
                  f"`{gguf['file']}` ({gguf['type']}, written by {gguf['converter']}) and an Ollama `Modelfile` with the "
                  f"chat template: `llama-cli -m {gguf['file']}`, or `ollama create {out.name} -f Modelfile`. Reloaded "
                  f"with transformers, its next-token logits differ from this folder's by at most "
                  f"{gguf['max_logit_diff']:.4f}; greedy output {'identical' if gguf['greedy_matches'] else 'differs'}."]
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    card.save(out / "README.md")


def label_rows(labels: dict[str, Any]) -> str:
    """"9 (edited 3, ranked 6)": the rows a stage read from one labels set, by source when the rows say."""
    by_source = labels.get("rows_by_source") or {}
    return f"{labels.get('rows')}" + (f" ({', '.join(f'{src} {n}' for src, n in by_source.items())})" if by_source else "")


def tokenizer_source(path: str) -> str:
    """The folder whose tokenizer goes with `path`: itself, or for an adapter without one, its base."""
    from rlhf.models import adapter_base, is_adapter, resolve_model_path

    if (Path(path) / "tokenizer_config.json").is_file() or not is_adapter(path):
        return path
    return tokenizer_source(resolve_model_path(adapter_base(path)))


def check_generation(out: Path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """Reload the export with plain transformers (no rlhf code) and answer one prompt greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        generated = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    new_tokens = generated[0, ids["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip(), len(new_tokens)


def export_reward_model(path: str, out: Path, dtype: str, prompt: str) -> dict[str, Any]:
    """Save the reward model at `path` (a SEQ_CLS adapter is merged onto its base) as a plain sequence
    classifier in `out`, then reload it with transformers alone and check that it scores as rlhf's loader does."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.reward import load_reward_model, score_texts

    model, tokenizer = load_reward_model(path)
    response = "Put your phone in another room and work in 25-minute blocks."
    expected = score_texts(model, tokenizer, [prompt], [response])[0]
    model.to(getattr(torch, dtype)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    reloaded = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)
    score = score_texts(reloaded, AutoTokenizer.from_pretrained(out), [prompt], [response])[0]
    tolerance = 1e-4 if dtype == "float32" else 5e-2 * max(1.0, abs(expected))
    if abs(score - expected) > tolerance:
        raise RlhfError(f"{out}: the exported reward model scores {score:.6f}, the trained one {expected:.6f}")
    from rlhf.runs import read_run_info

    return {"folder": str(out), "source": path, "check_response": response, "check_score": score,
            "parameters": sum(p.numel() for p in reloaded.parameters()), "labels": read_run_info(path).get("labels") or []}


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args, resolved_config
    from rlhf.gguf_export import GGUF_TYPES, export_gguf
    from rlhf.models import load_causal_lm, load_tokenizer, resolve_model_path
    from rlhf.runs import prepare_run_dir, read_summary, write_summary

    (args, config_path) = parse_stage_args(STAGE, (ExportArguments,), argv, description=__doc__)
    source = config_path or "command line"
    if args.dtype not in ("float32", "bfloat16", "float16"):
        raise RlhfError(f"{source}: key 'dtype' must be float32, bfloat16 or float16; got {args.dtype!r}")
    model_path = resolve_model_path(args.model_name_or_path)
    if Path(model_path).resolve() == Path(args.output_dir).resolve():
        raise RlhfError(f"{source}: output_dir {args.output_dir} is the input model folder; export into a new folder")
    eval_summary = read_summary(args.eval_dir) if args.eval_dir else None
    eval_figures = flatten_figures(eval_summary) if eval_summary is not None else None
    if args.gguf is not None and args.gguf not in GGUF_TYPES:
        raise RlhfError(f"{source}: key 'gguf' must be one of {', '.join(GGUF_TYPES)}; got {args.gguf!r}")
    if args.reward_model_path:
        from rlhf.reward import check_reward_model

        args.reward_model_path = check_reward_model(args.reward_model_path)  # before any folder is written
    base_model, stages = trace_lineage(model_path, args.model_name_or_path)
    started = time.perf_counter()
    out = prepare_run_dir(args.output_dir, STAGE, resolved_config(args), data_hash=None, config_path=config_path)

    model = load_causal_lm(model_path, dtype=args.dtype)  # adapters merged here, recursively
    tokenizer = load_tokenizer(tokenizer_source(model_path))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)  # safetensors + config.json + generation_config.json
    tokenizer.save_pretrained(out)  # tokenizer files + chat_template.jinja

    response, n_tokens = check_generation(out, args.check_prompt, args.max_new_tokens)
    print(f"[rlhf export] check: {args.check_prompt!r} -> {response!r}")
    reward = None
    if args.reward_model_path:
        reward = export_reward_model(args.reward_model_path, out / "reward", args.dtype, args.check_prompt)
        print(f"[rlhf export] reward model -> {out / 'reward'} (check score {reward['check_score']:.4f})")
    gguf = export_gguf(out, args.gguf, tokenizer, args.check_prompt, args.max_new_tokens) if args.gguf else None
    write_model_card(out, base_model, stages, eval_figures, args.eval_dir, license=args.license,
                     eval_summary=eval_summary, model_path=model_path, reward=reward, gguf=gguf)
    summary = {
        "model_name_or_path": args.model_name_or_path,
        "base_model": base_model,
        "lineage": [{k: s[k] for k in ("stage", "folder", "data_hash")} for s in stages],
        "parameters": sum(p.numel() for p in model.parameters()),
        "check_prompt": args.check_prompt,
        "check_response": response,
        "check_new_tokens": n_tokens,
        "eval_dir": args.eval_dir,
        "reward_model": reward,
        "gguf": gguf,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_summary(out, summary)
    print(f"[rlhf export] {out}: merged model, tokenizer, chat template, model card (base {base_model})")
    return 0
