"""Read the shipped manifests as kustomize would list them, without a cluster or a binary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "manifests"
# Kinds served by a CRD: kubernetes-validate knows only the built-in schemas. Their
# objects are checked by the server-side dry run (tests/integration/shipping) instead.
CRD_KINDS = frozenset(
    {"MLModel", "ClusterKopfPeering", "KopfPeering", "ServiceMonitor", "PrometheusRule"}
)


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of one file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifest_files() -> list[Path]:
    """Every YAML file under manifests/ and crds/ that is an object, not a kustomization."""
    files = sorted([*MANIFESTS.rglob("*.yaml"), *(REPO / "crds").glob("*.yaml")])
    # a Prometheus rule file (monitoring/example.rules.yaml) is YAML but no object
    return [
        f
        for f in files
        if f.name != "kustomization.yaml" and all("kind" in d for d in load_docs(f))
    ]


def kustomizations() -> list[Path]:
    """Every kustomization directory under manifests/ (and crds/)."""
    dirs = [p.parent for p in MANIFESTS.rglob("kustomization.yaml")]
    return sorted([*dirs, REPO / "crds"])


def kustomization_resources(directory: Path) -> Iterator[Path]:
    """The files a kustomization lists, following nested kustomization directories."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for entry in k.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            yield from kustomization_resources(path)
        else:
            yield path


def objects(directory: Path) -> list[dict[str, Any]]:
    """The objects of a kustomization's own files (generators left out)."""
    return [doc for f in kustomization_resources(directory) for doc in load_docs(f)]


def find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(
        f"no {kind} {name} among {[(o['kind'], o['metadata']['name']) for o in objs]}"
    )
