"""`mlmodel run --priority/--peering-lifetime/--readiness`: distinct kopf peering priorities
for replicas of one Deployment, the keep-alive lifetime, the readiness path."""

from __future__ import annotations

import pytest

from mlmodel_operator.cli import build_parser, peering_priority
from mlmodel_operator.peering import DEFAULT_LIFETIME, MIN_LIFETIME


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


def test_the_peering_lifetime_defaults_to_ten_seconds_and_has_a_floor(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert build_parser().parse_args(["run"]).peering_lifetime == DEFAULT_LIFETIME == 10
    assert build_parser().parse_args(["run", "--peering-lifetime=30"]).peering_lifetime == 30
    for value in ("5", "ten", "7.5"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["run", f"--peering-lifetime={value}"])
        assert f"expected whole seconds, at least {MIN_LIFETIME}" in capsys.readouterr().err


def test_the_readiness_is_served_beside_the_liveness_by_default() -> None:
    args = build_parser().parse_args(["run"])
    assert (args.liveness, args.readiness) == ("http://0.0.0.0:8081/healthz", "/readyz")
