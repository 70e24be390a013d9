"""rlhf.resources: a stage's peak memory is its own, memory is handed back, and stage times are remembered."""

import os
import sys
import time

import pytest

from rlhf import resources


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
def test_measure_reports_the_blocks_own_peak_and_gives_memory_back():
    import numpy as np

    big = np.ones(300 * 1024**2 // 8)  # 300 MB touched: the peak before the measured block
    del big
    resources.release_memory()
    record = {}
    with resources.measure(record):
        small = np.ones(40 * 1024**2 // 8)  # 40 MB inside the block
        del small
    # the earlier 300 MB peak is not the block's: its own peak is far below it
    assert record["seconds"] >= 0
    assert record["peak_rss_gb"] < resources.rss_bytes() / resources.GIB + 0.2
    with resources.measure(record):
        block = np.ones(400 * 1024**2 // 8)
        time.sleep(0.2)  # the sampler reads the resident set every 20 ms
        del block
    assert record["peak_rss_gb"] * resources.GIB >= resources.rss_bytes() + 300 * 1024**2
    assert record["rss_after_gb"] < record["peak_rss_gb"] - 0.25  # handed back, not kept in the process


def test_expected_seconds_are_the_median_of_the_last_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") is None
    resources.remember_seconds("sft:quickstart/sft@2cpu", 187.26)
    resources.remember_seconds("dpo:quickstart/dpo@2cpu", 215)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 187.3
    resources.remember_seconds("sft:quickstart/sft@2cpu", 400)  # one slow run with other settings
    resources.remember_seconds("sft:quickstart/sft@2cpu", 180)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 187.3  # the median of 187.3, 400, 180
    resources.remember_seconds("sft:quickstart/sft@2cpu", 190)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == (187.3 + 190) / 2
    for seconds in (10, 11, 12, 13, 14):  # only the last RECENT_RUNS count
        resources.remember_seconds("sft:quickstart/sft@2cpu", seconds)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 12
    assert resources.expected_seconds("dpo:quickstart/dpo@2cpu") == 215
    (tmp_path / "stage-times.json").write_text("not json")
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") is None  # a broken hint file is no error
    resources.remember_seconds("sft:quickstart/sft@2cpu", 100)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 100
    (tmp_path / "stage-times.json").write_text('{"sft:quickstart/sft@2cpu": 120.5, "x": "y"}')  # the older format
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 120.5
    resources.remember_seconds("sft:quickstart/sft@2cpu", 130.5)
    assert resources.expected_seconds("sft:quickstart/sft@2cpu") == 125.5


def test_usable_cpus_follow_affinity_and_omp_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = len(os.sched_getaffinity(0))
    assert resources.usable_cpus() == cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resources.usable_cpus() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", str(cpus + 8))  # more threads than cores: the cores count
    assert resources.usable_cpus() == cpus
    monkeypatch.setenv("OMP_NUM_THREADS", "abc")
    assert resources.usable_cpus() == cpus


def test_format_seconds():
    assert resources.format_seconds(45.4) == "45 s"
    assert resources.format_seconds(185) == "3 min 05 s"


def test_small_logprob_tiles_give_the_same_log_probs_and_gradients(monkeypatch):
    """TRL's chunked log-prob kernel on our CPU tiles computes what it computes on its own: values and gradients."""
    import torch
    import trl.kernels.chunked_logprob as kernel
    import trl.trainer.utils as trl_utils

    def run(tokens, vocab):
        monkeypatch.setattr(kernel, "TOKEN_CHUNK_SIZE", tokens)
        torch.manual_seed(0)
        hidden = torch.randn(300, 16, requires_grad=True)
        weight = torch.randn(5000, 16, requires_grad=True)
        targets = torch.randint(0, 5000, (300,))
        logps, entropy, *_ = kernel.ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, vocab, None, 1.0,
                                                                 ("entropy",))
        (logps.sum() + entropy.sum()).backward()
        return logps.detach(), entropy.detach(), hidden.grad, weight.grad

    monkeypatch.setattr(kernel, "TOKEN_CHUNK_SIZE", kernel.TOKEN_CHUNK_SIZE)
    monkeypatch.setattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE)
    assert resources.small_logprob_tiles(tokens=64, vocab=1024) is True
    assert (kernel.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE) == (64, 1024)
    small = run(64, 1024)  # 5 token tiles x 5 vocabulary tiles
    whole = run(4096, 32768)  # TRL's: one tile
    for a, b in zip(small, whole):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_short_backprop_keeps_lora_gradients_and_stops_below_the_trained_layers(tiny_model):
    """With activation checkpointing, transformers and TRL hook the input embeddings so that backward runs
    through every frozen layer; the callback removes those hooks and the LoRA gradients stay exactly the same."""
    from types import SimpleNamespace

    import torch
    from peft import LoraConfig, get_peft_model

    from rlhf.models import load_causal_lm, short_backprop_callback

    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = get_peft_model(load_causal_lm(tiny_model), LoraConfig(
            r=4, target_modules=["q_proj", "v_proj", "down_proj"], layers_to_transform=[1], init_lora_weights=False))
        model.train()
        if checkpointing:
            model.activation_checkpointing_enable()  # what Trainer.train() does: adds the input-grad hook
            model.enable_input_require_grads()       # what TRL's trainers add again with PEFT
            args = SimpleNamespace(activation_checkpointing=True, activation_checkpointing_kwargs=None)
            short_backprop_callback().on_train_begin(args, None, None, model=model)
        seen = []
        model.get_input_embeddings().register_forward_hook(lambda module, inputs, output: seen.append(output))
        ids = torch.tensor([[1, 5, 9, 14, 20, 33, 2]])
        model(input_ids=ids, labels=ids).loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return grads, seen[0].requires_grad

    plain, plain_flag = run(False)
    checkpointed, flag = run(True)
    assert not plain_flag and not flag  # backward never reaches the embeddings: it stops at layer 1's LoRA
    assert plain.keys() == checkpointed.keys() and len(plain) == 6  # A and B of three modules on layer 1
    for name, grad in plain.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grad, checkpointed[name], atol=1e-6), name
