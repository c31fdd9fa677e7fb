"""Helpers for the model server's unit tests: test models, settings, an in-process client."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mlmodel_serving.app import ServingApp
from mlmodel_serving.settings import Settings

FAKE_SHA = hashlib.sha256(b"model bytes").hexdigest()


class ExplodingClassifier:
    """A classifier that fails inside predict when a row's first value is 666."""

    n_features_in_ = 4
    classes_ = np.array([0, 1])

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        if (x[:, 0] == 666).any():
            raise RuntimeError("boom inside the model")
        return (x[:, 0] > 0).astype(np.int64)

    def predict_proba(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        p = self.predict(x).astype(np.float64)
        return np.stack([1 - p, p], axis=1)


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_name": "iris",
        "model_version": "3",
        "artifact_uri": "/models/iris.joblib",
        "artifact_sha256": FAKE_SHA,
        "max_body_bytes": 64 * 1024,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Client:
    """Calls an ASGI app in-process on one event loop (so batching state stays on it)."""

    def __init__(self, app: ServingApp) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()

    async def acall(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Reply:
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])],
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(scope, receive, send)
        return Reply(sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"])

    def call(self, method: str, path: str, body: bytes = b"", **kw: Any) -> Reply:
        return self.loop.run_until_complete(self.acall(method, path, body, **kw))

    def get(self, path: str) -> Reply:
        return self.call("GET", path)

    def post(self, path: str, payload: Any = None, body: bytes | None = None) -> Reply:
        return self.call("POST", path, body if body is not None else orjson.dumps(payload))

    def close(self) -> None:
        self.loop.run_until_complete(self.app.close())
        self.loop.close()


def v2_body(
    rows: list[list[float]], datatype: str = "FP64", outputs: list[str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [len(rows), len(rows[0]) if rows else 0],
                "datatype": datatype,
                "data": rows,
            }
        ]
    }
    if outputs is not None:
        body["outputs"] = [{"name": o} for o in outputs]
    return body
