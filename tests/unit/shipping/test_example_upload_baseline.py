"""example_upload: each version goes up with a drift baseline that has a predictions part."""

from __future__ import annotations

import io
from typing import Any

import orjson

from mlmodel_operator.example_upload import upload_version
from mlmodel_serving.drift import Baseline


class RecordingStore:
    """The few ``minio.Minio`` calls upload_version makes, kept in a dict."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def bucket_exists(self, bucket: str) -> bool:
        return True

    def make_bucket(self, bucket: str) -> None:
        raise AssertionError("not expected")

    def put_object(self, bucket: str, key: str, data: io.BytesIO, length: int) -> Any:
        self.objects[(bucket, key)] = data.read(length)


def test_the_baseline_has_features_and_the_predicted_classes() -> None:
    store = RecordingStore()
    sha256, uri = upload_version(store, "1")
    # under the example namespace's prefix: the only one its key may read
    assert uri == "s3://models/default/churn/1/model.joblib" and len(sha256) == 64
    data = store.objects[("models", "default/churn/1/baseline.json")]
    doc = orjson.loads(data)
    assert len(doc["features"]) == 8
    assert doc["predictions"]["classes"] == ["0", "1"]
    assert abs(sum(doc["predictions"]["proportions"]) - 1.0) < 1e-9
    # what the server does with it: the class part is read, for the model's classes
    baseline = Baseline.from_json(data, 8, ["0", "1"])
    assert baseline.predictions is not None


def test_another_namespace_gets_its_own_prefix() -> None:
    store = RecordingStore()
    _, uri = upload_version(store, "2", namespace="team-a")
    assert uri == "s3://models/team-a/churn/2/model.joblib"
    assert set(store.objects) == {
        ("models", "team-a/churn/2/model.joblib"),
        ("models", "team-a/churn/2/baseline.json"),
    }
