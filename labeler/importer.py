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

TASK_KEYS = {"prompt", "responses", "meta", "gold_ranking"}
RESPONSE_KEYS = {"text", "model", "meta"}
ROLES = {"system", "user", "assistant", "tool"}


def canonical_hash(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def task_hash(task: dict) -> str:
    return canonical_hash({"prompt": task["prompt"], "responses": [[r["text"], r["model"]] for r in task["responses"]]})


def validate_task(obj, where: str, k: int | None = None) -> dict:
    """One task, checked and normalised; `where` ("tasks.jsonl:3" or "tasks[2]") prefixes every error."""

    def fail(field: str, message: str):
        raise LabelerError(f"{where}: field '{field}': {message}", status=422, field=field)

    if not isinstance(obj, dict):
        fail("task", f"expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - TASK_KEYS)
    if unknown:
        fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(TASK_KEYS))}; put extra fields in 'meta')")
    prompt = obj.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            fail("prompt", "must not be empty")
    elif isinstance(prompt, list) and prompt:
        for i, message in enumerate(prompt):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str) or message.get("role") not in ROLES:
                fail(f"prompt[{i}]", f"expected {{'role': one of {sorted(ROLES)}, 'content': str}}, got {message!r:.80}")
        prompt = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        fail("prompt", "expected a string or a non-empty list of {'role', 'content'} messages")
    responses = obj.get("responses")
    if not isinstance(responses, list) or len(responses) < 2:
        fail("responses", "expected a list of at least 2 responses")
    if k is not None and len(responses) != k:
        fail("responses", f"has {len(responses)} responses but the project ranks k={k} per task")
    clean = []
    for i, response in enumerate(responses):
        if not isinstance(response, dict):
            fail(f"responses[{i}]", "expected an object {'text', 'model', 'meta'}")
        extra = sorted(set(response) - RESPONSE_KEYS)
        if extra:
            fail(f"responses[{i}].{extra[0]}", "unknown key (allowed: text, model, meta)")
        if not isinstance(response.get("text"), str):
            fail(f"responses[{i}].text", "expected a string")
        model = response.get("model", "")
        if not isinstance(model, str) or len(model) > 255:
            fail(f"responses[{i}].model", "expected a string of at most 255 characters")
        meta = response.get("meta", {})
        if not isinstance(meta, dict):
            fail(f"responses[{i}].meta", "expected an object")
        clean.append({"text": response["text"], "model": model, "meta": meta})
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        fail("meta", "expected an object")
    gold = obj.get("gold_ranking")
    if gold is not None:
        n = len(clean)
        if not isinstance(gold, list) or len(gold) != n or not all(type(r) is int and 1 <= r <= n for r in gold):
            fail("gold_ranking", f"expected a list of {n} ranks (integers 1..{n}, 1 = best, ties allowed) in response order")
    return {"prompt": prompt, "responses": clean, "meta": meta, "gold_ranking": gold}


def validate_tasks_file(path, k: int | None = None) -> list[dict]:
    """Every line of a JSONL file, validated before any is imported; an error names file:line and field."""
    path = Path(path)
    if not path.is_file():
        raise LabelerError(f"{path}: no such file", field="file")
    tasks = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise LabelerError(f"{path}:{number}: not valid JSON ({err.msg} at column {err.colno})", field="line") from None
            tasks.append(validate_task(obj, f"{path}:{number}", k))
    if not tasks:
        raise LabelerError(f"{path}: the file has no tasks", field="file")
    return tasks


def import_tasks(session: Session, project: Project, tasks: list[dict], source: str = "api") -> dict:
    """Add the tasks not already in the project; returns {"created", "skipped"}. Call inside `db.write()`."""
    tasks = [validate_task(task, f"tasks[{i}]", project.k) for i, task in enumerate(tasks)]
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
            prompt = prompts[prompt_hash] = Prompt(project_id=project.id, prompt=task["prompt"], prompt_hash=prompt_hash, meta={})
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
