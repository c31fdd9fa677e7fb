"""Replay inputs: CSV and JSON lines, errors with line and column; outputs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlmodel_operator.replay import (
    InputError,
    parse_csv,
    parse_jsonl,
    prediction_rows,
    read_inputs,
    write_predictions,
)


def test_csv_with_and_without_header() -> None:
    x, names = parse_csv("a,b\n1,2\n3.5,-4e1\n")
    assert names == ["a", "b"] and x.tolist() == [[1, 2], [3.5, -40]]
    x, names = parse_csv("1,2\n\n3,4\n")
    assert names is None and x.shape == (2, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b\n1,2\n3,x\n", "in.csv:3:2: 'x' is not a number"),
        ("1,2\n3,4,5\n", "in.csv:2: 3 columns, expected 2 (as in the first row)"),
        ("a,b\n1\n", "in.csv:2: 1 columns, expected 2 (as in the header)"),
        ("1,nan\n", "in.csv:1:2: 'nan' is not a finite number"),
        ("a,b\n", "in.csv: no input rows"),
        ('1,"2\n', "in.csv"),
    ],
)
def test_csv_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_csv(text, "in.csv")
    assert str(info.value).startswith(message)


def test_jsonl_arrays_and_objects() -> None:
    x, names = parse_jsonl("[1, 2]\n\n[3, 4.5]\n")
    assert names is None and x.tolist() == [[1, 2], [3, 4.5]]
    x, names = parse_jsonl('{"b": 1, "a": 2}\n{"a": 4, "b": 3}\n')
    assert names == ["b", "a"] and x.tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]\n[1, 2\n", "in.jsonl:2:6: invalid JSON"),
        ("[1, 2]\n[1]\n", "in.jsonl:2: 1 values, expected 2"),
        ('[1, "x"]\n', "in.jsonl:1: item 2 is 'x', not a number"),
        ('{"a": 1}\n{"b": 1}\n', "in.jsonl:2: keys ['b'] differ"),
        ('{"a": true}\n', "in.jsonl:1: a is True, not a number"),
        ("3\n", "in.jsonl:1: expected a JSON array"),
    ],
)
def test_jsonl_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_jsonl(text, "in.jsonl")
    assert str(info.value).startswith(message)


def test_format_detected_by_extension_then_content(tmp_path: Path) -> None:
    (tmp_path / "rows.txt").write_text("[1, 2]\n")
    (tmp_path / "rows.csv").write_text("1,2\n")
    assert read_inputs(tmp_path / "rows.txt")[0].tolist() == [[1, 2]]
    assert read_inputs(tmp_path / "rows.csv")[0].tolist() == [[1, 2]]
    with pytest.raises(InputError, match="no such file"):
        read_inputs(tmp_path / "missing.csv")


def test_outputs_jsonl_and_csv() -> None:
    rows = prediction_rows(np.array([0, 2]), np.array([[0.9, 0.1], [0.2, 0.8]]), None)
    out = io.StringIO()
    write_predictions(rows, out, "jsonl", None)
    assert out.getvalue().splitlines()[0] == '{"row": 1, "predict": 0, "predict_proba": [0.9, 0.1]}'
    out = io.StringIO()
    write_predictions(rows, out, "csv", ["a", "b"])
    assert out.getvalue().splitlines() == [
        "row,predict,proba_a,proba_b",
        "1,0,0.9,0.1",
        "2,2,0.2,0.8",
    ]
