"""conditions: metav1.Condition dicts, merged without losing lastTransitionTime."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone

import pytest

from mlmodel_operator import conditions as c

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_make_condition() -> None:
    assert c.make_condition(c.READY, True, c.Reason.SERVING, "2/2 replicas ready", 7, T0) == {
        "type": "Ready",
        "status": "True",
        "reason": "Serving",
        "message": "2/2 replicas ready",
        "lastTransitionTime": "2026-01-02T03:04:05Z",
        "observedGeneration": 7,
    }
    assert c.make_condition(c.DEGRADED, False, c.Reason.AS_EXPECTED, "", 1, T0)["status"] == "False"
    unknown = c.make_condition(
        c.ARTIFACT_VERIFIED, "Unknown", c.Reason.VERIFICATION_PENDING, "", 1, T0
    )
    assert unknown["status"] == "Unknown"


def test_times_are_written_in_utc() -> None:
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert c.format_time(plus_two) == "2026-01-02T03:04:05Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        c.format_time(datetime(2026, 1, 2))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"status": "yes"}, "not True, False or Unknown"),
        ({"reason": "not camel case"}, "CamelCase"),
        ({"reason": ""}, "CamelCase"),
        ({"type": "has space"}, "qualified name"),
        ({"generation": -1}, "negative"),
    ],
)
def test_make_condition_rejects_what_the_apiserver_would(
    kwargs: dict[str, object], match: str
) -> None:
    args: dict[str, object] = {
        "type": c.READY,
        "status": True,
        "reason": c.Reason.SERVING,
        "message": "",
        "generation": 1,
        "now": T0,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        c.make_condition(**args)  # type: ignore[arg-type]


def test_long_messages_are_cut_to_the_api_limit() -> None:
    condition = c.make_condition(c.READY, False, c.Reason.DEPLOYING, "x" * 40000, 1, T0)
    assert len(condition["message"]) == c.MAX_MESSAGE_LENGTH
    assert condition["message"].endswith("...")


def test_set_condition_appends_a_new_type() -> None:
    ready = c.make_condition(c.READY, True, c.Reason.SERVING, "ok", 1, T0)
    assert c.set_condition([], ready) == [ready]


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    old = [c.make_condition(c.READY, True, c.Reason.SERVING, "1/1", 1, T0)]
    new = c.make_condition(c.READY, True, c.Reason.SERVING, "2/2", 2, T1)
    result = c.set_condition(old, new)
    assert result == [{**new, "lastTransitionTime": "2026-01-02T03:04:05Z"}]
    assert result[0]["message"] == "2/2"
    assert result[0]["observedGeneration"] == 2


def test_set_condition_moves_transition_time_when_status_changes() -> None:
    old = [c.make_condition(c.READY, True, c.Reason.SERVING, "", 1, T0)]
    new = c.make_condition(c.READY, False, c.Reason.NO_READY_REPLICAS, "", 2, T1)
    assert c.set_condition(old, new) == [new]
    assert c.set_condition(old, new)[0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"


def test_set_condition_keeps_order_and_does_not_mutate() -> None:
    ready = c.make_condition(c.READY, True, c.Reason.SERVING, "", 1, T0)
    degraded = c.make_condition(c.DEGRADED, False, c.Reason.AS_EXPECTED, "", 1, T0)
    verified = c.make_condition(c.ARTIFACT_VERIFIED, True, c.Reason.DIGEST_VERIFIED, "", 1, T0)
    conditions = [ready, degraded, verified]
    before = copy.deepcopy(conditions)
    new = c.make_condition(c.DEGRADED, True, c.Reason.ROLLOUT_TIMED_OUT, "v2 not ready", 2, T1)
    result = c.set_condition(conditions, new)
    assert conditions == before
    assert [x["type"] for x in result] == ["Ready", "Degraded", "ArtifactVerified"]
    assert result[1] == new
    assert result[0] is not ready  # copies, so a caller may edit the result freely


def test_set_condition_drops_duplicates_of_its_type() -> None:
    a = c.make_condition(c.READY, True, c.Reason.SERVING, "a", 1, T0)
    b = c.make_condition(c.READY, False, c.Reason.DEPLOYING, "b", 1, T0)
    new = c.make_condition(c.READY, True, c.Reason.SERVING, "new", 2, T1)
    assert c.set_condition([a, b], new) == [{**new, "lastTransitionTime": a["lastTransitionTime"]}]


def test_set_conditions_applies_each_in_order() -> None:
    old = [c.make_condition(c.READY, False, c.Reason.DEPLOYING, "", 1, T0)]
    new = [
        c.make_condition(c.READY, True, c.Reason.SERVING, "", 2, T1),
        c.make_condition(c.PROGRESSING, False, c.Reason.ROLLOUT_COMPLETE, "", 2, T1),
    ]
    assert c.set_conditions(old, new) == new


def test_get_condition_and_is_true() -> None:
    ready = c.make_condition(c.READY, True, c.Reason.SERVING, "", 1, T0)
    conditions = [ready]
    found = c.get_condition(conditions, c.READY)
    assert found == ready
    assert found is not ready
    assert c.get_condition(conditions, c.DEGRADED) is None
    assert c.is_true(conditions, c.READY)
    assert not c.is_true(conditions, c.DEGRADED)
    assert not c.is_true([{**ready, "status": "Unknown"}], c.READY)


def test_constants() -> None:
    assert set(c.CONDITION_TYPES) == {
        "Ready",
        "Progressing",
        "Degraded",
        "ArtifactVerified",
        "Archived",
        "Monitored",
        "SpecValid",
        "DecisionLogReady",
    }
    assert c.Phase.ALL == (
        "Pending",
        "Deploying",
        "Serving",
        "Degraded",
        "Failed",
        "Retiring",
        "Deleting",
    )
    reasons = [v for k, v in vars(c.Reason).items() if k.isupper()]
    assert len(reasons) == len(set(reasons))
    for reason in reasons:
        c.make_condition(c.READY, True, reason, "", 0, T0)  # every reason is valid
