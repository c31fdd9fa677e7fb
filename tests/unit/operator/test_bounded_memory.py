"""What the operator remembers per model or per digest stays bounded (issue 16, item 9d).

Many models come and go (or change version) against stand-ins of the apiserver and the
object store; the reconciler's maps are pruned when a model is gone or an entry is no
longer referenced, and capped for what is never seen to go (a finalizer removed by hand).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pytest

from mlmodel_operator import monitoring_sync, reconcile, verify
from mlmodel_operator.archive import ArchiveError, no_archive
from mlmodel_operator.kube import Kube, NotFound
from mlmodel_operator.monitoring_sync import MonitoringSync
from mlmodel_operator.plan import DeploymentState, HistoryEntry, Retire
from mlmodel_operator.reconcile import Reconciler, _FailedArchive
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ArtifactSpec, parse_model
from mlmodel_operator.verify import ArtifactVerifier

NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
MANY = 3000


def model(uid: str, version: str = "1", name: str = "churn") -> Any:
    return parse_model(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": uid, "generation": 1},
            "spec": {
                "version": version,
                "artifact": {
                    "uri": f"s3://models/{name}/{version}/model.joblib",
                    "sha256": "a" * 64,
                },
            },
        }
    )


class Gone(Kube):
    """An apiserver on which every MLModel asked for has been deleted."""

    def __init__(self) -> None:
        pass

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        raise NotFound(name)


class World(Kube):
    """An apiserver holding the given Deployments of the model (and nothing else), no
    monitoring CRDs: enough for a full reconcile."""

    def __init__(self, *deployments: DeploymentState) -> None:
        self.deployments = deployments
        self.applied: list[str] = []

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {
                    "name": d.name,
                    "uid": d.uid,
                    "labels": {"ml.lifecycle.io/version": d.version},
                    "annotations": {"ml.lifecycle.io/sha256": d.sha256},
                    "generation": 1,
                },
                "spec": {"replicas": d.desired},
                "status": {"observedGeneration": 1, "availableReplicas": d.available},
            }
            for d in self.deployments
        ]

    def annotate_deployment(
        self, namespace: str, name: str, uid: str, annotations: dict[str, str | None]
    ) -> None:
        pass

    def get_service(
        self, namespace: str, name: str, *, read_if_missing: bool = True
    ) -> dict[str, Any] | None:
        return None

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    def secret_exists(self, namespace: str, name: str) -> bool:
        return True

    def crd_established(self, name: str) -> bool:
        return False

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applied.append(obj["metadata"]["name"])
        return obj


class Stat:
    def __init__(self, etag: str) -> None:
        self.etag = etag


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, size: int) -> list[bytes]:
        return [self.data]

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class Store:
    """An object store whose object at each key holds the key's own bytes."""

    def stat_object(self, bucket: str, key: str) -> Stat:
        return Stat(hashlib.md5(key.encode()).hexdigest())

    def get_object(self, bucket: str, key: str) -> Body:
        return Body(key.encode())


def artifact(n: int) -> ArtifactSpec:
    key = f"churn/{n}/model.joblib"
    return ArtifactSpec(uri=f"s3://models/{key}", sha256=hashlib.sha256(key.encode()).hexdigest())


def test_no_lock_is_kept_for_a_model_that_is_gone_or_done() -> None:
    r = Reconciler(Gone(), Settings(), ArtifactVerifier(None), no_archive)
    for n in range(MANY):  # e.g. Deployment events naming owners deleted since
        assert r.reconcile(
            {"metadata": {"namespace": "team-a", "name": f"m{n}", "uid": f"u{n}"}}
        ).gone
    assert len(r._locks) == 0


def test_what_a_gone_model_left_is_forgotten() -> None:
    r = Reconciler(Gone(), Settings(), ArtifactVerifier(Store()), no_archive)
    for n in range(MANY):
        uid = f"u{n}"
        r.verifier.check(artifact(n), owner=uid)
        r._failed_archives[(uid, "1")] = _FailedArchive(1, NOW, "failed")
        r.monitoring._applied[(uid, "ServiceMonitor")] = ("digest", 0.0)
        r.reconcile({"metadata": {"namespace": "team-a", "name": f"m{n}", "uid": uid}})
    assert len(r._failed_archives) == 0
    assert len(r.monitoring._applied) == 0
    assert len(r.verifier._known) == 0


def test_a_digest_no_model_asks_for_any_more_is_dropped() -> None:
    v = ArtifactVerifier(Store())
    for n in range(MANY):  # one model through many versions
        assert v.check(artifact(n), owner="u-1").status == "True"
    assert len(v._known) == 1
    for n in range(MANY):  # many models, deleted (the finalizer forgets them)
        v.check(artifact(n), owner=f"u{n}")
        v.forget(f"u{n}")
    v.forget("u-1")
    assert len(v._known) == 0


def test_a_digest_shared_by_two_models_stays_while_one_asks_for_it() -> None:
    v = ArtifactVerifier(Store())
    v.check(artifact(1), owner="a")
    v.check(artifact(1), owner="b")
    v.forget("a")
    assert len(v._known) == 1
    v.check(artifact(2), owner="b")
    assert list(v._known) == [
        (artifact(2).uri, artifact(2).sha256, Store().stat_object("", "churn/2/model.joblib").etag)
    ]


def test_models_never_seen_to_go_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    # the caps made small, so that passing them takes hundreds of models, not thousands
    monkeypatch.setattr(verify, "VERDICTS_KEPT", 100)
    monkeypatch.setattr(verify, "OWNERS_KEPT", 200)
    monkeypatch.setattr(monitoring_sync, "APPLIED_KEPT", 100)
    v = ArtifactVerifier(Store())
    for n in range(MANY):
        v.check(artifact(n), owner=f"u{n}")  # no forget: their finalizers were removed by hand
    assert len(v._known) <= 100
    assert len(v._refs) <= 200 and len(v._users) <= 200

    sync = MonitoringSync(World(), Settings())
    sync._missing, sync._checked_at = (), float("inf")  # CRDs there; never looked up again
    for n in range(300):
        sync.sync(model(f"u{n}"), {})
    assert len(sync._applied) <= 100


def test_failed_archives_are_capped_and_dropped_once_the_version_stays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def failing(*_: Any) -> Any:
        raise ArchiveError("the store is down")

    monkeypatch.setattr(reconcile, "FAILED_ARCHIVES_KEPT", 100)
    v1 = DeploymentState("churn-v1", "d1", "1", "b" * 64, 1, 1, 1, 1, True, NOW)
    v2 = DeploymentState("churn-v2", "d2", "2", "a" * 64, 1, 1, 1, 1, True, NOW)
    r = Reconciler(World(v1, v2), Settings(), ArtifactVerifier(None), failing)
    for n in range(MANY):
        r._retire(model(f"u{n}", version="2"), Retire(v1), (), NOW)
    assert len(r._failed_archives) <= 100

    # Rolled back to version 1 while its archive was failing: it is not leaving any more;
    # version 2, leaving now, keeps its own.
    uid = f"u{MANY - 1}"
    r._retire(model(uid, version="1"), Retire(v2), (), NOW)
    assert {(uid, "1"), (uid, "2")} <= set(r._failed_archives)
    served = [
        HistoryEntry(v, sha, f"s3://models/churn/{v}/model.joblib", "2026-03-01T00:00:00Z")
        for v, sha in (("1", "b" * 64), ("2", "a" * 64))
    ]
    r._reconcile(model(uid, version="1"), {"history": [e.to_status() for e in served]})
    assert (uid, "1") not in r._failed_archives
    assert (uid, "2") in r._failed_archives
