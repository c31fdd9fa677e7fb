"""The real node leaves nothing behind: after Ctrl-C, and after a crash plus a cleanup.

Each case runs ``python -m mlmodel_operator.realnode up`` as its own process, starts a
Pod on the node (so there are containers, mounts, cgroups and kube-proxy rules), then
interrupts or kills it and checks the machine: no process, shim, bridge, iptables chain,
mount or cgroup of the node remains, and the sysctls are as they were.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlmodel_operator.localcluster import binary, wait_until
from mlmodel_operator.realnode import STATE_FILE, SYSCTLS, NodeState, _read_sysctl, leftovers

pytestmark = pytest.mark.e2e

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "sleeper", "namespace": "default"},
    "spec": {
        "terminationGracePeriodSeconds": 30,  # the teardown must not wait for it
        "containers": [{"name": "pause", "image": "localhost/mlmodel/pause:1.0",
                        "imagePullPolicy": "Never"}],
    },
}  # fmt: skip


@pytest.fixture
def harness(tmp_path: Path, no_shared_node: None) -> Iterator[dict[str, Any]]:
    """A running ``realnode up`` with one Pod Running on the node (the other modules'
    shared node down first: one real node at a time on a machine)."""
    before = {name: _read_sysctl(name) for name in SYSCTLS}
    ready = tmp_path / "ready.json"
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlmodel_operator.realnode", "up", "--ready-file", str(ready)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    info: dict[str, Any] = {"proc": proc, "before": before, "log": tmp_path / "up.log"}
    try:
        wait_until("the real node up", lambda: ready.exists() or proc.poll() is not None, 600)
        assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
        info.update(json.loads(ready.read_text()))

        def kubectl(*args: str, stdin: str | None = None) -> str:
            return subprocess.run(
                [str(binary("kubernetes", "kubectl")), f"--kubeconfig={info['kubeconfig']}", *args],
                input=stdin, capture_output=True, text=True, check=True, timeout=60,
            ).stdout  # fmt: skip

        kubectl("apply", "-f", "-", stdin=json.dumps(POD))
        wait_until(
            "the sleeper pod Running",
            lambda: "Running" in kubectl("get", "pod", "sleeper", "-o", "jsonpath={.status.phase}"),
            60,
            0.5,
        )
        yield info
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        subprocess.run([sys.executable, "-m", "mlmodel_operator.realnode", "cleanup"], check=False)
        log.close()


def assert_nothing_left(info: dict[str, Any]) -> None:
    state = NodeState(info["workdir"], sysctls=info["before"])
    assert leftovers(state) == []
    assert not STATE_FILE.exists()
    assert {name: _read_sysctl(name) for name in SYSCTLS} == info["before"]


def test_ctrl_c_tears_the_node_down_completely(harness: dict[str, Any]) -> None:
    proc = harness["proc"]
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(180) == 0, harness["log"].read_text()[-3000:]
    assert "torn down: nothing left" in harness["log"].read_text()
    assert_nothing_left(harness)


def test_a_killed_harness_is_cleaned_up_by_the_next_cleanup(harness: dict[str, Any]) -> None:
    proc = harness["proc"]
    os.killpg(proc.pid, signal.SIGKILL)  # as a CI timeout would: no teardown runs
    proc.wait(10)
    assert STATE_FILE.exists()
    result = subprocess.run(
        [sys.executable, "-m", "mlmodel_operator.realnode", "cleanup"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert_nothing_left(harness)
