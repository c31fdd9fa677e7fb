"""The operator's own check of an artifact before it rolls a version out.

The serving pods verify the digest again before they unpickle; this check lets the
operator refuse a version whose bytes are missing or do not match *before* any old
version is retired. The object is streamed and hashed (never unpickled), once per
(uri, digest, ETag); later reconciles only ``stat`` it, until its Deployment exists: then
not even that, until the Deployment's Pods are about to change.

A verdict is kept while a model asks for that artifact: one model's new version, or the
model's deletion (``forget``), drops the verdict no model asks for any more. Past
``VERDICTS_KEPT`` verdicts (and ``OWNERS_KEPT`` models) the least recently used go first,
for models whose end the operator never saw (a finalizer removed by hand).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Final

from minio.error import S3Error

from mlmodel_operator.archive import describe_s3_error
from mlmodel_operator.conditions import FALSE, TRUE, UNKNOWN, Reason
from mlmodel_operator.spec import ArtifactSpec
from mlmodel_serving.artifacts import CHUNK_SIZE, parse_s3_uri

VERDICTS_KEPT: Final = 4096
OWNERS_KEPT: Final = 8192

_Key = tuple[str, str, str]  # (uri, sha256, ETag)


@dataclass(frozen=True)
class Verdict:
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    etag: str = field(default="", compare=False)  # the object's, when it was looked at

    @property
    def blocks_rollout(self) -> bool:
        return self.status == FALSE


class ArtifactVerifier:
    """Checks artifacts in the object store; remembers what it already hashed."""

    def __init__(self, s3: Any | None) -> None:
        self.s3 = s3  # a minio.Minio, or None when the operator has no object store
        self._known: OrderedDict[_Key, Verdict] = OrderedDict()  # least recently used first
        self._refs: OrderedDict[str, _Key] = OrderedDict()  # model uid -> what it asks for
        self._users: dict[_Key, int] = {}  # how many models ask for each
        self._lock = threading.Lock()

    def check(
        self,
        artifact: ArtifactSpec,
        owner: str | None = None,
        *,
        deployed: bool = False,
        verified_etag: str = "",
    ) -> Verdict:
        """The verdict on ``artifact``, asked for by the model with uid ``owner``.

        ``deployed``: a Deployment of these bytes (uri and digest) exists, made only after
        they were verified; the object store is not asked again (the reconciler asks
        again, without ``deployed``, before that Deployment's Pods change, and each
        serving Pod checks the digest itself before it loads the model).
        ``verified_etag``: the ETag the object had when these bytes were verified for a
        Deployment (recorded on it); an object that still has it is not downloaded again,
        even by an operator restarted since (an object written anew gets a new ETag).
        """
        if self.s3 is None:
            return Verdict(
                UNKNOWN,
                Reason.VERIFICATION_PENDING,
                "the operator has no object store configured; the serving pods verify "
                "spec.artifact.sha256 before they load the model",
            )
        if deployed:
            return _verified(artifact.uri, artifact.sha256)
        bucket, key = parse_s3_uri(artifact.uri)
        try:
            stat = self.s3.stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchBucket", "NoSuchObject"):
                return Verdict(
                    FALSE,
                    Reason.ARTIFACT_NOT_FOUND,
                    f"spec.artifact.uri: {artifact.uri} does not exist ({exc.code}); upload "
                    "the artifact there or point spec.artifact.uri at an existing object",
                )
            return Verdict(
                UNKNOWN, Reason.VERIFICATION_PENDING, f"cannot stat {artifact.uri}: {exc.code}"
            )
        except Exception as exc:  # the object store is unreachable: try again later
            return Verdict(
                UNKNOWN,
                Reason.VERIFICATION_PENDING,
                f"cannot reach the object store to verify {artifact.uri}: {describe_s3_error(exc)}",
            )
        etag = str(stat.etag)
        if verified_etag and etag == verified_etag:
            return replace(_verified(artifact.uri, artifact.sha256), etag=etag)
        cache_key = (artifact.uri, artifact.sha256, etag)
        with self._lock:
            known = self._known.get(cache_key)
            if known is not None:
                self._known.move_to_end(cache_key)
                self._refer(owner, cache_key)
                return known
        verdict = replace(self._hash(bucket, key, artifact), etag=etag)
        if verdict.status != UNKNOWN:
            with self._lock:
                self._known[cache_key] = verdict
                self._known.move_to_end(cache_key)
                self._refer(owner, cache_key)
                while len(self._known) > VERDICTS_KEPT:
                    self._known.popitem(last=False)
        return verdict

    def forget(self, owner: str) -> None:
        """The model is gone: drop the verdict it asked for, unless another model asks too."""
        with self._lock:
            key = self._refs.pop(owner, None)
            if key is not None:
                self._release(key)

    def _refer(self, owner: str | None, key: _Key) -> None:
        """``owner`` asks for ``key`` now (and no longer for what it asked before)."""
        if owner is None:
            return
        old = self._refs.get(owner)
        self._refs[owner] = key
        self._refs.move_to_end(owner)
        if old == key:
            return
        self._users[key] = self._users.get(key, 0) + 1
        if old is not None:
            self._release(old)
        while len(self._refs) > OWNERS_KEPT:
            _, oldest = self._refs.popitem(last=False)
            self._release(oldest)

    def _release(self, key: _Key) -> None:
        users = self._users.get(key, 0) - 1
        if users > 0:
            self._users[key] = users
            return
        self._users.pop(key, None)
        self._known.pop(key, None)

    def _hash(self, bucket: str, key: str, artifact: ArtifactSpec) -> Verdict:
        digest = hashlib.sha256()
        try:
            resp = self.s3.get_object(bucket, key)  # type: ignore[union-attr]
            try:
                for chunk in resp.stream(CHUNK_SIZE):
                    digest.update(chunk)
            finally:
                resp.close()
                resp.release_conn()
        except Exception as exc:
            return Verdict(
                UNKNOWN,
                Reason.VERIFICATION_PENDING,
                f"cannot read {artifact.uri} to verify it: {describe_s3_error(exc)}",
            )
        actual = digest.hexdigest()
        if actual != artifact.sha256:
            return Verdict(
                FALSE,
                Reason.DIGEST_MISMATCH,
                f"spec.artifact.sha256: expected {artifact.sha256}, but {artifact.uri} has "
                f"sha256 {actual}; fix the digest or the object (nothing unverified is served)",
            )
        return _verified(artifact.uri, actual)


def _verified(uri: str, sha256: str) -> Verdict:
    return Verdict(TRUE, Reason.DIGEST_VERIFIED, f"{uri} has sha256 {sha256}")
