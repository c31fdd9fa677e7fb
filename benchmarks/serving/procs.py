"""Start, probe and stop the servers under test. Every wait here has a limit.

Each server runs in its own session (process group), so stopping it also stops any
worker processes it spawned (MLServer's inference pool, uvicorn reloaders ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One HTTP request to a loopback URL; returns (status, body). Never raises on 4xx/5xx."""
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"refusing to send a request anywhere but {LOOPBACK}: {url}")
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


@dataclass
class Server:
    """One server process under test."""

    name: str
    argv: Sequence[str]
    port: int
    infer_path: str
    env: Mapping[str, str]
    cwd: Path
    log_path: Path
    metrics_path: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.infer_path}"

    def start(self) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._log.write(("$ " + " ".join(self.argv) + "\n").encode())
        self._log.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_first_prediction(
        self,
        body: bytes,
        check: Callable[[bytes], bool],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
    ) -> float:
        """Seconds from process start to the first correct prediction.

        Raises RuntimeError (with the log's tail) if the process dies or the deadline
        passes first.
        """
        deadline = self.started_at + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited before serving:\n{self.log_tail()}")
            try:
                status, out = http("POST", self.url, body, timeout=5.0, headers=headers or JSON)
                if status == 200 and check(out):
                    return time.monotonic() - self.started_at
                last = f"HTTP {status}: {out[:300]!r}"
            except (OSError, urllib.error.URLError) as exc:
                last = repr(exc)
            time.sleep(0.02)
        raise RuntimeError(
            f"{self.name}: no correct prediction within {timeout_s:.0f}s (last: {last})\n"
            f"{self.log_tail()}"
        )

    def rss_mb(self) -> float:
        """Resident memory of the server and every process in its session, in MiB."""
        if self.proc is None:
            return float("nan")
        return session_rss_kib(self.proc.pid) / 1024.0

    def scrape_metrics(self) -> str:
        if not self.metrics_path:
            raise ValueError(f"{self.name} has no metrics path")
        status, out = http("GET", f"http://{LOOPBACK}:{self.port}{self.metrics_path}", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"{self.name} /metrics answered {status}")
        return out.decode(errors="replace")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole session, then SIGKILL whatever is left after `grace_s`."""
        if self.proc is not None:
            pgid = self.proc.pid
            for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, sig)
                try:
                    self.proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
                # The leader is gone; make sure no worker of its session lingers.
                if not session_pids(pgid):
                    break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


JSON = {"Content-Type": "application/json"}


def session_pids(sid: int) -> list[int]:
    """PIDs of live processes whose session id is `sid` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the command (which may contain spaces) start after the last ')'.
        rest = stat.rsplit(")", 1)[1].split()
        state, session = rest[0], int(rest[3])
        if session == sid and state != "Z":
            pids.append(int(entry))
    return pids


def session_cpu_s(sid: int) -> float:
    """User + system CPU seconds of the live processes in session `sid`, so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in session_pids(sid):
        try:
            rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(rest[11]) + int(rest[12])  # utime, stime (fields 14 and 15)
    return total / tick


def session_rss_kib(sid: int) -> int:
    total = 0
    for pid in session_pids(sid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


def json_loads(data: bytes) -> Any:
    return json.loads(data)
