"""Retirement archiving: the step that runs before an old Deployment may be deleted.

The contract the reconciler relies on:

* :func:`archive_version` is called for a version that served traffic and is leaving
  (``reason`` is ``SpecChanged`` on retirement, ``Deleted`` on deletion).
* It returns an :class:`ArchiveResult`. ``ok`` True means the Deployment may be deleted
  now: either the archive is written and verified, or archiving is not configured and
  the result says so (``location`` is None and the message records that no archive was
  made, which lands in status and in an Event).
* It raises :class:`ArchiveError` when an archive was wanted and could not be made or
  verified; the reconciler then keeps the Deployment, sets ``Archived=False`` and retries
  with back-off. It must be idempotent: a second call after a crash finds the verified
  archive and returns it without writing it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3
from minio.commonconfig import CopySource
from minio.retention import Retention

from mlmodel_operator.conditions import format_time
from mlmodel_operator.failpoints import reached
from mlmodel_operator.manifest import (
    ARTIFACT_NAME,
    MANIFEST_NAME,
    StoredArtifact,
    build_manifest,
    digest_prefix,
    serving_release,
    version_prefix,
)
from mlmodel_operator.pickle_scan import HashingReader, ScanResult, scan_artifact
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec
from mlmodel_serving.artifacts import S3Config, make_client, parse_s3_uri


@dataclass(frozen=True)
class ArchiveResult:
    ok: bool
    # s3://<bucket>/<namespace>/<model>/<version>/ when archived; .../<version>/sha256-<hex>/
    # when that version name's folder holds an archive of other bytes
    location: str | None
    message: str
    scan_refused: str = ""  # why the static pickle scan stopped at a bound, if it did


class ArchiveError(Exception):
    """An archive was wanted and could not be made or verified; nothing may be deleted."""


class Archiver(Protocol):
    def __call__(
        self, model: ModelSpec, entry: HistoryEntry, reason: str, now: dt.datetime
    ) -> ArchiveResult: ...


def archive_location(bucket: str, folder: str) -> str:
    """An archive's URI: its folder (``manifest.version_prefix`` or ``digest_prefix``)."""
    return f"s3://{bucket}/{folder}"


def no_archive(
    model: ModelSpec, entry: HistoryEntry, reason: str, now: dt.datetime
) -> ArchiveResult:
    """The archiver used while no object store is configured: records that none was made."""
    return ArchiveResult(
        ok=True,
        location=None,
        message=(
            f"version {entry.version} retired ({reason}) without an archive: the operator "
            "has no object store configured (MLMODEL_S3_ENDPOINT and credentials)"
        ),
    )


# --------------------------------------------------------------------------- S3 archive

# Object-lock mode for archives in a locked bucket. GOVERNANCE: nobody without the
# s3:BypassGovernanceRetention permission (the operator does not need it) can delete or
# overwrite an archive before the date, yet an administrator can still honour, say, a
# legal erasure request. COMPLIANCE would forbid that even to the root account.
DEFAULT_RETENTION_MODE = "GOVERNANCE"
_NOT_FOUND = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})
_REFUSED_KEPT = 1024  # digests whose refused scan is remembered (oldest forgotten first)
_NO_LOCK = frozenset({"ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound"})


# The operator's object-store calls: short bounds and no hidden retries, so a hung store
# costs a reconcile seconds, not the minio client's default 300 s per attempt, six
# attempts, while the model's lock is held. A failed call is tried again by the reconcile
# that needs it (archives with back-off).
S3_CONNECT_TIMEOUT = 3.0
S3_READ_TIMEOUT = 10.0
# CopyObject answers only when the copy is done, and MinIO sends nothing meanwhile: a
# 5 GiB artifact (the most one CopyObject copies) takes tens of seconds on slow disks.
S3_COPY_READ_TIMEOUT = 120.0


def make_store_client(
    cfg: S3Config, read_timeout: float = S3_READ_TIMEOUT, connections: int = 10
) -> Any:
    """The operator's ``minio.Minio`` client: bounded connect and read, no retries.
    ``connections``: how many it keeps open (one per worker: a request beyond the pool
    opens a connection of its own and closes it after)."""
    return make_client(
        cfg,
        connect_timeout=S3_CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        max_connections=connections,
    )


_TIMEOUT_RE = re.compile(r"\((?:connect|read) timeout=[0-9.]+\)")


def _peer(exc: BaseException) -> str:
    """host:port of the server a urllib3 error was talking to, when it says."""
    for err in (exc, getattr(exc, "reason", None)):
        where = getattr(err, "conn", None) or getattr(err, "pool", None)
        host, port = getattr(where, "host", None), getattr(where, "port", None)
        if host:
            return f"{host}:{port}" if port else str(host)
    return "the object store"


def describe_s3_error(exc: BaseException) -> str:
    """An S3 failure in a few words: the S3 error code, or why the server was not reached
    (naming it, and the timeout it did not answer within).

    Never includes credentials (the client signs requests in headers, which no message
    quotes).
    """
    from minio.error import S3Error, ServerError

    if isinstance(exc, S3Error):
        return f"S3 error {exc.code}" + (f": {exc.message}" if exc.message else "")
    if isinstance(exc, ServerError):
        return f"HTTP {exc.status_code} from the object store"
    if not isinstance(exc, OSError | urllib3.exceptions.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the real cause
    cause = reason if isinstance(reason, BaseException) else exc
    where = _peer(exc)
    if "Connection refused" in str(cause):
        return f"connection refused by {where} (is the object store running?)"
    if isinstance(cause, urllib3.exceptions.TimeoutError | TimeoutError):
        bound = _TIMEOUT_RE.search(str(cause))
        return f"no answer from {where} in time " + (bound.group(0) if bound else "(timeout)")
    return f"object store at {where} unreachable ({type(cause).__name__})"


def s3_error_code(exc: BaseException) -> str | None:
    from minio.error import S3Error

    return exc.code if isinstance(exc, S3Error) else None


def ensure_bucket(client: Any, bucket: str) -> bool:
    """Create ``bucket`` if it is missing; True when it was created. Raises ArchiveError."""
    try:
        if client.bucket_exists(bucket):
            return False
        client.make_bucket(bucket)
        return True
    except Exception as exc:
        if s3_error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            return False
        raise ArchiveError(f"bucket {bucket}: {describe_s3_error(exc)}") from None


def has_object_lock(client: Any, bucket: str) -> bool:
    """Whether ``bucket`` was created with object locking; S3 errors other than "no lock
    configuration" (e.g. NoSuchBucket) propagate."""
    try:
        client.get_object_lock_config(bucket)
        return True
    except Exception as exc:
        if s3_error_code(exc) in _NO_LOCK:
            return False
        raise


def retention_until(mode: str, start: dt.datetime, retain_days: int | None) -> Retention | None:
    """The retention for an object written at ``start`` (None without retainDays)."""
    if not retain_days:
        return None
    return Retention(mode, (start + dt.timedelta(days=retain_days)).replace(microsecond=0))


class S3Archiver:
    """Archives a leaving version into the archive bucket by server-side copy.

    Made once at start-up with a ``minio.Minio`` client (and, for the server-side copy, one
    with a longer read timeout: ``copy_client``, else the same client); called per the
    Archiver protocol. Every call ends with the stored copy's size and sha256 verified,
    and is idempotent: a verified archive is returned as it is, a partial one (artifact
    without manifest, retention not yet set) is completed, and an archive is never
    overwritten. A version's archive goes in the version's folder; when that holds an
    archive of other bytes (the version name was reused), in ``sha256-<hex>/`` inside it
    (:meth:`_folder`).
    """

    def __init__(
        self,
        client: Any,
        settings: Settings,
        retention_mode: str = DEFAULT_RETENTION_MODE,
        copy_client: Any | None = None,
    ) -> None:
        self.client = client
        self.copy_client = client if copy_client is None else copy_client
        self.settings = settings
        self.retention_mode = retention_mode
        self.release = serving_release()
        # digest -> why its scan was refused: such an artifact is not scanned again
        self._refused: dict[str, str] = {}
        self._refused_lock = threading.Lock()

    def __call__(
        self, model: ModelSpec, entry: HistoryEntry, reason: str, now: dt.datetime
    ) -> ArchiveResult:
        bucket = model.archive.bucket or self.settings.archive_bucket
        ns, name, version = model.namespace, model.name, entry.version
        folder = version_prefix(ns, name, version)
        step = "start"
        try:
            source_uri, sha256 = self._source(model, entry)
            step = f"check bucket {bucket}"
            locked = self._bucket_locked(bucket)
            step = f"read s3://{bucket}/{folder}"
            folder = self._folder(bucket, ns, name, version, sha256)
            step = f"read s3://{bucket}/{folder}{ARTIFACT_NAME}"
            stored, scan = self._ensure_artifact(bucket, folder, version, source_uri, sha256)
            reached("archive-after-verify")
            retention = self._retention(model, locked, now)
            mkey = folder + MANIFEST_NAME
            step = f"write s3://{bucket}/{mkey}"
            if self._read_manifest(bucket, mkey, sha256) is None:
                manifest = build_manifest(
                    model, entry, reason, now, stored,
                    model.serving.image or self.settings.serving_image,
                    self.settings.serving_image, scan.to_manifest(), self.release,
                    _retention_note(retention, model, locked),
                )  # fmt: skip
                data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
                self.client.put_object(
                    bucket, mkey, io.BytesIO(data), len(data),
                    content_type="application/json", retention=retention,
                )  # fmt: skip
            step = f"set retention in bucket {bucket}"
            if retention is not None:
                for key in (folder + ARTIFACT_NAME, mkey):
                    if self.client.get_object_retention(bucket, key) is None:
                        self.client.set_object_retention(bucket, key, retention)
            reached("archive-after-manifest")
        except ArchiveError:
            raise
        except Exception as exc:
            raise ArchiveError(f"{step}: {describe_s3_error(exc)}") from None
        location = archive_location(bucket, folder)
        kept = ""
        if retention is not None:
            kept = f", retained ({retention.mode}) until {format_time(retention.retain_until_date)}"
        elif model.archive.retain_days and not locked:
            kept = f"; retainDays not applied: bucket {bucket} has no object lock"
        own = version_prefix(ns, name, version)
        beside = ""
        if folder != own:
            beside = (
                f"; s3://{bucket}/{own} holds an archive of other bytes under the same version "
                "name (the name was reused), so this one is in the folder named by its digest"
            )
        refused = ""
        if scan.refused:
            refused = (
                f"; the static scan was refused ({scan.refused}), so the manifest's "
                "libraries.trainedWith is incomplete"
            )
        return ArchiveResult(
            ok=True,
            location=location,
            message=(
                f"version {version} archived to {location} and verified "
                f"(sha256 {sha256[:12]}, {stored.size} bytes{kept}){beside}{refused}"
            ),
            scan_refused=scan.refused,
        )

    def _source(self, model: ModelSpec, entry: HistoryEntry) -> tuple[str, str]:
        """Where the served artifact is, and its digest."""
        if entry.uri and entry.sha256:
            return entry.uri, entry.sha256
        same = entry.version == model.version or entry.sha256 == model.artifact.sha256
        if not same:
            raise ArchiveError(
                f"status.history records no artifact URI for version {entry.version}, and "
                f"the spec now names version {model.version}: the source of the copy is unknown"
            )
        return entry.uri or model.artifact.uri, entry.sha256 or model.artifact.sha256

    def _bucket_locked(self, bucket: str) -> bool:
        try:
            return has_object_lock(self.client, bucket)
        except Exception as exc:
            if s3_error_code(exc) != "NoSuchBucket":
                raise
            if bucket != self.settings.archive_bucket:
                raise ArchiveError(
                    f"bucket {bucket} (spec.archive.bucket) does not exist: create it, "
                    "or unset spec.archive.bucket to use the operator's archive bucket"
                ) from None
            ensure_bucket(self.client, bucket)
            return False

    def _folder(self, bucket: str, ns: str, name: str, version: str, sha256: str) -> str:
        """The folder the archive of ``version`` with ``sha256`` is in, or goes in.

        The version's own folder (where every archive was before digests were part of the
        layout) unless it holds other bytes: then ``sha256-<hex>/`` inside it. Decided
        from what is stored, so a retry after a crash finds the folder it wrote to.
        """
        beside = digest_prefix(ns, name, version, sha256)
        if self._exists(bucket, beside + ARTIFACT_NAME) or self._exists(
            bucket, beside + MANIFEST_NAME
        ):
            return beside
        own = version_prefix(ns, name, version)
        held = self._manifest_digest(bucket, own + MANIFEST_NAME)
        if held is None and self._exists(bucket, own + ARTIFACT_NAME):
            held = self._stored_digest(bucket, own + ARTIFACT_NAME)  # a copy with no manifest
        return own if held in (None, sha256) else beside

    def _get_json(self, bucket: str, key: str) -> tuple[bool, Any]:
        """(whether the object exists, its JSON: None when it is not JSON)."""
        try:
            response = self.client.get_object(bucket, key)
        except Exception as exc:
            if s3_error_code(exc) in _NOT_FOUND:
                return False, None
            raise
        try:
            return True, json.loads(response.read())
        except ValueError:
            return True, None
        finally:
            response.close()
            response.release_conn()

    def _manifest_digest(self, bucket: str, key: str) -> str | None:
        """The sha256 a manifest records; None when there is no manifest, "" when it
        records none (the folder is taken all the same)."""
        exists, raw = self._get_json(bucket, key)
        if not exists:
            return None
        sha256 = raw.get("sha256") if isinstance(raw, dict) else None
        return sha256 if isinstance(sha256, str) else ""

    def _stored_digest(self, bucket: str, key: str) -> str:
        """The sha256 of a stored object, streamed (no scan)."""
        response = self.client.get_object(bucket, key)
        try:
            reader = HashingReader(response)
            reader.drain()
        finally:
            response.close()
            response.release_conn()
        return reader.hexdigest()

    def _ensure_artifact(
        self, bucket: str, folder: str, version: str, source_uri: str, sha256: str
    ) -> tuple[StoredArtifact, ScanResult]:
        key = folder + ARTIFACT_NAME
        target = f"s3://{bucket}/{key}"
        if self._exists(bucket, key):
            digest, size, scan = self._read_verify(bucket, key, sha256)
            if digest != sha256:
                raise ArchiveError(
                    f"{target} already holds an artifact with sha256 {digest}, not the "
                    f"{sha256} version {version} served: an archive is never overwritten"
                )
            return StoredArtifact(target, digest, size, source_uri), scan
        try:
            src_bucket, src_key = parse_s3_uri(source_uri)
        except ValueError as exc:
            raise ArchiveError(f"source {source_uri}: {exc}") from None
        try:
            source = self.client.stat_object(src_bucket, src_key)
        except Exception as exc:
            raise ArchiveError(f"source {source_uri}: {describe_s3_error(exc)}") from None
        try:  # server-side: the bytes never pass through the operator on the way in
            self.copy_client.copy_object(bucket, key, CopySource(src_bucket, src_key))
        except Exception as exc:
            raise ArchiveError(f"copy {source_uri} -> {target}: {describe_s3_error(exc)}") from None
        reached("archive-after-copy")
        digest, size, scan = self._read_verify(bucket, key, sha256)
        if digest != sha256 or size != source.size:
            with contextlib.suppress(Exception):  # a wrong copy must not look like an archive
                self.client.remove_object(bucket, key)
            raise ArchiveError(
                f"the copy at {target} has sha256 {digest} and {size} bytes; version "
                f"{version} was served with sha256 {sha256} ({source.size} bytes at "
                f"{source_uri}): the source changed since it was deployed"
            )
        return StoredArtifact(target, digest, size, source_uri), scan

    def _exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.stat_object(bucket, key)
            return True
        except Exception as exc:
            if s3_error_code(exc) in _NOT_FOUND:
                return False
            raise

    def _read_verify(self, bucket: str, key: str, expected: str) -> tuple[str, int, ScanResult]:
        """Stream the stored copy once: its sha256, its size, and the static pickle scan
        (bounded; skipped for a digest whose scan was refused before)."""
        stat = self.client.stat_object(bucket, key)
        response = self.client.get_object(bucket, key)
        try:
            reader = HashingReader(response)
            with self._refused_lock:
                refused = self._refused.get(expected)
            scan = ScanResult.not_scanned(refused) if refused else scan_artifact(reader)
            reader.drain()
        finally:
            response.close()
            response.release_conn()
        if reader.size != stat.size:
            raise ArchiveError(
                f"s3://{bucket}/{key}: read {reader.size} bytes, the store reports {stat.size}"
            )
        digest = reader.hexdigest()
        if scan.refused and digest == expected:
            with self._refused_lock:
                if len(self._refused) >= _REFUSED_KEPT:
                    self._refused.pop(next(iter(self._refused)))
                self._refused[digest] = scan.refused
        return digest, reader.size, scan

    def _read_manifest(self, bucket: str, key: str, sha256: str) -> dict[str, Any] | None:
        """The manifest already there for this digest, or None when there is none."""
        exists, raw = self._get_json(bucket, key)
        if not exists:
            return None
        if not isinstance(raw, dict) or raw.get("sha256") != sha256:
            raise ArchiveError(
                f"s3://{bucket}/{key} exists but does not describe sha256 {sha256}: "
                "an archive is never overwritten"
            )
        return raw

    def _retention(self, model: ModelSpec, locked: bool, now: dt.datetime) -> Retention | None:
        if not locked:
            return None
        return retention_until(self.retention_mode, now, model.archive.retain_days)


def _retention_note(
    retention: Retention | None, model: ModelSpec, locked: bool
) -> dict[str, Any] | None:
    """The manifest's ``retention``: what was applied, or why retainDays was not."""
    if retention is not None:
        return {
            "mode": retention.mode,
            "retainUntil": format_time(retention.retain_until_date),
            "retainDays": model.archive.retain_days,
            "applied": True,
        }
    if model.archive.retain_days and not locked:
        return {
            "retainDays": model.archive.retain_days,
            "applied": False,
            "why": "the archive bucket has no object lock",
        }
    return None
