"""The operator's own Deployments and Services, kept in memory from watches.

A reconcile used to read a model's Deployments (a LIST) and its Service (a GET) from the
apiserver every time, timer included: with a thousand models that is most of the
operator's requests while nothing changes. Here they come from memory instead:

- kopf watches Deployments and Services labelled ``app.kubernetes.io/managed-by=
  mlmodel-operator`` (the label selector is sent to the apiserver, so nothing else in the
  cluster reaches the operator) and hands every object it sees to :meth:`OwnedCache.seen`
  from an index handler, which kopf runs for the initial listing before any other handler:
  no reconcile reads the cache before it holds every object that existed at start-up;
- what the operator writes itself goes in at once (:meth:`OwnedCache.wrote`), so the next
  reconcile never acts on an older picture than its own last write (a Deployment made a
  moment ago is not made again with a new timestamp);
- an event older than what is held is ignored (resourceVersions compared as integers,
  which etcd's revisions are; one that is not an integer is taken as newer).

Only what the planner reads is kept: metadata without ``managedFields``, the replica
count and the selector, and the status; a Deployment's Pod template is not.

:class:`CachedKube` answers :class:`~mlmodel_operator.kube.Kube`'s reads of those objects
from the cache and writes through it. Every write still carries the uid and
resourceVersion it was computed from (from the cache); a stale one gets 409, and the write
is retried the old way, reading the object first. Whether a Secret exists is remembered
for about ``SECRET_TTL_SECONDS`` once it does; a missing one is asked about every time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from mlmodel_operator.desired import MODEL_LABEL, controlled_by, controller_reference
from mlmodel_operator.kube import CREATE_ONLY, ApiConflict, Kube

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "mlmodel-operator"
OWNED_SELECTOR: Final = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
CACHED_KINDS: Final = ("Deployment", "Service", "ServiceMonitor", "PrometheusRule")
# The annotation that carries the digest of what the operator applied to an object.
APPLIED_HASH_ANNOTATION: Final = "ml.lifecycle.io/applied-hash"
# A Secret seen to exist is taken to exist for this long (its deletion is noticed within
# it); one that does not exist is looked up on every reconcile until it does.
SECRET_TTL_SECONDS: Final = 300.0
# Each sighting lasts a random 90-100% of SECRET_TTL_SECONDS: the Secrets a restart's
# reconciles looked up in one second are not all looked up again in one second.
SECRET_TTL_SPREAD: Final = 0.1
# Objects the operator deleted whose DELETED event has not come yet, remembered so a
# late event of theirs does not bring them back; past this many the oldest are forgotten.
TOMBSTONES_KEPT: Final = 4096
# Generations of the operator's own writes remembered (four objects per model).
WRITTEN_KEPT: Final = 65536

_Key = tuple[str, str, str]  # (kind, namespace, name)


def revision(obj: Mapping[str, Any] | None) -> int | None:
    """An object's resourceVersion as an integer (the apiserver's are), None when it has
    none or one that is not an integer."""
    value = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        return None


# The annotations the operator reads are its own (ml.lifecycle.io/...); of an MLModel,
# kopf's copy of the whole spec is not read and not kept.
OWN_ANNOTATIONS: Final = "ml.lifecycle.io/"
KOPF_DIFFBASE: Final = "ml.lifecycle.io/last-handled-configuration"
# What the planner reads of a Deployment's status (not its conditions and their messages).
DEPLOYMENT_STATUS: Final = (
    "observedGeneration",
    "replicas",
    "updatedReplicas",
    "readyReplicas",
    "availableReplicas",
)


def trim(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What the cache keeps of an object: enough for the planner and for a write's
    preconditions, not the Pod template, the field managers or others' annotations."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    notes = meta.get("annotations") or {}
    if kind == "MLModel":
        meta["annotations"] = {k: v for k, v in notes.items() if k != KOPF_DIFFBASE}
    else:
        meta["annotations"] = {k: v for k, v in notes.items() if k.startswith(OWN_ANNOTATIONS)}
    spec = obj.get("spec") or {}
    kept: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": kind, "metadata": meta}
    if kind == "Deployment":
        kept["spec"] = {k: spec[k] for k in ("replicas", "selector") if k in spec}
    elif kind == "Service":
        kept["spec"] = {k: spec[k] for k in ("selector", "type") if k in spec}
    elif kind == "MLModel":  # the whole object: a reconcile plans from it
        kept["spec"] = spec
    status = obj.get("status")
    if status is not None and kind == "Deployment":
        kept["status"] = {k: status[k] for k in DEPLOYMENT_STATUS if k in status}
    elif status is not None:
        kept["status"] = status
    return kept


class OwnedCache:
    """The operator's Deployments and Services by (kind, namespace, name); thread-safe.

    A kind answers only once :meth:`mark_synced` was called for it (kopf has listed it);
    before that, :class:`CachedKube` reads the apiserver as it always did.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[_Key, dict[str, Any]] = {}
        # (namespace, model label) -> names of that model's Deployments
        self._by_model: dict[tuple[str, str], set[str]] = {}
        self._synced: set[str] = set()
        # key -> uid of an object the operator deleted, until its DELETED event comes
        self._gone: dict[_Key, str] = {}
        # key -> metadata.generation of the operator's last write of it
        self._written: dict[_Key, int] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def mark_synced(self, *kinds: str) -> None:
        """kopf has listed these kinds: the cache answers for them from now on."""
        with self._lock:
            self._synced.update(kinds)

    def synced(self, kind: str) -> bool:
        with self._lock:
            return kind in self._synced

    def seen(self, kind: str, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        """An object of ``kind`` as a watch delivered it, or as the apiserver answered the
        operator's own write (``deleted``: its DELETED event)."""
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        uid = meta.get("uid")
        with self._lock:
            if self._gone.get(key) == uid:
                if deleted:
                    del self._gone[key]
                return  # a late event of an object the operator deleted
            held = self._objects.get(key)
            if held is not None and not self._newer(obj, held):
                return
            if deleted:
                if held is None or held["metadata"].get("uid") == uid:
                    self._drop(key)
                return
            self._put(key, trim(kind, obj))

    def wrote(self, kind: str, obj: Mapping[str, Any]) -> None:
        """An object as the apiserver answered the operator's own write of it."""
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        self.seen(kind, obj)
        with self._lock:
            self._written.pop(key, None)
            if isinstance(meta.get("generation"), int):
                self._written[key] = meta["generation"]
                while len(self._written) > WRITTEN_KEPT:
                    del self._written[next(iter(self._written))]

    def unchanged(self, kind: str, namespace: str, name: str, digest: str) -> bool | None:
        """Whether the object is held, carries ``digest`` as the operator's applied hash,
        and nobody changed its spec since the operator wrote it (its generation is the one
        that write left; after a restart, not known: the annotation alone decides).
        None while the kind is not synced (not known without a request)."""
        key = (kind, namespace, name)
        with self._lock:
            if kind not in self._synced:
                return None
            held = self._objects.get(key)
            if held is None:
                return False
            meta = held["metadata"]
            if (meta.get("annotations") or {}).get(APPLIED_HASH_ANNOTATION) != digest:
                return False
            written = self._written.get(key)
            return written is None or meta.get("generation") == written

    def removed(self, kind: str, namespace: str, name: str, uid: str) -> None:
        """The operator deleted this object (the watch's DELETED event follows)."""
        key = (kind, namespace, name)
        with self._lock:
            held = self._objects.get(key)
            if held is not None and held["metadata"].get("uid") == uid:
                self._drop(key)
            self._gone.pop(key, None)
            self._gone[key] = uid
            while len(self._gone) > TOMBSTONES_KEPT:
                del self._gone[next(iter(self._gone))]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._objects.get((kind, namespace, name))

    def deployments(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """The Deployments carrying ``model``'s label in ``namespace``, whoever controls them."""
        with self._lock:
            names = sorted(self._by_model.get((namespace, model), ()))
            return [self._objects[("Deployment", namespace, n)] for n in names]

    @staticmethod
    def _newer(obj: Mapping[str, Any], held: Mapping[str, Any]) -> bool:
        incoming, current = revision(obj), revision(held)
        return incoming is None or current is None or incoming >= current

    def _put(self, key: _Key, obj: dict[str, Any]) -> None:
        self._drop(key)
        self._objects[key] = obj
        if key[0] == "Deployment":
            model = ((obj["metadata"].get("labels") or {}).get(MODEL_LABEL)) or ""
            self._by_model.setdefault((key[1], model), set()).add(key[2])

    def _drop(self, key: _Key) -> None:
        old = self._objects.pop(key, None)
        if old is None or key[0] != "Deployment":
            return
        model = ((old["metadata"].get("labels") or {}).get(MODEL_LABEL)) or ""
        names = self._by_model.get((key[1], model))
        if names is not None:
            names.discard(key[2])
            if not names:
                del self._by_model[(key[1], model)]


class CachedKube(Kube):
    """:class:`Kube` whose reads of the operator's Deployments and Services come from an
    :class:`OwnedCache`, and whose writes of them go into it."""

    def __init__(
        self,
        api_client: Any,
        cache: OwnedCache,
        clock: Callable[[], float] = time.monotonic,
        secret_ttl: float = SECRET_TTL_SECONDS,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(api_client)
        self.cache = cache
        self.clock = clock
        self.secret_ttl = secret_ttl
        self.rand = rand
        self._secrets_lock = threading.Lock()
        self._secret_lookup = threading.Lock()
        # (namespace, name) -> (when the sighting ends, its key names or None for "exists")
        self._secrets: dict[tuple[str, str], tuple[float, frozenset[str] | None]] = {}

    # -- reads

    def list_deployments(self, namespace: str, model: str, owner_uid: str) -> list[dict[str, Any]]:
        if not self.cache.synced("Deployment"):
            return super().list_deployments(namespace, model, owner_uid)
        return [d for d in self.cache.deployments(namespace, model) if controlled_by(d, owner_uid)]

    def get_service(
        self, namespace: str, name: str, *, read_if_missing: bool = True
    ) -> dict[str, Any] | None:
        """The Service from the cache when it is one of the operator's; otherwise read
        when ``read_if_missing``, so one someone else made with that name is seen before
        anything is rolled out behind it (a model at rest has its Service in the cache:
        no request).

        That read is answered from the apiserver's watch cache (resourceVersion 0), not
        etcd: a new model's first reconcile makes it, and in a burst of new models the
        quorum read was one of the slowest steps before the Deployment. A Service made in
        the instant before the look may be missed, as one made between the look and the
        apply always could be: the Service's apply (create-only while the cache holds
        none) refuses it then, and the reconcile plans with the conflict."""
        if not self.cache.synced("Service"):
            return super().get_service(namespace, name)
        held = self.cache.get("Service", namespace, name)
        if held is not None or not read_if_missing:
            return held
        return self._get(
            f"/api/v1/namespaces/{namespace}/services/{name}", query=[("resourceVersion", "0")]
        )

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Deployment if the cache holds it; one it does not (someone else's) is found
        by the apply, whose CREATE_ONLY precondition fails (409): it reads the object and
        refuses it (NotControlled), and the reconcile plans with the conflict."""
        if not self.cache.synced("Deployment"):
            return super().get_deployment(namespace, name)
        return self.cache.get("Deployment", namespace, name)

    def get_own_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        if not self.cache.synced("Service"):
            return super().get_own_service(namespace, name)
        return self.cache.get("Service", namespace, name)

    def secret_exists(self, namespace: str, name: str) -> bool:
        if self._secret_seen(namespace, name) is not None:
            return True
        with self._secret_lookup:  # one lookup at a time: a namespace's models ask together
            if self._secret_seen(namespace, name) is not None:
                return True
            found = super().secret_exists(namespace, name)
            if found:
                self._remember_secret(namespace, name, None)
        return found

    def secret_keys(self, namespace: str, name: str) -> frozenset[str] | None:
        seen = self._secret_seen(namespace, name)
        if seen is not None and seen[1] is not None:
            return seen[1]
        with self._secret_lookup:
            seen = self._secret_seen(namespace, name)
            if seen is not None and seen[1] is not None:
                return seen[1]
            keys = super().secret_keys(namespace, name)
            if keys is not None:
                self._remember_secret(namespace, name, keys)
        return keys

    def _secret_seen(self, namespace: str, name: str) -> tuple[float, frozenset[str] | None] | None:
        now = self.clock()
        with self._secrets_lock:
            seen = self._secrets.get((namespace, name))
            if seen is not None and now >= seen[0]:
                del self._secrets[(namespace, name)]
                return None
            return seen

    def _remember_secret(self, namespace: str, name: str, keys: frozenset[str] | None) -> None:
        now = self.clock()
        ends = now + self.secret_ttl * (1.0 - SECRET_TTL_SPREAD * self.rand())
        with self._secrets_lock:
            for key in [k for k, v in self._secrets.items() if now >= v[0]]:
                del self._secrets[key]
            self._secrets[(namespace, name)] = (ends, keys)

    def held_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get("MLModel", namespace, name)

    def get_model(self, namespace: str, name: str) -> dict[str, Any]:
        found = super().get_model(namespace, name)
        self.cache.seen("MLModel", found)
        return found

    # -- writes

    def patch_model_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        written = super().patch_model_status(namespace, name, status, resource_version)
        self.cache.seen("MLModel", written)
        return written

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the preconditions taken from the cache: one request
        when the cache is current; on 409 (it was not, or the object is not one the
        cache holds) the object is read and the write made as :meth:`Kube.apply` does."""
        kind, meta = obj["kind"], obj["metadata"]
        owner = controller_reference(obj)
        if kind not in CACHED_KINDS or owner is None:
            return self._wrote(kind, super().apply(obj))
        held = self.cache.get(kind, meta.get("namespace", ""), meta["name"])
        if held is not None and not controlled_by(held, str(owner.get("uid"))):
            return super().apply(obj)  # reads it, and refuses it: NotControlled
        guard = (
            {"uid": held["metadata"]["uid"], "resourceVersion": held["metadata"]["resourceVersion"]}
            if held is not None
            else {"resourceVersion": CREATE_ONLY}
        )
        try:
            written = self.apply_guarded(obj, guard)
        except ApiConflict:  # the cache was behind, or someone else's object: read, write
            written = super().apply(obj)
        return self._wrote(kind, written)

    def annotate_deployment(
        self, namespace: str, name: str, uid: str, annotations: dict[str, str | None]
    ) -> dict[str, Any]:
        written = super().annotate_deployment(namespace, name, uid, annotations)
        return self._wrote("Deployment", written)

    def delete_deployment(self, namespace: str, name: str, uid: str) -> None:
        super().delete_deployment(namespace, name, uid)
        self.cache.removed("Deployment", namespace, name, uid)

    def delete_owned(
        self, api_version: str, kind: str, namespace: str, name: str, owner_uid: str
    ) -> bool:
        if kind not in CACHED_KINDS or not self.cache.synced(kind):
            return super().delete_owned(api_version, kind, namespace, name, owner_uid)
        held = self.cache.get(kind, namespace, name)
        if held is None:  # not one of the operator's objects: nothing of this model to delete
            return False
        deleted = super().delete_owned(api_version, kind, namespace, name, owner_uid)
        self.cache.removed(kind, namespace, name, str(held["metadata"].get("uid") or ""))
        return deleted

    def _wrote(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        if kind in CACHED_KINDS:
            self.cache.wrote(kind, obj)
        return obj

    def unchanged(self, obj: Mapping[str, Any], digest: str) -> bool | None:
        meta = obj["metadata"]
        return self.cache.unchanged(obj["kind"], meta.get("namespace", ""), meta["name"], digest)
