"""Ledger keys sort by time, are deterministic, and answer "which version served at T"."""

from __future__ import annotations

import datetime as dt
import random

from mlmodel_operator import ledger
from mlmodel_operator.ledger import (
    LedgerRecord,
    build_record,
    ledger_key,
    serving_at,
)
from mlmodel_operator.spec import parse_model

T0 = dt.datetime(2026, 3, 14, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def test_keys_sort_by_time_across_digits_and_days() -> None:
    times = [at(0), at(0.000001), at(9), at(10), at(86400 * 40), at(-3600)]
    keys = [ledger_key("team-a", "churn", ledger.DEPLOYED, "1", t) for t in times]
    assert sorted(keys) == [keys[i] for i in sorted(range(len(times)), key=lambda i: times[i])]


def test_same_instant_sorts_in_lifecycle_order() -> None:
    kinds = [ledger.DELETED, ledger.SWITCHED, ledger.RETIRED, ledger.DEPLOYED,
             ledger.ARCHIVED, ledger.RETIRING]  # fmt: skip
    keys = {ledger_key("ns", "m", k, "1", T0): k for k in kinds}
    assert [keys[k] for k in sorted(keys)] == [
        ledger.DEPLOYED, ledger.SWITCHED, ledger.RETIRING, ledger.ARCHIVED,
        ledger.RETIRED, ledger.DELETED,
    ]  # fmt: skip


def test_key_is_deterministic_and_timezone_independent() -> None:
    a = ledger_key("ns", "m", ledger.SWITCHED, "2", T0)
    b = ledger_key(
        "ns", "m", ledger.SWITCHED, "2", T0.astimezone(dt.timezone(dt.timedelta(hours=5)))
    )
    assert a == b == "ns/m/ledger/20260314T120000.000000Z-2-TrafficSwitched-v2.json"
    assert ledger_key("ns", "m", ledger.SWITCHED, "3", T0) != a


def rec(kind: str, version: str, seconds: float) -> LedgerRecord:
    return LedgerRecord(kind, version, at(seconds), {"uri": f"s3://m/{version}"})


def test_record_round_trips() -> None:
    m = parse_model({"metadata": {"name": "churn", "namespace": "ns", "uid": "u"},
                     "spec": {"version": "1", "artifact": {"uri": "s3://models/a/b",
                                                           "sha256": "a" * 64}}})  # fmt: skip
    raw = build_record(m, ledger.SWITCHED, "1", {"previous": None}, at(1))
    back = LedgerRecord.parse(raw)
    assert (back.kind, back.version, back.at) == (ledger.SWITCHED, "1", at(1))


HISTORY = [
    rec(ledger.DEPLOYED, "1", 0),
    rec(ledger.SWITCHED, "1", 5),
    rec(ledger.DEPLOYED, "2", 100),
    rec(ledger.SWITCHED, "2", 105),
    rec(ledger.RETIRING, "1", 105),
    rec(ledger.ARCHIVED, "1", 110),
    rec(ledger.RETIRED, "1", 110),
    rec(ledger.SWITCHED, "3", 200),
    rec(ledger.ARCHIVED, "3", 300),
    rec(ledger.DELETED, "3", 300),
]


def test_which_version_served_when() -> None:
    shuffled = HISTORY[:]
    random.Random(1).shuffle(shuffled)  # listing order must not matter
    assert serving_at(shuffled, at(1)).version is None  # deployed, not yet switched
    s = serving_at(shuffled, at(50))
    assert (s.version, s.since, s.until) == ("1", at(5), at(105))
    assert serving_at(shuffled, at(105)).version == "2"  # the switch instant belongs to v2
    assert serving_at(shuffled, at(104.9)).version == "1"
    s = serving_at(shuffled, at(250))
    assert (s.version, s.until) == ("3", at(300))
    gone = serving_at(shuffled, at(301))
    assert gone.version is None and gone.until == at(300)


def test_still_serving_has_no_end() -> None:
    s = serving_at(HISTORY[:4], at(1000))
    assert s.version == "2" and s.until is None


def test_a_version_name_reused_after_delete_serves_the_digest_of_its_switch() -> None:
    """Version 1 deleted and re-created with other bytes: a time of each incarnation
    answers version 1 with the digest that served then."""
    a, b = "a" * 64, "b" * 64
    records = [
        LedgerRecord(ledger.SWITCHED, "1", at(0), {"uri": "s3://m/a", "sha256": a}),
        LedgerRecord(ledger.DELETED, "1", at(100), {}),
        LedgerRecord(ledger.SWITCHED, "1", at(200), {"uri": "s3://m/b", "sha256": b}),
    ]
    first, gap, second = (serving_at(records, at(t)) for t in (50, 150, 250))
    assert (first.version, first.sha256, first.until) == ("1", a, at(100))
    assert gap.version is None and gap.sha256 is None
    assert (second.version, second.sha256, second.since) == ("1", b, at(200))
    # a record written before switches named their digest: no digest, never a guess
    assert serving_at([rec(ledger.SWITCHED, "1", 0)], at(1)).sha256 is None


def test_a_key_parses_back_to_its_instant_kind_and_version() -> None:
    when = at(0.5)
    for version in ("1", "2-rc.1", "v-7"):
        key = ledger_key("ns", "m", ledger.RETIRING, version, when)
        assert ledger.parse_key(key) == (when, ledger.RETIRING, version)
    assert ledger.parse_key("ns/m/ledger/notes.txt") is None
