"""The status write never clobbers a newer status (issue 16, item 9a).

The reconcile runs in this process, through the same function kopf calls, against the
real apiserver. Its Kube client is the real one with one addition: right after the
reconcile reads the MLModel, a concurrent writer (a thread with its own client, as another
replica or a person would be) writes the object's status and annotations. The
operator's write that follows carries what it read; the apiserver answers 409, and the
reconcile reads again and plans again instead of writing over what it did not see.

The session's operator process is stopped meanwhile (it would be one more writer) and
started again afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from kubernetes import client
from mlm_helpers import Artifact, Models
from prometheus_client import CollectorRegistry

from mlmodel_operator import handlers
from mlmodel_operator.archive import no_archive
from mlmodel_operator.kube import ApiError, Kube, load_api_client
from mlmodel_operator.localcluster import LocalCluster, MinioServer, OperatorRunner, wait_until
from mlmodel_operator.metrics import OperatorMetrics
from mlmodel_operator.objcache import OwnedCache
from mlmodel_operator.reconcile import Reconciler
from mlmodel_operator.settings import Settings
from mlmodel_operator.verify import ArtifactVerifier

pytestmark = pytest.mark.integration

SETTINGS = Settings(serving_image="registry.local/mlmodel-serving:test")
REVIEWED = "example.com/Reviewed"  # a condition type the operator knows nothing of
OLD_SHA = "0" * 64


class InterferingKube(Kube):
    """The operator's client; after each of the first ``times`` reads of the MLModel, a
    writer thread changes it and is waited for. Counts the 409s the status write gets."""

    def __init__(self, api: client.ApiClient, writer: Callable[[int], None], times: int) -> None:
        super().__init__(api)
        self.writer = writer
        self.left = times
        self.writes = 0
        self.conflicts = 0

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        obj = super().get_model(namespace, name)
        if self.left > 0:
            self.left -= 1
            self.writes += 1
            thread = threading.Thread(target=self.writer, args=(self.writes,))
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive(), "the concurrent writer did not finish in 30 s"
        return obj

    def patch_model_status(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().patch_model_status(*args, **kwargs)
        except ApiError as exc:
            if exc.status == 409:
                self.conflicts += 1
            raise


@pytest.fixture()
def operator_stopped(operator: OperatorRunner) -> Iterator[None]:
    operator.stop()
    try:
        yield
    finally:
        operator.start()


def newer_writer(cluster: LocalCluster, mlm: Models, name: str) -> Callable[[int], None]:
    """Another writer: it adds a condition of its own, a closed history entry and an
    annotation, each write on top of what is stored at that moment."""
    other = Kube(load_api_client(str(cluster.kubeconfig)))

    def write(n: int) -> None:
        status = other.get_model(mlm.ns, name).get("status") or {}
        conditions = [c for c in status.get("conditions") or [] if c["type"] != REVIEWED]
        conditions.append(
            {
                "type": REVIEWED,
                "status": "True",
                "reason": "Reviewed",
                "message": f"review {n}",
                "lastTransitionTime": "2026-03-01T00:00:00Z",
            }
        )
        history = [h for h in status.get("history") or [] if h["version"] != f"0-{n}"]
        history.insert(
            0,
            {
                "version": f"0-{n}",
                "sha256": OLD_SHA,
                "uri": f"s3://models/{name}/0-{n}/model.joblib",
                "deployedAt": "2026-01-01T00:00:00Z",
                "retiredAt": "2026-02-01T00:00:00Z",
                "reason": "SpecChanged",
            },
        )
        other.patch_model_status(mlm.ns, name, {"conditions": conditions, "history": history})
        mlm.custom.patch_namespaced_custom_object(
            "ml.lifecycle.io",
            "v1alpha1",
            mlm.ns,
            "mlmodels",
            name,
            {"metadata": {"annotations": {"example.com/written": str(n)}}},
        )

    return write


def test_a_status_written_between_read_and_write_is_kept_and_the_model_converges(
    operator_stopped: None,
    cluster: LocalCluster,
    minio: MinioServer,
    api: client.ApiClient,
    namespace: str,
    models: Callable[[str], Artifact],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mlm = Models(api, namespace)
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        kopf, "event", lambda body, *, type, reason, message: posted.append((type, reason))
    )
    kube = InterferingKube(
        load_api_client(str(cluster.kubeconfig)), newer_writer(cluster, mlm, "audited"), times=2
    )
    reconciler = Reconciler(kube, SETTINGS, ArtifactVerifier(minio.client()), no_archive)
    memo = SimpleNamespace(
        reconciler=reconciler, metrics=OperatorMetrics(CollectorRegistry()), owned=OwnedCache()
    )
    body = mlm.create(mlm.body("audited", "1", models("1")))

    def serving() -> bool:
        handlers._reconcile(body, memo)  # type: ignore[arg-type]
        st = mlm.status("audited")
        return st.get("phase") == "Serving" and st.get("activeVersion") == "1"

    try:
        wait_until("audited Serving at version 1", serving, 90, interval=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status is {mlm.status('audited')}") from None

    st = mlm.status("audited")
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds.get(REVIEWED, {}).get("message") == "review 2"  # the newer writer's, kept
    assert conds["Ready"]["status"] == "True" and conds["SpecValid"]["status"] == "True"
    assert [h["version"] for h in st["history"]] == ["0-2", "0-1", "1"]
    assert mlm.get("audited")["metadata"]["annotations"]["example.com/written"] == "2"
    assert ("Normal", "Serving") in posted
    assert (kube.writes, kube.conflicts) == (2, 2)  # each newer write cost one 409
