"""Helpers of the real-node tier: V2 predictions through a Service, and a bounded load
client that records every request it sends."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from mlmodel_operator.localcluster import wait_until

ROWS = [
    [0.5, -1.2, 0.3, 1.1, -0.7, 0.2, 0.9, -0.4],
    [-1.5, 0.8, -0.2, 0.4, 1.3, -0.9, 0.1, 0.6],
]


def infer_body(rows: list[list[float]] = ROWS) -> bytes:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [len(rows), len(rows[0])],
                    "datatype": "FP64",
                    "data": [v for row in rows for v in row],
                }
            ]
        }
    ).encode()


def predict(url: str, timeout: float = 5.0) -> dict[str, Any]:
    """One V2 inference on a new connection; the decoded response."""
    req = urllib.request.Request(
        url, data=infer_body(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body: dict[str, Any] = json.load(resp)
        return body


def wait_answering(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """The first answer of a new Service: kube-proxy programs its rules a moment after the
    Service and its endpoints exist (until then the ClusterIP refuses connections)."""
    answers: list[dict[str, Any]] = []

    def answered() -> bool:
        answers.append(predict(url))
        return True

    wait_until(f"an answer from {url}", answered, timeout, 0.2)
    return answers[-1]


@dataclass
class Outcome:
    """One request of the load client: its sequence number and what came back."""

    seq: int
    ok: bool
    version: str | None = None
    error: str | None = None


@dataclass
class LoadClient:
    """A bounded client: ``rate`` requests per second, each on a new connection, until
    stopped or ``max_seconds`` pass. Records every outcome, failures included."""

    url: str
    rate: float = 30.0
    max_seconds: float = 300.0
    timeout: float = 5.0
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadClient:
        self._thread = threading.Thread(target=self._run, name="load-client", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 5)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        interval = 1.0 / self.rate
        seq = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                body = predict(self.url, self.timeout)
                self.outcomes.append(Outcome(seq, True, version=str(body.get("model_version"))))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                self.outcomes.append(Outcome(seq, False, error=f"{type(exc).__name__}: {exc}"))
            seq += 1
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def versions(self) -> list[str | None]:
        return [o.version for o in self.outcomes if o.ok]

    def wait_for(self, count: int, timeout: float) -> None:
        """Until at least ``count`` more requests were answered."""
        target = len(self.outcomes) + count
        wait_until(f"{count} more requests", lambda: len(self.outcomes) >= target, timeout)
