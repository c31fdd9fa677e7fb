"""`mlmodel decisions ls/show`, `audit` and `explain` as real subprocesses against a real
MinIO: real scikit-learn models, archived by the S3Archiver, and decision files written
with the record format's own encoder (what the server's writer does)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from archive_helpers import SOURCE_BUCKET, Trained, entry, model_spec, run_cli, settings
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.example_models import churn_frame, fit_churn_pipeline
from mlmodel_operator.localcluster import LocalCluster, MinioServer
from mlmodel_operator.realstack import wait_established
from mlmodel_serving.decisions import (
    Decision,
    ModelIdentity,
    encode_batch,
    input_columns,
    partition_key,
)
from mlmodel_serving.model import SklearnModel
from mlmodel_serving.tabular import TEXT, Columns

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
DAY1 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY3 = dt.datetime(2026, 3, 3, 9, 0, tzinfo=dt.UTC)
OUTPUTS = ("predict", "predict_proba")
REDACT_KEY = b"test-redaction-key"


def upload(minio: MinioServer, name: str, version: str, estimator: Any) -> Trained:
    """A fitted estimator, dumped with joblib into the source bucket."""
    mc = minio.client()
    if not mc.bucket_exists(SOURCE_BUCKET):
        mc.make_bucket(SOURCE_BUCKET)
    buf = io.BytesIO()
    joblib.dump(estimator, buf)
    data = buf.getvalue()
    key = f"decisions-{RUN}/{name}/{version}/model.joblib"
    mc.put_object(SOURCE_BUCKET, key, io.BytesIO(data), len(data))
    return Trained(version, f"s3://{SOURCE_BUCKET}/{key}", hashlib.sha256(data).hexdigest(),
                   len(data), estimator)  # fmt: skip


def served(t: Trained, name: str, leaf_tables: bool = False) -> SklearnModel:
    """The model as the server holds it."""
    model = SklearnModel(t.estimator, name, t.version, t.sha256)
    if leaf_tables:
        model.use_leaf_tables()
    return model


def iris_rows(start: int, n: int) -> np.ndarray[Any, Any]:
    x, _ = load_iris(return_X_y=True)
    return np.ascontiguousarray(x[start : start + n], dtype=np.float64)


def churn_columns(start: int, n: int) -> Columns:
    frame, _ = churn_frame(60, seed=5)
    part = frame.iloc[start : start + n]
    arrays = []
    for name in frame.columns:
        if name in ("contract", "payment_method", "internet_service"):
            arrays.append(np.asarray(part[name].to_numpy(dtype=object, na_value=np.nan)))
        else:
            arrays.append(part[name].to_numpy(dtype=np.float64))
    return Columns(tuple(frame.columns), tuple(arrays))


def ns_of(at: dt.datetime) -> int:
    return int(at.timestamp()) * 10**9 + at.microsecond * 1000


@dataclass
class Log:
    """Decision files of one model version, written the way the server writes them."""

    minio: MinioServer
    bucket: str
    ident: ModelIdentity
    model: SklearnModel
    ids: list[str] = field(default_factory=list)

    def decide(self, request_id: str, x: Any, at: dt.datetime, outputs: Sequence[str] = OUTPUTS,
               tamper: bool = False) -> Decision:  # fmt: skip
        out = self.model.predict(x, tuple(outputs))
        if tamper:  # one ulp off: what bit for bit must catch
            proba = out["predict_proba"].copy()
            proba[0, 0] = np.nextafter(proba[0, 0], 2.0)
            out = {**out, "predict_proba": proba}
        self.ids.append(request_id)
        return Decision(request_id, ns_of(at), "v2", 200, 0.0021, x, out)

    def error(self, request_id: str, at: dt.datetime) -> Decision:
        self.ids.append(request_id)
        return Decision(request_id, ns_of(at), "v2", 400, 0.0003, None, None,
                        "input has 3 features per row: model expects 4")  # fmt: skip

    def write(self, decisions: Sequence[Decision], at: dt.datetime, name: str) -> str:
        data = encode_batch(decisions, self.ident, REDACT_KEY if self.ident.redact else None)
        key = partition_key("decisions", self.ident, at, f"{name}.parquet")
        self.minio.client().put_object(self.bucket, key, io.BytesIO(data), len(data))
        return key


@dataclass(frozen=True)
class Logged:
    bucket: str
    ns: str
    rf: Trained
    lr1: Trained
    lr2: Trained
    churn: Trained
    reuse1: Trained
    reuse2: Trained
    unarchived: Trained
    ids: dict[str, list[str]]


def log_for(minio: MinioServer, bucket: str, ns: str, name: str, t: Trained,
            leaf_tables: bool = False, redact: frozenset[str] = frozenset(),
            sha256: str | None = None, version: str | None = None) -> Log:  # fmt: skip
    model = served(t, name, leaf_tables)
    ident = ModelIdentity(
        ns, name, version or t.version, sha256 or t.sha256,
        input_columns(model.schema.columns, model.n_features), redact, model.predict_path,
    )  # fmt: skip
    return Log(minio, bucket, ident, model)


@pytest.fixture(scope="module")
def logged(minio: MinioServer) -> Logged:
    bucket, ns = f"dec-{RUN}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    x, y = load_iris(return_X_y=True)
    rf = upload(minio, "iris-rf", "1", RandomForestClassifier(n_estimators=30, random_state=0).fit(x, y))  # fmt: skip
    lr1 = upload(minio, "iris-lr", "1", LogisticRegression(C=0.5, max_iter=1000).fit(x, y))
    lr2 = upload(minio, "iris-lr", "2", LogisticRegression(C=2.0, max_iter=1000).fit(x, y))
    churn = upload(minio, "churn", "1", fit_churn_pipeline("onehot"))
    reuse1 = upload(minio, "reuse", "1", LogisticRegression(C=0.1, max_iter=1000).fit(x, y))
    reuse2 = upload(minio, "reuse", "2", LogisticRegression(C=0.3, max_iter=1000).fit(x, y))
    unarchived = upload(minio, "reuse", "1b", LogisticRegression(C=0.7, max_iter=1000).fit(x, y))
    archiver = S3Archiver(mc, settings(bucket))
    for name, t in [("iris-rf", rf), ("iris-lr", lr1), ("iris-lr", lr2), ("churn", churn),
                    ("reuse", reuse1), ("reuse", reuse2), ("tamper", rf)]:  # fmt: skip
        archiver(model_spec(name, ns, t), entry(t), "Deleted", DAY3 + dt.timedelta(days=5))

    ids: dict[str, list[str]] = {}
    # iris-rf: the server's leaf tables; three days of records, one failed request
    log = log_for(minio, bucket, ns, "iris-rf", rf, leaf_tables=True)
    assert log.ident.predict_path == "leaf-tables"
    log.write([log.decide("rf-a", iris_rows(0, 1), DAY1), log.decide("rf-b", iris_rows(50, 3), DAY1 + dt.timedelta(minutes=5)),
               log.error("rf-err", DAY1 + dt.timedelta(minutes=6))], DAY1, "batch-1")  # fmt: skip
    log.write([log.decide("rf-c", iris_rows(100, 2), DAY2), log.decide("rf-d", iris_rows(120, 1), DAY2 + dt.timedelta(hours=1))],
              DAY2, "batch-2")  # fmt: skip
    log.write(
        [log.decide(f"rf-bg-{i}", iris_rows(3 * i, 2), DAY3) for i in range(10)], DAY3, "batch-3"
    )
    ids["iris-rf"] = log.ids
    # iris-lr: two versions
    for t, day in ((lr1, DAY1), (lr2, DAY2)):
        log = log_for(minio, bucket, ns, "iris-lr", t)
        log.write([log.decide(f"lr{t.version}-{i}", iris_rows(7 * i, 1 + i % 2), day + dt.timedelta(minutes=i))
                   for i in range(6)], day, f"lr-{t.version}")  # fmt: skip
        ids[f"iris-lr-{t.version}"] = log.ids
    # churn: a DataFrame Pipeline with text columns (one value missing in the source data)
    log = log_for(minio, bucket, ns, "churn", churn)
    assert any(c.datatype == TEXT for c in log.ident.columns)
    log.write([log.decide(f"churn-{i}", churn_columns(3 * i, 1 + i % 3), DAY1 + dt.timedelta(minutes=i))
               for i in range(12)], DAY1, "churn-1")  # fmt: skip
    ids["churn"] = log.ids
    # scored: a column stored only as keyed hashes
    log = log_for(minio, bucket, ns, "scored", lr1, redact=frozenset({"x1"}))
    log.write([log.decide("scored-1", iris_rows(10, 1), DAY1), log.decide("scored-2", iris_rows(20, 1), DAY1)], DAY1, "s")  # fmt: skip
    ids["scored"] = log.ids
    # tamper: identical on day 1, one output changed by one ulp on day 3
    log = log_for(minio, bucket, ns, "tamper", rf)
    log.write([log.decide(f"t-{i}", iris_rows(5 * i, 1), DAY1) for i in range(3)], DAY1, "t-1")
    log.write([log.decide("t-bad", iris_rows(77, 1), DAY3, tamper=True), log.decide("t-ok", iris_rows(78, 1), DAY3)], DAY3, "t-3")  # fmt: skip
    ids["tamper"] = log.ids
    # reuse: records of "version 1" made by other bytes: reuse2's (archived as version 2)
    # and unarchived's (archived nowhere): neither may run on version 1's archived copy
    log = log_for(minio, bucket, ns, "reuse", reuse2, version="1")
    log.write([log.decide(f"reuse-b-{i}", iris_rows(9 * i, 1), DAY2) for i in range(3)], DAY2, "b")
    ids["reuse-b"] = log.ids
    log = log_for(minio, bucket, ns, "reuse", unarchived, version="1")
    log.write([log.decide("reuse-c-0", iris_rows(4, 1), DAY2)], DAY2, "c")
    ids["reuse-c"] = log.ids
    # a file far in the past that is not Parquet: only read when no time range prunes it
    junk = b"not parquet"
    mc.put_object(bucket, f"decisions/{ns}/tamper/1/dt=2025-01-01/junk.parquet", io.BytesIO(junk), len(junk))  # fmt: skip
    return Logged(bucket, ns, rf, lr1, lr2, churn, reuse1, reuse2, unarchived, ids)


def cli(minio: MinioServer, lg: Logged, *args: str, cache: Path | None = None) -> Any:
    extra = ["--cache-dir", str(cache)] if cache is not None else []
    return run_cli(minio, lg.bucket, *args, "-n", lg.ns, *extra, timeout=300)


# --------------------------------------------------------------------------- ls and show


def test_ls_lists_and_filters(minio: MinioServer, logged: Logged) -> None:
    out = cli(minio, logged, "decisions", "ls", "iris-rf")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:4] == ["TIME", "VERSION", "REQUEST", "ID"]
    assert len(rows) == 15 and rows[0].split()[:5] == [
        "2026-03-01T09:00:00.000Z",
        "1",
        "rf-a",
        "200",
        "1",
    ]
    assert "predict=[0]" in rows[0]
    assert "input has 3 features" in next(r for r in rows if "rf-err" in r)

    out = cli(
        minio, logged, "decisions", "ls", "iris-rf", "--from", "2026-03-02", "--to", "2026-03-03"
    )
    assert [r.split()[2] for r in out.stdout.splitlines()[1:]] == ["rf-c", "rf-d"]
    out = cli(minio, logged, "decisions", "ls", "iris-rf", "--status", "4xx")
    assert [r.split()[2] for r in out.stdout.splitlines()[1:]] == ["rf-err"]
    out = cli(minio, logged, "decisions", "ls", "iris-lr", "--version", "2", "--json")
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["request_id"] for r in lines] == logged.ids["iris-lr-2"]
    assert lines[0]["sha256"] == logged.lr2.sha256 and lines[0]["object"].startswith(
        f"s3://{logged.bucket}/decisions/"
    )
    out = cli(minio, logged, "decisions", "ls", "iris-rf", "--limit", "2", "--request-id", "rf-b")
    assert [r.split()[2] for r in out.stdout.splitlines()[1:]] == ["rf-b"]
    out = cli(minio, logged, "decisions", "ls", "iris-rf", "--limit", "2")
    assert len(out.stdout.splitlines()) == 3 and "latest 2 of 15" in out.stderr

    # every model in the namespace; a far-off unreadable file is pruned by the time range
    everything = cli(minio, logged, "decisions", "ls", "--limit", "1000")
    assert "skipped" in everything.stderr and "junk.parquet" in everything.stderr
    assert everything.stdout.splitlines()[0].split()[:2] == ["TIME", "MODEL"]
    assert {r.split()[1] for r in everything.stdout.splitlines()[1:]} == {
        "iris-rf",
        "iris-lr",
        "churn",
        "scored",
        "tamper",
        "reuse",
    }
    pruned = cli(
        minio, logged, "decisions", "ls", "tamper", "--from", "2026-03-01", "--to", "2026-03-02"
    )
    assert pruned.returncode == 0 and "junk" not in pruned.stderr
    assert len(pruned.stdout.splitlines()) == 4

    none = cli(minio, logged, "decisions", "ls", "iris-rf", "--from", "2027-01-01")
    assert none.returncode == 0 and "no decision records in" in none.stderr
    bad = cli(minio, logged, "decisions", "ls", "--from", "2026-03-02", "--to", "2026-03-01")
    assert bad.returncode == 2 and "is not before --to" in bad.stderr
    assert cli(minio, logged, "decisions", "ls", "--status", "ok").returncode == 2


def test_show_prints_one_record_in_full(minio: MinioServer, logged: Logged) -> None:
    out = cli(minio, logged, "decisions", "show", "churn-2", "churn")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"Artifact:     sha256 {logged.churn.sha256}" in text
    assert "Rows:         3" in text and "Computed by:  sklearn" in text
    assert "contract" in text and "BYTES" in text and "tenure" in text
    assert (
        f"Object:       s3://{logged.bucket}/decisions/{logged.ns}/churn/1/dt=2026-03-01/churn-1.parquet"
        in text
    )
    assert "predict_proba" in text

    data = json.loads(cli(minio, logged, "decisions", "show", "rf-b", "--json").stdout)
    assert data["rows"] == 3 and data["predict_path"] == "leaf-tables"
    assert data["outputs"]["predict"] == logged.rf.estimator.predict(iris_rows(50, 3)).tolist()
    assert data["inputs"]["x0"] == iris_rows(50, 3)[:, 0].tolist()

    missing = cli(minio, logged, "decisions", "show", "nope", "iris-rf", "--from", "2026-03-01")
    assert missing.returncode == 1
    assert (
        f"request id nope not found in s3://{logged.bucket}/decisions/{logged.ns}/iris-rf/ "
        f"(bucket {logged.bucket}, prefix decisions, from 2026-03-01T00:00:00Z)" in missing.stderr
    )
    gone = run_cli(minio, "no-such-bucket", "decisions", "show", "x", "-n", logged.ns)
    assert gone.returncode == 1 and "bucket no-such-bucket does not exist" in gone.stderr


# --------------------------------------------------------------------------- audit


def test_audit_reproduces_every_decision_bit_for_bit(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    report, page = tmp_path / "audit.json", tmp_path / "audit.html"
    out = cli(minio, logged, "audit", "--model", "iris-rf", "--from", "2026-03-01", "--to", "2026-03-04",
              "--json", str(report), "--html", str(page), cache=tmp_path / "cache")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REPRODUCED: all 14 re-run records are identical, bit for bit" in out.stdout
    assert "errors     1 x HTTP 400" in out.stdout
    data = json.loads(report.read_text())
    assert data["format"] == "ml.lifecycle.io/decision-audit/v1" and data["passed"] is True
    assert data["range"] == {
        "from": "2026-03-01T00:00:00Z",
        "to": "2026-03-04T00:00:00Z",
        "end": "exclusive",
    }
    assert data["decisions"] == f"s3://{logged.bucket}/decisions/{logged.ns}/iris-rf/"
    assert data["ranBy"] and data["ranAt"].endswith("Z")
    (v,) = data["versions"]
    assert (
        v["version"],
        v["sha256"],
        v["records"],
        v["rerun"],
        v["identical"],
        v["mismatched"],
    ) == ("1", logged.rf.sha256, 15, 14, 14, 0)
    assert v["errors"]["reasons"] == [{"reason": "HTTP 400", "count": 1,
                                       "example": "input has 3 features per row: model expects 4"}]  # fmt: skip
    assert v["predictPaths"] == {"leaf-tables": 14}
    assert v["artifact"]["uri"] == f"s3://{logged.bucket}/{logged.ns}/iris-rf/1/model.joblib"
    assert v["libraries"]["recorded"]["pickledWith"]["scikit-learn"] == sklearn.__version__
    assert v["libraries"]["running"]["scikit-learn"] == sklearn.__version__
    assert v["libraries"]["differences"] == []
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "REPRODUCED" in html and logged.rf.sha256 in html

    # two versions of a linear model, and the DataFrame Pipeline with text columns
    out = cli(minio, logged, "audit", "--model", "iris-lr", "--from", "2026-03-01", "--to", "2026-03-03",
              cache=tmp_path / "cache")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REPRODUCED: all 12 re-run records are identical" in out.stdout
    assert logged.lr1.sha256[:12] in out.stdout and logged.lr2.sha256[:12] in out.stdout
    out = cli(minio, logged, "audit", "--model", "churn", "--from", "2026-03-01", "--to", "2026-03-02",
              cache=tmp_path / "cache")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REPRODUCED: all 12 re-run records are identical" in out.stdout


def test_audit_reports_a_changed_output_with_its_request_id(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    clean = cli(minio, logged, "audit", "--model", "tamper", "--from", "2026-03-01", "--to", "2026-03-02",
                cache=tmp_path)  # fmt: skip
    assert clean.returncode == 0, clean.stdout + clean.stderr
    report = tmp_path / "r.json"
    out = cli(minio, logged, "audit", "--model", "tamper", "--from", "2026-03-01", "--to", "2026-03-04",
              "--json", str(report), cache=tmp_path)  # fmt: skip
    assert out.returncode == 1
    assert "MISMATCH   request t-bad" in out.stdout
    assert "NOT REPRODUCED: 1 of 5 re-run records differ" in out.stdout
    (v,) = json.loads(report.read_text())["versions"]
    assert v["identical"] == 4 and v["mismatched"] == 1
    (m,) = v["mismatches"]
    assert m["requestId"] == "t-bad" and list(m["outputs"]) == ["predict_proba"]
    recorded, rerun = (
        m["outputs"]["predict_proba"]["recorded"],
        m["outputs"]["predict_proba"]["rerun"],
    )
    assert recorded != rerun and recorded[0][0] == np.nextafter(rerun[0][0], 2.0)


def test_audit_counts_redacted_records_apart(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    out = cli(minio, logged, "audit", "--model", "scored", "--from", "2026-03-01", "--to", "2026-03-02",
              cache=tmp_path)  # fmt: skip
    assert out.returncode == 1  # nothing could be re-run: the audit proves nothing
    assert "redacted   2 x column(s) x1 stored as keyed hashes" in out.stdout
    assert "no record could be re-run" in out.stdout


def test_a_reused_version_name_never_runs_the_wrong_artifact(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    out = cli(minio, logged, "audit", "--model", "reuse", "--from", "2026-03-02", "--to", "2026-03-03",
              "--json", str(report), cache=tmp_path)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    by_sha = {v["sha256"]: v for v in json.loads(report.read_text())["versions"]}
    found = by_sha[logged.reuse2.sha256]  # the same bytes, archived as version 2
    assert (found["version"], found["rerun"], found["identical"]) == ("1", 3, 3)
    assert found["artifact"]["uri"].endswith(f"/{logged.ns}/reuse/2/model.joblib")
    assert any(
        f"the archived version 1 has sha256 {logged.reuse1.sha256}, not the record's" in n
        for n in found["artifact"]["notes"]
    )
    lost = by_sha[logged.unarchived.sha256]  # archived nowhere, no cluster to ask
    assert lost["rerun"] == 0 and lost["skipped"]["count"] == 1
    (reason,) = lost["skipped"]["reasons"]
    assert f"no artifact with sha256 {logged.unarchived.sha256}" in reason["reason"]
    assert "never run in its place" in reason["reason"]
    assert "1 record could not be re-run" in out.stdout

    exp = cli(minio, logged, "explain", "--request-id", "reuse-c-0", cache=tmp_path)
    assert exp.returncode == 1
    assert (
        f"the archived version 1 has sha256 {logged.reuse1.sha256}, not the record's {logged.unarchived.sha256}"
        in exp.stderr
    )
    assert "never run in its place" in exp.stderr


def test_records_of_one_version_name_run_on_the_archive_of_their_own_bytes(
    minio: MinioServer, tmp_path: Path
) -> None:
    """The MLModel deleted and re-created with version 1 naming other bytes: both are
    archived (the second beside the first), and each record re-runs on its own bytes."""
    bucket, ns = f"reborn-{RUN}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    x, y = load_iris(return_X_y=True)
    first = upload(minio, "reborn", "1", LogisticRegression(C=0.2, max_iter=1000).fit(x, y))
    second = upload(minio, "reborn-2", "1", LogisticRegression(C=0.9, max_iter=1000).fit(x, y))
    archiver = S3Archiver(mc, settings(bucket))
    archiver(model_spec("reborn", ns, first, uid="uid-1"), entry(first), "Deleted", DAY2)
    archiver(model_spec("reborn", ns, second, uid="uid-2"), entry(second), "Deleted", DAY3)
    for t, day, tag in ((first, DAY1, "a"), (second, DAY2, "b")):
        log = log_for(minio, bucket, ns, "reborn", t)
        log.write([log.decide(f"reborn-{tag}-{i}", iris_rows(13 * i, 1 + i % 2), day)
                   for i in range(4)], day, f"reborn-{tag}")  # fmt: skip
    report = tmp_path / "r.json"
    out = run_cli(minio, bucket, "audit", "--model", "reborn", "-n", ns, "--from", "2026-03-01",
                  "--to", "2026-03-03", "--json", str(report), "--cache-dir", str(tmp_path),
                  timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "REPRODUCED: all 8 re-run records are identical" in out.stdout
    by_sha = {v["sha256"]: v for v in json.loads(report.read_text())["versions"]}
    where = {
        first.sha256: f"{ns}/reborn/1/",
        second.sha256: f"{ns}/reborn/1/sha256-{second.sha256}/",
    }
    for sha, prefix in where.items():
        found = by_sha[sha]
        assert (found["version"], found["rerun"], found["identical"]) == ("1", 4, 4)
        assert found["artifact"]["uri"] == f"s3://{bucket}/{prefix}model.joblib"
        assert f"s3://{bucket}/{prefix}manifest.json" in found["artifact"]["source"]
        assert found["artifact"]["notes"] == []


# --------------------------------------------------------------------------- explain


def test_explain_a_random_forest_decision(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    plot = tmp_path / "why.png"
    out = cli(minio, logged, "explain", "--request-id", "rf-b", "--row", "2", "--plot", str(plot),
              cache=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "Request:      rf-b (row 2 of 3)" in text
    assert f"Artifact:     sha256 {logged.rf.sha256}" in text
    assert "Re-run:       identical to the record, bit for bit" in text
    assert "Explainer:    shap.TreeExplainer (tree_path_dependent" in text
    assert "predict_proba of class 1 (the predicted class)" in text
    assert "Additivity:" in text and ": holds" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads(cli(minio, logged, "explain", "--request-id", "rf-b", "--row", "2", "--json",
                          cache=tmp_path).stdout)  # fmt: skip
    assert data["rerun"]["identical"] is True and data["additivity"]["holds"] is True
    assert [c["feature"] for c in data["contributions"]] and len(data["contributions"]) == 4
    proba = logged.rf.estimator.predict_proba(iris_rows(51, 1))[0]
    assert data["explained"]["value"] == proba[1] == max(proba)
    total = data["baseValue"] + sum(c["contribution"] for c in data["contributions"])
    assert abs(total - proba[1]) <= 1e-6
    magnitudes = [abs(c["contribution"]) for c in data["contributions"]]
    assert magnitudes == sorted(magnitudes, reverse=True)


def test_explain_a_pipeline_decision_per_original_column(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    out = cli(minio, logged, "explain", "--request-id", "churn-4", "--model", "churn", "--json",
              cache=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["explainer"].startswith("shap.explainers.Exact")
    assert {c["feature"] for c in data["contributions"]} == {
        "tenure",
        "monthly_charges",
        "total_charges",
        "contract",
        "payment_method",
        "internet_service",
    }
    contract = next(c for c in data["contributions"] if c["feature"] == "contract")
    assert isinstance(contract["value"], str)
    assert (
        data["explained"]["output"] == "predict_proba"
        and "the predicted class" in data["explained"]["description"]
    )
    assert data["additivity"]["holds"] is True and data["additivity"]["difference"] <= 1e-6
    assert data["backgroundRows"] > 1 and "other decisions of version 1" in data["background"]


def test_explain_a_logistic_regression_decision(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    out = cli(minio, logged, "explain", "--request-id", "lr2-3", cache=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Explainer:    shap.LinearExplainer" in out.stdout
    assert "decision_function (logit, before softmax) of class 0" in out.stdout
    assert ": holds" in out.stdout
    assert "Background:   7 rows from 5 other decisions of version 2" in out.stdout


def test_explain_refuses_a_redacted_record_and_says_so_when_the_rerun_differs(
    minio: MinioServer, logged: Logged, tmp_path: Path
) -> None:
    out = cli(minio, logged, "explain", "--request-id", "scored-1", cache=tmp_path)
    assert out.returncode == 1
    assert "column(s) x1 are redacted" in out.stderr and "cannot be re-run" in out.stderr
    out = cli(minio, logged, "explain", "--request-id", "rf-err", cache=tmp_path)
    assert out.returncode == 1 and "failed (HTTP 400" in out.stderr
    out = cli(minio, logged, "explain", "--request-id", "t-bad", cache=tmp_path)
    assert out.returncode == 1
    assert "THE RE-RUN DOES NOT REPRODUCE THE RECORD: predict_proba differ" in out.stderr
    assert "!!! DIFFERS from the record in predict_proba !!!" in out.stdout
    out = cli(minio, logged, "explain", "--request-id", "rf-a", "--row", "2", cache=tmp_path)
    assert out.returncode == 2 and "has 1 row(s)" in out.stderr


# --------------------------------------------------------------------------- a live version


@pytest.fixture(scope="module")
def crd_installed(cluster: LocalCluster) -> LocalCluster:
    from mlmodel_operator.localcluster import REPO_ROOT

    cluster.kubectl("apply", "--server-side", "-f",
                    str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml"))  # fmt: skip
    wait_established(cluster, "mlmodels.ml.lifecycle.io")
    return cluster


def test_a_version_not_archived_yet_runs_from_the_live_spec(
    minio: MinioServer, crd_installed: LocalCluster, tmp_path: Path
) -> None:
    bucket, ns = f"live-{RUN}", f"live-{uuid.uuid4().hex[:6]}"
    minio.client().make_bucket(bucket)
    x, y = load_iris(return_X_y=True)
    t = upload(minio, "live", "3", LogisticRegression(C=1.5, max_iter=1000).fit(x, y))
    log = log_for(minio, bucket, ns, "live", t)
    log.write([log.decide(f"live-{i}", iris_rows(11 * i, 1), DAY1) for i in range(3)], DAY1, "l")
    lg = Logged(bucket, ns, t, t, t, t, t, t, t, {})
    no_cluster = cli(minio, lg, "explain", "--request-id", "live-1", cache=tmp_path)
    assert no_cluster.returncode == 1 and "version 3 is not archived" in no_cluster.stderr

    crd_installed.kubectl("create", "namespace", ns)
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({
        "apiVersion": "ml.lifecycle.io/v1alpha1", "kind": "MLModel",
        "metadata": {"name": "live", "namespace": ns},
        "spec": {"version": "3", "artifact": {"uri": t.uri, "sha256": t.sha256}},
    }))  # fmt: skip
    crd_installed.kubectl("apply", "-f", str(manifest))
    kubeconfig = str(crd_installed.kubeconfig)
    out = cli(
        minio, lg, "explain", "--request-id", "live-1", "--kubeconfig", kubeconfig, cache=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the live MLModel's spec.artifact (version 3)" in out.stdout and t.uri in out.stdout
    assert "Re-run:       identical to the record" in out.stdout and ": holds" in out.stdout
    audit = cli(minio, lg, "audit", "--model", "live", "--from", "2026-03-01", "--to", "2026-03-02",
                "--kubeconfig", kubeconfig, cache=tmp_path)  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "REPRODUCED: all 3 re-run records are identical" in audit.stdout
