"""`make demo`: the whole story on the real local control plane.

Runs until interrupted (Ctrl-C), then stops everything it started.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from mlmodel_operator.localcluster import LocalCluster, MinioServer


def heading(text: str) -> None:
    """Print one step's heading."""
    print(f"\n=== {text} " + "=" * max(0, 70 - len(text)), flush=True)


def main() -> int:
    """Bring up the local control plane and MinIO, show them, wait for Ctrl-C."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-demo-"))
    heading(
        "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
    )
    with LocalCluster.up(workdir / "cluster") as cluster:
        print(f"kubeconfig: {cluster.kubeconfig}")
        heading("kubectl get nodes")
        print(cluster.kubectl("get", "nodes", "-o", "wide"), end="")
        heading("Starting MinIO")
        minio = MinioServer(workdir / "minio").start()
        try:
            print(f"MinIO at {minio.url} (credentials generated for this run)")
            heading("Running. Try it in another shell:")
            print(f"  export KUBECONFIG={cluster.kubeconfig}")
            print("  kubectl get nodes,pods -A")
            print("\nPress Ctrl-C to stop everything.", flush=True)
            try:
                while not stop.wait(1.0):
                    pass
            except KeyboardInterrupt:
                pass
        finally:
            heading("Stopping")
            minio.stop()
    if not os.environ.get("MLMODEL_KEEP_DEMO_DIR"):
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    print("Everything stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
