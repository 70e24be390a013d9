"""Loading training data: the labeler's typed `datasets` (by their schema), a team's JSONL or Parquet.

Formats are TRL's: standard (strings) or conversational (lists of {"role", "content"} messages).
  preferences: prompt?, chosen, rejected       sft: prompt + completion | messages | text
  prompts:     prompt
A saved `datasets` folder, a Parquet file or a dataset folder with a card (the labeler's labels folder) is
checked by its features and its Arrow columns, and only the columns a stage needs are kept; a JSONL file is
checked row by row. Either way a malformed row fails with its file and line (or row) and field before
anything is written. The rows' provenance (`labels_id`, `labels_hash`) is read from the data itself.
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


PROVENANCE = ("labels_id", "labels_hash")  # on every row of the labeler's typed datasets: which labels it came from


def open_dataset(path: str | os.PathLike, kind: str, split: str):
    """A typed `datasets.Dataset` from a saved folder (`load_from_disk`; of a DatasetDict, the `split`), a
    Parquet file, or a folder whose dataset card lists Parquet files per config and split (the labeler's
    labels folder: configs `preferences` and `sft`); None for a JSONL file (read row by row)."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise RlhfError(f"data file not found: {p}")
    if p.is_file() and p.suffix != ".parquet":
        return None
    if p.is_file():
        ds = read_parquet([p])
    elif any((p / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json")):
        try:
            ds = datasets.load_from_disk(str(p))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a saved dataset"
            raise RlhfError(f"{p}: not a saved `datasets` folder ({exc})") from None
    else:
        ds = read_parquet(card_files(p, kind, split))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise RlhfError(f"{p}: no '{split}' split (has {', '.join(ds) or 'none'})")
        ds = ds[split]
    if len(ds) == 0:
        raise RlhfError(f"{p}: no rows")
    return ds


def read_parquet(files: list[Path]):
    """One Dataset of Parquet files, read with pyarrow (the features travel in the files' schema)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.table import InMemoryTable

    try:
        return datasets.Dataset(InMemoryTable(pa.concat_tables([pq.read_table(f) for f in files])))
    except Exception as exc:  # noqa: BLE001 - any failure means "not readable Parquet"
        raise RlhfError(f"{files[0]}: not a readable Parquet file ({exc})") from None


def card_files(folder: Path, kind: str, split: str) -> list[Path]:
    """The Parquet files of `split` in the config named `kind` (else the default, else the only one) of the
    dataset card folder/README.md, as `datasets.load_dataset(folder)` would pick them. Read here rather than
    through load_dataset, whose cache is keyed by the folder's name and card, not its files: a second folder
    called `labels` (every round of the loop has one) would load the first one's cached rows."""
    from huggingface_hub import DatasetCard

    readme = folder / "README.md"
    if not readme.is_file():
        raise RlhfError(f"{folder}: not a saved `datasets` folder (no dataset_info.json or dataset_dict.json), "
                        "nor a dataset folder with a card (README.md) listing Parquet files")
    configs = DatasetCard.load(readme).data.to_dict().get("configs") or []
    config = (next((c for c in configs if c.get("config_name") == kind), None)
              or next((c for c in configs if c.get("default")), None) or (configs[0] if len(configs) == 1 else None))
    if config is None:
        raise RlhfError(f"{readme}: no config named '{kind}' and no default among "
                        f"{[c.get('config_name') for c in configs]}")
    entries = config.get("data_files") or []
    entries = [{"split": "train", "path": entries}] if isinstance(entries, str) else entries
    patterns = [x for e in entries if e.get("split") == split
                for x in ([e["path"]] if isinstance(e["path"], str) else e["path"])]
    files = sorted({f for pattern in patterns for f in folder.glob(pattern) if f.is_file()})
    if not files:
        splits = sorted({e.get("split") for e in entries})
        raise RlhfError(f"{readme}: config '{config.get('config_name')}' has no '{split}' split with files "
                        f"(has {', '.join(map(str, splits)) or 'none'})")
    return files


def column_format(ds, column: str, source) -> str:
    """"standard" for a string column, "conversational" for a list of {role, content} messages; else a
    one-line error naming the data and the column."""
    from datasets import LargeList, List, Value

    feature = ds.features[column]
    strings = ("string", "large_string")
    if isinstance(feature, Value) and feature.dtype in strings:
        return "standard"
    if (isinstance(feature, (List, LargeList)) and isinstance(feature.feature, dict)
            and all(isinstance(feature.feature.get(k), Value) and feature.feature[k].dtype in strings
                    for k in ("role", "content"))):
        return "conversational"
    raise RlhfError(f"{source}: column '{column}' has type {feature}; expected a string or a list of "
                    "{\"role\": str, \"content\": str} messages")


def first_bad_value(ds, column: str, fmt: str, last_role: str | None) -> tuple[int, str] | None:
    """(row, problem) of the first row whose `column` is missing, empty or malformed, checked on the Arrow
    column (no Python rows): the checks check_messages and _text_or_messages make, one row at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = ds.with_format("arrow")[column]
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    found: list[tuple[int, str]] = []

    def first(mask, problem):
        hits = np.flatnonzero(np.asarray(pc.fill_null(mask, False)))
        if len(hits):
            found.append((int(hits[0]), problem))

    first(values.is_null(), f"missing field '{column}'")
    if fmt == "standard":
        first(pc.equal(pc.utf8_trim_whitespace(values), ""), f"field '{column}' is empty")
    else:
        first(pc.equal(pc.list_value_length(values), 0), f"field '{column}' must be a non-empty list of messages")
        messages, parents = values.flatten(), np.asarray(pc.list_parent_indices(values))
        roles = messages.field("role")
        bad = pc.or_(pc.invert(pc.fill_null(pc.is_in(roles, value_set=pa.array(sorted(ROLES))), False)),
                     pc.or_(messages.is_null(), messages.field("content").is_null()))
        hits = np.flatnonzero(np.asarray(pc.fill_null(bad, True)))
        if len(hits):
            row = int(parents[hits[0]])
            index = int(hits[0] - np.searchsorted(parents, row))
            found.append((row, f"field '{column}[{index}]' must be {{\"role\": one of {sorted(ROLES)}, \"content\": str}}"))
        if last_role and len(parents):
            last = np.append(parents[1:] != parents[:-1], True)  # each row's last message
            wrong = np.flatnonzero(last & (np.asarray(roles.fill_null("")) != last_role))
            if len(wrong):
                found.append((int(parents[wrong[0]]), f"field '{column}' must end with a '{last_role}' message"))
    return min(found, key=lambda hit: hit[0]) if found else None  # on one row, the first check that fails


def check_dataset(ds, source, columns: dict[str, str | None]) -> str:
    """Check a typed dataset by its schema, then its values on the Arrow columns: `columns` maps each needed
    column to the role its messages must end with (None: any). Returns the format the columns share."""
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise RlhfError(f"{source}: no column '{missing[0]}' (has {', '.join(ds.column_names)})")
    formats = {c: column_format(ds, c, source) for c in columns}
    if len(set(formats.values())) > 1:
        raise RlhfError(f"{source}: columns mix plain strings and message lists ("
                        + ", ".join(f"{c}: {'messages' if f == 'conversational' else 'string'}" for c, f in formats.items()) + ")")
    for column, last_role in columns.items():
        bad = first_bad_value(ds, column, formats[column], last_role)
        if bad:
            raise RlhfError(f"{source} row {bad[0]}: {bad[1]}")
    return next(iter(formats.values()))


def _load(path, check: Callable[[dict, str], str], keep: tuple[str, ...]):
    """A JSONL file: every row checked (errors name the file and line), then one Dataset of the `keep` columns."""
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


def load_preferences(path, extra: tuple[str, ...] = (), split: str = "train", conversational: bool = False):
    """A preference set (prompt?, chosen, rejected); provenance columns are dropped for training, except the
    `extra` ones asked for (the reward stage keeps `source` of its held-out pairs to report per source).

    A typed dataset (folder, Parquet) is checked by its features and its Arrow columns and keeps only the
    columns needed; a JSONL file row by row. `conversational`: plain-string pairs with a prompt become
    message lists (the reward model then sees the chat template it scores through); message lists stay as
    they are. `split`: the split taken from a DatasetDict or a dataset folder.
    """
    ds = open_dataset(path, "preferences", split)
    if ds is None:
        ds = _load(path, check_preference_row, ("prompt", "chosen", "rejected", *extra))
    else:
        needed = {"prompt": None} if "prompt" in ds.column_names else {}
        check_dataset(ds, path, needed | {"chosen": "assistant", "rejected": "assistant"})
        ds = ds.select_columns([c for c in ("prompt", "chosen", "rejected", *extra) if c in ds.column_names])
    if conversational and "prompt" in ds.column_names and column_format(ds, "prompt", path) == "standard":
        ds = ds.map(to_conversational, batched=True, desc="messages")
    return ds


def to_conversational(batch: dict[str, list]) -> dict[str, list]:
    """A batch of standard (string) pairs with a prompt as message lists.

    The policy in `rlhf rl` and `rlhf eval` is prompted through the chat template; a reward model trained
    on raw `prompt + chosen` strings would score text in a format it never sees at scoring time.
    """
    turn = lambda role, texts: [[{"role": role, "content": t}] for t in texts]  # noqa: E731
    return {"prompt": turn("user", batch["prompt"]), "chosen": turn("assistant", batch["chosen"]),
            "rejected": turn("assistant", batch["rejected"])}


def load_sft(path, split: str = "train"):
    """An SFT set: `messages`, or `text`, or `prompt` + `completion` (checked as load_preferences does)."""
    ds = open_dataset(path, "sft", split)
    if ds is None:
        return _load(path, check_sft_row, ("prompt", "completion", "messages", "text"))
    if "messages" in ds.column_names:
        needed = {"messages": "assistant"}
    elif "text" in ds.column_names and "completion" not in ds.column_names:
        needed = {"text": None}
    else:
        needed = {"prompt": None, "completion": "assistant"}
    check_dataset(ds, path, needed)
    return ds.select_columns(list(needed))


def labels_provenance(path, kind: str, split: str = "train") -> list[dict[str, Any]] | None:
    """The labels a data file's rows came from, read from their `labels_id` / `labels_hash` columns (the
    labeler's typed datasets carry them): [{"id", "content_hash", "rows", "rows_by_source"}], one per labels
    set, or None when the rows carry no provenance. Read from the data itself, so a copied folder keeps it."""
    from collections import Counter

    ds = open_dataset(path, kind, split)
    if ds is None:
        rows = [row for _, row in read_rows(path)]
        columns = {c: [r.get(c) for r in rows] for c in (*PROVENANCE, "source") if any(c in r for r in rows)}
    else:
        columns = {c: list(ds[c]) for c in (*PROVENANCE, "source") if c in ds.column_names}
    if "labels_id" not in columns and "labels_hash" not in columns:
        return None
    n = len(next(iter(columns.values())))
    keys = list(zip(columns.get("labels_id", [None] * n), columns.get("labels_hash", [None] * n)))
    sources = columns.get("source", [None] * n)
    labels = []
    for key, rows in sorted(Counter(k for k in keys if k != (None, None)).items(), key=lambda kv: str(kv[0])):
        by_source = Counter(s for k, s in zip(keys, sources) if k == key and s is not None)
        labels.append({"id": key[0], "content_hash": key[1], "rows": rows,
                       **({"rows_by_source": dict(sorted(by_source.items()))} if by_source else {})})
    return labels or None


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
