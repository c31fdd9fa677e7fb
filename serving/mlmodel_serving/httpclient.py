"""A small HTTP/1.1 client on asyncio and httptools: one host, a pool of kept-alive
connections, a deadline per request.

Made for shadow traffic (:mod:`mlmodel_serving.shadow`): the server already runs on
asyncio with httptools, so mirroring a request costs a write and a parse on the same
event loop, with no thread and no new dependency. Only what that needs: ``POST`` with a
body of known length (and ``GET`` without one, to ask a candidate's shadow offer),
responses with ``content-length`` or chunked bodies, keep-alive. A request that was sent
on a kept-alive connection which the server had meanwhile closed is sent once more on a
new connection (nothing of the answer had arrived).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import httptools

#: Idle connections older than this are closed rather than reused: the server may be
#: about to close them itself (mlmodel-serve's keep-alive timeout is 60 s).
IDLE_SECONDS = 30.0


class HttpClientError(ConnectionError):
    """The server closed the connection, or answered what is not HTTP/1.1."""


@dataclass(slots=True)
class HttpAnswer:
    status: int
    headers: dict[bytes, bytes] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


class _Connection(asyncio.Protocol):
    """One connection; one request at a time."""

    def __init__(self, max_body_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_body_bytes = max_body_bytes
        self.waiter: asyncio.Future[HttpAnswer] | None = None
        self.answer = HttpAnswer(0)
        self.chunks: list[bytes] = []
        self.size = 0
        self.received = False  # a byte of the current answer arrived
        self.closed = False
        self.idle_since = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpClientError(f"connection closed by the server ({exc or 'EOF'})"))

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpClientError(f"not an HTTP/1.1 answer: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.answer.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_body_bytes:
            self._fail(HttpClientError(f"answer larger than {self.max_body_bytes} bytes"))
            self.close()
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()
        self.answer.body = b"".join(self.chunks)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self.answer)

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def send(self, request: bytes) -> HttpAnswer:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.answer = HttpAnswer(0)
        self.chunks = []
        self.size = 0
        self.received = False
        self.transport.write(request)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    @property
    def keep_alive(self) -> bool:
        return not self.closed and self.parser.should_keep_alive()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class HttpPool:
    """Kept-alive connections to one ``host:port``; at most ``max_idle`` kept idle."""

    def __init__(
        self, host: str, port: int, *, max_idle: int = 16, max_body_bytes: int = 64 << 20
    ) -> None:
        self.host = host
        self.port = port
        self.max_idle = max_idle
        self.max_body_bytes = max_body_bytes
        self._idle: list[_Connection] = []
        self.closed = False
        self.opened = 0  # connections opened so far (tests check the pool reuses them)

    async def post(
        self,
        path: str,
        body: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        timeout: float,
    ) -> HttpAnswer:
        """POST ``body`` to ``path``; the answer, or TimeoutError / OSError /
        :class:`HttpClientError`. The whole exchange (connect included) gets ``timeout``."""
        return await self._exchange(b"POST", path, body, headers, timeout)

    async def get(
        self, path: str, headers: Sequence[tuple[bytes, bytes]] = (), *, timeout: float
    ) -> HttpAnswer:
        """GET ``path``; as :meth:`post`."""
        return await self._exchange(b"GET", path, None, headers, timeout)

    async def _exchange(
        self,
        method: bytes,
        path: str,
        body: bytes | None,
        headers: Sequence[tuple[bytes, bytes]],
        timeout: float,
    ) -> HttpAnswer:
        host = self.host if ":" not in self.host else f"[{self.host}]"
        head = [
            b"%s %s HTTP/1.1\r\nhost: %s:%d\r\n" % (method, path.encode(), host.encode(), self.port)
        ]
        head.extend(b"%s: %s\r\n" % pair for pair in headers)
        if body is not None:
            head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"\r\n")
        request = b"".join(head) + (body or b"")
        async with asyncio.timeout(timeout):
            conn, reused = self._take()
            if conn is None:
                conn = await self._connect()
            try:
                answer = await conn.send(request)
            except HttpClientError:
                conn.close()
                if not (reused and not conn.received):
                    raise
                # The server had closed the idle connection: once more, on a new one.
                conn = await self._connect()
                try:
                    answer = await conn.send(request)
                except BaseException:
                    conn.close()
                    raise
            except BaseException:  # timeout, cancellation: the answer may still come
                conn.close()
                raise
        self._give_back(conn)
        return answer

    def _take(self) -> tuple[_Connection | None, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        return None, False

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        max_body = self.max_body_bytes
        _, conn = await loop.create_connection(lambda: _Connection(max_body), self.host, self.port)
        self.opened += 1
        return conn

    def _give_back(self, conn: _Connection) -> None:
        if self.closed or not conn.keep_alive or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        """Close the idle connections; those in use close when their request ends."""
        self.closed = True
        while self._idle:
            self._idle.pop().close()
