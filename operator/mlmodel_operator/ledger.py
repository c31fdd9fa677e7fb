"""The served-version ledger: every deploy, switch, retire and archive as its own record.

The reconciler calls a :class:`Ledger` at each transition. :class:`NullLedger` records
nothing (no object store configured); the object-store ledger writes one small
immutable object per record under ``<namespace>/<model>/ledger/``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mlmodel_operator.archive import (
    DEFAULT_RETENTION_MODE,
    describe_s3_error,
    has_object_lock,
    retention_until,
    s3_error_code,
)
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec

# The kinds of record, in the order a version lives through them.
DEPLOYED = "Deployed"  # the version's Deployment was created
SWITCHED = "TrafficSwitched"  # the Service now selects the version
RETIRING = "Retiring"  # the version stopped taking traffic and drains
ARCHIVED = "Archived"  # the version's archive is written and verified
RETIRED = "Retired"  # the version's Deployment is deleted
DELETED = "Deleted"  # the MLModel was deleted while the version served
# a canary's or shadow's step began (details: step, weight, strategy, the stable version)
TRAFFIC_SPLIT = "TrafficSplit"
ROLLED_BACK = "RolledBack"  # a candidate refused: its analysis failed, or by hand


class Ledger(Protocol):
    def record(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        """Write one record; raise on failure (the reconciler retries)."""

    def ensure(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        """Make sure the ledger holds the record of a transition the cluster shows
        happened at ``at``: write it (at ``at``) unless a record of this kind and version
        from ``at`` on is there. Raise on failure."""

    def forget(self, uid: str) -> None:
        """Drop what is remembered about a model that is gone."""


class NullLedger:
    """Records nothing: used when the operator has no object store."""

    def record(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        return None

    def ensure(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        return None

    def forget(self, uid: str) -> None:
        return None


# ------------------------------------------------------------------------ S3 ledger

LEDGER_FORMAT: Final = "ml.lifecycle.io/ledger-record/v1"

# Within one instant, records sort in the order a version lives through them.
KIND_ORDER: Final[Mapping[str, int]] = {
    DEPLOYED: 1,
    SWITCHED: 2,
    RETIRING: 3,
    ARCHIVED: 4,
    RETIRED: 5,
    DELETED: 6,
    TRAFFIC_SPLIT: 7,
    ROLLED_BACK: 8,
}
_KEY_TIME = "%Y%m%dT%H%M%S.%fZ"
_KEY_NAME = re.compile(
    r"^(?P<at>\d{8}T\d{6}\.\d{6}Z)-(?P<rank>\d+)-(?P<kind>[A-Za-z]+)-v(?P<version>.+)\.json$"
)
# Models whose ledger contents are remembered (see S3Ledger.ensure); the oldest go first.
LEDGERS_KEPT = 10_000


def ledger_prefix(namespace: str, model: str) -> str:
    return f"{namespace}/{model}/ledger/"


def parse_key(key: str) -> tuple[dt.datetime, str, str] | None:
    """``(at, kind, version)`` from a record's key (:func:`ledger_key`), or None for a
    key of another shape."""
    m = _KEY_NAME.match(key.rsplit("/", 1)[-1])
    if m is None:
        return None
    at = dt.datetime.strptime(m["at"], _KEY_TIME).replace(tzinfo=dt.UTC)
    return at, m["kind"], m["version"]


def _keep_latest(
    known: dict[tuple[str, str], dt.datetime], record: tuple[dt.datetime, str, str]
) -> None:
    at, kind, version = record
    before = known.get((kind, version))
    if before is None or at > before:
        known[(kind, version)] = at


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def ledger_key(namespace: str, model: str, kind: str, version: str, at: dt.datetime) -> str:
    """The record's object key: sorts by time, then lifecycle order; the same for a retry.

    ``<ns>/<model>/ledger/20260127T080211.123456Z-2-TrafficSwitched-v3.json``: a fixed
    width UTC timestamp (microseconds), the kind's rank, the kind, the version.
    """
    rank = KIND_ORDER.get(kind, 9)
    return f"{ledger_prefix(namespace, model)}{_utc(at).strftime(_KEY_TIME)}-{rank}-{kind}-v{version}.json"


def build_record(
    model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
) -> dict[str, Any]:
    return {
        "format": LEDGER_FORMAT,
        "model": model.name,
        "namespace": model.namespace,
        "uid": model.ref.uid,
        "generation": model.generation,
        "kind": kind,
        "version": version,
        "at": _utc(at).isoformat().replace("+00:00", "Z"),
        "details": dict(details),
    }


@dataclass(frozen=True)
class LedgerRecord:
    kind: str
    version: str
    at: dt.datetime
    details: Mapping[str, Any]
    key: str = ""

    @classmethod
    def parse(cls, raw: Any, key: str = "") -> LedgerRecord:
        if not isinstance(raw, dict) or raw.get("format") != LEDGER_FORMAT:
            raise ValueError(f"{key or 'record'}: not a {LEDGER_FORMAT} record")
        try:
            at = _utc(dt.datetime.fromisoformat(str(raw["at"]).replace("Z", "+00:00")))
            return cls(str(raw["kind"]), str(raw["version"]), at, raw.get("details") or {}, key)
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{key or 'record'}: unreadable ({exc})") from None


@dataclass(frozen=True)
class Serving:
    """The answer to "which version served at T"."""

    version: str | None  # None: nothing served at that time
    since: dt.datetime | None
    until: dt.datetime | None  # None: still serving, as far as the ledger knows
    record: LedgerRecord | None  # the switch that made it the served version

    @property
    def sha256(self) -> str | None:
        """The digest of the bytes that served, as the switch record names it (None for a
        record that names none). A version name may have named other bytes at other
        times (a deleted and re-created MLModel), so this, not the name, says what served."""
        value = self.record.details.get("sha256") if self.record is not None else None
        return value if isinstance(value, str) and value else None


def serving_at(records: Sequence[LedgerRecord], at: dt.datetime) -> Serving:
    """Which version the model's Service selected at ``at``, from its ledger records.

    A version serves from its TrafficSwitched record until the next switch, or until a
    Deleted record of it (the MLModel went away).
    """
    at = _utc(at)
    ordered = sorted(records, key=lambda r: (r.at, KIND_ORDER.get(r.kind, 9)))
    current: LedgerRecord | None = None
    ended: dt.datetime | None = None
    for rec in ordered:
        if rec.at > at:
            if current is not None and ended is None and _ends(rec, current):
                return Serving(current.version, current.at, rec.at, current)
            continue
        if rec.kind == SWITCHED:
            current, ended = rec, None
        elif current is not None and rec.kind == DELETED and rec.version == current.version:
            ended = rec.at
    if current is None or ended is not None:
        return Serving(None, None, ended, None)
    return Serving(current.version, current.at, None, current)


def _ends(rec: LedgerRecord, current: LedgerRecord) -> bool:
    return rec.kind == SWITCHED or (rec.kind == DELETED and rec.version == current.version)


class LedgerError(Exception):
    """A record could not be written; names the object and the S3 error code."""


class S3Ledger:
    """One small JSON object per record in the archive bucket, never overwritten."""

    def __init__(
        self, client: Any, settings: Settings, retention_mode: str = DEFAULT_RETENTION_MODE
    ) -> None:
        self.client = client
        self.settings = settings
        self.retention_mode = retention_mode
        self._locked: dict[str, bool] = {}  # per bucket; object locking is set at creation
        # (uid, bucket) -> (kind, version) -> the time of its latest record: what ensure()
        # needs, read once per model by one LIST of key names (no GETs) and kept up to
        # date by this process's own writes
        self._latest: OrderedDict[tuple[str, str], dict[tuple[str, str], dt.datetime]] = (
            OrderedDict()
        )
        self._guard = threading.Lock()

    def ensure(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        at = _utc(at)
        known, listed_now = self._known(model)
        latest = known.get((kind, version))
        if latest is not None and latest >= at:
            return  # recorded: at ``at`` (a retry), or later (a later period's record)
        # Not among the keys. Listed by this very call: that LIST was the check, and
        # asking for the key again would ask it twice. Listed earlier: another replica
        # may have written it since (this one paused while that one worked), so the key
        # is looked up before it is written (records are never overwritten).
        self._write(model, kind, version, details, at, absent=listed_now)

    def forget(self, uid: str) -> None:
        with self._guard:
            for key in [k for k in self._latest if k[0] == uid]:
                del self._latest[key]

    def _known(self, model: ModelSpec) -> tuple[dict[tuple[str, str], dt.datetime], bool]:
        """The model's records as (kind, version) -> the latest instant, and whether they
        were listed just now (False: remembered from an earlier LIST)."""
        bucket = model.archive.bucket or self.settings.archive_bucket
        cache_key = (model.ref.uid, bucket)
        with self._guard:
            known = self._latest.get(cache_key)
            if known is not None:
                self._latest.move_to_end(cache_key)
                return known, False
        prefix = ledger_prefix(model.namespace, model.name)
        known = {}
        try:
            for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True):
                parsed = parse_key(obj.object_name)
                if parsed is not None:
                    _keep_latest(known, parsed)
        except Exception as exc:
            raise LedgerError(f"s3://{bucket}/{prefix}: {describe_s3_error(exc)}") from None
        with self._guard:
            self._latest[cache_key] = known
            while len(self._latest) > LEDGERS_KEPT:
                self._latest.popitem(last=False)
        return known, True

    def _note(
        self, model: ModelSpec, bucket: str, kind: str, version: str, at: dt.datetime
    ) -> None:
        """Remember a record now in the store (only for a model whose ledger is read)."""
        with self._guard:
            known = self._latest.get((model.ref.uid, bucket))
            if known is not None:
                _keep_latest(known, (at, kind, version))

    def record(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        self._write(model, kind, version, details, at, absent=False)

    def _write(
        self,
        model: ModelSpec,
        kind: str,
        version: str,
        details: Mapping[str, Any],
        at: dt.datetime,
        *,
        absent: bool,
    ) -> None:
        """Write the record unless it is there. ``absent``: a LIST made just now showed
        its key missing, so it is not looked up again."""
        bucket = model.archive.bucket or self.settings.archive_bucket
        key = ledger_key(model.namespace, model.name, kind, version, at)
        data = json.dumps(build_record(model, kind, version, details, at), sort_keys=True)
        try:
            if not absent:
                try:
                    self.client.stat_object(bucket, key)
                    self._note(model, bucket, kind, version, _utc(at))
                    return  # written before (a retry after a crash): records are immutable
                except Exception as exc:
                    if s3_error_code(exc) not in ("NoSuchKey", "NoSuchObject"):
                        raise
            if "deployedAt" in details and self._recorded(bucket, model, kind, version, details):
                return
            body = (data + "\n").encode()
            retention = None
            if model.archive.retain_days and self._has_lock(bucket):
                retention = retention_until(self.retention_mode, at, model.archive.retain_days)
            self.client.put_object(
                bucket, key, io.BytesIO(body), len(body),
                content_type="application/json", retention=retention,
            )  # fmt: skip
        except Exception as exc:
            raise LedgerError(f"s3://{bucket}/{key}: {describe_s3_error(exc)}") from None
        self._note(model, bucket, kind, version, _utc(at))

    def _recorded(
        self, bucket: str, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any]
    ) -> bool:
        """Whether the same transition of the same serving period is already recorded.

        Details naming ``deployedAt`` identify one serving period of a version, so a record
        with the same kind, version and details is the same event, written again at a later
        time by a reconcile that worked from a status not yet updated by the previous one.
        """
        suffix = f"-{KIND_ORDER.get(kind, 9)}-{kind}-v{version}.json"
        wanted = json.loads(json.dumps(dict(details), sort_keys=True))
        prefix = ledger_prefix(model.namespace, model.name)
        for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True):
            if not obj.object_name.endswith(suffix):
                continue
            response = self.client.get_object(bucket, obj.object_name)
            try:
                raw = json.loads(response.read())
            except ValueError:
                continue
            finally:
                response.close()
                response.release_conn()
            if isinstance(raw, dict) and raw.get("details") == wanted:
                return True
        return False

    def _has_lock(self, bucket: str) -> bool:
        if bucket not in self._locked:
            self._locked[bucket] = has_object_lock(self.client, bucket)
        return self._locked[bucket]
