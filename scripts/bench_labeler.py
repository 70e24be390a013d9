"""Load, latency and crash test of the labeler's real production server (`labeler serve`: gunicorn) over
loopback, with an audit of the database afterwards.

    .venv/bin/python scripts/bench_labeler.py                          # 50 clients x 10,000 submissions, SQLite
    .venv/bin/python scripts/bench_labeler.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python scripts/bench_labeler.py --clients 10 --submissions 500 --latency-tasks 200,2000 --crash-cycles 5
    scripts/pg_test_server.sh .venv/bin/python scripts/bench_labeler.py   # + PostgreSQL: load, SIGKILL and restart cycles

Phases:
  load     N annotator clients (threads, one token each) loop GET /projects/P/next -> POST the ranking; one
           submission in ten is a change to an earlier label of the same client (a different ranking, naming
           the version it replaces: a 409 here is an error).
           Then the audit: every acknowledged label is in the database with the content of its last
           acknowledgement (lost / stale overwrites), no (task, annotator) twice and no task above its
           overlap (duplicated), no 5xx (nor 503: nothing is down here), Task.taken equal to annotations + active leases, and SQLite's
           integrity check. Run on SQLite, and on PostgreSQL when --postgres-url names a server on which
           the bench may create a database.
  latency  one client, next and submit, on a project of 1,000 tasks and one of 100,000 (median ms).
  crash    N cycles: start the server on one database, let clients submit, SIGKILL the whole server
           (master and workers) at a random moment (0.2-2.5 s into the traffic); afterwards every label acknowledged before a kill
           must be there with its content, and the integrity check must pass. On SQLite, and on PostgreSQL
           with --postgres-url; there, when --postgres-restart names a command that stops the PostgreSQL
           server in immediate mode (SIGQUIT: no checkpoint, crash recovery at the next start) and starts it
           again (scripts/pg_test_server.sh exports one), M more cycles restart PostgreSQL itself under the
           clients and check that the server answers 2xx again afterwards. While the database is down the
           server must answer 503 with Retry-After (counted apart: expected there); any other 5xx is a
           failure. The crash database asks for
           synchronous_commit=on, PostgreSQL's default, which the throwaway test server turns off for speed.

Prints a table; the last line is one JSON object (submissions_per_s, p99_ms, lost, duplicated,
next_ms_ratio_100k_1k, ...). Every server and client runs on this machine: figures measured while other
work shares the CPU say so little about the server that they should be labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests
import urllib3
from sqlalchemy import create_engine, func, insert, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from labeler.accounts import create_token  # noqa: E402
from labeler.assignment import recount_open_tasks  # noqa: E402
from labeler.db import Database, upgrade_database  # noqa: E402
from labeler.importer import canonical_hash, import_tasks, task_hash  # noqa: E402
from labeler.models import Annotation, Assignment, Project, Prompt, Response, Task, User  # noqa: E402
from labeler.projects import create_project  # noqa: E402

SECRET = "bench-secret-key-" + "x" * 16
CHEAP_HASH = "pbkdf2:sha256:1000$bench$" + "0" * 64  # nobody logs in with a password here


# ---- setup ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_database(admin_url: str, durable: bool = False) -> str:
    """A fresh database on the PostgreSQL server of admin_url; returns its URL. durable: its sessions commit
    with synchronous_commit=on (a database setting outranks the server's command line), so that a commit is
    in the WAL before it is acknowledged, whatever the server's own setting."""
    from sqlalchemy.engine import make_url

    name = f"labeler_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        if durable:
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def seed(url: str, project: str, n_tasks: int, k: int, overlap: int, n_users: int) -> list[str]:
    """Schema, a project of n_tasks tasks, n_users annotators; their tokens.

    The first 1,000 tasks go through labeler.importer; the rest are bulk-inserted rows of the same shape
    (the importer's per-task flush would make seeding 100,000 tasks take minutes, and seeding is not
    what is measured)."""
    upgrade_database(url)
    db = Database(url)

    def rows(start, stop):
        return [{"prompt": f"{project} prompt {i}", "meta": {"i": i}, "gold_ranking": None,
                 "responses": [{"text": f"answer {i}.{j} " + "lorem ipsum " * 8, "model": f"m{j}", "meta": {}} for j in range(k)]}
                for i in range(start, stop)]

    try:
        with db.write() as session:
            project_row = create_project(session, project, k=k, overlap=overlap, lease_seconds=600)
            import_tasks(session, project_row, rows(0, min(n_tasks, 1000)), source="bench")
            project_id = project_row.id
        for start in range(1000, n_tasks, 20_000):
            bulk_tasks(db, project_id, rows(start, min(start + 20_000, n_tasks)))
        tokens = []
        with db.write() as session:
            for i in range(n_users):
                user = User(username=f"bench{i:03d}", password_hash=CHEAP_HASH, role="annotator", active=True, simulated=True)
                session.add(user)
                session.flush()
                tokens.append(create_token(session, user, name="bench"))
        return tokens
    finally:
        db.dispose()


def bulk_tasks(db: Database, project_id: int, tasks: list[dict]) -> None:
    with db.write() as session:
        prompt_id = session.scalar(select(func.max(Prompt.id))) or 0
        task_id = session.scalar(select(func.max(Task.id))) or 0
        response_id = session.scalar(select(func.max(Response.id))) or 0
        prompts, task_rows, responses = [], [], []
        for task in tasks:
            prompt_id, task_id = prompt_id + 1, task_id + 1
            prompts.append({"id": prompt_id, "project_id": project_id, "prompt": task["prompt"], "meta": {},
                            "prompt_hash": canonical_hash(task["prompt"])})
            task_rows.append({"id": task_id, "project_id": project_id, "prompt_id": prompt_id, "content_hash": task_hash(task),
                              "meta": task["meta"], "source": "bench", "is_gold": False, "taken": 0})
            for position, response in enumerate(task["responses"]):
                response_id += 1
                responses.append({"id": response_id, "task_id": task_id, "position": position, "text": response["text"],
                                  "model": response["model"], "meta": {}})
        session.execute(insert(Prompt), prompts)
        session.execute(insert(Task), task_rows)
        session.execute(insert(Response), responses)
        recount_open_tasks(session, session.get(Project, project_id))  # the rows went around the ORM's insert event
        if session.bind.dialect.name == "postgresql":  # explicit ids leave the sequences behind
            for table in ("prompt", "task", "response"):
                session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))


class Server:
    """`labeler serve` (gunicorn) as a process group, so that a SIGKILL reaches the master and its workers."""

    def __init__(self, url: str, workers: int, threads: int, log: Path):
        self.url, self.workers, self.threads, self.log = url, workers, threads, log
        self.proc: subprocess.Popen | None = None
        self.base = ""

    def start(self, timeout: float = 60) -> str:
        port = free_port()
        env = {**os.environ, "LABELER_SECRET_KEY": SECRET, "LABELER_API_RATE_LIMIT": "100000 per minute"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labeler.cli", "serve", "--db", self.url, "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(self.workers), "--threads", str(self.threads),
                 # in the work folder: a killed server cannot remove its default file from $TMPDIR
                 "--rate-limit-storage", f"sqlite:///{self.log.parent / 'limits.db'}"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/api/v1/openapi.json", timeout=2).status_code == 200:
                    return self.base
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"labeler serve did not start; log: {self.log}\n{self.log.read_text(errors='replace')[-2000:]}")

    def cpu_seconds(self) -> float:
        """User + system CPU of every process in the server's group (gunicorn's master and workers)."""
        total, tick = 0, os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if self.proc is not None and int(fields[2]) == self.proc.pid:  # fields[2]: the process group
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


# ---- clients -------------------------------------------------------------------------------------------


class Answer:
    def __init__(self, response: urllib3.BaseHTTPResponse):
        self.status_code, self.data = response.status, response.data
        self.retry_after = response.headers.get("Retry-After")

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.data)


class Client:
    """One annotator's keep-alive connection, on urllib3 (which requests wraps): the clients share the
    server's two cores, and requests' own layers cost about as much CPU again as urllib3's. No retries: a
    request is sent once, as the ledger assumes."""

    Error = (urllib3.exceptions.HTTPError, OSError)

    def __init__(self, base: str, token: str):
        self.pool = urllib3.connection_from_url(base, maxsize=1, block=True, retries=False,
                                                timeout=urllib3.Timeout(30), headers={"Authorization": f"Bearer {token}"})

    def get(self, path: str) -> Answer:
        return Answer(self.pool.request("GET", path))

    def post(self, path: str, body: dict) -> Answer:
        return Answer(self.pool.request("POST", path, json=body))


class Ledger:
    """What the clients were told: the last acknowledged label per (task, token), status codes, latencies."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked: dict[tuple[int, int], tuple[int, dict]] = {}  # (task id, client) -> (annotation id, ranking)
        # rankings sent after the last acknowledgement whose answer never came (the server died): the
        # database may hold one of these instead, which is not a stale overwrite
        self.unanswered: dict[tuple[int, int], list[dict]] = {}
        self.created: Counter = Counter()  # (task id, client) -> number of 201s
        self.statuses: Counter = Counter()
        self.unavailable_without_retry_after = 0  # 503s that did not say when to come back
        self.errors: list[str] = []
        self.latency: dict[str, list[float]] = {"next": [], "submit": []}
        self.submitted = 0
        self.acknowledgements = 0  # 2xx answers to submissions


def count_status(ledger: Ledger, answer: Answer) -> None:
    """Under ledger.lock."""
    ledger.statuses[answer.status_code] += 1
    if answer.status_code == 503 and not (answer.retry_after or "").isdigit():
        ledger.unavailable_without_retry_after += 1


def unavailable(ledger: Ledger) -> int:
    return ledger.statuses.get(503, 0)


def server_errors(ledger: Ledger) -> int:
    """5xx other than 503: a 500 is a bug, whatever the database did."""
    return sum(n for code, n in ledger.statuses.items() if code >= 500 and code != 503)


def ranking_for(order: list[int], variant: int) -> dict[str, int]:
    ids = order if variant % 2 == 0 else list(reversed(order))
    return {str(rid): rank for rank, rid in enumerate(ids, start=1)}


def run_client(base: str, token: str, client: int, ledger: Ledger, budget: "Budget", stop: threading.Event,
               expect_failures: bool, rng: random.Random) -> None:
    http = Client(base, token)
    mine: list[int] = []  # tasks whose label this client had acknowledged, in that order
    orders: dict[int, list[int]] = {}  # task id -> its display order
    versions: dict[int, int] = {}  # task id -> the version of this client's label last acknowledged
    variants: Counter = Counter()
    while not stop.is_set() and budget.take():
        try:
            change = bool(mine) and rng.random() < 0.1
            if change:  # a change of mind: a new ranking for an earlier task, naming the version it replaces
                task_id = rng.choice(mine)
                order = orders[task_id]
            else:
                t0 = time.perf_counter()
                got = http.get("/api/v1/projects/bench/next")
                with ledger.lock:
                    ledger.latency["next"].append(time.perf_counter() - t0)
                    count_status(ledger, got)
                if got.status_code != 200:
                    budget.give_back()
                    if (got.status_code >= 500 and got.status_code != 503) or not expect_failures:
                        ledger.errors.append(f"next: {got.status_code} {got.text[:200]}")
                    if expect_failures:
                        time.sleep(0.1)  # the database is down: back off as a real client would
                    continue
                task = got.json()["task"]
                if task is None:
                    budget.give_back()
                    return
                task_id, order = task["id"], [r["id"] for r in task["responses"]]
                orders[task_id] = order
            variants[task_id] += 1
            ranking = ranking_for(order, variants[task_id])
            body = {"ranking": ranking, "seconds_spent": 1.0, **({"version": versions[task_id]} if change else {})}
            with ledger.lock:
                ledger.unanswered.setdefault((task_id, client), []).append(ranking)
            t0 = time.perf_counter()
            sent = http.post(f"/api/v1/tasks/{task_id}/annotations", body)
            elapsed = time.perf_counter() - t0
            with ledger.lock:
                # after a 5xx the label may be stored: a 503 whose connection died during COMMIT cannot know
                if sent.status_code < 500:
                    ledger.unanswered[(task_id, client)].remove(ranking)
                ledger.latency["submit"].append(elapsed)
                count_status(ledger, sent)
                ledger.submitted += 1
                if sent.status_code in (200, 201):
                    ledger.acknowledgements += 1
                    stored = sent.json()["annotation"]
                    ledger.acked[(task_id, client)] = (stored["id"], ranking)
                    if task_id not in versions:
                        mine.append(task_id)
                    versions[task_id] = stored["version"]
                    ledger.unanswered[(task_id, client)] = []
                    if sent.status_code == 201:
                        ledger.created[(task_id, client)] += 1
                elif (sent.status_code >= 500 and sent.status_code != 503) or not expect_failures:
                    ledger.errors.append(f"submit {task_id}: {sent.status_code} {sent.text[:200]}")
            if sent.status_code >= 500 and expect_failures:
                time.sleep(0.1)
        except Client.Error as err:
            # a request in flight when the server was killed: not acknowledged, so nothing is owed
            if not expect_failures:
                with ledger.lock:
                    ledger.errors.append(f"client {client}: {err!r}")
            budget.give_back()
            if expect_failures:
                return


class Budget:
    """A shared count of operations left, so that N clients make exactly `total` submissions together."""

    def __init__(self, total: int):
        self.left, self.lock = total, threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True

    def give_back(self) -> None:
        with self.lock:
            self.left += 1


def drive(base: str, tokens: list[str], total: int, ledger: Ledger, *, seconds: float | None = None,
          expect_failures: bool = False, seed: int = 0, user_ids: list[int] | None = None,
          during=None) -> float:
    """N client threads; without `seconds`, until `total` submissions are made. With `seconds`, return after
    that long: the caller kills the server and the threads end on their errors. With `during` too, call
    during() after `seconds` (it restarts the database under the clients), then stop the clients and wait."""
    budget, stop = Budget(total), threading.Event()
    threads = [threading.Thread(target=run_client, args=(base, tok, (user_ids or range(len(tokens)))[i], ledger, budget, stop,
                                                         expect_failures, random.Random(seed * 1000 + i)), daemon=True)
               for i, tok in enumerate(tokens)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    if seconds is not None:
        time.sleep(seconds)
        if during is None:
            return time.perf_counter() - t0  # the caller kills the server; the threads end on their errors
        during()
        stop.set()
    for thread in threads:
        thread.join()
    return time.perf_counter() - t0


# ---- audit ---------------------------------------------------------------------------------------------


def user_ids_by_token_order(url: str, n: int) -> list[int]:
    db = Database(url)
    try:
        with db.read() as session:
            return [session.scalar(select(User.id).where(User.username == f"bench{i:03d}")) for i in range(n)]
    finally:
        db.dispose()


def audit(url: str, ledger: Ledger) -> dict:
    """Compare the database with what the clients were told (ledger.acked is keyed by (task, user id))."""
    db = Database(url)
    try:
        with db.read() as session:
            stored = {(a.task_id, a.user_id): (a.id, a.ranking) for a in session.scalars(select(Annotation))}
            per_task = Counter(task for task, _ in stored)
            overlap = session.scalar(select(Project.overlap).where(Project.name == "bench"))
            annotations = dict(session.execute(select(Annotation.task_id, func.count()).group_by(Annotation.task_id)).all())
            leases = dict(session.execute(select(Assignment.task_id, func.count()).where(Assignment.status == "active")
                                          .group_by(Assignment.task_id)).all())
            tasks = session.execute(select(Task.id, Task.taken)).all()
            taken_wrong = sum(1 for t in tasks if t.taken != annotations.get(t.id, 0) + leases.get(t.id, 0))
            open_kept = session.scalar(select(Project.open_tasks).where(Project.name == "bench"))
            taken_wrong += int(open_kept != sum(1 for t in tasks if t.taken < overlap))  # the project's kept count
            integrity = "n/a"
            if db.engine.dialect.name == "sqlite":
                integrity = session.connection().exec_driver_sql("PRAGMA integrity_check").scalar()
    finally:
        db.dispose()
    lost = sum(1 for key, (aid, _) in ledger.acked.items() if key not in stored or stored[key][0] != aid)
    stale = sum(1 for key, (_, ranking) in ledger.acked.items()
                if key in stored and stored[key][1] != ranking and stored[key][1] not in ledger.unanswered.get(key, []))
    duplicated = sum(n - 1 for n in ledger.created.values() if n > 1) + sum(n - overlap for n in per_task.values() if n > overlap)
    return {"acknowledged": len(ledger.acked), "stored": len(stored), "lost": lost, "duplicated": duplicated,
            "stale_overwrites": stale, "server_errors": server_errors(ledger), "unavailable": unavailable(ledger),
            "unavailable_without_retry_after": ledger.unavailable_without_retry_after,
            "taken_mismatches": taken_wrong, "integrity": integrity}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- phases --------------------------------------------------------------------------------------------


def load_phase(label: str, url: str, args, work: Path) -> dict:
    n_tasks = args.submissions // args.overlap + args.submissions // 10 + 100
    print(f"[{label}] seeding {n_tasks} tasks, {args.clients} annotators ...", flush=True)
    tokens = seed(url, "bench", n_tasks, k=3, overlap=args.overlap, n_users=args.clients)
    ids = user_ids_by_token_order(url, args.clients)
    server = Server(url, args.workers, args.threads, work / f"server-{label}.log")
    server.start()
    ledger = Ledger()
    try:
        print(f"[{label}] {args.clients} clients x {args.submissions} submissions ...", flush=True)
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        seconds = drive(server.base, tokens, args.submissions, ledger, user_ids=ids)
        server_cpu, client_cpu = server.cpu_seconds() - server_cpu, time.process_time() - client_cpu
    finally:
        server.stop()
    result = audit(url, ledger)
    lat = ledger.latency["next"] + ledger.latency["submit"]
    result.update({
        "backend": label, "seconds": round(seconds, 2), "submissions": ledger.submitted,
        "submissions_per_s": round(ledger.submitted / seconds, 1),
        "p50_ms": round(pct(lat, 0.50), 1), "p99_ms": round(pct(lat, 0.99), 1),
        "submit_p99_ms": round(pct(ledger.latency["submit"], 0.99), 1),
        "next_p99_ms": round(pct(ledger.latency["next"], 0.99), 1),
        "statuses": dict(sorted(ledger.statuses.items())), "client_errors": len(ledger.errors),
        # CPU spent per submission (with its next): what bounds the rate when every process shares the cores
        "server_cpu_ms_per_submission": round(1000 * server_cpu / max(ledger.submitted, 1), 2),
        "client_cpu_ms_per_submission": round(1000 * client_cpu / max(ledger.submitted, 1), 2),
    })
    if ledger.errors:
        print(f"[{label}] first client errors: {ledger.errors[:3]}", flush=True)
    return result


def latency_phase(n_tasks: int, args, work: Path) -> dict:
    url = f"sqlite:///{work / f'latency-{n_tasks}.db'}"
    print(f"[latency] seeding {n_tasks} tasks ...", flush=True)
    token = seed(url, "bench", n_tasks, k=3, overlap=1, n_users=1)[0]
    server = Server(url, args.workers, args.threads, work / f"server-latency-{n_tasks}.log")
    server.start()
    http = Client(server.base, token)
    times = {"next": [], "submit": []}
    try:
        for i in range(args.latency_rounds + 5):
            t0 = time.perf_counter()
            task = http.get("/api/v1/projects/bench/next").json()["task"]
            t1 = time.perf_counter()
            ranking = ranking_for([r["id"] for r in task["responses"]], 0)
            response = http.post(f"/api/v1/tasks/{task['id']}/annotations", {"ranking": ranking})
            t2 = time.perf_counter()
            assert response.status_code == 201, response.text
            if i >= 5:  # the first requests warm up each worker's connections and caches
                times["next"].append(t1 - t0)
                times["submit"].append(t2 - t1)
    finally:
        server.stop()
    return {"tasks": n_tasks, "next_ms": round(1000 * statistics.median(times["next"]), 2),
            "submit_ms": round(1000 * statistics.median(times["submit"]), 2)}


def restart_postgres(command: str) -> float:
    """Run the command that stops PostgreSQL in immediate mode and starts it again; returns its seconds."""
    t0 = time.perf_counter()
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"the PostgreSQL restart command failed ({done.returncode}): {command}\n{done.stdout}{done.stderr}")
    return time.perf_counter() - t0


def crash_phase(label: str, url: str, args, work: Path, restart_cycles: int = 0, restart_command: str = "") -> dict:
    """SIGKILL cycles of the labeler server, then restart_cycles immediate restarts of PostgreSQL under the
    clients (the labeler server stays up); then the audit of every acknowledged label."""
    n_tasks = (args.crash_cycles + restart_cycles) * args.clients * 20 + 100
    print(f"[crash {label}] seeding {n_tasks} tasks; {args.crash_cycles} SIGKILL cycles"
          + (f", {restart_cycles} PostgreSQL restarts" if restart_cycles else "") + " ...", flush=True)
    tokens = seed(url, "bench", n_tasks, k=3, overlap=1, n_users=args.clients)
    ids = user_ids_by_token_order(url, args.clients)
    ledger = Ledger()
    rng = random.Random(7)
    server = Server(url, args.workers, args.threads, work / f"server-crash-{label}.log")
    for cycle in range(args.crash_cycles):
        server.start()
        # clients run, then the server dies mid-request: kill after a random 0.2-2.5 s of traffic
        drive(server.base, tokens, 10**9, ledger, seconds=rng.uniform(0.2, 2.5), expect_failures=True, seed=cycle, user_ids=ids)
        server.kill()
        time.sleep(0.05)  # let the client threads see the closed connections and stop
    restarts, recovered, restart_seconds = 0, 0, []
    if restart_cycles:
        server.start()
        try:
            for cycle in range(restart_cycles):
                marks = {}

                def restart():
                    restart_seconds.append(restart_postgres(restart_command))
                    marks["after_restart"] = ledger.acknowledgements
                    time.sleep(1.5)  # the clients carry on against the restarted database

                drive(server.base, tokens, 10**9, ledger, seconds=rng.uniform(0.2, 2.5), expect_failures=True,
                      seed=args.crash_cycles + cycle, user_ids=ids, during=restart)
                restarts += 1
                recovered += int(ledger.acknowledgements > marks["after_restart"])  # 2xx again after the restart
        finally:
            server.stop()
    result = audit(url, ledger)
    result.update({"backend": label, "cycles": args.crash_cycles, "missing": result["lost"], "postgres_restarts": restarts,
                   "recovered_after_restart": recovered,
                   "restart_s_median": round(statistics.median(restart_seconds), 2) if restart_seconds else None,
                   "answered_503": unavailable(ledger), "answered_5xx": server_errors(ledger)})
    return result


# ---- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--submissions", type=int, default=10_000, help="POSTs of labels in the load phase, all clients together")
    parser.add_argument("--overlap", type=int, default=2, help="annotators per task in the load phase")
    parser.add_argument("--workers", type=int, default=2, help="labeler serve --workers")
    parser.add_argument("--threads", type=int, default=8, help="labeler serve --threads")
    parser.add_argument("--postgres-url", default=os.environ.get("LABELER_TEST_POSTGRES_URL", ""),
                        help="a PostgreSQL server where the bench may CREATE DATABASE (default: $LABELER_TEST_POSTGRES_URL)")
    parser.add_argument("--latency-tasks", default="1000,100000", help="two queue sizes for the next/submit latency")
    parser.add_argument("--latency-rounds", type=int, default=200)
    parser.add_argument("--crash-cycles", type=int, default=100, help="SIGKILL cycles of the labeler server, per backend")
    parser.add_argument("--postgres-restart", default=os.environ.get("LABELER_TEST_POSTGRES_RESTART", ""),
                        help="a shell command that stops the PostgreSQL server of --postgres-url in immediate mode and starts it "
                             "again (default: $LABELER_TEST_POSTGRES_RESTART, which scripts/pg_test_server.sh sets)")
    parser.add_argument("--postgres-restart-cycles", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated phases to skip: load (both backends), postgres "
                                                   "(everything on PostgreSQL), latency, crash (both backends)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep databases and server logs here (default: a temp folder)")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-labeler-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench_labeler: work folder {work}; cpu count {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}", flush=True)

    loads = []
    if "load" not in skip:
        loads.append(load_phase("sqlite", f"sqlite:///{work / 'load.db'}", args, work))
    if args.postgres_url and "postgres" not in skip and "load" not in skip:
        loads.append(load_phase("postgresql", postgres_database(args.postgres_url), args, work))
    latency = []
    if "latency" not in skip:
        small, large = (int(n) for n in args.latency_tasks.split(","))
        latency = [latency_phase(small, args, work), latency_phase(large, args, work)]
    crashes = []
    if "crash" not in skip and args.crash_cycles > 0:
        crashes.append(crash_phase("sqlite", f"sqlite:///{work / 'crash.db'}", args, work))
        if args.postgres_url and "postgres" not in skip:
            restarts = args.postgres_restart_cycles if args.postgres_restart else 0
            if not args.postgres_restart:
                print("[crash postgresql] no --postgres-restart command: SIGKILL cycles of the labeler server only", flush=True)
            crashes.append(crash_phase("postgresql", postgres_database(args.postgres_url, durable=True), args, work,
                                       restart_cycles=restarts, restart_command=args.postgres_restart))
    crash = crashes[0] if crashes else None

    print()
    if loads:
        print(f"{'backend':<11} {'subs':>6} {'subs/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'acked':>6} {'lost':>5} {'dup':>4} {'stale':>5} "
              f"{'5xx':>4} {'503':>4} {'taken!':>6} {'integrity':>9} {'srv cpu ms':>10} {'cli cpu ms':>10}")
        for r in loads:
            print(f"{r['backend']:<11} {r['submissions']:>6} {r['submissions_per_s']:>7} {r['p50_ms']:>7} {r['p99_ms']:>7} "
                  f"{r['acknowledged']:>6} {r['lost']:>5} {r['duplicated']:>4} {r['stale_overwrites']:>5} {r['server_errors']:>4} {r['unavailable']:>4} "
                  f"{r['taken_mismatches']:>6} {r['integrity']:>9} {r['server_cpu_ms_per_submission']:>10} {r['client_cpu_ms_per_submission']:>10}")
        print("(5xx: server errors other than 503, a failure; 503: database unavailable, a failure here too, where nothing is down;\n"
              " srv/cli cpu ms: CPU time of the server's processes / of this bench's client threads per submission with its next)")
    if latency:
        print(f"\n{'tasks':>7} {'next ms':>8} {'submit ms':>9}   (one client, median of {args.latency_rounds})")
        for r in latency:
            print(f"{r['tasks']:>7} {r['next_ms']:>8} {r['submit_ms']:>9}")
    for c in crashes:
        print(f"\ncrash {c['backend']}: {c['cycles']} SIGKILL cycles"
              + (f" + {c['postgres_restarts']} PostgreSQL restarts (immediate; median {c['restart_s_median']} s; "
                 f"2xx again after {c['recovered_after_restart']})" if c["postgres_restarts"] else "")
              + f", {c['acknowledged']} labels acknowledged, {c['missing']} missing, {c['stale_overwrites']} stale, "
              f"{c['duplicated']} duplicated, integrity {c['integrity']}, taken mismatches {c['taken_mismatches']}, "
              f"{c['answered_503']} answered 503 (database unavailable; "
              f"{c['unavailable_without_retry_after']} without Retry-After), {c['answered_5xx']} answered another 5xx")
    first = loads[0] if loads else {}
    summary = {
        "submissions_per_s": first.get("submissions_per_s"), "p99_ms": first.get("p99_ms"),
        "lost": sum(r["lost"] for r in loads) + sum(c["missing"] for c in crashes),
        "duplicated": sum(r["duplicated"] for r in loads) + sum(c["duplicated"] for c in crashes),
        "stale_overwrites": sum(r["stale_overwrites"] for r in loads),
        "server_errors": sum(r["server_errors"] for r in loads) + sum(c["answered_5xx"] for c in crashes),
        "unavailable_503": sum(r["unavailable"] for r in loads),
        "next_ms_ratio_100k_1k": round(latency[1]["next_ms"] / latency[0]["next_ms"], 2) if latency else None,
        "submit_ms_ratio_100k_1k": round(latency[1]["submit_ms"] / latency[0]["submit_ms"], 2) if latency else None,
        "crash_missing": crash["missing"] if crash else None, "crash_integrity": crash["integrity"] if crash else None,
        "crash_postgresql": {k: c[k] for k in ("cycles", "postgres_restarts", "recovered_after_restart", "acknowledged",
                                               "missing", "stale_overwrites", "duplicated", "taken_mismatches",
                                               "answered_503", "unavailable_without_retry_after", "answered_5xx")}
        if len(crashes) > 1 else None,
        "server_cpu_ms_per_submission": first.get("server_cpu_ms_per_submission"),
        "client_cpu_ms_per_submission": first.get("client_cpu_ms_per_submission"),
        "postgresql": next((r for r in loads if r["backend"] == "postgresql"), None) is not None,
        "clients": args.clients, "workers": args.workers, "threads": args.threads,
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
