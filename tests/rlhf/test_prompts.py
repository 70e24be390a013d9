"""A team's prompt file for the loop (rlhf.prompts): formats, optional fields, the hash split, duplicates,
and errors that name the file and line."""

import json

import pytest

from rlhf.errors import RlhfError
from rlhf.prompts import hashed_side, load_loop_prompts, prompt_key


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_plain_prompts_split_by_hash_deterministically(tmp_path):
    rows = [{"prompt": f"Tell me about topic number {i}."} for i in range(200)]
    p = load_loop_prompts(write_jsonl(tmp_path / "p.jsonl", rows), heldout_fraction=0.2)
    assert len(p.train) + len(p.heldout) == 200 and p.hashed_split == 200 and p.duplicates == 0
    assert 20 <= len(p.heldout) <= 60  # about a fifth
    for row in p.heldout:
        assert int(prompt_key(row["prompt"])[:8], 16) / 2**32 < 0.2  # the rule, by hand
    again = load_loop_prompts(tmp_path / "p.jsonl", heldout_fraction=0.2)
    assert [r["prompt"] for r in again.heldout] == [r["prompt"] for r in p.heldout]
    assert all(r["id"].startswith("p-") and r["split"] in ("train", "heldout") for r in p.train)
    assert not p.constrained and p.describe()["split_by_hash"] == 200


def test_hashed_side_rule():
    key = "40000000" + "0" * 56  # 0x40000000 / 2^32 = 0.25
    assert hashed_side(key, 0.25) == "train" and hashed_side(key, 0.26) == "heldout"


def test_explicit_split_ids_chat_prompts_and_duplicates(tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    rows = [
        {"prompt": "a", "split": "train", "id": 7},
        {"prompt": "b", "split": "heldout"},
        {"prompt": chat, "split": "train"},
        {"prompt": "a", "split": "heldout"},  # a duplicate of row 1: dropped, counted
        {"prompt": chat},  # a duplicate too
    ]
    p = load_loop_prompts(write_jsonl(tmp_path / "p.jsonl", rows))
    assert [r["prompt"] for r in p.train] == ["a", chat] and [r["prompt"] for r in p.heldout] == ["b"]
    assert p.train[0]["id"] == "7" and p.duplicates == 2 and p.hashed_split == 0


def test_parquet_and_datasets_folder(tmp_path):
    import datasets

    rows = [{"prompt": f"q{i}", "split": "heldout" if i < 3 else "train"} for i in range(10)]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "folder"))
    for source in (tmp_path / "p.parquet", tmp_path / "folder"):
        p = load_loop_prompts(source)
        assert len(p.heldout) == 3 and len(p.train) == 7


@pytest.mark.parametrize("bad, message", [
    ({"prompt": ""}, "field 'prompt' is empty"),
    ({"prompt": 5}, "field 'prompt' must be a string or a list of chat messages"),
    ({"text": "no prompt"}, "got nothing"),
    ({"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "must end with a 'user'"),
    ({"prompt": "q", "split": "test"}, "field 'split' must be one of"),
    ({"prompt": "q", "constraints": [{"type": "no_such_thing"}]}, "field 'constraints'"),
    ({"prompt": "q", "id": [1]}, "field 'id'"),
])
def test_a_bad_row_names_file_line_and_field(tmp_path, bad, message):
    rows = [{"prompt": f"fine {i}"} for i in range(5)]
    rows.insert(3, bad)
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(RlhfError, match=message) as err:
        load_loop_prompts(path)
    assert f"{path}:4" in str(err.value)


def test_not_json_and_no_heldout(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(RlhfError, match=rf"{path}:2: invalid JSON"):
        load_loop_prompts(path)
    write_jsonl(path, [{"prompt": "a", "split": "train"}])
    with pytest.raises(RlhfError, match="no held-out prompts"):
        load_loop_prompts(path)
    with pytest.raises(RlhfError, match="heldout_fraction"):
        load_loop_prompts(path, heldout_fraction=1.0)


def test_bundled_set_loads_with_its_own_split():
    from rlhf.prompt_set import load_prompt_set

    p = load_loop_prompts(None)
    assert p.constrained and p.hashed_split == 0 and p.duplicates == 0
    assert [r["id"] for r in p.heldout] == [r["id"] for r in load_prompt_set("heldout")]
