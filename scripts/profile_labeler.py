"""Where a submission's server CPU goes: the labeler's request path in-process, no sockets, no gunicorn.

    .venv/bin/python scripts/profile_labeler.py                      # 5 rounds of 500 submissions, then a profile
    .venv/bin/python scripts/profile_labeler.py --sort tottime --top 40
    .venv/bin/python scripts/profile_labeler.py --filter 'labeler/'   # only the project's own functions
    .venv/bin/python scripts/profile_labeler.py --set RATELIMIT_ENABLED=false   # Flask-Limiter's share, by difference

The app that `labeler serve` runs (create_app, the SQLite rate-limit storage, the real API views) on a
SQLite file seeded as scripts/bench_labeler.py seeds it, driven through Flask's test client by 20
annotators in turn: GET next then POST the ranking, and one submission in ten a change of an earlier label
naming its version. Prints, per submission (with its next):
  - CPU ms without a profiler: min and median of the rounds (time.process_time; other work on the
    machine slows it, so the min is the better figure on a shared machine),
  - SQL statements (SQLAlchemy's before_cursor_execute; BEGIN and COMMIT included),
  - Python function calls under cProfile: the same count whatever else runs on the machine,
then cProfile's table. bench_labeler.py measures the real server over loopback.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import bench_labeler as bench  # noqa: E402
from labeler.app import create_app  # noqa: E402
from labeler.db import get_db  # noqa: E402

ANNOTATORS = 20


class Annotators:
    """ANNOTATORS tokens taking turns; cycle(i) is one submission (with its next, 9 times in 10)."""

    def __init__(self, client, tokens: list[str]):
        self.client, self.tokens = client, tokens
        self.last: dict[str, tuple[int, list[int], int]] = {}  # token -> (task id, display order, version)

    def cycle(self, i: int) -> None:
        token = self.tokens[i % len(self.tokens)]
        headers = {"Authorization": f"Bearer {token}"}
        if token in self.last and i % 10 == 0:  # a change of mind, naming the version it replaces
            task_id, order, version = self.last[token]
            body = {"ranking": bench.ranking_for(order, version), "seconds_spent": 1.0, "version": version}
            expected = 200
        else:
            task = self.client.get("/api/v1/projects/bench/next", headers=headers).json["task"]
            task_id, order = task["id"], [r["id"] for r in task["responses"]]
            body, expected = {"ranking": bench.ranking_for(order, 0), "seconds_spent": 1.0}, 201
        answer = self.client.post(f"/api/v1/tasks/{task_id}/annotations", json=body, headers=headers)
        if answer.status_code != expected:
            raise SystemExit(f"submission {i}: {answer.status_code} {answer.get_data(as_text=True)[:300]}")
        self.last[token] = (task_id, order, answer.json["annotation"]["version"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submissions", type=int, default=500, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sort", default="cumulative", help="cProfile's sort key (cumulative, tottime, ncalls)")
    parser.add_argument("--top", type=int, default=30, help="rows of the profile table (0: none)")
    parser.add_argument("--filter", default="", help="a regular expression the table's rows must match")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an app setting for create_app (true/false/integers as such), e.g. RATELIMIT_ENABLED=false")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)

    work = Path(tempfile.mkdtemp(prefix="profile-labeler-"))
    n = args.submissions
    url = f"sqlite:///{work / 'labels.db'}"
    tokens = bench.seed(url, "bench", n * (args.rounds + 2) + 200, k=3, overlap=2, n_users=ANNOTATORS)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": bench.SECRET, "API_RATE_LIMIT": "100000 per minute",
                      "RATE_LIMIT_STORAGE": f"sqlite:///{work / 'limits.db'}", **settings})  # as `labeler serve` has it
    statements = [0]
    event.listen(get_db(app).engine, "before_cursor_execute", lambda *_: statements.__setitem__(0, statements[0] + 1))
    annotators = Annotators(app.test_client(), tokens)
    for i in range(100):  # warm up: connections, caches, compiled statements
        annotators.cycle(i)

    start, ms = 100, []
    statements[0] = 0
    for _ in range(args.rounds):
        t0 = time.process_time()
        for i in range(start, start + n):
            annotators.cycle(i)
        ms.append(1000 * (time.process_time() - t0) / n)
        start += n
    per_submission = statements[0] / (n * args.rounds)

    profile = cProfile.Profile()
    profile.enable()
    for i in range(start, start + n):
        annotators.cycle(i)
    profile.disable()
    stats = pstats.Stats(profile)
    print(f"CPU ms per submission: min {min(ms):.2f}, median {statistics.median(ms):.2f} "
          f"({args.rounds} rounds of {n}: {' '.join(f'{m:.2f}' for m in ms)})")
    print(f"SQL statements per submission: {per_submission:.1f}")
    print(f"Python function calls per submission: {stats.total_calls / n:.0f} (under cProfile: {1000 * stats.total_tt / n:.2f} ms)")
    if args.top:
        stats.sort_stats(args.sort)
        stats.print_stats(*([args.filter] if args.filter else []), args.top)
    get_db(app).dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
