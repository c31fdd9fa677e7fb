"""End to end: the whole `make demo` story on the real servers, asserted.

Control plane + MinIO + the operator as a real process; v1 applied and Serving; the real
model server on v1's artifact; v2 rolled out, v1 archived and deleted; the archive listed
and v1 replayed from it with the predictions v1 served.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlmodel_operator import demo

pytestmark = pytest.mark.e2e


def test_the_demo_story(tmp_path: Path) -> None:
    with demo.started(tmp_path) as (cluster, minio, operator):
        served, replayed = demo.story(cluster, minio, operator)
        status = json.loads(
            cluster.kubectl("get", "mlm", "churn", "-n", demo.NAMESPACE, "-o", "json")
        )["status"]
        archived = {
            o.object_name for o in minio.client().list_objects("model-archive", recursive=True)
        }
    assert served and replayed == served
    assert (status["phase"], status["activeVersion"]) == ("Serving", "2")
    v1, v2 = status["history"]
    assert (v1["version"], v1["reason"], v1["archive"]) == (
        "1", "SpecChanged", f"s3://model-archive/{demo.NAMESPACE}/churn/1/",
    )  # fmt: skip
    assert v2["version"] == "2" and "retiredAt" not in v2
    assert f"{demo.NAMESPACE}/churn/1/model.joblib" in archived
    assert f"{demo.NAMESPACE}/churn/1/manifest.json" in archived
