"""The operator's own check of an artifact before it rolls a version out.

The serving pods verify the digest again before they unpickle; this check lets the
operator refuse a version whose bytes are missing or do not match *before* any old
version is retired. The object is streamed and hashed (never unpickled), once per
(uri, digest, ETag); later reconciles only ``stat`` it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

from minio.error import S3Error

from mlmodel_operator.archive import describe_s3_error
from mlmodel_operator.conditions import FALSE, TRUE, UNKNOWN, Reason
from mlmodel_operator.spec import ArtifactSpec
from mlmodel_serving.artifacts import CHUNK_SIZE, parse_s3_uri


@dataclass(frozen=True)
class Verdict:
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str

    @property
    def blocks_rollout(self) -> bool:
        return self.status == FALSE


class ArtifactVerifier:
    """Checks artifacts in the object store; remembers what it already hashed."""

    def __init__(self, s3: Any | None) -> None:
        self.s3 = s3  # a minio.Minio, or None when the operator has no object store
        self._known: dict[tuple[str, str, str], Verdict] = {}
        self._lock = threading.Lock()

    def check(self, artifact: ArtifactSpec) -> Verdict:
        if self.s3 is None:
            return Verdict(
                UNKNOWN,
                Reason.VERIFICATION_PENDING,
                "the operator has no object store configured; the serving pods verify "
                "spec.artifact.sha256 before they load the model",
            )
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
        cache_key = (artifact.uri, artifact.sha256, str(stat.etag))
        with self._lock:
            known = self._known.get(cache_key)
        if known is not None:
            return known
        verdict = self._hash(bucket, key, artifact)
        if verdict.status != UNKNOWN:
            with self._lock:
                self._known[cache_key] = verdict
        return verdict

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
        return Verdict(TRUE, Reason.DIGEST_VERIFIED, f"{artifact.uri} has sha256 {actual}")
