"""The OpenAPI 3.1 description of the server's REST surface, served at /openapi.json.

Hand-written so that it says what the protocol promises; a test checks that it lists
exactly the app's routes and that live responses validate against these schemas.
"""

from __future__ import annotations

from typing import Any

from mlmodel_serving import __version__

_DATATYPES = [
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


_ERRORS = {
    "400": _json("Error", "The request is malformed or does not fit the model"),
    "404": _json("Error", "Unknown model or version"),
    "413": _json("Error", "The body is larger than MLMODEL_MAX_BODY_BYTES"),
    "500": _json("Error", "The model failed; the body carries the request id"),
    "503": _json("Error", "The model is not loaded yet"),
}
_MODEL_NAME = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string"}}
_MODEL_VERSION = {
    "name": "model_version",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}
_TRACE_HEADERS = {
    "x-model-version": {
        "description": "Version of the model that answered",
        "schema": {"type": "string"},
    },
    "x-model-sha256": {
        "description": "sha256 of the model artifact that answered",
        "schema": {"type": "string"},
    },
}


def _get(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[Any] | None = None,
    errors: tuple[str, ...] = (),
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **{c: _ERRORS[c] for c in errors}},
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def _infer(params: list[Any]) -> dict[str, Any]:
    ok = _json("InferenceResponse", "Outputs, one tensor per requested output")
    ok["headers"] = _TRACE_HEADERS
    return {
        "post": {
            "summary": "Inference (Open Inference Protocol V2)",
            "parameters": params,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("InferenceRequest")}},
            },
            "responses": {"200": ok, **_ERRORS},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description (a fresh dict each call)."""
    ready_or_not = {**_json("Ready", "Ready"), "description": "200 when ready, 503 when not"}
    model_params = [_MODEL_NAME]
    version_params = [_MODEL_NAME, _MODEL_VERSION]
    paths: dict[str, Any] = {
        "/v2": _get("Server metadata", _json("ServerMetadata", "Server metadata")),
        "/v2/health/live": _get("Liveness", _json("Live", "The process answers")),
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness: the verified model is loaded",
                "responses": {
                    "200": ready_or_not,
                    "503": _json("Ready", "Not ready yet, or shutting down"),
                },
            }
        },
        "/v2/models/{model_name}": _get(
            "Model metadata",
            _json("ModelMetadata", "Model metadata"),
            params=model_params,
            errors=("404", "503"),
        ),
        "/v2/models/{model_name}/ready": _get(
            "Model readiness",
            _json("ModelReady", "Model readiness"),
            params=model_params,
            errors=("404", "503"),
        ),
        "/v2/models/{model_name}/infer": _infer(model_params),
        "/v2/models/{model_name}/versions/{model_version}": _get(
            "Model metadata",
            _json("ModelMetadata", "Model metadata"),
            params=version_params,
            errors=("404", "503"),
        ),
        "/v2/models/{model_name}/versions/{model_version}/ready": _get(
            "Model readiness",
            _json("ModelReady", "Model readiness"),
            params=version_params,
            errors=("404", "503"),
        ),
        "/v2/models/{model_name}/versions/{model_version}/infer": _infer(version_params),
        "/v1/models/{model_name}": _get(
            "Model status (KServe V1)",
            _json("ModelReady", "Model status"),
            params=model_params,
            errors=("404", "503"),
        ),
        "/v1/models/{model_name}:predict": {
            "post": {
                "summary": "Prediction (KServe V1): the predict output, one entry per instance",
                "parameters": model_params,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("V1Request")}},
                },
                "responses": {
                    "200": {**_json("V1Response", "Predictions"), "headers": _TRACE_HEADERS},
                    **_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }
    tensor_data = {"type": "array", "description": "Row-major values (flat or nested)"}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
        },
        "Live": {
            "type": "object",
            "required": ["live"],
            "properties": {"live": {"type": "boolean"}},
        },
        "Ready": {
            "type": "object",
            "required": ["ready"],
            "properties": {"ready": {"type": "boolean"}},
        },
        "ModelReady": {
            "type": "object",
            "required": ["name", "ready"],
            "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
        },
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "TensorMetadata": {
            "type": "object",
            "required": ["name", "datatype", "shape"],
            "properties": {
                "name": {"type": "string"},
                "datatype": {"enum": _DATATYPES},
                "shape": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs", "parameters"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"const": "sklearn"},
                "inputs": {"type": "array", "items": _ref("TensorMetadata")},
                "outputs": {"type": "array", "items": _ref("TensorMetadata")},
                "parameters": {
                    "type": "object",
                    "required": ["version", "sha256", "python", "sklearn", "joblib", "numpy"],
                    "properties": {
                        **{
                            k: {"type": "string"}
                            for k in ("version", "sha256", "python", "sklearn", "joblib", "numpy")
                        },
                        "estimator": {"type": "string"},
                        "predictPath": {"enum": ["sklearn", "leaf-tables"]},
                    },
                },
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                            "datatype": {"enum": _DATATYPES},
                            "data": tensor_data,
                        },
                    },
                },
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"enum": ["predict", "predict_proba"]}},
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "model_version", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "shape", "datatype", "data"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"enum": _DATATYPES},
                            "data": {"type": "array", "description": "Flat, row-major"},
                        },
                    },
                },
            },
        },
        "V1Request": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {"type": "array", "minItems": 1, "items": {"type": "array"}}
            },
        },
        "V1Response": {
            "type": "object",
            "required": ["predictions"],
            "properties": {"predictions": {"type": "array"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mlmodel-serve",
            "version": __version__,
            "description": "Open Inference Protocol (KServe V2) and KServe V1 REST for one scikit-learn model. "
            "Every inference response carries x-model-version and x-model-sha256 headers.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
