"""KServe anchor: a kserve.Model subclass around a joblib scikit-learn model.

Runs in the kserve venv (not the project's). Shaped like KServe's own sklearn server:
load with joblib, predict synchronously, V2 in and out through kserve's helpers.
KServe's REST server always binds 0.0.0.0; the benchmark only ever targets 127.0.0.1,
so uvicorn's Config is pinned to loopback here before the server is built.

Usage: python kserve_server.py --model_name NAME --artifact PATH --http_port P
       --grpc_port G --enable_grpc false --workers 1 [--enable_latency_logging false]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from typing import Any

import joblib
import uvicorn

_Config = uvicorn.Config


class _LoopbackConfig(_Config):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _LoopbackConfig  # type: ignore[misc]

import kserve  # noqa: E402
from kserve.utils.utils import get_predict_input, get_predict_response  # noqa: E402


class SKLearnJoblibModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, artifact: str) -> None:
        super().__init__(name)
        self.artifact = artifact
        self._model: Any = None

    def load(self) -> bool:
        self._model = joblib.load(self.artifact)
        self.ready = True
        return True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        instances = get_predict_input(payload)
        result = self._model.predict(instances)
        return get_predict_response(payload, result, self.name)


def main() -> None:
    # kserve's own parser (parsed at its import) already reads --model_name, the ports
    # and the other server flags; only the artifact path is ours.
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--artifact", required=True)
    args, _ = parser.parse_known_args()
    model = SKLearnJoblibModel(args.model_name, args.artifact)
    model.load()
    server = kserve.ModelServer()
    # Per-request log lines are off for every server in the benchmark: uvicorn's access
    # log and KServe's per-request timing trace. KServe 0.21 with the newest FastAPI the
    # resolver picks also prints a deprecation warning on every request; silence it so
    # KServe is measured, not its log volume.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    server.start([model])


if __name__ == "__main__":
    main()
