"""The serving benchmark's paired overhead: a kept-alive client and the pairing, on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from benchmarks.serving.paired import KeepAliveClient, paired_overhead

SERVER_DELAY_S = 0.004


class _Slow(BaseHTTPRequestHandler):
    """Answers every POST after SERVER_DELAY_S with its own body length, kept alive."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(SERVER_DELAY_S)
        status = 200 if body != b"fail" else 500
        answer = str(len(body)).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _Model:
    """predict() takes about 1 ms."""

    def predict(self, x: Any) -> Any:
        time.sleep(0.001)
        return x


def test_keep_alive_client_reads_whole_answers_on_one_connection(port: int) -> None:
    client = KeepAliveClient(port, "/v2/models/m/infer", b"x" * 5000)
    try:
        assert [client.call() for _ in range(3)] == [b"5000"] * 3
    finally:
        client.close()


def test_keep_alive_client_raises_on_an_error_status(port: int) -> None:
    client = KeepAliveClient(port, "/", b"fail")
    try:
        with pytest.raises(RuntimeError, match="500"):
            client.call()
    finally:
        client.close()


def test_paired_overhead_is_the_request_minus_the_predict(port: int) -> None:
    p = paired_overhead(_Model(), [1.0], port, "/infer", b"{}", budget_s=0.3, min_samples=10)
    assert p["samples"] >= 10
    assert p["inprocess_server_filters_ms"] >= 1.0 and p["inprocess_default_filters_ms"] >= 1.0
    # The fake server adds SERVER_DELAY_S (4 ms) on top of nothing: the overhead is the
    # request minus the 1 ms predict, at least ~3 ms, and it is reported as a fraction.
    assert p["server_ms"] >= SERVER_DELAY_S * 1000
    assert p["overhead_ms"] > 2.0
    assert p["overhead_fraction"] == pytest.approx(
        p["overhead_ms"] / p["inprocess_server_filters_ms"]
    )
    assert "inprocess_tables_ms" not in p


def test_paired_overhead_also_against_the_tables_when_given(port: int) -> None:
    def tables(x: object) -> None:
        time.sleep(0.002)

    p = paired_overhead(
        _Model(), [1.0], port, "/infer", b"{}", budget_s=0.3, min_samples=10, tables=tables
    )
    assert p["inprocess_tables_ms"] >= 2.0
    # The request (>= 4 ms) minus a 2 ms in-process tables predict.
    assert p["overhead_vs_tables_ms"] > 1.0
    assert p["overhead_vs_tables_fraction"] == pytest.approx(
        p["overhead_vs_tables_ms"] / p["inprocess_tables_ms"]
    )
