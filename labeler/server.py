"""`labeler serve`'s production server: gunicorn, pre-forked workers each running several threads.

Why gunicorn rather than waitress: `--workers` needs processes (the GIL lets one process use one core,
and the app's own Python, not the WSGI layer, is what a request spends its time in); waitress is one
process with threads. gunicorn's gthread worker gives both, restarts a worker that dies, and is what
most Flask deployments already run. It needs a Unix-like OS, as the rest of this project does.

Each worker builds its own app (no preload): SQLAlchemy engines and SQLite connections must not cross a
fork. The master builds one first and throws it away, so that a missing secret key or an old schema stops
`labeler serve` with one line instead of a crash loop of workers.
"""

from __future__ import annotations

from typing import Callable

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import ThreadWorker

# Requests one keep-alive connection may carry before the server closes it (nginx's keepalive_requests,
# Apache's MaxKeepAliveRequests); see BalancedThreadWorker.
KEEPALIVE_REQUESTS = 100


class BalancedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, closing a keep-alive connection after KEEPALIVE_REQUESTS requests.

    Workers share one listening socket and a connection stays with the worker that accepted it. Clients
    that connect at once can all land on one worker: under scripts/bench_labeler.py's 50 clients one
    worker often served every request (its process at 100 % of a core, the GIL its limit) while the other
    sat idle. A client whose connection is closed reconnects, and the worker that accepts is the one free
    to, so the connections spread over the workers within seconds."""

    def handle_request(self, req, conn):
        served = getattr(conn, "labeler_requests", 0) + 1
        conn.labeler_requests = served
        if served >= KEEPALIVE_REQUESTS:
            req.must_close = True  # gunicorn answers with Connection: close and closes after the response
        return super().handle_request(req, conn)


class GunicornServer(BaseApplication):
    def __init__(self, make_app: Callable, options: dict):
        self.make_app = make_app
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.make_app()


def run_production(make_app: Callable, host: str, port: int, workers: int, threads: int, timeout: int = 120,
                   on_exit: Callable[[], None] | None = None) -> None:
    """Serve `make_app()` on host:port until SIGTERM/SIGINT (a graceful stop: requests in flight finish);
    then call on_exit() in the master."""
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "labeler.server.BalancedThreadWorker",
        "timeout": timeout,  # a worker silent this long (an export of a big project) is restarted
        "graceful_timeout": 30,
        "keepalive": 5,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": "labeler",
    }
    if on_exit is not None:
        options["on_exit"] = lambda _arbiter: on_exit()
    GunicornServer(make_app, options).run()
