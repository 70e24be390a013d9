"""ModelConfig's loading keys are honoured where the machine allows and refused, on one line naming the key,
where it does not: attn_implementation, trust_remote_code, model_revision, load_in_4bit / load_in_8bit."""

import json
import shutil

import pytest
import torch
from trl import ModelConfig, SFTConfig

from rlhf.cli import main as cli
from rlhf.config import model_load_kwargs, parse_stage_args
from rlhf.errors import RlhfError
from rlhf.models import load_causal_lm, load_tokenizer
from rlhf.sft import SftArguments, stage_defaults

SFT_TYPES = (SftArguments, SFTConfig, ModelConfig)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")


def parse(*argv):
    args, training_args, model_args, _ = parse_stage_args("sft", SFT_TYPES, list(argv), defaults=stage_defaults())
    return model_load_kwargs(model_args, training_args)


@no_cuda
@pytest.mark.parametrize("key", ["load_in_4bit", "load_in_8bit"])
def test_quantized_load_without_cuda_fails_on_one_line_naming_the_key(key, tiny_model, tmp_path, capsys):
    config = tmp_path / "sft.yaml"
    config.write_text(f"model_name_or_path: {tiny_model}\ntrain_file: data/smoke/sft.jsonl\n{key}: true\n")
    out = tmp_path / "out"
    assert cli(["sft", "--config", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"rlhf sft: error: {config}: key '{key}' needs a CUDA GPU (bitsandbytes quantization); this machine has none"
    assert not out.exists()
    # the same from the command line
    assert cli(["dpo", "--model_name_or_path", tiny_model, "--train_file", "x.jsonl", f"--{key}", "true"]) == 2
    assert f"command line: key '{key}' needs a CUDA GPU" in capsys.readouterr().err


def test_attn_implementation_reaches_the_loaded_model(tiny_model):
    for attn in ("eager", "sdpa"):
        kwargs = parse("--model_name_or_path", tiny_model, "--attn_implementation", attn)
        assert kwargs == {"attn_implementation": attn}
        assert load_causal_lm(tiny_model, **kwargs).config._attn_implementation == attn
    assert parse("--model_name_or_path", tiny_model) == {}  # unset: transformers' own choice


def test_unknown_or_unavailable_attention_is_refused(tiny_model):
    with pytest.raises(RlhfError, match=r"command line: key 'attn_implementation' must be one of .*eager.*got 'fast'"):
        parse("--model_name_or_path", tiny_model, "--attn_implementation", "fast")
    if not torch.cuda.is_available():
        with pytest.raises(RlhfError, match=r"key 'attn_implementation': flash_attention_2 needs a CUDA GPU"):
            parse("--model_name_or_path", tiny_model, "--attn_implementation", "flash_attention_2")


def test_model_revision_is_for_hub_ids_only(tiny_model):
    with pytest.raises(RlhfError, match=r"key 'model_revision' \('v2'\) selects a hub revision, but model_name_or_path .* is a local model"):
        parse("--model_name_or_path", tiny_model, "--model_revision", "v2")
    assert parse("--model_name_or_path", "org/name", "--model_revision", "v2") == {"revision": "v2"}
    assert parse("--model_name_or_path", tiny_model, "--model_revision", "main") == {}


def test_model_init_kwargs_are_refused_not_ignored(tiny_model, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"model_name_or_path: {tiny_model}\nmodel_init_kwargs:\n  dtype: bfloat16\n")
    with pytest.raises(RlhfError, match=rf"{config}: key 'model_init_kwargs' is not used"):
        parse("--config", str(config))


REMOTE_CONFIG = '''from transformers import LlamaConfig


class TinyRemoteConfig(LlamaConfig):
    model_type = "tiny-remote"
'''
REMOTE_MODEL = '''from transformers import LlamaForCausalLM

from .configuration_tiny_remote import TinyRemoteConfig


class TinyRemoteForCausalLM(LlamaForCausalLM):
    config_class = TinyRemoteConfig
'''


def test_trust_remote_code_loads_a_model_with_its_own_code(tiny_model, tmp_path):
    """A folder whose config names its own classes (auto_map) loads only with trust_remote_code true."""
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model, folder)
    (folder / "configuration_tiny_remote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_tiny_remote.py").write_text(REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tiny-remote", architectures=["TinyRemoteForCausalLM"], auto_map={
        "AutoConfig": "configuration_tiny_remote.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteForCausalLM",
    })
    (folder / "config.json").write_text(json.dumps(config))

    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(folder))  # transformers refuses to run the folder's code unasked
    kwargs = parse("--model_name_or_path", str(folder), "--trust_remote_code", "true")
    assert kwargs == {"trust_remote_code": True}
    model = load_causal_lm(str(folder), **kwargs)
    assert type(model).__name__ == "TinyRemoteForCausalLM"
    assert load_tokenizer(str(folder), **kwargs).pad_token is not None
