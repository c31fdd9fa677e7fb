"""`mlmodel audit`'s pure part: bit-for-bit comparison, sorting records, the report."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pytest

from mlmodel_operator.audit import (
    REPORT_FORMAT,
    AuditReport,
    VersionAudit,
    classify,
    differing_outputs,
    group_by_version,
    json_safe,
    same_value,
)
from mlmodel_serving.decisions import Record, output_values
from mlmodel_serving.tabular import NUMBER, Column

T = dt.datetime(2026, 3, 14, 10, 0, tzinfo=dt.UTC)
SHA_A, SHA_B = "a" * 64, "b" * 64


def record(request_id: str = "r1", at: dt.datetime = T, **fields: Any) -> Record:
    values: dict[str, Any] = {
        "request_id": request_id, "time": at, "namespace": "ns", "model": "m", "version": "1",
        "sha256": SHA_A, "protocol": "v2", "status": 200, "error": None, "latency_ms": 1.5,
        "rows": 1, "inputs": {"x0": [1.0], "x1": [2.0]},
        "outputs": {"predict": [0], "predict_proba": [[0.75, 0.25]]},
        "columns": (Column("x0", NUMBER), Column("x1", NUMBER)), "redacted": frozenset(),
        "key": "decisions/ns/m/1/dt=2026-03-14/a.parquet",
    }  # fmt: skip
    values.update(fields)
    return Record(**values)


def report(*versions: VersionAudit) -> AuditReport:
    return AuditReport(
        namespace="ns", model="m", start=T, end=T + dt.timedelta(days=1), bucket="b",
        prefix="decisions", archive_bucket="archive", ran_at=T + dt.timedelta(days=2),
        ran_by="auditor", host="h", tool_version="0.1.0",
        running={"scikit-learn": "1.9.1"}, versions=list(versions),
    )  # fmt: skip


# --------------------------------------------------------------------------- comparing


def test_same_value_is_bit_for_bit() -> None:
    assert same_value(0.1, 0.1) and same_value(math.nan, float("nan"))
    assert not same_value(0.0, -0.0)  # equal as numbers, not as bits
    assert not same_value(0.1, np.nextafter(0.1, 1.0).item())
    assert not same_value(1, 1.0) and not same_value("1", 1)
    assert same_value([[0.5, math.nan], [1.0, 2.0]], [[0.5, math.nan], [1.0, 2.0]])
    assert not same_value([0.5], [0.5, 0.5]) and not same_value([0.5], 0.5)
    assert same_value(None, None) and same_value("churn", "churn")


def test_a_rerun_compares_as_the_record_stores_it() -> None:
    proba = np.array([[0.75, 0.25]])
    rerun = {"predict": output_values(np.array([0])), "predict_proba": output_values(proba)}
    assert differing_outputs(record().outputs, rerun) == []
    off = {**rerun, "predict_proba": output_values(np.nextafter(proba, 1.0))}
    assert differing_outputs(record().outputs, off) == ["predict_proba"]
    assert differing_outputs(record().outputs, {"predict": [0]}) == ["predict_proba"]


def test_classify_says_why_a_record_is_not_rerun() -> None:
    assert classify(record()) == ("rerun", "")
    assert classify(record(status=400, error="bad")) == ("error", "HTTP 400")
    kind, reason = classify(record(redacted=frozenset({"x1"})))
    assert kind == "redacted" and reason.startswith("column(s) x1 stored as keyed hashes")
    assert classify(record(inputs=None)) == ("skipped", "no inputs recorded")
    assert classify(record(outputs={})) == ("skipped", "no outputs recorded")


def test_records_are_grouped_by_version_and_digest_in_time_order() -> None:
    later = T + dt.timedelta(minutes=1)
    records = [record("c", later, version="2", sha256=SHA_B), record("a"),
               record("b", later, sha256=SHA_B)]  # fmt: skip
    groups = group_by_version(records)
    assert [(v, sha, [r.request_id for r in rs]) for v, sha, rs in groups] == [
        ("1", SHA_A, ["a"]), ("1", SHA_B, ["b"]), ("2", SHA_B, ["c"]),
    ]  # fmt: skip


def test_json_safe_is_strict_json() -> None:
    value = json_safe({"a": [math.nan, math.inf, -math.inf, 1.5], "b": (1, "x")})
    assert value == {"a": [None, "Infinity", "-Infinity", 1.5], "b": [1, "x"]}
    json.dumps(value, allow_nan=False)


# --------------------------------------------------------------------------- one version


def audited() -> VersionAudit:
    v = VersionAudit("1", SHA_A)
    runnable = v.sort([
        record("ok-1"), record("ok-2", T + dt.timedelta(seconds=1)),
        record("bad", T + dt.timedelta(seconds=2)),
        record("e1", status=400, error="input has 3 features", inputs=None, outputs={}),
        record("e2", status=400, error="other message", inputs=None, outputs={}),
        record("e3", status=503, error="overloaded", inputs=None, outputs={}),
        record("h", redacted=frozenset({"x0"})), record("n", inputs=None),
    ])  # fmt: skip
    assert [r.request_id for r in runnable] == ["ok-1", "ok-2", "bad"]
    same = {"predict": [0], "predict_proba": [[0.75, 0.25]]}
    assert v.compare(runnable[0], same) and v.compare(runnable[1], same)
    assert not v.compare(runnable[2], {"predict": [1], "predict_proba": [[0.25, 0.75]]})
    return v


def test_a_version_counts_every_record_once() -> None:
    v = audited()
    assert (v.records, v.rerun, v.identical, v.mismatched) == (8, 3, 2, 1)
    assert v.errors == {"HTTP 400": 2, "HTTP 503": 1}
    assert v.error_examples["HTTP 400"] == "input has 3 features"
    assert sum(v.redacted.values()) == 1 and v.skipped == {"no inputs recorded": 1}
    assert v.first == T and v.last == T + dt.timedelta(seconds=2)
    (m,) = v.mismatches
    assert m.request_id == "bad" and set(m.outputs) == {"predict", "predict_proba"}
    assert m.outputs["predict"] == {"recorded": [0], "rerun": [1]}


def test_a_rerun_that_raises_is_a_mismatch() -> None:
    v = VersionAudit("1", SHA_A)
    v.failed(record("boom"), "ValueError: X has 3 features")
    data = v.as_json()
    assert data["mismatched"] == 1 and data["mismatches"][0]["rerunError"].startswith("ValueError")
    assert data["mismatches"][0]["outputs"]["predict"] == {"recorded": [0], "rerun": None}


# --------------------------------------------------------------------------- the report


def test_the_report_passes_only_when_everything_rerun_is_identical() -> None:
    ok = VersionAudit("1", SHA_A)
    ok.compare(record(), {"predict": [0], "predict_proba": [[0.75, 0.25]]})
    assert report(ok).passed
    assert report(ok).verdict == "REPRODUCED: all 1 re-run records are identical, bit for bit"
    assert not report(ok, audited()).passed
    skipped = VersionAudit("2", SHA_B)
    skipped.skip([record(version="2")], "no artifact with sha256 b...")
    r = report(ok, skipped)
    assert not r.passed and r.verdict == "NOT REPRODUCED: 1 record could not be re-run"
    nothing = VersionAudit("1", SHA_A)
    nothing.sort([record(status=500, error="x", inputs=None, outputs={})])
    assert not report(nothing).passed
    assert (
        report(nothing).verdict
        == "NOT REPRODUCED: no record could be re-run (1 errors, 0 redacted)"
    )


def test_the_json_report_has_what_a_regulator_files() -> None:
    v = audited()
    v.artifact = {
        "uri": "s3://archive/ns/m/1/model.joblib",
        "source": "archived version 1",
        "notes": [],
    }
    v.libraries = {"recorded": {"pickledWith": {"scikit-learn": "1.8.0"}},
                   "running": {"scikit-learn": "1.9.1"},
                   "differences": [{"library": "scikit-learn", "recorded": "1.8.0", "running": "1.9.1",
                                    "source": "pickled with", "blocking": True}]}  # fmt: skip
    text = report(v).to_json_text()
    data = json.loads(text)
    assert data["format"] == REPORT_FORMAT
    assert data["range"] == {
        "from": "2026-03-14T10:00:00Z",
        "to": "2026-03-15T10:00:00Z",
        "end": "exclusive",
    }
    assert data["decisions"] == "s3://b/decisions/ns/m/"
    assert (data["ranBy"], data["ranAt"], data["passed"]) == (
        "auditor",
        "2026-03-16T10:00:00Z",
        False,
    )
    assert data["totals"] == {"records": 8, "rerun": 3, "identical": 2, "mismatched": 1,
                              "errors": 3, "redacted": 1, "skipped": 1}  # fmt: skip
    (version,) = data["versions"]
    assert version["sha256"] == SHA_A and version["libraries"]["differences"][0]["blocking"]
    assert version["errors"]["reasons"][0] == {
        "reason": "HTTP 400",
        "count": 2,
        "example": "input has 3 features",
    }
    assert version["mismatches"][0]["requestId"] == "bad"


def test_summary_and_html_name_the_mismatch() -> None:
    v = audited()
    v.libraries = {"recorded": {"pickledWith": {"scikit-learn": "1.9.1"}}, "differences": []}
    text = report(v).summary()
    assert "VERSION  SHA256        RECORDS  RE-RUN  IDENTICAL  MISMATCHED" in text
    assert "MISMATCH   request bad at 2026-03-14T10:00:02Z" in text
    assert "libraries  scikit-learn 1.9.1 (pickled with): the same here" in text
    assert "errors     2 x HTTP 400 (e.g. 'input has 3 features')" in text
    assert text.endswith(
        "NOT REPRODUCED: 1 of 3 re-run records differ; 1 record could not be re-run"
    )
    page = report(v).to_html()
    assert page.startswith("<!DOCTYPE html>") and "<td>bad</td>" in page and 'class="fail"' in page
    evil = VersionAudit("<script>", SHA_A)
    assert "<script>" not in report(evil).to_html()


@pytest.mark.parametrize("n", [0, 12])
def test_long_mismatch_lists_are_cut_in_the_summary_only(n: int) -> None:
    v = VersionAudit("1", SHA_A)
    for i in range(n):
        v.compare(record(f"r{i}"), {"predict": [1], "predict_proba": [[0.75, 0.25]]})
    text = report(v).summary()
    assert ("and 2 more mismatches" in text) == (n == 12)
    assert len(report(v).as_json()["versions"][0]["mismatches"]) == n
