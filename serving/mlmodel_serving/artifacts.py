"""The artifact store: fetch a model file from S3/MinIO or a local path, verified by digest.

Nothing unverified is ever unpickled: every byte is hashed while it is copied into the
cache, the digest is compared before the file gets its final name, and
:func:`load_verified_joblib` hashes the very file handle it then unpickles from.

This module is a library shared by the model server and the operator's archive code; it
has no side effects at import time and never logs credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import minio

CHUNK_SIZE = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class DigestMismatchError(Exception):
    """The bytes of an artifact do not have the digest the caller expected."""

    def __init__(self, uri: str, expected: str, actual: str) -> None:
        super().__init__(
            f"sha256 mismatch for {uri}: expected {expected}, got {actual}; "
            "refusing to load an artifact whose digest does not match"
        )
        self.uri = uri
        self.expected = expected
        self.actual = actual


def validate_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex characters, else raise ValueError."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise ValueError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
    return sha256


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"invalid S3 URI {uri!r}: expected the form s3://bucket/key")
    bucket, sep, key = uri[len("s3://") :].partition("/")
    if not bucket or not sep or not key or key.endswith("/"):
        raise ValueError(f"invalid S3 URI {uri!r}: expected the form s3://bucket/key")
    return bucket, key


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return _sha256_stream(f)


def _sha256_stream(f: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK_SIZE):
        digest.update(chunk)
    return digest.hexdigest()


def parse_bool(name: str, value: str) -> bool:
    """An environment flag: 1/true/yes/on or 0/false/no/off (empty is false)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid {name}={value!r}: expected true or false")


@dataclass(frozen=True)
class S3Config:
    """Where and how to reach the object store. The secret never appears in ``repr``."""

    endpoint: str
    access_key: str = ""
    secret_key: str = ""
    secure: bool = False
    region: str | None = None

    def __repr__(self) -> str:
        return (
            f"S3Config(endpoint={self.endpoint!r}, access_key={self.access_key!r}, "
            f"secret_key={'***' if self.secret_key else ''!r}, secure={self.secure!r}, "
            f"region={self.region!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Config:
        """Read ``MLMODEL_S3_*`` variables (``environ`` defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        endpoint = env.get("MLMODEL_S3_ENDPOINT", "").strip()
        if not endpoint:
            raise ValueError(
                "MLMODEL_S3_ENDPOINT is not set: expected host:port of the S3/MinIO server"
            )
        return cls(
            endpoint=_check_endpoint(endpoint),
            access_key=env.get("MLMODEL_S3_ACCESS_KEY", ""),
            secret_key=env.get("MLMODEL_S3_SECRET_KEY", ""),
            secure=parse_bool("MLMODEL_S3_SECURE", env.get("MLMODEL_S3_SECURE", "false")),
            region=env.get("MLMODEL_S3_REGION") or None,
        )


def _check_endpoint(endpoint: str) -> str:
    if "://" in endpoint or "/" in endpoint:
        raise ValueError(
            f"invalid S3 endpoint {endpoint!r}: expected host:port without a scheme or path "
            "(TLS is chosen by MLMODEL_S3_SECURE)"
        )
    return endpoint


# The artifact fetch's bounds: seconds to connect, and between two reads of the body.
FETCH_CONNECT_TIMEOUT = 5.0
FETCH_READ_TIMEOUT = 20.0


def make_client(
    cfg: S3Config,
    http_client: Any = None,
    *,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_connections: int = 10,
) -> minio.Minio:
    """A ``minio.Minio`` client for ``cfg`` (anonymous when no access key is given).

    ``http_client``: a ``urllib3.PoolManager`` with timeouts and retries of the caller's
    choosing. Or ``connect_timeout`` and ``read_timeout`` (seconds): a pool with these
    bounds and no retries of its own, so a call to a hung store fails after them instead
    of the minio client's default (300 s each, then up to 5 retries); it checks TLS
    certificates like the default one (``SSL_CERT_FILE``, else certifi's bundle).
    Neither keeps the minio client's own.
    """
    import minio  # imported on use: serving a local file never needs it (~0.5 s at start)

    if connect_timeout is not None or read_timeout is not None:
        if http_client is not None:
            raise ValueError("give make_client an http_client or timeouts, not both")
        if connect_timeout is None or read_timeout is None:
            raise ValueError("make_client needs both connect_timeout and read_timeout")
        import certifi
        import urllib3

        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
    return minio.Minio(
        _check_endpoint(cfg.endpoint),
        access_key=cfg.access_key or None,
        secret_key=cfg.secret_key or None,
        secure=cfg.secure,
        region=cfg.region,
        http_client=http_client,
    )


def cached_path(cache_dir: Path, sha256: str) -> Path:
    """Where an artifact with this digest lives in the cache."""
    return Path(cache_dir) / "sha256" / validate_sha256(sha256)


def fetch_verified(uri: str, sha256: str, cache_dir: Path, s3: S3Config | None) -> Path:
    """Make the artifact at ``uri`` available at ``<cache_dir>/sha256/<sha256>``, verified.

    ``uri`` is ``s3://bucket/key`` (then ``s3`` is required) or a local path. The bytes
    are copied to a temporary file in the cache while being hashed; only when the digest
    matches does the file get its final name. A file already in the cache is hashed again
    and replaced if it no longer matches. Raises :class:`DigestMismatchError` on a
    mismatch, ValueError on bad arguments and OSError / ``minio`` errors on I/O failures.
    """
    validate_sha256(sha256)
    target = cached_path(cache_dir, sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent)
    if target.is_file():
        if sha256_file(target) == sha256:
            return target
        # A corrupted cache entry is not trusted: drop it and fetch again.
        target.unlink()

    if uri.startswith("s3://"):
        response = _get_s3_object(uri, s3)
        try:
            actual, tmp = _copy_hashed(response.stream(CHUNK_SIZE), target.parent)
        finally:
            response.close()
            response.release_conn()
    else:
        source = Path(uri.removeprefix("file://"))
        if not source.is_file():
            raise FileNotFoundError(
                f"artifact {uri!r} is not a file (expected s3://bucket/key or a local path)"
            )
        with open(source, "rb") as f:
            actual, tmp = _copy_hashed(iter(lambda: f.read(CHUNK_SIZE), b""), target.parent)

    if actual != sha256:
        tmp.unlink(missing_ok=True)
        raise DigestMismatchError(uri, sha256, actual)
    os.replace(tmp, target)
    return target


def _get_s3_object(uri: str, s3: S3Config | None) -> Any:
    """The open GET response (urllib3's) for an ``s3://`` URI; the caller closes it."""
    bucket, key = parse_s3_uri(uri)
    if s3 is None:
        raise ValueError(f"{uri} is an S3 URI but no S3 configuration was given")
    # bounded, so a hung store fails the start (and the Pod restarts) instead of waiting
    # the minio client's default 300 s per attempt, six attempts
    client = make_client(s3, connect_timeout=FETCH_CONNECT_TIMEOUT, read_timeout=FETCH_READ_TIMEOUT)
    return client.get_object(bucket, key)


def fetch_bytes(uri: str, s3: S3Config | None, max_bytes: int = 16 * 1024 * 1024) -> bytes:
    """The bytes of a small, non-executable document (e.g. a drift baseline), unverified.

    Never use this for anything that gets unpickled: that is :func:`fetch_verified`.
    """
    data: bytes
    if uri.startswith("s3://"):
        response = _get_s3_object(uri, s3)
        try:
            data = response.read(max_bytes + 1)
        finally:
            response.close()
            response.release_conn()
    else:
        with open(uri.removeprefix("file://"), "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{uri} is larger than {max_bytes} bytes")
    return data


def _remove_stale_partials(directory: Path, max_age_seconds: float = 3600.0) -> None:
    """Delete temp files a killed download left behind (old ones only: another process
    sharing the cache may be writing a fresh one)."""
    now = time.time()
    for partial in directory.glob(".partial-*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > max_age_seconds:
                partial.unlink()


def _copy_hashed(chunks: Iterable[bytes], directory: Path) -> tuple[str, Path]:
    """Write ``chunks`` to a new temp file in ``directory``; return (sha256, path)."""
    digest = hashlib.sha256()
    fd, name = tempfile.mkstemp(dir=directory, prefix=".partial-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return digest.hexdigest(), tmp


def load_verified_joblib(path: Path | str, sha256: str) -> Any:
    """Unpickle a joblib file, but only after its bytes hash to ``sha256``.

    The digest is computed on the same open file handle that is then unpickled, so the
    bytes that were checked are the bytes that are loaded.
    """
    import joblib  # imported here: the operator uses this module without loading models

    validate_sha256(sha256)
    with open(path, "rb") as f:
        actual = _sha256_stream(f)
        if actual != sha256:
            raise DigestMismatchError(str(path), sha256, actual)
        f.seek(0)
        return joblib.load(f)
