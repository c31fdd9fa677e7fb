"""kopf registrations, and nothing else: each handler hands the object to the reconciler
(which writes the status once) and posts the Events it returns.

No side effects at import time: :func:`build_registry` makes a registry that
``mlmodel run`` passes to kopf; the clients are made in the startup handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import kopf
from prometheus_client import CollectorRegistry, start_http_server

from mlmodel_operator import GROUP, KIND, PLURAL, VERSION
from mlmodel_operator.archive import (
    S3_COPY_READ_TIMEOUT,
    ArchiveError,
    S3Archiver,
    ensure_bucket,
    make_store_client,
    no_archive,
)
from mlmodel_operator.decision_log import DecisionLogCheck
from mlmodel_operator.kube import Kube, load_api_client
from mlmodel_operator.ledger import S3Ledger
from mlmodel_operator.memtrim import trim_periodically
from mlmodel_operator.metrics import OperatorMetrics
from mlmodel_operator.monitoring_sync import recheck_crds
from mlmodel_operator.objcache import (
    MANAGED_BY,
    MANAGED_BY_VALUE,
    OWNED_SELECTOR,
    CachedKube,
    OwnedCache,
)
from mlmodel_operator.peering import KubePeeringApi, Peering
from mlmodel_operator.probes import ProbeAddress, ProbeServer
from mlmodel_operator.reconcile import Outcome, Reconciler, archive_retry_delay
from mlmodel_operator.settings import Settings
from mlmodel_operator.verify import ArtifactVerifier
from mlmodel_operator.wakeups import Due, Wakeups

RESOURCE = (GROUP, VERSION, PLURAL)


def _publish(body: kopf.Body, outcome: Outcome) -> None:
    """Post the reconcile's Events (the reconciler has written the status)."""
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _reconcile(body: kopf.Body, memo: kopf.Memo) -> None:
    """Reconcile one MLModel; the reconciler writes its status and names its next look
    (wakeups.py), so nothing here asks kopf to call again."""
    # kopf calls no handler before every index handler has seen its kind's listing
    memo.owned.mark_synced(*(kind for *_, kind in OWNED_RESOURCES))
    reconciler: Reconciler = memo.reconciler
    metrics: OperatorMetrics = memo.metrics
    started = time.perf_counter()
    try:
        outcome = reconciler.reconcile(body)
        _publish(body, outcome)
    except Exception:
        metrics.reconciles.labels(result="error").inc()
        raise
    finally:
        metrics.duration.observe(time.perf_counter() - started)
    metrics.set_phase(body["metadata"]["uid"], outcome.status.get("phase"))
    result = "ok" if outcome.requeue_after is None else "requeued"
    metrics.reconciles.labels(result=result).inc()


def _identity(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """An MLModel known only by its identity: the reconciler reads it."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
    }


def _held_or_identity(memo: Any, namespace: str, name: str, uid: str) -> dict[str, Any]:
    """The MLModel as the watch last showed it, or its identity when not held."""
    held = memo.owned.get(KIND, namespace, name)
    if held is not None and held["metadata"].get("uid") == uid:
        return cast(dict[str, Any], held)
    return _identity(namespace, name, uid)


def _active(peering: Peering | None) -> Callable[[], bool]:
    """Whether this replica acts now: always when alone, else while it leads the peering."""
    return lambda: peering is None or peering.state.active


async def _run_wakeups(memo: Any, executor: Any, active: Callable[[], bool]) -> None:
    """Reconcile each model when its reconcile asked, or its periodic look is due (on a
    standby replica, ``active()`` false, the due are postponed)."""
    loop = asyncio.get_running_loop()

    async def wake(due: Due) -> None:
        body = _held_or_identity(memo, due.namespace, due.name, due.uid)
        # in the context of kopf's handlers, which holds its queue for posting Events
        run = memo.kopf_context.run()
        await loop.run_in_executor(executor, run, _reconcile, cast(kopf.Body, body), memo)

    wakeups: Wakeups = memo.wakeups
    await wakeups.run(wake, active=active)


OWNED = {MANAGED_BY: MANAGED_BY_VALUE}
# (group, version, plural, kind) of the objects the operator makes, kept in objcache.py
OWNED_RESOURCES = (
    ("apps", "v1", "deployments", "Deployment"),
    ("", "v1", "services", "Service"),
    ("monitoring.coreos.com", "v1", "servicemonitors", "ServiceMonitor"),
    ("monitoring.coreos.com", "v1", "prometheusrules", "PrometheusRule"),
)


def _not_a_requeue(record: logging.LogRecord) -> bool:
    """False for kopf's log line about a handler that asked to be called again later
    (TemporaryError): a wait, not a failure, which kopf posts as an Event of type Error.
    Only a deletion waiting for its archive asks that now (with its own Warning Event
    that says why); a reconcile's waits are wake-ups (wakeups.py)."""
    return "failed temporarily" not in record.getMessage()


def _quiet_requeues() -> None:
    """Keep kopf from posting its retries as Events (the log keeps them)."""
    for handler in logging.getLogger("kopf.objects").handlers:
        if type(handler).__name__ == "K8sPoster" and _not_a_requeue not in handler.filters:
            handler.addFilter(_not_a_requeue)


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


def _to_reconcile(finalizer: str) -> Callable[..., bool]:
    """Which MLModel events may need a reconcile: those of a model that has the
    finalizer that archives it on deletion (kopf adds it at once, and that change comes
    here) and is not being deleted (the finalizer's handler has it then). An
    event-driven handler, not kopf's create/update/resume: those annotate the object
    after every call, which is one more PATCH and a conflict for the status write
    planned from the body before it. The initial listing (type None) comes here too."""

    def wanted(type: str | None, body: kopf.Body, **_: Any) -> bool:
        meta = body.metadata
        return (
            type != "DELETED"
            and not meta.get("deletionTimestamp")
            and finalizer in (meta.get("finalizers") or [])
        )

    return wanted


_NO_ESSENCE = cast(kopf.BodyEssence, {})


class _NoDiffBase(kopf.DiffBaseStorage):
    """kopf's change detection, turned off: every event shows kopf the essence it last
    handled, so it never writes its copy of the spec onto the object (a PATCH per
    creation and per change, which made the status write planned from the body before
    it a conflict, and a read). The reconciles are level-based and need no diff; the
    "reconcile" event handler decides which events need one. Deletion is still kopf's:
    it goes by the deletionTimestamp and the finalizer.

    Both sides are one empty essence: kopf's own would deep-copy the body twice per
    event of every watched kind, Deployments' status updates included (15% of the
    operator's time holding the GIL in a burst of 1,000 models), only to find them
    equal."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return _NO_ESSENCE

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence:
        return _NO_ESSENCE

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        pass  # nothing is stored: fetch() gives the same empty essence


class _HandlerContext:
    """The context kopf runs its handlers in, kept once: kopf.event() posts through a queue
    it finds there, and the reconciles run outside kopf's handlers. (A handler's memo is
    a copy per object; this holder is shared by all of them.)"""

    context: contextvars.Context | None = None

    def keep(self) -> None:
        if self.context is None:
            self.context = contextvars.copy_context()

    def run(self) -> Callable[..., Any]:
        assert self.context is not None, "no kopf handler has run yet"
        return self.context.copy().run


def _kick(memo: Any, body: kopf.Body) -> None:
    """Reconcile this MLModel as soon as a worker is free (wakeups.py). The handler returns
    at once, so kopf holds no object while reconciles queue for the workers."""
    memo.kopf_context.keep()
    memo.wakeups.now(body.metadata.uid, body.metadata.namespace or "", body.metadata.name)


def _kick_owner(memo: Any, body: kopf.Body) -> None:
    """Reconcile the MLModel that controls ``body`` (one of its Deployments or Services)."""
    owner = next(
        (
            o
            for o in body.metadata.get("ownerReferences") or []
            if o.get("kind") == KIND and o.get("controller")
        ),
        None,
    )
    if owner is not None:
        memo.kopf_context.keep()
        memo.wakeups.now(owner["uid"], body.metadata.namespace or "", owner["name"])


def _watch_owned(
    registry: kopf.OperatorRegistry, group: str, version: str, plural: str, kind: str
) -> None:
    """Keep the operator's objects of one kind in memory (objcache.py). kopf runs index
    handlers for the initial listing before any other handler, so no reconcile reads the
    cache before it holds everything that existed at start-up. One deleted by someone
    else brings its model's reconcile at once, which makes it again."""

    @kopf.index(group, version, plural, id=f"owned-{plural}", labels=OWNED, registry=registry)
    async def index_owned(*, body: kopf.Body, memo: Any, **_: Any) -> None:
        memo.owned.seen(kind, body)

    @kopf.on.event(group, version, plural, id=f"{plural}-gone", labels=OWNED, when=_deleted,
                   registry=registry)  # fmt: skip
    async def owned_gone(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        memo.owned.seen(kind, body, deleted=True)
        _kick_owner(memo, body)


def _fully_available(body: kopf.Body, type: str | None, **_: Any) -> bool:
    """A serving Deployment whose controller reports every desired replica available."""
    if type == "DELETED":
        return False
    spec, status = body.get("spec") or {}, body.get("status") or {}
    current = int(status.get("observedGeneration") or 0) >= int(
        body.metadata.get("generation") or 1
    )
    return current and int(status.get("availableReplicas") or 0) >= int(spec.get("replicas") or 0)


def build_registry(
    settings: Settings,
    kubeconfig: str | None,
    metrics_port: int,
    *,
    probes: ProbeAddress | None = None,
    peering: Peering | None = None,
) -> kopf.OperatorRegistry:
    """The operator's handlers, on a registry of their own.

    ``probes``: where the liveness and readiness answer; ``peering``: this replica's part
    in kopf's peering (None: standalone, ready once started).
    """
    registry = kopf.OperatorRegistry()
    op_settings = settings  # kopf passes its own `settings` to the startup handler
    started = False

    def readiness() -> tuple[bool, dict[str, Any]]:
        if peering is not None:
            return peering.readiness()
        return started, {"ready": started, "reason": "standalone" if started else "starting"}

    # The startup handlers run one after the other, in this order.
    @kopf.on.startup(id="probes", registry=registry)
    async def serve_probes(*, memo: Any, **_: Any) -> None:
        # first: the kubelet hears "alive, not ready" while the others wait
        memo.owned = OwnedCache()
        if probes is not None:
            memo.probes = ProbeServer(probes, readiness)
            await memo.probes.start()

    @kopf.on.startup(id="startup", registry=registry)
    def startup(
        *,
        settings: kopf.OperatorSettings,
        memo: Any,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **_: Any,
    ) -> None:
        settings.persistence.finalizer = op_settings.finalizer
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = _NoDiffBase()
        settings.posting.level = logging.WARNING  # our own Events tell the story
        _quiet_requeues()
        settings.execution.max_workers = op_settings.workers
        # Only the operator's own Deployments and Services reach it (the apiserver filters).
        for group, version, plural, _kind in OWNED_RESOURCES:
            settings.watching.label_selectors[group or version, plural] = OWNED_SELECTOR
        kube = CachedKube(load_api_client(kubeconfig, op_settings.workers + 2), memo.owned)
        s3, copy_s3 = _object_store(logger, op_settings.workers)
        prom = CollectorRegistry()
        memo.metrics = OperatorMetrics(prom)
        memo.reconciler = _build_reconciler(kube, op_settings, s3, logger, copy_s3)
        memo.wakeups = Wakeups(op_settings.reconcile_interval_seconds)
        memo.kopf_context = _HandlerContext()
        memo.reconciler.wakeups = memo.wakeups
        if metrics_port:
            start_http_server(metrics_port, addr="0.0.0.0", registry=prom)
            logger.info("metrics on :%d/metrics", metrics_port)

    @kopf.on.startup(id="peering", registry=registry)
    async def join_peering(
        *,
        settings: kopf.OperatorSettings,
        memo: Any,
        logger: logging.Logger | logging.LoggerAdapter[Any],
        **_: Any,
    ) -> None:
        nonlocal started
        # the reconciles' own loop (and the memory trim), once "startup" has made what
        # they use; on a standby replica the loop postpones what comes due, and the
        # CRDs are not looked up
        active = _active(peering)
        memo.wakeups_task = asyncio.create_task(
            _run_wakeups(memo, settings.execution.executor, active)
        )
        memo.trim_task = asyncio.create_task(trim_periodically())
        memo.crds_task = asyncio.create_task(
            recheck_crds(
                memo.reconciler.monitoring.missing_crds, memo.wakeups.wake_all, active=active
            )
        )
        # the last startup handler, before kopf's own peering starts: kopf keeps the
        # priority joined with here
        if peering is not None:
            api = KubePeeringApi(load_api_client(kubeconfig))
            settings.peering.priority = await peering.join(api, logger)
            settings.peering.lifetime = peering.config.lifetime
            memo.peering_watch = asyncio.create_task(
                peering.watch(api, logger, stop=lambda: os.kill(os.getpid(), signal.SIGTERM))
            )
        started = True

    @kopf.on.cleanup(id="probes-and-peering", registry=registry)
    async def stop_probes(*, memo: Any, **_: Any) -> None:
        for task in ("wakeups_task", "trim_task", "crds_task"):
            if getattr(memo, task, None) is not None:
                getattr(memo, task).cancel()
        if getattr(memo, "peering_watch", None) is not None:
            memo.peering_watch.cancel()
        if getattr(memo, "probes", None) is not None:
            await memo.probes.stop()

    @kopf.on.login(id="login", registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        # in a Pod: the mounted service-account token; elsewhere: the kubeconfig
        info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
            **kwargs
        ) or kopf.login_with_kubeconfig(**kwargs)
        return info

    @kopf.on.event(*RESOURCE, id="reconcile", when=_to_reconcile(op_settings.finalizer),
                   registry=registry)  # fmt: skip
    async def reconcile(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # the index handler below has put this body in the cache; the reconcile plans
        # from it (or reads the object when the operator's own write is newer)
        if not memo.reconciler.wrote(body):
            _kick(memo, body)

    # The operator's own objects, kept in memory from their watches (objcache.py).
    for group, version, plural, kind in OWNED_RESOURCES:
        _watch_owned(registry, group, version, plural, kind)

    # The MLModels too, so an event of one of its objects reconciles a model from memory.
    @kopf.index(*RESOURCE, id="models", registry=registry)
    async def index_model(*, body: kopf.Body, memo: Any, **_: Any) -> None:
        memo.owned.seen(KIND, body)

    @kopf.on.event(*RESOURCE, id="model-gone", when=_deleted, registry=registry)
    async def model_gone(*, body: kopf.Body, memo: Any, **_: Any) -> None:
        memo.owned.seen(KIND, body, deleted=True)
        memo.wakeups.forget(body.metadata.uid)

    @kopf.on.event(
        "apps",
        "v1",
        "deployments",
        id="serving-deployment",
        labels=OWNED,
        when=_fully_available,
        registry=registry,
    )
    async def deployment_available(*, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        # A version's Deployment became Available: switch traffic now rather than at
        # the next poll.
        memo.owned.seen("Deployment", body)  # before the reconcile reads it
        _kick_owner(memo, body)

    @kopf.on.delete(*RESOURCE, id="finalize", registry=registry)
    def finalize(*, body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
        reconciler: Reconciler = memo.reconciler
        try:
            outcome = reconciler.finalize(body)
        except ArchiveError as exc:
            memo.metrics.archives.labels(result="failed").inc()
            delay = archive_retry_delay(retry + 1, random.random())
            kopf.warn(
                body,
                reason="ArchiveFailed",
                message=f"deletion waits for the archive: {exc}; attempt {retry + 1} failed, "
                f"the next in {delay:.0f}s",
            )
            raise kopf.TemporaryError(str(exc), delay=delay) from exc
        _publish(body, outcome)
        memo.metrics.set_phase(body["metadata"]["uid"], None)

    return registry


def _build_reconciler(
    kube: Kube,
    settings: Settings,
    s3: Any | None,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    copy_s3: Any | None = None,
) -> Reconciler:
    """The reconciler, archiving to the object store when there is one."""
    if s3 is None:
        return Reconciler(kube, settings, ArtifactVerifier(s3), no_archive)
    bucket = settings.archive_bucket
    try:
        if ensure_bucket(s3, bucket):
            logger.info("archive bucket %s did not exist: created it", bucket)
        else:
            logger.info("archiving retired versions to bucket %s", bucket)
    except ArchiveError as exc:  # the archiver creates it on its first archive instead
        logger.warning("archive bucket %s not checked at start-up: %s", bucket, exc)
    return Reconciler(
        kube,
        settings,
        ArtifactVerifier(s3),
        S3Archiver(s3, settings, copy_client=copy_s3),
        ledger=S3Ledger(s3, settings),
        decision_log=DecisionLogCheck(kube, settings, s3),
    )


def _object_store(
    logger: logging.Logger | logging.LoggerAdapter[Any], workers: int
) -> tuple[Any | None, Any | None]:
    """MinIO clients from MLMODEL_S3_* when credentials are given, else None: one for
    every call (a connection kept per worker), one with a longer read timeout for the
    archive's server-side copy."""
    from mlmodel_serving.artifacts import S3Config

    if not os.environ.get("MLMODEL_S3_ACCESS_KEY"):
        logger.info("no MLMODEL_S3_ACCESS_KEY: artifacts are not checked by the operator")
        return None, None
    cfg = S3Config.from_env()
    logger.info("object store at %s (secure=%s)", cfg.endpoint, cfg.secure)
    return make_store_client(cfg, connections=workers), make_store_client(
        cfg, read_timeout=S3_COPY_READ_TIMEOUT
    )
