"""The soak benchmark's arithmetic: the RSS trend after the warm-up, and its report."""

from __future__ import annotations

import pytest
from benchmarks.serving import bench_soak


def test_a_flat_series_is_flat_and_a_leak_is_not() -> None:
    flat = [(float(t), 100.0 + (1.0 if t % 20 == 0 else 0.0)) for t in range(0, 600, 5)]
    trend = bench_soak.rss_trend(flat, warmup_s=60)
    assert trend["flat"] and trend["growth_mib"] <= 1.0 and abs(trend["slope_mib_per_min"]) < 0.1
    assert trend["rss_after_warmup_mib"] in (100.0, 101.0)

    leak = [(float(t), 100.0 + t / 60) for t in range(0, 600, 5)]  # 1 MiB a minute
    trend = bench_soak.rss_trend(leak, warmup_s=60)
    assert not trend["flat"] and trend["slope_mib_per_min"] == pytest.approx(1.0)
    assert trend["rss_last_mib"] == pytest.approx(100 + 595 / 60, abs=0.05)


def test_too_few_samples_after_the_warm_up_is_an_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        bench_soak.rss_trend([(0.0, 1.0), (61.0, 1.0)], warmup_s=60)


def test_per_minute_keeps_the_last_sample_of_each_minute() -> None:
    assert bench_soak.per_minute([(0.0, 1.0), (59.0, 2.0), (60.0, 3.0), (125.0, 4.0)]) == [
        (0, 2.0), (1, 3.0), (2, 4.0),
    ]  # fmt: skip


def test_the_report_states_the_verdict_and_the_figures() -> None:
    samples = [(float(t), 120.0) for t in range(0, 120, 5)]
    results = {
        "date": "2026-12-02", "command": "python benchmarks/run.py soak",
        "settings": {"duration_s": 600, "warmup_s": 60, "sample_s": 5.0, "concurrency": 32},
        "model": {"name": "churn", "description": "churn Pipeline"},
        "wrk": {"requests": 1200000, "rps": 2000.0, "non_2xx": 0, "socket_errors": 0,
                "p99_ms": 31.5},
        "per_minute": bench_soak.per_minute(samples),
        "trend": bench_soak.rss_trend(samples, 60),
        "machine": {"cpu": "x", "loadavg_end": [1.0, 1.0, 1.0]},
    }  # fmt: skip
    text = bench_soak.render(results)
    assert "Soak: 10 minutes under wrk" in text and "**flat**" in text
    assert "| 1,200,000 | 2,000 | 0 | 0 | 31.50 ms | 120.0 MiB" in text
