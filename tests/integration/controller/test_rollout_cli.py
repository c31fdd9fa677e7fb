"""`mlmodel rollout status|promote|abort` as real processes against the real control plane.

No operator is needed for the CLI's own job: the test writes ``status.rollout`` (or
``status.lastRollout``) through the status subresource as the operator would, runs the
console script, and reads back what it wrote. The MLModel asks for more CPU than its
limit: the schema lets that through and the operator refuses it as an invalid spec, so
an operator that another test of the session started leaves the status written here as
it is and creates nothing (reconcile.Reconciler._invalid keeps the rest of the status).
The status is still written again right before each command that depends on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import pytest
import yaml
from kubernetes import client
from mlm_helpers import GROUP, PLURAL, VERSION

from mlmodel_operator.localcluster import LocalCluster, wait_until
from mlmodel_operator.plan import ANN_ABORT, ANN_PROMOTE

pytestmark = pytest.mark.integration

MLMODEL = Path(sys.executable).parent / "mlmodel"
SHA1, SHA2 = "1" * 64, "2" * 64
NAME = "churn"


def body(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MLModel",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "version": "2",
            "artifact": {"uri": "s3://models/churn/2/model.joblib", "sha256": SHA2},
            # a request above its limit: refused by the operator, so it touches nothing
            "serving": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
            "rollout": {
                "strategy": "canary",
                "steps": [
                    {"weight": 10, "pauseSeconds": 60},
                    {"weight": 25, "pauseSeconds": 120},
                    {"weight": 50, "pauseSeconds": 300},
                ],
                "analysis": {"maxErrorRatio": 0.01, "maxP99LatencyMs": 250, "minRequests": 50},
            },
        },
    }


def running(step_started: str) -> dict[str, Any]:
    return {
        "strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2,
        "steps": 3, "step": 2, "weight": 25, "effectiveWeight": 25,
        "stepStartedAt": step_started, "result": "Progressing",
        "checks": [{"name": "errorRatio", "value": 0.0012, "limit": 0.01, "passed": True},
                   {"name": "p99LatencyMs", "value": 85.3, "limit": 250.0, "passed": True}],
        "requests": 64,
        "message": "64/50 requests; errorRatio 0.0012 (at most 0.01); p99LatencyMs 85.3 "
                   "(at most 250)",
    }  # fmt: skip


ROLLED_BACK = {
    "strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2, "steps": 3,
    "result": "RolledBack", "message": "step 2/3: errorRatio 0.2 (at most 0.01)",
    "checks": [{"name": "errorRatio", "value": 0.2, "limit": 0.01, "passed": False},
               {"name": "p99LatencyMs", "value": 40.0, "limit": 250.0, "passed": True}],
    "requests": 120,
}  # fmt: skip
PROMOTED = {
    "strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2, "steps": 3,
    "step": 3, "result": "Promoted", "message": "every step held",
}  # fmt: skip


class Model:
    """The test's MLModel: its status written as the operator would, its metadata read."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.ns = namespace
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body(namespace)
        )

    def get(self) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, NAME
        )
        return obj

    def write_status(self, status: Mapping[str, Any]) -> None:
        base = {"phase": "Deploying", "activeVersion": "1", "rollout": None, "lastRollout": None}
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ns, PLURAL, NAME, {"status": {**base, **status}},
            _content_type="application/merge-patch+json",
        )  # fmt: skip

    def annotations(self) -> dict[str, str]:
        return dict(self.get()["metadata"].get("annotations") or {})


def now_minus(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - seconds))


def mlmodel(
    cluster: LocalCluster, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [str(MLMODEL), "rollout", *args, "--kubeconfig", str(kubeconfig or cluster.kubeconfig)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def show(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_status_then_promote_then_abort_set_only_the_annotations(
    cluster: LocalCluster, crd: None, api: client.ApiClient, namespace: str
) -> None:
    model = Model(api, namespace)
    created = model.get()
    model.write_status({"rollout": running(now_minus(80))})

    status = mlmodel(cluster, "status", NAME, "-n", namespace)
    assert status.returncode == 0, show(status)
    lines = status.stdout.splitlines()
    # (phase Deploying as written here; Degraded if a session operator refused the spec)
    assert lines[0].startswith(f"MLModel {namespace}/{NAME}: canary of version 2 in progress (")
    assert lines[1] == "  versions   1 (stable) -> 2 (candidate, sha256 222222222222...)"
    assert lines[2].startswith("  step       2/3, running for 1m2") and lines[2].endswith(
        "(lasts at least 2m)"
    )  # 1m20s, or a second or two more
    assert lines[3].startswith("  weight     25% asked, 25% effective")
    assert lines[4] == "  requests   64 requests this step (50 needed: enough to judge)"
    assert lines[5].split() == ["checks", "errorRatio", "0.0012", "at", "most", "0.01", "passed"]
    assert lines[6].split() == ["p99LatencyMs", "85.3", "at", "most", "250", "passed"]
    print(status.stdout)

    as_json = mlmodel(cluster, "status", NAME, "-n", namespace, "-o", "json")
    assert as_json.returncode == 0, show(as_json)
    parsed = json.loads(as_json.stdout)
    print(as_json.stdout)
    assert (parsed["state"], parsed["minRequests"], parsed["rollout"]["candidate"]) == (
        "Progressing", 50, "2",
    )  # fmt: skip

    model.write_status({"rollout": running(now_minus(80))})
    promote = mlmodel(cluster, "promote", NAME, "-n", namespace)
    assert promote.returncode == 0, show(promote)
    assert model.annotations().get(ANN_PROMOTE) == "2"
    assert "asked the operator to promote version 2" in promote.stdout
    assert f"mlmodel rollout status {NAME} -n {namespace} --watch" in promote.stdout
    print(promote.stdout)
    again = mlmodel(cluster, "promote", NAME, "-n", namespace)
    assert again.returncode == 0 and "was already asked" in again.stdout, show(again)

    wrong = mlmodel(cluster, "abort", NAME, "-n", namespace, "--version", "3")
    assert wrong.returncode == 1, show(wrong)
    assert wrong.stderr == (
        f"mlmodel rollout abort: MLModel {NAME} in namespace {namespace}: --version 3 is not "
        "the running candidate; accepted: --version 2 (or none)\n"
    )
    assert ANN_ABORT not in model.annotations()

    model.write_status({"rollout": running(now_minus(80))})
    abort = mlmodel(cluster, "abort", NAME, "-n", namespace, "--version", "2")
    assert abort.returncode == 0, show(abort)
    print(abort.stdout)
    ours = {k: v for k, v in model.annotations().items() if k in (ANN_PROMOTE, ANN_ABORT)}
    assert ours == {ANN_PROMOTE: "2", ANN_ABORT: "2"}  # (kopf keeps its own beside them)
    # an abort pending goes before a promotion: promote now refuses
    late = mlmodel(cluster, "promote", NAME, "-n", namespace)
    assert late.returncode == 1 and "an abort goes before a promotion" in late.stderr, show(late)
    # metadata only: the spec (and so the generation) is what the user wrote
    after = model.get()
    assert after["metadata"]["generation"] == created["metadata"]["generation"]
    assert after["spec"] == created["spec"]


def test_a_rolled_back_rollout_exits_1_and_promote_is_refused(
    cluster: LocalCluster, crd: None, api: client.ApiClient, namespace: str
) -> None:
    model = Model(api, namespace)
    model.write_status({"phase": "Degraded", "lastRollout": ROLLED_BACK})
    status = mlmodel(cluster, "status", NAME, "-n", namespace)
    assert status.returncode == 1, show(status)
    assert status.stdout.splitlines()[:3] == [
        f"MLModel {namespace}/{NAME}: no canary or shadow runs; version 1 serves (phase Degraded)",
        "  last       canary of version 2 (stable 1): RolledBack",
        "  why        step 2/3: errorRatio 0.2 (at most 0.01)",
    ]
    assert "FAILED" in status.stdout
    print(status.stdout)

    model.write_status({"phase": "Degraded", "lastRollout": ROLLED_BACK})
    promote = mlmodel(cluster, "promote", NAME, "-n", namespace)
    assert promote.returncode == 1, show(promote)
    assert promote.stdout == ""
    assert promote.stderr == (
        f"mlmodel rollout promote: MLModel {NAME} in namespace {namespace}: no canary or shadow "
        "runs; the last one (canary of version 2) ended RolledBack; promote is accepted only "
        "while status.rollout names a candidate (see mlmodel rollout status)\n"
    )
    assert ANN_PROMOTE not in model.annotations()


def test_watch_prints_each_change_until_the_rollout_ends_and_has_a_limit(
    cluster: LocalCluster, crd: None, api: client.ApiClient, namespace: str
) -> None:
    model = Model(api, namespace)
    model.write_status({"rollout": running(now_minus(5))})
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}

    def watch(timeout: str) -> list[str]:
        return [str(MLMODEL), "rollout", "status", NAME, "-n", namespace, "--watch",
                "--timeout", timeout, "--kubeconfig", str(cluster.kubeconfig)]  # fmt: skip

    with subprocess.Popen(watch("60"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        lines: list[str] = []

        def read(stream: IO[str]) -> None:
            for line in stream:
                lines.append(line)

        assert proc.stdout is not None
        reader = threading.Thread(target=read, args=(proc.stdout,), daemon=True)
        reader.start()
        wait_until("the first summary", lambda: any("in progress" in x for x in lines), 30)
        # the operator would: the last step held, the candidate takes all traffic
        model.write_status({"phase": "Retiring", "activeVersion": "2", "lastRollout": PROMOTED})
        proc.wait(timeout=30)
        reader.join(timeout=5)
        err = proc.stderr.read() if proc.stderr else ""
    text = "".join(lines)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{text}\n{err}"
    assert text.startswith("[") and text.splitlines()[0].endswith("Z]"), text
    assert "canary of version 2 in progress" in text
    assert "last       canary of version 2 (stable 1): Promoted at step 3/3" in text
    print(text)

    model.write_status({"rollout": running(now_minus(5))})
    limited = subprocess.run(
        watch("3"), env=env, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert limited.returncode == 5, show(limited)
    assert limited.stderr.endswith("the rollout still runs after --timeout 3 s\n")


def test_a_missing_model_exits_3_and_a_reader_without_patch_rights_gets_one_line(
    cluster: LocalCluster, crd: None, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    for command in ("status", "promote", "abort"):
        missing = mlmodel(cluster, command, "nope", "-n", namespace)
        assert missing.returncode == 3, show(missing)
        assert missing.stderr == (
            f"mlmodel rollout {command}: MLModel nope in namespace {namespace} does not exist\n"
        )

    # a ServiceAccount that may read MLModels and not patch them
    model = Model(api, namespace)
    model.write_status({"rollout": running(now_minus(5))})
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "mlmodel-reader"},
        "rules": [{"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list"]}],
    })  # fmt: skip
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "mlmodel-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "mlmodel-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    })  # fmt: skip
    token = cluster.kubectl("create", "token", "reader", "-n", namespace).strip()
    assert cluster.pki is not None
    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "reader",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server, "certificate-authority": str(cluster.pki.ca_cert)}}],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": "local", "user": "reader"}}],
    }))  # fmt: skip
    deadline = time.monotonic() + 30  # RBAC is cached by the authorizer for a moment
    while True:
        status = mlmodel(cluster, "status", NAME, "-n", namespace, kubeconfig=kubeconfig)
        if status.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert status.returncode == 0, show(status)
    promote = mlmodel(cluster, "promote", NAME, "-n", namespace, kubeconfig=kubeconfig)
    assert promote.returncode == 4, show(promote)
    assert promote.stderr.startswith(
        f"mlmodel rollout promote: annotating MLModel {NAME} in namespace {namespace}: "
        "forbidden (HTTP 403): "
    )
    assert promote.stderr.count("\n") == 1 and "Traceback" not in promote.stderr
    print(promote.stderr)
    assert ANN_PROMOTE not in model.annotations()
