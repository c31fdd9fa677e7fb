"""Joining kopf's peering in order, saying when the object is missing, readiness, and
stopping when the object goes away (mlmodel_operator.peering), against an in-memory API."""

from __future__ import annotations

import asyncio
import copy
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kopf._core.engines.peering import Peer as KopfPeer

from mlmodel_operator.peering import (
    REMIND_EVERY,
    Conflict,
    Peer,
    Peering,
    PeeringConfig,
    PeeringObject,
    PeeringUnavailable,
    assess,
    joining_priority,
    keepalive,
    not_found,
    parse_peers,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)
OBJ = PeeringObject("mlmodel-operator")


class FakeApi:
    """Peering objects in memory, with resourceVersions and the apiserver's 409."""

    def __init__(self) -> None:
        self.objects: dict[PeeringObject, dict[str, Any]] = {}
        self.version = 0
        self.before_patch: list[Any] = []  # callables run once before the next patch
        self.before_get: Any = None  # a callable run before every get

    def create(self, obj: PeeringObject, uid: str = "uid-1") -> None:
        self.version += 1
        self.objects[obj] = {
            "metadata": {"name": obj.name, "uid": uid, "resourceVersion": str(self.version)}
        }

    def get(self, obj: PeeringObject) -> dict[str, Any] | None:
        if self.before_get is not None:
            self.before_get()
        body = self.objects.get(obj)
        return copy.deepcopy(body) if body is not None else None

    def patch_status(
        self, obj: PeeringObject, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        while self.before_patch:
            self.before_patch.pop(0)()
        body = self.objects.get(obj)
        if body is None:
            raise PeeringUnavailable("gone")
        if resource_version is not None and resource_version != body["metadata"]["resourceVersion"]:
            raise Conflict(str(obj))
        body.setdefault("status", {}).update(status)
        self.version += 1
        body["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(body)


class Clock:
    """A fake monotonic clock and wall clock that ``sleep`` advances."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.on_sleep: list[Any] = []

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds

    async def sleep(self, seconds: float) -> None:
        self.seconds += seconds
        for hook in list(self.on_sleep):
            hook(self.seconds)


def peering(clock: Clock, identity: str = "a", priority: int = -100) -> Peering:
    config = PeeringConfig(name=OBJ.name, identity=identity, priority=priority, lifetime=10)
    return Peering(config, now=clock.now, clock=clock.monotonic, sleep=clock.sleep)


def record(priority: int, at: datetime, lifetime: int = 10) -> dict[str, Any]:
    return keepalive(priority, lifetime, at)


def body(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": OBJ.name, "uid": "u"}, "status": status}


# --- the record and the rule, as kopf has them


def test_kopf_reads_our_keepalive_as_one_of_its_own() -> None:
    now = datetime.now(UTC)
    peer = KopfPeer(identity="a", **keepalive(-5, 10, now))
    assert (peer.priority, peer.lifetime, peer.is_dead) == (-5, timedelta(seconds=10), False)
    assert peer.deadline == now + timedelta(seconds=10)
    (ours,) = parse_peers({"a": peer.as_dict()}, now)  # and we read kopf's
    assert (ours.priority, ours.lifetime, ours.lastseen) == (-5, 10, now)


def test_records_are_read_with_kopfs_defaults_and_junk_is_skipped() -> None:
    peers = parse_peers({"old": {}, "junk": "x", "bad": {"priority": "high"}}, T0)
    assert peers == [Peer("old", 0, 60, T0)]
    assert parse_peers(None, T0) == []


def test_a_joining_replica_goes_below_every_live_one_and_ignores_the_dead() -> None:
    peers = [
        Peer("worker", -50, 10, T0),
        Peer("dead", -10, 10, T0 - timedelta(seconds=11)),
        Peer("me", 7, 10, T0),
    ]
    assert joining_priority(0, peers, "me", T0) == -51
    assert joining_priority(-99, peers, "me", T0) == -99  # already below
    assert joining_priority(3, [], "me", T0) == 3


def test_ready_means_present_alive_and_not_tied() -> None:
    fresh, stale = T0, T0 - timedelta(seconds=10)
    missing = assess(OBJ, None, "me", 1, T0)
    assert not missing.ready
    assert "ClusterKopfPeering 'mlmodel-operator' does not exist" in missing.reason
    assert "kubectl apply -f manifests/operator/peering.yaml" in missing.reason
    assert not assess(OBJ, body({}), "me", 1, T0).ready
    absent = assess(OBJ, body({"me": record(1, stale)}), "me", 1, T0)
    assert not absent.ready and "keep-alive ('me')" in absent.reason
    tied = assess(OBJ, body({"me": record(1, fresh), "you": record(1, fresh)}), "me", 1, T0)
    assert not tied.ready and "you" in tied.reason and "--priority=oldest" in tied.reason
    standby = assess(OBJ, body({"me": record(1, fresh), "you": record(2, fresh)}), "me", 1, T0)
    assert standby.ready and not standby.active and "you works" in standby.reason
    gone_worker = body({"me": record(1, fresh), "you": record(2, stale)})
    assert assess(OBJ, gone_worker, "me", 1, T0).active


def test_a_404_names_the_missing_crd_unless_it_names_the_object() -> None:
    object_missing = (
        b'{"kind":"Status","reason":"NotFound","details":{"name":"mlmodel-operator",'
        b'"group":"kopf.dev","kind":"clusterkopfpeerings"},"code":404}'
    )
    assert not_found(OBJ, object_missing) is None
    crd_missing = not_found(OBJ, b"404 page not found\n")
    assert crd_missing is not None
    assert "CRD clusterkopfpeerings.kopf.dev is not installed" in str(crd_missing)
    assert "kubectl apply --server-side -k crds/" in str(crd_missing)


def test_namespaced_peering_names_each_kopfpeering() -> None:
    config = PeeringConfig(name="p", identity="a", priority=0, namespaces=("team-a", "team-b"))
    assert [str(o) for o in config.objects] == [
        "KopfPeering 'p' in namespace 'team-a'",
        "KopfPeering 'p' in namespace 'team-b'",
    ]
    assert config.objects[0].path == "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings/p"


# --- joining


def test_a_missing_object_is_said_every_remind_interval_and_joined_when_it_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, api = Clock(), FakeApi()
    replica = peering(clock)
    appear_at = 2 * REMIND_EVERY + 5
    clock.on_sleep.append(lambda t: api.create(OBJ) if t >= appear_at and not api.objects else None)
    logger = logging.getLogger("test-peering")
    with caplog.at_level(logging.INFO, logger="test-peering"):
        readiness_while_waiting: list[bool] = []
        clock.on_sleep.append(lambda _: readiness_while_waiting.append(replica.readiness()[0]))
        priority = asyncio.run(replica.join(api, logger))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3  # at 0 s, 15 s and 30 s of waiting
    assert all("ClusterKopfPeering 'mlmodel-operator' does not exist" in r.message for r in errors)
    assert set(readiness_while_waiting[:-1]) == {False}
    assert "found: joined as 'a'" in caplog.records[-1].message
    assert priority == -100
    ready, detail = replica.readiness()
    assert ready and detail["active"] and detail["identity"] == "a"
    status = api.objects[OBJ]["status"]
    assert status["a"]["priority"] == -100 and status["a"]["lifetime"] == 10


def test_two_replicas_joining_one_new_object_are_ordered_by_who_joined_first() -> None:
    clock, api = Clock(), FakeApi()
    api.create(OBJ)
    logger = logging.getLogger("test-peering")
    # the replica started first (higher wanted priority) joins second: it goes below
    second = asyncio.run(peering(clock, "b", priority=-200).join(api, logger))
    first = asyncio.run(peering(clock, "a", priority=-100).join(api, logger))
    assert (second, first) == (-200, -201)


def test_a_write_in_between_is_read_again_and_gone_below() -> None:
    clock, api = Clock(), FakeApi()
    api.create(OBJ)

    def other_replica_joins() -> None:
        api.patch_status(OBJ, {"b": record(-500, clock.now())}, None)

    api.before_patch.append(other_replica_joins)
    priority = asyncio.run(peering(clock, "a", priority=-100).join(api, logging.getLogger("t")))
    assert priority == -501


def test_unordered_priorities_are_written_as_given() -> None:
    clock, api = Clock(), FakeApi()
    api.create(OBJ)
    api.patch_status(OBJ, {"b": record(0, clock.now())}, None)
    config = PeeringConfig(name=OBJ.name, identity="a", priority=0, lifetime=10, ordered=False)
    replica = Peering(config, now=clock.now, clock=clock.monotonic, sleep=clock.sleep)
    assert asyncio.run(replica.join(api, logging.getLogger("t"))) == 0
    assert not replica.readiness()[0]  # kopf would pause both: said by the readiness


# --- watching


@pytest.mark.parametrize("change", ["deleted", "deleted and created again"])
def test_a_replica_stops_when_its_object_is_deleted_or_created_again(
    change: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock, api = Clock(), FakeApi()
    api.create(OBJ)
    replica = peering(clock)
    logger = logging.getLogger("test-peering")
    asyncio.run(replica.join(api, logger))

    def change_it(t: float) -> None:
        if t > 20 and api.objects.get(OBJ, {}).get("metadata", {}).get("uid") == "uid-1":
            del api.objects[OBJ]
            if change == "deleted and created again":
                api.create(OBJ, uid="uid-2")

    clock.on_sleep.append(change_it)
    stops: list[bool] = []
    with caplog.at_level(logging.ERROR, logger="test-peering"):
        asyncio.run(replica.watch(api, logger, stop=lambda: stops.append(True)))
    assert stops == [True]
    assert replica.stopped_because is not None
    assert f"ClusterKopfPeering 'mlmodel-operator' was {change}" in replica.stopped_because
    assert not replica.readiness()[0]
    assert caplog.records[-1].message == replica.stopped_because


def test_a_peering_that_cannot_be_read_for_two_lifetimes_is_not_ready_until_it_can(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, api = Clock(), FakeApi()
    api.create(OBJ)
    replica = peering(clock)
    logger = logging.getLogger("test-peering")
    asyncio.run(replica.join(api, logger))
    seen: list[tuple[float, bool]] = []

    def unreachable() -> None:
        if 10 < clock.seconds < 60:
            raise PeeringUnavailable("cannot reach the apiserver")
        if clock.seconds > 80:
            del api.objects[OBJ]  # ends the watch

    def keep_alive(t: float) -> None:  # what kopf does meanwhile, when it can
        if OBJ in api.objects and not 10 < t < 60:
            api.patch_status(OBJ, {"a": record(-100, clock.now())}, None)
        seen.append((t, replica.readiness()[0]))

    api.before_get = unreachable
    clock.on_sleep.append(keep_alive)
    with caplog.at_level(logging.INFO, logger="test-peering"):
        asyncio.run(replica.watch(api, logger, stop=lambda: None))
    # read last at 10 s; failing reads from 15 s; more than 20 s without one at 35 s;
    # read again at 60 s (each entry: the readiness before that moment's read)
    assert [ready for t, ready in seen if t <= 35] == [True] * 7
    assert [ready for t, ready in seen if 40 <= t <= 60] == [False] * 5
    assert [ready for t, ready in seen if 65 <= t <= 80] == [True] * 4
    messages = [r.message for r in caplog.records]
    assert "not ready: cannot reach the apiserver" in messages
    assert any(m.startswith("ready: working") for m in messages)
