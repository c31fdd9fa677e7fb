"""Fleet benchmark (issue 17): the operator with a thousand models, against the floor.

One run, on the real local control plane (etcd, kube-apiserver with its audit log,
controller-manager, scheduler, kwok nodes), a real MinIO and the operator as a real
`mlmodel run` process with a client certificate of its own (so the audit log tells its
requests from everyone else's), side by side with the same cluster's floor:

1. floor: N plain Deployments + Services, the objects the operator builds for a model,
   POSTed by client threads into 10 namespaces at once: until all created, all seen by a
   watch, all Available; then a client patches the image of all N at once (the floor of a
   fleet change); then they are deleted;
2. burst: N MLModels POSTed the same way: POST -> Deployment seen, all Serving; ratios
   to the floor;
3. steady: nothing changes for one timer interval: the operator's CPU (/proc), its
   apiserver requests (audit log, by user agent, verb and resource), MinIO's S3 requests;
4. fleet change: the operator restarted with another MLMODEL_SERVING_IMAGE and a rate
   limit: until every model's Deployment runs the new image, Available, every model
   Serving; template changes per second, Deployments rolling at once;
5. restart: SIGKILL, start again: the operator's requests per second during the resume,
   and when the rate is back to the steady level;
6. memory: the operator's RSS at N models (after a settling window with nothing new, so
   the restarted process's own drift is seen apart), then after creating unrelated
   Deployments (replicas 0) and ConfigMaps in other namespaces and a settling window.

Prints markdown, writes benchmarks/results/fleet-<date>.json and a PNG of Serving models
over time against the floor's Available Deployments; with ``--update-readme`` the PNG is
benchmarks/fleet-burst.png and the tables go into benchmarks/README.md. Only 127.0.0.1 is
contacted; every wait has a limit; everything started is stopped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.operator import report  # noqa: E402
from benchmarks.operator.bench_operator import (  # noqa: E402
    BUCKET,
    GROUP,
    LATENCY_NS,
    PLURAL,
    PODS_PER_NODE,
    README,
    RESULTS_DIR,
    SECRET_NAME,
    VERSION,
    Bench,
    Options,
    Watcher,
    _proc_status,
    cpu_seconds,
    deployment_available,
    floor_body,
    git_state,
    machine_info,
    model_serving,
    scrape,
    versions,
)
from mlmodel_operator.localcluster import OPERATOR_PYTHONMALLOC  # noqa: E402
from mlmodel_operator.settings import DEFAULT_RECONCILE_INTERVAL  # noqa: E402

README_HEADING = "## Operator at fleet scale"
README_BEGIN = "<!-- fleet-results:begin -->"
README_END = "<!-- fleet-results:end -->"
PLOT = REPO / "benchmarks" / "fleet-burst.png"

OPERATOR_USER = "mlmodel-operator-bench"  # the operator's client certificate's user
BENCH_AGENT = "mlmodel-bench-fleet"  # the benchmark's own clients' user agent
IMAGE_REPO = "registry.local/mlmodel-serving"
IMAGE_BEFORE = f"{IMAGE_REPO}:bench"
IMAGE_AFTER = f"{IMAGE_REPO}:bench-fleet"
RATE_ENV = "MLMODEL_FLEET_UPDATES_PER_SECOND"
MANAGED_BY = "app.kubernetes.io/managed-by"
WARM_NS = LATENCY_NS  # bench_operator._warmup makes its models there


@dataclass(frozen=True)
class FleetOptions(Options):
    """bench_operator's options (its burst and warm-up code is reused) and the fleet's."""

    models: int = 1000
    namespaces: int = 10
    warmup_models: int = 1
    latency_samples: int = 0
    serving_timeout: float = 1800.0  # every wait for all N
    resume_seconds: float | None = None  # default: one timer interval + 15 s
    settle_seconds: float | None = None  # default: one timer interval (at most 60 s) + 10 s
    unrelated: int = 10_000  # Deployments + ConfigMaps, half each
    fleet_rate: float = 20.0  # MLMODEL_FLEET_UPDATES_PER_SECOND
    delete_timeout: float = 600.0
    burst_only: bool = False  # the burst alone, until every model has its Deployment
    finalizer_policy: bool = True  # crds/admission: the archive finalizer at creation

    @property
    def steady(self) -> float:
        if self.steady_seconds is not None:
            return self.steady_seconds
        # every model's periodic look comes once in it (the jitter spreads them)
        return max(self.reconcile_interval, 30.0)

    @property
    def resume(self) -> float:
        if self.resume_seconds is not None:
            return self.resume_seconds
        # the resume, then the first periodic looks of the models it reconciled at once
        return self.reconcile_interval + 15.0

    @property
    def settle(self) -> float:
        if self.settle_seconds is not None:
            return self.settle_seconds
        return min(self.reconcile_interval, 60.0) + 10.0


# --------------------------------------------------------------------------- predicates


def with_label(template: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    """``template`` with the label ``key`` set to ``value`` wherever it is (object, selector,
    Pod template): the floor's objects must not look like the operator's to its watches."""
    body: dict[str, Any] = json.loads(json.dumps(template))
    spec = body.get("spec") or {}
    maps = [body["metadata"].get("labels") or {}]
    if "selector" in spec and "matchLabels" in (spec["selector"] or {}):
        maps.append(spec["selector"]["matchLabels"])
    maps.append(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})
    for labels in maps:
        if key in labels:
            labels[key] = value
    return body


def service_template(service: dict[str, Any]) -> dict[str, Any]:
    """The operator's Service without what the apiserver or the owner set."""
    meta = service["metadata"]
    spec = {
        k: v for k, v in (service.get("spec") or {}).items() if k not in ("clusterIP", "clusterIPs")
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        },
        "spec": json.loads(json.dumps(spec)),
    }


def floor_service(template: dict[str, Any], name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(template))
    body["metadata"]["name"] = name
    for labels in (body["metadata"]["labels"], body["spec"].get("selector") or {}):
        for key in (f"{GROUP}/model", "app.kubernetes.io/instance"):
            if key in labels:
                labels[key] = name
        if MANAGED_BY in labels:
            labels[MANAGED_BY] = "mlmodel-bench-floor"
    return body


def image_of(obj: dict[str, Any]) -> str | None:
    containers = (((obj.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
        "containers"
    ) or [{}]
    image = containers[0].get("image")
    return str(image) if image else None


def rolled_out(obj: dict[str, Any], image: str) -> bool:
    """The Deployment's Pod template runs ``image`` and every replica is that template's
    and Available (no old Pods left)."""
    if image_of(obj) != image:
        return False
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    want = int(spec.get("replicas", 1))
    current = int(status.get("observedGeneration") or 0) >= int(
        (obj.get("metadata") or {}).get("generation") or 1
    )
    return (
        current
        and int(status.get("updatedReplicas") or 0) >= want
        and int(status.get("availableReplicas") or 0) >= want
        and int(status.get("replicas") or 0) == want
    )


class StateWatcher(Watcher):
    """A Watcher that also knows, per object, whether it meets the condition now, and
    counts the times an object stopped meeting it (a model leaving Serving)."""

    def __init__(
        self, name: str, list_fn: Callable[..., Any], done: Callable[[dict[str, Any]], bool]
    ) -> None:
        super().__init__(name, list_fn, done)
        self.current: dict[tuple[str, str], bool] = {}
        self.lost: list[tuple[float, tuple[str, str]]] = []

    def _note(self, obj: dict[str, Any], at: float) -> None:
        super()._note(obj, at)
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        now = bool(self.done(obj))
        with self._cond:
            if self.current.get(key) and not now:
                self.lost.append((at, key))
            self.current[key] = now

    def count_now(self, keys: Sequence[tuple[str, str]]) -> int:
        with self._cond:
            return sum(1 for k in keys if self.current.get(k))


# --------------------------------------------------------------------------- the run


@dataclass
class Mark:
    """The state at a phase boundary."""

    label: str
    perf: float
    epoch: float
    cpu: dict[str, float | None]
    rss: int | None
    s3: dict[str, float]  # MinIO's S3 requests so far, by API
    pids: dict[str, int]


class FleetBench(Bench):
    """One fleet run; :meth:`run` returns the results dict."""

    opts: FleetOptions
    mlms: StateWatcher

    def __init__(self, opts: FleetOptions, workdir: Path, log: Callable[[str], None]) -> None:
        super().__init__(opts, workdir, log)
        self.opts = opts
        self.marks: list[Mark] = []
        self.op_entries: list[Any] = []  # localcluster.AuditEntry of the operator's user
        self._audit_ids: set[str] = set()
        self._audit_offset = 0

    # -- measuring

    def _read_audit(self) -> None:
        from mlmodel_operator.localcluster import read_audit_log

        entries, self._audit_offset = read_audit_log(
            self.cluster.audit_log_path, self._audit_offset
        )
        for e in entries:
            if e.username == OPERATOR_USER and e.audit_id not in self._audit_ids:
                self._audit_ids.add(e.audit_id)
                self.op_entries.append(e)

    def _s3(self) -> dict[str, float]:
        out: dict[str, float] = self.minio.s3_requests()
        return out

    def _rss(self) -> int | None:
        try:
            return _proc_status(self.pid)["VmRSS"]
        except OSError:
            return None

    def mark(self, label: str) -> Mark:
        time.sleep(0.5)  # the last requests' audit lines written
        self._read_audit()
        self.cluster_pids["operator"] = self.pid
        m = Mark(
            label,
            time.perf_counter(),
            time.time(),
            {name: cpu_seconds(pid) for name, pid in self.cluster_pids.items()},
            self._rss(),
            self._s3(),
            dict(self.cluster_pids),
        )
        self.marks.append(m)
        rss = f"{m.rss / 2**20:.1f} MiB" if m.rss else "-"
        self.log(f"[{label}] operator rss {rss}")
        return m

    def window(self, start: Mark, end: Mark) -> dict[str, Any]:
        """What happened between two marks: CPU, the operator's requests, S3 requests.

        The CPU of a process restarted in between counts from the new one's start (the
        old one's last seconds are not in it)."""
        from mlmodel_operator.localcluster import count_audit

        seconds = end.perf - start.perf
        cpu: dict[str, float] = {}
        for name, after in end.cpu.items():
            if after is None:
                continue
            before = start.cpu.get(name) if start.pids.get(name) == end.pids.get(name) else 0.0
            cpu[name] = after - (before or 0.0)
        requests = count_audit(self.op_entries, start.epoch, end.epoch)
        total = sum(requests.values())
        return {
            "from": start.label,
            "to": end.label,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "operator_cpu_pct": 100 * cpu.get("operator", 0.0) / seconds if seconds else None,
            "operator_requests": total,
            "operator_requests_per_s": total / seconds if seconds else None,
            "operator_requests_by": {" | ".join(k): v for k, v in sorted(requests.items())},
            "s3_requests": sum(end.s3.values()) - sum(start.s3.values()),
            "s3_requests_by": report.counts_delta(end.s3, start.s3),
            "rss_end": end.rss,
        }

    # -- setup

    def run(self) -> dict[str, Any]:
        import yaml
        from kubernetes import client, config

        from mlmodel_operator.example_models import train_churn
        from mlmodel_operator.localcluster import (
            REPO_ROOT,
            LocalCluster,
            MinioServer,
            OperatorRunner,
            issue_certificate,
            wait_until,
        )

        o = self.opts
        n = o.models
        floor_ns = [f"fleet-floor-{i}" for i in range(o.namespaces)]
        model_ns = [f"fleet-{i}" for i in range(o.namespaces)]
        # the floor's Pods and the models' never live at once; a rollout surges one Pod each
        nodes = (2 * n + 10) // PODS_PER_NODE + 1
        self.results["machine"] = machine_info()
        self.results["rate_setting_in_operator"] = rate_setting_present()
        with contextlib.ExitStack() as stack:
            t = time.perf_counter()
            cluster = stack.enter_context(
                LocalCluster.up(self.workdir / "cluster", nodes=nodes, audit_log=True)
            )
            self.cluster = cluster
            minio = MinioServer(self.workdir / "minio", metrics_public=True).start()
            stack.callback(minio.stop)
            self.minio = minio
            self.log(
                f"control plane ({nodes} kwok nodes) and MinIO up in {time.perf_counter() - t:.0f}s"
            )
            self.results["versions"] = versions(cluster)
            cluster.kubectl(
                "apply", "--server-side", "-f",
                str(REPO_ROOT / "crds" / "mlmodels.ml.lifecycle.io.yaml"),
            )  # fmt: skip
            # `kubectl wait` fails at once while the CRD has no conditions yet: try again
            wait_until(
                "the MLModel CRD Established",
                lambda: bool(
                    cluster.kubectl(
                        "wait", "--for=condition=Established", "--timeout=10s",
                        "crd/mlmodels.ml.lifecycle.io", check=False,
                    ).strip()
                ),
                60,
                interval=1.0,
            )  # fmt: skip

            # the operator's own user, so the audit log tells its requests apart
            assert cluster.pki is not None
            cert, key = issue_certificate(
                cluster.pki, "operator-bench", OPERATOR_USER, organizations=["system:masters"]
            )
            kc = yaml.safe_load(cluster.kubeconfig.read_text())
            kc["users"][0]["user"] = {"client-certificate": str(cert), "client-key": str(key)}
            op_kubeconfig = self.workdir / "operator-kubeconfig"
            op_kubeconfig.write_text(yaml.safe_dump(kc))

            api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            api.user_agent = BENCH_AGENT
            api.configuration.connection_pool_maxsize = max(8, o.concurrency * 2)
            stack.callback(api.close)
            watch_api = config.new_client_from_config(config_file=str(cluster.kubeconfig))
            watch_api.user_agent = BENCH_AGENT
            stack.callback(watch_api.close)
            self.core = client.CoreV1Api(api)
            self.apps = client.AppsV1Api(api)
            self.custom = client.CustomObjectsApi(api)
            for ns in (WARM_NS, *model_ns, *floor_ns):
                self.core.create_namespace({"metadata": {"name": ns}})
            for ns in (WARM_NS, *model_ns):
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
            names = [(WARM_NS, f"warm-{i}") for i in range(o.warmup_models)]
            names += [(model_ns[i % len(model_ns)], f"b-{i:03d}") for i in range(n)]
            self.uris = {k: f"s3://{BUCKET}/fleet/{k[0]}/{k[1]}/model.joblib" for k in names}
            self.sha256 = art.sha256
            t = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda k: mc.put_object(
                            BUCKET, self.uris[k].split("/", 3)[3], io.BytesIO(art.data),
                            len(art.data),
                        ),
                        names,
                    )
                )  # fmt: skip
            self.log(f"{len(names)} artifacts uploaded in {time.perf_counter() - t:.1f}s")

            watch_apps = client.AppsV1Api(watch_api)
            watch_custom = client.CustomObjectsApi(watch_api)
            self.list_deployments = watch_apps.list_deployment_for_all_namespaces
            self.deps = stack.enter_context(
                Watcher("deployments", self.list_deployments, deployment_available)
            )
            self.mlms = StateWatcher(
                "mlmodels",
                lambda **kw: watch_custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw),
                model_serving,
            )
            stack.enter_context(self.mlms)

            self.env = {
                "MLMODEL_RECONCILE_INTERVAL": str(o.reconcile_interval),
                "MLMODEL_SERVING_IMAGE": IMAGE_BEFORE,
                RATE_ENV: f"{o.fleet_rate:g}",
            }
            op = OperatorRunner(
                cluster, minio, self.workdir / "operator", env=self.env, kubeconfig=op_kubeconfig
            )
            self.operator = op
            self.cluster_pids = {
                name: p.popen.pid for name, p in cluster.processes.items() if p.popen
            }
            self.cluster_pids["minio"] = (
                minio.process.popen.pid if minio.process and minio.process.popen else 0
            )
            self.results["finalizer_policy"] = o.finalizer_policy
            if o.finalizer_policy:
                self._finalizer_policy(cluster)
            try:
                op.start()
                self.pid = self._op_pid()
                self._fleet_phases(floor_ns, model_ns)
            finally:
                if op.process:
                    self.results["operator_log_tail"] = op.process.log_tail(40)
                op.stop()
                with contextlib.suppress(Exception):
                    self._read_audit()
                self.results["audit_log_bytes"] = self._audit_offset
            self.results["watch_errors"] = {
                "deployments": self.deps.errors,
                "mlmodels": self.mlms.errors,
            }
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        return self.results

    def _finalizer_policy(self, cluster: Any) -> None:
        """crds/admission applied, and in force: a dry-run create shows the finalizer."""
        from mlmodel_operator.localcluster import REPO_ROOT, wait_until
        from mlmodel_operator.settings import FINALIZER

        cluster.kubectl("apply", "--server-side", "-k", str(REPO_ROOT / "crds" / "admission"))
        probe = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "MLModel",
            "metadata": {"name": "policy-probe"},
            "spec": {
                "version": "1",
                "artifact": {"uri": "s3://models/probe/model.joblib", "sha256": "0" * 64},
            },
        }

        def in_force() -> bool:
            made = self.custom.create_namespaced_custom_object(
                GROUP, VERSION, WARM_NS, PLURAL, probe, dry_run="All"
            )
            return FINALIZER in (made["metadata"].get("finalizers") or [])

        wait_until("the archive-finalizer policy in force", in_force, 60, interval=0.25)

    def _op_pid(self) -> int:
        assert self.operator.process is not None and self.operator.process.popen is not None
        return self.operator.process.popen.pid

    # -- phases

    def _fleet_phases(self, floor_ns: list[str], model_ns: list[str]) -> None:
        o = self.opts
        time.sleep(3)
        self.mark("idle")
        template = self._warmup()
        svc = json.loads(
            self.core.read_namespaced_service("warm-0", WARM_NS, _preload_content=False).data
        )
        self.mark("warmup")
        if o.burst_only:
            self.results["burst"] = self._burst(model_ns, until_deployments=True)
            self.results["windows"] = [self.window(self.marks[-1], self.mark("burst"))]
            return

        self.results["floor"] = self._floor(template, service_template(svc), floor_ns)
        self.mark("floor")
        self.results["floor_change"] = self._floor_change(floor_ns)
        self.mark("floor-change")
        self.results["floor_delete"] = self._delete_namespaces(floor_ns)
        self.mark("floor-deleted")

        burst_started = time.perf_counter()  # _burst's own start is a few µs later
        b = self._burst(model_ns)
        keys = [(model_ns[i % len(model_ns)], f"b-{i:03d}") for i in range(o.models)]
        self.keys = keys
        b["serving_times"] = sorted(
            self.mlms.first_done[k] for k in keys if k in self.mlms.first_done
        )
        b["deployment_times"] = sorted(
            self.deps.first_seen[(ns, f"{name}-v1")]
            for ns, name in keys
            if (ns, f"{name}-v1") in self.deps.first_seen
        )
        b["started"] = burst_started
        b["deployment_available_times"] = sorted(
            self.deps.first_done[(ns, f"{name}-v1")]
            for ns, name in keys
            if (ns, f"{name}-v1") in self.deps.first_done
        )
        b["all_deployments_available_s"] = (
            b["deployment_available_times"][-1] - burst_started
            if len(b["deployment_available_times"]) == len(keys)
            else None
        )
        self.results["burst"] = b
        self.mark("burst")

        time.sleep(5)
        start = self.mark("steady-start")
        reconciles_before = self._reconciles()
        self.log(f"steady: {o.steady:.0f}s with nothing changing")
        time.sleep(o.steady)
        end = self.mark("steady")
        steady = self.window(start, end)
        steady["serving"] = self.mlms.count_now(keys)
        steady["reconciles"] = report.counts_delta(self._reconciles(), reconciles_before)
        series = report.rate_series(
            [e.received for e in self.op_entries], start.epoch, end.epoch, 1.0
        )
        steady["requests_per_s_series"] = series
        steady["peak_5s_per_s"] = max(
            (sum(series[i : i + 5]) / 5 for i in range(max(1, len(series) - 4))), default=0.0
        )
        self.results["steady"] = steady

        self.results["fleet_change"] = self._fleet_change(keys)
        self.results["restart"] = self._restart(keys, steady)
        self.results["memory"] = self._memory()
        self.results["windows"] = [
            self.window(a, b) for a, b in zip(self.marks, self.marks[1:], strict=False)
        ]

    def _reconciles(self) -> dict[str, float]:
        with contextlib.suppress(Exception):
            return report.counter_by(
                scrape(self.operator.metrics_port), report.RECONCILES_TOTAL, "result"
            )
        return {}

    def _floor(
        self, template: dict[str, Any], svc_template: dict[str, Any], floor_ns: list[str]
    ) -> dict[str, Any]:
        """N Deployments + Services by client threads, like the burst but with no operator."""
        o = self.opts
        dep_template = with_label(template, MANAGED_BY, "mlmodel-bench-floor")
        keys = [(floor_ns[i % len(floor_ns)], f"f-{i:03d}") for i in range(o.models)]
        posted: dict[tuple[str, str], float] = {}
        errors: list[str] = []

        def post(key: tuple[str, str]) -> None:
            ns, name = key
            try:
                t0 = time.perf_counter()
                _read(
                    self.apps.create_namespaced_deployment(
                        ns, floor_body(dep_template, name), _preload_content=False
                    )
                )
                posted[key] = t0
                _read(
                    self.core.create_namespaced_service(
                        ns, floor_service(svc_template, name), _preload_content=False
                    )
                )
            except Exception as exc:
                errors.append(f"{key}: {exc}"[:300])

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(o.concurrency) as pool:
            list(pool.map(post, keys))
        all_posted = time.perf_counter()
        self.log(
            f"floor: {len(posted)} Deployments + Services POSTed in {all_posted - started:.1f}s"
        )
        self._wait_all("floor Available", lambda: self.deps.count_done(keys), len(keys))
        seen = {k: self.deps.first_seen[k] for k in keys if k in self.deps.first_seen}
        avail = {k: self.deps.first_done[k] for k in keys if k in self.deps.first_done}
        return {
            "objects": len(keys),
            "post_errors": errors,
            "started": started,
            "all_posted_s": all_posted - started,
            "all_seen_s": max(seen.values()) - started if len(seen) == len(keys) else None,
            "all_available_s": max(avail.values()) - started if len(avail) == len(keys) else None,
            "available_50pct_s": _rel(
                report.time_to_fraction(list(avail.values()), len(keys), 0.5), started
            ),
            "post_to_seen": report.summarize([seen[k] - posted[k] for k in seen if k in posted]),
            "post_to_available": report.summarize(
                [avail[k] - posted[k] for k in avail if k in posted]
            ),
            "available_times": sorted(avail.values()),
            "seen_times": sorted(seen.values()),
            "keys": keys,
        }

    def _wait_all(self, what: str, count: Callable[[], int], total: int) -> bool:
        deadline = time.monotonic() + self.opts.serving_timeout
        last = 0.0
        while True:
            done = count()
            if done >= total:
                return True
            if time.monotonic() > deadline:
                self.log(f"{what}: only {done}/{total} after {self.opts.serving_timeout:.0f}s")
                return False
            if time.monotonic() - last > 10:
                self.log(f"{what}: {done}/{total}")
                last = time.monotonic()
            time.sleep(0.25)

    def _rollout_watchers(self, stack: contextlib.ExitStack) -> tuple[Watcher, Watcher]:
        changed = stack.enter_context(
            Watcher("changed", self.list_deployments, lambda d: image_of(d) == IMAGE_AFTER)
        )
        rolled = stack.enter_context(
            Watcher("rolled", self.list_deployments, lambda d: rolled_out(d, IMAGE_AFTER))
        )
        return changed, rolled

    def _rollout_summary(
        self, changed: Watcher, rolled: Watcher, keys: Sequence[tuple[str, str]], started: float
    ) -> dict[str, Any]:
        ch = {k: changed.first_done[k] for k in keys if k in changed.first_done}
        ro = {k: rolled.first_done[k] for k in keys if k in rolled.first_done}
        return {
            "deployments": len(keys),
            "changed": len(ch),
            "rolled": len(ro),
            "all_changed_s": max(ch.values()) - started if len(ch) == len(keys) else None,
            "all_rolled_s": max(ro.values()) - started if len(ro) == len(keys) else None,
            "first_change_s": min(ch.values()) - started if ch else None,
            "max_changes_in_1s": report.max_in_window(ch.values(), 1.0),
            "max_rolling_at_once": report.max_overlap(
                [(ch[k], ro.get(k, float("inf"))) for k in ch]
            ),
            "change_to_rolled": report.summarize([ro[k] - ch[k] for k in ro if k in ch]),
            "changed_times": sorted(ch.values()),
            "rolled_times": sorted(ro.values()),
            "watch_errors": changed.errors + rolled.errors,
        }

    def _floor_change(self, floor_ns: list[str]) -> dict[str, Any]:
        """A client patches the image of every floor Deployment at once."""
        o = self.opts
        keys = self.results["floor"]["keys"]
        errors: list[str] = []
        patch = [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/image",
                "value": IMAGE_AFTER,
            }
        ]

        def send(key: tuple[str, str]) -> None:
            try:
                _read(
                    self.apps.patch_namespaced_deployment(
                        key[1], key[0], patch, _preload_content=False
                    )
                )
            except Exception as exc:
                errors.append(f"{key}: {exc}"[:300])

        with contextlib.ExitStack() as stack:
            changed, rolled = self._rollout_watchers(stack)
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(o.concurrency) as pool:
                list(pool.map(send, keys))
            all_patched = time.perf_counter() - started
            self._wait_all("floor image change", lambda: rolled.count_done(keys), len(keys))
            out = self._rollout_summary(changed, rolled, keys, started)
        out["all_patched_s"] = all_patched
        out["patch_errors"] = errors
        return out

    def _delete_namespaces(self, names: list[str]) -> dict[str, Any]:
        """Delete the floor's namespaces and wait until they are gone (their Pods too), so
        the burst starts on the cluster the floor started on."""
        t0 = time.perf_counter()
        for ns in names:
            self.core.delete_namespace(ns)
        deadline = time.monotonic() + self.opts.delete_timeout
        left = list(names)
        while left and time.monotonic() < deadline:
            present = {
                item.metadata.name
                for item in self.core.list_namespace(field_selector=None, label_selector=None).items
            }
            left = [ns for ns in names if ns in present]
            if left:
                time.sleep(1)
        took = time.perf_counter() - t0
        self.log(
            f"floor namespaces deleted in {took:.0f}s" + (f"; still there: {left}" if left else "")
        )
        return {"seconds": took, "left": left}

    def _fleet_change(self, keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """Restart the operator with another default serving image and the rate limit."""
        o = self.opts
        deps = [(ns, f"{name}-v1") for ns, name in keys]
        lost_before = len(self.mlms.lost)
        with contextlib.ExitStack() as stack:
            changed, rolled = self._rollout_watchers(stack)
            start = self.mark("fleet-change-start")
            started = time.perf_counter()
            self.operator.stop()
            self.operator.env = {**self.env, "MLMODEL_SERVING_IMAGE": IMAGE_AFTER}
            self.operator.start()
            self.pid = self._op_pid()
            ready = time.perf_counter() - started
            self.log(f"fleet change: operator restarted with {IMAGE_AFTER} in {ready:.1f}s")
            ok = self._wait_all("fleet change rolled", lambda: rolled.count_done(deps), len(deps))
            rolled_at = time.perf_counter()
            serving_ok = self._wait_all(
                "fleet change Serving", lambda: self.mlms.count_now(keys), len(keys)
            )
            all_serving = time.perf_counter() - started if ok and serving_ok else None
            out = self._rollout_summary(changed, rolled, deps, started)
        end = self.mark("fleet-change")
        out.update(
            {
                "rate_limit": o.fleet_rate,
                "operator_ready_s": ready,
                "all_rolled_and_serving_s": all_serving,
                "serving_at_end": self.mlms.count_now(keys),
                "serving_wait_after_rolled_s": time.perf_counter() - rolled_at,
                "models_left_serving": len(self.mlms.lost) - lost_before,
                "window": self.window(start, end),
            }
        )
        return out

    def _restart(self, keys: Sequence[tuple[str, str]], steady: dict[str, Any]) -> dict[str, Any]:
        """SIGKILL, start again, watch the request rate for ``resume`` seconds."""
        o = self.opts
        lost_before = len(self.mlms.lost)
        start = self.mark("restart-start")
        kill_epoch = time.time()
        t0 = time.perf_counter()
        self.operator.kill()
        self.operator.start()
        self.pid = self._op_pid()
        ready = time.perf_counter() - t0
        self.log(
            f"restart: SIGKILL, started again, healthy in {ready:.1f}s; watching {o.resume:.0f}s"
        )
        time.sleep(max(0.0, o.resume - (time.perf_counter() - t0)))
        end = self.mark("restart")
        series = report.rate_series(
            [e.received for e in self.op_entries], kill_epoch, end.epoch, 1.0
        )
        # steady state itself may come in bursts (a cache's expiry): back to steady is
        # never above what the steady window showed in 5 s, twice its mean, or 1/s
        steady_rate = steady.get("operator_requests_per_s") or 0.0
        threshold = max(2 * steady_rate, steady.get("peak_5s_per_s") or 0.0, 1.0)
        settled = report.settled_after(series, threshold, 5)
        return {
            "operator_ready_s": ready,
            "observed_s": end.perf - t0,
            "requests_per_s": series,
            "peak_requests_per_s": max(series) if series else 0,
            "threshold_per_s": threshold,
            "back_to_steady_s": settled,
            "serving_at_end": self.mlms.count_now(keys),
            "models_left_serving": len(self.mlms.lost) - lost_before,
            "window": self.window(start, end),
        }

    def _memory(self) -> dict[str, Any]:
        """RSS at N models, then with unrelated Deployments and ConfigMaps around. A
        window of the same settling length with nothing new comes first: a process
        started a minute ago still moves on its own (a control for the comparison)."""
        o = self.opts
        control = self.mark("memory-control-start")
        time.sleep(o.settle)
        before = self.mark("memory-start")
        hwm_before = _proc_status(self.pid).get("VmHWM")
        spaces = [f"fleet-unrelated-{i}" for i in range(o.namespaces)]
        for ns in spaces:
            self.core.create_namespace({"metadata": {"name": ns}})
        n_dep = o.unrelated // 2
        n_cm = o.unrelated - n_dep
        errors: list[str] = []
        payload = "x" * 1024

        def make(i: int) -> None:
            ns = spaces[i % len(spaces)]
            try:
                if i < n_dep:
                    _read(
                        self.apps.create_namespaced_deployment(
                            ns, unrelated_deployment(f"u-{i:05d}"), _preload_content=False
                        )
                    )
                else:
                    _read(
                        self.core.create_namespaced_config_map(
                            ns,
                            {
                                "metadata": {"name": f"u-{i:05d}", "labels": {"app": f"u-{i:05d}"}},
                                "data": {"payload": payload},
                            },
                            _preload_content=False,
                        )
                    )
            except Exception as exc:
                errors.append(f"{i}: {exc}"[:300])

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(o.concurrency) as pool:
            list(pool.map(make, range(o.unrelated)))
        created = time.perf_counter() - t0
        self.log(
            f"memory: {o.unrelated} unrelated objects created in {created:.0f}s; settling {o.settle:.0f}s"
        )
        time.sleep(o.settle)
        after = self.mark("memory")
        return {
            "deployments": n_dep,
            "configmaps": n_cm,
            "create_s": created,
            "errors": errors[:20],
            "error_count": len(errors),
            "rss_control_start": control.rss,
            "control_s": before.perf - control.perf,
            "rss_before": before.rss,
            "hwm_before": hwm_before,
            "rss_after": after.rss,
            "hwm_after": _proc_status(self.pid).get("VmHWM"),
            "window": self.window(before, after),
        }


def unrelated_deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "app", "image": "registry.local/unrelated:1"}]},
            },
        },
    }


def rate_setting_present() -> dict[str, Any]:
    """Whether the operator's settings read the fleet rate limit (another change adds it)."""
    path = REPO / "operator" / "mlmodel_operator" / "settings.py"
    text = path.read_text() if path.exists() else ""
    return {"env": RATE_ENV, "in_settings_py": RATE_ENV in text}


def _read(resp: Any) -> bytes:
    """The whole body of a response made with ``_preload_content=False``."""
    data: bytes = resp.data
    return data


def _rel(value: float | None, start: float) -> float | None:
    return None if value is None else value - start


# --------------------------------------------------------------------------- output


def goals(results: dict[str, Any]) -> list[list[Any]]:
    """The issue's goals against this run: [goal, measured, target, met]."""
    f, b, st = results["floor"], results["burst"], results["steady"]
    fc, rs, mem = results["fleet_change"], results["restart"], results["memory"]

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("**met**" if ok else "not met")

    burst_ratio = report.ratio(b.get("all_serving_s"), f.get("all_available_s"))
    p99_ratio = report.ratio(
        b["apply_to_deployment"].get("p99_ms"), f["post_to_seen"].get("p99_ms")
    )
    fleet_ratio = report.ratio(fc.get("all_rolled_and_serving_s"), b.get("all_serving_s"))
    rss = mem.get("rss_before")
    rss_delta = None if rss is None or mem.get("rss_after") is None else mem["rss_after"] - rss
    return [
        [
            "burst: all Serving / floor all Available",
            report.fmt_ratio(burst_ratio),
            "≤ 1.5x",
            verdict(None if burst_ratio is None else burst_ratio <= 1.5),
        ],
        [
            "burst: POST -> Deployment p99 / floor POST -> seen p99",
            report.fmt_ratio(p99_ratio),
            "≤ 3x",
            verdict(None if p99_ratio is None else p99_ratio <= 3),
        ],
        [
            "steady: operator CPU, % of one core",
            f"{st['operator_cpu_pct']:.1f}%",
            "< 5%",
            verdict(st["operator_cpu_pct"] < 5),
        ],
        [
            "steady: apiserver requests by the operator per second",
            f"{st['operator_requests_per_s']:.2f}",
            "< 1",
            verdict(st["operator_requests_per_s"] < 1),
        ],
        [
            "steady: MinIO S3 requests",
            f"{st['s3_requests']:.0f}",
            "0",
            verdict(st["s3_requests"] == 0),
        ],
        [
            f"memory: operator RSS at {b['models']} models (fresh process)",
            f"{_mib(rss)} MiB",
            "< 200 MiB",
            verdict(None if rss is None else rss < 200 * 2**20),
        ],
        [
            f"memory: RSS change with {mem['deployments']:,} Deployments + "
            f"{mem['configmaps']:,} ConfigMaps unrelated",
            f"{_mib(rss_delta)} MiB",
            "unchanged (±10 MiB)",
            verdict(None if rss_delta is None else abs(rss_delta) <= 10 * 2**20),
        ],
        [
            "fleet change: all rolled and Serving / burst all Serving",
            report.fmt_ratio(fleet_ratio),
            "≤ 2x",
            verdict(None if fleet_ratio is None else fleet_ratio <= 2),
        ],
        [
            "restart: back to the steady request rate after",
            _secs(rs.get("back_to_steady_s")),
            "no herd (reported)",
            "—",
        ],
    ]


def render_markdown(results: dict[str, Any], plot: str | None) -> str:
    s, m = results["settings"], results["machine"]
    f, b, st = results["floor"], results["burst"], results["steady"]
    fc, ffc, rs, mem = (
        results["fleet_change"],
        results["floor_change"],
        results["restart"],
        results["memory"],
    )
    rate = results["rate_setting_in_operator"]
    out = [
        f"### Fleet benchmark, {results['date']}" + (" (smoke run)" if s["quick"] else ""),
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cpus']} cores ({m['cpu_model']}), Python {m['python']}; load average "
        f"at start {m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(results["versions"].items())) + "  ",
        f"Commit: {results['git']['commit'][:10]}"
        + (" (operator code modified)" if results["git"]["operator_changed"] else "")
        + "  ",
        f"{s['models']:,} models in {s['namespaces']} namespaces, POSTed by {s['concurrency']} "
        f"client threads; operator reconcile interval {s['reconcile_interval']:g} s, "
        f"`{RATE_ENV}={s['fleet_rate']:g}`"
        + ("" if rate["in_settings_py"] else " (**not read by this operator's settings.py**)"),
        (
            "The MLModels' archive finalizer put on at creation by the apiserver "
            "(`crds/admission`, MutatingAdmissionPolicy). "
            if results.get("finalizer_policy")
            else "No admission policy: the operator adds the archive finalizer. "
        )
        + f"Operator environment: `MLMODEL_RECONCILE_INTERVAL={s['reconcile_interval']:g}`, "
        f"`MLMODEL_SERVING_IMAGE={IMAGE_BEFORE}`, `{RATE_ENV}={s['fleet_rate']:g}`, every other "
        f"setting its default, `PYTHONMALLOC={s.get('pythonmalloc', '(pymalloc)')}` as its image "
        "sets it; "
        "its own client certificate (user "
        f"`{OPERATOR_USER}`), so the apiserver's audit log names its requests",
        "",
        report.markdown_table(("goal (issue 17)", "measured", "target", ""), goals(results)),
        "",
    ]
    if plot:
        out += [
            f"![Serving models over time against the floor's Available Deployments]({plot})",
            "",
        ]
    out += [
        "**Burst against the floor** (seconds from the first POST; per-object latencies from "
        "the POST to the watch event)",
        "",
        report.markdown_table(
            ("measure", "floor: Deployments + Services", "operator: MLModels", "ratio"),
            [
                ["all POSTed", _secs(f["all_posted_s"]), _secs(b["all_posted_s"]), ""],
                [
                    "all Deployments seen",
                    _secs(f["all_seen_s"]),
                    _secs(b["all_deployments_s"]),
                    report.fmt_ratio(report.ratio(b["all_deployments_s"], f["all_seen_s"])),
                ],
                [
                    "all Deployments Available",
                    _secs(f["all_available_s"]),
                    _secs(b["all_deployments_available_s"]),
                    report.fmt_ratio(
                        report.ratio(b["all_deployments_available_s"], f["all_available_s"])
                    ),
                ],
                [
                    "50% Available / Serving",
                    _secs(f["available_50pct_s"]),
                    _secs(b["serving_50pct_s"]),
                    report.fmt_ratio(report.ratio(b["serving_50pct_s"], f["available_50pct_s"])),
                ],
                [
                    "**all Available / all Serving**",
                    _secs(f["all_available_s"]),
                    _secs(b["all_serving_s"]),
                    report.fmt_ratio(report.ratio(b["all_serving_s"], f["all_available_s"])),
                ],
                *[
                    [
                        f"POST -> Deployment seen, {q}",
                        _ms(f["post_to_seen"].get(f"{q}_ms")),
                        _ms(b["apply_to_deployment"].get(f"{q}_ms")),
                        report.fmt_ratio(
                            report.ratio(
                                b["apply_to_deployment"].get(f"{q}_ms"),
                                f["post_to_seen"].get(f"{q}_ms"),
                            )
                        ),
                    ]
                    for q in ("p50", "p99")
                ],
                [
                    "POST -> Available / Serving, p50",
                    _ms(f["post_to_available"].get("p50_ms")),
                    _ms(b["apply_to_serving"].get("p50_ms")),
                    "",
                ],
            ],
        ),
        "",
        "The operator's apiserver requests per model during the burst (audit log; kopf writes "
        "the finalizer on the MLModel; the operator's waits are its own wake-ups, which send "
        "nothing):",
        "",
        requests_table(_window(results, "burst")["operator_requests_by"], None, b["models"]),
        "",
        f"**Steady state** ({st['seconds']:.0f} s, nothing changing, {st['serving']:,} models "
        f"Serving): operator CPU {st['operator_cpu_pct']:.1f}% of one core, "
        f"{st['operator_requests']:,} apiserver requests ({st['operator_requests_per_s']:.2f}/s), "
        f"{st['s3_requests']:.0f} MinIO S3 requests, reconciles "
        + (", ".join(f"{k} {v:.0f}" for k, v in sorted(st["reconciles"].items())) or "—")
        + " (the operator's counter since its start). The operator's requests, from the "
        "apiserver's audit log:",
        "",
        requests_table(st["operator_requests_by"], st["seconds"]),
        "",
        f"**Fleet change**: the operator restarted with `MLMODEL_SERVING_IMAGE={IMAGE_AFTER}` "
        f"(was `{IMAGE_BEFORE}`), `{RATE_ENV}={fc['rate_limit']:g}`; the floor: a client "
        f"patches the image of all {ffc['deployments']:,} Deployments at once",
        "",
        report.markdown_table(
            ("measure", "floor", "operator"),
            [
                ["operator healthy after the restart", "", _secs(fc["operator_ready_s"])],
                [
                    "first Pod template changed",
                    _secs(ffc["first_change_s"]),
                    _secs(fc["first_change_s"]),
                ],
                [
                    "all Pod templates changed",
                    _secs(ffc["all_changed_s"]),
                    _secs(fc["all_changed_s"]),
                ],
                [
                    "all rolled out (new image, Available)",
                    _secs(ffc["all_rolled_s"]),
                    _secs(fc["all_rolled_s"]),
                ],
                [
                    "**all rolled out and every model Serving**",
                    "",
                    _secs(fc["all_rolled_and_serving_s"]),
                ],
                [
                    "most template changes in any 1 s",
                    ffc["max_changes_in_1s"],
                    fc["max_changes_in_1s"],
                ],
                [
                    "most Deployments rolling at once",
                    ffc["max_rolling_at_once"],
                    fc["max_rolling_at_once"],
                ],
                [
                    "template change -> rolled out, p50",
                    _ms(ffc["change_to_rolled"].get("p50_ms")),
                    _ms(fc["change_to_rolled"].get("p50_ms")),
                ],
                ["models that left Serving", "", fc["models_left_serving"]],
                ["operator apiserver requests", "", f"{fc['window']['operator_requests']:,}"],
            ],
        ),
        "",
        "The operator's apiserver requests per model during the fleet change:",
        "",
        requests_table(fc["window"]["operator_requests_by"], None, ffc["deployments"]),
        "",
        f"**Restart**: SIGKILL with {b['models']:,} models, started again at once (healthy "
        f"after {rs['operator_ready_s']:.1f} s), watched {rs['observed_s']:.0f} s: "
        f"{rs['window']['operator_requests']:,} requests, peak {rs['peak_requests_per_s']}/s; "
        f"back to the steady rate (from then on, every 5 s window at most "
        f"{rs['threshold_per_s']:.1f}/s: the steady window's busiest 5 s, twice its mean, "
        f"or 1/s) after {_secs(rs['back_to_steady_s'])}"
        + ("" if rs["back_to_steady_s"] is not None else " (not within the window)")
        + "; "
        f"{rs['models_left_serving']} models left Serving, {rs['serving_at_end']:,} Serving at the end.",
        "",
        "Operator requests per second after the SIGKILL (5 s bins, mean per second): "
        + ", ".join(
            f"{sum(rs['requests_per_s'][i : i + 5]) / len(rs['requests_per_s'][i : i + 5]):.1f}"
            for i in range(0, len(rs["requests_per_s"]), 5)
        ),
        "",
        requests_table(rs["window"]["operator_requests_by"], rs["window"]["seconds"]),
        "",
        f"**Memory**: operator RSS {_mib(mem['rss_before'])} MiB at {b['models']:,} models "
        f"(the process started by the restart above; VmHWM {_mib(mem['hwm_before'])} MiB"
        + (
            f"; {_mib(mem['rss_control_start'])} MiB {mem['control_s']:.0f} s earlier, "
            "a window with nothing new"
            if mem.get("rss_control_start") is not None
            else ""
        )
        + "), "
        f"{_mib(mem['rss_after'])} MiB after {mem['deployments']:,} Deployments (replicas 0) "
        f"and {mem['configmaps']:,} ConfigMaps (1 KiB each) in {s['namespaces']} other "
        f"namespaces were created ({mem['create_s']:.0f} s) and {s['settle_seconds'] or 0:.0f} s "
        f"passed (VmHWM {_mib(mem['hwm_after'])} MiB); the operator made "
        f"{mem['window']['operator_requests']:,} requests meanwhile. After the burst and the "
        f"steady window, the first process had RSS {_mib(st['rss_end'])} MiB.",
        "",
        phases_table(results["windows"]),
        "",
    ]
    return "\n".join(out)


def render_burst_only(results: dict[str, Any]) -> str:
    """The burst alone (``--burst-only``): how soon each model had its Deployment."""
    b, w = results["burst"], results["windows"][0]
    a = b["apply_to_deployment"]
    rows = [
        ["models (namespaces, client threads)",
         f"{b['models']:,} ({b['namespaces']}, {b['concurrency']})"],
        ["the client's POSTs took", _secs(b["all_posted_s"])],
        ["every model had its Deployment after", _secs(b["all_deployments_s"])],
        ["POST -> Deployment p50 / p90 / p99",
         " / ".join(_ms(a.get(f"{q}_ms")) for q in ("p50", "p90", "p99"))],
        ["operator CPU, POSTs to the last Deployment",
         _secs(w["cpu_seconds"].get("operator"))],
        ["operator requests in that window", str(w["operator_requests"])],
        ["archive finalizer put on by", "the apiserver (crds/admission)"
         if results.get("finalizer_policy") else "the operator"],
    ]  # fmt: skip
    git = results.get("git") or {}
    lines = [
        f"### Fleet burst alone, {results.get('date', '')} (at {git.get('commit', '?')[:7]})",
        "",
        f"`{results.get('command', '')}`",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in rows),
    ]
    return "\n".join(lines)


def requests_table(by: dict[str, int], seconds: float | None, models: int | None = None) -> str:
    """The operator's requests by user agent, verb and resource, per second or per model."""
    rows = []
    for key, count in sorted(by.items(), key=lambda kv: -kv[1]):
        agent, verb, resource = [*key.split(" | ", 2), "", ""][:3]
        per = f"{count / seconds:.2f}" if seconds else f"{count / (models or 1):.2f}"
        rows.append([f"`{agent}`", verb, resource, count, per])
    if not rows:
        return "(no requests)"
    last = "per s" if seconds else "per model"
    return report.markdown_table(("user agent", "verb", "resource", "requests", last), rows)


def _window(results: dict[str, Any], phase: str) -> dict[str, Any]:
    return next((w for w in results["windows"] if w["to"] == phase), {"operator_requests_by": {}})


def phases_table(windows: list[dict[str, Any]]) -> str:
    rows = [
        [
            w["to"],
            f"{w['seconds']:.0f}",
            report.fmt(w["cpu_seconds"].get("operator")),
            report.fmt(w["cpu_seconds"].get("kube-apiserver")),
            w["operator_requests"],
            f"{w['s3_requests']:.0f}",
            ", ".join(f"{k} {v:.0f}" for k, v in sorted(w["s3_requests_by"].items())) or "—",
            _mib(w["rss_end"]),
        ]
        for w in windows
    ]
    header = (
        "phase (ends)",
        "s",
        "operator CPU s",
        "apiserver CPU s",
        "operator apiserver requests",
        "S3 requests",
        "S3 by API",
        "operator RSS MiB",
    )
    return (
        "**By phase** (each row from the end of the one above; all S3 requests to MinIO "
        "come from the operator, apart from the uploads before `idle`)\n\n"
        + report.markdown_table(header, rows)
    )


def plot_burst(results: dict[str, Any], path: Path) -> None:
    """Serving models over time (burst) against the floor's Available Deployments."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, b = results["floor"], results["burst"]
    fig, ax = plt.subplots(figsize=(10.5, 4.5), dpi=110)
    for times, start, label, style, color in (
        (f["seen_times"], f["started"], "floor: Deployments created (seen)", ":", "tab:blue"),
        (f["available_times"], f["started"], "floor: Deployments Available", "-", "tab:blue"),
        (
            b["deployment_times"],
            b["started"],
            "operator: Deployments created (seen)",
            ":",
            "tab:red",
        ),
        (
            b["deployment_available_times"],
            b["started"],
            "operator: Deployments Available",
            "--",
            "tab:red",
        ),
        (b["serving_times"], b["started"], "operator: MLModels Serving", "-", "tab:red"),
    ):
        curve = report.count_over_time(times, start)
        if curve:
            xs = [0.0] + [x for x, _ in curve]
            ys = [0] + [y for _, y in curve]
            ax.step(xs, ys, where="post", linestyle=style, color=color, label=label)
    ax.set_xlabel("seconds after the first POST")
    ax.set_ylabel("objects")
    ax.set_title(
        f"{b['models']:,} at once, {results['settings']['namespaces']} namespaces "
        f"({results['date']})"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value / 2**20:.1f}"


def update_readme(markdown: str) -> None:
    text = README.read_text() if README.exists() else ""
    README.write_text(
        report.replace_block(text, README_BEGIN, README_END, markdown, README_HEADING)
    )


def compact(results: dict[str, Any]) -> dict[str, Any]:
    """The results as JSON can hold them (sets as lists, anything else as text)."""
    out: dict[str, Any] = json.loads(
        json.dumps(results, default=lambda v: list(v) if isinstance(v, set) else str(v))
    )
    return out


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> FleetOptions:
    p = argparse.ArgumentParser(prog="bench_fleet", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", type=int, help="MLModels and floor objects (default 1000; --quick 50)"
    )
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8, help="client threads POSTing")
    p.add_argument(
        "--reconcile-interval", type=float,
        help="the operator's MLMODEL_RECONCILE_INTERVAL (default: its own default, "
        f"{DEFAULT_RECONCILE_INTERVAL:g} s; --quick 10)",
    )  # fmt: skip
    p.add_argument(
        "--steady-seconds", type=float, help="steady window (default: one interval, >= 30 s)"
    )
    p.add_argument(
        "--resume-seconds",
        type=float,
        help="watched after the SIGKILL (default: one interval + 15 s)",
    )
    p.add_argument(
        "--settle-seconds",
        type=float,
        help="after the unrelated objects (default: one interval, at most 60 s, + 10 s)",
    )
    p.add_argument(
        "--unrelated",
        type=int,
        help="unrelated Deployments + ConfigMaps, half each (default 10000; --quick 400)",
    )
    p.add_argument(
        "--fleet-rate", type=float, default=20.0, help=f"{RATE_ENV} (default 20; 0 = unlimited)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        help="limit of every wait for all objects (default 1800 s; --quick 300)",
    )
    p.add_argument(
        "--quick", action="store_true", help="50 models, 10 s timer, short windows (smoke run)"
    )
    p.add_argument(
        "--burst-only",
        action="store_true",
        help="the burst alone, until every model has its Deployment: POST -> Deployment "
        "and the operator's CPU, to compare two versions of the operator (no README)",
    )
    p.add_argument(
        "--no-finalizer-policy",
        action="store_true",
        help="leave crds/admission out: the operator adds the archive finalizer itself",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="the tables into benchmarks/README.md, the plot into benchmarks/fleet-burst.png",
    )
    p.add_argument(
        "--keep-workdir", action="store_true", help="keep logs (the audit log too) for a look"
    )
    a = p.parse_args(argv)  # fmt: skip

    def pick(value: Any, full: Any, quick: Any) -> Any:
        return value if value is not None else (quick if a.quick else full)

    return FleetOptions(
        models=pick(a.models, 1000, 50),
        namespaces=a.namespaces,
        concurrency=a.concurrency,
        reconcile_interval=pick(a.reconcile_interval, DEFAULT_RECONCILE_INTERVAL, 10.0),
        steady_seconds=a.steady_seconds,
        resume_seconds=a.resume_seconds,
        settle_seconds=a.settle_seconds,
        unrelated=pick(a.unrelated, 10_000, 400),
        fleet_rate=a.fleet_rate,
        serving_timeout=pick(a.timeout, 1800.0, 300.0),
        delete_timeout=pick(a.timeout, 600.0, 300.0),
        sample_timeout=pick(a.timeout, 120.0, 120.0),
        update_readme=a.update_readme and not a.burst_only,
        keep_workdir=a.keep_workdir,
        quick=a.quick,
        burst_only=a.burst_only,
        finalizer_policy=not a.no_finalizer_policy,
    )


def main(argv: Sequence[str], command: str | None = None) -> int:
    opts = parse_args(argv)
    command = command or " ".join([".venv/bin/python", "benchmarks/operator/bench_fleet.py", *argv])

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-fleet-"))
    started = dt.datetime.now(dt.UTC)
    git = git_state()
    try:
        results = FleetBench(opts, workdir, log).run()
    except BaseException:
        log(f"failed; logs are kept in {workdir}")
        raise
    else:
        if not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"logs kept in {workdir}")
    results["settings"] = {
        **asdict(opts),
        "steady_seconds": opts.steady,
        "resume_seconds": opts.resume,
        "settle_seconds": opts.settle,
        "pythonmalloc": OPERATOR_PYTHONMALLOC,
    }
    results["git"] = git
    results["command"] = command
    results["date"] = started.strftime("%Y-%m-%d %H:%M UTC")
    results["started_utc"] = started.isoformat(timespec="seconds")
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"fleet-{started.strftime('%Y-%m-%dT%H%M')}" + ("-quick" if opts.quick else "")
    if opts.burst_only:  # a minute each, run in turns: the seconds keep them apart
        print(render_burst_only(results))
        out = RESULTS_DIR / f"fleet-{started.strftime('%Y-%m-%dT%H%M%S')}-burst.json"
        out.write_text(json.dumps(compact(results), indent=1))
        log(f"results: {out.relative_to(REPO)}")
        return 0
    plot_path = PLOT if opts.update_readme else RESULTS_DIR / f"{stem}.png"
    plot_ref: str | None = None
    try:
        plot_burst(results, plot_path)
        plot_ref = plot_path.relative_to(REPO / "benchmarks").as_posix()
        log(f"plot: {plot_path.relative_to(REPO)}")
    except Exception as exc:  # no plot is no reason to lose the numbers
        log(f"no plot: {type(exc).__name__}: {exc}")
    markdown = render_markdown(results, plot_ref)
    print(markdown)
    out = RESULTS_DIR / f"{stem}.json"
    out.write_text(json.dumps(compact(results), indent=1))
    log(f"results: {out.relative_to(REPO)}")
    if opts.update_readme:
        update_readme(markdown)
        log("benchmarks/README.md updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
