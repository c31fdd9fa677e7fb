"""Shadow discovery between real mlmodel-serve processes on 127.0.0.1.

As the operator configures it: every server of the model asks the same discovery URL
(here the candidate's own port, standing in for the ``<model>-shadow`` Service); the
candidate, with ``MLMODEL_SHADOW_SAMPLE``, answers ``GET /v2/shadow/offer``. Killing the
candidate stands in for the Service being deleted. Waits have limits; times are not
asserted.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from serve_helpers import (
    ServeProcess,
    free_port,
    metric,
    mirrored,
    save_model,
    serving,
    shadow_status,
    wait_for,
)
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from mlmodel_operator.localcluster import MinioServer
from mlmodel_serving.decisions import Record, decode_table, read_table

pytestmark = pytest.mark.integration
TIMEOUT = 10
DISCOVERY_TIMEOUT = 20.0  # asked every second here; a process may be slow on 2 shared cores
SETTLE_TIMEOUT = 30.0
INFER = "/v2/models/{model_name}/infer"
BUCKET = "decisions-test"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, np.ndarray[Any, Any]]:
    x, y = make_classification(n_samples=600, n_features=6, random_state=3)
    path = tmp_path_factory.mktemp("discovery") / "model.joblib"
    return path, save_model(LogisticRegression(max_iter=1000).fit(x, y), path), x[:40]


def model_env(
    artifact: tuple[Path, str, Any], version: str, discovery_port: int | None, **extra: str
) -> dict[str, str]:
    env = {
        "MLMODEL_MODEL_NAME": "clf",
        "MLMODEL_MODEL_VERSION": version,
        "MLMODEL_ARTIFACT_URI": str(artifact[0]),
        "MLMODEL_ARTIFACT_SHA256": artifact[1],
        "MLMODEL_SHADOW_CONFIG": str(artifact[0].parent / "absent-shadow.json"),
        "MLMODEL_SHADOW_DISCOVERY_SECONDS": "1",
        **extra,
    }
    if discovery_port is not None:
        env["MLMODEL_SHADOW_DISCOVERY"] = f"http://127.0.0.1:{discovery_port}"
    return env


def candidate_env(
    artifact: tuple[Path, str, Any], version: str, port: int, **extra: str
) -> dict[str, str]:
    """A candidate offering every request; it asks its own port, as its Pods ask the
    Service that selects them."""
    return model_env(artifact, version, port, MLMODEL_SHADOW_SAMPLE="1", **extra)


def infer_count(proc: ServeProcess) -> float:
    text = requests.get(f"{proc.url}/metrics", timeout=TIMEOUT).text
    return metric(text, "mlmodel_requests_total", route=INFER, code="200")


def send_rows(
    proc: ServeProcess, rows: np.ndarray[Any, Any], prefix: str = "r", **headers: str
) -> None:
    """One request per row; every answer is the stable's own, 200."""
    with requests.Session() as session:
        for i, row in enumerate(rows):
            body = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, row.size],
                                "data": row.tolist()}]}  # fmt: skip
            reply = session.post(
                f"{proc.url}/v2/models/clf/infer",
                json=body,
                headers={"x-request-id": f"{prefix}-{i}", **headers},
                timeout=TIMEOUT,
            )
            assert reply.status_code == 200, reply.text
            assert reply.headers["x-model-version"] == proc.env["MLMODEL_MODEL_VERSION"]


def kill(proc: ServeProcess) -> None:
    assert proc.popen is not None
    os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(timeout=TIMEOUT)


def lines(proc: ServeProcess, text: str) -> int:
    return sum(text in line for line in proc.log().splitlines())


def offering(version: str, port: int) -> Callable[[ServeProcess], Any]:
    doc = {"target": f"http://127.0.0.1:{port}", "model": "clf", "version": version,
           "sample": 1.0}  # fmt: skip
    return lambda stable: (s := shadow_status(stable))["config"] == doc and s


# -- the lifecycle -------------------------------------------------------------------


def test_discovery_starts_stops_and_restarts_mirroring(
    artifact: tuple[Path, str, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    rows = artifact[2][:30]
    port = free_port()
    with serving(model_env(artifact, "1", port), tmp_path) as stable:
        status = shadow_status(stable)
        assert status["config"] is None and status["discovery"]["state"] == "none"
        # A candidate appears: mirroring starts within the poll interval.
        with serving(candidate_env(artifact, "2", port), tmp_path, port=port) as first:
            status = wait_for("mirroring to v2", lambda: offering("2", port)(stable),
                              DISCOVERY_TIMEOUT)  # fmt: skip
            assert status["source"] == "discovery" and status["active"] is True
            send_rows(stable, rows)
            wait_for("30 copies at v2", lambda: infer_count(first) == 30, SETTLE_TIMEOUT)
            status = wait_for(
                "30 copies counted",
                lambda: (s := shadow_status(stable))["counts"]["agree"] == 30 and s,
                SETTLE_TIMEOUT,
            )
            assert status["counts"] == {"agree": 30, "disagree": 0, "error": 0}
            # The candidate's offer reaches itself too, and is ignored: no copy to itself.
            own = wait_for(
                "the candidate has asked itself",
                lambda: (s := shadow_status(first))["discovery"]["state"] == "own_version" and s,
                DISCOVERY_TIMEOUT,
            )
            assert own["config"] is None and own["active"] is False
            send_rows(first, rows[:5], prefix="direct")
            time.sleep(1.0)
            assert infer_count(first) == 35
            # The candidate goes away (its Service deleted): mirroring stops.
            kill(first)
        send_rows(stable, rows[:10], prefix="during")  # copies may fail until it notices
        wait_for("mirroring off", lambda: shadow_status(stable)["config"] is None,
                 DISCOVERY_TIMEOUT)  # fmt: skip
        settled = wait_for(
            "no copy in flight", lambda: (s := shadow_status(stable))["in_flight"] == 0 and s,
            SETTLE_TIMEOUT,
        )  # fmt: skip
        asked = settled["discovery"]["asked"]
        logged = len(stable.log().splitlines())
        send_rows(stable, rows, prefix="after")  # the stable keeps answering
        wait_for("three more asks",
                 lambda: shadow_status(stable)["discovery"]["asked"] >= asked + 3,
                 DISCOVERY_TIMEOUT)  # fmt: skip
        status = shadow_status(stable)
        assert mirrored(status) == mirrored(settled)  # nothing mirrored while off
        assert status["discovery"]["state"] == "none" and status["discovery"]["detail"]
        # No line per ask, none per request: the log did not grow while nobody offered.
        assert len(stable.log().splitlines()) == logged, stable.log()
        assert lines(stable, "shadow request failed") <= 1  # at most once per 10 s
        # A new candidate appears at the same address: mirroring starts again, to it.
        with serving(candidate_env(artifact, "3", port), tmp_path, port=port) as second:
            wait_for("mirroring to v3", lambda: offering("3", port)(stable), DISCOVERY_TIMEOUT)
            send_rows(stable, rows, prefix="again")
            wait_for("30 copies at v3", lambda: infer_count(second) == 30, SETTLE_TIMEOUT)
            status = wait_for(
                "30 copies counted for v3",
                lambda: (s := shadow_status(stable))["counts"]["agree"] == 30 and s,
                SETTLE_TIMEOUT,
            )
            assert status["candidate"]["version"] == "3"
            wait_for(
                "the new candidate has asked itself",
                lambda: shadow_status(second)["discovery"]["state"] == "own_version",
                DISCOVERY_TIMEOUT,
            )
            assert lines(second, "this server's own version") == 1
            on, off = lines(stable, "shadow traffic on"), lines(stable, "shadow traffic off")
            assert (on, off) == (2, 1), stable.log()
        assert lines(stable, "shadow discovery: asking http://127.0.0.1") == 1


# -- no discovery, no polling -----------------------------------------------------------


@contextlib.contextmanager
def listening_socket() -> Iterator[socket.socket]:
    """A socket that listens and never accepts: a connection attempt makes it readable."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock


def connection_arrives(sock: socket.socket, within: float) -> bool:
    readable, _, _ = select.select([sock], [], [], within)
    return bool(readable)


def test_a_server_without_discovery_never_asks(
    artifact: tuple[Path, str, np.ndarray[Any, Any]], tmp_path: Path
) -> None:
    with listening_socket() as sock:
        port = sock.getsockname()[1]
        with serving(model_env(artifact, "1", None), tmp_path) as quiet:
            assert shadow_status(quiet)["discovery"] is None
            assert not connection_arrives(sock, 4.0)  # four intervals of 1 s
        # The same check sees a server that does ask (the test can tell).
        with serving(model_env(artifact, "1", port), tmp_path):
            assert connection_arrives(sock, DISCOVERY_TIMEOUT)


# -- copies are no decisions on the candidate --------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MinioServer]:
    server = MinioServer(tmp_path / "minio").start()
    try:
        server.client().make_bucket(BUCKET)
        yield server
    finally:
        server.stop()


def decision_env(store: MinioServer) -> dict[str, str]:
    return {
        "MLMODEL_S3_ENDPOINT": store.endpoint,
        "MLMODEL_S3_ACCESS_KEY": store.access_key,
        "MLMODEL_S3_SECRET_KEY": store.secret_key,
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": BUCKET,
        "MLMODEL_DECISION_LOG_FLUSH_SECONDS": "0.3",
        "MLMODEL_NAMESPACE": "team-a",
    }


def records(store: MinioServer) -> list[Record]:
    client = store.client()
    out: list[Record] = []
    for obj in client.list_objects(BUCKET, prefix="decisions/", recursive=True):
        response = client.get_object(BUCKET, obj.object_name)
        try:
            out += decode_table(read_table(response.read()), obj.object_name)
        finally:
            response.close()
            response.release_conn()
    return out


def test_the_candidate_records_no_decision_for_a_copy(
    artifact: tuple[Path, str, np.ndarray[Any, Any]], tmp_path: Path, store: MinioServer
) -> None:
    n = 20
    rows = artifact[2][:n]
    port = free_port()
    logs = decision_env(store)
    with (
        serving(candidate_env(artifact, "2", port, **logs), tmp_path, port=port) as cand,
        serving(model_env(artifact, "1", port, **logs), tmp_path) as stable,
    ):
        wait_for("mirroring to v2", lambda: offering("2", port)(stable), DISCOVERY_TIMEOUT)
        send_rows(stable, rows, prefix="client")
        wait_for(f"{n} copies answered", lambda: infer_count(cand) == n, SETTLE_TIMEOUT)
        wait_for(
            f"{n} copies compared",
            lambda: shadow_status(stable)["counts"]["agree"] == n,
            SETTLE_TIMEOUT,
        )
        # The candidate's own log works: a direct request is recorded there.
        send_rows(cand, rows[:2], prefix="direct")
        # A stable offers no copies: the header does not keep a decision unrecorded.
        send_rows(stable, rows[:1], prefix="header", **{"x-mlmodel-shadow": "1"})
    # SIGTERM (leaving the block) flushed every record.
    by_version: dict[str, list[str]] = {}
    for record in records(store):
        assert (record.namespace, record.model) == ("team-a", "clf")
        by_version.setdefault(record.version, []).append(record.request_id)
    expected_stable = sorted([f"client-{i}" for i in range(n)] + ["header-0"])
    assert sorted(by_version["1"]) == expected_stable
    assert sorted(by_version.get("2", [])) == ["direct-0", "direct-1"]
