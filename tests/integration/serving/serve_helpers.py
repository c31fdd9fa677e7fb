"""Run ``mlmodel-serve`` as a real process on a free loopback port, with bounded waits."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import requests

SERVE_BIN = Path(sys.executable).parent / "mlmodel-serve"
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save_model(estimator: Any, path: Path) -> str:
    """Dump ``estimator`` with joblib; return the file's sha256."""
    joblib.dump(estimator, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ServeProcess:
    """One ``mlmodel-serve`` process. Use as a context manager; it is always stopped."""

    env: Mapping[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"serve-{self.port}.log"

    def start(self) -> ServeProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", ""),
            "MLMODEL_HTTP_HOST": "127.0.0.1",
            "MLMODEL_HTTP_PORT": str(self.port),
            "MLMODEL_GRPC_PORT": "0",  # HTTP only unless a test asks: processes run side by side
            "MLMODEL_CACHE_DIR": str(self.workdir / "cache"),
            "MLMODEL_LOG_FORMAT": "json",
            **self.env,
        }
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [str(SERVE_BIN)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"mlmodel-serve exited with {self.popen.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"mlmodel-serve not ready within {timeout} s:\n{self.log()}")

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=STOP_TIMEOUT)
        return self.popen.returncode

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(
    env: Mapping[str, str], workdir: Path, port: int | None = None
) -> Iterator[ServeProcess]:
    """Start (on ``port``, or a free one), wait until ready, yield, stop."""
    with ServeProcess(env, workdir, port=port or free_port()) as proc:
        proc.wait_ready()
        yield proc


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """``check()``'s first true value within ``timeout`` seconds, asked every 50 ms."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def shadow_status(proc: ServeProcess, model: str | None = None) -> dict[str, Any]:
    """GET /v2/models/{model}/shadow (the process's own model by default), answered 200."""
    model = model or proc.env["MLMODEL_MODEL_NAME"]
    reply = requests.get(f"{proc.url}/v2/models/{model}/shadow", timeout=REQUEST_TIMEOUT)
    assert reply.status_code == 200, reply.text
    status: dict[str, Any] = reply.json()
    return status


def mirrored(status: Mapping[str, Any]) -> int:
    """The copies a shadow status accounts for: answered (whatever the result) or dropped."""
    return int(sum(status["counts"].values()) + status["dropped"])


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text exposition (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0
