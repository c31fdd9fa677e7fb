"""Configuration of the model server: environment variables, each overridable by a flag.

The environment variable names are a contract with the operator, which sets them on the
serving container. Secrets (the S3 secret key) are read from the environment only and
are never printed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlmodel_serving.artifacts import S3Config, parse_bool, validate_sha256
from mlmodel_serving.decisionlog import DecisionLogConfig
from mlmodel_serving.shadow_config import (
    DEFAULT_DISCOVERY_SECONDS,
    DEFAULT_SHADOW_CONFIG,
    DEFAULT_SHADOW_MAX_IN_FLIGHT,
    DEFAULT_SHADOW_TIMEOUT_SECONDS,
    parse_discovery_seconds,
    parse_discovery_url,
    parse_shadow_sample,
)

DEFAULT_CACHE_DIR = "/var/cache/mlmodel"
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 1024
DEFAULT_MAX_BATCH_LATENCY_MS = 2.0
DEFAULT_INLINE_PREDICT_MS = 1.0
DEFAULT_INLINE_ALONE_PREDICT_MS = 50.0
DEFAULT_GIL_SWITCH_INTERVAL_MS = 0.2
# Limits on what one client (or all together) can make the HTTP server hold in memory.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_CONNECTION_BUFFER_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_BUFFERED_BYTES = 128 * 1024 * 1024
DEFAULT_WRITE_TIMEOUT_SECONDS = 30.0
DEFAULT_REQUEST_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Settings:
    model_name: str
    artifact_uri: str
    artifact_sha256: str
    model_version: str = "1"
    artifact_format: str = "joblib"
    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    http_host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081  # the Open Inference Protocol over gRPC; 0: no gRPC server
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    log_format: str = "json"
    log_level: str = "info"
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_latency_ms: float = DEFAULT_MAX_BATCH_LATENCY_MS
    predict_threads: int = 1
    inline_predict_ms: float = DEFAULT_INLINE_PREDICT_MS
    inline_alone_predict_ms: float = DEFAULT_INLINE_ALONE_PREDICT_MS
    gil_switch_interval_ms: float = DEFAULT_GIL_SWITCH_INTERVAL_MS
    leaf_tables: bool = True
    keepalive_timeout: float = 60.0
    graceful_timeout: float = 25.0
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connection_buffer_bytes: int = DEFAULT_MAX_CONNECTION_BUFFER_BYTES
    max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES
    write_timeout: float = DEFAULT_WRITE_TIMEOUT_SECONDS
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    drift_baseline_uri: str = ""
    drift_window_rows: int = 10_000
    s3: S3Config | None = field(default=None, repr=True)
    decision_log: DecisionLogConfig | None = None  # None: decisions are not recorded
    # Shadow traffic: the file read while serving (absent: no mirroring), and its bounds.
    shadow_config: Path = Path(DEFAULT_SHADOW_CONFIG)
    shadow_timeout: float = DEFAULT_SHADOW_TIMEOUT_SECONDS
    shadow_max_in_flight: int = DEFAULT_SHADOW_MAX_IN_FLIGHT
    # Shadow discovery (stable side): ask <url>/v2/shadow/offer this often ("": never).
    shadow_discovery: str = ""
    shadow_discovery_seconds: float = DEFAULT_DISCOVERY_SECONDS
    # The offer (candidate side): the share of requests offered; None: no offer (404).
    shadow_sample: float | None = None

    def __post_init__(self) -> None:
        if not self.model_name:
            raise ValueError("model name is empty: set MLMODEL_MODEL_NAME or --model-name")
        if "/" in self.model_name or ":" in self.model_name:
            raise ValueError(
                f"invalid model name {self.model_name!r}: it may not contain '/' or ':'"
            )
        if not self.model_version or "/" in self.model_version:
            raise ValueError(
                f"invalid model version {self.model_version!r}: a non-empty string without '/'"
            )
        if not self.artifact_uri:
            raise ValueError("artifact URI is empty: set MLMODEL_ARTIFACT_URI or --artifact-uri")
        try:
            validate_sha256(self.artifact_sha256)
        except ValueError:
            raise ValueError(
                f"invalid MLMODEL_ARTIFACT_SHA256 {self.artifact_sha256!r}: expected 64 lowercase hex characters"
            ) from None
        if self.artifact_format != "joblib":
            raise ValueError(
                f"unsupported artifact format {self.artifact_format!r} (MLMODEL_ARTIFACT_FORMAT): "
                "expected joblib"
            )
        if not 0 < self.http_port < 65536:
            raise ValueError(f"invalid HTTP port {self.http_port}: expected 1-65535")
        if not 0 <= self.grpc_port < 65536:
            raise ValueError(
                f"invalid gRPC port {self.grpc_port} (MLMODEL_GRPC_PORT, --grpc-port): "
                "expected 1-65535, or 0 to disable gRPC"
            )
        if self.grpc_port == self.http_port:
            raise ValueError(
                f"the gRPC port (MLMODEL_GRPC_PORT, --grpc-port) and the HTTP port "
                f"(MLMODEL_HTTP_PORT, --port) are both {self.http_port}: give them different "
                "ports, or set the gRPC port to 0 to disable gRPC"
            )
        if self.max_body_bytes < 1024:
            raise ValueError(
                f"invalid max body bytes {self.max_body_bytes}: expected at least 1024"
            )
        if self.log_format not in ("json", "text"):
            raise ValueError(f"invalid log format {self.log_format!r}: expected json or text")
        if self.max_batch_size < 0:
            raise ValueError(
                f"invalid MLMODEL_MAX_BATCH_SIZE (--max-batch-size) {self.max_batch_size}: "
                "expected >= 0 rows (0 disables batching)"
            )
        if self.max_batch_latency_ms < 0:
            raise ValueError(
                f"invalid MLMODEL_MAX_BATCH_LATENCY_MS (--max-batch-latency-ms) "
                f"{self.max_batch_latency_ms}: expected >= 0 ms (0 disables batching)"
            )
        if self.drift_window_rows < 1:
            raise ValueError(f"invalid drift window {self.drift_window_rows} rows: expected >= 1")
        if self.inline_predict_ms < 0:
            raise ValueError(
                f"invalid MLMODEL_INLINE_PREDICT_MS (--inline-predict-ms) {self.inline_predict_ms}: "
                "expected >= 0 ms (0 always predicts in the predict threads)"
            )
        if self.inline_alone_predict_ms < 0:
            raise ValueError(
                f"invalid MLMODEL_INLINE_ALONE_PREDICT_MS (--inline-alone-predict-ms) "
                f"{self.inline_alone_predict_ms}: expected >= 0 ms (0 turns it off)"
            )
        if self.gil_switch_interval_ms < 0:
            raise ValueError(
                f"invalid MLMODEL_GIL_SWITCH_INTERVAL_MS (--gil-switch-interval-ms) "
                f"{self.gil_switch_interval_ms}: expected >= 0 ms (0 keeps Python's 5 ms)"
            )
        if self.predict_threads < 1:
            raise ValueError(f"invalid predict threads {self.predict_threads}: expected >= 1")
        self._check_limits()
        if self.decision_log is not None and self.s3 is None:
            raise ValueError(
                "the decision log (MLMODEL_DECISION_LOG) writes to the object store: set "
                "MLMODEL_S3_ENDPOINT (--s3-endpoint)"
            )

    def _check_limits(self) -> None:
        at_least = [
            ("MLMODEL_MAX_HEADER_BYTES (--max-header-bytes)", self.max_header_bytes, 1024),
            ("MLMODEL_MAX_CONNECTIONS (--max-connections)", self.max_connections, 1),
            (
                "MLMODEL_MAX_CONNECTION_BUFFER_BYTES (--max-connection-buffer-bytes)",
                self.max_connection_buffer_bytes,
                1024,
            ),
        ]
        for name, value, least in at_least:
            if value < least:
                raise ValueError(f"invalid {name} {value}: expected at least {least}")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ValueError(
                f"invalid MLMODEL_MAX_BUFFERED_BYTES (--max-buffered-bytes) "
                f"{self.max_buffered_bytes}: expected at least MLMODEL_MAX_BODY_BYTES "
                f"({self.max_body_bytes}), or no request of the largest size could be taken"
            )
        if self.shadow_max_in_flight < 1:
            raise ValueError(
                "invalid MLMODEL_SHADOW_MAX_IN_FLIGHT (--shadow-max-in-flight) "
                f"{self.shadow_max_in_flight}: expected at least 1"
            )
        for name, seconds in (
            ("MLMODEL_WRITE_TIMEOUT_SECONDS (--write-timeout)", self.write_timeout),
            ("MLMODEL_REQUEST_TIMEOUT_SECONDS (--request-timeout)", self.request_timeout),
            ("MLMODEL_SHADOW_TIMEOUT_SECONDS (--shadow-timeout)", self.shadow_timeout),
        ):
            if not seconds > 0:
                raise ValueError(f"invalid {name} {seconds}: expected > 0 seconds")
        if self.shadow_discovery:
            parse_discovery_url(self.shadow_discovery)
        parse_discovery_seconds(self.shadow_discovery_seconds)
        if self.shadow_sample is not None:
            parse_shadow_sample(self.shadow_sample)

    @property
    def batching(self) -> bool:
        """Micro-batching is on unless the batch size or latency is 0."""
        return self.max_batch_size > 1 and self.max_batch_latency_ms > 0


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Flags, each defaulting to its environment variable."""

    def env(name: str, default: str = "") -> str:
        return environ.get(name, default)

    p = argparse.ArgumentParser(
        prog="mlmodel-serve",
        description="Serve one verified scikit-learn model over the Open Inference Protocol (V2) and KServe V1.",
    )
    p.add_argument("--model-name", default=env("MLMODEL_MODEL_NAME"), help="[MLMODEL_MODEL_NAME]")
    p.add_argument(
        "--model-version", default=env("MLMODEL_MODEL_VERSION", "1"), help="[MLMODEL_MODEL_VERSION]"
    )
    p.add_argument(
        "--artifact-uri",
        default=env("MLMODEL_ARTIFACT_URI"),
        help="s3://bucket/key or a local path [MLMODEL_ARTIFACT_URI]",
    )
    p.add_argument(
        "--artifact-sha256",
        default=env("MLMODEL_ARTIFACT_SHA256"),
        help="expected sha256 of the artifact, 64 lowercase hex [MLMODEL_ARTIFACT_SHA256]",
    )
    p.add_argument(
        "--artifact-format",
        default=env("MLMODEL_ARTIFACT_FORMAT", "joblib"),
        help="how the artifact is serialized; only joblib [MLMODEL_ARTIFACT_FORMAT]",
    )
    p.add_argument(
        "--s3-endpoint", default=env("MLMODEL_S3_ENDPOINT"), help="host:port [MLMODEL_S3_ENDPOINT]"
    )
    p.add_argument(
        "--s3-secure",
        default=env("MLMODEL_S3_SECURE", "false"),
        help="use TLS: true/false [MLMODEL_S3_SECURE]",
    )
    p.add_argument("--s3-region", default=env("MLMODEL_S3_REGION"), help="[MLMODEL_S3_REGION]")
    p.add_argument(
        "--cache-dir",
        default=env("MLMODEL_CACHE_DIR", DEFAULT_CACHE_DIR),
        help="[MLMODEL_CACHE_DIR]",
    )
    p.add_argument(
        "--host", default=env("MLMODEL_HTTP_HOST", "0.0.0.0"), help="[MLMODEL_HTTP_HOST]"
    )
    p.add_argument(
        "--port",
        type=int,
        default=int(env("MLMODEL_HTTP_PORT", "8080")),
        help="[MLMODEL_HTTP_PORT]",
    )
    p.add_argument(
        "--grpc-port",
        type=int,
        default=int(env("MLMODEL_GRPC_PORT", "8081")),
        help="port of the Open Inference Protocol's gRPC API, on the same host as HTTP; "
        "0 disables gRPC [MLMODEL_GRPC_PORT]",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=int(env("MLMODEL_MAX_BODY_BYTES", str(DEFAULT_MAX_BODY_BYTES))),
        help="largest request body accepted; larger gets 413 [MLMODEL_MAX_BODY_BYTES]",
    )
    p.add_argument(
        "--log-format",
        default=env("MLMODEL_LOG_FORMAT", "json"),
        choices=["json", "text"],
        help="[MLMODEL_LOG_FORMAT]",
    )
    p.add_argument(
        "--log-level", default=env("MLMODEL_LOG_LEVEL", "info"), help="[MLMODEL_LOG_LEVEL]"
    )
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=int(env("MLMODEL_MAX_BATCH_SIZE", str(DEFAULT_MAX_BATCH_SIZE))),
        help="most rows per predict call; 0 disables batching [MLMODEL_MAX_BATCH_SIZE]",
    )
    p.add_argument(
        "--max-batch-latency-ms",
        type=float,
        default=float(env("MLMODEL_MAX_BATCH_LATENCY_MS", str(DEFAULT_MAX_BATCH_LATENCY_MS))),
        help="longest a request waits for others to join its batch; 0 disables batching "
        "[MLMODEL_MAX_BATCH_LATENCY_MS]",
    )
    p.add_argument(
        "--predict-threads",
        type=int,
        default=int(env("MLMODEL_PREDICT_THREADS", "1")),
        help="threads running predict calls [MLMODEL_PREDICT_THREADS]",
    )
    p.add_argument(
        "--inline-predict-ms",
        type=float,
        default=float(env("MLMODEL_INLINE_PREDICT_MS", str(DEFAULT_INLINE_PREDICT_MS))),
        help="predict on the event loop, without a thread hand-off, while recent predict "
        "calls took less than this; 0 always uses the predict threads [MLMODEL_INLINE_PREDICT_MS]",
    )
    p.add_argument(
        "--inline-alone-predict-ms",
        type=float,
        default=float(env("MLMODEL_INLINE_ALONE_PREDICT_MS", str(DEFAULT_INLINE_ALONE_PREDICT_MS))),
        help="the same, while a single connection sends inference requests (a probe may "
        "wait this long); 0 turns it off [MLMODEL_INLINE_ALONE_PREDICT_MS]",
    )
    p.add_argument(
        "--gil-switch-interval-ms",
        type=float,
        default=float(env("MLMODEL_GIL_SWITCH_INTERVAL_MS", str(DEFAULT_GIL_SWITCH_INTERVAL_MS))),
        help="how long a predict thread may hold the GIL while the event loop waits for it "
        "(sys.setswitchinterval); 0 keeps Python's 5 ms [MLMODEL_GIL_SWITCH_INTERVAL_MS]",
    )
    p.add_argument(
        "--leaf-tables",
        default=env("MLMODEL_LEAF_TABLES", "true"),
        help="predict RandomForest and ExtraTrees models through leaf tables when a load-time "
        "check shows they give the same bits as predict: true/false [MLMODEL_LEAF_TABLES]",
    )
    p.add_argument(
        "--drift-baseline-uri",
        default=env("MLMODEL_DRIFT_BASELINE_URI"),
        help="baseline.json for input drift (PSI) metrics; s3:// or a local path "
        "[MLMODEL_DRIFT_BASELINE_URI]",
    )
    p.add_argument(
        "--drift-window-rows",
        type=int,
        default=int(env("MLMODEL_DRIFT_WINDOW_ROWS", "10000")),
        help="PSI is computed over about this many recent rows [MLMODEL_DRIFT_WINDOW_ROWS]",
    )
    p.add_argument(
        "--keepalive-timeout",
        type=float,
        default=float(env("MLMODEL_KEEPALIVE_TIMEOUT_SECONDS", "60")),
        help="close idle connections after this many seconds [MLMODEL_KEEPALIVE_TIMEOUT_SECONDS]",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=float(env("MLMODEL_GRACEFUL_TIMEOUT_SECONDS", "25")),
        help="on SIGTERM, wait this long for in-flight requests [MLMODEL_GRACEFUL_TIMEOUT_SECONDS]",
    )
    limits = p.add_argument_group(
        "limits", "what clients can make the HTTP server hold (larger: refused, or closed)"
    )
    limits.add_argument(
        "--max-header-bytes",
        type=int,
        default=int(env("MLMODEL_MAX_HEADER_BYTES", str(DEFAULT_MAX_HEADER_BYTES))),
        help="largest request line and headers, counted as they arrive; larger gets 431 "
        "[MLMODEL_MAX_HEADER_BYTES]",
    )
    limits.add_argument(
        "--max-connections",
        type=int,
        default=int(env("MLMODEL_MAX_CONNECTIONS", str(DEFAULT_MAX_CONNECTIONS))),
        help="open HTTP connections; past it a connection gets 503 (health probes are "
        "answered) and is closed [MLMODEL_MAX_CONNECTIONS]",
    )
    limits.add_argument(
        "--max-connection-buffer-bytes",
        type=int,
        default=int(
            env("MLMODEL_MAX_CONNECTION_BUFFER_BYTES", str(DEFAULT_MAX_CONNECTION_BUFFER_BYTES))
        ),
        help="request bodies one connection may have waiting for their answers before the "
        "server stops reading it [MLMODEL_MAX_CONNECTION_BUFFER_BYTES]",
    )
    limits.add_argument(
        "--max-buffered-bytes",
        type=int,
        default=int(env("MLMODEL_MAX_BUFFERED_BYTES", str(DEFAULT_MAX_BUFFERED_BYTES))),
        help="request bodies held by all connections together; a request past it gets 503 "
        "[MLMODEL_MAX_BUFFERED_BYTES]",
    )
    limits.add_argument(
        "--write-timeout",
        type=float,
        default=float(env("MLMODEL_WRITE_TIMEOUT_SECONDS", str(DEFAULT_WRITE_TIMEOUT_SECONDS))),
        help="close a connection whose client has read none of its answers for this many "
        "seconds [MLMODEL_WRITE_TIMEOUT_SECONDS]",
    )
    limits.add_argument(
        "--request-timeout",
        type=float,
        default=float(env("MLMODEL_REQUEST_TIMEOUT_SECONDS", str(DEFAULT_REQUEST_TIMEOUT_SECONDS))),
        help="a request not fully received within this many seconds gets 408 "
        "[MLMODEL_REQUEST_TIMEOUT_SECONDS]",
    )
    shadow = p.add_argument_group(
        "shadow traffic", "mirror sampled requests to a candidate version (docs/serving.md)"
    )
    shadow.add_argument(
        "--shadow-config",
        default=env("MLMODEL_SHADOW_CONFIG", DEFAULT_SHADOW_CONFIG),
        help="JSON file checked every second while serving; absent or empty: no mirroring "
        "[MLMODEL_SHADOW_CONFIG]",
    )
    shadow.add_argument(
        "--shadow-timeout",
        type=float,
        default=float(env("MLMODEL_SHADOW_TIMEOUT_SECONDS", str(DEFAULT_SHADOW_TIMEOUT_SECONDS))),
        help="seconds the candidate has to answer a mirrored request "
        "[MLMODEL_SHADOW_TIMEOUT_SECONDS]",
    )
    shadow.add_argument(
        "--shadow-max-in-flight",
        type=int,
        default=int(env("MLMODEL_SHADOW_MAX_IN_FLIGHT", str(DEFAULT_SHADOW_MAX_IN_FLIGHT))),
        help="mirrored requests in flight at most; past it a copy is dropped (and counted) "
        "[MLMODEL_SHADOW_MAX_IN_FLIGHT]",
    )
    shadow.add_argument(
        "--shadow-discovery",
        default=env("MLMODEL_SHADOW_DISCOVERY"),
        help="http://host:port asked for a candidate's offer (GET /v2/shadow/offer) while "
        "serving; unset: no discovery [MLMODEL_SHADOW_DISCOVERY]",
    )
    shadow.add_argument(
        "--shadow-discovery-seconds",
        default=env("MLMODEL_SHADOW_DISCOVERY_SECONDS", f"{DEFAULT_DISCOVERY_SECONDS:g}"),
        help="seconds between two asks, 1 to 300 [MLMODEL_SHADOW_DISCOVERY_SECONDS]",
    )
    shadow.add_argument(
        "--shadow-sample",
        default=env("MLMODEL_SHADOW_SAMPLE"),
        help="as a candidate: offer to take copies of this share (0.0 to 1.0) of the stable's "
        "requests at GET /v2/shadow/offer; unset: no offer [MLMODEL_SHADOW_SAMPLE]",
    )
    log = p.add_argument_group(
        "decision log", "record every inference request in the object store (default: off)"
    )
    log.add_argument("--decision-log", default=None, help="true/false [MLMODEL_DECISION_LOG]")
    log.add_argument(
        "--decision-log-bucket", dest="bucket", default=None, help="[MLMODEL_DECISION_LOG_BUCKET]"
    )
    log.add_argument(
        "--decision-log-prefix",
        dest="prefix",
        default=None,
        help="key prefix, default decisions [MLMODEL_DECISION_LOG_PREFIX]",
    )
    log.add_argument(
        "--decision-log-mode",
        dest="mode",
        default=None,
        help="best-effort (drop the oldest records when the store cannot keep up) or required "
        "(answer 503 rather than decide unrecorded) [MLMODEL_DECISION_LOG_MODE]",
    )
    log.add_argument(
        "--decision-log-flush-seconds",
        dest="flush_seconds",
        type=float,
        default=None,
        help="write a file at least this often, default 10 [MLMODEL_DECISION_LOG_FLUSH_SECONDS]",
    )
    log.add_argument(
        "--decision-log-max-records",
        dest="max_records",
        type=int,
        default=None,
        help="records per file, default 1000 [MLMODEL_DECISION_LOG_MAX_RECORDS]",
    )
    log.add_argument(
        "--decision-log-queue-records",
        dest="queue_records",
        type=int,
        default=None,
        help="most records held in memory, default 100000 [MLMODEL_DECISION_LOG_QUEUE_RECORDS]",
    )
    log.add_argument(
        "--decision-log-redact",
        dest="redact",
        default=None,
        help="comma-separated input columns stored only as a keyed hash; the key comes from "
        "MLMODEL_DECISION_LOG_REDACT_KEY [MLMODEL_DECISION_LOG_REDACT]",
    )
    log.add_argument(
        "--namespace",
        dest="namespace",
        default=None,
        help="the namespace in record keys, default 'default' [MLMODEL_NAMESPACE]",
    )
    return p


DECISION_LOG_FLAGS = (
    "bucket", "prefix", "mode", "flush_seconds", "max_records", "queue_records", "redact",
    "namespace",
)  # fmt: skip


def load_settings(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from flags over environment variables. Raises ValueError on bad values."""
    env = os.environ if environ is None else environ
    try:
        args = build_parser(env).parse_args(argv)
    except ValueError as exc:  # a malformed numeric environment variable
        raise ValueError(f"invalid numeric setting in the environment: {exc}") from None
    s3: S3Config | None = None
    if args.s3_endpoint:
        s3 = S3Config.from_env(
            {
                "MLMODEL_S3_ENDPOINT": args.s3_endpoint,
                "MLMODEL_S3_SECURE": str(parse_bool("MLMODEL_S3_SECURE", args.s3_secure)),
                "MLMODEL_S3_REGION": args.s3_region or "",
                "MLMODEL_S3_ACCESS_KEY": env.get("MLMODEL_S3_ACCESS_KEY", ""),
                "MLMODEL_S3_SECRET_KEY": env.get("MLMODEL_S3_SECRET_KEY", ""),
            }
        )
    elif args.artifact_uri.startswith("s3://") or args.drift_baseline_uri.startswith("s3://"):
        raise ValueError(
            "the artifact or drift baseline is on S3 but MLMODEL_S3_ENDPOINT / --s3-endpoint is not set"
        )
    overrides = {name: getattr(args, name) for name in DECISION_LOG_FLAGS}
    if args.decision_log is not None:
        overrides["enabled"] = parse_bool("--decision-log", args.decision_log)
    decision_log = DecisionLogConfig.from_env(env, overrides)
    return Settings(
        model_name=args.model_name,
        model_version=args.model_version,
        artifact_uri=args.artifact_uri,
        artifact_sha256=args.artifact_sha256,
        artifact_format=args.artifact_format,
        cache_dir=Path(args.cache_dir),
        http_host=args.host,
        http_port=args.port,
        grpc_port=args.grpc_port,
        max_body_bytes=args.max_body_bytes,
        log_format=args.log_format,
        log_level=args.log_level,
        max_batch_size=args.max_batch_size,
        max_batch_latency_ms=args.max_batch_latency_ms,
        predict_threads=args.predict_threads,
        inline_predict_ms=args.inline_predict_ms,
        inline_alone_predict_ms=args.inline_alone_predict_ms,
        gil_switch_interval_ms=args.gil_switch_interval_ms,
        leaf_tables=parse_bool("MLMODEL_LEAF_TABLES (--leaf-tables)", args.leaf_tables),
        keepalive_timeout=args.keepalive_timeout,
        graceful_timeout=args.graceful_timeout,
        max_header_bytes=args.max_header_bytes,
        max_connections=args.max_connections,
        max_connection_buffer_bytes=args.max_connection_buffer_bytes,
        max_buffered_bytes=args.max_buffered_bytes,
        write_timeout=args.write_timeout,
        request_timeout=args.request_timeout,
        drift_baseline_uri=args.drift_baseline_uri,
        drift_window_rows=args.drift_window_rows,
        s3=s3,
        decision_log=decision_log,
        shadow_config=Path(args.shadow_config),
        shadow_timeout=args.shadow_timeout,
        shadow_max_in_flight=args.shadow_max_in_flight,
        shadow_discovery=args.shadow_discovery.strip(),
        shadow_discovery_seconds=parse_discovery_seconds(args.shadow_discovery_seconds),
        shadow_sample=(
            parse_shadow_sample(args.shadow_sample) if args.shadow_sample.strip() else None
        ),
    )
