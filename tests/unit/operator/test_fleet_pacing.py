"""A change of every model's Pods (a new default serving image) is paced across the fleet
(MLMODEL_FLEET_UPDATES_PER_SECOND): each model gets its own turn, new Deployments never
wait, and a model keeps the turn it was given."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from test_bounded_memory import World

from mlmodel_operator.archive import no_archive
from mlmodel_operator.desired import URI_ANNOTATION
from mlmodel_operator.plan import DeploymentState
from mlmodel_operator.reconcile import Reconciler
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model
from mlmodel_operator.verify import ArtifactVerifier
from mlmodel_operator.wakeups import Wakeups

NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)


def body(uid: str, version: str = "1") -> dict[str, Any]:
    return {
        "metadata": {"name": f"m-{uid}", "namespace": "team-a", "uid": uid, "generation": 1},
        "spec": {
            "version": version,
            "artifact": {"uri": f"s3://models/m/{version}/model.joblib", "sha256": "a" * 64},
        },
    }


class Fleet(World):
    """Every model already runs version 1, made by an older operator: its applied hash is
    not what this one would apply (a new default image, say)."""

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        self.deployments = (
            DeploymentState(f"{model}-v1", f"d-{model}", "1", "a" * 64, 1, 1, 1, 1, True, NOW),
        )
        return super().list_deployments(namespace, model, owner_uid)


def reconciler(world: World, rate: float) -> Reconciler:
    settings = Settings(fleet_updates_per_second=rate)
    return Reconciler(world, settings, ArtifactVerifier(None), no_archive, clock=lambda: NOW)


def test_updates_of_running_deployments_take_turns_at_the_set_rate() -> None:
    world = Fleet()
    r = reconciler(world, rate=1.0)
    waits = []
    for n in range(4):
        outcome = r._reconcile(parse_model(body(f"u{n}")), {})
        waits.append(outcome.requeue_after)
    assert world.applied.count("m-u0-v1") == 1  # the first had a token
    assert not any(name.startswith(("m-u1", "m-u2", "m-u3")) for name in world.applied)
    assert waits[1:] == sorted(waits[1:]) and all(w is not None for w in waits[1:])
    assert 0.5 < waits[1] <= 1.0 and 2.5 < waits[3] <= 3.0  # one per second, in turn
    again = r._reconcile(parse_model(body("u3")), {}).requeue_after
    assert again is not None and again <= waits[3]  # its turn kept, not a new one


def test_no_limit_lets_every_update_through() -> None:
    world = Fleet()
    r = reconciler(world, rate=0.0)
    for n in range(20):
        r._reconcile(parse_model(body(f"u{n}")), {})
    assert len([name for name in world.applied if name.endswith("-v1")]) == 20


def test_a_new_deployment_never_waits_for_the_budget() -> None:
    world = World()  # nothing deployed yet: every apply is a creation
    r = reconciler(world, rate=1.0)
    for n in range(5):
        r._reconcile(parse_model(body(f"u{n}")), {})
    assert len([name for name in world.applied if name.endswith("-v1")]) == 5


class Recording(Fleet):
    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[str] = []

    def patch_model_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self.statuses.append(name)
        return {"metadata": {"name": name, "resourceVersion": str(len(self.statuses) + 100)}}


def stored(uid: str, **meta: Any) -> dict[str, Any]:
    b = body(uid)
    b["metadata"].update(resourceVersion="7", **meta)
    return b


def test_a_paced_model_is_woken_at_its_turn_without_asking_kopf() -> None:
    """The wait for the fleet's budget is a wake-up at the model's turn (was a kopf retry:
    a PATCH of the MLModel per wait); one that changed nothing is looked at again one
    interval later."""
    world = Recording()
    r = reconciler(world, rate=1.0)
    clock = [50.0]
    r.wakeups = Wakeups(30.0, clock=lambda: clock[0], rand=lambda: 0.5)
    r.reconcile(stored("u0"))  # the bucket's one token
    r.reconcile(stored("u1"))  # paced
    due, nxt = r.wakeups.pop_due()
    assert due == [] and nxt is not None and 0.5 < nxt <= 1.0  # u1 at its turn
    clock[0] += 1.0
    due, nxt = r.wakeups.pop_due()
    assert [d.uid for d in due] == ["u1"]
    assert nxt == pytest.approx(29.0)  # u0: the periodic look


def test_a_model_being_deleted_is_left_to_the_finalizer() -> None:
    """A wake-up or an event of one of its objects reaches a model being deleted: nothing
    is applied (a Deployment the garbage collector removes is not made again), no status
    is written over the finalizer's, and it is not woken again."""
    world = Recording()
    r = reconciler(world, rate=0.0)
    r.wakeups = Wakeups(30.0)
    outcome = r.reconcile(stored("u1", deletionTimestamp="2026-03-14T12:00:00Z"))
    assert outcome.gone
    assert world.applied == [] and world.statuses == []
    assert len(r.wakeups) == 0


class CountingVerifier(ArtifactVerifier):
    """Counts the checks that would reach the object store (not those of a Deployment
    already made for these bytes)."""

    def __init__(self) -> None:
        super().__init__(None)
        self.fetches = 0

    def check(self, artifact: Any, owner: str | None = None, **kw: Any) -> Any:
        if not kw.get("deployed"):
            self.fetches += 1
        return super().check(artifact, owner=owner, **kw)


class FleetWithUri(Fleet):
    """The Deployments carry the artifact's URI, as the operator writes it: made for these
    bytes, so a reconcile at rest does not check the artifact."""

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        out = super().list_deployments(namespace, model, owner_uid)
        for d in out:
            d["metadata"]["annotations"][URI_ANNOTATION] = "s3://models/m/1/model.joblib"
        return out


def test_a_paced_model_checks_its_artifact_once_when_its_turn_comes() -> None:
    world = FleetWithUri()
    verifier = CountingVerifier()
    ticks = [1000.0]
    r = Reconciler(
        world,
        Settings(fleet_updates_per_second=1.0),
        verifier,
        no_archive,
        clock=lambda: NOW,
        monotonic=lambda: ticks[0],
    )
    r._reconcile(parse_model(body("u0")), {})  # the token: checked and applied
    assert verifier.fetches == 1
    for _ in range(3):  # u1 waits for its turn: no check while it waits
        r._reconcile(parse_model(body("u1")), {})
    assert verifier.fetches == 1
    assert not any(name.startswith("m-u1") for name in world.applied)
    ticks[0] += 1.0  # its turn
    r._reconcile(parse_model(body("u1")), {})
    assert verifier.fetches == 2  # checked once, at its turn
    assert world.applied.count("m-u1-v1") == 1


def test_a_new_model_posts_one_deploying_event_not_two() -> None:
    # the plan's "created Deployment" is the phase's transition too: at 1,000 new models,
    # a second Event each was 1,000 more writes to the apiserver in the burst
    outcome = reconciler(World(), rate=0.0)._reconcile(parse_model(body("u0")), {})
    assert outcome.status["phase"] == "Deploying"
    assert [e.reason for e in outcome.events] == ["Deploying"]
    assert outcome.events[0].message == "created Deployment for version 1"
