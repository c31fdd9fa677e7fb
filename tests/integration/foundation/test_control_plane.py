"""The local control plane is a real Kubernetes: controllers, scheduler, kwok, GC, CRDs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from mlmodel_operator.localcluster import LocalCluster, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture()
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        core.delete_namespace(name)


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "main", "image": "example.invalid/app:1"}],
                },
            },
        },
    }


def test_node_is_ready(cluster: LocalCluster) -> None:
    assert cluster.ready_nodes() >= 1
    out = cluster.kubectl("get", "nodes")
    assert "kwok-node-0" in out and "Ready" in out


def test_kubectl_reports_the_pinned_version(cluster: LocalCluster) -> None:
    out = cluster.kubectl("version", "-o", "json")
    assert '"gitVersion": "v1.' in out


def test_deployment_gets_pods_that_become_ready_on_the_kwok_node(
    api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("web", 3))

    def available() -> bool:
        dep = apps.read_namespaced_deployment("web", namespace)
        return (dep.status.available_replicas or 0) == 3

    wait_until("deployment web available", available, timeout=60, interval=0.25)
    replicasets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replicasets) == 1
    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 3
    for pod in pods:
        assert pod.spec.node_name == "kwok-node-0"
        assert pod.status.phase == "Running"
        ready = {c.type: c.status for c in pod.status.conditions}
        assert ready["Ready"] == "True"
        owner = pod.metadata.owner_references[0]
        assert owner.kind == "ReplicaSet" and owner.name == replicasets[0].metadata.name


def test_deleting_a_deployment_garbage_collects_its_replicaset_and_pods(
    api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    apps.create_namespaced_deployment(namespace, deployment("gc", 2))
    wait_until(
        "pods of gc",
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=gc").items) == 2,
        timeout=60,
        interval=0.25,
    )
    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Background")

    def gone() -> bool:
        rs = apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items
        pods = core.list_namespaced_pod(namespace, label_selector="app=gc").items
        return not rs and not pods

    wait_until("replicaset and pods of gc collected", gone, timeout=60, interval=0.25)


WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.mlmodel.local"},
    "spec": {
        "group": "test.mlmodel.local",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer", "minimum": 1}},
                                "required": ["size"],
                            },
                            "status": {
                                "type": "object",
                                "properties": {"phase": {"type": "string"}},
                            },
                        },
                    }
                },
            }
        ],
    },
}


def test_crd_custom_object_status_subresource_and_watch(
    api: client.ApiClient, namespace: str
) -> None:
    ext = client.ApiextensionsV1Api(api)
    ext.create_custom_resource_definition(WIDGET_CRD)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(WIDGET_CRD["metadata"]["name"])
        return any(
            c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
        )

    wait_until("widgets CRD established", established, timeout=30)
    custom = client.CustomObjectsApi(api)
    group, version, plural = "test.mlmodel.local", "v1", "widgets"

    # the schema is enforced by the server
    with pytest.raises(client.ApiException) as rejected:
        custom.create_namespaced_custom_object(
            group, version, namespace, plural,
            {"apiVersion": f"{group}/{version}", "kind": "Widget",
             "metadata": {"name": "bad"}, "spec": {"size": 0}},
        )  # fmt: skip
    assert rejected.value.status == 422

    seen: list[str] = []

    def watch_events() -> None:
        w = watch.Watch()
        for event in w.stream(
            custom.list_namespaced_custom_object,
            group, version, namespace, plural, timeout_seconds=20,
        ):  # fmt: skip
            obj = event["object"]
            seen.append(f"{event['type']}:{obj.get('status', {}).get('phase', '-')}")
            if obj.get("status", {}).get("phase") == "Done":
                w.stop()

    watcher = threading.Thread(target=watch_events, daemon=True)
    watcher.start()
    time.sleep(0.5)  # let the watch open before the first write
    custom.create_namespaced_custom_object(
        group, version, namespace, plural,
        {"apiVersion": f"{group}/{version}", "kind": "Widget",
         "metadata": {"name": "w1"}, "spec": {"size": 2}},
    )  # fmt: skip
    # status can only be written through the status subresource
    custom.patch_namespaced_custom_object(
        group, version, namespace, plural, "w1", {"status": {"phase": "Ignored"}}
    )
    obj = custom.get_namespaced_custom_object(group, version, namespace, plural, "w1")
    assert "status" not in obj or obj["status"].get("phase") != "Ignored"
    custom.patch_namespaced_custom_object_status(
        group, version, namespace, plural, "w1", {"status": {"phase": "Done"}}
    )
    watcher.join(timeout=25)
    assert not watcher.is_alive()
    assert seen[0] == "ADDED:-"
    assert seen[-1] == "MODIFIED:Done"
    ext.delete_custom_resource_definition(WIDGET_CRD["metadata"]["name"])
