"""`mlmodel`: run the operator, and (later) look into archives and replay them."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence

from mlmodel_operator import __version__


def _run(args: argparse.Namespace) -> int:
    import kopf
    from kopf._core.engines.peering import Identity  # kopf.run's type; not exported

    from mlmodel_operator import failpoints
    from mlmodel_operator.handlers import build_registry
    from mlmodel_operator.peering import Peering, PeeringConfig, own_identity
    from mlmodel_operator.probes import ProbeAddress, probe_address
    from mlmodel_operator.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"mlmodel run: {exc}", file=sys.stderr)
        return 2
    try:  # tests only: where to die, as a crash would (mlmodel_operator.failpoints)
        if failpoints.arm(os.environ.get(failpoints.ENV)):
            print(
                f"mlmodel run: {failpoints.ENV} is set: this process exits at failpoint(s) "
                f"{os.environ[failpoints.ENV]}",
                file=sys.stderr,
            )
    except failpoints.FailpointError as exc:
        print(f"mlmodel run: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # for kopf's own login
    namespaces = tuple(args.namespace or settings.namespaces)
    clusterwide = args.all_namespaces or not namespaces
    if args.all_namespaces and args.namespace:
        print("mlmodel run: give --namespace or --all-namespaces, not both", file=sys.stderr)
        return 2
    probes: ProbeAddress | None = None
    if args.liveness:
        try:
            probes = probe_address(args.liveness, args.readiness)
        except ValueError as exc:
            print(f"mlmodel run: {exc}", file=sys.stderr)
            return 2
    identity = own_identity(os.environ)
    priority = peering_priority(args.priority)
    peering = None
    if args.peering is not None:
        peering = Peering(
            PeeringConfig(
                name=args.peering,
                identity=identity,
                priority=priority,
                lifetime=args.peering_lifetime,
                ordered=args.priority == "oldest",
                namespaces=() if clusterwide else namespaces,
            )
        )
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    registry = build_registry(
        settings, args.kubeconfig, args.metrics_port, probes=probes, peering=peering
    )
    kopf.run(
        registry=registry,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else namespaces,
        identity=Identity(identity),
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=priority,
        liveness_endpoint=None,  # served with the readiness by the "probes" startup handler
    )
    if peering is not None and peering.stopped_because:
        print(f"mlmodel run: {peering.stopped_because}", file=sys.stderr)
        return 1
    return 0


def peering_priority(value: str, now_ns: int | None = None) -> int:
    """The kopf peering priority for ``--priority``: a number, or ``oldest``.

    kopf pauses *every* replica when two of the same priority are alive, so replicas of
    one Deployment need distinct priorities. ``oldest`` gives each process one that
    falls with its start time (in microseconds); on joining, a replica goes below every
    live one if it must (:mod:`mlmodel_operator.peering`): the replica that joined first
    works, one that joins later waits and takes over when the worker is gone.
    """
    if value == "oldest":
        start = time.time_ns() if now_ns is None else now_ns
        return -(start // 1000)
    return int(value)


def _lifetime(value: str) -> int:
    from mlmodel_operator.peering import MIN_LIFETIME

    try:
        seconds = int(value)
    except ValueError:
        seconds = 0
    if seconds < MIN_LIFETIME:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not accepted; expected whole seconds, at least {MIN_LIFETIME}"
        )
    return seconds


def _priority(value: str) -> str:
    if value != "oldest":
        try:
            int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not accepted; expected an integer or 'oldest'"
            ) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    """The whole command line, one subcommand per job."""
    parser = argparse.ArgumentParser(
        prog="mlmodel", description="Run and inspect the MLModel operator."
    )
    parser.add_argument("--version", action="version", version=f"mlmodel {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator (kopf) against the current cluster")
    run.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    run.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    run.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    run.add_argument(
        "--liveness",
        default="http://0.0.0.0:8081/healthz",
        help="liveness endpoint URL, '' to disable both probes (default: %(default)s)",
    )
    run.add_argument(
        "--readiness",
        default="/readyz",
        help="readiness path, served on the --liveness address; 503 while the peering "
        "object is missing or this replica is not in it; '' to disable (default: %(default)s)",
    )
    run.add_argument(
        "--metrics-port", type=int, default=9090, help="0 disables (default: %(default)s)"
    )
    run.add_argument(
        "--peering", default=None, help="kopf peering name for HA (default: standalone)"
    )
    run.add_argument(
        "--priority",
        type=_priority,
        default="0",
        help="kopf peering priority: an integer, or 'oldest' for replicas of one Deployment "
        "(the one that joined first works, the others wait) (default: %(default)s)",
    )
    from mlmodel_operator.peering import DEFAULT_LIFETIME

    run.add_argument(
        "--peering-lifetime",
        type=_lifetime,
        default=DEFAULT_LIFETIME,
        metavar="SECONDS",
        help="how long a replica's keep-alive counts: a killed worker is replaced within it "
        "(kopf writes the keep-alive every SECONDS minus 5-10 s, at least every second) "
        "(default: %(default)s; kopf's own: 60)",
    )
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=_run)

    from mlmodel_operator.archive_cli import add_parsers

    add_parsers(sub)  # archive ls/show, history, replay, rollback
    from mlmodel_operator.baseline_cli import add_parser as add_baseline

    add_baseline(sub)  # baseline
    from mlmodel_operator.decisions_cli import add_parsers as add_decisions

    add_decisions(sub)  # decisions ls/show, audit, explain
    from mlmodel_operator.rollout_cli import add_parsers as add_rollout

    add_rollout(sub)  # rollout status/promote/abort
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `mlmodel` console script."""
    args = build_parser().parse_args(argv)
    if args.command != "run":  # kopf configures logging for `run`
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
