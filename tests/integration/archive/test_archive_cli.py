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
    model_spec,
    run_cli,
    settings,
    train_and_upload,
)

from mlmodel_operator import ledger
from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.ledger import S3Ledger
from mlmodel_operator.localcluster import MinioServer, free_port, http_ok, wait_until

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
