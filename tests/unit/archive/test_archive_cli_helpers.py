"""The pure parts of the archive commands: timestamps, tables, ordering, patches, progress."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import yaml

from mlmodel_operator.archive_cli import (
    CliError,
    Progress,
    _version_key,
    format_table,
    parse_timestamp,
    rollback_patch,
)
from mlmodel_operator.cli import build_parser
from mlmodel_operator.manifest import MANIFEST_FORMAT, ManifestView


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-14", dt.datetime(2026, 3, 14, tzinfo=dt.UTC)),
        ("2026-03-14T10:42:00Z", dt.datetime(2026, 3, 14, 10, 42, tzinfo=dt.UTC)),
        ("2026-03-14T11:42:00+01:00", dt.datetime(2026, 3, 14, 10, 42, tzinfo=dt.UTC)),
        ("2026-03-14 10:42", dt.datetime(2026, 3, 14, 10, 42, tzinfo=dt.UTC)),  # naive is UTC
    ],
)
def test_timestamps(text: str, expected: dt.datetime) -> None:
    assert parse_timestamp(text) == expected


def test_a_bad_timestamp_says_what_would_do() -> None:
    with pytest.raises(CliError, match="expected ISO 8601 such as 2026-03-14T10:00:00Z"):
        parse_timestamp("last march")


def test_versions_sort_numerically() -> None:
    assert sorted(["10", "9", "2.1", "2.10", "2.2", "a"], key=_version_key) == [
        "2.1", "2.2", "2.10", "9", "10", "a",
    ]  # fmt: skip


def test_table_aligns_columns() -> None:
    assert format_table([["A", "BB"], ["ccc", "d"]]) == "A    BB\nccc  d"


def test_rollback_patch_points_at_the_archived_copy() -> None:
    view = ManifestView.parse(
        {"format": MANIFEST_FORMAT, "model": "churn", "namespace": "n", "version": "1",
         "sha256": "a" * 64, "size": 3, "artifactUri": "s3://model-archive/n/churn/1/model.joblib",
         "sourceUri": "s3://models/churn/1/model.joblib"},
        "test",
    )  # fmt: skip
    patch = rollback_patch(view)
    assert patch == {"spec": {"version": "1", "artifact": {
        "uri": "s3://model-archive/n/churn/1/model.joblib", "sha256": "a" * 64}}}  # fmt: skip
    assert yaml.safe_load(yaml.safe_dump(patch)) == patch


def test_progress_off_a_terminal_prints_quarters() -> None:
    out = io.StringIO()
    progress = Progress("s3://b/k", 4 << 20, out)
    for _ in range(16):
        progress.add(1 << 18)
    progress.done()
    lines = out.getvalue().splitlines()
    assert lines[0] == "downloading s3://b/k (4.0 MiB)"
    assert lines[-1] == "  4.0 MiB / 4.0 MiB (100%)"
    assert len(lines) <= 6


def test_the_commands_are_wired_into_mlmodel() -> None:
    parser = build_parser()
    args = parser.parse_args(["replay", "churn", "--at", "2026-03-14", "--input", "x.csv"])
    assert (args.model, args.at, args.version, args.namespace) == ("churn", "2026-03-14", None,
                                                                  "default")  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(["replay", "churn", "--version", "1", "--at", "2026-03-14"])
    args = parser.parse_args(["rollback", "churn", "--to", "2", "--print", "-n", "team-a"])
    assert (args.to, args.print, args.namespace) == ("2", True, "team-a")
    args = parser.parse_args(["archive", "ls"])
    assert args.model is None
