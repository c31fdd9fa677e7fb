"""Adaptive micro-batching: grouping, splitting, error isolation, when batches close."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from serving_helpers import FAKE_SHA, Client, ExplodingClassifier, make_settings, v2_body

from mlmodel_serving.app import create_app
from mlmodel_serving.batching import BatchingPredictor
from mlmodel_serving.metrics import ServingMetrics
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.predictor import DirectPredictor, PredictCost, only_connection
from mlmodel_serving.protocol import NotReady

BOTH = ("predict", "predict_proba")


def inline_cost() -> PredictCost:
    """A cost that sends every call to the event loop from the first one."""
    cost = PredictCost(inline_below=10.0)
    cost.assume(0.0)
    return cost


# Where predict runs: in the worker thread, or on the event loop (a cheap model).
WHERE = pytest.mark.parametrize("inline", [False, True], ids=["thread", "inline"])


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    yield pool
    pool.shutdown(wait=True)


def run(
    model: SklearnModel,
    executor: ThreadPoolExecutor,
    scenario: Callable[[BatchingPredictor], Awaitable[Any]],
    inline: bool = False,
    **kw: Any,
) -> tuple[Any, CollectorRegistry]:
    registry = CollectorRegistry()
    options: dict[str, Any] = {"max_batch_size": 8, "max_batch_latency": 0.05, **kw}
    if inline:
        options["cost"] = inline_cost()

    async def main() -> Any:
        predictor = BatchingPredictor(
            model, ServingMetrics(registry, model.name), executor, **options
        )
        try:
            return await asyncio.wait_for(scenario(predictor), 10)
        finally:
            await predictor.close()

    return asyncio.run(main()), registry


def batches(registry: CollectorRegistry) -> tuple[float, float, float]:
    """(predict calls, rows predicted, requests predicted)."""

    def get(name: str) -> float:
        return registry.get_sample_value(name, {"model": "iris"}) or 0.0

    return (
        get("mlmodel_batch_size_count"),
        get("mlmodel_batch_size_sum"),
        get("mlmodel_batch_requests_sum"),
    )


@WHERE
def test_each_caller_gets_its_own_rows_as_if_alone(
    iris_model: SklearnModel,
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    executor: ThreadPoolExecutor,
    inline: bool,
) -> None:
    x = iris[0]
    rng = np.random.default_rng(0)
    requests: list[tuple[np.ndarray[Any, Any], tuple[str, ...]]] = []
    start = 0
    for i in range(40):
        n = int(rng.integers(1, 5))
        outputs = [("predict",), ("predict_proba",), BOTH][i % 3]
        requests.append((x[start : start + n], outputs))
        start = (start + n) % 140

    async def scenario(p: BatchingPredictor) -> list[dict[str, np.ndarray[Any, Any]]]:
        return await asyncio.gather(*(p.predict(rows, outputs) for rows, outputs in requests))

    results, registry = run(iris_model, executor, scenario, inline, max_batch_size=16)
    for (rows, outputs), result in zip(requests, results, strict=True):
        assert tuple(result) == outputs
        alone = iris_model.predict(rows, outputs)
        if "predict" in outputs:
            np.testing.assert_array_equal(result["predict"], alone["predict"])
        if "predict_proba" in outputs:
            # The same to within rounding: BLAS may block a 16-row product differently.
            np.testing.assert_allclose(
                result["predict_proba"], alone["predict_proba"], rtol=1e-12, atol=1e-15
            )
    calls, rows, reqs = batches(registry)
    assert rows == sum(len(r) for r, _ in requests) and reqs == 40
    assert calls < 20  # they were batched


def test_batches_close_at_max_size_and_an_overflowing_request_starts_the_next(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    x = np.tile([5.1, 3.5, 1.4, 0.2], (3, 1))

    async def scenario(p: BatchingPredictor) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(p.predict(x, ("predict",)) for _ in range(4)))
        return time.perf_counter() - start

    # 4 requests of 3 rows, at most 6 rows a batch: [3+3], [3+3], and no timer waits
    # (max_batch_latency is 10 s; the full batch goes at once, the last by its size too).
    elapsed, registry = run(
        iris_model, executor, scenario, max_batch_size=6, max_batch_latency=10.0
    )
    assert batches(registry) == (2, 12, 4)
    assert elapsed < 5


@WHERE
def test_a_request_larger_than_max_batch_size_is_predicted_alone(
    iris_model: SklearnModel,
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    executor: ThreadPoolExecutor,
    inline: bool,
) -> None:
    async def scenario(p: BatchingPredictor) -> dict[str, np.ndarray[Any, Any]]:
        return await p.predict(iris[0][:20], ("predict",))

    result, registry = run(
        iris_model, executor, scenario, inline, max_batch_size=8, max_batch_latency=10.0
    )
    np.testing.assert_array_equal(result["predict"], iris_model.estimator.predict(iris[0][:20]))
    assert batches(registry) == (1, 20, 1)


def test_a_lone_request_waits_at_most_max_batch_latency(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    async def scenario(p: BatchingPredictor) -> float:
        start = time.perf_counter()
        await p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",))
        return time.perf_counter() - start

    waited, _ = run(iris_model, executor, scenario, max_batch_latency=0.2)
    assert 0.15 < waited < 2


def test_nobody_else_can_join_so_the_batch_goes_at_once(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    async def scenario(p: BatchingPredictor) -> float:
        start = time.perf_counter()
        await asyncio.gather(
            *(p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",)) for _ in range(3))
        )
        return time.perf_counter() - start

    # Three open connections, three queued requests: no reason to wait 5 s.
    waited, registry = run(
        iris_model, executor, scenario, max_batch_latency=5.0, open_connections=lambda: 3
    )
    assert waited < 2
    assert batches(registry) == (1, 3, 3)


def test_dtypes_and_outputs_are_not_mixed(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    row = [[5.1, 3.5, 1.4, 0.2]]

    async def scenario(p: BatchingPredictor) -> list[dict[str, np.ndarray[Any, Any]]]:
        return await asyncio.gather(
            p.predict(np.array(row, dtype=np.float32), ("predict",)),
            p.predict(np.array(row, dtype=np.float64), ("predict",)),
            p.predict(np.array(row, dtype=np.float64), ("predict",)),
            p.predict(np.array(row, dtype=np.float64), ("predict_proba",)),
        )

    _, registry = run(iris_model, executor, scenario, max_batch_latency=0.02)
    assert batches(registry) == (3, 4, 4)


def test_a_queue_that_is_always_full_does_not_starve_another(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    row = np.array([[5.1, 3.5, 1.4, 0.2]])
    finished: list[str] = []

    async def one(p: BatchingPredictor, name: str, outputs: tuple[str, ...]) -> None:
        await p.predict(row, outputs)
        finished.append(name)

    async def scenario(p: BatchingPredictor) -> None:
        lonely = asyncio.ensure_future(one(p, "proba", ("predict_proba",)))
        await asyncio.gather(lonely, *(one(p, "predict", ("predict",)) for _ in range(300)))

    run(iris_model, executor, scenario, max_batch_size=2, max_batch_latency=0.005)
    assert finished.index("proba") < len(finished) - 1


@WHERE
def test_a_failing_request_does_not_fail_the_others(
    executor: ThreadPoolExecutor, inline: bool
) -> None:
    model = SklearnModel(ExplodingClassifier(), "iris", "1", FAKE_SHA)
    rows = [[1.0, 0, 0, 0], [666.0, 0, 0, 0], [-1.0, 0, 0, 0], [2.0, 0, 0, 0]]

    async def scenario(p: BatchingPredictor) -> list[Any]:
        return await asyncio.gather(
            *(p.predict(np.array([r]), ("predict",)) for r in rows), return_exceptions=True
        )

    results, _ = run(model, executor, scenario, inline, max_batch_latency=0.02)
    assert [r["predict"].tolist() for r in (results[0], results[2], results[3])] == [[1], [0], [1]]
    assert isinstance(results[1], RuntimeError) and "boom" in str(results[1])


@WHERE
def test_a_lone_failing_request_gets_its_own_error(
    executor: ThreadPoolExecutor, inline: bool
) -> None:
    model = SklearnModel(ExplodingClassifier(), "iris", "1", FAKE_SHA)

    async def scenario(p: BatchingPredictor) -> list[Any]:
        first = await asyncio.gather(
            p.predict(np.array([[666.0, 0, 0, 0]]), ("predict",)), return_exceptions=True
        )
        # The predictor still answers after the failure.
        return [*first, await p.predict(np.array([[1.0, 0, 0, 0]]), ("predict",))]

    (failed, ok), _ = run(model, executor, scenario, inline, max_batch_latency=0.01)
    assert isinstance(failed, RuntimeError) and "boom" in str(failed)
    assert ok["predict"].tolist() == [1]


def test_close_fails_what_is_still_queued(
    iris_model: SklearnModel, executor: ThreadPoolExecutor
) -> None:
    async def scenario(p: BatchingPredictor) -> None:
        pending = asyncio.ensure_future(p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",)))
        await asyncio.sleep(0.01)
        await p.close()
        with pytest.raises(NotReady):
            await pending
        with pytest.raises(NotReady):
            await p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",))

    run(iris_model, executor, scenario, max_batch_latency=5.0)


def test_predict_cost_decides_where_calls_run() -> None:
    cost = PredictCost(inline_below=0.001)
    assert not cost.inline(1)  # nothing timed yet: a thread
    cost.record(0.0002)
    assert cost.inline(1) and cost.inline(1024)
    assert not cost.inline(1025)  # too many rows to trust the recent cost
    for _ in range(20):
        cost.record(0.005)  # the model got slow: the mean follows
    assert not cost.inline(1)
    never = PredictCost(inline_below=0.0)
    never.record(0.0)
    assert not never.inline(1)


class _NoThreads(ThreadPoolExecutor):
    """Fails the test if a call is handed to a thread."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("predict was handed to a thread")


def test_a_slower_model_runs_inline_only_while_one_connection_sends_requests(
    iris_model: SklearnModel,
) -> None:
    cost = PredictCost(inline_below=0.001, alone_below=0.050)
    cost.assume(0.010)  # 10 ms: too slow for the loop in general, not for a lone client
    assert cost.inline(1, alone=True) and not cost.inline(1, alone=False)
    assert only_connection(lambda: 1) and not only_connection(lambda: 2)
    assert not only_connection(None) and not only_connection(lambda: None)
    connections = [1]
    direct = DirectPredictor(
        iris_model,
        ServingMetrics(CollectorRegistry(), "iris"),
        _NoThreads(1),
        cost,
        open_connections=lambda: connections[0],
    )
    result = asyncio.run(direct.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",)))
    assert result["predict"].tolist() == [0]
    cost.assume(0.010)
    connections[0] = 2
    with pytest.raises(AssertionError, match="handed to a thread"):
        asyncio.run(direct.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",)))

    async def lone_batch(p: BatchingPredictor) -> dict[str, np.ndarray[Any, Any]]:
        return await p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",))

    cost.assume(0.010)
    batched, _ = run(iris_model, _NoThreads(1), lone_batch, cost=cost, open_connections=lambda: 1)
    assert batched["predict"].tolist() == [0]


def test_a_lone_cheap_request_is_predicted_without_waiting_a_loop_turn(
    iris_model: SklearnModel,
) -> None:
    async def lone(p: BatchingPredictor) -> tuple[dict[str, np.ndarray[Any, Any]], bool]:
        result = await p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",))
        return result, p._check_scheduled

    (result, scheduled), registry = run(
        iris_model, _NoThreads(1), lone, inline=True, open_connections=lambda: 1
    )
    assert result["predict"].tolist() == [0] and not scheduled
    assert batches(registry) == (1.0, 1.0, 1.0)
    assert (
        registry.get_sample_value("mlmodel_batch_queue_wait_seconds_count", {"model": "iris"}) == 1
    )

    # With a second inference connection open, the request queues as usual.
    async def two(p: BatchingPredictor) -> bool:
        task = asyncio.ensure_future(p.predict(np.array([[5.1, 3.5, 1.4, 0.2]]), ("predict",)))
        await asyncio.sleep(0)
        queued = p._queued_requests == 1
        await task
        return queued

    queued, _ = run(iris_model, _NoThreads(1), two, inline=True, open_connections=lambda: 2)
    assert queued


@WHERE
def test_direct_predictor_answers_the_same_inline_or_in_a_thread(
    iris_model: SklearnModel,
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
    executor: ThreadPoolExecutor,
    inline: bool,
) -> None:
    registry = CollectorRegistry()
    cost = inline_cost() if inline else PredictCost(0.0)
    predictor = DirectPredictor(iris_model, ServingMetrics(registry, "iris"), executor, cost)
    x = iris[0][:7]
    result = asyncio.run(predictor.predict(x, BOTH))
    np.testing.assert_array_equal(result["predict"], iris_model.estimator.predict(x))
    np.testing.assert_array_equal(result["predict_proba"], iris_model.estimator.predict_proba(x))
    assert cost.mean is not None
    assert registry.get_sample_value("mlmodel_batch_size_sum", {"model": "iris"}) == 7


def test_batching_is_on_by_default_and_zero_disables_it(iris_model: SklearnModel) -> None:
    on = create_app(make_settings(), iris_model, CollectorRegistry())
    assert isinstance(on.predictor, BatchingPredictor)
    for off in (make_settings(max_batch_size=0), make_settings(max_batch_latency_ms=0)):
        app = create_app(off, iris_model, CollectorRegistry())
        assert isinstance(app.predictor, DirectPredictor)


def test_through_the_app_with_queue_wait_metrics(iris_model: SklearnModel) -> None:
    registry = CollectorRegistry()
    client = Client(create_app(make_settings(max_batch_latency_ms=20), iris_model, registry))
    try:

        async def many() -> list[Any]:
            return await asyncio.gather(
                *(
                    client.acall(
                        "POST",
                        "/v2/models/iris/infer",
                        __import__("orjson").dumps(v2_body([[5.1, 3.5, 1.4, 0.2]] * n)),
                    )
                    for n in (1, 2, 3, 4)
                )
            )

        replies = client.loop.run_until_complete(many())
        assert [r.json()["outputs"][0]["shape"] for r in replies] == [[1], [2], [3], [4]]
        assert (
            registry.get_sample_value("mlmodel_batch_queue_wait_seconds_count", {"model": "iris"})
            == 4
        )
        assert registry.get_sample_value("mlmodel_batch_size_count", {"model": "iris"}) == 1
    finally:
        client.close()


class SlowClassifier:
    """A model whose every predict call costs 200 ms whatever its rows (like a DataFrame
    Pipeline, slowed down so that the test holds on a busy machine), recording how many
    rows each call got."""

    n_features_in_ = 4
    classes_ = np.array([0, 1])

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self.calls.append(x.shape[0])
        time.sleep(0.2)
        return np.zeros(x.shape[0], dtype=np.int64)


@pytest.mark.parametrize("slow_mean", [True, False], ids=["expensive-calls", "cheap-calls"])
def test_clients_answered_by_an_expensive_call_may_join_the_next(
    executor: ThreadPoolExecutor, slow_mean: bool
) -> None:
    """Four clients, each sending its next request as soon as it is answered. With calls
    far dearer than max_batch_latency, a freed lane waits for the clients it answered, so
    every call after the first predicts all four; with cheap calls the pairs alternate."""
    slow = SlowClassifier()
    model = SklearnModel(slow, "iris", "1", FAKE_SHA)
    cost = PredictCost(inline_below=0.0)

    async def client(p: BatchingPredictor, first_delay: float) -> None:
        await asyncio.sleep(first_delay)
        for _ in range(4):
            await p.predict(np.zeros((1, 4)), ("predict",))

    async def scenario(p: BatchingPredictor) -> None:
        if slow_mean:
            cost.assume(0.2)  # as measured after a first call
        else:
            cost.assume(0.001)
            cost.record = lambda seconds: None  # type: ignore[method-assign]  # keep it cheap
        # two clients start at once, two join while the first call runs
        await asyncio.gather(client(p, 0), client(p, 0), client(p, 0.06), client(p, 0.06))

    run(model, executor, scenario, max_batch_latency=0.02, open_connections=lambda: 4, cost=cost)
    if slow_mean:
        # the late pair joins at once; the last call holds the late pair's last requests
        assert slow.calls == [2, 4, 4, 4, 2], slow.calls
    else:
        assert slow.calls[:3] == [2, 2, 2], slow.calls  # the two groups take turns
