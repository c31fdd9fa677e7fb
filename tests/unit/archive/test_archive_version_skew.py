"""Recorded library versions against the running ones: what blocks and what is reported."""

from __future__ import annotations

from typing import Any

from mlmodel_operator.manifest import MANIFEST_FORMAT, ManifestView
from mlmodel_operator.replay import compare_versions

RUNNING = {"python": "3.11.7", "scikit-learn": "1.9.1", "joblib": "1.6.0", "numpy": "2.4.6"}


def view(trained: str | None, **release: Any) -> ManifestView:
    rel = {"python": "3.11.7", "scikit-learn": "1.9.1", "joblib": "1.6.0", "numpy": "2.4.6"}
    rel.update(release)
    return ManifestView.parse(
        {
            "format": MANIFEST_FORMAT, "model": "m", "namespace": "n", "version": "1",
            "sha256": "a" * 64, "size": 1, "artifactUri": "s3://b/k",
            "libraries": {"trainedWith": {"scikit-learn": trained}, "servingRelease": rel},
        },
        "test",
    )  # fmt: skip


def test_same_versions_no_difference() -> None:
    assert compare_versions(view("1.9.1"), RUNNING).differences == ()


def test_patch_difference_is_reported_not_blocking() -> None:
    report = compare_versions(view("1.9.0"), RUNNING)
    assert [d.library for d in report.differences] == ["scikit-learn"]
    assert report.blocking == ()
    assert "scikit-learn 1.9.0 (pickled with) vs 1.9.1 here" in report.describe()


def test_minor_difference_blocks_and_names_both_versions() -> None:
    report = compare_versions(view("1.8.2"), RUNNING)
    (d,) = report.blocking
    assert (d.recorded, d.running, d.source) == ("1.8.2", "1.9.1", "pickled with")
    assert compare_versions(view("2.9.1"), RUNNING).blocking


def test_without_a_scan_the_serving_release_is_the_reference() -> None:
    report = compare_versions(view(None, **{"scikit-learn": "1.5.0"}), RUNNING)
    (d,) = report.blocking
    assert d.source == "serving release" and d.recorded == "1.5.0"


def test_other_libraries_are_reported_never_blocking() -> None:
    report = compare_versions(view("1.9.1", python="3.12.1", numpy="1.26.4"), RUNNING)
    assert {d.library for d in report.differences} == {"python", "numpy"}
    assert report.blocking == ()


def test_release_candidates_compare_by_major_minor() -> None:
    assert compare_versions(view("1.9rc1"), RUNNING).blocking == ()
