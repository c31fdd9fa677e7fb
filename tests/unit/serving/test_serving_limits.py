"""The HTTP server's limits against hostile clients (issue 16), in-process on a loopback
port: header bytes counted as they arrive, a connection limit, request bodies held per
connection and in total, and clients that never read their answers. The same limits
against a real ``mlmodel-serve`` process, with its memory measured, are in
tests/integration/serving/test_serving_hostile_process.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, make_settings

from mlmodel_serving.app import create_app
from mlmodel_serving.httpserver import HttpServer
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.settings import load_settings

INFER = "/v2/models/iris/infer"

# -- settings ------------------------------------------------------------------------------

BASE = {
    "MLMODEL_MODEL_NAME": "iris",
    "MLMODEL_ARTIFACT_URI": "/m.joblib",
    "MLMODEL_ARTIFACT_SHA256": FAKE_SHA,
}


def test_limits_have_defaults_and_come_from_the_environment_and_flags() -> None:
    s = load_settings([], BASE)
    assert (s.max_header_bytes, s.max_connections) == (64 * 1024, 1024)
    assert (s.max_connection_buffer_bytes, s.max_buffered_bytes) == (32 * 2**20, 128 * 2**20)
    assert (s.write_timeout, s.request_timeout) == (30.0, 60.0)
    env = {
        **BASE,
        "MLMODEL_MAX_HEADER_BYTES": "8192",
        "MLMODEL_MAX_CONNECTIONS": "10",
        "MLMODEL_MAX_CONNECTION_BUFFER_BYTES": "65536",
        "MLMODEL_MAX_BUFFERED_BYTES": "33554432",
        "MLMODEL_WRITE_TIMEOUT_SECONDS": "5",
        "MLMODEL_REQUEST_TIMEOUT_SECONDS": "7",
    }
    s = load_settings([], env)
    assert (s.max_header_bytes, s.max_connections) == (8192, 10)
    assert (s.max_connection_buffer_bytes, s.max_buffered_bytes) == (65536, 33554432)
    assert (s.write_timeout, s.request_timeout) == (5.0, 7.0)
    s = load_settings(
        ["--max-connections", "3", "--write-timeout", "2", "--request-timeout", "9"], env
    )
    assert (s.max_connections, s.write_timeout, s.request_timeout) == (3, 2.0, 9.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLMODEL_MAX_HEADER_BYTES": "100"}, "MLMODEL_MAX_HEADER_BYTES .*100: expected at least"),
        ({"MLMODEL_MAX_CONNECTIONS": "0"}, "MLMODEL_MAX_CONNECTIONS .*0: expected at least 1"),
        (
            {"MLMODEL_MAX_CONNECTION_BUFFER_BYTES": "10"},
            "MLMODEL_MAX_CONNECTION_BUFFER_BYTES .*10: expected at least",
        ),
        (
            {"MLMODEL_MAX_BUFFERED_BYTES": "1024"},
            "MLMODEL_MAX_BUFFERED_BYTES .*1024: expected at least MLMODEL_MAX_BODY_BYTES",
        ),
        ({"MLMODEL_WRITE_TIMEOUT_SECONDS": "0"}, "MLMODEL_WRITE_TIMEOUT_SECONDS .*0"),
        ({"MLMODEL_REQUEST_TIMEOUT_SECONDS": "-1"}, "MLMODEL_REQUEST_TIMEOUT_SECONDS .*-1"),
    ],
)
def test_bad_limits_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings([], {**BASE, **env})


# -- the HTTP server's limits, in-process on a loopback port -----------------------------

TIMEOUT = 10.0
BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
)
Scenario = Callable[[HttpServer, int], Awaitable[None]]


def run(model: SklearnModel | None, scenario: Scenario, **server_kw: Any) -> None:
    async def main() -> None:
        app = create_app(make_settings(max_body_bytes=4096), model, CollectorRegistry())
        server = HttpServer(app, max_body_bytes=4096, **server_kw)
        port = await server.start("127.0.0.1", 0)
        try:
            await asyncio.wait_for(scenario(server, port), TIMEOUT)
        finally:
            await server.shutdown(timeout=2.0)
            await app.close()

    asyncio.run(main())


def request(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """Whether the server closes the connection within ``within`` s (what is left is read)."""
    try:
        while await asyncio.wait_for(reader.read(65536), within):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def test_a_header_that_never_ends_is_431_before_it_completes(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nx-filler: ")
        answer = asyncio.ensure_future(reader.readline())
        sent = 0
        while not answer.done() and sent < 4 * 2**20:  # the header never ends
            writer.write(b"a" * 16384)
            sent += 16384
            try:
                await asyncio.wait_for(writer.drain(), 1.0)
            except (ConnectionError, TimeoutError):
                break
            await asyncio.sleep(0.001)
        status_line = await asyncio.wait_for(answer, 5.0)
        assert status_line.startswith(b"HTTP/1.1 431"), (status_line, sent)
        assert sent <= 512 * 1024, sent  # refused soon after the limit, not after megabytes
        assert await closed_by_server(reader)

    run(iris_model, scenario)  # the default limit, 64 KiB


def test_the_header_limit_is_a_setting(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/v2/health/live", headers="x-a: " + "a" * 3000 + "\r\n"))
        status, headers, body = await read_response(reader)
        assert status == 431 and headers["connection"] == "close"
        assert b"2048 bytes" in body and b"MLMODEL_MAX_HEADER_BYTES" in body
        # Under the limit: answered.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/v2/health/live", headers="x-a: " + "a" * 1000 + "\r\n"))
        assert (await read_response(reader))[0] == 200

    run(iris_model, scenario, max_header_bytes=2048)


def test_connections_past_the_limit_get_503_and_are_closed(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for reader, writer in held:  # all three are served
            writer.write(request("GET", "/v2/health/live"))
            assert (await read_response(reader))[0] == 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("POST", INFER, BODY))
        status, headers, body = await read_response(reader)
        assert status == 503 and headers["connection"] == "close"
        assert b"MLMODEL_MAX_CONNECTIONS" in body
        assert await closed_by_server(reader)
        # A health probe past the limit is still answered (and its connection closed), so
        # the kubelet does not restart a server that is only busy.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/v2/health/ready"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        # Once a connection closes, a new one is served again.
        held[0][1].close()
        for _ in range(200):
            if len(server.connections) < 3:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("POST", INFER, BODY))
        assert (await read_response(reader))[0] == 200

    run(iris_model, scenario, max_connections=3)


def test_a_connection_past_the_limit_that_sends_nothing_is_closed_soon(
    iris_model: SklearnModel,
) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        first = await asyncio.open_connection("127.0.0.1", port)
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader, within=5.0)
        first[1].close()

    run(iris_model, scenario, max_connections=1)


class SlowClassifier:
    """Takes 0.3 s per predict call, so the requests before it stay held."""

    n_features_in_ = 4
    classes_ = np.array([0, 1])

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        time.sleep(0.3)
        return np.zeros(len(x), dtype=np.int64)


def test_bodies_held_past_the_total_get_503() -> None:
    padded = BODY + b" " * (3000 - len(BODY))

    async def scenario(server: HttpServer, port: int) -> None:
        conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        for _, writer in conns[:2]:
            writer.write(request("POST", INFER, padded))
        for _ in range(500):  # both bodies received and held (predict is slow)
            if server.buffered_bytes >= 6000:
                break
            await asyncio.sleep(0.002)
        assert server.buffered_bytes == 6000
        reader, writer = conns[2]
        writer.write(request("POST", INFER, padded))
        status, headers, body = await read_response(reader)
        assert status == 503 and headers["connection"] == "close"
        assert b"MLMODEL_MAX_BUFFERED_BYTES" in body
        for reader, _ in conns[:2]:
            assert (await read_response(reader))[0] == 200
        assert server.buffered_bytes == 0

    slow = SklearnModel(SlowClassifier(), "iris", "3", FAKE_SHA)
    run(slow, scenario, max_buffered_bytes=8192)


def test_a_connection_holds_at_most_its_buffer_of_queued_bodies() -> None:
    padded = BODY + b" " * (3000 - len(BODY))

    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(12):  # pipelined, one read each, while the first is slow to predict
            writer.write(request("POST", INFER, padded))
            await asyncio.sleep(0.02)
        held = server.buffered_bytes
        # The queue up to its buffer (one body over at most) and the body in flight; a
        # read holding many requests at once is all queued, a read (256 KiB) at most.
        assert 0 < held <= 8192 + 2 * 3000, held
        for _ in range(12):  # all are answered in order once reading resumes
            assert (await read_response(reader))[0] == 200
        assert server.buffered_bytes == 0

    slow = SklearnModel(SlowClassifier(), "iris", "3", FAKE_SHA)
    run(slow, scenario, max_connection_buffer_bytes=8192)


def test_a_client_that_never_reads_is_disconnected(iris_model: SklearnModel) -> None:
    rows = [[5.1, 3.5, 1.4, 0.2]] * 100
    body = orjson.dumps(
        {
            "inputs": [{"name": "x", "shape": [100, 4], "datatype": "FP64", "data": rows}],
            "outputs": [{"name": "predict_proba"}],
        }
    )

    async def scenario(server: HttpServer, port: int) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, writer = await asyncio.open_connection(sock=sock)
        # Pipelined requests whose ~7 MB of answers are never read.
        writer.write(request("POST", INFER, body) * 1000)
        for _ in range(600):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections, "the connection that reads nothing was not closed"
        assert server.buffered_bytes == 0
        writer.close()

    run(iris_model, scenario, write_timeout=0.5)
