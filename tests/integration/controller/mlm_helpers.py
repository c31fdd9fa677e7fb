"""Helpers for the operator's integration tests: the operator process, the MLModel API."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config

from mlmodel_operator.localcluster import (
    MinioServer,
    wait_until,
)

GROUP, VERSION, PLURAL = "ml.lifecycle.io", "v1alpha1", "mlmodels"
SECRET_NAME = "mlmodel-s3-credentials"


@dataclass(frozen=True)
class Artifact:
    uri: str
    sha256: str
    size: int


class Models:
    """Small helpers over the MLModel API for one namespace."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)
        self.ns = namespace

    def body(self, name: str, version: str, art: Artifact, **spec: Any) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MLModel",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "version": version,
                "artifact": {"uri": art.uri, "sha256": art.sha256},
                "retirement": {"drainSeconds": 1},
                **spec,
            },
        }

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, body
        )
        return result

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec}
        )
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.ns, PLURAL, name
        )
        return result

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def wait_gone(self, name: str, timeout: float) -> None:
        """Wait until the MLModel is gone (its finalizer ran), with a limit."""
        wait_until(f"MLModel {name} gone", lambda: not self.exists(name), timeout, interval=0.25)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for cond in self.status(name).get("conditions", []):
            if cond["type"] == type_:
                return dict(cond)
        return {}

    def deployments(self, name: str) -> dict[str, Any]:
        items = self.apps.list_namespaced_deployment(
            self.ns, label_selector=f"ml.lifecycle.io/model={name}"
        ).items
        return {d.metadata.name: d for d in items if d.metadata.deletion_timestamp is None}

    def service_version(self, name: str) -> str | None:
        try:
            svc = self.core.read_namespaced_service(name, self.ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str((svc.spec.selector or {}).get("ml.lifecycle.io/version"))

    def events(self, name: str) -> list[tuple[str, str]]:
        items = self.core.list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},involvedObject.kind=MLModel"
        ).items
        # In the order they were created: the operator creates each Event once, so its
        # resourceVersion (etcd's revision) orders them; timestamps have one-second
        # resolution and two events of one reconcile often share the second.
        items.sort(key=lambda e: int(e.metadata.resource_version))
        return [(e.reason, e.message) for e in items]

    def wait_events(self, name: str, *reasons: str, timeout: float = 30) -> list[tuple[str, str]]:
        """The model's Events once every one of ``reasons`` is among them. The operator
        posts a reconcile's Events after writing its status, through kopf's queue, so a
        status a test has seen can be ahead of the Events that go with it."""

        def posted() -> bool:
            seen = {reason for reason, _ in self.events(name)}
            return all(reason in seen for reason in reasons)

        try:
            wait_until(f"{name} events {', '.join(reasons)}", posted, timeout, interval=0.25)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; events are {self.events(name)}") from None
        return self.events(name)

    def wait_phase(
        self, name: str, phase: str, timeout: float = 60, version: str | None = None
    ) -> dict[str, Any]:
        def reached() -> bool:
            st = self.status(name)
            return st.get("phase") == phase and (
                version is None or st.get("activeVersion") == version
            )

        try:
            wait_until(f"{name} phase {phase}", reached, timeout, interval=0.25)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; status is {self.status(name)}") from None
        return self.status(name)


@contextlib.contextmanager
def models_namespace(kubeconfig: Path, minio: MinioServer, prefix: str) -> Iterator[Models]:
    """A fresh namespace of the cluster ``kubeconfig`` reaches, holding the Secret the
    serving Pods read, as Models helpers; deleted afterwards."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    ns = f"{prefix}-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_secret(
        ns,
        {
            "metadata": {"name": SECRET_NAME},
            "stringData": {"accessKey": minio.access_key, "secretKey": minio.secret_key},
        },
    )
    try:
        yield Models(api, ns)
    finally:
        core.delete_namespace(ns)
        api.close()
