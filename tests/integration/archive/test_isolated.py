"""`--isolated`: a version served years ago by an older scikit-learn, re-run with its own.

The past is real: an environment with scikit-learn 1.5.2, numpy 1.26.4, joblib 1.4.2 and
pandas 2.2.3 (built here with venv and pip from the package index, and cached) trains a
LogisticRegression and a DataFrame Pipeline with text columns, and computes the answers
its server gave. They are archived by the S3Archiver of that release (its manifest
records those versions) and the answers are logged in the decision record format. Today's
`mlmodel` (scikit-learn 1.9) refuses to load them in-process, and with ``--isolated``
builds its own environment from the manifest and reproduces every answer bit for bit.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from archive_helpers import SOURCE_BUCKET, Trained, entry, model_spec, run_cli, settings
from sklearn.datasets import load_iris

from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.example_models import CHURN_NUMERIC, CHURN_TEXT, churn_frame
from mlmodel_operator.isolated import (
    Isolation,
    IsolationError,
    Requirements,
    ensure_environment,
)
from mlmodel_operator.localcluster import MinioServer
from mlmodel_serving.decisions import Decision, ModelIdentity, encode_batch, partition_key
from mlmodel_serving.tabular import NUMBER, TEXT, Column, Columns

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
DAY = dt.datetime(2026, 2, 10, 9, 0, tzinfo=dt.UTC)
PAST = {
    "scikit-learn": "1.5.2",
    "numpy": "1.26.4",
    "joblib": "1.4.2",
    "pandas": "2.2.3",
    "scipy": "1.13.1",
}
# The serving release of that time, as its operator recorded it in manifests.
PAST_RELEASE = {"mlmodel-lifecycle": "0.9.0", "python": platform.python_version(), **PAST}
TRAIN = Path(__file__).with_name("old_release_train.py")


def cache_root() -> Path:
    return Path(os.environ.get("MLMODEL_CACHE") or Path.home() / ".cache" / "mlmodel-lifecycle")


@pytest.fixture(scope="session")
def past_python() -> Path:
    """A plain venv with the past release's libraries (built once, kept in the tool cache):
    it trains and answers as that release did, independently of the code under test."""
    root = cache_root() / "test-envs"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"sklearn-{PAST['scikit-learn']}-py{platform.python_version()}"
    with open(root / f"{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = path / "complete"
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True,
                           timeout=300)  # fmt: skip
            subprocess.run(
                [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input",
                 "--only-binary=:all:", *(f"{k}=={v}" for k, v in PAST.items())],
                check=True, timeout=1200,
            )  # fmt: skip
            done.touch()
    return path / "bin" / "python"


def iris_batches() -> dict[str, list[list[float]]]:
    x, _ = load_iris(return_X_y=True)
    return {f"iris-{i}": x[11 * i : 11 * i + 1 + i % 3].tolist() for i in range(8)}


def churn_batches() -> tuple[dict[str, dict[str, list[Any]]], Any]:
    frame, _ = churn_frame(80, seed=7)
    batches = {}
    for i in range(8):
        part = frame.iloc[5 * i : 5 * i + 1 + i % 2]
        batches[f"churn-{i}"] = {
            name: [None if v != v else v for v in part[name].tolist()] for name in frame.columns
        }
    return batches, frame


def decode(data: dict[str, Any]) -> np.ndarray[Any, Any]:
    if "b64" in data:
        raw = base64.b64decode(data["b64"])
        return np.frombuffer(raw, dtype=data["dtype"]).reshape(data["shape"]).copy()
    return np.array(data["list"], dtype=object if data["dtype"].startswith("|O") else None)


def as_columns(columns: dict[str, list[Any]]) -> Columns:
    arrays = []
    for name, values in columns.items():
        if name in CHURN_TEXT:
            a = np.empty(len(values), dtype=object)
            for i, v in enumerate(values):
                a[i] = np.nan if v is None else v
            arrays.append(a)
        else:
            arrays.append(np.array([np.nan if v is None else v for v in values], dtype=np.float64))
    return Columns(tuple(columns), tuple(arrays))


@dataclass(frozen=True)
class Past:
    bucket: str
    ns: str
    iris: Trained
    churn: Trained
    outputs: dict[str, dict[str, dict[str, np.ndarray[Any, Any]]]]
    iris_inputs: dict[str, list[list[float]]]


@pytest.fixture(scope="module")
def past(minio: MinioServer, past_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Past:
    work = tmp_path_factory.mktemp("past")
    x, y = load_iris(return_X_y=True)
    churn, frame = churn_batches()
    labels_frame, labels = churn_frame(400, seed=3)
    training = {
        n: [None if v != v else v for v in labels_frame[n].tolist()] for n in labels_frame.columns
    }
    spec = {
        "iris": {"x": x.tolist(), "y": y.tolist(), "batches": iris_batches()},
        "churn": {
            "columns": training,
            "labels": labels.tolist(),
            "text": list(CHURN_TEXT),
            "numeric": list(CHURN_NUMERIC),
            "batches": churn,
        },
    }
    (work / "spec.json").write_text(json.dumps(spec))
    subprocess.run([str(past_python), "-I", str(TRAIN), str(work / "spec.json"), str(work)],
                   check=True, timeout=600)  # fmt: skip
    answers = json.loads((work / "outputs.json").read_text())
    assert answers["sklearn"] == PAST["scikit-learn"] and answers["numpy"] == PAST["numpy"]

    bucket, ns = f"iso-{RUN}", f"ns-{uuid.uuid4().hex[:6]}"
    mc = minio.client()
    mc.make_bucket(bucket)
    if not mc.bucket_exists(SOURCE_BUCKET):
        mc.make_bucket(SOURCE_BUCKET)
    archiver = S3Archiver(mc, settings(bucket))
    archiver.release = dict(PAST_RELEASE)  # the release of that time wrote the manifests
    trained = {}
    for name in ("iris", "churn"):
        data = (work / f"{name}.joblib").read_bytes()
        key = f"isolated-{RUN}/{name}/1/model.joblib"
        mc.put_object(SOURCE_BUCKET, key, io.BytesIO(data), len(data))
        t = Trained("1", f"s3://{SOURCE_BUCKET}/{key}", hashlib.sha256(data).hexdigest(),
                    len(data), None)  # fmt: skip
        archiver(model_spec(f"old-{name}", ns, t), entry(t), "Deleted", DAY + dt.timedelta(days=30))
        trained[name] = t

    outputs: dict[str, dict[str, dict[str, np.ndarray[Any, Any]]]] = {}
    for name, inputs in (("iris", spec["iris"]["batches"]), ("churn", churn)):
        if name == "iris":
            columns = tuple(Column(f"x{i}", NUMBER) for i in range(4))
        else:
            columns = tuple(Column(n, TEXT if n in CHURN_TEXT else NUMBER) for n in frame.columns)
        ident = ModelIdentity(ns, f"old-{name}", "1", trained[name].sha256, columns, frozenset(),
                              "sklearn")  # fmt: skip
        decisions = []
        outputs[name] = {}
        for i, (rid, batch) in enumerate(inputs.items()):
            model_input: Any = (
                np.asarray(batch, dtype=np.float64) if name == "iris" else as_columns(batch)
            )
            out = {k: decode(v) for k, v in answers["outputs"][name][rid].items()}
            outputs[name][rid] = out
            at = DAY + dt.timedelta(minutes=i)
            decisions.append(Decision(rid, int(at.timestamp()) * 10**9, "v2", 200, 0.002,
                                      model_input, out))  # fmt: skip
        data = encode_batch(decisions, ident, None)
        key = partition_key("decisions", ident, DAY, f"{name}.parquet")
        mc.put_object(bucket, key, io.BytesIO(data), len(data))
    outputs["iris-all"] = {
        "all": {k: decode(v) for k, v in answers["outputs"]["iris-all"]["all"].items()}
    }
    return Past(bucket, ns, trained["iris"], trained["churn"], outputs, spec["iris"]["batches"])


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the CLI builds its environments: empty, so the first command really builds."""
    return tmp_path_factory.mktemp("envs")


def cli(minio: MinioServer, past: Past, *args: str, cwd_cache: Path) -> Any:
    return run_cli(minio, past.bucket, *args, "-n", past.ns, "--cache-dir", str(cwd_cache),
                   timeout=1500)  # fmt: skip


def test_audit_in_an_isolated_environment_reproduces_the_past_bit_for_bit(
    minio: MinioServer, past: Past, env_dir: Path, tmp_path: Path
) -> None:
    here = cli(minio, past, "audit", "--model", "old-churn", "--from", "2026-02-10",
               "--to", "2026-02-11", cwd_cache=tmp_path)  # fmt: skip
    assert here.returncode == 1, here.stdout + here.stderr
    assert "scikit-learn 1.5.2" in here.stdout and "--isolated" in here.stdout

    report = tmp_path / "audit.json"
    for model in ("old-churn", "old-iris"):
        out = cli(minio, past, "audit", "--model", model, "--from", "2026-02-10", "--to",
                  "2026-02-11", "--isolated", "--env-dir", str(env_dir), "--json", str(report),
                  cwd_cache=tmp_path)  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "REPRODUCED: all 8 re-run records are identical, bit for bit" in out.stdout
        data = json.loads(report.read_text())
        (version,) = data["versions"]
        isolated = version["libraries"]["isolated"]
        assert isolated["installed"] == {k: PAST[k] for k in isolated["installed"]}
        assert isolated["requirements"] == sorted(f"{k}=={v}" for k, v in PAST.items())
        assert version["libraries"]["differences"] == []
    assert "building an isolated environment" not in out.stderr  # the second one reuses it
    (built,) = [p for p in env_dir.iterdir() if p.is_dir()]
    assert json.loads((built / "mlmodel-env.json").read_text())["installed"]["scikit-learn"] == (
        "1.5.2"
    )


def test_explain_in_an_isolated_environment_adds_up(
    minio: MinioServer, past: Past, env_dir: Path, tmp_path: Path
) -> None:
    out = cli(minio, past, "explain", "--request-id", "churn-3", "--model", "old-churn",
              "--row", "2", "--json", "--isolated", "--env-dir", str(env_dir),
              cwd_cache=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    data = json.loads(out.stdout)
    assert data["rerun"]["identical"] is True and data["additivity"]["holds"] is True
    assert sorted(c["feature"] for c in data["contributions"]) == sorted(
        [*CHURN_NUMERIC, *CHURN_TEXT]
    )
    proba = past.outputs["churn"]["churn-3"]["predict_proba"][1]
    assert data["explained"]["value"] == max(proba)
    assert data["libraries"]["isolated"]["installed"]["scikit-learn"] == "1.5.2"
    assert any("isolated environment" in n for n in data["notes"])


def test_replay_in_an_isolated_environment(
    minio: MinioServer, past: Past, env_dir: Path, tmp_path: Path
) -> None:
    rows = [row for batch in past.iris_inputs.values() for row in batch]
    inputs = tmp_path / "rows.csv"
    inputs.write_text("\n".join(",".join(repr(v) for v in row) for row in rows) + "\n")
    here = cli(minio, past, "replay", "old-iris", "--version", "1", "--input", str(inputs),
               cwd_cache=tmp_path)  # fmt: skip
    assert here.returncode == 1 and "--isolated" in here.stderr

    out = cli(minio, past, "replay", "old-iris", "--version", "1", "--input", str(inputs),
              "--proba", "--isolated", "--env-dir", str(env_dir), cwd_cache=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "scikit-learn 1.5.2" in out.stderr
    got = [json.loads(line) for line in out.stdout.splitlines()]
    # One batch of all rows: the past's answers for that batch (a server that saw the rows
    # in other batches may differ in the last bits: BLAS picks kernels by shape).
    answer = past.outputs["iris-all"]["all"]
    expected = list(zip(answer["predict"].tolist(), answer["predict_proba"].tolist(), strict=True))
    assert [(g["predict"], g["predict_proba"]) for g in got] == expected

    serve = cli(minio, past, "replay", "old-iris", "--version", "1", "--serve", "--isolated",
                cwd_cache=tmp_path)  # fmt: skip
    assert serve.returncode == 2 and "--serve" in serve.stderr
    stray = cli(minio, past, "replay", "old-iris", "--version", "1", "--input", str(inputs),
                "--env-dir", str(env_dir), cwd_cache=tmp_path)  # fmt: skip
    assert stray.returncode == 2 and "--env-dir goes with --isolated" in stray.stderr


def test_a_version_pip_cannot_install_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    requirements = Requirements((("scikit-learn", "0.0.999"),), ("numpy",), "3.11.7", "test")
    with pytest.raises(IsolationError) as caught:
        ensure_environment(requirements, Isolation(tmp_path), lambda _: None)
    message = str(caught.value)
    assert "pip install scikit-learn==0.0.999 numpy failed" in message
    assert "--python" in message
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
