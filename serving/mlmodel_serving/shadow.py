"""Shadow traffic: a copy of each sampled request goes to a candidate version, off the
request path; both answers are compared and the agreement is recorded.

The stable server answers every request itself; no client ever sees the candidate's
answer. After the stable's response has been handed to the transport (the copy is a task
that first runs on a later turn of the event loop), the same body, content type, binary
data header and request id are POSTed to the same route on the candidate, with
``x-mlmodel-shadow: 1`` (a server receiving that never mirrors further). At most
``max_in_flight`` copies are in flight (and :data:`MAX_IN_FLIGHT_BYTES` of bodies held);
past that a copy is dropped and counted. Each copy has a deadline.

What is compared, and how, is in :mod:`mlmodel_serving.shadow_compare`; the configuration
file in :mod:`mlmodel_serving.shadow_config`; asking a candidate's offer in
:mod:`mlmodel_serving.shadow_discovery`. The file wins when it has content (a config, or
an error); otherwise the discovered offer is in force. Neither may name this server's own
version (a candidate's Pods ask the same URL as the stable's, and would mirror to
themselves). Results go to Prometheus
(:class:`mlmodel_serving.metrics.ShadowMetrics`), to one JSON log line per disagreement
(at most :data:`LOG_LINES_PER_SECOND` a second, the rest counted), and to
:meth:`ShadowTraffic.status`, served at ``GET /v2/models/{model}/shadow``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mlmodel_serving.httpclient import HttpClientError, HttpPool
from mlmodel_serving.metrics import SHADOW_RESULTS, ShadowMetrics
from mlmodel_serving.shadow_compare import Prediction, UnreadableAnswer, compare, read_v1, read_v2
from mlmodel_serving.shadow_config import (
    OFFER_PATH,
    ConfigChange,
    ShadowConfig,
    ShadowConfigFile,
)
from mlmodel_serving.shadow_discovery import Discovered, ShadowDiscovery

log = logging.getLogger("mlmodel_serving.shadow")

#: The header that marks a mirrored request (its receiver never mirrors it further).
SHADOW_HEADER = b"x-mlmodel-shadow"
CHECK_SECONDS = 1.0  # the configuration file is checked this often
DISAGREEMENTS_KEPT = 100
LOG_LINES_PER_SECOND = 10
ERROR_LOG_SECONDS = 10.0  # a failing candidate is logged at most once in this long
#: Request and stable answer bodies held by copies in flight, at most.
MAX_IN_FLIGHT_BYTES = 64 * 1024 * 1024
BINARY_HEADER = b"inference-header-content-length"


class RateLimit:
    """At most ``per_window`` events per ``window`` seconds; counts the rest."""

    def __init__(self, per_window: int, window: float = 1.0) -> None:
        self.per_window = per_window
        self.window = window
        self._start = float("-inf")
        self._used = 0
        self._pending = 0  # suppressed since the last allowed event
        self.suppressed = 0  # suppressed in all

    def allow(self, now: float) -> tuple[bool, int]:
        """(allowed, events suppressed since the last allowed one)."""
        if now - self._start >= self.window:
            self._start = now
            self._used = 0
        if self._used < self.per_window:
            self._used += 1
            pending, self._pending = self._pending, 0
            return True, pending
        self._pending += 1
        self.suppressed += 1
        return False, 0


def mirror_path(route_template: str, config: ShadowConfig) -> str:
    """The route on the candidate: the same template, with the candidate's model name
    (and version, for the versioned V2 route)."""
    return route_template.replace("{model_name}", quote(config.model, safe="")).replace(
        "{model_version}", quote(config.version, safe="")
    )


@dataclass(slots=True)
class ShadowStats:
    """Counts for one candidate (they start over when the candidate changes)."""

    candidate: ShadowConfig
    since: float = field(default_factory=time.time)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHADOW_RESULTS, 0))
    errors: dict[str, int] = field(default_factory=dict)  # by kind
    dropped: int = 0
    disagreements: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=DISAGREEMENTS_KEPT)
    )
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class MirrorRequest:
    """One sampled request and the stable's answer to it."""

    route_template: str  # e.g. /v2/models/{model_name}/infer
    protocol: str  # "v1" or "v2"
    body: bytes
    content_type: bytes | None
    header_length: int | None  # the request's binary data header
    request_id: str
    stable_version: str
    stable_body: bytes
    stable_header_length: int | None  # the stable answer's binary data header


class ShadowTraffic:
    """Mirrors sampled requests to the configured candidate and records the comparison.

    ``on_change(active)``: called when mirroring turns on or off, so that the app keeps
    the one attribute its request path checks. ``discovery``: ask a candidate's offer
    every ``discovery.interval`` s (None: the file alone). ``own_version``: this server's
    version; a config or offer naming it is not applied.
    """

    def __init__(
        self,
        config_path: str,
        metrics: ShadowMetrics,
        *,
        timeout: float,
        max_in_flight: int,
        model_version: Callable[[], str | None],
        on_change: Callable[[bool], None] = lambda active: None,
        discovery: ShadowDiscovery | None = None,
        own_version: str | None = None,
    ) -> None:
        self.file = ShadowConfigFile(config_path)
        self.discovery = discovery
        self.own_version = own_version
        self.metrics = metrics
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.model_version = model_version
        self.on_change = on_change
        self.config: ShadowConfig | None = None
        self.config_error: str | None = None
        self.source: str | None = None  # "file" or "discovery": where ``config`` comes from
        self._from_file = ConfigChange(None)  # the file's last content, parsed
        self._discovered = Discovered("none", detail="not asked yet")
        self._discovery_key: tuple[str, ShadowConfig | None, str] = ("none", None, "")
        self.stats: ShadowStats | None = None
        self.in_flight = 0
        self.in_flight_bytes = 0
        self._pool: HttpPool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._discover: asyncio.Task[None] | None = None
        self._disagreement_log = RateLimit(LOG_LINES_PER_SECOND)
        self._error_log = RateLimit(1, ERROR_LOG_SECONDS)
        self._random = random.random

    # -- configuration ------------------------------------------------------------------

    def start(self) -> None:
        """Check the configuration file now and then every :data:`CHECK_SECONDS`; ask for a
        candidate's offer now and then every ``discovery.interval`` s, if configured."""
        self.check_config()
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_loop())
        if self.discovery is not None:
            log.info(
                "shadow discovery: asking %s%s every %g s",
                self.discovery.url,
                OFFER_PATH,
                self.discovery.interval,
                extra={"discovery": self.discovery.url},
            )
            self._discover = loop.create_task(self._discover_loop(self.discovery))

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                self.check_config()
            except Exception:  # never let the watch die: serving goes on regardless
                log.exception("checking the shadow config failed")

    async def _discover_loop(self, discovery: ShadowDiscovery) -> None:
        while True:
            try:
                self.discovered(await discovery.ask())
            except Exception:  # never let discovery die: serving goes on regardless
                log.exception("asking for a shadow offer failed")
            await asyncio.sleep(discovery.interval)

    def check_config(self) -> None:
        """Stat the file; apply its content if it changed."""
        change = self.file.check()
        if change is not None:
            self.apply(change)

    def apply(self, change: ConfigChange) -> None:
        """The file's content changed to ``change``."""
        config = change.config
        if config is not None and config.version == self.own_version:
            source = f"shadow config {self.file.path}"
            change = ConfigChange(None, _own_version_error(source, config.version))
        if change.error is not None:
            log.error(
                "%s; shadow traffic is off until the file is fixed",
                change.error,
                extra={"config_file": self.file.path},
            )
        self._from_file = change
        self._decide()

    def discovered(self, found: Discovered) -> None:
        """One ask's answer. Logged only when what was found changes, never per ask (the
        reason there is no offer, e.g. refused or timed out, is not such a change)."""
        config = found.config
        if config is not None and config.version == self.own_version:
            source = f"shadow offer {config.target}{OFFER_PATH}"
            found = Discovered("own_version", detail=_own_version_error(source, config.version))
            config = None
        self._discovered = found
        key = (found.state, config, found.detail if found.state != "none" else "")
        if key == self._discovery_key:
            return
        self._discovery_key = key
        url = self.discovery.url if self.discovery is not None else None
        if found.state == "invalid":
            log.error(
                "%s; no shadow traffic from this offer", found.detail, extra={"discovery": url}
            )
        elif found.state == "own_version":
            log.info("%s; ignored", found.detail, extra={"discovery": url})
        self._decide()

    def _decide(self) -> None:
        """Put in force the file's configuration when it has content, else the discovered
        one; log when mirroring turns on, off, or to another candidate."""
        from_file = self._from_file
        discovery = self.discovery
        if from_file.config is not None or from_file.error is not None or discovery is None:
            source, new, error = "file", from_file.config, from_file.error
        else:
            found = self._discovered
            source, new = "discovery", found.config
            error = found.detail if found.state == "invalid" else None
        self.config_error = error
        old, old_source = self.config, self.source
        if new == old and source == old_source:
            return
        self.source = source
        if new is None:
            if old is not None and error is None:
                if source == "file":
                    reason = "the config file is absent or empty"
                else:
                    assert discovery is not None
                    reason = (
                        f"no candidate offers copies at {discovery.url}: {self._discovered.detail}"
                    )
                log.info(
                    "shadow traffic off (%s)",
                    reason,
                    extra={"config_file": self.file.path, "source": source,
                           "candidate": old.version},
                )  # fmt: skip
            self._set(None)
            return
        if self.stats is None or self.stats.candidate.candidate != new.candidate:
            self.stats = ShadowStats(new)
            version = self.model_version()
            if version is not None:
                self.metrics.start(version, new.version)
        log.info(
            "shadow traffic on: mirroring %g of inference requests to %s",
            new.sample,
            new.target,
            extra={"config_file": self.file.path, "source": source, **new.describe()},
        )
        self._set(new)

    def _set(self, config: ShadowConfig | None) -> None:
        old = self.config
        if self._pool is not None and (
            config is None or old is None or (config.host, config.port) != (old.host, old.port)
        ):
            self._pool.close()  # copies in flight finish on their own connections
            self._pool = None
        self.config = config
        if config is not None and self._pool is None:
            self._pool = HttpPool(config.host, config.port, max_idle=self.max_in_flight)
        self.on_change(config is not None and config.sample > 0.0)

    # -- the request path ---------------------------------------------------------------

    def submit(self, request: MirrorRequest) -> None:
        """Maybe mirror ``request`` (sampled; dropped past the bounds). Never raises, never
        waits: the copy runs in a task of its own, on a later turn of the event loop."""
        config = self.config
        pool = self._pool
        if config is None or pool is None:
            return
        if config.sample < 1.0 and self._random() >= config.sample:
            return
        size = len(request.body) + len(request.stable_body)
        if (
            self.in_flight >= self.max_in_flight
            or self.in_flight_bytes + size > MAX_IN_FLIGHT_BYTES
        ):
            self.metrics.dropped(config.version)
            if self.stats is not None:
                self.stats.dropped += 1
            return
        self.in_flight += 1
        self.in_flight_bytes += size
        task = asyncio.get_running_loop().create_task(self._mirror(config, pool, request, size))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(
        self, config: ShadowConfig, pool: HttpPool, request: MirrorRequest, size: int
    ) -> None:
        try:
            await self._mirror_one(config, pool, request)
        except Exception as exc:  # a bug here must not reach the event loop's handler
            self._error(config, request, "internal", f"{type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1
            self.in_flight_bytes -= size

    async def _mirror_one(
        self, config: ShadowConfig, pool: HttpPool, request: MirrorRequest
    ) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (SHADOW_HEADER, b"1"),
            (b"x-request-id", request.request_id.encode()),
        ]
        if request.content_type is not None:
            headers.append((b"content-type", request.content_type))
        if request.header_length is not None:
            headers.append((BINARY_HEADER, b"%d" % request.header_length))
        if config.authorization is not None:
            headers.append((b"authorization", config.authorization.encode()))
        path = mirror_path(request.route_template, config)
        started = time.perf_counter()
        try:
            answer = await pool.post(path, request.body, headers, timeout=self.timeout)
        except TimeoutError:
            self._error(config, request, "timeout", f"no answer within {self.timeout:g} s")
            return
        except (OSError, HttpClientError) as exc:
            self._error(config, request, "connection", f"{config.target}: {exc}")
            return
        self.metrics.duration(config.version, time.perf_counter() - started)
        if not 200 <= answer.status < 300:
            detail = answer.body[:200].decode("utf-8", "replace")
            self._error(
                config, request, "status", f"{config.target}{path}: {answer.status} {detail}"
            )
            return
        try:
            stable = self._read(request.protocol, request.stable_body, request.stable_header_length)
        except UnreadableAnswer as exc:
            self._error(config, request, "internal", f"the stable's own answer: {exc}")
            return
        try:
            candidate = self._read(
                request.protocol, answer.body, _header_length(answer.headers.get(BINARY_HEADER))
            )
            verdict = compare(stable, candidate)
        except UnreadableAnswer as exc:
            self._error(config, request, "unreadable", str(exc))
            return
        self._count(config, request, "agree" if verdict.agree else "disagree")
        if not verdict.agree:
            self._disagreement(
                config, request, stable, candidate, verdict.rows, verdict.differing_rows
            )

    @staticmethod
    def _read(protocol: str, body: bytes, header_length: int | None) -> Prediction:
        return read_v1(body) if protocol == "v1" else read_v2(body, header_length)

    # -- recording ----------------------------------------------------------------------

    def _stats_for(self, config: ShadowConfig) -> ShadowStats | None:
        stats = self.stats
        return (
            stats if stats is not None and stats.candidate.candidate == config.candidate else None
        )

    def _count(self, config: ShadowConfig, request: MirrorRequest, result: str) -> None:
        self.metrics.result(request.stable_version, config.version, result)
        stats = self._stats_for(config)
        if stats is not None:
            stats.counts[result] += 1

    def _error(self, config: ShadowConfig, request: MirrorRequest, kind: str, detail: str) -> None:
        self._count(config, request, "error")
        stats = self._stats_for(config)
        if stats is not None:
            stats.errors[kind] = stats.errors.get(kind, 0) + 1
            stats.last_error = f"{kind}: {detail}"
        allowed, suppressed = self._error_log.allow(time.monotonic())
        if allowed:
            log.warning(
                "shadow request failed (%s): %s; counted as an error, not a disagreement",
                kind,
                detail,
                extra={"request_id": request.request_id, "candidate": config.version,
                       "target": config.target, "errors_not_logged": suppressed},
            )  # fmt: skip

    def _disagreement(
        self,
        config: ShadowConfig,
        request: MirrorRequest,
        stable: Prediction,
        candidate: Prediction,
        rows: int,
        differing_rows: tuple[int, ...],
    ) -> None:
        record = {
            "request_id": request.request_id,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "protocol": request.protocol,
            "version": request.stable_version,
            "candidate": config.version,
            "rows": rows,
            "differing_rows": list(differing_rows),
            "stable_prediction": stable.shown(),
            "candidate_prediction": candidate.shown(),
        }
        stats = self._stats_for(config)
        if stats is not None:
            stats.disagreements.append(record)
        allowed, suppressed = self._disagreement_log.allow(time.monotonic())
        if allowed:
            log.info(
                "shadow disagreement",
                extra={"model": self.metrics.model, **record, "suppressed_before": suppressed},
            )

    def status(self) -> dict[str, Any]:
        """What ``GET /v2/models/{model}/shadow`` answers."""
        config, stats = self.config, self.stats
        out: dict[str, Any] = {
            "model": self.metrics.model,
            "version": self.model_version(),
            "config_file": self.file.path,
            "active": config is not None and config.sample > 0.0,
            "config": config.describe() if config is not None else None,
            "config_error": self.config_error,
            "source": self.source if config is not None else None,
            "discovery": self._discovery_status(),
            "timeout_seconds": self.timeout,
            "max_in_flight": self.max_in_flight,
            "in_flight": self.in_flight,
            "disagreement_log_lines_suppressed": self._disagreement_log.suppressed,
        }
        if stats is None:
            out.update(candidate=None, counts=dict.fromkeys(SHADOW_RESULTS, 0), dropped=0,
                       errors={}, disagreements=[])  # fmt: skip
            return out
        agree, disagree = stats.counts["agree"], stats.counts["disagree"]
        out.update(
            candidate=stats.candidate.describe(),
            since=dt.datetime.fromtimestamp(stats.since, dt.UTC).isoformat(timespec="seconds"),
            counts=dict(stats.counts),
            agreement=agree / (agree + disagree) if agree + disagree else None,
            dropped=stats.dropped,
            errors=dict(stats.errors),
            last_error=stats.last_error,
            disagreements=list(stats.disagreements),
        )
        return out

    def _discovery_status(self) -> dict[str, Any] | None:
        discovery = self.discovery
        if discovery is None:
            return None
        found = self._discovered
        return {
            "url": discovery.url,
            "interval_seconds": discovery.interval,
            "asked": discovery.asked,
            "state": found.state,
            "offer": found.config.describe() if found.config is not None else None,
            "detail": found.detail or None,
        }

    # -- shutdown -----------------------------------------------------------------------

    async def close(self, timeout: float = 0.0) -> None:
        """Stop watching; give copies in flight up to ``timeout`` s, then cancel them."""
        for task in (self._watch, self._discover):
            if task is not None:
                task.cancel()
        self._watch = self._discover = None
        if self.discovery is not None:
            self.discovery.close()
        if self._tasks and timeout > 0:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.close()


def _own_version_error(source: str, version: str) -> str:
    return (
        f"{source}: field 'version' is {version!r}, this server's own version; accepted: "
        "another version (a server never mirrors to itself: a candidate's own Pods ask the "
        "same discovery URL)"
    )


def _header_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise UnreadableAnswer(f"inference-header-content-length {value!r} is not a number")
    return int(value)
