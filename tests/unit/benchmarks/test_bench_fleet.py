"""The fleet benchmark's pure parts: curves, rate windows, overlaps, settling, the
floor's objects and the rollout predicate (no servers)."""

from __future__ import annotations

from typing import Any

from benchmarks.operator import bench_fleet, report


def test_count_over_time_is_a_step_curve_from_the_start() -> None:
    assert report.count_over_time([12.0, 10.5, 11.0], 10.0) == [(0.5, 1), (1.0, 2), (2.0, 3)]
    assert report.count_over_time([], 0.0) == []


def test_time_to_fraction_of_a_total() -> None:
    times = [1.0, 2.0, 3.0, 4.0]
    assert report.time_to_fraction(times, 4, 0.5) == 2.0
    assert report.time_to_fraction(times, 4, 1.0) == 4.0
    assert report.time_to_fraction(times, 10, 0.5) is None  # only 4 of the 5 needed
    assert report.time_to_fraction([], 0, 0.5) is None


def test_max_in_window_counts_events_within_any_second() -> None:
    assert report.max_in_window([0.0, 0.1, 0.2, 1.5, 1.6], 1.0) == 3
    assert report.max_in_window([0.0, 1.0, 2.0], 1.0) == 1  # the window is half-open
    assert report.max_in_window([], 1.0) == 0


def test_max_overlap_of_rollouts() -> None:
    assert report.max_overlap([(0, 2), (1, 3), (2, 4)]) == 2  # back to back is not overlap
    assert report.max_overlap([(0, 10), (1, 2), (1.5, float("inf"))]) == 3
    assert report.max_overlap([(1, 1)]) == 0


def test_rate_series_bins_events_and_leaves_out_the_rest() -> None:
    assert report.rate_series([0.1, 0.2, 1.5, 2.9, 3.0, -1], 0.0, 3.0) == [2, 1, 1]
    assert report.rate_series([4.4], 0.0, 4.5, width=2.0) == [0, 0, 1]


def test_settled_after_the_last_busy_window() -> None:
    series = [50, 40, 3, 0, 1, 0, 0, 0, 1, 0]
    assert report.settled_after(series, 1.0, window=3) == 3
    assert report.settled_after([0, 0, 0, 0, 9], 1.0, window=3) is None  # busy at the end
    assert report.settled_after([0, 0], 1.0, window=3) is None
    assert report.settled_after([0, 0, 0], 1.0, window=3) == 0


def _deployment(image: str, **status: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2, "labels": {"app.kubernetes.io/managed-by": "x"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/managed-by": "x"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/managed-by": "x"}},
                "spec": {"containers": [{"name": "server", "image": image}]},
            },
        },
        "status": status,
    }


def test_rolled_out_needs_the_image_the_generation_and_no_old_pods() -> None:
    new = bench_fleet.IMAGE_AFTER
    done = {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1, "replicas": 1}
    assert bench_fleet.rolled_out(_deployment(new, **done), new)
    assert not bench_fleet.rolled_out(_deployment(bench_fleet.IMAGE_BEFORE, **done), new)
    assert not bench_fleet.rolled_out(_deployment(new, **{**done, "observedGeneration": 1}), new)
    assert not bench_fleet.rolled_out(_deployment(new, **{**done, "replicas": 2}), new)
    assert not bench_fleet.rolled_out(_deployment(new, **{**done, "updatedReplicas": 0}), new)


def test_the_floor_objects_do_not_carry_the_operators_label() -> None:
    body = bench_fleet.with_label(_deployment("i"), bench_fleet.MANAGED_BY, "floor")
    assert body["metadata"]["labels"][bench_fleet.MANAGED_BY] == "floor"
    assert body["spec"]["selector"]["matchLabels"][bench_fleet.MANAGED_BY] == "floor"
    assert body["spec"]["template"]["metadata"]["labels"][bench_fleet.MANAGED_BY] == "floor"
    service = bench_fleet.service_template(
        {
            "metadata": {"name": "m", "labels": {"ml.lifecycle.io/model": "m"}, "uid": "u"},
            "spec": {
                "clusterIP": "10.96.0.9",
                "clusterIPs": ["10.96.0.9"],
                "selector": {"ml.lifecycle.io/model": "m", bench_fleet.MANAGED_BY: "x"},
                "ports": [{"port": 80}],
            },
        }
    )
    floor = bench_fleet.floor_service(service, "f-001")
    assert floor["metadata"] == {
        "name": "f-001",
        "labels": {"ml.lifecycle.io/model": "f-001"},
        "annotations": {},
    }
    assert floor["spec"] == {
        "selector": {
            "ml.lifecycle.io/model": "f-001",
            bench_fleet.MANAGED_BY: "mlmodel-bench-floor",
        },
        "ports": [{"port": 80}],
    }


def test_burst_only_runs_no_readme_update_and_reports_the_deployments() -> None:
    opts = bench_fleet.parse_args(["--burst-only", "--update-readme"])
    assert opts.burst_only and not opts.update_readme  # the README's run is the full one
    results = {
        "date": "2026-12-03 05:00 UTC",
        "command": "python benchmarks/run.py fleet --burst-only",
        "git": {"commit": "2533ec6aaaa"},
        "burst": {
            "models": 1000,
            "namespaces": 10,
            "concurrency": 8,
            "all_posted_s": 17.3,
            "all_deployments_s": 20.8,
            "apply_to_deployment": {"p50_ms": 2937.0, "p90_ms": 3857.0, "p99_ms": 4268.0},
        },
        "windows": [{"cpu_seconds": {"operator": 11.2}, "operator_requests": 6006}],
    }
    text = bench_fleet.render_burst_only(results)
    assert "(at 2533ec6)" in text
    assert "| POST -> Deployment p50 / p90 / p99 | 2937 ms / 3857 ms / 4268 ms |" in text
    assert "| every model had its Deployment after | 20.8 s |" in text
    assert "| operator CPU, POSTs to the last Deployment | 11.2 s |" in text
