"""rlhf generate on the tiny model: the tasks JSONL contract, meta copying, batching and the CLI."""

import json

import pytest

from rlhf.cli import main as cli
from rlhf.generate import build_messages, check_few_shot, generate_responses
from rlhf.errors import RlhfError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_build_messages_orders_system_few_shot_prompt():
    shots = [{"prompt": "Hi?", "response": "Hello."}]
    assert build_messages("Q", "Be brief.", shots) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Q"},
    ]
    own = [{"role": "system", "content": "Mine."}, {"role": "user", "content": "Q"}]
    assert build_messages(own, "Be brief.") == own  # a prompt's own system message wins


def test_check_few_shot_rejects_wrong_shape():
    assert check_few_shot(None, "x.yaml") == []
    with pytest.raises(RlhfError, match="x.yaml: key 'few_shot'"):
        check_few_shot([{"prompt": "only a prompt"}], "x.yaml")


def test_generate_responses_batches_and_is_seeded(tiny_model):
    from rlhf.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    side = tokenizer.padding_side
    prompts = ["a", "a much longer prompt that forces left padding in the batch", [{"role": "user", "content": "b"}]]
    first = generate_responses(model, tokenizer, prompts, k=2, max_new_tokens=5, batch_size=2, seed=1, progress=False)
    again = generate_responses(model, tokenizer, prompts, k=2, max_new_tokens=5, batch_size=2, seed=1, progress=False)
    assert [len(r) for r in first] == [2, 2, 2]
    assert first == again
    assert tokenizer.padding_side == side  # left padding is set only for the call
    # greedy decoding does not depend on the batch: the same prompt alone gives the same text as in a batch
    greedy_batch = generate_responses(model, tokenizer, prompts, k=1, max_new_tokens=5, temperature=0, batch_size=3,
                                      progress=False)
    greedy_alone = generate_responses(model, tokenizer, prompts[:1], k=1, max_new_tokens=5, temperature=0, progress=False)
    assert greedy_batch[0] == greedy_alone[0]


def test_sort_by_length_keeps_the_input_order(tiny_model):
    from rlhf.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(tiny_model), load_tokenizer(tiny_model)
    prompts = ["a much longer prompt than the others, with many words in it", "hi", "a medium prompt here", "ok then"]
    shortest_first = [1, 3, 2, 0]  # the prompts' order by token length
    # Sorted inside: the same batches, in the same order, as the prompts sorted by hand (so the same draws);
    # each answer must come back at its prompt's place.
    inside = generate_responses(model, tokenizer, prompts, k=2, max_new_tokens=8, temperature=1.5, batch_size=2,
                                seed=3, progress=False, sort_by_length=True)
    by_hand = generate_responses(model, tokenizer, [prompts[i] for i in shortest_first], k=2, max_new_tokens=8,
                                 temperature=1.5, batch_size=2, seed=3, progress=False)
    assert len({tuple(r) for r in by_hand}) == 4  # four different answer pairs, so a misplaced one would show
    assert inside == [by_hand[shortest_first.index(i)] for i in range(4)]
    # one batch holds every prompt: nothing to sort, the draws stay those of the input order
    assert generate_responses(model, tokenizer, prompts, k=1, max_new_tokens=4, batch_size=4, seed=3, progress=False,
                              sort_by_length=True) == generate_responses(model, tokenizer, prompts, k=1,
                                                                         max_new_tokens=4, batch_size=4, seed=3,
                                                                         progress=False)


def test_generate_cli_writes_tasks(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "Say hi.", "id": "p1", "constraints": {"max_words": 3}},
        {"prompt": [{"role": "user", "content": "Count to three."}], "id": "p2"},
        {"prompt": "Name a colour.", "id": "p3"},
    ])
    config = tmp_path / "generate.yaml"
    config.write_text(
        f"model_name_or_path: {tiny_model}\nprompts_file: {prompts}\noutput_dir: {tmp_path / 'run'}\n"
        "k: 3\nmax_new_tokens: 6\nbatch_size: 2\ntemperature: 0.9\nseed: 7\nsystem_prompt: Be brief.\n"
        "few_shot:\n  - prompt: Hello?\n    response: Hi!\n"
    )
    assert cli(["generate", "--config", str(config), "--top_p", "0.8"]) == 0
    lines = (tmp_path / "run" / "tasks.jsonl").read_text().splitlines()
    tasks = [json.loads(line) for line in lines]
    assert [t["meta"]["id"] for t in tasks] == ["p1", "p2", "p3"]
    assert tasks[0]["meta"]["constraints"] == {"max_words": 3}
    assert tasks[1]["prompt"] == [{"role": "user", "content": "Count to three."}]
    assert tasks[0]["meta"]["system_prompt"] == "Be brief."
    assert tasks[0]["meta"]["few_shot"] == [{"prompt": "Hello?", "response": "Hi!"}]
    for task in tasks:
        assert len(task["responses"]) == 3
        for r in task["responses"]:
            assert isinstance(r["text"], str) and r["model"] == tiny_model
            assert r["meta"]["seed"] == 7 and r["meta"]["temperature"] == 0.9 and r["meta"]["top_p"] == 0.8
            assert r["meta"]["max_new_tokens"] == 6 and r["meta"]["num_return_sequences"] == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["prompts"] == 3 and summary["responses"] == 9 and summary["seconds"] > 0
    assert summary["tokens_per_second"] > 0
    from rlhf.models import resolve_dtype

    assert summary["dtype"] == resolve_dtype("auto") == tasks[0]["responses"][0]["meta"]["dtype"]
    assert not list((tmp_path / "run").glob(".*.tmp"))  # written then renamed


def test_generate_output_file_option_and_bad_prompts(tiny_model, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    target = tmp_path / "elsewhere" / "tasks.jsonl"
    assert cli(["generate", "--model_name_or_path", tiny_model, "--prompts_file", str(prompts), "--k", "1",
                "--max_new_tokens", "2", "--output_dir", str(tmp_path / "run"), "--output_file", str(target)]) == 0
    assert len(target.read_text().splitlines()) == 1

    capsys.readouterr()  # drop the progress bars of the good run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"id": 2}\n')
    code = cli(["generate", "--model_name_or_path", tiny_model, "--prompts_file", str(bad),
                "--output_dir", str(tmp_path / "bad_run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{bad}:2" in err and "prompt" in err and "\n" not in err
    assert not (tmp_path / "bad_run").exists()


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.9, 0.95, 50), (1.0, 0.5, 50), (0.7, 1.0, 5), (1.3, 0.9, 0)])
def test_top_candidates_sampler_has_transformers_distribution(temperature, top_p, top_k):
    """The tokens it can draw and their chances are exactly those of transformers' temperature, top-k, top-p warpers."""
    import torch
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    from rlhf.generate import TopCandidatesSampler

    torch.manual_seed(0)
    scores = torch.randn(6, 500) * 3
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)] + ([TopKLogitsWarper(top_k)] if top_k else [])
                                  + [TopPLogitsWarper(top_p)])
    expected = warpers(None, scores.clone()).softmax(dim=-1)
    sampler = TopCandidatesSampler(temperature, top_p, top_k)
    indices, probs = sampler.candidates(scores)
    ours = torch.zeros_like(scores).scatter_(1, indices, probs)
    assert torch.allclose(ours, expected, atol=1e-6)
    assert ((expected > 0).sum(dim=-1) < scores.shape[1]).all() or top_p == 1.0  # something was cut
    # a draw is one of the candidates, and greedy decoding takes it: the only finite score in its row
    out = sampler(None, scores)
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1] * 6
    assert (expected.gather(1, out.argmax(dim=-1, keepdim=True)) > 0).all()


def test_sampled_frequencies_follow_the_distribution():
    import torch

    from rlhf.generate import TopCandidatesSampler

    torch.manual_seed(1)
    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    drawn = TopCandidatesSampler(1.0, 0.9, 50)(None, scores).argmax(dim=-1)
    share = torch.bincount(drawn, minlength=4).float() / len(drawn)
    # top_p 0.9 keeps 0.5, 0.3 and 0.15 (the tokens above 0.05 hold 0.95 >= 0.9), renormalised over 0.95
    assert share[3] == 0
    for i, p in enumerate([0.5, 0.3, 0.15]):
        assert abs(share[i] - p / 0.95) < 0.03


def test_dtype_setting(monkeypatch):
    from rlhf import models

    monkeypatch.setattr(models, "native_bf16", lambda: True)
    assert models.resolve_dtype("auto") == "bfloat16"
    monkeypatch.setattr(models, "native_bf16", lambda: False)
    assert models.resolve_dtype("auto") == "float32" and models.resolve_dtype("bfloat16") == "bfloat16"
    with pytest.raises(RlhfError, match="dtype: must be one of auto, float32, bfloat16, float16, got 'bf16'"):
        models.resolve_dtype("bf16")
