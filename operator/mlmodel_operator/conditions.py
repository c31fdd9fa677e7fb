"""Status conditions in the Kubernetes API conventions (metav1.Condition).

Pure helpers: they build and merge plain dicts, ready for `status.conditions`, and never
mutate their inputs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

# --- condition types -----------------------------------------------------------------
READY: Final = "Ready"
PROGRESSING: Final = "Progressing"
DEGRADED: Final = "Degraded"
ARTIFACT_VERIFIED: Final = "ArtifactVerified"
ARCHIVED: Final = "Archived"
MONITORED: Final = "Monitored"
SPEC_VALID: Final = "SpecValid"
DECISION_LOG_READY: Final = "DecisionLogReady"

CONDITION_TYPES: Final = (
    READY,
    PROGRESSING,
    DEGRADED,
    ARTIFACT_VERIFIED,
    ARCHIVED,
    MONITORED,
    SPEC_VALID,
    DECISION_LOG_READY,
)

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

# metav1.Condition limits.
MAX_MESSAGE_LENGTH: Final = 32768
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
_TYPE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class Reason:
    """CamelCase reasons, one word a person can search for in the docs."""

    # Ready / Progressing
    SERVING: Final = "Serving"
    DEPLOYING: Final = "Deploying"
    WAITING_FOR_AVAILABLE: Final = "WaitingForAvailable"
    SWITCHED: Final = "TrafficSwitched"
    RETIRING: Final = "Retiring"
    ROLLOUT_COMPLETE: Final = "RolloutComplete"
    SCALED_TO_ZERO: Final = "ScaledToZero"
    NO_READY_REPLICAS: Final = "NoReadyReplicas"
    # a canary or shadow step runs (Progressing); how it ended (Degraded, Events)
    CANARY_STEP: Final = "CanaryStep"
    SHADOW_STEP: Final = "ShadowStep"
    PROMOTED: Final = "Promoted"
    ROLLED_BACK: Final = "RolledBack"
    ABORTED: Final = "Aborted"
    # spec.rollout.analysis set, and the operator has no Prometheus to read it from
    ANALYSIS_UNAVAILABLE: Final = "AnalysisUnavailable"
    # Degraded
    AS_EXPECTED: Final = "AsExpected"
    ROLLOUT_TIMED_OUT: Final = "RolloutTimedOut"
    REPLICAS_UNAVAILABLE: Final = "ReplicasUnavailable"
    # SpecValid
    SPEC_ACCEPTED: Final = "SpecAccepted"
    INVALID_SPEC: Final = "InvalidSpec"
    VERSION_REUSED: Final = "VersionReused"
    MISSING_SECRET: Final = "MissingSecret"
    IMAGE_NOT_ALLOWED: Final = "ImageNotAllowed"
    # an object the model needs (its Deployment, Service, ServiceMonitor or PrometheusRule)
    # exists and is not controlled by the MLModel (also on Degraded and Monitored)
    OBJECT_CONFLICT: Final = "ObjectConflict"
    # ArtifactVerified
    DIGEST_VERIFIED: Final = "DigestVerified"
    DIGEST_MISMATCH: Final = "DigestMismatch"
    ARTIFACT_NOT_FOUND: Final = "ArtifactNotFound"
    VERIFICATION_PENDING: Final = "VerificationPending"
    # Archived
    ARCHIVE_SUCCEEDED: Final = "ArchiveSucceeded"
    ARCHIVE_FAILED: Final = "ArchiveFailed"
    ARCHIVE_SKIPPED: Final = "ArchiveSkipped"
    NOTHING_TO_ARCHIVE: Final = "NothingToArchive"
    # Monitored
    MONITORING_CONFIGURED: Final = "MonitoringConfigured"
    MONITORING_DISABLED: Final = "MonitoringDisabled"
    PROMETHEUS_OPERATOR_MISSING: Final = "PrometheusOperatorMissing"
    # DecisionLogReady (also Degraded, when spec.decisionLog.mode is required)
    LOGGING: Final = "Logging"
    DECISION_LOG_DISABLED: Final = "Disabled"
    BUCKET_UNAVAILABLE: Final = "BucketUnavailable"
    BUCKET_NOT_CHECKED: Final = "BucketNotChecked"
    REDACT_KEY_MISSING: Final = "RedactKeyMissing"
    REDACT_KEY_NOT_CHECKED: Final = "RedactKeyNotChecked"
    # any type
    DELETING: Final = "Deleting"
    RECONCILE_ERROR: Final = "ReconcileError"


class Phase:
    """The values of `status.phase` (the CRD's enum)."""

    PENDING: Final = "Pending"
    DEPLOYING: Final = "Deploying"
    SERVING: Final = "Serving"
    DEGRADED: Final = "Degraded"
    FAILED: Final = "Failed"
    RETIRING: Final = "Retiring"
    DELETING: Final = "Deleting"

    ALL: Final = (PENDING, DEPLOYING, SERVING, DEGRADED, FAILED, RETIRING, DELETING)


def format_time(now: datetime) -> str:
    """RFC 3339 in UTC at whole seconds, as the apiserver writes metav1.Time."""
    if now.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required (use datetime.now(UTC))")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise_time(now: datetime) -> str:
    """RFC 3339 in UTC with microseconds: for the operator's own annotations that order
    transitions (two of them often fall within one second)."""
    if now.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required (use datetime.now(UTC))")
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_condition(
    type: str,
    status: bool | str,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> dict[str, Any]:
    """A condition dict; `status` True/False or one of "True", "False", "Unknown"."""
    if not _TYPE.match(type) or len(type) > 316:
        raise ValueError(f"condition type {type!r} is not a qualified name")
    if isinstance(status, bool):
        text = TRUE if status else FALSE
    elif status in (TRUE, FALSE, UNKNOWN):
        text = status
    else:
        raise ValueError(f"condition status {status!r} is not True, False or Unknown")
    if not _REASON.match(reason) or len(reason) > 1024:
        raise ValueError(f"condition reason {reason!r} is not a CamelCase word")
    if generation < 0:
        raise ValueError(f"observedGeneration {generation} is negative")
    if len(message) > MAX_MESSAGE_LENGTH:
        message = message[: MAX_MESSAGE_LENGTH - 3] + "..."
    return {
        "type": type,
        "status": text,
        "reason": reason,
        "message": message,
        "lastTransitionTime": format_time(now),
        "observedGeneration": generation,
    }


def get_condition(conditions: Iterable[Mapping[str, Any]], type: str) -> dict[str, Any] | None:
    """A copy of the condition of that type, or None."""
    for condition in conditions:
        if condition.get("type") == type:
            return dict(condition)
    return None


def is_true(conditions: Iterable[Mapping[str, Any]], type: str) -> bool:
    condition = get_condition(conditions, type)
    return condition is not None and condition.get("status") == TRUE


def set_condition(
    conditions: Iterable[Mapping[str, Any]], new: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A new list with `new` in place of the condition of its type (or appended).

    When the status does not change, the old lastTransitionTime is kept: it says when the
    condition last changed, not when it was last written.
    """
    result: list[dict[str, Any]] = []
    replaced = False
    for condition in conditions:
        if condition.get("type") != new["type"]:
            result.append(dict(condition))
            continue
        if replaced:  # a duplicate type from a bad writer: drop it
            continue
        merged = dict(new)
        if condition.get("status") == new["status"] and condition.get("lastTransitionTime"):
            merged["lastTransitionTime"] = condition["lastTransitionTime"]
        result.append(merged)
        replaced = True
    if not replaced:
        result.append(dict(new))
    return result


def set_conditions(
    conditions: Iterable[Mapping[str, Any]], new: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`set_condition` for each of `new`, in order."""
    result = [dict(c) for c in conditions]
    for condition in new:
        result = set_condition(result, condition)
    return result
