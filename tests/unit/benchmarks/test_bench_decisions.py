"""The decision log benchmark's pure parts: metrics, medians, ratios, checks, rendering."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks.serving import bench_decisions as bd

METRICS = """\
# HELP mlmodel_requests_total HTTP requests by protocol, route and status code
# TYPE mlmodel_requests_total counter
mlmodel_requests_total{code="200",model="iris",protocol="v2",route="/v2/models/{model_name}/infer"} 990.0
mlmodel_requests_total{code="503",model="iris",protocol="v2",route="/v2/models/{model_name}/infer"} 10.0
mlmodel_requests_total{code="200",model="iris",protocol="http",route="/metrics"} 4.0
# HELP mlmodel_decisions_dropped_total Decision records dropped
# TYPE mlmodel_decisions_dropped_total counter
mlmodel_decisions_dropped_total{model="iris"} 0.0
"""


def test_metric_total_sums_matching_samples_and_tells_absent_from_zero() -> None:
    assert bd.metric_total(METRICS, "mlmodel_requests_total", route="/infer") == 1000.0
    assert bd.metric_total(METRICS, "mlmodel_requests_total", route="/infer", code="200") == 990
    assert bd.metric_total(METRICS, "mlmodel_decisions_dropped_total") == 0.0
    assert bd.metric_total(METRICS, "mlmodel_decisions_written_total") is None


def run(model: str, config: str, rnd: int, rps: float, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "config": config,
        "round": rnd,
        "rps": rps,
        "p50_ms": 1000 / rps,
        "p99_ms": 3000 / rps,
        "errors": 0,
        "requests": int(rps * 10),
        "server_cpu_s": rps / 1000,
        "store_cpu_s": 0.1 if config != bd.OFF else 0.0,
        "loadavg1": 1.0,
        **extra,
    }


RUNS = [
    run("iris", "off", 0, 1000),
    run("iris", "best-effort", 0, 900),
    run("iris", "required", 0, 850),
    run("iris", "off", 1, 500),  # a slow round: the machine was busy for all three
    run("iris", "best-effort", 1, 400),
    run("iris", "required", 1, 450),
    run("iris", "off", 2, 1100),
    run("iris", "best-effort", 2, 990),
    {"model": "iris", "config": "required", "round": 2, "failed": "wrk could not connect"},
]


def test_median_runs_takes_the_median_run_by_rps_and_skips_failed_runs() -> None:
    medians = bd.median_runs(RUNS)
    assert medians["iris", "off"]["rps"] == 1000
    assert medians["iris", "best-effort"]["rps"] == 900
    assert medians["iris", "required"]["rps"] == 850  # two runs: the upper middle


def test_ratio_to_off_is_the_median_of_the_ratios_within_a_round() -> None:
    # rounds: 0.9, 0.8, 0.9 -> 0.9; a ratio of medians would say 900/1000 too, but
    # required shows the difference: rounds 0.85 and 0.9 (round 2 failed) -> 0.875.
    assert bd.ratio_to_off(RUNS, "iris", "best-effort") == pytest.approx(0.9)
    assert bd.ratio_to_off(RUNS, "iris", "required") == pytest.approx(0.875)
    assert bd.ratio_to_off(RUNS, "churn", "required") is None


def test_cpu_per_1k_is_total_cpu_over_total_requests() -> None:
    # server_cpu_s = rps / 1000 and requests = rps * 10: 1e-4 s per request, every run.
    assert bd.cpu_per_1k(RUNS, "iris", "off") == pytest.approx(0.1)
    assert bd.cpu_per_1k(RUNS, "iris", "best-effort", "store_cpu_s") == pytest.approx(
        1000 * 0.3 / (9000 + 4000 + 9900)
    )
    assert bd.cpu_per_1k(RUNS, "churn", "off") is None


def bucket(records: int, ok: int | None = None, ids: int | None = None) -> dict[str, int]:
    return {
        "objects": 2,
        "records": records,
        "ok_records": records if ok is None else ok,
        "distinct_ids": records if ids is None else ids,
        "bytes": records * 20,
    }


def test_records_check_compares_status_200_records_with_the_200_counter() -> None:
    # 503s answered while loading are counted as answered, but are not decisions.
    assert bd.records_check({"answered": 1010, "answered_ok": 1000, "bucket": bucket(1000)}) == "ok"
    assert bd.records_check({"answered_ok": 1000, "bucket": bucket(998)}) == (
        "998 records of status 200 for 1,000"
    )
    assert bd.records_check({"answered_ok": 1000, "bucket": bucket(1000, ids=999)}) == (
        "999 distinct ids in 1,000"
    )
    assert bd.records_check({"answered_ok": 1000}) == "not checked"
    assert bd.bytes_per_record({"bucket": bucket(1000)}) == 20.0
    assert bd.bytes_per_record({"bucket": bucket(0)}) is None


def results(runs: list[dict[str, Any]], checked: int = 1000) -> dict[str, Any]:
    logged = {"rss_mb": 260.0, "answered_ok": 1000.0, "dropped": 0.0, "bucket": bucket(checked)}
    return {
        "date": "2026-12-01",
        "command": "python benchmarks/run.py decisions",
        "machine": {"cores": 2, "cpu": "CPU", "memory_gib": 8, "python": "3.11.7"},
        "settings": {
            "duration_s": 15,
            "warmup_s": 3,
            "rounds": 3,
            "concurrency": 32,
            "batching": [1024, 2.0],
            "decision_log": {"flush_seconds": 10.0, "max_records": 1000, "queue_records": 100000},
        },
        "models": {
            "iris": {
                "servers": {
                    "off": {"rss_mb": 230.0},
                    "best-effort": dict(logged),
                    "required": dict(logged),
                }
            }
        },
        "runs": runs,
    }


def test_render_has_a_row_per_config_and_the_verdict() -> None:
    md = bd.render(results(RUNS))
    assert "### Decision log benchmark, 2026-12-01" in md
    assert "Command: `python benchmarks/run.py decisions`" in md
    assert "| iris | off | 1,000 | 1.00 | 3.00 | 0 | 1.00x | 0.100 | - | 230.0 | - |" in md
    assert "| iris | best-effort | 900 | 1.11 | 3.33 | 0 | 0.90x |" in md
    assert md.count("| ok |") == 2
    assert "0.900x (best-effort) and 0.875x (required)" in md
    assert "target >= 0.80x: **met**" in md
    assert "RSS after the runs 230 MiB off, 260 MiB best-effort (+30)" in md
    assert "exactly one record per inference request answered 200 (2,000 records" in md
    assert "a record takes 20 bytes" in md


def test_findings_miss_the_target_when_either_mode_is_below_it_and_name_a_mismatch() -> None:
    slow = [r for r in RUNS if r["config"] != "required"] + [
        run("iris", "required", 0, 790),
        run("iris", "required", 1, 390),
    ]
    text = "\n".join(bd.findings(results(slow, checked=999)))
    assert "0.785x (required)" in text and "**MISSED**" in text
    assert "best-effort: 999 records of status 200 for 1,000" in text


def test_only_the_small_model_carries_the_target() -> None:
    res = results([{**r, "model": "churn"} for r in RUNS])
    res["models"] = {"churn": res["models"]["iris"]}
    assert "target" not in bd.findings(res)[0]


def test_parse_args_quick_defaults_give_way_to_explicit_values() -> None:
    quick = bd.parse_args(["--quick", "--duration", "3"])
    assert (quick.duration_s, quick.warmup_s, quick.rounds) == (3, 1, 1)
    full = bd.parse_args([])
    assert (full.duration_s, full.rounds, full.concurrency, full.models) == (
        15,
        3,
        32,
        ("iris", "churn"),
    )
    with pytest.raises(SystemExit):
        bd.parse_args(["--models", "forest"])


def test_server_env_sets_the_log_only_when_on_and_drops_this_shells_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Store:
        endpoint, access_key, secret_key = "127.0.0.1:9000", "ak", "sk"

    monkeypatch.setenv("MLMODEL_DECISION_LOG", "true")
    off = bd.server_env("off", Store(), "b")
    assert not any(k.startswith("MLMODEL_") for k in off)
    on = bd.server_env("required", Store(), bd.bucket_name("iris", "required"))
    assert on["MLMODEL_DECISION_LOG_MODE"] == "required"
    assert on["MLMODEL_DECISION_LOG_BUCKET"] == "bench-iris-required"
    assert on["MLMODEL_S3_ENDPOINT"] == "127.0.0.1:9000"
