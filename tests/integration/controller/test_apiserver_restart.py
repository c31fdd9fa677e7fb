"""The apiserver restarted in the middle of a rollout: the operator carries on from the
cluster's state, and the rollout ends as if nothing had happened."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlm_helpers import Artifact, Models

from mlmodel_operator.localcluster import LocalCluster, OperatorRunner, wait_until

pytestmark = pytest.mark.integration


def test_a_rollout_survives_an_apiserver_restart(
    mlm: Models, models: Callable[[str], Artifact], cluster: LocalCluster, operator: OperatorRunner
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, retirement={"drainSeconds": 5}))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", {"version": "2", "artifact": {"uri": v2.uri, "sha256": v2.sha256}})
    cluster.restart_apiserver(down_seconds=3)  # while v2 deploys or v1 drains

    st = mlm.wait_phase("churn", "Serving", version="2", timeout=120)
    wait_until("churn-v1 retired", lambda: set(mlm.deployments("churn")) == {"churn-v2"}, 90)
    assert mlm.service_version("churn") == "2"
    history = mlm.status("churn")["history"]
    assert [(h["version"], h.get("reason")) for h in history] == [("1", "SpecChanged"), ("2", None)]
    assert history[0]["archive"]  # archived (and verified) before it was deleted
    assert st["observedGeneration"] == mlm.get("churn")["metadata"]["generation"]
    assert operator.process is not None and operator.process.running(), operator.log()[-2000:]
