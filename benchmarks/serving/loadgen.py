"""A small closed-loop load generator in Python: N workers, each one request at a time.

For what wrk cannot send: gRPC (HTTP/2 with protobuf). The same loop also drives plain
HTTP/1.1, so the gRPC rows have a like-for-like Python client row beside them: wrk is C
and spends far less CPU per request than any Python client, and on a 2-core machine the
client's CPU is taken from the server.

Every run is bounded by its duration: workers start no request after the deadline, and
the whole run is cancelled `GRACE_S` after it. Latencies are per request, from send to
the whole answer read. The client's own CPU time (this process, every thread) is reported
with the result, so a row limited by its client shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.serving.procs import LOOPBACK

GRACE_S = 30.0
CALL_TIMEOUT_S = 10.0
GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"

Call = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class LoadResult:
    """What one closed-loop run measured (latencies in ms)."""

    requests: int
    errors: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    latency_avg_ms: float
    client_cpu_s: float
    first_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_ms: list[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, nearest rank; NaN when empty."""
    if not sorted_ms:
        return float("nan")
    rank = max(1, min(len(sorted_ms), math.ceil(q / 100.0 * len(sorted_ms))))
    return sorted_ms[rank - 1]


async def closed_loop(
    make_worker_call: Callable[[], Awaitable[Call]],
    concurrency: int,
    duration_s: float,
    close: Callable[[], Awaitable[None]] | None = None,
) -> LoadResult:
    """Run `concurrency` workers for `duration_s`; each makes its call (connection) first."""
    calls = [await make_worker_call() for _ in range(concurrency)]
    latencies: list[float] = []
    errors = [0]
    first_error: list[str] = []
    deadline = 0.0

    async def worker(call: Call) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                return
            try:
                await asyncio.wait_for(call(), CALL_TIMEOUT_S)
            except Exception as exc:  # counted, and the run goes on, as wrk does
                errors[0] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            latencies.append((time.perf_counter() - t0) * 1000.0)

    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + duration_s
    try:
        tasks = [asyncio.ensure_future(worker(c)) for c in calls]
        done, pending = await asyncio.wait(tasks, timeout=duration_s + GRACE_S)
        for t in pending:
            t.cancel()
        for t in done:
            t.result()
    finally:
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        if close is not None:
            await close()
    lat = sorted(latencies)
    return LoadResult(
        requests=len(lat),
        errors=errors[0],
        duration_s=elapsed,
        rps=len(lat) / elapsed if elapsed > 0 else 0.0,
        p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90),
        p99_ms=percentile(lat, 99),
        latency_avg_ms=statistics.fmean(lat) if lat else float("nan"),
        client_cpu_s=cpu,
        first_error=first_error[0] if first_error else "",
    )


# ------------------------------------------------------------------------- HTTP/1.1


def http_request_bytes(port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One POST, built once: request line, headers and body."""
    head = f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def http_worker_factory(
    port: int, request: bytes
) -> tuple[Callable[[], Awaitable[Call]], Callable[[], Awaitable[None]]]:
    """Each worker: its own kept-alive connection POSTing the same bytes."""
    writers: list[asyncio.StreamWriter] = []

    async def make() -> Call:
        reader, writer = await asyncio.open_connection(LOOPBACK, port, limit=1 << 22)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writers.append(writer)

        async def call() -> bytes:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                status = head.split(b"\r\n", 1)[0]
                raise RuntimeError(f"server answered {status!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            return await reader.readexactly(length)

        return call

    async def close() -> None:
        for w in writers:
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    return make, close


# ---------------------------------------------------------------------------- gRPC


def grpc_worker_factory(
    port: int, request: bytes
) -> tuple[Callable[[], Awaitable[Call]], Callable[[], Awaitable[None]]]:
    """All workers share one grpc.aio channel (one HTTP/2 connection, as a gRPC client
    does), each sending the serialized ModelInferRequest built once: no protobuf work
    per call on the client, as wrk sends fixed bytes.
    """
    import grpc

    channel = grpc.aio.insecure_channel(
        f"{LOOPBACK}:{port}",
        options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    # No serializers: the request goes as the bytes given, the answer comes back as bytes.
    infer = channel.unary_unary(GRPC_METHOD)

    async def make() -> Call:
        async def call() -> bytes:
            return bytes(await infer(request, timeout=CALL_TIMEOUT_S))

        return call

    async def close() -> None:
        await channel.close()

    return make, close


def run_http(port: int, request: bytes, concurrency: int, duration_s: float) -> LoadResult:
    async def main() -> LoadResult:
        make, close = http_worker_factory(port, request)
        return await closed_loop(make, concurrency, duration_s, close)

    return asyncio.run(main())


def run_grpc(port: int, request: bytes, concurrency: int, duration_s: float) -> LoadResult:
    async def main() -> LoadResult:  # grpc.aio channels belong to the loop they are made in
        make, close = grpc_worker_factory(port, request)
        return await closed_loop(make, concurrency, duration_s, close)

    return asyncio.run(main())


def grpc_call_once(port: int, request: bytes, timeout_s: float = 10.0) -> bytes:
    """One ModelInfer call (serialized request in, serialized response out)."""

    async def once() -> bytes:
        make, close = grpc_worker_factory(port, request)
        try:
            call = await make()
            return await asyncio.wait_for(call(), timeout_s)
        finally:
            await close()

    return asyncio.run(once())


def grpc_ready(port: int, model: str, timeout_s: float) -> str | None:
    """None once ModelReady answers ready within `timeout_s`; else why not."""
    import grpc
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelReadyRequest(name=model).SerializeToString()
    last = "no answer"

    async def probe() -> str | None:
        nonlocal last
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(f"{LOOPBACK}:{port}") as channel:
            ready = channel.unary_unary("/inference.GRPCInferenceService/ModelReady")
            while time.monotonic() < deadline:
                try:
                    out = service_pb2.ModelReadyResponse.FromString(
                        bytes(await ready(request, timeout=2.0))
                    )
                    if out.ready:
                        return None
                    last = "ModelReady answered not ready"
                except grpc.aio.AioRpcError as exc:
                    last = f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.1)
        return f"gRPC on {LOOPBACK}:{port}: {last} within {timeout_s:.0f}s"

    return asyncio.run(probe())
