"""mlmodel_serving.artifacts with local files (the S3 path is covered by integration tests)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import joblib
import pytest

from mlmodel_serving.artifacts import (
    DigestMismatchError,
    S3Config,
    cached_path,
    fetch_verified,
    load_verified_joblib,
    make_client,
    parse_s3_uri,
    sha256_file,
)


class SideEffect:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (Path.touch, (str(self.marker),))


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://models/churn/3/model.joblib") == ("models", "churn/3/model.joblib")


@pytest.mark.parametrize(
    "uri",
    [
        "models/churn",
        "s3://",
        "s3://bucket",
        "s3://bucket/",
        "s3:///key",
        "http://b/k",
        "s3://b/dir/",
    ],
)
def test_parse_s3_uri_rejects_with_the_accepted_form(uri: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/key") as err:
        parse_s3_uri(uri)
    assert repr(uri) in str(err.value)


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "a"
    f.write_bytes(b"x" * 3_000_000)
    assert sha256_file(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_s3config_repr_hides_the_secret() -> None:
    cfg = S3Config("127.0.0.1:9000", "access", "very-secret-value", secure=True, region="eu")
    assert "very-secret-value" not in repr(cfg)
    assert "very-secret-value" not in str(cfg)
    assert "access" in repr(cfg)


def test_s3config_from_env() -> None:
    cfg = S3Config.from_env(
        {
            "MLMODEL_S3_ENDPOINT": "minio.ns.svc:9000",
            "MLMODEL_S3_ACCESS_KEY": "ak",
            "MLMODEL_S3_SECRET_KEY": "sk",
            "MLMODEL_S3_SECURE": "true",
        }
    )
    assert cfg == S3Config("minio.ns.svc:9000", "ak", "sk", secure=True, region=None)
    assert S3Config.from_env({"MLMODEL_S3_ENDPOINT": "h:1"}).secure is False


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "MLMODEL_S3_ENDPOINT"),
        ({"MLMODEL_S3_ENDPOINT": "http://h:9000"}, "host:port"),
        ({"MLMODEL_S3_ENDPOINT": "h:9000", "MLMODEL_S3_SECURE": "maybe"}, "true or false"),
    ],
)
def test_s3config_from_env_rejects(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        S3Config.from_env(env)


def test_make_client() -> None:
    client = make_client(S3Config("127.0.0.1:9000", "ak", "sk"))
    assert client._base_url.host == "127.0.0.1:9000"


def test_fetch_verified_local_copies_into_the_cache(tmp_path: Path) -> None:
    src = tmp_path / "model.joblib"
    src.write_bytes(b"model bytes")
    digest = hashlib.sha256(b"model bytes").hexdigest()
    path = fetch_verified(str(src), digest, tmp_path / "cache", None)
    assert path == tmp_path / "cache" / "sha256" / digest == cached_path(tmp_path / "cache", digest)
    assert path.read_bytes() == b"model bytes"
    # Served from the cache even when the source is gone.
    src.unlink()
    assert fetch_verified(str(src), digest, tmp_path / "cache", None) == path


def test_fetch_verified_refuses_a_mismatch_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "model.joblib"
    src.write_bytes(b"tampered bytes")
    expected = hashlib.sha256(b"model bytes").hexdigest()
    actual = hashlib.sha256(b"tampered bytes").hexdigest()
    with pytest.raises(DigestMismatchError) as err:
        fetch_verified(str(src), expected, tmp_path / "cache", None)
    assert expected in str(err.value) and actual in str(err.value) and str(src) in str(err.value)
    assert (err.value.expected, err.value.actual) == (expected, actual)
    assert list((tmp_path / "cache" / "sha256").iterdir()) == []


def test_fetch_verified_reverifies_a_corrupted_cache_entry(tmp_path: Path) -> None:
    src = tmp_path / "model.joblib"
    src.write_bytes(b"model bytes")
    digest = hashlib.sha256(b"model bytes").hexdigest()
    path = fetch_verified(str(src), digest, tmp_path / "cache", None)
    path.write_bytes(b"corrupted on disk")
    assert fetch_verified(str(src), digest, tmp_path / "cache", None).read_bytes() == b"model bytes"
    # Corrupted and the source changed too: refused, the bad entry removed.
    path.write_bytes(b"corrupted on disk")
    src.write_bytes(b"other")
    with pytest.raises(DigestMismatchError):
        fetch_verified(str(src), digest, tmp_path / "cache", None)
    assert not path.exists()


def test_fetch_verified_removes_old_partial_downloads(tmp_path: Path) -> None:
    src = tmp_path / "model.joblib"
    src.write_bytes(b"model bytes")
    partials = tmp_path / "cache" / "sha256"
    partials.mkdir(parents=True)
    old, fresh = partials / ".partial-old", partials / ".partial-fresh"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (0, 0))
    fetch_verified(str(src), hashlib.sha256(b"model bytes").hexdigest(), tmp_path / "cache", None)
    assert not old.exists() and fresh.exists()


@pytest.mark.parametrize("sha", ["", "ABC", "0" * 63, "G" * 64, "A" * 64])
def test_fetch_verified_rejects_a_malformed_digest(tmp_path: Path, sha: str) -> None:
    with pytest.raises(ValueError, match="64 lowercase hex"):
        fetch_verified(str(tmp_path / "x"), sha, tmp_path / "cache", None)


def test_fetch_verified_s3_needs_a_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no S3 configuration"):
        fetch_verified("s3://b/k", "0" * 64, tmp_path, None)


def test_fetch_verified_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="s3://bucket/key or a local path"):
        fetch_verified(str(tmp_path / "missing"), "0" * 64, tmp_path / "cache", None)


def test_load_verified_joblib_never_unpickles_a_mismatch(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    path = tmp_path / "evil.joblib"
    joblib.dump(SideEffect(marker), path)
    with pytest.raises(DigestMismatchError):
        load_verified_joblib(path, "0" * 64)
    assert not marker.exists()
    # The same file with its true digest is unpickled (the marker proves the test's premise).
    load_verified_joblib(path, sha256_file(path))
    assert marker.exists()


def test_load_verified_joblib_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.joblib"
    joblib.dump({"a": [1, 2, 3]}, path)
    assert load_verified_joblib(path, sha256_file(path)) == {"a": [1, 2, 3]}
