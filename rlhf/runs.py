"""Run folders: runs/<name>/<stage>/ with the resolved config, data hash, metrics.jsonl, summary.json.

A folder is created only after inputs are validated, so a bad input leaves nothing behind. Trainers
write checkpoints there; a re-run of the same stage resumes from the last complete checkpoint.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from rlhf.errors import RlhfError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint whose trainer_state.json exists (written last, so the save completed)."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    done = []
    for child in out.iterdir():
        m = _CHECKPOINT.match(child.name)
        if m and child.is_dir() and (child / "trainer_state.json").is_file():
            done.append((int(m.group(1)), child))
    return str(max(done)[1]) if done else None


def find_labels_export(data_path: str | os.PathLike | None) -> dict[str, Any] | None:
    """If a data file lies inside a labeler export (a folder with export.json, up to two levels up),
    the export's id, project and content hash: the link from a trained model back to its labels."""
    if not data_path:
        return None
    path = Path(data_path).resolve()
    for folder in [path, *list(path.parents)[:2]]:
        meta = folder / "export.json"
        if meta.is_file():
            info = json.loads(meta.read_text())
            return {"path": str(folder), "content_hash": info.get("content_hash"), "id": info.get("id"),
                    "project": info.get("project")}
    return None


def prepare_run_dir(output_dir: str | os.PathLike, stage: str, config: dict[str, Any], data_hash: str | None,
                    config_path: str | None = None) -> Path:
    """Create the stage folder and record what produced it (config, config file, data hash)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    run = {
        "stage": stage,
        "config_file": config_path,
        "data_hash": data_hash,
        "labels_export": find_labels_export(config.get("train_file")),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "run.json").write_text(json.dumps(run, indent=2))
    return out


def read_run_info(output_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(output_dir) / "run.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def append_metrics(output_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    with open(Path(output_dir) / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def read_metrics(output_dir: str | os.PathLike) -> list[dict[str, Any]]:
    p = Path(output_dir) / "metrics.jsonl"
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def write_summary(output_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    p = Path(output_dir) / "summary.json"
    tmp = p.with_suffix(f".json.{os.getpid()}.tmp")  # unique: under DDP every rank may write
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    os.replace(tmp, p)
    return p


def read_summary(output_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(output_dir) / "summary.json"
    if not p.is_file():
        raise RlhfError(f"{p} not found: has that stage run?")
    return json.loads(p.read_text())


def metrics_callback(output_dir: str | os.PathLike, extra: dict[str, Any] | None = None):
    """A TrainerCallback that appends every logged dict (loss, rewards, KL, ...) to metrics.jsonl.

    `extra` goes into every line: `rlhf onpolicy` runs one trainer per iteration into one metrics.jsonl
    and tags each line with its iteration, since every trainer counts its steps from 0.
    """
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                clean = {k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool))}
                append_metrics(output_dir, {**(extra or {}), "step": state.global_step, "epoch": state.epoch, **clean})

    return MetricsCallback()
