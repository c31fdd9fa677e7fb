"""The planner, table-driven: every lifecycle state x what the world looks like."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mlmodel_operator.conditions import Phase, Reason
from mlmodel_operator.plan import (
    TIMEOUT_MARGIN_SECONDS,
    ApplyDeployment,
    ClearRetiring,
    DeleteUnserved,
    DeploymentState,
    HistoryEntry,
    MarkRetiring,
    Observed,
    Retire,
    SwitchService,
    parse_time,
    plan,
    record_deployed,
    record_retired,
)
from mlmodel_operator.spec import ModelSpec, parse_model

SHA1 = "1" * 64
SHA2 = "2" * 64
NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
SECRET = "mlmodel-s3-credentials"


def model(version: str = "2", sha: str = SHA2, **spec: Any) -> ModelSpec:
    body = {
        "metadata": {"name": "churn", "namespace": "team-a", "uid": "u-1", "generation": 3},
        "spec": {
            "version": version,
            "artifact": {"uri": f"s3://models/churn/{version}/model.joblib", "sha256": sha},
            "retirement": {"drainSeconds": 30},
            "rollout": {"readyTimeoutSeconds": 120},
            **spec,
        },
    }
    return parse_model(body)


def dep(
    version: str,
    *,
    available: int = 1,
    desired: int = 1,
    age: float = 60.0,
    retiring_for: float | None = None,
    sha: str | None = None,
) -> DeploymentState:
    return DeploymentState(
        name=f"churn-v{version}",
        uid=f"uid-{version}",
        version=version,
        sha256=sha or (SHA1 if version == "1" else SHA2),
        desired=desired,
        available=available,
        ready=available,
        updated=desired,
        current=True,
        created_at=NOW - dt.timedelta(seconds=age),
        retiring_since=None if retiring_for is None else NOW - dt.timedelta(seconds=retiring_for),
    )


def served(version: str, sha: str = SHA1) -> HistoryEntry:
    return HistoryEntry(
        version, sha, f"s3://models/churn/{version}/model.joblib", "2026-03-01T00:00:00Z"
    )


def observed(
    *deps: DeploymentState,
    service: str | None = None,
    history: tuple[HistoryEntry, ...] = (),
    **kw: Any,
) -> Observed:
    return Observed(deployments=deps, service_version=service, history=history, now=NOW, **kw)


def kinds(p: Any) -> list[str]:
    return [type(a).__name__ for a in p.actions]


# (case, spec version, observed, expected action kinds, expected phase, active version)
CASES = [
    ("first deploy: nothing exists", "2", observed(), ["ApplyDeployment"], Phase.DEPLOYING, None),
    (
        "first deploy: pods not ready yet",
        "2",
        observed(dep("2", available=0)),
        ["ApplyDeployment"],
        Phase.DEPLOYING,
        None,
    ),
    (
        "first deploy: ready -> Service created",
        "2",
        observed(dep("2")),
        ["ApplyDeployment", "SwitchService"],
        Phase.SERVING,
        "2",
    ),
    (
        "steady state",
        "2",
        observed(dep("2"), service="2", history=(served("2", SHA2),)),
        ["ApplyDeployment"],
        Phase.SERVING,
        "2",
    ),
    (
        "new version created while old serves",
        "2",
        observed(dep("1"), service="1", history=(served("1"),)),
        ["ApplyDeployment"],
        Phase.DEPLOYING,
        "1",
    ),
    (
        "new version not ready: old keeps serving, no switch",
        "2",
        observed(dep("1"), dep("2", available=0, age=10), service="1", history=(served("1"),)),
        ["ApplyDeployment"],
        Phase.DEPLOYING,
        "1",
    ),
    (
        "new version never ready: Degraded, old keeps serving",
        "2",
        observed(dep("1"), dep("2", available=0, age=500), service="1", history=(served("1"),)),
        ["ApplyDeployment"],
        Phase.DEGRADED,
        "1",
    ),
    (
        "new version ready: switch and start draining the old one",
        "2",
        observed(dep("1"), dep("2"), service="1", history=(served("1"),)),
        ["ApplyDeployment", "SwitchService", "MarkRetiring"],
        Phase.RETIRING,
        "2",
    ),
    (
        "old one draining",
        "2",
        observed(
            dep("1", retiring_for=5),
            dep("2"),
            service="2",
            history=(served("1"), served("2", SHA2)),
        ),
        ["ApplyDeployment"],
        Phase.RETIRING,
        "2",
    ),
    (
        "drain over: retire (archive, then delete)",
        "2",
        observed(
            dep("1", retiring_for=31),
            dep("2"),
            service="2",
            history=(served("1"), served("2", SHA2)),
        ),
        ["ApplyDeployment", "Retire"],
        Phase.RETIRING,
        "2",
    ),
    (
        "rolled back while the old one was draining: cancel its retirement",
        "1",
        observed(
            dep("1", retiring_for=5),
            dep("2"),
            service="2",
            history=(served("1"), served("2", SHA2)),
        ),
        ["ApplyDeployment", "ClearRetiring", "SwitchService", "MarkRetiring"],
        Phase.RETIRING,
        "1",
    ),
    (
        "a superseded rollout that never served is deleted at once",
        "3",
        observed(dep("1"), dep("2", available=0), service="1", history=(served("1"),)),
        ["ApplyDeployment", "DeleteUnserved"],
        Phase.DEPLOYING,
        "1",
    ),
    (
        "active version lost its pods: Degraded, nothing retired",
        "2",
        observed(dep("2", available=0), service="2", history=(served("2", SHA2),)),
        ["ApplyDeployment"],
        Phase.DEGRADED,
        "2",
    ),
    (
        "active version scaling up: still Serving",
        "2",
        observed(dep("2", available=1, desired=3), service="2", history=(served("2", SHA2),)),
        ["ApplyDeployment"],
        Phase.SERVING,
        "2",
    ),
    (
        "first deploy never ready: Failed",
        "2",
        observed(dep("2", available=0, age=500)),
        ["ApplyDeployment"],
        Phase.FAILED,
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "version", "obs", "actions", "phase", "active"), CASES, ids=[c[0] for c in CASES]
)
def test_plan_table(
    case: str, version: str, obs: Observed, actions: list[str], phase: str, active: str | None
) -> None:
    m = model(version, SHA1 if version == "1" else SHA2)
    p = plan(m, obs, SECRET)
    assert kinds(p) == actions, case
    assert p.phase == phase, case
    assert p.active_version == active, case


def test_plan_is_idempotent() -> None:
    obs = observed(dep("1"), dep("2"), service="1", history=(served("1"),))
    assert plan(model(), obs, SECRET) == plan(model(), obs, SECRET)


def test_switch_only_when_the_new_version_is_available() -> None:
    for available in (0, 1):
        obs = observed(
            dep("1", desired=1),
            dep("2", available=available, desired=2),
            service="1",
            history=(served("1"),),
        )
        assert not any(isinstance(a, SwitchService) for a in plan(model(), obs, SECRET).actions)


def test_retire_carries_the_deployment_and_waits_the_drain() -> None:
    obs = observed(
        dep("1", retiring_for=10), dep("2"), service="2", history=(served("1"), served("2", SHA2))
    )
    p = plan(model(), obs, SECRET)
    assert p.requeue_after == pytest.approx(20.0)
    obs = observed(
        dep("1", retiring_for=30), dep("2"), service="2", history=(served("1"), served("2", SHA2))
    )
    (retire,) = [a for a in plan(model(), obs, SECRET).actions if isinstance(a, Retire)]
    assert retire.deployment.version == "1" and retire.reason == "SpecChanged"


def test_mark_retiring_names_the_old_deployment() -> None:
    obs = observed(dep("1"), dep("2"), service="1", history=(served("1"),))
    (mark,) = [a for a in plan(model(), obs, SECRET).actions if isinstance(a, MarkRetiring)]
    assert mark == MarkRetiring("churn-v1", "1")


def test_a_version_never_names_two_digests() -> None:
    obs = observed(dep("2", sha=SHA2), service="2", history=(served("2", SHA2),))
    p = plan(model("2", "f" * 64), obs, SECRET)
    assert p.actions == ()
    assert p.blocked_reason == Reason.VERSION_REUSED
    assert "spec.version" in p.message and "new spec.version" in p.message
    assert p.phase == Phase.DEGRADED and p.active_version == "2"


def test_missing_secret_blocks_the_rollout_but_not_what_serves() -> None:
    obs = observed(dep("1"), service="1", history=(served("1"),), secret_present=False)
    p = plan(model(), obs, SECRET)
    assert p.actions == ()
    assert p.blocked_reason == Reason.MISSING_SECRET
    assert SECRET in p.message and "team-a" in p.message and "kubectl create secret" in p.message
    assert p.phase == Phase.DEGRADED


def test_an_image_not_allowed_blocks_the_rollout_but_not_what_serves() -> None:
    problem = "spec.serving.image 'evil.example/steal:1' is not allowed: ..."
    obs = observed(dep("1"), service="1", history=(served("1"),), image_problem=problem)
    p = plan(model("2", SHA2), obs, SECRET)
    assert p.actions == () and p.message == problem
    assert p.blocked_reason == Reason.IMAGE_NOT_ALLOWED
    assert p.phase == Phase.DEGRADED and p.active_version == "1"


def test_unusable_artifact_blocks_the_rollout() -> None:
    obs = observed(artifact_problem=(Reason.DIGEST_MISMATCH, "spec.artifact.sha256: expected ..."))
    p = plan(model(), obs, SECRET)
    assert p.actions == () and p.phase == Phase.FAILED
    assert p.blocked_reason == Reason.DIGEST_MISMATCH


REDACT = {"enabled": True, "redact": ["email"], "redactKeySecret": {"name": "churn-hmac"}}
KEY_MISSING = (Reason.REDACT_KEY_MISSING, "spec.decisionLog.redactKeySecret.name: ...")
BUCKET_DOWN = (Reason.BUCKET_UNAVAILABLE, "spec.decisionLog.bucket: 'decisions' ...")


@pytest.mark.parametrize("problem", [KEY_MISSING, BUCKET_DOWN], ids=["key", "bucket"])
def test_required_decision_log_that_cannot_be_written_blocks_the_rollout(
    problem: tuple[str, str],
) -> None:
    m = model(decisionLog={**REDACT, "mode": "required"})
    obs = observed(dep("1"), service="1", history=(served("1"),), decision_log_problem=problem)
    p = plan(m, obs, SECRET)
    assert p.actions == ()
    assert p.blocked_reason == problem[0]
    assert p.message.startswith(problem[1])
    assert "spec.decisionLog.mode is required" in p.message
    assert p.phase == Phase.DEGRADED and p.active_version == "1"  # v1 keeps serving
    nothing = plan(m, observed(decision_log_problem=problem), SECRET)
    assert nothing.actions == () and nothing.phase == Phase.FAILED


@pytest.mark.parametrize("problem", [KEY_MISSING, BUCKET_DOWN], ids=["key", "bucket"])
def test_best_effort_decision_log_never_blocks_serving(problem: tuple[str, str]) -> None:
    m = model(decisionLog=REDACT)
    p = plan(m, observed(dep("1"), service="1", history=(served("1"),)), SECRET)
    blocked = plan(
        m, observed(dep("1"), service="1", history=(served("1"),), decision_log_problem=problem),
        SECRET,
    )  # fmt: skip
    assert blocked.blocked is None
    assert (
        (kinds(blocked), blocked.phase) == (kinds(p), p.phase) == (["ApplyDeployment"], "Deploying")
    )
    # without the key the pods would not start: they get no decision log until it exists
    assert blocked.withhold_decision_log is (problem[0] == Reason.REDACT_KEY_MISSING)
    assert not p.withhold_decision_log
    ready = plan(m, observed(dep("2"), decision_log_problem=KEY_MISSING), SECRET)
    assert ready.withhold_decision_log and ready.phase == Phase.SERVING


def test_new_version_not_ready_leaves_the_old_alone() -> None:
    obs = observed(dep("1"), dep("2", available=0, age=500), service="1", history=(served("1"),))
    p = plan(model(), obs, SECRET)
    assert p.rollout_timed_out
    assert not any(
        isinstance(a, (Retire, MarkRetiring, DeleteUnserved, SwitchService)) for a in p.actions
    )
    assert "readyTimeoutSeconds" in p.message and "version 1 keeps serving" in p.message


def test_cancelled_retirement_is_cleared() -> None:
    obs = observed(dep("1", retiring_for=3), service="1", history=(served("1"),))
    p = plan(model("1", SHA1), obs, SECRET)
    assert ClearRetiring("churn-v1") in p.actions
    assert ApplyDeployment("1") in p.actions


def test_history_records() -> None:
    m = model()
    h = record_deployed((served("1"),), m, "2", NOW)
    assert [e.version for e in h] == ["1", "2"]
    assert record_deployed(h, m, "2", NOW) == h  # once
    h2 = record_retired(h, dep("1"), NOW, "SpecChanged", "s3://model-archive/team-a/churn/1/")
    closed = h2[0]
    assert closed.retired_at == "2026-03-14T12:00:00Z" and closed.reason == "SpecChanged"
    assert closed.archive == "s3://model-archive/team-a/churn/1/"
    assert h2[1].open
    # a redeploy of a retired version opens a new entry
    h3 = record_deployed(h2, model("1", SHA1), "1", NOW)
    assert [e.version for e in h3] == ["1", "2", "1"]


def test_history_is_bounded() -> None:
    h: tuple[HistoryEntry, ...] = ()
    for i in range(80):
        h = record_deployed(h, model(str(i)), str(i), NOW)
    assert len(h) == 50 and h[-1].version == "79"


def test_deployment_state_from_object() -> None:
    obj = {
        "metadata": {
            "name": "churn-v2",
            "uid": "abc",
            "generation": 4,
            "creationTimestamp": "2026-03-14T11:00:00Z",
            "labels": {"ml.lifecycle.io/version": "2"},
            "annotations": {
                "ml.lifecycle.io/sha256": SHA2,
                "ml.lifecycle.io/retiring-since": "2026-03-14T11:59:00Z",
            },
        },
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 3,
            "availableReplicas": 2,
            "updatedReplicas": 2,
            "readyReplicas": 2,
        },
    }
    d = DeploymentState.from_object(obj)
    assert (d.version, d.sha256, d.desired, d.available) == ("2", SHA2, 2, 2)
    assert d.retiring_since == parse_time("2026-03-14T11:59:00Z")
    assert not d.is_available  # the controller has not seen generation 4 yet
    obj["status"]["observedGeneration"] = 4
    assert DeploymentState.from_object(obj).is_available


def test_an_open_entry_without_a_deployment_is_retired_once() -> None:
    """The operator stopped after deleting v1 but before writing status: finish the job."""
    obs = observed(dep("2"), service="2", history=(served("1"), served("2", SHA2)))
    p = plan(model(), obs, SECRET)
    (retire,) = [a for a in p.actions if isinstance(a, Retire)]
    assert retire.deployment.version == "1" and retire.deployment.name == ""
    closed = record_retired(obs.history, retire.deployment, NOW, "SpecChanged", None)
    again = observed(dep("2"), service="2", history=closed)
    assert not any(isinstance(a, Retire) for a in plan(model(), again, SECRET).actions)
    assert plan(model(), again, SECRET).phase == Phase.SERVING


def test_a_serving_version_rolling_its_own_pods_is_not_polled() -> None:
    # a new serving image (or more replicas): the version serves meanwhile, and its
    # Deployment's watch event brings the next reconcile; a poll would be a kopf retry
    # (a PATCH of the MLModel) every few seconds for every model of a fleet
    rolling = dep("2", available=1, desired=2, age=3600.0)
    p = plan(model(), observed(rolling, service="2", history=(served("2", SHA2),)), SECRET)
    assert p.phase == Phase.SERVING and p.active_version == "2"
    assert p.requeue_after is None


def test_a_new_version_waiting_to_be_available_is_looked_at_only_when_its_time_is_up() -> None:
    # its watch event switches traffic at once; the one look asked for is just past the
    # ready timeout (spec.rollout.readyTimeoutSeconds: 120 here), so a timeout is seen
    # then, not one safety-net interval (5 minutes) later
    p = plan(model(), observed(dep("1"), dep("2", available=0, age=10.0), service="1"), SECRET)
    assert p.phase == Phase.DEPLOYING
    assert p.requeue_after == pytest.approx(110.0 + TIMEOUT_MARGIN_SECONDS)
    p = plan(model(), observed(dep("1"), dep("2", available=0, age=121.0), service="1"), SECRET)
    assert p.phase == Phase.DEGRADED and p.rollout_timed_out and p.requeue_after is None
    first = plan(model(), observed(), SECRET)  # creates it: the whole timeout to go
    assert first.phase == Phase.DEPLOYING
    assert first.requeue_after == pytest.approx(120.0 + TIMEOUT_MARGIN_SECONDS)
    p = plan(model(), observed(dep("2", available=0, age=121.0)), SECRET)
    assert p.phase == Phase.FAILED and p.requeue_after is None
