"""Export on a project built directly with the models: two annotators, three tasks, K = 3."""

import hashlib
import json

import datasets
import pytest

from labeler.errors import LabelerError
from labeler.export import export_project, load_export
from labeler.models import Annotation, Export, Project, Prompt, Response, Task, User

SYSTEM_PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "p2"}]


def add_task(session, project, prompt, gold=None, letters="abc"):
    """A task with responses "<last prompt text> a|b|c" (one per letter); returns (task, {letter: str(response id)})."""
    p = Prompt(project_id=project.id, prompt=prompt, prompt_hash=hashlib.sha256(json.dumps(prompt).encode()).hexdigest())
    session.add(p)
    session.flush()
    name = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    task = Task(project_id=project.id, prompt_id=p.id, content_hash=hashlib.sha256(name.encode()).hexdigest())
    session.add(task)
    session.flush()
    ids = {}
    for pos, letter in enumerate(letters):
        r = Response(task_id=task.id, position=pos, text=f"{name} {letter}")
        session.add(r)
        session.flush()
        ids[letter] = str(r.id)
    if gold:
        task.is_gold, task.gold_ranking = True, {ids[k]: v for k, v in gold.items()}
    return task, ids


def annotate(session, task, ids, user, ranks, all_bad=False, edit=None):
    ann = Annotation(
        task_id=task.id,
        user_id=user.id,
        ranking={ids[k]: v for k, v in ranks.items()},
        display_order=[int(ids[k]) for k in sorted(ids, key="cabd".index)],
        all_bad=all_bad,
        edited_response=edit,
        seconds_spent=12.5,
        rationale="because",
    )
    session.add(ann)
    return ann


def seed(db, with_gold=False):
    """p1: both a > b > c.  p2 (multi-turn): alice a = b > c, bob b > a > c, bob edits.
    p3: alice flags all bad (and edits), bob c > b > a.  Optional gold task: alice right, bob wrong."""
    with db.write() as s:
        project = Project(name="demo", k=3, overlap=2)
        alice, bob = User(username="alice", password_hash="x"), User(username="bob", password_hash="x", simulated=True)
        s.add_all([project, alice, bob])
        s.flush()
        t1, i1 = add_task(s, project, "p1")
        annotate(s, t1, i1, alice, {"a": 1, "b": 2, "c": 3})
        annotate(s, t1, i1, bob, {"a": 1, "b": 2, "c": 3})
        t2, i2 = add_task(s, project, SYSTEM_PROMPT)
        annotate(s, t2, i2, alice, {"a": 1, "b": 1, "c": 2})
        annotate(s, t2, i2, bob, {"a": 2, "b": 1, "c": 3}, edit="p2 edited by bob")
        t3, i3 = add_task(s, project, "p3")
        annotate(s, t3, i3, alice, {"a": 1, "b": 2, "c": 3}, all_bad=True, edit="p3 fixed by alice")
        annotate(s, t3, i3, bob, {"a": 3, "b": 2, "c": 1})
        if with_gold:
            t4, i4 = add_task(s, project, "p4", gold={"a": 1, "b": 2, "c": 3})
            annotate(s, t4, i4, alice, {"a": 1, "b": 2, "c": 3})
            annotate(s, t4, i4, bob, {"a": 3, "b": 2, "c": 1})
        s.add(Task(project_id=project.id, prompt_id=t1.prompt_id, content_hash="unlabeled"))


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def pair_set(rows):
    return {(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows}


def test_majority_export_pairs_sft_and_raw(db, tmp_path):
    seed(db)
    result = export_project(db, "demo", tmp_path / "out", test_fraction=0.0)
    out = tmp_path / "out"
    ds = datasets.load_from_disk(str(out / "preferences"))
    assert set(ds) == {"train", "test"} and len(ds["test"]) == 0
    rows = list(ds["train"])
    ranked = [r for r in rows if r["source"] == "ranked"]
    # p1: all three pairs; p2: a-b dropped (one tie, one vote), a > c, b > c; p3: bob alone (alice said all bad)
    assert pair_set(ranked) == {
        ("p1", "p1 a", "p1 b"), ("p1", "p1 a", "p1 c"), ("p1", "p1 b", "p1 c"),
        ("p2", "p2 a", "p2 c"), ("p2", "p2 b", "p2 c"),
        ("p3", "p3 c", "p3 b"), ("p3", "p3 c", "p3 a"), ("p3", "p3 b", "p3 a"),
    }  # fmt: skip
    by_key = {(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]): r for r in rows}
    p1 = by_key[("p1", "p1 a", "p1 b")]
    assert p1["prompt"] == [{"role": "user", "content": "p1"}] and p1["chosen"] == [{"role": "assistant", "content": "p1 a"}]
    assert p1["annotators"] == ["alice", "bob"] and p1["agreement"] == 1.0 and p1["simulated"] is True and len(p1["annotation_ids"]) == 2
    assert by_key[("p2", "p2 a", "p2 c")]["prompt"] == SYSTEM_PROMPT
    p3 = by_key[("p3", "p3 c", "p3 a")]
    assert p3["annotators"] == ["bob"] and p3["agreement"] == 1.0
    # each edit is preferred over every response its author judged (ranked, or called all bad)
    edited = [r for r in rows if r["source"] == "edited"]
    assert pair_set(edited) == {("p2", "p2 edited by bob", f"p2 {x}") for x in "abc"} | {
        ("p3", "p3 fixed by alice", f"p3 {x}") for x in "abc"}
    bob_edit = by_key[("p2", "p2 edited by bob", "p2 a")]
    assert bob_edit["annotators"] == ["bob"] and bob_edit["chosen_response_id"] is None and bob_edit["simulated"] is True

    # SFT: p1's top (a); p2's top pair (a and b tie) is replaced by bob's edit; p3 only alice's edit
    sft = read_jsonl(out / "sft.jsonl")
    assert {(r["prompt"][-1]["content"], r["completion"][0]["content"], r["source"]) for r in sft} == {
        ("p1", "p1 a", "top_ranked"), ("p2", "p2 edited by bob", "edited"), ("p3", "p3 fixed by alice", "edited"),
    }  # fmt: skip
    assert len(datasets.load_from_disk(str(out / "sft"))["train"]) == 3

    raw = read_jsonl(out / "annotations.jsonl")
    assert len(raw) == 6 and {r["username"] for r in raw} == {"alice", "bob"}
    assert all(r["rationale"] == "because" and r["seconds_spent"] == 12.5 and len(r["display_order"]) == 3 for r in raw)
    assert sorted({i for r in rows for i in r["annotation_ids"]}) == sorted(r["id"] for r in raw)

    counts = result["counts"]
    assert counts["pairs"] == {"train": 14, "test": 0} and counts["sft"] == {"train": 3, "test": 0}
    assert counts["pairs_by_source"] == {"ranked": 8, "edited": 6}
    assert counts["dropped"]["pairs"] == {"no_majority": 1} and counts["dropped"]["tasks"] == {"unlabeled": 1}
    assert counts["dropped"]["sft"] == {"replaced_by_edit": 3}  # p2's two tied tops, p3's top by bob
    meta = json.loads((out / "export.json").read_text())
    assert meta["content_hash"] == result["content_hash"] and meta["id"] == result["id"] and meta["counts"] == counts
    with db.read() as s:
        row = s.get(Export, result["id"])
        assert row.content_hash == result["content_hash"] and row.filters["aggregation"] == "majority"
    assert load_export(out)["preferences"] == out / "preferences"
    # the typed datasets carry the export's id and hash on every row; the hashed JSONL files do not
    assert {(r["labels_id"], r["labels_hash"]) for r in rows} == {(result["id"], result["content_hash"])}
    jsonl = read_jsonl(out / "preferences.jsonl") + sft
    assert len(jsonl) == 17 and not any("labels_id" in r or "labels_hash" in r for r in jsonl)


def test_bradley_terry_export(db, tmp_path):
    seed(db)
    export_project(db, "demo", tmp_path / "bt", aggregation="bradley-terry", test_fraction=0.0)
    rows = read_jsonl(tmp_path / "bt" / "preferences.jsonl")
    # p2 wins: a 2.5 (half of the a-b tie), b 3.5, c 0 -> b > a > c, so b > a is kept (agreement 1 of 2)
    ranked = [r for r in rows if r["source"] == "ranked"]
    p2 = {(r["chosen"][0]["content"], r["rejected"][0]["content"]): r["agreement"] for r in ranked if r["prompt"][-1]["content"] == "p2"}
    assert p2 == {("p2 b", "p2 a"): 0.5, ("p2 b", "p2 c"): 1.0, ("p2 a", "p2 c"): 1.0}
    assert len(ranked) == 9 and len(rows) == 15  # plus the two edits' three pairs each
    sft = read_jsonl(tmp_path / "bt" / "sft.jsonl")
    assert ("p1", "p1 a") in {(r["prompt"][-1]["content"], r["completion"][0]["content"]) for r in sft}


@pytest.mark.parametrize("aggregation", ["majority", "bradley-terry"])
def test_rank_gaps_of_a_k4_ranking_with_ties_an_edit_and_all_bad(db, tmp_path, aggregation):
    """K = 4, one task. Dense ranks (a tie group is one level): alice a1 b2 c2 d3, bob a1 b1 c2 d3 (sent as
    1, 1, 3, 4), carol a1 b2 c3 d4 (and an edit); dave calls it all bad (his reversed ranking says nothing)
    and edits. A pair's gap is the mean over the rankings that agree with it; both aggregations order the
    pairs a > b > c > d, so the gaps are the same."""
    with db.write() as s:
        project = Project(name="k4", k=4, overlap=4)
        alice, bob, carol, dave = users = [User(username=n, password_hash="x") for n in ("alice", "bob", "carol", "dave")]
        s.add_all([project, *users])
        s.flush()
        task, ids = add_task(s, project, "q", letters="abcd")
        annotate(s, task, ids, alice, {"a": 1, "b": 2, "c": 2, "d": 3})
        annotate(s, task, ids, bob, {"a": 1, "b": 1, "c": 3, "d": 4})
        annotate(s, task, ids, carol, {"a": 1, "b": 2, "c": 3, "d": 4}, edit="q edited by carol")
        annotate(s, task, ids, dave, {"a": 4, "b": 3, "c": 2, "d": 1}, all_bad=True, edit="q fixed by dave")
    export_project(db, "k4", tmp_path / "out", aggregation=aggregation, test_fraction=0.0)
    rows = read_jsonl(tmp_path / "out" / "preferences.jsonl")
    gaps = {(r["chosen"][0]["content"][2:], r["rejected"][0]["content"][2:]): r["rank_gap"] for r in rows}
    assert gaps == pytest.approx({
        ("a", "b"): 1.0,            # alice 1, carol 1 (bob ties them: not counted)
        ("a", "c"): (1 + 1 + 2) / 3,
        ("a", "d"): (2 + 2 + 3) / 3,
        ("b", "c"): 1.0,            # bob 1, carol 1 (alice ties them)
        ("b", "d"): (1 + 2 + 2) / 3,
        ("c", "d"): 1.0,
        # carol's edit stands one level above her rank 1: its gap to a response is that response's rank
        ("edited by carol", "a"): 1.0, ("edited by carol", "b"): 2.0,
        ("edited by carol", "c"): 3.0, ("edited by carol", "d"): 4.0,
        # "all bad" ties every response: each of dave's edit pairs is one level apart
        ("fixed by dave", "a"): 1.0, ("fixed by dave", "b"): 1.0,
        ("fixed by dave", "c"): 1.0, ("fixed by dave", "d"): 1.0,
    })  # fmt: skip
    ds = datasets.load_from_disk(str(tmp_path / "out" / "preferences"))["train"]
    assert ds.features["rank_gap"] == datasets.Value("float64")
    assert sorted(ds["rank_gap"]) == pytest.approx(sorted(r["rank_gap"] for r in rows))


def test_split_is_deterministic_by_prompt_and_hash_is_stable(db, tmp_path):
    seed(db)
    with db.read() as s:
        u = {p.prompt_hash: int(hashlib.sha256(p.prompt_hash.encode()).hexdigest(), 16) / 2**256 for p in s.query(Prompt)}
    fraction = (min(u.values()) + max(u.values())) / 2  # puts at least one prompt on each side
    first = export_project(db, "demo", tmp_path / "e1", test_fraction=fraction)
    second = export_project(db, "demo", tmp_path / "e2", test_fraction=fraction)
    assert first["content_hash"] == second["content_hash"] and first["id"] != second["id"]
    rows = read_jsonl(tmp_path / "e1" / "preferences.jsonl")
    with db.read() as s:
        hash_of = {p.id: p.prompt_hash for p in s.query(Prompt)}
    for r in rows:
        assert r["split"] == ("test" if u[hash_of[r["prompt_id"]]] < fraction else "train")
    assert {r["split"] for r in rows} == {"train", "test"}
    ds = datasets.load_from_disk(str(tmp_path / "e1" / "preferences"))
    assert len(ds["test"]) == sum(r["split"] == "test" for r in rows) and len(ds["train"]) + len(ds["test"]) == len(rows)

    # a changed label changes the hash
    with db.write() as s:
        ann = s.query(Annotation).order_by(Annotation.id).first()
        ann.ranking = {k: 4 - v for k, v in ann.ranking.items()}
    assert export_project(db, "demo", tmp_path / "e3", test_fraction=fraction)["content_hash"] != first["content_hash"]


def test_filters(db, tmp_path):
    seed(db, with_gold=True)
    # agreement among rankings: p1 1.0, p2 2/3, p3 unmeasured (alice's all-bad leaves one), p4 0
    agreed = export_project(db, "demo", tmp_path / "agree", min_agreement=0.9, test_fraction=0.0)
    assert pair_set(read_jsonl(tmp_path / "agree" / "preferences.jsonl")) == {("p1", "p1 a", "p1 b"), ("p1", "p1 a", "p1 c"), ("p1", "p1 b", "p1 c")}
    assert agreed["counts"]["dropped"]["tasks"] == {"agreement_unmeasured": 1, "low_agreement": 2, "unlabeled": 1}
    assert agreed["filters"]["min_agreement"] == 0.9

    # gold: alice 1.0, bob 0.0 -> only alice's annotations remain
    gold = export_project(db, "demo", tmp_path / "gold", min_gold_accuracy=0.5, test_fraction=0.0)
    rows = read_jsonl(tmp_path / "gold" / "preferences.jsonl")
    assert {a for r in rows for a in r["annotators"]} == {"alice"}
    assert pair_set(rows) == {("p3", "p3 fixed by alice", f"p3 {x}") for x in "abc"} | {
        ("p1", "p1 a", "p1 b"), ("p1", "p1 a", "p1 c"), ("p1", "p1 b", "p1 c"),
        ("p2", "p2 a", "p2 c"), ("p2", "p2 b", "p2 c"),
        ("p4", "p4 a", "p4 b"), ("p4", "p4 a", "p4 c"), ("p4", "p4 b", "p4 c"),
    }  # fmt: skip
    assert gold["counts"]["dropped"]["annotations"] == {"below_gold_accuracy": 4}
    assert gold["counts"]["annotations_used"] == 4
    sft = read_jsonl(tmp_path / "gold" / "sft.jsonl")
    assert "p2 edited by bob" not in {r["completion"][0]["content"] for r in sft}


def test_refuses_a_non_empty_folder_and_writes_nothing(db, tmp_path):
    seed(db)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LabelerError, match="taken"):
        export_project(db, "demo", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    with db.read() as s:
        assert s.query(Export).count() == 0
    # an empty folder is fine
    (tmp_path / "empty").mkdir()
    export_project(db, "demo", tmp_path / "empty")
    assert (tmp_path / "empty" / "export.json").is_file() and (tmp_path / "empty" / "preferences" / "dataset_dict.json").is_file()
    # and a file where the folder should be is refused
    (tmp_path / "file").write_text("x")
    with pytest.raises(LabelerError, match="not a folder"):
        export_project(db, "demo", tmp_path / "file")


def test_bad_options_are_labeler_errors(db, tmp_path):
    seed(db)
    with pytest.raises(LabelerError, match="aggregation"):
        export_project(db, "demo", tmp_path / "x", aggregation="vote")
    with pytest.raises(LabelerError, match="min_agreement"):
        export_project(db, "demo", tmp_path / "x", min_agreement=2)
    with pytest.raises(LabelerError, match="test_fraction"):
        export_project(db, "demo", tmp_path / "x", test_fraction=None)
    with pytest.raises(LabelerError, match="nope"):
        export_project(db, "nope", tmp_path / "x")
    with pytest.raises(LabelerError, match="export.json"):
        load_export(tmp_path)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("test_fraction", [0.0, 0.5])
def test_labels_open_with_load_dataset_from_anywhere(db, tmp_path, test_fraction):
    import shutil

    from huggingface_hub import DatasetCard

    seed(db)
    result = export_project(db, "demo", tmp_path / "out", test_fraction=test_fraction)
    moved = tmp_path / "elsewhere" / "labels"
    shutil.copytree(tmp_path / "out", moved)
    shutil.rmtree(tmp_path / "out")
    on_disk = {kind: datasets.load_from_disk(str(moved / kind)) for kind in ("preferences", "sft")}
    for kind, loaded in (("preferences", datasets.load_dataset(str(moved), cache_dir=str(tmp_path / "cache"))),
                         ("sft", datasets.load_dataset(str(moved), "sft", cache_dir=str(tmp_path / "cache")))):
        # a split without rows has no Parquet file (load_dataset refuses empty splits): here the test split at 0.0
        assert set(loaded) == {split for split, d in on_disk[kind].items() if len(d)}
        assert set(loaded) == ({"train", "test"} if test_fraction else {"train"})
        for split in loaded:
            assert loaded[split].features == on_disk[kind][split].features  # message lists, int ids, provenance
            assert list(loaded[split]) == list(on_disk[kind][split])
            # provenance travels as data: every row names its labels, in both layouts
            assert set(loaded[split]["labels_id"]) == {result["id"]} and set(loaded[split]["labels_hash"]) == {result["content_hash"]}
    counts = result["counts"]
    assert sum(counts["pairs"].values()) == 14 and (counts["pairs"]["test"] > 0) == (test_fraction > 0)
    card = DatasetCard.load(moved / "README.md")
    assert [c["config_name"] for c in card.data.configs] == ["preferences", "sft"] and card.data.configs[0]["default"]
    assert result["content_hash"] in card.text and f"| preferences | {counts['pairs']['train']} | {counts['pairs']['test']} |" in card.text
    assert load_export(moved)["parquet"] == moved / "data"
