"""Two operator replicas on kopf's peering: joined in order, a missing object said loudly,
readiness reported, and a replica that stops when its peering object goes away.

What kopf does: every replica writes a keep-alive (``priority``, ``lifetime``,
``lastseen``) under its identity in the status of the peering object, and pauses while
another replica's keep-alive is younger than that replica's lifetime and its priority is
higher or equal; the keep-alive is written every ``lifetime`` minus 5-10 s (at least every
second). What it leaves to us, and this module does before and beside kopf:

- **The object missing**: kopf pauses forever and says nothing (its keep-alives fail at
  DEBUG level), the probes stay green. :meth:`Peering.join` waits for the object in the
  startup handler, before kopf's peering starts, logs an ERROR naming it and how to
  create it every :data:`REMIND_EVERY` seconds, and the readiness endpoint fails.
- **The object appearing**: every waiting replica reads an empty status, so kopf would
  resume them all at once. A replica joins instead with a compare-and-swap on the
  object's ``resourceVersion``, writing its keep-alive with a priority below every live
  replica's (``--priority=oldest``): whoever joins first works, a replica joining later
  never outranks a working one, and two joining at once are ordered by the apiserver.
- **The object deleted or created again while running**: kopf keeps going on the copy it
  last saw and resumes every paused replica when a new one appears; :meth:`Peering.watch`
  stops the replica instead (it joins again, in order, when restarted).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import urllib3
from kubernetes import client

# A SIGKILLed worker is replaced once its last keep-alive is this old. 10 s: the standby
# resumes 5-10 s after the kill (measured, docs/install.md), the keep-alive is written
# every 1-5 s, and a late keep-alive still has 5 s before the others take over, as with
# kopf's default of 60 s (written every 50-55 s).
DEFAULT_LIFETIME = 10
# Below 6 s, kopf writes its keep-alive every second and a write late by less than 5 s
# would already hand the work to another replica.
MIN_LIFETIME = 6
REMIND_EVERY = 15.0  # seconds between the ERROR lines while the object is missing
WAIT_POLL = 1.0  # seconds between reads while waiting for the object
CHECK_EVERY = 5.0  # seconds between reads once joined
API_TIMEOUT = (3.0, 5.0)  # connect, read: each call well within one lifetime
KOPF_LIFETIME = 60  # what kopf assumes of a keep-alive that names no lifetime
MANIFEST = "manifests/operator/peering.yaml"


class PeeringUnavailable(Exception):
    """The peering object cannot be read or written (not: it does not exist)."""


class Conflict(Exception):
    """The object changed since it was read (HTTP 409 on a resourceVersion precondition)."""


@dataclass(frozen=True)
class PeeringObject:
    """One peering object: a ClusterKopfPeering, or a KopfPeering in a namespace."""

    name: str
    namespace: str | None = None

    @property
    def kind(self) -> str:
        return "ClusterKopfPeering" if self.namespace is None else "KopfPeering"

    @property
    def path(self) -> str:
        if self.namespace is None:
            return f"/apis/kopf.dev/v1/clusterkopfpeerings/{self.name}"
        return f"/apis/kopf.dev/v1/namespaces/{self.namespace}/kopfpeerings/{self.name}"

    @property
    def crd(self) -> str:
        return "clusterkopfpeerings.kopf.dev" if self.namespace is None else "kopfpeerings.kopf.dev"

    def __str__(self) -> str:
        where = "" if self.namespace is None else f" in namespace {self.namespace!r}"
        return f"{self.kind} {self.name!r}{where}"

    def how_to_create(self) -> str:
        meta = f"name: {self.name}" + (
            "" if self.namespace is None else f", namespace: {self.namespace}"
        )
        shipped = (
            f"`kubectl apply -f {MANIFEST}` (the shipped one is named 'mlmodel-operator'), or "
            if self.namespace is None
            else ""
        )
        return (
            f"create it: {shipped}`kubectl apply -f -` of apiVersion: kopf.dev/v1, "
            f"kind: {self.kind}, metadata: {{{meta}}}"
        )


@dataclass(frozen=True)
class PeeringConfig:
    """How this replica takes part: ``mlmodel run --peering/--priority/--peering-lifetime``."""

    name: str
    identity: str
    priority: int
    lifetime: int = DEFAULT_LIFETIME
    ordered: bool = True  # --priority=oldest: join below every live replica
    namespaces: tuple[str, ...] = ()  # KopfPeerings in these; none: one ClusterKopfPeering

    @property
    def objects(self) -> tuple[PeeringObject, ...]:
        if not self.namespaces:
            return (PeeringObject(self.name),)
        return tuple(PeeringObject(self.name, ns) for ns in self.namespaces)


def own_identity(environ: Mapping[str, str]) -> str:
    """This replica's name in the peering: its Pod (POD_ID), else host, process and a tag."""
    pod = environ.get("POD_ID")
    if pod:
        return pod
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Peer:
    """One replica's keep-alive, as kopf writes it."""

    identity: str
    priority: int
    lifetime: float
    lastseen: datetime

    def alive(self, now: datetime) -> bool:
        return now < self.lastseen + timedelta(seconds=self.lifetime)


def _parse_time(value: Any, now: datetime) -> datetime:
    if not isinstance(value, str):
        return now  # kopf takes a keep-alive without a time as written now
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return now
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_peers(status: Any, now: datetime) -> list[Peer]:
    """The keep-alives in a peering object's status, read with kopf's defaults."""
    if not isinstance(status, Mapping):
        return []
    peers = []
    for identity, record in status.items():
        if not isinstance(record, Mapping):
            continue
        try:
            priority = int(record.get("priority", 0))
            lifetime = float(record.get("lifetime", KOPF_LIFETIME))
        except (TypeError, ValueError):
            continue
        peers.append(
            Peer(str(identity), priority, lifetime, _parse_time(record.get("lastseen"), now))
        )
    return peers


def keepalive(priority: int, lifetime: int, now: datetime) -> dict[str, Any]:
    """A keep-alive in kopf's own format, so kopf's peers weigh it like one of theirs."""
    return {"priority": priority, "lifetime": lifetime, "lastseen": now.isoformat()}


def joining_priority(wanted: int, peers: Iterable[Peer], identity: str, now: datetime) -> int:
    """``wanted``, or lower: strictly below every other live replica's priority."""
    live = [p.priority for p in peers if p.identity != identity and p.alive(now)]
    return min([wanted, *(p - 1 for p in live)])


@dataclass(frozen=True)
class Assessment:
    """What the last read of the peering says about this replica (the readiness)."""

    ready: bool
    reason: str
    active: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"ready": self.ready, "active": self.active, "reason": self.reason}


def missing_message(obj: PeeringObject) -> str:
    return (
        f"{obj} does not exist: this replica waits and reconciles nothing (its readiness "
        f"fails) until it does; {obj.how_to_create()}"
    )


def assess(
    obj: PeeringObject,
    body: Mapping[str, Any] | None,
    identity: str,
    priority: int,
    now: datetime,
) -> Assessment:
    """Ready when the object exists, holds this replica's live keep-alive, and no other
    live replica has the same priority (kopf would pause both)."""
    if body is None:
        return Assessment(False, missing_message(obj))
    peers = parse_peers(body.get("status"), now)
    own = next((p for p in peers if p.identity == identity), None)
    if own is None or not own.alive(now):
        seen = "absent" if own is None else f"last written {own.lastseen.isoformat()}"
        return Assessment(
            False,
            f"this replica's keep-alive ({identity!r}) in {obj} is {seen}: the other "
            f"replicas may take it for gone",
        )
    others = [p for p in peers if p.identity != identity and p.alive(now)]
    same = sorted(p.identity for p in others if p.priority == priority)
    if same:
        return Assessment(
            False,
            f"{', '.join(same)} in {obj} has this replica's priority {priority}: kopf "
            f"pauses both; give each replica its own (--priority=oldest)",
        )
    above = sorted(p.identity for p in others if p.priority > priority)
    if above:
        return Assessment(True, f"standby in {obj}: {', '.join(above)} works")
    return Assessment(True, f"working: the highest priority in {obj}", active=True)


def combine(assessments: Iterable[Assessment]) -> Assessment:
    """One answer for several peering objects (a KopfPeering per namespace)."""
    items = list(assessments)
    bad = [a for a in items if not a.ready]
    if bad:
        return Assessment(False, "; ".join(a.reason for a in bad))
    return Assessment(True, "; ".join(a.reason for a in items), active=all(a.active for a in items))


class PeeringApi(Protocol):
    """The two calls the peering needs."""

    def get(self, obj: PeeringObject) -> dict[str, Any] | None:
        """The object, or None when it does not exist; PeeringUnavailable otherwise."""

    def patch_status(
        self, obj: PeeringObject, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        """Merge ``status`` in, only over ``resource_version`` when given (else Conflict)."""


def not_found(obj: PeeringObject, data: bytes) -> PeeringUnavailable | None:
    """What a 404 means: None when the object is missing, an error naming the CRD when
    its kind is not served at all (the apiserver's body then names no object)."""
    try:
        details = json.loads(data).get("details") or {}
    except (ValueError, AttributeError):
        details = {}
    if details.get("name") == obj.name:
        return None
    return PeeringUnavailable(
        f"the CRD {obj.crd} is not installed, so {obj} cannot exist: "
        f"`kubectl apply --server-side -k crds/`, then {obj.how_to_create()}"
    )


class KubePeeringApi:
    """:class:`PeeringApi` over a ``kubernetes.client.ApiClient``, every call bounded."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def _call(self, method: str, obj: PeeringObject, body: Any = None) -> tuple[int, bytes]:
        api = self.api_client
        method, url, headers, body, post = api.param_serialize(
            method=method,
            resource_path=obj.path,
            header_params={
                "Content-Type": "application/merge-patch+json",
                "Accept": "application/json",
            },
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
                _request_timeout=API_TIMEOUT,
            )
            return int(resp.status), bytes(resp.read())
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise PeeringUnavailable(
                f"cannot reach {api.configuration.host} to read {obj} ({type(exc).__name__}: {exc})"
            ) from None

    @staticmethod
    def _error(obj: PeeringObject, verb: str, status: int, data: bytes) -> PeeringUnavailable:
        try:
            message = json.loads(data).get("message", "")
        except (ValueError, AttributeError):
            message = data[:200].decode(errors="replace").strip()
        hint = ""
        if status == 403:
            hint = (
                f"; the operator's ClusterRole needs get and patch on {obj.crd.split('.')[0]} "
                "(manifests/operator/rbac.yaml)"
            )
        return PeeringUnavailable(f"cannot {verb} {obj}: HTTP {status}: {message}{hint}")

    def get(self, obj: PeeringObject) -> dict[str, Any] | None:
        status, data = self._call("GET", obj)
        if status == 404:
            error = not_found(obj, data)
            if error is None:
                return None
            raise error
        if not 200 <= status < 300:
            raise self._error(obj, "read", status, data)
        body: dict[str, Any] = json.loads(data)
        return body

    def patch_status(
        self, obj: PeeringObject, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        patch: dict[str, Any] = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        code, data = self._call("PATCH", obj, patch)
        if code == 409:
            raise Conflict(str(obj))
        if code == 404:
            raise not_found(obj, data) or PeeringUnavailable(missing_message(obj))
        if not 200 <= code < 300:
            raise self._error(obj, "write to", code, data)
        body: dict[str, Any] = json.loads(data)
        return body


Logger = logging.Logger | logging.LoggerAdapter[Any]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Peering:
    """This replica's part in the peering: joining, readiness, and watching the object.

    ``state`` is read by the readiness endpoint; ``stopped_because`` says why
    :meth:`watch` stopped the replica (``mlmodel run`` then exits with 1).
    """

    def __init__(
        self,
        config: PeeringConfig,
        *,
        now: Callable[[], datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        self.priority = config.priority
        self.state = Assessment(False, "joining the peering")
        self.stopped_because: str | None = None
        self._now, self._clock, self._sleep = now, clock, sleep
        self._uids: dict[PeeringObject, str] = {}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        return self.state.ready, {
            **self.state.to_json(),
            "peering": self.config.name,
            "identity": self.config.identity,
        }

    def _read_all(self, api: PeeringApi) -> dict[PeeringObject, dict[str, Any] | None]:
        return {obj: api.get(obj) for obj in self.config.objects}

    def _register(self, api: PeeringApi, bodies: Mapping[PeeringObject, dict[str, Any]]) -> int:
        now = self._now()
        priority = self.config.priority
        if self.config.ordered:
            peers = [p for b in bodies.values() for p in parse_peers(b.get("status"), now)]
            priority = joining_priority(priority, peers, self.config.identity, now)
        record = {self.config.identity: keepalive(priority, self.config.lifetime, now)}
        written = {}
        for obj, body in bodies.items():
            version = body["metadata"]["resourceVersion"] if self.config.ordered else None
            written[obj] = api.patch_status(obj, record, version)
        self._uids = {obj: str(b["metadata"].get("uid")) for obj, b in written.items()}
        self.state = combine(
            assess(obj, b, self.config.identity, priority, now) for obj, b in written.items()
        )
        return priority

    async def join(self, api: PeeringApi, logger: Logger) -> int:
        """Wait for the peering object(s), saying so while one is missing, then write this
        replica's keep-alive; returns the priority joined with (kopf must keep it)."""
        reminded: float | None = None
        while True:
            try:
                bodies = await asyncio.to_thread(self._read_all, api)
                missing = [obj for obj, body in bodies.items() if body is None]
                if not missing:
                    present = {obj: body for obj, body in bodies.items() if body is not None}
                    self.priority = await asyncio.to_thread(self._register, api, present)
                    break
                problem = "; ".join(missing_message(obj) for obj in missing)
            except Conflict:
                continue  # another replica wrote in between: read again and go below it
            except PeeringUnavailable as exc:
                problem = f"{exc}; this replica waits and reconciles nothing until then"
            self.state = Assessment(False, problem)
            if reminded is None or self._clock() - reminded >= REMIND_EVERY:
                logger.error(problem)
                reminded = self._clock()
            await self._sleep(WAIT_POLL)
        objects = ", ".join(str(obj) for obj in self.config.objects)
        found = "found: " if reminded is not None else ""
        logger.info(
            f"{objects} {found}joined as {self.config.identity!r} with priority "
            f"{self.priority}, keep-alive lifetime {self.config.lifetime} s"
        )
        return self.priority

    async def watch(self, api: PeeringApi, logger: Logger, stop: Callable[[], None]) -> None:
        """Keep ``state`` current; when an object is deleted or created anew, say so and
        call ``stop``: kopf would resume every paused replica on a new object."""
        last_read = self._clock()
        while True:
            await self._sleep(CHECK_EVERY)
            try:
                bodies = await asyncio.to_thread(self._read_all, api)
            except (PeeringUnavailable, ValueError) as exc:  # ValueError: not JSON
                if self._clock() - last_read > 2 * self.config.lifetime and self.state.ready:
                    self.state = Assessment(False, str(exc))
                    logger.warning(f"not ready: {exc}")
                continue
            last_read = self._clock()
            gone = [obj for obj, body in bodies.items() if body is None]
            anew = [
                obj
                for obj, body in bodies.items()
                if body is not None and str(body["metadata"].get("uid")) != self._uids.get(obj)
            ]
            if gone or anew:
                what = "; ".join(
                    [f"{obj} was deleted" for obj in gone]
                    + [f"{obj} was deleted and created again" for obj in anew]
                )
                self.stopped_because = "; ".join(
                    [
                        f"{what}: this replica stops, so that it does not work beside the "
                        "others when kopf sees a new object; restarted, it waits for the "
                        "object and joins again",
                        *(obj.how_to_create() for obj in gone),
                    ]
                )
                self.state = Assessment(False, self.stopped_because)
                logger.error(self.stopped_because)
                stop()
                return
            now = self._now()
            state = combine(
                assess(obj, body, self.config.identity, self.priority, now)
                for obj, body in bodies.items()
            )
            if state.ready != self.state.ready:
                log = logger.info if state.ready else logger.warning
                log(f"{'ready' if state.ready else 'not ready'}: {state.reason}")
            self.state = state
