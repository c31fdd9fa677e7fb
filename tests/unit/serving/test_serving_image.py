"""The serving image: its pinned requirements and its Dockerfile (no Docker engine here)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import mlmodel_serving

REPO = Path(__file__).resolve().parents[3]
SERVING = Path(mlmodel_serving.__file__).parent
# import name -> distribution name, for the serving package's third-party imports
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "prometheus_client": "prometheus-client",
    "grpc": "grpcio",
    "google": "protobuf",
}


def pins() -> dict[str, str]:
    lines = (REPO / "serving" / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {r.name: str(r.specifier).removeprefix("==") for r in reqs}


def third_party_imports() -> set[str]:
    names: set[str] = set()
    for path in SERVING.rglob("*.py"):  # oip/ included
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "mlmodel_serving"}


def test_the_image_pins_every_import_of_mlmodel_serving_and_nothing_of_the_operator() -> None:
    needed = {DISTRIBUTIONS.get(name, name) for name in third_party_imports()}
    assert needed == set(pins())
    assert not needed & {"kopf", "kubernetes", "pyyaml"}


def test_the_pins_satisfy_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    ranges = {Requirement(d).name.lower(): Requirement(d) for d in project["dependencies"]}
    for name, version in pins().items():
        assert name in ranges, (
            f"{name} is pinned for the image but not a dependency in pyproject.toml"
        )
        assert ranges[name].specifier.contains(version), (
            f"{name}=={version} is outside {ranges[name]}"
        )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(REPO / "serving" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_only_the_cache_writable() -> None:
    text = (REPO / "serving" / "Dockerfile").read_text()
    assert "USER 10001:10001" in text
    assert 'VOLUME ["/var/cache/mlmodel"]' in text
    assert "COPY serving/mlmodel_serving " in text and "mlmodel_operator" not in text
