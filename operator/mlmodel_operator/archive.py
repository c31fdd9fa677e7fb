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

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.spec import ModelSpec


@dataclass(frozen=True)
class ArchiveResult:
    ok: bool
    location: str | None  # s3://<bucket>/<namespace>/<model>/<version>/ when archived
    message: str


class ArchiveError(Exception):
    """An archive was wanted and could not be made or verified; nothing may be deleted."""


class Archiver(Protocol):
    def __call__(
        self, model: ModelSpec, entry: HistoryEntry, reason: str, now: dt.datetime
    ) -> ArchiveResult: ...


def archive_location(bucket: str, namespace: str, model: str, version: str) -> str:
    """Where a version's archive lives."""
    return f"s3://{bucket}/{namespace}/{model}/{version}/"


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
