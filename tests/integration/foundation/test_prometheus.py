"""Debian's Prometheus scrapes a target the test serves and answers a query."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlmodel_operator.localcluster import PrometheusServer, wait_until

pytestmark = pytest.mark.integration

METRICS = b"""# HELP demo_requests_total Requests seen by the demo target.
# TYPE demo_requests_total counter
demo_requests_total{route="/predict"} 42
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_scrapes_and_answers(tmp_path: Path, target: str) -> None:
    config = f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: demo
    static_configs: [{{targets: ["{target}"]}}]
"""
    prom = PrometheusServer(tmp_path / "prom", config).start()
    try:
        wait_until(
            "the demo series in Prometheus",
            lambda: bool(prom.query('demo_requests_total{job="demo"}')),
            timeout=30,
            interval=0.5,
        )
        (sample,) = prom.query('demo_requests_total{job="demo"}')
        assert sample["metric"]["route"] == "/predict"
        assert float(sample["value"][1]) == 42.0
        (up,) = prom.query('up{job="demo"}')
        assert up["value"][1] == "1"
    finally:
        prom.stop()
