"""Loading training data from JSONL, Parquet or a saved `datasets` folder, validated row by row.

Formats are TRL's: standard (strings) or conversational (lists of {"role", "content"} messages).
  preferences: prompt?, chosen, rejected       sft: prompt + completion | messages | text
  prompts:     prompt
A malformed row fails with its file and line number before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any, Callable

from rlhf.errors import RlhfError

ROLES = {"system", "user", "assistant", "tool"}


def data_hash(path: str | os.PathLike) -> str:
    """sha256 of a file, or of every file in a folder (sorted by relative path)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_rows(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """Rows with their location ("file:line" for JSONL, "file row N" otherwise)."""
    p = Path(path)
    if not p.exists():
        raise RlhfError(f"data file not found: {p}")
    if p.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a saved dataset"
            raise RlhfError(f"{p}: not a saved `datasets` folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise RlhfError(f"{p}: a DatasetDict needs a 'train' split (has {', '.join(ds)})")
            ds = ds["train"]
        if len(ds) == 0:
            raise RlhfError(f"{p}: no rows")
        return [(f"{p} row {i}", row) for i, row in enumerate(ds)]
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(p)
        return [(f"{p} row {i}", row) for i, row in enumerate(table.to_pylist())]
    rows = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RlhfError(f"{p}:{n}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(row, dict):
                raise RlhfError(f"{p}:{n}: expected a JSON object, got {type(row).__name__}")
            rows.append((f"{p}:{n}", row))
    if not rows:
        raise RlhfError(f"{p}: no rows")
    return rows


def check_messages(value: Any, where: str, field: str, last_role: str | None = None) -> None:
    if not isinstance(value, list) or not value:
        raise RlhfError(f"{where}: field '{field}' must be a non-empty list of messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise RlhfError(f"{where}: field '{field}[{i}]' must be {{\"role\": one of {sorted(ROLES)}, \"content\": str}}")
    if last_role and value[-1]["role"] != last_role:
        raise RlhfError(f"{where}: field '{field}' must end with a '{last_role}' message")


def _text_or_messages(row: dict, where: str, field: str, last_role: str | None) -> str:
    if field not in row or row[field] is None:
        raise RlhfError(f"{where}: missing field '{field}'")
    v = row[field]
    if isinstance(v, str):
        if not v.strip():
            raise RlhfError(f"{where}: field '{field}' is empty")
        return "standard"
    check_messages(v, where, field, last_role)
    return "conversational"


def check_preference_row(row: dict, where: str) -> str:
    kinds = {_text_or_messages(row, where, f, "assistant") for f in ("chosen", "rejected")}
    if "prompt" in row and row["prompt"] is not None:
        kinds.add(_text_or_messages(row, where, "prompt", None))
    if len(kinds) > 1:
        raise RlhfError(f"{where}: mixes plain strings and message lists across prompt/chosen/rejected")
    return kinds.pop()


def check_sft_row(row: dict, where: str) -> str:
    if "messages" in row:
        check_messages(row["messages"], where, "messages", "assistant")
        return "conversational"
    if "text" in row and "completion" not in row:
        return _text_or_messages(row, where, "text", None)
    kinds = {_text_or_messages(row, where, "prompt", None), _text_or_messages(row, where, "completion", "assistant")}
    if len(kinds) > 1:
        raise RlhfError(f"{where}: mixes plain strings and message lists across prompt/completion")
    return kinds.pop()


def check_prompt_row(row: dict, where: str) -> str:
    return _text_or_messages(row, where, "prompt", None)


def _load(path, check: Callable[[dict, str], str], keep: tuple[str, ...]):
    import datasets

    rows = read_rows(path)
    kinds = set()
    for where, row in rows:
        kinds.add(check(row, where))
    if len(kinds) > 1:
        raise RlhfError(f"{path}: rows mix the standard (string) and conversational (messages) formats")
    cols = [k for k in keep if k in rows[0][1]]
    records = [{k: row.get(k) for k in cols} for _, row in rows]
    return datasets.Dataset.from_list(records)


def load_preferences(path, extra: tuple[str, ...] = ()):
    """A preference set (prompt, chosen, rejected); provenance columns are dropped for training, except the
    `extra` ones asked for (the reward stage keeps `source` of its held-out pairs to report per source)."""
    return _load(path, check_preference_row, ("prompt", "chosen", "rejected", *extra))


def load_sft(path):
    return _load(path, check_sft_row, ("prompt", "completion", "messages", "text"))


def load_prompts(path) -> list[dict[str, Any]]:
    """Prompt rows, each keeping every field (constraints and meta travel with the prompt)."""
    rows = read_rows(path)
    for where, row in rows:
        check_prompt_row(row, where)
    return [row for _, row in rows]


def split_train_test(ds, test_fraction: float, seed: int = 0):
    """(train, held-out): `test_fraction` of the prompts held out, every row of a prompt on one side.

    `test_fraction` means what it means in `labeler export` and the loop: a share of prompts, so pairs of
    one prompt never sit on both sides. Rows are grouped by `prompt` (or, for `messages` rows, every turn
    but the last); rows with neither are their own group. The held-out prompts are a seeded sample:
    round(test_fraction * prompts), at least one and never all. Fewer than 10 rows: no split (None).
    """
    if test_fraction <= 0 or len(ds) < 10:
        return ds, None
    if "prompt" in ds.column_names:
        keys = [json.dumps(p, sort_keys=True) for p in ds["prompt"]]
    elif "messages" in ds.column_names:
        keys = [json.dumps(m[:-1], sort_keys=True) for m in ds["messages"]]
    else:
        keys = [str(i) for i in range(len(ds))]
    prompts = sorted(set(keys))
    if len(prompts) < 2:
        return ds, None
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: min(len(prompts) - 1, max(1, round(test_fraction * len(prompts))))])
    train = [i for i, key in enumerate(keys) if key not in held]
    test = [i for i, key in enumerate(keys) if key in held]
    return ds.select(train), ds.select(test)
