"""Issue 5 on the real control plane with the real operator and a real MinIO: retirement
and deletion archive, the ledger, and the CLI over what the operator wrote."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from mlm_helpers import Artifact, Models

from mlmodel_operator.archive import S3Archiver
from mlmodel_operator.example_models import churn_data
from mlmodel_operator.localcluster import LocalCluster, MinioServer, OperatorRunner, wait_until
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model
from mlmodel_serving.artifacts import S3Config, fetch_verified, load_verified_joblib

pytestmark = pytest.mark.integration

BUCKET = "model-archive"  # the operator's default archive bucket
ARCHIVE_TIMEOUT = 90.0


def objects(minio: MinioServer, prefix: str) -> list[str]:
    return sorted(
        o.object_name for o in minio.client().list_objects(BUCKET, prefix=prefix, recursive=True)
    )


def read_json(minio: MinioServer, key: str) -> dict[str, Any]:
    resp = minio.client().get_object(BUCKET, key)
    try:
        return dict(json.loads(resp.read()))
    finally:
        resp.close()
        resp.release_conn()


def stored_sha256(minio: MinioServer, key: str) -> str:
    resp = minio.client().get_object(BUCKET, key)
    try:
        return hashlib.sha256(resp.read()).hexdigest()
    finally:
        resp.close()
        resp.release_conn()


def spec_for(art: Artifact, version: str) -> dict[str, Any]:
    return {"version": version, "artifact": {"uri": art.uri, "sha256": art.sha256}}


def wait_retired(mlm: Models, name: str, version: str, timeout: float = ARCHIVE_TIMEOUT) -> None:
    def retired() -> bool:
        history = {h["version"]: h for h in mlm.status(name).get("history", [])}
        entry = history.get(version, {})
        return bool(entry.get("archive")) and f"{name}-v{version}" not in mlm.deployments(name)

    try:
        wait_until(f"{name} v{version} archived and retired", retired, timeout, interval=0.25)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; status is {mlm.status(name)}") from None


def mlmodel(minio: MinioServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")},
        "MLMODEL_S3_ENDPOINT": minio.endpoint,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
    }
    exe = Path(sys.executable).parent / "mlmodel"
    return subprocess.run(
        [str(exe), *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def served_predictions(minio: MinioServer, art: Artifact, rows: Any, cache: Path) -> list[Any]:
    """What the serving pod would answer: the source artifact, verified, loaded, predicted."""
    cfg = S3Config(minio.endpoint, minio.access_key, minio.secret_key)
    path = fetch_verified(art.uri, art.sha256, cache, cfg)
    return list(load_verified_joblib(path, art.sha256).predict(rows).tolist())


def test_v1_v2_v3_then_delete_archives_every_version_and_the_cli_tells_it(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer, tmp_path: Path
) -> None:
    v1, v2, v3 = models("1"), models("2"), models("3")
    mlm.create(mlm.body("churn", "1", v1))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", spec_for(v2, "2"))
    wait_retired(mlm, "churn", "1")
    mlm.wait_phase("churn", "Serving", version="2")
    during_v2 = dt.datetime.now(dt.UTC)
    mlm.patch_spec("churn", spec_for(v3, "3"))
    wait_retired(mlm, "churn", "2")
    st = mlm.wait_phase("churn", "Serving", version="3")

    history = {h["version"]: h for h in st["history"]}
    prefix = f"{mlm.ns}/churn/"
    for version, art in (("1", v1), ("2", v2)):
        assert history[version]["archive"] == f"s3://{BUCKET}/{prefix}{version}/"
        key = f"{prefix}{version}/model.joblib"
        assert stored_sha256(minio, key) == art.sha256
        assert minio.client().stat_object(BUCKET, key).size == art.size
        m = read_json(minio, f"{prefix}{version}/manifest.json")
        assert (m["model"], m["namespace"], m["version"]) == ("churn", mlm.ns, version)
        assert (m["sha256"], m["size"], m["sourceUri"]) == (art.sha256, art.size, art.uri)
        assert m["reason"] == "SpecChanged"
        assert m["deployedAt"] == history[version]["deployedAt"]
        assert m["spec"]["artifact"]["uri"] == art.uri and m["spec"]["version"] == version
        assert m["servingImage"] == "registry.local/mlmodel-serving:test"
        assert m["libraries"]["trainedWith"]["scikit-learn"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Archived"]["status"] == "True"

    mlm.delete("churn")

    mlm.wait_gone("churn", ARCHIVE_TIMEOUT)
    m3 = read_json(minio, f"{prefix}3/manifest.json")
    assert (m3["version"], m3["reason"], m3["sha256"]) == ("3", "Deleted", v3.sha256)
    assert stored_sha256(minio, f"{prefix}3/model.joblib") == v3.sha256

    # the ledger: one record per transition, in time order
    ledger_keys = [k for k in objects(minio, f"{prefix}ledger/")]
    kinds = [(k.rsplit("/", 1)[1].split("-")[2], k.rsplit("-v", 1)[1][:-5]) for k in ledger_keys]
    for kind, version in [("Deployed", "1"), ("TrafficSwitched", "1"), ("Archived", "1"),
                          ("Retired", "1"), ("Archived", "2"), ("Archived", "3"),
                          ("Deleted", "3")]:  # fmt: skip
        assert kinds.count((kind, version)) == 1, (kind, version, kinds)
    assert kinds.index(("TrafficSwitched", "2")) < kinds.index(("Archived", "1"))

    # the CLI over what the operator wrote
    ls = mlmodel(minio, "archive", "ls", "churn", "-n", mlm.ns)
    assert ls.returncode == 0, ls.stderr
    assert [r.split()[1] for r in ls.stdout.splitlines()[1:]] == ["1", "2", "3"]
    at = mlmodel(minio, "history", "churn", "-n", mlm.ns, "--at", during_v2.isoformat())
    assert at.returncode == 0, at.stderr
    assert "served version 2" in at.stdout

    rows = churn_data()[0][::40]  # the features the example models were trained on
    inputs = tmp_path / "rows.csv"
    inputs.write_text("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    for version, art in (("1", v1), ("2", v2), ("3", v3)):
        out = tmp_path / f"out-{version}.jsonl"
        rep = mlmodel(minio, "replay", "churn", "-n", mlm.ns, "--version", version,
                      "--input", str(inputs), "--output", str(out),
                      "--cache-dir", str(tmp_path / "replay-cache"))  # fmt: skip
        assert rep.returncode == 0, rep.stderr
        replayed = [json.loads(line)["predict"] for line in out.read_text().splitlines()]
        assert replayed == served_predictions(minio, art, rows, tmp_path / "served-cache")


def test_minio_down_during_retirement_keeps_the_old_deployment_then_archives_once(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, retirement={"drainSeconds": 10}))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", spec_for(v2, "2"))
    mlm.wait_phase("churn", "Retiring", version="2", timeout=60)  # v1 drains for 10 s:
    minio.stop()  # stopped before the drain ends and v1 is archived
    try:

        def archive_failed() -> bool:
            cond = mlm.condition("churn", "Archived")
            return cond.get("status") == "False"

        wait_until("Archived=False", archive_failed, 60, interval=0.25)
        cond = mlm.condition("churn", "Archived")
        assert "not archived" in cond["message"] and "Deployment is kept" in cond["message"]
        assert "churn-v1" in mlm.deployments("churn")  # nothing deleted first
        mlm.wait_events("churn", "ArchiveFailed")
    finally:
        minio.start()
    wait_retired(mlm, "churn", "1")
    assert mlm.condition("churn", "Archived")["status"] == "True"
    prefix = f"{mlm.ns}/churn/"
    assert [k for k in objects(minio, prefix) if "/ledger/" not in k] == [
        f"{prefix}1/manifest.json", f"{prefix}1/model.joblib",
    ]  # fmt: skip
    archived_records = [k for k in objects(minio, f"{prefix}ledger/") if "-Archived-" in k]
    assert len(archived_records) == 1
    assert stored_sha256(minio, f"{prefix}1/model.joblib") == v1.sha256


def test_operator_killed_between_copy_and_delete_converges(
    mlm: Models,
    models: Callable[[str], Artifact],
    minio: MinioServer,
    operator: OperatorRunner,
) -> None:
    """The state a kill between the copy and the Deployment's deletion leaves behind (the
    artifact copied, no manifest, the old Deployment still there) is made exactly, with
    the operator down, by the same archiver; the restarted operator must finish it."""
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1))
    st = mlm.wait_phase("churn", "Serving", version="1")
    operator.kill()
    try:
        body = mlm.patch_spec("churn", spec_for(v2, "2"))
        entry = HistoryEntry.from_status(st["history"][0])
        archiver = S3Archiver(
            minio.client(), Settings(serving_image="registry.local/mlmodel-serving:test")
        )
        archiver(parse_model(body), entry, "SpecChanged", dt.datetime.now(dt.UTC))
        prefix = f"{mlm.ns}/churn/1/"
        minio.client().remove_object(BUCKET, f"{prefix}manifest.json")
        copied = minio.client().stat_object(BUCKET, f"{prefix}model.joblib").last_modified
        assert "churn-v1" in mlm.deployments("churn")
    finally:
        operator.start()
    wait_retired(mlm, "churn", "1")
    mlm.wait_phase("churn", "Serving", version="2")
    assert objects(minio, prefix) == [f"{prefix}manifest.json", f"{prefix}model.joblib"]
    assert minio.client().stat_object(BUCKET, f"{prefix}model.joblib").last_modified == copied
    assert read_json(minio, f"{prefix}manifest.json")["sha256"] == v1.sha256


def test_rollback_serves_the_archived_copy_through_a_normal_rollout(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer, cluster: LocalCluster
) -> None:
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", spec_for(v2, "2"))
    wait_retired(mlm, "churn", "1")
    mlm.wait_phase("churn", "Serving", version="2")

    printed = mlmodel(minio, "rollback", "churn", "-n", mlm.ns, "--to", "1", "--print")
    assert printed.returncode == 0, printed.stderr
    archived_uri = f"s3://{BUCKET}/{mlm.ns}/churn/1/model.joblib"
    assert archived_uri in printed.stdout
    assert mlm.get("churn")["spec"]["version"] == "2"  # --print changes nothing

    done = mlmodel(minio, "rollback", "churn", "-n", mlm.ns, "--to", "1",
                   "--kubeconfig", str(cluster.kubeconfig))  # fmt: skip
    assert done.returncode == 0, done.stderr
    artifact = mlm.get("churn")["spec"]["artifact"]
    assert (artifact["uri"], artifact["sha256"]) == (archived_uri, v1.sha256)
    wait_retired(mlm, "churn", "2")
    st = mlm.wait_phase("churn", "Serving", version="1")
    assert mlm.condition("churn", "ArtifactVerified")["status"] == "True"
    assert set(mlm.deployments("churn")) == {"churn-v1"}
    assert [h["version"] for h in st["history"]][-1] == "1"
    missing = mlmodel(minio, "rollback", "churn", "-n", mlm.ns, "--to", "7", "--print")
    assert missing.returncode == 1 and "archived versions: 1, 2" in missing.stderr


def test_deleting_while_minio_is_down_waits_for_the_archive(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer
) -> None:
    v1 = models("1")
    mlm.create(mlm.body("churn", "1", v1))
    mlm.wait_phase("churn", "Serving", version="1")
    minio.stop()
    try:
        mlm.delete("churn")

        def refused() -> bool:
            return any(
                r == "ArchiveFailed" and "deletion waits for the archive" in m
                for r, m in mlm.events("churn")
            )

        wait_until("ArchiveFailed on delete", refused, 60, interval=0.25)
        assert mlm.get("churn")["metadata"]["deletionTimestamp"]  # the finalizer holds it
    finally:
        minio.start()

    mlm.wait_gone("churn", ARCHIVE_TIMEOUT)
    m = read_json(minio, f"{mlm.ns}/churn/1/manifest.json")
    assert (m["reason"], m["sha256"]) == ("Deleted", v1.sha256)
    assert stored_sha256(minio, f"{mlm.ns}/churn/1/model.joblib") == v1.sha256


def peak_rss(operator: OperatorRunner) -> int:
    """The operator process's peak resident memory so far (VmHWM), in bytes."""
    assert operator.process is not None and operator.process.popen is not None
    status = Path(f"/proc/{operator.process.popen.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_a_decompression_bomb_retires_with_the_refused_scan_in_its_condition(
    mlm: Models,
    models: Callable[[str], Artifact],
    minio: MinioServer,
    operator: OperatorRunner,
    tmp_path: Path,
) -> None:
    """The security review's artifact (300 MB of zeros in ~300 KB of zlib) served as v1:
    its retirement archives it, says the scan was refused and why, and the operator's
    memory hardly moves (+573 MiB and 69 s of CPU per attempt before the scan had bounds)."""
    v2 = models("2")  # (makes the models bucket)
    path = tmp_path / "bomb.joblib"
    joblib.dump(np.zeros(300 * 10**6 // 8), path, compress=("zlib", 9))
    key = f"{mlm.ns}/bomb/1/model.joblib"
    minio.client().fput_object("models", key, str(path))
    bomb = Artifact(
        f"s3://models/{key}", hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
    )
    mlm.create(mlm.body("churn", "1", bomb))
    mlm.wait_phase("churn", "Serving", version="1")
    before = peak_rss(operator)

    mlm.patch_spec("churn", spec_for(v2, "2"))
    wait_retired(mlm, "churn", "1")

    cond = mlm.condition("churn", "Archived")
    assert cond["status"] == "True", cond
    assert "the static scan was refused" in cond["message"]
    assert "past the limit of 200x" in cond["message"], cond["message"]
    events = mlm.wait_events("churn", "ArtifactScanRefused")
    warnings = [m for r, m in events if r == "ArtifactScanRefused"]
    assert warnings and "past the limit of 200x" in warnings[0]
    trained = read_json(minio, f"{mlm.ns}/churn/1/manifest.json")["libraries"]["trainedWith"]
    assert trained["complete"] is False and "limit" in trained["note"]
    assert stored_sha256(minio, f"{mlm.ns}/churn/1/model.joblib") == bomb.sha256
    assert peak_rss(operator) - before < 64 * 2**20


def test_archive_attempts_back_off_while_minio_is_down(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer
) -> None:
    """While the archive fails, attempts come 10 s, then 20 s apart (less up to a fifth,
    plus up to one reconcile interval), not at every reconcile or every 10 s."""
    v1, v2 = models("1"), models("2")
    mlm.create(mlm.body("churn", "1", v1, retirement={"drainSeconds": 5}))
    mlm.wait_phase("churn", "Serving", version="1")
    mlm.patch_spec("churn", spec_for(v2, "2"))
    mlm.wait_phase("churn", "Retiring", version="2", timeout=60)
    seen_at: list[float] = []  # when the test saw each ArchiveFailed Event appear

    def three_failures() -> bool:
        count = sum(1 for r, _ in mlm.events("churn") if r == "ArchiveFailed")
        seen_at.extend([time.monotonic()] * (count - len(seen_at)))
        return count >= 3

    minio.stop()
    try:
        wait_until("three ArchiveFailed", three_failures, 90, interval=0.25)
        cond = mlm.condition("churn", "Archived")
    finally:
        minio.start()
    first_gap, second_gap = seen_at[1] - seen_at[0], seen_at[2] - seen_at[1]
    assert first_gap >= 7, seen_at  # 10 s less a fifth, less the polling's 0.25 s
    assert second_gap >= 15, seen_at  # 20 s less a fifth: it doubled
    assert cond["status"] == "False" and "Deployment is kept" in cond["message"]
    assert "attempt 3 failed" in cond["message"] and "next attempt at" in cond["message"]
    wait_retired(mlm, "churn", "1")  # the next attempt after MinIO is back archives it
    assert mlm.condition("churn", "Archived")["status"] == "True"


def served_proba(minio: MinioServer, art: Artifact, rows: Any, cache: Path) -> Any:
    cfg = S3Config(minio.endpoint, minio.access_key, minio.secret_key)
    path = fetch_verified(art.uri, art.sha256, cache, cfg)
    return load_verified_joblib(path, art.sha256).predict_proba(rows)


def test_a_version_reused_after_delete_and_recreate_is_archived_beside_the_first(
    mlm: Models, models: Callable[[str], Artifact], minio: MinioServer, tmp_path: Path
) -> None:
    """The security review's finding: version 1 deleted, re-created with other bytes and
    retired. Before, its archive conflicted with the first one's and was retried for ever
    (the old Deployment kept); now both archives exist and verify, and replaying a time
    runs the bytes that served then."""
    first, second, after = models("1"), models("2"), models("3")
    mlm.create(mlm.body("churn", "1", first))
    mlm.wait_phase("churn", "Serving", version="1")
    during_first = dt.datetime.now(dt.UTC)
    mlm.delete("churn")
    mlm.wait_gone("churn", ARCHIVE_TIMEOUT)

    mlm.create(mlm.body("churn", "1", second))  # the same version name, other bytes
    mlm.wait_phase("churn", "Serving", version="1")
    during_second = dt.datetime.now(dt.UTC)
    mlm.patch_spec("churn", spec_for(after, "3"))
    wait_retired(mlm, "churn", "1")
    st = mlm.wait_phase("churn", "Serving", version="3")

    prefix, beside = f"{mlm.ns}/churn/1/", f"{mlm.ns}/churn/1/sha256-{second.sha256}/"
    (entry,) = [h for h in st["history"] if h["version"] == "1"]
    assert entry["archive"] == f"s3://{BUCKET}/{beside}"
    assert mlm.condition("churn", "Archived")["status"] == "True"
    assert "ArchiveFailed" not in [r for r, _ in mlm.events("churn")]
    assert [k for k in objects(minio, f"{mlm.ns}/churn/") if "/ledger/" not in k] == [
        f"{prefix}manifest.json", f"{prefix}model.joblib",
        f"{beside}manifest.json", f"{beside}model.joblib",
    ]  # fmt: skip
    for where, art, reason in ((prefix, first, "Deleted"), (beside, second, "SpecChanged")):
        assert stored_sha256(minio, f"{where}model.joblib") == art.sha256
        m = read_json(minio, f"{where}manifest.json")
        assert (m["version"], m["sha256"], m["reason"]) == ("1", art.sha256, reason)

    rows = churn_data()[0][::40]
    inputs = tmp_path / "rows.csv"
    inputs.write_text("\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    proba = {
        art.sha256: served_proba(minio, art, rows, tmp_path / "served") for art in (first, second)
    }
    assert not np.array_equal(proba[first.sha256], proba[second.sha256])
    for at, art in ((during_first, first), (during_second, second)):
        rep = mlmodel(minio, "replay", "churn", "-n", mlm.ns, "--at", at.isoformat(),
                      "--input", str(inputs), "--proba",
                      "--cache-dir", str(tmp_path / "replay"))  # fmt: skip
        assert rep.returncode == 0, rep.stderr
        got = np.array([json.loads(line)["predict_proba"] for line in rep.stdout.splitlines()])
        assert np.array_equal(got, proba[art.sha256])
    ambiguous = mlmodel(minio, "replay", "churn", "-n", mlm.ns, "--version", "1",
                        "--input", str(inputs))  # fmt: skip
    assert ambiguous.returncode == 1
    assert first.sha256 in ambiguous.stderr and second.sha256 in ambiguous.stderr
