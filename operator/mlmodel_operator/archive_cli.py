"""`mlmodel archive ls|show`, `history`, `replay` and `rollback`: the audit side of the CLI.

Object-store settings come from the same ``MLMODEL_S3_*`` variables as the operator's,
the bucket from ``--bucket`` or ``MLMODEL_ARCHIVE_BUCKET``. Errors are one line on
stderr naming what was not found and what exists instead; exit code 1 (2 for usage).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import yaml

from mlmodel_operator import GROUP, PLURAL, VERSION, isolated
from mlmodel_operator.archive import describe_s3_error, s3_error_code
from mlmodel_operator.ledger import LedgerRecord, ledger_prefix, serving_at
from mlmodel_operator.manifest import (
    MIN_DIGEST_PREFIX,
    ManifestError,
    ManifestView,
    by_digest,
    is_sha256,
    parse_manifest_key,
    version_prefix,
    with_digest,
)
from mlmodel_operator.replay import (
    InputError,
    compare_versions,
    prediction_rows,
    read_inputs,
    running_versions,
    write_predictions,
)
from mlmodel_operator.settings import DEFAULT_ARCHIVE_BUCKET

CLI_CONNECT_TIMEOUT = 5.0  # seconds, for the commands' object-store calls
CLI_READ_TIMEOUT = 20.0
DEFAULT_CACHE = Path.home() / ".cache" / "mlmodel-lifecycle" / "replay"


class CliError(Exception):
    """A failure to report in one line; the command exits 1."""


# --------------------------------------------------------------------------- the store


@dataclass
class ArchiveStore:
    """Reads manifests and ledger records from the archive bucket."""

    client: Any
    bucket: str
    endpoint: str

    @classmethod
    def from_env(cls, bucket: str | None) -> ArchiveStore:
        from mlmodel_serving.artifacts import S3Config, make_client

        try:
            cfg = S3Config.from_env()
        except ValueError as exc:
            raise CliError(str(exc)) from None
        name = bucket or os.environ.get("MLMODEL_ARCHIVE_BUCKET") or DEFAULT_ARCHIVE_BUCKET
        # bounded: a hung store is an error naming it, not minutes of silence
        client = make_client(
            cfg, connect_timeout=CLI_CONNECT_TIMEOUT, read_timeout=CLI_READ_TIMEOUT
        )
        return cls(client, name, cfg.endpoint)

    def _fail(self, what: str, exc: Exception) -> CliError:
        if s3_error_code(exc) == "NoSuchBucket":
            return CliError(
                f"bucket {self.bucket} does not exist at {self.endpoint} "
                "(set --bucket or MLMODEL_ARCHIVE_BUCKET)"
            )
        return CliError(f"{what}: {describe_s3_error(exc)}")

    def _keys(self, prefix: str) -> list[str]:
        try:
            return [
                o.object_name
                for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]
        except Exception as exc:
            raise self._fail(f"list s3://{self.bucket}/{prefix}", exc) from None

    def _json(self, key: str) -> Any:
        try:
            response = self.client.get_object(self.bucket, key)
        except Exception as exc:
            if s3_error_code(exc) in ("NoSuchKey", "NoSuchObject"):
                return None
            raise self._fail(f"read s3://{self.bucket}/{key}", exc) from None
        try:
            return json.loads(response.read())
        except ValueError:
            raise CliError(f"s3://{self.bucket}/{key} is not JSON") from None
        finally:
            response.close()
            response.release_conn()

    def manifests(self, namespace: str, model: str | None) -> list[ManifestView]:
        """Every archive of ``model`` (of every model without one), in both layouts: a
        version's folder, and the ``sha256-<hex>/`` folders of other bytes under its name."""
        prefix = f"{namespace}/{model}/" if model else f"{namespace}/"
        return self._read_manifests(prefix)

    def archives(self, namespace: str, model: str, version: str) -> list[ManifestView]:
        """Every archive of one version name: usually one; more if the name was reused."""
        return self._read_manifests(version_prefix(namespace, model, version))

    def _read_manifests(self, prefix: str) -> list[ManifestView]:
        out = []
        for key in self._keys(prefix):
            where = parse_manifest_key(key)
            if where is None:
                continue
            uri = f"s3://{self.bucket}/{key}"
            try:
                view = ManifestView.parse(self._json(key), uri)
            except ManifestError as exc:
                print(f"warning: skipped {exc}", file=sys.stderr)
                continue
            if where.sha256 is not None and view.sha256 != where.sha256:
                print(f"warning: skipped {uri}: it records sha256 {view.sha256}, its folder "
                      f"names {where.sha256}", file=sys.stderr)  # fmt: skip
                continue
            out.append(view)
        return out

    def manifest(
        self, namespace: str, model: str, version: str, sha256: str | None = None,
        how: str = "choose one with --sha256 DIGEST",
    ) -> ManifestView:  # fmt: skip
        """The archive of ``version``: the only one, or the one whose digest is or starts
        with ``sha256``. CliError when there is none, or several and nothing says which
        (``how`` says how to choose)."""
        found = self.archives(namespace, model, version)
        if not found:
            versions = sorted(
                {m.version for m in self.manifests(namespace, model)}, key=_version_key
            )
            if versions:
                raise CliError(
                    f"version {version} of model {model} (namespace {namespace}) is not "
                    f"archived in bucket {self.bucket}; archived versions: {', '.join(versions)}"
                )
            raise CliError(
                f"model {model} has no archived versions in namespace {namespace} "
                f"of bucket {self.bucket}"
            )
        return choose_archive(found, model, version, sha256, how)

    def ledger(self, namespace: str, model: str) -> list[LedgerRecord]:
        records = []
        for key in self._keys(ledger_prefix(namespace, model)):
            if key.endswith(".json"):
                try:
                    records.append(LedgerRecord.parse(self._json(key), key))
                except ValueError as exc:
                    print(f"warning: skipped {exc}", file=sys.stderr)
        return records


# --------------------------------------------------------------------------- helpers


def parse_timestamp(value: str) -> dt.datetime:
    """ISO 8601 (``2026-03-14``, ``2026-03-14T10:00:00Z``, ``...+01:00``); naive is UTC."""
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--at {value!r} is not a timestamp: expected ISO 8601 such as "
            "2026-03-14T10:00:00Z or 2026-03-14"
        ) from None
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _iso(at: dt.datetime | None) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ") if at else "-"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _version_key(version: str) -> tuple[Any, ...]:
    return tuple(
        (0, int(p)) if p.isdigit() else (1, p) for p in version.replace("-", ".").split(".")
    )


def describe_archives(archives: Sequence[ManifestView]) -> str:
    """Archives of one version name, each by its digest, when it served and where it is."""
    return "; ".join(
        f"sha256 {m.sha256} (served {m.deployed_at or '?'} to {m.retired_at or '?'}, "
        f"{m.location or m.artifact_uri})"
        for m in archives
    )


def choose_archive(
    archives: Sequence[ManifestView], model: str, version: str, sha256: str | None, how: str
) -> ManifestView:
    """The one archive of ``version`` meant: the only digest, or the one ``sha256`` (a full
    digest or a prefix) names. Never a guess: several digests and no choice is a CliError
    naming each and ``how`` to choose."""
    choices = by_digest(archives)
    if sha256:
        matching = with_digest(choices, sha256)
        if not matching:
            which = f"sha256 {sha256}" if is_sha256(sha256) else f"a sha256 starting {sha256}"
            raise CliError(
                f"no archive of version {version} of model {model} has {which}; its "
                f"archives: {describe_archives(choices)}"
            )
        choices = matching
    if len(choices) == 1:
        return choices[0]
    raise CliError(
        f"version {version} of model {model} was archived {len(choices)} times with "
        f"different bytes (the version name was reused, e.g. by a deleted and re-created "
        f"MLModel): {describe_archives(choices)}. Nothing is run or changed without "
        f"knowing which: {how}"
    )


def digest_option(value: str) -> str:
    """``--sha256``: a full digest, or a prefix long enough not to match by accident."""
    text = value.strip().lower()
    if not (MIN_DIGEST_PREFIX <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)):
        raise argparse.ArgumentTypeError(
            f"{value!r}: expected a sha256 digest (64 hexadecimal characters) or at least "
            f"its first {MIN_DIGEST_PREFIX}, as `mlmodel archive ls` shows them"
        )
    return text


# --------------------------------------------------------------------------- commands


def archive_ls(args: argparse.Namespace) -> int:
    store = ArchiveStore.from_env(args.bucket)
    manifests = store.manifests(args.namespace, args.model)
    if not manifests:
        what = f"model {args.model}" if args.model else "any model"
        print(
            f"no archived versions of {what} in namespace {args.namespace} (bucket {store.bucket})",
            file=sys.stderr,
        )
        return 0
    manifests.sort(key=lambda m: (m.model, _version_key(m.version), m.deployed_at or ""))
    rows = [["MODEL", "VERSION", "DIGEST", "SERVED FROM", "SERVED TO", "REASON", "SIZE"]]
    rows += [
        [m.model, m.version, m.sha256[:12], m.deployed_at or "-", m.retired_at or "-",
         m.reason, _size(m.size)]
        for m in manifests
    ]  # fmt: skip
    print(format_table(rows))
    return 0


def archive_show(args: argparse.Namespace) -> int:
    store = ArchiveStore.from_env(args.bucket)
    m = store.manifest(args.namespace, args.model, args.version, args.sha256)
    if args.output == "json":
        print(json.dumps(m.raw, indent=2))
        return 0
    raw = m.raw
    libs = raw.get("libraries") or {}
    trained = libs.get("trainedWith") or {}
    release = libs.get("servingRelease") or {}
    retention = raw.get("retention")
    lines = [
        f"Model:          {m.model} (namespace {m.namespace})",
        f"Version:        {m.version}",
        f"Archive:        {m.location}",
        f"Artifact:       {m.artifact_uri}",
        f"  sha256:       {m.sha256}",
        f"  size:         {m.size} bytes ({_size(m.size)})",
        f"  copied from:  {m.source_uri}",
        f"Served:         {m.deployed_at or '-'} -> {m.retired_at or '-'}",
        f"Reason:         {m.reason}",
        f"Archived at:    {raw.get('archivedAt', '-')}",
        f"Serving image:  {m.serving_image}",
        "Trained with:   scikit-learn "
        + (trained.get("scikit-learn") or "unknown")
        + f" (static pickle scan, protocol {trained.get('pickleProtocol')}, "
        + f"compression {trained.get('compression')}"
        + ("" if trained.get("complete", True) else f"; incomplete: {trained.get('note')}")
        + ")",
        "Serving release: "
        + ", ".join(
            f"{k} {v}" for k, v in release.items() if k not in ("note", "imageIsDefault") and v
        )
        + ("" if release.get("imageIsDefault") else "  (custom image: not known to match)"),
        f"Estimators:     {', '.join(sorted(trained.get('estimators') or {})) or '-'}",
        f"Retention:      {json.dumps(retention) if retention else 'none'}",
        "Spec:",
        *("  " + line for line in yaml.safe_dump(raw.get("spec"), sort_keys=False).splitlines()),
    ]
    print("\n".join(lines))
    return 0


def history(args: argparse.Namespace) -> int:
    store = ArchiveStore.from_env(args.bucket)
    at = parse_timestamp(args.at)
    records = store.ledger(args.namespace, args.model)
    if not records:
        raise CliError(
            f"model {args.model} has no ledger records in namespace {args.namespace} "
            f"of bucket {store.bucket}"
        )
    answer = serving_at(records, at)
    if answer.version is None:
        first = min(r.at for r in records)
        detail = (
            f"the ledger starts at {_iso(first)}"
            if at < first
            else f"the model was deleted at {_iso(answer.until)}"
        )
        print(f"at {_iso(at)} no version of {args.model} was serving ({detail})")
        return 1
    details = answer.record.details if answer.record else {}
    print(
        f"at {_iso(at)} model {args.model} (namespace {args.namespace}) served version {answer.version}"
    )
    until = _iso(answer.until) if answer.until else "still serving (as far as the ledger shows)"
    print(f"  served from {_iso(answer.since)} until {until}")
    if details.get("uri"):
        print(f"  artifact    {details['uri']}  sha256 {details.get('sha256', '?')}")
    digest = answer.sha256
    # the archive of these bytes: the version name may have named others at other times
    archived = [
        r for r in records
        if r.kind == "Archived" and r.version == answer.version
        and (digest is None or r.details.get("sha256") in (None, digest))
    ]  # fmt: skip
    if archived:
        print(f"  archive     {archived[-1].details.get('archive')}")
        choose = f" --sha256 {digest[:12]}" if digest else ""
        print(
            f"  replay it:  mlmodel replay {args.model} -n {args.namespace} "
            f"--version {answer.version}{choose} --input FILE"
        )
    return 0


REPLAY_CHOOSE = (
    "choose one with --sha256 DIGEST (its first 12 characters will do), or replay a time "
    "with --at TIME, which takes the digest of what served then from the ledger"
)


def _resolve_archive(store: ArchiveStore, args: argparse.Namespace) -> ManifestView:
    """The archive to replay: of ``--version`` (and ``--sha256``), or of the bytes the
    ledger says served at ``--at`` (its digest, not only its version name)."""
    ns, model = args.namespace, args.model
    if args.version:
        return store.manifest(ns, model, str(args.version), args.sha256, REPLAY_CHOOSE)
    answer = serving_at(store.ledger(ns, model), parse_timestamp(args.at))
    if answer.version is None:
        raise CliError(f"the ledger shows no version of {model} serving at {args.at}")
    digest = answer.sha256
    print(
        f"version {answer.version} was serving at {args.at}"
        + (f" (sha256 {digest[:12]})" if digest else ""),
        file=sys.stderr,
    )
    if digest is None:  # a record written before the ledger named digests
        return store.manifest(
            ns, model, answer.version, None,
            f"the ledger's record of that time names no digest: choose with --version "
            f"{answer.version} --sha256 DIGEST",
        )  # fmt: skip
    archives = store.archives(ns, model, answer.version)
    same = [m for m in archives if m.sha256 == digest]
    if same:
        return same[0]
    elsewhere = by_digest(m for m in store.manifests(ns, model) if m.sha256 == digest)
    if elsewhere:
        print(
            f"the bytes are archived as version {elsewhere[0].version} "
            f"({elsewhere[0].location}): replaying those",
            file=sys.stderr,
        )
        return elsewhere[0]
    held = describe_archives(by_digest(archives)) if archives else "none"
    raise CliError(
        f"the ledger says version {answer.version} of {model} served at {args.at} with "
        f"sha256 {digest}, and no archive of the model holds those bytes: they are not "
        "archived (a version is archived when it is retired or its MLModel deleted, so it "
        f"may still be serving); archives of version {answer.version}: {held}. An "
        "artifact with another digest is never run in its place"
    )


def replay(args: argparse.Namespace) -> int:
    from mlmodel_serving.artifacts import (
        DigestMismatchError,
        S3Config,
        cached_path,
        fetch_verified,
    )

    isolation = isolated.isolation_from(args)
    if isolation is not None and args.serve:
        raise isolated.IsolationUsageError(
            "--isolated runs the version on --input in its own environment; --serve runs "
            "mlmodel-serve here: use one or the other"
        )
    store = ArchiveStore.from_env(args.bucket)
    m = _resolve_archive(store, args)
    version = m.version
    skew = compare_versions(m, running_versions())
    if isolation is None and skew.differences:
        print(f"library versions differ: {skew.describe()}", file=sys.stderr)
    if skew.blocking and not args.allow_version_skew and isolation is None:
        d = skew.blocking[0]
        raise CliError(
            f"refusing to load version {version}: it was {d.source} scikit-learn {d.recorded}, "
            f"this environment has scikit-learn {d.running} (major/minor differ). Pass "
            "--isolated to run it in an environment with the recorded versions, or "
            "--allow-version-skew to load it here anyway"
        )
    cache = Path(args.cache_dir)
    started = time.perf_counter()
    try:
        if cached_path(cache, m.sha256).is_file():  # fetch_verified hashes it again
            path = fetch_verified(m.artifact_uri, m.sha256, cache, S3Config.from_env())
        else:
            download = _download(store, m, cache)
            try:  # the digest is checked while the bytes move into the cache
                path = fetch_verified(str(download), m.sha256, cache, None)
            finally:
                download.unlink(missing_ok=True)
    except DigestMismatchError as exc:
        raise CliError(
            f"sha256 mismatch for {m.artifact_uri}: the manifest records {m.sha256}, the "
            f"stored bytes hash to {exc.actual}; refusing to load an artifact that does not "
            "match"
        ) from None
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"fetch {m.artifact_uri}: {describe_s3_error(exc)}") from None
    print(
        f"verified sha256 {m.sha256[:12]} in {time.perf_counter() - started:.1f}s: {path}",
        file=sys.stderr,
    )
    if args.serve:
        return _serve(args, m, version, cache)
    if isolation is not None:
        return _predict_isolated(args, m, path, isolation)
    return _predict(args, m, path)


def _download(store: ArchiveStore, m: ManifestView, cache: Path) -> Path:
    """Download the archived copy to a partial file in the cache, showing progress."""
    from mlmodel_serving.artifacts import CHUNK_SIZE, parse_s3_uri

    bucket, key = parse_s3_uri(m.artifact_uri)
    part = cache / "downloads" / f"{m.sha256}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(m.artifact_uri, m.size, sys.stderr)
    response = store.client.get_object(bucket, key)
    try:
        with open(part, "wb") as out:
            for chunk in response.stream(CHUNK_SIZE):
                out.write(chunk)
                progress.add(len(chunk))
    finally:
        response.close()
        response.release_conn()
    progress.done()
    return part


class Progress:
    """Download progress on stderr: a live line on a terminal, a few lines otherwise."""

    def __init__(self, what: str, total: int, out: IO[str]) -> None:
        self.what, self.total, self.out = what, max(total, 1), out
        self.seen = 0
        self.tty = out.isatty()
        self.last_step = -1
        self.last_time = 0.0
        self.out.write(f"downloading {what} ({_size(total)})\n")
        self.out.flush()

    def add(self, n: int) -> None:
        self.seen += n
        percent = min(100, self.seen * 100 // self.total)
        now = time.monotonic()
        if self.tty and now - self.last_time >= 0.2:
            self.out.write(f"\r  {_size(self.seen)} / {_size(self.total)} ({percent}%)")
            self.out.flush()
            self.last_time = now
        elif not self.tty and percent // 25 > self.last_step and percent < 100:
            self.last_step = percent // 25
            self.out.write(f"  {_size(self.seen)} / {_size(self.total)} ({percent}%)\n")
            self.out.flush()

    def done(self) -> None:
        end = "\r" if self.tty else ""
        self.out.write(f"{end}  {_size(self.seen)} / {_size(self.total)} (100%)\n")
        self.out.flush()


def _read_replay_inputs(
    args: argparse.Namespace, m: ManifestView, expected: Any, n_features: int | None
) -> np.ndarray[Any, Any]:
    """The input file's rows, in the model's column order when both name their columns."""
    try:
        x, names = read_inputs(Path(args.input))
    except InputError as exc:
        raise CliError(str(exc)) from None
    if expected is not None and names is not None:
        wanted = [str(n) for n in expected]
        missing = [n for n in wanted if n not in names]
        if missing:
            raise CliError(f"{args.input}: missing feature columns {missing}")
        x = x[:, [names.index(n) for n in wanted]]
    if n_features is not None and x.shape[1] != n_features:
        raise CliError(
            f"{args.input}: {x.shape[1]} features per row, version {m.version} expects {n_features}"
        )
    return x


def _write_replay(
    args: argparse.Namespace,
    predictions: np.ndarray[Any, Any],
    proba: np.ndarray[Any, Any] | None,
    classes: Any,
) -> int:
    rows = prediction_rows(predictions, proba, None)
    fmt = "csv" if args.output and str(args.output).lower().endswith(".csv") else "jsonl"
    class_list = (
        [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None
    )
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as out:
            write_predictions(rows, out, fmt, class_list)
        print(f"wrote {len(rows)} predictions to {args.output}", file=sys.stderr)
    else:
        stdout: IO[str] = sys.stdout
        write_predictions(rows, stdout, fmt, class_list)
    return 0


def _predict_isolated(
    args: argparse.Namespace, m: ManifestView, path: Path, isolation: isolated.Isolation
) -> int:
    try:
        requirements = isolated.recorded_requirements(m, m.trained_sklearn)
        model = isolated.load_isolated(
            path, m.sha256, m.model, m.version, requirements, isolation, isolated.stderr_log
        )
    except isolated.IsolationError as exc:
        raise CliError(f"version {m.version} --isolated: {exc}") from None
    try:
        environment = model.worker.environment
        skew = compare_versions(m, environment.versions())
        print(
            f"running version {m.version} in {environment.path} ("
            + ", ".join(f"{k} {v}" for k, v in environment.versions().items())
            + ")"
            + (f"; still differs from the record: {skew.describe()}" if skew.differences else ""),
            file=sys.stderr,
        )
        for warning in model.warnings:
            print(f"loading it raised {warning}", file=sys.stderr)
        x = _read_replay_inputs(args, m, model.feature_names, model.n_features)
        wanted: tuple[str, ...] = ("predict",)
        if args.proba and "predict_proba" in model.outputs:
            wanted += ("predict_proba",)
        try:
            outputs = model.predict(x, wanted)
        except (isolated.IsolationError, isolated.WorkerCallError) as exc:
            raise CliError(f"version {m.version} in {environment.path}: {exc}") from None
        return _write_replay(args, outputs["predict"], outputs.get("predict_proba"), model.classes)
    finally:
        model.worker.close()


def _predict(args: argparse.Namespace, m: ManifestView, path: Path) -> int:
    from mlmodel_serving.artifacts import load_verified_joblib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. InconsistentVersionWarning, already reported
        estimator = load_verified_joblib(path, m.sha256)
    x = _read_replay_inputs(
        args, m, getattr(estimator, "feature_names_in_", None),
        getattr(estimator, "n_features_in_", None),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        predictions = estimator.predict(x)
        proba = (
            estimator.predict_proba(x)
            if args.proba and hasattr(estimator, "predict_proba")
            else None
        )
    return _write_replay(args, predictions, proba, getattr(estimator, "classes_", None))


def _serve(args: argparse.Namespace, m: ManifestView, version: str, cache: Path) -> int:
    exe = shutil.which("mlmodel-serve") or str(Path(sys.executable).parent / "mlmodel-serve")
    if not Path(exe).exists():
        raise CliError("mlmodel-serve is not installed in this environment")
    argv = [
        exe, "--model-name", args.model, "--model-version", version,
        "--artifact-uri", m.artifact_uri, "--artifact-sha256", m.sha256,
        "--cache-dir", str(cache), "--host", args.host, "--port", str(args.port),
        "--grpc-port", str(args.grpc_port),
    ]  # fmt: skip
    endpoint = os.environ.get("MLMODEL_S3_ENDPOINT")
    if endpoint:
        argv += ["--s3-endpoint", endpoint]
    print(
        f"serving archived version {version} of {args.model} on http://{args.host}:{args.port}"
        f"/v2/models/{args.model} (Ctrl-C to stop)",
        file=sys.stderr,
        flush=True,
    )
    os.execv(exe, argv)  # credentials stay in the environment, never on the command line
    return 0  # pragma: no cover


def rollback_patch(m: ManifestView) -> dict[str, Any]:
    """The spec change that serves the archived copy of a version again."""
    return {"spec": {"version": m.version, "artifact": {"uri": m.artifact_uri, "sha256": m.sha256}}}


def rollback_conflict(current: dict[str, Any], m: ManifestView) -> str | None:
    """Why the MLModel cannot take the archived version under its name: the name already
    names other bytes in its spec or status.history (the apiserver and the operator would
    refuse the change as a reused version)."""
    spec = current.get("spec") or {}
    named = [(spec.get("version"), (spec.get("artifact") or {}).get("sha256"), "spec")]
    named += [(h.get("version"), h.get("sha256"), "status.history")
              for h in (current.get("status") or {}).get("history") or []]  # fmt: skip
    for version, sha256, where in named:
        if version == m.version and sha256 and sha256 != m.sha256:
            return (
                f"MLModel {m.model}'s {where} names version {m.version} with sha256 {sha256}, "
                f"the archive's version {m.version} has sha256 {m.sha256}: a version name "
                f"never changes its digest, so serve the archived copy under a new version: "
                f"spec.version <new>, spec.artifact.uri {m.artifact_uri}, "
                f"spec.artifact.sha256 {m.sha256}"
            )
    return None


def rollback(args: argparse.Namespace) -> int:
    store = ArchiveStore.from_env(args.bucket)
    m = store.manifest(args.namespace, args.model, args.to, args.sha256)
    patch = rollback_patch(m)
    if args.print:
        print(
            f"# roll {args.model} back to the archived version {m.version}: put these fields in\n"
            f"# its manifest, or: kubectl -n {args.namespace} patch mlmodel {args.model} "
            "--type merge --patch-file rollback.yaml"
        )
        print(yaml.safe_dump(patch, sort_keys=False), end="")
        return 0
    from kubernetes import client

    from mlmodel_operator.kube import load_api_client

    api = client.CustomObjectsApi(load_api_client(args.kubeconfig))
    try:
        current = api.get_namespaced_custom_object(
            GROUP, VERSION, args.namespace, PLURAL, args.model
        )
        spec = current.get("spec") or {}
        if spec.get("version") == m.version and (
            (spec.get("artifact") or {}).get("sha256") == m.sha256
        ):
            print(f"{args.model} already specifies version {m.version}; nothing to do")
            return 0
        conflict = rollback_conflict(current, m)
        if conflict:
            raise CliError(conflict)
        api.patch_namespaced_custom_object(
            GROUP, VERSION, args.namespace, PLURAL, args.model, patch
        )
    except client.ApiException as exc:
        if exc.status == 404:
            raise CliError(
                f"MLModel {args.model} not found in namespace {args.namespace}"
            ) from None
        raise CliError(
            f"patch MLModel {args.model}: HTTP {exc.status} {exc.reason}: {exc.body}"
        ) from None
    print(
        f"MLModel {args.model} now specifies version {m.version} from {m.artifact_uri}; "
        "the operator rolls it out like any spec change"
    )
    return 0


# --------------------------------------------------------------------------- parsers


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument(
        "--bucket",
        default=None,
        help=f"archive bucket (default: $MLMODEL_ARCHIVE_BUCKET or {DEFAULT_ARCHIVE_BUCKET})",
    )


def _digest(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sha256",
        type=digest_option,
        metavar="DIGEST",
        help="which archive of the version, when its name was archived with several "
        f"digests: the digest or its first {MIN_DIGEST_PREFIX}+ characters",
    )


def add_parsers(sub: Any) -> None:
    """Add ``archive``, ``history``, ``replay`` and ``rollback`` to the `mlmodel` parser."""
    archive = sub.add_parser("archive", help="list and show archived versions")
    asub = archive.add_subparsers(dest="archive_command", required=True)
    ls = asub.add_parser("ls", help="a table of archived versions")
    ls.add_argument("model", nargs="?", help="only this model")
    _common(ls)
    ls.set_defaults(func=_wrap(archive_ls, "archive ls"))
    show = asub.add_parser("show", help="one archived version's manifest")
    show.add_argument("model")
    show.add_argument("version")
    _digest(show)
    show.add_argument("-o", "--output", choices=("text", "json"), default="text")
    _common(show)
    show.set_defaults(func=_wrap(archive_show, "archive show"))

    hist = sub.add_parser("history", help="which version served a model at a given time")
    hist.add_argument("model")
    hist.add_argument("--at", required=True, help="ISO 8601 timestamp; without a zone, UTC")
    _common(hist)
    hist.set_defaults(func=_wrap(history, "history"))

    rep = sub.add_parser("replay", help="run an archived version on inputs (or serve it)")
    rep.add_argument("model")
    which = rep.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="the archived version")
    which.add_argument(
        "--at", help="the bytes that served at this time (version and digest from the ledger)"
    )
    _digest(rep)
    rep.add_argument("--input", help="CSV (header optional) or JSON lines")
    rep.add_argument("--output", help="predictions file (.csv, else JSON lines); default stdout")
    rep.add_argument("--proba", action="store_true", help="also write predict_proba")
    rep.add_argument("--allow-version-skew", action="store_true",
                     help="load even if the scikit-learn major/minor version differs")  # fmt: skip
    rep.add_argument("--serve", action="store_true", help="run mlmodel-serve on the archived copy")
    rep.add_argument("--host", default="127.0.0.1", help="with --serve (default: %(default)s)")
    rep.add_argument("--port", type=int, default=8080, help="with --serve (default: %(default)s)")
    rep.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="with --serve: also serve the Open Inference Protocol over gRPC on this port "
        "(default: 0, HTTP only)",
    )
    rep.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="(default: %(default)s)")
    isolated.add_options(rep)
    _common(rep)
    rep.set_defaults(func=_wrap(replay, "replay"))

    rb = sub.add_parser("rollback", help="point an MLModel at an archived version")
    rb.add_argument("model")
    rb.add_argument("--to", required=True, help="the archived version to serve again")
    _digest(rb)
    rb.add_argument("--print", action="store_true", help="print the YAML change, patch nothing")
    rb.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, then ~/.kube/config)"
    )
    _common(rb)
    rb.set_defaults(func=_wrap(rollback, "rollback"))


def _wrap(command: Any, name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        if name == "replay" and not args.serve and not args.input:
            print("mlmodel replay: --input is required unless --serve is given", file=sys.stderr)
            return 2
        if name == "replay" and args.sha256 and args.at:
            print(
                "mlmodel replay: --sha256 chooses among the archives of --version; --at "
                "takes the digest of what served from the ledger",
                file=sys.stderr,
            )
            return 2
        try:
            code: int = command(args)
            return code
        except isolated.IsolationUsageError as exc:
            print(f"mlmodel {name}: {exc}", file=sys.stderr)
            return 2
        except CliError as exc:
            print(f"mlmodel {name}: {exc}", file=sys.stderr)
            return 1

    return run
