"""The status of one reconcile, computed from the plan (pure)."""

from __future__ import annotations

import datetime as dt

from model_specs import make_model

from mlmodel_operator.conditions import FALSE, TRUE, UNKNOWN, Phase, Reason
from mlmodel_operator.plan import DeploymentState, HistoryEntry, Plan
from mlmodel_operator.status import ArchiveNote, DecisionLogNote, build_status
from mlmodel_operator.verify import Verdict

SHA = "ab" * 32
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
MODEL = make_model(uid="u", generation=4, sha256=SHA, version="2")
SERVING = DeploymentState("churn-v2", "uid", "2", SHA, 2, 2, 2, 2, True, T0)
VERIFIED = Verdict(TRUE, Reason.DIGEST_VERIFIED, "ok")
ENDPOINT = "http://churn.team-a.svc:8080/v2/models/churn"


def conds(status: dict[str, object]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in status["conditions"]}  # type: ignore[attr-defined, index]


def test_serving_status() -> None:
    plan = Plan((), Phase.SERVING, "2", "version 2 serving")
    history = (HistoryEntry("2", SHA, "s3://models/churn/2/model.joblib", "2026-03-01T00:00:00Z"),)
    st = build_status(MODEL, plan, history, {}, SERVING, VERIFIED, None, ENDPOINT, T0)
    assert st["observedGeneration"] == 4
    assert (st["phase"], st["activeVersion"], st["endpoint"], st["ready"]) == (
        Phase.SERVING, "2", ENDPOINT, "2/2",
    )  # fmt: skip
    assert st["digestPrefix"] == SHA[:12]
    c = conds(st)
    assert c["Ready"]["status"] == TRUE and c["Degraded"]["status"] == FALSE
    assert c["Progressing"]["reason"] == Reason.ROLLOUT_COMPLETE
    assert c["ArtifactVerified"]["status"] == TRUE
    assert "Archived" not in c  # nothing was archived yet
    assert all(x["observedGeneration"] == 4 for x in c.values())
    assert st["history"] == [h.to_status() for h in history]


def test_transition_time_kept_while_status_unchanged() -> None:
    plan = Plan((), Phase.SERVING, "2", "version 2 serving")
    first = build_status(MODEL, plan, (), {}, SERVING, VERIFIED, None, ENDPOINT, T0)
    second = build_status(MODEL, plan, (), first, SERVING, VERIFIED, None, ENDPOINT, T1)
    assert conds(second)["Ready"]["lastTransitionTime"] == "2026-03-01T00:00:00Z"
    degraded = Plan((), Phase.DEGRADED, "2", "v3 not ready", rollout_timed_out=True)
    third = build_status(MODEL, degraded, (), second, SERVING, VERIFIED, None, ENDPOINT, T1)
    assert conds(third)["Degraded"]["lastTransitionTime"] == "2026-03-01T00:05:00Z"
    assert conds(third)["Degraded"]["reason"] == Reason.ROLLOUT_TIMED_OUT


def test_nothing_serving() -> None:
    plan = Plan((), Phase.DEPLOYING, None, "deploying version 2")
    unknown = Verdict(UNKNOWN, Reason.VERIFICATION_PENDING, "no object store")
    st = build_status(MODEL, plan, (), {}, None, unknown, None, ENDPOINT, T0)
    assert st["activeVersion"] is None and st["endpoint"] is None  # removed by the merge patch
    c = conds(st)
    assert c["Ready"]["status"] == FALSE and c["Progressing"]["status"] == TRUE
    assert c["ArtifactVerified"]["status"] == UNKNOWN


def test_blocked_spec_and_archive_failure() -> None:
    plan = Plan(
        (),
        Phase.DEGRADED,
        "1",
        "Secret missing",
        blocked="Secret missing",
        blocked_reason=Reason.MISSING_SECRET,
    )
    note = ArchiveNote(False, Reason.ARCHIVE_FAILED, "MinIO unreachable")
    st = build_status(MODEL, plan, (), {}, SERVING, VERIFIED, note, ENDPOINT, T0)
    c = conds(st)
    assert c["SpecValid"]["status"] == FALSE and c["SpecValid"]["reason"] == Reason.MISSING_SECRET
    assert c["Degraded"]["reason"] == Reason.MISSING_SECRET
    assert c["Archived"]["status"] == FALSE and "MinIO" in c["Archived"]["message"]


def test_decision_log_condition() -> None:
    plan = Plan((), Phase.SERVING, "2", "version 2 serving")
    st = build_status(MODEL, plan, (), {}, SERVING, VERIFIED, None, ENDPOINT, T0)
    assert "DecisionLogReady" not in conds(st)  # only when the reconciler reports on it
    off = DecisionLogNote(False, Reason.DECISION_LOG_DISABLED, "spec.decisionLog.enabled is false")
    st = build_status(MODEL, plan, (), st, SERVING, VERIFIED, None, ENDPOINT, T0, decision_log=off)
    assert conds(st)["DecisionLogReady"] == {
        "type": "DecisionLogReady",
        "status": FALSE,
        "reason": "Disabled",
        "message": "spec.decisionLog.enabled is false",
        "lastTransitionTime": "2026-03-01T00:00:00Z",
        "observedGeneration": 4,
    }
    on = DecisionLogNote(True, Reason.LOGGING, "decision records go to s3://b/decisions/...")
    st = build_status(MODEL, plan, (), st, SERVING, VERIFIED, None, ENDPOINT, T1, decision_log=on)
    assert conds(st)["DecisionLogReady"]["status"] == TRUE
    assert conds(st)["DecisionLogReady"]["lastTransitionTime"] == "2026-03-01T00:05:00Z"
    unknown = DecisionLogNote(UNKNOWN, Reason.BUCKET_NOT_CHECKED, "no object store")
    st = build_status(
        MODEL, plan, (), st, SERVING, VERIFIED, None, ENDPOINT, T1, decision_log=unknown
    )
    assert conds(st)["DecisionLogReady"]["status"] == UNKNOWN
    # a best-effort problem changes nothing else
    assert conds(st)["Ready"]["status"] == TRUE and conds(st)["Degraded"]["status"] == FALSE


def test_a_required_decision_log_problem_degrades_the_model() -> None:
    message = "spec.decisionLog.bucket: ...; spec.decisionLog.mode is required, ..."
    plan = Plan(
        (), Phase.DEGRADED, "2", message, blocked=message, blocked_reason=Reason.BUCKET_UNAVAILABLE
    )
    note = DecisionLogNote(False, Reason.BUCKET_UNAVAILABLE, "spec.decisionLog.bucket: ...")
    c = conds(
        build_status(MODEL, plan, (), {}, SERVING, VERIFIED, None, ENDPOINT, T0, decision_log=note)
    )
    assert c["Degraded"]["status"] == TRUE and c["Degraded"]["reason"] == "BucketUnavailable"
    assert c["Progressing"]["reason"] == "BucketUnavailable"
    assert c["SpecValid"]["status"] == TRUE  # the spec is fine; the bucket is not
    assert c["DecisionLogReady"]["status"] == FALSE


def test_a_new_last_rollout_replaces_the_stored_one_field_by_field() -> None:
    """Found on the real node: the status is a merge patch, so a rolled-back rollout's
    lastRollout kept the promoted one's step; and a step without checks kept the
    previous step's. Fields of the stored object that the new one lacks are removed."""
    from mlmodel_operator.reconcile import status_changed

    promoted = {"candidate": "2", "result": "Promoted", "step": 2, "effectiveWeight": 50}
    old = {"lastRollout": promoted, "rollout": {"candidate": "3", "step": 1, "checks": [{}]}}
    refused = {"candidate": "3", "result": "RolledBack", "message": "errorRatio 0.13"}
    plan = Plan((), Phase.DEGRADED, "2", "rolled back", rollout_ended=refused)
    st = build_status(MODEL, plan, (), old, SERVING, VERIFIED, None, ENDPOINT, T0)
    assert st["lastRollout"] == {**refused, "step": None, "effectiveWeight": None}
    assert st["rollout"] is None
    stepping = Plan((), Phase.DEPLOYING, "2", "step 2", rollout={"candidate": "3", "step": 2})
    st = build_status(MODEL, stepping, (), old, SERVING, VERIFIED, None, ENDPOINT, T0)
    assert st["rollout"] == {"candidate": "3", "step": 2, "checks": None}
    # as stored after that patch: no change seen, no second write
    stored = {**{k: v for k, v in st.items() if v is not None},
              "rollout": {"candidate": "3", "step": 2}}  # fmt: skip
    assert not status_changed(st, stored)
