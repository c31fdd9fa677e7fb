"""The planner's canary and shadow (issue 18): steps from the cluster, judged by analysis,
promoted or refused, resumed after a crash from what the objects say."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from mlmodel_operator.analysis import Check, Verdict
from mlmodel_operator.conditions import Phase, Reason
from mlmodel_operator.plan import (
    ANALYSIS_POLL_SECONDS,
    ApplyDeployment,
    DeleteUnserved,
    DeploymentState,
    EndedRollout,
    HistoryEntry,
    MarkRetiring,
    MarkRolledBack,
    Observed,
    Retire,
    RunningRollout,
    SetStep,
    ShadowTraffic,
    SplitService,
    SwitchService,
    canary_replicas,
    effective_weight,
    plan,
    shadow_replicas,
)
from mlmodel_operator.spec import ModelSpec, SpecError, parse_model

SHA1, SHA2 = "1" * 64, "2" * 64
NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
SECRET = "mlmodel-s3-credentials"
STEPS = [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}]


def model(strategy: str = "canary", analysis: dict[str, Any] | None = None) -> ModelSpec:
    rollout: dict[str, Any] = {"strategy": strategy, "steps": STEPS}
    if analysis is not None:
        rollout["analysis"] = analysis
    return parse_model(
        {
            "metadata": {"name": "churn", "namespace": "ns", "uid": "u-1", "generation": 4},
            "spec": {
                "version": "2",
                "artifact": {"uri": "s3://models/ns/churn/2/model.joblib", "sha256": SHA2},
                "serving": {"replicas": 3},
                "rollout": rollout,
            },
        }
    )


def dep(
    version: str,
    *,
    available: int = 3,
    desired: int = 3,
    step: int = 0,
    step_age: float = 0.0,
    rolled_back: str | None = None,
) -> DeploymentState:
    return DeploymentState(
        name=f"churn-v{version}", uid=f"uid-{version}", version=version,
        sha256=SHA1 if version == "1" else SHA2, desired=desired, available=available,
        ready=available, updated=desired, current=True,
        created_at=NOW - dt.timedelta(seconds=300), step=step,
        step_since=NOW - dt.timedelta(seconds=step_age) if step else None,
        rolled_back=rolled_back,
    )  # fmt: skip


def observed(*deps: DeploymentState, **kw: Any) -> Observed:
    history = [
        HistoryEntry("1", SHA1, "s3://models/ns/churn/1/model.joblib", "2026-03-01T00:00:00Z")
    ]
    if kw.pop("candidate_open", False):
        history.append(HistoryEntry("2", SHA2, "", "2026-03-14T11:59:00Z"))
    return Observed(deployments=deps, service_version="1", history=tuple(history), now=NOW, **kw)


def passing(requests: float = 100) -> Verdict:
    return Verdict((Check("errorRatio", 0.0, 0.01, True),), requests, 20)


def failing() -> Verdict:
    return Verdict((Check("errorRatio", 0.2, 0.01, False),), 100, 20)


def test_replica_counts_realise_the_weights_and_say_how_exactly() -> None:
    assert [canary_replicas(3, w) for w in (10, 25, 50, 75, 99)] == [1, 1, 3, 9, 297]
    assert effective_weight(3, canary_replicas(3, 25)) == 25
    assert effective_weight(1, canary_replicas(1, 10)) == 50  # one stable Pod: 50% at least
    assert [shadow_replicas(3, w) for w in (1, 50, 100)] == [1, 2, 3]


def test_the_candidate_starts_beside_the_stable_version_without_traffic() -> None:
    p = plan(model(), observed(dep("1")), SECRET)
    assert p.actions == (ApplyDeployment("2", 1),)
    assert (p.phase, p.active_version) == (Phase.DEPLOYING, "1")


def test_available_candidate_gets_its_first_step_and_the_shared_service() -> None:
    p = plan(model(), observed(dep("1"), dep("2", available=1, desired=1)), SECRET)
    assert SetStep("churn-v2", "2", 1, 25) in p.actions
    assert SplitService("1", "2") in p.actions
    assert p.deployed_now == ("2",)  # it answers clients from now on
    assert p.rollout is not None
    assert (p.rollout["step"], p.rollout["weight"], p.rollout["effectiveWeight"]) == (1, 25, 25)


def test_a_step_waits_its_pause_and_then_the_next_one_starts() -> None:
    cand = dep("2", available=1, desired=1, step=1, step_age=30)
    p = plan(model(), observed(dep("1"), cand, split="2", candidate_open=True), SECRET)
    assert not any(isinstance(a, SetStep) for a in p.actions)
    assert p.requeue_after is not None and p.requeue_after <= 30
    later = replace(cand, step_since=NOW - dt.timedelta(seconds=61))
    p = plan(model(), observed(dep("1"), later, split="2", candidate_open=True), SECRET)
    assert SetStep("churn-v2", "2", 2, 50) in p.actions
    assert p.actions[0] == ApplyDeployment("2", 3)  # 50%: as many Pods as the stable
    assert p.rollout is not None and p.rollout["step"] == 2


def test_after_a_crash_the_step_and_its_traffic_come_from_the_cluster() -> None:
    cand = dep("2", available=1, desired=1, step=1, step_age=10)
    p = plan(model(), observed(dep("1"), cand, candidate_open=True), SECRET)  # no split
    assert SplitService("1", "2") in p.actions  # the step's traffic, restored
    assert not any(isinstance(a, SetStep) for a in p.actions)  # the step itself is kept


def test_a_failed_check_rolls_back_at_once_and_archives_what_answered_clients() -> None:
    cand = dep("2", available=1, desired=1, step=1, step_age=5)
    m = model(analysis={"maxErrorRatio": 0.01})
    obs = observed(dep("1"), cand, split="2", candidate_open=True, analysis=failing(),
                   running=RunningRollout("canary", "2", "1"))  # fmt: skip
    p = plan(m, obs, SECRET)
    assert p.actions[0] == SwitchService("1")
    assert isinstance(p.actions[1], MarkRolledBack) and p.actions[1].result == Reason.ROLLED_BACK
    assert "errorRatio 0.2 (at most 0.01)" in p.actions[1].message
    assert p.actions[2] == Retire(cand, Reason.ROLLED_BACK)
    assert (p.phase, p.blocked_reason, p.active_version) == (
        Phase.DEGRADED, Reason.ROLLED_BACK, "1",
    )  # fmt: skip
    assert p.rollout is None and p.rollout_ended is not None
    assert p.rollout_ended["result"] == Reason.ROLLED_BACK
    assert p.rollout_ended["checks"] == [
        {"name": "errorRatio", "value": 0.2, "limit": 0.01, "passed": False}
    ]


def test_too_few_requests_judge_nothing_and_the_step_waits() -> None:
    cand = dep("2", available=1, desired=1, step=2, step_age=120)
    m = model(analysis={"maxErrorRatio": 0.01})
    few = Verdict((Check("errorRatio", 1.0, 0.01, False),), 3, 20)
    p = plan(m, observed(dep("1"), cand, split="2", candidate_open=True, analysis=few), SECRET)
    assert not any(isinstance(a, (MarkRolledBack, SwitchService)) for a in p.actions)
    assert "3/20 requests" in p.message


def test_the_last_step_held_promotes_and_the_stable_version_retires_as_usual() -> None:
    cand = dep("2", available=3, desired=3, step=2, step_age=61)
    m = model(analysis={"maxErrorRatio": 0.01})
    obs = observed(dep("1"), cand, split="2", candidate_open=True, analysis=passing(),
                   running=RunningRollout("canary", "2", "1"))  # fmt: skip
    p = plan(m, obs, SECRET)
    assert ApplyDeployment("2") in p.actions and SwitchService("2") in p.actions
    assert p.rollout_ended is not None and p.rollout_ended["result"] == Reason.PROMOTED
    # the next reconcile: the Service selects 2 alone; 1 retires as after a switch
    after = Observed((dep("1"), cand), "2", obs.history, NOW)
    p = plan(m, after, SECRET)
    assert MarkRetiring("churn-v1", "1") in p.actions


def test_a_refused_version_is_never_deployed_again_under_its_digest() -> None:
    ended = EndedRollout(Reason.ROLLED_BACK, "2", SHA2, "step 1/2: errorRatio 0.2")
    p = plan(model(), observed(dep("1"), ended=ended), SECRET)
    assert p.actions == ()
    assert p.blocked_reason == Reason.ROLLED_BACK and "errorRatio 0.2" in p.message


def test_a_rollback_lost_with_its_status_is_still_a_rollback() -> None:
    marked = dep("2", available=1, desired=1, step=1, step_age=5, rolled_back="errorRatio 0.2")
    p = plan(model(), observed(dep("1"), marked, split="2", candidate_open=True), SECRET)
    assert SwitchService("1") in p.actions and Retire(marked, Reason.ROLLED_BACK) in p.actions
    gone = observed(dep("1"), candidate_open=True, running=RunningRollout("canary", "2", "1"))
    p = plan(model(), gone, SECRET)
    assert not any(isinstance(a, ApplyDeployment) for a in p.actions)
    assert any(isinstance(a, Retire) and a.reason == Reason.ROLLED_BACK for a in p.actions)


def test_abort_and_promote_by_hand() -> None:
    cand = dep("2", available=1, desired=1, step=1, step_age=5)
    base = observed(dep("1"), cand, split="2", candidate_open=True)
    p = plan(model(), replace(base, abort="2"), SECRET)
    assert p.rollout_ended is not None and p.rollout_ended["result"] == Reason.ABORTED
    p = plan(model(), replace(base, abort="7"), SECRET)  # another candidate: ignored
    assert p.rollout_ended is None
    p = plan(model(), replace(base, promote="2"), SECRET)
    assert p.actions[0] == ApplyDeployment("2")  # first its full replica count
    assert SwitchService("2") not in p.actions and "scales to 3 replicas" in p.message
    full = replace(base, deployments=(dep("1"), replace(cand, available=3, desired=3,
                                                        updated=3)), promote="2")  # fmt: skip
    p = plan(model(), full, SECRET)
    assert SwitchService("2") in p.actions


def test_applying_the_stable_version_mid_canary_stops_it_cleanly() -> None:
    cand = dep("2", available=1, desired=1, step=1, step_age=5)
    m = parse_model(
        {
            "metadata": {"name": "churn", "namespace": "ns", "uid": "u-1", "generation": 5},
            "spec": {
                "version": "1",
                "artifact": {"uri": "s3://models/ns/churn/1/model.joblib", "sha256": SHA1},
                "serving": {"replicas": 3},
                "rollout": {"strategy": "canary", "steps": STEPS},
            },
        }
    )
    obs = observed(dep("1"), cand, split="2", candidate_open=True,
                   running=RunningRollout("canary", "2", "1"))  # fmt: skip
    p = plan(m, obs, SECRET)
    assert SwitchService("1") in p.actions  # the Service selects version 1 alone again
    assert MarkRetiring("churn-v2", "2") in p.actions  # it answered clients: archived
    assert p.rollout_ended is not None and p.rollout_ended["result"] == Reason.ABORTED


def test_shadow_copies_to_the_candidate_and_a_refused_one_is_never_archived() -> None:
    m = model("shadow", {"minAgreement": 0.98})
    p = plan(m, observed(dep("1")), SECRET)
    assert p.actions == (ApplyDeployment("2", 1, 0.25),)
    p = plan(m, observed(dep("1"), dep("2", available=1, desired=1)), SECRET)
    assert ShadowTraffic("2") in p.actions and not any(
        isinstance(a, SplitService) for a in p.actions
    )
    assert p.deployed_now == ()  # it answers no client
    cand = dep("2", available=1, desired=1, step=1, step_age=5)
    bad = Verdict((Check("agreement", 0.95, 0.98, False),), 200, 20)
    p = plan(m, observed(dep("1"), cand, shadow="2", analysis=bad), SECRET)
    assert ShadowTraffic(None) in p.actions and DeleteUnserved(cand) in p.actions
    assert "agreement 0.95 (at least 0.98)" in p.message


def test_analysis_without_prometheus_is_refused_before_anything_starts() -> None:
    p = plan(model(analysis={"maxErrorRatio": 0.01}), observed(dep("1"), prometheus=False), SECRET)
    assert p.actions == () and p.blocked_reason == Reason.ANALYSIS_UNAVAILABLE


@pytest.mark.parametrize(
    ("rollout", "field"),
    [
        ({"strategy": "canary"}, "spec.rollout.steps"),
        ({"strategy": "canary", "steps": [{"weight": 100}]}, "spec.rollout.steps[0].weight"),
        ({"strategy": "canary", "steps": [{"weight": 50}, {"weight": 5}]}, "steps[1].weight"),
        ({"strategy": "blue-green", "steps": [{"weight": 5}]}, "spec.rollout.strategy"),
        (
            {"strategy": "canary", "steps": [{"weight": 5}], "analysis": {"minAgreement": 0.9}},
            "spec.rollout.analysis.minAgreement",
        ),
        ({"analysis": {"maxDriftPsi": 0.2}}, "spec.rollout.analysis.maxDriftPsi"),
    ],
)
def test_bad_rollouts_name_the_field(rollout: dict[str, Any], field: str) -> None:
    body = {
        "metadata": {"name": "churn", "namespace": "ns", "uid": "u"},
        "spec": {
            "version": "2",
            "artifact": {"uri": "s3://models/ns/churn/2/model.joblib", "sha256": SHA2},
            "rollout": rollout,
        },
    }
    with pytest.raises(SpecError) as info:
        parse_model(body)
    assert field in str(info.value)


def test_a_step_goes_on_while_its_candidate_scales_up() -> None:
    """Found on the real node: step 2's scale-up made the candidate not Available for a
    moment, and the plan took that for a rollout that had stopped (Aborted)."""
    scaling = dep("2", available=1, desired=3, step=2, step_age=3)
    running = RunningRollout("canary", "2", "1")
    p = plan(model(), observed(dep("1"), scaling, split="2", candidate_open=True,
                               running=running), SECRET)  # fmt: skip
    assert p.rollout is not None and p.rollout["step"] == 2
    assert p.rollout_ended is None
    assert not any(isinstance(a, (MarkRolledBack, SwitchService)) for a in p.actions)


def test_steps_removed_from_the_spec_mid_rollout_leave_the_last_one() -> None:
    running = dep("2", available=1, desired=1, step=5, step_age=5)
    p = plan(model(), observed(dep("1"), running, split="2", candidate_open=True), SECRET)
    assert p.rollout is not None and p.rollout["step"] == 2  # step 5 of 2: the last
    held = replace(running, step_since=NOW - dt.timedelta(seconds=100), available=3,
                   desired=3, updated=3)  # fmt: skip
    p = plan(model(), observed(dep("1"), held, split="2", candidate_open=True), SECRET)
    assert SwitchService("2") in p.actions  # the last step held: promoted


def test_versions_of_an_earlier_rollout_leave_before_the_first_step() -> None:
    """A canary's Service selects every Pod of the model: the first step waits, even with
    its candidate Available (and past its ready timeout), until only the stable version
    is beside it; what served retires as usual, what never served goes at once."""
    m = model()
    m = replace(m, rollout=replace(m.rollout, ready_timeout_seconds=60))
    served, unserved = dep("3"), dep("4")
    obs = observed(dep("1"), dep("2", available=1, desired=1), served, unserved, split="3",
                   shadow="3")  # fmt: skip
    obs = replace(obs, history=(*obs.history, HistoryEntry("3", SHA2, "", "2026-03-14T11:00:00Z")))
    p = plan(m, obs, SECRET)
    assert p.actions == (
        ApplyDeployment("2", 1), MarkRetiring("churn-v3", "3"), DeleteUnserved(unserved),
        SwitchService("1"), ShadowTraffic(None),
    )  # fmt: skip
    assert (p.phase, p.active_version, p.rollout_timed_out) == (Phase.DEPLOYING, "1", False)
    assert p.rollout is None and "versions 3, 4 leave first" in p.message
    drained = replace(served, retiring_since=NOW - dt.timedelta(seconds=31))
    p = plan(m, replace(obs, deployments=(dep("1"), dep("2", available=1, desired=1), drained)),
             SECRET)  # fmt: skip
    assert Retire(drained) in p.actions and not any(isinstance(a, SetStep) for a in p.actions)


def test_a_candidate_not_available_in_time_degrades_and_the_stable_version_serves() -> None:
    m = model()
    m = replace(m, rollout=replace(m.rollout, ready_timeout_seconds=60))
    slow = dep("2", available=0, desired=1)  # created 300 s ago
    p = plan(m, observed(dep("1"), slow), SECRET)
    assert (p.phase, p.active_version, p.rollout_timed_out) == (Phase.DEGRADED, "1", True)
    assert p.actions == (ApplyDeployment("2", 1),) and p.rollout is None
    assert "not available after 60s" in p.message and p.blocked is None
    p = plan(model(), observed(dep("1"), slow), SECRET)  # within the default 600 s: waits
    assert (p.phase, p.rollout_timed_out) == (Phase.DEPLOYING, False)


def test_a_step_whose_time_is_up_waits_for_a_verdict_before_the_next() -> None:
    """Prometheus unreachable mid-step judges nothing: the step neither ends nor fails."""
    cand = dep("2", available=1, desired=1, step=1, step_age=61)
    m = model(analysis={"maxErrorRatio": 0.01})
    down = Verdict((), 0.0, 20, error="http://prometheus:9090: connection refused")
    p = plan(m, observed(dep("1"), cand, split="2", candidate_open=True, analysis=down), SECRET)
    assert not any(isinstance(a, (SetStep, MarkRolledBack, SwitchService)) for a in p.actions)
    assert (p.phase, p.requeue_after) == (Phase.DEPLOYING, ANALYSIS_POLL_SECONDS)
    assert "analysis not read" in p.message and "judged once the analysis can say" in p.message
    assert p.rollout is not None and p.rollout["step"] == 1
    p = plan(m, observed(dep("1"), cand, split="2", candidate_open=True, analysis=passing()),
             SECRET)  # fmt: skip
    assert SetStep("churn-v2", "2", 2, 50) in p.actions
