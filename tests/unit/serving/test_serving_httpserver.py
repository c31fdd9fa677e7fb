"""The HTTP/1.1 server, in-process on a loopback port, spoken to with raw sockets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, make_settings

from mlmodel_serving.app import create_app
from mlmodel_serving.httpserver import HttpServer
from mlmodel_serving.model import SklearnModel

INFER = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]}
)
TIMEOUT = 10.0

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


def test_keepalive_and_pipelining_answer_in_order(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            request("POST", "/v2/models/iris/infer", INFER, "x-request-id: first\r\n")
            + request("GET", "/v2/health/ready", headers="x-request-id: second\r\n")
            + request("GET", "/nope?x=1", headers="x-request-id: third\r\n")
        )
        answers = [await read_response(reader) for _ in range(3)]
        assert [(s, h["x-request-id"]) for s, h, _ in answers] == [
            (200, "first"),
            (200, "second"),
            (404, "third"),
        ]
        assert answers[0][1]["x-model-version"] == "3" and "date" in answers[0][1]
        assert orjson.loads(answers[0][2])["outputs"][0]["data"] == [0]
        # HEAD: the headers of the GET, no body, and the connection stays in step.
        writer.write(
            b"HEAD /v2/health/live HTTP/1.1\r\nhost: t\r\n\r\n" + request("GET", "/v2/health/live")
        )
        status_line = await reader.readline()
        head = b""
        while (line := await reader.readline()) != b"\r\n":
            head += line
        assert status_line.startswith(b"HTTP/1.1 200") and b"content-length: 13" in head
        assert (await read_response(reader))[2] == b'{"live":true}'
        # A request id that is not printable ASCII is replaced by one of ours.
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nx-request-id: caf\xe9\r\n\r\n")
        assert (await read_response(reader))[1]["x-request-id"].isascii()
        # The same connection still works.
        writer.write(request("GET", "/v2/health/live"))
        assert (await read_response(reader))[0] == 200
        writer.close()

    run(iris_model, scenario)


def test_body_larger_than_the_limit_is_413_and_closes(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("POST", "/v2/models/iris/infer", b"x" * 5000))
        status, headers, body = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert b"4096 bytes" in body
        assert await reader.read() == b""  # closed by the server

        # Chunked bodies are counted as they arrive.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        chunk = b"x" * 3000
        writer.write(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
            + b"0\r\n\r\n"
        )
        assert (await read_response(reader))[0] == 413

    run(iris_model, scenario)


def test_expect_100_continue(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = f"POST /v2/models/iris/infer HTTP/1.1\r\nhost: t\r\ncontent-length: {len(INFER)}\r\nexpect: 100-continue\r\n\r\n"
        writer.write(head.encode())
        assert await reader.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert await reader.readline() == b"\r\n"
        writer.write(INFER)
        assert (await read_response(reader))[0] == 200

    run(iris_model, scenario)


def test_malformed_request_is_400_and_the_server_keeps_serving(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"THIS IS NOT HTTP\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 400 and b"malformed HTTP request" in body
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/v2/health/live"))
        assert (await read_response(reader))[0] == 200

    run(iris_model, scenario)


def test_only_connections_that_post_count_for_batching(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        probe_reader, probe = await asyncio.open_connection("127.0.0.1", port)
        probe.write(request("GET", "/metrics"))
        await read_response(probe_reader)
        client_reader, client = await asyncio.open_connection("127.0.0.1", port)
        client.write(request("POST", "/v2/models/iris/infer", INFER))
        await read_response(client_reader)
        assert len(server.connections) == 2
        assert server.app.connection_count is not None and server.app.connection_count() == 1
        client.close()
        for _ in range(200):
            if server.inference_connections == 0:
                break
            await asyncio.sleep(0.005)
        assert server.inference_connections == 0

    run(iris_model, scenario)


def test_huge_headers_are_431(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /v2/health/live HTTP/1.1\r\n" + b"x-filler: " + b"a" * 70_000 + b"\r\n\r\n"
        )
        status, headers, _ = await read_response(reader)
        assert status == 431 and headers["connection"] == "close"

    run(iris_model, scenario)


def test_http10_and_connection_close(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await reader.read() == b""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        assert await reader.read() == b""

    run(iris_model, scenario)


def test_idle_connections_are_closed(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("GET", "/v2/health/live"))
        assert (await read_response(reader))[0] == 200
        assert await asyncio.wait_for(reader.read(), 5.0) == b""

    run(iris_model, scenario, keepalive_timeout=0.2)


def test_slow_request_is_408(iris_model: SklearnModel) -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\ncontent-length: 100\r\n\r\n{")
        status, _, body = await asyncio.wait_for(read_response(reader), 5.0)
        assert status == 408 and b"not received within" in body

    run(iris_model, scenario, request_timeout=0.2)


class SlowClassifier:
    """Takes 0.3 s per predict call, so a request is surely in flight."""

    n_features_in_ = 4
    classes_ = np.array([0, 1])

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        time.sleep(0.3)
        return np.zeros(len(x), dtype=np.int64)


def test_shutdown_lets_requests_in_flight_finish() -> None:
    async def scenario(server: HttpServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        idle_reader, _ = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request("POST", "/v2/models/iris/infer", INFER))
        for _ in range(1000):
            if server.busy:
                break
            await asyncio.sleep(0.001)
        assert server.busy == 1
        shutting = asyncio.ensure_future(server.shutdown(timeout=5.0))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await idle_reader.read() == b""
        await shutting
        assert not server.connections

    run(SklearnModel(SlowClassifier(), "iris", "3", FAKE_SHA), scenario)
