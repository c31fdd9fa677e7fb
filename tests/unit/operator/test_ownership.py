"""Ownership, pure parts (issue 16, item 5): who controls an object, how a conflict is
told, and that the planner rolls nothing out over an object it does not control."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from model_specs import OWNER, UID, make_model

from mlmodel_operator.conditions import FALSE, TRUE, Phase, Reason
from mlmodel_operator.desired import controlled_by, controller_reference, holder
from mlmodel_operator.kube import ApiError, Kube, NotControlled
from mlmodel_operator.monitoring_sync import MonitoringSync
from mlmodel_operator.plan import DeploymentState, ForeignObject, HistoryEntry, Observed, plan
from mlmodel_operator.settings import Settings
from mlmodel_operator.status import build_status
from mlmodel_operator.verify import Verdict

NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
SHA = "3b2c6f0e8d4a1957c0f5e2b7a9d8c6e4f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9"
OLD_SHA = "1" * 64


def obj(*owners: dict[str, Any], managers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "churn",
            "namespace": "team-a",
            "ownerReferences": list(owners),
            "managedFields": [{"manager": m, "operation": "Update"} for m in managers],
        }
    }


OTHER_MODEL = {**OWNER, "name": "churn-v1", "uid": "4f1d0000-0000-0000-0000-000000000001"}
NOT_CONTROLLER = {**OWNER, "controller": False}
REPLICASET = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "name": "rs",
    "uid": "4f1d0000-0000-0000-0000-000000000002",
    "controller": True,
}


def test_only_the_controller_reference_with_the_models_uid_counts() -> None:
    assert controlled_by(obj(OWNER), UID)
    assert controller_reference(obj(NOT_CONTROLLER, OWNER)) == OWNER
    # a reference to the model that is not the controller is not control
    assert not controlled_by(obj(NOT_CONTROLLER), UID)
    assert not controlled_by(obj(OTHER_MODEL), UID)
    assert not controlled_by(obj(REPLICASET), UID)
    assert not controlled_by(obj(), UID)
    assert not controlled_by({"metadata": {}}, UID)


def test_the_holder_is_named() -> None:
    assert holder(obj(OTHER_MODEL)) == (
        f"it is controlled by MLModel churn-v1 (uid {OTHER_MODEL['uid']})"
    )
    assert holder(obj(managers=("team-b", "kubectl-edit", "team-b"))) == (
        "it has no controller; written by kubectl-edit, team-b"
    )
    assert holder(obj()) == "it has no controller"


def test_a_conflict_names_kind_namespace_name_and_holder() -> None:
    c = ForeignObject("Deployment", "team-a", "churn-v1-v2", "it is controlled by MLModel churn-v1")
    assert c.message.startswith(
        "Deployment team-a/churn-v1-v2 exists and is not controlled by this MLModel "
        "(it is controlled by MLModel churn-v1)"
    )
    assert "spec.version" in c.message  # a Deployment's name comes from the version too
    svc = ForeignObject("Service", "team-a", "churn", "it has no controller")
    assert "spec.version" not in svc.message and "metadata.name" in svc.message


def serving_v1() -> DeploymentState:
    return DeploymentState("churn-v1", "uid-1", "1", OLD_SHA, 1, 1, 1, 1, True, NOW)


def test_a_conflict_blocks_the_rollout_and_what_serves_keeps_serving() -> None:
    model = make_model(version="2", sha256=SHA)
    conflict = ForeignObject("Deployment", "team-a", "churn-v2", "it has no controller")
    history = (
        HistoryEntry("1", OLD_SHA, "s3://models/churn/1/model.joblib", "2026-03-01T00:00:00Z"),
    )
    obs = Observed((serving_v1(),), "1", history, NOW, conflicts=(conflict,))
    p = plan(model, obs, "secret")
    assert p.actions == ()  # nothing applied, switched or deleted
    assert (p.phase, p.active_version) == (Phase.DEGRADED, "1")
    assert p.blocked_reason == Reason.OBJECT_CONFLICT
    assert conflict.message in p.message

    st = build_status(
        model, p, history, {}, serving_v1(), Verdict(TRUE, "DigestVerified", ""), None, "", NOW
    )
    conds = {c["type"]: c for c in st["conditions"]}
    assert (conds["SpecValid"]["status"], conds["SpecValid"]["reason"]) == (FALSE, "ObjectConflict")
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == (TRUE, "ObjectConflict")
    assert conds["Ready"]["status"] == TRUE  # version 1 still answers


def test_a_conflict_with_nothing_serving_fails() -> None:
    model = make_model(version="2", sha256=SHA)
    conflict = ForeignObject("Service", "team-a", "churn", "it has no controller")
    p = plan(model, Observed((), None, (), NOW, conflicts=(conflict,)), "secret")
    assert (p.actions, p.phase, p.active_version) == ((), Phase.FAILED, None)


class MonitoringKube(Kube):
    """Monitoring CRDs installed; every delete fails the way ``error`` says."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.applied: list[str] = []

    def crd_established(self, name: str) -> bool:
        return True

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        if obj["kind"] == "ServiceMonitor":
            raise NotControlled("ServiceMonitor", "team-a", "churn", "it has no controller")
        self.applied.append(obj["kind"])
        return obj

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        raise self.error


def test_a_foreign_monitoring_object_is_named_and_the_other_still_applied() -> None:
    kube = MonitoringKube(RuntimeError("unused"))
    note = MonitoringSync(kube, Settings()).sync(make_model(), {})
    assert (note.ok, note.reason) == (False, Reason.OBJECT_CONFLICT)
    assert "ServiceMonitor team-a/churn exists and is not controlled" in note.message
    assert kube.applied == ["PrometheusRule"]


@pytest.mark.parametrize(
    "error",
    [
        NotControlled("ServiceMonitor", "team-a", "churn", "it has no controller"),
        ApiError("GET", "/apis/monitoring.coreos.com/v1/...", 403, b'{"message": "forbidden"}'),
    ],
)
def test_monitoring_turned_off_never_fails_the_reconcile_over_a_delete(error: Exception) -> None:
    off = make_model(monitoring={"enabled": False})
    note = MonitoringSync(MonitoringKube(error), Settings()).sync(off, {})
    assert (note.ok, note.reason) == (False, Reason.MONITORING_DISABLED)
    assert "ServiceMonitor team-a/churn" in note.message
