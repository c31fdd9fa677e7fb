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
from dataclasses import dataclass, field, replace
from typing import Any

from mlmodel_operator.analysis import Verdict
from mlmodel_operator.conditions import Phase, Reason, format_time
from mlmodel_operator.desired import SHA256_ANNOTATION, URI_ANNOTATION, VERSION_LABEL
from mlmodel_operator.spec import ModelSpec, RolloutStep, SpecError, check_version_reuse

ANN_RETIRING = "ml.lifecycle.io/retiring-since"
ANN_APPLIED_HASH = "ml.lifecycle.io/applied-hash"
# When the operator created the Deployment, to the microsecond (creationTimestamp has
# whole seconds): the ledger's Deployed record is rebuilt from it after a crash.
ANN_DEPLOYED_AT = "ml.lifecycle.io/deployed-at"
# The ETag the artifact had when the operator verified it and made the Deployment: before
# that Deployment's Pods change, an object still with that ETag needs no new download.
ANN_ARTIFACT_ETAG = "ml.lifecycle.io/artifact-etag"
# A canary's or shadow's step lives on the candidate's Deployment, like the retirement
# mark on the old one: the step (from 1) and when it began; and, once the candidate is
# refused, why (so a crash between that decision and the status write loses nothing).
ANN_STEP = "ml.lifecycle.io/rollout-step"
ANN_STEP_SINCE = "ml.lifecycle.io/rollout-step-since"
ANN_ROLLED_BACK = "ml.lifecycle.io/rolled-back"
# MLModel annotations `mlmodel rollout promote|abort` set, naming the candidate
ANN_PROMOTE = "ml.lifecycle.io/promote"
ANN_ABORT = "ml.lifecycle.io/abort"


# How soon to look again while something is in flight; the timer is the backstop.
POLL_SECONDS = 2.0
ANALYSIS_POLL_SECONDS = 5.0  # how often a running step's analysis is read
SLOW_POLL_SECONDS = 15.0
# The look that sees a ready timeout pass comes this long after it (a Deployment's
# creationTimestamp has whole seconds).
TIMEOUT_MARGIN_SECONDS = 1.0


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
    etag: str = ""  # ANN_ARTIFACT_ETAG: the artifact's ETag when verified for it
    step: int = 0  # ANN_STEP: the canary or shadow step it is at (0: none)
    step_since: dt.datetime | None = None
    rolled_back: str | None = None  # ANN_ROLLED_BACK: why it was refused

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
            etag=annotations.get(ANN_ARTIFACT_ETAG, ""),
            step=_step(annotations.get(ANN_STEP)),
            step_since=parse_time(annotations.get(ANN_STEP_SINCE)),
            rolled_back=annotations.get(ANN_ROLLED_BACK),
        )


def _step(value: str | None) -> int:
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


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
class RunningRollout:
    """status.rollout as last written: a canary or shadow of ``candidate`` runs."""

    strategy: str
    candidate: str
    stable: str

    @classmethod
    def from_status(cls, raw: Any) -> RunningRollout | None:
        if not isinstance(raw, Mapping) or not raw.get("candidate"):
            return None
        return cls(str(raw.get("strategy", "")), str(raw["candidate"]), str(raw.get("stable", "")))


@dataclass(frozen=True)
class EndedRollout:
    """status.lastRollout: how the last canary or shadow ended."""

    result: str
    candidate: str
    sha256: str
    message: str = ""

    @classmethod
    def from_status(cls, raw: Any) -> EndedRollout | None:
        if not isinstance(raw, Mapping) or not raw.get("candidate") or not raw.get("result"):
            return None
        return cls(
            str(raw["result"]),
            str(raw["candidate"]),
            str(raw.get("candidateSha256", "")),
            str(raw.get("message", "")),
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
    # a canary: the candidate the Service shares traffic with (its selector names no
    # version then, and service_version is the stable one)
    split: str | None = None
    running: RunningRollout | None = None  # status.rollout as last written
    ended: EndedRollout | None = None  # status.lastRollout as last written
    analysis: Verdict | None = None  # the running step's analysis, when it has checks
    prometheus: bool = True  # the operator can read metrics (MLMODEL_PROMETHEUS_URL)
    promote: str | None = None  # the candidate `mlmodel rollout promote` named
    abort: str | None = None  # the candidate `mlmodel rollout abort` named
    shadow: str | None = None  # the candidate the shadow configuration names now

    def deployment(self, version: str) -> DeploymentState | None:
        return next((d for d in self.deployments if d.version == version), None)


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ApplyDeployment:
    version: str
    replicas: int | None = None  # a canary's or shadow's candidate: its step's count
    shadow_sample: float | None = None  # a shadow's candidate: its step's share of copies


@dataclass(frozen=True)
class SetStep:
    """Start step ``step`` (from 1) of the candidate's canary or shadow."""

    name: str
    version: str
    step: int
    weight: int


@dataclass(frozen=True)
class SplitService:
    """The Service selects the Pods of both versions (a canary's traffic)."""

    stable: str
    candidate: str


@dataclass(frozen=True)
class ShadowTraffic:
    """The stable version's Pods find ``candidate`` (its ``<model>-shadow`` Service) and
    send it copies (the share its Deployment offers); None: the Service goes."""

    candidate: str | None


@dataclass(frozen=True)
class MarkRolledBack:
    """Mark the candidate refused (before its Pods go), with the reason."""

    name: str
    version: str
    result: str  # Reason.ROLLED_BACK or Reason.ABORTED
    message: str


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


Action = (
    ApplyDeployment
    | ClearRetiring
    | SwitchService
    | MarkRetiring
    | Retire
    | DeleteUnserved
    | SetStep
    | SplitService
    | ShadowTraffic
    | MarkRolledBack
)


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
    # status.rollout while a canary or shadow runs (None: remove it), and a new
    # status.lastRollout when one ended in this reconcile (None: keep the old one)
    rollout: Mapping[str, Any] | None = None
    rollout_ended: Mapping[str, Any] | None = None


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
    p = _plan(model, observed, secret_name)
    running = observed.running
    if running is None or p.rollout is not None or p.rollout_ended is not None or p.blocked:
        return p
    # A canary or shadow was running and this plan runs none: say how it ended.
    if observed.service_version == running.candidate == model.version:
        ended = (Reason.PROMOTED, f"version {running.candidate} takes all traffic")
    else:
        ended = (
            Reason.ABORTED,
            f"spec.version is now {model.version}: the {running.strategy} of version "
            f"{running.candidate} stopped",
        )
    last = {"strategy": running.strategy, "stable": running.stable,
            "candidate": running.candidate, "result": ended[0], "message": ended[1]}  # fmt: skip
    if running.candidate == model.version:
        last["candidateSha256"] = model.artifact.sha256
    return replace(p, rollout_ended=last)


def _plan(model: ModelSpec, observed: Observed, secret_name: str) -> Plan:
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
    if (
        model.rollout.progressive
        and someone_serves
        and serving_dep is not None
        and serving_dep.version != target
        and model.serving.replicas > 0
    ):
        return _progressive(model, observed, serving_dep, withhold)
    target_dep = observed.deployment(target)
    actions.append(ApplyDeployment(target))
    if observed.shadow is not None:  # a shadow that ended (or was left by a crash)
        actions.append(ShadowTraffic(None))
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
        # Not polled: the Deployment's own watch event brings the reconcile that finds it
        # Available, at once (handlers.py); the only look asked for is the one that sees
        # the ready timeout pass. A poll here was a kopf retry, and each retry a PATCH of
        # the MLModel: at 1,000 models deploying at once, 14 per model, most of the
        # operator's writes, slowing the controller-manager it was waiting for.
        if not timed_out and observed.service_version != target:
            requeue.append(model.rollout.ready_timeout_seconds - age + TIMEOUT_MARGIN_SECONDS)
        return Plan(
            actions=tuple(actions),
            phase=phase,
            active_version=active,
            message=message,
            rollout_timed_out=timed_out,
            events=tuple(events),
            requeue_after=min(requeue) if requeue else None,
            withhold_decision_log=withhold,
        )

    # The target is Available: traffic moves to it, then the others retire.
    assert target_dep is not None
    if observed.service_version != target or observed.split is not None:
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


# --------------------------------------------------------------------------- canary, shadow


def canary_replicas(stable: int, weight: int) -> int:
    """Candidate Pods beside ``stable`` ones so that about ``weight``% of connections
    reach it (kube-proxy picks one of the Service's ready Pods at random)."""
    return max(1, round(stable * weight / (100 - weight))) if weight < 100 else stable


def shadow_replicas(stable: int, weight: int) -> int:
    """Candidate Pods for copies of ``weight``% of the requests ``stable`` Pods answer."""
    return max(1, round(stable * weight / 100))


def effective_weight(stable: int, candidate: int) -> int:
    return round(100 * candidate / (stable + candidate)) if stable + candidate else 0


@dataclass(frozen=True)
class _Rollout:
    """What every decision of one canary or shadow reconcile reads: the spec, the cluster,
    the stable version's and the candidate's Deployments (inputs only, never changed)."""

    model: ModelSpec
    observed: Observed
    stable_dep: DeploymentState
    candidate: DeploymentState | None  # the target version's Deployment, if it exists
    open_versions: frozenset[str]  # versions with an open history entry (they served)
    withhold: bool  # Plan.withhold_decision_log

    @classmethod
    def of(
        cls, model: ModelSpec, observed: Observed, stable_dep: DeploymentState, withhold: bool
    ) -> _Rollout:
        return cls(
            model=model,
            observed=observed,
            stable_dep=stable_dep,
            candidate=observed.deployment(model.version),
            open_versions=frozenset(e.version for e in observed.history if e.open),
            withhold=withhold,
        )

    @property
    def strategy(self) -> str:
        return self.model.rollout.strategy

    @property
    def steps(self) -> Sequence[RolloutStep]:
        return self.model.rollout.steps

    @property
    def target(self) -> str:
        return self.model.version

    @property
    def stable(self) -> str:
        return self.stable_dep.version

    @property
    def now(self) -> dt.datetime:
        return self.observed.now

    @property
    def base(self) -> dict[str, Any]:
        """The fields status.rollout and status.lastRollout share."""
        return {"strategy": self.strategy, "stable": self.stable, "candidate": self.target,
                "candidateSha256": self.model.artifact.sha256, "steps": len(self.steps)}  # fmt: skip

    @property
    def deployed_now(self) -> tuple[str, ...]:
        """A canary's candidate answers clients from its first step: its history opens."""
        if self.strategy == "canary" and self.target not in self.open_versions:
            return (self.target,)
        return ()


def _progressive(
    model: ModelSpec, observed: Observed, stable_dep: DeploymentState, withhold: bool
) -> Plan:
    """A canary or shadow of ``model.version`` beside the stable version, step by step."""
    r = _Rollout.of(model, observed, stable_dep, withhold)
    refusal = _earlier_refusal(r)
    if refusal is not None:
        return refusal
    if model.rollout.analysis.enabled and not observed.prometheus:
        return _analysis_unavailable(r)
    # a step past the spec's last (steps removed from the spec mid-rollout) is its last
    step = min(r.candidate.step, len(r.steps)) if r.candidate is not None else 0
    actions, events, others = _candidate_and_leavers(r, step)
    cand = r.candidate
    # Until its first step the candidate must be Available (and alone with the stable
    # version); once a step runs, a replica starting or lost (a step's scale-up) changes
    # nothing: the step goes on, the analysis judges what answered.
    if cand is None or (cand.step == 0 and (not cand.is_available or bool(others))):
        return _starting(r, actions, events, others)
    if step == 0:  # Available: the first step starts now
        actions.append(SetStep(cand.name, r.target, 1, r.steps[0].weight))
        actions += _traffic_actions(r)
        return _step_started(r, actions, events, 1)
    actions += _traffic_actions(r)  # after a crash between the step and its traffic
    refusal = _step_refusal(r, step)
    if refusal is not None:
        return refusal
    return _step_decision(r, cand, actions, events, step)


# ---- refusal and rollback


def _refused(r: _Rollout, result: str, why: str) -> Plan:
    """Take the candidate out: traffic back to stable only, its Pods removed (archived
    first if it answered clients), and the reason recorded."""
    observed, cand, target = r.observed, r.candidate, r.target
    acts: list[Action] = []
    if observed.split is not None:
        acts.append(SwitchService(r.stable))
    if observed.shadow is not None:
        acts.append(ShadowTraffic(None))
    if cand is not None and cand.rolled_back is None:
        acts.append(MarkRolledBack(cand.name, target, result, why))
    if cand is not None:
        served = r.strategy == "canary" and target in r.open_versions
        acts.append(Retire(cand, result) if served else DeleteUnserved(cand))
    elif target in r.open_versions:  # its Deployment went before the status was written
        gone = DeploymentState(
            name="", uid="", version=target, sha256=r.model.artifact.sha256, desired=0,
            available=0, ready=0, updated=0, current=True, created_at=r.now,
        )  # fmt: skip
        acts.append(Retire(gone, result))
    message = (
        f"version {target} was {'rolled back' if result == Reason.ROLLED_BACK else 'aborted'}"
        f": {why}; version {r.stable} serves. Apply a new spec.version to try again."
    )
    return Plan(
        actions=tuple(acts),
        phase=Phase.DEGRADED,
        active_version=r.stable,
        message=message,
        blocked=message,
        blocked_reason=result,
        requeue_after=POLL_SECONDS if acts else SLOW_POLL_SECONDS,
    )


def _refused_now(r: _Rollout, result: str, why: str, verdict: Verdict | None = None) -> Plan:
    """Refused in this reconcile: the rollback, and status.lastRollout saying why."""
    return _ended(_refused(r, result, why), r.base, result, why, verdict)


def _earlier_refusal(r: _Rollout) -> Plan | None:
    """The rollback of a candidate refused before (whatever the step): by an earlier
    rollout's result, by the mark on its Deployment, or by its Deployment vanishing while
    status.rollout named it; None while it may go on."""
    ended, cand, target = r.observed.ended, r.candidate, r.target
    # Refused before (rolled back or aborted): never again under this version and digest.
    if ended is not None and ended.candidate == target and ended.result in (
        Reason.ROLLED_BACK, Reason.ABORTED,
    ) and ended.sha256 == r.model.artifact.sha256:  # fmt: skip
        return _refused(r, ended.result, ended.message or ended.result)
    if cand is not None and cand.rolled_back is not None:  # decided, status not yet written
        return _refused_now(r, Reason.ROLLED_BACK, cand.rolled_back)
    running = r.observed.running
    if cand is None and running is not None and running.candidate == target:
        why = "its Deployment is gone (removed by hand, or by a rollback whose status was lost)"
        return _refused_now(r, Reason.ROLLED_BACK, why)
    return None


def _step_refusal(r: _Rollout, step: int) -> Plan | None:
    """The rollback of a running step: aborted by hand, or a check failed on enough
    requests (at once, without waiting for the step's end); None while neither."""
    if r.observed.abort == r.target:
        return _refused_now(r, Reason.ABORTED, "aborted by hand (mlmodel rollout abort)")
    verdict = _verdict(r)
    if verdict is None or not verdict.failed:
        return None
    why = f"step {step}/{len(r.steps)}: " + "; ".join(c.describe() for c in verdict.failed)
    p = _refused_now(r, Reason.ROLLED_BACK, why, verdict)
    return replace(p, events=(Event("Warning", Reason.ROLLED_BACK,
                                    f"version {r.target} rolled back: {why}"),))  # fmt: skip


def _analysis_unavailable(r: _Rollout) -> Plan:
    """Checks asked for and no Prometheus to read them from: nothing starts."""
    message = (
        "spec.rollout.analysis needs metrics, and the operator has no Prometheus "
        "(MLMODEL_PROMETHEUS_URL is not set); remove the analysis or configure it. "
        f"Version {r.stable} keeps serving"
    )
    return Plan(actions=(), phase=Phase.DEGRADED, active_version=r.stable, message=message,
                blocked=message, blocked_reason=Reason.ANALYSIS_UNAVAILABLE,
                requeue_after=SLOW_POLL_SECONDS)  # fmt: skip


def _verdict(r: _Rollout) -> Verdict | None:
    """The running step's analysis, when the spec asks for one."""
    return r.observed.analysis if r.model.rollout.analysis.enabled else None


# ---- the candidate, its steps and its traffic


def _candidate_deployment(r: _Rollout, step: int | None) -> ApplyDeployment:
    """The candidate's Deployment at ``step`` (from 1): that step's replicas (and a
    shadow's share of copies); None: promoted, its full replica count."""
    if step is None:
        return ApplyDeployment(r.target)
    weight = r.steps[step - 1].weight
    size = canary_replicas if r.strategy == "canary" else shadow_replicas
    sample = weight / 100 if r.strategy == "shadow" else None
    return ApplyDeployment(r.target, size(r.model.serving.replicas, weight), sample)


def _candidate_and_leavers(
    r: _Rollout, step: int
) -> tuple[list[Action], list[Event], list[DeploymentState]]:
    """The candidate's Deployment at its step (the first before one runs), and everything
    of an earlier rollout leaving: versions other than these two (a canary's Service
    selects every Pod of the model), an earlier canary's share, an earlier shadow.
    Returns the actions, the events and the versions that leave."""
    observed, target = r.observed, r.target
    actions: list[Action] = [_candidate_deployment(r, max(step, 1))]
    events: list[Event] = []
    if r.candidate is None:
        events.append(
            Event("Normal", "Deploying", f"created Deployment for the {r.strategy} of {target}")
        )
    others = [d for d in observed.deployments if d.version not in (r.stable, target)]
    for dep in others:
        if dep.version not in r.open_versions:
            actions.append(DeleteUnserved(dep))
        elif dep.retiring_since is None:
            actions.append(MarkRetiring(dep.name, dep.version))
        elif (r.now - dep.retiring_since).total_seconds() >= r.model.retirement.drain_seconds:
            actions.append(Retire(dep))
    if observed.split is not None and observed.split != target:
        actions.append(SwitchService(r.stable))  # stop an earlier canary's share
    if observed.shadow is not None and observed.shadow != target:
        actions.append(ShadowTraffic(None))
    return actions, events, others


def _traffic_actions(r: _Rollout) -> list[Action]:
    """The running step's traffic, where the cluster lacks it: a canary's Service selects
    both versions; a shadow's candidate is found by the stable Pods."""
    if r.strategy == "canary":
        return [SplitService(r.stable, r.target)] if r.observed.split != r.target else []
    return [ShadowTraffic(r.target)] if r.observed.shadow != r.target else []


def _rollout_status(
    r: _Rollout, step: int, since: dt.datetime, verdict: Verdict | None
) -> dict[str, Any]:
    """status.rollout while step ``step`` (from 1) runs since ``since``."""
    weight = r.steps[step - 1].weight
    out: dict[str, Any] = {**r.base, "step": step, "weight": weight,
                           "stepStartedAt": format_time(since), "result": "Progressing"}  # fmt: skip
    if r.strategy == "canary":
        out["effectiveWeight"] = effective_weight(
            r.stable_dep.desired, canary_replicas(r.model.serving.replicas, weight)
        )
    else:
        out["effectiveWeight"] = weight
    if verdict is not None:
        out["checks"] = [c.to_status() for c in verdict.checks]
        out["requests"] = int(verdict.requests)
        out["message"] = verdict.describe()[:4096]
    return out


def _waiting(
    r: _Rollout,
    actions: Sequence[Action],
    events: Sequence[Event],
    message: str,
    requeue: float,
    rollout_status: Mapping[str, Any] | None,
    deployed_now: tuple[str, ...] = (),
) -> Plan:
    """The stable version serves while the rollout goes on (Deploying)."""
    return Plan(
        actions=tuple(actions), phase=Phase.DEPLOYING, active_version=r.stable,
        message=message, events=tuple(events), requeue_after=requeue,
        withhold_decision_log=r.withhold, rollout=rollout_status, deployed_now=deployed_now,
    )  # fmt: skip


def _starting(
    r: _Rollout, actions: list[Action], events: list[Event], others: Sequence[DeploymentState]
) -> Plan:
    """Before its first step: the candidate becomes Available once the versions of an
    earlier rollout left, or the ready timeout says it will not (Degraded)."""
    target, stable, rollout = r.target, r.stable, r.model.rollout
    age = (r.now - r.candidate.created_at).total_seconds() if r.candidate else 0.0
    if age > rollout.ready_timeout_seconds and not others:
        message = (
            f"version {target} is not available after {rollout.ready_timeout_seconds}s "
            f"(spec.rollout.readyTimeoutSeconds); version {stable} keeps serving"
        )
        return Plan(actions=tuple(actions), phase=Phase.DEGRADED, active_version=stable,
                    message=message, rollout_timed_out=True, events=tuple(events),
                    requeue_after=SLOW_POLL_SECONDS, withhold_decision_log=r.withhold)  # fmt: skip
    left = ", ".join(sorted(d.version for d in others))
    why = f"versions {left} leave first" if others else "waiting for it to be Available"
    return _waiting(r, actions, events, f"starting version {target} for its {r.strategy} "
                    f"({why}); version {stable} serves", POLL_SECONDS, None)  # fmt: skip


def _step_started(r: _Rollout, actions: list[Action], events: list[Event], step: int) -> Plan:
    """Step ``step`` (from 1) begins now (its SetStep is among ``actions``)."""
    events.append(
        Event("Normal", "RolloutStep", _step_message(r.strategy, r.target, step, r.steps))
    )
    return _waiting(r, actions, events,
                    _running_message(r.strategy, r.target, r.stable, step, r.steps, None),
                    min(r.steps[step - 1].pause_seconds or POLL_SECONDS, ANALYSIS_POLL_SECONDS),
                    _rollout_status(r, step, r.now, None), r.deployed_now)  # fmt: skip


def _step_decision(
    r: _Rollout, cand: DeploymentState, actions: list[Action], events: list[Event], step: int
) -> Plan:
    """A running step (not refused): it waits out its pause, waits for a verdict, gives
    way to the next step, or, the last held (or promoted by hand), ends in promotion."""
    target, steps = r.target, r.steps
    since = cand.step_since or r.now
    elapsed = (r.now - since).total_seconds()
    pause = steps[step - 1].pause_seconds
    verdict = _verdict(r)
    promote = r.observed.promote == target
    running = _running_message(r.strategy, target, r.stable, step, steps, verdict)
    if not promote and elapsed < pause:
        return _waiting(r, actions, events, running,
                        max(0.5, min(pause - elapsed, ANALYSIS_POLL_SECONDS)),
                        _rollout_status(r, step, since, verdict), r.deployed_now)  # fmt: skip
    if not promote and verdict is not None and not verdict.passed:
        return _waiting(r, actions, events,
                        running + " (the step's time is up; judged once the analysis can say)",
                        ANALYSIS_POLL_SECONDS, _rollout_status(r, step, since, verdict),
                        r.deployed_now)  # fmt: skip
    if not promote and step < len(steps):
        actions.append(SetStep(cand.name, target, step + 1, steps[step].weight))
        actions[0] = _candidate_deployment(r, step + 1)
        return _step_started(r, actions, events, step + 1)
    how = "promoted by hand (mlmodel rollout promote)" if promote else "every step held"
    return _promotion(r, cand, actions, events, step, since, verdict, how)


def _promotion(
    r: _Rollout,
    cand: DeploymentState,
    actions: list[Action],
    events: list[Event],
    step: int,
    since: dt.datetime,
    verdict: Verdict | None,
    how: str,
) -> Plan:
    """The last step held (or a person promoted it): the candidate takes all traffic,
    once it has its full replica count (a step's one Pod would take everything)."""
    target, stable, replicas = r.target, r.stable, r.model.serving.replicas
    actions[0] = _candidate_deployment(r, None)
    if cand.desired < replicas or not cand.is_available:
        return _waiting(r, actions, events, f"{r.strategy} of version {target} {how}: it "
                        f"scales to {replicas} replicas before it takes all traffic; version "
                        f"{stable} serves meanwhile", POLL_SECONDS,
                        _rollout_status(r, step, since, verdict), r.deployed_now)  # fmt: skip
    actions.append(SwitchService(target))
    if r.strategy == "shadow":
        actions.append(ShadowTraffic(None))
    events.append(Event("Normal", Reason.PROMOTED, f"version {target} promoted: {how}"))
    last = {**r.base, "step": step, "result": Reason.PROMOTED, "message": how}
    if verdict is not None:
        last["checks"] = [c.to_status() for c in verdict.checks]
        last["requests"] = int(verdict.requests)
    return Plan(
        actions=tuple(actions), phase=Phase.RETIRING, active_version=target,
        message=f"version {target} promoted ({how}); version {stable} retires",
        events=tuple(events), requeue_after=POLL_SECONDS,
        deployed_now=(target,) if target not in r.open_versions else (),
        withhold_decision_log=r.withhold, rollout_ended=last,
    )  # fmt: skip


def _ended(
    p: Plan,
    base: Mapping[str, Any],
    result: str,
    why: str,
    verdict: Verdict | None = None,
) -> Plan:
    last = {**base, "result": result, "message": why[:4096]}
    if verdict is not None:
        last["checks"] = [c.to_status() for c in verdict.checks]
        last["requests"] = int(verdict.requests)
    return replace(p, rollout_ended=last)


def _step_message(strategy: str, target: str, step: int, steps: Sequence[RolloutStep]) -> str:
    w = steps[step - 1].weight
    share = f"{w}% of requests" if strategy == "canary" else f"copies of {w}% of requests"
    return f"{strategy} of version {target}: step {step}/{len(steps)}, {share}"


def _running_message(
    strategy: str,
    target: str,
    stable: str,
    step: int,
    steps: Sequence[RolloutStep],
    verdict: Verdict | None,
) -> str:
    msg = f"{_step_message(strategy, target, step, steps)}; version {stable} serves the rest"
    if strategy == "shadow":
        msg = (
            f"{_step_message(strategy, target, step, steps)}; version {stable} answers every "
            "request"
        )
    return f"{msg}; {verdict.describe()}" if verdict is not None else msg


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
