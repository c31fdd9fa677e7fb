"""A decompression bomb retired through S3Archiver against a real MinIO: archived byte for
byte, its scan refused with the limit named, and never scanned a second time."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import joblib
import numpy as np
import pytest
from archive_helpers import NOW, SOURCE_BUCKET, Trained, entry, model_spec, settings

from mlmodel_operator import archive
from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.localcluster import MinioServer
from mlmodel_operator.pickle_scan import ScanResult

pytestmark = pytest.mark.integration


def upload_bomb(minio: MinioServer, tmp_path: Path, name: str) -> Trained:
    """The security review's artifact: a real joblib dump of 300 MB of zeros, zlib level 9."""
    path = tmp_path / "bomb.joblib"
    joblib.dump(np.zeros(300 * 10**6 // 8), path, compress=("zlib", 9))
    mc = minio.client()
    if not mc.bucket_exists(SOURCE_BUCKET):
        mc.make_bucket(SOURCE_BUCKET)
    key = f"{name}/1/model.joblib"
    mc.fput_object(SOURCE_BUCKET, key, str(path))
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    return Trained("1", f"s3://{SOURCE_BUCKET}/{key}", sha256, path.stat().st_size, None)


def test_a_bomb_is_archived_with_its_scan_refused_and_is_not_scanned_again(
    minio: MinioServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, ns = f"arch-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:8]}"
    bomb = upload_bomb(minio, tmp_path, f"bomb-{uuid.uuid4().hex[:8]}")
    scans: list[ScanResult] = []
    real_scan = archive.scan_artifact

    def counted(*args: object) -> ScanResult:
        result = real_scan(*args)  # type: ignore[arg-type]
        scans.append(result)
        return result

    monkeypatch.setattr(archive, "scan_artifact", counted)
    archiver = S3Archiver(minio.client(), settings(bucket))

    result = archiver(model_spec("bomb", ns, bomb), entry(bomb), "SpecChanged", NOW)

    assert result.ok and result.location == f"s3://{bucket}/{ns}/bomb/1/"
    assert "the static scan was refused" in result.message
    assert "past the limit of 200x" in result.message  # the limit, and what was seen:
    assert "1023x" in result.message and result.scan_refused
    assert len(scans) == 1 and scans[0].stream_bytes < 70 * 2**20  # 64 MiB of 300 MB
    stored = minio.client().stat_object(bucket, f"{ns}/bomb/1/model.joblib")
    assert stored.size == bomb.size  # the bytes are archived whatever the scan says
    trained = archive_manifest(minio, bucket, f"{ns}/bomb/1/manifest.json")
    assert trained["complete"] is False and trained["note"].startswith("scan refused: zlib")

    # The same digest again (a crash lost the manifest): verified, not scanned again.
    minio.client().remove_object(bucket, f"{ns}/bomb/1/manifest.json")
    again = archiver(model_spec("bomb", ns, bomb), entry(bomb), "SpecChanged", NOW)
    assert again.ok and "past the limit of 200x" in again.message
    assert len(scans) == 1
    trained = archive_manifest(minio, bucket, f"{ns}/bomb/1/manifest.json")
    assert "not scanned again" in trained["note"]


def archive_manifest(minio: MinioServer, bucket: str, key: str) -> dict[str, object]:
    import json

    resp = minio.client().get_object(bucket, key)
    try:
        return dict(json.loads(resp.read())["libraries"]["trainedWith"])
    finally:
        resp.close()
        resp.release_conn()
