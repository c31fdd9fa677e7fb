"""The Monitored condition in the status, from the monitoring step's note."""

from __future__ import annotations

import datetime as dt
from typing import Any

from model_specs import make_model

from mlmodel_operator.conditions import TRUE, Phase, Reason
from mlmodel_operator.plan import DeploymentState, Plan
from mlmodel_operator.status import MonitoringNote, build_status
from mlmodel_operator.verify import Verdict

SHA = "ab" * 32
T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
MODEL = make_model(uid="u", generation=4, sha256=SHA, version="2")
SERVING = DeploymentState("churn-v2", "uid", "2", SHA, 2, 2, 2, 2, True, T0)
PLAN = Plan((), Phase.SERVING, "2", "version 2 serving")
VERIFIED = Verdict(TRUE, Reason.DIGEST_VERIFIED, "ok")


def monitored(
    old: dict[str, object], note: MonitoringNote | None, now: dt.datetime
) -> dict[str, Any]:
    st = build_status(
        MODEL, PLAN, (), old, SERVING, VERIFIED, None, "http://e", now, monitoring=note
    )
    return next((c for c in st["conditions"] if c["type"] == "Monitored"), {})


def test_missing_then_configured_with_transition_times() -> None:
    missing = MonitoringNote(False, Reason.PROMETHEUS_OPERATOR_MISSING, "CRDs x, y missing")
    first = monitored({}, missing, T0)
    assert (first["status"], first["reason"], first["message"]) == (
        "False",
        "PrometheusOperatorMissing",
        "CRDs x, y missing",
    )
    assert first["observedGeneration"] == 4
    again = monitored({"conditions": [first]}, missing, T1)
    assert again["lastTransitionTime"] == first["lastTransitionTime"]
    ok = monitored({"conditions": [again]}, MonitoringNote(True, "MonitoringConfigured", "ok"), T1)
    assert ok["status"] == "True" and ok["lastTransitionTime"] != first["lastTransitionTime"]


def test_no_note_leaves_the_condition_alone() -> None:
    before = monitored({}, MonitoringNote(True, "MonitoringConfigured", "ok"), T0)
    assert monitored({"conditions": [before]}, None, T1) == before
    assert monitored({}, None, T0) == {}
