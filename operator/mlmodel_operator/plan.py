"""The pure planner: what should exist, what does exist -> the next actions.

One function, :func:`plan`, serves create, update, resume after a restart and the
periodic timer alike: it looks only at levels (the spec, the Deployments that exist, the
Service's selector, the status as last written, the clock), never at which event woke
it. Running it twice on the same inputs gives the same plan, so the operator may be
killed at any line and converge when it comes back.

The lifecycle of a new version, as the plan carries it out across reconciles:

    ApplyDeployment(new)  -> wait until it is Available (or the ready timeout: Degraded)
    SwitchService(new)    -> only once it is Available
    MarkRetiring(old)     -> wait retirement.drainSeconds
    Retire(old)           -> archive, verify, and only then delete the old Deployment
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlmodel_operator.conditions import Phase, Reason, format_time
from mlmodel_operator.desired import SHA256_ANNOTATION, URI_ANNOTATION, VERSION_LABEL
from mlmodel_operator.spec import ModelSpec, SpecError, check_version_reuse

ANN_RETIRING = "ml.lifecycle.io/retiring-since"
ANN_APPLIED_HASH = "ml.lifecycle.io/applied-hash"
# When the operator created the Deployment, to the microsecond (creationTimestamp has
# whole seconds): the ledger's Deployed record is rebuilt from it after a crash.
ANN_DEPLOYED_AT = "ml.lifecycle.io/deployed-at"


# How soon to look again while something is in flight; the timer is the backstop.
POLL_SECONDS = 2.0
SLOW_POLL_SECONDS = 15.0


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it, or None."""
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- observed


@dataclass(frozen=True)
class DeploymentState:
    """What the planner needs to know about one existing serving Deployment."""

    name: str
    uid: str
    version: str
    sha256: str
    desired: int
    available: int
    ready: int
    updated: int
    current: bool  # the Deployment controller has seen the latest spec
    created_at: dt.datetime
    retiring_since: dt.datetime | None = None
    applied_hash: str = ""
    uri: str = ""  # the artifact it serves (empty on Deployments older than the annotation)
    deployed_at: dt.datetime | None = None  # ANN_DEPLOYED_AT; None on older Deployments

    @property
    def is_available(self) -> bool:
        """Every desired replica is updated and available (and the controller caught up)."""
        return self.current and self.updated >= self.desired and self.available >= self.desired

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> DeploymentState:
        meta = obj.get("metadata", {})
        spec = obj.get("spec", {})
        status = obj.get("status", {})
        annotations = meta.get("annotations") or {}
        created = parse_time(meta.get("creationTimestamp")) or dt.datetime.now(dt.UTC)
        return cls(
            name=meta["name"],
            uid=meta.get("uid", ""),
            version=(meta.get("labels") or {}).get(VERSION_LABEL, ""),
            sha256=annotations.get(SHA256_ANNOTATION, ""),
            desired=int(spec.get("replicas", 1)),
            available=int(status.get("availableReplicas", 0) or 0),
            ready=int(status.get("readyReplicas", 0) or 0),
            updated=int(status.get("updatedReplicas", 0) or 0),
            current=int(status.get("observedGeneration", 0) or 0)
            >= int(meta.get("generation", 1) or 1),
            created_at=created,
            retiring_since=parse_time(annotations.get(ANN_RETIRING)),
            applied_hash=annotations.get(ANN_APPLIED_HASH, ""),
            uri=annotations.get(URI_ANNOTATION, ""),
            deployed_at=parse_time(annotations.get(ANN_DEPLOYED_AT)),
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One served version: when it took traffic, when it stopped, and where it rests."""

    version: str
    sha256: str
    uri: str
    deployed_at: str
    retired_at: str | None = None
    reason: str | None = None
    archive: str | None = None

    @property
    def open(self) -> bool:
        return self.retired_at is None

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "sha256": self.sha256,
            "uri": self.uri,
            "deployedAt": self.deployed_at,
        }
        if self.retired_at:
            out["retiredAt"] = self.retired_at
        if self.reason:
            out["reason"] = self.reason
        if self.archive:
            out["archive"] = self.archive
        return out

    @classmethod
    def from_status(cls, item: Mapping[str, Any]) -> HistoryEntry:
        return cls(
            version=str(item.get("version", "")),
            sha256=str(item.get("sha256", "")),
            uri=str(item.get("uri", "")),
            deployed_at=str(item.get("deployedAt", "")),
            retired_at=item.get("retiredAt"),
            reason=item.get("reason"),
            archive=item.get("archive"),
        )


@dataclass(frozen=True)
class ForeignObject:
    """An object with a name the model needs that this MLModel does not control."""

    kind: str
    namespace: str
    name: str
    holder: str  # desired.holder(): its controller, or who wrote it

    @property
    def message(self) -> str:
        rename = "metadata.name or spec.version" if self.kind == "Deployment" else "metadata.name"
        return (
            f"{self.kind} {self.namespace}/{self.name} exists and is not controlled by this "
            f"MLModel ({self.holder}); the operator neither changes nor deletes it: remove it, "
            f"or give this MLModel another {rename}"
        )


@dataclass(frozen=True)
class Observed:
    """Everything the planner reads about the world, gathered by the handler."""

    deployments: tuple[DeploymentState, ...]
    service_version: str | None  # the version the Service selects now; None: no Service
    history: tuple[HistoryEntry, ...]
    now: dt.datetime
    secret_present: bool = True
    artifact_problem: tuple[str, str] | None = None  # (reason, message) if it cannot be used
    # why the serving image may not run (Settings.image_problem), if it may not
    image_problem: str | None = None
    # (reason, message) when the decision log cannot be written (DecisionLogReady False)
    decision_log_problem: tuple[str, str] | None = None
    # objects the model needs whose names are held by someone else (its Service, or the
    # Deployment of the version it asks for)
    conflicts: tuple[ForeignObject, ...] = ()
    # when the Service took its selector and the version it selected before (its
    # annotations; None on a Service older than them): for the ledger, not the plan
    switched_at: dt.datetime | None = None
    switched_from: str | None = None

    def deployment(self, version: str) -> DeploymentState | None:
        return next((d for d in self.deployments if d.version == version), None)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ApplyDeployment:
    version: str


@dataclass(frozen=True)
class ClearRetiring:
    name: str


@dataclass(frozen=True)
class SwitchService:
    version: str


@dataclass(frozen=True)
class MarkRetiring:
    name: str
    version: str


@dataclass(frozen=True)
class Retire:
    """Archive ``deployment``'s version (it served traffic), verify, then delete it."""

    deployment: DeploymentState
    reason: str = "SpecChanged"


@dataclass(frozen=True)
class DeleteUnserved:
    """A Deployment of a version that never took traffic and is no longer wanted."""

    deployment: DeploymentState


Action = ApplyDeployment | ClearRetiring | SwitchService | MarkRetiring | Retire | DeleteUnserved


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    phase: str
    active_version: str | None
    message: str
    blocked: str | None = None  # why the target version is not rolled out (spec problem)
    blocked_reason: str | None = None
    rollout_timed_out: bool = False
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    deployed_now: tuple[str, ...] = field(default=())  # versions that took traffic now
    # Build the Deployment without the decision log the spec asks for (best-effort mode
    # while the redact key is missing: pods that cannot read it would never start).
    withhold_decision_log: bool = False


# --------------------------------------------------------------------------- plan


def digest_conflict(model: ModelSpec, observed: Observed) -> str | None:
    """A version string may never name two different artifacts."""
    try:
        check_version_reuse(model, [e.to_status() for e in observed.history])
    except SpecError as exc:
        return str(exc)
    dep = observed.deployment(model.version)
    if dep is not None and dep.sha256 and dep.sha256 != model.artifact.sha256:
        return (
            f"spec.version: {model.version!r} is deployed with sha256 {dep.sha256[:12]}…, "
            f"and spec.artifact.sha256 is now {model.artifact.sha256[:12]}…; "
            "publish the new artifact under a new spec.version"
        )
    return None


def plan(model: ModelSpec, observed: Observed, secret_name: str) -> Plan:
    """The next actions, the phase and the message, from levels only."""
    target = model.version
    now = observed.now
    actions: list[Action] = []
    events: list[Event] = []
    requeue: list[float] = []
    open_versions = {e.version for e in observed.history if e.open}

    serving_dep = (
        observed.deployment(observed.service_version) if observed.service_version else None
    )
    someone_serves = serving_dep is not None and serving_dep.available > 0

    blocked, blocked_reason = None, None
    conflict = digest_conflict(model, observed)
    if conflict:
        blocked, blocked_reason = conflict, Reason.VERSION_REUSED
    elif observed.conflicts:
        blocked = "; ".join(c.message for c in observed.conflicts)
        blocked_reason = Reason.OBJECT_CONFLICT
    elif observed.image_problem:
        blocked, blocked_reason = observed.image_problem, Reason.IMAGE_NOT_ALLOWED
    elif not observed.secret_present:
        blocked, blocked_reason = (
            f"Secret {secret_name!r} not found in namespace {model.ref.namespace!r}: the "
            f"serving pods read spec.artifact.uri ({model.artifact.uri}) with its keys "
            "accessKey and secretKey. Create it, e.g. `kubectl create secret generic "
            f"{secret_name} -n {model.ref.namespace} --from-literal=accessKey=... "
            "--from-literal=secretKey=...`",
            Reason.MISSING_SECRET,
        )
    elif observed.artifact_problem:
        blocked_reason, blocked = observed.artifact_problem
    elif observed.decision_log_problem and model.decision_log.required:
        # best-effort pods serve without the log; required ones would answer nothing
        blocked_reason, problem = observed.decision_log_problem
        blocked = (
            f"{problem}; spec.decisionLog.mode is required, so nothing is rolled out or "
            "changed until decision records can be written"
        )

    if blocked:
        # Nothing new is rolled out; whatever serves keeps serving, untouched.
        phase = Phase.DEGRADED if someone_serves else Phase.FAILED
        return Plan(
            actions=(),
            phase=phase,
            active_version=observed.service_version if someone_serves else None,
            message=blocked,
            blocked=blocked,
            blocked_reason=blocked_reason,
            requeue_after=SLOW_POLL_SECONDS,
        )

    withhold = (
        observed.decision_log_problem is not None
        and observed.decision_log_problem[0] == Reason.REDACT_KEY_MISSING
        and not model.decision_log.required
    )
    target_dep = observed.deployment(target)
    actions.append(ApplyDeployment(target))
    if target_dep is not None and target_dep.retiring_since is not None:
        actions.append(ClearRetiring(target_dep.name))  # rolled back before it was gone
        events.append(Event("Normal", "RetirementCancelled", f"version {target} wanted again"))
    if target_dep is None:
        events.append(Event("Normal", "Deploying", f"created Deployment for version {target}"))

    others = [d for d in observed.deployments if d.version != target]
    target_ready = target_dep is not None and target_dep.is_available
    timed_out = False
    deployed_now: list[str] = []

    if not target_ready:
        age = (now - target_dep.created_at).total_seconds() if target_dep else 0.0
        timed_out = age > model.rollout.ready_timeout_seconds
        # never-served leftovers (an earlier rollout that was superseded) go at once
        for dep in others:
            if dep.version != observed.service_version and dep.version not in open_versions:
                actions.append(DeleteUnserved(dep))
        if observed.service_version == target and target_dep is not None:
            # the active version itself lost replicas (or is scaling): it still serves
            phase = Phase.SERVING if target_dep.available > 0 else Phase.DEGRADED
            message = (
                f"version {target}: {target_dep.available}/{target_dep.desired} replicas available"
            )
            active = target
        elif someone_serves and serving_dep is not None:
            active = serving_dep.version
            if timed_out:
                phase = Phase.DEGRADED
                message = (
                    f"version {target} is not available after "
                    f"{model.rollout.ready_timeout_seconds}s (spec.rollout.readyTimeoutSeconds); "
                    f"version {active} keeps serving"
                )
            else:
                phase = Phase.DEPLOYING
                message = f"rolling out version {target}; version {active} serves until it is ready"
        else:
            active = None
            phase = Phase.FAILED if timed_out else Phase.DEPLOYING
            message = (
                f"version {target} is not available after "
                f"{model.rollout.ready_timeout_seconds}s (spec.rollout.readyTimeoutSeconds)"
                if timed_out
                else f"deploying version {target}"
            )
        requeue.append(SLOW_POLL_SECONDS if timed_out else POLL_SECONDS)
        return Plan(
            actions=tuple(actions),
            phase=phase,
            active_version=active,
            message=message,
            rollout_timed_out=timed_out,
            events=tuple(events),
            requeue_after=min(requeue),
            withhold_decision_log=withhold,
        )

    # The target is Available: traffic moves to it, then the others retire.
    assert target_dep is not None
    if observed.service_version != target:
        actions.append(SwitchService(target))
        events.append(
            Event(
                "Normal",
                "TrafficSwitched",
                f"Service now selects version {target}"
                + (f" (was {observed.service_version})" if observed.service_version else ""),
            )
        )
    if target not in open_versions:
        deployed_now.append(target)

    retiring = False
    for dep in others:
        served = dep.version in open_versions or dep.version == observed.service_version
        if not served:
            actions.append(DeleteUnserved(dep))
            continue
        retiring = True
        drain = float(model.retirement.drain_seconds)
        if dep.retiring_since is None:
            actions.append(MarkRetiring(dep.name, dep.version))
            events.append(
                Event(
                    "Normal",
                    "Retiring",
                    f"version {dep.version} retiring; draining {int(drain)}s before archive",
                )
            )
            requeue.append(max(drain, 0.5))
            continue
        waited = (now - dep.retiring_since).total_seconds()
        if waited < drain:
            requeue.append(max(drain - waited, 0.5))
            continue
        actions.append(Retire(dep))
        requeue.append(POLL_SECONDS)

    # An open history entry whose Deployment is already gone: the operator stopped between
    # deleting it and writing status. Finish the retirement (the archive step finds the
    # verified archive it already made) so the history is closed exactly once.
    for entry in observed.history:
        if entry.open and entry.version != target and observed.deployment(entry.version) is None:
            gone = DeploymentState(
                name="", uid="", version=entry.version, sha256=entry.sha256, desired=0,
                available=0, ready=0, updated=0, current=True,
                created_at=parse_time(entry.deployed_at) or now,
            )  # fmt: skip
            actions.append(Retire(gone))
            retiring = True

    if retiring:
        phase = Phase.RETIRING
        old = ", ".join(sorted(d.version for d in others if d.version != target))
        message = f"version {target} serving; retiring {old}"
    else:
        phase = Phase.SERVING
        message = f"version {target} serving: {target_dep.available}/{target_dep.desired} available"
    return Plan(
        actions=tuple(actions),
        phase=phase,
        active_version=target,
        message=message,
        events=tuple(events),
        requeue_after=min(requeue) if requeue else None,
        deployed_now=tuple(deployed_now),
        withhold_decision_log=withhold,
    )


# --------------------------------------------------------------------------- history


HISTORY_LIMIT = 50


def record_deployed(
    history: Sequence[HistoryEntry], model: ModelSpec, version: str, at: dt.datetime
) -> tuple[HistoryEntry, ...]:
    """Open a history entry for a version that just took traffic (once)."""
    if any(e.version == version and e.open for e in history):
        return tuple(history)
    entry = HistoryEntry(
        version=version,
        sha256=model.artifact.sha256,
        uri=model.artifact.uri,
        deployed_at=format_time(at),
    )
    return tuple([*history, entry][-HISTORY_LIMIT:])


def record_retired(
    history: Sequence[HistoryEntry],
    dep: DeploymentState,
    at: dt.datetime,
    reason: str,
    archive: str | None,
) -> tuple[HistoryEntry, ...]:
    """Close the open entry of a retired version (or add a closed one if none is open)."""
    out = list(history)
    for i in range(len(out) - 1, -1, -1):
        if out[i].version == dep.version and out[i].open:
            e = out[i]
            out[i] = HistoryEntry(
                e.version, e.sha256, e.uri, e.deployed_at, format_time(at), reason, archive
            )
            return tuple(out[-HISTORY_LIMIT:])
    out.append(
        HistoryEntry(
            dep.version,
            dep.sha256,
            "",
            format_time(dep.created_at),
            format_time(at),
            reason,
            archive,
        )
    )
    return tuple(out[-HISTORY_LIMIT:])
