"""`make demo`: the whole story on the real local control plane.

Builds nothing itself (``make demo`` runs ``make setup`` first), starts the control
plane, MinIO and the operator, trains and uploads two versions of the example model,
applies v1, rolls to v2, shows the switch, the retirement and the history, then waits
for Ctrl-C and stops everything it started.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlmodel_operator import example_models
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    LocalCluster,
    MinioServer,
    OperatorRunner,
    Process,
    free_port,
    http_ok,
    wait_until,
)

NAMESPACE = "demo"
SECRET = "mlmodel-s3-credentials"


def heading(text: str) -> None:
    """Print one step's heading."""
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def show(text: str) -> None:
    print(text.rstrip(), flush=True)


def example(version: str, sha256: str) -> str:
    """manifests/examples/churn-v<version>.yaml in the demo namespace with the real digest."""
    body = yaml.safe_load(
        (REPO_ROOT / "manifests" / "examples" / f"churn-v{version}.yaml").read_text()
    )
    body["metadata"]["namespace"] = NAMESPACE
    body["spec"]["artifact"]["sha256"] = sha256
    body["spec"]["retirement"]["drainSeconds"] = 3  # short, for the demo
    body["spec"].pop("monitoring", None)  # the demo has no Prometheus operator
    return str(yaml.safe_dump(body))


SAMPLE_ROWS = [
    [0.5, -1.2, 0.3, 1.1, -0.7, 0.2, 0.9, -0.4],
    [-1.5, 0.8, -0.2, 0.4, 1.3, -0.9, 0.1, 0.6],
    [2.0, 0.1, 1.7, -1.1, 0.0, 0.5, -0.3, 1.2],
]


def s3_env(minio: MinioServer) -> dict[str, str]:
    """The object-store environment of the `mlmodel` and `mlmodel-serve` commands."""
    return {
        **os.environ,
        "MLMODEL_S3_ENDPOINT": minio.endpoint,
        "MLMODEL_S3_ACCESS_KEY": minio.access_key,
        "MLMODEL_S3_SECRET_KEY": minio.secret_key,
    }


def run_cli(args: list[str], env: dict[str, str]) -> str:
    """Run `mlmodel ARGS` and return what it printed (raise with its stderr on failure)."""
    exe = Path(sys.executable).parent / "mlmodel"
    result = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"mlmodel {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout + result.stderr


def serve_and_predict(
    minio: MinioServer, art: example_models.TrainedArtifact, workdir: Path
) -> list[Any]:
    """Run mlmodel-serve on the artifact in MinIO, make predictions over HTTP, stop it."""
    port = free_port()
    exe = Path(sys.executable).parent / "mlmodel-serve"
    proc = Process(
        "mlmodel-serve",
        [
            str(exe), "--model-name", "churn", "--model-version", art.version,
            "--artifact-uri", art.uri, "--artifact-sha256", art.sha256,
            "--cache-dir", str(workdir / "serve-cache"),
            "--host", "127.0.0.1", "--port", str(port),
        ],
        workdir / "serve.log",
        env=s3_env(minio),
    )  # fmt: skip
    proc.start()
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_ready(lambda: http_ok(f"{base}/v2/health/ready"), 60)
        show(f"  mlmodel-serve verified sha256 {art.sha256[:12]}... and loaded {art.uri}")
        body = {
            "inputs": [
                {"name": "input-0", "shape": [len(SAMPLE_ROWS), len(SAMPLE_ROWS[0])],
                 "datatype": "FP64", "data": [v for row in SAMPLE_ROWS for v in row]}
            ]
        }  # fmt: skip
        show(f"  POST {base}/v2/models/churn/infer  ({len(SAMPLE_ROWS)} rows)")
        req = urllib.request.Request(
            f"{base}/v2/models/churn/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.load(resp)
            headers = {k: v for k, v in resp.headers.items() if k.lower().startswith("x-model")}
        show(f"  response headers: {headers}")
        show("  " + json.dumps(answer)[:400])
        predict = next(o for o in answer["outputs"] if o["name"] == "predict")
        return list(predict["data"])
    finally:
        proc.stop()


def status(cluster: LocalCluster) -> dict[str, Any]:
    out = cluster.kubectl("get", "mlm", "churn", "-n", NAMESPACE, "-o", "json")
    result: dict[str, Any] = json.loads(out).get("status") or {}
    return result


def follow(cluster: LocalCluster, until: str, version: str, timeout: float = 120) -> None:
    """Print each phase change until the model reaches ``until`` on ``version``."""
    seen: tuple[str | None, str | None] = (None, None)

    def reached() -> bool:
        nonlocal seen
        st = status(cluster)
        now = (st.get("phase"), st.get("activeVersion"))
        if now != seen:
            seen = now
            show(f"  phase={now[0]}  activeVersion={now[1]}  {st.get('message', '')}")
        return now == (until, version)

    wait_until(f"churn {until} on version {version}", reached, timeout, interval=0.5)


@contextlib.contextmanager
def started(workdir: Path) -> Iterator[tuple[LocalCluster, MinioServer, OperatorRunner]]:
    heading("1. The local control plane: etcd, kube-apiserver, controller-manager, scheduler, kwok")
    with LocalCluster.up(workdir / "cluster") as cluster:
        show(f"kubeconfig: {cluster.kubeconfig}")
        show(cluster.kubectl("get", "nodes", "-o", "wide"))
        heading("2. MinIO (credentials generated for this run)")
        minio = MinioServer(workdir / "minio").start()
        try:
            show(f"MinIO at {minio.url}")
            operator = OperatorRunner(
                cluster,
                minio,
                workdir / "operator",
                env={"MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:demo"},
            )
            try:
                yield cluster, minio, operator
            finally:
                operator.stop()
        finally:
            minio.stop()


def story(
    cluster: LocalCluster, minio: MinioServer, operator: OperatorRunner
) -> tuple[list[Any], list[Any]]:
    """Tell the story; returns what v1 served and what its replay from the archive gave."""
    heading("3. Train two versions of the example model and upload them to MinIO")
    mc = minio.client()
    versions = {v: example_models.train_churn(v) for v in ("1", "2")}
    for art in versions.values():
        example_models.upload(mc, art)
        show(f"  v{art.version}: {art.uri}  sha256={art.sha256}  ({len(art.data)} bytes)")

    heading("4. Install the MLModel CRD and start the operator (`mlmodel run`)")
    show(cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds")))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=30s", "crd/mlmodels.ml.lifecycle.io"
    )
    operator.start()
    show(f"  operator running; its log: {operator.workdir}")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.kubectl(
        "create", "secret", "generic", SECRET, "-n", NAMESPACE,
        f"--from-literal=accessKey={minio.access_key}",
        f"--from-literal=secretKey={minio.secret_key}",
    )  # fmt: skip

    heading("5. Apply version 1 (manifests/examples/churn-v1.yaml, real digest)")
    show(cluster.kubectl("apply", "-f", "-", stdin=example("1", versions["1"].sha256)))
    follow(cluster, "Serving", "1")
    show(cluster.kubectl("get", "mlm", "-n", NAMESPACE, "-o", "wide"))
    show(cluster.kubectl("get", "deploy,svc,pods", "-n", NAMESPACE))
    show("  (kwok fake nodes: the Pods are scheduled and Ready, but no container runs on them.)")

    heading("6. The real model server on the same artifact (mlmodel-serve, run locally)")
    served = serve_and_predict(minio, versions["1"], operator.workdir)

    heading("7. Apply version 2: rolled out, traffic switched when ready, v1 retired")
    show(cluster.kubectl("apply", "-f", "-", stdin=example("2", versions["2"].sha256)))
    follow(cluster, "Serving", "2")
    wait_until(
        "churn-v1 deleted",
        lambda: "churn-v1" not in cluster.kubectl("get", "deploy", "-n", NAMESPACE, "-o", "name"),
        60,
    )
    show(cluster.kubectl("get", "mlm", "-n", NAMESPACE, "-o", "wide"))
    show(cluster.kubectl("get", "deploy", "-n", NAMESPACE))
    show("  status.history:")
    show(yaml.safe_dump(status(cluster).get("history"), sort_keys=False))
    show(
        cluster.kubectl(
            "get", "events", "-n", NAMESPACE, "--field-selector", "involvedObject.kind=MLModel",
            "--sort-by=.lastTimestamp",
        )
    )  # fmt: skip

    heading("8. The archive: what retired, where, verified")
    env = s3_env(minio)
    show(run_cli(["archive", "ls", "churn", "-n", NAMESPACE], env))
    show(run_cli(["archive", "show", "churn", "1", "-n", NAMESPACE], env))

    heading("9. Replay version 1 from the archive on the same inputs")
    inputs = operator.workdir / "inputs.csv"
    inputs.write_text("\n".join(",".join(repr(v) for v in row) for row in SAMPLE_ROWS) + "\n")
    out = operator.workdir / "replayed.jsonl"
    args = ["replay", "churn", "--version", "1", "-n", NAMESPACE, "--input", str(inputs)]
    show(run_cli([*args, "--output", str(out)], env))
    replayed = [
        json.loads(line)["predict"] for line in out.read_text().splitlines() if line.strip()
    ]
    show(f"  served by v1 before it retired: {served}")
    show(f"  replayed from the archive:      {replayed}")
    show("  identical" if replayed == served else "  DIFFERENT: the archive does not reproduce v1")
    return served, replayed


def main() -> int:
    """Run the story, then wait for Ctrl-C; everything started is stopped on the way out."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-demo-"))
    code = 0
    try:
        with started(workdir) as (cluster, minio, operator):
            try:
                served, replayed = story(cluster, minio, operator)
                code = 0 if served == replayed else 1
            except (TimeoutError, subprocess.SubprocessError, RuntimeError) as exc:
                code = 1
                show(f"\nThe demo stopped: {exc}\nOperator log:\n{operator.log()[-4000:]}")
                return code
            heading("Running. In another shell:")
            show(f"  export KUBECONFIG={cluster.kubeconfig}")
            show(
                f"  kubectl get mlm -n {NAMESPACE} -o wide; kubectl describe mlm churn -n {NAMESPACE}"
            )
            show("\nPress Ctrl-C to stop everything.")
            with contextlib.suppress(KeyboardInterrupt):
                while not stop.wait(1.0):
                    pass
            heading("Stopping")
    except KeyboardInterrupt:
        heading("Interrupted: stopping")
    finally:
        if not os.environ.get("MLMODEL_KEEP_DEMO_DIR"):
            shutil.rmtree(workdir, ignore_errors=True)
    show("Everything stopped.")
    return code


if __name__ == "__main__":
    sys.exit(main())
