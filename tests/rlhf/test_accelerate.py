"""The accelerate configs: every one loads with accelerate's own loader and launcher checks, and the CPU
DDP config really trains on two processes (gloo) through `accelerate launch`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf.models import load_causal_lm
from rlhf.runs import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE_CONFIGS = sorted((ROOT / "rlhf" / "recipes" / "accelerate").glob("*.yaml"))


def launcher_env(path: Path) -> tuple:
    """What `accelerate launch --config_file path` would hand to its processes, without starting them.

    Runs accelerate's own config loader and launch-time validation, then the environment preparation
    of the launcher it picks (torchrun for DDP/FSDP, DeepSpeed's, or the single-process one).
    """
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "rlhf.cli", "sft"])
    args, defaults, precision_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        # launch_command sets this before calling the DeepSpeed launcher
        fields = list(defaults.deepspeed_config) + (["mixed_precision"] if precision_from_config else [])
        args.deepspeed_fields_from_accelerate_config = ",".join(fields)
        return "deepspeed", args, prepare_deepspeed_cmd_env(args)[1]
    if args.use_fsdp or args.multi_gpu:
        return "torchrun", args, prepare_multi_gpu_env(args)
    return "simple", args, prepare_simple_launcher_cmd_env(args)[1]


def test_there_are_accelerate_configs():
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"cpu_ddp", "multi_gpu", "fsdp", "zero2", "zero3"}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, patch_environment

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    launcher, args, env = launcher_env(path)
    if config.distributed_type == DistributedType.DEEPSPEED:
        assert launcher == "deepspeed"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(config.deepspeed_config["zero_stage"])
    else:
        # More than one process needs torchrun: the single-process launcher would start just one.
        assert launcher == "torchrun" and int(args.nproc_per_node) == config.num_processes >= 2
    if config.distributed_type == DistributedType.FSDP:
        with patch_environment(**env):
            plugin = FullyShardedDataParallelPlugin()  # validates the fsdp_* fields against each other
        assert plugin.fsdp_version == config.fsdp_config["fsdp_version"]


def test_cpu_ddp_trains_on_two_processes(tiny_model, tmp_path):
    out = tmp_path / "sft"
    train_file = ROOT / "rlhf" / "recipes" / "data" / "smoke" / "sft.jsonl"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "rlhf/recipes/accelerate/cpu_ddp.yaml"),
        "-m", "rlhf.cli", "sft", "--config", "smoke",
        "--model_name_or_path", tiny_model, "--output_dir", str(out), "--max_steps", "2",
    ]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # The distributed sampler splits each step's rows between the ranks: with 2 processes a step covers
    # 2 x per_device_train_batch_size rows, so the epoch advances twice as fast as with one process.
    rows = sum(1 for line in train_file.read_text().splitlines() if line.strip())
    per_device = 2  # the smoke recipe's sft.yaml
    steps = [m for m in read_metrics(out) if "loss" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert steps[0]["epoch"] == pytest.approx(2 * per_device / rows)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["log_history"][0]["epoch"] == pytest.approx(2 * per_device / rows)

    # The saved LoRA adapter reloads onto its base and was trained (lora_B starts at zero).
    from safetensors.torch import load_file

    adapter = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in name and tensor.abs().sum() > 0 for name, tensor in adapter.items())
    merged = load_causal_lm(str(out))
    assert merged.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False).shape[1] == 5
