"""The manifest: its fields, the spec it records, and reading it back."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from mlmodel_operator.manifest import (
    MANIFEST_FORMAT,
    ManifestError,
    ManifestKey,
    ManifestView,
    StoredArtifact,
    artifact_key,
    build_manifest,
    by_digest,
    digest_prefix,
    manifest_key,
    parse_manifest_key,
    served_spec,
    serving_release,
    spec_to_dict,
    with_digest,
)
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.spec import ModelSpec, parse_model

SHA1, SHA2 = "1" * 64, "2" * 64
NOW = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)
DEFAULT_IMAGE = "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0"


def model(**spec: Any) -> ModelSpec:
    return parse_model(
        {
            "metadata": {"name": "churn", "namespace": "team-a", "uid": "u-1", "generation": 4},
            "spec": {
                "version": "2",
                "artifact": {"uri": "s3://models/churn/2/model.joblib", "sha256": SHA2},
                **spec,
            },
        }
    )


ENTRY = HistoryEntry("1", SHA1, "s3://models/churn/1/model.joblib", "2026-03-01T08:00:00Z")
STORED = StoredArtifact("s3://model-archive/team-a/churn/1/model.joblib", SHA1, 991, ENTRY.uri)
SCAN = {"scikit-learn": "1.9.1", "complete": True, "compression": "none"}
RELEASE = {"mlmodel-lifecycle": "0.1.0", "python": "3.11.7", "scikit-learn": "1.9.1",
           "joblib": "1.6.0", "numpy": "2.4.6"}  # fmt: skip


def test_layout() -> None:
    assert artifact_key("team-a", "churn", "1") == "team-a/churn/1/model.joblib"
    assert manifest_key("team-a", "churn", "1") == "team-a/churn/1/manifest.json"
    assert digest_prefix("team-a", "churn", "1", SHA2) == f"team-a/churn/1/sha256-{SHA2}/"


def test_manifest_keys_of_both_layouts_and_nothing_else() -> None:
    assert parse_manifest_key("team-a/churn/1/manifest.json") == ManifestKey(
        "team-a", "churn", "1", None
    )
    assert parse_manifest_key(f"team-a/churn/1/sha256-{SHA2}/manifest.json") == ManifestKey(
        "team-a", "churn", "1", SHA2
    )
    for other in (
        "team-a/churn/1/model.joblib",
        f"team-a/churn/1/sha256-{SHA2}/model.joblib",
        "team-a/churn/ledger/20260314T120000.000000Z-2-TrafficSwitched-v1.json",
        "team-a/churn/1/sha256-abc/manifest.json",  # not a digest
        f"team-a/churn/1/sha256-{'AB' * 32}/manifest.json",  # digests are lowercase
        f"team-a/churn/1/{SHA2}/manifest.json",
        f"team-a/churn/1/sha256-{SHA2}/x/manifest.json",
        "team-a/churn/manifest.json",
        "decisions/team-a/churn/1/dt=2026-03-14/manifest.json",
    ):
        assert parse_manifest_key(other) is None, other


def view(version: str, sha256: str, deployed: str, where: str = "") -> ManifestView:
    raw = {"format": MANIFEST_FORMAT, "model": "churn", "namespace": "ns", "version": version,
           "sha256": sha256, "size": 1, "artifactUri": "s3://a/x", "deployedAt": deployed}  # fmt: skip
    return ManifestView.parse(raw, where or f"s3://archive/ns/churn/{version}/manifest.json")


def test_choosing_archives_by_digest_or_its_prefix() -> None:
    lettered = "ab" * 32
    later, earlier = view("1", lettered, "2026-03-07T00:00:00Z"), view("1", SHA1, "2026-03-01")
    same_bytes = view("1", SHA1, "2026-04-01T00:00:00Z", "s3://archive/elsewhere/manifest.json")
    assert by_digest([later, same_bytes, earlier]) == [earlier, later]  # in the order served
    assert with_digest([earlier, later], lettered[:8]) == [later]
    assert with_digest([earlier, later], lettered.upper()) == [later]
    assert with_digest([earlier, later], "3" * 8) == []
    assert earlier.location == "s3://archive/ns/churn/1/"


def test_manifest_has_every_field_the_issue_lists() -> None:
    m = build_manifest(
        model(archive={"retainDays": 30}), ENTRY, "SpecChanged", NOW, STORED,
        DEFAULT_IMAGE, DEFAULT_IMAGE, SCAN, RELEASE,
        {"mode": "GOVERNANCE", "retainUntil": "2026-04-13T12:00:00Z", "retainDays": 30},
    )  # fmt: skip
    assert m["format"] == MANIFEST_FORMAT
    assert (m["model"], m["namespace"], m["version"]) == ("churn", "team-a", "1")
    assert (m["sha256"], m["size"]) == (SHA1, 991)
    assert m["sourceUri"] == "s3://models/churn/1/model.joblib"
    assert m["artifactUri"] == "s3://model-archive/team-a/churn/1/model.joblib"
    assert m["deployedAt"] == "2026-03-01T08:00:00Z"
    assert m["retiredAt"] == "2026-03-14T12:00:00Z"  # the entry is still open: now
    assert m["reason"] == "SpecChanged"
    assert m["servingImage"] == DEFAULT_IMAGE
    assert m["libraries"]["trainedWith"]["scikit-learn"] == "1.9.1"
    release = m["libraries"]["servingRelease"]
    assert release["imageIsDefault"] is True
    for lib in ("python", "scikit-learn", "joblib", "numpy"):
        assert release[lib] == RELEASE[lib]
    assert m["retention"]["mode"] == "GOVERNANCE"
    json.dumps(m)  # JSON-ready


def test_spec_records_the_archived_version_not_the_new_one() -> None:
    spec = served_spec(model(serving={"replicas": 3}), ENTRY)
    assert spec["version"] == "1"
    assert spec["artifact"] == {"uri": ENTRY.uri, "sha256": SHA1, "format": "joblib"}
    assert spec["serving"]["replicas"] == 3


def test_spec_to_dict_uses_the_crd_names_and_fills_defaults() -> None:
    spec = spec_to_dict(model(monitoring={"slo": {"p99LatencyMs": 50}}))
    assert "ref" not in spec and "generation" not in spec
    assert spec["retirement"] == {"drainSeconds": 30}
    assert spec["rollout"] == {
        "readyTimeoutSeconds": 600, "strategy": "switch", "steps": [],
        "analysis": {"minRequests": 20},
    }  # fmt: skip
    assert spec["monitoring"]["slo"] == {"p99LatencyMs": 50}
    assert spec["serving"]["resources"]["requests"]["cpu"] == "100m"
    assert "image" not in spec["serving"]  # unset fields are left out


def test_custom_image_is_not_claimed_to_match_the_release() -> None:
    m = build_manifest(
        model(), ENTRY, "Deleted", NOW, STORED, "registry.example/custom:1",
        DEFAULT_IMAGE, SCAN, RELEASE, None,
    )  # fmt: skip
    assert m["libraries"]["servingRelease"]["imageIsDefault"] is False
    assert m["retention"] is None


def test_serving_release_names_every_library_replay_compares() -> None:
    assert set(serving_release()) >= {"python", "scikit-learn", "joblib", "numpy"}


def test_view_round_trip_and_errors() -> None:
    raw = build_manifest(
        model(), ENTRY, "SpecChanged", NOW, STORED, DEFAULT_IMAGE, DEFAULT_IMAGE, SCAN,
        RELEASE, None,
    )  # fmt: skip
    view = ManifestView.parse(json.loads(json.dumps(raw)), "x")
    assert (view.version, view.sha256, view.size, view.trained_sklearn) == ("1", SHA1, 991, "1.9.1")
    with pytest.raises(ManifestError, match="not a JSON object"):
        ManifestView.parse([], "x")
    with pytest.raises(ManifestError, match="format"):
        ManifestView.parse({**raw, "format": "other"}, "x")
    with pytest.raises(ManifestError, match="missing sha256"):
        ManifestView.parse({k: v for k, v in raw.items() if k != "sha256"}, "x")
