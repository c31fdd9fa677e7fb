"""Session fixtures: the real local servers, started once and always stopped.

Unit tests (tests/unit) never touch these; integration and e2e tests ask for them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from mlmodel_operator.localcluster import LocalCluster, MinioServer


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """etcd + kube-apiserver + controller-manager + scheduler + kwok with one Ready node."""
    with LocalCluster.up(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A real MinIO server with generated credentials."""
    server = MinioServer(Path(tmp_path_factory.mktemp("minio"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """A Kubernetes API client for the session's cluster, as its admin user."""
    api_client = config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture()
def hung_peer() -> Iterator[str]:
    """host:port of a listener that accepts every connection and never sends a byte: a
    hung server as its clients see it (not a mock of one)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


@pytest.fixture()
def within_bound() -> Callable[[Callable[[], Any], float], tuple[float, Any]]:
    """``within_bound(call, bound)``: run ``call`` on a daemon thread and return (seconds
    taken, its result or the exception it raised); fail at twice ``bound`` if it has not
    returned (the thread is left behind: a call stuck on a hung peer cannot be stopped
    from outside). The test asserts ``bound`` itself, naming what it called."""

    def run_within(call: Callable[[], Any], bound: float) -> tuple[float, Any]:
        out: list[Any] = []

        def run() -> None:
            try:
                out.append(call())
            except Exception as exc:
                out.append(exc)

        started = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(2 * bound)
        elapsed = time.monotonic() - started
        assert out, f"no answer after {elapsed:.0f} s: the call waits on a hung peer"
        return elapsed, out[0]

    return run_within
