"""The served-version ledger: every deploy, switch, retire and archive as its own record.

The reconciler calls a :class:`Ledger` at each transition. :class:`NullLedger` records
nothing (no object store configured); the object-store ledger writes one small
immutable object per record under ``<namespace>/<model>/ledger/``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

from mlmodel_operator.spec import ModelSpec

# The kinds of record, in the order a version lives through them.
DEPLOYED = "Deployed"  # the version's Deployment was created
SWITCHED = "TrafficSwitched"  # the Service now selects the version
RETIRING = "Retiring"  # the version stopped taking traffic and drains
ARCHIVED = "Archived"  # the version's archive is written and verified
RETIRED = "Retired"  # the version's Deployment is deleted
DELETED = "Deleted"  # the MLModel was deleted while the version served


class Ledger(Protocol):
    def record(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        """Write one record; raise on failure (the reconciler retries)."""


class NullLedger:
    """Records nothing: used when the operator has no object store."""

    def record(
        self, model: ModelSpec, kind: str, version: str, details: Mapping[str, Any], at: dt.datetime
    ) -> None:
        return None
