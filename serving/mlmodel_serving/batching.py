"""Adaptive micro-batching: rows of concurrent requests share one ``predict`` call.

A scikit-learn ``predict`` costs almost the same for one row as for a hundred (input
validation and Python overhead dominate), so concurrent single-row requests are queued
per (outputs, dtype) and predicted together in a worker thread.

When a batch closes, for a free predict lane:

* it holds ``max_batch_size`` rows (a request that would overflow starts the next batch;
  a request larger than ``max_batch_size`` is predicted on its own), or
* its oldest request has waited ``max_batch_latency``, or
* nobody else can join: every open connection that sends inference requests already has
  one in the queue (the HTTP server counts them; health probes and the Prometheus
  scraper do not count). This is the adaptive part: a lone client never waits for the
  timer, and a full house does not wait either.

While the lane is busy, new requests queue; when it frees, the next batch goes at once
if it is due. For a model whose predict call costs much more than ``max_batch_latency``
(a DataFrame Pipeline's ``predict`` costs ~10 ms whatever its rows), the clients just
answered by the finished batch are given ``max_batch_latency`` to send their next
request and join: otherwise the clients split into two groups that take turns, and
every call predicts half the rows it could for the same cost.

A batch whose model's recent predict calls were cheaper than a thread
hand-off (:class:`~mlmodel_serving.predictor.PredictCost`) is predicted on the event loop
instead of in the lane. Results are split back so each caller gets exactly its own rows. If
``predict`` fails on a batch, each request of the batch is predicted again on its own,
so only the request whose input breaks the model gets the error.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from mlmodel_serving.metrics import ServingMetrics
from mlmodel_serving.model import ModelInput, SklearnModel
from mlmodel_serving.predictor import (
    DirectPredictor,
    Outputs,
    PredictCost,
    only_connection,
    predict_and_observe,
)
from mlmodel_serving.protocol import NotReady
from mlmodel_serving.tabular import Columns

BatchKey = tuple[tuple[str, ...], str]
# A predict call this many times ``max_batch_latency`` (recent mean) makes a freed lane
# wait ``max_batch_latency`` for the clients it just answered (see the module docstring).
REGROUP_COST_FACTOR = 4.0


@dataclass(slots=True)
class _Pending:
    x: ModelInput
    future: asyncio.Future[Outputs]
    enqueued: float


class BatchingPredictor:
    """Queues requests and predicts them in batches; same interface as DirectPredictor."""

    def __init__(
        self,
        model: SklearnModel,
        metrics: ServingMetrics,
        executor: Executor,
        *,
        max_batch_size: int,
        max_batch_latency: float,
        lanes: int = 1,
        open_connections: Callable[[], int | None] | None = None,
        cost: PredictCost | None = None,
    ) -> None:
        if max_batch_size < 1 or max_batch_latency <= 0:
            raise ValueError("batching needs max_batch_size >= 1 and max_batch_latency > 0")
        self._model = model
        self._metrics = metrics
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_batch_latency = max_batch_latency
        self._lanes = lanes
        self._open_connections = open_connections
        self._cost = cost or PredictCost(0.0)
        # Requests larger than a batch are predicted on their own, as without batching.
        self._oversize = DirectPredictor(
            model, metrics, executor, self._cost, open_connections=open_connections
        )
        self._queues: dict[BatchKey, deque[_Pending]] = {}
        self._queued_rows: dict[BatchKey, int] = {}
        self._queued_requests = 0
        self._inflight = 0
        self._timer: asyncio.TimerHandle | None = None
        self._check_scheduled = False
        self._closed = False
        self._lane_freed = -math.inf  # perf_counter() when a batch last finished

    async def predict(self, x: ModelInput, outputs: tuple[str, ...]) -> Outputs:
        if self._closed:
            raise NotReady("the server is shutting down")
        loop = asyncio.get_running_loop()
        rows = x.shape[0]
        if rows > self.max_batch_size:
            return await self._oversize.predict(x, outputs)
        if self._queued_requests == 0 and self._alone() and self._cost.inline(rows, alone=True):
            # The only inference connection, nothing queued or in a thread, and a call
            # cheap enough for the loop: the batch would be this request alone, run
            # inline on the next loop turn. Run it now and save that turn.
            self._metrics.observe_queue_wait(0.0)
            return predict_and_observe(self._model, self._metrics, x, outputs, 1, self._cost)
        key = (outputs, x.dtype.str if isinstance(x, np.ndarray) else "columns")
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._queued_rows[key] = 0
        future: asyncio.Future[Outputs] = loop.create_future()
        queue.append(_Pending(x, future, time.perf_counter()))
        self._queued_rows[key] += rows
        self._queued_requests += 1
        if not self._check_scheduled:
            # Checked on the next loop turn, so that requests parsed in this turn join.
            self._check_scheduled = True
            loop.call_soon(self._check)
        return await future

    # -- deciding when a batch goes -----------------------------------------------------

    def _check(self) -> None:
        self._check_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._inflight < self._lanes:
            key, wait = self._due()
            if key is None:
                if wait is not None:
                    self._timer = asyncio.get_running_loop().call_later(wait, self._check)
                return
            self._dispatch(key)

    def _due(self) -> tuple[BatchKey | None, float | None]:
        """The queue whose batch should go now, else how long until the oldest is due.

        Among queues that are due (full, or their oldest request has waited long enough),
        the one with the oldest request goes first, so no queue starves.
        """
        now = time.perf_counter()
        oldest_key: BatchKey | None = None
        oldest = math.inf
        due_key: BatchKey | None = None
        due_since = math.inf
        mean = self._cost.mean
        regroup = mean is not None and mean > REGROUP_COST_FACTOR * self.max_batch_latency
        for key, queue in self._queues.items():
            if not queue:
                continue
            head = queue[0].enqueued
            if regroup:  # wait from when the lane freed: its clients may join
                head = max(head, self._lane_freed)
            if head < oldest:
                oldest, oldest_key = head, key
            full = self._queued_rows[key] >= self.max_batch_size
            if (full or now - head >= self.max_batch_latency) and head < due_since:
                due_since, due_key = head, key
        if due_key is not None:
            return due_key, None
        if oldest_key is None:
            return None, None
        if self._nobody_else_can_join():
            return oldest_key, None
        return None, oldest + self.max_batch_latency - now

    def _alone(self) -> bool:
        """No batch in a thread, and no other inference connection open."""
        return self._inflight == 0 and only_connection(self._open_connections)

    def _nobody_else_can_join(self) -> bool:
        if self._open_connections is None:
            return False
        open_connections = self._open_connections()
        return open_connections is not None and open_connections <= self._queued_requests

    # -- running a batch ------------------------------------------------------------------

    def _dispatch(self, key: BatchKey) -> None:
        queue = self._queues[key]
        batch: list[_Pending] = []
        rows = 0
        while queue and rows + queue[0].x.shape[0] <= self.max_batch_size:
            pending = queue.popleft()
            self._queued_requests -= 1
            self._queued_rows[key] -= pending.x.shape[0]
            if pending.future.done():  # cancelled by its caller
                continue
            batch.append(pending)
            rows += pending.x.shape[0]
        if not batch:
            return
        now = time.perf_counter()
        for pending in batch:
            self._metrics.observe_queue_wait(now - pending.enqueued)
        x = batch[0].x if len(batch) == 1 else _concatenate([p.x for p in batch])
        if self._cost.inline(rows, self._alone()):
            results = _predict_batch(self._model, self._metrics, self._cost, x, key[0], batch)
            _deliver(batch, results)
            return
        self._inflight += 1
        work = self._executor.submit(
            _predict_batch, self._model, self._metrics, self._cost, x, key[0], batch
        )
        asyncio.wrap_future(work).add_done_callback(lambda done: self._finish(batch, done))

    def _finish(
        self, batch: list[_Pending], done: asyncio.Future[list[Outputs | BaseException]]
    ) -> None:
        self._inflight -= 1
        self._lane_freed = time.perf_counter()
        try:
            results = done.result()
        except BaseException as exc:  # the executor itself failed (e.g. shut down)
            results = [exc] * len(batch)
        _deliver(batch, results)
        self._check()

    async def close(self) -> None:
        """Fail whatever is still queued (the HTTP server drained connections first)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        for queue in self._queues.values():
            while queue:
                pending = queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(NotReady("the server is shutting down"))
        self._queued_requests = 0


def _concatenate(xs: list[ModelInput]) -> ModelInput:
    """The rows of several requests as one input (all arrays, or all Columns)."""
    arrays = [x for x in xs if isinstance(x, np.ndarray)]
    if len(arrays) == len(xs):
        return np.concatenate(arrays)
    return Columns.concatenate([x for x in xs if isinstance(x, Columns)])


def _deliver(batch: list[_Pending], results: list[Outputs | BaseException]) -> None:
    for pending, result in zip(batch, results, strict=True):
        if pending.future.done():  # cancelled by its caller meanwhile
            continue
        if isinstance(result, BaseException):
            pending.future.set_exception(result)
        else:
            pending.future.set_result(result)


def _predict_batch(
    model: SklearnModel,
    metrics: ServingMetrics,
    cost: PredictCost,
    x: ModelInput,
    outputs: tuple[str, ...],
    batch: list[_Pending],
) -> list[Outputs | BaseException]:
    """One predict for the batch (in a worker thread or inline), split back per request."""
    try:
        result = predict_and_observe(model, metrics, x, outputs, len(batch), cost)
    except Exception as exc:
        if len(batch) == 1:
            return [exc]
        # Find the culprit: predict each request on its own.
        retried: list[Outputs | BaseException] = []
        for pending in batch:
            try:
                retried.append(predict_and_observe(model, metrics, pending.x, outputs, 1, cost))
            except Exception as exc:
                retried.append(exc)
        return retried
    if len(batch) == 1:
        return [result]
    split: list[Outputs | BaseException] = []
    start = 0
    for pending in batch:
        end = start + pending.x.shape[0]
        split.append({name: arr[start:end] for name, arr in result.items()})
        start = end
    return split
