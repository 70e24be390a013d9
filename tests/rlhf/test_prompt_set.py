"""The bundled prompt set: size, variety, valid constraints, a clean held-out split, and reproducibility."""

import collections
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf.constraints import CONSTRAINTS, instruction_text, validate_constraint
from rlhf.errors import RlhfError
from rlhf.prompt_set import load_prompt_set, prompt_set_path

ROOT = Path(__file__).resolve().parents[2]

# Written here independently of rlhf.constraints.CONFLICTS: pairs no fair prompt may ask for together.
CONTRADICTIONS = [
    ("lowercase", "uppercase"),
    ("max_words", "min_words"),
    ("json_format", "bullet_count"),
    ("json_format", "paragraph_count"),
    ("json_format", "start_word"),
    ("json_format", "end_phrase"),
    ("json_format", "quotation"),
    ("json_format", "postscript"),
    ("quotation", "end_phrase"),
    ("bullet_count", "paragraph_count"),
    ("bullet_count", "max_lines"),
    ("paragraph_count", "max_lines"),
]


@pytest.fixture(scope="module")
def rows():
    return load_prompt_set()


def test_size_variety_and_shape(rows):
    assert len(rows) >= 400
    types = collections.Counter(c["type"] for r in rows for c in r["constraints"])
    assert len(types) >= 15 and set(types) <= set(CONSTRAINTS)
    assert len({r["topic"] for r in rows}) >= 100
    assert len({r["category"] for r in rows}) >= 10
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert 1 <= len(r["constraints"]) <= 3, r["id"]
        assert len(r["prompt"].split()) <= 60, r["id"]
        for c in r["constraints"]:
            validate_constraint(c)
            assert instruction_text(c) in r["prompt"], r["id"]  # the instructions travel with the prompt
        assert r["prompt"].startswith(r["task"])


def test_heldout_split_is_clean(rows):
    train = [r for r in rows if r["split"] == "train"]
    heldout = [r for r in rows if r["split"] == "heldout"]
    assert 300 <= len(train) and 80 <= len(heldout)
    assert load_prompt_set("heldout") == heldout and load_prompt_set("train") == train
    assert not {r["prompt"] for r in heldout} & {r["prompt"] for r in train}
    assert not {r["task"] for r in heldout} & {r["task"] for r in train}
    assert not {r["topic"] for r in heldout} & {r["topic"] for r in train}
    # both splits exercise the simple constraint types the small model can learn
    for split in (train, heldout):
        types = {c["type"] for r in split for c in r["constraints"]}
        assert {"lowercase", "no_commas", "max_words", "end_phrase", "start_word", "include_keywords"} <= types


def test_no_contradictory_combinations(rows):
    for r in rows:
        types = [c["type"] for c in r["constraints"]]
        assert len(set(types)) == len(types), r["id"]
        for a, b in itertools.combinations(types, 2):
            assert (a, b) not in CONTRADICTIONS and (b, a) not in CONTRADICTIONS, (r["id"], a, b)
        params = {c["type"]: c["params"] for c in r["constraints"]}
        if "exclude_word" in params:
            banned = params["exclude_word"]["word"].lower()
            required = " ".join(params.get("include_keywords", {}).get("keywords", []))
            required += " " + params.get("end_phrase", {}).get("phrase", "") + " " + params.get("start_word", {}).get("word", "")
            assert banned not in required.lower().split(), r["id"]
        if "no_commas" in params:
            assert "," not in params.get("end_phrase", {}).get("phrase", ""), r["id"]


def test_file_is_what_the_script_generates(tmp_path):
    out = tmp_path / "prompts.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_prompt_set.py"), "--out", str(out)],
                   check=True, capture_output=True)
    assert out.read_bytes() == prompt_set_path().read_bytes()
    assert prompt_set_path() == ROOT / "rlhf" / "data" / "prompts.jsonl"


def test_loader_names_the_bad_line(tmp_path):
    good = json.dumps({"id": "a", "prompt": "Hi.", "split": "train", "constraints": [{"type": "no_commas"}]})
    bad = json.dumps({"id": "b", "prompt": "Hi.", "split": "train", "constraints": [{"type": "max_words"}]})
    path = tmp_path / "p.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    with pytest.raises(RlhfError, match=r"p\.jsonl:2: .*max_words.*missing param 'n'"):
        load_prompt_set(path=path)
    with pytest.raises(RlhfError, match="split 'test'"):
        load_prompt_set("test")
