"""The serving release recorded in manifests is the one serving/Dockerfile really builds."""

from __future__ import annotations

import re
from pathlib import Path

from mlmodel_operator import __version__
from mlmodel_operator.manifest import SERVING_IMAGE_PINS, SERVING_IMAGE_PYTHON, serving_release
from mlmodel_operator.settings import DEFAULT_SERVING_IMAGE

SERVING = Path(__file__).resolve().parents[3] / "serving"


def test_pins_match_serving_requirements() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (SERVING / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.lstrip().startswith("#")
    )
    for library, version in SERVING_IMAGE_PINS.items():
        assert pins[library] == version, library


def test_python_matches_the_base_image() -> None:
    match = re.search(r"^FROM python:(\d+\.\d+\.\d+)", (SERVING / "Dockerfile").read_text(), re.M)
    assert match and match[1] == SERVING_IMAGE_PYTHON


def test_release_is_the_default_image_tag() -> None:
    assert DEFAULT_SERVING_IMAGE.endswith(f":{__version__}")
    assert serving_release()["mlmodel-lifecycle"] == __version__
