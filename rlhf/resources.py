"""Where a run's time and memory go: each stage's seconds and peak resident memory, and memory handed back.

The loop runs every stage in a process of its own (`stage_processes`, the default), or in the loop's process.
`measure()` wraps a stage: a thread samples the resident set every 20 ms while the stage runs (the stage's own
peak; the kernel's peak mark is left alone, so `/usr/bin/time -v` still reports the whole run's), then it frees
what the stage left behind (garbage collection, then glibc's malloc_trim, which returns free heap pages to the
kernel). `release_memory()` does the same between the phases of a stage.

`expected_seconds()` / `remember_seconds()` keep the last few durations of each stage config on this machine
(<cache>/stage-times.json), so the loop can say how long a stage should take before it starts: the median of the
last RECENT_RUNS, so one run with other settings (more prompts, one core) does not set the next run's figure.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

GIB = 1024**3
RESOURCES_ENV = "RLHF_STAGE_RESOURCES"  # the loop names the file where a stage process writes its resources record


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


class PeakSampler:
    """The largest resident set seen while it runs: /proc/self/status read every `interval` seconds by a thread."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval, self.peak = interval, rss_bytes() or 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes() or 0)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes() or 0)


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
    """Fill `record` with the block's seconds, its peak RSS (sampled) and the RSS left once memory is released."""
    release_memory()
    started = time.time()
    sampler = PeakSampler()
    try:
        with sampler:
            yield record
    finally:
        record["seconds"] = round(time.time() - started, 1)
        record["peak_rss_gb"] = round(sampler.peak / GIB, 3) if sampler.peak else None
        release_memory()
        after = rss_bytes()
        record["rss_after_gb"] = round(after / GIB, 3) if after else None


def write_resources(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """A stage's resources.json, atomically (the loop reads it after the stage's process has ended)."""
    path = Path(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)


def _times_file() -> Path:
    from rlhf.models import cache_dir

    return cache_dir() / "stage-times.json"


RECENT_RUNS = 5  # durations kept per stage config; the expectation is their median


def usable_cpus() -> int:
    """The cores a stage here can use: this process's CPU affinity, capped by OMP_NUM_THREADS when set."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    threads = os.environ.get("OMP_NUM_THREADS", "").strip()
    return min(cpus, int(threads)) if threads.isdigit() and int(threads) > 0 else cpus


def _recent(times: dict, key: str) -> list[float]:
    value = times.get(key)
    values = value if isinstance(value, list) else [value]  # one number: a file written before the list
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0][-RECENT_RUNS:]


def _read_times() -> dict:
    try:
        times = json.loads(_times_file().read_text())
    except (OSError, ValueError):
        return {}  # no file yet, or a broken one (replaced at the next remember_seconds)
    return times if isinstance(times, dict) else {}


def expected_seconds(key: str) -> float | None:
    """The median duration of the stage config `key` over its last RECENT_RUNS runs on this machine, or None."""
    recent = _recent(_read_times(), key)
    return statistics.median(recent) if recent else None


def remember_seconds(key: str, seconds: float) -> None:
    path = _times_file()
    times = _read_times()
    try:
        times[key] = [*_recent(times, key), round(seconds, 1)][-RECENT_RUNS:]
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


def small_logprob_tiles(tokens: int = 512, vocab: int = 8192) -> bool:
    """Make TRL's chunked log-prob kernel work on [tokens x vocab] tiles instead of its [4096 x 32768] default.

    TRL 1.x computes per-token log-probs (SFT, DPO, GRPO, RLOO losses) without the full logits, one tile of the
    LM head's output at a time; its tile is sized for a GPU. On the CPU a DPO batch of 16 sequences filled one
    4096 x 32768 float32 tile plus the temporaries of its folding: `rlhf dpo` on 16 pairs peaked at 5.84 GB and
    took 18.1 s; with 512 x 8192 tiles, 2.73 GB and 16.9 s (2026-12-01, docs/performance.md). The module
    constants are read at every call; a TRL without them is left alone (returns False).
    """
    try:
        import trl.kernels.chunked_logprob as kernel
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    if not hasattr(kernel, "TOKEN_CHUNK_SIZE") or not hasattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE"):
        return False
    import torch

    if torch.cuda.is_available():
        return False  # the GPU's tiles stay as TRL sized them
    kernel.TOKEN_CHUNK_SIZE = tokens
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = vocab
    return True
