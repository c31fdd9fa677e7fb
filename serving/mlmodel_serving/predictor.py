"""Running predict calls off the event loop, with their metrics.

:class:`DirectPredictor` predicts each request on its own in a worker thread, so the
event loop (health checks, metrics, parsing) never waits for the model. The batching
predictor in :mod:`mlmodel_serving.batching` has the same interface.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from mlmodel_serving.metrics import ServingMetrics
from mlmodel_serving.model import PREDICT, PREDICT_PROBA, SklearnModel

Outputs = dict[str, np.ndarray[Any, Any]]


class Predictor(Protocol):
    async def predict(self, x: np.ndarray[Any, Any], outputs: tuple[str, ...]) -> Outputs:
        """Predict ``outputs`` for the rows of ``x`` (already checked against the model)."""
        ...

    async def close(self) -> None:
        """Finish queued work; called once on shutdown."""
        ...


def predict_and_observe(
    model: SklearnModel,
    metrics: ServingMetrics,
    x: np.ndarray[Any, Any],
    outputs: tuple[str, ...],
    requests: int,
) -> Outputs:
    """Call the model once and record the batch, input and prediction metrics.

    Runs in a worker thread; ``prometheus_client`` metrics are thread-safe.
    """
    start = time.perf_counter()
    result = model.predict(x, outputs)
    metrics.observe_batch(x.shape[0], requests, time.perf_counter() - start)
    labels: np.ndarray[Any, Any] | None = None
    if PREDICT in result:
        labels = result[PREDICT]
    elif PREDICT_PROBA in result and model.classes is not None:
        labels = model.classes[result[PREDICT_PROBA].argmax(axis=1)]
    if labels is not None:
        metrics.observe_predictions(labels, model.is_classifier)
    metrics.observe_inputs(x, labels if model.is_classifier else None)
    return result


class DirectPredictor:
    """One predict call per request, in ``executor``."""

    def __init__(self, model: SklearnModel, metrics: ServingMetrics, executor: Executor) -> None:
        self._model = model
        self._metrics = metrics
        self._executor = executor

    async def predict(self, x: np.ndarray[Any, Any], outputs: tuple[str, ...]) -> Outputs:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, predict_and_observe, self._model, self._metrics, x, outputs, 1
        )

    async def close(self) -> None:
        return None
