"""The new benchmark parts that run without a server: request bodies, checks, the Python
load generator against a tiny in-process HTTP server, rendering."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from benchmarks.serving import bench_encodings, bench_serving, loadgen, report


def test_prediction_checker_reads_v2_and_v1_labels_as_strings_or_numbers() -> None:
    labels = bench_serving.prediction_checker(["churn", "stay"])
    assert labels(b'{"outputs":[{"name":"predict","data":["churn","stay"]}]}')
    assert labels(b'{"predictions":["churn","stay"]}')
    assert not labels(b'{"predictions":["stay","churn"]}')
    assert not labels(b'{"outputs":[{"name":"predict","data":[0,1]}]}')
    numbers = bench_serving.prediction_checker([0.0, 1.0])
    assert numbers(b'{"outputs":[{"data":[0,1]}]}')
    assert not numbers(b'{"outputs":[{"data":[0,1,1]}]}')
    assert not numbers(b"not json")


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> bench_serving.ModelCase:
    (case,) = bench_serving.train_models(tmp_path_factory.mktemp("m"), ("churn",))
    return case


def test_churn_requests_per_server(churn: bench_serving.ModelCase) -> None:
    ours = json.loads(churn.request("ours", 3).body)
    assert [(t["name"], t["datatype"], t["shape"]) for t in ours["inputs"]] == [
        ("tenure", "FP64", [3]),
        ("monthly_charges", "FP64", [3]),
        ("total_charges", "FP64", [3]),
        ("contract", "BYTES", [3]),
        ("payment_method", "BYTES", [3]),
        ("internet_service", "BYTES", [3]),
    ]
    assert "parameters" not in ours
    mlserver = json.loads(churn.request("mlserver-2proc", 3).body)
    assert mlserver["parameters"] == {"content_type": "pd"}
    assert mlserver["inputs"] == ours["inputs"]
    kserve = churn.request("kserve", 3)
    assert kserve.path == "/v1/models/churn:predict"
    (rows,) = json.loads(kserve.body)["instances"]  # one instance: the list of rows
    assert len(rows) == 3 and rows[0]["contract"] == ours["inputs"][3]["data"][0]
    assert all(isinstance(v, str) for v in churn.expected(3))
    assert churn.serves("kserve") and not churn.serves("fastapi")
    assert not churn.serves("ours-before")
    probes = churn.kserve_probes(2)
    assert len(json.loads(probes["v1_one_object_per_instance"].body)["instances"]) == 2


def test_ours_command_passes_grpc_port_only_when_given(churn: bench_serving.ModelCase) -> None:
    cmd = bench_serving.ours_command(Path("serve"), churn, 1, Path("c"), batching=None)
    assert "--grpc-port" not in cmd and cmd[cmd.index("--max-batch-size") + 1] == "0"
    cmd = bench_serving.ours_command(
        Path("serve"), churn, 1, Path("c"), batching=(1024, 2.0), grpc_port=0, leaf_tables=False
    )
    assert cmd[cmd.index("--grpc-port") + 1] == "0"
    assert cmd[cmd.index("--max-batch-size") + 1] == "1024"
    assert cmd[-2:] == ["--leaf-tables", "false"]


def test_lua_file_script_sends_the_file_with_headers() -> None:
    script = report.wrk_lua_file_script(
        "/tmp/b.bin",
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": "167"},
    )
    assert 'wrk.headers["Inference-Header-Content-Length"] = "167"' in script
    assert 'io.open("/tmp/b.bin", "rb")' in script
    with pytest.raises(ValueError):
        report.wrk_lua_file_script('/tmp/"x', {})


def test_before_after_line() -> None:
    rows = [report.Row("ours", 200.0, 1.0, 4.0), report.Row("ours-before", 100.0, 1.0, 8.0)]
    line = report.before_after_line(rows, "ours", "ours-before", "ref = abc")
    assert line is not None and "2.00x its req/s" in line and "p99 0.50x" in line
    assert report.before_after_line(rows[:1], "ours", "ours-before", "x") is None


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50.0
    assert loadgen.percentile(values, 99) == 99.0
    assert loadgen.percentile([3.0], 99) == 3.0


def test_closed_loop_http_against_a_tiny_server() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> loadgen.LoadResult:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    await reader.readexactly(length)
                    writer.write(answer)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        server = await asyncio.start_server(handle, loadgen.LOOPBACK, 0)
        port = server.sockets[0].getsockname()[1]
        request = loadgen.http_request_bytes(port, "/x", b"{}", {"Content-Type": "a/b"})
        make, close = loadgen.http_worker_factory(port, request)
        try:
            return await loadgen.closed_loop(make, 4, 0.3, close)
        finally:
            server.close()

    result = asyncio.run(main())
    assert result.requests > 10 and result.errors == 0
    assert result.p50_ms <= result.p99_ms and result.duration_s >= 0.3


def test_encodings_render_and_options() -> None:
    results: dict[str, Any] = {
        "date": "2026-12-01",
        "command": "python benchmarks/run.py encodings",
        "machine": {"cores": 2, "cpu": "x", "python": "3.11"},
        "model": {"description": "forest"},
        "server": {"name": "ours"},
        "settings": {
            "duration_s": 1,
            "warmup_s": 1,
            "rounds": 1,
            "rows": [1],
            "concurrency": [1],
            "methods": ["json-wrk", "grpc-py"],
            "batching": False,
        },
        "skipped": {"grpc-py": "no gRPC port"},
        "sizes": {"json-wrk": {"1": {"request_bytes": 493, "response_bytes": 116}}},
        "methods": ["json-wrk"],
        "runs": [
            {
                "method": "json-wrk",
                "rows": 1,
                "concurrency": 1,
                "rps": 1000.0,
                "p50_ms": 0.9,
                "p99_ms": 2.0,
                "requests": 1000,
                "errors": 0,
                "server_cpu_s": 0.5,
                "client_cpu_s": 0.05,
                "loadavg1": 0.5,
            }
        ],
    }
    md = bench_encodings.render(results)
    assert "| 1 | 1 | json-wrk | 1,000 | 0.900 | 2.00 | 0 | 0.500 | 0.050 | 493 | 116 |" in md
    assert "skipped `grpc-py`: no gRPC port" in md
    with pytest.raises(SystemExit):
        bench_encodings.parse_args(["--methods", "json-wrk,carrier-pigeon"])
