"""Run folders: runs/<name>/<stage>/ with the resolved config, data hash, metrics.jsonl, summary.json.

A folder is created only after inputs are validated, so a bad input leaves nothing behind. Trainers
write checkpoints there; a re-run of the same stage resumes from the last complete checkpoint (one whose
trainer_state.json parses), and metrics.jsonl is cut back to that checkpoint so no step is logged twice.
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


def checkpoint_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The parsed trainer_state.json of a checkpoint folder, or None when it is missing, empty or cut short.

    Transformers writes trainer_state.json last, after the weights, optimizer and RNG states; a kill while
    it is being written leaves it empty or truncated. Only a state that parses marks a complete checkpoint.
    """
    path = Path(folder) / "trainer_state.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("global_step"), int) else None


def last_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint (its trainer_state.json parses); incomplete newer ones are skipped, said so."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    found = sorted(((int(m.group(1)), child) for child in out.iterdir()
                    if (m := _CHECKPOINT.match(child.name)) and child.is_dir()), reverse=True)
    for _, folder in found:
        if checkpoint_state(folder) is not None:
            return str(folder)
        print(f"[rlhf] {folder}: incomplete checkpoint (trainer_state.json missing or unreadable: the save was "
              "interrupted); skipped", flush=True)
    return None


def resume_checkpoint(output_dir: str | os.PathLike, requested: str | None = None) -> str | None:
    """The checkpoint a training stage resumes from, printed: TRL's `resume_from_checkpoint` when set (a
    checkpoint folder; `true` for the last complete one in output_dir; `false` to start afresh), else the
    last complete checkpoint in output_dir, else None (a fresh start)."""
    choice = (requested or "").strip()
    if choice.lower() in ("false", "no", "none", "0"):
        print("[rlhf] resume_from_checkpoint false: training from the start", flush=True)
        return None
    if choice and choice.lower() not in ("true", "yes", "1"):
        if checkpoint_state(choice) is None:
            raise RlhfError(f"resume_from_checkpoint: {choice} is not a complete checkpoint "
                            "(no readable trainer_state.json)")
        found = choice
    else:
        found = last_checkpoint(output_dir)
    if found:
        print(f"[rlhf] resuming from {found} (step {checkpoint_state(found)['global_step']})", flush=True)
    return found


def truncate_metrics(output_dir: str | os.PathLike, keep: int, tags: dict[str, Any] | None = None) -> int:
    """Keep the first `keep` rows of metrics.jsonl that carry `tags` (all rows when None), every row that does
    not, and no partly written line; returns the rows dropped. `rlhf onpolicy` tags each iteration's rows, so
    a resumed iteration trims its own rows and leaves the finished iterations' alone; rows with an `event`
    are the stage's own records, never the trainer's, and stay."""
    p = Path(output_dir) / "metrics.jsonl"
    if not p.is_file():
        return 0
    lines = p.read_text().splitlines()
    kept, mine = [], 0
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break  # a row cut short by a kill, and anything after it
        if "event" in row or (tags and any(row.get(k) != v for k, v in tags.items())):
            kept.append(line)  # a stage's own record (not the trainer's log), or another iteration's row
        elif mine < keep:
            kept.append(line)
            mine += 1
    if len(kept) == len(lines):
        return 0
    tmp = p.with_suffix(f".jsonl.{os.getpid()}.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, p)
    return len(lines) - len(kept)


def prepare_run_dir(output_dir: str | os.PathLike, stage: str, config: dict[str, Any], data_hash: str | None,
                    config_path: str | None = None) -> Path:
    """Create the stage folder and record what produced it (config, config file, data hash, and the labels
    its train_file's rows came from, read from their labels_id / labels_hash columns: rlhf.data.labels_provenance)."""
    from rlhf.data import labels_provenance

    train_file = config.get("train_file")
    labels = labels_provenance(train_file, "sft" if stage == "sft" else "preferences") if train_file else None
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    run = {
        "stage": stage,
        "config_file": config_path,
        "data_hash": data_hash,
        "labels": labels,
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
    """summary.json, atomically; a stage trained on labels gets their provenance from its run.json as "labels"."""
    labels = read_run_info(output_dir).get("labels")
    if labels and "labels" not in summary:
        summary = {**summary, "labels": labels}
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
        def on_train_begin(self, args, state, control, **kwargs):
            # metrics.jsonl holds one row per entry of the trainer's log history. After a resume the history
            # is the checkpoint's, so rows the interrupted run logged past that checkpoint are dropped here and
            # logged again as training repeats those steps: every step appears once.
            if state.is_world_process_zero:
                dropped = truncate_metrics(output_dir, len(state.log_history), extra)
                if dropped:
                    print(f"[rlhf] metrics.jsonl: dropped {dropped} row(s) logged after step {state.global_step}, "
                          "where this run resumes", flush=True)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                clean = {k: v for k, v in logs.items() if isinstance(v, (int, float, str, bool))}
                append_metrics(output_dir, {**(extra or {}), "step": state.global_step, "epoch": state.epoch, **clean})

    return MetricsCallback()
