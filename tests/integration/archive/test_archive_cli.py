"""`mlmodel archive ls/show`, `history`, `replay`, `rollback --print` as real subprocesses
against a real MinIO, on archives the S3Archiver made of real models."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sklearn
from archive_helpers import (
    Trained,
    entry,
    iris_rows,
    keys,
    model_spec,
    run_cli,
    settings,
    train_and_upload,
)
from minio.commonconfig import CopySource

from mlmodel_operator import ledger
from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.ledger import S3Ledger
from mlmodel_operator.localcluster import MinioServer, free_port, http_ok, wait_until
from mlmodel_operator.plan import HistoryEntry

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Archived:
    bucket: str
    ns: str
    v1: Trained
    v2: Trained


@pytest.fixture(scope="module")
def archived(minio: MinioServer) -> Archived:
    """churn v1 served 1 March 09:00 to 10 March 09:00, then v2 until 20 March; both archived."""
    bucket, ns = f"cli-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    v1, v2 = train_and_upload(minio, "churn", "1"), train_and_upload(minio, "churn", "2")
    archiver, book = S3Archiver(mc, settings(bucket)), S3Ledger(mc, settings(bucket))
    t_switch, t_end = T0 + dt.timedelta(days=9), T0 + dt.timedelta(days=19)
    m1, m2 = model_spec("churn", ns, v1), model_spec("churn", ns, v2)
    book.record(m1, ledger.DEPLOYED, "1", {"uri": v1.uri, "sha256": v1.sha256}, T0)
    book.record(m1, ledger.SWITCHED, "1", {"uri": v1.uri, "sha256": v1.sha256}, T0)
    book.record(m2, ledger.SWITCHED, "2", {"uri": v2.uri, "sha256": v2.sha256}, t_switch)
    e1 = entry(v1)
    result = archiver(m2, e1, "SpecChanged", t_switch)
    book.record(m2, ledger.ARCHIVED, "1", {"archive": result.location}, t_switch)
    result = archiver(m2, entry(v2), "Deleted", t_end)
    book.record(m2, ledger.ARCHIVED, "2", {"archive": result.location}, t_end)
    book.record(m2, ledger.DELETED, "2", {}, t_end)
    return Archived(bucket, ns, v1, v2)


def cli(minio: MinioServer, a: Archived, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(minio, a.bucket, *args, "-n", a.ns)


def test_archive_ls_lists_both_versions(minio: MinioServer, archived: Archived) -> None:
    out = cli(minio, archived, "archive", "ls", "churn")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["MODEL", "VERSION", "DIGEST"]
    assert [r.split()[1] for r in rows] == ["1", "2"]
    assert archived.v1.sha256[:12] in rows[0] and "SpecChanged" in rows[0]
    assert "2026-03-10T09:00:00Z" in rows[0] and "Deleted" in rows[1]
    everything = cli(minio, archived, "archive", "ls")
    assert everything.stdout == out.stdout


def test_archive_show_is_readable_and_json_is_the_manifest(
    minio: MinioServer, archived: Archived
) -> None:
    out = cli(minio, archived, "archive", "show", "churn", "1")
    assert out.returncode == 0, out.stderr
    assert f"sha256:       {archived.v1.sha256}" in out.stdout
    assert f"scikit-learn {sklearn.__version__}" in out.stdout
    assert "Reason:         SpecChanged" in out.stdout
    raw = json.loads(cli(minio, archived, "archive", "show", "churn", "2", "-o", "json").stdout)
    assert raw["sha256"] == archived.v2.sha256 and raw["reason"] == "Deleted"


def test_history_at_names_the_version_that_served(minio: MinioServer, archived: Archived) -> None:
    out = cli(minio, archived, "history", "churn", "--at", "2026-03-05T12:00:00Z")
    assert out.returncode == 0, out.stderr
    assert "served version 1" in out.stdout
    assert "until 2026-03-10T09:00:00Z" in out.stdout
    assert f"s3://{archived.bucket}/{archived.ns}/churn/1/" in out.stdout
    assert (
        "served version 2" in cli(minio, archived, "history", "churn", "--at", "2026-03-15").stdout
    )
    gone = cli(minio, archived, "history", "churn", "--at", "2026-04-01")
    assert gone.returncode == 1 and "deleted at 2026-03-20T09:00:00Z" in gone.stdout
    before = cli(minio, archived, "history", "churn", "--at", "2025-01-01")
    assert before.returncode == 1 and "the ledger starts at" in before.stdout


def test_replay_gives_the_served_models_predictions(
    minio: MinioServer, archived: Archived, tmp_path: Path
) -> None:
    rows = iris_rows()
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("a,b,c,d\n" + "\n".join(",".join(repr(float(v)) for v in r) for r in rows))
    out_file = tmp_path / "out.jsonl"
    out = cli(minio, archived, "replay", "churn", "--version", "1", "--input", str(csv_in),
              "--output", str(out_file), "--proba", "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "verified sha256" in out.stderr
    assert f"downloading s3://{archived.bucket}/{archived.ns}/churn/1/model.joblib" in out.stderr
    assert "(100%)" in out.stderr
    got = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [g["predict"] for g in got] == archived.v1.estimator.predict(rows).tolist()
    assert np.array_equal(
        np.array([g["predict_proba"] for g in got]), archived.v1.estimator.predict_proba(rows)
    )

    # --at picks the version from the ledger; JSON lines in, stdout out
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join(json.dumps([float(v) for v in r]) for r in rows))
    out = cli(minio, archived, "replay", "churn", "--at", "2026-03-15T00:00:00Z",
              "--input", str(jsonl), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "version 2 was serving" in out.stderr
    predicted = [json.loads(line)["predict"] for line in out.stdout.splitlines()]
    assert predicted == archived.v2.estimator.predict(rows).tolist()


def test_replay_errors_are_clear(minio: MinioServer, archived: Archived, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3,4\n5,6,x,8\n")
    out = cli(minio, archived, "replay", "churn", "--version", "1", "--input", str(bad),
              "--cache-dir", str(tmp_path))  # fmt: skip
    assert out.returncode == 1 and f"{bad}:2:3: 'x' is not a number" in out.stderr
    out = cli(minio, archived, "replay", "churn", "--version", "9", "--input", str(bad))
    assert out.returncode == 1 and "archived versions: 1, 2" in out.stderr
    out = cli(minio, archived, "replay", "nosuch", "--version", "1", "--input", str(bad))
    assert out.returncode == 1 and "model nosuch has no archived versions" in out.stderr
    out = run_cli(minio, "no-such-bucket", "archive", "ls", "-n", archived.ns)
    assert out.returncode == 1 and "bucket no-such-bucket does not exist" in out.stderr
    assert minio.secret_key not in out.stderr + out.stdout


def test_version_skew_refuses_unless_allowed_and_a_tampered_copy_is_refused(
    minio: MinioServer, tmp_path: Path
) -> None:
    bucket, ns = f"skew-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    v1 = train_and_upload(minio, "old", "1")
    S3Archiver(mc, settings(bucket))(model_spec("old", ns, v1), entry(v1), "Deleted", T0)
    key = f"{ns}/old/1/manifest.json"
    resp = mc.get_object(bucket, key)
    manifest = json.loads(resp.read())
    resp.close()
    resp.release_conn()
    manifest["libraries"]["trainedWith"]["scikit-learn"] = "0.24.2"  # as if trained long ago
    data = json.dumps(manifest).encode()
    mc.put_object(bucket, key, io.BytesIO(data), len(data))
    rows = tmp_path / "in.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n")

    out = run_cli(minio, bucket, "replay", "old", "-n", ns, "--version", "1", "--input", str(rows),
                  "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert out.returncode == 1
    assert (
        f"scikit-learn 0.24.2, this environment has scikit-learn {sklearn.__version__}"
        in out.stderr
    )
    out = run_cli(minio, bucket, "replay", "old", "-n", ns, "--version", "1", "--input", str(rows),
                  "--cache-dir", str(tmp_path / "c"), "--allow-version-skew")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["predict"] == int(v1.estimator.predict([[5.1, 3.5, 1.4, 0.2]])[0])

    tampered = b"not the model"
    mc.put_object(bucket, f"{ns}/old/1/model.joblib", io.BytesIO(tampered), len(tampered))
    out = run_cli(minio, bucket, "replay", "old", "-n", ns, "--version", "1", "--input", str(rows),
                  "--cache-dir", str(tmp_path / "fresh"), "--allow-version-skew")  # fmt: skip
    assert out.returncode == 1 and "sha256 mismatch" in out.stderr


def test_rollback_print_is_the_yaml_patch(minio: MinioServer, archived: Archived) -> None:
    out = cli(minio, archived, "rollback", "churn", "--to", "1", "--print")
    assert out.returncode == 0, out.stderr
    assert f"kubectl -n {archived.ns} patch mlmodel churn --type merge" in out.stdout
    assert (
        f"  version: '1'\n  artifact:\n    uri: s3://{archived.bucket}/{archived.ns}/churn/1/model.joblib\n    sha256: {archived.v1.sha256}\n"
        in out.stdout
    )


@pytest.fixture()
def served(minio: MinioServer, archived: Archived, tmp_path: Path) -> Iterator[int]:
    port = free_port()
    exe = Path(sys.executable).parent / "mlmodel"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")},
        "MLMODEL_S3_ENDPOINT": minio.endpoint,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
        "MLMODEL_ARCHIVE_BUCKET": archived.bucket,
    }
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(exe), "replay", "churn", "-n", archived.ns, "--version", "1", "--serve",
         "--port", str(port), "--cache-dir", str(tmp_path / "cache")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(
            "replayed model ready",
            lambda: proc.poll() is None and http_ok(f"http://127.0.0.1:{port}/v2/health/ready"),
            60,
        )
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_replay_serve_runs_the_server_on_the_archived_copy(served: int, archived: Archived) -> None:
    rows = iris_rows()
    body = {"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                        "data": rows.ravel().tolist()}]}  # fmt: skip
    req = urllib.request.Request(
        f"http://127.0.0.1:{served}/v2/models/churn/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert answer["model_version"] == "1"
    (output,) = [o for o in answer["outputs"] if o["name"] == "predict"]
    assert output["data"] == archived.v1.estimator.predict(rows).tolist()


# ------------------------------------------------------- a version name reused for other bytes


def artifact(t: Trained) -> dict[str, str]:
    return {"uri": t.uri, "sha256": t.sha256}


def write_rows(path: Path, rows: np.ndarray) -> Path:
    path.write_text("\n".join(",".join(repr(float(v)) for v in r) for r in rows) + "\n")
    return path


def replayed(out: subprocess.CompletedProcess[str]) -> tuple[list[int], np.ndarray]:
    got = [json.loads(line) for line in out.stdout.splitlines()]
    return [g["predict"] for g in got], np.array([g["predict_proba"] for g in got])


@dataclass(frozen=True)
class Reused:
    bucket: str
    ns: str
    first: Trained  # version 1 of the first MLModel churn
    second: Trained  # version 1 of the re-created MLModel churn: other bytes
    after: Trained  # version 2 of the re-created churn


@pytest.fixture(scope="module")
def reused(minio: MinioServer) -> Reused:
    """churn version 1 served from 1 March; the MLModel was deleted on 6 March (version 1
    archived), re-created on 7 March with version 1 naming other bytes, which served until
    version 2 replaced it on 11 March (archived too). What the operator writes, in order."""
    bucket, ns = f"reuse-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    first = train_and_upload(minio, "churn-first", "1")
    second = train_and_upload(minio, "churn-second", "1")
    after = train_and_upload(minio, "churn-second", "2")
    archiver, book = S3Archiver(mc, settings(bucket)), S3Ledger(mc, settings(bucket))

    m1 = model_spec("churn", ns, first, uid="uid-churn-first")
    book.record(m1, ledger.DEPLOYED, "1", artifact(first), T0)
    book.record(m1, ledger.SWITCHED, "1", artifact(first), T0)
    deleted = T0 + dt.timedelta(days=5)
    e1 = HistoryEntry("1", first.sha256, first.uri, "2026-03-01T09:00:00Z")
    done = archiver(m1, e1, "Deleted", deleted)
    book.record(m1, ledger.ARCHIVED, "1", {**e1.to_status(), "archive": done.location}, deleted)
    book.record(m1, ledger.DELETED, "1", {"deployedAt": e1.deployed_at}, deleted)

    back = T0 + dt.timedelta(days=6)
    m2 = model_spec("churn", ns, second, uid="uid-churn-second")
    book.record(m2, ledger.DEPLOYED, "1", artifact(second), back)
    book.record(m2, ledger.SWITCHED, "1", artifact(second), back)
    replaced = T0 + dt.timedelta(days=10)
    m3 = model_spec("churn", ns, after, uid="uid-churn-second")
    book.record(m3, ledger.SWITCHED, "2", {**artifact(after), "previous": "1"}, replaced)
    e2 = HistoryEntry("1", second.sha256, second.uri, "2026-03-07T09:00:00Z")
    done = archiver(m3, e2, "SpecChanged", replaced)
    book.record(m3, ledger.ARCHIVED, "1", {**e2.to_status(), "archive": done.location}, replaced)
    return Reused(bucket, ns, first, second, after)


def rcli(minio: MinioServer, r: Reused, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(minio, r.bucket, *args, "-n", r.ns)


def test_replay_at_runs_the_bytes_the_ledger_says_served(
    minio: MinioServer, reused: Reused, tmp_path: Path
) -> None:
    rows = iris_rows()
    first, second = reused.first.estimator, reused.second.estimator
    assert not np.array_equal(first.predict_proba(rows), second.predict_proba(rows))
    inputs = write_rows(tmp_path / "in.csv", rows)
    for at, trained in (("2026-03-03T00:00:00Z", reused.first),
                        ("2026-03-09T00:00:00Z", reused.second)):  # fmt: skip
        out = rcli(minio, reused, "replay", "churn", "--at", at, "--input", str(inputs),
                   "--proba", "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert f"version 1 was serving at {at}" in out.stderr
        assert f"verified sha256 {trained.sha256[:12]}" in out.stderr
        predict, proba = replayed(out)
        assert predict == trained.estimator.predict(rows).tolist()
        assert np.array_equal(proba, trained.estimator.predict_proba(rows))


def test_replay_version_of_a_reused_name_refuses_and_names_both_digests(
    minio: MinioServer, reused: Reused, tmp_path: Path
) -> None:
    rows = iris_rows()
    inputs = write_rows(tmp_path / "in.csv", rows)
    cache = str(tmp_path / "cache")
    out = rcli(minio, reused, "replay", "churn", "--version", "1", "--input", str(inputs),
               "--cache-dir", cache)  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert reused.first.sha256 in out.stderr and reused.second.sha256 in out.stderr
    assert "--sha256" in out.stderr and "--at" in out.stderr
    assert "downloading" not in out.stderr  # nothing fetched, nothing loaded

    for chosen, trained in ((reused.second.sha256[:12], reused.second),
                            (reused.first.sha256, reused.first)):  # fmt: skip
        out = rcli(minio, reused, "replay", "churn", "--version", "1", "--sha256", chosen,
                   "--input", str(inputs), "--proba", "--cache-dir", cache)  # fmt: skip
        assert out.returncode == 0, out.stderr
        predict, proba = replayed(out)
        assert predict == trained.estimator.predict(rows).tolist()
        assert np.array_equal(proba, trained.estimator.predict_proba(rows))

    out = rcli(minio, reused, "replay", "churn", "--version", "1", "--sha256", "0" * 12,
               "--input", str(inputs), "--cache-dir", cache)  # fmt: skip
    assert out.returncode == 1
    assert "no archive of version 1 of model churn has a sha256 starting 000000000000" in (
        out.stderr
    )
    assert reused.first.sha256 in out.stderr and reused.second.sha256 in out.stderr


def test_ls_show_history_and_rollback_tell_the_two_archives_apart(
    minio: MinioServer, reused: Reused
) -> None:
    first, second = reused.first.sha256, reused.second.sha256
    beside = f"s3://{reused.bucket}/{reused.ns}/churn/1/sha256-{second}/"
    ls = rcli(minio, reused, "archive", "ls", "churn")
    assert ls.returncode == 0, ls.stderr
    rows = [r.split() for r in ls.stdout.splitlines()[1:]]
    assert [(r[1], r[2]) for r in rows] == [("1", first[:12]), ("1", second[:12])]

    show = rcli(minio, reused, "archive", "show", "churn", "1")
    assert show.returncode == 1 and first in show.stderr and second in show.stderr
    show = rcli(minio, reused, "archive", "show", "churn", "1", "--sha256", second[:12], "-o",
                "json")  # fmt: skip
    assert show.returncode == 0, show.stderr
    raw = json.loads(show.stdout)
    assert (raw["sha256"], raw["artifactUri"]) == (second, f"{beside}model.joblib")

    then = rcli(minio, reused, "history", "churn", "--at", "2026-03-03T00:00:00Z")
    assert then.returncode == 0, then.stderr
    assert f"  archive     s3://{reused.bucket}/{reused.ns}/churn/1/\n" in then.stdout
    assert f"--version 1 --sha256 {first[:12]}" in then.stdout
    later = rcli(minio, reused, "history", "churn", "--at", "2026-03-09T00:00:00Z")
    assert later.returncode == 0, later.stderr
    assert f"sha256 {second}" in later.stdout and f"  archive     {beside}\n" in later.stdout
    assert f"--version 1 --sha256 {second[:12]}" in later.stdout

    back = rcli(minio, reused, "rollback", "churn", "--to", "1", "--print")
    assert back.returncode == 1 and first in back.stderr and second in back.stderr
    back = rcli(minio, reused, "rollback", "churn", "--to", "1", "--sha256", second[:12],
                "--print")  # fmt: skip
    assert back.returncode == 0, back.stderr
    assert f"    uri: {beside}model.joblib\n    sha256: {second}\n" in back.stdout


def test_replay_at_refuses_bytes_the_archive_does_not_hold(
    minio: MinioServer, tmp_path: Path
) -> None:
    """The ledger says version 1 served with bytes never archived (the re-created MLModel
    still serves them); the archive holds version 1 of the earlier object: replaying that
    time must not run the earlier bytes."""
    bucket, ns = f"unarch-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    first = train_and_upload(minio, "unarch-first", "1")
    second = train_and_upload(minio, "unarch-second", "1")
    archiver, book = S3Archiver(mc, settings(bucket)), S3Ledger(mc, settings(bucket))
    m1 = model_spec("churn", ns, first, uid="uid-a")
    book.record(m1, ledger.SWITCHED, "1", artifact(first), T0)
    archiver(m1, entry(first), "Deleted", T0 + dt.timedelta(days=1))
    book.record(m1, ledger.DELETED, "1", {}, T0 + dt.timedelta(days=1))
    m2 = model_spec("churn", ns, second, uid="uid-b")
    book.record(m2, ledger.SWITCHED, "1", artifact(second), T0 + dt.timedelta(days=2))
    inputs = write_rows(tmp_path / "in.csv", iris_rows())

    out = run_cli(minio, bucket, "replay", "churn", "-n", ns, "--at", "2026-03-04T00:00:00Z",
                  "--input", str(inputs), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    assert f"sha256 {second.sha256}" in out.stderr and "not archived" in out.stderr
    assert first.sha256 in out.stderr  # what the archive holds instead
    out = run_cli(minio, bucket, "replay", "churn", "-n", ns, "--at", "2026-03-01T12:00:00Z",
                  "--input", str(inputs), "--cache-dir", str(tmp_path / "c"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert replayed_predict(out) == first.estimator.predict(iris_rows()).tolist()


def replayed_predict(out: subprocess.CompletedProcess[str]) -> list[int]:
    return [json.loads(line)["predict"] for line in out.stdout.splitlines()]


def test_an_archive_written_in_the_old_layout_is_read_and_kept(
    minio: MinioServer, tmp_path: Path
) -> None:
    """Archives made before versions were told apart by digest: <version>/model.joblib and
    <version>/manifest.json, written here byte for byte as that release wrote them, with a
    ledger whose records name no digest. Every command reads them; the archiver keeps
    them (the same bytes again are found there), and other bytes go beside them."""
    bucket, ns = f"old-{uuid.uuid4().hex[:8]}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    v1 = train_and_upload(minio, "old-layout", "1")
    prefix = f"{ns}/old/1/"
    src_bucket, src_key = v1.uri.removeprefix("s3://").split("/", 1)
    mc.copy_object(bucket, f"{prefix}model.joblib", CopySource(src_bucket, src_key))
    old_manifest = {
        "format": "ml.lifecycle.io/archive-manifest/v1", "model": "old", "namespace": ns,
        "uid": "uid-old", "version": "1", "sha256": v1.sha256, "size": v1.size,
        "artifactUri": f"s3://{bucket}/{prefix}model.joblib", "sourceUri": v1.uri,
        "artifactFormat": "joblib", "deployedAt": "2026-03-01T09:00:00Z",
        "retiredAt": "2026-03-05T09:00:00Z", "reason": "Deleted",
        "archivedAt": "2026-03-05T09:00:00Z", "servingImage": "ghcr.io/x/mlmodel-serving:0.1.0",
        "spec": {"version": "1", "artifact": artifact(v1)}, "specNote": "...",
        "libraries": {"trainedWith": {"scikit-learn": sklearn.__version__, "complete": True},
                      "servingRelease": {"scikit-learn": sklearn.__version__,
                                         "imageIsDefault": True}},
        "retention": None,
    }  # fmt: skip
    data = json.dumps(old_manifest, indent=2).encode()
    mc.put_object(bucket, f"{prefix}manifest.json", io.BytesIO(data), len(data))
    for at, kind in ((T0, "TrafficSwitched"), (T0 + dt.timedelta(days=4), "Deleted")):
        rank = {"TrafficSwitched": 2, "Deleted": 6}[kind]
        record = json.dumps({"format": "ml.lifecycle.io/ledger-record/v1", "kind": kind,
                             "version": "1", "at": at.isoformat().replace("+00:00", "Z"),
                             "model": "old", "namespace": ns, "details": {}}).encode()  # fmt: skip
        key = f"{ns}/old/ledger/{at.strftime('%Y%m%dT%H%M%S.%fZ')}-{rank}-{kind}-v1.json"
        mc.put_object(bucket, key, io.BytesIO(record), len(record))
    rows = iris_rows()
    inputs = write_rows(tmp_path / "in.csv", rows)
    expected = v1.estimator.predict(rows).tolist()

    def old(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(minio, bucket, *args, "-n", ns)

    ls = old("archive", "ls", "old")
    assert ls.returncode == 0 and ls.stdout.splitlines()[1].split()[1:3] == ["1", v1.sha256[:12]]
    show = old("archive", "show", "old", "1")
    assert show.returncode == 0 and f"sha256:       {v1.sha256}" in show.stdout
    for which in (["--version", "1"], ["--at", "2026-03-02T00:00:00Z"]):
        out = old("replay", "old", *which, "--input", str(inputs), "--cache-dir", str(tmp_path))
        assert out.returncode == 0, out.stderr
        assert replayed_predict(out) == expected
    back = old("rollback", "old", "--to", "1", "--print")
    assert back.returncode == 0 and f"uri: s3://{bucket}/{prefix}model.joblib" in back.stdout

    # served again (a rollback) and retired again: the old archive is that archive
    archiver = S3Archiver(mc, settings(bucket))
    before = {k: mc.stat_object(bucket, k).etag for k in keys(minio, bucket, prefix)}
    again = archiver(model_spec("old", ns, v1), entry(v1), "SpecChanged", T0)
    assert again.location == f"s3://{bucket}/{prefix}"
    assert {k: mc.stat_object(bucket, k).etag for k in keys(minio, bucket, prefix)} == before
    # the name reused for other bytes: beside it, and the old one still read
    other = train_and_upload(minio, "old-layout-b", "1")
    beside = archiver(model_spec("old", ns, other, uid="uid-new"), entry(other), "Deleted", T0)
    assert beside.location == f"s3://{bucket}/{prefix}sha256-{other.sha256}/"
    out = old("replay", "old", "--version", "1", "--sha256", v1.sha256[:12], "--input",
              str(inputs), "--cache-dir", str(tmp_path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert replayed_predict(out) == expected
    # the old ledger names no digest: with two archives of version 1, --at cannot choose
    out = old("replay", "old", "--at", "2026-03-02T00:00:00Z", "--input", str(inputs),
              "--cache-dir", str(tmp_path))  # fmt: skip
    assert out.returncode == 1 and v1.sha256 in out.stderr and other.sha256 in out.stderr
