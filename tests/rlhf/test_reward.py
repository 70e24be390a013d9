"""`rlhf reward`: RewardTrainer on a tiny model; held-out accuracy/margin computed by our own scoring code."""

import json
import math
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


def record_reward_trainers(monkeypatch) -> list:
    """Every RewardTrainer `rlhf reward` builds, recording the margins its training loss sees per batch."""
    import trl

    trainers = []

    class Recording(trl.RewardTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.margins_seen = []
            trainers.append(self)

        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.model.training:
                self.margins_seen.append(inputs["margin"].tolist() if "margin" in inputs else None)
            return super().compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(trl, "RewardTrainer", Recording)
    return trainers


def write_ranked_preferences(path: Path, gaps: list) -> Path:
    rows = [json.loads(line) for line in write_preferences(path, n=len(gaps)).read_text().splitlines()]
    path.write_text("".join(json.dumps(dict(r, rank_gap=g)) + "\n" for r, g in zip(rows, gaps)))
    return path


GAPS = [1, 2, 3, 1.5, 1, 4, 2, 1]  # eight pairs: under the 10 rows a held-out split needs, so all train


@pytest.mark.parametrize("coefficient, margins", [
    ("0.5", [0.0, 0.5, 1.0, 0.25, 0.0, 1.5, 0.5, 0.0]),  # 0.5 * (rank_gap - 1)
    ("0", None),                                         # off: no margin column, TRL's plain loss
])
def test_margin_from_rank_gap_reaches_the_loss(tiny_model, tmp_path, monkeypatch, coefficient, margins):
    trainers = record_reward_trainers(monkeypatch)
    data = write_ranked_preferences(tmp_path / "ranked.jsonl", GAPS)
    out = tmp_path / "reward"
    code = cli(["reward", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out),
                "--max_steps", "2", "--per_device_train_batch_size", "4", "--report_to", "none",
                "--save_strategy", "no", "--margin_from_rank_gap", coefficient])
    assert code == 0
    (trainer,) = trainers
    seen = [m for batch in trainer.margins_seen for m in (batch or [])]
    if margins is None:
        assert "margin" not in trainer.train_dataset.column_names and trainer.margins_seen == [None, None]
    else:
        assert trainer.train_dataset["margin"] == pytest.approx(margins)  # the file's order
        assert sorted(seen) == pytest.approx(sorted(margins))  # two shuffled batches of 4: every pair once
    assert json.loads((out / "summary.json").read_text())["margin_from_rank_gap"] == float(coefficient)


def test_margin_raises_the_loss_of_a_pair_ranked_far_apart(tiny_model, tmp_path, monkeypatch):
    """The same model and batch: the loss with margins is TRL's -log sigmoid(r_c - r_r - margin), above the plain one."""
    trainers = record_reward_trainers(monkeypatch)
    data = write_ranked_preferences(tmp_path / "ranked.jsonl", [4] * 8)
    for coefficient in ("0", "2"):
        assert cli(["reward", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir",
                    str(tmp_path / coefficient), "--max_steps", "1", "--per_device_train_batch_size", "8",
                    "--learning_rate", "0", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1",
                    "--margin_from_rank_gap", coefficient]) == 0
    plain, margin = (json.loads((tmp_path / c / "summary.json").read_text())["train_loss"] for c in ("0", "2"))
    # the untrained score head gives near-equal rewards (r_c - r_r ~ 0): the plain loss is ~log 2, and with every
    # margin 2 * (4 - 1) = 6 it is ~-log sigmoid(-6) = 6.0025
    assert plain == pytest.approx(math.log(2), abs=0.05)
    assert margin == pytest.approx(-math.log(1 / (1 + math.exp(6))), abs=0.05)
    assert trainers[1].margins_seen == [[6.0] * 8]


@pytest.mark.parametrize("value, rows, message", [
    ("-0.5", None, "key 'margin_from_rank_gap' must be a number of at least 0 (0 = off), got -0.5"),
    ("0.5", [{}] * 8, "margin_from_rank_gap 0.5 needs a 'rank_gap' column"),
    ("0.5", [{"rank_gap": 2}] * 3 + [{"rank_gap": 0}] * 5, "row 3: field 'rank_gap' must be a number of at least 1"),
])
def test_margin_from_rank_gap_refusals_name_the_field(tiny_model, tmp_path, capsys, value, rows, message):
    data = write_preferences(tmp_path / "prefs.jsonl", n=8)
    if rows is not None:
        lines = [json.loads(line) for line in data.read_text().splitlines()]
        data.write_text("".join(json.dumps(line | extra) + "\n" for line, extra in zip(lines, rows)))
    out = tmp_path / "reward"
    assert cli(["reward", "--model_name_or_path", tiny_model, "--train_file", str(data), "--output_dir", str(out),
                "--margin_from_rank_gap", value]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
