"""The MLModel status, computed once per reconcile from the plan and what happened.

Pure: the reconciler gathers the facts, this module turns them into the one status
object that is written through the status subresource.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import conditions as c
from mlmodel_operator.conditions import Phase, Reason
from mlmodel_operator.desired import digest_prefix, ready_summary
from mlmodel_operator.plan import DeploymentState, HistoryEntry, Plan
from mlmodel_operator.spec import ModelSpec
from mlmodel_operator.verify import Verdict


@dataclass(frozen=True)
class ArchiveNote:
    """What the archive step did in this reconcile, for the Archived condition."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class MonitoringNote:
    """What the monitoring step found or did in this reconcile, for the Monitored condition."""

    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class DecisionLogNote:
    """Whether the serving pods can write their decision log, for DecisionLogReady.

    ``status`` is True, False or "Unknown" (the operator could not check).
    """

    status: bool | str
    reason: str
    message: str


def build_status(
    model: ModelSpec,
    plan: Plan,
    history: Sequence[HistoryEntry],
    old_status: Mapping[str, Any],
    serving: DeploymentState | None,
    verdict: Verdict,
    archive_note: ArchiveNote | None,
    endpoint: str,
    now: dt.datetime,
    monitoring: MonitoringNote | None = None,
    decision_log: DecisionLogNote | None = None,
) -> dict[str, Any]:
    """The full status object for this reconcile."""
    gen = model.generation
    conds: list[dict[str, Any]] = list(old_status.get("conditions") or [])

    def put(type_: str, status: bool | str, reason: str, message: str) -> None:
        nonlocal conds
        conds = c.set_condition(conds, c.make_condition(type_, status, reason, message, gen, now))

    available = serving.available if serving else 0
    desired = serving.desired if serving else model.serving.replicas
    if plan.active_version and serving is not None and available > 0:
        put(c.READY, True, Reason.SERVING, f"version {plan.active_version} serving")
    elif plan.active_version and serving is not None and desired == 0:
        put(c.READY, False, Reason.SCALED_TO_ZERO, "spec.serving.replicas is 0")
    else:
        put(c.READY, False, Reason.NO_READY_REPLICAS, plan.message)

    if plan.rollout is not None:
        step_reason = Reason.SHADOW_STEP if plan.rollout.get("strategy") == "shadow" else None
        put(c.PROGRESSING, True, step_reason or Reason.CANARY_STEP, plan.message)
    elif plan.phase == Phase.DEPLOYING:
        put(c.PROGRESSING, True, Reason.WAITING_FOR_AVAILABLE, plan.message)
    elif plan.phase == Phase.RETIRING:
        put(c.PROGRESSING, True, Reason.RETIRING, plan.message)
    elif plan.rollout_timed_out:
        put(c.PROGRESSING, False, Reason.ROLLOUT_TIMED_OUT, plan.message)
    elif plan.blocked:
        put(c.PROGRESSING, False, plan.blocked_reason or Reason.INVALID_SPEC, plan.message)
    else:
        put(c.PROGRESSING, False, Reason.ROLLOUT_COMPLETE, plan.message)

    if plan.phase in (Phase.DEGRADED, Phase.FAILED):
        if plan.rollout_timed_out:
            reason = Reason.ROLLOUT_TIMED_OUT
        elif plan.blocked_reason:
            reason = plan.blocked_reason
        else:
            reason = Reason.REPLICAS_UNAVAILABLE
        put(c.DEGRADED, True, reason, plan.message)
    else:
        put(c.DEGRADED, False, Reason.AS_EXPECTED, "no problem found")

    if plan.blocked_reason in (
        Reason.VERSION_REUSED, Reason.MISSING_SECRET, Reason.IMAGE_NOT_ALLOWED,
        Reason.OBJECT_CONFLICT,
    ):  # fmt: skip
        put(c.SPEC_VALID, False, plan.blocked_reason, plan.message)
    else:
        put(c.SPEC_VALID, True, Reason.SPEC_ACCEPTED, "spec accepted")

    put(c.ARTIFACT_VERIFIED, verdict.status, verdict.reason, verdict.message)

    if archive_note is not None:
        put(c.ARCHIVED, archive_note.ok, archive_note.reason, archive_note.message)

    if monitoring is not None:
        put(c.MONITORED, monitoring.ok, monitoring.reason, monitoring.message)

    if decision_log is not None:
        put(c.DECISION_LOG_READY, decision_log.status, decision_log.reason, decision_log.message)

    status: dict[str, Any] = {
        "observedGeneration": gen,
        "phase": plan.phase,
        "message": plan.message,
        "replicas": desired,
        "readyReplicas": available,
        "ready": ready_summary(available, desired),
        "conditions": conds,
        "history": [e.to_status() for e in history],
    }
    # a canary or shadow while it runs; how the last one ended, kept until the next ends.
    # The status is a merge patch, which merges objects: a field of the object stored and
    # not in the new one is removed explicitly, or a step's checks (or a promoted
    # rollout's step) would outlive it.
    running = old_status.get("rollout")
    status["rollout"] = _replacing(plan.rollout, running) if plan.rollout is not None else None
    last = old_status.get("lastRollout")
    status["lastRollout"] = (
        _replacing(plan.rollout_ended, last) if plan.rollout_ended is not None else last
    )
    status["activeVersion"] = plan.active_version
    status["endpoint"] = endpoint if plan.active_version else None
    status["digestPrefix"] = digest_prefix(serving.sha256) if serving and serving.sha256 else None
    return status


def _replacing(new: Mapping[str, Any], stored: Any) -> dict[str, Any]:
    """``new`` as a merge patch that replaces ``stored`` (its other fields set to None)."""
    out: dict[str, Any] = dict(new)
    if isinstance(stored, Mapping):
        out.update({k: None for k in stored if k not in new})
    return out
