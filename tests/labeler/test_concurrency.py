"""Twenty annotators submitting at once through the real server (`labeler serve`, threaded werkzeug, a
SQLite file in WAL mode): nothing acknowledged is lost, no task exceeds its overlap, no 5xx, no
"database is locked"."""

import threading
from collections import Counter

import requests
from sqlalchemy import select

from labeler.models import Annotation
from test_assignment import taken_mismatches

N_THREADS = 20
N_TASKS = 30
OVERLAP = 3


def test_twenty_threads_lose_nothing_and_never_exceed_overlap(live_server, db, make_user, make_token, make_project, tmp_path):
    make_project("race", n_tasks=N_TASKS, k=3, overlap=OVERLAP)
    tokens = [make_token(make_user(f"annotator{i:02d}")) for i in range(N_THREADS)]
    acknowledged: list[tuple[int, int, int]] = []  # (annotation id, task id, thread)
    statuses: Counter = Counter()
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(N_THREADS)

    def annotate(index: int, token: str):
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {token}"
        start.wait()  # all threads hit the server at the same moment
        try:
            while True:
                got = http.get(f"{live_server}/api/v1/projects/race/next", timeout=60)
                with lock:
                    statuses[got.status_code] += 1
                if got.status_code != 200:
                    failures.append(f"next: {got.status_code} {got.text[:200]}")
                    return
                task = got.json()["task"]
                if task is None:
                    return
                payload = {"ranking": {str(r["id"]): rank for rank, r in enumerate(task["responses"], start=1)}, "seconds_spent": 1.0}
                # every submission is sent twice, as a double click would: the second must not add a row
                for attempt in range(2):
                    sent = http.post(f"{live_server}/api/v1/tasks/{task['id']}/annotations", json=payload, timeout=60)
                    with lock:
                        statuses[sent.status_code] += 1
                        if sent.status_code in (200, 201):
                            acknowledged.append((sent.json()["annotation"]["id"], task["id"], index))
                        else:
                            failures.append(f"submit: {sent.status_code} {sent.text[:200]}")
                    if attempt == 1 and sent.status_code != 200:
                        failures.append(f"retry of task {task['id']} answered {sent.status_code}, expected 200")
        except Exception as err:  # noqa: BLE001 - a thread's crash must fail the test, not vanish
            failures.append(f"thread {index}: {err!r}")

    threads = [threading.Thread(target=annotate, args=(i, t)) for i, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"

    assert failures == [], failures[:5]
    assert not [code for code in statuses if code >= 500]
    log = (tmp_path / "server.log").read_text(errors="replace")
    assert "database is locked" not in log and "Traceback" not in log

    with db.read() as session:
        rows = {a.id: (a.task_id, a.user_id) for a in session.scalars(select(Annotation))}
    per_task = Counter(task_id for task_id, _ in rows.values())
    assert max(per_task.values()) <= OVERLAP
    # annotators finish only when nothing is left, so every slot got filled
    assert len(rows) == N_TASKS * OVERLAP and len(per_task) == N_TASKS
    # every acknowledged annotation is in the database, on the task it was acknowledged for
    for annotation_id, task_id, _ in acknowledged:
        assert rows.get(annotation_id, (None,))[0] == task_id
    assert len({a for a, _, _ in acknowledged}) == len(rows)
    assert statuses[201] == len(rows)
    assert taken_mismatches(db) == []  # the kept load (Task.taken) survived the race


def test_sqlite_writers_of_every_process_queue_on_one_file_lock(db, db_url, tmp_path):
    """gunicorn's workers are processes: db.write() holds flock(2) on '<database>-lock' (labeler.db.WriterLock),
    which any other descriptor of that file, as another process has, cannot take meanwhile."""
    import fcntl
    import os

    import pytest

    from labeler.db import sqlite_file

    if not db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL writers take row locks, not a file lock")
    other = os.open(sqlite_file(db_url) + "-lock", os.O_RDWR | os.O_CREAT)
    try:
        with db.write():
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released with the transaction
        fcntl.flock(other, fcntl.LOCK_UN)
    finally:
        os.close(other)
