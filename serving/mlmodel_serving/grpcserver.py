"""The Open Inference Protocol over gRPC: ``inference.GRPCInferenceService`` on grpc.aio.

It runs on its own port next to the HTTP server (:mod:`mlmodel_serving.httpserver`) and
answers from the same :class:`~mlmodel_serving.app.ServingApp`: the same model, predictor
(and so the same micro-batches), readiness and metrics. Six unary RPCs are served:
ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer; any
other method of the protocol's service is answered UNIMPLEMENTED by gRPC itself.

Inputs come as ``raw_input_contents`` (what tritonclient sends) or as typed ``contents``;
outputs always go back as ``raw_output_contents`` (what tritonclient reads). The messages
are generated from ``oip/grpc_predict_v2.proto`` (``hack/gen-grpc.sh``); the handlers are
registered here by hand, without generated service code.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from mlmodel_serving import __version__
from mlmodel_serving.app import ServingApp
from mlmodel_serving.decisions import Decision
from mlmodel_serving.model import ModelInputError, SklearnModel
from mlmodel_serving.oip import grpc_predict_v2_pb2 as pb
from mlmodel_serving.predictor import Outputs
from mlmodel_serving.protocol import (
    DATATYPES,
    BadRequest,
    InferenceError,
    InferenceRequest,
    Tensor,
    check_unique_names,
    datatype_of,
    decode_raw_tensor,
    decode_shape,
    encode_raw_tensor,
)

log = logging.getLogger("mlmodel_serving")

SERVICE = "inference.GRPCInferenceService"
SERVER_NAME = "mlmodel-serve"
PROTOCOL = "grpc"  # the "protocol" label of the request metrics
INFER_RPC = "ModelInfer"  # the one RPC that makes a decision (and a record of it)

# The HTTP status an error carries -> the gRPC status code it is answered with.
GRPC_CODES: dict[int, Any] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}

# Typed contents: the field of InferTensorContents that carries each datatype, and the
# numpy type of that field's values. FP16 has none: it travels as raw bytes only.
CONTENTS_FIELDS: dict[str, str] = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
_FIELD_DTYPES: dict[str, np.dtype[Any]] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# An RPC's body: (request, request id, its decision record if it makes one) -> (response,
# the HTTP-equivalent status for metrics).
Body = Callable[[Req, str, Decision | None], Awaitable[tuple[Resp, int]]]


# -- request and response conversion (pure) ----------------------------------------------


def decode_infer_request(msg: pb.ModelInferRequest, request_id: str) -> InferenceRequest:
    """A ``ModelInferRequest`` as the :class:`InferenceRequest` every protocol decodes to.

    Raises :class:`BadRequest` naming the input and what is wrong with it.
    """
    if not msg.inputs:
        raise BadRequest(
            "the request has no inputs: send one 2-D tensor [N, F], or one tensor per column"
        )
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries but the request has "
            f"{len(msg.inputs)} inputs: send one entry per input, in input order "
            "(or none, and each input's data in its typed contents)"
        )
    tensors: list[Tensor] = []
    for i, tensor in enumerate(msg.inputs):
        name = tensor.name or f"input-{i}"
        where = f"input {name!r}"
        datatype = tensor.datatype
        if datatype not in DATATYPES:
            raise BadRequest(
                f"{where}: datatype {datatype!r} is not supported: expected one of "
                f"{', '.join(DATATYPES)}"
            )
        shape = decode_shape(list(tensor.shape), f"{where}: shape")
        if raw:
            if tensor.contents.ByteSize():
                raise BadRequest(
                    f"{where} has typed contents but the request also sends "
                    "raw_input_contents: send all inputs one way or the other"
                )
            data = decode_raw_tensor(raw[i], datatype, shape, where)
        else:
            data = decode_typed_contents(tensor.contents, datatype, shape, where)
        tensors.append(Tensor(name, datatype, data))
    check_unique_names(tensors)
    return InferenceRequest(
        inputs=tuple(tensors),
        outputs=tuple(dict.fromkeys(out.name for out in msg.outputs)),
        id=request_id,
        content_type=_content_type(msg),
    )


def _content_type(msg: pb.ModelInferRequest) -> str | None:
    if "content_type" not in msg.parameters:
        return None
    param = msg.parameters["content_type"]
    kind = param.WhichOneof("parameter_choice")
    if kind != "string_param":
        raise BadRequest(
            'parameters["content_type"] must be a string_param (e.g. "pd"), '
            f"got {kind or 'no value'}"
        )
    return str(param.string_param)


def decode_typed_contents(
    contents: pb.InferTensorContents, datatype: str, shape: tuple[int, ...], where: str
) -> np.ndarray[Any, Any]:
    """A tensor from the typed field of ``contents`` that belongs to ``datatype``."""
    field = CONTENTS_FIELDS.get(datatype)
    if field is None:
        raise BadRequest(
            f"{where}: {datatype} has no typed contents field: send it in raw_input_contents"
        )
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise BadRequest(
            f"{where} is {datatype} but its data is in contents.{others[0]}: "
            f"{datatype} data goes in contents.{field}"
        )
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(
            f"{where} has {len(values)} elements in contents.{field} but shape {list(shape)} "
            f"needs {count}"
        )
    if datatype == "BYTES":
        try:
            texts = [value.decode("utf-8") for value in values]
        except UnicodeDecodeError:
            raise BadRequest(f"{where}: a BYTES element is not UTF-8 text") from None
        arr = np.empty(count, dtype=object)
        arr[:] = texts
        return arr.reshape(shape)
    wide = np.fromiter(values, dtype=_FIELD_DTYPES[field], count=count)
    dtype = DATATYPES[datatype]
    narrow = wide.astype(dtype)
    if dtype != wide.dtype and not np.array_equal(narrow, wide):
        raise BadRequest(f"{where} holds values outside the range of {datatype}")
    # The raw decoder's checks (finite floats, ...) apply to typed data alike.
    return decode_raw_tensor(encode_raw_tensor(narrow), datatype, shape, where)


def encode_infer_response(
    model: SklearnModel, request_id: str, outputs: Outputs
) -> pb.ModelInferResponse:
    """The outputs as ``raw_output_contents``, one entry per output, in output order."""
    response = pb.ModelInferResponse(model_name=model.name, model_version=model.version)
    response.id = request_id
    for name, arr in outputs.items():
        response.outputs.add(name=name, datatype=datatype_of(arr), shape=arr.shape)
        response.raw_output_contents.append(encode_raw_tensor(arr))
    return response


def _tensor_metadata(entries: Sequence[dict[str, Any]]) -> list[Any]:
    return [
        pb.ModelMetadataResponse.TensorMetadata(
            name=e["name"], datatype=e["datatype"], shape=[int(d) for d in e["shape"]]
        )
        for e in entries
    ]


def _metadata_value(value: str) -> bool:
    """Whether ``value`` may go in an ASCII gRPC metadata entry as it is."""
    return value.isascii() and value.isprintable()


# -- the server ------------------------------------------------------------------------


class GrpcServer:
    """``inference.GRPCInferenceService`` for one :class:`ServingApp`, on grpc.aio."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self._server: Any = None
        # ModelInfer calls in progress: they count as open inference connections for the
        # predictor's batching and inline-predict decisions, as HTTP connections do.
        self.inflight = 0

    def handler(self) -> Any:
        """The generic handler of the service's six RPCs."""

        def unary(rpc: str, body: Body[Any, Any], request: Any, response: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                self._rpc(rpc, body),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": unary(
                    "ServerLive", self._server_live, pb.ServerLiveRequest, pb.ServerLiveResponse
                ),
                "ServerReady": unary(
                    "ServerReady",
                    self._server_ready,
                    pb.ServerReadyRequest,
                    pb.ServerReadyResponse,
                ),
                "ModelReady": unary(
                    "ModelReady", self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse
                ),
                "ServerMetadata": unary(
                    "ServerMetadata",
                    self._server_metadata,
                    pb.ServerMetadataRequest,
                    pb.ServerMetadataResponse,
                ),
                "ModelMetadata": unary(
                    "ModelMetadata",
                    self._model_metadata,
                    pb.ModelMetadataRequest,
                    pb.ModelMetadataResponse,
                ),
                INFER_RPC: unary(
                    INFER_RPC, self._model_infer, pb.ModelInferRequest, pb.ModelInferResponse
                ),
            },
        )

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port); return the bound port.

        Raises :class:`OSError` when the address cannot be bound.
        """
        server = grpc.aio.server(
            options=[
                # Requests are bounded like HTTP bodies (larger: RESOURCE_EXHAUSTED).
                ("grpc.max_receive_message_length", self.app.settings.max_body_bytes),
                # gRPC sets SO_REUSEPORT by default: a second server on a busy port would
                # then share it silently instead of failing.
                ("grpc.so_reuseport", 0),
            ]
        )
        server.add_generic_rpc_handlers((self.handler(),))
        bracketed = f"[{host}]" if ":" in host and not host.startswith("[") else host
        address = f"{bracketed}:{port}"
        try:
            bound = int(server.add_insecure_port(address))
        except RuntimeError as exc:
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from None
        await server.start()
        self._server = server
        http_count = self.app.connection_count

        def connection_count() -> int:
            return (http_count() if http_count is not None else 0) + self.inflight

        self.app.connection_count = connection_count
        return bound

    async def shutdown(self, timeout: float) -> None:
        """Refuse new calls, let calls in flight finish for up to ``timeout`` s, cancel the rest."""
        if self._server is not None:
            await self._server.stop(timeout)

    # -- one call ------------------------------------------------------------------------

    def _rpc(self, rpc: str, body: Body[Req, Resp]) -> Callable[[Req, Any], Awaitable[Resp]]:
        """Wrap an RPC's body: request id, response metadata, errors and metrics."""

        async def call(request: Req, context: Any) -> Resp:
            start = time.perf_counter()
            request_id = self._request_id(request, context)
            response: Resp | None = None
            failure: tuple[Any, str] | None = None
            decision: Decision | None = None
            try:
                if rpc == INFER_RPC:
                    decision = self.app.begin_decision(request_id, PROTOCOL)
                response, status = await body(request, request_id, decision)
            except (InferenceError, ModelInputError) as exc:
                status = exc.status if isinstance(exc, InferenceError) else 400
                message = exc.message if isinstance(exc, InferenceError) else str(exc)
                failure = (GRPC_CODES.get(status, grpc.StatusCode.INTERNAL), message)
            except Exception:
                log.exception(
                    "request failed: gRPC %s",
                    rpc,
                    extra={"request_id": request_id, "model": self.app.settings.model_name},
                )
                status = 500
                failure = (grpc.StatusCode.INTERNAL, f"internal error; request id {request_id}")
            if decision is not None:
                self.app.end_decision(
                    decision, status, None if failure is None else failure[1], start
                )
            self.app.metrics.observe_request(PROTOCOL, rpc, status, time.perf_counter() - start)
            await context.send_initial_metadata(self._response_metadata(request_id))
            if failure is not None:
                await context.abort(*failure)  # raises: the call ends with that status
            assert response is not None
            return response

        return call

    def _request_id(self, request: Any, context: Any) -> str:
        """The request's ``id`` field (ModelInfer), else its x-request-id metadata, else new."""
        given = getattr(request, "id", "")
        if given:
            return str(given)
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id" and isinstance(value, str) and value:
                return value
        return self.app.new_request_id()

    def _response_metadata(self, request_id: str) -> list[tuple[str, str]]:
        """As the HTTP server's headers: which artifact answered, and the request id."""
        metadata = [("x-request-id", request_id)]
        model = self.app.model
        if model is not None:
            metadata += [("x-model-version", model.version), ("x-model-sha256", model.sha256)]
        # A value that cannot be sent as ASCII metadata (an id of any Unicode text) is left
        # out: the response's own id field still carries it.
        return [(key, value) for key, value in metadata if _metadata_value(value)]

    # -- the RPCs ------------------------------------------------------------------------

    async def _server_live(
        self, request: pb.ServerLiveRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ServerLiveResponse, int]:
        return pb.ServerLiveResponse(live=True), 200

    async def _server_ready(
        self, request: pb.ServerReadyRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ServerReadyResponse, int]:
        ready = self.app.ready
        return pb.ServerReadyResponse(ready=ready), 200 if ready else 503

    async def _model_ready(
        self, request: pb.ModelReadyRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ModelReadyResponse, int]:
        model = self.app.find_model(request.name, request.version)
        ready = model is not None and self.app.ready
        return pb.ModelReadyResponse(ready=ready), 200 if ready else 503

    async def _server_metadata(
        self, request: pb.ServerMetadataRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ServerMetadataResponse, int]:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=[]), 200

    async def _model_metadata(
        self, request: pb.ModelMetadataRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ModelMetadataResponse, int]:
        meta = self.app.require_model(request.name, request.version).metadata()
        response = pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=_tensor_metadata(meta["inputs"]),
            outputs=_tensor_metadata(meta["outputs"]),
        )
        return response, 200

    async def _model_infer(
        self, request: pb.ModelInferRequest, request_id: str, decision: Decision | None
    ) -> tuple[pb.ModelInferResponse, int]:
        params = {"model_name": request.model_name}
        if request.model_version:
            params["model_version"] = request.model_version
        # An unknown or still-loading model is reported before the inputs are looked at.
        self.app.require_model(request.model_name, request.model_version)
        decoded = decode_infer_request(request, request_id)
        self.inflight += 1
        try:
            model, outputs = await self.app.infer(decoded, params, decision)
        finally:
            self.inflight -= 1
        return encode_infer_response(model, request_id, outputs), 200
