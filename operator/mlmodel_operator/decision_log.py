"""Can the serving pods write their decision log? The DecisionLogReady condition.

The reconciler asks on every reconcile; the answer is a `DecisionLogNote` for the
status, and an Event when it changes. Two things are looked at:

* the bucket the pods write to (``spec.decisionLog.bucket``, else the operator's archive
  bucket), created when it is missing as the archive bucket is (`archive.ensure_bucket`).
  A bucket found once is not asked about again for ``BUCKET_RECHECK_SECONDS``, so many
  models cost the object store one request a minute per bucket, not one per reconcile.
  The names are the users' choice, so what is remembered of them is bounded: none past
  that interval, at most ``BUCKETS_KEPT``;
* with ``redact`` columns, the Secret the pods read the HMAC key from, and its key. The
  pods get the key by reference only; the operator reads the Secret's key names.

What the operator does about a False note is the planner's choice (`plan.plan`): in
required mode nothing is rolled out; in best-effort mode the model is served as usual,
without the decision log while the redact key is missing (pods that cannot read it would
not start).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from mlmodel_operator import conditions as c
from mlmodel_operator.archive import ArchiveError, ensure_bucket
from mlmodel_operator.conditions import Reason
from mlmodel_operator.desired import decision_log_bucket, decision_log_location
from mlmodel_operator.kube import ApiError, Kube
from mlmodel_operator.plan import Event
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import ModelSpec
from mlmodel_operator.status import DecisionLogNote

BUCKET_RECHECK_SECONDS: Final = 60.0
# Buckets remembered as found, the least recently found forgotten first: more than any
# operator's models name within a recheck interval; a forgotten one is only asked about
# again (one more request to the store).
BUCKETS_KEPT: Final = 1024


def _consequence(model: ModelSpec, reason: str) -> str:
    """What the operator does about the problem (`plan.plan` decides it)."""
    if model.decision_log.required:
        return "spec.decisionLog.mode is required: nothing is rolled out until it is fixed"
    if reason == Reason.REDACT_KEY_MISSING:
        return (
            "spec.decisionLog.mode is best-effort: the pods serve without the decision log "
            "until the key exists"
        )
    return "spec.decisionLog.mode is best-effort: the model is served regardless"


class DecisionLogCheck:
    """Made once with the reconciler; safe to call from several reconciles at once.

    ``s3`` is a ``minio.Minio`` client, or None when the operator has no object store
    (then the bucket is reported as not checked).
    """

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        s3: Any | None,
        clock: Callable[[], float] = time.monotonic,
        recheck_seconds: float = BUCKET_RECHECK_SECONDS,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.s3 = s3
        self.clock = clock
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        # bucket -> when it was last seen to exist, in that order (oldest first)
        self._found: dict[str, float] = {}

    def check(self, model: ModelSpec) -> DecisionLogNote:
        """The DecisionLogReady condition for ``model``: a problem (False) before a doubt
        (Unknown) before True."""
        log = model.decision_log
        if not log.enabled:
            return DecisionLogNote(
                False,
                Reason.DECISION_LOG_DISABLED,
                "spec.decisionLog.enabled is false: the server writes no decision records",
            )
        notes = [self._bucket(model), self._redact_key(model)]
        for status in (False, c.UNKNOWN):
            for note in notes:
                if note is not None and note.status == status:
                    return note
        message = f"decision records go to {decision_log_location(model, self.settings)}"
        message += f" (mode {log.mode}"
        if log.redact and log.redact_key_secret is not None:
            message += (
                f"; {', '.join(log.redact)} stored as HMAC keyed with Secret "
                f"{log.redact_key_secret.name!r} key {log.redact_key_secret.key!r}"
            )
        return DecisionLogNote(True, Reason.LOGGING, message + ")")

    def _bucket(self, model: ModelSpec) -> DecisionLogNote | None:
        bucket = decision_log_bucket(model, self.settings)
        field = (
            "spec.decisionLog.bucket"
            if model.decision_log.bucket
            else "the operator's archive bucket (MLMODEL_ARCHIVE_BUCKET; spec.decisionLog."
            "bucket is unset)"
        )
        if self.s3 is None:
            return DecisionLogNote(
                c.UNKNOWN,
                Reason.BUCKET_NOT_CHECKED,
                f"bucket {bucket!r} ({field}) not checked: the operator has no object store "
                "configured (MLMODEL_S3_ENDPOINT and credentials)",
            )
        now = self.clock()
        with self._lock:
            self._forget_stale(now)
            seen = self._found.get(bucket)
        if seen is not None and now - seen < self.recheck_seconds:
            return None
        try:
            ensure_bucket(self.s3, bucket)
        except ArchiveError as exc:
            then = _consequence(model, Reason.BUCKET_UNAVAILABLE)
            return DecisionLogNote(
                False,
                Reason.BUCKET_UNAVAILABLE,
                f"{field}: {bucket!r} cannot be used or created ({exc}), so the serving pods "
                f"cannot write decision records; {then}",
            )
        with self._lock:
            # read under the lock and re-inserted last: the map stays in found order
            found = self.clock()
            self._found.pop(bucket, None)
            self._found[bucket] = found
            self._forget_stale(found)
            while len(self._found) > BUCKETS_KEPT:
                del self._found[next(iter(self._found))]
        return None

    def _forget_stale(self, now: float) -> None:
        """Drop the buckets found ``recheck_seconds`` or more ago (with the lock held);
        the map is in the order they were found, so this stops at the first fresh one."""
        while self._found:
            oldest = next(iter(self._found))
            if now - self._found[oldest] < self.recheck_seconds:
                return
            del self._found[oldest]

    def _redact_key(self, model: ModelSpec) -> DecisionLogNote | None:
        log = model.decision_log
        secret = log.redact_key_secret
        if not log.redact or secret is None:
            return None
        ns = model.ref.namespace
        try:
            keys = self.kube.secret_keys(ns, secret.name)
        except ApiError as exc:
            grant = ""
            if exc.status == 403:
                grant = (
                    "; to have it checked, add its name to the resourceNames of the Secrets "
                    "rule of the mlmodel-operator ClusterRole"
                )
            return DecisionLogNote(
                c.UNKNOWN,
                Reason.REDACT_KEY_NOT_CHECKED,
                f"spec.decisionLog.redactKeySecret.name: Secret {secret.name!r} in namespace "
                f"{ns!r} not checked ({exc.message or exc}){grant}",
            )
        columns = ", ".join(log.redact)
        then = _consequence(model, Reason.REDACT_KEY_MISSING)
        if keys is None:
            return DecisionLogNote(
                False,
                Reason.REDACT_KEY_MISSING,
                f"spec.decisionLog.redactKeySecret.name: Secret {secret.name!r} not found in "
                f"namespace {ns!r}; it must hold the HMAC key for the columns of "
                f"spec.decisionLog.redact ({columns}) under the key {secret.key!r}, e.g. "
                f"`kubectl create secret generic {secret.name} -n {ns} "
                f"--from-literal={secret.key}=$(openssl rand -hex 32)`; {then}",
            )
        if secret.key not in keys:
            return DecisionLogNote(
                False,
                Reason.REDACT_KEY_MISSING,
                f"spec.decisionLog.redactKeySecret.key: Secret {secret.name!r} in namespace "
                f"{ns!r} has no key {secret.key!r} (its keys: "
                f"{', '.join(sorted(keys)) or 'none'}); it must hold the HMAC key for the "
                f"columns of spec.decisionLog.redact ({columns}); {then}",
            )
        return None


def decision_log_event(old_status: Mapping[str, Any], note: DecisionLogNote) -> Event | None:
    """An Event when DecisionLogReady changes status or reason; none for a model that
    never had the log on (no condition yet, and it is disabled)."""
    old = c.get_condition(old_status.get("conditions") or [], c.DECISION_LOG_READY)
    status = note.status if isinstance(note.status, str) else (c.TRUE if note.status else c.FALSE)
    if old is None and note.reason == Reason.DECISION_LOG_DISABLED:
        return None
    if old is not None and (old.get("status"), old.get("reason")) == (status, note.reason):
        return None
    problem = status == c.FALSE and note.reason != Reason.DECISION_LOG_DISABLED
    return Event("Warning" if problem else "Normal", note.reason, note.message)
