"""YAML configs with command-line overrides, validated before any work starts.

`rlhf <stage> --config FILE.yaml [--key value ...]`: the YAML sets the defaults, the command line wins.
Keys are the fields of TRL's own config dataclasses (`DPOConfig`, `ModelConfig`, ...) plus the stage's
own arguments. TrlParser alone would accept a YAML value of any type; here every key is checked
against its field so a typo or a wrong type fails at once, naming the key and the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlhf.errors import RlhfError


RECIPES = Path(__file__).resolve().parent / "recipes"


def recipe_names() -> list[str]:
    """The shipped recipes `--config NAME` accepts (quickstart, smoke, gpu): folders of stage YAMLs."""
    return sorted(p.name for p in RECIPES.iterdir() if p.is_dir() and p.name not in ("data", "accelerate"))


def find_config(value: str | os.PathLike, stage: str) -> Path:
    """The YAML a `--config` value names: an existing file, else a recipe shipped in the package.

    A recipe is named without a folder or suffix: `rlhf loop --config quickstart` reads recipes/quickstart.yaml
    (smoke's loop is recipes/smoke/loop.yaml), `rlhf sft --config quickstart` reads recipes/quickstart/sft.yaml,
    and `smoke/sft` names one file. The checkout's old paths (`configs/smoke/sft.yaml`) name the same files,
    so they work from anywhere, as the recipe names do in an installed package.
    """
    path = Path(value).expanduser()
    if path.is_file():
        return path
    name = str(value).removeprefix("configs/").removesuffix(".yaml").removesuffix(".yml")
    if not path.is_absolute() and ".." not in Path(name).parts and name:
        tries = [f"{name}.yaml", f"{name}/loop.yaml"] if stage == "loop" else [f"{name}/{stage}.yaml", f"{name}.yaml"]
        for candidate in tries:
            if (RECIPES / candidate).is_file():
                return RECIPES / candidate
    raise RlhfError(f"config file not found: {value} (give a YAML file, or a shipped recipe: {', '.join(recipe_names())})")


def find_data_file(value: str) -> str:
    """A relative data path that does not exist from the working directory but does among the shipped recipes.

    Recipes name their example data as `data/quickstart/sft.jsonl`; from a checkout or an installed package
    that file lives in rlhf/recipes/data/, so a path missing here is looked up there. Anything else is
    returned unchanged (the stage's own check then names it).
    """
    path = Path(value).expanduser()
    if path.exists() or path.is_absolute() or ".." in path.parts:
        return value
    shipped = RECIPES / path
    return str(shipped) if shipped.exists() else value


STAGE_NAMES = ("generate", "sft", "reward", "dpo", "rl", "onpolicy", "eval", "export")


def locate_recipe_paths(instance: Any) -> dict[str, str]:
    """Resolve, in place, every `*_file` field (data) and `<stage>_config` field (the loop's stage YAMLs) of a
    parsed dataclass; returns the fields resolved. TRL's own `*_config` fields (fsdp_config, ...) are not recipes
    and stay as given."""
    located = {}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if not isinstance(value, str) or not value:
            continue
        if f.name.endswith("_file"):
            located[f.name] = find_data_file(value)
        elif f.name.endswith("_config") and f.name.removesuffix("_config") in STAGE_NAMES:
            try:
                located[f.name] = str(find_config(value, f.name.removesuffix("_config")))
            except RlhfError:
                pass  # left as given: the caller's own check names the key
    for name, value in located.items():
        setattr(instance, name, value)
    return located


# Keys that were renamed: the old spelling is refused with a message naming the new one.
RENAMED_KEYS = {
    "test_size": "test_fraction (the share of prompts held out, as in `labeler export` and the loop)",
}


def refuse_renamed(keys, source: str, stage: str) -> None:
    for key in keys:
        old = str(key).lstrip("-").split("=", 1)[0].replace("-", "_")
        if old in RENAMED_KEYS:
            raise RlhfError(f"{source}: key '{old}' of `rlhf {stage}` is now spelled {RENAMED_KEYS[old]}")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a syntax error names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise RlhfError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RlhfError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RlhfError(f"{path}: a config must be a YAML mapping of key: value, got {type(data).__name__}")
    return data


def _check_value(action: argparse.Action, key: str, value: Any, source: str) -> Any:
    """Coerce one YAML value through the argparse action's type; raise naming key and source."""
    if value is None:
        return value
    conv = action.type
    many = action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)
    # HfArgumentParser turns bool fields into string_to_bool with nargs="?"
    is_bool = conv is not None and getattr(conv, "__name__", "") == "string_to_bool"

    def one(v: Any) -> Any:
        if is_bool:
            if isinstance(v, bool):
                return v
            raise RlhfError(f"{source}: key '{key}' expects true or false, got {v!r}")
        if isinstance(v, (dict, list)) and not many:
            if conv in (int, float) or action.choices:
                raise RlhfError(f"{source}: key '{key}' expects a single {getattr(conv, '__name__', 'value')}, got {v!r}")
            return v  # dict-valued fields (e.g. model_init_kwargs) pass through
        if conv is None:
            return v
        if conv in (int, float) and isinstance(v, bool):
            raise RlhfError(f"{source}: key '{key}' expects {conv.__name__}, got {v!r}")
        try:
            out = conv(v) if conv in (int, float) and isinstance(v, (int, float)) else conv(str(v))
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            raise RlhfError(
                f"{source}: key '{key}' expects {getattr(conv, '__name__', 'a different type')}, got {v!r}"
            ) from None
        if conv is int and isinstance(v, float) and v != int(v):
            raise RlhfError(f"{source}: key '{key}' expects int, got {v!r}")
        if conv is str and not isinstance(v, str):
            return v if isinstance(v, (int, float)) else str(v)
        return out

    if many:
        values = value if isinstance(value, list) else [value]
        out = [one(v) for v in values]
    else:
        out = one(value)
    if action.choices is not None:
        for v in out if many else [out]:
            if v not in action.choices and str(v) not in [str(c) for c in action.choices]:
                choices = ", ".join(map(str, action.choices))
                raise RlhfError(f"{source}: key '{key}' must be one of {choices}; got {v!r}")
    return out


def training_defaults(stage: str, **overrides: Any) -> dict[str, Any]:
    """The project's defaults for a TRL training stage (sft, reward, dpo, rl); `overrides` add stage specifics.

    LoRA on every projection, bfloat16 autocast where the machine has native bfloat16 (else float32), `use_cpu` on a
    GPU-less machine (so `accelerate launch` with
    recipes/accelerate/cpu_ddp.yaml runs real DDP over gloo), activation checkpointing that stops backward at the
    lowest trained layer, TensorBoard and a metrics line every step.
    """
    import torch

    from rlhf.models import native_bf16

    defaults = {
        "model_name_or_path": "smollm2-135m-instruct",
        "output_dir": f"runs/default/{stage}",
        "use_peft": True,
        "lora_r": 16,
        "lora_dropout": 0.0,  # PEFT's 0.05 costs 1.4x step time on CPU; a few hundred steps do not overfit
        "lora_alpha": 32,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "report_to": ["tensorboard"],
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 50,
        # bfloat16 autocast where the machine computes it natively (CUDA, or a CPU with AVX512-BF16/AMX: DPO steps
        # 2x faster on 2 cores, scripts/bench_dpo.py); elsewhere float32, as bf16 emulation is slower.
        "bf16": native_bf16(),
        "use_cpu": not torch.cuda.is_available(),
        "ddp_find_unused_parameters": False,  # LoRA leaves no unused parameters; saves a graph walk per step
        # Activation checkpointing (TRL's default too), with backward stopping at the lowest LoRA layer
        # (rlhf.models.short_backprop): a reward model on the quickstart's pairs peaked at 2.00 GB instead of
        # 3.40 GB, for 1.28x the training time (41.6 s against 32.6 s for 8 steps, one thread).
        "activation_checkpointing": True,
        "dataloader_num_workers": 0,
        "seed": 42,
    }
    defaults.update(overrides)
    return defaults


@dataclass
class StageArguments:
    """Options every training stage adds to TRL's configs (each stage's arguments inherit them)."""

    max_train_rows: int | None = field(
        default=None,
        metadata={"help": "Train on a seeded random sample of at most this many rows (a time budget); default all."},
    )
    lora_top_layers: int | None = field(
        default=None,
        metadata={"help": "LoRA only on the top N transformer layers (default, or N >= the model's layers: all). "
                          "Backpropagation then stops N layers from the top: faster steps, for format-level changes."},
    )


def sample_rows(dataset, stage_args: Any, seed: int, source: str = "config"):
    """`dataset` cut to a seeded random `max_train_rows` sample when it is longer (unchanged otherwise)."""
    n = getattr(stage_args, "max_train_rows", None)
    if n is not None and n < 1:
        raise RlhfError(f"{source}: max_train_rows must be at least 1, got {n}")
    if n is None or len(dataset) <= n:
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def lora_config(model_args: Any, stage_args: Any, model_path: str | os.PathLike, source: str = "config"):
    """TRL's PEFT config from ModelConfig (None without --use_peft), restricted to the top layers if asked."""
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    top = getattr(stage_args, "lora_top_layers", None)
    if peft_config is None or top is None:
        return peft_config
    from transformers import AutoConfig

    from rlhf.models import base_model_folder

    if top < 1:
        raise RlhfError(f"{source}: lora_top_layers must be at least 1, got {top}")
    n_layers = AutoConfig.from_pretrained(base_model_folder(str(model_path))).num_hidden_layers
    if top < n_layers:  # a recipe's 12 on a 2-layer test model means every layer
        peft_config.layers_to_transform = list(range(n_layers - top, n_layers))
    return peft_config


def check_model_options(parsed: tuple, source: str, stage: str) -> None:
    """Refuse, before any work, a model option this machine or stage cannot honour; one line naming the key.

    ModelConfig's quantization, attention and revision keys and the training config's trust_remote_code are
    honoured by model_load_kwargs. bitsandbytes' 4-bit and 8-bit loads need CUDA; FlashAttention needs CUDA;
    a revision selects a hub commit, so it means nothing for a local folder; `rlhf reward` copies the
    policy's full weights into a classifier, so it cannot start from a quantized load; and the stages load
    the model themselves, so TRL's model_init_kwargs would be silently ignored.
    """
    from trl import ModelConfig

    model_args = next((p for p in parsed if isinstance(p, ModelConfig)), None)
    if model_args is None:
        return
    import torch

    cuda = torch.cuda.is_available()
    bits = [key for key in ("load_in_4bit", "load_in_8bit") if getattr(model_args, key)]
    if len(bits) == 2:
        raise RlhfError(f"{source}: keys 'load_in_4bit' and 'load_in_8bit' are both true; choose one")
    for key in bits:
        if not cuda:
            raise RlhfError(f"{source}: key '{key}' needs a CUDA GPU (bitsandbytes quantization); this machine has none")
        if stage == "reward":
            raise RlhfError(f"{source}: key '{key}': `rlhf reward` builds its classifier from the policy's full weights "
                            "and cannot start from a quantized load")
        if not model_args.use_peft:
            raise RlhfError(f"{source}: key '{key}': a quantized model trains only through LoRA; set use_peft true")
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise RlhfError(f"{source}: key '{key}' needs bitsandbytes: pip install bitsandbytes")
    attn = model_args.attn_implementation
    if attn:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        known = {"eager", *ALL_ATTENTION_FUNCTIONS.valid_keys()}
        if attn not in known and "/" not in attn:  # org/name: a kernel from the hub, which transformers loads
            raise RlhfError(f"{source}: key 'attn_implementation' must be one of {', '.join(sorted(known))}; got {attn!r}")
        if attn.startswith("flash_attention") and not cuda:
            raise RlhfError(f"{source}: key 'attn_implementation': {attn} needs a CUDA GPU; this machine has none "
                            "(use sdpa or eager)")
    revision = model_args.model_revision
    if revision not in (None, "", "main"):
        from rlhf.models import EMBEDDED_NAME

        name = str(model_args.model_name_or_path or "")
        if name == EMBEDDED_NAME or Path(name).expanduser().exists():
            raise RlhfError(f"{source}: key 'model_revision' ({revision!r}) selects a hub revision, but "
                            f"model_name_or_path {name!r} is a local model; drop the key or name a hub id")
    for training_args in parsed:
        if getattr(training_args, "model_init_kwargs", None):
            raise RlhfError(f"{source}: key 'model_init_kwargs' is not used: `rlhf {stage}` loads the model itself; "
                            "use dtype, attn_implementation, load_in_4bit or trust_remote_code")


def model_load_kwargs(model_args: Any, training_args: Any = None) -> dict[str, Any]:
    """from_pretrained keyword arguments for the ModelConfig keys (checked by check_model_options) and the
    training config's trust_remote_code: attention implementation, hub revision, bitsandbytes quantization."""
    from trl import get_quantization_config

    kwargs: dict[str, Any] = {}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.model_revision not in (None, "", "main"):
        kwargs["revision"] = model_args.model_revision
    if getattr(training_args, "trust_remote_code", False):
        kwargs["trust_remote_code"] = True
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        from accelerate import PartialState

        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = {"": PartialState().local_process_index}  # each process its own GPU, as TRL does
    return kwargs


def build_parser(stage: str, dataclass_types: tuple, description: str | None = None):
    from trl import TrlParser

    parser = TrlParser(
        dataclass_types,
        prog=f"rlhf {stage}",
        usage=f"rlhf {stage} [--config FILE.yaml] [--key value ...]",
        description=description,
        epilog=("--config FILE.yaml   read option values from a YAML mapping (keys are the option names above);\n"
                "                     options given on the command line override the file. Unknown keys and\n"
                "                     wrong types fail before any work, naming the key and the file."),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for action in parser._actions:
        if action.dest == "resume_from_checkpoint":  # TrainingArguments' help says the Trainer ignores it; rlhf does not
            action.help = ("A checkpoint folder to resume from; true (the default behaviour): the last complete "
                           "checkpoint in output_dir; false: train from the start. The run prints where it resumed.")
    return parser


def parse_stage_args(
    stage: str,
    dataclass_types: tuple,
    argv: list[str] | None,
    defaults: dict[str, Any] | None = None,
    description: str | None = None,
) -> tuple:
    """Parse `--config FILE.yaml` plus CLI overrides into instances of `dataclass_types`.

    `defaults` are this project's defaults for the stage (LoRA on, etc.); the YAML overrides them and the
    command line overrides the YAML. Returns the dataclass instances in order, plus the config path (or None).
    """
    parser = build_parser(stage, dataclass_types, description)
    argv = list(argv or [])
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RlhfError(f"rlhf {stage}: --config needs a file path")
        config_path = str(find_config(argv[i + 1], stage))
        del argv[i : i + 2]
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", None)}
    merged: dict[str, Any] = dict(defaults or {})
    refuse_renamed([a for a in argv if a.startswith("--")], "command line", stage)
    if config_path is not None:
        config = read_yaml(config_path)
        refuse_renamed([k for k in config if k not in actions], config_path, stage)
        for key, value in config.items():
            if key not in actions:
                hint = difflib.get_close_matches(str(key), list(actions), n=1)
                extra = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise RlhfError(f"{config_path}: unknown key '{key}' for `rlhf {stage}`{extra}")
            merged[key] = _check_value(actions[key], key, value, config_path)
    for key, value in merged.items():
        actions[key].default = value
        actions[key].required = False
    try:
        parsed = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:
        raise RlhfError(f"rlhf {stage}: {exc}") from None
    inputs = vars(parser.parse_known_args(args=argv)[0])  # what each dataclass was built from
    for instance in parsed:
        given = {f.name: inputs[f.name] for f in dataclasses.fields(instance) if f.init and f.name in inputs}
        given.update(locate_recipe_paths(instance))
        vars(instance)[CONFIG_INPUTS] = given
    check_model_options(parsed, config_path or "command line", stage)
    return (*parsed, config_path)


# Where parse_stage_args keeps, on each dataclass it built, the values it built it from (see resolved_config).
CONFIG_INPUTS = "_rlhf_config_inputs"


def resolved_config(*instances) -> dict[str, Any]:
    """All dataclass fields as one flat, YAML-safe mapping (what the run folder records as config.yaml).

    For dataclasses from parse_stage_args these are the values they were built from (defaults, YAML, command
    line), not what their __post_init__ made of them: transformers and TRL turn some into other types or fill
    in derived keys (an AcceleratorConfig object, `include_num_input_tokens_seen` false -> "no", GRPO's
    generation_batch_size beside steps_per_generation, which together are refused), so only the inputs load
    back as `--config`. Enums are written by value, dataclasses as mappings.
    """
    out: dict[str, Any] = {}
    for inst in instances:
        if inst is None or not dataclasses.is_dataclass(inst):
            continue
        given = vars(inst).get(CONFIG_INPUTS)
        values = given if given is not None else {f.name: getattr(inst, f.name) for f in dataclasses.fields(inst)}
        out.update({name: yaml_value(value) for name, value in values.items()})
    return out


def yaml_value(value: Any) -> Any:
    """A config value as YAML can write it and `--config` read it back."""
    if isinstance(value, enum.Enum):
        value = value.value  # TRL's str-Enums (schedulers, strategies) are not plain str for yaml.safe_dump
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): yaml_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [yaml_value(v) for v in value]
    return str(value)
