"""Simulated annotators: the ranking rule by hand, then end to end through a real `labeler serve`."""

import random

import pytest

from rlhf.errors import RlhfError
from rlhf.simulate import annotate_task, rank_by_constraints, read_tokens

LOWER_NO_COMMAS = [{"type": "lowercase", "params": {}}, {"type": "no_commas", "params": {}}]


def test_rank_by_constraints_hand_computed():
    texts = [
        "Hello, world",  # 0 of 2
        "hello world",  # 2 of 2
        "hello, world",  # 1 of 2
        "all fine here",  # 2 of 2
    ]
    assert rank_by_constraints(LOWER_NO_COMMAS, texts) == [3, 1, 2, 1]
    assert rank_by_constraints(LOWER_NO_COMMAS, ["A, b", "C, d"]) == [1, 1]  # a tie stays a tie
    assert rank_by_constraints([], ["x", "y"]) == [1, 1]


def test_error_rate_swaps_adjacent_levels():
    texts = ["Hello, world", "hello world", "hello, world"]  # levels: [3, 1, 2]
    assert rank_by_constraints(LOWER_NO_COMMAS, texts, 0.0, random.Random(1)) == [3, 1, 2]
    flips = [tuple(rank_by_constraints(LOWER_NO_COMMAS, texts, 1.0, random.Random(s))) for s in range(40)]
    assert set(flips) == {(3, 2, 1), (2, 1, 3)}  # swap levels 1<->2 or 2<->3, never anything else
    # all tied: nothing to flip, even at error rate 1
    assert rank_by_constraints(LOWER_NO_COMMAS, ["A, b", "C, d"], 1.0, random.Random(0)) == [1, 1]
    rng = random.Random(7)
    flipped = sum(rank_by_constraints(LOWER_NO_COMMAS, texts[:2], 0.25, rng) != [2, 1] for _ in range(2000))
    assert 400 < flipped < 600  # about a quarter of the judgments
    with pytest.raises(RlhfError, match="error rate"):
        rank_by_constraints(LOWER_NO_COMMAS, texts, 1.5)


def test_annotate_task_payload():
    task = {"id": 9, "prompt": "p", "meta": {"constraints": LOWER_NO_COMMAS},
            "responses": [{"id": 31, "text": "Yes, sir", "model": "m"}, {"id": 32, "text": "yes sir", "model": "m"}]}
    payload = annotate_task(task, 0.0, random.Random(0))
    assert payload["ranking"] == {"31": 2, "32": 1}
    assert payload["all_bad"] is False and payload["flipped"] is False
    assert payload["rationale"].startswith("simulated: ") and "response 32: 2/2" in payload["rationale"]
    with pytest.raises(RlhfError, match="task 9: meta has no 'constraints'"):
        annotate_task({**task, "meta": {}}, 0.0, random.Random(0))


def test_annotate_task_edit_fixes_the_best_response():
    task = {"id": 9, "prompt": "p", "meta": {"constraints": LOWER_NO_COMMAS, "topic": "hats"},
            "responses": [{"id": 31, "text": "Yes, Sir, hats", "model": "m"}, {"id": 32, "text": "Yes sir", "model": "m"}]}
    payload = annotate_task(task, 0.0, random.Random(0), edit=True)
    assert payload["ranking"] == {"31": 2, "32": 1}
    assert payload["edited_response"] == "yes sir"  # the best (32) lower-cased, not the worse one
    assert "edited response 32 to meet every constraint" in payload["rationale"]
    assert "edited_response" not in annotate_task(task, 0.0, random.Random(0))  # edit is opt-in
    # nothing to fix when the best already meets everything; nothing when no hand edit can (60 words)
    ok = dict(task, responses=[{"id": 1, "text": "yes sir", "model": "m"}, {"id": 2, "text": "No, Sir", "model": "m"}])
    assert "edited_response" not in annotate_task(ok, 0.0, random.Random(0), edit=True)
    long = dict(task, meta={"constraints": [{"type": "min_words", "params": {"n": 60}}]})
    assert "edited_response" not in annotate_task(long, 0.0, random.Random(0), edit=True)


def test_read_tokens(tmp_path):
    f = tmp_path / "tokens.txt"
    f.write_text("# simulated annotators\nlbl_c\n\nlbl_d\n")
    assert read_tokens("lbl_a, lbl_b", str(f)) == ["lbl_a", "lbl_b", "lbl_c", "lbl_d"]
    with pytest.raises(RlhfError, match="token file not found"):
        read_tokens(None, str(tmp_path / "missing.txt"))


# ---- end to end: a real `labeler serve` on a free port, a temporary SQLite file, real HTTP -----------

LOWER = {"type": "lowercase", "params": {}}
NO_COMMAS = {"type": "no_commas", "params": {}}
SHORT = {"type": "max_words", "params": {"n": 7}}  # fewer than 7 words
LUCK = {"type": "end_phrase", "params": {"phrase": "Good luck!"}}

# (constraints, responses best first with the number of constraints each meets); the file order is shuffled
# so that the best response is not always first.
TASKS = [
    ([LOWER, NO_COMMAS], [("drink water every day.", 2), ("Drink water every day.", 1), ("Drink water, Every day.", 0)]),
    ([SHORT, LUCK], [("Study a bit daily. Good luck!", 2), ("Study every single day and rest well. Good luck!", 1),
                     ("Study every single day, rest well and eat well.", 0)]),
    ([NO_COMMAS], [("Plants need light and water.", 1), ("Plants need light, water, soil.", 0),
                   ("Plants need sun, water.", 0)]),
    ([LOWER, SHORT, NO_COMMAS], [("save a little each week.", 3), ("Save a little each week.", 2),
                                 ("Save, if you can, a little bit of money each and every week.", 0)]),
]


# for the edit test: the best answer misses a constraint a hand edit fixes (A, B), or meets them all (C)
EDIT_TASKS = [
    ([LOWER, NO_COMMAS], [("Drink water, every day.", 0), ("Drink Water, Every Day, Now.", 0)]),
    ([SHORT, LUCK], [("Study a bit daily.", 1), ("Study every single day and rest well, friend.", 0)]),
    ([NO_COMMAS], [("Plants need light and water.", 1), ("Plants need light, water, soil.", 0)]),
]
EXPECTED_EDITS = {"Task 0.": "drink water every day.", "Task 1.": "Study a bit daily. Good luck!", "Task 2.": None}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def labeler_server(tmp_path_factory, serve_labeler):
    """`labeler serve` on a fresh SQLite file, with two simulated annotators and two projects."""
    import importlib.util

    if importlib.util.find_spec("labeler.cli") is None:
        pytest.skip("labeler/cli.py (`labeler serve`) is not written yet")
    from labeler.accounts import create_token, create_user
    from labeler.db import Database, upgrade_database
    from labeler.importer import import_tasks
    from labeler.projects import create_project

    folder = tmp_path_factory.mktemp("labeler")
    url = f"sqlite:///{folder / 'labels.db'}"
    upgrade_database(url)
    db = Database(url)
    rng = random.Random(3)
    with db.write() as session:
        tokens = [create_token(session, create_user(session, f"sim-{i}", "pw-unused", simulated=True)) for i in (1, 2)]
        for name, overlap, tasks in (("sim-e2e", 2, TASKS), ("sim-flip", 1, TASKS), ("sim-edit", 1, EDIT_TASKS)):
            project = create_project(session, name, k=len(tasks[0][1]), overlap=overlap)
            rows = []
            for i, (constraints, responses) in enumerate(tasks):
                shuffled = rng.sample(responses, len(responses))
                rows.append({"prompt": f"Task {i}.", "meta": {"constraints": constraints},
                             "responses": [{"text": t, "model": f"met-{m}"} for t, m in shuffled]})
            assert import_tasks(session, project, rows)["created"] == len(tasks)
    base = serve_labeler(url)
    try:
        yield {"url": base, "db": db, "tokens": tokens}
    finally:
        db.dispose()


def stored_annotations(db, project_name):
    from sqlalchemy import select

    from labeler.models import Annotation, Project, Response, Task

    with db.read() as session:
        rows = session.execute(
            select(Annotation).join(Task, Task.id == Annotation.task_id).join(Project, Project.id == Task.project_id)
            .where(Project.name == project_name)
        ).scalars().all()
        out = []
        for a in rows:
            met = {str(r.id): int(r.model.removeprefix("met-")) for r in session.scalars(select(Response).where(Response.task_id == a.task_id))}
            out.append({"user": a.user.username, "simulated": a.user.simulated, "ranking": a.ranking, "met": met,
                        "rationale": a.rationale, "task": a.task_id})
        return out


def test_simulated_annotators_label_through_the_api(labeler_server):
    from rlhf.simulate import run_simulation

    s = labeler_server
    counts = run_simulation(s["url"], "sim-e2e", s["tokens"], error_rate=0.0, seed=0)
    assert counts["annotated"] == 2 * len(TASKS) and counts["flipped"] == 0 and counts["conflicts"] == 0
    assert [a["annotated"] for a in counts["per_account"]] == [len(TASKS), len(TASKS)]
    stored = stored_annotations(s["db"], "sim-e2e")
    assert len(stored) == 2 * len(TASKS)
    assert {(a["user"], a["task"]) for a in stored} == {(u, t) for u in ("sim-1", "sim-2") for t in {a["task"] for a in stored}}
    for a in stored:
        assert a["simulated"] and a["rationale"].startswith("simulated: met constraints")
        # ranks follow the constraints met: the most-met response is ranked 1, equal counts tie
        levels = sorted(set(a["met"].values()), reverse=True)
        assert a["ranking"] == {rid: levels.index(m) + 1 for rid, m in a["met"].items()}
        best = [rid for rid, rank in a["ranking"].items() if rank == 1]
        assert len(best) == 1 and a["met"][best[0]] == max(a["met"].values())
    # nothing left: a second run labels nothing and stores nothing new
    again = run_simulation(s["url"], "sim-e2e", s["tokens"])
    assert again["annotated"] == 0 and len(stored_annotations(s["db"], "sim-e2e")) == 2 * len(TASKS)


def test_simulated_edits_are_stored_and_exported(labeler_server, tmp_path):
    from sqlalchemy import select

    from labeler.export import export_project
    from labeler.models import Annotation, Project, Task
    from rlhf.constraints import all_met
    from rlhf.simulate import run_simulation

    s = labeler_server
    counts = run_simulation(s["url"], "sim-edit", s["tokens"][:1], edit=True)
    assert counts["annotated"] == len(EDIT_TASKS) and counts["edited"] == 2
    with s["db"].read() as session:
        anns = session.scalars(select(Annotation).join(Task).join(Project).where(Project.name == "sim-edit")).all()
        stored = {a.task.prompt.prompt: (a.edited_response, a.rationale, a.task.meta["constraints"]) for a in anns}
    assert {p: e for p, (e, _, _) in stored.items()} == EXPECTED_EDITS
    for edited, rationale, constraints in stored.values():
        assert edited is None or (all_met(constraints, edited) and "edited response" in rationale)
    # the export turns each edit into an SFT row (replacing the task's top-ranked rows) and into one pair
    # against each of the task's two responses
    out = export_project(s["db"], "sim-edit", tmp_path / "export", test_fraction=0.0)
    assert out["counts"]["sft_by_source"] == {"top_ranked": 1, "edited": 2}
    assert out["counts"]["pairs_by_source"] == {"ranked": 2, "edited": 4}  # B and C ranked; A's two tie


def test_error_rate_one_flips_every_judgment(labeler_server):
    from rlhf.simulate import run_simulation

    s = labeler_server
    counts = run_simulation(s["url"], "sim-flip", s["tokens"][:1], error_rate=1.0, seed=5, max_tasks=3)
    assert counts["annotated"] == 3 and counts["flipped"] == 3  # every task has at least two levels to swap
    stored = stored_annotations(s["db"], "sim-flip")
    assert len(stored) == 3
    for a in stored:
        levels = sorted(set(a["met"].values()), reverse=True)
        assert a["ranking"] != {rid: levels.index(m) + 1 for rid, m in a["met"].items()}
        assert "flipped" in a["rationale"]


def test_http_errors_name_the_url_and_the_server_message(labeler_server):
    from rlhf.simulate import run_simulation

    s = labeler_server
    with pytest.raises(RlhfError, match=r"GET http://127\.0\.0\.1:\d+/api/v1/projects/sim-e2e/next: HTTP 401: invalid token"):
        run_simulation(s["url"], "sim-e2e", ["lbl_not-a-token"])
    with pytest.raises(RlhfError, match=r"/api/v1/projects/nope/next: HTTP 404: project 'nope' does not exist"):
        run_simulation(s["url"], "nope", s["tokens"])


def test_cli_reports_errors_on_one_line(labeler_server, capsys):
    from rlhf.cli import main

    s = labeler_server
    assert main(["simulate", "--url", s["url"], "--project", "sim-e2e", "--tokens", "lbl_bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("rlhf simulate: error: GET ") and "HTTP 401" in err
    assert main(["simulate", "--url", s["url"], "--project", "sim-e2e"]) == 2
    assert "no annotator tokens" in capsys.readouterr().err
    # all of sim-e2e is labeled by the earlier test or not; either way the command finishes and reports
    assert main(["simulate", "--url", s["url"], "--project", "sim-e2e", "--tokens", ",".join(s["tokens"])]) == 0
    assert "simulated annotators:" in capsys.readouterr().out


def test_options_use_underscores_like_every_rlhf_command(capsys):
    from rlhf.cli import main

    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    help_text = capsys.readouterr().out
    for option in ("--token_file", "--error_rate", "--max_tasks"):
        assert f"{option} " in help_text
    # the dashed spelling still parses, and the error names the underscore one
    assert main(["simulate", "--url", "http://127.0.0.1:9", "--project", "p", "--tokens", "x", "--max-tasks", "0"]) == 2
    assert "rlhf simulate: error: --max_tasks must be at least 1" in capsys.readouterr().err
