"""tests/e2e/prom_checks.py, pure parts: the ServiceMonitor the operator writes turned into
a Prometheus scrape config as the Prometheus operator does it, the alert signals and the
dashboard queries the real-node test runs, and the target check. No server.

The relabelling is also *applied* here, by a small re-implementation of Prometheus'
replace/keep/drop, to the meta labels Prometheus' ``endpoints`` discovery gives a target
of the Service and Pod the operator's own builders make.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from model_specs import make_model

from mlmodel_operator.desired import VERSION_LABEL, build_deployment, build_service
from mlmodel_operator.monitoring import (
    VERSION_POD_LABEL,
    build_alerts,
    build_prometheus_rule,
    build_service_monitor,
    dashboard_panels,
    variable_selectors,
)
from mlmodel_operator.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "e2e"))
from prom_checks import (
    OPERATOR_SERVICE_MONITOR,
    alert_signal,
    dashboard_queries,
    endpoints_discovery,
    ready_addresses,
    rule_queries,
    sanitize_label_name,
    scrape_config_for,
    target_problems,
    with_file_discovery,
)

SETTINGS = Settings()
MODEL = make_model(
    monitoring={
        "slo": {"p99LatencyMs": 100, "errorRatio": 0.01},
        "drift": {"baselineUri": "s3://models/churn/3/baseline.json", "psiThreshold": 0.2},
    }
)
API = "https://10.245.0.1:6443"
PKI = Path("/pki")
TLS = {"ca_file": "/pki/ca.crt", "cert_file": "/pki/admin.crt", "key_file": "/pki/admin.key"}


def config_for(service_monitor: dict[str, Any], role: str = "endpoints") -> dict[str, Any]:
    return scrape_config_for(
        service_monitor, API, PKI / "ca.crt", PKI / "admin.crt", PKI / "admin.key", role=role
    )


def service_monitor() -> dict[str, Any]:
    return build_service_monitor(MODEL, SETTINGS)


# --------------------------------------------------------------------------- the config


def test_the_model_service_monitor_becomes_kubernetes_discovery_with_its_selector() -> None:
    config = config_for(service_monitor())
    assert config["job_name"] == "serviceMonitor/team-a/churn/0"
    assert config["kubernetes_sd_configs"] == [
        {
            "role": "endpoints",
            "api_server": API,
            "tls_config": TLS,
            "namespaces": {"names": ["team-a"]},
        }
    ]
    assert (config["scheme"], config["metrics_path"]) == ("http", "/metrics")
    assert (config["scrape_interval"], config["scrape_timeout"]) == ("15s", "10s")
    assert config["honor_labels"] is False
    keep = [r for r in config["relabel_configs"] if r["action"] == "keep"]
    assert keep == [
        {
            "action": "keep",
            "source_labels": [
                "__meta_kubernetes_service_label_app_kubernetes_io_instance",
                "__meta_kubernetes_service_labelpresent_app_kubernetes_io_instance",
            ],
            "regex": "(churn);true",
        },
        {
            "action": "keep",
            "source_labels": [
                "__meta_kubernetes_service_label_ml_lifecycle_io_model",
                "__meta_kubernetes_service_labelpresent_ml_lifecycle_io_model",
            ],
            "regex": "(churn);true",
        },
        # only the endpoint port the ServiceMonitor names
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_endpoint_port_name"],
            "regex": "http",
        },
    ]


def test_the_target_labels_and_the_operators_relabeling() -> None:
    rules = config_for(service_monitor())["relabel_configs"]
    targets = {r["target_label"]: r for r in rules if "target_label" in r}
    assert {k: r.get("source_labels") for k, r in targets.items()} == {
        "namespace": ["__meta_kubernetes_namespace"],
        "service": ["__meta_kubernetes_service_name"],
        "pod": ["__meta_kubernetes_pod_name"],
        "container": ["__meta_kubernetes_pod_container_name"],
        "job": ["__meta_kubernetes_service_name"],
        "endpoint": None,
        "version": [VERSION_POD_LABEL],
    }
    assert targets["endpoint"]["replacement"] == "http"
    # the endpoint's own relabeling comes last, translated to Prometheus' field names
    assert rules[-1] == {
        "action": "replace",
        "source_labels": ["__meta_kubernetes_pod_label_ml_lifecycle_io_version"],
        "target_label": "version",
    }


def test_the_version_relabeling_reads_the_label_the_pods_really_carry() -> None:
    pod_labels = build_deployment(MODEL, SETTINGS)["spec"]["template"]["metadata"]["labels"]
    assert pod_labels[VERSION_LABEL] == "3"
    meta_label = f"__meta_kubernetes_pod_label_{sanitize_label_name(VERSION_LABEL)}"
    assert meta_label == VERSION_POD_LABEL


def test_the_endpointslice_role_filters_on_its_own_port_label() -> None:
    config = config_for(service_monitor(), role="endpointslice")
    assert config["kubernetes_sd_configs"][0]["role"] == "endpointslice"
    ports = [r for r in config["relabel_configs"] if "port_name" in str(r.get("source_labels"))]
    assert ports == [
        {
            "action": "keep",
            "source_labels": ["__meta_kubernetes_endpointslice_port_name"],
            "regex": "http",
        }
    ]
    with pytest.raises(ValueError, match="role 'pod'"):
        config_for(service_monitor(), role="pod")


def test_the_operators_shipped_service_monitor() -> None:
    """No namespaceSelector: the ServiceMonitor's own namespace, as the Prometheus operator."""
    config = config_for(yaml.safe_load(OPERATOR_SERVICE_MONITOR.read_text()))
    assert config["job_name"] == "serviceMonitor/mlmodel-system/mlmodel-operator/0"
    assert config["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["mlmodel-system"]}
    assert config["scrape_interval"] == "30s" and "scrape_timeout" not in config
    keep = [r["regex"] for r in config["relabel_configs"] if r["action"] == "keep"]
    assert keep == ["(operator);true", "(mlmodel-operator);true", "metrics"]


def test_label_values_are_matched_literally_and_actions_lowercased() -> None:
    monitor = service_monitor()
    monitor["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/version": "1.2"}
    endpoint = monitor["spec"]["endpoints"][0]
    endpoint["relabelings"] = [
        {"action": "Replace", "sourceLabels": ["a", "b"], "separator": "-", "regex": "(.*)",
         "replacement": "$1", "targetLabel": "c"},
        {"action": "HashMod", "sourceLabels": ["__address__"], "modulus": 2,
         "targetLabel": "__tmp_hash"},
    ]  # fmt: skip
    rules = config_for(monitor)["relabel_configs"]
    assert rules[0]["regex"] == r"(1\.2);true"
    assert rules[-2:] == [
        {"action": "replace", "source_labels": ["a", "b"], "separator": "-", "regex": "(.*)",
         "replacement": "$1", "target_label": "c"},
        {"action": "hashmod", "source_labels": ["__address__"], "modulus": 2,
         "target_label": "__tmp_hash"},
    ]  # fmt: skip


def test_fields_left_at_their_defaults_are_accepted() -> None:
    monitor = service_monitor()
    monitor["spec"]["selector"]["matchExpressions"] = []
    monitor["spec"]["namespaceSelector"]["any"] = False
    monitor["spec"]["endpoints"][0].update(honorLabels=False, filterRunning=True, scheme="http")
    assert config_for(monitor) == config_for(service_monitor())


def test_filter_running_false_keeps_finished_pods() -> None:
    monitor = service_monitor()
    monitor["spec"]["endpoints"][0]["filterRunning"] = False
    rules = config_for(monitor)["relabel_configs"]
    assert not [r for r in rules if r["action"] == "drop"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda s: s["selector"].update(
                matchExpressions=[{"key": "tier", "operator": "In", "values": ["a"]}]
            ),
            r"spec\.selector\.matchExpressions",
        ),
        (
            lambda s: s["endpoints"][0].update(bearerTokenSecret={"name": "t", "key": "token"}),
            r"spec\.endpoints\[0\]\.bearerTokenSecret",
        ),
        (
            lambda s: s["endpoints"][0].update(bearerTokenFile="/var/run/token"),
            r"spec\.endpoints\[0\]\.bearerTokenFile",
        ),
        (
            lambda s: s["endpoints"][0].update(tlsConfig={"insecureSkipVerify": True}),
            r"spec\.endpoints\[0\]\.tlsConfig",
        ),
        (lambda s: s["endpoints"][0].update(scheme="https"), r"spec\.endpoints\[0\]\.scheme"),
        (
            lambda s: s["endpoints"][0].update(honorLabels=True),
            r"spec\.endpoints\[0\]\.honorLabels",
        ),
        (
            lambda s: s["endpoints"][0].update(metricRelabelings=[{"action": "drop"}]),
            r"spec\.endpoints\[0\]\.metricRelabelings",
        ),
        (
            lambda s: s["endpoints"][0].update(port=None, targetPort=8080),
            r"spec\.endpoints\[0\]\.targetPort",
        ),
        (lambda s: s["endpoints"][0].pop("port"), r"spec\.endpoints\[0\]\.port"),
        (
            lambda s: s["endpoints"][0]["relabelings"][0].update(regexp="x"),
            r"spec\.endpoints\[0\]\.relabelings\[0\]\.regexp",
        ),
        (lambda s: s["endpoints"].append({"port": "grpc"}), r"spec\.endpoints"),
        (lambda s: s.update(endpoints=[]), r"spec\.endpoints"),
        (lambda s: s["namespaceSelector"].update(any=True), r"spec\.namespaceSelector\.any"),
        (lambda s: s.update(jobLabel="app"), r"spec\.jobLabel"),
        (lambda s: s.update(podTargetLabels=["team"]), r"spec\.podTargetLabels"),
        (lambda s: s.update(attachMetadata={"node": True}), r"spec\.attachMetadata"),
    ],
)
def test_a_shape_it_does_not_handle_is_refused_by_name(change: Any, field: str) -> None:
    monitor = service_monitor()
    change(monitor["spec"])
    with pytest.raises(ValueError, match=field):
        config_for(monitor)


def test_not_a_service_monitor_is_refused() -> None:
    rule = build_prometheus_rule(MODEL, SETTINGS)
    with pytest.raises(ValueError, match="kind"):
        config_for(rule)


# ------------------------------------------------- the config applied, as Prometheus would


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' replace/keep/drop (anchored regex, default ``(.*)``, ``$1``, ``;``);
    None when the target is dropped; the labels without ``__`` ones, as Prometheus keeps."""
    out = dict(labels)
    for rule in rules:
        action = rule.get("action", "replace")
        value = rule.get("separator", ";").join(
            out.get(s, "") for s in rule.get("source_labels", [])
        )
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        if (action == "keep" and match is None) or (action == "drop" and match is not None):
            return None
        if action == "replace" and match is not None:
            template = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", rule.get("replacement", "$1"))
            new = match.expand(template)
            if new:
                out[rule["target_label"]] = new
            else:
                out.pop(rule["target_label"], None)
        assert action in ("replace", "keep", "drop"), action
    return {k: v for k, v in out.items() if not k.startswith("__")}


def discovered(
    service: dict[str, Any],
    pod_labels: dict[str, str],
    port: str = "http",
    phase: str = "Running",
    job: str = "serviceMonitor/team-a/churn/0",
) -> dict[str, str]:
    """The labels Prometheus' endpoints discovery gives the target of one Pod address."""
    labels = {
        "job": job,
        "__address__": "10.245.0.7:8080",
        "__meta_kubernetes_namespace": service["metadata"]["namespace"],
        "__meta_kubernetes_service_name": service["metadata"]["name"],
        "__meta_kubernetes_endpoint_port_name": port,
        "__meta_kubernetes_endpoint_ready": "true",
        "__meta_kubernetes_pod_name": "churn-v3-7d9f8-abcde",
        "__meta_kubernetes_pod_container_name": "server",
        "__meta_kubernetes_pod_phase": phase,
    }
    for kind, source in (("service", service["metadata"]["labels"]), ("pod", pod_labels)):
        for key, value in source.items():
            labels[f"__meta_kubernetes_{kind}_label_{sanitize_label_name(key)}"] = value
            labels[f"__meta_kubernetes_{kind}_labelpresent_{sanitize_label_name(key)}"] = "true"
    return labels


SERVICE = build_service(MODEL, "3", SETTINGS)
POD_LABELS = build_deployment(MODEL, SETTINGS)["spec"]["template"]["metadata"]["labels"]


def test_a_serving_pod_of_the_models_service_is_scraped_with_the_target_labels() -> None:
    rules = config_for(service_monitor())["relabel_configs"]
    assert relabel(discovered(SERVICE, POD_LABELS), rules) == {
        "job": "churn",
        "namespace": "team-a",
        "service": "churn",
        "pod": "churn-v3-7d9f8-abcde",
        "container": "server",
        "endpoint": "http",
        "version": "3",
    }


def test_other_services_ports_and_finished_pods_are_not_scraped() -> None:
    rules = config_for(service_monitor())["relabel_configs"]
    other_model = copy.deepcopy(SERVICE)
    other_model["metadata"]["labels"]["ml.lifecycle.io/model"] = "fraud"
    unlabelled = copy.deepcopy(SERVICE)
    del unlabelled["metadata"]["labels"]["app.kubernetes.io/instance"]
    assert relabel(discovered(other_model, POD_LABELS), rules) is None
    assert relabel(discovered(unlabelled, POD_LABELS), rules) is None
    assert relabel(discovered(SERVICE, POD_LABELS, port="grpc"), rules) is None
    assert relabel(discovered(SERVICE, POD_LABELS, phase="Succeeded"), rules) is None


# ------------------------------------------------ the discovery stand-in (Debian's build)


def serving_pod(ip: str = "10.245.0.7", ready: str = "True") -> dict[str, Any]:
    template = build_deployment(MODEL, SETTINGS)["spec"]["template"]
    return {
        "metadata": {
            "name": "churn-v3-7d9f8-abcde",
            "namespace": "team-a",
            "uid": "pod-uid",
            "labels": template["metadata"]["labels"],
            "annotations": template["metadata"].get("annotations", {}),
            "ownerReferences": [
                {"kind": "ReplicaSet", "name": "churn-v3-7d9f8", "controller": True}
            ],
        },
        "spec": {**template["spec"], "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "hostIP": "10.245.0.1",
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def endpoints_object(
    name: str = "churn", ready: tuple[str, ...] = ("10.245.0.7",), not_ready: tuple[str, ...] = ()
) -> dict[str, Any]:
    def address(ip: str) -> dict[str, Any]:
        ref = {"kind": "Pod", "name": "churn-v3-7d9f8-abcde", "namespace": "team-a"}
        return {"ip": ip, "nodeName": "node-1", "targetRef": ref}

    subset: dict[str, Any] = {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    if ready:
        subset["addresses"] = [address(ip) for ip in ready]
    if not_ready:
        subset["notReadyAddresses"] = [address(ip) for ip in not_ready]
    return {"metadata": {"name": name, "namespace": "team-a"}, "subsets": [subset]}


def test_the_discovery_gives_the_meta_labels_of_prometheus_endpoints_role() -> None:
    (group,) = endpoints_discovery([endpoints_object()], [SERVICE], [serving_pod()])
    assert group["targets"] == ["10.245.0.7:8080"]
    labels = group["labels"]
    # everything the hand-written discovery above has, with the same values
    expected = discovered(SERVICE, POD_LABELS)
    del expected["job"], expected["__address__"]
    assert {k: labels.get(k) for k in expected} == expected
    assert {k: v for k, v in labels.items() if k not in expected} == {
        "__meta_kubernetes_endpoints_name": "churn",
        "__meta_kubernetes_endpoint_port_protocol": "TCP",
        "__meta_kubernetes_endpoint_node_name": "node-1",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": "churn-v3-7d9f8-abcde",
        "__meta_kubernetes_pod_ip": "10.245.0.7",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_node_name": "node-1",
        "__meta_kubernetes_pod_host_ip": "10.245.0.1",
        "__meta_kubernetes_pod_uid": "pod-uid",
        "__meta_kubernetes_pod_controller_kind": "ReplicaSet",
        "__meta_kubernetes_pod_controller_name": "churn-v3-7d9f8",
        "__meta_kubernetes_pod_container_image": SETTINGS.serving_image,
        "__meta_kubernetes_pod_container_port_name": "http",
        "__meta_kubernetes_pod_container_port_number": "8080",
        "__meta_kubernetes_pod_container_port_protocol": "TCP",
        **{
            f"__meta_kubernetes_pod_annotation{present}_{sanitize_label_name(k)}": (
                "true" if present else v
            )
            for k, v in build_deployment(MODEL, SETTINGS)["spec"]["template"]["metadata"]
            .get("annotations", {})
            .items()
            for present in ("", "present")
        },
    }


def test_discovered_targets_through_the_scrape_config() -> None:
    """The stand-in's targets, relabelled as Prometheus does: only the model's Service."""
    other = copy.deepcopy(SERVICE)
    other["metadata"]["name"] = "fraud"
    other["metadata"]["labels"]["ml.lifecycle.io/model"] = "fraud"
    groups = endpoints_discovery(
        [endpoints_object(), endpoints_object("fraud", ("10.245.0.9",))],
        [SERVICE, other],
        [serving_pod()],
    )
    rules = config_for(service_monitor())["relabel_configs"]
    kept = [relabel(g["labels"], rules) for g in groups]
    assert kept == [
        {
            "namespace": "team-a",
            "service": "churn",
            "pod": "churn-v3-7d9f8-abcde",
            "container": "server",
            "endpoint": "http",
            "job": "churn",
            "version": "3",
        },
        None,
    ]


def test_not_ready_addresses_are_targets_too_and_ipv6_is_bracketed() -> None:
    groups = endpoints_discovery(
        [endpoints_object(ready=(), not_ready=("fd00::7",))],
        [],
        [serving_pod(ready="False")],
    )
    (group,) = groups
    assert group["targets"] == ["[fd00::7]:8080"]
    assert group["labels"]["__meta_kubernetes_endpoint_ready"] == "false"
    assert group["labels"]["__meta_kubernetes_pod_ready"] == "false"
    assert "__meta_kubernetes_service_name" not in group["labels"]  # no such Service


def test_with_file_discovery_keeps_everything_but_the_discovery() -> None:
    job = config_for(service_monitor())
    swapped = with_file_discovery(job, Path("/tmp/targets.json"))
    assert swapped["file_sd_configs"] == [
        {"files": ["/tmp/targets.json"], "refresh_interval": "1s"}
    ]
    assert "kubernetes_sd_configs" not in swapped
    assert swapped.keys() - {"file_sd_configs"} == job.keys() - {"kubernetes_sd_configs"}
    assert all(swapped[k] == job[k] for k in job if k != "kubernetes_sd_configs")
    with pytest.raises(ValueError, match="endpoints role only"):
        with_file_discovery(config_for(service_monitor(), role="endpointslice"), Path("x"))


# ------------------------------------------------------------------------------ queries


def test_the_signal_of_every_alert_from_its_rule_expression() -> None:
    alerts = build_alerts(MODEL)
    assert len(alerts) == 6
    for alert in alerts:
        assert alert_signal(alert.expr) == alert.signal
    queries = rule_queries(build_prometheus_rule(MODEL, SETTINGS))
    assert [(q.name, q.expr) for q in queries] == [
        (f"alert {a.name} signal", a.signal) for a in alerts
    ]


@pytest.mark.parametrize("expr", ["up", "sum(rate(x[5m]))", "x > y"])
def test_an_expression_without_a_threshold_is_refused(expr: str) -> None:
    with pytest.raises(ValueError, match="alert expression"):
        alert_signal(expr)


def test_dashboard_queries_cover_every_target_and_variable() -> None:
    queries = dashboard_queries("e2e-models", "churn", "2")
    targets = sum(len(p["targets"]) for p in dashboard_panels())
    assert len(queries) == targets + len(variable_selectors())
    assert len({q.name for q in queries}) == len(queries)
    for q in queries:
        assert "$" not in q.expr, q
    assert queries[0].name == "panel 'Request rate' A"
    assert 'namespace="e2e-models", model="churn", version=~"2"' in queries[0].expr
    assert "[30s]" in queries[0].expr
    assert [(q.name, q.expr, q.label) for q in queries[-2:]] == [
        ("variable $model", 'mlmodel_model_info{namespace="e2e-models"}', "model"),
        (
            "variable $version",
            'mlmodel_model_info{namespace="e2e-models", model="churn"}',
            "version",
        ),
    ]


# ------------------------------------------------------------------------------ targets


def endpoint_slice(port: str, *endpoints: tuple[str, bool | None]) -> dict[str, Any]:
    return {
        "ports": [{"name": port, "port": 8080}],
        "endpoints": [
            {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}
            for ip, ready in endpoints
        ],
    }


def test_ready_addresses() -> None:
    slices = [
        endpoint_slice("http", ("10.245.0.7", True), ("10.245.0.8", None), ("10.245.0.9", False)),
        endpoint_slice("grpc", ("10.245.0.10", True)),
    ]
    assert ready_addresses(slices, "http") == {"10.245.0.7", "10.245.0.8"}


def pod(name: str, ip: str, version: str = "3", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {VERSION_LABEL: version}},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def target(pod_name: str, address: str, health: str = "up", version: str = "3") -> dict[str, Any]:
    return {
        "health": health,
        "lastError": "" if health == "up" else "connection refused",
        "discoveredLabels": {"__address__": address},
        "labels": {
            "pod": pod_name,
            "namespace": "e2e-models",
            "service": "churn",
            "job": "churn",
            "endpoint": "http",
            "version": version,
        },
    }


PODS = [pod("churn-v3-a", "10.245.0.7"), pod("churn-v3-b", "10.245.0.8")]
READY = {"10.245.0.7", "10.245.0.8"}


def problems(targets: list[dict[str, Any]], pods: list[dict[str, Any]] = PODS) -> list[str]:
    return target_problems(targets, pods, READY, {"churn"}, "e2e-models", "http")


def test_targets_that_are_exactly_the_serving_pods() -> None:
    good = [target("churn-v3-a", "10.245.0.7:8080"), target("churn-v3-b", "10.245.0.8:8080")]
    assert problems(good) == []
    # a target that is not UP, for an address that is not a ready endpoint: no problem
    assert problems([*good, target("churn-v3-c", "10.245.0.9:8080", health="down")]) == []


def test_target_problems_name_what_is_wrong() -> None:
    (one,) = problems([target("churn-v3-a", "10.245.0.7:8080")])
    assert "1 UP targets" in one and "2 ready endpoints" in one
    wrong_ip = problems(
        [target("churn-v3-a", "10.245.0.8:8080"), target("churn-v3-b", "10.245.0.7:8080")]
    )
    assert len(wrong_ip) == 2 and "the Pod's IP is 10.245.0.7" in wrong_ip[0]
    unknown = problems(
        [target("ghost", "10.245.0.7:8080"), target("churn-v3-b", "10.245.0.8:8080")]
    )
    assert unknown == ["UP target 10.245.0.7:8080 names pod 'ghost': no such Pod"]
    old = problems(
        [
            target("churn-v3-a", "10.245.0.7:8080", version="2"),
            target("churn-v3-b", "10.245.0.8:8080"),
        ]
    )
    assert old == ["UP target churn-v3-a: label version='2', want '3'"]
    not_ready = problems(
        [target("churn-v3-a", "10.245.0.7:8080"), target("churn-v3-b", "10.245.0.8:8080")],
        [PODS[0], pod("churn-v3-b", "10.245.0.8", ready=False)],
    )
    assert not_ready == ["UP target 10.245.0.8:8080 is Pod churn-v3-b, which is not serving"]
    down = problems(
        [target("churn-v3-a", "10.245.0.7:8080"), target("churn-v3-b", "10.245.0.8:8080", "down")]
    )
    assert len(down) == 1 and "churn-v3-b at 10.245.0.8:8080 is down: connection refused" in down[0]
