"""Import tasks: the tasks JSONL contract (docs/data-contracts.md), validated whole before anything is written.

One task per line:
    {"prompt": str | [{"role", "content"}, ...],
     "responses": [{"text": str, "model": str, "meta": {...}}, ...],   # exactly the project's K
     "meta": {...},                                                    # optional
     "gold_ranking": [1, 2, 2, ...]}                                   # optional: ranks in file order; marks gold
Re-importing adds nothing: a task is identified by the sha256 of its canonical prompt and response
texts/models (Task.content_hash), a prompt by the sha256 of its canonical JSON (Prompt.prompt_hash).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from labeler.errors import LabelerError
from labeler.models import Project, Prompt, Response, Task
from labeler.schemas import TaskIn, loads_json, parse

def canonical_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def task_hash(task: dict) -> str:
    return canonical_hash({"prompt": task["prompt"], "responses": [[r["text"], r["model"]] for r in task["responses"]]})


def validate_task(obj, where: str, k: int | None = None) -> dict:
    """One task, checked against labeler.schemas.TaskIn and the project's k; `where` ("tasks.jsonl:3"
    or "tasks[2]") prefixes every error."""
    task = parse(TaskIn, obj, where).model_dump()
    n = len(task["responses"])
    if k is not None and n != k:
        raise LabelerError(f"{where}: field 'responses': has {n} responses but the project ranks k={k} per task",
                           status=422, field="responses")
    gold = task["gold_ranking"]
    if gold is not None and (len(gold) != n or max(gold) > n):
        raise LabelerError(f"{where}: field 'gold_ranking': expected a list of {n} ranks (integers 1..{n}, 1 = best, "
                           "ties allowed) in response order", status=422, field="gold_ranking")
    return task


MAX_LINE_ERRORS = 20  # a file with more bad lines names the first twenty: enough to see the pattern


class TasksFileError(LabelerError):
    """Every bad line of a tasks file (up to MAX_LINE_ERRORS), each error naming its file:line and field.

    `errors` is [(line, message)]; the message lists them one per line, and `field` is the first one's."""

    def __init__(self, source: str, errors: list[tuple[int, LabelerError]], bad_lines: int):
        first = errors[0][1]
        if bad_lines == 1:
            message = str(first)
        else:
            shown = "" if bad_lines == len(errors) else f" (the first {len(errors)} shown)"
            message = f"{source}: {bad_lines} lines have errors{shown}; nothing was imported:\n" + "\n".join(str(e) for _, e in errors)
        super().__init__(message, status=first.status, field=first.field)
        self.errors = [(line, str(err)) for line, err in errors]
        self.bad_lines = bad_lines


def validate_task_lines(lines, source: str, k: int | None = None) -> list[dict]:
    """The tasks of a JSONL file's lines (bytes or str), all validated before any is imported: every bad line
    is reported (TasksFileError), by `source`:line and field. `labeler import` and the admin's upload use it."""
    tasks, errors, bad_lines = [], [], 0
    for number, line in enumerate(lines, start=1):
        if number == 1 and isinstance(line, bytes):
            line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some Windows editors write
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            tasks.append(validate_task(loads_json(line, where=where), where, k))
        except LabelerError as err:
            bad_lines += 1
            if len(errors) < MAX_LINE_ERRORS:
                errors.append((number, err))
    if errors:
        raise TasksFileError(source, errors, bad_lines)
    if not tasks:
        raise LabelerError(f"{source}: the file has no tasks", field="file")
    return tasks


def validate_tasks_file(path, k: int | None = None) -> list[dict]:
    """Every line of a JSONL file, validated before any is imported; an error names file:line and field."""
    path = Path(path)
    if not path.is_file():
        raise LabelerError(f"{path}: no such file", field="file")
    with path.open("rb") as fh:
        return validate_task_lines(fh, str(path), k)


def prompt_text(prompt) -> str:
    """A prompt as plain text: itself, or a conversation's contents one per line (what the admin searches)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m["content"] for m in prompt)


def import_tasks(session: Session, project: Project, tasks: list[dict], source: str = "api") -> dict:
    """Add the tasks not already in the project; returns {"created", "skipped"}. Call inside `db.write()`."""
    tasks = [validate_task(task, f"tasks[{i}]", project.k) for i, task in enumerate(tasks)]  # idempotent on checked tasks
    existing = set(session.scalars(select(Task.content_hash).where(Task.project_id == project.id)))
    prompts = {p.prompt_hash: p for p in session.scalars(select(Prompt).where(Prompt.project_id == project.id))}
    created = skipped = 0
    for task in tasks:
        digest = task_hash(task)
        if digest in existing:  # also catches a task repeated within the same batch
            skipped += 1
            continue
        existing.add(digest)
        prompt_hash = canonical_hash(task["prompt"])
        prompt = prompts.get(prompt_hash)
        if prompt is None:
            prompt = prompts[prompt_hash] = Prompt(project_id=project.id, prompt=task["prompt"], prompt_hash=prompt_hash,
                                                       text=prompt_text(task["prompt"]), meta={})
            session.add(prompt)
            session.flush()
        row = Task(project_id=project.id, prompt_id=prompt.id, content_hash=digest, meta=task["meta"], source=source[:255])
        row.responses = [Response(position=i, text=r["text"], model=r["model"], meta=r["meta"]) for i, r in enumerate(task["responses"])]
        session.add(row)
        session.flush()
        if task["gold_ranking"] is not None:
            row.is_gold = True
            row.gold_ranking = {str(r.id): rank for r, rank in zip(row.responses, task["gold_ranking"])}
        created += 1
    return {"created": created, "skipped": skipped}
