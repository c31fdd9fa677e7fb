"""The archive finalizer put on at creation by the apiserver (crds/admission), on the real
local control plane with MutatingAdmissionPolicy enabled: the operator starts on such a
model at its first event, serves it, and archives it on deletion as it does a model whose
finalizer it added itself (the rest of tests/integration/controller, without the policy).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from mlm_helpers import Artifact, Models
from test_archive import ARCHIVE_TIMEOUT, objects

from mlmodel_operator.localcluster import REPO_ROOT, LocalCluster, MinioServer, wait_until
from mlmodel_operator.settings import FINALIZER

pytestmark = pytest.mark.integration

POLICY = "mlmodels.ml.lifecycle.io-archive-finalizer"


@pytest.fixture()
def finalizer_policy(cluster: LocalCluster, mlm: Models) -> Iterator[None]:
    """crds/admission applied, and in force (a dry-run create shows the finalizer); taken
    away after the test, so the other tests see the operator add it."""
    cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds" / "admission"))

    def in_force() -> bool:
        probe = mlm.body(
            f"probe-{uuid.uuid4().hex[:6]}",
            "1",
            Artifact("s3://models/probe/model.joblib", "0" * 64, 1),
        )
        made = mlm.custom.create_namespaced_custom_object(
            "ml.lifecycle.io", "v1alpha1", mlm.ns, "mlmodels", probe, dry_run="All"
        )
        return FINALIZER in (made["metadata"].get("finalizers") or [])

    wait_until("the archive-finalizer policy in force", in_force, 30, interval=0.25)
    try:
        yield
    finally:
        for kind in ("mutatingadmissionpolicybinding", "mutatingadmissionpolicy"):
            cluster.kubectl("delete", kind, POLICY, "--ignore-not-found", check=False)


def test_the_apiserver_adds_the_finalizer_and_the_model_is_served_and_archived(
    finalizer_policy: None, mlm: Models, models: Callable[[str], Artifact], minio: MinioServer
) -> None:
    body = mlm.body("churn", "1", models("1"))
    body["metadata"]["finalizers"] = ["example.com/keep"]  # someone else's stays
    created = mlm.create(body)
    # in the object as created: no PATCH by the operator put it there
    assert created["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]

    mlm.wait_phase("churn", "Serving", version="1")
    assert mlm.get("churn")["metadata"]["finalizers"] == ["example.com/keep", FINALIZER]

    mlm.delete("churn")
    # the operator archives, then takes its own finalizer away; the other one holds
    wait_until(
        "the operator's finalizer removed",
        lambda: mlm.get("churn")["metadata"].get("finalizers") == ["example.com/keep"],
        ARCHIVE_TIMEOUT,
        interval=0.25,
    )
    mlm.wait_events("churn", "Archived")
    assert f"{mlm.ns}/churn/1/model.joblib" in objects(minio, f"{mlm.ns}/churn/")
    with contextlib.suppress(Exception):
        mlm.custom.patch_namespaced_custom_object(
            "ml.lifecycle.io", "v1alpha1", mlm.ns, "mlmodels", "churn",
            {"metadata": {"finalizers": None}},
        )  # fmt: skip
    mlm.wait_gone("churn", 30)
