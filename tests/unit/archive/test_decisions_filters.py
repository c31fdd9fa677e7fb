"""The pure parts of `mlmodel decisions`, `audit` and `explain`: time ranges and partition
pruning, record filters, choosing the artifact by digest, the command line."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from mlmodel_operator import decisions_cli
from mlmodel_operator.archive_cli import CliError
from mlmodel_operator.cli import build_parser, main
from mlmodel_operator.decisions_cli import (
    RecordFilter,
    TimeRange,
    UsageError,
    choose_live,
    choose_manifest,
    outputs_summary,
    parse_status,
    parse_time,
    partition_day,
    status_matches,
)
from mlmodel_operator.manifest import MANIFEST_FORMAT, ManifestView
from mlmodel_serving import decisions
from mlmodel_serving.decisions import Record, decode_table, read_table
from mlmodel_serving.tabular import NUMBER, Column

T = dt.datetime(2026, 3, 14, 10, 0, tzinfo=dt.UTC)
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def record(request_id: str = "r1", at: dt.datetime = T, **fields: Any) -> Record:
    values: dict[str, Any] = {
        "request_id": request_id, "time": at, "namespace": "ns", "model": "m", "version": "1",
        "sha256": SHA_A, "protocol": "v2", "status": 200, "error": None, "latency_ms": 1.5,
        "rows": 1, "inputs": {"x0": [1.0]}, "outputs": {"predict": [0]},
        "columns": (Column("x0", NUMBER),), "redacted": frozenset(),
    }  # fmt: skip
    values.update(fields)
    return Record(**values)


def manifest(version: str, sha256: str) -> ManifestView:
    raw = {"format": MANIFEST_FORMAT, "model": "m", "namespace": "ns", "version": version,
           "sha256": sha256, "size": 10, "artifactUri": f"s3://archive/ns/m/{version}/model.joblib"}  # fmt: skip
    return ManifestView.parse(raw, "test")


# --------------------------------------------------------------------------- time


def test_times_and_ranges() -> None:
    assert parse_time("--from", "2026-03-14") == dt.datetime(2026, 3, 14, tzinfo=dt.UTC)
    assert parse_time("--to", None) is None
    with pytest.raises(UsageError, match=r"--to 'yesterday' is not a timestamp: expected ISO"):
        parse_time("--to", "yesterday")
    with pytest.raises(UsageError, match="is not before --to"):
        TimeRange(T, T)
    r = TimeRange(T, T + dt.timedelta(hours=1))
    assert r.contains(T) and not r.contains(T + dt.timedelta(hours=1))  # end exclusive
    assert not r.contains(T - dt.timedelta(microseconds=1))
    assert TimeRange().contains(T) and TimeRange(end=T).contains(T - dt.timedelta(days=900))
    assert r.describe() == "from 2026-03-14T10:00:00Z to 2026-03-14T11:00:00Z"
    assert TimeRange().describe() == "at any time"
    assert TimeRange(start=T).describe() == "from 2026-03-14T10:00:00Z"
    assert TimeRange(end=T).describe() == "before 2026-03-14T10:00:00Z"


def test_partitions_are_pruned_with_a_day_of_margin() -> None:
    r = TimeRange(T, T + dt.timedelta(days=1))  # 14th 10:00 to 15th 10:00
    kept = [d for d in range(10, 20) if r.keeps_partition(dt.date(2026, 3, d))]
    assert kept == [13, 14, 15, 16]
    assert TimeRange().keeps_partition(dt.date(1999, 1, 1))
    assert TimeRange(start=T).keeps_partition(dt.date(2099, 1, 1))
    assert not TimeRange(end=T).keeps_partition(dt.date(2026, 3, 16))


def test_partition_day_is_read_from_the_key() -> None:
    key = "decisions/ns/m/1/dt=2026-03-14/batch-1.parquet"
    assert partition_day(key) == dt.date(2026, 3, 14)
    assert partition_day("dt=2026-03-14/") == dt.date(2026, 3, 14)
    assert partition_day("decisions/ns/m/1/other/x.parquet") is None
    assert partition_day("decisions/ns/m/1/dt=2026-13-40/x.parquet") is None


# --------------------------------------------------------------------------- filters


def test_status_patterns() -> None:
    assert parse_status("200") == "200" and parse_status("4XX") == "4xx"
    for bad in ("ok", "20", "600", "4x"):
        with pytest.raises(Exception, match="expected an HTTP status"):
            parse_status(bad)
    assert status_matches("4xx", 404) and not status_matches("4xx", 500)
    assert status_matches("200", 200) and not status_matches("200", 201)


def test_record_filter_matches_every_field() -> None:
    r = record(version="2", status=503)
    assert RecordFilter().matches(r)
    assert RecordFilter(version="2", status="5xx", request_id="r1").matches(r)
    assert not RecordFilter(version="1").matches(r)
    assert not RecordFilter(status="200").matches(r)
    assert not RecordFilter(request_id="r2").matches(r)
    assert not RecordFilter(time=TimeRange(start=T + dt.timedelta(seconds=1))).matches(r)


def test_prefilter_selects_rows_before_decoding() -> None:
    ident = decisions.ModelIdentity("ns", "m", "1", SHA_A, (Column("x0", NUMBER),))
    batch = [
        decisions.Decision(f"r{i}", 1_773_482_400_000_000_000 + i, "v2", 200 if i % 2 else 400)
        for i in range(6)
    ]
    table = read_table(decisions.encode_batch(batch, ident))
    assert [r.request_id for r in decode_table(RecordFilter(request_id="r3").prefilter(table))] == [
        "r3"
    ]
    kept = decode_table(RecordFilter(status="400").prefilter(table))
    assert [r.request_id for r in kept] == ["r0", "r2", "r4"]
    assert RecordFilter(status="4xx").prefilter(table).num_rows == 6  # classes: after decoding
    assert isinstance(table, pa.Table)


def test_the_default_prefix_is_the_servers() -> None:
    assert decisions_cli.DEFAULT_PREFIX == decisions.DEFAULT_PREFIX


# --------------------------------------------------------------------------- artifacts


def test_the_manifest_of_the_version_when_its_digest_is_the_records() -> None:
    chosen, notes = choose_manifest([manifest("1", SHA_A), manifest("2", SHA_B)], "1", SHA_A)
    assert chosen is not None and chosen.version == "1" and notes == []


def test_a_version_name_archived_with_two_digests_runs_the_records_own() -> None:
    views = [manifest("1", SHA_A), manifest("1", SHA_B)]  # deleted, re-created, archived again
    for sha in (SHA_A, SHA_B):
        chosen, notes = choose_manifest(views, "1", sha)
        assert chosen is not None and chosen.sha256 == sha and notes == []
    chosen, notes = choose_manifest(views, "1", SHA_C)
    assert chosen is None
    assert notes == [f"the archived version 1 has sha256 {SHA_A}, {SHA_B}, not the record's "
                     f"{SHA_C} (the version name was reused for other bytes)"]  # fmt: skip


def test_a_reused_version_name_finds_the_digest_elsewhere_or_nothing() -> None:
    views = [manifest("1", SHA_A), manifest("3", SHA_B), manifest("2", SHA_B)]
    chosen, notes = choose_manifest(views, "1", SHA_B)
    assert chosen is not None and chosen.version == "2"  # the earliest with the digest
    assert notes == [
        f"the archived version 1 has sha256 {SHA_A}, not the record's {SHA_B} (the version "
        "name was reused for other bytes)",
        "the archived version 2 has the record's sha256: using it",
    ]
    chosen, notes = choose_manifest(views, "1", SHA_C)
    assert chosen is None and "not the record's" in notes[0] and len(notes) == 1
    chosen, notes = choose_manifest(views, "7", SHA_C)
    assert chosen is None and notes == ["version 7 is not archived"]


def test_the_live_model_is_used_only_with_the_records_digest() -> None:
    obj = {
        "spec": {"version": "4", "artifact": {"uri": "s3://models/m/4", "sha256": SHA_A}},
        "status": {"history": [{"version": "3", "sha256": SHA_B, "uri": "s3://models/m/3"}]},
    }
    assert choose_live(obj, SHA_A) == (
        "s3://models/m/4",
        "the live MLModel's spec.artifact (version 4)",
    )
    assert choose_live(obj, SHA_B) == (
        "s3://models/m/3",
        "the live MLModel's status.history (version 3)",
    )
    uri, why = choose_live(obj, SHA_C)
    assert (
        uri is None
        and why == f"the live MLModel names sha256 {SHA_A} (version 4), not the record's"
    )


# --------------------------------------------------------------------------- output, parser


def test_outputs_summary() -> None:
    assert outputs_summary(record(outputs={"predict": [1, 0]})) == "predict=[1,0]"
    failed = record(status=400, error="input has 3 features", outputs={})
    assert outputs_summary(failed) == "input has 3 features"
    long = outputs_summary(record(outputs={"predict_proba": [[0.123456789] * 3] * 4}), limit=30)
    assert len(long) == 30 and long.endswith("...")
    nan = outputs_summary(record(outputs={"predict": [float("nan")]}))
    assert nan == "predict=[null]"


def test_the_commands_are_registered() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["decisions", "ls", "churn", "--from", "2026-03-01", "--status", "5xx"]
    )
    assert (args.model, args.start, args.status, args.limit, args.prefix) == (
        "churn",
        "2026-03-01",
        "5xx",
        50,
        "decisions",
    )
    args = parser.parse_args(["decisions", "show", "req-1", "churn", "-n", "prod"])
    assert (args.request_id, args.model, args.namespace) == ("req-1", "churn", "prod")
    args = parser.parse_args(
        ["audit", "--model", "m", "--from", "a", "--to", "b", "--json", "r.json"]
    )
    assert (args.json, args.html, args.allow_version_skew) == ("r.json", None, False)
    args = parser.parse_args(["explain", "--request-id", "r", "--row", "3", "--plot", "p.png"])
    assert (args.row, args.plot, args.background) == (3, "p.png", 100)


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--model", "m", "--from", "2026-03-01"],  # --to is required
        ["explain", "--request-id", "r", "--row", "0"],
        ["decisions", "ls", "--limit", "-1"],
        ["decisions", "ls", "--status", "teapot"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_reversed_range_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLMODEL_S3_ENDPOINT", "127.0.0.1:9")
    monkeypatch.setenv("MLMODEL_S3_ACCESS_KEY", "k")
    monkeypatch.setenv("MLMODEL_S3_SECRET_KEY", "s")
    code = main(["decisions", "ls", "--from", "2026-03-02", "--to", "2026-03-01"])
    assert code == 2
    assert (
        "mlmodel decisions ls: --from 2026-03-02T00:00:00Z is not before --to"
        in capsys.readouterr().err
    )


def test_cli_error_is_the_archive_commands_one() -> None:
    assert issubclass(UsageError, CliError)
