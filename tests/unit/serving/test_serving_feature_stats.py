"""Input feature statistics on /metrics: right, and never broken by the values a client
sends (negative numbers, one huge value, missing values)."""

from __future__ import annotations

import math

import numpy as np
from prometheus_client import CollectorRegistry

from mlmodel_serving.metrics import FeatureStats


def scrape(stats: FeatureStats) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(stats)
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            out[(sample.name, sample.labels.get("feature", ""))] = sample.value
    return out


def test_every_counter_only_goes_up_whatever_the_inputs() -> None:
    stats = FeatureStats("m")
    rng = np.random.default_rng(0)
    seen: dict[tuple[str, str], float] = {}
    for batch in (rng.normal(-50, 5, (30, 3)), np.array([[1e308, -1e308, 2.0]]),
                  rng.normal(-80, 5, (30, 3))):  # fmt: skip
        stats.observe(batch)
        for key, value in scrape(stats).items():
            if key[0].endswith("_total"):
                assert value >= seen.get(key, 0.0), key
                seen[key] = value
    assert seen[("mlmodel_input_rows_total", "")] == 61


def test_mean_and_stddev_over_the_recent_rows() -> None:
    stats = FeatureStats("m")
    rng = np.random.default_rng(1)
    x = np.column_stack((rng.normal(1e6, 2.0, 2500), rng.normal(-3.0, 0.5, 2500)))
    x[::10, 1] = np.nan  # missing values are not counted
    for start in range(0, 2500, 7):
        stats.observe(x[start : start + 7])
    got = scrape(stats)
    assert got[("mlmodel_input_feature_window_rows", "")] == 2500
    assert math.isclose(got[("mlmodel_input_feature_mean", "0")], x[:, 0].mean(), rel_tol=1e-12)
    assert math.isclose(got[("mlmodel_input_feature_stddev", "0")], x[:, 0].std(), rel_tol=1e-9)
    assert math.isclose(
        got[("mlmodel_input_feature_mean", "1")], np.nanmean(x[:, 1]), rel_tol=1e-12
    )
    assert math.isclose(
        got[("mlmodel_input_feature_stddev", "1")], np.nanstd(x[:, 1]), rel_tol=1e-9
    )


def test_a_huge_value_leaves_the_window_with_its_block() -> None:
    stats = FeatureStats("m")
    stats.observe(np.array([[1e308, 1.0]]))
    stats.observe(np.full((FeatureStats.BLOCK_ROWS - 1, 2), 1.0))
    assert not math.isfinite(scrape(stats)[("mlmodel_input_feature_stddev", "0")])
    for _ in range(FeatureStats.BLOCKS):
        stats.observe(np.full((FeatureStats.BLOCK_ROWS, 2), 2.0))
    got = scrape(stats)
    assert got[("mlmodel_input_feature_mean", "0")] == 2.0
    assert got[("mlmodel_input_feature_stddev", "0")] == 0.0
    assert got[("mlmodel_input_feature_window_rows", "")] == FeatureStats.BLOCKS * 1000
