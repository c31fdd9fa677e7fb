"""The serving benchmark's pure parts: wrk output, Prometheus histograms, ratios, tables."""

from __future__ import annotations

import pytest
from benchmarks.serving import bench_serving, report

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/v2/models/iris/infer
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.51ms    3.02ms   1.02s    91.23%
    Req/Sec     2.56k   120.33     2.80k    70.00%
  Latency Distribution
     50%   11.90ms
     75%   13.10ms
     90%  850.00us
     99%    1.20s
  25612 requests in 10.01s, 4.12MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:   2558.74
Transfer/sec:    421.50KB
"""


def test_parse_wrk_reads_throughput_percentiles_and_errors() -> None:
    r = report.parse_wrk(WRK_OUTPUT)
    assert r.rps == 2558.74
    assert r.requests == 25612
    assert r.duration_s == pytest.approx(10.01)
    assert r.p50_ms == pytest.approx(11.9)
    assert r.p75_ms == pytest.approx(13.1)
    assert r.p90_ms == pytest.approx(0.85)
    assert r.p99_ms == pytest.approx(1200.0)
    assert r.latency_avg_ms == pytest.approx(12.51)
    assert r.latency_max_ms == pytest.approx(1020.0)
    assert r.socket_errors == {"connect": 0, "read": 2, "write": 0, "timeout": 3}
    assert r.non_2xx == 4
    assert r.errors == 9


def test_parse_wrk_without_errors_counts_none() -> None:
    text = WRK_OUTPUT.replace("  Socket errors: connect 0, read 2, write 0, timeout 3\n", "")
    text = text.replace("  Non-2xx or 3xx responses: 4\n", "")
    assert report.parse_wrk(text).errors == 0


def test_parse_wrk_rejects_output_without_latency_distribution() -> None:
    text = "unable to connect to 127.0.0.1:1 Connection refused\n"
    with pytest.raises(ValueError, match="latency distribution"):
        report.parse_wrk(text)


@pytest.mark.parametrize(
    ("text", "ms"),
    [("812.00us", 0.812), ("1.5ms", 1.5), ("2s", 2000.0), ("1.00m", 60000.0)],
)
def test_parse_duration_ms(text: str, ms: float) -> None:
    assert report.parse_duration_ms(text) == pytest.approx(ms)


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        report.parse_duration_ms("fast")


def test_lua_script_quotes_body_safely() -> None:
    assert 'wrk.body = [=[{"a":[[1]]}]=]' in report.wrk_lua_script('{"a":[[1]]}')
    script = report.wrk_lua_script('{"a":"]=]"}')
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = [==[{"a":"]=]"}]==]' in script


def test_histogram_sum_count_adds_label_sets() -> None:
    text = """\
# HELP mlmodel_batch_size_rows Rows per predict call.
# TYPE mlmodel_batch_size_rows histogram
mlmodel_batch_size_rows_bucket{model="iris",le="1.0"} 3.0
mlmodel_batch_size_rows_sum{model="iris",output="predict"} 120.0
mlmodel_batch_size_rows_count{model="iris",output="predict"} 10.0
mlmodel_batch_size_rows_sum{model="iris",output="predict_proba"} 30.0
mlmodel_batch_size_rows_count{model="iris",output="predict_proba"} 5.0
mlmodel_request_latency_seconds_sum 4.0
"""
    assert report.histogram_sum_count(text, "batch_size") == (150.0, 15.0)
    with pytest.raises(ValueError):
        report.histogram_sum_count(text, "queue_wait")
    assert report.histogram_sum_count(text, "batch_size", 'output="predict_proba"') == (30.0, 5.0)
    routes = """\
mlmodel_request_duration_seconds_sum{route="/v2/models/{model_name}/infer"} 2.5
mlmodel_request_duration_seconds_count{route="/v2/models/{model_name}/infer"} 4.0
mlmodel_request_duration_seconds_sum{route="/metrics",note="a \\"}\\" here"} 9.0
mlmodel_request_duration_seconds_count{route="/metrics",note="a \\"}\\" here"} 1.0
"""
    assert report.histogram_sum_count(routes, "request_duration", "/infer") == (2.5, 4.0)
    assert report.histogram_sum_count(routes, "request_duration") == (11.5, 5.0)
    with pytest.raises(ValueError):
        report.histogram_sum_count(text, "batch_size", 'output="other"')


def _rows() -> list[object]:
    Row = report.Row
    return [
        Row("ours", rps=3000.0, p50_ms=9.0, p99_ms=15.0),
        Row("kserve", rps=1200.0, p50_ms=25.0, p99_ms=40.0),
        Row("mlserver", rps=1500.0, p50_ms=20.0, p99_ms=30.0),
        Row("mlserver-batching", rps=2000.0, p50_ms=15.0, p99_ms=20.0),
        Row("fastapi", rps=2000.0, p50_ms=15.0, p99_ms=22.0),
        Row("hello", rps=6000.0, p50_ms=5.0, p99_ms=8.0),
        Row("hello-raw", rps=30000.0, p50_ms=1.0, p99_ms=2.0),
    ]


def test_compare_against_best_unbatched_anchor_and_floors() -> None:
    c = report.compare(_rows(), "ours", report.ANCHORS_UNBATCHED, inprocess_rps=10000.0)
    assert c.best_anchor == "mlserver"
    assert c.rps_vs_best_anchor == pytest.approx(2.0)
    assert c.p99_vs_best_anchor == pytest.approx(0.5)
    assert c.rps_vs_plain == pytest.approx(1.5)
    assert c.rps_vs_floors == {"hello": pytest.approx(0.5), "hello-raw": pytest.approx(0.1)}
    assert c.rps_vs_inprocess == pytest.approx(0.3)


def test_best_anchor_skips_runs_with_errors() -> None:
    rows = [*_rows(), report.Row("kserve", rps=9000.0, p50_ms=1.0, p99_ms=1.0, errors=7)]
    rows = [r for r in rows if not (r.server == "kserve" and r.errors == 0)]
    assert report.best_of(rows, report.ANCHORS_ALL).server == "mlserver-batching"


def test_compare_without_ours_or_anchors() -> None:
    assert report.compare(_rows(), "ours-batching", report.ANCHORS_ALL, None) is None
    only_ours = [report.Row("ours", rps=1.0, p50_ms=1.0, p99_ms=1.0)]
    c = report.compare(only_ours, "ours", report.ANCHORS_ALL, None)
    assert c.best_anchor is None and c.rps_vs_best_anchor is None


def test_ratio_and_overhead() -> None:
    assert report.ratio(1.0, 0.0) is None
    assert report.ratio(None, 2.0) is None
    assert report.overhead_vs_inprocess(5.5, 5.0) == pytest.approx(0.10)


def test_config_section_renders_rows_floor_and_ratios() -> None:
    rows = _rows()
    c = report.compare(rows, "ours", report.ANCHORS_UNBATCHED, None)
    md = report.config_section("iris, concurrency 32, batch 1", rows, 0.1, [c])
    lines = md.splitlines()
    assert lines[0] == "#### iris, concurrency 32, batch 1"
    assert "| server | req/s | p50 ms | p99 ms | errors |" in lines
    assert "| ours | 3,000 | 9.00 | 15.00 | 0 |" in lines
    assert "| in-process predict (floor) | 10,000 | 0.100 | - | - |" in lines
    assert any("2.00x the req/s of the best anchor (mlserver)" in line for line in lines)
    assert any("0.10x the hello-raw floor" in line for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--mlserver-max-batch-size", "0"], "--mlserver-max-batch-size 0: expected >= 1"),
        (["--max-batch-size", "-1"], "--max-batch-size -1"),
        (["--servers", "ours,nginx"], "unknown servers ['nginx']"),
    ],
)
def test_bad_options_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        bench_serving.parse_args(argv)
    assert message in capsys.readouterr().err


def test_mlserver_batch_size_defaults_to_the_highest_concurrency() -> None:
    assert bench_serving.parse_args(["--concurrency", "1,8"]).mlserver_max_batch_size == 8
