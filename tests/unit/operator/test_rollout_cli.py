"""`mlmodel rollout status|promote|abort` without a server: the summary rendered from
status dicts as the planner writes them, the exit codes, the watch loop on a fake clock,
promote/abort against a fake cluster, and the argument errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

import pytest

from mlmodel_operator import rollout_cli
from mlmodel_operator.cli import main
from mlmodel_operator.plan import ANN_ABORT, ANN_PROMOTE
from mlmodel_operator.rollout_cli import (
    BLOCKED,
    EXIT_API,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    NO_ROLLOUT,
    PROGRESSING,
    STARTING,
    Cluster,
    CommandError,
    RolloutView,
    format_duration,
    render,
    steer,
    watch,
)

NOW = dt.datetime(2026, 3, 14, 10, 42, 0, tzinfo=dt.UTC)
SHA2 = "9f2c1a0b3c4d" + "e" * 52
STEPS = [{"weight": 10, "pauseSeconds": 60}, {"weight": 25, "pauseSeconds": 120},
         {"weight": 50, "pauseSeconds": 300}]  # fmt: skip


def mlmodel(
    status: Mapping[str, Any] | None,
    *,
    version: str = "2",
    strategy: str = "canary",
    analysis: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    rollout: dict[str, Any] = {"strategy": strategy}
    if strategy != "switch":
        rollout["steps"] = STEPS
    if analysis is not None:
        rollout["analysis"] = dict(analysis)
    obj: dict[str, Any] = {
        "metadata": {"name": "churn", "namespace": "team-a", "resourceVersion": "41",
                     "annotations": dict(annotations or {})},
        "spec": {"version": version, "artifact": {"uri": "s3://m/churn/2.joblib", "sha256": SHA2},
                 "rollout": rollout},
    }  # fmt: skip
    if status is not None:
        obj["status"] = dict(status)
    return obj


def running_canary(**extra: Any) -> dict[str, Any]:
    return {
        "strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2,
        "steps": 3, "step": 2, "weight": 25, "effectiveWeight": 25,
        "stepStartedAt": "2026-03-14T10:40:40Z", "result": "Progressing", **extra,
    }  # fmt: skip


CANARY_CHECKS = {
    "checks": [
        {"name": "errorRatio", "value": 0.0012, "limit": 0.01, "passed": True},
        {"name": "p99LatencyMs", "value": 85.3, "limit": 250.0, "passed": True},
    ],
    "requests": 12,
    "message": "12/20 requests; errorRatio 0.0012 (at most 0.01); p99LatencyMs 85.3 (at most 250)",
}


def view_of(obj: Mapping[str, Any]) -> RolloutView:
    return RolloutView.from_object(obj)


# --------------------------------------------------------------------------- rendering


def test_a_running_canary_shows_versions_step_time_weights_requests_and_each_check() -> None:
    obj = mlmodel(
        {"phase": "Deploying", "activeVersion": "1", "rollout": running_canary(**CANARY_CHECKS)},
        analysis={"maxErrorRatio": 0.01, "maxP99LatencyMs": 250},
    )
    view = view_of(obj)
    text = render(view, NOW)
    assert (view.state, view.exit_code) == (PROGRESSING, EXIT_OK)
    lines = text.splitlines()
    assert lines[0] == "MLModel team-a/churn: canary of version 2 in progress (phase Deploying)"
    assert lines[1] == "  versions   1 (stable) -> 2 (candidate, sha256 9f2c1a0b3c4d...)"
    assert lines[2] == "  step       2/3, running for 1m20s (lasts at least 2m)"
    assert lines[3].startswith("  weight     25% asked, 25% effective (the candidate's share")
    assert lines[4].startswith("  requests   12 requests this step, 20 needed before it is judged")
    assert lines[5].split() == ["checks", "errorRatio", "0.0012", "at", "most", "0.01", "passed"]
    assert lines[6].split() == ["p99LatencyMs", "85.3", "at", "most", "250", "passed"]
    assert lines[7] == f"  message    {CANARY_CHECKS['message']}"
    assert "mlmodel rollout promote churn -n team-a" in lines[8]
    assert "mlmodel rollout abort churn -n team-a" in lines[8]


def test_the_requests_needed_come_from_the_spec() -> None:
    obj = mlmodel(
        {"activeVersion": "1", "rollout": running_canary(**CANARY_CHECKS)},
        analysis={"maxErrorRatio": 0.01, "minRequests": 500},
    )
    assert "12 requests this step, 500 needed" in render(view_of(obj), NOW)
    assert view_of(obj).to_json(NOW)["minRequests"] == 500


def test_a_check_over_its_limit_on_too_few_requests_is_not_called_failed() -> None:
    checks = [{"name": "errorRatio", "value": 0.5, "limit": 0.01, "passed": False}]
    obj = mlmodel({"activeVersion": "1", "rollout": running_canary(checks=checks, requests=3)})
    text = render(view_of(obj), NOW)
    assert "over its limit (not judged yet: too few requests)" in text
    assert "FAILED" not in text


def test_a_running_shadow_speaks_of_copies_and_agreement() -> None:
    run = {
        "strategy": "shadow", "stable": "1", "candidate": "2", "candidateSha256": SHA2,
        "steps": 3, "step": 1, "weight": 10, "effectiveWeight": 10,
        "stepStartedAt": "2026-03-14T10:41:15Z", "result": "Progressing",
        "checks": [{"name": "agreement", "limit": 0.98}], "requests": 0,
        "message": "0/20 requests; agreement no data (at least 0.98)",
    }  # fmt: skip
    obj = mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": run}, strategy="shadow",
                  analysis={"minAgreement": 0.98})  # fmt: skip
    text = render(view_of(obj), NOW)
    assert text.startswith("MLModel team-a/churn: shadow of version 2 in progress")
    assert "step       1/3, running for 45s (lasts at least 1m)" in text
    assert "10% asked, 10% effective: copies of that share of requests go to the candidate; " \
        "version 1 answers every request" in text  # fmt: skip
    assert "0 compared copies this step, 20 needed" in text
    assert text.splitlines()[5].split() == [
        "checks", "agreement", "no", "data", "at", "least", "0.98", "not", "judged", "yet",
    ]  # fmt: skip
    assert view_of(obj).exit_code == EXIT_OK


def test_a_canary_without_analysis_says_its_steps_end_on_time() -> None:
    obj = mlmodel({"activeVersion": "1", "rollout": running_canary()})
    assert "checks     none (spec.rollout.analysis sets none" in render(view_of(obj), NOW)


def test_a_promoted_rollout_exits_0_and_says_why() -> None:
    last = {"strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2,
            "steps": 3, "step": 3, "result": "Promoted", "message": "every step held"}  # fmt: skip
    obj = mlmodel({"phase": "Serving", "activeVersion": "2", "lastRollout": last})
    view = view_of(obj)
    assert (view.state, view.exit_code) == ("Promoted", EXIT_OK)
    assert render(view, NOW).splitlines() == [
        "MLModel team-a/churn: no canary or shadow runs; version 2 serves (phase Serving)",
        "  last       canary of version 2 (stable 1): Promoted at step 3/3",
        "  why        every step held",
    ]


ROLLED_BACK = {
    "strategy": "canary", "stable": "1", "candidate": "2", "candidateSha256": SHA2, "steps": 3,
    "result": "RolledBack", "message": "step 2/3: errorRatio 0.2 (at most 0.01)",
    "checks": [{"name": "errorRatio", "value": 0.2, "limit": 0.01, "passed": False},
               {"name": "p99LatencyMs", "value": 40.0, "limit": 250.0, "passed": True}],
    "requests": 120,
}  # fmt: skip


def test_a_rolled_back_rollout_exits_1_and_names_the_failed_check() -> None:
    obj = mlmodel({"phase": "Degraded", "activeVersion": "1", "lastRollout": ROLLED_BACK})
    view = view_of(obj)
    assert (view.state, view.exit_code) == ("RolledBack", EXIT_FAILED)
    lines = render(view, NOW).splitlines()
    assert lines[0] == (
        "MLModel team-a/churn: no canary or shadow runs; version 1 serves (phase Degraded)"
    )
    assert lines[1] == "  last       canary of version 2 (stable 1): RolledBack"
    assert lines[2] == "  why        step 2/3: errorRatio 0.2 (at most 0.01)"
    assert lines[3].startswith("  requests   120 requests (20 needed")
    assert lines[4].split() == ["checks", "errorRatio", "0.2", "at", "most", "0.01", "FAILED"]
    assert lines[5].split()[-1] == "passed"
    assert lines[6] == "  next       apply a new spec.version to try again"


def test_an_aborted_rollout_exits_1() -> None:
    last = {
        **ROLLED_BACK,
        "result": "Aborted",
        "message": "aborted by hand (mlmodel rollout abort)",
    }
    last.pop("checks")
    view = view_of(mlmodel({"phase": "Degraded", "activeVersion": "1", "lastRollout": last}))
    assert (view.state, view.exit_code) == ("Aborted", EXIT_FAILED)
    assert "why        aborted by hand (mlmodel rollout abort)" in render(view, NOW)


def test_a_refused_version_the_spec_has_moved_past_is_history_not_a_failure() -> None:
    obj = mlmodel({"phase": "Serving", "activeVersion": "3", "lastRollout": ROLLED_BACK},
                  version="3", strategy="switch")  # fmt: skip
    view = view_of(obj)
    assert (view.state, view.exit_code) == (NO_ROLLOUT, EXIT_OK)
    text = render(view, NOW)
    assert "last       canary of version 2 (stable 1): RolledBack" in text
    assert "spec       now asks for version 3" in text


def test_no_rollout_ever_names_the_active_version() -> None:
    view = view_of(mlmodel({"phase": "Serving", "activeVersion": "1"}, version="1",
                           strategy="switch"))  # fmt: skip
    assert (view.state, view.exit_code) == (NO_ROLLOUT, EXIT_OK)
    assert render(view, NOW).splitlines() == [
        "MLModel team-a/churn: no canary or shadow has run; version 1 serves (phase Serving)",
        "  strategy   switch (spec.rollout.strategy): new versions take all traffic once Available",
    ]


def test_an_object_without_status_asks_whether_the_operator_runs() -> None:
    text = render(view_of(mlmodel(None)), NOW)
    assert text == (
        "MLModel team-a/churn: no canary or shadow has run; no version serves "
        "(no status yet: is the operator running?)"
    )


def test_a_candidate_that_starts_is_in_progress_and_one_that_cannot_start_exits_1() -> None:
    starting = view_of(mlmodel({"phase": "Deploying", "activeVersion": "1",
                                "message": "starting version 2 for its canary"}))  # fmt: skip
    assert (starting.state, starting.exit_code, starting.in_progress) == (STARTING, 0, True)
    assert "canary of version 2 is starting (phase Deploying)" in render(starting, NOW)
    why = "version 2 is not available after 600s (spec.rollout.readyTimeoutSeconds)"
    blocked = view_of(mlmodel({"phase": "Degraded", "activeVersion": "1", "message": why}))
    assert (blocked.state, blocked.exit_code, blocked.in_progress) == (BLOCKED, 1, False)
    assert f"why        {why}" in render(blocked, NOW)


def test_json_carries_the_status_as_written_and_the_derived_state() -> None:
    obj = mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": running_canary()})
    out = view_of(obj).to_json(NOW)
    assert out["rollout"] == running_canary()
    assert (out["state"], out["exitCode"], out["stepElapsedSeconds"], out["stepPauseSeconds"]) == (
        PROGRESSING, 0, 80, 120,
    )  # fmt: skip
    json.dumps(out)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59.9, "59s"), (60, "1m"), (80, "1m20s"), (3600, "1h00m"), (7380, "2h03m")],
)
def test_durations_read_as_people_write_them(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


# --------------------------------------------------------------------------- watch


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_watch_prints_each_change_once_and_stops_when_the_rollout_ends() -> None:
    step1 = running_canary(step=1, weight=10, effectiveWeight=10)
    ended = {**running_canary(step=3), "result": "Promoted", "message": "every step held"}
    reads = [
        mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": step1}),
        mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": step1}),
        mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": running_canary()}),
        mlmodel({"phase": "Retiring", "activeVersion": "2", "lastRollout": ended}),
    ]
    clock, shown = FakeClock(), []
    final = watch(lambda: view_of(reads.pop(0)), shown.append, 600, 2.0, clock, clock.sleep)
    assert final is not None and (final.state, final.exit_code) == ("Promoted", 0)
    assert [v.state for v in shown] == [PROGRESSING, PROGRESSING, "Promoted"]
    assert clock.t == 6.0


def test_watch_gives_up_at_its_limit() -> None:
    clock, shown = FakeClock(), []
    obj = mlmodel({"activeVersion": "1", "rollout": running_canary()})
    assert watch(lambda: view_of(obj), shown.append, 5, 2.0, clock, clock.sleep) is None
    assert len(shown) == 1 and clock.t == 5.0


# --------------------------------------------------------------------------- promote/abort


class FakeCluster(Cluster):
    """The two calls, on dicts; ``conflicts`` 409s first."""

    def __init__(self, obj: dict[str, Any] | None, conflicts: int = 0) -> None:
        self.obj, self.conflicts = obj, conflicts
        self.patches: list[tuple[dict[str, str], str]] = []

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if self.obj is None:
            raise CommandError(f"MLModel {name} in namespace {namespace} does not exist", 3)
        return self.obj

    def annotate(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> bool:
        self.patches.append((dict(annotations), resource_version))
        if self.conflicts:
            self.conflicts -= 1
            return False
        return True


def running_model(**kw: Any) -> dict[str, Any]:
    return mlmodel({"phase": "Deploying", "activeVersion": "1", "rollout": running_canary()}, **kw)


@pytest.mark.parametrize(("action", "key"), [("promote", ANN_PROMOTE), ("abort", ANN_ABORT)])
def test_promote_and_abort_annotate_the_running_candidate(action: str, key: str) -> None:
    cluster = FakeCluster(running_model(), conflicts=1)
    said = steer(cluster, "team-a", "churn", action, None)
    assert cluster.patches == [({key: "2"}, "41"), ({key: "2"}, "41")]  # read again after a 409
    assert said.startswith(f"MLModel churn in namespace team-a: asked the operator to {action} "
                           f"version 2 (canary of version 2, step 2/3, stable 1; annotation "
                           f"{key}=2).")  # fmt: skip
    assert said.endswith("Follow it: mlmodel rollout status churn -n team-a --watch")


def test_promote_with_no_rollout_running_is_refused_and_says_what_is_accepted() -> None:
    cluster = FakeCluster(mlmodel({"phase": "Degraded", "activeVersion": "1",
                                   "lastRollout": ROLLED_BACK}))  # fmt: skip
    with pytest.raises(CommandError) as err:
        steer(cluster, "team-a", "churn", "promote", None)
    assert err.value.code == EXIT_FAILED and not cluster.patches
    assert str(err.value) == (
        "MLModel churn in namespace team-a: no canary or shadow runs; the last one (canary of "
        "version 2) ended RolledBack; promote is accepted only while status.rollout names a "
        "candidate (see mlmodel rollout status)"
    )


def test_a_version_other_than_the_running_candidate_is_refused() -> None:
    cluster = FakeCluster(running_model())
    with pytest.raises(CommandError, match="--version 3 is not the running candidate; accepted: "
                       "--version 2"):  # fmt: skip
        steer(cluster, "team-a", "churn", "abort", "3")
    assert not cluster.patches
    steer(cluster, "team-a", "churn", "abort", "2")
    assert cluster.patches == [({ANN_ABORT: "2"}, "41")]


def test_an_annotation_already_set_is_not_written_again_and_an_abort_wins() -> None:
    cluster = FakeCluster(running_model(annotations={ANN_PROMOTE: "2"}))
    assert "was already asked" in steer(cluster, "team-a", "churn", "promote", None)
    assert not cluster.patches
    aborting = FakeCluster(running_model(annotations={ANN_ABORT: "2"}))
    with pytest.raises(CommandError, match="an abort goes before a promotion"):
        steer(aborting, "team-a", "churn", "promote", None)
    # an annotation naming an earlier candidate is not this one's: written over
    old = FakeCluster(running_model(annotations={ANN_PROMOTE: "1"}))
    steer(old, "team-a", "churn", "promote", None)
    assert old.patches == [({ANN_PROMOTE: "2"}, "41")]


def test_a_starting_candidate_cannot_be_promoted_yet() -> None:
    cluster = FakeCluster(mlmodel({"phase": "Deploying", "activeVersion": "1"}))
    with pytest.raises(CommandError, match=r"is starting .* accepted once its first step runs"):
        steer(cluster, "team-a", "churn", "promote", None)


# --------------------------------------------------------------------------- the command line


def use(monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster) -> None:
    monkeypatch.setattr(rollout_cli, "connect", lambda kubeconfig: cluster)


def test_status_exit_codes_through_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, FakeCluster(mlmodel({"phase": "Degraded", "activeVersion": "1",
                                          "lastRollout": ROLLED_BACK})))  # fmt: skip
    assert main(["rollout", "status", "churn", "-n", "team-a"]) == EXIT_FAILED
    assert "RolledBack" in capsys.readouterr().out
    assert main(["rollout", "status", "churn", "-n", "team-a", "-o", "json"]) == EXIT_FAILED
    assert json.loads(capsys.readouterr().out)["state"] == "RolledBack"
    use(monkeypatch, FakeCluster(None))
    assert main(["rollout", "status", "churn", "-n", "team-a"]) == EXIT_NOT_FOUND
    assert capsys.readouterr().err == (
        "mlmodel rollout status: MLModel churn in namespace team-a does not exist\n"
    )


def test_promote_through_the_command_line_refuses_with_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, FakeCluster(mlmodel({"phase": "Serving", "activeVersion": "1"})))
    assert main(["rollout", "promote", "churn", "-n", "team-a"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.startswith("mlmodel rollout promote: MLModel churn in namespace team-a: no canary")
    assert "Traceback" not in err


def test_a_watch_that_outlasts_its_limit_exits_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use(monkeypatch, FakeCluster(running_model()))
    monkeypatch.setattr(rollout_cli, "WATCH_INTERVAL", 0.05)
    code = main(["rollout", "status", "churn", "-n", "team-a", "--watch", "--timeout", "0.2"])
    assert code == EXIT_TIMEOUT
    assert "the rollout still runs after --timeout 0.2 s" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["rollout"],
        ["rollout", "status"],
        ["rollout", "resume", "churn"],
        ["rollout", "status", "churn", "--watch", "--timeout", "0"],
        ["rollout", "status", "churn", "--watch", "--timeout", "soon"],
        ["rollout", "status", "churn", "-o", "yaml"],
        ["rollout", "promote"],
        ["rollout", "abort", "churn", "--version"],
    ],
)
def test_argument_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == EXIT_USAGE
    assert "usage: mlmodel rollout" in capsys.readouterr().err


def test_timeout_without_watch_and_a_missing_kubeconfig_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    assert main(["rollout", "status", "churn", "--timeout", "30"]) == EXIT_USAGE
    assert "--timeout limits --watch; give --watch too" in capsys.readouterr().err
    missing = str(tmp_path / "nope")
    assert main(["rollout", "abort", "churn", "--kubeconfig", missing]) == EXIT_USAGE
    assert (
        capsys.readouterr().err == f"mlmodel rollout abort: --kubeconfig {missing}: no such file\n"
    )


def test_an_unreachable_apiserver_is_one_line_naming_model_and_namespace(
    capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    code = main(["rollout", "status", "churn", "-n", "team-a", "--kubeconfig", str(kubeconfig)])
    err = capsys.readouterr().err
    assert code == EXIT_API
    assert err.startswith(
        "mlmodel rollout status: reading MLModel churn in namespace team-a: cannot reach the "
        "Kubernetes API at https://127.0.0.1:9"
    )
    assert err.count("\n") == 1 and "Traceback" not in err
