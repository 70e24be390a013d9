"""rlhf.resources: a stage's peak memory is its own, memory is handed back, and stage times are remembered."""

import sys

import pytest

from rlhf import resources


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and clear_refs are Linux's")
def test_measure_reports_the_blocks_own_peak_and_gives_memory_back():
    import numpy as np

    big = np.ones(300 * 1024**2 // 8)  # 300 MB touched: the peak before the measured block
    del big
    resources.release_memory()
    record = {}
    with resources.measure(record):
        small = np.ones(40 * 1024**2 // 8)  # 40 MB inside the block
        del small
    # the earlier 300 MB peak was reset: the block's own peak is far below it
    assert record["seconds"] >= 0
    assert record["peak_rss_gb"] < resources.rss_bytes() / resources.GIB + 0.2
    with resources.measure(record):
        block = np.ones(400 * 1024**2 // 8)
        del block
    assert record["peak_rss_gb"] * resources.GIB >= resources.rss_bytes() + 300 * 1024**2
    assert record["rss_after_gb"] < record["peak_rss_gb"] - 0.25  # handed back, not kept in the process


def test_expected_seconds_come_from_the_last_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    assert resources.expected_seconds("sft:quickstart/sft") is None
    resources.remember_seconds("sft:quickstart/sft", 187.26)
    resources.remember_seconds("dpo:quickstart/dpo", 215)
    assert resources.expected_seconds("sft:quickstart/sft") == 187.3
    (tmp_path / "stage-times.json").write_text("not json")
    assert resources.expected_seconds("sft:quickstart/sft") is None  # a broken hint file is no error
    resources.remember_seconds("sft:quickstart/sft", 100)
    assert resources.expected_seconds("sft:quickstart/sft") == 100


def test_format_seconds():
    assert resources.format_seconds(45.4) == "45 s"
    assert resources.format_seconds(185) == "3 min 05 s"
