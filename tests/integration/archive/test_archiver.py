"""S3Archiver and S3Ledger against a real MinIO: copy, verify, idempotence, WORM, outages."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid

import pytest
import sklearn
from archive_helpers import (
    NOW,
    entry,
    keys,
    model_spec,
    settings,
    stored_sha256,
    train_and_upload,
)
from minio.commonconfig import GOVERNANCE
from minio.error import S3Error

from mlmodel_operator import ledger
from mlmodel_operator.archive import ArchiveError, S3Archiver
from mlmodel_operator.ledger import LedgerError, LedgerRecord, S3Ledger, serving_at
from mlmodel_operator.localcluster import MinioServer
from mlmodel_operator.manifest import MANIFEST_FORMAT, SERVING_IMAGE_PINS
from mlmodel_operator.plan import HistoryEntry

pytestmark = pytest.mark.integration


def fresh(prefix: str = "arch") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def manifest_of(minio: MinioServer, bucket: str, key: str) -> dict:
    resp = minio.client().get_object(bucket, key)
    try:
        return dict(json.loads(resp.read()))
    finally:
        resp.close()
        resp.release_conn()


def test_archive_is_a_verified_copy_with_a_full_manifest(minio: MinioServer) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1, v2 = train_and_upload(minio, "churn", "1"), train_and_upload(minio, "churn", "2")
    archiver = S3Archiver(minio.client(), settings(bucket))
    # the spec now names v2; v1 is retiring
    result = archiver(model_spec("churn", ns, v2), entry(v1), "SpecChanged", NOW)

    assert result.ok and result.location == f"s3://{bucket}/{ns}/churn/1/"
    assert keys(minio, bucket, f"{ns}/") == [
        f"{ns}/churn/1/manifest.json", f"{ns}/churn/1/model.joblib",
    ]  # fmt: skip
    stat = minio.client().stat_object(bucket, f"{ns}/churn/1/model.joblib")
    assert stat.size == v1.size
    m = manifest_of(minio, bucket, f"{ns}/churn/1/manifest.json")
    assert m["format"] == MANIFEST_FORMAT
    assert (m["model"], m["namespace"], m["version"]) == ("churn", ns, "1")
    assert (m["sha256"], m["size"], m["sourceUri"]) == (v1.sha256, v1.size, v1.uri)
    assert m["artifactUri"] == f"s3://{bucket}/{ns}/churn/1/model.joblib"
    assert m["spec"]["version"] == "1" and m["spec"]["artifact"]["sha256"] == v1.sha256
    assert (m["deployedAt"], m["retiredAt"], m["reason"]) == (
        "2026-03-01T08:00:00Z", "2026-03-14T12:00:00Z", "SpecChanged",
    )  # fmt: skip
    trained = m["libraries"]["trainedWith"]
    assert trained["scikit-learn"] == sklearn.__version__ and trained["complete"] is True
    # the default serving image's pin, whatever scikit-learn this environment resolved
    assert m["libraries"]["servingRelease"]["scikit-learn"] == SERVING_IMAGE_PINS["scikit-learn"]
    assert m["servingImage"] == settings(bucket).serving_image


def test_second_call_rewrites_nothing_and_a_partial_archive_is_completed(
    minio: MinioServer,
) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    mc = minio.client()
    archiver = S3Archiver(mc, settings(bucket))
    model = model_spec("churn", ns, v1)
    archiver(model, entry(v1), "Deleted", NOW)
    art, man = f"{ns}/churn/1/model.joblib", f"{ns}/churn/1/manifest.json"
    before = {k: mc.stat_object(bucket, k).etag for k in (art, man)}
    before_time = {k: mc.stat_object(bucket, k).last_modified for k in (art, man)}

    again = archiver(model, entry(v1), "Deleted", NOW + dt.timedelta(hours=1))
    assert again.ok
    assert {k: mc.stat_object(bucket, k).last_modified for k in (art, man)} == before_time
    assert manifest_of(minio, bucket, man)["retiredAt"] == "2026-03-14T12:00:00Z"

    mc.remove_object(bucket, man)  # as if the operator died between copy and manifest
    done = archiver(model, entry(v1), "Deleted", NOW)
    assert done.ok
    assert mc.stat_object(bucket, art).last_modified == before_time[art]  # not copied again
    assert mc.stat_object(bucket, art).etag == before[art]
    assert keys(minio, bucket, f"{ns}/") == sorted([art, man])


def test_object_lock_bucket_gets_governance_retention(minio: MinioServer) -> None:
    bucket, ns = fresh("worm"), fresh("ns")
    mc = minio.client()
    mc.make_bucket(bucket, object_lock=True)
    v1 = train_and_upload(minio, "churn", "1")
    archiver = S3Archiver(mc, settings("model-archive"))
    now = dt.datetime.now(dt.UTC)
    model = model_spec("churn", ns, v1, archive={"bucket": bucket, "retainDays": 2})
    result = archiver(model, entry(v1), "Deleted", now)
    assert "retained (GOVERNANCE)" in result.message

    for key in (f"{ns}/churn/1/model.joblib", f"{ns}/churn/1/manifest.json"):
        retention = mc.get_object_retention(bucket, key)
        assert retention is not None and retention.mode == GOVERNANCE
        until = retention.retain_until_date
        assert dt.timedelta(days=2) - dt.timedelta(minutes=5) < until - now
        assert until - now <= dt.timedelta(days=2)
        version_id = mc.stat_object(bucket, key).version_id
        with pytest.raises(S3Error) as info:  # WORM: the stored version cannot be deleted
            mc.remove_object(bucket, key, version_id=version_id)
        assert "WORM protected" in str(info.value.message), info.value
    m = manifest_of(minio, bucket, f"{ns}/churn/1/manifest.json")
    assert m["retention"]["mode"] == "GOVERNANCE"
    assert archiver(model, entry(v1), "Deleted", now).ok  # idempotent in a locked bucket too

    book = S3Ledger(mc, settings("model-archive"))
    book.record(model, ledger.ARCHIVED, "1", {}, now)
    (record_key,) = keys(minio, bucket, f"{ns}/churn/ledger/")
    retention = mc.get_object_retention(bucket, record_key)
    assert retention is not None and retention.mode == GOVERNANCE
    book.record(model, ledger.ARCHIVED, "1", {}, now)  # a retry in a locked bucket: no error
    assert keys(minio, bucket, f"{ns}/churn/ledger/") == [record_key]


def test_retain_days_without_object_lock_says_so(minio: MinioServer) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    result = S3Archiver(minio.client(), settings(bucket))(
        model_spec("churn", ns, v1, archive={"retainDays": 5}), entry(v1), "Deleted", NOW
    )
    assert f"retainDays not applied: bucket {bucket} has no object lock" in result.message


def test_a_source_whose_bytes_changed_is_not_archived(minio: MinioServer) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1 = train_and_upload(minio, "drift", "1")
    wrong = HistoryEntry("1", "f" * 64, v1.uri, "2026-03-01T08:00:00Z")
    with pytest.raises(ArchiveError, match="the source changed since it was deployed"):
        S3Archiver(minio.client(), settings(bucket))(
            model_spec("drift", ns, v1), wrong, "SpecChanged", NOW
        )
    assert keys(minio, bucket, f"{ns}/") == []  # the wrong copy was removed


def test_a_version_name_reused_for_other_bytes_is_archived_beside_the_first(
    minio: MinioServer,
) -> None:
    """The MLModel deleted and re-created with the same version and another artifact (or
    the version forgotten by the 50-entry history): both archives exist and verify, and
    the second retirement succeeds at once, not after retries that could never succeed."""
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    first, second = train_and_upload(minio, "reuse", "1"), train_and_upload(minio, "reuse-b", "1")
    assert first.sha256 != second.sha256 and first.version == second.version == "1"
    archiver = S3Archiver(mc, settings(bucket))
    one = archiver(model_spec("reuse", ns, first), entry(first), "Deleted", NOW)
    assert one.location == f"s3://{bucket}/{ns}/reuse/1/"  # the first: where it always was

    reborn = model_spec("reuse", ns, second, uid="uid-reuse-recreated")
    later = NOW + dt.timedelta(days=3)
    two = archiver(reborn, entry(second), "SpecChanged", later)
    beside = f"{ns}/reuse/1/sha256-{second.sha256}/"
    assert two.ok and two.location == f"s3://{bucket}/{beside}"
    assert second.sha256[:12] in two.message
    assert keys(minio, bucket, f"{ns}/") == [
        f"{ns}/reuse/1/manifest.json", f"{ns}/reuse/1/model.joblib",
        f"{beside}manifest.json", f"{beside}model.joblib",
    ]  # fmt: skip
    for prefix, trained, uid in ((f"{ns}/reuse/1/", first, "uid-reuse"),
                                 (beside, second, "uid-reuse-recreated")):  # fmt: skip
        assert stored_sha256(minio, bucket, f"{prefix}model.joblib") == trained.sha256
        m = manifest_of(minio, bucket, f"{prefix}manifest.json")
        assert (m["version"], m["sha256"], m["size"], m["uid"]) == (
            "1", trained.sha256, trained.size, uid,
        )  # fmt: skip
        assert m["artifactUri"] == f"s3://{bucket}/{prefix}model.joblib"
        assert m["sourceUri"] == trained.uri

    # retries of either find their own archive: nothing is written again
    stamps = {k: mc.stat_object(bucket, k).last_modified for k in keys(minio, bucket, f"{ns}/")}
    assert archiver(reborn, entry(second), "SpecChanged", later).location == two.location
    assert archiver(model_spec("reuse", ns, first), entry(first), "Deleted", NOW).location == (
        one.location
    )
    assert {k: mc.stat_object(bucket, k).last_modified for k in stamps} == stamps


def test_an_archive_is_never_overwritten_with_other_bytes(minio: MinioServer) -> None:
    """What sits where an archive goes and holds other bytes stays as it is: an error."""
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    first, second = train_and_upload(minio, "reuse", "1"), train_and_upload(minio, "reuse-b", "1")
    archiver = S3Archiver(mc, settings(bucket))
    archiver(model_spec("reuse", ns, first), entry(first), "Deleted", NOW)
    junk = b"not the model"
    squatter = f"{ns}/reuse/1/sha256-{second.sha256}/model.joblib"
    mc.put_object(bucket, squatter, io.BytesIO(junk), len(junk))
    with pytest.raises(ArchiveError, match="never overwritten"):
        archiver(model_spec("reuse", ns, second), entry(second), "Deleted", NOW)
    assert stored_sha256(minio, bucket, squatter) == hashlib.sha256(junk).hexdigest()
    assert stored_sha256(minio, bucket, f"{ns}/reuse/1/model.joblib") == first.sha256


def test_errors_name_bucket_key_and_code(minio: MinioServer) -> None:
    ns = fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    archiver = S3Archiver(minio.client(), settings(fresh()))
    with pytest.raises(ArchiveError) as info:
        archiver(model_spec("churn", ns, v1, archive={"bucket": "no-such-bucket-x"}),
                 entry(v1), "Deleted", NOW)  # fmt: skip
    assert "bucket no-such-bucket-x (spec.archive.bucket) does not exist" in str(info.value)
    missing = HistoryEntry("1", v1.sha256, "s3://archive-src/nothing/here.joblib", "")
    with pytest.raises(ArchiveError) as info:
        archiver(model_spec("churn", ns, v1), missing, "Deleted", NOW)
    assert "source s3://archive-src/nothing/here.joblib: S3 error NoSuchKey" in str(info.value)
    assert minio.secret_key not in str(info.value)


def test_minio_down_raises_then_archives_once_it_is_back(minio: MinioServer) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    archiver = S3Archiver(minio.client(), settings(bucket))
    model = model_spec("churn", ns, v1)
    minio.stop()
    try:
        with pytest.raises(ArchiveError) as info:
            archiver(model, entry(v1), "Deleted", NOW)
        assert bucket in str(info.value)
        assert "connection refused" in str(info.value) or "unreachable" in str(info.value)
        assert minio.secret_key not in str(info.value)
        assert minio.access_key not in str(info.value)
    finally:
        minio.start()
    assert archiver(model, entry(v1), "Deleted", NOW).ok
    assert archiver(model, entry(v1), "Deleted", NOW).ok
    assert keys(minio, bucket, f"{ns}/") == [
        f"{ns}/churn/1/manifest.json", f"{ns}/churn/1/model.joblib",
    ]  # fmt: skip


def test_ledger_records_are_immutable_sorted_and_answer_which_version(
    minio: MinioServer,
) -> None:
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    mc.make_bucket(bucket)
    v1, v2 = train_and_upload(minio, "churn", "1"), train_and_upload(minio, "churn", "2")
    book = S3Ledger(mc, settings(bucket))
    t = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    steps = [
        (ledger.DEPLOYED, v1, 0), (ledger.SWITCHED, v1, 2), (ledger.DEPLOYED, v2, 3600),
        (ledger.SWITCHED, v2, 3610), (ledger.RETIRING, v1, 3610), (ledger.ARCHIVED, v1, 3650),
        (ledger.RETIRED, v1, 3650),
    ]  # fmt: skip
    for kind, trained, seconds in reversed(steps):  # written out of order on purpose
        model = model_spec("churn", ns, trained)
        book.record(
            model, kind, trained.version, {"uri": trained.uri}, t + dt.timedelta(seconds=seconds)
        )
    before = keys(minio, bucket, f"{ns}/churn/ledger/")
    book.record(
        model_spec("churn", ns, v1),
        ledger.SWITCHED,
        "1",
        {"uri": "changed"},
        t + dt.timedelta(seconds=2),
    )
    assert keys(minio, bucket, f"{ns}/churn/ledger/") == before  # a retry adds nothing
    kinds = [k.rsplit("/", 1)[1].split("-")[2] for k in before]  # listing order is time order
    assert kinds == [kind for kind, _, _ in steps]
    records = []
    for key in before:
        resp = mc.get_object(bucket, key)
        records.append(LedgerRecord.parse(json.loads(resp.read()), key))
        resp.close()
        resp.release_conn()
    assert records[1].details == {"uri": v1.uri}  # the first write stands
    assert serving_at(records, t + dt.timedelta(minutes=30)).version == "1"
    assert serving_at(records, t + dt.timedelta(hours=2)).version == "2"


def test_manifest_json_is_readable_json(minio: MinioServer) -> None:
    bucket, ns = fresh(), fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    S3Archiver(minio.client(), settings(bucket))(
        model_spec("churn", ns, v1), entry(v1), "Deleted", NOW
    )
    data = io.BytesIO()
    resp = minio.client().get_object(bucket, f"{ns}/churn/1/manifest.json")
    data.write(resp.read())
    resp.close()
    resp.release_conn()
    assert json.loads(data.getvalue())["version"] == "1"


def test_a_failed_ledger_write_names_the_object_and_the_code(minio: MinioServer) -> None:
    ns = fresh("ns")
    v1 = train_and_upload(minio, "churn", "1")
    book = S3Ledger(minio.client(), settings("model-archive"))
    model = model_spec("churn", ns, v1, archive={"bucket": "no-such-ledger-bucket"})
    with pytest.raises(LedgerError) as info:
        book.record(model, ledger.DEPLOYED, "1", {}, NOW)
    message = str(info.value)
    assert message.startswith(f"s3://no-such-ledger-bucket/{ns}/churn/ledger/20260314T120000")
    assert "S3 error NoSuchBucket" in message


def test_the_same_archive_recorded_again_later_is_one_record(minio: MinioServer) -> None:
    """A reconcile working from a status the previous one had not yet updated finishes a
    retirement again: the archive is found, and its ledger record must not be doubled."""
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    mc.make_bucket(bucket)
    v1 = train_and_upload(minio, "churn", "1")
    book, model = S3Ledger(mc, settings(bucket)), model_spec("churn", ns, v1)
    period = {"version": "1", "deployedAt": "2026-03-01T08:00:00Z", "archive": "s3://b/x/"}
    book.record(model, ledger.ARCHIVED, "1", period, NOW)
    book.record(model, ledger.ARCHIVED, "1", period, NOW + dt.timedelta(seconds=3))
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 1
    # served again later (a rollback) and archived again: a new serving period, a new record
    again = {**period, "deployedAt": "2026-04-01T08:00:00Z"}
    book.record(model, ledger.ARCHIVED, "1", again, NOW + dt.timedelta(days=40))
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 2


class CountingClient:
    """The real MinIO client, counting the requests made through it (and naming them)."""

    def __init__(self, inner: object) -> None:
        self.inner, self.calls = inner, 0
        self.names: list[str] = []

    def __getattr__(self, name: str) -> object:
        self.calls += 1
        self.names.append(name)
        return getattr(self.inner, name)


def test_ensure_writes_a_transition_once_and_asks_nothing_once_known(
    minio: MinioServer,
) -> None:
    """ensure() is how the reconciler records a transition the cluster shows (a crash
    between the transition and its record leaves that to the next reconcile): once per
    instant, satisfied by a later record of the same kind and version, and with one
    LIST per model, after which known records cost no request at all."""
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    mc.make_bucket(bucket)
    v1 = train_and_upload(minio, "churn", "1")
    counting = CountingClient(mc)
    book, model = S3Ledger(counting, settings(bucket)), model_spec("churn", ns, v1)
    switched = NOW + dt.timedelta(microseconds=123456)
    book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    assert keys(minio, bucket, f"{ns}/churn/ledger/") == [
        f"{ns}/churn/ledger/20260314T120000.123456Z-2-TrafficSwitched-v1.json"
    ]
    # an earlier instant of the same transition (an older annotation's whole second)
    book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, NOW)
    before = counting.calls
    book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    assert counting.calls == before  # known: no request
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 1

    # a new process reads the model's ledger once (key names only), then asks nothing
    fresh_book = S3Ledger(CountingClient(mc), settings(bucket))
    fresh_book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    assert fresh_book.client.calls == 1  # the LIST
    fresh_book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    assert fresh_book.client.calls == 1
    # a later switch to the same version (after a rollback) is a new record
    later = switched + dt.timedelta(hours=1)
    fresh_book.ensure(model, ledger.SWITCHED, "1", {"previous": "2"}, later)
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 2


def test_ensure_asks_once_whether_a_record_is_there_before_writing_it(
    minio: MinioServer,
) -> None:
    """A record missing from the LIST ensure() just made is written at once (after a
    crash, the next process's catch-up: one LIST, one PUT). Missing from a LIST made
    earlier, its key is looked up first: another replica may have written it while this
    one was paused, and a record is never written over."""
    bucket, ns = fresh(), fresh("ns")
    mc = minio.client()
    mc.make_bucket(bucket)
    v1 = train_and_upload(minio, "churn", "1")
    model = model_spec("churn", ns, v1)
    book = S3Ledger(CountingClient(mc), settings(bucket))
    switched = NOW + dt.timedelta(microseconds=5)
    book.ensure(model, ledger.SWITCHED, "1", {"previous": None}, switched)
    assert book.client.names == ["list_objects", "put_object"]
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 1

    # the other replica records the next switch while this one pauses
    later = switched + dt.timedelta(hours=1)
    S3Ledger(mc, settings(bucket)).ensure(model, ledger.SWITCHED, "1", {"previous": "2"}, later)
    (key,) = [k for k in keys(minio, bucket, f"{ns}/churn/ledger/") if "T130000" in k]
    written = mc.stat_object(bucket, key)
    book.client.names.clear()
    book.ensure(model, ledger.SWITCHED, "1", {"previous": "other details"}, later)
    assert book.client.names == ["stat_object"]  # found: not written again
    again = mc.stat_object(bucket, key)
    assert (again.etag, again.last_modified) == (written.etag, written.last_modified)
    assert len(keys(minio, bucket, f"{ns}/churn/ledger/")) == 2
