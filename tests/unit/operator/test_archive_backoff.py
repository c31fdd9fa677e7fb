"""The archive's retry schedule: exponential from 10 s, capped at 5 min, with jitter."""

from __future__ import annotations

import pytest

from mlmodel_operator.reconcile import archive_retry_delay


def test_doubles_from_ten_seconds_to_five_minutes_then_stays() -> None:
    delays = [archive_retry_delay(n, 1.0) for n in range(1, 10)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300, 300]


def test_jitter_only_shortens_by_up_to_a_fifth() -> None:
    shortest = [archive_retry_delay(n, 0.0) for n in range(1, 8)]
    assert shortest == pytest.approx([8, 16, 32, 64, 128, 240, 240])
    for attempt in range(1, 40):
        top = archive_retry_delay(attempt, 1.0)
        for rand in (0.0, 0.25, 0.5, 0.999):
            assert 0.8 * top <= archive_retry_delay(attempt, rand) <= top


def test_no_hot_loop_an_hour_of_outage_costs_fewer_than_twenty_attempts() -> None:
    elapsed, attempts = 0.0, 0
    while elapsed < 3600:
        attempts += 1
        elapsed += archive_retry_delay(attempts, 0.0)  # the shortest schedule
    assert attempts <= 20  # every 10 s would be 360


def test_a_huge_attempt_count_does_not_overflow() -> None:
    assert archive_retry_delay(10_000, 1.0) == 300


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (1, -0.1), (1, 1.5)])
def test_out_of_range_arguments_are_refused(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        archive_retry_delay(attempt, rand)
