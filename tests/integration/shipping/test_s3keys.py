"""The least-privilege keys of s3keys against a real MinIO, used by the real code paths.

The operator's key runs the operator's own object-store code (the digest check, the
archive copy and manifest, the ledger, retention under object lock); a namespace's key
runs the server's artifact fetch, its baseline read and its decision-log writer. What
the keys may not do is refused by MinIO itself (AccessDenied).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from minio import Minio
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error
from prometheus_client import CollectorRegistry

from mlmodel_operator import ledger, s3keys
from mlmodel_operator.archive import S3Archiver, ensure_bucket
from mlmodel_operator.example_models import train_churn
from mlmodel_operator.ledger import S3Ledger
from mlmodel_operator.localcluster import MinioServer, wait_until
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.s3keys import Buckets, S3Key
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model
from mlmodel_operator.verify import ArtifactVerifier
from mlmodel_serving.artifacts import fetch_bytes, fetch_verified
from mlmodel_serving.decisionlog import DecisionLog, DecisionLogConfig
from mlmodel_serving.decisions import Decision, ModelIdentity, input_columns
from mlmodel_serving.settings import S3Config

pytestmark = pytest.mark.integration


class DictSecrets:
    """A SecretStore in memory: (namespace, name) -> the Secret's stringData."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, str]] = {}
        self.writes = 0

    def read(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get((namespace, name))

    def write(self, secret: Mapping[str, Any]) -> None:
        meta = secret["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = dict(secret["stringData"])
        self.writes += 1


@dataclass
class Keys:
    minio: MinioServer
    buckets: Buckets
    locked: bool
    ns: str
    other: str
    operator: S3Key
    namespace: S3Key
    digests: dict[str, str]  # namespace -> sha256 of its models/<ns>/churn/1/model.joblib

    def client(self, key: S3Key) -> Minio:
        return Minio(self.minio.endpoint, key.access_key, key.secret_key, secure=False)

    def s3(self, key: S3Key) -> S3Config:
        return S3Config(
            endpoint=self.minio.endpoint, access_key=key.access_key, secret_key=key.secret_key
        )

    @property
    def models(self) -> str:
        return self.buckets.models[0]

    def uri(self, ns: str, name: str = "model.joblib") -> str:
        return f"s3://{self.models}/{ns}/churn/1/{name}"


def denied(call: Any) -> None:
    with pytest.raises(S3Error) as info:
        call()
    assert info.value.code == "AccessDenied", info.value


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "object-lock"])
def keys(minio: MinioServer, request: pytest.FixtureRequest) -> Iterator[Keys]:
    locked: bool = request.param
    run = uuid.uuid4().hex[:8]
    buckets = Buckets((f"models-{run}",), f"archive-{run}")
    root = minio.client()
    root.make_bucket(buckets.models[0])
    root.make_bucket(buckets.archive, object_lock=locked)
    ns, other = f"team-{run}", f"other-{run}"
    digests = {}
    trained = train_churn("1")
    for namespace in (ns, other):
        for name, data in (("model.joblib", trained.data), ("baseline.json", b"{}")):
            key = f"{namespace}/churn/1/{name}"
            root.put_object(buckets.models[0], key, io.BytesIO(data), len(data))
        digests[namespace] = trained.sha256
    admin = s3keys.make_admin(minio.endpoint, S3Key(minio.access_key, minio.secret_key))
    store = DictSecrets()
    operator, _ = s3keys.apply_target(admin, store, s3keys.operator_target(buckets))
    namespace, _ = s3keys.apply_target(admin, store, s3keys.namespace_target(ns, buckets))
    s3keys.apply_target(admin, store, s3keys.namespace_target(other, buckets))
    yield Keys(minio, buckets, locked, ns, other, operator, namespace, digests)


def test_a_namespace_key_fetches_its_own_artifact_and_baseline(keys: Keys, tmp_path: Path) -> None:
    s3 = keys.s3(keys.namespace)
    path = fetch_verified(keys.uri(keys.ns), keys.digests[keys.ns], tmp_path, s3)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == keys.digests[keys.ns]
    assert fetch_bytes(keys.uri(keys.ns, "baseline.json"), s3) == b"{}"
    # a missing object of its own is still "not found", not "denied"
    with pytest.raises(S3Error) as info:
        fetch_bytes(keys.uri(keys.ns, "missing.json"), s3)
    assert info.value.code == "NoSuchKey"


def test_a_namespace_key_is_refused_everything_else(keys: Keys, tmp_path: Path) -> None:
    mc = keys.client(keys.namespace)
    models, archive = keys.models, keys.buckets.archive
    denied(lambda: fetch_verified(keys.uri(keys.other), keys.digests[keys.other], tmp_path,
                                  keys.s3(keys.namespace)))  # fmt: skip
    denied(lambda: mc.stat_object(models, f"{keys.other}/churn/1/baseline.json"))
    denied(lambda: list(mc.list_objects(models, prefix=f"{keys.ns}/", recursive=True)))
    denied(lambda: list(mc.list_objects(models, prefix=f"{keys.other}/", recursive=True)))
    denied(lambda: list(mc.list_objects(archive, prefix=f"decisions/{keys.ns}/")))
    denied(lambda: mc.put_object(models, f"{keys.ns}/churn/9/model.joblib", io.BytesIO(b"x"), 1))
    denied(lambda: mc.put_object(archive, f"decisions/{keys.other}/x.parquet", io.BytesIO(b"x"), 1))
    denied(lambda: mc.put_object(archive, f"{keys.ns}/churn/1/manifest.json", io.BytesIO(b"x"), 1))
    denied(lambda: mc.remove_object(models, f"{keys.ns}/churn/1/model.joblib"))
    mc.put_object(archive, f"decisions/{keys.ns}/probe.parquet", io.BytesIO(b"x"), 1)
    denied(lambda: mc.get_object(archive, f"decisions/{keys.ns}/probe.parquet"))
    denied(lambda: mc.remove_object(archive, f"decisions/{keys.ns}/probe.parquet"))
    denied(lambda: mc.make_bucket(f"new-{uuid.uuid4().hex[:8]}"))


def test_a_namespace_key_writes_its_decision_records(keys: Keys) -> None:
    config = DecisionLogConfig(bucket=keys.buckets.archive, namespace=keys.ns, flush_seconds=0.1)
    ident = ModelIdentity(keys.ns, "churn", "1", keys.digests[keys.ns], input_columns(None, 2))
    log = DecisionLog(config, keys.s3(keys.namespace), ident, CollectorRegistry())
    log.start()
    x = np.array([[0.5, 1.5]])
    log.add(Decision("req-1", time.time_ns(), "v2", 200, 0.001, x, {"predict": np.array([1])}))
    root = keys.minio.client()
    prefix = f"decisions/{keys.ns}/churn/1/"

    def written() -> list[str]:
        found = root.list_objects(keys.buckets.archive, prefix=prefix, recursive=True)
        return [o.object_name for o in found]

    try:  # written while serving, not only by close(): the writer's bucket check passed
        wait_until("a decision record written", lambda: bool(written()), 15, 0.1)
    finally:
        assert log.close(30.0) == 0
    (written_key,) = written()
    assert written_key.endswith(".parquet")
    retention = (
        root.get_object_retention(keys.buckets.archive, written_key) if keys.locked else None
    )
    assert (retention is not None) == keys.locked


def test_the_operator_key_verifies_archives_and_keeps_the_ledger(keys: Keys) -> None:
    mc = keys.client(keys.operator)
    sha = keys.digests[keys.ns]
    model = parse_model(
        {
            "metadata": {"name": "churn", "namespace": keys.ns, "uid": "uid-1", "generation": 1},
            "spec": {
                "version": "2",
                "artifact": {"uri": keys.uri(keys.ns), "sha256": sha},
                "archive": {"retainDays": 1},
            },
        }
    )
    verdict = ArtifactVerifier(mc).check(model.artifact, "uid-1")
    assert verdict.status == "True", verdict
    settings = Settings(archive_bucket=keys.buckets.archive)
    assert ensure_bucket(mc, keys.buckets.archive) is False  # there: HeadBucket is enough
    now = dt.datetime.now(dt.UTC)
    entry = HistoryEntry("1", sha, keys.uri(keys.ns), "2026-03-01T08:00:00Z")
    result = S3Archiver(mc, settings)(model, entry, "SpecChanged", now)
    assert result.ok, result.message
    assert ("retained (GOVERNANCE)" in result.message) == keys.locked
    book = S3Ledger(mc, settings)
    book.ensure(model, ledger.ARCHIVED, "1", {"uri": entry.uri}, now)
    book.ensure(model, ledger.ARCHIVED, "1", {"uri": entry.uri}, now)  # read back: no 2nd
    root = keys.minio.client()
    stored = {
        o.object_name
        for o in root.list_objects(keys.buckets.archive, prefix=f"{keys.ns}/", recursive=True)
    }
    assert {f"{keys.ns}/churn/1/model.joblib", f"{keys.ns}/churn/1/manifest.json"} <= stored
    assert len([k for k in stored if "/ledger/" in k]) == 1
    if keys.locked:
        retention = root.get_object_retention(
            keys.buckets.archive, f"{keys.ns}/churn/1/model.joblib"
        )
        assert retention is not None and retention.mode == GOVERNANCE
    # a second archive of the same version finds it and writes nothing
    assert S3Archiver(mc, settings)(model, entry, "SpecChanged", now).ok


def test_the_operator_key_only_reads_the_models_bucket(keys: Keys) -> None:
    mc = keys.client(keys.operator)
    key = f"{keys.ns}/churn/1/model.joblib"
    denied(lambda: mc.put_object(keys.models, key, io.BytesIO(b"x"), 1))
    denied(lambda: mc.remove_object(keys.models, key))
    denied(lambda: list(mc.list_objects(keys.models, prefix=f"{keys.ns}/")))
    denied(lambda: mc.make_bucket(f"new-{uuid.uuid4().hex[:8]}"))


def test_re_running_keeps_the_keys_and_rotate_replaces_them(keys: Keys) -> None:
    admin = s3keys.make_admin(
        keys.minio.endpoint, S3Key(keys.minio.access_key, keys.minio.secret_key)
    )
    target = s3keys.namespace_target(keys.ns, keys.buckets)
    store = DictSecrets()
    store.write(s3keys.build_secret(keys.ns, s3keys.NAMESPACE_SECRET, keys.namespace))
    again, line = s3keys.apply_target(admin, store, target)
    assert again == keys.namespace and store.writes == 1 and "kept" in line
    keys.client(again).stat_object(keys.models, f"{keys.ns}/churn/1/model.joblib")

    rotated, line = s3keys.apply_target(admin, store, target, rotate=True)
    assert rotated.secret_key != keys.namespace.secret_key and "new secret key" in line
    assert store.secrets[(keys.ns, s3keys.NAMESPACE_SECRET)]["secretKey"] == rotated.secret_key
    assert rotated.secret_key not in line and rotated.secret_key not in repr(rotated)
    with pytest.raises(S3Error) as info:  # the old secret no longer signs
        keys.client(keys.namespace).stat_object(keys.models, f"{keys.ns}/churn/1/model.joblib")
    assert info.value.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")
    keys.client(rotated).stat_object(keys.models, f"{keys.ns}/churn/1/model.joblib")
    # put the fixture's key back for the tests that follow
    admin.user_add(keys.namespace.access_key, keys.namespace.secret_key)


def test_an_extra_policy_attached_by_hand_is_detached(keys: Keys) -> None:
    admin = s3keys.make_admin(
        keys.minio.endpoint, S3Key(keys.minio.access_key, keys.minio.secret_key)
    )
    user = s3keys.namespace_user(keys.other)
    admin.attach_policy(["readwrite"], user=user)
    store = DictSecrets()
    s3keys.apply_target(admin, store, s3keys.namespace_target(keys.other, keys.buckets))
    key = S3Key(user, store.secrets[(keys.other, s3keys.NAMESPACE_SECRET)]["secretKey"])
    denied(lambda: keys.client(key).put_object(keys.models, f"{keys.other}/x", io.BytesIO(b"x"), 1))
