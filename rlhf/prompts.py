"""A team's prompts for the loop: any JSONL, Parquet file or saved `datasets` folder whose rows have `prompt`.

    from rlhf.prompts import load_loop_prompts
    prompts = load_loop_prompts("my_prompts.jsonl", heldout_fraction=0.1)
    prompts.train, prompts.heldout, prompts.duplicates

A row: {"prompt": str | [{"role", "content"}, ...], "id"?: str | int, "split"?: "train" | "heldout",
"constraints"?: [...]}. Chat prompts may open with a system turn and must end with a user turn. Without
`split`, a row is held out when a hash of its prompt text falls below `heldout_fraction`: the same
prompt lands on the same side in every run and on every machine. A prompt that appears twice is kept
once (the first row) and counted. A bad row fails with its file and line before any model loads.
The bundled instruction-following set (rlhf/data/prompts.jsonl) is one such file, with every field.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf.errors import RlhfError

SPLITS = ("train", "heldout")


@dataclass
class LoopPrompts:
    source: str
    train: list[dict[str, Any]] = field(default_factory=list)
    heldout: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    hashed_split: int = 0  # rows whose side was drawn from the prompt's hash (they had no `split`)
    heldout_fraction: float = 0.0

    @property
    def constrained(self) -> bool:
        """Every prompt carries constraints: pass rates can be measured and simulated annotators can rank."""
        return all(row.get("constraints") for row in self.train + self.heldout)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "train": len(self.train), "heldout": len(self.heldout),
                "duplicates_dropped": self.duplicates, "split_by_hash": self.hashed_split,
                "heldout_fraction": self.heldout_fraction, "constraints": self.constrained}


def prompt_key(prompt: str | list) -> str:
    """sha256 of the prompt's canonical JSON: the identity used for duplicates, ids and the held-out draw."""
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def hashed_side(key: str, heldout_fraction: float) -> str:
    """"heldout" when the first 8 hex digits of the prompt's hash, as a fraction of 2^32, fall below the fraction."""
    return "heldout" if int(key[:8], 16) / 2**32 < heldout_fraction else "train"


def check_prompt(row: dict[str, Any], where: str) -> None:
    from rlhf.data import check_messages

    prompt = row.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RlhfError(f"{where}: field 'prompt' is empty")
    elif isinstance(prompt, list):
        check_messages(prompt, where, "prompt", last_role="user")
    else:
        raise RlhfError(f"{where}: field 'prompt' must be a string or a list of chat messages, "
                        f"got {type(prompt).__name__ if prompt is not None else 'nothing'}")


def check_constraints(constraints: Any, where: str) -> None:
    """A row's optional `constraints`: a list of valid constraints (rlhf.constraints), or absent."""
    from rlhf.constraints import validate_constraint

    if constraints is None:
        return
    if not isinstance(constraints, list):
        raise RlhfError(f"{where}: field 'constraints' must be a list")
    for c in constraints:
        try:
            validate_constraint(c)
        except RlhfError as exc:
            raise RlhfError(f"{where}: field 'constraints': {exc}") from None


def check_row(row: dict[str, Any], where: str) -> None:
    check_prompt(row, where)
    if "id" in row and row["id"] is not None and (isinstance(row["id"], bool) or not isinstance(row["id"], (str, int))):
        raise RlhfError(f"{where}: field 'id' must be a string or an integer")
    if row.get("split") is not None and row["split"] not in SPLITS:
        raise RlhfError(f"{where}: field 'split' must be one of {SPLITS}, got {row['split']!r}")
    check_constraints(row.get("constraints"), where)


def rotate_prompts(rows: list[dict], n: int, turn: int, seed: int) -> list[dict]:
    """The prompts of turn `turn` (from 1: a loop round, an onpolicy iteration): a seeded shuffle, taken n at a
    time, wrapping around; n <= 0 takes them all."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = min(n, len(rows)) if n > 0 else len(rows)
    start = (turn - 1) * n
    return [rows[order[(start + i) % len(rows)]] for i in range(n)]


def load_loop_prompts(path: str | Path | None, heldout_fraction: float = 0.1) -> LoopPrompts:
    """Read, validate, de-duplicate and split a prompt file (default: the bundled set). Writes nothing."""
    from rlhf.data import read_rows
    from rlhf.prompt_set import prompt_set_path

    if not 0.0 < heldout_fraction < 1.0:
        raise RlhfError(f"heldout_fraction must be between 0 and 1 (exclusive), got {heldout_fraction}")
    source = Path(path) if path is not None else prompt_set_path()
    result = LoopPrompts(source=str(source), heldout_fraction=heldout_fraction)
    seen: set[str] = set()
    for where, row in read_rows(source):
        check_row(row, where)
        key = prompt_key(row["prompt"])
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        row = dict(row)
        row["id"] = str(row["id"]) if row.get("id") is not None else f"p-{key[:12]}"
        if row.get("split") is None:
            row["split"] = hashed_side(key, heldout_fraction)
            result.hashed_split += 1
        (result.train if row["split"] == "train" else result.heldout).append(row)
    if not result.train:
        raise RlhfError(f"{source}: no train prompts (every row is held out)")
    if not result.heldout:
        raise RlhfError(f"{source}: no held-out prompts: give some rows \"split\": \"heldout\", or raise "
                        f"heldout_fraction (now {heldout_fraction}) for rows without a split")
    return result
