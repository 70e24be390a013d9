"""The crash test of scripts/bench_labeler.py, small: the real `labeler serve` (gunicorn) is SIGKILLed, master
and workers, while ten clients submit; on PostgreSQL the database server itself is also crashed (immediate
stop, then start) under the clients when scripts/pg_test_server.sh provides the command. Every label
acknowledged before a crash must be in the database with its last acknowledged content, nothing twice,
and the kept queue counts must equal fresh counts. While PostgreSQL is down the server answers 503 with
Retry-After, never a 500. The bench runs 100 cycles (docs/scaling.md)."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from sqlalchemy import create_engine

REPO_ROOT = Path(__file__).resolve().parents[2]  # not from conftest: three conftest modules share that name


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_labeler", REPO_ROOT / "scripts" / "bench_labeler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_acknowledged_label_is_lost_when_the_server_side_crashes(backend, tmp_path):
    bench = load_bench()
    args = argparse.Namespace(clients=10, workers=2, threads=4, crash_cycles=3)
    restart = os.environ.get("LABELER_TEST_POSTGRES_RESTART", "")
    if backend == "sqlite":
        url, restart_cycles = f"sqlite:///{tmp_path / 'crash.db'}", 0
    else:
        url, restart_cycles = bench.postgres_database(os.environ["LABELER_TEST_POSTGRES_URL"], durable=True), (2 if restart else 0)
    try:
        result = bench.crash_phase(backend, url, args, tmp_path, restart_cycles=restart_cycles, restart_command=restart)
    finally:
        if backend == "postgresql":
            engine = create_engine(os.environ["LABELER_TEST_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
            engine.dispose()
    assert result["acknowledged"] > 20  # the clients got work done between the crashes
    assert result["missing"] == 0 and result["stale_overwrites"] == 0 and result["duplicated"] == 0
    assert result["taken_mismatches"] == 0
    assert result["integrity"] == ("ok" if backend == "sqlite" else "n/a")
    assert result["postgres_restarts"] == restart_cycles
    assert result["recovered_after_restart"] == restart_cycles  # 2xx again once PostgreSQL is back
    assert result["answered_5xx"] == 0  # an outage answers 503; a 500 is a bug
    assert result["unavailable_without_retry_after"] == 0
    if restart_cycles:
        assert result["answered_503"] > 0  # the clients did meet the outage
