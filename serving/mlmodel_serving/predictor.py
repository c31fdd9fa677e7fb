"""Running predict calls, off the event loop unless they are cheaper than the hand-off.

:class:`DirectPredictor` predicts each request on its own. A call goes to a worker
thread, so the event loop (health checks, metrics, parsing) never waits for a slow
model; but handing a call to a thread and back costs a few hundred microseconds of
thread switching and GIL hand-over, which is as much as a small model's whole
``predict``. So while the recent calls of this model took less than
``inline_predict_ms`` (:class:`PredictCost`), a call runs on the event loop itself; and
while a single connection sends inference requests (they come one at a time, so the
loop has nothing else to do but answer probes), so do calls under
``inline_alone_predict_ms``.
The batching predictor in :mod:`mlmodel_serving.batching` has the same interface and
makes the same choice per batch.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from mlmodel_serving.metrics import ServingMetrics
from mlmodel_serving.model import PREDICT, PREDICT_PROBA, ModelInput, SklearnModel

Outputs = dict[str, np.ndarray[Any, Any]]

# A call with more rows than this always goes to a thread, whatever the recent cost:
# the cost of a call grows with its rows, and the recent calls may all have been small.
INLINE_MAX_ROWS = 1024


class Predictor(Protocol):
    async def predict(self, x: ModelInput, outputs: tuple[str, ...]) -> Outputs:
        """Predict ``outputs`` for the rows of ``x`` (already checked against the model)."""
        ...

    async def close(self) -> None:
        """Finish queued work; called once on shutdown."""
        ...


class PredictCost:
    """The recent time of one predict call (exponentially weighted, and the least of the
    last few), and where calls run.

    ``inline_below`` seconds: calls run on the event loop while the least of the last
    ``WINDOW`` calls' times is under it; 0 sends every call to a thread. ``alone_below``: the same bound for a call made
    while no other inference connection is open. Until a first call has been timed,
    calls go to a thread. Updated from any thread; a lost update under a race only
    delays the estimate.
    """

    ALPHA = 0.2
    # Where a call runs is decided by the least of the last WINDOW calls' times, not by
    # the mean: a call's wall time also counts the time it waited for the GIL (held by
    # the decision log's writer, or, in a predict thread, by the busy event loop), and
    # those waits come and go while the model's own cost does not. With the mean, a few
    # waits moved calls to a thread, where the waits on the event loop kept the mean up.
    WINDOW = 8

    def __init__(self, inline_below: float, alone_below: float = 0.0) -> None:
        self.inline_below = inline_below
        self.alone_below = alone_below
        self.mean: float | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=self.WINDOW)
        self.floor: float | None = None

    def assume(self, seconds: float) -> None:
        """Forget the calls timed so far: as if every recent call took ``seconds``."""
        self.mean = self.floor = seconds
        self._recent.clear()
        self._recent.append(seconds)

    def record(self, seconds: float) -> None:
        mean = self.mean
        self.mean = seconds if mean is None else mean + self.ALPHA * (seconds - mean)
        recent = self._recent
        recent.append(seconds)
        self.floor = min(recent)

    def inline(self, rows: int, alone: bool = False) -> bool:
        """True when a call of ``rows`` rows should run on the event loop.

        ``alone``: no other inference connection is open, so nothing but a probe or a
        scrape can be kept waiting by the call.
        """
        floor = self.floor
        if floor is None or rows > INLINE_MAX_ROWS:
            return False
        return floor < self.inline_below or (alone and floor < self.alone_below)


def only_connection(open_connections: Callable[[], int | None] | None) -> bool:
    """True when the HTTP server reports at most one open inference connection."""
    if open_connections is None:
        return False
    count = open_connections()
    return count is not None and count <= 1


def predict_and_observe(
    model: SklearnModel,
    metrics: ServingMetrics,
    x: ModelInput,
    outputs: tuple[str, ...],
    requests: int,
    cost: PredictCost | None = None,
) -> Outputs:
    """Call the model once and record the batch, input and prediction metrics.

    Runs in a worker thread or on the event loop; ``prometheus_client`` metrics are
    thread-safe.
    """
    start = time.perf_counter()
    result = model.predict(x, outputs)
    seconds = time.perf_counter() - start
    if cost is not None:
        cost.record(seconds)
    metrics.observe_batch(x.shape[0], requests, seconds)
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
    """One predict call per request: on the event loop when cheap, else in ``executor``."""

    def __init__(
        self,
        model: SklearnModel,
        metrics: ServingMetrics,
        executor: Executor,
        cost: PredictCost | None = None,
        open_connections: Callable[[], int | None] | None = None,
    ) -> None:
        self._model = model
        self._metrics = metrics
        self._executor = executor
        self._cost = cost or PredictCost(0.0)
        self._open_connections = open_connections
        self._in_threads = 0

    async def predict(self, x: ModelInput, outputs: tuple[str, ...]) -> Outputs:
        alone = self._in_threads == 0 and only_connection(self._open_connections)
        if self._cost.inline(x.shape[0], alone):
            return predict_and_observe(self._model, self._metrics, x, outputs, 1, self._cost)
        loop = asyncio.get_running_loop()
        self._in_threads += 1
        try:
            return await loop.run_in_executor(
                self._executor,
                predict_and_observe,
                self._model,
                self._metrics,
                x,
                outputs,
                1,
                self._cost,
            )
        finally:
            self._in_threads -= 1

    async def close(self) -> None:
        return None
