"""The OpenAPI 3.1 description of the server's REST surface, served at /openapi.json.

Hand-written so that it says what the protocol promises; a test checks that it lists
exactly the app's routes and that live responses validate against these schemas.
"""

from __future__ import annotations

from typing import Any

from mlmodel_serving import __version__
from mlmodel_serving.protocol import MAX_DIM, MAX_DIMS

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
                "content": {
                    "application/json": {"schema": _ref("InferenceRequest")},
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"},
                        "description": "Binary data extension: the JSON InferenceRequest "
                        "(Inference-Header-Content-Length bytes), then the raw tensors",
                    },
                },
            },
            "responses": {"200": ok, **_ERRORS},
        }
    }


def openapi_document(metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI description (a fresh dict each call).

    ``metadata``: the loaded model's V2 metadata; the request schemas then name its real
    inputs (column names and types) and outputs.
    """
    inputs = metadata["inputs"] if metadata is not None else []
    output_names = (
        [o["name"] for o in metadata["outputs"]]
        if metadata is not None
        else ["predict", "predict_proba", "decision_function"]
    )
    columns = [i for i in inputs if len(i["shape"]) == 1]  # named columns: shape [-1]
    name_schema: dict[str, Any] = {"type": "string"}
    row_object: dict[str, Any] = {"type": "object"}
    columns_text = "The model's inputs are listed by GET /v2/models/{model_name}."
    if columns:
        names = [c["name"] for c in columns]
        # A column's name, or any name for one 2-D tensor of rows.
        name_schema = {"type": "string", "examples": names}
        columns_text = "This model takes the columns " + ", ".join(
            f"{c['name']} ({c['datatype']})" for c in columns
        )
        row_object = {
            "type": "object",
            "required": names,
            "additionalProperties": False,
            "properties": {
                c["name"]: {"type": ["string", "null"]}
                if c["datatype"] == "BYTES"
                else {"type": ["number", "null"]}
                for c in columns
            },
        }

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
        "/v2/shadow/offer": _get(
            "Shadow discovery: what this server, as a candidate, offers to take copies of "
            "(MLMODEL_SHADOW_SAMPLE); 404 when it offers none",
            _json("ShadowOffer", "The offer"),
            errors=("404", "503"),
        ),
        "/v2/models/{model_name}/shadow": _get(
            "Shadow traffic: the configuration in force, counts by result (agree, "
            "disagree, error), copies dropped, and the last 100 disagreements",
            _json("ShadowStatus", "Shadow traffic status"),
            params=model_params,
            errors=("404",),
        ),
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
            "description": "One 2-D tensor of rows, or one tensor per column for a model "
            "fitted on named columns. With the binary data extension (header "
            "Inference-Header-Content-Length), this JSON is the body's first part and "
            "tensors with parameters.binary_data_size follow it as raw bytes.",
            "properties": {
                "id": {"type": "string"},
                "parameters": {
                    "type": "object",
                    "properties": {
                        "content_type": {
                            "type": "string",
                            "description": '"pd": the inputs are the columns of one table',
                        },
                        "binary_data_output": {"type": "boolean"},
                    },
                },
                "inputs": {"type": "array", "minItems": 1, "items": _ref("RequestTensor")},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"enum": output_names},
                            "parameters": {
                                "type": "object",
                                "properties": {"binary_data": {"type": "boolean"}},
                            },
                        },
                    },
                },
            },
        },
        "RequestTensor": {
            "type": "object",
            "required": ["name", "shape", "datatype"],
            "description": columns_text,
            "properties": {
                "name": name_schema,
                "shape": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_DIMS,
                    "items": {"type": "integer", "minimum": 0, "maximum": MAX_DIM},
                },
                "datatype": {"enum": _DATATYPES},
                "data": tensor_data,
                "parameters": {
                    "type": "object",
                    "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                },
            },
            "oneOf": [
                {"required": ["data"]},
                {"required": ["parameters"], "not": {"required": ["data"]}},
            ],
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
                        "required": ["name", "shape", "datatype"],
                        "properties": {
                            "name": {"type": "string"},
                            "shape": {"type": "array", "items": {"type": "integer"}},
                            "datatype": {"enum": _DATATYPES},
                            "data": {"type": "array", "description": "Flat, row-major"},
                            "parameters": {
                                "type": "object",
                                "description": "binary_data_size: the output's bytes follow "
                                "the JSON header (binary data extension)",
                                "properties": {"binary_data_size": {"type": "integer"}},
                            },
                        },
                    },
                },
            },
        },
        "V1Request": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "description": "Rows: arrays of values in the model's column order, or "
                    "objects with one key per column. " + columns_text,
                    "items": {"anyOf": [{"type": "array"}, row_object]},
                }
            },
        },
        "ShadowOffer": {
            "type": "object",
            "required": ["model", "version", "sample"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"},
                "version": {"type": "string", "description": "The loaded model's version"},
                "sample": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "ShadowStatus": {
            "type": "object",
            "required": ["model", "active", "config", "counts", "dropped", "disagreements"],
            "properties": {
                "model": {"type": "string"},
                "version": {"type": ["string", "null"]},
                "active": {"type": "boolean"},
                "config": {
                    "type": ["object", "null"],
                    "description": "The configuration in force (the target without "
                    "credentials); null: no mirroring",
                },
                "config_error": {"type": ["string", "null"]},
                "source": {
                    "type": ["string", "null"],
                    "enum": ["file", "discovery", None],
                    "description": "Where the configuration in force comes from",
                },
                "discovery": {
                    "type": ["object", "null"],
                    "description": "Shadow discovery (MLMODEL_SHADOW_DISCOVERY): the URL asked, "
                    "how often, and what the last ask found; null: not configured",
                    "properties": {
                        "url": {"type": "string"},
                        "interval_seconds": {"type": "number"},
                        "asked": {"type": "integer"},
                        "state": {"enum": ["offer", "none", "invalid", "own_version"]},
                        "offer": {"type": ["object", "null"]},
                        "detail": {"type": ["string", "null"]},
                    },
                },
                "candidate": {
                    "type": ["object", "null"],
                    "description": "The candidate the counts are for",
                },
                "counts": {
                    "type": "object",
                    "properties": {k: {"type": "integer"} for k in ("agree", "disagree", "error")},
                },
                "agreement": {"type": ["number", "null"]},
                "dropped": {"type": "integer"},
                "errors": {"type": "object"},
                "disagreements": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["request_id", "stable_prediction", "candidate_prediction"],
                    },
                },
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
