"""The decision log: every answered inference request written to the object store.

The request path only appends a :class:`~mlmodel_serving.decisions.Decision` to an
in-memory queue (a deque append). A writer thread takes up to ``max_records`` of them at
least every ``flush_seconds``, encodes them as one Parquet file and puts it under
``<prefix>/<namespace>/<model>/<version>/dt=YYYY-MM-DD/``. A file that fails to upload
is retried under the same key (with backoff and jitter) until it is written, so no record
is written twice and none is skipped.

What happens while the store is slow or down is the mode's choice:

* ``best-effort``: serving goes on; when the queue is full the oldest queued record is
  dropped and counted (``mlmodel_decisions_dropped_total``).
* ``required``: no decision is made unrecorded. While the last upload failed, or the
  queue is full, inference requests are answered 503 and readiness turns false (so the
  Service stops sending traffic); both recover once an upload succeeds.

:meth:`DecisionLog.close` (on SIGTERM, after the HTTP and gRPC servers have drained)
writes everything still queued. A process killed without SIGTERM loses what was queued:
at most ``flush_seconds`` or ``max_records`` of records.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mlmodel_serving.artifacts import S3Config, make_client, parse_bool
from mlmodel_serving.decisions import (
    DEFAULT_PREFIX,
    Decision,
    ModelIdentity,
    encode_batch,
    partition_key,
)

log = logging.getLogger("mlmodel_serving")

BEST_EFFORT = "best-effort"
REQUIRED = "required"
MODES = (BEST_EFFORT, REQUIRED)
DEFAULT_FLUSH_SECONDS = 10.0
DEFAULT_MAX_RECORDS = 1000
DEFAULT_QUEUE_RECORDS = 100_000
DEFAULT_RETENTION_DAYS = 183  # about six months: the EU AI Act's minimum for logs (Art. 19)
FLUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Object-store calls of the writer: short timeouts, no client-side retries (the writer
# retries a whole file itself, with backoff).
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 10.0
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0


@dataclass(frozen=True)
class DecisionLogConfig:
    """``MLMODEL_DECISION_LOG_*``. The redaction key never appears in ``repr``."""

    bucket: str
    namespace: str = "default"
    prefix: str = DEFAULT_PREFIX
    mode: str = BEST_EFFORT
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    max_records: int = DEFAULT_MAX_RECORDS
    queue_records: int = DEFAULT_QUEUE_RECORDS
    redact: frozenset[str] = frozenset()
    redact_key: bytes = field(default=b"", repr=False)
    retention_days: int = DEFAULT_RETENTION_DAYS
    writer: str = ""  # part of every object name: the Pod's name (or host-pid)

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError(
                "the decision log is on but MLMODEL_DECISION_LOG_BUCKET "
                "(--decision-log-bucket) is empty: name the bucket records go to"
            )
        if self.mode not in MODES:
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_MODE (--decision-log-mode) {self.mode!r}: "
                f"expected {' or '.join(MODES)}"
            )
        if not self.prefix.strip("/") or self.prefix != self.prefix.strip("/"):
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_PREFIX {self.prefix!r}: expected a non-empty "
                "key prefix without a leading or trailing '/'"
            )
        if not 0 < self.flush_seconds <= 3600:
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_FLUSH_SECONDS {self.flush_seconds}: "
                "expected more than 0 and at most 3600 seconds"
            )
        if self.max_records < 1:
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_MAX_RECORDS {self.max_records}: expected >= 1"
            )
        if self.queue_records < self.max_records:
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_QUEUE_RECORDS {self.queue_records}: expected at "
                f"least MLMODEL_DECISION_LOG_MAX_RECORDS ({self.max_records})"
            )
        if self.redact and not self.redact_key:
            raise ValueError(
                f"MLMODEL_DECISION_LOG_REDACT names {', '.join(sorted(self.redact))} but "
                "MLMODEL_DECISION_LOG_REDACT_KEY is empty: redacted columns are stored as "
                "keyed hashes and need a key (from a Secret)"
            )
        if self.retention_days < 1:
            raise ValueError(
                f"invalid MLMODEL_DECISION_LOG_RETENTION_DAYS {self.retention_days}: expected >= 1"
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], overrides: Mapping[str, Any] | None = None
    ) -> DecisionLogConfig | None:
        """The configuration, or None when ``MLMODEL_DECISION_LOG`` is not true.

        ``overrides``: values from command-line flags, by field name (None: not given).
        """
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        enabled = given.pop("enabled", None)
        if enabled is None:
            enabled = parse_bool("MLMODEL_DECISION_LOG", env.get("MLMODEL_DECISION_LOG", "false"))
        if not enabled:
            return None

        def number(name: str, kind: Callable[[str], Any], default: Any) -> Any:
            raw = env.get(name, "")
            if not raw:
                return default
            try:
                return kind(raw)
            except ValueError:
                raise ValueError(f"invalid {name} {raw!r}: expected a number") from None

        redact_text = given.pop("redact", env.get("MLMODEL_DECISION_LOG_REDACT", ""))
        writer = env.get("MLMODEL_POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
        values: dict[str, Any] = {
            "bucket": env.get("MLMODEL_DECISION_LOG_BUCKET", ""),
            "namespace": env.get("MLMODEL_NAMESPACE") or "default",
            "prefix": env.get("MLMODEL_DECISION_LOG_PREFIX") or DEFAULT_PREFIX,
            "mode": env.get("MLMODEL_DECISION_LOG_MODE") or BEST_EFFORT,
            "flush_seconds": number(
                "MLMODEL_DECISION_LOG_FLUSH_SECONDS", float, DEFAULT_FLUSH_SECONDS
            ),
            "max_records": number("MLMODEL_DECISION_LOG_MAX_RECORDS", int, DEFAULT_MAX_RECORDS),
            "queue_records": number(
                "MLMODEL_DECISION_LOG_QUEUE_RECORDS", int, DEFAULT_QUEUE_RECORDS
            ),
            "retention_days": number(
                "MLMODEL_DECISION_LOG_RETENTION_DAYS", int, DEFAULT_RETENTION_DAYS
            ),
            "redact_key": env.get("MLMODEL_DECISION_LOG_REDACT_KEY", "").encode(),
            "writer": writer,
        }
        values.update(given)
        values["redact"] = frozenset(c.strip() for c in str(redact_text).split(",") if c.strip())
        return cls(**values)


class DecisionMetrics:
    """The log's own series, on the server's registry."""

    def __init__(self, registry: CollectorRegistry, model: str, capacity: int) -> None:
        labels = ["model"]
        self.written = Counter(
            "mlmodel_decisions_written",
            "Decision records written to the object store",
            labels,
            registry=registry,
        ).labels(model)
        self.dropped = Counter(
            "mlmodel_decisions_dropped",
            "Decision records dropped (best-effort mode with the queue full, or records "
            "that could not be encoded)",
            labels,
            registry=registry,
        ).labels(model)
        self.refused = Counter(
            "mlmodel_decisions_refused",
            "Inference requests answered 503 because they could not be recorded (required mode)",
            labels,
            registry=registry,
        ).labels(model)
        self.failures = Counter(
            "mlmodel_decision_flush_failures",
            "Failed uploads of a decision file (each is retried)",
            labels,
            registry=registry,
        ).labels(model)
        self.bytes = Counter(
            "mlmodel_decision_bytes",
            "Bytes of decision files written",
            labels,
            registry=registry,
        ).labels(model)
        self.flush = Histogram(
            "mlmodel_decision_flush_seconds",
            "Time to encode and upload one decision file",
            labels,
            buckets=FLUSH_BUCKETS,
            registry=registry,
        ).labels(model)
        self.queue = Gauge(
            "mlmodel_decision_queue_records",
            "Decision records waiting to be written",
            labels,
            registry=registry,
        ).labels(model)
        Gauge(
            "mlmodel_decision_queue_capacity",
            "Most decision records the queue holds",
            labels,
            registry=registry,
        ).labels(model).set(capacity)
        self.up = Gauge(
            "mlmodel_decision_log_up",
            "1 while the last upload of a decision file succeeded (or none was needed yet)",
            labels,
            registry=registry,
        ).labels(model)
        self.up.set(1)


class DecisionLog:
    """The queue and its writer thread. :meth:`add` is the only call on the request path."""

    def __init__(
        self,
        config: DecisionLogConfig,
        s3: S3Config | None,
        ident: ModelIdentity,
        registry: CollectorRegistry,
        client: Any = None,
    ) -> None:
        if client is None:
            if s3 is None:
                raise ValueError(
                    "the decision log needs the object store: set MLMODEL_S3_ENDPOINT "
                    "(--s3-endpoint)"
                )
            client = _make_client(s3)
        self.config = config
        self.ident = ident
        self.client = client
        self.required = config.mode == REQUIRED
        self.metrics = DecisionMetrics(registry, ident.model, config.queue_records)
        self.metrics.up.set(0 if self.required else 1)
        self._queue: collections.deque[Decision] = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        # Required mode is not ready until the bucket has answered (the writer's probe).
        self._healthy = not self.required
        self._boot = secrets.token_hex(3)
        self._seq = 0
        self._lock_checked = False
        self._retention: Any = None
        self._give_up = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self.unwritten = 0  # records left in memory by close()

    def start(self) -> None:
        self._thread.start()

    # -- the request path ----------------------------------------------------------------

    @property
    def accepting(self) -> bool:
        """Whether a new decision may be made. Always true in best-effort mode."""
        if not self.required:
            return True
        return self._healthy and len(self._queue) < self.config.queue_records

    def add(self, decision: Decision) -> None:
        """Queue one record (called on the event loop; never blocks)."""
        queue = self._queue
        queue.append(decision)
        size = len(queue)
        if size == self.config.max_records:
            self._wake.set()
        elif size > self.config.queue_records and not self.required:
            # Required mode never drops: it refuses new requests while the queue is full
            # (requests already running may take it a little past its capacity).
            queue.popleft()
            self.metrics.dropped.inc()

    def refused(self) -> None:
        self.metrics.refused.inc()

    # -- the writer thread ---------------------------------------------------------------

    def _run(self) -> None:
        self._probe()
        flush_seconds = self.config.flush_seconds
        while True:
            queue = self._queue
            if not self._stop and len(queue) < self.config.max_records:
                oldest = queue[0].time_ns if queue else time.time_ns()
                wait = flush_seconds - (time.time_ns() - oldest) / 1e9
                if wait > 0:
                    self._wake.wait(wait)
                    self._wake.clear()
            self.metrics.queue.set(len(queue))
            if not queue:
                if self._stop:
                    return
                continue
            batch: list[Decision] = []
            for _ in range(min(self.config.max_records, len(queue))):
                batch.append(queue.popleft())
            try:
                data = encode_batch(batch, self.ident, self.config.redact_key or None)
            except Exception:  # a bug, not the store: say so, count them, keep the thread
                log.exception(
                    "decision log: cannot encode %d records; they are dropped",
                    len(batch),
                    extra={"model": self.ident.model},
                )
                self.metrics.dropped.inc(len(batch))
                continue
            if not self._write(batch, data):
                return  # stopped while the store was failing: close() counts what is left
            self.metrics.queue.set(len(queue))

    def _probe(self) -> None:
        """Check the bucket before the first record (required mode is ready only after)."""
        delay = BACKOFF_FIRST
        while not self._stop:
            try:
                if self.client.bucket_exists(self.config.bucket):
                    self._set_healthy(True)
                    return
                problem = f"bucket {self.config.bucket} does not exist"
            except Exception as exc:
                problem = _describe(exc)
            self.metrics.failures.inc()
            if self._healthy:
                log.error(
                    "decision log: cannot reach s3://%s (%s); %s",
                    self.config.bucket,
                    problem,
                    "refusing inference requests until it can"
                    if self.required
                    else "records are queued meanwhile",
                    extra={"model": self.ident.model, "mode": self.config.mode},
                )
            self._set_healthy(False)
            self._wake.wait(delay * (0.5 + random.random()))
            self._wake.clear()
            delay = min(delay * 2, BACKOFF_MAX)

    def _set_healthy(self, healthy: bool) -> None:
        if healthy and not self._healthy:
            log.info(
                "decision log: writing to s3://%s", self.config.bucket,
                extra={"model": self.ident.model},
            )  # fmt: skip
        self._healthy = healthy
        self.metrics.up.set(1 if healthy else 0)

    def _write(self, batch: list[Decision], data: bytes) -> bool:
        """Write one file, retrying the same key until it is written; False if stopped."""
        at = dt.datetime.fromtimestamp(batch[0].time_ns / 1e9, dt.UTC)
        self._seq += 1
        name = f"{at.strftime('%H%M%S')}-{self.config.writer}-{self._boot}-{self._seq:06d}.parquet"
        key = partition_key(self.config.prefix, self.ident, at, name)
        delay = BACKOFF_FIRST
        while True:
            started = time.perf_counter()
            try:
                self._put(key, data)
            except Exception as exc:
                self.metrics.failures.inc()
                if self._healthy:
                    log.error(
                        "decision log: cannot write s3://%s/%s (%d records), retrying: %s",
                        self.config.bucket,
                        key,
                        len(batch),
                        _describe(exc),
                        extra={"model": self.ident.model, "mode": self.config.mode},
                    )
                self._set_healthy(False)
                if self._give_up:
                    self.unwritten = len(batch) + len(self._queue)
                    return False
                self._wake.wait(delay * (0.5 + random.random()))  # close() cuts it short
                self._wake.clear()
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            self.metrics.flush.observe(time.perf_counter() - started)
            self.metrics.written.inc(len(batch))
            self.metrics.bytes.inc(len(data))
            self._set_healthy(True)
            return True

    def _put(self, key: str, data: bytes) -> None:
        import io

        if not self._lock_checked:
            self._retention = self._bucket_retention()
            self._lock_checked = True
        kwargs: dict[str, Any] = {}
        if self._retention is not None:
            kwargs["retention"] = self._retention(dt.datetime.now(dt.UTC))
        self.client.put_object(
            self.config.bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type="application/vnd.apache.parquet",
            **kwargs,
        )

    def _bucket_retention(self) -> Callable[[dt.datetime], Any] | None:
        """With object lock on the bucket: a retention of ``retention_days`` (or the
        bucket's default rule, whichever is longer) in the bucket's mode."""
        from minio.commonconfig import COMPLIANCE, GOVERNANCE
        from minio.retention import Retention

        try:
            config = self.client.get_object_lock_config(self.config.bucket)
        except Exception as exc:
            code = getattr(exc, "code", None)
            if code in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
                return None
            raise
        mode = config.mode or COMPLIANCE
        days = self.config.retention_days
        if config.duration is not None:
            amount, unit = config.duration
            default_days = amount * 365 if str(unit).upper().startswith("Y") else amount
            days = max(days, int(default_days))
        mode = GOVERNANCE if mode == GOVERNANCE else COMPLIANCE

        def retention(now: dt.datetime) -> Any:
            until = (now + dt.timedelta(days=days)).replace(microsecond=0)
            return Retention(mode, until)

        return retention

    def close(self, timeout: float) -> int:
        """Write everything queued, waiting up to ``timeout`` s; the records left unwritten."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            self._give_up = True  # the store is failing: stop retrying
            self._wake.set()
            self._thread.join(CONNECT_TIMEOUT + READ_TIMEOUT)
            self.unwritten = max(self.unwritten, len(self._queue))
        elif self._queue:
            self.unwritten = len(self._queue)
        if self.unwritten:
            log.error(
                "decision log: %d record(s) could not be written before shutdown",
                self.unwritten,
                extra={"model": self.ident.model, "bucket": self.config.bucket},
            )
        return self.unwritten


def _make_client(s3: S3Config) -> Any:
    """The writer's own client: short timeouts, no retries of its own."""
    return make_client(
        s3, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT, max_connections=2
    )


def _describe(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{code}: {text}" if code else text
