"""The ETag recorded on a Deployment spares a restarted operator a download of every
artifact in a fleet change, and never lets changed bytes through (verify.py)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from test_bounded_memory import Body, Stat, World, artifact

from mlmodel_operator import reconcile
from mlmodel_operator.archive import no_archive
from mlmodel_operator.plan import ANN_ARTIFACT_ETAG
from mlmodel_operator.reconcile import Reconciler
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model
from mlmodel_operator.verify import ArtifactVerifier


class CountingStore:
    """Each key holds its own bytes (or ``swapped`` ones) with an MD5 ETag, like MinIO's."""

    def __init__(self) -> None:
        self.gets = 0
        self.swapped: dict[str, bytes] = {}

    def _data(self, key: str) -> bytes:
        return self.swapped.get(key, key.encode())

    def stat_object(self, bucket: str, key: str) -> Stat:
        return Stat(hashlib.md5(self._data(key)).hexdigest())

    def get_object(self, bucket: str, key: str) -> Body:
        self.gets += 1
        return Body(self._data(key))


def test_the_etag_a_deployment_was_made_with_needs_no_download_after_a_restart() -> None:
    store = CountingStore()
    first = ArtifactVerifier(store).check(artifact(1), owner="u1")
    assert first.status == "True" and first.etag and store.gets == 1
    restarted = ArtifactVerifier(store)  # its memory of what it hashed is empty
    again = restarted.check(artifact(1), owner="u1", verified_etag=first.etag)
    assert again.status == "True" and again.etag == first.etag
    assert store.gets == 1  # a stat, no GetObject


def test_bytes_written_anew_under_the_key_are_downloaded_and_refused() -> None:
    store = CountingStore()
    first = ArtifactVerifier(store).check(artifact(1), owner="u1")
    store.swapped["churn/1/model.joblib"] = b"other bytes"
    verdict = ArtifactVerifier(store).check(artifact(1), owner="u1", verified_etag=first.etag)
    assert verdict.status == "False" and verdict.reason == "DigestMismatch"
    assert store.gets == 2


class Cluster(World):
    """Keeps what the reconciler applies, and shows its Deployments back as the watch does."""

    def __init__(self) -> None:
        super().__init__()
        self.objects: dict[str, dict[str, Any]] = {}

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["metadata"]["name"]] = obj
        return super().apply(obj)

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        return [
            {
                **o,
                "metadata": {**o["metadata"], "uid": f"d-{name}", "generation": 1},
                "status": {"observedGeneration": 1, "availableReplicas": 1},
            }
            for name, o in self.objects.items()
            if o["kind"] == "Deployment"
        ]


def model() -> dict[str, Any]:
    art = artifact(1)
    spec = {"version": "1", "artifact": {"uri": art.uri, "sha256": art.sha256}}
    return {"metadata": {"name": "churn", "namespace": "team-a", "uid": "u1"}, "spec": spec}


def test_the_deployment_made_for_verified_bytes_carries_their_etag() -> None:
    """The ETag the reconcile verified is on the Deployment it makes; an operator
    restarted since changes that Deployment's Pods after a stat, without a download."""
    store, cluster = CountingStore(), Cluster()
    Reconciler(cluster, Settings(), ArtifactVerifier(store), no_archive)._reconcile(
        parse_model(model()), {}
    )
    made = cluster.objects["churn-v1"]["metadata"]["annotations"]
    assert made[ANN_ARTIFACT_ETAG] == hashlib.md5(b"churn/1/model.joblib").hexdigest()
    assert store.gets == 1

    # restarted with another default serving image: a fleet change
    settings = Settings(serving_image="registry.local/serving:2", fleet_updates_per_second=0)
    restarted = Reconciler(cluster, settings, ArtifactVerifier(store), no_archive)
    restarted._reconcile(parse_model(model()), {})
    changed = cluster.objects["churn-v1"]
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.local/serving:2"
    )
    assert changed["metadata"]["annotations"][ANN_ARTIFACT_ETAG] == made[ANN_ARTIFACT_ETAG]
    assert store.gets == 1  # checked again before its Pods changed: a stat, no GetObject


def test_at_rest_the_deployment_is_not_built_again_and_a_change_still_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The digest of a model's Deployment is kept with a hash of what it was built from:
    a reconcile at rest builds nothing; a new default image (another Settings) does."""
    built: list[str] = []
    real = reconcile.build_deployment

    def counting(model: Any, settings: Settings, **kw: Any) -> dict[str, Any]:
        built.append(settings.serving_image)
        return real(model, settings, **kw)

    monkeypatch.setattr(reconcile, "build_deployment", counting)
    store, cluster = CountingStore(), Cluster()
    r = Reconciler(cluster, Settings(), ArtifactVerifier(store), no_archive)
    r._reconcile(parse_model(model()), {})
    for _ in range(3):
        r._reconcile(parse_model(model()), {})  # a new body each time, the same spec
    assert len(built) == 1 and cluster.applied == ["churn-v1"]

    r.settings = Settings(serving_image="registry.local/serving:2", fleet_updates_per_second=0)
    r._reconcile(parse_model(model()), {})
    assert built[-1] == "registry.local/serving:2" and cluster.applied == ["churn-v1"] * 2
