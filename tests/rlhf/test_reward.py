"""`rlhf reward`: RewardTrainer on a tiny model; held-out accuracy/margin computed by our own scoring code."""

import json
from pathlib import Path

import pytest
import torch

from rlhf.cli import main as cli
from rlhf.reward import format_conversation, pairwise_stats, tokenize_conversation

TOPICS = ["cats", "rain", "tea", "maps", "bees", "snow", "jazz", "oaks", "salt", "kites", "moths", "ferns"]


def write_preferences(path: Path, n: int = 12, conversational: bool = True) -> Path:
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        good, bad = f"A short, kind note about {topic}.", f"no {topic} no no no"
        if conversational:
            rows.append({"prompt": [{"role": "user", "content": f"Tell me about {topic}."}],
                         "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}]})
        else:
            rows.append({"prompt": f"Tell me about {topic}.", "chosen": good, "rejected": bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_reward(tiny_model, tmp_path, *extra):
    out = tmp_path / "reward"
    data = write_preferences(tmp_path / "prefs.jsonl")
    code = cli(["reward", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out),
                "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "5e-3",
                "--report_to", "none", "--save_strategy", "no", "--test_fraction", "0.25", *extra])
    assert code == 0
    return out


def test_pairwise_stats_hand_computed():
    # pairs: win (2 > 1), loss (0 < 1), tie (3 == 3, counts as wrong), win (0.5 > -0.5)
    stats = pairwise_stats([2.0, 0.0, 3.0, 0.5], [1.0, 1.0, 3.0, -0.5])
    assert stats["accuracy"] == pytest.approx(0.5)
    assert stats["margin"] == pytest.approx((1.0 - 1.0 + 0.0 + 1.0) / 4)


def test_format_conversation_matches_reward_trainer_tokens(tiny_model):
    from trl.data_utils import _tokenize
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompt = [{"role": "user", "content": "hi"}]
    # RewardTrainer tokenizes prompt + chosen (message lists) through the chat template
    expected = _tokenize(tok, prompt + [{"role": "assistant", "content": "hello"}])["input_ids"]
    assert tokenize_conversation(tok, format_conversation("hi", "hello")) == list(expected)
    assert tokenize_conversation(tok, format_conversation(prompt, "hello")) == list(expected)


def test_reward_trains_scores_and_reports_heldout_accuracy(tiny_model, tmp_path):
    from rlhf.reward import build_reward_model, load_reward_model, score_texts

    out = run_reward(tiny_model, tmp_path)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics), "training loss was not logged"
    assert any("heldout_accuracy" in m and "heldout_margin" in m for m in metrics)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["heldout_rows"] == 3  # 25 % of 12 rows
    assert summary["train_rows"] == 9
    acc = summary["heldout_accuracy"]
    assert 0.0 <= acc <= 1.0 and (acc * 3) == pytest.approx(round(acc * 3))  # a fraction over 3 held-out pairs
    assert isinstance(summary["heldout_margin"], float)

    # The output is a SEQ_CLS adapter whose base is the input model; it reloads and scores.
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["task_type"] == "SEQ_CLS" and adapter["base_model_name_or_path"] == tiny_model
    model, tok = load_reward_model(str(out))
    scores = score_texts(model, tok, ["Tell me about tea.", "Tell me about tea."],
                         ["A short, kind note about tea.", "no tea no no no"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)

    # trainable weights changed: the score head and a LoRA-merged projection differ from the start model
    start = build_reward_model(tiny_model, tok.pad_token_id, seed=42)
    assert not torch.allclose(start.score.weight, model.score.weight)
    q_start = start.model.layers[0].self_attn.q_proj.weight
    assert not torch.allclose(q_start, model.model.layers[0].self_attn.q_proj.weight)


def test_reward_bad_preferences_leave_no_run_folder(tiny_model, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a", "rejected": "b"}\n{"prompt": "y", "chosen": "a"}\n')
    out = tmp_path / "reward"
    assert cli(["reward", "--model_name_or_path", tiny_model, "--train_file", str(bad), "--output_dir", str(out)]) == 2
    assert not out.exists()


def test_heldout_accuracy_per_source(tiny_model, tmp_path):
    """Held-out pairs with the labeler export's `source` column: the summary gives each source's accuracy,
    and those agree with scoring the pairs of each source by hand."""
    from rlhf.reward import load_reward_model, score_texts

    heldout = tmp_path / "heldout.jsonl"
    rows = [json.loads(line) for line in write_preferences(tmp_path / "h.jsonl", n=6).read_text().splitlines()]
    rows = [dict(r, source="edited" if i % 3 == 0 else "ranked", annotators=["sim"]) for i, r in enumerate(rows)]
    heldout.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = run_reward(tiny_model, tmp_path, "--eval_file", str(heldout))
    summary = json.loads((out / "summary.json").read_text())
    by_source = summary["heldout_accuracy_by_source"]
    assert {k: v["pairs"] for k, v in by_source.items()} == {"edited": 2, "ranked": 4}
    model, tokenizer = load_reward_model(str(out))
    for src, figures in by_source.items():
        mine = [r for r in rows if r["source"] == src]
        chosen = score_texts(model, tokenizer, [r["prompt"] for r in mine], [r["chosen"] for r in mine])
        rejected = score_texts(model, tokenizer, [r["prompt"] for r in mine], [r["rejected"] for r in mine])
        assert figures["accuracy"] == pytest.approx(pairwise_stats(chosen, rejected)["accuracy"])
    assert summary["heldout_accuracy"] == pytest.approx(
        sum(v["accuracy"] * v["pairs"] for v in by_source.values()) / 6)
    # batches go in length order and come back in input order: one at a time gives the same scores
    texts = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    prompts = [r["prompt"] for r in rows] * 2
    assert score_texts(model, tokenizer, prompts, texts, batch_size=5) == pytest.approx(
        score_texts(model, tokenizer, prompts, texts, batch_size=1), abs=1e-4)
