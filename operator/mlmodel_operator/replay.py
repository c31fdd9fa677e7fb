"""Replay an archived version: inputs in, predictions out, library versions compared first.

Pure parts (no I/O beyond the files named): reading CSV or JSON-lines inputs with errors
that name the line and column, comparing the recorded library versions with the running
ones, and writing predictions. The command that fetches and loads lives in
:mod:`mlmodel_operator.archive_cli`.
"""

from __future__ import annotations

import csv
import importlib.metadata
import io
import json
import math
import platform
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlmodel_operator.manifest import ManifestView


class InputError(ValueError):
    """An input file that cannot be read as rows of numbers; names the line and column."""


# --------------------------------------------------------------------------- inputs


def detect_format(path: Path, first_line: str) -> str:
    """``csv`` or ``jsonl``: by extension, else by the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if first_line.lstrip()[:1] in ("[", "{") else "csv"


def read_inputs(path: Path) -> tuple[np.ndarray[Any, Any], list[str] | None]:
    """Rows of features from a CSV or JSON-lines file, and the column names if it has any."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    if not first:
        raise InputError(f"{path}: no input rows")
    if detect_format(path, first) == "csv":
        return parse_csv(text, str(path))
    return parse_jsonl(text, str(path))


def _number(cell: str, where: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}: {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {cell!r} is not a finite number")
    return value


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def parse_csv(text: str, name: str = "<input>") -> tuple[np.ndarray[Any, Any], list[str] | None]:
    """Numbers in CSV; a first row with any non-numeric cell is a header.

    Errors name ``file:line:column`` (both from 1).
    """
    reader = csv.reader(io.StringIO(text), strict=True)
    header: list[str] | None = None
    rows: list[list[float]] = []
    width: int | None = None
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            cells = [cell.strip() for cell in record]
            if header is None and not rows and not all(_is_number(c) for c in cells):
                header, width = cells, len(cells)
                continue
            if width is None:
                width = len(cells)
            elif len(cells) != width:
                raise InputError(
                    f"{name}:{line}: {len(cells)} columns, expected {width} "
                    f"(as in {'the header' if header else 'the first row'})"
                )
            rows.append([_number(c, f"{name}:{line}:{col}") for col, c in enumerate(cells, 1)])
    except csv.Error as exc:
        raise InputError(f"{name}:{reader.line_num}: not valid CSV ({exc})") from None
    if not rows:
        raise InputError(f"{name}: no input rows")
    return np.asarray(rows, dtype=np.float64), header


def parse_jsonl(text: str, name: str = "<input>") -> tuple[np.ndarray[Any, Any], list[str] | None]:
    """One row per line: a JSON array of numbers, or an object of feature -> number.

    Objects must all have the first line's keys, which give the column order.
    """
    rows: list[list[float]] = []
    keys: list[str] | None = None
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{name}:{line_no}:{exc.colno}: invalid JSON ({exc.msg})") from None
        where = f"{name}:{line_no}"
        if isinstance(item, dict):
            if keys is None and not rows:
                keys = list(item)
            if keys is None or set(item) != set(keys):
                raise InputError(
                    f"{where}: keys {sorted(item)} differ from the first line's {sorted(keys or [])}"
                )
            values = [item[k] for k in keys]
        elif isinstance(item, list) and keys is None:
            values = item
        else:
            raise InputError(
                f"{where}: expected a JSON array of numbers or an object of feature: number "
                f"(the same kind on every line), got {type(item).__name__}"
            )
        row = []
        for col, value in enumerate(values, 1):
            if isinstance(value, bool) or not isinstance(value, int | float):
                label = keys[col - 1] if keys else f"item {col}"
                raise InputError(f"{where}: {label} is {value!r}, not a number")
            row.append(float(value))
        if rows and len(row) != len(rows[0]):
            raise InputError(f"{where}: {len(row)} values, expected {len(rows[0])}")
        rows.append(row)
    if not rows:
        raise InputError(f"{name}: no input rows")
    return np.asarray(rows, dtype=np.float64), keys


# --------------------------------------------------------------------------- versions


def running_versions() -> dict[str, str | None]:
    """The versions this process would load the artifact with."""

    def version(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "scikit-learn": version("scikit-learn"),
        "joblib": version("joblib"),
        "numpy": version("numpy"),
    }


def _major_minor(version: str | None) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else None


@dataclass(frozen=True)
class Difference:
    library: str
    recorded: str
    running: str
    source: str  # where the recorded number comes from
    blocking: bool


@dataclass(frozen=True)
class SkewReport:
    differences: tuple[Difference, ...]

    @property
    def blocking(self) -> tuple[Difference, ...]:
        return tuple(d for d in self.differences if d.blocking)

    def describe(self) -> str:
        return "; ".join(
            f"{d.library} {d.recorded} ({d.source}) vs {d.running} here"
            + (" [major/minor differ]" if d.blocking else "")
            for d in self.differences
        )


def compare_versions(manifest: ManifestView, running: Mapping[str, str | None]) -> SkewReport:
    """Differences between what the manifest records and ``running``.

    scikit-learn is compared with the version the model was pickled with (static scan),
    else with the serving release's; only its major.minor blocks, since scikit-learn
    does not support loading a pickle across minor versions. Python, joblib and numpy
    are compared with the serving release's and reported, never blocking.
    """
    diffs: list[Difference] = []
    release = manifest.release
    recorded_sklearn = manifest.trained_sklearn
    sklearn_source = "pickled with"
    if recorded_sklearn is None:
        value = release.get("scikit-learn")
        recorded_sklearn = value if isinstance(value, str) else None
        sklearn_source = "serving release"
    here = running.get("scikit-learn")
    if recorded_sklearn and here and recorded_sklearn != here:
        diffs.append(
            Difference(
                "scikit-learn", recorded_sklearn, here, sklearn_source,
                _major_minor(recorded_sklearn) != _major_minor(here),
            )
        )  # fmt: skip
    for library in ("python", "joblib", "numpy"):
        recorded = release.get(library)
        here = running.get(library)
        if isinstance(recorded, str) and here and recorded != here:
            diffs.append(Difference(library, recorded, here, "serving release", False))
    return SkewReport(tuple(diffs))


# --------------------------------------------------------------------------- outputs


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def prediction_rows(
    predictions: np.ndarray[Any, Any],
    probabilities: np.ndarray[Any, Any] | None,
    classes: Sequence[Any] | None,
) -> list[dict[str, Any]]:
    rows = []
    for i, label in enumerate(predictions.tolist()):
        row: dict[str, Any] = {"row": i + 1, "predict": _plain(label)}
        if probabilities is not None:
            row["predict_proba"] = [float(p) for p in probabilities[i]]
        rows.append(row)
    return rows


def write_predictions(
    rows: Iterable[Mapping[str, Any]], out: IO[str], fmt: str, classes: Sequence[Any] | None
) -> None:
    """JSON lines (one object per input row), or CSV with a header."""
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
        return
    writer = csv.writer(out, lineterminator="\n")
    header_written = False
    for row in rows:
        probs = row.get("predict_proba")
        if not header_written:
            header = ["row", "predict"]
            if probs is not None:
                names = list(classes) if classes is not None else list(range(len(probs)))
                header += [f"proba_{name}" for name in names]
            writer.writerow(header)
            header_written = True
        writer.writerow([row["row"], row["predict"], *(probs or [])])
