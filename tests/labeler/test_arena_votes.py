"""The blind arena: tasks with hidden, shuffled sides; votes from real annotations; win rates and
Bradley-Terry scores with intervals; the admin page and the export show them."""

import json

import pytest

from labeler.arena import arena_results, arena_tasks, arena_votes, vote_outcome
from labeler.assignment import next_task, submit_annotation
from labeler.errors import LabelerError
from labeler.importer import import_tasks
from labeler.models import Task, User
from labeler.projects import create_project, get_or_create_project


def test_arena_tasks_put_each_pair_on_both_sides_and_record_which_is_which():
    prompts = [f"question {i}" for i in range(20)]
    tasks = arena_tasks(prompts, {"final": [f"f{i}" for i in range(20)], "base": [f"b{i}" for i in range(20)]},
                        [("final", "base")], metas=[{"id": i} for i in range(20)])
    assert len(tasks) == 20
    firsts = [t["responses"][0]["model"] for t in tasks]
    assert 0 < firsts.count("final") < 20  # the side is drawn per prompt, not fixed
    for i, t in enumerate(tasks):
        by_model = {r["model"]: r["text"] for r in t["responses"]}
        assert by_model == {"final": f"f{i}", "base": f"b{i}"}
        assert t["meta"] == {"id": i, "arena": {"policy": "final", "opponent": "base"}}
    assert arena_tasks(prompts, {"final": ["x"] * 20, "base": ["y"] * 20}, [("final", "base")]) == \
        arena_tasks(prompts, {"final": ["x"] * 20, "base": ["y"] * 20}, [("final", "base")])  # deterministic
    with pytest.raises(ValueError, match="base"):
        arena_tasks(prompts, {"final": ["x"] * 20, "base": ["y"]}, [("final", "base")])


def test_vote_outcome():
    assert vote_outcome({"1": 1, "2": 2}, False, "1", "2") == "win"
    assert vote_outcome({"1": 2, "2": 1}, False, "1", "2") == "loss"
    assert vote_outcome({"1": 1, "2": 1}, False, "1", "2") == "tie"
    assert vote_outcome({"1": 1, "2": 2}, True, "1", "2") == "both_bad"


def votes(outcomes):
    return [{"prompt_hash": f"p{i}", "policy": "final", "opponent": "base", "outcome": o} for i, o in enumerate(outcomes)]


def test_results_count_ties_and_both_bad_as_half():
    r = arena_results(votes(["win"] * 6 + ["loss"] * 2 + ["tie"] + ["both_bad"]))
    pair = r["pairs"]["final_vs_base"]
    assert (pair["wins"], pair["losses"], pair["ties"], pair["both_bad"], pair["votes"]) == (6, 2, 1, 1, 10)
    assert pair["win_rate"] == pytest.approx(0.7)  # (6 + 0.5 + 0.5) / 10
    lo, hi = pair["win_rate_ci"]
    assert lo < 0.7 < hi and 0 <= lo and hi <= 1
    bt = r["bradley_terry"]
    assert bt["final"]["score"] > 0 > bt["base"]["score"]
    assert bt["final"]["score"] == pytest.approx(-bt["base"]["score"])  # centred on 0
    assert bt["final"]["ci"][0] <= bt["final"]["score"] <= bt["final"]["ci"][1]
    assert bt["final"]["votes"] == 10


def test_results_of_an_even_contest_straddle_one_half():
    r = arena_results(votes(["win", "loss"] * 30))
    lo, hi = r["pairs"]["final_vs_base"]["win_rate_ci"]
    assert lo < 0.5 < hi
    assert arena_results([]) == {"votes": 0, "pairs": {}, "bradley_terry": {}, "method": arena_results([])["method"]}


def test_arena_project_needs_two_responses_and_get_or_create_keeps_kind(db):
    with db.write() as s:
        with pytest.raises(LabelerError, match="k must be 2"):
            create_project(s, "arena-bad", k=3, kind="arena")
        with pytest.raises(LabelerError, match="kind"):
            create_project(s, "odd", kind="tournament")
        p, created = get_or_create_project(s, "arena-1", k=2, kind="arena")
        assert created and p.kind == "arena"
        again, created = get_or_create_project(s, "arena-1", k=2, kind="arena")
        assert not created and again.id == p.id
        with pytest.raises(LabelerError, match="kind"):
            get_or_create_project(s, "arena-1", k=2, kind="ranking")


def label_all(db, project_name, user, choose):
    """Label every task the annotator gets: choose(models_by_rid) -> (ranking, all_bad)."""
    from labeler.projects import find_project

    while True:
        with db.write() as s:
            project = find_project(s, project_name)
            u = s.get(User, user.id)
            got = next_task(s, project, u)
            if got is None:
                return
            task, assignment = got
            models = {str(r.id): r.model for r in s.get(Task, task.id).responses}  # next_task gives the task's id, not its object
            ranking, all_bad = choose(models)
            submit_annotation(s, task.id, u, {"ranking": ranking, "all_bad": all_bad})


def test_votes_from_annotations_on_the_dashboard_and_in_the_export(db, make_user, app, client, tmp_path):
    prompts = [f"q{i}" for i in range(8)]
    tasks = arena_tasks(prompts, {"final": [f"good {i}" for i in range(8)], "base": [f"meh {i}" for i in range(8)]},
                        [("final", "base")])
    with db.write() as s:
        project, _ = get_or_create_project(s, "demo-arena", k=2, kind="arena", allow_edit=False)
        import_tasks(s, project, tasks, source="test")
    ann = make_user("ann")
    counter = iter(range(100))

    def choose(models):
        n = next(counter)
        final = next(r for r, m in models.items() if m == "final")
        base = next(r for r, m in models.items() if m == "base")
        if n == 0:
            return {final: 1, base: 1}, True  # both bad
        if n == 1:
            return {final: 1, base: 1}, False  # tie
        if n == 2:
            return {final: 2, base: 1}, False  # base wins
        return {final: 1, base: 2}, False  # final wins the other five

    label_all(db, "demo-arena", ann, choose)
    with db.read() as s:
        from labeler.projects import find_project

        vs = arena_votes(s, find_project(s, "demo-arena"))
    assert [v["outcome"] for v in vs] == ["both_bad", "tie", "loss"] + ["win"] * 5
    assert all(v["user"] == "ann" and v["policy"] == "final" for v in vs)

    admin = make_user("boss", role="admin")
    with client.session_transaction() as sess:
        sess["user_id"], sess["session_version"] = admin.id, admin.session_version
    page = client.get("/admin/projects/demo-arena")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="arena-pairs"' in html and "0.750" in html  # (5 + 0.5 + 0.5) / 8

    from labeler.export import export_project

    out = export_project(db, "demo-arena", tmp_path / "arena-export")
    folder = tmp_path / "arena-export"
    exported = [json.loads(line) for line in (folder / "votes.jsonl").read_text().splitlines()]
    assert [v["outcome"] for v in exported] == [v["outcome"] for v in vs]
    summary = json.loads((folder / "arena.json").read_text())
    assert summary["pairs"]["final_vs_base"]["votes"] == 8 and out["counts"]["votes"] == 8
