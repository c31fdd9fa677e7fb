"""`mlmodel rollout status|promote|abort`: see a canary or shadow, and steer it by hand.

    mlmodel rollout status churn -n team-a [--watch [--timeout 600]] [-o json]
    mlmodel rollout promote churn -n team-a [--version 2]
    mlmodel rollout abort churn -n team-a [--version 2]

``status`` only reads the MLModel: ``status.rollout`` while a canary or shadow runs,
``status.lastRollout`` once one ended. ``promote`` and ``abort`` only set one MLModel
annotation naming the running candidate (:data:`~mlmodel_operator.plan.ANN_PROMOTE`,
:data:`~mlmodel_operator.plan.ANN_ABORT`), with a JSON merge patch on
``metadata.annotations``; the operator acts on it at its next reconcile. The operator
reads them by level and acts only on the one naming its current candidate, so an old
annotation never needs removing, and the user's spec is never touched.

Exit codes (scripts gate on them): see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlmodel_operator import GROUP, PLURAL, VERSION
from mlmodel_operator.conditions import Reason, format_time
from mlmodel_operator.plan import ANN_ABORT, ANN_PROMOTE, parse_time
from mlmodel_operator.spec import DEFAULT_MIN_REQUESTS

EXIT_OK: Final = 0  # running, promoted, or no rollout; promote/abort: the annotation is set
EXIT_FAILED: Final = 1  # rolled back or aborted; promote/abort: refused, nothing was changed
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_API: Final = 4  # the cluster could not be asked, or refused (403, unreachable, ...)
EXIT_TIMEOUT: Final = 5  # --watch: the limit passed while the rollout still ran
EXIT_CODES: Final = {
    EXIT_OK: "a rollout runs, the last one was promoted, or none has run; "
    "promote/abort: the annotation is set",
    EXIT_FAILED: "the last rollout was rolled back or aborted (and spec.version still names "
    "it), or the spec's canary or shadow cannot start; promote/abort: refused, nothing changed",
    EXIT_USAGE: "usage error",
    EXIT_NOT_FOUND: "the MLModel does not exist",
    EXIT_API: "the Kubernetes API could not be asked or refused the request",
    EXIT_TIMEOUT: "--watch: --timeout passed while the rollout still ran",
}

# What `status` says of a model
PROGRESSING: Final = "Progressing"  # status.rollout names a candidate
STARTING: Final = "Starting"  # the spec asks for a canary or shadow whose candidate starts
BLOCKED: Final = "Blocked"  # ... that cannot start (phase Degraded or Failed)
NO_ROLLOUT: Final = "None"  # none runs and none ended (or the spec has moved past it)
ENDED: Final = (Reason.PROMOTED, Reason.ROLLED_BACK, Reason.ABORTED)

WATCH_INTERVAL: Final = 2.0  # seconds between reads while watching
DEFAULT_TIMEOUT: Final = 600.0
WRITE_ATTEMPTS: Final = 3  # read-check-patch rounds when the object changes in between
# Bounded calls (the client's default waits for ever): connect, read
REQUEST_TIMEOUT: Final = (5.0, 20.0)
DEFAULT_PAUSE_SECONDS: Final = 60  # spec.rollout.steps[].pauseSeconds' default (CRD)


class CommandError(Exception):
    """A command that cannot go on: one line for a person, and the exit code."""

    def __init__(self, message: str, code: int, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient  # may pass: the API unreachable, 429 or 5xx


# --------------------------------------------------------------------------- reading


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class RolloutView:
    """What ``rollout status`` shows, taken once from an MLModel object as read."""

    namespace: str
    model: str
    state: str  # PROGRESSING, STARTING, BLOCKED, NO_ROLLOUT or one of ENDED
    active_version: str
    phase: str
    message: str  # status.message
    spec_version: str
    spec_strategy: str
    running: Mapping[str, Any] | None  # status.rollout, while one runs
    last: Mapping[str, Any] | None  # status.lastRollout
    min_requests: int
    step_pauses: tuple[int, ...]  # spec.rollout.steps[].pauseSeconds

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> RolloutView:
        meta, spec, status = (_mapping(obj.get(k)) for k in ("metadata", "spec", "status"))
        rollout_spec = _mapping(spec.get("rollout"))
        analysis = _mapping(rollout_spec.get("analysis"))
        raw_steps = rollout_spec.get("steps")
        steps: list[Any] = raw_steps if isinstance(raw_steps, list) else []
        running = _mapping(status.get("rollout")) or None
        if running is not None and not running.get("candidate"):
            running = None
        last = _mapping(status.get("lastRollout")) or None
        if last is not None and not (last.get("candidate") and last.get("result")):
            last = None
        spec_version = str(spec.get("version") or "")
        strategy = str(rollout_spec.get("strategy") or "switch")
        active = str(status.get("activeVersion") or "")
        phase = str(status.get("phase") or "")
        refused = last is not None and last.get("result") in (Reason.ROLLED_BACK, Reason.ABORTED)
        asked = strategy != "switch" and spec_version != active and bool(active)
        if running is not None:
            state = PROGRESSING
        elif refused and last is not None and last.get("candidate") == spec_version:
            state = str(last["result"])  # the spec still asks for the refused version
        elif asked and phase == "Deploying":
            state = STARTING
        elif asked and phase in ("Degraded", "Failed"):
            state = BLOCKED  # e.g. not Available in readyTimeoutSeconds; status.message says
        elif last is not None and last.get("result") == Reason.PROMOTED:
            state = Reason.PROMOTED
        else:  # none ran, or one was refused and the spec has moved on: history
            state = NO_ROLLOUT
        min_requests = analysis.get("minRequests", DEFAULT_MIN_REQUESTS)
        return cls(
            namespace=str(meta.get("namespace") or ""),
            model=str(meta.get("name") or ""),
            state=state,
            active_version=active,
            phase=phase,
            message=str(status.get("message") or ""),
            spec_version=spec_version,
            spec_strategy=strategy,
            running=running,
            last=last,
            min_requests=min_requests if isinstance(min_requests, int) else DEFAULT_MIN_REQUESTS,
            step_pauses=tuple(
                int(_mapping(s).get("pauseSeconds", DEFAULT_PAUSE_SECONDS)) for s in steps
            ),
        )

    @property
    def in_progress(self) -> bool:
        return self.state in (PROGRESSING, STARTING)

    @property
    def exit_code(self) -> int:
        """1 when the last rollout was refused and the spec still asks for that version, or
        the spec's canary or shadow cannot start; a refused candidate the spec has moved on
        from is history, not a failure."""
        failed = (Reason.ROLLED_BACK, Reason.ABORTED, BLOCKED)
        return EXIT_FAILED if self.state in failed else EXIT_OK

    def step_elapsed(self, now: dt.datetime) -> float | None:
        try:
            since = parse_time(str((self.running or {}).get("stepStartedAt") or ""))
        except ValueError:
            return None
        return max(0.0, (now - since).total_seconds()) if since is not None else None

    def step_pause(self) -> int | None:
        step = _int((self.running or {}).get("step"))
        return self.step_pauses[step - 1] if 1 <= step <= len(self.step_pauses) else None

    def change_key(self) -> str:
        """Equal for two reads that would print the same but for the clock."""
        return json.dumps(
            [self.state, self.active_version, self.phase, self.running, self.last],
            sort_keys=True,
            default=str,
        )

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        elapsed = self.step_elapsed(now)
        return {
            "model": self.model,
            "namespace": self.namespace,
            "state": self.state,
            "exitCode": self.exit_code,
            "activeVersion": self.active_version or None,
            "phase": self.phase or None,
            "specVersion": self.spec_version,
            "strategy": self.spec_strategy,
            "rollout": dict(self.running) if self.running is not None else None,
            "lastRollout": dict(self.last) if self.last is not None else None,
            "minRequests": self.min_requests,
            "stepElapsedSeconds": None if elapsed is None else int(elapsed),
            "stepPauseSeconds": self.step_pause(),
            "message": self.message or None,
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- rendering


def format_duration(seconds: float) -> str:
    """``45s``, ``2m``, ``1m20s``, ``2h03m``: how long, for people."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m" + (f"{s % 60:02d}s" if s % 60 else "")
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return "no data"
    return f"{value:.4g}"


def _verdict(check: Mapping[str, Any], judged: bool) -> str:
    passed = check.get("passed")
    if passed is True:
        return "passed"
    if passed is False:
        return "FAILED" if judged else "over its limit (not judged yet: too few requests)"
    return "not judged yet"


def _check_lines(rollout: Mapping[str, Any], min_requests: int) -> list[str]:
    checks = [_mapping(c) for c in rollout.get("checks") or []]
    if not checks:
        return []
    requests = rollout.get("requests")
    judged = isinstance(requests, int) and requests >= min_requests
    rows = []
    for c in checks:
        name = str(c.get("name", "?"))
        bound = "at least" if name == "agreement" else "at most"
        rows.append((name, _number(c.get("value")), f"{bound} {_number(c.get('limit'))}",
                     _verdict(c, judged)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    out = []
    for i, (name, value, limit, verdict) in enumerate(rows):
        label = "checks" if i == 0 else ""
        out.append(
            f"  {label:<10} {name:<{widths[0]}}  {value:>{widths[1]}}  "
            f"{limit:<{widths[2]}}  {verdict}"
        )
    return out


def _requests_line(rollout: Mapping[str, Any], min_requests: int) -> str | None:
    requests = rollout.get("requests")
    if not isinstance(requests, int):
        return None
    what = "compared copies" if rollout.get("strategy") == "shadow" else "requests"
    if requests >= min_requests:
        return f"  requests   {requests} {what} this step ({min_requests} needed: enough to judge)"
    return (
        f"  requests   {requests} {what} this step, {min_requests} needed before it is judged "
        "(spec.rollout.analysis.minRequests)"
    )


def _steps(rollout: Mapping[str, Any]) -> str:
    step, steps = _int(rollout.get("step")), _int(rollout.get("steps"))
    return f"{step}/{steps}" if steps else str(step)


def _versions(rollout: Mapping[str, Any]) -> str:
    digest = str(rollout.get("candidateSha256") or "")
    shown = f", sha256 {digest[:12]}..." if digest else ""
    return (
        f"  versions   {rollout.get('stable') or '?'} (stable) -> "
        f"{rollout.get('candidate')} (candidate{shown})"
    )


def render(view: RolloutView, now: dt.datetime) -> str:
    """The human summary of ``rollout status``."""
    where = f"MLModel {view.namespace}/{view.model}"
    phase = f" (phase {view.phase})" if view.phase else ""
    cmd = f"{view.model} -n {view.namespace}"
    lines: list[str] = []
    run = view.running
    if run is not None:
        strategy = str(run.get("strategy") or "rollout")
        lines.append(f"{where}: {strategy} of version {run.get('candidate')} in progress{phase}")
        lines.append(_versions(run))
        step = f"  step       {_steps(run)}"
        elapsed, pause = view.step_elapsed(now), view.step_pause()
        if elapsed is not None:
            step += f", running for {format_duration(elapsed)}"
            if pause is not None:
                step += f" (lasts at least {format_duration(pause)})"
        lines.append(step)
        weight, effective = run.get("weight"), run.get("effectiveWeight", run.get("weight"))
        if strategy == "shadow":
            lines.append(
                f"  weight     {weight}% asked, {effective}% effective: copies of that share of "
                f"requests go to the candidate; version {run.get('stable')} answers every request"
            )
        else:
            lines.append(
                f"  weight     {weight}% asked, {effective}% effective (the candidate's share of "
                "the serving Pods)"
            )
        requests = _requests_line(run, view.min_requests)
        if requests:
            lines.append(requests)
        checks = _check_lines(run, view.min_requests)
        lines += checks or [
            "  checks     none read yet"
            if requests
            else "  checks     none (spec.rollout.analysis sets none: a step ends when its time "
            "is up)"
        ]
        if run.get("message"):
            lines.append(f"  message    {run['message']}")
        lines.append(f"  by hand    mlmodel rollout promote {cmd}  |  mlmodel rollout abort {cmd}")
        return "\n".join(lines)

    serving = (
        f"version {view.active_version} serves" if view.active_version else "no version serves"
    )
    if view.state == STARTING:
        lines.append(
            f"{where}: {view.spec_strategy} of version {view.spec_version} is starting{phase}"
        )
        lines.append(f"  serving    {serving}; the candidate is not Available yet")
        if view.message:
            lines.append(f"  message    {view.message}")
        return "\n".join(lines)

    if view.state == BLOCKED:
        lines.append(
            f"{where}: the {view.spec_strategy} of version {view.spec_version} cannot start{phase}"
        )
        lines.append(f"  serving    {serving}")
        if view.message:
            lines.append(f"  why        {view.message}")
        return "\n".join(lines)

    last = view.last
    if last is None:
        never = f"{where}: no canary or shadow has run; {serving}{phase}"
        if not view.phase:
            never += " (no status yet: is the operator running?)"
        lines.append(never)
        if view.spec_strategy == "switch":
            lines.append("  strategy   switch (spec.rollout.strategy): new versions take all "
                         "traffic once Available")  # fmt: skip
        return "\n".join(lines)

    lines.append(f"{where}: no canary or shadow runs; {serving}{phase}")
    result = str(last.get("result"))
    at = f" at step {_steps(last)}" if last.get("step") else ""
    lines.append(
        f"  last       {last.get('strategy') or 'rollout'} of version {last.get('candidate')} "
        f"(stable {last.get('stable') or '?'}): {result}{at}"
    )
    if last.get("message"):
        lines.append(f"  why        {last['message']}")
    requests = _requests_line(last, view.min_requests)
    if requests:
        lines.append(requests.replace(" this step", ""))
    lines += _check_lines(last, view.min_requests)
    if view.state in (Reason.ROLLED_BACK, Reason.ABORTED):
        lines.append("  next       apply a new spec.version to try again")
    elif view.state == NO_ROLLOUT and result != Reason.PROMOTED:
        lines.append(f"  spec       now asks for version {view.spec_version}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the cluster


class Cluster:
    """The two calls the commands make, with errors a person can act on."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)

    def _fail(self, exc: BaseException, doing: str, namespace: str, name: str) -> CommandError:
        from kubernetes import client

        where = f"MLModel {name} in namespace {namespace}"
        if isinstance(exc, client.ApiException):
            if exc.status == 404:
                return CommandError(f"{where} does not exist", EXIT_NOT_FOUND)
            detail = ""
            try:
                detail = str(json.loads(exc.body or "{}").get("message") or "")
            except (TypeError, ValueError):
                detail = str(exc.body or "")[:200]
            if exc.status == 403:
                return CommandError(
                    f"{doing} {where}: forbidden (HTTP 403): {detail or exc.reason}; ask for "
                    "RBAC that allows it", EXIT_API,
                )  # fmt: skip
            return CommandError(
                f"{doing} {where}: HTTP {exc.status} {exc.reason}: {detail}".rstrip(": "),
                EXIT_API,
                transient=exc.status == 429 or exc.status >= 500,
            )
        host = str(self.custom.api_client.configuration.host)
        first = (str(exc) or type(exc).__name__).strip().splitlines()[0][:200]
        return CommandError(
            f"{doing} {where}: cannot reach the Kubernetes API at {host} "
            f"({type(exc).__name__}: {first})",
            EXIT_API,
            transient=True,
        )

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
        except Exception as exc:  # ApiException, urllib3's and socket errors alike
            raise self._fail(exc, "reading", namespace, name) from None
        return obj

    def annotate(
        self, namespace: str, name: str, annotations: Mapping[str, str], resource_version: str
    ) -> bool:
        """Merge-patch ``metadata.annotations``; False when the object changed since it was
        read at ``resource_version`` (HTTP 409), so the caller reads and checks again."""
        from kubernetes import client

        body = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, body,
                _content_type="application/merge-patch+json", _request_timeout=REQUEST_TIMEOUT,
            )  # fmt: skip
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            raise self._fail(exc, "annotating", namespace, name) from None
        except Exception as exc:
            raise self._fail(exc, "annotating", namespace, name) from None
        return True


def connect(kubeconfig: str | None) -> Cluster:
    """A client from ``--kubeconfig``, else KUBECONFIG or ~/.kube/config, else in-cluster."""
    from mlmodel_operator.kube import load_api_client

    if kubeconfig and not os.path.isfile(kubeconfig):
        raise CommandError(f"--kubeconfig {kubeconfig}: no such file", EXIT_USAGE)
    # a person's own kubeconfig before a Pod's service account (load_api_client, made for
    # the operator, tries in-cluster first)
    home = os.path.expanduser("~/.kube/config")
    chosen = kubeconfig or os.environ.get("KUBECONFIG") or (home if os.path.isfile(home) else None)
    try:
        api_client = load_api_client(chosen)
    except Exception as exc:  # kubernetes.config.ConfigException and malformed files
        first = (str(exc) or type(exc).__name__).strip().splitlines()[0][:200]
        raise CommandError(
            f"no Kubernetes cluster to ask: {first} (give --kubeconfig, set KUBECONFIG, or "
            "run in a Pod)",
            EXIT_API,
        ) from None
    return Cluster(api_client)


# --------------------------------------------------------------------------- commands


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def watch(
    read: Callable[[], RolloutView],
    emit: Callable[[RolloutView], None],
    timeout: float,
    interval: float = WATCH_INTERVAL,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RolloutView | None:
    """Emit each view that differs from the last one emitted until none is in progress
    (returned), or None once ``timeout`` seconds passed with one still in progress."""
    deadline = clock() + timeout
    shown: str | None = None
    while True:
        view = read()
        if view.change_key() != shown:
            emit(view)
            shown = view.change_key()
        if not view.in_progress:
            return view
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(interval, left))


def status_command(args: argparse.Namespace) -> int:
    cluster = connect(args.kubeconfig)

    deadline = time.monotonic() + args.timeout
    said: set[str] = set()

    def read() -> RolloutView:
        while True:
            try:
                return RolloutView.from_object(cluster.get(args.namespace, args.model))
            except CommandError as exc:
                # a watch outlives an apiserver restart: try again until its limit
                if not (args.watch and exc.transient) or time.monotonic() >= deadline:
                    raise
                if str(exc) not in said:
                    said.add(str(exc))
                    print(f"mlmodel rollout status: {exc}; trying again", file=sys.stderr)
                time.sleep(WATCH_INTERVAL)

    def emit(view: RolloutView) -> None:
        now = _now()
        if args.output == "json":
            text = json.dumps(view.to_json(now), separators=(",", ":") if args.watch else None,
                              indent=None if args.watch else 2)  # fmt: skip
        elif args.watch:
            text = f"[{format_time(now)}]\n{render(view, now)}\n"
        else:
            text = render(view, now)
        print(text, flush=True)

    if not args.watch:
        view = read()
        emit(view)
        return view.exit_code
    final = watch(read, emit, args.timeout)
    if final is None:
        raise CommandError(
            f"MLModel {args.model} in namespace {args.namespace}: the rollout still runs after "
            f"--timeout {args.timeout:g} s",
            EXIT_TIMEOUT,
        )
    return final.exit_code


def steer(cluster: Cluster, namespace: str, model: str, action: str, version: str | None) -> str:
    """Set the promote or abort annotation to the running candidate; what was done."""
    key = ANN_PROMOTE if action == "promote" else ANN_ABORT
    where = f"MLModel {model} in namespace {namespace}"
    follow = f"mlmodel rollout status {model} -n {namespace} --watch"
    for _ in range(WRITE_ATTEMPTS):
        obj = cluster.get(namespace, model)
        view = RolloutView.from_object(obj)
        run = view.running
        if run is None:
            if view.state == STARTING:
                why = (
                    f"its {view.spec_strategy} of version {view.spec_version} is starting (the "
                    f"candidate is not Available yet); {action} is accepted once its first step "
                    f"runs: {follow}"
                )
            else:
                last = view.last
                ended = (
                    f"; the last one ({last.get('strategy')} of version {last.get('candidate')}) "
                    f"ended {last.get('result')}"
                    if last is not None
                    else ""
                )
                why = (
                    f"no canary or shadow runs{ended}; {action} is accepted only while "
                    "status.rollout names a candidate (see mlmodel rollout status)"
                )
            raise CommandError(f"{where}: {why}", EXIT_FAILED)
        candidate = str(run["candidate"])
        if version is not None and version != candidate:
            raise CommandError(
                f"{where}: --version {version} is not the running candidate; accepted: "
                f"--version {candidate} (or none)",
                EXIT_FAILED,
            )
        notes = _mapping(_mapping(obj.get("metadata")).get("annotations"))
        if action == "promote" and notes.get(ANN_ABORT) == candidate:
            raise CommandError(
                f"{where}: version {candidate} is being aborted ({ANN_ABORT}={candidate}); "
                "an abort goes before a promotion, so nothing was changed",
                EXIT_FAILED,
            )
        what = (
            f"{run.get('strategy')} of version {candidate}, step {_steps(run)}, stable "
            f"{run.get('stable')}"
        )
        effect = (
            f"At its next reconcile the operator gives version {candidate} all traffic, "
            f"skipping the remaining steps and checks; version {run.get('stable')} then retires."
            if action == "promote"
            else f"At its next reconcile the operator sends all traffic back to version "
            f"{run.get('stable')}, removes version {candidate}'s Pods and records Aborted."
        )
        if notes.get(key) == candidate:
            return (
                f"{where}: {action} of version {candidate} was already asked ({key}={candidate}; "
                f"{what}); nothing changed.\n{effect}\nFollow it: {follow}"
            )
        rv = str(_mapping(obj.get("metadata")).get("resourceVersion") or "")
        if cluster.annotate(namespace, model, {key: candidate}, rv):
            return (
                f"{where}: asked the operator to {action} version {candidate} ({what}; "
                f"annotation {key}={candidate}).\n{effect}\nFollow it: {follow}"
            )
    raise CommandError(
        f"{where}: the object changed at each of {WRITE_ATTEMPTS} attempts to annotate it; "
        "try again",
        EXIT_API,
    )


def steer_command(args: argparse.Namespace) -> int:
    print(steer(connect(args.kubeconfig), args.namespace, args.model, args.action, args.version))
    return EXIT_OK


# --------------------------------------------------------------------------- parsers


def _timeout(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 86400 or math.isnan(seconds):
        raise argparse.ArgumentTypeError(f"{value!r} is not accepted; expected seconds, 1-86400")
    return seconds


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the MLModel's name")
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: KUBECONFIG or ~/.kube/config; in a Pod, its service "
        "account)",
    )


def add_parsers(sub: Any) -> None:
    """Add ``rollout status|promote|abort`` to the `mlmodel` parser."""
    codes = "; ".join(f"{k}: {v}" for k, v in EXIT_CODES.items())
    rollout = sub.add_parser(
        "rollout",
        help="see a running canary or shadow; promote or abort it by hand",
        description=f"Exit codes: {codes}.",
    )
    rsub = rollout.add_subparsers(dest="rollout_command", required=True)
    st = rsub.add_parser(
        "status", help="the running canary or shadow, or how the last one ended",
        description=f"Exit codes: {codes}.",
    )  # fmt: skip
    _common(st)
    st.add_argument("-w", "--watch", action="store_true",
                    help="print again on each change until the rollout ends")  # fmt: skip
    st.add_argument("--timeout", type=_timeout, default=None, metavar="SECONDS",
                    help=f"with --watch: give up after this long (default: {DEFAULT_TIMEOUT:g})")  # fmt: skip
    st.add_argument("-o", "--output", choices=("text", "json"), default="text",
                    help="json: one object (with --watch: one per line, per change)")  # fmt: skip
    st.set_defaults(func=_wrap(status_command, "rollout status"))
    for action, help_ in (
        ("promote", "give the running candidate all traffic now, skipping remaining steps"),
        ("abort", "roll the running candidate back now: traffic to the stable version"),
    ):
        p = rsub.add_parser(action, help=help_, description=f"Exit codes: {codes}.")
        _common(p)
        p.add_argument("--version", help="the candidate's version, to be sure it is the one "
                       "running (refused if another runs)")  # fmt: skip
        p.set_defaults(func=_wrap(steer_command, f"rollout {action}"), action=action)


def _wrap(command: Callable[[argparse.Namespace], int], name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        if name == "rollout status":
            if args.timeout is not None and not args.watch:
                print(f"mlmodel {name}: --timeout limits --watch; give --watch too",
                      file=sys.stderr)  # fmt: skip
                return EXIT_USAGE
            if args.timeout is None:
                args.timeout = DEFAULT_TIMEOUT
        try:
            return command(args)
        except CommandError as exc:
            print(f"mlmodel {name}: {exc}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return 130

    return run
