"""Operator benchmark: MLModel applied -> Deployment created, hundreds of models, memory.

One run, on the real local control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok nodes), a real MinIO and the operator as a real `mlmodel run` process:

1. floor: the apiserver's own create latency for a Deployment (POST until the response,
   and POST until a watch sees it), the same object the operator builds;
2. MLModel POST -> its Deployment seen by a watch, one model at a time with the operator
   idle (each model is left Serving before the next), interleaved with the floor samples
   so both see the same machine;
3. a burst of MLModels POSTed as fast as a few client threads can, spread over a few
   namespaces, timed until every one is phase Serving;
4. the operator's RSS (``/proc/<pid>/status``) sampled all along, its CPU time, and its
   reconcile-duration histogram per phase, with all models in steady state (timer
   reconciles only) at each size.

Prints markdown tables, writes benchmarks/results/operator-<date>.json, and with
``--update-readme`` puts the tables into benchmarks/README.md under "## Operator".
Only 127.0.0.1 is contacted; every wait has a limit; everything started is stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.operator import report  # noqa: E402

RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
README_HEADING = "## Operator"
README_BEGIN = "<!-- operator-results:begin -->"
README_END = "<!-- operator-results:end -->"

GROUP, VERSION, PLURAL = "ml.lifecycle.io", "v1alpha1", "mlmodels"
SECRET_NAME = "mlmodel-s3-credentials"
BUCKET = "models"
PODS_PER_NODE = 250  # LocalCluster.create_node's allocatable pods
FLOOR_NS = "bench-floor"
LATENCY_NS = "bench-latency"


@dataclass(frozen=True)
class Options:
    models: int = 300
    latency_samples: int = 100
    warmup_models: int = 3
    namespaces: int = 3
    concurrency: int = 8
    reconcile_interval: float = 30.0
    steady_seconds: float | None = None  # default: one reconcile interval + 5 s
    serving_timeout: float = 900.0
    sample_timeout: float = 120.0
    rss_interval: float = 0.25
    update_readme: bool = False
    keep_workdir: bool = False
    quick: bool = False

    @property
    def steady(self) -> float:
        if self.steady_seconds is not None:
            return self.steady_seconds
        return self.reconcile_interval + 5.0


# --------------------------------------------------------------------------- sampling


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (not its children), from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


class RssSampler:
    """Samples one process's VmRSS every ``interval`` seconds in a thread, with phase marks."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, str, int]] = []  # (monotonic, phase, rss bytes)
        self.phase = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), self.phase, _proc_status(self.pid)["VmRSS"]))
            self._stop.wait(self.interval)

    def now(self) -> dict[str, int]:
        return _proc_status(self.pid)

    def peak(self, phase: str) -> int | None:
        values = [rss for _, p, rss in self.samples if p == phase]
        return max(values) if values else None


class Watcher:
    """Records when each object is first seen, and when it first meets a condition.

    A raw watch (no model deserialisation) over every namespace, resumed from the last
    resourceVersion; relists on 410 Gone. Times are ``time.perf_counter()``.
    """

    def __init__(
        self, name: str, list_fn: Callable[..., Any], done: Callable[[dict[str, Any]], bool]
    ) -> None:
        self.name = name
        self.list_fn = list_fn
        self.done = done
        self.first_seen: dict[tuple[str, str], float] = {}
        self.first_done: dict[tuple[str, str], float] = {}
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def __enter__(self) -> Watcher:
        self._rv = self._list()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _note(self, obj: dict[str, Any], at: float) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._cond:
            if key not in self.first_seen:
                self.first_seen[key] = at
            if key not in self.first_done and self.done(obj):
                self.first_done[key] = at
            self._cond.notify_all()

    def _list(self) -> str:
        resp = self.list_fn(_preload_content=False)
        data = json.loads(resp.data)
        at = time.perf_counter()
        for obj in data.get("items", []):
            self._note(obj, at)
        return str(data["metadata"]["resourceVersion"])

    def _run(self) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.list_fn,
                    resource_version=self._rv,
                    timeout_seconds=5,
                    deserialize=False,
                    allow_watch_bookmarks=True,
                    _request_timeout=15,
                ):
                    at = time.perf_counter()
                    obj = event.get("raw_object") or event["object"]
                    kind = event["type"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            self._rv = self._list()
                            break
                        self.errors.append(str(obj)[:300])
                        break
                    self._rv = str(obj.get("metadata", {}).get("resourceVersion", self._rv))
                    if kind in ("ADDED", "MODIFIED"):
                        self._note(obj, at)
                    if self._stop.is_set():
                        break
            except Exception as exc:  # a dropped stream: resume from the last version
                if self._stop.is_set():
                    return
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if getattr(exc, "status", None) == 410:
                    with contextlib.suppress(Exception):
                        self._rv = self._list()
                self._stop.wait(0.2)
            finally:
                w.stop()

    def wait(self, key: tuple[str, str], *, done: bool, timeout: float) -> float | None:
        """The time ``key`` was first seen (or met the condition); None after ``timeout``."""
        table = self.first_done if done else self.first_seen
        deadline = time.monotonic() + timeout
        with self._cond:
            while key not in table:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 1.0))
            return table[key]

    def count_done(self, keys: Sequence[tuple[str, str]]) -> int:
        with self._cond:
            return sum(1 for k in keys if k in self.first_done)


# --------------------------------------------------------------------------- helpers


def deployment_available(obj: dict[str, Any]) -> bool:
    want = (obj.get("spec") or {}).get("replicas", 1)
    have = (obj.get("status") or {}).get("availableReplicas", 0)
    return bool(have >= want)


def model_serving(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") == "Serving"


def mlmodel_body(ns: str, name: str, uri: str, sha256: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MLModel",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "version": "1",
            "artifact": {"uri": uri, "sha256": sha256},
            "retirement": {"drainSeconds": 1},
        },
    }


def floor_template(deployment: dict[str, Any]) -> dict[str, Any]:
    """The operator's own Deployment, stripped of what the apiserver or the owner set,
    so the floor creates the same object (size, probes, security context) with no owner."""
    meta = deployment["metadata"]
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": json.loads(json.dumps(deployment["spec"])),
    }
    return body


def floor_body(template: dict[str, Any], name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(template))
    body["metadata"]["name"] = name
    # its own model label, so no Service or operator list ever picks it up
    for labels in (
        body["metadata"]["labels"],
        body["spec"]["selector"]["matchLabels"],
        body["spec"]["template"]["metadata"]["labels"],
    ):
        if f"{GROUP}/model" in labels:
            labels[f"{GROUP}/model"] = name
        if "app.kubernetes.io/instance" in labels:
            labels["app.kubernetes.io/instance"] = name
    return body


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return report.parse_metrics(resp.read().decode())


# what the operator reads and writes (besides Pods and ReplicaSets, which it never touches)
OPERATOR_RESOURCES = ("mlmodels", "deployments", "services", "secrets", "events")


def apiserver_requests(cluster: Any) -> dict[str, float]:
    """The apiserver's own request counters (all clients) for the operator's resources."""
    import ssl

    assert cluster.pki is not None
    ctx = ssl.create_default_context(cafile=str(cluster.pki.ca_cert))
    ctx.load_cert_chain(str(cluster.pki.admin_cert), str(cluster.pki.admin_key))
    with urllib.request.urlopen(f"{cluster.server}/metrics", timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    wanted = "\n".join(
        line for line in text.splitlines() if line.startswith("apiserver_request_total{")
    )
    return report.request_counts(report.parse_metrics(wanted), OPERATOR_RESOURCES)


@dataclass
class Snapshot:
    """The operator's state at a phase boundary."""

    label: str
    models: int
    at: float
    rss: int
    hwm: int
    cpu: dict[str, float | None]
    metrics: dict[str, dict[tuple[tuple[str, str], ...], float]] = field(repr=False)
    requests: dict[str, float] = field(repr=False)


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uptime_start": uptime.strip(),
        "loadavg_start": os.getloadavg(),
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether the operator's code differed from it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False, timeout=30
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "operator_changed": bool(git("status", "--porcelain", "--", "operator", "crds")),
    }


def versions(cluster: Any) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("kopf", "kubernetes", "minio"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    with contextlib.suppress(Exception):
        out["kube-apiserver"] = cluster.api("GET", "/version")["gitVersion"]
    return out


# --------------------------------------------------------------------------- the run


class Bench:
    """Holds the servers and clients of one run; :meth:`run` returns the results dict."""

    def __init__(self, opts: Options, workdir: Path, log: Callable[[str], None]) -> None:
        self.opts = opts
        self.workdir = workdir
        self.log = log
        self.snapshots: list[Snapshot] = []
        self.results: dict[str, Any] = {}

    # -- setup

    def run(self) -> dict[str, Any]:
        from kubernetes import client, config

        from mlmodel_operator.example_models import train_churn
        from mlmodel_operator.localcluster import (
            REPO_ROOT,
            LocalCluster,
            MinioServer,
            OperatorRunner,
        )

        o = self.opts
        pods = o.latency_samples * 2 + o.warmup_models + o.models
        nodes = pods // PODS_PER_NODE + 1
        burst_ns = [f"bench-burst-{i}" for i in range(o.namespaces)]
        self.results["machine"] = machine_info()
        with contextlib.ExitStack() as stack:
            t = time.perf_counter()
            cluster = stack.enter_context(LocalCluster.up(self.workdir / "cluster", nodes=nodes))
            minio = MinioServer(self.workdir / "minio").start()
            stack.callback(minio.stop)
            self.log(
                f"control plane ({nodes} kwok nodes) and MinIO up in {time.perf_counter() - t:.0f}s"
            )
            self.cluster = cluster
            self.results["versions"] = versions(cluster)
            cluster.kubectl(
                "apply",
                "--server-side",
                "-f",
                str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml"),
            )
            cluster.kubectl(
                "wait",
                "--for=condition=Established",
                "--timeout=30s",
                "crd/mlmodels.ml.lifecycle.io",
            )
            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            api.configuration.connection_pool_maxsize = max(8, o.concurrency * 2)
            stack.callback(api.close)
            watch_api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            stack.callback(watch_api.close)
            self.core = client.CoreV1Api(api)
            self.apps = client.AppsV1Api(api)
            self.custom = client.CustomObjectsApi(api)
            for ns in (FLOOR_NS, LATENCY_NS, *burst_ns):
                self.core.create_namespace({"metadata": {"name": ns}})
                self.core.create_namespaced_secret(
                    ns,
                    {
                        "metadata": {"name": SECRET_NAME},
                        "stringData": {
                            "accessKey": minio.access_key,
                            "secretKey": minio.secret_key,
                        },
                    },
                )

            # one real artifact, stored once per model (each model verifies its own object)
            art = train_churn("1")
            mc = minio.client()
            if not mc.bucket_exists(BUCKET):
                mc.make_bucket(BUCKET)
            names = [(LATENCY_NS, f"warm-{i}") for i in range(o.warmup_models)]
            names += [(LATENCY_NS, f"m-{i:03d}") for i in range(o.latency_samples)]
            names += [(burst_ns[i % len(burst_ns)], f"b-{i:03d}") for i in range(o.models)]
            self.uris = {
                key: f"s3://{BUCKET}/bench/{key[0]}/{key[1]}/model.joblib" for key in names
            }
            self.sha256 = art.sha256
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda key: mc.put_object(
                            BUCKET,
                            self.uris[key].split("/", 3)[3],
                            io.BytesIO(art.data),
                            len(art.data),
                        ),
                        names,
                    )
                )
            self.log(
                f"{len(names)} artifacts of {len(art.data)} bytes uploaded in {time.perf_counter() - t:.1f}s"
            )

            watch_apps = client.AppsV1Api(watch_api)
            watch_custom = client.CustomObjectsApi(watch_api)
            self.deps = stack.enter_context(
                Watcher(
                    "deployments",
                    watch_apps.list_deployment_for_all_namespaces,
                    deployment_available,
                )
            )
            self.mlms = stack.enter_context(
                Watcher(
                    "mlmodels",
                    lambda **kw: watch_custom.list_cluster_custom_object(
                        GROUP, VERSION, PLURAL, **kw
                    ),
                    model_serving,
                )
            )

            op = OperatorRunner(
                cluster,
                minio,
                self.workdir / "operator",
                env={
                    "MLMODEL_RECONCILE_INTERVAL": str(o.reconcile_interval),
                    "MLMODEL_SERVING_IMAGE": "registry.local/mlmodel-serving:bench",
                },
            )
            self.operator = op
            try:
                op.start()
                assert op.process is not None and op.process.popen is not None
                self.pid = op.process.popen.pid
                self.cluster_pids = {
                    name: p.popen.pid for name, p in cluster.processes.items() if p.popen
                }
                self.cluster_pids["minio"] = (
                    minio.process.popen.pid if minio.process and minio.process.popen else 0
                )
                self.cluster_pids["operator"] = self.pid
                with RssSampler(self.pid, o.rss_interval) as rss:
                    self.rss = rss
                    self._phases(burst_ns)
                    self.results["rss_samples"] = [(round(t, 3), p, r) for t, p, r in rss.samples]
            finally:
                self.results["operator_log_tail"] = op.process.log_tail(40) if op.process else ""
                op.stop()
            self.results["watch_errors"] = {
                "deployments": self.deps.errors,
                "mlmodels": self.mlms.errors,
            }
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        self.results["machine"]["uptime_end"] = subprocess.run(
            ["uptime"], capture_output=True, text=True, check=False
        ).stdout.strip()
        return self.results

    def snapshot(self, label: str, models: int) -> Snapshot:
        status = self.rss.now()
        snap = Snapshot(
            label,
            models,
            time.monotonic(),
            status["VmRSS"],
            status["VmHWM"],
            {name: cpu_seconds(pid) for name, pid in self.cluster_pids.items()},
            scrape(self.operator.metrics_port),
            apiserver_requests(self.cluster),
        )
        self.snapshots.append(snap)
        self.log(
            f"[{label}] models={models} rss={snap.rss / 2**20:.1f} MiB hwm={snap.hwm / 2**20:.1f} MiB"
        )
        return snap

    def _phases(self, burst_ns: list[str]) -> None:
        o = self.opts
        self.rss.phase = "idle"
        time.sleep(5)
        self.snapshot("idle", 0)

        self.rss.phase = "warmup"
        template = self._warmup()
        self.snapshot("warmup", o.warmup_models)

        self.rss.phase = "latency"
        self.results["latency"] = self._latency(template)
        n = o.warmup_models + o.latency_samples
        self.snapshot("latency", n)

        self.rss.phase = f"steady-{n}"
        time.sleep(o.steady)
        self._probe(f"steady-{n}", [(LATENCY_NS, "m-000")])
        self.snapshot(f"steady-{n}", n)

        self.rss.phase = "burst"
        self.results["burst"] = self._burst(burst_ns)
        n += o.models
        self.snapshot("burst", n)

        self.rss.phase = f"steady-{n}"
        time.sleep(o.steady)
        self._probe(f"steady-{n}", [(LATENCY_NS, "m-000"), (burst_ns[0], "b-000")])
        self.snapshot(f"steady-{n}", n)
        self.results["phases"] = self._phase_table()

    def _reads(self, ns: str, name: str) -> dict[str, Callable[[], Any]]:
        def list_deployments() -> Any:
            return self.apps.list_namespaced_deployment(
                ns, label_selector=f"{GROUP}/model={name}", _preload_content=False
            )

        def get_service() -> Any:
            return self.core.read_namespaced_service(name, ns, _preload_content=False)

        def get_model() -> Any:
            return self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, _preload_content=False
            )

        return {
            "LIST deployments (label selector)": list_deployments,
            "GET service": get_service,
            "GET mlmodel": get_model,
        }

    def _probe(self, label: str, models: list[tuple[str, str]], reps: int = 20) -> None:
        """Time, from the benchmark's client, the reads one reconcile makes, to tell the
        apiserver's share of a reconcile at this number of models."""
        out: dict[str, Any] = {}
        for ns, name in models:
            calls = self._reads(ns, name)
            for call, fn in calls.items():
                times = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn().data  # noqa: B018
                    times.append(time.perf_counter() - t0)
                out[f"{call} in {ns}"] = report.summarize(times)
        self.results.setdefault("probes", {})[label] = out

    def _create_model(self, ns: str, name: str) -> tuple[float, float]:
        body = mlmodel_body(ns, name, self.uris[(ns, name)], self.sha256)
        t0 = time.perf_counter()
        resp = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, body, _preload_content=False
        )
        resp.data  # noqa: B018 - read the whole response inside the timing
        return t0, time.perf_counter()

    def _warmup(self) -> dict[str, Any]:
        """A few models first, so imports, connections and caches are warm; their
        Deployment is the template of the floor's."""
        for i in range(self.opts.warmup_models):
            name = f"warm-{i}"
            self._create_model(LATENCY_NS, name)
            if (
                self.mlms.wait((LATENCY_NS, name), done=True, timeout=self.opts.sample_timeout)
                is None
            ):
                raise RuntimeError(
                    f"warm-up model {name} not Serving after {self.opts.sample_timeout:.0f}s"
                )
        dep = self.apps.read_namespaced_deployment("warm-0-v1", LATENCY_NS, _preload_content=False)
        return floor_template(json.loads(dep.data))

    def _latency(self, template: dict[str, Any]) -> dict[str, Any]:
        o = self.opts
        raw: dict[str, list[float]] = {
            k: []
            for k in (
                "floor_post",
                "floor_seen",
                "floor_available",
                "mlmodel_post",
                "mlmodel_deployment_seen",
                "mlmodel_deployment_available",
                "mlmodel_serving",
            )
        }
        failures: list[str] = []

        def floor(i: int) -> None:
            name = f"floor-{i:03d}"
            body = floor_body(template, name)
            t0 = time.perf_counter()
            resp = self.apps.create_namespaced_deployment(FLOOR_NS, body, _preload_content=False)
            resp.data  # noqa: B018
            raw["floor_post"].append(time.perf_counter() - t0)
            seen = self.deps.wait((FLOOR_NS, name), done=False, timeout=o.sample_timeout)
            avail = self.deps.wait((FLOOR_NS, name), done=True, timeout=o.sample_timeout)
            if seen is None or avail is None:
                failures.append(f"floor {name}: seen={seen} available={avail}")
                return
            raw["floor_seen"].append(seen - t0)
            raw["floor_available"].append(avail - t0)

        def model(i: int) -> None:
            name = f"m-{i:03d}"
            t0, t1 = self._create_model(LATENCY_NS, name)
            raw["mlmodel_post"].append(t1 - t0)
            dep = (LATENCY_NS, f"{name}-v1")
            seen = self.deps.wait(dep, done=False, timeout=o.sample_timeout)
            if seen is None:
                failures.append(f"{name}: no Deployment after {o.sample_timeout:.0f}s")
                return
            raw["mlmodel_deployment_seen"].append(seen - t0)
            avail = self.deps.wait(dep, done=True, timeout=o.sample_timeout)
            serving = self.mlms.wait((LATENCY_NS, name), done=True, timeout=o.sample_timeout)
            if avail is None or serving is None:
                failures.append(f"{name}: available={avail} serving={serving}")
                return
            raw["mlmodel_deployment_available"].append(avail - t0)
            raw["mlmodel_serving"].append(serving - t0)

        started = time.perf_counter()
        for i in range(o.latency_samples):
            # alternate the order so neither side always runs right after the other
            for step in (floor, model) if i % 2 == 0 else (model, floor):
                step(i)
                time.sleep(0.2)  # let the last status/annotation patches land: idle
            if len(failures) >= 5:
                self.log("five latency samples failed: stopping this phase early")
                break
            if (i + 1) % 10 == 0:
                p50 = report.percentile(raw["mlmodel_deployment_seen"], 50) * 1000
                self.log(
                    f"latency: {i + 1}/{o.latency_samples} samples, apply->Deployment p50 {p50:.0f} ms"
                )
        return {
            "seconds": time.perf_counter() - started,
            "raw_seconds": raw,
            "summary": {k: report.summarize(v) for k, v in raw.items()},
            "failures": failures,
        }

    def _burst(self, burst_ns: list[str], *, until_deployments: bool = False) -> dict[str, Any]:
        """POST the burst's models, then wait until every one is Serving, or, with
        ``until_deployments``, until each has its Deployment."""
        o = self.opts
        keys = [(burst_ns[i % len(burst_ns)], f"b-{i:03d}") for i in range(o.models)]
        posted: dict[tuple[str, str], float] = {}
        errors: list[str] = []

        def post(key: tuple[str, str]) -> None:
            try:
                t0, _ = self._create_model(*key)
            except Exception as exc:
                errors.append(f"{key}: {exc}"[:300])
                return
            posted[key] = t0

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(o.concurrency) as pool:
            list(pool.map(post, keys))
        all_posted = time.perf_counter()
        self.log(f"burst: {len(posted)} MLModels POSTed in {all_posted - started:.1f}s")

        progress: list[tuple[float, int]] = []
        deadline = time.monotonic() + o.serving_timeout
        last_log = 0.0
        what = "with a Deployment" if until_deployments else "Serving"
        while True:
            if until_deployments:
                n = sum(1 for ns, name in keys if (ns, f"{name}-v1") in self.deps.first_seen)
            else:
                n = self.mlms.count_done(keys)
            now = time.perf_counter()
            progress.append((round(now - started, 2), n))
            if n >= len(posted) or time.monotonic() > deadline:
                break
            if now - last_log > 10:
                self.log(f"burst: {n}/{len(keys)} {what} after {now - started:.0f}s")
                last_log = now
            time.sleep(0.5)
        serving = {k: self.mlms.first_done[k] for k in keys if k in self.mlms.first_done}
        deps = {
            k: self.deps.first_seen[(k[0], f"{k[1]}-v1")]
            for k in keys
            if (k[0], f"{k[1]}-v1") in self.deps.first_seen
        }

        def time_to(fraction: float) -> float | None:
            target = max(1, round(fraction * len(keys)))
            ordered = sorted(serving.values())
            return ordered[target - 1] - started if len(ordered) >= target else None

        return {
            "models": len(keys),
            "namespaces": len(burst_ns),
            "concurrency": o.concurrency,
            "post_errors": errors,
            "all_posted_s": all_posted - started,
            "all_deployments_s": (max(deps.values()) - started) if len(deps) == len(keys) else None,
            "deployments_seen": len(deps),
            "serving": len(serving),
            "serving_50pct_s": time_to(0.5),
            "serving_90pct_s": time_to(0.9),
            "all_serving_s": time_to(1.0) if len(serving) == len(keys) else None,
            "apply_to_deployment": report.summarize(
                [deps[k] - posted[k] for k in deps if k in posted]
            ),
            "apply_to_serving": report.summarize(
                [serving[k] - posted[k] for k in serving if k in posted]
            ),
            "progress": progress,
            "timed_out": len(deps if until_deployments else serving) < len(keys),
        }

    def _phase_table(self) -> list[dict[str, Any]]:
        rows = []
        for prev, snap in zip(self.snapshots, self.snapshots[1:], strict=False):
            h = report.histogram(snap.metrics, report.RECONCILE_HISTOGRAM).minus(
                report.histogram(prev.metrics, report.RECONCILE_HISTOGRAM)
            )
            before = report.counter_by(prev.metrics, report.RECONCILES_TOTAL, "result")
            after = report.counter_by(snap.metrics, report.RECONCILES_TOTAL, "result")
            cpu = {
                name: (snap.cpu[name] or 0) - (prev.cpu.get(name) or 0)
                for name in snap.cpu
                if snap.cpu[name] is not None
            }
            rows.append(
                {
                    "phase": snap.label,
                    "models": snap.models,
                    "seconds": snap.at - prev.at,
                    "peak_rss": self.rss.peak(snap.label),
                    "rss_end": snap.rss,
                    "hwm_end": snap.hwm,
                    "cpu_seconds": cpu,
                    "reconciles": {k: after.get(k, 0) - before.get(k, 0) for k in after},
                    "apiserver_requests": report.counts_delta(snap.requests, prev.requests),
                    "reconcile": report.histogram_summary(h),
                }
            )
        idle = self.snapshots[0]
        rows.insert(
            0,
            {
                "phase": "idle",
                "models": 0,
                "seconds": None,
                "peak_rss": self.rss.peak("idle"),
                "rss_end": idle.rss,
                "hwm_end": idle.hwm,
                "cpu_seconds": {},
                "reconciles": {},
                "reconcile": {},
            },
        )
        return rows


# --------------------------------------------------------------------------- output


def growth(results: dict[str, Any]) -> list[dict[str, float]]:
    """RSS added per model between the idle and steady-state snapshots."""
    points = [(0, float(results["phases"][0]["rss_end"]))]
    points += [
        (r["models"], float(r["rss_end"]))
        for r in results["phases"]
        if r["phase"].startswith("steady-")
    ]
    return report.growth_per_object(points)


def render_markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    m = results["machine"]
    lat = results["latency"]["summary"]
    labels = {
        "floor_post": "floor: Deployment POST -> response",
        "floor_seen": "floor: Deployment POST -> seen by a watch",
        "mlmodel_post": "MLModel POST -> response",
        "mlmodel_deployment_seen": "**MLModel POST -> its Deployment seen by a watch**",
        "floor_available": "floor: Deployment POST -> Available (kwok pod Ready)",
        "mlmodel_deployment_available": "MLModel POST -> its Deployment Available",
        "mlmodel_serving": "MLModel POST -> phase Serving",
    }
    measures = {labels[k]: lat[k] for k in labels if k in lat}
    out = [
        f"### Operator benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), {m['memory']}, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['loadavg_start'][0]:.2f} / "
        f"{m['loadavg_start'][1]:.2f} / {m['loadavg_start'][2]:.2f}, at end "
        f"{m['loadavg_end'][0]:.2f} / {m['loadavg_end'][1]:.2f} / {m['loadavg_end'][2]:.2f}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())) + "  ",
        f"Commit: {results['git']['commit'][:10]}"
        + (" (operator code modified)" if results["git"]["operator_changed"] else "")
        + "  ",
        f"Operator: `mlmodel run`, reconcile timer {s['reconcile_interval']:.0f} s, "
        "MLMODEL_WORKERS at its default, MinIO artifact check on",
        "",
        f"**Apply -> Deployment, one model at a time, operator idle** ({s['latency_samples']} "
        "samples, interleaved with the floor; ratios are to the floor's Deployment POST)",
        "",
        report.markdown_table(
            report.LATENCY_HEADER,
            report.latency_rows(measures, labels["floor_post"]),
        ),
        "",
    ]
    seen = lat.get("mlmodel_deployment_seen", {})
    floor_seen = lat.get("floor_seen", {})
    if seen.get("n") and floor_seen.get("n"):
        out += [
            f"Against the floor seen the same way (POST -> watch event): p50 "
            f"{report.fmt_ratio(report.ratio(seen['p50_ms'], floor_seen['p50_ms']))}, p99 "
            f"{report.fmt_ratio(report.ratio(seen['p99_ms'], floor_seen['p99_ms']))}; "
            f"the operator adds {seen['p50_ms'] - floor_seen['p50_ms']:.0f} ms at p50.",
            "",
        ]
    if results["latency"]["failures"]:
        out += [f"Failed samples: {'; '.join(results['latency']['failures'])}", ""]
    b = results["burst"]
    out += [
        f"**{b['models']} MLModels at once** ({b['namespaces']} namespaces, POSTed by "
        f"{b['concurrency']} client threads, on top of the {s['warmup_models'] + s['latency_samples']} "
        "already Serving)",
        "",
        report.markdown_table(
            ("measure", "value"),
            [
                ["all POSTed", f"{b['all_posted_s']:.1f} s"],
                ["all Deployments created", _secs(b["all_deployments_s"])],
                ["50% Serving", _secs(b["serving_50pct_s"])],
                ["90% Serving", _secs(b["serving_90pct_s"])],
                ["**all Serving**", _secs(b["all_serving_s"])],
                [
                    "per model: POST -> Deployment p50 / p99",
                    f"{report.fmt(b['apply_to_deployment'].get('p50_ms'), 0)} / "
                    f"{report.fmt(b['apply_to_deployment'].get('p99_ms'), 0)} ms",
                ],
                [
                    "per model: POST -> Serving p50 / p99",
                    f"{report.fmt(b['apply_to_serving'].get('p50_ms'), 0)} / "
                    f"{report.fmt(b['apply_to_serving'].get('p99_ms'), 0)} ms",
                ],
            ],
        ),
        "",
    ]
    if b["timed_out"]:
        out += [f"Only {b['serving']} of {b['models']} were Serving when the wait ended.", ""]
    out += requests_table(results)
    out += probes_table(results)
    rows = []
    for r in results["phases"]:
        rec = r.get("reconcile") or {}
        cpu = r.get("cpu_seconds") or {}
        reconciles = r.get("reconciles") or {}
        rows.append(
            [
                r["phase"],
                r["models"],
                _secs(r["seconds"], 0),
                _mib(r["peak_rss"]),
                _mib(r["rss_end"]),
                report.fmt(cpu.get("operator")),
                report.fmt(cpu.get("kube-apiserver")),
                int(sum(reconciles.values())) if reconciles else "—",
                report.fmt(rec.get("p50_ms")),
                report.fmt(rec.get("p99_ms")),
                report.fmt(rec.get("mean_ms")),
            ]
        )
    out += [
        "**Operator memory, CPU and reconcile duration by phase** (RSS sampled every "
        f"{s['rss_interval']} s from /proc; reconcile quantiles interpolated in the "
        "operator's histogram buckets, 5/10/25/50/100/250 ms ...; steady = one timer "
        "interval + 5 s with nothing applied)",
        "",
        report.markdown_table(
            (
                "phase",
                "models",
                "time",
                "peak RSS MiB",
                "RSS at end MiB",
                "operator CPU s",
                "apiserver CPU s",
                "reconciles",
                "reconcile p50 ms",
                "p99 ms",
                "mean ms",
            ),
            rows,
        ),
        "",
        f"Peak RSS of the whole run (VmHWM): {_mib(results['phases'][-1]['hwm_end'])} MiB. "
        + "RSS added per model: "
        + "; ".join(
            f"{g['from']} -> {g['to']} models: {g['bytes_per_object'] / 1024:.0f} KiB/model"
            for g in growth(results)
        ),
        "",
    ]
    return "\n".join(out)


def requests_table(results: dict[str, Any]) -> list[str]:
    """apiserver requests per model (all clients) in the latency and burst phases."""
    phases = {r["phase"]: r for r in results["phases"]}
    s = results["settings"]
    cols = [("latency", s["latency_samples"]), ("burst", s["models"])]
    cols = [(name, n) for name, n in cols if name in phases and n]
    if not cols:
        return []
    keys = sorted({k for name, _ in cols for k in phases[name].get("apiserver_requests", {})})
    rows: list[list[Any]] = []
    for key in keys:
        rows.append(
            [key]
            + [
                f"{phases[name].get('apiserver_requests', {}).get(key, 0.0) / n:.2f}"
                for name, n in cols
            ]
        )
    rows.append(
        ["operator reconciles (its own counter)"]
        + [f"{sum(phases[name].get('reconciles', {}).values()) / n:.2f}" for name, n in cols]
    )
    return [
        "**apiserver requests per model applied**, from the apiserver's "
        "`apiserver_request_total` (every client: the benchmark's own POST of the MLModel, "
        "and in the latency phase the floor's POST of a Deployment, the controller-manager's "
        "Deployment status updates, the operator's reads, applies, status patches, Events "
        "and kopf's own patches)",
        "",
        report.markdown_table(["request", *[f"per model, {name}" for name, _ in cols]], rows),
        "",
    ]


def probes_table(results: dict[str, Any]) -> list[str]:
    """The benchmark's own timing of a reconcile's reads, per steady state."""
    probes = results.get("probes") or {}
    if not probes:
        return []
    rows = [
        [phase, call, s.get("p50_ms"), s.get("p99_ms")]
        for phase, calls in probes.items()
        for call, s in calls.items()
    ]
    return [
        "**A reconcile's reads timed from the benchmark's client** (20 each, at the end "
        "of each steady window)",
        "",
        report.markdown_table(("state", "request", "p50 ms", "p99 ms"), rows),
        "",
    ]


def _secs(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f} s"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def update_readme(markdown: str) -> None:
    text = README.read_text() if README.exists() else ""
    README.write_text(
        report.replace_block(text, README_BEGIN, README_END, markdown, README_HEADING)
    )


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_operator", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, help="MLModels in the burst (default 300; --quick 30)")
    p.add_argument(
        "--latency-samples", type=int, help="one-at-a-time samples (default 100; --quick 10)"
    )
    p.add_argument("--namespaces", type=int, default=3, help="namespaces of the burst")
    p.add_argument("--concurrency", type=int, default=8, help="client threads POSTing the burst")
    p.add_argument(
        "--reconcile-interval",
        type=float,
        default=30.0,
        help="the operator's MLMODEL_RECONCILE_INTERVAL (default: its own default, 30 s)",
    )
    p.add_argument(
        "--steady-seconds",
        type=float,
        help="length of each steady window (default: reconcile interval + 5 s; --quick 10)",
    )
    p.add_argument("--serving-timeout", type=float, default=900.0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="30 models, 10 samples, 10 s steady windows (smoke run)",
    )
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and data for a look")
    a = p.parse_args(argv)

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if a.quick else full)

    return Options(
        models=pick(a.models, 300, 30),
        latency_samples=pick(a.latency_samples, 100, 10),
        namespaces=a.namespaces,
        concurrency=a.concurrency,
        reconcile_interval=a.reconcile_interval,
        steady_seconds=pick(a.steady_seconds, None, 10.0),
        serving_timeout=a.serving_timeout,
        update_readme=a.update_readme,
        keep_workdir=a.keep_workdir,
        quick=a.quick,
    )


def main(argv: Sequence[str], command: str | None = None) -> int:
    opts = parse_args(argv)
    command = command or " ".join(
        [".venv/bin/python", "benchmarks/operator/bench_operator.py", *argv]
    )

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-operator-"))
    started = dt.datetime.now(dt.UTC)
    git = git_state()  # the code the operator runs is the code at its start
    try:
        results = Bench(opts, workdir, log).run()
    except BaseException:
        log(f"failed; logs are kept in {workdir}")
        raise
    else:
        if not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")
    results["settings"] = {**asdict(opts), "steady_seconds": opts.steady}
    results["git"] = git
    results["command"] = command
    results["date"] = started.strftime("%Y-%m-%d %H:%M UTC")
    results["started_utc"] = started.isoformat(timespec="seconds")
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    markdown = render_markdown(results)
    print(markdown)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if opts.quick else ""
    out = RESULTS_DIR / f"operator-{started.strftime('%Y-%m-%dT%H%M')}{suffix}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    log(f"results: {out.relative_to(REPO)}")
    if opts.update_readme:
        update_readme(markdown)
        log("benchmarks/README.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
