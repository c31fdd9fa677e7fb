"""manifests/monitoring/ holds exactly what the builders generate."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from mlmodel_operator.monitoring import (
    build_dashboard,
    build_prometheus_rule,
    build_rule_groups,
    monitoring_files,
)
from mlmodel_operator.settings import Settings
from mlmodel_operator.spec import parse_model

ROOT = Path(__file__).resolve().parents[3]
MONITORING = ROOT / "manifests" / "monitoring"


def example() -> dict[str, object]:
    body = yaml.safe_load((ROOT / "manifests" / "examples" / "churn-v1.yaml").read_text())
    body["metadata"].setdefault("uid", "example")
    return dict(body)


def test_generated_files_are_current() -> None:
    for name, text in monitoring_files(parse_model(example())).items():
        assert (MONITORING / name).read_text() == text, (
            f"manifests/monitoring/{name} is out of date: run hack/gen-monitoring.py"
        )


def test_the_reference_rules_are_the_operators_rules() -> None:
    model = parse_model(example())
    shipped = yaml.safe_load((MONITORING / "example-prometheusrule.yaml").read_text())
    built = build_prometheus_rule(model, Settings())
    del built["metadata"]["ownerReferences"]
    assert shipped == built
    plain = yaml.safe_load((MONITORING / "example.rules.yaml").read_text())
    assert plain == {"groups": build_rule_groups(model)}


def test_dashboard_json_is_the_built_dashboard() -> None:
    assert json.loads((MONITORING / "dashboard.json").read_text()) == build_dashboard()
