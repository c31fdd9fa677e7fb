"""`make demo`: the whole story on the local control plane with a real node.

``make demo`` runs ``make setup`` first (the tools); the images are built here if their
inputs changed (``nodeimages``). It starts the control plane and a real node (containerd,
kubelet, kube-proxy), installs the CRDs, the operator and MinIO from ``manifests/`` as a
user would (MinIO's setup Job makes the operator's least-privilege key; the demo namespace
gets its own), trains and uploads two versions of the example model under
``s3://models/demo/``, applies v1, predicts
through the model's Service, rolls to v2, shows the switch, the retirement, the archive
and a replay, then waits for Ctrl-C and tears everything down. Needs root (the node).
"""

from __future__ import annotations

import contextlib
import datetime as dt
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

from mlmodel_operator import realstack
from mlmodel_operator.example_upload import EXAMPLE_NAMESPACE, upload_version
from mlmodel_operator.localcluster import REPO_ROOT, LocalCluster, wait_until
from mlmodel_operator.nodeimages import build_image_archives
from mlmodel_operator.realnode import RealNode

NAMESPACE = "demo"
# The request the regulator asks about (step 10): a client's own id for it.
REQUEST_ID = "customer-4711-2026-03-02"


def heading(text: str) -> None:
    """Print one step's heading."""
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def show(text: str) -> None:
    print(text.rstrip(), flush=True)


def example(version: str, sha256: str) -> str:
    """manifests/examples/churn-v<version>.yaml in the demo namespace with the real digest,
    its URIs under the demo namespace's prefix (the only one its key may read)."""
    body = yaml.safe_load(
        (REPO_ROOT / "manifests" / "examples" / f"churn-v{version}.yaml").read_text()
    )
    body["metadata"]["namespace"] = NAMESPACE
    spec = body["spec"]
    spec["artifact"]["sha256"] = sha256
    drift = spec["monitoring"]["drift"]
    for holder, field in ((spec["artifact"], "uri"), (drift, "baselineUri")):
        holder[field] = holder[field].replace(f"/{EXAMPLE_NAMESPACE}/", f"/{NAMESPACE}/", 1)
    body["spec"]["retirement"]["drainSeconds"] = 3  # short, for the demo
    return str(yaml.safe_dump(body))


SAMPLE_ROWS = [
    [0.5, -1.2, 0.3, 1.1, -0.7, 0.2, 0.9, -0.4],
    [-1.5, 0.8, -0.2, 0.4, 1.3, -0.9, 0.1, 0.6],
    [2.0, 0.1, 1.7, -1.1, 0.0, 0.5, -0.3, 1.2],
]


def s3_env(cluster: LocalCluster) -> dict[str, str]:
    """The object-store environment of the `mlmodel` command: the in-cluster MinIO, reached
    from this machine through its Service's ClusterIP, with the operator's key (it may
    read the archive and the decision records; on a real cluster give the people who ask
    a read-only key of their own)."""
    creds = realstack.operator_credentials(cluster)
    return {
        **os.environ,
        "MLMODEL_S3_ENDPOINT": realstack.minio_endpoint(cluster),
        "MLMODEL_S3_ACCESS_KEY": creds["accessKey"],
        "MLMODEL_S3_SECRET_KEY": creds["secretKey"],
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


def predict_through_service(
    cluster: LocalCluster, request_id: str = REQUEST_ID, rows: list[list[float]] = SAMPLE_ROWS
) -> list[Any]:
    """A V2 prediction through the model's Service (ClusterIP, kube-proxy) to a real Pod;
    ``request_id`` is the id its decision record is filed under."""
    ip = realstack.service_ip(cluster, NAMESPACE, "churn")
    url = f"http://{ip}:8080/v2/models/churn/infer"
    show(f"  POST {url}  ({len(rows)} rows, x-request-id: {request_id})")
    req = urllib.request.Request(
        url,
        data=realstack.infer_body(rows),
        headers={"Content-Type": "application/json", "x-request-id": request_id},
    )
    answers: list[tuple[Any, dict[str, str]]] = []

    def answered() -> bool:
        with urllib.request.urlopen(req, timeout=10) as resp:
            headers = {k: v for k, v in resp.headers.items() if k.lower().startswith("x-model")}
            answers.append((json.load(resp), headers))
        return True

    # kube-proxy programs a new Service's rules a moment after it and its endpoints exist;
    # until then its ClusterIP refuses connections
    wait_until(f"an answer from {url}", answered, 30, 0.2)
    answer, headers = answers[-1]
    show(f"  response headers: {headers}")
    show("  " + json.dumps(answer)[:400])
    predict = next(o for o in answer["outputs"] if o["name"] == "predict")
    return list(predict["data"])


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
def started(workdir: Path) -> Iterator[tuple[LocalCluster, Any]]:
    """The control plane, a real node, and the project installed on it; yields the cluster
    and a MinIO client on the in-cluster MinIO. Torn down on the way out."""
    heading("1. The images, built from the project's Dockerfiles (cached by their inputs)")
    images = build_image_archives()
    for image in images.values():
        show(f"  {image.name}  ({image.path.stat().st_size // 2**20} MiB archive)")
    heading("2. Control plane + a real node: containerd, runc, kubelet, kube-proxy, CoreDNS")
    with RealNode.up(
        images["pause"].name, [a.path for a in images.values()], workdir / "cluster"
    ) as node:
        cluster = node.api_cluster
        show(f"kubeconfig: {cluster.kubeconfig}")
        show(cluster.kubectl("get", "nodes", "-o", "wide"))
        heading("3. kubectl apply -k crds/, -k manifests/ and manifests/minio")
        realstack.install(cluster, images["minio"].name, workdir)
        show(cluster.kubectl("get", "deploy,pods", "-n", realstack.SYSTEM_NS, "-o", "wide"))
        yield cluster, realstack.minio_client(cluster)


def story(cluster: LocalCluster, mc: Any) -> tuple[list[Any], list[Any]]:
    """Tell the story; returns what v1 served and what its replay from the archive gave.
    Raises RuntimeError when a step's command fails (an audit that finds a mismatch too)."""
    began = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    heading("4. Train two versions of the example model and upload them to MinIO")
    digests = {}
    for version in ("1", "2"):
        sha256, uri = upload_version(mc, version, namespace=NAMESPACE)
        digests[version] = sha256
        show(f"  v{version}: {uri}  sha256={sha256}")
    realstack.create_serving_namespace(cluster, NAMESPACE)

    heading("5. Apply version 1 (manifests/examples/churn-v1.yaml, real digest)")
    show(cluster.kubectl("apply", "-f", "-", stdin=example("1", digests["1"])))
    follow(cluster, "Serving", "1")
    show(cluster.kubectl("get", "mlm", "-n", NAMESPACE, "-o", "wide"))
    show(cluster.kubectl("get", "deploy,svc,pods", "-n", NAMESPACE, "-o", "wide"))

    heading("6. A prediction through the Service, answered by a real Pod")
    served = predict_through_service(cluster)

    heading("7. Apply version 2: rolled out, traffic switched when ready, v1 retired")
    show(cluster.kubectl("apply", "-f", "-", stdin=example("2", digests["2"])))
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
    env = s3_env(cluster)
    show(run_cli(["archive", "ls", "churn", "-n", NAMESPACE], env))
    show(run_cli(["archive", "show", "churn", "1", "-n", NAMESPACE], env))

    heading("9. Replay version 1 from the archive on the same inputs")
    inputs = Path(tempfile.mkdtemp(prefix="mlmodel-replay-"))
    try:
        rows = inputs / "inputs.csv"
        rows.write_text("\n".join(",".join(repr(v) for v in row) for row in SAMPLE_ROWS) + "\n")
        out = inputs / "replayed.jsonl"
        args = ["replay", "churn", "--version", "1", "-n", NAMESPACE, "--input", str(rows)]
        show(run_cli([*args, "--output", str(out)], env))
        replayed = [
            json.loads(line)["predict"] for line in out.read_text().splitlines() if line.strip()
        ]
    finally:
        shutil.rmtree(inputs, ignore_errors=True)
    show(f"  served by v1 through its Service: {served}")
    show(f"  replayed from the archive:        {replayed}")
    show("  identical" if replayed == served else "  DIFFERENT: the archive does not reproduce v1")
    regulator(cluster, mc, began)
    return served, replayed


def regulator(cluster: LocalCluster, mc: Any, began: dt.datetime) -> None:
    """Step 10: "why was customer 4711 declined, and can you show it again?" in three
    commands, from the decision records the serving Pods wrote (spec.decisionLog)."""
    heading("10. The regulator's question: find the decision, explain it, audit the period")
    for i, row in enumerate(SAMPLE_ROWS):  # some decisions of v2 too
        predict_through_service(cluster, f"customer-{4800 + i}", [row])
    prefix = f"decisions/{NAMESPACE}/churn/2/"

    def v2_recorded() -> bool:  # v2's Pods write every 5 s (flushSeconds in the example)
        return any(mc.list_objects("model-archive", prefix=prefix, recursive=True))

    wait_until("v2's decision records", v2_recorded, 60, 1.0)
    env = s3_env(cluster)
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    since = began.strftime("%Y-%m-%dT%H:%M:%SZ")
    show(run_cli(["decisions", "ls", "churn", "-n", NAMESPACE, "--from", since], env))
    show(run_cli(["explain", "--request-id", REQUEST_ID, "-n", NAMESPACE], env))
    kubeconfig = ["--kubeconfig", str(cluster.kubeconfig)]  # v2 is live: its MLModel names it
    audit = ["audit", "-n", NAMESPACE, "--model", "churn", "--from", since, "--to", until]
    show(run_cli([*audit, *kubeconfig], env))


def main() -> int:
    """Run the story, then wait for Ctrl-C; everything started is stopped on the way out."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-demo-"))
    code = 0
    try:
        with started(workdir) as (cluster, mc):
            try:
                served, replayed = story(cluster, mc)
                code = 0 if served == replayed else 1
            except (TimeoutError, subprocess.SubprocessError, RuntimeError) as exc:
                code = 1
                log = cluster.kubectl(
                    "logs", "deploy/mlmodel-operator", "-n", realstack.SYSTEM_NS, check=False
                )
                show(f"\nThe demo stopped: {exc}\nOperator log:\n{log[-4000:]}")
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
