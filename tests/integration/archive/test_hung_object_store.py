"""Every object-store call the operator makes gives up on a hung peer, and says where.

The peer is a TCP listener on 127.0.0.1 that accepts connections and never answers: not a
mock of MinIO, but what a hung MinIO looks like from the operator (before, the client's
defaults waited 300 s per attempt, 6 attempts, while holding the model's lock).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from archive_helpers import NOW, Trained, entry, model_spec, settings

from mlmodel_operator.archive import (
    ArchiveError,
    S3Archiver,
    ensure_bucket,
    make_store_client,
)
from mlmodel_operator.conditions import UNKNOWN
from mlmodel_operator.ledger import LedgerError, S3Ledger
from mlmodel_operator.verify import ArtifactVerifier
from mlmodel_serving.artifacts import S3Config

pytestmark = pytest.mark.integration

BOUND = 30.0  # generous: the client's own bounds are 3 s to connect and 10 s to read


def test_the_operators_store_calls_give_up_on_a_hung_peer_and_name_it(
    hung_peer: str, within_bound: Callable[..., tuple[float, Any]]
) -> None:
    client = make_store_client(S3Config(hung_peer, "access", "secret"))
    art = Trained("1", "s3://models/churn/1/model.joblib", "0" * 64, 10, None)
    model = model_spec("churn", "ns", art)
    calls: dict[str, Callable[[], Any]] = {
        "archive": lambda: S3Archiver(client, settings("model-archive"))(
            model, entry(art), "SpecChanged", NOW
        ),
        "verify": lambda: ArtifactVerifier(client).check(model.artifact),
        "bucket": lambda: ensure_bucket(client, "model-archive"),
        "ledger": lambda: S3Ledger(client, settings("model-archive")).record(
            model, "Deployed", "1", {}, NOW
        ),
    }
    results: dict[str, tuple[float, Any]] = {}
    threads = [
        threading.Thread(target=lambda n=n, c=c: results.__setitem__(n, within_bound(c, BOUND)))
        for n, c in calls.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    for name, (elapsed, outcome) in results.items():
        assert elapsed < BOUND, (name, elapsed, outcome)
        message = outcome.message if name == "verify" else str(outcome)
        assert hung_peer in message, (name, message)
        assert "no answer" in message, (name, message)
    assert isinstance(results["archive"][1], ArchiveError)
    assert isinstance(results["bucket"][1], ArchiveError)
    assert isinstance(results["ledger"][1], LedgerError)
    assert results["verify"][1].status == UNKNOWN  # tried again at the next reconcile


def test_the_commands_and_the_model_servers_fetch_give_up_on_a_hung_peer(
    hung_peer: str, tmp_path: Any
) -> None:
    """`mlmodel archive ls` and a model server fetching its artifact: an error naming the
    store within the bound (before: the minio client's 300 s per attempt, six attempts)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def free_port() -> int:
        return int(port)

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")},
        "MLMODEL_S3_ENDPOINT": hung_peer,
        "MLMODEL_S3_ACCESS_KEY": "key",
        "MLMODEL_S3_SECRET_KEY": "secret-key",
    }
    bin_dir = Path(sys.executable).parent
    started = time.monotonic()
    out = subprocess.run([str(bin_dir / "mlmodel"), "archive", "ls"], env=env,
                         capture_output=True, text=True, timeout=4 * BOUND, check=False)  # fmt: skip
    assert time.monotonic() - started < 2 * BOUND
    assert out.returncode == 1 and hung_peer in out.stderr, out.stderr

    serve_env = {
        **env,
        "MLMODEL_MODEL_NAME": "m",
        "MLMODEL_ARTIFACT_URI": "s3://models/m/1/model.joblib",
        "MLMODEL_ARTIFACT_SHA256": "a" * 64,
        "MLMODEL_CACHE_DIR": str(tmp_path / "cache"),
        "MLMODEL_HTTP_HOST": "127.0.0.1",
        "MLMODEL_HTTP_PORT": str(free_port()),
        "MLMODEL_GRPC_PORT": "0",
    }
    started = time.monotonic()
    served = subprocess.run([str(bin_dir / "mlmodel-serve")], env=serve_env,
                            capture_output=True, text=True, timeout=4 * BOUND + 60,
                            check=False)  # fmt: skip
    elapsed = time.monotonic() - started
    assert served.returncode != 0 and elapsed < 2 * BOUND + 30, (elapsed, served.stderr[-2000:])
    log = served.stdout + served.stderr
    assert "timed out" in log and hung_peer.rsplit(":", 1)[1] in log, log[-2000:]
