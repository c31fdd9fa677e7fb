"""Write (or remove) a model's ServiceMonitor and PrometheusRule, through `kube.py`.

Called by the reconciler on every reconcile. Where the Prometheus operator's CRDs are
missing nothing is written and the Monitored condition says so; the CRDs are looked up
at most every ``CRD_RECHECK_SECONDS`` (by the reconciles, and by :func:`recheck_crds`,
which wakes every model when they came or went), so a later install is noticed within
that time, without an API call per reconcile. An object is applied again when the watch
of the operator's own objects (objcache.py) shows it missing, carrying another applied
hash, or changed by someone else since the operator wrote it (its generation); without
that watch, when its content changed and every ``REASSERT_SECONDS`` (which puts back
one a person deleted). An object of that name the MLModel does not control (someone
else's, or another model's) is neither applied nor deleted: the Monitored condition
names it and who holds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Final

from mlmodel_operator import conditions as c
from mlmodel_operator.conditions import Reason
from mlmodel_operator.kube import ApiError, Kube, NotControlled, NotFound
from mlmodel_operator.monitoring import (
    MONITORING_API_VERSION,
    MONITORING_CRDS,
    build_alerts,
    build_prometheus_rule,
    build_service_monitor,
    monitoring_name,
)
from mlmodel_operator.objcache import APPLIED_HASH_ANNOTATION
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec
from mlmodel_operator.status import MonitoringNote

log = logging.getLogger(__name__)

CRD_RECHECK_SECONDS: Final = 30.0
REASSERT_SECONDS: Final = 300.0
# What was applied, per model and kind: forgotten with the model; past this many entries
# (models whose end was never seen) the least recently applied go, and are applied again.
APPLIED_KEPT: Final = 8192
APPLY_FAILED: Final = "MonitoringApplyFailed"
KINDS: Final = ("ServiceMonitor", "PrometheusRule")


async def recheck_crds(
    missing_crds: Callable[[], tuple[str, ...]],
    wake_all: Callable[[], None],
    every: float = CRD_RECHECK_SECONDS,
    active: Callable[[], bool] = lambda: True,
) -> None:
    """Every ``every`` seconds, until cancelled: look the CRDs up (one request at most,
    none when a reconcile just did) and, when they came or went since the last look,
    wake every model, so installing the Prometheus operator later is noticed within
    ``every`` seconds rather than at each model's periodic look. A replica on standby
    (``active()`` false) does not look; once it takes over, its first look is compared
    with the last it made, so a change while it stood by still wakes every model."""
    last: tuple[str, ...] | None = None
    while True:
        await asyncio.sleep(every)
        if not active():
            continue
        try:
            now = await asyncio.to_thread(missing_crds)
        except Exception as exc:  # the apiserver away a while: this loop must go on
            log.warning("looking up the Prometheus operator's CRDs failed: %s", exc)
            continue
        if last is not None and now != last:
            log.info("Prometheus operator CRDs missing now: %s; every model is looked at", now)
            wake_all()
        last = now


def _hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _was_disabled(old_status: Mapping[str, Any]) -> bool:
    return any(
        cond.get("type") == c.MONITORED and cond.get("reason") == Reason.MONITORING_DISABLED
        for cond in old_status.get("conditions") or []
    )


class MonitoringSync:
    """Made once with the reconciler; safe to call from several reconciles at once."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        recheck_seconds: float = CRD_RECHECK_SECONDS,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.clock = clock
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._missing: tuple[str, ...] | None = None
        self._checked_at = 0.0
        self._looking = False  # a lookup is under way
        self._lookup = threading.Lock()  # held by the one lookup
        self._lookups = 0  # lookups done
        self._applied: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def missing_crds(self) -> tuple[str, ...]:
        """The Prometheus operator CRDs that are not Established (cached for a while).

        One reconcile looks them up at a time: while it does, the others use what was
        known before, or, at the very first lookup, wait for its answer."""
        now = self.clock()
        with self._lock:
            known, lookups = self._missing, self._lookups
            if known is not None and (
                now - self._checked_at < self.recheck_seconds or self._looking
            ):
                return known
            self._looking = True
        try:
            with self._lookup:
                with self._lock:
                    if self._lookups != lookups and self._missing is not None:
                        return self._missing  # answered while this one waited
                missing = tuple(
                    name for name in MONITORING_CRDS if not self.kube.crd_established(name)
                )
                with self._lock:
                    if missing != self._missing:
                        self._applied.clear()  # CRDs came or went: write everything again
                    self._missing, self._checked_at = missing, now
                    self._lookups += 1
        finally:
            with self._lock:
                self._looking = False
        return missing

    def forget(self, uid: str) -> None:
        with self._lock:
            for kind in KINDS:
                self._applied.pop((uid, kind), None)

    def sync(self, model: ModelSpec, old_status: Mapping[str, Any]) -> MonitoringNote:
        """Bring the model's monitoring objects to the level its spec asks for."""
        name = monitoring_name(model)
        if not model.monitoring.enabled:
            left: list[str] = []
            if not _was_disabled(old_status):
                for kind in KINDS:
                    try:
                        self.kube.delete_owned(
                            MONITORING_API_VERSION, kind, model.namespace, name, model.ref.uid
                        )
                    except NotControlled as exc:  # someone else's stays where it is
                        left.append(str(exc))
                    except ApiError as exc:  # not checked, so not deleted; serving goes on
                        left.append(f"{kind} {model.namespace}/{name} not removed: {exc}")
                self.forget(model.ref.uid)
            return MonitoringNote(
                False,
                Reason.MONITORING_DISABLED,
                "spec.monitoring.enabled is false: no ServiceMonitor or PrometheusRule"
                + "".join(f"; {note}" for note in left),
            )
        missing = self.missing_crds()
        if missing:
            return MonitoringNote(
                False,
                Reason.PROMETHEUS_OPERATOR_MISSING,
                f"the Prometheus operator's CustomResourceDefinitions {', '.join(missing)} "
                "are not installed: no ServiceMonitor or PrometheusRule was created; the "
                f"model is served regardless, and the operator looks again every "
                f"{self.recheck_seconds:.0f}s",
            )
        foreign: list[str] = []
        try:
            for obj in (
                build_service_monitor(model, self.settings),
                build_prometheus_rule(model, self.settings),
            ):
                try:
                    self._apply(model.ref.uid, obj)
                except NotControlled as exc:
                    foreign.append(str(exc))
        except NotFound:
            # The CRDs went away since they were last looked up: look again next time.
            with self._lock:
                self._missing = None
                self._applied.clear()
            return MonitoringNote(
                False,
                Reason.PROMETHEUS_OPERATOR_MISSING,
                "the Prometheus operator's CustomResourceDefinitions were removed: "
                "no ServiceMonitor or PrometheusRule was applied",
            )
        except ApiError as exc:
            return MonitoringNote(False, APPLY_FAILED, f"monitoring objects not applied: {exc}")
        if foreign:
            return MonitoringNote(
                False,
                Reason.OBJECT_CONFLICT,
                "; ".join(foreign) + "; the operator neither changes nor deletes it: remove "
                "it, or set spec.monitoring.enabled to false; the model is served regardless",
            )
        return MonitoringNote(
            True,
            Reason.MONITORING_CONFIGURED,
            f"ServiceMonitor {name} and PrometheusRule {name} "
            f"({len(build_alerts(model))} alerts) applied",
        )

    def _apply(self, uid: str, obj: dict[str, Any]) -> None:
        key = (uid, obj["kind"])
        digest, now = _hash(obj), self.clock()
        obj["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = digest
        known = self.kube.unchanged(obj, digest)
        if known:
            return  # the watch holds it as applied, and nobody has changed it since
        if known is None:  # no watch of it: what this process applied, and when
            with self._lock:
                seen = self._applied.get(key)
            if seen is not None and seen[0] == digest and now - seen[1] < REASSERT_SECONDS:
                return
        self.kube.apply(obj)
        with self._lock:
            self._applied[key] = (digest, now)
            self._applied.move_to_end(key)
            while len(self._applied) > APPLIED_KEPT:
                self._applied.popitem(last=False)
