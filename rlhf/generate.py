"""Sample K candidate responses per prompt from a policy and write labeler tasks (JSONL).

    rlhf generate --config smoke
    rlhf generate --prompts_file data/quickstart/prompts.jsonl --k 4 --output_dir runs/demo/generate

The policy is a model folder, a LoRA adapter folder (merged onto its base) or `smollm2-135m-instruct`.
Each prompt gets the chat template with the generation prompt (plus the optional system prompt and
few-shot turns); prompts are batched with left padding and sampled with the KV cache. One task per line:
  {"prompt": ..., "responses": [{"text", "model", "meta": {sampling params, seed}}], "meta": {...}}
The prompt row's extra fields (id, constraints, ...) travel into the task's meta. vLLM is used instead of
transformers only where it is importable and CUDA is available.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError


@dataclass
class GenerateArguments:
    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Policy to sample from: a model folder, a LoRA adapter folder, or smollm2-135m-instruct."},
    )
    prompts_file: str | None = field(
        default=None, metadata={"help": "JSONL/Parquet/datasets folder with a `prompt` column (string or messages)."}
    )
    output_dir: str = field(default="runs/default/generate", metadata={"help": "Run folder (config, summary.json)."})
    output_file: str | None = field(
        default=None, metadata={"help": "Where the tasks JSONL goes; default <output_dir>/tasks.jsonl."}
    )
    k: int = field(default=4, metadata={"help": "Candidates per prompt (num_return_sequences)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest response, in tokens."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature; 0 means greedy decoding."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling: keep the smallest token set with this mass."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per generate call (each yields k sequences)."})
    seed: int = field(default=42, metadata={"help": "Random seed, recorded with every response."})
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message put before every prompt."})
    # Typed like TRL's dict-valued fields so the YAML list passes through the config checker unchanged;
    # its shape (a list of {prompt, response}) is checked in check_few_shot.
    few_shot: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": "Optional few-shot turns (YAML list of {prompt, response}) put before every prompt."},
    )
    sort_by_length: bool = field(
        default=True,
        metadata={"help": "Batch the prompts in order of token length (less left padding: 1.16x faster on the quickstart's "
                          "128 prompts in batches of 32, scripts/measure_generate_options.py); answers keep the input "
                          "order. Which prompts share a batch changes the sampled draws, not their distribution."},
    )
    use_vllm: bool = field(default=True, metadata={"help": "Use vLLM when it is installed and CUDA is available."})
    dtype: str = field(
        default="auto",
        metadata={"help": "Weights' dtype while sampling: auto = bfloat16 where the machine computes it natively "
                          "(CUDA, or a CPU with AVX512-BF16/AMX: about 2x faster here), else float32.",
                  "choices": ["auto", "float32", "bfloat16", "float16"]},
    )


def check_few_shot(few_shot: Any, source: str) -> list[dict[str, str]]:
    if few_shot is None:
        return []
    ok = isinstance(few_shot, list) and all(
        isinstance(x, dict) and isinstance(x.get("prompt"), str) and isinstance(x.get("response"), str) for x in few_shot
    )
    if not ok:
        raise RlhfError(f"{source}: key 'few_shot' must be a list of {{prompt: str, response: str}}, got {few_shot!r}")
    return [{"prompt": x["prompt"], "response": x["response"]} for x in few_shot]


def build_messages(prompt: str | list[dict], system_prompt: str | None = None,
                   few_shot: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """The conversation sent to the chat template: system, few-shot turns, then the prompt itself."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for shot in few_shot or []:
        messages += [{"role": "user", "content": shot["prompt"]}, {"role": "assistant", "content": shot["response"]}]
    if isinstance(prompt, str):
        return messages + [{"role": "user", "content": prompt}]
    if system_prompt and prompt and prompt[0]["role"] == "system":
        messages = messages[1:]  # the prompt's own system message wins over the config's
    return messages + list(prompt)


class TopCandidatesSampler:
    """Sampling as transformers does it (temperature, then top-k, then top-p, then one draw per row), on the
    top-k candidates only; the drawn token keeps score 0 and every other token -inf, so greedy decoding picks it.

    transformers' sampler draws with torch.multinomial over the whole vocabulary (49,152 tokens) and sorts it for
    top-p at every step: on 2 CPU cores a third of a bfloat16 decoding step. The distribution is the same (top-p
    keeps the most probable tokens, within the top-k, until their mass reaches top_p); the draws differ.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int = 50):
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k

    def candidates(self, scores):
        """(token ids, probabilities) per row: the tokens sampling can draw and their renormalised chances."""
        scores = scores.float() / self.temperature
        k = min(self.top_k, scores.shape[-1]) if self.top_k > 0 else scores.shape[-1]
        values, indices = scores.topk(k, dim=-1)  # sorted, most probable first
        probs = values.softmax(dim=-1)
        # top-p as transformers' TopPLogitsWarper: drop a token when the tokens above it already hold top_p
        drop = (probs.cumsum(dim=-1) - probs) >= self.top_p
        drop[:, 0] = False
        probs = probs.masked_fill(drop, 0.0)
        return indices, probs / probs.sum(dim=-1, keepdim=True)

    def __call__(self, input_ids, scores):
        import torch

        indices, probs = self.candidates(scores)
        choice = torch.multinomial(probs, 1)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, indices.gather(1, choice), 0.0)


def generate_responses(model, tokenizer, prompts: list, k: int, max_new_tokens: int = 128, temperature: float = 0.8,
                       top_p: float = 0.95, batch_size: int = 8, seed: int | None = None,
                       system_prompt: str | None = None, few_shot: list[dict[str, str]] | None = None,
                       progress: bool = True, top_k: int = 50, sort_by_length: bool = False) -> list[list[str]]:
    """k sampled responses for each prompt (string or messages), in prompt order.

    With `sort_by_length` the prompts are batched in order of token length (shortest first; ties keep the input
    order), so each batch pads its prompts less, and the answers are put back in the input order.

    Batched `model.generate` with left padding (so every row's last token is the prompt's last token)
    and the KV cache; temperature 0 means greedy, where k > 1 would only repeat itself. Sampling uses
    TopCandidatesSampler (transformers' distribution, with its default top_k 50, drawn from the top candidates).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import LogitsProcessorList, set_seed

    from rlhf.models import generation_mode

    if seed is not None:
        set_seed(seed)
    texts = [
        tokenizer.apply_chat_template(build_messages(p, system_prompt, few_shot), add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    order = list(range(len(texts)))
    if sort_by_length and len(texts) > batch_size:  # one batch pads the same whatever the order
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        order.sort(key=lambda i: lengths[i])
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    do_sample = temperature > 0
    device = next(model.parameters()).device
    results: list[list[str]] = []
    try:
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc="generate", unit="batch", disable=not progress):
            batch_texts = [texts[i] for i in order[start : start + batch_size]]
            batch = tokenizer(batch_texts, return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {name: t.to(device) for name, t in batch.items()}
            if k > 1:  # each prompt's k rows next to each other, as num_return_sequences does
                batch = {name: t.repeat_interleave(k, dim=0) for name, t in batch.items()}
            sampler = [TopCandidatesSampler(temperature, top_p, top_k)] if do_sample else []
            with torch.no_grad(), generation_mode(model):
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    use_cache=True,
                    pad_token_id=tokenizer.pad_token_id,
                    do_sample=False,
                    logits_processor=LogitsProcessorList(sampler),
                )
            decoded = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
            # each prompt's k sequences are next to each other
            results += [[t.strip() for t in decoded[i : i + k]] for i in range(0, len(decoded), k)]
    finally:
        tokenizer.padding_side = previous_side
    in_input_order: list[list[str]] = [[] for _ in texts]
    for position, i in enumerate(order):
        in_input_order[i] = results[position]
    return in_input_order


def vllm_usable() -> bool:
    try:
        import torch
        import vllm  # noqa: F401 - optional; only its presence matters here
    except ImportError:
        return False
    return torch.cuda.is_available()


def generate_with_vllm(model_path: str, tokenizer, prompts: list, args: GenerateArguments,
                       few_shot: list[dict[str, str]]) -> list[list[str]]:
    """The same sampling through vLLM (GPU only): one call, vLLM batches internally."""
    from vllm import LLM, SamplingParams

    texts = [
        tokenizer.apply_chat_template(build_messages(p, args.system_prompt, few_shot), add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    params = SamplingParams(n=args.k, temperature=args.temperature, top_p=args.top_p if args.temperature > 0 else 1.0,
                            max_tokens=args.max_new_tokens, seed=args.seed)
    outputs = LLM(model=model_path, seed=args.seed).generate(texts, params)
    return [[c.text.strip() for c in o.outputs] for o in outputs]


def write_tasks(path: Path, tasks: list[dict[str, Any]]) -> None:
    """Write then rename, so a reader (the labeler's import) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for task in tasks:
            fh.write(json.dumps(task, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    from rlhf.config import parse_stage_args, resolved_config
    from rlhf.data import data_hash, load_prompts
    from rlhf.models import is_adapter, load_causal_lm, load_tokenizer, resolve_dtype, resolve_model_path
    from rlhf.runs import prepare_run_dir, write_summary

    args, config_path = parse_stage_args("generate", (GenerateArguments,), argv, description=__doc__)
    source = config_path or "command line"
    dtype = resolve_dtype(args.dtype)
    if not args.prompts_file:
        raise RlhfError(f"{source}: key 'prompts_file' is required (a JSONL file with a `prompt` field per line)")
    if args.k < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise RlhfError(f"{source}: k, batch_size and max_new_tokens must be at least 1")
    few_shot = check_few_shot(args.few_shot, source)
    model_path = resolve_model_path(args.model_name_or_path)
    rows = load_prompts(args.prompts_file)
    out = prepare_run_dir(args.output_dir, "generate", resolved_config(args), data_hash=data_hash(args.prompts_file),
                          config_path=config_path)
    output_file = Path(args.output_file) if args.output_file else out / "tasks.jsonl"

    import torch

    tokenizer = load_tokenizer(model_path)
    prompts = [row["prompt"] for row in rows]
    started = time.perf_counter()
    backend = "vllm" if args.use_vllm and not is_adapter(model_path) and vllm_usable() else "transformers"
    if backend == "vllm":
        responses = generate_with_vllm(model_path, tokenizer, prompts, args, few_shot)
    else:
        model = load_causal_lm(model_path, dtype=dtype)
        if torch.cuda.is_available():
            model = model.to("cuda")
        responses = generate_responses(
            model, tokenizer, prompts, args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_p=args.top_p, batch_size=args.batch_size, seed=args.seed, system_prompt=args.system_prompt,
            few_shot=few_shot, sort_by_length=args.sort_by_length,
        )
    seconds = time.perf_counter() - started

    sampling = {"temperature": args.temperature, "top_p": args.top_p, "max_new_tokens": args.max_new_tokens,
                "num_return_sequences": args.k, "seed": args.seed, "backend": backend,
                **({"dtype": dtype, "sort_by_length": args.sort_by_length} if backend == "transformers" else {})}
    tasks, n_tokens = [], 0
    for row, texts in zip(rows, responses):
        meta = {key: value for key, value in row.items() if key != "prompt"}
        meta.update({"system_prompt": args.system_prompt, "few_shot": few_shot, "prompts_file": args.prompts_file})
        tasks.append({
            "prompt": row["prompt"],
            "responses": [{"text": t, "model": args.model_name_or_path, "meta": dict(sampling)} for t in texts],
            "meta": meta,
        })
        n_tokens += sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    write_tasks(output_file, tasks)
    summary = {
        "prompts": len(tasks),
        "responses": sum(len(t["responses"]) for t in tasks),
        "tokens": n_tokens,
        "tokens_per_second": round(n_tokens / seconds, 2) if seconds > 0 else None,
        "seconds": round(seconds, 2),
        "backend": backend,
        "dtype": dtype if backend == "transformers" else None,
        "output_file": str(output_file),
    }
    write_summary(out, summary)
    print(f"[rlhf generate] {summary['responses']} responses for {summary['prompts']} prompts -> {output_file} "
          f"({summary['tokens_per_second']} tokens/s)")
    return 0
