"""The loop's label step, on the labeler's public Python functions (rlhf holds no SQL).

    db = open_labeler("sqlite:///runs/q/labels.db")
    push_tasks(db, "q-round-1", tasks, k=4, overlap=1)            # a project per round, get-or-create
    label_simulated(db, url, "q-round-1", annotators=1, ...)       # simulated accounts over the HTTP API
    labelling_progress(db, "q-round-1")                            # tasks labelled, needed, per annotator
    write_labels(db, "q-round-1", "runs/q/round-1/labels")          # `labeler export`: pairs, SFT rows, hash

People label the same projects in the browser (`labeler serve`); the simulated annotators go through
the same HTTP API as a person's browser, from a labeler server this module starts on a loopback port.
"""

from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path
from typing import Any

RANKING_GUIDELINES = ("Rank the responses by how well they follow every instruction in the prompt "
                      "(format, length, wording); break ties by helpfulness.")


def open_labeler(url: str):
    from labeler.db import Database, upgrade_database

    upgrade_database(url)
    return Database(url)


def push_tasks(db, project_name: str, tasks: list[dict], k: int, overlap: int, kind: str = "ranking",
               guidelines: str = RANKING_GUIDELINES, allow_edit: bool = True) -> dict:
    """Validate every task, then create the project if needed and import them (a task already there is skipped)."""
    from labeler.importer import import_tasks, validate_task
    from labeler.projects import get_or_create_project

    checked = [validate_task(t, f"task {i}", k) for i, t in enumerate(tasks)]
    with db.write() as session:
        project, _ = get_or_create_project(session, project_name, k=k, overlap=overlap, guidelines=guidelines,
                                           kind=kind, allow_edit=allow_edit)
        return import_tasks(session, project, checked, source="rlhf loop")


def existing_project(session, project_name: str):
    """The labeler's project called `project_name`, or None where there is none yet (a round not pushed)."""
    from labeler.errors import LabelerError
    from labeler.projects import find_project

    try:
        return find_project(session, project_name)
    except LabelerError:
        return None


def labelling_progress(db, project_name: str) -> dict[str, Any] | None:
    """count_project's figures plus {"by_annotator": {name: annotations}}; None when the project does not exist."""
    from labeler.projects import annotations_by_annotator, count_project

    with db.read() as session:
        project = existing_project(session, project_name)
        if project is None:
            return None
        return count_project(session, project) | {"by_annotator": annotations_by_annotator(session, project)}


def simulated_tokens(db, count: int) -> list[str]:
    """Fresh API tokens for simulated annotator accounts sim-annotator-1..count (created once, flagged simulated)."""
    from labeler.accounts import create_token, get_or_create_user

    tokens = []
    with db.write() as session:
        for i in range(1, count + 1):
            user, _ = get_or_create_user(session, f"sim-annotator-{i}", secrets.token_urlsafe(16), simulated=True)
            tokens.append(create_token(session, user, name="rlhf loop"))
    return tokens


class LabelerServer:
    """The labeler app on a free loopback port in a background thread, for the simulated annotators."""

    def __init__(self, database_url: str):
        from werkzeug.serving import WSGIRequestHandler, make_server

        from labeler.app import create_app

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args, **kwargs):  # one line per request would bury the loop's own progress
                pass

        app = create_app({"DATABASE_URL": database_url, "SECRET_KEY": secrets.token_hex(32)})
        self.server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(timeout=10)


def label_simulated(db, database_url: str, project_name: str, annotators: int, error_rate: float, seed: int,
                    edit: bool, log=print) -> dict:
    """Simulated accounts label every task of the project through the labeler's HTTP API."""
    from rlhf.simulate import run_simulation

    tokens = simulated_tokens(db, annotators)
    with LabelerServer(database_url) as server:
        log(f"label: {len(tokens)} simulated annotator(s) labelling {project_name} through {server.url}/api/v1")
        return run_simulation(server.url, project_name, tokens, error_rate=error_rate, seed=seed, edit=edit)


def write_labels(db, project_name: str, out: Path, test_fraction: float) -> dict[str, Any]:
    """The project's labels, written into `out` by `labeler export` (once: labels already there are read back);
    their export.json (id, content hash, counts)."""
    from labeler.export import export_project

    if not (out / "export.json").is_file():
        export_project(db, project_name, out, test_fraction=test_fraction)
    return json.loads((out / "export.json").read_text())


def arena_summary(db, project_name: str) -> dict[str, Any] | None:
    """Win rates and Bradley-Terry scores of an arena project's votes so far; None when there is no such project."""
    from labeler.arena import arena_results, arena_votes

    with db.read() as session:
        project = existing_project(session, project_name)
        return None if project is None else arena_results(arena_votes(session, project))
