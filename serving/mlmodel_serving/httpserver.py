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

What a client can make it hold is bounded: the request line and headers are counted as
they arrive (431 past ``max_header_bytes``, before they complete); request bodies
waiting for their answers pause reading past ``max_connection_buffer_bytes`` on one
connection, and are refused (503) past ``max_buffered_bytes`` over all of them; a client
that reads none of its answers for ``write_timeout`` seconds is disconnected; past
``max_connections`` a connection gets 503 (a health probe is still answered) and is
closed. Each costs a request a counter comparison or two.
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
from mlmodel_serving.settings import (
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONNECTION_BUFFER_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_REQUEST_TIMEOUT_SECONDS,
    DEFAULT_WRITE_TIMEOUT_SECONDS,
)
from mlmodel_serving.shadow import SHADOW_HEADER

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
# Paths answered on a connection past the connection limit: the kubelet's probes, so that
# a server that is only busy is not restarted.
_PROBE_PATHS = frozenset((b"/v2/health/live", b"/v2/health/ready"))
_REFUSED_GRACE = 2.0  # seconds a connection past the limit has to send its request

# A queued request: method, path, body, request id, keep-alive, prebuilt response, the
# binary data extension's JSON header length, the content type, and whether the request
# is a shadow copy (x-mlmodel-shadow).
_Queued = tuple[
    str, str, bytes, "str | None", bool, "Response | None", "int | None", "bytes | None", bool
]


class HttpServer:
    """Serves ``app`` over HTTP/1.1 on one listening socket."""

    def __init__(
        self,
        app: ServingApp,
        *,
        max_body_bytes: int,
        keepalive_timeout: float = 60.0,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_connection_buffer_bytes: int = DEFAULT_MAX_CONNECTION_BUFFER_BYTES,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.keepalive_timeout = keepalive_timeout
        self.request_timeout = request_timeout
        self.max_header_bytes = max_header_bytes
        self.max_connections = max_connections
        self.max_connection_buffer_bytes = max_connection_buffer_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.write_timeout = write_timeout
        self.connections: set[HttpConnection] = set()
        self.busy = 0  # connections whose request is being answered
        # Request bodies received and not yet answered, over all connections.
        self.buffered_bytes = 0
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
        self.content_type: bytes | None = None
        self.shadowed = False
        self.head_size = 0
        self.in_head = False  # inside a request line or headers
        self.head_seen = False  # a head callback ran during the current data_received
        self.body_held = 0  # the body being received, counted in server.buffered_bytes
        self.queued_bytes = 0  # the bodies of the requests in the queue
        self.discard = False  # the rest of this connection's input is ignored
        self.queue: deque[_Queued] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.writing_paused = False
        self.reading_paused = False
        self.sends_inference = False
        self.last_activity = time.monotonic()
        self.request_started: float | None = None
        self.refused = False  # opened past the connection limit
        self.unsent = 0  # the transport's unsent bytes at the last check
        self.write_progress = self.last_activity  # when they last changed

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self.server
        if len(server.connections) >= server.max_connections:
            self.refused = True  # its request gets 503 (a probe an answer), then it closes
            self.closing = True
        server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.sends_inference:
            self.sends_inference = False
            self.server.inference_connections -= 1
        # What was received and will not be answered is released (a request being
        # answered releases its own body when it is done).
        self.server.buffered_bytes -= self.body_held + self.queued_bytes
        self.body_held = self.queued_bytes = 0
        self.body = []
        self.queue.clear()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.discard:
            return
        self.head_seen = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
        if self.in_head and not self.head_seen and not self.discard:
            # All of it belongs to a request line or header that has not ended yet, which
            # httptools keeps until it does: counted now, not once it is complete.
            self._count_head(len(data))

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
        self.content_type = None
        self.shadowed = False
        self.head_size = 0
        self.in_head = self.head_seen = True
        self.request_started = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_seen = True
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_seen = True
        self._count_head(len(name) + len(value) + 4)  # with ": " and CRLF
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
        elif lowered == b"content-type":
            self.content_type = value
        elif lowered == SHADOW_HEADER:
            self.shadowed = True

    def _count_head(self, size: int) -> None:
        self.head_size += size
        limit = self.server.max_header_bytes
        if self.head_size > limit and not self.discard:
            self._reject(
                431,
                f"request line and headers are larger than {limit} bytes "
                "(MLMODEL_MAX_HEADER_BYTES)",
            )

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.discard:
            return
        server = self.server
        if self.refused and self.url.partition(b"?")[0] not in _PROBE_PATHS:
            self._reject(
                503,
                f"the server has {server.max_connections} connections open, its limit "
                "(MLMODEL_MAX_CONNECTIONS): retry shortly",
            )
            return
        declared = self.declared_length
        if declared:
            if declared > server.max_body_bytes:
                self._reject_too_large()
                return
            if server.buffered_bytes + declared > server.max_buffered_bytes:
                self._reject_busy()
                return
        if self.expect_continue and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.discard:
            return
        size = len(chunk)
        self.body_size += size
        if self.body_size > self.server.max_body_bytes:
            self._reject_too_large()
            return
        server = self.server
        server.buffered_bytes += size
        self.body_held += size
        if server.buffered_bytes > server.max_buffered_bytes:  # a body without a length
            self._reject_busy()
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.discard:
            return
        self.request_started = None
        url = self.url.decode("latin-1")
        path = url.partition("?")[0]
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        self.body_held = 0  # the request holds its body now, and releases it when answered
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
            self.content_type,
            self.shadowed,
        )
        if self.task is None and not self.queue and not self.writing_paused:
            self._start(item)
        else:
            self.queue.append(item)
            self.queued_bytes += len(body)
            if (
                len(self.queue) >= _MAX_QUEUED
                or self.queued_bytes >= self.server.max_connection_buffer_bytes
            ) and (self.transport is not None and not self.reading_paused):
                self.reading_paused = True
                self.transport.pause_reading()

    # -- answering -------------------------------------------------------------------

    def _reject_too_large(self) -> None:
        self._drop_body()
        self._enqueue_final(self.app.payload_too_large(self.request_id))

    def _reject_busy(self) -> None:
        server = self.server
        self._reject(
            503,
            f"the server holds {server.buffered_bytes} bytes of request bodies; with this "
            f"one it would hold more than its limit of {server.max_buffered_bytes} "
            "(MLMODEL_MAX_BUFFERED_BYTES): retry shortly",
        )

    def _reject(self, status: int, message: str) -> None:
        from mlmodel_serving.app import Response
        from mlmodel_serving.protocol import encode_error

        self._drop_body()
        self._enqueue_final(Response(status, encode_error(message)))

    def _drop_body(self) -> None:
        """Ignore the rest of this connection's input, and release what was received of the
        body being read."""
        self.discard = True
        self.server.buffered_bytes -= self.body_held
        self.body_held = 0
        self.body = []

    def _enqueue_final(self, response: Response) -> None:
        """Answer ``response`` after the requests before it, then close."""
        item: _Queued = ("", "", b"", None, False, response, None, None, False)
        if self.task is None and not self.queue:
            self._start(item)
        else:
            self.queue.append(item)

    def _start(self, item: _Queued) -> None:
        self.server.busy += 1
        self.task = self.loop.create_task(self._answer(item))

    async def _answer(self, item: _Queued) -> None:
        method, path, body, request_id, keep_alive, response, header_length, ctype, shadowed = item
        try:
            if response is None:
                response = await self.app.handle(
                    method, path, body, request_id, header_length, ctype, shadowed
                )
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
            self.server.buffered_bytes -= len(body)
            self.task = None
            self.last_activity = time.monotonic()
        if not keep_alive or self.closing:
            self.close()
        else:
            self._next()

    def _next(self) -> None:
        if self.queue and not self.writing_paused:
            item = self.queue.popleft()
            self.queued_bytes -= len(item[2])
            self._start(item)
            if (
                self.reading_paused
                and len(self.queue) < _MAX_QUEUED // 2
                and self.queued_bytes < self.server.max_connection_buffer_bytes // 2
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
        transport = self.transport
        if transport is None:
            return
        # A client that reads none of its answers: the bytes waiting to be sent stay the
        # same (writing pauses past the high-water mark, so no new answers join them).
        unsent = transport.get_write_buffer_size()
        if unsent == 0 or unsent != self.unsent:
            self.unsent = unsent
            self.write_progress = now
        elif now - self.write_progress > self.server.write_timeout:
            log.info(
                "closing a connection whose client read none of its answers for %g s",
                self.server.write_timeout,
                extra={"unsent_bytes": unsent, "queued_requests": len(self.queue)},
            )
            self.abort()
            return
        if self.task is not None or self.queue:
            return
        if self.refused and now - self.last_activity > _REFUSED_GRACE:
            self.abort()  # past the connection limit, and no request within the grace
            return
        started = self.request_started
        if started is not None:
            if now - started > self.server.request_timeout:
                self._drop_body()
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
