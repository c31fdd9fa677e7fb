"""The operator dies at every step of a rollout, and nothing is lost (issue 16, "Faults").

``MLMODEL_FAILPOINT`` makes the operator ``os._exit`` at a named point (after the copy,
after the verify, before the delete, after the switch, ...; mlmodel_operator.failpoints).
The walk arms each point in turn, rolls three models to a new version, sees the operator
die there, starts it again unarmed, and checks what a crash must never cost: every
retired version archived and verified, no Deployment left behind, no model stuck, and a
ledger with each transition recorded exactly once, in order. The soak does the same with
SIGKILLs at seeded random instants over 30 version changes.

The operator runs on a control plane of its own: the session's cluster has an operator
watching every namespace, which would handle these MLModels too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mlm_helpers import Artifact, Models, models_namespace

from mlmodel_operator import failpoints, ledger
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    LocalCluster,
    MinioServer,
    OperatorRunner,
    wait_until,
)
from mlmodel_operator.realstack import wait_established

pytestmark = pytest.mark.integration

BUCKET = "model-archive"  # the operator's default archive bucket
NAMES = ("alpha", "beta", "gamma")
CONVERGE_TIMEOUT = 120.0
EXIT_TIMEOUT = 90.0
SOAK_ROUNDS = 10  # x 3 models: 30 version changes
SOAK_SEED = int(os.environ.get("MLMODEL_SOAK_SEED", "1616"))
# The kinds a served and then retired version has in the ledger, in lifecycle order.
LIFE = (ledger.DEPLOYED, ledger.SWITCHED, ledger.RETIRING, ledger.ARCHIVED, ledger.RETIRED)


@pytest.fixture(scope="module")
def fp_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster.up(tmp_path_factory.mktemp("fp-cluster")) as c:
        crd = REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml"
        c.kubectl("apply", "--server-side", "-f", str(crd))
        wait_established(c, "mlmodels.ml.lifecycle.io")
        yield c


@pytest.fixture()
def fp_models(fp_cluster: LocalCluster, minio: MinioServer) -> Iterator[Models]:
    with models_namespace(fp_cluster.kubeconfig, minio, "fp") as mlm:
        yield mlm


@pytest.fixture()
def operators(
    fp_cluster: LocalCluster, minio: MinioServer, tmp_path: Path
) -> Iterator[Callable[[str | None], OperatorRunner]]:
    """Starts operator processes (armed with a failpoint, or not); stops every one."""
    made: list[OperatorRunner] = []

    def start(point: str | None) -> OperatorRunner:
        env = {
            "MLMODEL_RECONCILE_INTERVAL": "5",
            "MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:test",
        }
        if point:
            env[failpoints.ENV] = point
        runner = OperatorRunner(
            fp_cluster, minio, tmp_path / f"op-{len(made)}", env=env, args=["--log-format=json"]
        )
        made.append(runner)
        return runner.start()

    try:
        yield start
    finally:
        for runner in made:
            runner.stop()


# ------------------------------------------------------------------ what must hold


def roll(mlm: Models, version: str, art: Artifact) -> None:
    for name in NAMES:
        mlm.patch_spec(
            name, {"version": version, "artifact": {"uri": art.uri, "sha256": art.sha256}}
        )


def converged(mlm: Models, version: str) -> bool:
    """Every model serves ``version`` alone, its status written for its generation."""
    for name in NAMES:
        obj = mlm.get(name)
        st = obj.get("status") or {}
        if (
            st.get("phase") != "Serving"
            or st.get("activeVersion") != version
            or st.get("observedGeneration") != obj["metadata"]["generation"]
            or set(mlm.deployments(name)) != {f"{name}-v{version}"}
            or any(not h.get("retiredAt") for h in st.get("history", [])[:-1])
        ):
            return False
    return True


def wait_converged(mlm: Models, version: str, op: OperatorRunner) -> None:
    try:
        wait_until(
            f"every model serving {version}", lambda: converged(mlm, version), CONVERGE_TIMEOUT
        )
    except TimeoutError:
        states = {n: mlm.status(n) for n in NAMES}
        raise AssertionError(f"not converged: {states}\n{op.log()[-3000:]}") from None


def ledger_kinds(minio: MinioServer, ns: str, name: str) -> list[tuple[str, str]]:
    """(kind, version) of the model's ledger records, in the ledger's own order (keys)."""
    mc = minio.client()
    keys = sorted(
        o.object_name
        for o in mc.list_objects(BUCKET, prefix=ledger.ledger_prefix(ns, name), recursive=True)
    )
    out = []
    for key in keys:
        parsed = ledger.parse_key(key)
        assert parsed is not None, key
        out.append((parsed[1], parsed[2]))
    return out


def read(minio: MinioServer, key: str) -> bytes:
    resp = minio.client().get_object(BUCKET, key)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def check_nothing_lost(
    mlm: Models, minio: MinioServer, served: list[str], arts: dict[str, Artifact]
) -> None:
    """After a converged rollout to ``served[-1]``, with ``served`` every version each
    model went through, in order."""
    for name in NAMES:
        history = mlm.status(name)["history"]
        assert [h["version"] for h in history] == served, (name, history)
        for entry in history[:-1]:  # every retired version: archived and verified
            version = entry["version"]
            assert entry["reason"] == "SpecChanged" and entry["archive"], (name, entry)
            folder = f"{mlm.ns}/{name}/{version}/"
            assert entry["archive"].endswith(folder), (name, entry)
            manifest = json.loads(read(minio, folder + "manifest.json"))
            assert manifest["sha256"] == arts[version].sha256 == entry["sha256"]
            stored = hashlib.sha256(read(minio, folder + "model.joblib")).hexdigest()
            assert stored == arts[version].sha256, (name, version)

        kinds = ledger_kinds(minio, mlm.ns, name)
        expected = []
        for i, version in enumerate(served):
            life = LIFE if i < len(served) - 1 else LIFE[:2]
            for kind in life:
                assert kinds.count((kind, version)) == 1, (name, kind, version, kinds)
            # in lifecycle order; the next version takes traffic before this one leaves
            positions = [kinds.index((kind, version)) for kind in life]
            assert positions == sorted(positions), (name, version, kinds)
            if i + 1 < len(served):
                switch_next = kinds.index((ledger.SWITCHED, served[i + 1]))
                assert switch_next < kinds.index((ledger.RETIRING, version)), (name, kinds)
            expected += [(kind, version) for kind in life]
        assert sorted(kinds) == sorted(expected), (name, kinds)  # nothing else recorded

        switches = [
            json.loads(read(minio, key))
            for key in sorted(
                o.object_name
                for o in minio.client().list_objects(
                    BUCKET, prefix=ledger.ledger_prefix(mlm.ns, name), recursive=True
                )
                if f"-{ledger.SWITCHED}-" in o.object_name
            )
        ]
        assert [(s["version"], s["details"]["previous"]) for s in switches] == [
            (v, served[i - 1] if i else None) for i, v in enumerate(served)
        ], name
        assert [s["details"]["sha256"] for s in switches] == [arts[v].sha256 for v in served]


# ------------------------------------------------------------------ the walk


def test_the_operator_dying_at_every_failpoint_loses_nothing(
    fp_models: Models,
    minio: MinioServer,
    models: Callable[[str], Artifact],
    operators: Callable[[str | None], OperatorRunner],
) -> None:
    mlm = fp_models
    arts = {"1": models("1")}
    op = operators(None)
    for name in NAMES:
        mlm.create(mlm.body(name, "1", arts["1"], retirement={"drainSeconds": 0}))
    wait_converged(mlm, "1", op)
    op.stop()
    served = ["1"]

    for i, point in enumerate(failpoints.POINTS, start=2):
        version = str(i)
        arts[version] = models(version)
        armed = operators(point)
        roll(mlm, version, arts[version])
        wait_until(
            f"the operator exits at {point}",
            lambda op=armed: not (op.process and op.process.running()),
            EXIT_TIMEOUT,
            interval=0.1,
        )
        assert armed.process is not None and armed.process.popen is not None
        assert armed.process.popen.returncode == failpoints.EXIT_CODE, armed.log()[-3000:]
        assert f"failpoint {point} reached" in armed.log()

        op = operators(None)  # restarted, as its Deployment would
        wait_converged(mlm, version, op)
        op.stop()
        served.append(version)
        check_nothing_lost(mlm, minio, served, arts)


# ------------------------------------------------------------------ the soak


def test_sigkills_at_random_instants_over_30_version_changes_lose_nothing(
    fp_models: Models,
    minio: MinioServer,
    models: Callable[[str], Artifact],
    operators: Callable[[str | None], OperatorRunner],
) -> None:
    mlm, rng = fp_models, random.Random(SOAK_SEED)
    print(f"\nsoak seed {SOAK_SEED} (MLMODEL_SOAK_SEED)")
    arts = {"1": models("1")}
    op = operators(None)
    for name in NAMES:
        mlm.create(mlm.body(name, "1", arts["1"], retirement={"drainSeconds": 0}))
    wait_converged(mlm, "1", op)
    served, kills = ["1"], 0

    for i in range(2, SOAK_ROUNDS + 2):
        version = str(i)
        arts[version] = models(version)
        roll(mlm, version, arts[version])
        for _ in range(rng.choice((1, 1, 2))):  # sometimes killed twice in one rollout
            time.sleep(rng.uniform(0.0, 3.0))  # the instant of the kill, seeded
            op.kill()
            kills += 1
            op = operators(None)
        wait_converged(mlm, version, op)
        served.append(version)
        check_nothing_lost(mlm, minio, served, arts)
    print(f"soak: {len(served) - 1} rollouts x {len(NAMES)} models, {kills} SIGKILLs")
