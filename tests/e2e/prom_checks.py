"""Debian's Prometheus scraping the REAL serving Pods of a model on the real node.

Nothing here is given to Prometheus by hand. The ServiceMonitor the operator wrote is
turned into a scrape config the way the Prometheus operator does it
(:func:`scrape_config_for`: Kubernetes discovery, the selector's keep rules, the port
filter, the target labels, the operator's relabeling); the alert rules are the
PrometheusRule the operator wrote. The operator's own metrics (two dashboard panels) are
scraped the same way, through the ServiceMonitor shipped in manifests/operator/prometheus.

Debian's Prometheus has no Kubernetes discovery, so there the targets are discovered by
:func:`endpoints_discovery` from the same apiserver objects Prometheus' ``endpoints`` role
reads, with the same meta labels, and handed over through file_sd; Prometheus itself
still selects, filters and labels them with the ServiceMonitor's rules, scrapes them and
evaluates the rules. A Prometheus with Kubernetes discovery is used as it is.

:func:`check_prometheus_scrapes_real_pods` is what the real-node lifecycle test calls.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mlmodel_operator.desired import MODEL_LABEL, VERSION_LABEL
from mlmodel_operator.localcluster import (
    REPO_ROOT,
    HarnessError,
    LocalCluster,
    PrometheusServer,
)
from mlmodel_operator.monitoring import (
    dashboard_panels,
    expand_variables,
    monitoring_name,
    variable_selectors,
)
from mlmodel_operator.spec import parse_model

T = TypeVar("T")

# The Prometheus operator's service discovery roles, and the word in their meta labels.
ROLES = {"endpoints": "endpoint", "endpointslice": "endpointslice"}
OPERATOR_SERVICE_MONITOR = (
    REPO_ROOT / "manifests" / "operator" / "prometheus" / "servicemonitor.yaml"
)
# The test overrides the ServiceMonitors' 15 s / 30 s interval so it need not wait long;
# Grafana's $__rate_interval at a 1 s scrape is taken as 30 s (as in the integration test).
SCRAPE_INTERVAL = "1s"
RATE_INTERVAL = "30s"
# mlmodel_serving.drift.DriftMonitor exports no PSI below this many rows in its window.
DRIFT_MIN_ROWS = 100

_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_REGEX_META = re.compile(r"([\\.+*?()|\[\]{}^$])")
_RELABEL_FIELDS = {
    "sourceLabels": "source_labels",
    "separator": "separator",
    "targetLabel": "target_label",
    "regex": "regex",
    "modulus": "modulus",
    "replacement": "replacement",
    "action": "action",
}
_ALERT_EXPR = re.compile(
    r"(?s)(?P<signal>.+)\s(?P<op><=|>=|==|!=|<|>)\s+(?P<threshold>[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
)


# ------------------------------------------------------------------ ServiceMonitor -> config


def sanitize_label_name(name: str) -> str:
    """A Kubernetes label key as Prometheus' Kubernetes discovery spells it in meta labels
    (``app.kubernetes.io/name`` -> ``app_kubernetes_io_name``)."""
    return _LABEL_CHARS.sub("_", name)


def _regex_literal(value: str) -> str:
    """``value`` as an RE2 regex matching exactly that text (relabel regexes are anchored)."""
    return _REGEX_META.sub(r"\\\1", value)


def _not_handled(obj: Mapping[str, Any], handled: Iterable[str], where: str) -> None:
    """ValueError for any field outside ``handled`` that is set (not empty, false or null):
    a shape this translation would otherwise silently ignore."""
    for key, value in obj.items():
        if key not in handled and value not in (None, False, "", [], {}):
            raise ValueError(f"{where}.{key} is not handled by scrape_config_for: {value!r}")


def _relabel_config(rule: Mapping[str, Any], where: str) -> dict[str, Any]:
    """One ServiceMonitor relabeling (camelCase) as a Prometheus relabel_config."""
    for key in rule:
        if key not in _RELABEL_FIELDS:
            raise ValueError(f"{where}.{key} is not a relabeling field scrape_config_for knows")
    out = {_RELABEL_FIELDS[key]: value for key, value in rule.items()}
    if "action" in out:  # the CRD accepts "Replace"; Prometheus wants "replace"
        out["action"] = str(out["action"]).lower()
    return out


def scrape_config_for(
    service_monitor: Mapping[str, Any],
    api_server: str,
    ca_file: Path,
    cert_file: Path,
    key_file: Path,
    *,
    role: str = "endpoints",
) -> dict[str, Any]:
    """The Prometheus scrape config the Prometheus operator makes of a ServiceMonitor.

    For the ``endpoints`` role (its default) or ``endpointslice``: Kubernetes discovery
    against ``api_server`` with the client certificate, in the ServiceMonitor's
    namespaces; a keep rule per ``selector.matchLabels`` entry (label value and label
    present on the Service); a keep rule for the endpoint's named port; Pods that
    finished dropped; the target labels namespace, service, pod, container, endpoint and
    job (the Service's name); then the endpoint's own relabelings. Not modelled: sharding
    (one Prometheus) and the operator's ``__tmp_prometheus_job_name`` bookkeeping.

    Handles one endpoint with ``port``, ``path``, ``interval``, ``scrapeTimeout``,
    ``relabelings`` and plain ``http``; anything else set (``matchExpressions``, a bearer
    token, ``tlsConfig``, ``targetPort``, ``namespaceSelector.any``, ...) raises
    ValueError naming the field, rather than giving a config that scrapes something else.
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {sorted(ROLES)}")
    if service_monitor.get("kind") != "ServiceMonitor":
        raise ValueError(f"kind: expected ServiceMonitor, got {service_monitor.get('kind')!r}")
    if not str(service_monitor.get("apiVersion", "")).startswith("monitoring.coreos.com/"):
        raise ValueError(
            f"apiVersion {service_monitor.get('apiVersion')!r} is not monitoring.coreos.com"
        )
    metadata = service_monitor.get("metadata") or {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not name or not namespace:
        raise ValueError("metadata.name and metadata.namespace are required")

    spec = service_monitor.get("spec") or {}
    _not_handled(spec, ("selector", "namespaceSelector", "endpoints"), "spec")
    selector = spec.get("selector") or {}
    _not_handled(selector, ("matchLabels",), "spec.selector")
    match_labels: Mapping[str, str] = selector.get("matchLabels") or {}
    namespace_selector = spec.get("namespaceSelector") or {}
    _not_handled(namespace_selector, ("matchNames",), "spec.namespaceSelector")
    # No namespaceSelector: the ServiceMonitor's own namespace (as the Prometheus operator).
    namespaces = list(namespace_selector.get("matchNames") or [namespace])

    endpoints = spec.get("endpoints") or []
    if len(endpoints) != 1:
        raise ValueError(f"spec.endpoints: exactly one endpoint is handled, got {len(endpoints)}")
    endpoint, where = endpoints[0], "spec.endpoints[0]"
    _not_handled(
        endpoint,
        ("port", "path", "interval", "scrapeTimeout", "relabelings", "scheme", "filterRunning"),
        where,
    )
    port = endpoint.get("port")
    if not port:
        raise ValueError(f"{where}.port: a named port is required")
    scheme = endpoint.get("scheme") or "http"
    if scheme != "http":
        raise ValueError(f"{where}.scheme {scheme!r} is not handled (http only)")

    relabel: list[dict[str, Any]] = []
    for key, value in sorted(match_labels.items()):
        label = sanitize_label_name(key)
        relabel.append(
            {
                "action": "keep",
                "source_labels": [
                    f"__meta_kubernetes_service_label_{label}",
                    f"__meta_kubernetes_service_labelpresent_{label}",
                ],
                "regex": f"({_regex_literal(value)});true",
            }
        )
    relabel.append(
        {
            "action": "keep",
            "source_labels": [f"__meta_kubernetes_{ROLES[role]}_port_name"],
            "regex": _regex_literal(port),
        }
    )
    if endpoint.get("filterRunning", True) is not False:
        relabel.append(
            {
                "action": "drop",
                "source_labels": ["__meta_kubernetes_pod_phase"],
                "regex": "(Failed|Succeeded)",
            }
        )
    for source, target in (
        ("__meta_kubernetes_namespace", "namespace"),
        ("__meta_kubernetes_service_name", "service"),
        ("__meta_kubernetes_pod_name", "pod"),
        ("__meta_kubernetes_pod_container_name", "container"),
        ("__meta_kubernetes_service_name", "job"),
    ):
        relabel.append({"action": "replace", "source_labels": [source], "target_label": target})
    relabel.append({"action": "replace", "target_label": "endpoint", "replacement": port})
    for i, rule in enumerate(endpoint.get("relabelings") or []):
        relabel.append(_relabel_config(rule, f"{where}.relabelings[{i}]"))

    config: dict[str, Any] = {
        "job_name": f"serviceMonitor/{namespace}/{name}/0",
        "honor_labels": False,
        "kubernetes_sd_configs": [
            {
                "role": role,
                "api_server": api_server,
                "tls_config": {
                    "ca_file": str(ca_file),
                    "cert_file": str(cert_file),
                    "key_file": str(key_file),
                },
                "namespaces": {"names": namespaces},
            }
        ],
        "scheme": scheme,
        "metrics_path": endpoint.get("path") or "/metrics",
    }
    if endpoint.get("interval"):
        config["scrape_interval"] = endpoint["interval"]
    if endpoint.get("scrapeTimeout"):
        config["scrape_timeout"] = endpoint["scrapeTimeout"]
    config["relabel_configs"] = relabel
    return config


# ------------------------------------------- discovery where Prometheus has no Kubernetes SD

# Debian builds Prometheus without Kubernetes service discovery ("Kubernetes support has
# been completely removed", its NEWS.Debian; `promtool check config` rejects the field
# kubernetes_sd_configs). Where that is so, the test discovers the targets itself, from
# the apiserver, exactly in the shape of Prometheus' ``endpoints`` role (its documented
# meta labels), and hands them to Prometheus through file_sd. Prometheus still does the
# rest: the ServiceMonitor's keep rules, port filter and relabelings, the scrapes, the
# rules. Not modelled: the extra targets the endpoints role makes for a Pod's container
# ports that no endpoint names (the port keep rule drops them anyway).


def _object_meta_labels(prefix: str, metadata: Mapping[str, Any]) -> dict[str, str]:
    """``<prefix>_label_<name>``, ``_labelpresent_``, ``_annotation_``, ``_annotationpresent_``."""
    out: dict[str, str] = {}
    for kind in ("label", "annotation"):
        for key, value in (metadata.get(f"{kind}s") or {}).items():
            name = sanitize_label_name(key)
            out[f"{prefix}_{kind}_{name}"] = str(value)
            out[f"{prefix}_{kind}present_{name}"] = "true"
    return out


def _pod_meta_labels(pod: Mapping[str, Any], port: int) -> dict[str, str]:
    """The pod role's meta labels of a Pod, with its container that has ``port``."""
    metadata, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    ready = next(
        (
            c.get("status", "").lower()
            for c in status.get("conditions") or []
            if c.get("type") == "Ready"
        ),
        "unknown",
    )
    out = {
        "__meta_kubernetes_pod_name": metadata["name"],
        "__meta_kubernetes_pod_ip": status.get("podIP", ""),
        "__meta_kubernetes_pod_ready": ready,
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": spec.get("nodeName", ""),
        "__meta_kubernetes_pod_host_ip": status.get("hostIP", ""),
        "__meta_kubernetes_pod_uid": metadata.get("uid", ""),
        **_object_meta_labels("__meta_kubernetes_pod", metadata),
    }
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("controller"):
            out["__meta_kubernetes_pod_controller_kind"] = owner["kind"]
            out["__meta_kubernetes_pod_controller_name"] = owner["name"]
    for container in spec.get("containers") or []:
        for container_port in container.get("ports") or []:
            if container_port.get("containerPort") == port:
                out["__meta_kubernetes_pod_container_name"] = container["name"]
                out["__meta_kubernetes_pod_container_image"] = container.get("image", "")
                out["__meta_kubernetes_pod_container_port_name"] = container_port.get("name", "")
                out["__meta_kubernetes_pod_container_port_number"] = str(port)
                out["__meta_kubernetes_pod_container_port_protocol"] = container_port.get(
                    "protocol", "TCP"
                )
    return {k: v for k, v in out.items() if v}


def endpoints_discovery(
    endpoints: Iterable[Mapping[str, Any]],
    services: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The targets Prometheus' Kubernetes discovery (role ``endpoints``) finds in these
    Endpoints, Services and Pods, as file_sd target groups (one target each): a target
    per address (ready or not) and port of each Endpoints object, with the meta labels of
    the endpoint, of the Service of the same name and of the Pod the address points to."""
    by_service = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    by_pod = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    groups: list[dict[str, Any]] = []
    for obj in endpoints:
        metadata = obj["metadata"]
        namespace = metadata["namespace"]
        base = {
            "__meta_kubernetes_namespace": namespace,
            "__meta_kubernetes_endpoints_name": metadata["name"],
            **_object_meta_labels("__meta_kubernetes_endpoints", metadata),
        }
        service = by_service.get((namespace, metadata["name"]))
        if service is not None:
            base["__meta_kubernetes_service_name"] = service["metadata"]["name"]
            base.update(_object_meta_labels("__meta_kubernetes_service", service["metadata"]))
        for subset in obj.get("subsets") or []:
            for field, ready in (("addresses", "true"), ("notReadyAddresses", "false")):
                for address in subset.get(field) or []:
                    for port in subset.get("ports") or []:
                        labels = {
                            **base,
                            "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                            "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP"),
                            "__meta_kubernetes_endpoint_ready": ready,
                            "__meta_kubernetes_endpoint_hostname": address.get("hostname", ""),
                            "__meta_kubernetes_endpoint_node_name": address.get("nodeName", ""),
                        }
                        ref = address.get("targetRef") or {}
                        if ref:
                            labels["__meta_kubernetes_endpoint_address_target_kind"] = ref["kind"]
                            labels["__meta_kubernetes_endpoint_address_target_name"] = ref["name"]
                        pod = by_pod.get((ref.get("namespace", namespace), ref.get("name", "")))
                        if ref.get("kind") == "Pod" and pod is not None:
                            labels.update(_pod_meta_labels(pod, int(port["port"])))
                        ip = address["ip"]
                        host = f"[{ip}]" if ":" in ip else ip
                        groups.append(
                            {
                                "targets": [f"{host}:{port['port']}"],
                                "labels": {k: v for k, v in labels.items() if v},
                            }
                        )
    return groups


def with_file_discovery(job: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """``job`` with its Kubernetes discovery replaced by the file :func:`endpoints_discovery`
    output is written to (read again at once on change, and every second)."""
    (sd,) = job["kubernetes_sd_configs"]
    if sd["role"] != "endpoints":
        raise ValueError(f"file discovery stands in for the endpoints role only, not {sd['role']}")
    out = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    return {
        "job_name": job["job_name"],
        "file_sd_configs": [{"files": [str(path)], "refresh_interval": "1s"}],
        **out,
    }


# ------------------------------------------------------------------------------ queries


@dataclass(frozen=True)
class Query:
    """One PromQL query that must return data; ``label``: every series must carry it."""

    name: str
    expr: str
    label: str | None = None


def alert_signal(expr: str) -> str:
    """The signal of an alert expression ``<signal> <op> <number>`` (monitoring.Alert)."""
    match = _ALERT_EXPR.fullmatch(expr.strip())
    if match is None:
        raise ValueError(f"not a '<signal> <op> <number>' alert expression: {expr}")
    return match.group("signal").strip()


def dashboard_queries(namespace: str, model: str, version: str) -> list[Query]:
    """Every panel target and every query variable of the dashboard, with the variables
    chosen as a user looking at this model and version would choose them."""
    values = {
        "namespace": namespace,
        "model": model,
        # Grafana regex-escapes a value for =~; a version's "." matching itself or any
        # character is the same here, so the value goes in as it is.
        "version": version,
        "__rate_interval": RATE_INTERVAL,
    }
    out = [
        Query(
            f"panel {panel['title']!r} {target['refId']}", expand_variables(target["expr"], values)
        )
        for panel in dashboard_panels()
        for target in panel["targets"]
    ]
    out += [
        Query(f"variable ${name}", expand_variables(selector, values), label)
        for name, label, selector in variable_selectors()
    ]
    return out


def rule_queries(prometheus_rule: Mapping[str, Any]) -> list[Query]:
    """The signal of every alert of a PrometheusRule (its expression minus the threshold)."""
    return [
        Query(f"alert {rule['alert']} signal", alert_signal(rule["expr"]))
        for group in prometheus_rule["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


# ------------------------------------------------------------------------------ targets


def ready_addresses(endpoint_slices: Iterable[Mapping[str, Any]], port: str) -> set[str]:
    """The addresses of the ready endpoints of a Service's EndpointSlices that carry the
    named port (a ``ready`` left unset counts as ready, as the API says)."""
    out: set[str] = set()
    for eps in endpoint_slices:
        if not any(p.get("name") == port for p in eps.get("ports") or []):
            continue
        for endpoint in eps.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                out.update(endpoint.get("addresses") or [])
    return out


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
    )


def target_problems(
    targets: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    ready: set[str],
    services: set[str],
    namespace: str,
    port: str,
) -> list[str]:
    """What keeps Prometheus' targets of the model's job from being exactly its serving
    Pods: one UP target per ready endpoint address of the selected ``services``, each
    labelled with a Ready, Running Pod of the model whose IP is the target's
    ``__address__`` and whose version label is the target's ``version``. Targets that are
    not UP (a Pod not ready yet, or going away) are only reported when the count is off.
    Empty when all is as it should be."""
    by_name = {p["metadata"]["name"]: p for p in pods}
    targets = list(targets)
    up = [t for t in targets if t.get("health") == "up"]
    not_up = [
        f"{t['labels'].get('pod')} at {t['discoveredLabels'].get('__address__')} is "
        f"{t.get('health')}: {t.get('lastError') or 'not scraped yet'}"
        for t in targets
        if t.get("health") != "up"
    ]
    problems = []
    up_hosts = set()
    for t in up:
        labels, address = t["labels"], t["discoveredLabels"].get("__address__", "")
        host = address.rsplit(":", 1)[0]
        up_hosts.add(host)
        pod = by_name.get(labels.get("pod", ""))
        if pod is None:
            problems.append(f"UP target {address} names pod {labels.get('pod')!r}: no such Pod")
            continue
        if not _pod_ready(pod):
            problems.append(f"UP target {address} is Pod {labels['pod']}, which is not serving")
        if host != pod.get("status", {}).get("podIP"):
            problems.append(
                f"UP target {labels['pod']}: __address__ {address}, but the Pod's IP is "
                f"{pod.get('status', {}).get('podIP')}"
            )
        if labels.get("service") not in services:
            problems.append(
                f"UP target {labels['pod']}: service {labels.get('service')!r} is not one of "
                f"the selected Services {sorted(services)}"
            )
        want = {
            "namespace": namespace,
            "endpoint": port,
            "job": labels.get("service"),
            "version": pod["metadata"].get("labels", {}).get(VERSION_LABEL),
        }
        for key, value in want.items():
            if labels.get(key) != value:
                problems.append(
                    f"UP target {labels['pod']}: label {key}={labels.get(key)!r}, want {value!r}"
                )
    if len(up) != len(ready) or up_hosts != ready:
        problems.append(
            f"{len(up)} UP targets at {sorted(up_hosts)}; the Service has {len(ready)} ready "
            f"endpoints at {sorted(ready)}; targets not UP: {not_up or 'none'}"
        )
    return problems


# ------------------------------------------------------------------------------ the check


def _get(cluster: LocalCluster, *args: str) -> Any:
    return json.loads(cluster.kubectl("get", *args, "-o", "json"))


def _prometheus_api(prom: PrometheusServer, path: str) -> Any:
    with urllib.request.urlopen(f"{prom.url}{path}", timeout=10) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise HarnessError(f"Prometheus {path}: {body}")
    return body["data"]


def prometheus_has_kubernetes_sd(workdir: Path) -> bool:
    """Whether the installed Prometheus knows ``kubernetes_sd_configs`` (Debian's does
    not), asked of the promtool beside it."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise HarnessError("prometheus is not installed: run `make tools`")
    promtool = Path(prometheus).with_name("promtool")
    probe = workdir / "kubernetes-sd-probe.yml"
    probe.write_text(
        "scrape_configs:\n"
        "  - job_name: probe\n"
        "    kubernetes_sd_configs: [{role: endpoints, api_server: 'https://127.0.0.1:1'}]\n"
    )
    result = subprocess.run(
        [str(promtool), "check", "config", str(probe)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode == 0:
        return True
    if "kubernetes_sd_configs" in result.stdout + result.stderr:
        return False
    raise HarnessError(f"promtool check config {probe}: {result.stdout}{result.stderr}")


def _fast(job: dict[str, Any]) -> dict[str, Any]:
    """The job scraped every second (the ServiceMonitors say 15 s and 30 s): test speed."""
    return {**job, "scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL}


def _write_if_changed(path: Path, text: str) -> None:
    """Replace the file at once (file_sd must never read half of it)."""
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _wait(
    what: str,
    attempt: Callable[[], tuple[T, list[str]]],
    deadline: float,
    tick: Callable[[], None],
    prom: PrometheusServer,
) -> T:
    """Call ``tick`` (discovery refresh, traffic) then ``attempt`` until it reports no
    problem; at the deadline fail with the last problems and the end of Prometheus' log."""
    while True:
        tick()
        try:
            result, problems = attempt()
        except urllib.error.HTTPError as exc:
            if exc.code == 400:  # a query Prometheus cannot parse: no use waiting
                raise AssertionError(
                    f"{what}: Prometheus refused a request: {exc.read()!r}"
                ) from None
            problems = [f"HTTPError: {exc}"]
        except (HarnessError, OSError, KeyError) as exc:  # a server still starting, ...
            problems = [f"{type(exc).__name__}: {exc}"]
        if not problems:
            return result
        if time.monotonic() >= deadline:
            log = prom.process.log_tail(15) if prom.process else "(not started)"
            raise AssertionError(
                f"{what}: still not so at the time limit:\n  - "
                + "\n  - ".join(problems)
                + f"\nPrometheus at {prom.url}, config {prom.workdir / 'prometheus.yml'}; "
                f"last lines of its log:\n{log}"
            )
        time.sleep(1.0)


def check_prometheus_scrapes_real_pods(
    cluster: LocalCluster,
    namespace: str,
    model: str,
    workdir: Path,
    send_traffic: Callable[[], None],
    timeout: float = 120,
) -> dict[str, Any]:
    """Debian's Prometheus finds and scrapes the model's real serving Pods through the
    ServiceMonitor the operator wrote, loads the PrometheusRule the operator wrote, and
    every dashboard query and every alert's signal returns data.

    Steps (each waited for, all within ``timeout`` seconds, calling ``send_traffic``
    before every attempt):

    1. Prometheus' targets are discovered from the apiserver (by Prometheus' own
       Kubernetes discovery where it has one; for Debian's build, which has none, by
       :func:`endpoints_discovery` through file_sd, see above) and selected, filtered
       and labelled by Prometheus with the ServiceMonitor's rules. It has one UP target
       per ready endpoint of the Service(s) the ServiceMonitor selects; each target's
       ``pod`` label is a Ready Pod of the model whose IP is the target's
       ``__address__``, and its ``version`` label is the Pod's version (the operator's
       relabeling). The operator's Pods are scraped through
       manifests/operator/prometheus/servicemonitor.yaml (checked by a server-side dry
       run, not created), and at least one of them is UP.
    2. Every rule of the PrometheusRule is loaded and evaluates without error.
    3. Every dashboard panel target and query variable (the variables set to this
       namespace, model and served version; ``$__rate_interval`` 30 s) and every
       alert's signal (its expression without ``<op> <threshold>``) returns at least
       one series; a variable's series carry its label.

    Both ServiceMonitors are scraped every second instead of every 15 s / 30 s, and
    rules are evaluated every second, so the check takes seconds, not minutes.

    What ``send_traffic`` must send, each call (it is called about once a second, so it
    should take a few seconds at most): inference requests to the model through its
    Service (so that both Pods get some), with rows like the training data, e.g.
    :func:`inference_traffic`'s 10 requests of 20 rows of ``churn_data()``. That gives
    the request-rate, latency, batch-size and prediction-distribution panels data (any
    inference in the last 30 s) and the drift gauges (a Pod exports
    ``mlmodel_feature_psi`` once its window holds ``DRIFT_MIN_ROWS`` = 100 rows).
    No failing request is needed: the error-ratio panel and signal are ``(5xx rate or
    vector(0)) / rate``, which is 0 without errors. Also needed, from the setup rather
    than the traffic: the model's drift baseline must be loaded, and must have a
    ``predictions`` part (``mlmodel baseline --model``) for ``mlmodel_prediction_psi``
    (the drift panel's second target, the MLModelPredictionDrift signal) to exist.

    Queries may return series whose value is not a number: for a classifier such as
    churn, the "Predicted values (regressors)" quantiles (the server exports that
    histogram's buckets at zero); the operator's p99 reconcile time when it did not
    reconcile in the last 30 s. They count as data; ``non_finite`` in the summary says
    how many such values each query had.

    Returns ``{"discovery", "targets", "operator_targets", "rules", "queries", "alerts",
    "config"}``: how targets were discovered, the model's UP targets (pod, address,
    version, scrape URL), the operator's targets, each rule's health and state, each
    query with its series count, the ALERTS series at the end, and the path of the
    Prometheus config. Prometheus is stopped at the end.
    """
    deadline = time.monotonic() + timeout
    workdir.mkdir(parents=True, exist_ok=True)
    mlmodel = _get(cluster, "mlmodel", model, "-n", namespace)
    name = monitoring_name(parse_model(mlmodel))
    version = str((mlmodel.get("status") or {}).get("activeVersion") or mlmodel["spec"]["version"])
    service_monitor = _get(cluster, "servicemonitor", name, "-n", namespace)
    prometheus_rule = _get(cluster, "prometheusrule", name, "-n", namespace)
    operator_monitor = json.loads(
        cluster.kubectl(
            "apply", "--dry-run=server", "-f", str(OPERATOR_SERVICE_MONITOR), "-o", "json"
        )
    )
    if cluster.pki is None:
        raise HarnessError("the cluster has no PKI: is it started?")
    tls = (cluster.pki.ca_cert, cluster.pki.admin_cert, cluster.pki.admin_key)
    model_job = _fast(scrape_config_for(service_monitor, cluster.server, *tls))
    operator_job = _fast(scrape_config_for(operator_monitor, cluster.server, *tls))
    port = service_monitor["spec"]["endpoints"][0]["port"]
    match_labels = service_monitor["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))

    kubernetes_sd = prometheus_has_kubernetes_sd(workdir)
    sd_files = {
        job["job_name"]: workdir / f"targets-{i}.json"
        for i, job in enumerate((model_job, operator_job))
    }
    jobs = [model_job, operator_job]
    if not kubernetes_sd:
        jobs = [with_file_discovery(job, sd_files[job["job_name"]]) for job in jobs]

    def discover() -> None:
        """The file_sd targets, from the apiserver, as Prometheus' endpoints role would."""
        if kubernetes_sd:
            return
        for job in (model_job, operator_job):
            groups = []
            for ns in job["kubernetes_sd_configs"][0]["namespaces"]["names"]:
                groups += endpoints_discovery(
                    _get(cluster, "endpoints", "-n", ns)["items"],
                    _get(cluster, "services", "-n", ns)["items"],
                    _get(cluster, "pods", "-n", ns)["items"],
                )
            _write_if_changed(sd_files[job["job_name"]], json.dumps(groups, indent=1))

    def tick() -> None:
        discover()
        send_traffic()

    rules_path = workdir / "rules.yaml"
    rules_path.write_text(
        yaml.safe_dump({"groups": prometheus_rule["spec"]["groups"]}, sort_keys=False, width=1000)
    )
    rule_count = sum(len(g["rules"]) for g in prometheus_rule["spec"]["groups"])
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "rule_files": [str(rules_path)],
        "scrape_configs": jobs,
    }
    queries = dashboard_queries(namespace, model, version) + rule_queries(prometheus_rule)

    def targets() -> tuple[dict[str, Any], list[str]]:
        active = _prometheus_api(prom, "/api/v1/targets?state=active")["activeTargets"]
        ours = [t for t in active if t["scrapePool"] == model_job["job_name"]]
        operator = [t for t in active if t["scrapePool"] == operator_job["job_name"]]
        pods = _get(cluster, "pods", "-n", namespace, "-l", f"{MODEL_LABEL}={model}")["items"]
        services = _get(cluster, "services", "-n", namespace, "-l", selector)["items"]
        ready: set[str] = set()
        for service in services:
            slices = _get(
                cluster, "endpointslices", "-n", namespace,
                "-l", f"kubernetes.io/service-name={service['metadata']['name']}",
            )["items"]  # fmt: skip
            ready |= ready_addresses(slices, port)
        names = {s["metadata"]["name"] for s in services}
        problems = target_problems(ours, pods, ready, names, namespace, port)
        if not services:
            problems.append(f"no Service in {namespace} matches the ServiceMonitor's {selector}")
        if not [t for t in operator if t["health"] == "up"]:
            problems.append(f"no UP target of the operator ({len(operator)} discovered)")
        summary = {
            "discovery": "kubernetes_sd" if kubernetes_sd else "file_sd (endpoints_discovery)",
            "targets": [_target_summary(t) for t in ours if t["health"] == "up"],
            "operator_targets": [_target_summary(t) for t in operator],
        }
        return summary, problems

    def rules() -> tuple[list[dict[str, Any]], list[str]]:
        groups = _prometheus_api(prom, "/api/v1/rules")["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        problems = [
            f"rule {r['name']}: health {r['health']} {r.get('lastError') or ''}".strip()
            for r in loaded
            if r["health"] != "ok"
        ]
        if len(loaded) != rule_count:
            problems.append(f"{len(loaded)} rules loaded, the PrometheusRule has {rule_count}")
        summary = [
            {"name": r["name"], "health": r["health"], "state": r.get("state")} for r in loaded
        ]
        return summary, problems

    def data() -> tuple[list[dict[str, Any]], list[str]]:
        results, problems = [], []
        for query in queries:
            series = prom.query(query.expr)
            values = [float(s["value"][1]) for s in series]
            results.append(
                {
                    "name": query.name,
                    "expr": query.expr,
                    "series": len(series),
                    "non_finite": sum(not math.isfinite(v) for v in values),
                }
            )
            if not series:
                problems.append(f"{query.name} returns no series: {query.expr}")
            elif query.label and not all(query.label in s["metric"] for s in series):
                problems.append(f"{query.name}: a series without the label {query.label}")
        return results, problems

    discover()  # the files exist before Prometheus reads its config
    prom = PrometheusServer(workdir, yaml.safe_dump(config, sort_keys=False, width=1000))
    prom.start()
    try:
        summary = _wait(
            "Prometheus scrapes the model's serving Pods", targets, deadline, tick, prom
        )
        summary["rules"] = _wait("the PrometheusRule's rules loaded", rules, deadline, tick, prom)
        summary["queries"] = _wait("every query returns data", data, deadline, tick, prom)
        summary["alerts"] = [s["metric"] for s in prom.query("ALERTS")]
        summary["config"] = str(workdir / "prometheus.yml")
        return summary
    finally:
        prom.stop()


def _target_summary(target: Mapping[str, Any]) -> dict[str, Any]:
    labels = target["labels"]
    return {
        "pod": labels.get("pod"),
        "address": target["discoveredLabels"].get("__address__"),
        "version": labels.get("version"),
        "health": target.get("health"),
        "scrape_url": target.get("scrapeUrl"),
    }


# ------------------------------------------------------------------------------ traffic


def inference_traffic(
    url: str, requests: int = 10, rows: int = 20, timeout: float = 5.0
) -> Callable[[], None]:
    """A ``send_traffic`` for :func:`check_prometheus_scrapes_real_pods`: each call sends
    ``requests`` V2 inference requests of ``rows`` rows drawn from the churn model's own
    training data (``example_models.churn_data``) to ``url`` (the model's infer URL
    through its Service), each on a new connection so kube-proxy spreads them over the
    Pods. A request answered with an HTTP error status fails the call."""
    import numpy as np

    from mlmodel_operator.example_models import churn_data

    x, _ = churn_data()
    rng = np.random.default_rng(0)

    def send() -> None:
        for _ in range(requests):
            batch = x[rng.integers(0, len(x), size=rows)]
            body = {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(batch.shape),
                        "datatype": "FP64",
                        "data": batch.reshape(-1).tolist(),
                    }
                ]
            }
            request = urllib.request.Request(
                url,
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    resp.read()
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"POST {url}: {exc.code} {exc.read()[:500]!r}") from None

    return send
