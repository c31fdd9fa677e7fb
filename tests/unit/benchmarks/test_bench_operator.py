"""The operator benchmark's pure parts: percentiles, histograms, ratios, tables."""

from __future__ import annotations

import math

import pytest
from benchmarks.operator import report

METRICS = """\
# HELP mlmodel_operator_reconcile_duration_seconds Wall time of one reconcile of one MLModel.
# TYPE mlmodel_operator_reconcile_duration_seconds histogram
mlmodel_operator_reconcile_duration_seconds_bucket{le="0.01"} 2.0
mlmodel_operator_reconcile_duration_seconds_bucket{le="0.1"} 8.0
mlmodel_operator_reconcile_duration_seconds_bucket{le="1.0"} 10.0
mlmodel_operator_reconcile_duration_seconds_bucket{le="+Inf"} 10.0
mlmodel_operator_reconcile_duration_seconds_count 10.0
mlmodel_operator_reconcile_duration_seconds_sum 1.5
# TYPE mlmodel_operator_reconciles_total counter
mlmodel_operator_reconciles_total{result="ok"} 7.0
mlmodel_operator_reconciles_total{result="requeued"} 3.0
mlmodel_operator_models{phase="Serving"} 4.0
"""


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert report.percentile(values, 50) == pytest.approx(50.5)
    assert report.percentile(values, 99) == pytest.approx(99.01)
    assert report.percentile([3.0, 1.0, 2.0], 0) == 1.0
    assert report.percentile([3.0, 1.0, 2.0], 100) == 3.0
    assert report.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        report.percentile([], 50)
    with pytest.raises(ValueError):
        report.percentile([1.0], 101)


def test_summarize_reports_milliseconds() -> None:
    s = report.summarize([0.010, 0.020, 0.030])
    assert s["n"] == 3
    assert s["p50_ms"] == pytest.approx(20.0)
    assert s["mean_ms"] == pytest.approx(20.0)
    assert (s["min_ms"], s["max_ms"]) == (pytest.approx(10.0), pytest.approx(30.0))
    assert report.summarize([]) == {"n": 0}


def test_histogram_from_metrics_text_and_quantiles() -> None:
    samples = report.parse_metrics(METRICS)
    h = report.histogram(samples, report.RECONCILE_HISTOGRAM)
    assert h.count == 10 and h.total == 1.5 and h.mean == pytest.approx(0.15)
    assert h.buckets[-1] == (math.inf, 10.0)
    # rank 5 lies in (0.01, 0.1] which holds ranks 3..8: 0.01 + 0.09 * 3/6
    assert h.quantile(0.5) == pytest.approx(0.055)
    # rank 9.9 lies in (0.1, 1.0] holding ranks 9..10
    assert h.quantile(0.99) == pytest.approx(0.1 + 0.9 * 1.9 / 2)
    assert report.counter_by(samples, report.RECONCILES_TOTAL, "result") == {
        "ok": 7.0,
        "requeued": 3.0,
    }
    assert samples["mlmodel_operator_models"][(("phase", "Serving"),)] == 4.0


def test_histogram_delta_between_snapshots() -> None:
    before = report.Histogram(((0.01, 1.0), (0.1, 1.0), (math.inf, 1.0)), 0.005, 1.0)
    after = report.Histogram(((0.01, 1.0), (0.1, 3.0), (math.inf, 4.0)), 2.205, 4.0)
    d = after.minus(before)
    assert d.count == 3 and d.total == pytest.approx(2.2)
    assert d.buckets == ((0.01, 0.0), (0.1, 2.0), (math.inf, 3.0))
    # a rank in +Inf reports the largest finite bound, as Prometheus does
    assert d.quantile(0.99) == 0.1
    assert report.Histogram((), 0.0, 0.0).quantile(0.5) is None


def test_labels_with_escapes_and_commas() -> None:
    samples = report.parse_metrics('m{a="x,y",b="q\\"z"} 2\n')
    assert samples["m"] == {(("a", "x,y"), ("b", 'q"z')): 2.0}


def test_ratios_and_latency_table() -> None:
    assert report.ratio(30.0, 10.0) == 3.0
    assert report.ratio(None, 10.0) is None and report.ratio(1.0, 0.0) is None
    measures = {
        "floor": {"n": 2, "p50_ms": 10.0, "p99_ms": 20.0, "mean_ms": 12.0, "max_ms": 21.0},
        "ours": {"n": 2, "p50_ms": 45.0, "p99_ms": 90.0, "mean_ms": 50.0, "max_ms": 95.0},
    }
    table = report.markdown_table(report.LATENCY_HEADER, report.latency_rows(measures, "floor"))
    lines = table.splitlines()
    assert lines[0].startswith("| measure | n | p50 ms")
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| floor | 2 | 10.0 | 20.0 | 12.0 | 21.0 | 1.0x | 1.0x |"
    assert lines[3] == "| ours | 2 | 45.0 | 90.0 | 50.0 | 95.0 | 4.5x | 4.5x |"


def test_growth_per_object() -> None:
    mib = 2**20
    steps = report.growth_per_object([(0, 80 * mib), (100, 90 * mib), (400, 120 * mib)])
    assert [(s["from"], s["to"]) for s in steps] == [(0, 100), (100, 400)]
    assert steps[0]["bytes_per_object"] == pytest.approx(0.1 * mib)
    assert steps[1]["bytes_per_object"] == pytest.approx(0.1 * mib)


def test_readme_block_is_replaced_or_appended() -> None:
    begin, end = "<!-- b -->", "<!-- e -->"
    appended = report.replace_block("# Benchmarks\n", begin, end, "T1", "## Operator")
    assert appended == "# Benchmarks\n\n## Operator\n\n<!-- b -->\nT1\n<!-- e -->\n"
    replaced = report.replace_block(appended + "\n## Later\n", begin, end, "T2", "## Operator")
    assert "T1" not in replaced and "<!-- b -->\nT2\n<!-- e -->" in replaced
    assert replaced.endswith("## Later\n") and replaced.count("## Operator") == 1


def test_apiserver_requests_by_verb_and_resource() -> None:
    text = (
        'apiserver_request_total{code="200",resource="mlmodels",subresource="",verb="GET"} 3\n'
        'apiserver_request_total{code="404",resource="mlmodels",subresource="",verb="GET"} 1\n'
        'apiserver_request_total{code="200",resource="mlmodels",subresource="status",verb="PATCH"} 2\n'
        'apiserver_request_total{code="200",resource="pods",subresource="",verb="LIST"} 9\n'
    )
    before = report.request_counts(report.parse_metrics(text), ("mlmodels",))
    assert before == {"GET mlmodels": 4.0, "PATCH mlmodels/status": 2.0}
    after = {"GET mlmodels": 10.0, "PATCH mlmodels/status": 2.0, "POST mlmodels": 1.0}
    assert report.counts_delta(after, before) == {"GET mlmodels": 6.0, "POST mlmodels": 1.0}
