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

    from mlmodel_operator.handlers import build_registry
    from mlmodel_operator.settings import Settings, SettingsError

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        print(f"mlmodel run: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig  # for kopf's own login
    namespaces = tuple(args.namespace or settings.namespaces)
    clusterwide = args.all_namespaces or not namespaces
    if args.all_namespaces and args.namespace:
        print("mlmodel run: give --namespace or --all-namespaces, not both", file=sys.stderr)
        return 2
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    registry = build_registry(settings, args.kubeconfig, args.metrics_port)
    kopf.run(
        registry=registry,
        clusterwide=clusterwide,
        namespaces=() if clusterwide else namespaces,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=peering_priority(args.priority),
        liveness_endpoint=args.liveness or None,
    )
    return 0


def peering_priority(value: str, now_ns: int | None = None) -> int:
    """The kopf peering priority for ``--priority``: a number, or ``oldest``.

    kopf pauses *every* replica when two of the same priority are alive, so replicas of
    one Deployment need distinct priorities. ``oldest`` gives each process one that
    falls with its start time (in microseconds): the longest-running replica works, a
    replica that starts later waits and takes over when the worker is gone.
    """
    if value == "oldest":
        start = time.time_ns() if now_ns is None else now_ns
        return -(start // 1000)
    return int(value)


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
        help="liveness endpoint URL, '' to disable (default: %(default)s)",
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
        "(the longest-running one works, the others wait) (default: %(default)s)",
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
