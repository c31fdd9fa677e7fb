"""Server overhead at concurrency 1, measured in pairs.

The machine's speed drifts by tens of percent from one second to the next (a shared
2-core VM), so an in-process ``predict`` timed in one slot and a wrk run timed in another
can differ by more than the overhead being measured. Here every sample is a pair taken
back to back: one request to the server over a kept-alive loopback connection, then one
``predict`` in this process. The overhead is the median of the per-pair differences.

Both sides see the same rhythm: the server idles while this process predicts, and this
process idles (waiting for the answer) while the server works, so each ``predict`` runs
after an idle gap of about one ``predict``. That matters: on this VM a forest ``predict``
right after an idle gap is ~10% slower than one run back to back in a loop (caches and
clock), so a back-to-back in-process loop would flatter the floor. Even pairs time the
in-process ``predict`` with the one warnings filter ``mlmodel-serve`` runs with
(:func:`mlmodel_serving.model.quiet_warnings`), the overhead's floor; odd pairs with this
process's default filters, for comparison.

With ``tables`` given (a RandomForest served through leaf tables), every pair also
times the tables' ``predict`` of the same rows in this process, right after
scikit-learn's: the computation the server itself runs, so that request minus tables
is what the server adds around its own ``predict``.

The client is a raw socket with the request bytes built once, so the client adds only a
send and a receive to the server's side.
"""

from __future__ import annotations

import socket
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from benchmarks.serving.procs import LOOPBACK
from mlmodel_serving.model import quiet_warnings

SOCKET_TIMEOUT_S = 30.0


class KeepAliveClient:
    """POSTs one fixed body again and again on one HTTP/1.1 connection."""

    def __init__(self, port: int, path: str, body: bytes) -> None:
        self._sock = socket.create_connection((LOOPBACK, port), timeout=SOCKET_TIMEOUT_S)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._request = head.encode() + body

    def call(self) -> bytes:
        """Send the request; the response body (raises on a non-200 or a closed socket)."""
        self._sock.sendall(self._request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self._recv()
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"server answered {lines[0]!r}")
        length = next(
            int(line.split(b":", 1)[1])
            for line in lines
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += self._recv()
        return body

    def _recv(self) -> bytes:
        chunk = self._sock.recv(1 << 20)
        if not chunk:
            raise RuntimeError("server closed the connection")
        return chunk

    def close(self) -> None:
        self._sock.close()


def paired_overhead(
    model: Any,
    x: Any,
    port: int,
    path: str,
    body: bytes,
    *,
    budget_s: float,
    max_samples: int = 2000,
    min_samples: int = 30,
    tables: Callable[[Any], Any] | None = None,
) -> dict[str, Any]:
    """Median in-process ``predict`` (two or three ways), request latency and overhead, in ms."""
    client = KeepAliveClient(port, path, body)
    default_ms: list[float] = []
    quiet_ms: list[float] = []
    server_ms: list[float] = []  # the requests paired with quiet_ms
    every_request_ms: list[float] = []  # all requests, paired with tables_ms
    tables_ms: list[float] = []
    try:
        for _ in range(5):  # warm both sides
            client.call()
            model.predict(x)
        end = time.perf_counter() + budget_s
        n = 0
        while len(quiet_ms) < max_samples and (
            time.perf_counter() < end or len(quiet_ms) < min_samples
        ):
            t0 = time.perf_counter()
            client.call()
            request = (time.perf_counter() - t0) * 1000.0
            with warnings.catch_warnings():
                if n % 2 == 0:
                    quiet_warnings()
                t0 = time.perf_counter()
                model.predict(x)
                predict = (time.perf_counter() - t0) * 1000.0
            if n % 2 == 0:
                server_ms.append(request)
                quiet_ms.append(predict)
            else:
                default_ms.append(predict)
            if tables is not None:
                t0 = time.perf_counter()
                tables(x)
                tables_ms.append((time.perf_counter() - t0) * 1000.0)
                every_request_ms.append(request)
            n += 1
    finally:
        client.close()
    diffs = [s - q for s, q in zip(server_ms, quiet_ms, strict=True)]
    quiet = statistics.median(quiet_ms)
    overhead = statistics.median(diffs)
    out: dict[str, Any] = {
        "samples": len(server_ms),
        "inprocess_default_filters_ms": statistics.median(default_ms),
        "inprocess_server_filters_ms": quiet,
        "server_ms": statistics.median(server_ms),
        "overhead_ms": overhead,
        "overhead_fraction": overhead / quiet,
    }
    if tables_ms:
        over_tables = statistics.median(
            [s - t for s, t in zip(every_request_ms, tables_ms, strict=True)]
        )
        out["inprocess_tables_ms"] = statistics.median(tables_ms)
        out["overhead_vs_tables_ms"] = over_tables
        out["overhead_vs_tables_fraction"] = over_tables / statistics.median(tables_ms)
    return out
