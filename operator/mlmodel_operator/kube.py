"""Every Kubernetes API call the operator makes, and nothing else.

Objects go in and come out as plain dicts. Owned objects are written with server-side
apply under one field manager, so a GitOps tool and the operator never fight over
fields, and re-running any call is safe.

The operator only ever changes or deletes an object whose controller owner reference is
the MLModel it works for: :meth:`Kube.apply` and :meth:`Kube.delete_owned` read the object
first and raise :class:`NotControlled` for one held by anyone else, and their write carries
the uid and resourceVersion of what was read, so an object replaced or re-owned in between
is refused by the apiserver rather than written.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client, config

from mlmodel_operator import GROUP, PLURAL, VERSION
from mlmodel_operator.desired import MODEL_LABEL, controlled_by, controller_reference, holder

FIELD_MANAGER = "mlmodel-operator"


class ApiError(Exception):
    """The apiserver answered with an error status."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        try:
            message = json.loads(body).get("message", "")
        except ValueError:
            message = body[:200].decode(errors="replace")
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message


class ApiConflict(ApiError):
    """HTTP 409: the object changed since it was read (a resourceVersion or uid
    precondition failed), or it already exists."""


class NotFound(Exception):
    """The object does not exist (HTTP 404)."""


class NotControlled(Exception):
    """An object with the name the operator needs exists, and the MLModel does not control
    it; the operator leaves it as it is."""

    def __init__(self, kind: str, namespace: str, name: str, holder: str) -> None:
        super().__init__(
            f"{kind} {namespace}/{name} exists and is not controlled by this MLModel ({holder})"
        )
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.holder = holder


class ApiUnreachable(Exception):
    """The apiserver did not answer in time, or could not be reached."""


# Every call is bounded: an apiserver that hangs costs a reconcile seconds, never the
# model's lock and a worker for good (the client's default has no timeout at all).
API_CONNECT_TIMEOUT = 5.0
API_READ_TIMEOUT = 20.0

# Connections kept open to the apiserver (at least; the operator asks for one per worker).
CONNECTIONS = 32

# Reads and writes of one object that another writer may change in between: tried again
# on 409 this many times, then the 409 is the reconcile's error (kopf retries it).
WRITE_ATTEMPTS = 3
# A resourceVersion no stored object has: server-side apply ignores the resourceVersion
# of an object it creates (kube-apiserver's generic store checks it only on update), and
# refuses an update whose resourceVersion differs with 409. Sent when the object was not
# there, so one that someone made since is never taken over.
CREATE_ONLY = str(2**64 - 1)


def load_api_client(
    kubeconfig: str | None = None, connections: int | None = None
) -> client.ApiClient:
    """An API client from a kubeconfig file, else in-cluster, else the default kubeconfig.

    Its connections make no retries of their own (urllib3 retries a GET that timed out
    three times by default): a failed call fails the reconcile, which kopf retries.
    """
    cfg = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(client_configuration=cfg)
    cfg.retries = False
    # one kept-alive connection per reconcile thread (the default, 5 per core, is fewer
    # than the workers: the rest would open a new TLS connection per request)
    cfg.connection_pool_maxsize = max(cfg.connection_pool_maxsize or 0, connections or CONNECTIONS)
    return client.ApiClient(configuration=cfg)


def _unreachable(method: str, path: str, api: client.ApiClient, exc: BaseException) -> str:
    where = str(api.configuration.host)
    refused = isinstance(exc, urllib3.exceptions.NewConnectionError)  # a ConnectTimeoutError
    if not refused and isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return (
            f"{method} {path}: no answer from {where} in time (connect timeout "
            f"{API_CONNECT_TIMEOUT:g} s, read timeout {API_READ_TIMEOUT:g} s)"
        )
    return f"{method} {path}: cannot reach {where} ({type(exc).__name__}: {exc})"


def path_for(obj: dict[str, Any]) -> str:
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    ns = obj["metadata"].get("namespace")
    name = obj["metadata"]["name"]
    plural = {
        "Deployment": "deployments",
        "Service": "services",
        "ConfigMap": "configmaps",
        "ServiceMonitor": "servicemonitors",
        "PrometheusRule": "prometheusrules",
    }.get(kind)
    if plural is None:
        raise ValueError(f"kube.apply does not know kind {kind!r}")
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{ns}/{plural}/{name}" if ns else f"{base}/{plural}/{name}"


class Kube:
    """A thin wrapper over one ``kubernetes.client.ApiClient``; made once at start-up."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        api = self.api_client
        method, url, headers, body, post = api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = api.call_api(
                method,
                url,
                header_params=headers,
                body=body,
                post_params=post,
                _request_timeout=(API_CONNECT_TIMEOUT, API_READ_TIMEOUT),
            )
            data = resp.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiUnreachable(_unreachable(method, path, api, exc)) from None
        if resp.status == 404:
            raise NotFound(path)
        if resp.status == 409:
            raise ApiConflict(method, path, resp.status, data)
        if not 200 <= resp.status < 300:
            raise ApiError(method, path, resp.status, data)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    # -- owned objects

    def _get(self, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any] | None:
        try:
            return self._call("GET", path, query=query)
        except NotFound:
            return None

    def _read(self, kind: str, path: str) -> dict[str, Any] | None:
        """The object at ``path`` as stored now, or None. Deployments are read by a list of
        one name: the operator's ClusterRole lists Deployments and has no `get` on them."""
        if kind != "Deployment":
            return self._get(path)
        collection, name = path.rsplit("/", 1)
        found = self._call("GET", collection, query=[("fieldSelector", f"metadata.name={name}")])
        items: list[dict[str, Any]] = found.get("items") or []
        return items[0] if items else None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply ``obj`` (create or update) as the operator's field manager.

        ``obj`` names its controller in ``ownerReferences``; an existing object with another
        controller, or none, is not written: NotControlled says who holds it.
        """
        owner = controller_reference(obj)
        if owner is None:
            raise ValueError(
                f"kube.apply writes owned objects only; {path_for(obj)} has no controller"
            )
        path, meta = path_for(obj), obj["metadata"]
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            current = self._read(obj["kind"], path)
            if current is not None and not controlled_by(current, str(owner.get("uid"))):
                raise NotControlled(
                    obj["kind"], meta.get("namespace", ""), meta["name"], holder(current)
                )
            guard = (
                {
                    "uid": current["metadata"]["uid"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                }
                if current is not None
                else {"resourceVersion": CREATE_ONLY}
            )
            try:
                return self.apply_guarded(obj, guard)
            except ApiConflict:
                if attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def apply_guarded(self, obj: dict[str, Any], guard: dict[str, str]) -> dict[str, Any]:
        """One server-side apply of ``obj`` with ``guard`` (the uid and resourceVersion it
        must still have, or ``CREATE_ONLY``) in its metadata; ApiConflict when it does not."""
        return self._call(
            "PATCH",
            path_for(obj),
            body={**obj, "metadata": {**obj["metadata"], **guard}},
            content_type="application/apply-patch+yaml",
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        )

    def unchanged(self, obj: Mapping[str, Any], digest: str) -> bool | None:
        """Whether ``obj``'s stored copy is what the operator last applied with ``digest``,
        known without a request; None: not known (this class keeps no copies)."""
        return None

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        """Delete an object of a kind ``apply`` knows if ``owner_uid`` controls it; False when
        it was not there. One held by anyone else raises NotControlled and stays."""
        path = path_for(
            {
                "apiVersion": api_version,
                "kind": kind,
                "metadata": {"namespace": namespace, "name": name},
            }
        )
        current = self._read(kind, path)
        if current is None:
            return False
        if not controlled_by(current, owner_uid):
            raise NotControlled(kind, namespace, name, holder(current))
        preconditions = {
            "uid": current["metadata"]["uid"],
            "resourceVersion": current["metadata"]["resourceVersion"],
        }
        try:
            self._call(
                "DELETE",
                path,
                body={"preconditions": preconditions, "propagationPolicy": "Background"},
            )
        except NotFound:
            return False
        return True

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        """The Deployments of one model: carrying its label and controlled by it (a label
        alone can be copied onto anything)."""
        result = self._call(
            "GET",
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            query=[("labelSelector", f"{MODEL_LABEL}={model}")],
        )
        items: list[dict[str, Any]] = result.get("items", [])
        return [d for d in items if controlled_by(d, owner_uid)]

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Deployment by name, whoever holds it, or None."""
        return self._read("Deployment", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")

    def get_service(
        self, namespace: str, name: str, *, read_if_missing: bool = True
    ) -> dict[str, Any] | None:
        """The Service, or None. ``read_if_missing``: for a client that keeps the
        operator's own objects in memory, whether to ask the apiserver about one it does
        not hold (this one always asks)."""
        return self._get(f"/api/v1/namespaces/{namespace}/services/{name}")

    def get_own_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A Service of the operator's by name, or None (no one else's is of interest)."""
        return self.get_service(namespace, name)

    def secret_exists(self, namespace: str, name: str) -> bool:
        """Whether a Secret exists. Asks for its metadata only (PartialObjectMetadata), so
        the Secret's data never reaches the operator; RBAC can limit this `get` to the one
        Secret name (resourceNames)."""
        try:
            self._call(
                "GET",
                f"/api/v1/namespaces/{namespace}/secrets/{name}",
                accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
            )
        except NotFound:
            return False
        return True

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        """The data keys of a Secret, or None when it does not exist.

        The apiserver only sends a Secret whole, values included: they are dropped here,
        before the call returns, and never logged or kept. Raises ApiError (403) where
        RBAC does not let the operator get this Secret.
        """
        try:
            secret = self._call("GET", f"/api/v1/namespaces/{namespace}/secrets/{name}")
        except NotFound:
            return None
        return frozenset(secret.get("data") or {}) | frozenset(secret.get("stringData") or {})

    def annotate_deployment(
        self, namespace: str, name: str, uid: str, annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        """Merge-patch annotations (``None`` removes one) of the Deployment with this uid
        (one listed as the model's): the apiserver refuses the patch for another object
        of the same name (metadata.uid is immutable)."""
        return self._call(
            "PATCH",
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
            body={"metadata": {"uid": uid, "annotations": annotations}},
            content_type="application/merge-patch+json",
        )

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        """Delete one Deployment, only if it is still the object we looked at (uid)."""
        with contextlib.suppress(NotFound):
            self._call(
                "DELETE",
                f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
            )

    # -- the MLModel itself

    def held_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The MLModel as a watch last showed it, without a request; None when not kept
        (this class keeps nothing)."""
        return None

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}")

    def patch_model_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Write the whole computed status through the status subresource; the object as
        the apiserver stored it.

        With ``resource_version`` (that of the object the status was computed from) the
        apiserver refuses the write with 409 (ApiConflict) when the object has changed
        since: a status computed from an older one never overwrites a newer one.
        """
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return self._call(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status",
            body=body,
            content_type="application/merge-patch+json",
        )

    def crd_established(self, name: str) -> bool:
        """Whether a CustomResourceDefinition exists and serves (e.g. the Prometheus operator's)."""
        try:
            crd = self._call(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
        except NotFound:
            return False
        return any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in crd.get("status", {}).get("conditions", [])
        )
