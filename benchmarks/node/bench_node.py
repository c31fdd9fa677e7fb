"""Real-node benchmark: how long the lifecycle takes when the Pods really run.

One run on the local control plane with a real node (operator/mlmodel_operator/realnode.py),
the project's images (built or reused by their input hash), and the project installed
from ``manifests/`` (realstack.install). Measured with the harness's monotonic clock:

1. the images: the build check (a rebuild only where an input changed), archive sizes;
2. the node: bridge + control plane + containerd + kubelet until the Node is Ready;
3. the install: CRDs, operator (2 replicas), MinIO and its buckets Job, all running;
4. per round: ``kubectl apply`` of a new MLModel -> the first prediction answered
   through its Service's ClusterIP (the client retries every 0.1 s);
5. per round: v(n) -> v(n+1) under a bounded load through the Service (``--rate``
   requests per second, each on a new connection): apply -> the first answer from the
   new version, apply -> phase Serving with the old Deployment deleted, and every
   request sent and failed in that time;
6. per round: a serving Pod deleted under the same load: requests sent and failed until
   its replacement is Ready.

Prints markdown, writes benchmarks/results/node-<date>.json, and with ``--update-readme``
puts the tables into benchmarks/README.md under "## Real node". Needs root.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mlmodel_operator import realstack  # noqa: E402
from mlmodel_operator.example_upload import upload_version  # noqa: E402
from mlmodel_operator.localcluster import LocalCluster, wait_until  # noqa: E402
from mlmodel_operator.nodeimages import build_image_archives  # noqa: E402
from mlmodel_operator.realnode import RealNode  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
README_BEGIN = "<!-- node-results:begin -->"
README_END = "<!-- node-results:end -->"
NS = "bench-node"


def model_body(name: str, version: str, sha256: str) -> dict[str, Any]:
    """The example MLModel (2 replicas, 5 s drain), monitoring off: only serving is timed."""
    return {
        "apiVersion": "ml.lifecycle.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "version": version,
            "artifact": {"uri": f"s3://models/{NS}/churn/{version}/model.joblib", "sha256": sha256},
            "serving": {
                "replicas": 2,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"memory": "512Mi"},
                },
            },
            "rollout": {"readyTimeoutSeconds": 300},
            "retirement": {"drainSeconds": 5},
            "monitoring": {"enabled": False},
            "archive": {"bucket": "model-archive"},
        },
    }


def apply(cluster: LocalCluster, body: dict[str, Any]) -> None:
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(body))


def url_of(cluster: LocalCluster, name: str) -> str:
    return f"http://{realstack.service_ip(cluster, NS, name)}:8080/v2/models/{name}/infer"


def serving_alone(cluster: LocalCluster, name: str, version: str) -> bool:
    status = realstack.get_json(cluster, "mlmodel", name, "-n", NS).get("status", {})
    if status.get("phase") != "Serving" or status.get("activeVersion") != version:
        return False
    deployments = realstack.get_json(
        cluster, "deployments", "-n", NS, "-l", f"ml.lifecycle.io/model={name}"
    )["items"]
    return [d["metadata"]["name"] for d in deployments] == [f"{name}-v{version}"]


def first_prediction(cluster: LocalCluster, name: str, sha256: str) -> float:
    """Seconds from ``kubectl apply`` of a new MLModel to its first answer via the Service."""
    start = time.monotonic()
    apply(cluster, model_body(name, "1", sha256))

    def answered() -> bool:
        realstack.predict(url_of(cluster, name), timeout=2)
        return True

    wait_until(f"{name} answering", answered, 300, 0.1)
    return time.monotonic() - start


def switch(
    cluster: LocalCluster, name: str, version: str, sha256: str, rate: float
) -> dict[str, Any]:
    """v(n) -> ``version`` under load; times and request counts."""
    with realstack.LoadClient(url_of(cluster, name), rate=rate, max_seconds=600) as load:
        load.wait_for(int(rate), 30)
        before = len(load.outcomes)
        start = time.monotonic()
        apply(cluster, model_body(name, version, sha256))
        wait_until(f"{name} answering v{version}", lambda: version in load.versions(), 300, 0.05)
        first_new = time.monotonic() - start
        wait_until(
            f"{name} v{version} alone", lambda: serving_alone(cluster, name, version), 300, 0.2
        )
        done = time.monotonic() - start
        during = load.outcomes[before:]
    return {
        "first_answer_s": round(first_new, 2),
        "serving_alone_s": round(done, 2),
        "sent": len(during),
        "failed": sum(1 for o in during if not o.ok),
    }


def pod_deletion(cluster: LocalCluster, name: str, version: str, rate: float) -> dict[str, Any]:
    """A serving Pod deleted under load; requests until its replacement is Ready."""
    selector = f"ml.lifecycle.io/model={name},ml.lifecycle.io/version={version}"
    pods = realstack.get_json(cluster, "pods", "-n", NS, "-l", selector)["items"]
    victim = pods[0]["metadata"]["name"]

    def replaced() -> bool:
        items = realstack.get_json(cluster, "pods", "-n", NS, "-l", selector)["items"]
        ready = [
            p for p in items
            if p["metadata"]["name"] != victim and not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
        ]  # fmt: skip
        return len(ready) == 2

    with realstack.LoadClient(url_of(cluster, name), rate=rate, max_seconds=600) as load:
        load.wait_for(int(rate), 30)
        before = len(load.outcomes)
        start = time.monotonic()
        cluster.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")
        wait_until("a replacement Ready", replaced, 300, 0.2)
        elapsed = time.monotonic() - start
        during = load.outcomes[before:]
    return {
        "replaced_s": round(elapsed, 2),
        "sent": len(during),
        "failed": sum(1 for o in during if not o.ok),
    }


def run(rounds: int, rate: float) -> dict[str, Any]:
    result: dict[str, Any] = {"rounds": rounds, "rate": rate}
    start = time.monotonic()
    images = build_image_archives()
    result["images_check_s"] = round(time.monotonic() - start, 2)
    result["images"] = {
        short: {"name": a.name, "archive_mib": round(a.path.stat().st_size / 2**20)}
        for short, a in images.items()
    }
    start = time.monotonic()
    with RealNode.up(images["pause"].name, [a.path for a in images.values()]) as node:
        result["node_ready_s"] = round(time.monotonic() - start, 2)
        cluster = node.api_cluster
        work = Path(tempfile.mkdtemp(prefix="bench-node-"))
        start = time.monotonic()
        realstack.install(cluster, images["minio"].name, work)
        result["install_s"] = round(time.monotonic() - start, 2)
        realstack.create_serving_namespace(cluster, NS)
        mc = realstack.minio_client(cluster)
        digests = {v: upload_version(mc, v, namespace=NS)[0] for v in ("1", "2", "3", "4")}
        result["first_prediction_s"], result["switches"], result["deletions"] = [], [], []
        for i in range(rounds):
            name = f"churn-{i}"
            result["first_prediction_s"].append(
                round(first_prediction(cluster, name, digests["1"]), 2)
            )
            for version in ("2", "3"):
                result["switches"].append(switch(cluster, name, version, digests[version], rate))
            result["deletions"].append(pod_deletion(cluster, name, "3", rate))
            cluster.kubectl("delete", "mlmodel", name, "-n", NS, "--wait=false")
    return result


def median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if values else "-"


def markdown(result: dict[str, Any], command: str, when: str) -> str:
    sw, de = result["switches"], result["deletions"]
    lines = [
        f"### Real-node benchmark, {when}",
        "",
        f"`{command}` on the 2-core machine; {result['rounds']} rounds, load "
        f"{result['rate']:g} requests/s through the Service, each on a new connection.",
        "",
        "| measure | median | range |",
        "|---|---|---|",
        f"| node up: bridge, control plane, containerd, kubelet until Ready (s) | {result['node_ready_s']} | one run |",
        f"| install: CRDs, operator x2, MinIO + buckets Job, all running (s) | {result['install_s']} | one run |",
        f"| `kubectl apply` -> first prediction through the Service (s) | {median(result['first_prediction_s'])} | {spread(result['first_prediction_s'])} |",
        f"| switch: apply -> first answer of the new version (s) | {median([s['first_answer_s'] for s in sw])} | {spread([s['first_answer_s'] for s in sw])} |",
        f"| switch: apply -> new version Serving, old Deployment deleted (s) | {median([s['serving_alone_s'] for s in sw])} | {spread([s['serving_alone_s'] for s in sw])} |",
        f"| serving Pod deleted -> replacement Ready (s) | {median([d['replaced_s'] for d in de])} | {spread([d['replaced_s'] for d in de])} |",
        "",
        "| under load | requests sent | failed |",
        "|---|---|---|",
        f"| {len(sw)} version switches | {sum(s['sent'] for s in sw)} | {sum(s['failed'] for s in sw)} |",
        f"| {len(de)} serving Pod deletions | {sum(d['sent'] for d in de)} | {sum(d['failed'] for d in de)} |",
        "",
        "| image | archive (MiB) |",
        "|---|---|",
        *[f"| `{i['name']}` | {i['archive_mib']} |" for i in result["images"].values()],
        "",
        f"Image build check with nothing changed: {result['images_check_s']} s.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def update_readme(text: str) -> None:
    readme = README.read_text()
    block = f"{README_BEGIN}\n{text}{README_END}"
    if README_BEGIN in readme:
        head, rest = readme.split(README_BEGIN, 1)
        _, tail = rest.split(README_END, 1)
        readme = head + block + tail
    else:
        readme = readme.rstrip() + "\n\n## Real node\n\n" + block + "\n"
    README.write_text(readme)


def main(argv: Sequence[str], command: str) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/run.py node")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (%(default)s)")
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s (%(default)s)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error(f"--rounds {args.rounds}: accepted 1-20")
    if not 1 <= args.rate <= 200:
        parser.error(f"--rate {args.rate}: accepted 1-200 requests per second")
    result = run(args.rounds, args.rate)
    now = dt.datetime.now(dt.UTC)
    when = now.strftime("%Y-%m-%d %H:%M UTC")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"node-{now.strftime('%Y-%m-%dT%H%M')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result, command, when)
    print(text)
    print(f"results: {path}")
    if args.update_readme:
        update_readme(text)
    return 0
