"""Wake-ups: each model's next reconcile, without kopf's timers and retries (wakeups.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mlmodel_operator.settings import DEFAULT_RECONCILE_INTERVAL
from mlmodel_operator.wakeups import (
    ERROR_RETRY_FIRST,
    ERROR_RETRY_MAX,
    JITTER,
    STANDBY_RECHECK,
    Due,
    Wakeups,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(interval: float = 30.0, rand: float = 0.5) -> tuple[Wakeups, Clock]:
    clock = Clock()
    return Wakeups(interval, clock=clock, rand=lambda: rand), clock


def uids(due: list[Due]) -> list[str]:
    return [d.uid for d in due]


def test_a_requeue_wakes_the_model_then_and_not_before() -> None:
    w, clock = make()
    w.after("u1", "ns", "a", 2.0)
    assert w.pop_due() == ([], pytest.approx(2.0))
    clock.now += 2.0
    due, nxt = w.pop_due()
    assert due == [Due("u1", "ns", "a", 0)]
    assert nxt is None
    assert len(w) == 0  # taken off while it runs: its reconcile names the next look


def test_no_requeue_is_the_periodic_look_jittered_within_bounds() -> None:
    for rand, factor in ((0.0, 1 - JITTER), (0.5, 1.0), (1.0, 1 + JITTER)):
        w, _ = make(interval=30.0, rand=rand)
        w.after("u1", "ns", "a", None)
        assert w.pop_due()[1] == pytest.approx(30.0 * factor)


def test_the_latest_reconcile_decides_even_when_it_names_a_later_time() -> None:
    """A drain's 0.5 s requeue followed by a reconcile that found nothing to wait for: the
    model is not woken at the stale earlier time."""
    w, clock = make()
    w.after("u1", "ns", "a", 0.5)
    w.after("u1", "ns", "a", 10.0)
    clock.now += 1.0
    assert w.pop_due() == ([], pytest.approx(9.0))
    clock.now += 9.0
    assert uids(w.pop_due()[0]) == ["u1"]
    assert w.pop_due() == ([], None)  # the replaced entry never fires


def test_due_models_come_earliest_first() -> None:
    w, clock = make()
    for uid, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("d", 25.0)):
        w.after(uid, "ns", uid, delay)
    clock.now += 5.0
    due, nxt = w.pop_due()
    assert uids(due) == ["a", "b", "c"]
    assert nxt == pytest.approx(20.0)


def test_a_look_asked_for_later_than_the_interval_comes_at_the_interval() -> None:
    # the safety net holds for a wait too (a ready timeout of an hour, a skewed clock)
    w, _ = make(interval=30.0)
    w.after("u1", "ns", "a", 3600.0)
    assert w.pop_due()[1] == pytest.approx(30.0)


def test_a_forgotten_model_is_never_woken() -> None:
    w, clock = make()
    w.after("u1", "ns", "a", 1.0)
    w.forget("u1")
    clock.now += 100.0
    assert w.pop_due() == ([], None)


def fail_in_a_row(w: Wakeups, clock: Clock, times: int) -> list[float]:
    """u1's reconcile raises ``times`` times in a row: the delays it was given."""
    w.after("u1", "ns", "a", 0.0)
    delays = []
    for _ in range(times):
        [due], _ = w.pop_due()
        delays.append(w.failed(due))
        clock.now += delays[-1]
    return delays


def test_failures_back_off_doubling_up_to_the_interval_and_success_resets() -> None:
    w, clock = make(interval=30.0)
    delays = fail_in_a_row(w, clock, 6)
    assert delays == [ERROR_RETRY_FIRST * 2**i for i in range(4)] + [30.0, 30.0]
    [due], _ = w.pop_due()
    assert due.errors == 6
    w.after("u1", "ns", "a", 1.0)  # a reconcile that succeeded
    clock.now += 1.0
    assert w.pop_due()[0][0].errors == 0


def test_with_a_long_interval_failures_back_off_to_at_most_a_minute() -> None:
    w, clock = make(interval=DEFAULT_RECONCILE_INTERVAL)
    delays = fail_in_a_row(w, clock, 8)
    assert delays[-2:] == [ERROR_RETRY_MAX, ERROR_RETRY_MAX] and max(delays) == ERROR_RETRY_MAX


def test_wake_all_makes_every_model_due_and_one_running_looks_again_when_it_ends() -> None:
    w, clock = make()
    w.after("u1", "ns", "a", None)
    w.after("u2", "ns", "b", 5.0)
    running = w.token()  # u3's reconcile started before the change
    w.wake_all()
    assert sorted(uids(w.pop_due()[0])) == ["u1", "u2"]
    w.after("u3", "ns", "c", None, since=running)
    assert uids(w.pop_due()[0]) == ["u3"]  # at once: it ran from the old state
    later = w.token()
    w.after("u3", "ns", "c", None, since=later)
    assert w.pop_due() == ([], pytest.approx(30.0))
    clock.now += 30.0
    assert uids(w.pop_due()[0]) == ["u3"]


def test_a_model_due_on_a_standby_replica_is_looked_at_again_soon_not_an_interval_later() -> None:
    # a replica that has just taken over (kopf already gives it the events, its own view
    # of the peering comes up to 5 s later) reconciles a new model within seconds; it
    # waited one interval, 5 minutes, and an e2e test caught it
    w, clock = make(interval=DEFAULT_RECONCILE_INTERVAL)
    w.now("u1", "ns", "a")
    [due], _ = w.pop_due()
    w.postpone(due)
    assert w.pop_due() == ([], pytest.approx(STANDBY_RECHECK))
    clock.now += STANDBY_RECHECK
    assert uids(w.pop_due()[0]) == ["u1"]


def test_replaced_entries_do_not_pile_up_in_the_heap() -> None:
    w, _ = make()
    for i in range(10_000):
        w.after(f"u{i % 10}", "ns", "a", float(i))
    assert len(w) == 10
    assert len(w._heap) <= 2 * 10 + 64 + 1


def test_an_interval_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="MLMODEL_RECONCILE_INTERVAL: interval 0"):
        Wakeups(0)


def test_the_loop_reconciles_due_models_retries_failures_and_holds_on_standby() -> None:
    """The asyncio loop on a real clock: a model named from another thread is reconciled
    when due, one that raises is tried again, and nothing runs while not active."""
    w = Wakeups(30.0)
    calls: list[str] = []
    active = {"on": True}

    async def reconcile(due: Due) -> None:
        calls.append(due.uid)
        if due.uid == "bad" and due.errors == 0:
            raise RuntimeError("apiserver away")
        w.after(due.uid, due.namespace, due.name, None)  # as Reconciler.reconcile does

    async def main() -> None:
        task = asyncio.create_task(w.run(reconcile, active=lambda: active["on"]))
        await asyncio.sleep(0.01)
        # named from a reconcile thread while the loop sleeps with nothing pending
        t = threading.Thread(target=lambda: w.after("ok", "ns", "ok", 0.05))
        t.start()
        t.join()
        w.after("bad", "ns", "bad", 0.0)
        for _ in range(400):
            if calls.count("bad") == 2 and "ok" in calls:
                break
            await asyncio.sleep(0.01)
        active["on"] = False
        w.after("held", "ns", "held", 0.0)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert ERROR_RETRY_FIRST <= 2.0  # the loop above waits up to 4 s for the retry
    asyncio.run(main())
    assert calls.count("ok") == 1
    assert calls.count("bad") == 2  # raised, tried again after the first back-off
    assert "held" not in calls  # standby: postponed, not run
    assert len(w) == 3  # every model still has its next look


def test_an_event_during_a_reconcile_is_not_overwritten_by_its_end() -> None:
    """A Deployment became Available while the model's reconcile ran (it may have read the
    Deployment before): the reconcile's own next look, 30 s away, must not replace the
    wake-up the event asked for."""
    w, _ = make()
    since = w.token()  # the reconcile starts
    w.now("u1", "ns", "a")  # the event
    w.after("u1", "ns", "a", None, since)  # the reconcile ends: "nothing to do for 30 s"
    assert uids(w.pop_due()[0]) == ["u1"]


def test_a_reconcile_replaces_what_was_asked_before_it_started() -> None:
    w, _ = make()
    w.now("u1", "ns", "a")
    since = w.token()
    w.after("u1", "ns", "a", 5.0, since)
    assert w.pop_due() == ([], pytest.approx(5.0))


def test_an_event_never_delays_an_earlier_wake_up() -> None:
    w, clock = make()
    w.after("u1", "ns", "a", 0.0)
    clock.now += 1.0  # overdue
    w.now("u1", "ns", "a")
    [due], _ = w.pop_due()
    assert due.uid == "u1"


def test_a_model_due_while_its_reconcile_runs_is_reconciled_after_it_not_beside_it() -> None:
    w = Wakeups(30.0)
    started: list[int] = []
    at_once = {"now": 0, "most": 0}
    release = asyncio.Event()

    async def reconcile(due: Due) -> None:
        started.append(len(started))
        at_once["now"] += 1
        at_once["most"] = max(at_once["most"], at_once["now"])
        since = w.token()
        if len(started) == 1:
            await release.wait()  # a long reconcile (an archive upload, say)
        at_once["now"] -= 1
        w.after(due.uid, due.namespace, due.name, None, since)

    async def main() -> None:
        task = asyncio.create_task(w.run(reconcile))
        w.now("u1", "ns", "a")
        for _ in range(100):
            if started:
                break
            await asyncio.sleep(0.01)
        for _ in range(3):  # events while it runs
            w.now("u1", "ns", "a")
            await asyncio.sleep(0.02)
        assert len(started) == 1
        release.set()
        for _ in range(100):
            if len(started) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(started) == 2  # once more for the events it may not have seen, once only
    assert at_once["most"] == 1
    assert len(w) == 1  # its periodic look
