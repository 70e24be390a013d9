"""rlhf dpo on the tiny model: real DPOTrainer from an adapter folder, LoRA reference, held-out figures."""

import json
from pathlib import Path

import torch

from rlhf.cli import main as cli
from rlhf.models import load_causal_lm
from rlhf.runs import read_metrics


def write_preferences(path: Path, n: int = 12) -> Path:
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
             "chosen": [{"role": "assistant", "content": f"{2 * i}."}],
             "rejected": [{"role": "assistant", "content": f"I am not sure, maybe {i + 3}."}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_adapter(tiny_model: str, out: Path) -> str:
    """A LoRA adapter folder with non-zero weights, as `rlhf sft` would leave (real peft, no trainer)."""
    from peft import LoraConfig, get_peft_model

    from rlhf.models import load_tokenizer

    torch.manual_seed(0)
    peft_model = get_peft_model(load_causal_lm(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                                       init_lora_weights=False))
    peft_model.save_pretrained(out)
    load_tokenizer(tiny_model).save_pretrained(out)
    return str(out)


def test_dpo_from_adapter_trains_and_reports(tiny_model, tmp_path):
    sft = make_adapter(tiny_model, tmp_path / "sft")
    out = tmp_path / "dpo"
    code = cli(["dpo", "--model_name_or_path", sft, "--train_file", str(write_preferences(tmp_path / "p.jsonl")),
                "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "2",
                "--learning_rate", "5e-3", "--max_length", "64", "--test_fraction", "0.25", "--beta", "0.2"])
    assert code == 0
    logs = [m for m in read_metrics(out) if "loss" in m]
    assert len(logs) == 3 and all("rewards/margins" in m for m in logs)
    assert abs(logs[0]["loss"] - 0.6931) < 1e-3  # policy == reference at step 1: loss is log(2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["beta"] == 0.2 and summary["train_rows"] == 9 and summary["eval_rows"] == 3
    assert summary["first_loss"] == logs[0]["loss"] and summary["last_loss"] == logs[-1]["loss"]
    assert "eval_loss" in summary and "eval_rewards/accuracies" in summary
    # the new adapter was trained on the merged SFT model and saved folded with the SFT adapter under it:
    # one LoRA of rank 4 + 16 on the tiny model, loadable without the SFT folder
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(tiny_model).resolve()) and adapter["r"] == 20
    chain = json.loads((out / "adapter_chain.json").read_text())
    assert [f["adapter"] for f in chain["folded"]] == [str(Path(sft).resolve()), str(out.resolve())]
    start, trained = load_causal_lm(sft), load_causal_lm(str(out))
    a, b = start.state_dict(), trained.state_dict()
    assert sum(not torch.equal(a[k], b[k]) for k in a) > 0
    assert trained.generate(torch.tensor([[1, 2]]), max_new_tokens=2, do_sample=False).shape[1] == 4


def test_reference_forward_starts_from_the_policys_frozen_blocks(tmp_path):
    """SharedFrozenPrefix: with LoRA on blocks 2-3 of 4, the reference forward (adapter disabled) on the
    policy's batch skips blocks 0-1 and gives exactly the logits of a full reference forward."""
    from peft import LoraConfig, get_peft_model

    from rlhf.models import SharedFrozenPrefix, build_tiny_model, decoder_module

    tiny4 = build_tiny_model(tmp_path / "tiny4", num_layers=4)
    torch.manual_seed(0)
    model = get_peft_model(load_causal_lm(tiny4), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                             layers_to_transform=[2, 3], init_lora_weights=False))
    model.train()
    ids = torch.tensor([[1, 5, 9, 14, 20, 33, 2], [1, 7, 7, 30, 2, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    other = torch.tensor([[1, 6, 9, 14, 20, 33, 2], [1, 7, 7, 30, 2, 0, 0]])
    with torch.no_grad(), model.disable_adapter():
        want = model(input_ids=ids, attention_mask=mask).logits
        want_other = model(input_ids=other, attention_mask=mask).logits
    runs = []  # which blocks' attention ran
    for index, layer in enumerate(decoder_module(model).layers):
        layer.self_attn.register_forward_pre_hook(lambda *_, i=index: runs.append(i))

    shared = SharedFrozenPrefix.install(model)
    assert shared is not None and shared.first == 2
    policy = model(input_ids=ids, attention_mask=mask).logits  # the policy forward, with grad
    assert policy.requires_grad and not torch.equal(policy.detach(), want)  # the adapter changes the output
    runs.clear()
    with torch.no_grad(), model.disable_adapter():
        got = model(input_ids=ids, attention_mask=mask).logits
    assert runs == [2, 3] and shared.reused == 1  # blocks 0 and 1 did not run again
    assert torch.equal(got, want)
    # another batch, or the same batch twice: every block runs, the numbers are the plain ones
    model(input_ids=ids, attention_mask=mask)
    runs.clear()
    with torch.no_grad(), model.disable_adapter():
        got_other = model(input_ids=other, attention_mask=mask).logits
        again = model(input_ids=other, attention_mask=mask).logits
    assert runs == [0, 1, 2, 3] * 2 and shared.reused == 1
    assert torch.equal(got_other, want_other) and torch.equal(again, want_other)
    shared.remove()
    assert all("forward" not in vars(layer) for layer in decoder_module(model).layers)
    # LoRA on every block, or no PEFT at all: nothing to share
    every = get_peft_model(load_causal_lm(tiny4), LoraConfig(r=4, target_modules=["q_proj"]))
    assert SharedFrozenPrefix.install(every) is None and SharedFrozenPrefix.install(load_causal_lm(tiny4)) is None


def test_dpo_losses_equal_with_and_without_the_shared_reference_blocks(tmp_path, monkeypatch):
    from rlhf import models
    from rlhf.models import build_tiny_model

    tiny4 = build_tiny_model(tmp_path / "tiny4", num_layers=4)
    prefs = write_preferences(tmp_path / "p.jsonl")
    installed = []
    plain_install = models.SharedFrozenPrefix.install.__func__

    def spy(cls, model):
        shared = plain_install(cls, model)
        installed.append(shared)
        return shared

    def run(name: str) -> list[float]:
        out = tmp_path / name
        assert cli(["dpo", "--model_name_or_path", tiny4, "--train_file", str(prefs), "--output_dir", str(out),
                    "--max_steps", "3", "--per_device_train_batch_size", "2", "--learning_rate", "5e-3",
                    "--max_length", "64", "--lora_top_layers", "2", "--seed", "3"]) == 0
        return [m["loss"] for m in read_metrics(out) if "loss" in m]

    monkeypatch.setattr(models.SharedFrozenPrefix, "install", classmethod(spy))
    shared = run("shared")
    assert len(installed) == 1 and installed[0] is not None and installed[0].reused == 3  # one per step
    monkeypatch.setattr(models.SharedFrozenPrefix, "install", classmethod(lambda cls, model: None))
    plain = run("plain")
    assert len(shared) == 3 and shared == plain


def test_trl_trainers_take_the_raw_labels_with_every_column(tiny_model, labels_folder, tmp_path):
    """The labels' preference split as `labeler export` wrote it, every provenance column included (rank_gap among
    them), goes straight into TRL's DPOTrainer and trains a step; RewardTrainer ignores rank_gap (no margin)."""
    import datasets
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    from rlhf.models import load_tokenizer
    from rlhf.reward import build_reward_model

    pairs = datasets.load_from_disk(str(Path(labels_folder["path"]) / "preferences"))["train"]
    assert {"rank_gap", "agreement", "annotators", "source"} <= set(pairs.column_names)
    tokenizer = load_tokenizer(tiny_model)
    dpo = DPOTrainer(model=load_causal_lm(tiny_model), train_dataset=pairs, processing_class=tokenizer,
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                                    max_length=64, report_to="none", save_strategy="no", logging_steps=1, bf16=False))
    dpo.train()
    assert any("loss" in entry for entry in dpo.state.log_history)
    reward = RewardTrainer(model=build_reward_model(tiny_model, tokenizer.pad_token_id), train_dataset=pairs,
                           processing_class=tokenizer,
                           args=RewardConfig(output_dir=str(tmp_path / "reward"), max_steps=1, report_to="none",
                                             per_device_train_batch_size=2, save_strategy="no", bf16=False))
    assert "margin" not in reward.train_dataset.column_names
    reward.train()
