"""Quality figures on a project built directly with the models in a temporary SQLite file."""

import hashlib
import json

import pytest

from labeler.models import Annotation, Project, Prompt, Response, Task, User
from labeler.quality import annotator_gold_accuracy, project_quality


def add_task(session, project, prompt, letters, gold=None):
    """A task whose responses are named by letter; returns {letter: str(response id)}."""
    p = Prompt(project_id=project.id, prompt=prompt, prompt_hash=hashlib.sha256(json.dumps(prompt).encode()).hexdigest())
    session.add(p)
    session.flush()
    task = Task(project_id=project.id, prompt_id=p.id, content_hash=hashlib.sha256(prompt.encode()).hexdigest())
    session.add(task)
    session.flush()
    ids = {}
    for pos, letter in enumerate(letters):
        r = Response(task_id=task.id, position=pos, text=f"{prompt} {letter}")
        session.add(r)
        session.flush()
        ids[letter] = str(r.id)
    if gold:
        task.is_gold, task.gold_ranking = True, {ids[k]: v for k, v in gold.items()}
    return task, ids


def annotate(session, task, ids, user, ranks, shown, seconds=10.0):
    session.add(Annotation(task_id=task.id, user_id=user.id, ranking={ids[k]: v for k, v in ranks.items()}, display_order=[int(ids[k]) for k in shown], seconds_spent=seconds))


def test_quality_figures(db):
    with db.write() as s:
        project = Project(name="q", k=3, overlap=2)
        lefty, fair, idle = User(username="lefty", password_hash="x"), User(username="fair", password_hash="x", simulated=True), User(username="idle", password_hash="x")
        s.add_all([project, lefty, fair, idle])
        s.flush()
        # gold 1 orders a > b > c; gold 2 ties a and b (that pair is not scored) above c
        g1, i1 = add_task(s, project, "g1", "abc", gold={"a": 1, "b": 2, "c": 3})
        g2, i2 = add_task(s, project, "g2", "abc", gold={"a": 1, "b": 1, "c": 2})
        t3, i3 = add_task(s, project, "t3", "ab")
        add_task(s, project, "unlabeled", "ab")
        # lefty always prefers what was shown first: gold 1 right; gold 2 right (b > a is not scored)
        annotate(s, g1, i1, lefty, {"a": 1, "b": 2, "c": 3}, shown="abc", seconds=30)
        annotate(s, g2, i2, lefty, {"b": 1, "a": 2, "c": 3}, shown="bac", seconds=90)
        annotate(s, t3, i3, lefty, {"a": 1, "b": 2}, shown="ab", seconds=60)
        # fair: gold 1 wrong (c above b); gold 2 wrong (ties a, c); on t3 prefers the second shown
        annotate(s, g1, i1, fair, {"a": 1, "c": 2, "b": 3}, shown="abc", seconds=20)  # a>c first, a>b first, c>b second
        annotate(s, g2, i2, fair, {"a": 1, "b": 2, "c": 1}, shown="cab", seconds=20)  # a>b first, c>b first
        annotate(s, t3, i3, fair, {"a": 1, "b": 2}, shown="ba", seconds=20)  # a>b second
    with db.read() as s:
        q = project_quality(s, "q")
        gold = annotator_gold_accuracy(s, project.id)
    by_name = {a["username"]: a for a in q["annotators"]}
    assert set(by_name) == {"lefty", "fair"}  # idle has no annotation
    assert q["project"]["tasks"] == 4 and q["project"]["annotations"] == 6 and q["project"]["done_tasks"] == 3
    assert q["project"]["gold_tasks"] == 2

    lefty_q, fair_q = by_name["lefty"], by_name["fair"]
    assert lefty_q["gold_accuracy"] == 1.0 and fair_q["gold_accuracy"] == 0.0
    assert gold == {lefty_q["user_id"]: 1.0, fair_q["user_id"]: 0.0}
    assert lefty_q["position_bias"] == 1.0  # 3 + 3 + 1 preferences, all for the earlier slot
    assert fair_q["position_bias"] == pytest.approx(4 / 6)  # g1: 2 of 3, g2: 2 of 2, t3: 0 of 1
    # 3 annotations in 180 s -> 60 per hour; median of 30, 90, 60
    assert lefty_q["throughput_per_hour"] == pytest.approx(60.0) and lefty_q["median_seconds"] == 60.0
    assert fair_q["throughput_per_hour"] == pytest.approx(3 / (60 / 3600)) and fair_q["simulated"] is True
    # shared verdicts: g1 a>b agree, a>c agree, b>c vs c>b no; g2 a,b '<' vs '>' no, a>c vs '=' no,
    # b>c vs '<' no; t3 agree -> 3 of 7, the same from either side and for the project
    assert lefty_q["agreement"] == pytest.approx(3 / 7) and fair_q["agreement"] == pytest.approx(3 / 7)
    assert q["project"]["pairwise_agreement"] == pytest.approx(3 / 7)
    assert -1.0 <= q["project"]["krippendorff_alpha"] < 1.0


def test_perfect_agreement_and_no_gold(db):
    with db.write() as s:
        project = Project(name="p", k=3, overlap=2)
        u1, u2 = User(username="u1", password_hash="x"), User(username="u2", password_hash="x")
        s.add_all([project, u1, u2])
        s.flush()
        for name in ("x", "y"):
            task, ids = add_task(s, project, name, "abc")
            for user in (u1, u2):
                annotate(s, task, ids, user, {"a": 1, "b": 2, "c": 3}, shown="cba")
    with db.read() as s:
        q = project_quality(s, project.id)
    assert q["project"]["krippendorff_alpha"] == pytest.approx(1.0)
    assert q["project"]["pairwise_agreement"] == 1.0
    for a in q["annotators"]:
        assert a["gold_accuracy"] is None and a["agreement"] == 1.0 and a["position_bias"] == 0.0


def test_unknown_project_is_a_labeler_error(db):
    from labeler.errors import LabelerError

    with db.read() as s, pytest.raises(LabelerError, match="nope"):
        project_quality(s, "nope")
