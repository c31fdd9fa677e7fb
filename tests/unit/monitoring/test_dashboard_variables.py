"""monitoring: the dashboard's queries with Grafana's variables filled in, as Grafana would."""

from __future__ import annotations

import pytest

from mlmodel_operator.monitoring import (
    dashboard_panels,
    decision_log_panels,
    expand_variables,
    variable_selectors,
)

VALUES = {"namespace": "team-a", "model": "churn", "version": "3", "__rate_interval": "30s"}


def test_expand_variables_fills_both_spellings() -> None:
    query = 'rate(x{namespace="$namespace", model="${model}"}[$__rate_interval])'
    assert expand_variables(query, VALUES) == 'rate(x{namespace="team-a", model="churn"}[30s])'


def test_expand_variables_does_not_confuse_a_prefix() -> None:
    # $model must not be read as the start of $models, nor the other way round
    assert expand_variables("$models $model", {"model": "a", "models": "b"}) == "b a"


def test_a_variable_without_a_value_is_named() -> None:
    with pytest.raises(ValueError, match=r"\$version"):
        expand_variables('x{version=~"$version"}', {"namespace": "team-a"})


def test_every_panel_query_expands_with_the_dashboard_variables() -> None:
    for panel in dashboard_panels() + decision_log_panels():
        for target in panel.get("targets", []):  # a row has none
            assert "$" not in expand_variables(target["expr"], VALUES), panel["title"]


def test_variable_selectors() -> None:
    assert variable_selectors() == [
        ("namespace", "namespace", "mlmodel_model_info"),
        ("model", "model", 'mlmodel_model_info{namespace="$namespace"}'),
        ("version", "version", 'mlmodel_model_info{namespace="$namespace", model="$model"}'),
    ]
