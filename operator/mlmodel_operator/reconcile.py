"""Carry out one reconcile: observe, ask the planner, act, compute the status.

:meth:`Reconciler.reconcile` runs for create, update, resume, an event of one of the
model's objects and the wake-ups it asks for (wakeups.py) alike, and
:meth:`Reconciler.finalize` when an MLModel is deleted. Nothing here knows which event
woke it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from mlmodel_operator import conditions as c
from mlmodel_operator import ledger
from mlmodel_operator.analysis import Prometheus, judge
from mlmodel_operator.archive import ArchiveError, Archiver, ArchiveResult
from mlmodel_operator.conditions import Phase, Reason, format_precise_time, format_time
from mlmodel_operator.decision_log import DecisionLogCheck, decision_log_event
from mlmodel_operator.desired import (
    CANARY_VERSION_ANNOTATION,
    STABLE_VERSION_ANNOTATION,
    SWITCHED_AT_ANNOTATION,
    SWITCHED_FROM_ANNOTATION,
    VERSION_LABEL,
    build_deployment,
    build_service,
    build_shadow_service,
    controlled_by,
    deployment_name,
    endpoint_url,
    holder,
    shadow_service_name,
)
from mlmodel_operator.failpoints import reached
from mlmodel_operator.kube import ApiConflict, Kube, NotControlled, NotFound
from mlmodel_operator.ledger import Ledger, NullLedger
from mlmodel_operator.monitoring_sync import MonitoringSync
from mlmodel_operator.objcache import revision
from mlmodel_operator.plan import (
    ANN_ABORT,
    ANN_APPLIED_HASH,
    ANN_ARTIFACT_ETAG,
    ANN_DEPLOYED_AT,
    ANN_PROMOTE,
    ANN_RETIRING,
    ANN_ROLLED_BACK,
    ANN_STEP,
    ANN_STEP_SINCE,
    POLL_SECONDS,
    ApplyDeployment,
    ClearRetiring,
    DeleteUnserved,
    DeploymentState,
    EndedRollout,
    Event,
    ForeignObject,
    HistoryEntry,
    MarkRetiring,
    MarkRolledBack,
    Observed,
    Plan,
    Retire,
    RunningRollout,
    SetStep,
    ShadowTraffic,
    SplitService,
    SwitchService,
    parse_time,
    plan,
    record_deployed,
    record_retired,
)
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec, SpecError, parse_model
from mlmodel_operator.status import ArchiveNote, build_status
from mlmodel_operator.verify import ArtifactVerifier, Verdict
from mlmodel_operator.wakeups import Wakeups

SKIP_ARCHIVE_ANNOTATION = "ml.lifecycle.io/skip-archive-on-delete"

log = logging.getLogger(__name__)


def _reason(status: Mapping[str, Any]) -> str | None:
    """The reason of the Degraded condition last written, if it was True."""
    cond = c.get_condition(status.get("conditions") or [], c.DEGRADED)
    return str(cond["reason"]) if cond and cond.get("status") == c.TRUE else None


def _ref(model: ModelSpec) -> tuple[str, str]:
    return model.ref.namespace, model.ref.name


def _artifact(model: ModelSpec) -> dict[str, Any]:
    return {"uri": model.artifact.uri, "sha256": model.artifact.sha256}


def _entry(entry: HistoryEntry, location: str) -> dict[str, Any]:
    return {**entry.to_status(), "archive": location}


def _scan_refused_event(version: str, result: ArchiveResult) -> list[Event]:
    """A Warning when the archived artifact's pickle scan stopped at one of its bounds."""
    if not result.scan_refused:
        return []
    return [
        Event(
            "Warning",
            "ArtifactScanRefused",
            f"version {version} is archived, but its static pickle scan was refused: "
            f"{result.scan_refused}",
        )
    ]


# A failed archive is tried again after 10 s, then 20 s, 40 s... up to every 5 minutes,
# each wait shortened by up to a fifth at random: a store that is down for an hour costs
# each model fewer than twenty attempts, and models that failed together do not retry
# together.
ARCHIVE_RETRY_FIRST = 10.0
ARCHIVE_RETRY_MAX = 300.0
ARCHIVE_RETRY_JITTER = 0.2
# Failed archives remembered (for their back-off), oldest forgotten first: more than any
# operator has versions failing at once; a forgotten one starts again at the first step.
FAILED_ARCHIVES_KEPT: Final = 1024


def archive_retry_delay(attempt: int, rand: float) -> float:
    """Seconds to wait after the ``attempt``-th failed archive in a row (1 for the first),
    with ``rand`` a uniform random number in [0, 1] (1 waits the full step)."""
    if attempt < 1:
        raise ValueError(f"attempt {attempt}: expected 1 or more")
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand {rand}: expected a number in [0, 1]")
    step = min(ARCHIVE_RETRY_MAX, ARCHIVE_RETRY_FIRST * 2.0 ** min(attempt - 1, 32))
    return step * (1.0 - ARCHIVE_RETRY_JITTER * (1.0 - rand))


class TokenBucket:
    """``rate`` reservations per second on average, ``max(1, rate)`` at once; rate 0
    grants every one at once. Thread-safe."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Reserve the next token: the seconds until it is due (0.0: now). Each caller
        gets its own turn, so those who wait are spread at ``rate`` per second instead of
        all trying again at once."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self.clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class _Paced(Exception):
    """An update of a serving Deployment waits for the fleet's update budget."""

    def __init__(self, wait: float) -> None:
        super().__init__(f"waiting {wait:.1f}s for the fleet's update budget")
        self.wait = wait


class _ArtifactChanged(Exception):
    """The artifact, checked again before its Deployment changes, no longer passes."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


@dataclass(frozen=True)
class _FailedArchive:
    """A version whose archive failed: how often in a row, when to try again, and what to
    say meanwhile (the same words, so the status is not rewritten between attempts)."""

    attempts: int
    next_at: dt.datetime
    message: str


@dataclass
class _LockEntry:
    """One model's lock and how many reconciles hold it or wait for it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


@dataclass
class Outcome:
    """What one reconcile decided: the status to write, Events to post, when to look again."""

    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    previous: Mapping[str, Any] = field(default_factory=dict)  # the status it was computed from
    # the object no longer exists, or is being deleted (the finalizer's part): nothing
    # to write, nothing to wake it for
    gone: bool = False
    written: bool = False  # the status was written (it differed from `previous`)


# A status write the apiserver refuses because the MLModel changed since it was read (409)
# reads it again and plans again, up to this many times in one reconcile; past that the
# object is looked at again after POLL_SECONDS.
STATUS_WRITE_ATTEMPTS: Final = 4
# Models whose last status write is remembered (oldest forgotten first; a forgotten one is
# read from the apiserver at its next reconcile, as every model was before).
WRITTEN_KEPT: Final = 65536
UNKNOWN_VERSION: Final = 1 << 62


def status_changed(status: Mapping[str, Any], previous: Mapping[str, Any]) -> bool:
    """Whether ``status`` (None values, at any depth: fields to remove) differs from what
    is stored."""
    wanted = _without_none(status)
    current = {k: v for k, v in previous.items() if k != "kopf"}
    return wanted != current


def _without_none(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _without_none(v) if isinstance(v, Mapping) else v
        for k, v in obj.items()
        if v is not None
    }


def applied_hash(obj: Mapping[str, Any]) -> str:
    """A digest of a desired object, so an unchanged object is not applied again."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Reconciler:
    """Made once at start-up; one lock per MLModel so reconciles of one object never overlap."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        verifier: ArtifactVerifier,
        archiver: Archiver,
        ledger: Ledger | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        decision_log: DecisionLogCheck | None = None,
        rand: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock``: the time written into status and records; ``monotonic``: the one
        the fleet's update budget and the models' turns are counted on."""
        self.kube = kube
        self.settings = settings
        self.verifier = verifier
        self.archiver = archiver
        self.ledger: Ledger = ledger or NullLedger()
        self.clock = clock
        self.monitoring = MonitoringSync(kube, settings)
        self.decision_log = decision_log or DecisionLogCheck(kube, settings, None)
        # uid -> its lock, only while a reconcile of that model holds it or waits for it
        self._locks: dict[str, _LockEntry] = {}
        self._locks_guard = threading.Lock()
        self.rand = rand
        # (uid, version) -> the archive that failed; kept in memory: a restarted operator
        # starts again at the first step, which is what a restart is for
        self._failed_archives: dict[tuple[str, str], _FailedArchive] = {}
        # uid -> resourceVersion of the status this operator last wrote for it
        self._written: dict[str, int] = {}
        # uid -> (hash of what its last Deployment was built from, that Deployment's digest)
        self._digests: dict[str, tuple[int, str]] = {}
        self.prometheus = Prometheus(settings.prometheus_url) if settings.prometheus_url else None
        self.monotonic = monotonic
        self.fleet_updates = TokenBucket(settings.fleet_updates_per_second, monotonic)
        # uid -> when its turn to change its serving Pods comes (monotonic clock)
        self._turns: dict[str, float] = {}
        # when each model is reconciled next (set by the operator; None: by the caller)
        self.wakeups: Wakeups | None = None

    @contextlib.contextmanager
    def _lock(self, uid: str) -> Iterator[None]:
        """Hold the model's lock for the block. Its entry goes with the last reconcile that
        holds or waits for it, so the map never outgrows the reconciles in flight."""
        with self._locks_guard:
            entry = self._locks.setdefault(uid, _LockEntry())
            entry.users += 1
        try:
            with entry.lock:
                yield
        finally:
            with self._locks_guard:
                entry.users -= 1
                if entry.users == 0:
                    del self._locks[uid]

    def _record(
        self,
        events: list[Event] | None,
        model: ModelSpec,
        kind: str,
        version: str,
        details: Mapping[str, Any],
        at: dt.datetime,
        *,
        ensure: bool = False,
    ) -> None:
        """Write a ledger record; a failure is reported but never undoes a transition.

        ``ensure``: make sure the ledger holds the record of a transition the cluster
        shows (its time comes from the object the transition changed, so every retry
        writes the same record, and a crash between a transition and its record leaves
        no gap). ``events`` None: a catch-up of what an earlier reconcile did; a failure
        is logged and the next reconcile tries again, rather than an Event each time.
        """
        try:
            write = self.ledger.ensure if ensure else self.ledger.record
            write(model, kind, version, details, at)
        except Exception as exc:
            message = f"could not record {kind} of version {version} in the ledger: {exc}"
            if events is None:
                log.warning("%s/%s: %s; the next reconcile tries again", *_ref(model), message)
            else:
                events.append(Event("Warning", "LedgerWriteFailed", message))

    def _ensure(
        self,
        events: list[Event] | None,
        model: ModelSpec,
        kind: str,
        version: str,
        details: Mapping[str, Any],
        at: dt.datetime,
    ) -> None:
        self._record(events, model, kind, version, details, at, ensure=True)

    def _catch_up_ledger(self, model: ModelSpec, observed: Observed) -> None:
        """The records of the transitions the cluster shows: a version's Deployment
        exists, the Service selects a version, a version is marked retiring. Each is
        written after its transition; a crash in between leaves it to this."""
        for dep in observed.deployments:
            if dep.deployed_at is not None:  # older Deployments: recorded when made
                details = {"uri": dep.uri, "sha256": dep.sha256}
                self._ensure(None, model, ledger.DEPLOYED, dep.version, details, dep.deployed_at)
            if dep.retiring_since is not None:
                self._ensure(None, model, ledger.RETIRING, dep.version, {}, dep.retiring_since)
            if dep.step >= 1 and dep.step_since is not None:
                split: dict[str, Any] = {"step": dep.step, "stable": observed.service_version}
                steps = model.rollout.steps
                if dep.version == model.version and dep.step <= len(steps):
                    split.update(weight=steps[dep.step - 1].weight, strategy=model.rollout.strategy)
                self._ensure(None, model, ledger.TRAFFIC_SPLIT, dep.version, split, dep.step_since)
        selected = observed.service_version
        if selected and observed.switched_at is not None:
            serving = observed.deployment(selected)
            switched: dict[str, Any] = {
                "uri": serving.uri if serving else "",
                "sha256": serving.sha256 if serving else "",
                "previous": observed.switched_from,
            }
            self._ensure(None, model, ledger.SWITCHED, selected, switched, observed.switched_at)

    def _fresh(self, meta: Mapping[str, Any]) -> dict[str, Any] | None:
        """The MLModel as stored now, or None if it is gone (or replaced by a new object)."""
        try:
            fresh = self.kube.get_model(meta["namespace"], meta["name"])
        except NotFound:
            return None
        return fresh if fresh["metadata"].get("uid") == meta["uid"] else None

    def _usable(self, body: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """``body`` (what kopf's watch last showed) when it can be planned from: a whole
        MLModel, no older than the last status this operator wrote for it. The status
        write carries the body's resourceVersion, so a body that is behind anyone else's
        write is refused (409) and the next attempt reads the object. Called under the
        object's lock: a status written a moment ago by another reconcile is seen here."""
        if body is None or "spec" not in body:
            return None
        meta = body.get("metadata") or {}
        with self._locks_guard:
            written = self._written.get(str(meta.get("uid")))
        if written is None:
            return body
        version = revision(body)
        return body if version is not None and version >= written else None

    def wrote(self, body: Mapping[str, Any]) -> bool:
        """True when ``body`` is exactly the MLModel this operator's last status write for
        it left: the watch showing that write back. Nothing in it is news (the write was
        accepted on the resourceVersion it was planned from), and the reconcile that made
        it has named the model's next look."""
        meta = body.get("metadata") or {}
        with self._locks_guard:
            written = self._written.get(str(meta.get("uid")))
        return written is not None and revision(body) == written

    def forget(self, uid: str) -> None:
        """Drop what is remembered about a model that is gone."""
        with self._locks_guard:
            self._written.pop(uid, None)
            self._turns.pop(uid, None)
            self._digests.pop(uid, None)
        self._forget_archives(uid, keep=())
        self.monitoring.forget(uid)
        self.verifier.forget(uid)
        if self.wakeups is not None:
            self.wakeups.forget(uid)
        self.ledger.forget(uid)

    def _forget_archives(self, uid: str, keep: Collection[str]) -> None:
        """Forget the failed archives of ``uid``'s versions other than ``keep``."""
        with self._locks_guard:
            for key in [k for k in self._failed_archives if k[0] == uid and k[1] not in keep]:
                del self._failed_archives[key]

    # ------------------------------------------------------------------ reconcile

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        """Reconcile one MLModel and write its status (only when it changed)."""
        meta = body["metadata"]
        with self._lock(meta["uid"]):
            since = self.wakeups.token() if self.wakeups is not None else None
            outcome = self._converge(meta, self._compute, body)
            if self.wakeups is not None and not outcome.gone:
                # under the lock: a reconcile that finished earlier never names it later
                self.wakeups.after(
                    meta["uid"], meta["namespace"], meta["name"], outcome.requeue_after, since
                )
            return outcome

    def _compute(self, fresh: Mapping[str, Any]) -> Outcome:
        old_status: Mapping[str, Any] = fresh.get("status") or {}
        if (fresh.get("metadata") or {}).get("deletionTimestamp"):
            # being deleted: :meth:`finalize` archives it, and nothing may be rolled out,
            # switched or re-made behind it (an event of one of its objects, or a wake-up,
            # still comes here)
            return Outcome(dict(old_status), previous=old_status, gone=True)
        try:
            model = parse_model(fresh)
        except SpecError as exc:
            return self._invalid(fresh, old_status, exc)
        notes = (fresh.get("metadata") or {}).get("annotations") or {}
        outcome = self._reconcile(model, old_status, notes)
        outcome.previous = old_status
        return outcome

    def _converge(
        self,
        meta: Mapping[str, Any],
        compute: Callable[[Mapping[str, Any]], Outcome],
        body: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """Compute from the MLModel kopf handed over (or, when it is not usable, read it),
        and write the status computed from exactly that object: the write carries its
        resourceVersion, so the apiserver refuses it when anyone (another replica, a
        person, kopf's own annotations) changed the object in between, and then this
        reads and computes again rather than overwrite what it did not see. Called under
        the object's lock; every action is safe to repeat.
        """
        events: list[Event] = []
        outcome = Outcome({}, gone=True)
        given = self._usable(body)
        if given is None:  # kopf's body is behind: the cache's copy may not be
            held = self.kube.held_model(meta["namespace"], meta["name"])
            if held is not None and held["metadata"].get("uid") == meta["uid"]:
                given = self._usable(held)
        for _ in range(STATUS_WRITE_ATTEMPTS):
            fresh = given if given is not None else self._fresh(meta)
            given = None  # a second attempt reads the object
            if fresh is None:
                self.forget(meta["uid"])
                return Outcome({}, events, gone=True)
            outcome = compute(fresh)
            events.extend(e for e in outcome.events if e not in events)  # once each
            outcome.events = events
            if not status_changed(outcome.status, outcome.previous):
                return outcome
            reached("before-status-write")
            try:
                written = self.kube.patch_model_status(
                    meta["namespace"],
                    meta["name"],
                    outcome.status,
                    resource_version=fresh["metadata"]["resourceVersion"],
                )
            except NotFound:
                self.forget(meta["uid"])
                return Outcome({}, events, gone=True)
            except ApiConflict:
                continue
            reached("after-status-write")
            self._remember_written(meta["uid"], written)
            outcome.written = True
            return outcome
        # Changed under every attempt: the next reconcile writes it, soon.
        outcome.requeue_after = min(outcome.requeue_after or POLL_SECONDS, POLL_SECONDS)
        return outcome

    def _turn(self, uid: str) -> float:
        """Seconds until this model may change its serving Deployment's Pods (0.0: now),
        from the fleet's update budget; a model keeps the turn it was given."""
        now = self.monotonic()
        with self._locks_guard:
            due = self._turns.pop(uid, None)
            if due is None:
                due = now + self.fleet_updates.reserve()
            if due <= now:
                return 0.0
            self._turns[uid] = due
            return due - now

    def _remember_written(self, uid: str, written: Mapping[str, Any] | None) -> None:
        """The resourceVersion of the status just written: a body older than it is not
        planned from (it would not show what was just done)."""
        version = revision(written)
        if version is None:
            version = UNKNOWN_VERSION  # no body is usable: the next reconcile reads it
        with self._locks_guard:
            self._written.pop(uid, None)  # last written, last in the map
            self._written[uid] = version
            while len(self._written) > WRITTEN_KEPT:
                del self._written[next(iter(self._written))]

    def _observe(
        self,
        model: ModelSpec,
        old_status: Mapping[str, Any],
        notes: Mapping[str, str] | None = None,
    ) -> Observed:
        ns, name, uid = model.ref.namespace, model.ref.name, model.ref.uid
        deployments = tuple(
            DeploymentState.from_object(o)
            for o in self.kube.list_deployments(ns, name, uid)  # only those it controls
            if not o["metadata"].get("deletionTimestamp")
        )
        conflicts: list[ForeignObject] = []
        # a Service someone else made with the model's name is looked for before the
        # first Deployment; after that, the switch's own write would find it (409)
        service = self.kube.get_service(ns, name, read_if_missing=not deployments)
        if service is not None and not controlled_by(service, uid):
            conflicts.append(ForeignObject("Service", ns, name, holder(service)))
            service = None  # its selector says nothing about this model
        target = deployment_name(name, model.version)
        if not any(d.name == target for d in deployments):
            other = self.kube.get_deployment(ns, target)
            if other is not None and not controlled_by(other, uid):
                conflicts.append(ForeignObject("Deployment", ns, target, holder(other)))
        service_version = (
            ((service.get("spec") or {}).get("selector") or {}).get(VERSION_LABEL)
            if service
            else None
        )
        service_notes = ((service or {}).get("metadata") or {}).get("annotations") or {}
        split = None
        if service is not None and service_version is None:
            # a canary: the selector names no version, the annotations say which is which
            service_version = service_notes.get(STABLE_VERSION_ANNOTATION)
            split = service_notes.get(CANARY_VERSION_ANNOTATION)
        running = RunningRollout.from_status(old_status.get("rollout"))
        shadow = None
        if model.rollout.strategy == "shadow" or (running and running.strategy == "shadow"):
            found = self.kube.get_own_service(ns, shadow_service_name(name))
            if found is not None and controlled_by(found, uid):
                shadow = ((found.get("spec") or {}).get("selector") or {}).get(VERSION_LABEL)
        notes = notes or {}
        history = tuple(HistoryEntry.from_status(h) for h in old_status.get("history") or [])
        return Observed(
            deployments=deployments,
            service_version=service_version,
            history=history,
            now=self.clock(),
            secret_present=self.kube.secret_exists(ns, self.settings.s3_credentials_secret),
            image_problem=self.settings.image_problem(
                model.serving.image or self.settings.serving_image
            ),
            conflicts=tuple(conflicts),
            switched_at=parse_time(service_notes.get(SWITCHED_AT_ANNOTATION)),
            switched_from=service_notes.get(SWITCHED_FROM_ANNOTATION),
            split=split,
            running=running,
            ended=EndedRollout.from_status(old_status.get("lastRollout")),
            prometheus=bool(self.settings.prometheus_url),
            promote=notes.get(ANN_PROMOTE),
            abort=notes.get(ANN_ABORT),
            shadow=shadow,
        )

    def _analysis(self, model: ModelSpec, observed: Observed) -> Observed:
        """The running step's analysis, read from Prometheus (only while a step runs)."""
        rollout = model.rollout
        cand = observed.deployment(model.version)
        if (
            not rollout.progressive
            or not rollout.analysis.enabled
            or not self.settings.prometheus_url
            or cand is None
            or cand.step < 1
            or observed.service_version in (None, model.version)
        ):
            return observed
        since = cand.step_since or observed.now
        if self.prometheus is None:
            return observed
        verdict = judge(
            self.prometheus,
            rollout.analysis,
            model.ref.namespace,
            model.ref.name,
            model.version,
            rollout.strategy,
            (observed.now - since).total_seconds(),
        )
        return replace(observed, analysis=verdict)

    def _reconcile(
        self,
        model: ModelSpec,
        old_status: Mapping[str, Any],
        notes: Mapping[str, str] | None = None,
    ) -> Outcome:
        observed = self._analysis(model, self._observe(model, old_status, notes))
        # a failed archive is remembered while its version may still leave: not once it
        # is the one asked for again (a rollback), nor once it is gone
        self._forget_archives(
            model.ref.uid,
            keep=(
                {d.version for d in observed.deployments}
                | {e.version for e in observed.history if e.open}
            )
            - {model.version},
        )
        # A version whose Deployment was made for these bytes was verified then: its
        # artifact is not fetched again (it is, before that Deployment changes).
        target = observed.deployment(model.version)
        deployed = (
            target is not None
            and target.sha256 == model.artifact.sha256
            and target.uri == model.artifact.uri
        )
        verdict = self.verifier.check(model.artifact, owner=model.ref.uid, deployed=deployed)
        if verdict.blocks_rollout:
            observed = replace(observed, artifact_problem=(verdict.reason, verdict.message))
        decision_log = self.decision_log.check(model)
        if decision_log.status is False:
            observed = replace(
                observed, decision_log_problem=(decision_log.reason, decision_log.message)
            )
        secret = self.settings.s3_credentials_secret
        p = plan(model, observed, secret)
        events: list[Event] = []
        requeue = [p.requeue_after] if p.requeue_after else []
        try:
            history, archive_note = self._act(model, p, observed, events, requeue, verdict.etag)
        except NotControlled as exc:
            # Someone made (or took) an object with that name since it was looked at: the
            # plan the next reconcile would make, now; nothing after that action is done.
            foreign = ForeignObject(exc.kind, exc.namespace, exc.name, exc.holder)
            observed = replace(observed, conflicts=(*observed.conflicts, foreign))
            p = plan(model, observed, secret)
            history, archive_note, requeue = observed.history, None, [p.requeue_after or 0.0]
        except _ArtifactChanged as exc:
            # The bytes changed under the same key since the Deployment was made: the
            # version's Deployment is not changed; the plan that knows it, now.
            verdict = exc.verdict
            observed = replace(observed, artifact_problem=(verdict.reason, verdict.message))
            p = plan(model, observed, secret)
            history, archive_note, requeue = observed.history, None, [p.requeue_after or 0.0]
        except _Paced as exc:
            # the fleet's update budget is spent: this model's turn comes after the wait;
            # nothing after that action is done
            history, archive_note, requeue = observed.history, None, [exc.wait]
        events[:0] = p.events
        if (event := decision_log_event(old_status, decision_log)) is not None:
            events.append(event)
        now = observed.now
        for version in p.deployed_now:
            history = record_deployed(history, model, version, now)

        serving = observed.deployment(p.active_version) if p.active_version else None
        status = build_status(
            model,
            p,
            history,
            old_status,
            serving,
            verdict,
            archive_note,
            endpoint_url(model, self.settings),
            now,
            monitoring=self.monitoring.sync(model, old_status),
            decision_log=decision_log,
        )
        if status["phase"] != old_status.get("phase") or _reason(status) != _reason(old_status):
            # one Event per transition, not one per reconcile
            bad = status["phase"] in (Phase.DEGRADED, Phase.FAILED)
            reason = p.blocked_reason or (
                "RolloutTimedOut" if p.rollout_timed_out else status["phase"]
            )
            if not any(e.reason == reason for e in events):  # the plan's says it already
                events.append(Event("Warning" if bad else "Normal", reason, p.message))
        requeue = [r for r in requeue if r]
        return Outcome(status, events, min(requeue) if requeue else None)

    def _act(
        self,
        model: ModelSpec,
        p: Plan,
        observed: Observed,
        events: list[Event],
        requeue: list[float],
        etag: str = "",
    ) -> tuple[tuple[HistoryEntry, ...], ArchiveNote | None]:
        """Carry out the plan's actions in order; the history and the archive step's note.
        ``etag``: the artifact's, as this reconcile verified it (recorded on a Deployment
        it makes).

        Raises NotControlled when an object to write turned out to be someone else's; the
        actions before it are done (each is safe to repeat), the ones after it are not.
        """
        ns = model.ref.namespace
        history = observed.history
        archive_note: ArchiveNote | None = None
        now = observed.now
        # the annotations that time a transition carry this instant to the microsecond, and
        # the ledger record of the transition carries exactly that instant
        stamp = format_precise_time(now)
        # the stable version's switch, kept on the Service while a canary shares it
        held = {
            "switched_at": format_precise_time(observed.switched_at)
            if observed.switched_at
            else None,
            "switched_from": observed.switched_from,
        }
        self._catch_up_ledger(model, observed)
        for action in p.actions:
            if isinstance(action, ApplyDeployment):
                sample = action.shadow_sample
                if sample is None and model.rollout.strategy == "shadow":
                    # as at the shadow's last step: promoting it changes no Pod template
                    sample = model.rollout.steps[-1].weight / 100
                current = observed.deployment(action.version)
                desired, digest = self._desired_deployment(
                    model, current, not p.withhold_decision_log, action.replicas, sample
                )
                if current is not None and current.applied_hash != digest:
                    # a change of a running version's Pods: paced across the fleet, and its
                    # bytes checked again once its turn has come (once, not at every wait)
                    if (wait := self._turn(model.ref.uid)) > 0:
                        raise _Paced(wait)
                    same = (current.uri, current.sha256) == (
                        model.artifact.uri,
                        model.artifact.sha256,
                    )
                    fresh = self.verifier.check(
                        model.artifact,
                        owner=model.ref.uid,
                        verified_etag=current.etag if same else "",
                    )
                    if fresh.blocks_rollout:
                        raise _ArtifactChanged(fresh)
                    etag = fresh.etag
                if desired is not None:  # not what the Deployment has
                    notes = desired["metadata"]["annotations"]
                    notes[ANN_APPLIED_HASH] = digest
                    if etag:
                        notes[ANN_ARTIFACT_ETAG] = etag
                    if current is None:
                        notes[ANN_DEPLOYED_AT] = stamp
                    elif current.deployed_at is not None:  # kept: it times the record
                        notes[ANN_DEPLOYED_AT] = format_precise_time(current.deployed_at)
                    self.kube.apply(desired)
                if current is None:
                    reached("after-deployment-apply")
                    self._ensure(
                        events, model, ledger.DEPLOYED, action.version, _artifact(model), now
                    )
                    reached("after-deployed-record")
            elif isinstance(action, ClearRetiring):
                uid = self._uid_of(observed, action.name)
                self.kube.annotate_deployment(ns, action.name, uid, {ANN_RETIRING: None})
            elif isinstance(action, SwitchService) and action.version == observed.service_version:
                # a canary's share taken back: the stable version still serves, no switch
                self.kube.apply(build_service(model, action.version, self.settings, **held))
            elif isinstance(action, SwitchService):
                previous = observed.service_version
                self.kube.apply(
                    build_service(
                        model,
                        action.version,
                        self.settings,
                        switched_at=stamp,
                        switched_from=previous,
                    )
                )
                reached("after-switch")
                details = {**_artifact(model), "previous": previous}
                self._ensure(events, model, ledger.SWITCHED, action.version, details, now)
            elif isinstance(action, MarkRetiring):
                uid = self._uid_of(observed, action.name)
                self.kube.annotate_deployment(ns, action.name, uid, {ANN_RETIRING: stamp})
                reached("after-mark-retiring")
                self._ensure(events, model, ledger.RETIRING, action.version, {}, now)
            elif isinstance(action, SetStep):
                uid = self._uid_of(observed, action.name)
                self.kube.annotate_deployment(
                    ns, action.name, uid, {ANN_STEP: str(action.step), ANN_STEP_SINCE: stamp}
                )
                details = {"step": action.step, "weight": action.weight,
                           "strategy": model.rollout.strategy,
                           "stable": observed.service_version}  # fmt: skip
                self._ensure(events, model, ledger.TRAFFIC_SPLIT, action.version, details, now)
            elif isinstance(action, SplitService):
                self.kube.apply(
                    build_service(
                        model, action.stable, self.settings, canary=action.candidate, **held
                    )
                )
            elif isinstance(action, ShadowTraffic):
                if action.candidate is not None:
                    self.kube.apply(build_shadow_service(model, action.candidate, self.settings))
                else:
                    self.kube.delete_owned(
                        "v1", "Service", ns, shadow_service_name(model.ref.name), model.ref.uid
                    )
            elif isinstance(action, MarkRolledBack):
                uid = self._uid_of(observed, action.name)
                self.kube.annotate_deployment(
                    ns, action.name, uid, {ANN_ROLLED_BACK: action.message[:1024]}
                )
                details = {"result": action.result, "message": action.message,
                           "stable": observed.service_version,
                           "sha256": model.artifact.sha256}  # fmt: skip
                self._record(events, model, ledger.ROLLED_BACK, action.version, details, now)
            elif isinstance(action, DeleteUnserved):
                self.kube.delete_deployment(ns, action.deployment.name, action.deployment.uid)
                events.append(
                    Event(
                        "Normal",
                        "Superseded",
                        f"deleted Deployment {action.deployment.name}: version "
                        f"{action.deployment.version} never served and is no longer wanted",
                    )
                )
            elif isinstance(action, Retire):
                history, note, evs, retry_after = self._retire(model, action, history, now)
                archive_note = note
                events.extend(evs)
                if retry_after is not None:
                    requeue.append(retry_after)
        return history, archive_note

    def _desired_deployment(
        self,
        model: ModelSpec,
        current: DeploymentState | None,
        decision_log: bool,
        replicas: int | None,
        shadow_sample: float | None,
    ) -> tuple[dict[str, Any] | None, str]:
        """The Deployment to apply and its digest; None and the digest when ``current``
        already has it. What it is built from is hashed and kept with the digest, one
        entry per model: at rest the same inputs give the same digest, and the Deployment
        is not built and serialised again (half of a reconcile's CPU at rest)."""
        try:
            inputs: int | None = hash((self.settings, model, decision_log, replicas, shadow_sample))
        except TypeError:  # a spec field that is not hashable: built every time
            inputs = None
        with self._locks_guard:
            known = self._digests.get(model.ref.uid)
        # built from these very inputs, and the Deployment has what they gave
        if (
            known is not None
            and inputs is not None
            and known[0] == inputs
            and current is not None
            and current.applied_hash == known[1]
        ):
            return None, known[1]
        desired = build_deployment(
            model,
            self.settings,
            decision_log=decision_log,
            replicas=replicas,
            shadow_sample=shadow_sample,
        )
        digest = applied_hash(desired)
        if inputs is not None:
            with self._locks_guard:
                self._digests[model.ref.uid] = (inputs, digest)
        if current is not None and current.applied_hash == digest:
            return None, digest
        return desired, digest

    @staticmethod
    def _uid_of(observed: Observed, name: str) -> str:
        """The uid of one of the model's Deployments, as observed (the planner only names
        Deployments it was shown)."""
        return next(d.uid for d in observed.deployments if d.name == name)

    def _retire(
        self,
        model: ModelSpec,
        action: Retire,
        history: tuple[HistoryEntry, ...],
        now: dt.datetime,
    ) -> tuple[tuple[HistoryEntry, ...], ArchiveNote, list[Event], float | None]:
        """Archive, then delete, a leaving version; with the seconds until the next attempt
        when the archive failed (attempts back off: :func:`archive_retry_delay`)."""
        dep = action.deployment
        entry = next(
            (e for e in reversed(history) if e.version == dep.version and e.open),
            HistoryEntry(dep.version, dep.sha256, "", format_time(dep.created_at)),
        )
        key = (model.ref.uid, dep.version)
        failed = self._failed_archives.get(key)
        if failed is not None and now < failed.next_at:  # not due: say what was said
            wait = max(1.0, (failed.next_at - now).total_seconds())
            return history, ArchiveNote(False, Reason.ARCHIVE_FAILED, failed.message), [], wait
        try:
            result = self.archiver(model, entry, action.reason, now)
        except ArchiveError as exc:
            attempts = (failed.attempts if failed else 0) + 1
            delay = archive_retry_delay(attempts, self.rand())
            next_at = now + dt.timedelta(seconds=delay)
            message = (
                f"version {dep.version} is not archived ({exc}); its Deployment is kept; "
                f"attempt {attempts} failed, next attempt at {format_time(next_at)} "
                f"(in {delay:.0f}s)"
            )
            with self._locks_guard:
                self._failed_archives.pop(key, None)
                self._failed_archives[key] = _FailedArchive(attempts, next_at, message)
                while len(self._failed_archives) > FAILED_ARCHIVES_KEPT:
                    del self._failed_archives[next(iter(self._failed_archives))]
            return (
                history,
                ArchiveNote(False, Reason.ARCHIVE_FAILED, message),
                [Event("Warning", "ArchiveFailed", message)],
                delay,
            )
        with self._locks_guard:
            self._failed_archives.pop(key, None)
        events: list[Event] = []
        if result.location:
            self._record(
                events, model, ledger.ARCHIVED, dep.version, _entry(entry, result.location), now
            )
        reached("before-delete")
        # Only now, with the archive verified (or recorded as not configured), delete.
        if dep.name:  # empty when the Deployment is already gone
            self.kube.delete_deployment(model.ref.namespace, dep.name, dep.uid)
            reached("after-delete")
        history = record_retired(history, dep, now, action.reason, result.location)
        self._record(
            events,
            model,
            ledger.RETIRED,
            dep.version,
            {"reason": action.reason, "deployedAt": entry.deployed_at},  # one record per period
            now,
        )
        reached("after-retired-record")
        reason = Reason.ARCHIVE_SUCCEEDED if result.location else Reason.ARCHIVE_SKIPPED
        events += [
            Event("Normal", "Archived" if result.location else "NotArchived", result.message),
            *_scan_refused_event(dep.version, result),
            Event(
                "Normal", "Retired", f"version {dep.version} retired; Deployment {dep.name} deleted"
            ),
        ]
        return history, ArchiveNote(True, reason, result.message), events, None

    def _invalid(
        self, body: Mapping[str, Any], old_status: Mapping[str, Any], exc: SpecError
    ) -> Outcome:
        """A spec the schema let through but that cannot work: say so, touch nothing."""
        now = self.clock()
        generation = int(body.get("metadata", {}).get("generation", 0))
        conds = c.set_condition(
            list(old_status.get("conditions") or []),
            c.make_condition(c.SPEC_VALID, False, Reason.INVALID_SPEC, str(exc), generation, now),
        )
        status = dict(old_status)
        status.update(
            {
                "observedGeneration": generation,
                "phase": Phase.DEGRADED if old_status.get("activeVersion") else Phase.FAILED,
                "message": str(exc),
                "conditions": conds,
            }
        )
        return Outcome(
            status, [Event("Warning", Reason.INVALID_SPEC, str(exc))], None, previous=old_status
        )

    # ------------------------------------------------------------------ delete

    def finalize(self, body: Mapping[str, Any]) -> Outcome:
        """Archive the active version before the MLModel (and what it owns) goes away.

        Raises ArchiveError while the archive cannot be made: the finalizer stays until it
        can, unless a person set the skip annotation explicitly.
        """
        meta = body["metadata"]
        with self._lock(meta["uid"]):
            outcome = self._converge(meta, self._finalize)
        self.forget(meta["uid"])
        return outcome

    def _finalize(self, body: Mapping[str, Any]) -> Outcome:
        old_status: Mapping[str, Any] = body.get("status") or {}
        annotations = body.get("metadata", {}).get("annotations") or {}
        now = self.clock()
        history = tuple(HistoryEntry.from_status(h) for h in old_status.get("history") or [])
        open_entries = [e for e in history if e.open]
        events: list[Event] = []
        if not open_entries:
            return Outcome(dict(old_status, phase=Phase.DELETING), events, previous=old_status)
        try:
            model = parse_model(body)
        except SpecError as exc:
            model = None
            events.append(
                Event("Warning", Reason.INVALID_SPEC, f"deleting with an invalid spec: {exc}")
            )
        skip = annotations.get(SKIP_ARCHIVE_ANNOTATION, "").lower() == "true"
        for entry in open_entries:
            location: str | None = None
            if skip or model is None:
                events.append(
                    Event(
                        "Warning",
                        "ArchiveSkipped",
                        f"version {entry.version} deleted without an archive: "
                        + (
                            f"annotation {SKIP_ARCHIVE_ANNOTATION}=true" if skip else "invalid spec"
                        ),
                    )
                )
            else:
                result = self.archiver(model, entry, "Deleted", now)  # may raise ArchiveError
                location = result.location
                events.append(
                    Event("Normal", "Archived" if location else "NotArchived", result.message)
                )
                events.extend(_scan_refused_event(entry.version, result))
                if location:
                    self._record(
                        events, model, ledger.ARCHIVED, entry.version, _entry(entry, location), now
                    )
                self._record(
                    events,
                    model,
                    ledger.DELETED,
                    entry.version,
                    {"deployedAt": entry.deployed_at},
                    now,
                )
            dep = DeploymentState(
                name="", uid="", version=entry.version, sha256=entry.sha256, desired=0,
                available=0, ready=0, updated=0, current=True,
                created_at=now,
            )  # fmt: skip
            history = record_retired(history, dep, now, "Deleted", location)
        status = dict(old_status)
        status.update({"phase": Phase.DELETING, "history": [e.to_status() for e in history]})
        return Outcome(status, events, previous=old_status)
