"""HTTP routes of the model server, independent of the HTTP server that carries them.

:class:`ServingApp` answers ``(method, path, body, request id)`` with a
:class:`Response`. It is served by the small HTTP/1.1 server in
:mod:`mlmodel_serving.httpserver` (the fast path) and is also an ASGI application, so it
can run under any ASGI server and be tested in-process. Build it with :func:`create_app`.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from prometheus_client import CollectorRegistry

from mlmodel_serving import __version__
from mlmodel_serving.batching import BatchingPredictor
from mlmodel_serving.decisionlog import DecisionLog
from mlmodel_serving.decisions import Decision
from mlmodel_serving.drift import Baseline, DriftMonitor
from mlmodel_serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlmodel_serving.metrics import ServingMetrics
from mlmodel_serving.model import (
    ModelInputError,
    SklearnModel,
    library_versions,
)
from mlmodel_serving.openapi import openapi_document
from mlmodel_serving.predictor import DirectPredictor, Outputs, PredictCost, Predictor
from mlmodel_serving.protocol import (
    InferenceError,
    InferenceRequest,
    MethodNotAllowed,
    NotFound,
    NotReady,
    PayloadTooLarge,
    decode_v1_request,
    decode_v2_request,
    encode_error,
    encode_json,
    encode_v1_response,
    encode_v2_binary_response,
    encode_v2_response,
)
from mlmodel_serving.settings import Settings
from mlmodel_serving.shadow import SHADOW_HEADER, MirrorRequest, ShadowTraffic
from mlmodel_serving.shadow_config import build_offer
from mlmodel_serving.shadow_discovery import ShadowDiscovery

log = logging.getLogger("mlmodel_serving")

JSON = b"application/json"
_T = TypeVar("_T")
Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    name: str
    protocol: str
    summary: str


# The REST surface. /openapi.json documents exactly these (kept true by a test).
ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2", "server_metadata", "v2", "Server metadata"),
    Route("GET", "/v2/health/live", "live", "v2", "Liveness: the process answers"),
    Route("GET", "/v2/health/ready", "ready", "v2", "Readiness: the verified model is loaded"),
    Route("GET", "/v2/models/{model_name}", "model_metadata", "v2", "Model metadata"),
    Route("GET", "/v2/models/{model_name}/ready", "model_ready", "v2", "Model readiness"),
    Route(
        "POST",
        "/v2/models/{model_name}/infer",
        "infer",
        "v2",
        "Inference (Open Inference Protocol)",
    ),
    Route(
        "GET",
        "/v2/models/{model_name}/versions/{model_version}",
        "model_metadata",
        "v2",
        "Model metadata",
    ),
    Route(
        "GET",
        "/v2/models/{model_name}/versions/{model_version}/ready",
        "model_ready",
        "v2",
        "Model readiness",
    ),
    Route(
        "POST",
        "/v2/models/{model_name}/versions/{model_version}/infer",
        "infer",
        "v2",
        "Inference (Open Inference Protocol)",
    ),
    Route("GET", "/v1/models/{model_name}", "v1_model", "v1", "Model status (KServe V1)"),
    Route("POST", "/v1/models/{model_name}:predict", "v1_predict", "v1", "Prediction (KServe V1)"),
    Route(
        "GET",
        "/v2/shadow/offer",
        "shadow_offer",
        "http",
        "Shadow discovery: the copies this server offers to take as a candidate",
    ),
    Route(
        "GET",
        "/v2/models/{model_name}/shadow",
        "shadow",
        "http",
        "Shadow traffic: the configuration, the agreement and the last disagreements",
    ),
    Route("GET", "/metrics", "metrics", "http", "Prometheus metrics"),
    Route("GET", "/openapi.json", "openapi", "http", "This OpenAPI description"),
)


# The routes whose requests are decisions (and leave a record when decisions are logged).
_DECIDING = frozenset(("infer", "v1_predict"))


class DecisionLogUnavailable(InferenceError):
    """Required mode, and records cannot be written: the request is refused."""

    status = 503


def _template_regex(template: str) -> re.Pattern[str]:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{model_name}"), r"(?P<model_name>[^/:]+)")
    pattern = pattern.replace(re.escape("{model_version}"), r"(?P<model_version>[^/]+)")
    return re.compile(f"^{pattern}$")


_MATCHERS = [(route, _template_regex(route.template)) for route in ROUTES]
_PATH_CACHE_LIMIT = 4096
# Bodies at least this large are decoded (JSON to numbers) and turned into the model's
# input in a thread of their own, so that health probes and other requests are answered
# meanwhile: a 16 MiB body takes about a second. Smaller ones stay on the event loop,
# where a thread hand-off would cost more than the work.
DECODE_IN_THREAD_BYTES = 1024 * 1024

Handler = Callable[[bytes, dict[str, str], str, int | None, Decision | None], Awaitable[Response]]
BINARY = b"application/octet-stream"
#: The binary data extension's header: the length of the JSON part of the body.
HEADER_LENGTH = b"inference-header-content-length"


class ServingApp:
    """The routes of one model server. ``model`` may arrive later via :meth:`set_model`."""

    def __init__(
        self,
        settings: Settings,
        model: SklearnModel | None,
        registry: CollectorRegistry,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServingMetrics(registry, settings.model_name)
        self.executor = executor or ThreadPoolExecutor(
            max_workers=settings.predict_threads,
            thread_name_prefix="predict",
        )
        # Set by the HTTP server: how many open connections send inference requests
        # (the batching hint: when all of them wait in the queue, nobody else can join).
        self.connection_count: Callable[[], int] | None = None
        self.model: SklearnModel | None = None
        self.predictor: Predictor | None = None
        # Set before the model when decisions are recorded (cli.serve): every inference
        # request then leaves a record (mlmodel_serving.decisionlog).
        self.decision_log: DecisionLog | None = None
        # Shadow traffic (mlmodel_serving.shadow): ``mirroring`` is the one attribute the
        # request path checks, None unless a configuration with a sample above 0 is in force.
        self.mirroring: ShadowTraffic | None = None
        self.shadow = ShadowTraffic(
            str(settings.shadow_config),
            self.metrics.shadow,
            timeout=settings.shadow_timeout,
            max_in_flight=settings.shadow_max_in_flight,
            model_version=self._model_version,
            on_change=self._shadow_changed,
            discovery=(
                ShadowDiscovery(
                    settings.shadow_discovery, interval=settings.shadow_discovery_seconds
                )
                if settings.shadow_discovery
                else None
            ),
            own_version=settings.model_version,
        )
        # A candidate (it offers copies) records no decision for a copy: no client saw
        # its answer. A server that offers none records every request, header or not, so
        # the header cannot be used to leave a decision unrecorded on a stable.
        self._copies_unrecorded = settings.shadow_sample is not None
        self.draining = False
        self._model_headers: Headers = []
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._path_cache: dict[tuple[str, str], tuple[Route, dict[str, str]]] = {}
        # One thread: decoding holds the GIL (orjson, numpy), so more would not be faster,
        # and with one the event loop waits for at most one such call at a time.
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
        self._handlers: dict[str, Handler] = {
            "server_metadata": self._server_metadata,
            "live": self._live,
            "ready": self._ready,
            "model_metadata": self._model_metadata,
            "model_ready": self._model_ready,
            "infer": self._infer_v2,
            "v1_model": self._v1_model,
            "v1_predict": self._v1_predict,
            "metrics": self._metrics,
            "openapi": self._openapi,
            "shadow": self._shadow,
            "shadow_offer": self._shadow_offer,
        }
        self._openapi_body = encode_json(openapi_document())
        self.metrics.set_ready(False)
        if model is not None:
            self.set_model(model)

    # -- lifecycle -------------------------------------------------------------------

    def set_model(self, model: SklearnModel) -> None:
        """Start serving ``model`` (already verified and loaded); readiness turns green."""
        if model.name != self.settings.model_name:
            raise ValueError(
                f"model is named {model.name!r} but the server serves {self.settings.model_name!r}"
            )
        self.predictor = self._make_predictor(model)
        self._model_headers = [
            (b"x-model-version", model.version.encode()),
            (b"x-model-sha256", model.sha256.encode()),
        ]
        self.metrics.set_model_info(
            model.version, model.sha256, library_versions(), model.load_seconds
        )
        self._openapi_body = encode_json(openapi_document(model.metadata()))
        self.model = model
        if self.shadow.config is not None:
            self.metrics.shadow.start(model.version, self.shadow.config.version)
        self.metrics.set_ready(True)

    def set_drift_baseline(self, baseline: Baseline | None) -> None:
        """Start drift metrics against ``baseline``; ``None``: configured but not loadable."""
        if baseline is None:
            self.metrics.drift.baseline_loaded = False
            return
        self.metrics.drift.monitor = DriftMonitor(
            baseline, window_rows=self.settings.drift_window_rows
        )
        self.metrics.drift.baseline_loaded = True

    def _make_predictor(self, model: SklearnModel) -> Predictor:
        cost = PredictCost(
            self.settings.inline_predict_ms / 1000.0,
            self.settings.inline_alone_predict_ms / 1000.0,
        )
        if not self.settings.batching:
            return DirectPredictor(
                model, self.metrics, self.executor, cost, open_connections=self._open_connections
            )
        return BatchingPredictor(
            model,
            self.metrics,
            self.executor,
            max_batch_size=self.settings.max_batch_size,
            max_batch_latency=self.settings.max_batch_latency_ms / 1000.0,
            lanes=self.settings.predict_threads,
            open_connections=self._open_connections,
            cost=cost,
        )

    def _model_version(self) -> str | None:
        return self.model.version if self.model is not None else None

    def _shadow_changed(self, active: bool) -> None:
        self.mirroring = self.shadow if active else None

    def _open_connections(self) -> int | None:
        return self.connection_count() if self.connection_count is not None else None

    def start_draining(self) -> None:
        """Readiness turns red (shutdown has begun); requests in flight still complete."""
        self.draining = True
        self.metrics.set_ready(False)

    async def close(self) -> None:
        await self.shadow.close()
        if self.predictor is not None:
            await self.predictor.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._decoder.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        """The model is loaded, shutdown has not begun, and (in the decision log's required
        mode) decisions can be recorded."""
        log = self.decision_log
        return self.model is not None and not self.draining and (log is None or log.accepting)

    # -- decision records ------------------------------------------------------------

    def begin_decision(
        self, request_id: str, protocol: str, id_given: bool = True
    ) -> Decision | None:
        """A record for an inference request about to be served, or None when decisions
        are not recorded (or no model is loaded yet: nothing will be decided).

        Raises :class:`DecisionLogUnavailable` (503) in required mode while records
        cannot be written: no decision is made unrecorded.
        """
        log = self.decision_log
        if log is None or self.model is None:
            return None
        if not log.accepting:
            log.refused()
            raise DecisionLogUnavailable(
                "decisions cannot be recorded right now (decision log mode: required, "
                f"bucket {log.config.bucket}); retry shortly"
            )
        return Decision(request_id, time.time_ns(), protocol, id_given=id_given)

    def end_decision(
        self, decision: Decision, status: int, error: str | None, started: float
    ) -> None:
        """Queue the finished record (``started``: ``time.perf_counter()`` at arrival)."""
        decision.status = status
        decision.error = error
        decision.latency_s = time.perf_counter() - started
        assert self.decision_log is not None
        self.decision_log.add(decision)

    # -- dispatch --------------------------------------------------------------------

    def new_request_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids):x}"

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and ``path``, or NotFound / MethodNotAllowed."""
        if method == "HEAD":  # a GET without the body (the HTTP server drops it)
            method = "GET"
        key = (method, path)
        hit = self._path_cache.get(key)
        if hit is not None:
            return hit
        decoded = unquote(path) if "%" in path else path
        allowed: list[str] = []
        for route, regex in _MATCHERS:
            match = regex.match(decoded)
            if match is None:
                continue
            if route.method != method:
                allowed.append(route.method)
                continue
            params = match.groupdict()
            found = (route, params)
            if self._cacheable(path, params):
                if len(self._path_cache) >= _PATH_CACHE_LIMIT:
                    self._path_cache.clear()
                self._path_cache[key] = found
            return found
        if allowed:
            raise MethodNotAllowed(
                f"method {method} is not allowed on {decoded}: use {' or '.join(allowed)}"
            )
        raise NotFound(
            f"no route {method} {decoded}: see /openapi.json "
            f"(inference is POST /v2/models/{self.settings.model_name}/infer)"
        )

    def _cacheable(self, path: str, params: dict[str, str]) -> bool:
        """Only the served model's own paths are kept: the few a client may send, never
        paths a client makes up (any model name, or percent-encoded spellings)."""
        if "%" in path:
            return False
        name = params.get("model_name")
        if name is not None and name != self.settings.model_name:
            return False
        version = params.get("model_version")
        return version is None or version == self.settings.model_version

    async def handle(
        self,
        method: str,
        path: str,
        body: bytes,
        request_id: str | None = None,
        header_length: int | None = None,
        content_type: bytes | None = None,
        shadowed: bool = False,
    ) -> Response:
        """Answer one request. Never raises: errors become JSON error responses.

        ``header_length``: the request's ``Inference-Header-Content-Length`` (the binary
        data extension of the Open Inference Protocol), when it has one. ``content_type``
        and ``shadowed`` (the request carries ``x-mlmodel-shadow``) matter only while
        shadow traffic is on (a mirrored copy keeps the content type, and a request that
        is itself a copy is never mirrored) and on a candidate that offers copies (a copy
        leaves no decision record).
        """
        start = time.perf_counter()
        id_given = request_id is not None
        request_id = request_id or self.new_request_id()
        route_name, protocol = "unmatched", "http"
        route: Route | None = None
        decision: Decision | None = None
        error: str | None = None
        try:
            route, params = self.resolve(method, path)
            route_name, protocol = route.template, route.protocol
            if route.name in _DECIDING and not (shadowed and self._copies_unrecorded):
                decision = self.begin_decision(request_id, protocol, id_given)
            response = await self._handlers[route.name](
                body, params, request_id, header_length, decision
            )
        except (InferenceError, ModelInputError) as exc:
            response = self.error_response(exc, request_id)
            error = exc.message if isinstance(exc, InferenceError) else str(exc)
        except Exception:
            log.exception(
                "request failed: %s %s",
                method,
                path,
                extra={"request_id": request_id, "model": self.settings.model_name},
            )
            error = f"internal error while serving the request; request id {request_id}"
            response = Response(500, encode_error(error, request_id))
        if decision is not None:
            self.end_decision(decision, response.status, error, start)
            request_id = decision.request_id  # the id the record is filed under
        # Every response says which artifact answered, so a logged decision can be traced.
        response.headers.extend(self._model_headers)
        response.headers.append((b"x-request-id", request_id.encode()))
        mirroring = self.mirroring
        if mirroring is not None and not shadowed and route is not None:
            self._mirror(mirroring, route, body, content_type, header_length, request_id, response)
        self.metrics.observe_request(
            protocol, route_name, response.status, time.perf_counter() - start
        )
        return response

    def _mirror(
        self,
        shadow: ShadowTraffic,
        route: Route,
        body: bytes,
        content_type: bytes | None,
        header_length: int | None,
        request_id: str,
        response: Response,
    ) -> None:
        """Hand an inference request the stable answered 2xx to shadow traffic. The copy
        starts on a later turn of the event loop, after this response is written."""
        model = self.model
        if route.name not in _DECIDING or not 200 <= response.status < 300 or model is None:
            return
        stable_header_length: int | None = None
        if response.content_type == BINARY:
            for name, value in response.headers:
                if name == HEADER_LENGTH:
                    stable_header_length = int(value)
        shadow.submit(
            MirrorRequest(
                route_template=route.template,
                protocol=route.protocol,
                body=body,
                content_type=content_type,
                header_length=header_length,
                request_id=request_id,
                stable_version=model.version,
                stable_body=response.body,
                stable_header_length=stable_header_length,
            )
        )

    def error_response(self, exc: Exception, request_id: str | None = None) -> Response:
        status = exc.status if isinstance(exc, InferenceError) else 400
        message = exc.message if isinstance(exc, InferenceError) else str(exc)
        headers: Headers = [(b"allow", b"GET, POST")] if status == 405 else []
        return Response(status, encode_error(message, request_id), headers=headers)

    def payload_too_large(self, request_id: str | None = None) -> Response:
        exc = PayloadTooLarge(
            f"request body is larger than the limit of {self.settings.max_body_bytes} bytes "
            "(MLMODEL_MAX_BODY_BYTES): send fewer rows per request"
        )
        response = self.error_response(exc, request_id)
        response.headers.extend(self._model_headers)
        return response

    # -- routes ----------------------------------------------------------------------

    def find_model(self, name: str, version: str | None = None) -> SklearnModel | None:
        """The model ``name`` (and ``version``, if given) names; None while it loads.

        Raises NotFound for another model or version. Shared by every protocol.
        """
        served = self.settings.model_name
        if name != served:
            raise NotFound(f"model {name!r} not found: this server serves {served!r}")
        model = self.model
        if model is not None and version and version != model.version:
            raise NotFound(
                f"version {version!r} of model {name!r} not found: this server serves "
                f"version {model.version!r}"
            )
        return model

    def require_model(self, name: str, version: str | None = None) -> SklearnModel:
        """:meth:`find_model`, and NotReady while the model is still being loaded."""
        model = self.find_model(name, version)
        if model is None:
            raise NotReady(f"model {name!r} is still being fetched and verified; retry shortly")
        return model

    def _require_model(self, params: dict[str, str]) -> SklearnModel:
        return self.require_model(params["model_name"], params.get("model_version"))

    async def _server_metadata(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        return Response(
            200, encode_json({"name": "mlmodel-serve", "version": __version__, "extensions": []})
        )

    async def _live(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        return Response(200, b'{"live":true}')

    async def _ready(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        if self.ready:
            return Response(200, b'{"ready":true}')
        return Response(503, b'{"ready":false}')

    async def _model_metadata(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        model = self._require_model(params)
        return Response(200, encode_json(model.metadata()))

    async def _model_ready(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        model = self._require_model(params)
        return Response(
            200 if self.ready else 503,
            encode_json({"name": model.name, "ready": self.ready}),
        )

    async def infer(
        self,
        request: InferenceRequest,
        params: dict[str, str],
        decision: Decision | None = None,
        in_thread: bool = False,
    ) -> tuple[SklearnModel, Outputs]:
        """Predict a decoded request (any protocol) on the model ``params`` names.

        ``params``: ``model_name`` and optionally ``model_version``. Raises
        :class:`InferenceError` or :class:`ModelInputError` for what the client got wrong.
        ``decision``: the request's record, given the model input and the outputs.
        ``in_thread``: a large request, turned into the model's input off the event loop.
        """
        model = self._require_model(params)
        outputs = model.check_outputs(request.outputs)
        if in_thread:
            x = await self._off_loop(model.prepare, request)
        else:
            x = model.prepare(request)
        assert self.predictor is not None
        if decision is None:
            return model, await self.predictor.predict(x, outputs)
        decision.inputs = x
        result = await self.predictor.predict(x, outputs)
        decision.outputs = result
        return model, result

    async def _infer_v2(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        self._require_model(params)
        large = len(body) >= DECODE_IN_THREAD_BYTES
        if large:
            request = await self._off_loop(decode_v2_request, body, header_length)
        else:
            request = decode_v2_request(body, header_length)
        client_id = request.id or ""
        if decision is not None and not decision.id_given and _header_safe(client_id):
            decision.request_id = client_id  # the client's own id, returned as x-request-id
        model, result = await self.infer(request, params, decision, in_thread=large)
        if not (request.binary_default or request.binary_outputs):
            return Response(200, encode_v2_response(model.name, model.version, request.id, result))
        data, json_length = encode_v2_binary_response(
            model.name, model.version, request.id, result, request.wants_binary
        )
        return Response(200, data, BINARY, [(HEADER_LENGTH, b"%d" % json_length)])

    async def _v1_model(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        model = self._require_model(params)
        return Response(
            200,
            encode_json({"name": model.name, "ready": self.ready}),
        )

    async def _v1_predict(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        large = len(body) >= DECODE_IN_THREAD_BYTES
        if large:
            request = await self._off_loop(decode_v1_request, body)
        else:
            request = decode_v1_request(body)
        _, result = await self.infer(request, params, decision, in_thread=large)
        return Response(200, encode_v1_response(result))

    async def _off_loop(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in the decode thread (its errors are raised here)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._decoder, _without_gc, fn, *args
        )

    async def _metrics(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        return Response(200, self.metrics.render(), content_type=METRICS_CONTENT_TYPE.encode())

    async def _shadow(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        self.find_model(params["model_name"])
        return Response(200, encode_json(self.shadow.status()))

    async def _shadow_offer(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        sample = self.settings.shadow_sample
        if sample is None:
            raise NotFound("this server offers no shadow copies (MLMODEL_SHADOW_SAMPLE is not set)")
        model = self.model
        if model is None:
            raise NotReady("the model is still being fetched and verified; retry shortly")
        return Response(200, encode_json(build_offer(model.name, model.version, sample)))

    async def _openapi(
        self,
        body: bytes,
        params: dict[str, str],
        request_id: str,
        header_length: int | None,
        decision: Decision | None,
    ) -> Response:
        return Response(200, self._openapi_body)

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point (HTTP and lifespan), for in-process tests and ASGI servers."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        request_id: str | None = None
        declared = 0
        header_length: int | None = None
        content_type: bytes | None = None
        shadowed = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value.decode("latin-1")
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else 0
            elif name == HEADER_LENGTH:
                header_length = parse_header_length(value)
            elif name == b"content-type":
                content_type = value
            elif name == SHADOW_HEADER:
                shadowed = True
        response: Response | None = None
        if declared > self.settings.max_body_bytes:
            response = self.payload_too_large(request_id)
        else:
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.settings.max_body_bytes:
                    response = self.payload_too_large(request_id)
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            if response is None:
                response = await self.handle(
                    scope["method"],
                    scope["path"],
                    b"".join(chunks),
                    request_id,
                    header_length,
                    content_type,
                    shadowed,
                )
        headers = [(b"content-type", response.content_type), *response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})


def _header_safe(value: str) -> bool:
    """A client's id that may be sent back as a header value as it is."""
    return 0 < len(value) <= 256 and value.isascii() and value.isprintable()


def parse_header_length(value: bytes) -> int:
    """``Inference-Header-Content-Length``; -1 (rejected when decoding) if not a number."""
    value = value.strip()
    return int(value) if value.isdigit() and len(value) <= 18 else -1


def create_app(
    settings: Settings,
    model: SklearnModel | None,
    registry: CollectorRegistry,
    executor: Executor | None = None,
) -> ServingApp:
    """Build the app. ``model=None`` starts it not ready until :meth:`ServingApp.set_model`."""
    return ServingApp(settings, model, registry, executor)


def _without_gc(fn: Callable[..., _T], *args: Any) -> _T:
    """``fn(*args)`` with Python's cyclic garbage collector paused.

    Decoding a large JSON body makes millions of objects, and the collector runs again
    and again inside orjson's one long call while they are made. All that time the
    decoding thread holds the GIL and the event loop waits: measured on 16 MiB of rows,
    the loop's longest wait went from about 1.0 s to 0.4 s, and decoding from 1.5 s to
    0.75 s. Nothing decoded forms a cycle; the collector resumes afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if was_enabled:
            gc.enable()
