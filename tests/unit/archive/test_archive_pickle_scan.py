"""The static pickle scan on real joblib dumps of models trained here."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlmodel_operator.pickle_scan import HashingReader, scan_artifact


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x, y


@pytest.fixture(scope="module")
def logreg(iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]) -> LogisticRegression:
    x, y = iris
    return LogisticRegression(max_iter=500).fit(x, y)


def dump(model: Any, compress: Any = 0) -> bytes:
    buf = io.BytesIO()
    joblib.dump(model, buf, compress=compress)
    return buf.getvalue()


COMPRESSIONS = [
    (0, "none"),
    (3, "zlib"),
    (("gzip", 3), "gzip"),
    (("bz2", 3), "bz2"),
    (("xz", 3), "xz"),
    (("lzma", 3), "lzma"),
]


@pytest.mark.parametrize(("compress", "name"), COMPRESSIONS)
def test_logistic_regression_version_in_every_compression(
    logreg: LogisticRegression, compress: Any, name: str
) -> None:
    data = dump(logreg, compress)
    stream = io.BytesIO(data)
    result = scan_artifact(stream)
    assert result.complete, result.note
    assert result.compression == name
    assert result.sklearn_version == sklearn.__version__
    assert "sklearn.linear_model._logistic.LogisticRegression" in result.globals
    assert result.sklearn_versions == {
        "sklearn.linear_model._logistic.LogisticRegression": sklearn.__version__
    }


def test_pipeline_with_string_labels_names_every_estimator(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    x, y = iris
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, labels)
    result = scan_artifact(io.BytesIO(dump(pipe)))
    assert result.complete, result.note
    assert set(result.sklearn_versions) == {
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.linear_model._logistic.LogisticRegression",
    }
    assert result.sklearn_version == sklearn.__version__


def test_object_arrays_and_structured_dtypes_are_stepped_over(
    iris: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]],
) -> None:
    """Trees hold a structured node array; object labels are a nested pickle stream."""
    x, y = iris
    labels = np.array(["a", "b", "c"], dtype=object)[y]
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(x, labels)
    data = dump(forest)
    stream = io.BytesIO(data)
    result = scan_artifact(stream)
    assert result.complete, result.note
    assert "sklearn.tree._tree.Tree" in result.globals
    assert result.sklearn_versions["sklearn.ensemble._forest.RandomForestClassifier"] == (
        sklearn.__version__
    )
    assert stream.tell() == len(data)  # every byte accounted for, nothing left over


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickles_too(logreg: LogisticRegression, protocol: int) -> None:
    data = pickle.dumps(logreg, protocol=protocol)
    result = scan_artifact(io.BytesIO(data))
    assert result.complete and result.pickle_protocol == protocol
    assert result.sklearn_version == sklearn.__version__


def test_truncated_artifact_gives_a_partial_result_not_an_exception(
    logreg: LogisticRegression,
) -> None:
    data = dump(logreg)
    result = scan_artifact(io.BytesIO(data[: len(data) // 2]))
    assert not result.complete
    assert result.note.startswith("scan stopped")


def test_lz4_is_reported_not_scanned() -> None:
    result = scan_artifact(io.BytesIO(b"\x04\x22\x4d\x18" + b"\0" * 32))
    assert result.compression == "lz4" and not result.complete
    assert "not scanned" in result.note


class _Boom:
    """Pickles as a call to os.system: loading it would run a command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_malicious_pickle_is_read_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    data = pickle.dumps(_Boom(marker), protocol=4)
    result = scan_artifact(io.BytesIO(data))
    assert result.complete
    assert "posix.system" in result.globals or "os.system" in result.globals
    assert not marker.exists()


def test_hashing_reader_hashes_what_the_scan_skips(logreg: LogisticRegression) -> None:
    import hashlib

    data = dump(logreg, 3)
    reader = HashingReader(io.BytesIO(data))
    scan_artifact(reader)
    reader.drain()
    assert reader.size == len(data)
    assert reader.hexdigest() == hashlib.sha256(data).hexdigest()
