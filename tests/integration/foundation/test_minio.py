"""A real MinIO server: buckets, objects and server-side copy."""

from __future__ import annotations

import hashlib
import io
import os
import uuid

import pytest
from minio.commonconfig import CopySource

from mlmodel_operator.localcluster import MinioServer

pytestmark = pytest.mark.integration


def test_bucket_put_get_and_server_side_copy(minio: MinioServer) -> None:
    mc = minio.client()
    suffix = uuid.uuid4().hex[:8]  # the server is shared by the session: own buckets
    models, archive = f"models-{suffix}", f"archive-{suffix}"
    mc.make_bucket(models)
    mc.make_bucket(archive)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(payload).hexdigest()
    mc.put_object(models, "churn/1/model.joblib", io.BytesIO(payload), len(payload))

    got = mc.get_object(models, "churn/1/model.joblib")
    try:
        assert hashlib.sha256(got.read()).hexdigest() == digest
    finally:
        got.close()
        got.release_conn()

    result = mc.copy_object(
        archive, "ns/churn/1/model.joblib", CopySource(models, "churn/1/model.joblib")
    )
    assert result.object_name == "ns/churn/1/model.joblib"
    stat = mc.stat_object(archive, "ns/churn/1/model.joblib")
    assert stat.size == len(payload)
    copied = mc.get_object(archive, "ns/churn/1/model.joblib")
    try:
        assert hashlib.sha256(copied.read()).hexdigest() == digest
    finally:
        copied.close()
        copied.release_conn()
    names = [o.object_name for o in mc.list_objects(archive, prefix="ns/", recursive=True)]
    assert names == ["ns/churn/1/model.joblib"]
