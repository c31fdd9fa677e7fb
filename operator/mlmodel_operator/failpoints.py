"""Failpoints: named places where a test makes the operator die, as a crash would.

Tests only. ``MLMODEL_FAILPOINT`` names one or more points (comma-separated); the first
time the operator reaches one of them it writes one line naming it to stderr and ends
with ``os._exit`` (no cleanup, no finally blocks, no flush of anything in flight, the
same as a SIGKILL at that instant). Unset, :func:`reached` is one dictionary lookup.

The points sit between the steps of a transition whose order matters: each is a moment
at which the cluster and the object store hold one step's result and not the next's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Final

ENV: Final = "MLMODEL_FAILPOINT"
EXIT_CODE: Final = 86  # what a test sees, so a failpoint exit is never mistaken for a crash

POINTS: Final[Mapping[str, str]] = {
    "after-deployment-apply": "a version's Deployment is created, the ledger not yet told",
    "after-deployed-record": "the Deployed record is written, nothing after it",
    "after-switch": "the Service selects the new version, the ledger not yet told",
    "after-mark-retiring": "the old version is marked retiring, the ledger not yet told",
    "archive-after-copy": "the artifact is copied into the archive, not yet verified",
    "archive-after-verify": "the archived copy is verified, its manifest not yet written",
    "archive-after-manifest": "the archive is complete, the ledger not yet told",
    "before-delete": "the Archived record is written, the old Deployment not yet deleted",
    "after-delete": "the old Deployment is deleted, the Retired record not yet written",
    "after-retired-record": "the Retired record is written, the status not yet",
    "before-status-write": "every action of a reconcile is done, its status not written",
    "after-status-write": "the status is written, kopf not yet told",
}


class FailpointError(ValueError):
    """``MLMODEL_FAILPOINT`` names a point that does not exist."""


def parse(value: str | None) -> frozenset[str]:
    """The points named by ``value`` (comma-separated); an unknown name is an error."""
    names = frozenset(p.strip() for p in (value or "").split(",") if p.strip())
    unknown = sorted(names - POINTS.keys())
    if unknown:
        raise FailpointError(
            f"{ENV}={value!r}: unknown point(s) {', '.join(unknown)}; accepted: {', '.join(POINTS)}"
        )
    return names


_armed: frozenset[str] = frozenset()


def arm(value: str | None) -> frozenset[str]:
    """Arm the points ``value`` names (from the environment at start-up)."""
    global _armed
    _armed = parse(value)
    return _armed


def reached(point: str) -> None:
    """Die here if ``point`` is armed; otherwise nothing."""
    if point in _armed:
        sys.stderr.write(f"failpoint {point} reached: exiting with {EXIT_CODE}\n")
        sys.stderr.flush()
        os._exit(EXIT_CODE)
