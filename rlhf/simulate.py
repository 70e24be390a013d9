"""`rlhf simulate`: simulated annotators label a labeler project's tasks through its JSON API.

    rlhf simulate --url http://127.0.0.1:5000 --project quickstart-r1 --tokens lbl_abc,lbl_def --error_rate 0.1

Each token is one annotator account (created with `simulated=True`, so the data and the dashboard name it
as simulated). It goes through the same path a person's browser does: GET /api/v1/projects/<name>/next
leases a task, POST /api/v1/tasks/<id>/annotations submits a ranking, and the server validates, enforces
the overlap and stores it. The judgment is the share of the prompt's constraints (task meta "constraints",
see rlhf/constraints.py) each response meets: more is better, equal shares tie. With --error_rate p a
judgment is flipped with probability p (two adjacent rank levels swap), so agreement metrics and
aggregation see disagreement as they would with people. Accounts run concurrently, one thread each.
Options are spelled with underscores like every other `rlhf` command's; the dashed forms are accepted too.

With --edit an annotator also corrects the best candidate when it misses a constraint that a person
would fix by hand in the edit box (lower-case it, drop the commas, add the closing phrase: rlhf/edits.py)
and submits the fix as the annotation's edited response; the labels make it an SFT row and
prefers it over every response that annotator ranked. Answers that need new writing get no edit.
"""

from __future__ import annotations

import argparse
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

from rlhf.constraints import check_constraint
from rlhf.edits import edit_response
from rlhf.errors import RlhfError

TIMEOUT = 60  # seconds per HTTP request; a busy SQLite writer can hold a request for a while


def constraints_met(constraints: list[dict], texts: list[str]) -> list[int]:
    """How many of `constraints` each text meets."""
    return [sum(check_constraint(c, t) for c in constraints) for t in texts]


def ranks_from_met(met: list[int], error_rate: float = 0.0, rng: random.Random | None = None) -> list[int]:
    """Dense ranks (1 = best, equal ranks for ties) from constraints-met counts.

    With probability `error_rate` two adjacent rank levels swap (a level is all texts tied at one rank);
    when every text ties there is nothing to flip.
    """
    if not 0.0 <= error_rate <= 1.0:
        raise RlhfError(f"error rate must be between 0 and 1, got {error_rate}")
    levels = sorted(set(met), reverse=True)
    ranks = [levels.index(m) + 1 for m in met]
    rng = rng or random.Random(0)
    if error_rate > 0 and rng.random() < error_rate and len(levels) > 1:
        r = rng.randrange(1, len(levels))  # swap levels r and r + 1
        ranks = [r + 1 if x == r else r if x == r + 1 else x for x in ranks]
    return ranks


def rank_by_constraints(constraints: list[dict], texts: list[str], error_rate: float = 0.0,
                        rng: random.Random | None = None) -> list[int]:
    """Dense ranks by the share of constraints each text meets (see ranks_from_met)."""
    return ranks_from_met(constraints_met(constraints, texts), error_rate, rng)


def server_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:200] or resp.reason
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str):
                field = f" (field '{body['field']}')" if isinstance(body.get("field"), str) else ""
                return body[key] + field
    return str(body)[:200]


def call_api(session: requests.Session, method: str, url: str, **kwargs) -> requests.Response:
    """One request; 409 comes back to the caller, every other error status raises naming the URL."""
    try:
        resp = session.request(method, url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        reason = str(exc).split("Caused by")[-1].strip(" ()\"")[:160]
        raise RlhfError(f"{method} {url}: cannot reach the labeler ({exc.__class__.__name__}: {reason})") from None
    if resp.status_code >= 400 and resp.status_code != 409:
        raise RlhfError(f"{method} {url}: HTTP {resp.status_code}: {server_message(resp)}")
    return resp


def annotate_task(task: dict, error_rate: float, rng: random.Random, edit: bool = False) -> dict:
    """The annotation payload for one task: a ranking by constraints met, with a rationale saying so.

    With `edit`, the best response (by the true ranking, before any flip) that misses a constraint is
    corrected by rlhf.edits when it can be; the payload then carries it as `edited_response`.
    """
    where = f"task {task.get('id')}"
    constraints = (task.get("meta") or {}).get("constraints")
    if not isinstance(constraints, list):
        raise RlhfError(f"{where}: meta has no 'constraints' list; simulated annotators rank by constraints met")
    responses = task.get("responses") or []
    if not responses:
        raise RlhfError(f"{where}: no responses to rank")
    texts = [r["text"] for r in responses]
    met = constraints_met(constraints, texts)
    ranks = ranks_from_met(met)
    flipped = ranks_from_met(met, error_rate, rng)
    detail = ", ".join(f"response {r['id']}: {m}/{len(constraints)}" for r, m in zip(responses, met))
    rationale = f"simulated: met constraints {detail}" + ("; judgment flipped (error rate)" if flipped != ranks else "")
    payload = {
        "ranking": {str(r["id"]): rank for r, rank in zip(responses, flipped)},
        "all_bad": False,
        "rationale": rationale,
        "seconds_spent": 0.0,
        "flipped": flipped != ranks,
    }
    if edit:
        best = ranks.index(1)
        title = str((task.get("meta") or {}).get("topic") or "My answer").strip().capitalize()
        edited = edit_response(constraints, texts[best], title=title)
        if edited is not None:
            payload["edited_response"] = edited
            payload["rationale"] += f"; edited response {responses[best]['id']} to meet every constraint"
    return payload


def label_as(url: str, project: str, token: str, error_rate: float, rng_key: str, max_tasks: int | None,
             progress: tqdm, stop: threading.Event, edit: bool = False) -> dict[str, int]:
    """One annotator's session: fetch, rank, submit until the project has nothing left for this account."""
    counts = {"annotated": 0, "conflicts": 0, "flipped": 0, "edited": 0}
    seen: set = set()
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        next_url = f"{url}/api/v1/projects/{requests.utils.quote(project, safe='')}/next"
        while not stop.is_set() and (max_tasks is None or counts["annotated"] < max_tasks):
            resp = call_api(session, "GET", next_url)
            if resp.status_code == 409:
                raise RlhfError(f"GET {next_url}: HTTP 409: {server_message(resp)}")
            task = resp.json().get("task")
            if task is None:
                break
            if task["id"] in seen:
                # The server offered a task this account already submitted (or lost with 409): stop rather
                # than loop on it forever.
                break
            seen.add(task["id"])
            # The flip of a task depends on the account and the task only, not on the order tasks arrive in.
            payload = annotate_task(task, error_rate, random.Random(f"{rng_key}:{task['id']}"), edit=edit)
            flipped = payload.pop("flipped")
            post_url = f"{url}/api/v1/tasks/{task['id']}/annotations"
            resp = call_api(session, "POST", post_url, json=payload)
            if resp.status_code == 409:  # lease reclaimed and filled by someone else: skip it
                counts["conflicts"] += 1
                continue
            counts["annotated"] += 1
            counts["flipped"] += int(flipped)
            counts["edited"] += int("edited_response" in payload)
            progress.update(1)
    return counts


def run_simulation(url: str, project: str, tokens: list[str], error_rate: float = 0.0, seed: int = 0,
                   max_tasks: int | None = None, edit: bool = False) -> dict[str, Any]:
    """Label with one thread per token; returns totals and per-account counts (accounts by position)."""
    if not tokens:
        raise RlhfError("no annotator tokens given (--tokens or --token_file)")
    if not 0.0 <= error_rate <= 1.0:
        raise RlhfError(f"--error_rate must be between 0 and 1, got {error_rate}")
    url = url.rstrip("/")
    stop = threading.Event()
    total = max_tasks * len(tokens) if max_tasks else None
    with tqdm(total=total, desc=f"simulated labels ({project})", unit="task") as progress, \
            ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        futures = [
            pool.submit(label_as, url, project, token, error_rate, f"{seed}:{i}", max_tasks,
                        progress, stop, edit)
            for i, token in enumerate(tokens)
        ]
        per_account, error = [], None
        for future in futures:
            try:
                per_account.append(future.result())
            except BaseException as exc:  # stop the other accounts, then report the first failure
                stop.set()
                error = error or exc
                per_account.append(None)
        if error is not None:
            raise error
    totals = {k: sum(a[k] for a in per_account) for k in ("annotated", "conflicts", "flipped", "edited")}
    return {**totals, "accounts": len(tokens), "per_account": per_account}


def read_tokens(tokens: str | None, token_file: str | None) -> list[str]:
    found = [t.strip() for t in (tokens or "").split(",") if t.strip()]
    if token_file:
        path = Path(token_file)
        if not path.is_file():
            raise RlhfError(f"token file not found: {path}")
        lines = path.read_text(encoding="utf-8").splitlines()
        found += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rlhf simulate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="labeler base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--project", required=True, help="labeler project name")
    parser.add_argument("--tokens", help="comma-separated API tokens, one per simulated annotator account")
    parser.add_argument("--token_file", "--token-file", help="file with one API token per line (# starts a comment)")
    parser.add_argument("--error_rate", "--error-rate", type=float, default=0.0,
                        help="probability of flipping a judgment (two adjacent ranks swap); default 0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the flips; each account gets its own stream")
    parser.add_argument("--max_tasks", "--max-tasks", type=int, default=None, help="stop each account after this many tasks")
    parser.add_argument("--edit", action="store_true",
                        help="also correct the best candidate where a hand edit makes it meet every constraint")
    args = parser.parse_args(argv)
    tokens = read_tokens(args.tokens, args.token_file)
    if args.max_tasks is not None and args.max_tasks < 1:
        raise RlhfError(f"--max_tasks must be at least 1, got {args.max_tasks}")
    counts = run_simulation(args.url, args.project, tokens, args.error_rate, args.seed, args.max_tasks, args.edit)
    print(f"simulated annotators: {counts['annotated']} annotations from {counts['accounts']} accounts "
          f"({counts['flipped']} flipped, {counts['edited']} edited, {counts['conflicts']} skipped on 409)")
    return 0
