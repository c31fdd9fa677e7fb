"""A small HTTP/1.1 server on asyncio (uvloop) and httptools, made for :class:`ServingApp`.

Why not uvicorn: on this project's 2-core benchmark machine a bare "hello" ASGI app on
uvicorn (httptools + uvloop) answers about 5,300 req/s at 32 connections, while a
protocol class that feeds httptools directly answers about 34,000. At a few hundred
microseconds per small-model prediction, uvicorn's per-request cost (ASGI message dicts,
header normalisation, a task, a timer) would be a third of the budget. This server does
only what the model server needs: keep-alive, pipelining (answered in order), request
bodies with a size limit (413), ``Expect: 100-continue``, idle and slow-request
timeouts, and graceful shutdown. The app stays an ASGI app too, for tests and anyone who
prefers a general-purpose server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from typing import TYPE_CHECKING, cast

import httptools

from mlmodel_serving.app import HEADER_LENGTH, parse_header_length

if TYPE_CHECKING:
    from mlmodel_serving.app import Response, ServingApp

log = logging.getLogger("mlmodel_serving.http")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_MAX_QUEUED = 16  # pipelined requests per connection before reading pauses
_MAX_HEAD_BYTES = 64 * 1024  # request line and headers together

# A queued request: method, path, body, request id, keep-alive, prebuilt response, and
# the binary data extension's JSON header length.
_Queued = tuple[str, str, bytes, "str | None", bool, "Response | None", "int | None"]


class HttpServer:
    """Serves ``app`` over HTTP/1.1 on one listening socket."""

    def __init__(
        self,
        app: ServingApp,
        *,
        max_body_bytes: int,
        keepalive_timeout: float = 60.0,
        request_timeout: float = 60.0,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.keepalive_timeout = keepalive_timeout
        self.request_timeout = request_timeout
        self.connections: set[HttpConnection] = set()
        self.busy = 0  # connections whose request is being answered
        self.date = formatdate(usegmt=True).encode()
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.TimerHandle | None = None
        # Connections that have sent a POST (inference). Health probes and Prometheus'
        # keep-alive scrape connection never will, so they must not make a batch wait.
        self.inference_connections = 0
        app.connection_count = self.inference_count

    def inference_count(self) -> int:
        return self.inference_connections

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port); return the bound port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), host, port, reuse_address=True, backlog=2048
        )
        self._tick()
        sockets = self._server.sockets
        return int(sockets[0].getsockname()[1]) if sockets else port

    def _tick(self) -> None:
        """Once a second: refresh the Date header and close idle or stalled connections."""
        self.date = formatdate(usegmt=True).encode()
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    async def shutdown(self, timeout: float) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout`` s), close the rest."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_when_idle()
        deadline = time.monotonic() + timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            await self._server.wait_closed()


class HttpConnection(asyncio.Protocol):
    """One client connection; requests on it are answered one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_id: str | None = None
        self.expect_continue = False
        self.declared_length = 0
        self.header_length: int | None = None
        self.head_size = 0
        self.discard = False  # the rest of this connection's input is ignored
        self.queue: deque[_Queued] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.writing_paused = False
        self.reading_paused = False
        self.sends_inference = False
        self.last_activity = time.monotonic()
        self.request_started: float | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.sends_inference:
            self.sends_inference = False
            self.server.inference_connections -= 1
        self.queue.clear()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.task is None:
            self._next()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []
        self.body_size = 0
        self.request_id = None
        self.expect_continue = False
        self.declared_length = 0
        self.header_length = None
        self.head_size = 0
        self.request_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        lowered = name.lower()
        if lowered == b"x-request-id":
            rid = value.decode("latin-1")[:128]
            # Echoed in a header and logs: only printable ASCII is taken as given.
            self.request_id = rid if rid.isascii() and rid.isprintable() else None
        elif lowered == b"content-length":
            self.declared_length = int(value) if value.isdigit() else 0
        elif lowered == b"expect":
            self.expect_continue = value.lower() == b"100-continue"
        elif lowered == HEADER_LENGTH:
            self.header_length = parse_header_length(value)

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > _MAX_HEAD_BYTES and not self.discard:
            self._reject(431, f"request line and headers are larger than {_MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        if self.discard:
            return
        if self.declared_length > self.server.max_body_bytes:
            self._reject_too_large()
            return
        if self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.discard:
            return
        self.body_size += len(chunk)
        if self.body_size > self.server.max_body_bytes:
            self._reject_too_large()
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.discard:
            return
        self.request_started = None
        url = self.url.decode("latin-1")
        path = url.partition("?")[0]
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        method = self.parser.get_method().decode("latin-1")
        if method == "POST" and not self.sends_inference:
            self.sends_inference = True
            self.server.inference_connections += 1
        item: _Queued = (
            method,
            path,
            body,
            self.request_id,
            self.parser.should_keep_alive(),
            None,
            self.header_length,
        )
        if self.task is None and not self.queue and not self.writing_paused:
            self._start(item)
        else:
            self.queue.append(item)
            if (
                len(self.queue) >= _MAX_QUEUED
                and self.transport is not None
                and not self.reading_paused
            ):
                self.reading_paused = True
                self.transport.pause_reading()

    # -- answering -------------------------------------------------------------------

    def _reject_too_large(self) -> None:
        self.discard = True
        self._enqueue_final(self.app.payload_too_large(self.request_id))

    def _reject(self, status: int, message: str) -> None:
        from mlmodel_serving.app import Response
        from mlmodel_serving.protocol import encode_error

        self.discard = True
        self._enqueue_final(Response(status, encode_error(message)))

    def _enqueue_final(self, response: Response) -> None:
        """Answer ``response`` after the requests before it, then close."""
        item: _Queued = ("", "", b"", None, False, response, None)
        if self.task is None and not self.queue:
            self._start(item)
        else:
            self.queue.append(item)

    def _start(self, item: _Queued) -> None:
        self.server.busy += 1
        self.task = self.loop.create_task(self._answer(item))

    async def _answer(self, item: _Queued) -> None:
        method, path, body, request_id, keep_alive, response, header_length = item
        try:
            if response is None:
                response = await self.app.handle(method, path, body, request_id, header_length)
            else:
                response.headers.append(
                    (b"x-request-id", (request_id or self.app.new_request_id()).encode())
                )
            self._write(response, keep_alive and not self.closing, head=method == "HEAD")
        except Exception:  # the app never raises; this guards the server itself
            log.exception("failed to answer %s %s", method, path)
            keep_alive = False
        finally:
            self.server.busy -= 1
            self.task = None
            self.last_activity = time.monotonic()
        if not keep_alive or self.closing:
            self.close()
        else:
            self._next()

    def _next(self) -> None:
        if self.queue and not self.writing_paused:
            self._start(self.queue.popleft())
            if (
                self.reading_paused
                and len(self.queue) < _MAX_QUEUED // 2
                and self.transport is not None
            ):
                self.reading_paused = False
                self.transport.resume_reading()

    def _write(self, response: Response, keep_alive: bool, head: bool = False) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status = response.status
        parts = [
            b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\ndate: %s\r\n"
            % (
                status,
                _REASONS.get(status, b"Unknown"),
                response.content_type,
                len(response.body),
                self.server.date,
            )
        ]
        for name, value in response.headers:
            parts.append(b"%s: %s\r\n" % (name, value))
        parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        if head:  # a HEAD response has the headers of the GET but no body
            transport.write(b"".join(parts))
        elif len(response.body) < 65536:
            parts.append(response.body)
            transport.write(b"".join(parts))
        else:
            transport.write(b"".join(parts))
            transport.write(response.body)

    # -- closing ---------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.task is not None or self.queue:
            return
        started = self.request_started
        if started is not None:
            if now - started > self.server.request_timeout:
                self.discard = True
                self._enqueue_final(self._timeout_response())
        elif now - self.last_activity > self.server.keepalive_timeout:
            self.close()

    def _timeout_response(self) -> Response:
        from mlmodel_serving.app import Response
        from mlmodel_serving.protocol import encode_error

        return Response(
            408, encode_error(f"request not received within {self.server.request_timeout:g} s")
        )

    def close_when_idle(self) -> None:
        self.closing = True
        if self.task is None:
            self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
