"""The operator image: its Dockerfile and pins (no Docker engine here: lint and read them)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from shipping_helpers import MANIFESTS, REPO, find, objects

from mlmodel_operator.localcluster import OPERATOR_PYTHONMALLOC
from mlmodel_operator.settings import DEFAULT_SERVING_IMAGE

DOCKERFILE = REPO / "operator" / "Dockerfile"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split by FROM."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    result: list[list[str]] = []
    for line in lines:
        if line.startswith("FROM "):
            result.append([])
        result[-1].append(line)
    return result


def pins() -> dict[str, str]:
    lines = (REPO / "operator" / "requirements.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {r.name.lower(): str(r.specifier).removeprefix("==") for r in reqs}


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_on_a_pinned_slim_base_and_the_final_stage_runs_as_non_root() -> None:
    build, final = stages()
    for stage in (build, final):
        assert re.fullmatch(r"FROM python:\d+\.\d+\.\d+-slim-\w+( AS \w+)?", stage[0]), stage[0]
    assert build[0].split()[1] == final[0].split()[1]  # one base: shared layers
    final_text = "\n".join(final)
    assert "COPY --from=build /opt/venv /opt/venv" in final_text
    assert "pip install" not in final_text and "apt-get" not in final_text
    assert [line for line in final if line.startswith("USER")] == ["USER 10001:10001"]


def test_the_operator_runs_on_the_c_allocator_in_its_image_and_in_the_tests() -> None:
    # memtrim.py can hand back only what the C library's allocator holds
    env = next(line for line in stages()[-1] if line.startswith("ENV "))
    assert f"PYTHONMALLOC={OPERATOR_PYTHONMALLOC}" in env.split()
    assert OPERATOR_PYTHONMALLOC == "malloc"


def test_pins_satisfy_pyproject_and_cover_every_direct_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for dep in project["dependencies"]:
        req = Requirement(dep)
        if req.marker and not req.marker.evaluate():
            continue
        name = req.name.lower()
        assert name in pinned, f"{name} is a dependency but not pinned in operator/requirements.txt"
        assert req.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {req}"


def test_the_serving_pins_agree_with_the_operator_pins() -> None:
    # one set of library versions: what the operator records as the serving release and
    # what the operator image itself runs must not drift apart
    lines = (REPO / "serving" / "requirements.txt").read_text().splitlines()
    serving = {
        Requirement(line).name.lower(): str(Requirement(line).specifier).removeprefix("==")
        for line in lines
        if line.strip() and not line.startswith("#")
    }
    operator = pins()
    assert {k: operator.get(k) for k in serving} == serving


def test_image_names_agree_across_manifests_script_and_settings() -> None:
    script = (REPO / "hack" / "images.sh").read_text()
    registry = re.search(r"IMAGE_REGISTRY:-([^}]+)}", script)
    tag = re.search(r"IMAGE_TAG:-([^}]+)}", script)
    assert registry and tag
    operator_image = f"{registry[1]}/mlmodel-operator:{tag[1]}"
    serving_image = f"{registry[1]}/mlmodel-serving:{tag[1]}"
    assert serving_image == DEFAULT_SERVING_IMAGE
    ops = objects(MANIFESTS / "operator")
    dep = find(ops, "Deployment", "mlmodel-operator")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == operator_image
    config = find(ops, "ConfigMap", "mlmodel-operator-config")["data"]
    assert config["MLMODEL_SERVING_IMAGE"] == serving_image
