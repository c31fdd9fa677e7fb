"""The whole lifecycle on a real node: the shipped manifests, the project's images, real Pods.

What kwok cannot show: the images start, the operator runs from its image with its
ServiceAccount and peering, MinIO runs from manifests/minio, the serving Pods fetch the
artifact with the Secret's credentials, verify and load it under a read-only root as
user 10001 in a namespace that enforces Pod Security ``restricted``, pass their probes,
and answer through the Service's ClusterIP (kube-proxy), from the host and from a Pod
(cluster DNS). Then v1 -> v2 under load with no failed request, a tampered v3 that never
serves, and a serving Pod deleted under load.

The tests of this module run in order on one installation, in their own namespace; the
node and the installation are shared with the rollout module (conftest.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pytest
import requests
import yaml
from prom_checks import check_prometheus_scrapes_real_pods, inference_traffic
from shared_node import Installation

from mlmodel_operator import demo, realstack
from mlmodel_operator.example_upload import upload_version
from mlmodel_operator.localcluster import REPO_ROOT, LocalCluster, wait_until
from mlmodel_operator.realnode import RealNode
from mlmodel_operator.realstack import SYSTEM_NS, LoadClient, get_json, wait_answering
from mlmodel_serving.decisions import Record, decode_table, read_table

pytestmark = pytest.mark.e2e

NS = "e2e-models"
ROLLOUT_TIMEOUT = 180.0


@dataclass
class Stack:
    """The installed cluster: the node, its control plane, and MinIO as the host sees it."""

    node: RealNode
    cluster: LocalCluster
    minio: Any  # minio.Minio on the Service's ClusterIP
    digests: dict[str, str]
    workdir: Path

    def model_url(self, name: str = "churn") -> str:
        ip = realstack.service_ip(self.cluster, NS, name)
        return f"http://{ip}:8080/v2/models/{name}/infer"

    def mlmodel(self, name: str = "churn") -> dict[str, Any]:
        body: dict[str, Any] = get_json(self.cluster, "mlmodel", name, "-n", NS)
        return body

    def apply_version(self, version: str, sha256: str | None = None) -> None:
        source = REPO_ROOT / "manifests" / "examples" / f"churn-v{min(int(version), 2)}.yaml"
        body = yaml.safe_load(source.read_text())
        body["metadata"]["namespace"] = NS
        spec = body["spec"]
        spec["version"] = version
        spec["artifact"]["uri"] = f"s3://models/{NS}/churn/{version}/model.joblib"
        spec["artifact"]["sha256"] = sha256 or self.digests[version]
        drift = spec["monitoring"]["drift"]
        drift["baselineUri"] = f"s3://models/{NS}/churn/{version}/baseline.json"
        spec["retirement"]["drainSeconds"] = 5
        spec["rollout"]["readyTimeoutSeconds"] = int(ROLLOUT_TIMEOUT)
        self.cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))

    def wait_serving(self, version: str, timeout: float = ROLLOUT_TIMEOUT) -> dict[str, Any]:
        def serving() -> bool:
            st = self.mlmodel().get("status", {})
            return (
                st.get("phase") == "Serving"
                and st.get("activeVersion") == version
                and not [d for d in self.deployments() if d != f"churn-v{version}"]
            )

        try:
            wait_until(f"churn v{version} Serving alone", serving, timeout, 1.0)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {json.dumps(self.mlmodel().get('status'))}") from None
        status: dict[str, Any] = self.mlmodel()["status"]
        return status

    def deployments(self) -> list[str]:
        items = get_json(
            self.cluster, "deployments", "-n", NS, "-l", "ml.lifecycle.io/model=churn"
        )["items"]
        return sorted(d["metadata"]["name"] for d in items)

    def serving_pods(self, version: str) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = get_json(
            self.cluster,
            "pods",
            "-n",
            NS,
            "-l",
            f"ml.lifecycle.io/model=churn,ml.lifecycle.io/version={version}",
        )["items"]
        return pods


def decision_records(stack: Stack, model: str = "churn") -> list[Record]:
    """Every decision record of ``model`` in the archive bucket (the example's default)."""
    out: list[Record] = []
    prefix = f"decisions/{NS}/{model}/"
    for obj in stack.minio.list_objects("model-archive", prefix=prefix, recursive=True):
        response = stack.minio.get_object("model-archive", obj.object_name)
        try:
            out += decode_table(read_table(response.read()), obj.object_name)
        finally:
            response.close()
            response.release_conn()
    return out


@pytest.fixture(scope="module")
def stack(
    real_node: RealNode,
    installation: Installation,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The session's installation (conftest), with this module's namespace and models."""
    cluster, minio = installation.cluster, installation.minio
    workdir = tmp_path_factory.mktemp("real-stack")
    realstack.create_serving_namespace(cluster, NS)
    digests = {v: upload_version(minio, v, namespace=NS)[0] for v in ("1", "2", "3")}
    yield Stack(real_node, cluster, minio, digests, workdir)


def test_the_operator_runs_from_its_image_with_its_service_account(stack: Stack) -> None:
    pods = get_json(
        stack.cluster, "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/name=mlmodel-operator"
    )["items"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == stack.node.name
        assert pod["spec"]["serviceAccountName"] == "mlmodel-operator"
        assert pod["status"]["phase"] == "Running"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["image"].endswith("mlmodel-operator:0.1.0")
    # kopf's peering: both replicas announce themselves in the ClusterKopfPeering
    peering = get_json(stack.cluster, "clusterkopfpeering", "mlmodel-operator")
    assert len(peering.get("status", {})) == 2, peering.get("status")


def test_v1_serves_from_real_pods_through_the_service(stack: Stack) -> None:
    stack.apply_version("1")
    assert stack.wait_serving("1")["activeVersion"] == "1"
    pods = stack.serving_pods("1")
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"] == stack.node.name
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["runAsUser"] == 10001
        (cs,) = pod["status"]["containerStatuses"]
        assert cs["ready"] and cs["restartCount"] == 0
    # the server's own log says it verified the digest and loaded the model
    log = stack.cluster.kubectl("logs", pods[0]["metadata"]["name"], "-n", NS)
    assert "model loaded and verified; ready" in log and stack.digests["1"] in log
    answer = wait_answering(stack.model_url())
    assert answer["model_version"] == "1" and answer["model_name"] == "churn"
    assert len(answer["outputs"][0]["data"]) == 2


def test_a_dataframe_pipeline_answers_v1_objects_binary_http_and_grpc_through_the_service(
    stack: Stack,
) -> None:
    """The mixed-type churn Pipeline (numbers and text) as its own MLModel: real Pods
    answer KServe V1 object rows, tritonclient over HTTP (binary tensors) and over gRPC
    through the Service's ``grpc`` port, each exactly as the Pipeline does in-process."""
    import numpy as np
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    from mlmodel_operator.example_models import CHURN_TEXT, churn_frame, fit_churn_pipeline

    name = "churn-table"
    pipeline = fit_churn_pipeline("onehot")
    buf = io.BytesIO()
    joblib.dump(pipeline, buf)
    data = buf.getvalue()
    key = f"{NS}/{name}/1/model.joblib"  # the namespace's key reads its own prefix only
    stack.minio.put_object("models", key, io.BytesIO(data), len(data))
    body = {
        "apiVersion": "ml.lifecycle.io/v1alpha1",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "version": "1",
            "artifact": {
                "uri": f"s3://models/{key}",
                "sha256": hashlib.sha256(data).hexdigest(),
                "format": "joblib",
            },
            "serving": {"replicas": 1},
            "rollout": {"readyTimeoutSeconds": int(ROLLOUT_TIMEOUT)},
            "monitoring": {"enabled": False},
            "archive": {"bucket": "model-archive"},
        },
    }
    stack.cluster.kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(body))
    try:
        wait_until(
            f"{name} Serving",
            lambda: stack.mlmodel(name).get("status", {}).get("phase") == "Serving",
            ROLLOUT_TIMEOUT,
            1.0,
        )
        service = get_json(stack.cluster, "service", name, "-n", NS)
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["port"] == 8081 and ports["grpc"]["appProtocol"] == "grpc"
        ip = realstack.service_ip(stack.cluster, NS, name)
        rows, _ = churn_frame(32, seed=21)
        rows = rows.dropna(subset=list(CHURN_TEXT)).reset_index(drop=True)
        want_labels = pipeline.predict(rows).tolist()
        want_proba = pipeline.predict_proba(rows).tobytes()

        v1_body = {"instances": rows.to_dict("records")}
        answers: list[Any] = []

        def answered() -> bool:  # kube-proxy programs a new Service's rules a moment later
            reply = requests.post(
                f"http://{ip}:8080/v1/models/{name}:predict", json=v1_body, timeout=10
            )
            answers.append(reply.json())
            return reply.status_code == 200

        wait_until(f"an answer from {name}", answered, 30.0, 0.2)
        assert answers[-1]["predictions"] == want_labels

        for module, address in ((httpclient, f"{ip}:8080"), (grpcclient, f"{ip}:8081")):
            client = module.InferenceServerClient(address)
            try:
                inputs = []
                for column in rows.columns:
                    datatype = "BYTES" if column in CHURN_TEXT else "FP64"
                    tensor = module.InferInput(column, [len(rows)], datatype)
                    tensor.set_data_from_numpy(
                        rows[column].to_numpy(object if datatype == "BYTES" else np.float64)
                    )
                    inputs.append(tensor)
                outputs = [
                    module.InferRequestedOutput("predict"),
                    module.InferRequestedOutput("predict_proba"),
                ]
                result = client.infer(name, inputs, outputs=outputs)
                labels = [v.decode() for v in result.as_numpy("predict").tolist()]
                assert labels == want_labels, module.__name__
                assert result.as_numpy("predict_proba").tobytes() == want_proba, module.__name__
            finally:
                client.close()
    finally:
        stack.cluster.kubectl("delete", "mlmodel", name, "-n", NS, "--wait=false")
        wait_until(
            f"{name}'s Pods gone",
            lambda: (
                not get_json(
                    stack.cluster, "pods", "-n", NS, "-l", f"ml.lifecycle.io/model={name}"
                )["items"]
            ),
            ROLLOUT_TIMEOUT,
            1.0,
        )


def test_prometheus_scrapes_the_real_serving_pods(stack: Stack) -> None:
    """Found from the ServiceMonitor the operator wrote; every dashboard and alert query
    returns data from the two real Pods."""
    summary = check_prometheus_scrapes_real_pods(
        stack.cluster,
        NS,
        "churn",
        stack.workdir / "prometheus",
        send_traffic=inference_traffic(stack.model_url()),
        timeout=180,
    )
    print(json.dumps({k: summary[k] for k in ("discovery", "targets", "alerts")}, indent=1))
    assert len(summary["targets"]) == 2


def test_a_pod_reaches_the_model_by_name_and_nothing_outside(stack: Stack) -> None:
    """Cluster DNS answers cluster names; the Pod network has no way off the machine."""
    script = (
        "import json, socket, urllib.request\n"
        "out = {}\n"
        "body = json.dumps({'inputs': [{'name': 'x', 'shape': [1, 8], 'datatype': 'FP64',"
        " 'data': [0.1] * 8}]}).encode()\n"
        f"req = urllib.request.Request('http://churn.{NS}.svc:8080/v2/models/churn/infer',"
        " data=body, headers={'Content-Type': 'application/json'})\n"
        "out['version'] = json.load(urllib.request.urlopen(req, timeout=10))['model_version']\n"
        "try:\n"
        "    socket.getaddrinfo('example.com', 80)\n"
        "    out['outside_dns'] = 'resolved'\n"
        "except OSError as exc:\n"
        "    out['outside_dns'] = type(exc).__name__\n"
        "s = socket.socket()\n"
        "s.settimeout(3)\n"
        "try:\n"
        f"    s.connect(('{_outside_address()}', 80))\n"
        "    out['outside_tcp'] = 'connected'\n"
        "except OSError as exc:\n"
        "    out['outside_tcp'] = type(exc).__name__ + ': ' + str(exc)\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client", "namespace": NS},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client",
                "image": "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0",
                "imagePullPolicy": "IfNotPresent",
                "command": ["python", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }  # fmt: skip
    stack.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

    def finished() -> bool:
        phase = get_json(stack.cluster, "pod", "client", "-n", NS)["status"].get("phase")
        return phase in ("Succeeded", "Failed")

    wait_until("the client pod finished", finished, 60, 0.5)
    log = stack.cluster.kubectl("logs", "client", "-n", NS)
    stack.cluster.kubectl("delete", "pod", "client", "-n", NS, "--wait=false")
    match = re.search(r"RESULT (.*)", log)
    assert match, log
    result = json.loads(match.group(1))
    assert result["version"] == "1"
    assert result["outside_dns"] == "gaierror"
    assert result["outside_tcp"].startswith("OSError") and "unreachable" in result["outside_tcp"]


def _outside_address() -> str:
    """The machine's default gateway (an address off the machine), or a TEST-NET one."""
    for line in Path("/proc/net/route").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000" and fields[2] != "00000000":
            raw = bytes.fromhex(fields[2])[::-1]
            return ".".join(str(b) for b in raw)
    return "198.51.100.1"


def test_v1_to_v2_under_load_loses_no_request(stack: Stack) -> None:
    url = stack.model_url()
    with LoadClient(url, rate=30) as load:
        load.wait_for(30, 30)
        stack.apply_version("2")
        status = stack.wait_serving("2")
        load.wait_for(60, 30)
    sent, failed = len(load.outcomes), load.failures
    print(f"v1 -> v2 under load: {sent} requests, {len(failed)} failed")
    assert not failed, failed[:5]
    versions = load.versions()
    assert versions[0] == "1" and versions[-1] == "2"
    # once v2 answered, v1 never answered again: the switch happens once
    first_v2 = versions.index("2")
    assert set(versions[first_v2:]) == {"2"}, versions[first_v2:]
    v1 = next(h for h in status["history"] if h["version"] == "1")
    assert v1["archive"] == f"s3://model-archive/{NS}/churn/1/"
    archived = {o.object_name for o in stack.minio.list_objects("model-archive", recursive=True)}
    assert f"{NS}/churn/1/model.joblib" in archived and f"{NS}/churn/1/manifest.json" in archived
    assert stack.serving_pods("1") == [] or all(
        p["metadata"].get("deletionTimestamp") for p in stack.serving_pods("1")
    )
    # The decision log (spec.decisionLog in the example): every answered request has
    # exactly one record, naming the version that answered it; v1's Pods wrote theirs
    # when they were retired (SIGTERM), v2's within flushSeconds.
    answered = {o.request_id: o.version for o in load.outcomes if o.ok}

    def all_recorded() -> bool:
        return answered.keys() <= {r.request_id for r in decision_records(stack)}

    wait_until("a record of every answered request", all_recorded, 60, 1.0)
    found = [r for r in decision_records(stack) if r.request_id in answered]
    assert len(found) == len(answered), "a request was recorded twice"
    for record in found:
        assert record.version == answered[record.request_id], record.request_id
        assert record.sha256 == stack.digests[record.version]
        assert record.status == 200 and record.namespace == NS


def test_a_tampered_v3_never_serves_and_v2_keeps_serving(stack: Stack) -> None:
    good = stack.minio.get_object("models", f"{NS}/churn/3/model.joblib").read()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    stack.minio.put_object("models", f"{NS}/churn/3/model.joblib", io.BytesIO(bytes(bad)), len(bad))
    url = stack.model_url()
    with LoadClient(url, rate=20) as load:
        load.wait_for(20, 30)
        stack.apply_version("3")

        def refused() -> bool:
            conditions = stack.mlmodel().get("status", {}).get("conditions", [])
            verified = [c for c in conditions if c["type"] == "ArtifactVerified"]
            return bool(verified) and verified[0]["status"] == "False"

        wait_until("v3 refused", refused, 60, 0.5)
        load.wait_for(40, 30)
    status = stack.mlmodel()["status"]
    verified = next(c for c in status["conditions"] if c["type"] == "ArtifactVerified")
    assert "sha256" in verified["message"] or "digest" in verified["message"], verified
    assert status["activeVersion"] == "2"
    assert "churn-v3" not in stack.deployments()
    assert not load.failures, load.failures[:5]
    assert set(load.versions()) == {"2"}


def test_the_serving_image_itself_refuses_tampered_bytes(stack: Stack) -> None:
    """The server in its Pod checks the digest too: it exits, and never becomes Ready."""
    deployment = get_json(stack.cluster, "deployment", "churn-v2", "-n", NS)
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    env["MLMODEL_MODEL_VERSION"] = {"name": "MLMODEL_MODEL_VERSION", "value": "3"}
    env["MLMODEL_ARTIFACT_URI"] = {
        "name": "MLMODEL_ARTIFACT_URI",
        "value": f"s3://models/{NS}/churn/3/model.joblib",
    }
    env["MLMODEL_ARTIFACT_SHA256"] = {"name": "MLMODEL_ARTIFACT_SHA256",
                                      "value": stack.digests["3"]}  # fmt: skip
    env.pop("MLMODEL_DRIFT_BASELINE_URI", None)
    container["env"] = list(env.values())
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "tampered", "namespace": NS},
        "spec": {**template["spec"], "restartPolicy": "Never"},
    }
    stack.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

    def failed() -> bool:
        return (
            get_json(stack.cluster, "pod", "tampered", "-n", NS)["status"].get("phase") == "Failed"
        )

    wait_until("the tampered pod failed", failed, 90, 0.5)
    status = get_json(stack.cluster, "pod", "tampered", "-n", NS)["status"]
    log = stack.cluster.kubectl("logs", "tampered", "-n", NS)
    stack.cluster.kubectl("delete", "pod", "tampered", "-n", NS, "--wait=false")
    assert not any(c.get("ready") for c in status.get("containerStatuses", []))
    assert "refusing to serve" in log and "sha256" in log, log[-2000:]


def test_a_serving_pod_deleted_under_load_is_replaced(stack: Stack) -> None:
    url = stack.model_url()
    victim = stack.serving_pods("2")[0]["metadata"]["name"]
    with LoadClient(url, rate=30) as load:
        load.wait_for(30, 30)
        stack.cluster.kubectl("delete", "pod", victim, "-n", NS, "--wait=false")

        def replaced() -> bool:
            pods = [p for p in stack.serving_pods("2") if p["metadata"]["name"] != victim]
            ready = [
                p for p in pods
                if not p["metadata"].get("deletionTimestamp")
                and all(c.get("ready") for c in p["status"].get("containerStatuses", [{}]))
            ]  # fmt: skip
            return len(ready) == 2

        wait_until("a replacement pod Ready", replaced, 120, 0.5)
        load.wait_for(30, 30)
    print(f"pod deleted under load: {len(load.outcomes)} requests, {len(load.failures)} failed")
    assert not load.failures, load.failures[:5]


def test_startup_probe_waits_for_the_loaded_model(stack: Stack) -> None:
    """The startupProbe asks readiness (the model loaded), and its budget covers the load."""
    (pod, *_) = stack.serving_pods("2")
    (container,) = pod["spec"]["containers"]
    probe = container["startupProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    log = stack.cluster.kubectl("logs", pod["metadata"]["name"], "-n", NS)
    loads = [float(m) for m in re.findall(r"load_seconds=([0-9.]+)", log)]
    loads += [float(m) for m in re.findall(r'"load_seconds": ([0-9.]+)', log)]
    assert loads, log[-2000:]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget >= 10 * max(loads), (budget, loads)


def test_the_demo_story_on_the_same_installation(stack: Stack) -> None:
    """`make demo` after its set-up (images, node, `realstack.install`, as above): v1
    served through its Service, v2 rolled out, v1 archived and replayed bit for bit."""
    served, replayed = demo.story(stack.cluster, stack.minio)
    status = get_json(stack.cluster, "mlm", "churn", "-n", demo.NAMESPACE)["status"]
    archived = {o.object_name for o in stack.minio.list_objects("model-archive", recursive=True)}
    assert served and replayed == served
    assert (status["phase"], status["activeVersion"]) == ("Serving", "2")
    v1, v2 = status["history"]
    assert (v1["version"], v1["reason"], v1["archive"]) == (
        "1", "SpecChanged", f"s3://model-archive/{demo.NAMESPACE}/churn/1/",
    )  # fmt: skip
    assert v2["version"] == "2" and "retiredAt" not in v2
    assert f"{demo.NAMESPACE}/churn/1/model.joblib" in archived
    assert f"{demo.NAMESPACE}/churn/1/manifest.json" in archived
