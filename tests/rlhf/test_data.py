"""The contract from labels to trainers: the labeler's typed datasets load by their schema, keep only the columns a
stage needs, refuse a wrong schema in one line, and carry their provenance (labels_id, labels_hash) as data."""

import json
import shutil
from pathlib import Path

import datasets
import pytest

from tests.rlhf.conftest import write_labels
from rlhf.data import labels_provenance, load_preferences, load_sft
from rlhf.errors import RlhfError

MESSAGES = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})


def save(tmp_path: Path, name: str, rows: list[dict], features: dict | None = None) -> Path:
    folder = tmp_path / name
    datasets.Dataset.from_list(rows, features=datasets.Features(features) if features else None).save_to_disk(str(folder))
    return folder


def pair(i: int) -> dict:
    return {"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": f"a{i}"}],
            "rejected": [{"role": "assistant", "content": "no"}]}


PAIR_FEATURES = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES}


def test_every_layout_of_the_labels_loads_the_same_rows_and_provenance(labels_folder):
    folder = Path(labels_folder["path"])
    expected = {"id": labels_folder["id"], "content_hash": labels_folder["content_hash"]}
    layouts = {  # the DatasetDict, its split folder, the split's Parquet file, the Parquet folder with its card
        "dict": (folder / "preferences", "train"),
        "split folder": (folder / "preferences" / "train", "train"),
        "parquet file": (folder / "data" / "preferences" / "train-00000-of-00001.parquet", "train"),
        "labels folder": (folder, "train"),
    }
    reference = None
    for name, (path, split) in layouts.items():
        ds = load_preferences(path, split=split)
        assert ds.column_names == ["prompt", "chosen", "rejected"], name  # provenance columns are not trained on
        assert ds.features["chosen"] == MESSAGES, name
        rows = sorted(map(json.dumps, ds))
        reference = reference or rows
        assert rows == reference and len(rows) == labels_folder["counts"]["pairs"]["train"], name
        [labels] = labels_provenance(path, "preferences", split)
        assert {k: labels[k] for k in expected} == expected and labels["rows"] == len(rows), name
    # the test split by name, from the DatasetDict and from the labels folder; the SFT rows by the card's sft config
    assert len(load_preferences(folder / "preferences", split="test")) == labels_folder["counts"]["pairs"]["test"]
    assert len(load_preferences(folder, split="test")) == labels_folder["counts"]["pairs"]["test"]
    sft = load_sft(folder)
    assert sft.column_names == ["prompt", "completion"] and len(sft) == labels_folder["counts"]["sft"]["train"]
    [labels] = labels_provenance(folder / "sft" / "train", "sft")
    assert labels["rows_by_source"] == {"top_ranked": labels["rows"]}  # every fourth task's edit went to test here
    with pytest.raises(RlhfError, match=rf"{folder / 'preferences'}: no 'validation' split \(has train, test\)"):
        load_preferences(folder / "preferences", split="validation")


def test_a_copied_split_keeps_its_provenance(labels_folder, tmp_path):
    copy = tmp_path / "elsewhere" / "pairs"
    shutil.copytree(Path(labels_folder["path"]) / "preferences" / "test", copy)
    assert not any((p / "export.json").exists() for p in copy.parents)
    [labels] = labels_provenance(copy, "preferences")
    assert (labels["id"], labels["content_hash"]) == (labels_folder["id"], labels_folder["content_hash"])
    assert sum(labels["rows_by_source"].values()) == labels["rows"] == labels_folder["counts"]["pairs"]["test"]


def test_a_wrong_schema_is_refused_in_one_line_naming_folder_and_column(tmp_path):
    ints = save(tmp_path, "ints", [{"prompt": "q", "chosen": 1, "rejected": 2}])
    with pytest.raises(RlhfError, match=rf"^{ints}: column 'chosen' has type Value\('int64'\); expected a string or a list"):
        load_preferences(ints)
    no_rejected = save(tmp_path, "no_rejected", [{"prompt": "q", "chosen": "a"}])
    with pytest.raises(RlhfError, match=rf"^{no_rejected}: no column 'rejected' \(has prompt, chosen\)$"):
        load_preferences(no_rejected)
    mixed = save(tmp_path, "mixed", [{"prompt": "q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}])
    with pytest.raises(RlhfError, match=rf"^{mixed}: columns mix plain strings and message lists \(prompt: string, chosen: messages, rejected: string\)$"):
        load_preferences(mixed)
    wrong_keys = save(tmp_path, "wrong_keys", [{"messages": [{"speaker": "user", "text": "hi"}]}])
    with pytest.raises(RlhfError, match=rf"^{wrong_keys}: column 'messages' has type"):
        load_sft(wrong_keys)


@pytest.mark.parametrize(("bad", "message"), [
    ({"chosen": []}, "row 2: field 'chosen' must be a non-empty list of messages"),
    ({"rejected": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "more?"}]},
     "row 2: field 'rejected' must end with a 'assistant' message"),
    ({"chosen": [{"role": "robot", "content": "x"}]}, r"row 2: field 'chosen\[0\]' must be \{\"role\": one of"),
    ({"chosen": [{"role": "assistant", "content": None}]}, r"row 2: field 'chosen\[0\]' must be"),
    ({"prompt": None}, "row 2: missing field 'prompt'"),
])
def test_a_bad_value_names_its_row_and_field(tmp_path, bad, message):
    rows = [pair(0), pair(1), pair(2) | bad, pair(3) | bad]
    folder = save(tmp_path, "bad", rows, PAIR_FEATURES)
    with pytest.raises(RlhfError, match=rf"^{folder} {message}"):
        load_preferences(folder)


def test_string_columns_are_checked_too(tmp_path):
    folder = save(tmp_path, "strings", [{"prompt": "q", "completion": "a"}, {"prompt": "q", "completion": "  "}])
    with pytest.raises(RlhfError, match=rf"^{folder} row 1: field 'completion' is empty$"):
        load_sft(folder)
    text = save(tmp_path, "text", [{"text": "hello world", "id": 3}])
    assert load_sft(text).column_names == ["text"]


def test_jsonl_and_parquet_of_a_team_still_load_with_line_numbers(tmp_path):
    good = {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}
    jsonl = tmp_path / "prefs.jsonl"
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps({"prompt": "Hi", "chosen": "Yes"}) + "\n")
    with pytest.raises(RlhfError, match=rf"^{jsonl}:2: missing field 'rejected'$"):
        load_preferences(jsonl)
    jsonl.write_text(json.dumps(good) + "\n" + json.dumps(good | {"team_id": 7}) + "\n")
    assert load_preferences(jsonl).column_names == ["prompt", "chosen", "rejected"]
    assert labels_provenance(jsonl, "preferences") is None  # a team's own file carries no labels provenance
    parquet = tmp_path / "prefs.parquet"
    datasets.Dataset.from_list([good, good | {"rejected": ""}]).to_parquet(str(parquet))
    with pytest.raises(RlhfError, match=rf"^{parquet} row 1: field 'rejected' is empty$"):
        load_preferences(parquet)


def test_conversational_rows_are_not_converted_again(tmp_path):
    folder = save(tmp_path, "messages", [pair(i) for i in range(4)], PAIR_FEATURES)
    before = sorted(p.name for p in folder.iterdir())
    ds = load_preferences(folder, conversational=True)
    assert list(ds) == [pair(i) for i in range(4)]
    # a map would have written a cache file beside the data (and copied every row); none was written
    assert sorted(p.name for p in folder.iterdir()) == before
    strings = save(tmp_path, "strings", [{"prompt": f"q{i}", "chosen": f"a{i}", "rejected": "no"} for i in range(4)])
    assert list(load_preferences(strings, conversational=True)) == [pair(i) for i in range(4)]
    implicit = save(tmp_path, "implicit", [{"chosen": "a", "rejected": "b"}])
    assert list(load_preferences(implicit, conversational=True)) == [{"chosen": "a", "rejected": "b"}]


def test_two_labels_sets_in_one_file_are_both_named(tmp_path):
    first, second = write_labels(tmp_path / "one" / "labels", tasks=12), write_labels(tmp_path / "two" / "labels", tasks=10)
    # two folders of one name (every round of the loop has a `labels`) each load their own rows, which
    # datasets.load_dataset's cache, keyed by folder name and card, would not give
    for r in (first, second, first):
        assert len(load_sft(r["path"])) == r["counts"]["sft"]["train"]
        assert labels_provenance(r["path"], "sft")[0]["content_hash"] == r["content_hash"]
    both = datasets.concatenate_datasets([datasets.load_from_disk(str(Path(r["path"]) / "sft" / "train"))
                                          for r in (first, second)])
    both.save_to_disk(str(tmp_path / "both"))
    found = labels_provenance(tmp_path / "both", "sft")
    assert sorted((x["id"], x["content_hash"]) for x in found) == sorted(
        (r["id"], r["content_hash"]) for r in (first, second))
    assert sum(x["rows"] for x in found) == len(both)


def test_copied_labels_carry_their_provenance_into_summaries_and_the_model_card(tiny_model, labels_folder, tmp_path):
    """A labels folder copied elsewhere (no export.json above the files the stages read) still names its labels
    in the sft, reward and dpo summaries and in the exported model card."""
    from rlhf.cli import main as cli

    copy = tmp_path / "moved" / "round-labels"
    shutil.copytree(labels_folder["path"], copy)
    (copy / "export.json").unlink()  # nothing to find by walking up: the provenance must come from the rows
    common = ["--max_steps", "1", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3", "--max_length", "48"]
    runs = tmp_path / "runs"
    assert cli(["sft", "--model_name_or_path", tiny_model, "--train_file", str(copy / "sft" / "train"),
                "--output_dir", str(runs / "sft"), *common]) == 0
    assert cli(["reward", "--model_name_or_path", str(runs / "sft"), "--train_file", str(copy / "preferences"),
                "--eval_file", str(copy), "--output_dir", str(runs / "reward"), *common]) == 0
    assert cli(["dpo", "--model_name_or_path", str(runs / "sft"), "--train_file", str(copy),
                "--output_dir", str(runs / "dpo"), *common]) == 0
    counts = labels_folder["counts"]
    for stage, rows in (("sft", counts["sft"]["train"]), ("reward", counts["pairs"]["train"]), ("dpo", counts["pairs"]["train"])):
        summary = json.loads((runs / stage / "summary.json").read_text())
        [labels] = summary["labels"]
        assert (labels["id"], labels["content_hash"], labels["rows"]) == (labels_folder["id"], labels_folder["content_hash"], rows), stage
    reward = json.loads((runs / "reward" / "summary.json").read_text())
    # the held-out pairs came from the labels folder's test split, with their sources
    assert reward["heldout_rows"] == counts["pairs"]["test"]
    assert sum(v["pairs"] for v in reward["heldout_accuracy_by_source"].values()) == counts["pairs"]["test"]

    assert cli(["export", "--model_name_or_path", str(runs / "dpo"), "--output_dir", str(runs / "export"),
                "--reward_model_path", str(runs / "reward"), "--max_new_tokens", "2"]) == 0
    card = (runs / "export" / "README.md").read_text()
    h = labels_folder["content_hash"]
    assert f"| 1 | sft | {labels_folder['id']} | `{h}` | {counts['sft']['train']} (top_ranked {counts['sft']['train']}) |" in card
    assert f"| 2 | dpo | {labels_folder['id']} | `{h}` | {counts['pairs']['train']} (ranked {counts['pairs']['train']}) |" in card
    assert f"Trained on labels {labels_folder['id']} (`{h}`): {counts['pairs']['train']}" in card
