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
    choose_archive,
    format_table,
    parse_timestamp,
    rollback_conflict,
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


SHA_A, SHA_B = "a1" * 32, "b2" * 32


def archived(sha256: str, deployed: str, folder: str) -> ManifestView:
    return ManifestView.parse(
        {"format": MANIFEST_FORMAT, "model": "churn", "namespace": "n", "version": "1",
         "sha256": sha256, "size": 3, "artifactUri": f"s3://a/n/churn/1/{folder}model.joblib",
         "deployedAt": deployed, "retiredAt": deployed.replace("01", "05")},
        f"s3://a/n/churn/1/{folder}manifest.json",
    )  # fmt: skip


FIRST = archived(SHA_A, "2026-03-01T09:00:00Z", "")
SECOND = archived(SHA_B, "2026-03-07T09:00:00Z", f"sha256-{SHA_B}/")


def test_one_archive_of_a_version_is_chosen_without_a_digest() -> None:
    assert choose_archive([FIRST], "churn", "1", None, "how") is FIRST
    assert choose_archive([FIRST, FIRST], "churn", "1", None, "how") is FIRST  # same bytes


def test_a_reused_version_name_is_never_guessed() -> None:
    with pytest.raises(CliError) as info:
        choose_archive([SECOND, FIRST], "churn", "1", None, "choose with --sha256 DIGEST")
    message = str(info.value)
    assert message.startswith("version 1 of model churn was archived 2 times with different")
    assert f"sha256 {SHA_A} (served 2026-03-01T09:00:00Z to 2026-03-05T09:00:00Z, " in message
    assert f"s3://a/n/churn/1/sha256-{SHA_B}/)" in message
    assert message.index(SHA_A) < message.index(SHA_B)  # in the order they served
    assert message.endswith("choose with --sha256 DIGEST")


def test_a_digest_or_its_prefix_chooses() -> None:
    assert choose_archive([FIRST, SECOND], "churn", "1", SHA_B[:8], "") is SECOND
    assert choose_archive([FIRST, SECOND], "churn", "1", SHA_A, "") is FIRST
    with pytest.raises(CliError, match=f"has sha256 {'c' * 64}; its archives: sha256 {SHA_A}"):
        choose_archive([FIRST, SECOND], "churn", "1", "c" * 64, "")
    with pytest.raises(CliError, match="has a sha256 starting cccccccc; its archives"):
        choose_archive([FIRST], "churn", "1", "cccccccc", "")


def test_sha256_option_takes_a_digest_or_a_long_enough_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    for command in (["replay", "churn", "--version", "1", "--input", "x"],
                    ["archive", "show", "churn", "1"], ["rollback", "churn", "--to", "1"]):  # fmt: skip
        assert parser.parse_args([*command, "--sha256", SHA_B.upper()]).sha256 == SHA_B
        assert parser.parse_args([*command, "--sha256", SHA_B[:8]]).sha256 == SHA_B[:8]
        for bad in (SHA_B[:7], "x" * 12, SHA_B + "0"):
            with pytest.raises(SystemExit):
                parser.parse_args([*command, "--sha256", bad])
    assert "at least its first 8" in capsys.readouterr().err


def test_sha256_with_at_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["replay", "churn", "--at", "2026-03-03", "--sha256", SHA_A, "--input", "x"]
    )
    assert args.func(args) == 2
    assert "--at takes the digest of what served from the ledger" in capsys.readouterr().err


def test_rollback_refuses_a_name_the_model_gave_other_bytes() -> None:
    live = {"spec": {"version": "3", "artifact": {"sha256": "c" * 64}},
            "status": {"history": [{"version": "1", "sha256": SHA_B}]}}  # fmt: skip
    conflict = rollback_conflict(live, FIRST)
    assert conflict is not None
    assert f"status.history names version 1 with sha256 {SHA_B}" in conflict
    assert "spec.artifact.uri s3://a/n/churn/1/model.joblib" in conflict
    assert rollback_conflict(live, SECOND) is None
    assert rollback_conflict({"spec": {"version": "1"}}, FIRST) is None
