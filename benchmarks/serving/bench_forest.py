"""Leaf tables against scikit-learn's forest ``predict``, in one process, side by side.

`python benchmarks/run.py forest [--batch 1,32,100,1024] [--pairs N] [--update-readme]`

Trains the serving benchmark's forest (100 trees, 20 features) and times, for each batch
size, scikit-learn's ``predict`` and the leaf-table ``predict`` of ``mlmodel-serve`` on
the same rows, alternating call by call so that the machine's drift falls on both
alike. Both run under the server's single warnings filter. Every timed pair is also
compared: the labels and probabilities must be equal, bit for bit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serving import report

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN = "<!-- forest-results:begin -->"
END = "<!-- forest-results:end -->"


def train() -> tuple[Any, np.ndarray[Any, Any]]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(n_samples=2000, n_features=20, n_informative=10, random_state=0)
    return RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y), x


def measure(
    estimator: Any, x_all: np.ndarray[Any, Any], batches: Sequence[int], pairs: int
) -> list[dict[str, Any]]:
    """Per batch size: median ms of each path, their ratio, and that every pair matched."""
    from mlmodel_serving.model import (
        PATH_LEAF_TABLES,
        PREDICT,
        PREDICT_PROBA,
        SklearnModel,
        quiet_warnings,
    )

    served = SklearnModel(estimator, "forest", "1", "-")  # the server's own predict path
    reason = served.use_leaf_tables()
    if served.predict_path != PATH_LEAF_TABLES:
        raise RuntimeError(f"no leaf tables for the benchmark forest: {reason}")
    rng = np.random.default_rng(0)
    out = []
    with warnings.catch_warnings():
        quiet_warnings()
        for size in batches:
            x = x_all[rng.integers(0, len(x_all), size=size)]
            sk_ms: list[float] = []
            lt_ms: list[float] = []
            for i in range(pairs + 3):  # the first three warm both paths up
                t0 = time.perf_counter()
                labels = estimator.predict(x)
                t1 = time.perf_counter()
                fast = served.predict(x, (PREDICT,))[PREDICT]
                t2 = time.perf_counter()
                # Checked outside the timed calls: probabilities and labels, bit for bit.
                proba = served.predict(x, (PREDICT_PROBA,))[PREDICT_PROBA]
                if proba.tobytes() != estimator.predict_proba(x).tobytes() or (
                    fast.tolist() != labels.tolist()
                ):
                    raise AssertionError(f"leaf tables differ from predict at {size} rows")
                if i >= 3:
                    sk_ms.append((t1 - t0) * 1000.0)
                    lt_ms.append((t2 - t1) * 1000.0)
            sk, lt = statistics.median(sk_ms), statistics.median(lt_ms)
            out.append(
                {
                    "rows": size,
                    "pairs": pairs,
                    "sklearn_ms": sk,
                    "tables_ms": lt,
                    "speedup": sk / lt,
                    "sklearn_p90_ms": float(np.percentile(sk_ms, 90)),
                    "tables_p90_ms": float(np.percentile(lt_ms, 90)),
                }
            )
            print(
                f"# {size:5d} rows: predict {sk:.3f} ms, leaf tables {lt:.3f} ms, {sk / lt:.1f}x",
                file=sys.stderr,
            )
    return out


def render(results: list[dict[str, Any]], command: str) -> str:
    rows = [
        [
            str(r["rows"]),
            str(r["pairs"]),
            f"{r['sklearn_ms']:.3f} ({r['sklearn_p90_ms']:.3f})",
            f"{r['tables_ms']:.3f} ({r['tables_p90_ms']:.3f})",
            report.fmt_ratio(r["speedup"]),
        ]
        for r in results
    ]
    return "\n".join(
        [
            f"#### Leaf tables against scikit-learn, {dt.date.today().isoformat()}",
            "",
            f"Command: `{command}`; 100-tree RandomForest on 20 features, one process,"
            " the two paths alternating call by call, every pair equal bit for bit.",
            "",
            report.markdown_table(
                [
                    "rows",
                    "pairs",
                    "scikit-learn predict, median (p90) ms",
                    "leaf tables, median (p90) ms",
                    "speed-up",
                ],
                rows,
            ),
            "",
        ]
    )


def update_readme(markdown: str) -> None:
    report.replace_block(README, BEGIN, END, markdown)


def main(argv: Sequence[str], command: str = "python benchmarks/run.py forest") -> int:
    p = argparse.ArgumentParser(prog="bench_forest", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", default="1,32,100,1024", help="rows per call, comma-separated")
    p.add_argument("--pairs", type=int, default=200, help="timed calls of each path per size")
    p.add_argument("--update-readme", action="store_true")
    a = p.parse_args(argv)
    try:
        batches = [int(b) for b in a.batch.split(",") if b]
    except ValueError:
        p.error(f"--batch {a.batch!r}: expected comma-separated row counts, e.g. 1,32,100")
    if not batches or min(batches) < 1:
        p.error(f"--batch {a.batch!r}: every row count must be >= 1")
    if a.pairs < 1:
        p.error(f"--pairs {a.pairs}: expected >= 1")
    estimator, x = train()
    markdown = render(measure(estimator, x, batches, a.pairs), command)
    print(markdown)
    if a.update_readme:
        update_readme(markdown)
    return 0
