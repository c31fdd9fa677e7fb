"""``mlmodel-serve``: fetch, verify, load and serve one model until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from mlmodel_serving.app import ServingApp, create_app
from mlmodel_serving.artifacts import fetch_bytes, fetch_verified
from mlmodel_serving.decisionlog import DecisionLog
from mlmodel_serving.decisions import ModelIdentity, input_columns
from mlmodel_serving.drift import Baseline
from mlmodel_serving.grpcserver import GrpcServer
from mlmodel_serving.httpserver import HttpServer
from mlmodel_serving.model import SklearnModel, quiet_warnings
from mlmodel_serving.settings import Settings, load_settings

log = logging.getLogger("mlmodel_serving")

# After the drain, the decision log gets this long (beyond what is left of the graceful
# timeout) to write what is queued: the serving Pod's grace period has 5 s to spare.
DECISION_FLUSH_SECONDS = 4.0

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        )
        line = super().format(record)
        return f"{line} {extras}" if extras else line


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def load_model(settings: Settings) -> SklearnModel:
    """Fetch the artifact into the cache, verify its digest and unpickle it (blocking)."""
    start = time.perf_counter()
    try:
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the cache directory {settings.cache_dir} ({exc.strerror}): "
            "set MLMODEL_CACHE_DIR or --cache-dir to a writable directory"
        ) from None
    path = fetch_verified(
        settings.artifact_uri, settings.artifact_sha256, settings.cache_dir, settings.s3
    )
    model = SklearnModel.load(
        path, settings.artifact_sha256, settings.model_name, settings.model_version
    )
    if settings.leaf_tables:
        reason = model.use_leaf_tables()
        log.info(
            "predict path: %s (%s)",
            model.predict_path,
            reason,
            extra={"model": model.name, "predict_path": model.predict_path},
        )
    model.load_seconds = time.perf_counter() - start
    return model


def load_drift_baseline(settings: Settings, model: SklearnModel) -> Baseline | None:
    """The drift baseline, or None (logged) when it cannot be loaded: serving goes on."""
    classes = [str(c) for c in model.classes.tolist()] if model.classes is not None else None
    try:
        data = fetch_bytes(settings.drift_baseline_uri, settings.s3)
        return Baseline.from_json(data, model.n_features, classes)
    except Exception as exc:
        log.error(
            "drift baseline not loaded; serving without drift metrics: %s",
            exc,
            extra={"uri": settings.drift_baseline_uri},
        )
        return None


async def serve(settings: Settings) -> int:
    """Listen at once (live, not ready), load the model, serve until SIGTERM. Exit code."""
    app: ServingApp = create_app(settings, None, CollectorRegistry())
    server = HttpServer(
        app,
        max_body_bytes=settings.max_body_bytes,
        keepalive_timeout=settings.keepalive_timeout,
        request_timeout=settings.request_timeout,
        max_header_bytes=settings.max_header_bytes,
        max_connections=settings.max_connections,
        max_connection_buffer_bytes=settings.max_connection_buffer_bytes,
        max_buffered_bytes=settings.max_buffered_bytes,
        write_timeout=settings.write_timeout,
    )
    port = await server.start(settings.http_host, settings.http_port)
    # Shadow traffic: the configuration file is checked now and every second after.
    app.shadow.start()
    # The Open Inference Protocol over gRPC, on its own port, answered by the same app.
    grpc_server: GrpcServer | None = None
    grpc_port = 0
    if settings.grpc_port:
        grpc_server = GrpcServer(app)
        try:
            grpc_port = await grpc_server.start(settings.http_host, settings.grpc_port)
        except OSError as bind_error:
            log.error(
                "refusing to serve: %s; set MLMODEL_GRPC_PORT (--grpc-port) to a free port, "
                "or to 0 to disable gRPC",
                bind_error,
                extra={"model": settings.model_name},
            )
            await server.shutdown(0)
            await app.close()
            return 1
    log.info(
        "listening",
        extra={
            "host": settings.http_host,
            "port": port,
            "grpc_port": grpc_port,
            "model": settings.model_name,
            "version": settings.model_version,
            "batching": settings.batching,
            "max_batch_size": settings.max_batch_size,
            "max_batch_latency_ms": settings.max_batch_latency_ms,
        },
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    exit_code = 0
    loading = asyncio.ensure_future(asyncio.to_thread(load_model, settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        exc = loading.exception()
        if exc is None:
            model = loading.result()
            if settings.drift_baseline_uri:
                baseline = await asyncio.to_thread(load_drift_baseline, settings, model)
                app.set_drift_baseline(baseline)
            quiet_warnings()
            if settings.decision_log is not None:
                try:
                    app.decision_log = start_decision_log(settings, model, app)
                except ValueError as exc:
                    log.error("refusing to serve: %s", exc, extra={"model": model.name})
                    exit_code = 1
            if exit_code == 0:
                app.set_model(model)
                log.info(
                    "model loaded and verified; ready",
                    extra={"model": model.name, "version": model.version, "sha256": model.sha256,
                           "load_seconds": round(model.load_seconds, 3),
                           "predict_path": model.predict_path},
                )  # fmt: skip
                await stopping
        else:
            log.error(
                "refusing to serve: %s",
                exc,
                extra={"model": settings.model_name, "uri": settings.artifact_uri},
            )
            exit_code = 1
    else:
        loading.cancel()
    stopping.cancel()
    log.info("shutting down", extra={"graceful_timeout": settings.graceful_timeout})
    app.start_draining()
    # Both servers drain at once, within the one graceful timeout.
    drain_started = time.monotonic()
    await asyncio.gather(
        server.shutdown(settings.graceful_timeout),
        *([grpc_server.shutdown(settings.graceful_timeout)] if grpc_server else []),
    )
    if app.decision_log is not None:
        # Every answered request's record is written before the process ends: the Pod's
        # grace period leaves a few seconds beyond the drain for this.
        left = settings.graceful_timeout - (time.monotonic() - drain_started)
        await asyncio.to_thread(app.decision_log.close, max(left, 0.0) + DECISION_FLUSH_SECONDS)
    await app.close()
    return exit_code


def start_decision_log(settings: Settings, model: SklearnModel, app: ServingApp) -> DecisionLog:
    """The decision log for ``model``, started; ValueError if its settings do not fit it."""
    config = settings.decision_log
    assert config is not None
    columns = input_columns(model.schema.columns, model.n_features)
    names = {c.name for c in columns}
    unknown = sorted(config.redact - names)
    if unknown:
        raise ValueError(
            f"MLMODEL_DECISION_LOG_REDACT names {', '.join(unknown)}, which model "
            f"{model.name!r} does not take: its input columns are "
            f"{', '.join(c.name for c in columns) or '(unknown)'}; a misspelt column would "
            "be recorded in clear"
        )
    ident = ModelIdentity(
        namespace=config.namespace,
        model=model.name,
        version=model.version,
        sha256=model.sha256,
        columns=columns,
        redact=config.redact,
        predict_path=model.predict_path,
    )
    decision_log = DecisionLog(config, settings.s3, ident, app.metrics.registry)
    decision_log.start()
    log.info(
        "recording decisions",
        extra={"bucket": config.bucket, "prefix": config.prefix, "mode": config.mode,
               "redacted": sorted(config.redact)},
    )  # fmt: skip
    return decision_log


def tune_process(settings: Settings) -> None:
    """Process-wide settings of the server, applied once at start."""
    logging.captureWarnings(True)  # load-time warnings (e.g. an unpickling version skew) as logs
    if settings.gil_switch_interval_ms > 0:
        # A forest's predict is mostly Python (one task per tree) and holds the GIL; with
        # Python's 5 ms switch interval the event loop waits that long each time it needs
        # the GIL back to read or answer a request (see docs/serving.md).
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000.0)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = load_settings(argv)
    except ValueError as exc:
        print(f"mlmodel-serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    tune_process(settings)
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # halves /metrics
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(serve(settings))
    with contextlib.suppress(KeyboardInterrupt):
        return int(uvloop.run(serve(settings)))
    return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
