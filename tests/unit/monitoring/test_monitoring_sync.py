"""MonitoringSync: CRD look-ups are cached, unchanged objects are not re-applied.

The Kubernetes side is a recording stand-in here; the real apiserver with the real
Prometheus operator CRDs is exercised in tests/integration/controller/test_monitoring.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from test_monitoring_builders import MODEL, make_model

from mlmodel_operator.kube import Kube, NotFound
from mlmodel_operator.monitoring_sync import (
    CRD_RECHECK_SECONDS,
    REASSERT_SECONDS,
    MonitoringSync,
    recheck_crds,
)
from mlmodel_operator.settings import Settings


class RecordingKube(Kube):
    def __init__(self, established: set[str]) -> None:
        self.established = established
        self.calls: list[tuple[str, ...]] = []

    def crd_established(self, name: str) -> bool:
        self.calls.append(("crd", name))
        return name in self.established

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        if obj["kind"] == "ServiceMonitor" and "servicemonitors.monitoring.coreos.com" not in (
            self.established
        ):
            raise NotFound(obj["kind"])
        return obj

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        self.calls.append(("delete", kind, name))
        return True


BOTH = {"servicemonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_missing_crds_are_named_and_looked_up_again_later() -> None:
    kube, clock = RecordingKube(set()), Clock()
    sync = MonitoringSync(kube, Settings(), clock=clock)
    note = sync.sync(MODEL, {})
    assert not note.ok and note.reason == "PrometheusOperatorMissing"
    assert "servicemonitors.monitoring.coreos.com" in note.message
    assert "prometheusrules.monitoring.coreos.com" in note.message
    assert [k for k, *_ in kube.calls] == ["crd", "crd"]
    sync.sync(MODEL, {})
    assert len(kube.calls) == 2  # cached
    kube.established = BOTH
    clock.now += CRD_RECHECK_SECONDS
    note = sync.sync(MODEL, {})
    assert note.ok and note.reason == "MonitoringConfigured"
    assert kube.calls[-2:] == [
        ("apply", "ServiceMonitor", "churn"),
        ("apply", "PrometheusRule", "churn"),
    ]


def test_unchanged_objects_are_not_applied_again_until_reasserted() -> None:
    kube, clock = RecordingKube(BOTH), Clock()
    sync = MonitoringSync(kube, Settings(), clock=clock)
    sync.sync(MODEL, {})
    sync.sync(MODEL, {})
    assert [call[0] for call in kube.calls].count("apply") == 2
    sync.sync(make_model(version="4"), {})  # a new version changes both
    assert [call[0] for call in kube.calls].count("apply") == 4
    clock.now += REASSERT_SECONDS
    sync.sync(make_model(version="4"), {})
    assert [call[0] for call in kube.calls].count("apply") == 6


def test_disabled_deletes_once() -> None:
    kube = RecordingKube(BOTH)
    sync = MonitoringSync(kube, Settings(), clock=Clock())
    off = make_model(monitoring={"enabled": False})
    note = sync.sync(off, {"conditions": [{"type": "Monitored", "reason": "MonitoringConfigured"}]})
    assert not note.ok and note.reason == "MonitoringDisabled"
    assert kube.calls == [
        ("delete", "ServiceMonitor", "churn"),
        ("delete", "PrometheusRule", "churn"),
    ]
    kube.calls.clear()
    sync.sync(off, {"conditions": [{"type": "Monitored", "reason": "MonitoringDisabled"}]})
    assert kube.calls == []


def test_crds_removed_after_the_look_up_are_a_condition_not_an_error() -> None:
    kube, clock = RecordingKube(set(BOTH)), Clock()
    sync = MonitoringSync(kube, Settings(), clock=clock)
    assert sync.sync(MODEL, {}).ok
    kube.established = set()
    note = sync.sync(make_model(version="4"), {})  # a change, so it is applied: 404
    assert not note.ok and note.reason == "PrometheusOperatorMissing"
    kube.calls.clear()
    note = sync.sync(make_model(version="4"), {})  # looked up again at once
    assert [k for k, *_ in kube.calls] == ["crd", "crd"]
    assert "servicemonitors.monitoring.coreos.com" in note.message


class SlowKube(RecordingKube):
    """Each CRD lookup takes a while, as a round trip to a busy apiserver does."""

    def crd_established(self, name: str) -> bool:
        time.sleep(0.05)
        return super().crd_established(name)


def test_reconciles_that_ask_together_share_one_lookup() -> None:
    kube, clock = SlowKube(BOTH), Clock()
    sync = MonitoringSync(kube, Settings(), clock=clock)
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        assert sync.missing_crds() == ()

    def round_of_askers() -> None:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)

    round_of_askers()  # the first lookup of all: the others wait for its answer
    assert len(kube.calls) == 2
    clock.now += CRD_RECHECK_SECONDS + 1  # stale: one looks again, the rest use what it knew
    round_of_askers()
    assert len(kube.calls) == 4


def test_the_crds_coming_or_going_wake_every_model_and_a_failed_look_does_not_stop_it() -> None:
    """Models at rest are looked at every 5 minutes; the Prometheus operator installed
    later (or removed) is noticed within the recheck, by one task, not by each model."""
    answers: list[tuple[str, ...] | Exception] = [
        ("servicemonitors", "prometheusrules"),
        ("servicemonitors", "prometheusrules"),
        RuntimeError("apiserver away"),
        (),
        (),
        ("prometheusrules",),
    ]
    woken: list[int] = []
    done = asyncio.Event()

    def missing() -> tuple[str, ...]:
        answer = answers.pop(0)
        if not answers:
            done.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def run() -> None:
        task = asyncio.create_task(recheck_crds(missing, lambda: woken.append(1), every=0.001))
        await asyncio.wait_for(done.wait(), 5.0)
        await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    assert len(woken) == 2  # installed; one removed again


def test_a_standby_replica_does_not_look_and_wakes_every_model_for_a_change_it_missed() -> None:
    """A standby replica's look would be a request the active one already makes."""
    active = [True, False, False, False, True]  # looks, stands by three times, takes over
    answers = [("servicemonitors", "prometheusrules"), ()]  # installed while it stood by
    looks: list[tuple[str, ...]] = []
    woken: list[int] = []
    done = asyncio.Event()

    def missing() -> tuple[str, ...]:
        looks.append(answers.pop(0))
        return looks[-1]

    def wake_all() -> None:  # on the loop, as the task calls it
        woken.append(1)
        done.set()

    def is_active() -> bool:
        return active.pop(0) if active else True

    async def run() -> None:
        task = asyncio.create_task(recheck_crds(missing, wake_all, every=0.001, active=is_active))
        await asyncio.wait_for(done.wait(), 5.0)
        task.cancel()

    asyncio.run(run())
    assert not active  # every standby turn was asked, and none of them looked
    assert looks == [("servicemonitors", "prometheusrules"), ()]
    assert woken == [1]
