"""The in-memory copy of the operator's own objects (objcache.OwnedCache): what a watch
event or the operator's own write puts in, what an older event cannot undo."""

from __future__ import annotations

from typing import Any

from mlmodel_operator.desired import MODEL_LABEL
from mlmodel_operator.kube import NotFound
from mlmodel_operator.objcache import APPLIED_HASH_ANNOTATION, CachedKube, OwnedCache, trim
from mlmodel_operator.reconcile import TokenBucket


def deployment(
    name: str, rv: int, uid: str = "u1", model: str = "churn", **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": str(rv),
            "labels": {MODEL_LABEL: model},
            "managedFields": [{"manager": "x"}],
            **extra,
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c"}]}}},
        "status": {"availableReplicas": 2},
    }


def monitor(rv: int, generation: int, digest: str) -> dict[str, Any]:
    return {
        "kind": "ServiceMonitor",
        "metadata": {
            "name": "churn",
            "namespace": "ns",
            "uid": "m1",
            "resourceVersion": str(rv),
            "generation": generation,
            "annotations": {APPLIED_HASH_ANNOTATION: digest},
        },
        "spec": {"endpoints": []},
    }


def test_the_cache_keeps_no_pod_template_and_no_field_managers() -> None:
    obj = deployment(
        "churn-v1",
        5,
        annotations={"ml.lifecycle.io/sha256": "a" * 64, "deployment.kubernetes.io/revision": "3"},
    )
    obj["status"]["conditions"] = [{"type": "Available", "message": "a long sentence"}]
    kept = trim("Deployment", obj)
    assert "template" not in kept["spec"] and kept["spec"]["replicas"] == 2
    assert "managedFields" not in kept["metadata"]
    assert kept["status"] == {"availableReplicas": 2}  # the counts, not the conditions
    assert kept["metadata"]["annotations"] == {"ml.lifecycle.io/sha256": "a" * 64}


def test_the_cache_keeps_a_models_spec_and_status_but_not_kopfs_copy_of_its_spec() -> None:
    model = {
        "metadata": {
            "name": "churn",
            "annotations": {
                "ml.lifecycle.io/last-handled-configuration": '{"spec": "..."}',
                "ml.lifecycle.io/promote": "2",
            },
        },
        "spec": {"version": "2"},
        "status": {"phase": "Serving", "history": [{"version": "1"}]},
    }
    kept = trim("MLModel", model)
    assert kept["spec"] == {"version": "2"} and kept["status"] == model["status"]
    assert kept["metadata"]["annotations"] == {"ml.lifecycle.io/promote": "2"}


def test_deployments_are_found_by_their_model_label() -> None:
    cache = OwnedCache()
    cache.seen("Deployment", deployment("churn-v1", 5))
    cache.seen("Deployment", deployment("churn-v2", 6, uid="u2"))
    cache.seen("Deployment", deployment("iris-v1", 7, uid="u3", model="iris"))
    assert [d["metadata"]["name"] for d in cache.deployments("ns", "churn")] == [
        "churn-v1",
        "churn-v2",
    ]
    assert cache.deployments("other", "churn") == []
    cache.seen("Deployment", deployment("churn-v1", 8), deleted=True)
    assert [d["metadata"]["name"] for d in cache.deployments("ns", "churn")] == ["churn-v2"]
    assert len(cache) == 2


def test_an_event_older_than_the_operators_own_write_is_ignored() -> None:
    cache = OwnedCache()
    cache.seen(
        "Deployment", deployment("churn-v1", 10, annotations={"ml.lifecycle.io/a": "written"})
    )
    cache.seen("Deployment", deployment("churn-v1", 9, annotations={"ml.lifecycle.io/a": "older"}))
    held = cache.get("Deployment", "ns", "churn-v1")
    assert held is not None and held["metadata"]["annotations"] == {"ml.lifecycle.io/a": "written"}
    cache.seen("Deployment", deployment("churn-v1", 11, annotations={"ml.lifecycle.io/a": "newer"}))
    held = cache.get("Deployment", "ns", "churn-v1")
    assert held is not None and held["metadata"]["annotations"] == {"ml.lifecycle.io/a": "newer"}


def test_a_deployment_the_operator_deleted_does_not_come_back_with_a_late_event() -> None:
    cache = OwnedCache()
    cache.seen("Deployment", deployment("churn-v1", 10))
    cache.removed("Deployment", "ns", "churn-v1", "u1")
    assert cache.get("Deployment", "ns", "churn-v1") is None
    cache.seen("Deployment", deployment("churn-v1", 11))  # a MODIFIED sent before the DELETE
    assert cache.get("Deployment", "ns", "churn-v1") is None
    # a new object of that name (another uid) is taken, and the old one's DELETED
    # event does not remove it
    cache.seen("Deployment", deployment("churn-v1", 13, uid="u9"))
    cache.seen("Deployment", deployment("churn-v1", 12), deleted=True)
    held = cache.get("Deployment", "ns", "churn-v1")
    assert held is not None and held["metadata"]["uid"] == "u9"


def test_a_deleted_event_of_another_object_of_that_name_keeps_the_held_one() -> None:
    cache = OwnedCache()
    cache.seen("Deployment", deployment("churn-v1", 20, uid="new"))
    cache.seen("Deployment", deployment("churn-v1", 21, uid="old"), deleted=True)
    assert cache.get("Deployment", "ns", "churn-v1") is not None


def test_an_applied_object_is_unchanged_until_someone_edits_it() -> None:
    cache = OwnedCache()
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d1") is None  # not listed yet
    cache.mark_synced("ServiceMonitor")
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d1") is False  # not there
    cache.wrote("ServiceMonitor", monitor(rv=5, generation=1, digest="d1"))
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d1") is True
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d2") is False  # new content
    # someone edits its spec: the apiserver bumps the generation, the annotation stays
    cache.seen("ServiceMonitor", monitor(rv=6, generation=2, digest="d1"))
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d1") is False


def test_after_a_restart_the_applied_hash_alone_decides() -> None:
    cache = OwnedCache()
    cache.mark_synced("ServiceMonitor")
    cache.seen("ServiceMonitor", monitor(rv=6, generation=4, digest="d1"))  # the listing
    assert cache.unchanged("ServiceMonitor", "ns", "churn", "d1") is True


def test_a_resource_version_that_is_no_integer_counts_as_newer() -> None:
    cache = OwnedCache()
    cache.seen("Deployment", deployment("churn-v1", 10))
    obj = deployment("churn-v1", 0, annotations={"ml.lifecycle.io/a": "b"})
    obj["metadata"]["resourceVersion"] = "opaque"
    cache.seen("Deployment", obj)
    held = cache.get("Deployment", "ns", "churn-v1")
    assert held is not None and held["metadata"]["annotations"] == {"ml.lifecycle.io/a": "b"}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_fleet_budget_gives_each_caller_its_own_turn_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2.0, clock)
    assert [bucket.reserve() for _ in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.5]
    clock.now = 1.5  # the turns given out are used up by then
    assert bucket.reserve() == 0.5
    clock.now = 100.0  # a long quiet time fills it to its capacity, no more
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.5]


def test_a_fleet_budget_of_zero_is_no_limit() -> None:
    bucket = TokenBucket(0.0, Clock())
    assert all(bucket.reserve() == 0.0 for _ in range(1000))


def test_a_fleet_budget_below_one_per_second_still_lets_one_through() -> None:
    clock = Clock()
    bucket = TokenBucket(0.1, clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 10.0


class SecretsOnly(CachedKube):
    """The cache's Secret lookups, with the apiserver's answer "it exists" recorded."""

    def __init__(self, clock: Clock, rand: Any) -> None:
        super().__init__(None, OwnedCache(), clock=clock, secret_ttl=300.0, rand=rand)
        self.lookups: list[str] = []

    def _call(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.lookups.append(path.split("/")[4])
        return {}


def test_secrets_seen_together_are_looked_up_again_at_spread_times() -> None:
    clock = Clock()
    draws = iter([0.0, 0.5, 1.0, 0.0, 0.0, 0.0])
    kube = SecretsOnly(clock, lambda: next(draws))
    everywhere = ("a", "b", "c")
    assert all(kube.secret_exists(ns, "creds") for ns in everywhere)
    assert kube.lookups == ["a", "b", "c"]
    clock.now = 269.9  # every sighting still holds
    assert all(kube.secret_exists(ns, "creds") for ns in everywhere)
    assert kube.lookups == ["a", "b", "c"]
    clock.now = 270.0  # the shortest (90% of the TTL) ended; the others hold
    assert all(kube.secret_exists(ns, "creds") for ns in everywhere)
    assert kube.lookups == ["a", "b", "c", "c"]
    clock.now = 300.0  # none lasts past the TTL: a deleted Secret is noticed within it
    assert all(kube.secret_exists(ns, "creds") for ns in everywhere)
    assert kube.lookups == ["a", "b", "c", "c", "a", "b"]


class Requests(CachedKube):
    """The cache's reads, with each request it makes recorded and answered "not found"."""

    def __init__(self) -> None:
        super().__init__(None, OwnedCache())
        self.requests: list[tuple[str, str, list[tuple[str, str]] | None]] = []

    def _call(self, method: str, path: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.requests.append((method, path, kwargs.get("query")))
        raise NotFound(path)


def test_a_service_the_cache_does_not_hold_is_looked_for_in_the_apiservers_watch_cache() -> None:
    kube = Requests()
    kube.cache.mark_synced("Service")
    assert kube.get_service("ns", "churn") is None
    # resourceVersion 0: the apiserver answers from its watch cache, without a quorum
    # read from etcd (the slowest step before a new model's Deployment in a burst)
    assert kube.requests == [
        ("GET", "/api/v1/namespaces/ns/services/churn", [("resourceVersion", "0")])
    ]
    assert kube.get_service("ns", "churn", read_if_missing=False) is None
    assert len(kube.requests) == 1  # not asked: the caller wanted only the cache's
