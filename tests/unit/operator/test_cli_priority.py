"""`mlmodel run --priority`: distinct kopf peering priorities for replicas of one Deployment."""

from __future__ import annotations

import pytest

from mlmodel_operator.cli import build_parser, peering_priority


def test_oldest_gives_an_older_process_the_higher_priority() -> None:
    older = peering_priority("oldest", now_ns=1_700_000_000_000_000_000)
    younger = peering_priority("oldest", now_ns=1_700_000_000_000_001_000)
    assert older > younger


def test_a_number_is_taken_as_it_is_and_the_default_is_kopfs() -> None:
    assert peering_priority("100") == 100
    args = build_parser().parse_args(["run"])
    assert peering_priority(args.priority) == 0


def test_anything_else_is_refused_with_what_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--priority", "newest"])
    assert "expected an integer or 'oldest'" in capsys.readouterr().err
