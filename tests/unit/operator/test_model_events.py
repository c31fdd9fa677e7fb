"""Which MLModel events bring a reconcile, and what kopf writes onto an MLModel (issue 17).

The reconcile is kicked by a kopf event handler, not by kopf's create/update/resume
handlers: those made kopf write its copy of the spec onto the object after each call (a
PATCH per creation and per change, and a 409 for the status write planned from the body
before it). The watch's echo of the operator's own status write brings nothing.
"""

from __future__ import annotations

from typing import Any

import kopf

from mlmodel_operator.archive import no_archive
from mlmodel_operator.handlers import _NoDiffBase, _to_reconcile
from mlmodel_operator.kube import Kube
from mlmodel_operator.reconcile import Reconciler
from mlmodel_operator.settings import FINALIZER, Settings
from mlmodel_operator.verify import ArtifactVerifier

META = {"name": "churn", "namespace": "team-a", "uid": "u-1"}


class WritingKube(Kube):
    """An MLModel whose spec the parser refuses (a reconcile needs nothing but the object
    and its status write); each status write answers with the next resourceVersion."""

    def __init__(self) -> None:
        self.version = 100
        self.writes = 0

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        return model_body(self.version)

    def patch_model_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        self.writes += 1
        self.version += 1
        return {**model_body(self.version), "status": status}


def model_body(version: int, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "ml.lifecycle.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {
            **META,
            "generation": 1,
            "resourceVersion": str(version),
            "finalizers": [FINALIZER],
            **meta,
        },
        "spec": {
            "version": "ledger",  # refused by the parser: SpecValid False
            "artifact": {"uri": "s3://models/churn/1/model.joblib", "sha256": "a" * 64},
        },
    }


def test_the_echo_of_the_operators_own_status_write_is_told_apart() -> None:
    kube = WritingKube()
    rec = Reconciler(kube, Settings(), ArtifactVerifier(None), no_archive)
    assert not rec.wrote(model_body(100))  # nothing written yet: every event is news

    rec.reconcile(model_body(100))
    assert kube.writes == 1
    assert rec.wrote(model_body(101))  # the write's own event
    assert not rec.wrote(model_body(102))  # anyone's later change
    assert not rec.wrote(model_body(100))  # an older event is not the echo either
    other = model_body(101)
    other["metadata"]["uid"] = "u-2"  # another object under the same name
    assert not rec.wrote(other)


def test_a_model_is_reconciled_once_it_has_the_finalizer_and_not_while_it_is_deleted() -> None:
    wanted = _to_reconcile(FINALIZER)
    fresh = model_body(1)
    fresh["metadata"]["finalizers"] = []
    assert not wanted(type="ADDED", body=kopf.Body(fresh))  # kopf adds the finalizer first
    assert wanted(type="MODIFIED", body=kopf.Body(model_body(2)))
    assert wanted(type=None, body=kopf.Body(model_body(2)))  # the listing at start-up
    deleting = model_body(3, deletionTimestamp="2026-12-02T10:00:00Z")
    assert not wanted(type="MODIFIED", body=kopf.Body(deleting))  # the finalizer's handler
    assert not wanted(type="DELETED", body=kopf.Body(model_body(4)))
    assert not _to_reconcile("example.com/other")(type="MODIFIED", body=kopf.Body(model_body(5)))


def test_kopf_sees_no_change_to_handle_and_writes_no_copy_of_the_spec() -> None:
    storage = _NoDiffBase()
    body = kopf.Body(model_body(7, annotations={"ml.lifecycle.io/promote": "2"}))
    # what kopf compares: the essence it last handled, and the object's now
    assert storage.fetch(body=body) == storage.build(body=body)
    assert not storage.build(body=body)  # and no copy of the body is made to find it out
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    assert not patch  # nothing to PATCH onto the MLModel
