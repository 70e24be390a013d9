"""Where a run's time and memory go: each stage's seconds and peak resident memory, and memory handed back.

The loop runs every stage in one process. `measure()` wraps a stage: it resets the kernel's peak-RSS mark
(Linux: /proc/self/clear_refs), runs the stage, reads the stage's own peak (VmHWM), then frees what the stage
left behind (garbage collection, then glibc's malloc_trim, which returns free heap pages to the kernel), so
the next stage starts from the same footing and a run's peak is the largest stage's peak, not their sum.

`expected_seconds()` / `remember_seconds()` keep the last duration of each stage config on this machine
(<cache>/stage-times.json), so the loop can say how long a stage should take before it starts.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

GIB = 1024**3


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int | None:
    """Resident memory now (Linux), or None."""
    kib = _status_kib("VmRSS")
    return kib * 1024 if kib is not None else None


def peak_rss_bytes() -> int | None:
    """Peak resident memory since the process started or since the last `reset_peak_rss()`."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement (Linux >= 4.0: writing 5 to clear_refs resets VmHWM to VmRSS)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release_memory() -> None:
    """Hand memory that nothing references back to the kernel: gc, then glibc's malloc_trim where there is one.

    `rlhf` keeps freed memory inside the process during a stage (rlhf.cli.keep_freed_memory: training steps run
    faster without the kernel zeroing fresh pages); between stages it is given back here.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


@contextmanager
def measure(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Fill `record` with the block's seconds, peak RSS and the RSS left once its memory is released."""
    release_memory()
    reset_peak_rss()
    started = time.time()
    try:
        yield record
    finally:
        record["seconds"] = round(time.time() - started, 1)
        peak = peak_rss_bytes()
        record["peak_rss_gb"] = round(peak / GIB, 3) if peak else None
        release_memory()
        after = rss_bytes()
        record["rss_after_gb"] = round(after / GIB, 3) if after else None


def _times_file() -> Path:
    from rlhf.models import cache_dir

    return cache_dir() / "stage-times.json"


def expected_seconds(key: str) -> float | None:
    """How long the stage config `key` took the last time it ran on this machine, or None."""
    try:
        return float(json.loads(_times_file().read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_seconds(key: str, seconds: float) -> None:
    path = _times_file()
    try:
        times = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        times = {}  # a broken hint file is replaced
    if not isinstance(times, dict):
        times = {}
    try:
        times[key] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(times, indent=1, sort_keys=True))
        tmp.replace(path)
    except (OSError, ValueError):
        pass  # a hint for the next run, never a reason to fail this one


def format_seconds(seconds: float) -> str:
    """"45 s", "3 min 05 s": durations as the loop prints them."""
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"
