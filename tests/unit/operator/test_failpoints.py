"""MLMODEL_FAILPOINT: only known points are accepted, and an unset one costs nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlmodel_operator import failpoints


def test_known_points_parse_and_unknown_ones_are_named_with_the_accepted() -> None:
    assert failpoints.parse(None) == frozenset()
    assert failpoints.parse(" after-switch, before-delete ") == {"after-switch", "before-delete"}
    with pytest.raises(failpoints.FailpointError) as info:
        failpoints.parse("after-switch,after-lunch")
    message = str(info.value)
    assert "MLMODEL_FAILPOINT='after-switch,after-lunch'" in message
    assert "unknown point(s) after-lunch" in message
    assert "accepted: after-deployment-apply, " in message


def test_an_armed_point_exits_at_once_and_says_which() -> None:
    code = (
        "from mlmodel_operator import failpoints as f\n"
        "f.arm('after-delete')\n"
        "f.reached('after-switch')\n"
        "print('passed after-switch', flush=True)\n"
        "try:\n"
        "    f.reached('after-delete')\n"
        "finally:\n"
        "    print('a finally block ran')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == failpoints.EXIT_CODE
    assert done.stdout == "passed after-switch\n"  # no cleanup after the point: a crash
    assert "failpoint after-delete reached" in done.stderr
