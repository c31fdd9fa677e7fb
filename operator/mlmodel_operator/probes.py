"""The operator's liveness and readiness endpoints, on one address (``--liveness``).

kopf's own liveness endpoint serves one path and starts only after the startup handlers;
the readiness must be served beside it and from the start (a replica waiting for its
peering object is alive but not ready). Served from kopf's event loop, like kopf's, so a
loop that stops turning stops answering: the liveness keeps its meaning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# A probe is a GET with a few headers: anything longer, or slower, is not one.
MAX_REQUEST_BYTES = 8192
READ_TIMEOUT = 5.0

Probe = Callable[[], tuple[bool, dict[str, Any]]]


@dataclass(frozen=True)
class ProbeAddress:
    """Where the probes answer: host, port, and the two paths."""

    host: str
    port: int
    liveness: str
    readiness: str | None


def probe_address(liveness_url: str, readiness_path: str) -> ProbeAddress:
    """``--liveness`` (an http:// URL) and ``--readiness`` (a path on the same address)."""
    parts = urllib.parse.urlsplit(liveness_url)
    if parts.scheme != "http" or not parts.port:
        raise ValueError(
            f"--liveness {liveness_url!r} is not accepted; expected http://HOST:PORT/PATH"
        )
    if readiness_path and not readiness_path.startswith("/"):
        raise ValueError(f"--readiness {readiness_path!r} is not accepted; expected a /path")
    liveness = parts.path or "/"
    if readiness_path == liveness:
        raise ValueError(f"--readiness {readiness_path!r} is the liveness path; give another")
    return ProbeAddress(parts.hostname or "0.0.0.0", parts.port, liveness, readiness_path or None)


def _alive() -> tuple[bool, dict[str, Any]]:
    return True, {}


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _response(code: int, body: Mapping[str, Any], head_only: bool) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + payload


class ProbeServer:
    """A minimal HTTP/1.1 server answering GET (and HEAD) of the probe paths."""

    def __init__(self, address: ProbeAddress, readiness: Probe) -> None:
        self.address = address
        self.routes: dict[str, Probe] = {address.liveness: _alive}
        if address.readiness:
            self.routes[address.readiness] = readiness
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._answer, self.address.host, self.address.port, limit=MAX_REQUEST_BYTES
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def answer(self, method: str, target: str) -> tuple[int, dict[str, Any]]:
        """The status code and JSON body for one request line."""
        probe = self.routes.get(urllib.parse.urlsplit(target).path)
        if probe is None:
            return 404, {"error": f"not found; probes: {', '.join(sorted(self.routes))}"}
        if method not in ("GET", "HEAD"):
            return 405, {"error": f"{method} is not allowed; use GET"}
        ok, detail = probe()
        return (200 if ok else 503), detail

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            code, body = self.answer(method, target)
            writer.write(_response(code, body, head_only=method == "HEAD"))
            await writer.drain()
        except (
            TimeoutError,
            ValueError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            pass  # not a probe: closed without an answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
