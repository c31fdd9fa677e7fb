"""The operator's object-store client: bounded, no retries of its own, errors that say where."""

from __future__ import annotations

import logging
import socket

import pytest
import urllib3

from mlmodel_operator.archive import (
    S3_CONNECT_TIMEOUT,
    S3_READ_TIMEOUT,
    ArchiveError,
    ensure_bucket,
    make_store_client,
)
from mlmodel_serving.artifacts import S3Config, make_client


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_store_client_has_short_bounds_and_no_retries() -> None:
    client = make_store_client(S3Config("127.0.0.1:9000", "ak", "sk"))
    pool = client._http.connection_pool_kw  # the PoolManager every call goes through
    timeout = pool["timeout"]
    assert (timeout.connect_timeout, timeout.read_timeout) == (S3_CONNECT_TIMEOUT, S3_READ_TIMEOUT)
    assert pool["retries"].total is False  # urllib3's Retry(False): no retry of any kind
    assert pool["cert_reqs"] == "CERT_REQUIRED"  # TLS is checked as the default client does


def test_the_store_client_keeps_a_connection_per_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlmodel_operator.handlers import _object_store

    monkeypatch.setenv("MLMODEL_S3_ENDPOINT", "127.0.0.1:9000")
    monkeypatch.setenv("MLMODEL_S3_ACCESS_KEY", "ak")
    monkeypatch.setenv("MLMODEL_S3_SECRET_KEY", "sk")
    client, _ = _object_store(logging.getLogger("test"), workers=48)
    # beyond the pool, each request opened a connection and closed it after
    assert client._http.connection_pool_kw["maxsize"] == 48


def test_make_client_takes_timeouts_or_a_pool_not_both() -> None:
    cfg = S3Config("127.0.0.1:9000")
    with pytest.raises(ValueError, match="not both"):
        make_client(cfg, urllib3.PoolManager(), connect_timeout=1, read_timeout=1)
    with pytest.raises(ValueError, match="both connect_timeout and read_timeout"):
        make_client(cfg, connect_timeout=1)


def test_a_refused_connection_names_the_endpoint_at_once() -> None:
    endpoint = f"127.0.0.1:{closed_port()}"
    client = make_store_client(S3Config(endpoint, "ak", "sk"))
    with pytest.raises(ArchiveError) as info:
        ensure_bucket(client, "model-archive")
    assert f"connection refused by {endpoint}" in str(info.value)
