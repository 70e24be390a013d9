"""Run folders that open anywhere: folded adapter chains, the ecosystem's own loaders after a move."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from rlhf.models import fold_adapter_chain, load_causal_lm


def save_lora(model, out: Path, seed: int, **lora) -> str:
    """A LoRA with random (non-zero) weights on `model`, saved as a stage would (real peft, no trainer)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    get_peft_model(model, LoraConfig(init_lora_weights=False, **lora)).save_pretrained(out)
    return str(out)


def test_fold_adapter_chain_equals_the_merged_chain(tiny_model, tmp_path, monkeypatch):
    from peft import AutoPeftModelForCausalLM

    # sft: q/v on every layer, rslora scaling; dpo on the merged sft: k/v/o on the top layer only
    sft = save_lora(load_causal_lm(tiny_model), tmp_path / "sft", 0, r=4, lora_alpha=8, use_rslora=True,
                    target_modules=["q_proj", "v_proj"])
    dpo = save_lora(load_causal_lm(sft), tmp_path / "dpo", 1, r=2, lora_alpha=6,
                    target_modules=["k_proj", "v_proj", "o_proj"], layers_to_transform=[1])
    assert json.loads((Path(dpo) / "adapter_config.json").read_text())["base_model_name_or_path"] == sft
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        expected = load_causal_lm(dpo)(ids).logits  # base + sft merged, then + dpo merged

    assert fold_adapter_chain(dpo) == str(Path(tiny_model).resolve())
    config = json.loads((Path(dpo) / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 6 and not config["use_rslora"]
    assert config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"] and config["layers_to_transform"] is None
    shutil.rmtree(sft)  # the folded adapter no longer needs the sft folder
    monkeypatch.chdir(tmp_path)
    with torch.no_grad():
        folded = AutoPeftModelForCausalLM.from_pretrained(dpo)(ids).logits
    assert torch.allclose(folded, expected, atol=1e-5)
    assert fold_adapter_chain(dpo) == str(Path(tiny_model).resolve())  # a second call changes nothing
    with torch.no_grad():
        assert torch.allclose(AutoPeftModelForCausalLM.from_pretrained(dpo)(ids).logits, expected, atol=1e-5)



def test_fold_reward_adapter_on_sft_adapter_scores_the_same(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model

    from rlhf.models import load_tokenizer
    from rlhf.reward import build_reward_model, load_reward_model, score_texts

    tokenizer = load_tokenizer(tiny_model)
    sft = save_lora(load_causal_lm(tiny_model), tmp_path / "sft", 0, r=4, target_modules=["q_proj", "v_proj"])
    tokenizer.save_pretrained(sft)
    reward = tmp_path / "reward"  # a SEQ_CLS LoRA with its score head, on the merged SFT model, as `rlhf reward` saves
    torch.manual_seed(1)
    get_peft_model(build_reward_model(sft, tokenizer.pad_token_id),
                   LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["q_proj", "k_proj"], init_lora_weights=False)
                   ).save_pretrained(reward)
    tokenizer.save_pretrained(reward)
    prompts, answers = ["hi", "hi"], ["hello there", "no"]
    expected = score_texts(*load_reward_model(str(reward)), prompts, answers)
    fold_adapter_chain(reward)
    shutil.rmtree(sft)
    assert json.loads((reward / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    assert score_texts(*load_reward_model(str(reward)), prompts, answers) == pytest.approx(expected, abs=1e-5)

def test_moved_loop_run_loads_with_the_ecosystem_loaders(tiny_model, smoke_loop_run, tmp_path, monkeypatch, request):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.cli import main as rlhf_main
    from rlhf.reward import load_reward_model, score_texts

    # the smoke loop's run (two rounds; this test reads round 1, whose policy's base is the tiny model outside
    # the run), moved: copied elsewhere while the original is out of the way, so no recorded path reaches it
    first = smoke_loop_run
    moved = tmp_path / "elsewhere" / "loop"
    shutil.copytree(first, moved)
    hidden = first.with_name("loop-hidden")
    first.rename(hidden)
    request.addfinalizer(lambda: hidden.rename(first))  # back in place for any later reader of the fixture
    work = tmp_path / "unrelated"
    work.mkdir()
    monkeypatch.chdir(work)  # neither the run's old nor its new parent: relative bases would not resolve
    stages = moved / "round-1"

    tokenizer = AutoTokenizer.from_pretrained(stages / "sft")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    for stage in ("sft", "dpo"):
        policy = AutoPeftModelForCausalLM.from_pretrained(stages / stage)
        new = policy.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0, ids["input_ids"].shape[1]:]
        assert len(new) == 4
    # the moved DPO adapter is the policy round 1 exported (merged before the move)
    merged = AutoPeftModelForCausalLM.from_pretrained(stages / "dpo").merge_and_unload().state_dict()
    exported = AutoModelForCausalLM.from_pretrained(stages / "export").state_dict()
    assert exported.keys() == merged.keys()
    assert all(torch.allclose(v, merged[k], atol=1e-5) for k, v in exported.items())

    # the reward model, exported from the moved run, opens as a plain sequence classifier and scores
    assert rlhf_main(["export", "--model_name_or_path", str(stages / "dpo"), "--reward_model_path", str(stages / "reward"),
                      "--output_dir", str(moved / "export-2"), "--max_new_tokens", "2"]) == 0
    reward = AutoModelForSequenceClassification.from_pretrained(moved / "export-2" / "reward")
    assert reward.config.num_labels == 1 and not (moved / "export-2" / "reward" / "adapter_config.json").exists()
    reward_tokenizer = AutoTokenizer.from_pretrained(moved / "export-2" / "reward")
    prompts, answers = ["Name a colour."] * 2, ["Blue.", "I would rather not say anything at all about it."]
    plain = score_texts(reward, reward_tokenizer, prompts, answers)
    ours = score_texts(*load_reward_model(str(stages / "reward")), prompts, answers)
    assert plain == pytest.approx(ours, abs=1e-4) and plain[0] != plain[1]
