#!/usr/bin/env python3
"""Write the generated files of manifests/monitoring/ from mlmodel_operator.monitoring.

    .venv/bin/python hack/gen-monitoring.py          # write them
    .venv/bin/python hack/gen-monitoring.py --check  # exit 1 if one is out of date

tests/unit/monitoring/test_monitoring_manifests.py checks they are up to date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from mlmodel_operator.monitoring import monitoring_files
from mlmodel_operator.spec import parse_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "manifests" / "examples" / "churn-v1.yaml"
OUT = ROOT / "manifests" / "monitoring"


def main(argv: list[str]) -> int:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["metadata"].setdefault("uid", "example")
    stale = []
    for name, text in monitoring_files(parse_model(body)).items():
        path = OUT / name
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if "--check" not in argv:
            path.write_text(text)
    if stale and "--check" in argv:
        print(f"out of date in {OUT}: {', '.join(stale)}; run hack/gen-monitoring.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
