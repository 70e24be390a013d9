"""Assignment under leases: overlap never exceeded, leases reclaimed, 409 after a lost lease, one
annotation per annotator and task, display order stored per annotator."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from labeler.assignment import next_task, previous_annotations, progress, submit_annotation
from labeler.errors import LabelerError
from labeler.models import Annotation, Assignment, Project, Task, utcnow


def lease(db, user, project_name="demo", now=None):
    with db.write() as session:
        project = session.scalar(select(Project).where(Project.name == project_name))
        got = next_task(session, project, user, now=now)
        return None if got is None else (got[0].id, got[1].display_order, got[1].expires_at)


def submit(db, task_id, user, payload=None, now=None, order=None):
    with db.write() as session:
        if payload is None:
            ids = order or [a.display_order for a in session.scalars(select(Assignment).where(Assignment.task_id == task_id))][0]
            payload = {"ranking": {str(rid): i + 1 for i, rid in enumerate(ids)}, "seconds_spent": 3.5}
        annotation, created = submit_annotation(session, task_id, user, payload, now=now)
        return annotation.id, created


def n_annotations(db, **where):
    with db.read() as session:
        query = select(func.count(Annotation.id))
        for key, value in where.items():
            query = query.where(getattr(Annotation, key) == value)
        return session.scalar(query)


def test_overlap_is_never_exceeded_and_least_loaded_first(db, make_user, make_project):
    make_project("demo", n_tasks=3, overlap=2)
    users = [make_user(f"u{i}") for i in range(5)]
    leased = [lease(db, u) for u in users]
    # 3 tasks x overlap 2 = 6 slots: five annotators spread out oldest-first: 1,2,3,1,2
    task_ids = [t[0] for t in leased]
    assert task_ids == sorted(task_ids[:3]) + task_ids[:2]
    # the same annotator asking again gets their own lease back, not a new task
    assert lease(db, users[0])[0] == task_ids[0]
    sixth = make_user("u5")
    assert lease(db, sixth)[0] == task_ids[2]
    assert lease(db, make_user("u6")) is None  # every slot leased
    for user, task_id in zip(users + [sixth], task_ids + [task_ids[2]]):
        submit(db, task_id, user)
    with db.read() as session:
        per_task = session.execute(select(Annotation.task_id, func.count()).group_by(Annotation.task_id)).all()
    assert sorted(n for _, n in per_task) == [2, 2, 2]


def test_annotator_never_gets_a_task_twice(db, make_user, make_project):
    make_project("demo", n_tasks=2, overlap=3)
    alice = make_user("alice")
    first = lease(db, alice)[0]
    submit(db, first, alice)
    second = lease(db, alice)[0]
    assert second != first
    submit(db, second, alice)
    assert lease(db, alice) is None
    with db.read() as session:
        project = session.scalar(select(Project))
        assert progress(session, project, alice) == {"done": 2, "remaining": 0, "seconds": 7.0}
        assert [a.task_id for a in previous_annotations(session, project, alice, 5)] == [second, first]


def test_expired_lease_is_reclaimed_then_submission_gets_409_and_writes_nothing(db, make_user, make_project):
    make_project("demo", n_tasks=1, overlap=1, lease_seconds=60)
    slow, fast = make_user("slow"), make_user("fast")
    t0 = utcnow()
    task_id, order, _ = lease(db, slow, now=t0)
    assert lease(db, fast, now=t0 + dt.timedelta(seconds=30)) is None  # still held by `slow`
    later = t0 + dt.timedelta(seconds=61)
    assert lease(db, fast, now=later)[0] == task_id  # reclaimed
    with db.read() as session:
        assert session.scalar(select(Assignment.status).where(Assignment.user_id == slow.id)) == "expired"
    submit(db, task_id, fast, now=later)
    with pytest.raises(LabelerError) as err:
        submit(db, task_id, slow, order=order, now=later + dt.timedelta(seconds=1))
    assert err.value.status == 409
    assert n_annotations(db, user_id=slow.id) == 0
    assert n_annotations(db) == 1


def test_expired_lease_is_accepted_while_capacity_remains(db, make_user, make_project):
    make_project("demo", n_tasks=1, overlap=2, lease_seconds=60)
    slow = make_user("slow")
    t0 = utcnow()
    task_id, order, _ = lease(db, slow, now=t0)
    _, created = submit(db, task_id, slow, order=order, now=t0 + dt.timedelta(hours=1))
    assert created and n_annotations(db, user_id=slow.id) == 1


def test_no_assignment_means_409(db, make_user, make_project):
    make_project("demo", n_tasks=1)
    alice, bob = make_user("alice"), make_user("bob")
    task_id, order, _ = lease(db, alice)
    with pytest.raises(LabelerError) as err:
        submit(db, task_id, bob, order=order)
    assert err.value.status == 409 and n_annotations(db) == 0


def test_double_submit_stores_one_annotation_and_updates_in_place(db, make_user, make_project):
    make_project("demo", n_tasks=2, k=3, criteria=["helpful"])
    alice = make_user("alice")
    task_id, order, _ = lease(db, alice)
    payload = {"ranking": {str(order[0]): 1, str(order[1]): 2, str(order[2]): 2}, "seconds_spent": 4}
    first_id, created = submit(db, task_id, alice, payload)
    again_id, created_again = submit(db, task_id, alice, payload)
    assert created and not created_again and first_id == again_id
    changed = {"ranking": {str(order[0]): 3, str(order[1]): 1, str(order[2]): 2}, "all_bad": True,
               "scores": {"helpful": {str(order[1]): 5}}, "rationale": "second look", "edited_response": "better"}
    with pytest.raises(LabelerError) as err:  # a change must name the version it replaces
        submit(db, task_id, alice, changed)
    assert err.value.status == 409 and err.value.field == "version"
    assert submit(db, task_id, alice, changed | {"version": 1}) == (first_id, False)
    assert n_annotations(db) == 1
    with db.read() as session:
        row = session.get(Annotation, first_id)
        assert row.ranking == changed["ranking"] and row.all_bad and row.rationale == "second look"
        assert row.scores == {"helpful": {str(order[1]): 5}} and row.edited_response == "better"
        assert row.display_order == order and row.version == 2


def test_display_order_is_stored_and_differs_between_annotators(db, make_user, make_project):
    make_project("demo", n_tasks=1, k=6, overlap=20)
    users = [make_user(f"u{i}") for i in range(8)]
    orders = [lease(db, u)[1] for u in users]
    assert all(sorted(o) == sorted(orders[0]) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # 8 shuffles of 6 items: all equal has probability 720**-7
    with db.read() as session:
        stored = {a.user_id: a.display_order for a in session.scalars(select(Assignment))}
    assert stored == {u.id: o for u, o in zip(users, orders)}
    # the order survives expiry and re-lease: it was drawn once
    later = utcnow() + dt.timedelta(days=1)
    assert lease(db, users[0], now=later)[1] == orders[0]
    task_id = lease(db, users[0], now=later)[0]
    annotation_id, _ = submit(db, task_id, users[0], now=later)
    with db.read() as session:
        assert session.get(Annotation, annotation_id).display_order == orders[0]


@pytest.mark.parametrize("payload, field", [
    ({"ranking": {"1": 1}}, "ranking"),
    ({"ranking": {"1": 1, "2": 0}}, "ranking.2"),
    ({"ranking": {"1": 1, "2": True}}, "ranking.2"),
    ({"ranking": {"1": 1, "2": 2, "99": 1}}, "ranking.99"),
    ({"ranking": {"1": 1, "2": 2}, "colour": "red"}, "colour"),
    ({"ranking": {"1": 1, "2": 2}, "scores": {"tone": {"1": 3}}}, "scores.tone"),
    ({"ranking": {"1": 1, "2": 2}, "scores": {"helpful": {"1": 6}}}, "scores.helpful.1"),
    ({"ranking": {"1": 1, "2": 2}, "seconds_spent": -1}, "seconds_spent"),
    ({"ranking": {"1": 1, "2": 2}, "all_bad": "yes"}, "all_bad"),
    ({"ranking": {"1": 1, "2": 2}, "rationale": 5}, "rationale"),
])
def test_bad_payloads_name_the_field_and_write_nothing(db, make_user, make_project, payload, field):
    make_project("demo", n_tasks=1, criteria=["helpful"])
    alice = make_user("alice")
    task_id, order, _ = lease(db, alice)
    assert sorted(order) == [1, 2]  # response ids 1 and 2 in a fresh database
    with pytest.raises(LabelerError) as err:
        submit(db, task_id, alice, payload)
    assert err.value.field == field and err.value.status in (400, 422)
    assert n_annotations(db) == 0


def test_all_bad_without_ranking_ties_everything(db, make_user, make_project):
    make_project("demo", n_tasks=1, k=3)
    alice = make_user("alice")
    task_id, order, _ = lease(db, alice)
    annotation_id, _ = submit(db, task_id, alice, {"all_bad": True})
    with db.read() as session:
        assert session.get(Annotation, annotation_id).ranking == {str(r): 1 for r in order}


def test_asking_again_renews_the_held_lease(db, make_user, make_project):
    make_project("demo", n_tasks=1, overlap=1, lease_seconds=60)
    alice, bob = make_user("alice"), make_user("bob")
    t0 = utcnow()
    task_id, order, first_expiry = lease(db, alice, now=t0)
    assert first_expiry == t0 + dt.timedelta(seconds=60)
    again = lease(db, alice, now=t0 + dt.timedelta(seconds=50))
    assert again == (task_id, order, t0 + dt.timedelta(seconds=110))
    # past the first expiry, inside the renewed one: still alice's, so bob gets nothing
    assert lease(db, bob, now=t0 + dt.timedelta(seconds=100)) is None
    assert lease(db, bob, now=t0 + dt.timedelta(seconds=111))[0] == task_id


def test_a_lease_never_outgrows_a_datetime(db, make_user, make_project):
    # a row from before lease_seconds was bounded (the API took 10**12) must not break next-task for ever
    make_project("demo", n_tasks=1)
    with db.write() as session:
        session.scalar(select(Project)).lease_seconds = 2**31 - 1  # 68 years: the largest INTEGER PostgreSQL stores
    task_id, _, expiry = lease(db, make_user("alice"))
    assert expiry - utcnow() <= dt.timedelta(days=30)


def test_a_stale_update_is_refused_and_writes_nothing(db, make_user, make_project):
    # the load test's case: a request abandoned on a timeout arrives after its retry and a later update
    make_project("demo", n_tasks=1, k=2)
    alice = make_user("alice")
    task_id, order, _ = lease(db, alice)
    first = {"ranking": {str(order[0]): 1, str(order[1]): 2}}
    newer = {"ranking": {str(order[0]): 2, str(order[1]): 1}, "version": 1}
    annotation_id, created = submit(db, task_id, alice, first)      # the retry lands first: version 1
    assert created and submit(db, task_id, alice, newer) == (annotation_id, False)  # version 2
    assert submit(db, task_id, alice, newer) == (annotation_id, False)  # newer's own retry: a no-op
    # the late original (no version), and edits made from version 1, are refused and write nothing
    for stale in (first, {**first, "version": 1}, {**newer, "all_bad": True}):
        with pytest.raises(LabelerError) as err:
            submit(db, task_id, alice, stale)
        assert err.value.status == 409 and err.value.field == "version"
    with db.read() as session:
        row = session.get(Annotation, annotation_id)
        assert row.ranking == newer["ranking"] and row.version == 2 and not row.all_bad
    with pytest.raises(LabelerError) as err:  # a version for an annotation that does not exist
        submit(db, task_id, make_user("bob"), {**first, "version": 1})
    assert err.value.status == 409 and n_annotations(db) == 1
    with db.read() as session:
        assert session.get(Annotation, annotation_id).ranking == newer["ranking"]


def taken_mismatches(db) -> list[tuple]:
    """Kept counts that differ from a fresh count: ("task", id, Task.taken, annotations + active leases) and
    ("project", id, Project.open_tasks, tasks below the overlap)."""

    with db.read() as session:
        annotations = dict(session.execute(select(Annotation.task_id, func.count()).group_by(Annotation.task_id)).all())
        leases = dict(session.execute(select(Assignment.task_id, func.count()).where(Assignment.status == "active")
                                      .group_by(Assignment.task_id)).all())
        tasks = list(session.scalars(select(Task)))
        wrong = [("task", t.id, t.taken, annotations.get(t.id, 0) + leases.get(t.id, 0)) for t in tasks
                 if t.taken != annotations.get(t.id, 0) + leases.get(t.id, 0)]
        for project in session.scalars(select(Project)):
            counted = sum(1 for t in tasks if t.project_id == project.id and t.taken < project.overlap)
            if project.open_tasks != counted:
                wrong.append(("project", project.id, project.open_tasks, counted))
        return wrong


def test_taken_counts_annotations_and_active_leases_through_every_transition(db, make_user, make_project):
    make_project("demo", n_tasks=2, overlap=2, lease_seconds=60)
    ann, bob, cat = make_user("ann"), make_user("bob"), make_user("cat")
    t0 = utcnow()
    first = lease(db, ann, now=t0)[0]
    assert lease(db, ann, now=t0)[0] == first  # a held lease is not counted again
    assert taken_mismatches(db) == []
    submit(db, first, ann, now=t0)  # lease -> annotation: the same slot
    submit(db, first, ann, now=t0)  # an update: nothing changes
    lease(db, bob, now=t0)
    assert taken_mismatches(db) == []
    later = t0 + dt.timedelta(seconds=120)
    lease(db, cat, now=later)  # reclaims bob's expired lease first
    assert taken_mismatches(db) == []
    lease(db, bob, now=later)  # bob's expired lease taken up again
    assert taken_mismatches(db) == []
    with db.read() as session:
        bob_task = session.scalar(select(Assignment.task_id).where(Assignment.user_id == bob.id, Assignment.status == "active"))
    even_later = later + dt.timedelta(seconds=120)
    lease(db, make_user("dan"), now=even_later)  # reclaims bob's and cat's leases
    submit(db, bob_task, bob, now=even_later)  # an expired, reclaimed lease submitted while capacity remains
    assert taken_mismatches(db) == []
    with db.read() as session:
        project = session.scalar(select(Project))
        # the first task is full (ann + bob... or dan): "remaining" comes from the kept counts
        assert progress(session, project, ann)["remaining"] == sum(
            1 for t in session.scalars(select(Task)) if t.taken < project.overlap and t.id != first)



@pytest.mark.parametrize("status", ["active", "expired"])
def test_a_change_beside_a_leftover_lease_finishes_it(db, make_user, make_project, status):
    """next_task never leases a task the annotator has annotated, but a lease row left beside an annotation (by
    hand, or an older version) is finished by the next change, its slot given back when it was counted."""
    from sqlalchemy import update

    make_project("demo", n_tasks=1, overlap=2)
    alice = make_user("alice")
    task_id, order, _ = lease(db, alice)
    annotation_id, _ = submit(db, task_id, alice, order=order)
    with db.write() as session:
        session.execute(update(Assignment).where(Assignment.user_id == alice.id).values(status=status))
        if status == "active":  # counted as leases are: the task is full
            session.execute(update(Task).where(Task.id == task_id).values(taken=Task.taken + 1))
            session.execute(update(Project).values(open_tasks=Project.open_tasks - 1))
    assert taken_mismatches(db) == []
    change = {"ranking": {str(order[0]): 2, str(order[1]): 1}, "version": 1}
    assert submit(db, task_id, alice, change) == (annotation_id, False)
    assert taken_mismatches(db) == []
    with db.read() as session:
        assert session.scalar(select(Assignment.status).where(Assignment.user_id == alice.id)) == "done"
        assert session.scalar(select(Task.taken)) == 1 and session.get(Annotation, annotation_id).version == 2

def test_choosing_the_next_task_reads_the_queue_index_not_every_task(db, make_user, make_project):
    """The plan, not a stopwatch: the query next_task runs reads ix_task_queue in its order (no sort of
    every task). bench_labeler.py measures the latency at 1,000 and 100,000 tasks."""
    from sqlalchemy import event

    make_project("demo", n_tasks=5)
    user = make_user("ann")
    if db.engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL's planner may well scan a 5-row table")
    seen = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "FROM task" in statement and "ORDER BY task.taken" in statement:
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        assert lease(db, user) is not None
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(seen) == 1
    with db.engine.connect() as conn:
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + seen[0][0], seen[0][1]))
    assert "ix_task_queue" in plan and "TEMP B-TREE" not in plan, plan
