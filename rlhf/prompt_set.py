"""The bundled instruction-following prompt set (rlhf/data/prompts.jsonl), written by scripts/make_prompt_set.py.

Each row: {"id", "prompt", "topic", "category", "task", "constraints": [{"type", "params"}], "split"},
with split "train" (what the loop generates from) or "heldout" (what eval scores; its topics never
appear in train).

    from rlhf.prompt_set import load_prompt_set
    heldout = load_prompt_set("heldout")
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rlhf.errors import RlhfError

SPLITS = ("train", "heldout")


def prompt_set_path() -> Path:
    return Path(str(resources.files("rlhf") / "data" / "prompts.jsonl"))


def load_prompt_set(split: str | None = None, path: str | Path | None = None) -> list[dict]:
    """Rows of the prompt set (all, or one split), each validated: a bad row fails with its file and line."""
    if split is not None and split not in SPLITS:
        raise RlhfError(f"unknown prompt-set split '{split}' (choose from {', '.join(SPLITS)})")
    path = Path(path) if path is not None else prompt_set_path()
    if not path.is_file():
        raise RlhfError(f"prompt set not found: {path} (run scripts/make_prompt_set.py)")
    from rlhf.data import read_rows
    from rlhf.prompts import check_constraints

    rows = []
    for where, row in read_rows(path):
        if not isinstance(row.get("prompt"), str) or not row.get("id"):
            raise RlhfError(f"{where}: a row needs string fields 'id' and 'prompt'")
        if row.get("split") not in SPLITS:
            raise RlhfError(f"{where}: field 'split' must be one of {SPLITS}, got {row.get('split')!r}")
        if not isinstance(row.get("constraints"), list):
            raise RlhfError(f"{where}: field 'constraints' must be a list")
        check_constraints(row["constraints"], where)
        if split is None or row["split"] == split:
            rows.append(row)
    return rows
