"""`mlmodel decisions ls|show`, `audit` and `explain`: the server's decision records, read back.

The model server writes one Parquet row per inference to
``s3://<bucket>/<prefix>/<namespace>/<model>/<version>/dt=YYYY-MM-DD/<name>.parquet``
(format: :mod:`mlmodel_serving.decisions`; bucket: ``--bucket``, else the archive bucket
as for the server; prefix ``decisions``). `audit` and `explain` re-run a record on the
artifact *with the record's sha256*: the archived copy (found through the archive
manifests, by version and then by digest), else the one the live MLModel names. A
different digest is never run in its place. Re-runs go through the server's own
:class:`~mlmodel_serving.model.SklearnModel` (leaf tables when the record says the server
used them), so outputs compare bit for bit.

Pure parts: :mod:`mlmodel_operator.audit` (sorting, comparison, report) and
:mod:`mlmodel_operator.explain` (contributions). Errors are one line on stderr; exit
code 1 (2 for usage), as for the archive commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import platform
import re
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlmodel_operator import GROUP, PLURAL, VERSION, __version__, isolated
from mlmodel_operator.archive import describe_s3_error, s3_error_code
from mlmodel_operator.archive_cli import (
    DEFAULT_CACHE,
    ArchiveStore,
    CliError,
    _version_key,
    format_table,
    parse_timestamp,
)
from mlmodel_operator.audit import (
    AuditReport,
    VersionAudit,
    classify,
    describe_libraries,
    differing_outputs,
    group_by_version,
    iso,
    json_object,
    json_safe,
)
from mlmodel_operator.isolated import (
    IsolatedModel,
    Isolation,
    IsolationError,
    load_isolated,
    recorded_requirements,
    stderr_log,
)
from mlmodel_operator.manifest import ManifestView
from mlmodel_operator.replay import (
    Difference,
    SkewReport,
    compare_versions,
    running_versions,
)
from mlmodel_operator.settings import DEFAULT_ARCHIVE_BUCKET

if TYPE_CHECKING:
    import pyarrow as pa

    from mlmodel_operator.explain import Explanation
    from mlmodel_serving.decisions import Record
    from mlmodel_serving.model import ModelInput, SklearnModel

DEFAULT_PREFIX = "decisions"  # mlmodel_serving.decisions.DEFAULT_PREFIX, without importing it
DEFAULT_LIMIT = 50
DEFAULT_BACKGROUND = 100
_DAY = dt.timedelta(days=1)
_PARTITION = re.compile(r"(?:^|/)dt=(\d{4}-\d{2}-\d{2})/")


class UsageError(CliError):
    """Arguments that do not go together; the command exits 2."""


# --------------------------------------------------------------------------- filtering


def parse_time(flag: str, value: str | None) -> dt.datetime | None:
    """``--from``/``--to``: ISO 8601 (a date is its midnight); naive is UTC."""
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except CliError:
        raise UsageError(
            f"{flag} {value!r} is not a timestamp: expected ISO 8601 such as "
            "2026-03-14T10:00:00Z or 2026-03-14"
        ) from None


def parse_status(value: str) -> str:
    """``--status``: an HTTP status (``200``) or a class of them (``4xx``)."""
    text = value.strip().lower()
    if re.fullmatch(r"[1-5]\d\d|[1-5]xx", text):
        return text
    raise argparse.ArgumentTypeError(
        f"{value!r} is not accepted; expected an HTTP status such as 200 or 503, or a class "
        "such as 4xx"
    )


def positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not accepted; expected an integer >= 1")
    return number


@dataclass(frozen=True)
class TimeRange:
    """``start <= time < end``; either end may be open."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start >= self.end:
            raise UsageError(f"--from {iso(self.start)} is not before --to {iso(self.end)}")

    def contains(self, at: dt.datetime) -> bool:
        return (self.start is None or at >= self.start) and (self.end is None or at < self.end)

    def keeps_partition(self, day: dt.date) -> bool:
        """Whether a ``dt=`` partition may hold records of the range.

        The server names a file's partition after a time of its own (the batch it
        flushes), so a record from just before midnight can sit in the next day's
        partition, or one from just after in the day before: one day of margin each side.
        """
        if self.start is not None and day < self.start.date() - _DAY:
            return False
        return self.end is None or day <= self.end.date() + _DAY

    def describe(self) -> str:
        if self.start is None and self.end is None:
            return "at any time"
        if self.end is None:
            return f"from {iso(self.start)}" if self.start else "at any time"
        if self.start is None:
            return f"before {iso(self.end)}"
        return f"from {iso(self.start)} to {iso(self.end)}"


def partition_day(key: str) -> dt.date | None:
    """The day of a key's ``dt=YYYY-MM-DD/`` segment, if it has one."""
    match = _PARTITION.search(key)
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match[1])
    except ValueError:
        return None


@dataclass(frozen=True)
class RecordFilter:
    version: str | None = None
    time: TimeRange = field(default_factory=TimeRange)
    request_id: str | None = None
    status: str | None = None  # "200" or "4xx"

    def matches(self, record: Record) -> bool:
        if self.version is not None and record.version != self.version:
            return False
        if self.request_id is not None and record.request_id != self.request_id:
            return False
        if self.status is not None and not status_matches(self.status, record.status):
            return False
        return self.time.contains(record.time)

    def prefilter(self, table: pa.Table) -> pa.Table:
        """The rows that can match, before they are decoded (a request id, one status)."""
        import pyarrow.compute as pc

        if self.request_id is not None:
            table = table.filter(pc.equal(table["request_id"], self.request_id))
        if self.status is not None and not self.status.endswith("xx"):
            table = table.filter(pc.equal(table["status"], int(self.status)))
        return table


def status_matches(pattern: str, status: int) -> bool:
    if pattern.endswith("xx"):
        return status // 100 == int(pattern[0])
    return status == int(pattern)


# --------------------------------------------------------------------------- the store


@dataclass
class DecisionStore:
    """Lists and reads decision files under ``<prefix>/`` of one bucket."""

    client: Any
    bucket: str
    endpoint: str
    prefix: str

    @classmethod
    def from_env(cls, bucket: str | None, prefix: str | None) -> DecisionStore:
        store = ArchiveStore.from_env(bucket)  # the same S3 settings and bucket default
        return cls(
            store.client, store.bucket, store.endpoint, (prefix or DEFAULT_PREFIX).strip("/")
        )

    def where(self, namespace: str, model: str | None = None, version: str | None = None) -> str:
        parts = (
            [self.prefix, namespace] + ([model] if model else []) + ([version] if version else [])
        )
        return f"s3://{self.bucket}/" + "/".join(parts) + "/"

    def _fail(self, what: str, exc: Exception) -> CliError:
        if s3_error_code(exc) == "NoSuchBucket":
            return CliError(
                f"bucket {self.bucket} does not exist at {self.endpoint} (set --bucket, or "
                "MLMODEL_ARCHIVE_BUCKET: decision records default to the archive bucket)"
            )
        return CliError(f"{what}: {describe_s3_error(exc)}")

    def _list(self, prefix: str, recursive: bool) -> list[Any]:
        try:
            return list(self.client.list_objects(self.bucket, prefix=prefix, recursive=recursive))
        except Exception as exc:
            raise self._fail(f"list s3://{self.bucket}/{prefix}", exc) from None

    def _children(self, prefix: str) -> list[str]:
        """The names of the "folders" directly under ``prefix``."""
        return sorted(
            o.object_name[len(prefix) :].strip("/")
            for o in self._list(prefix, recursive=False)
            if o.is_dir
        )

    def keys(
        self, namespace: str, model: str | None, version: str | None, time_range: TimeRange
    ) -> list[str]:
        """The decision files that may hold records of the range (``dt=`` pruned)."""
        base = f"{self.prefix}/{namespace}/"
        models = [model] if model else self._children(base)
        keys: list[str] = []
        for m in models:
            model_base = f"{base}{m}/"
            if time_range.start is None and time_range.end is None:
                prefixes = [f"{model_base}{version}/" if version else model_base]
            else:
                versions = [version] if version else self._children(model_base)
                prefixes = []
                for v in versions:
                    for child in self._children(f"{model_base}{v}/"):
                        day = partition_day(child + "/")
                        if day is None or time_range.keeps_partition(day):
                            prefixes.append(f"{model_base}{v}/{child}/")
            for p in prefixes:
                keys += [
                    o.object_name
                    for o in self._list(p, recursive=True)
                    if o.object_name.endswith(".parquet")
                ]
        return keys

    def read(self, key: str, flt: RecordFilter | None = None) -> list[Record]:
        from mlmodel_serving.decisions import decode_table, read_table

        try:
            response = self.client.get_object(self.bucket, key)
        except Exception as exc:
            raise self._fail(f"read s3://{self.bucket}/{key}", exc) from None
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        try:
            table = read_table(data)
            if flt is not None:
                table = flt.prefilter(table)
            return decode_table(table, key)
        except (ValueError, KeyError, OSError) as exc:  # pyarrow's errors are among these
            print(f"warning: skipped s3://{self.bucket}/{key}: {exc}", file=sys.stderr)
            return []

    def records(self, namespace: str, model: str | None, flt: RecordFilter) -> list[Record]:
        """The matching records, oldest first."""
        found = []
        for key in self.keys(namespace, model, flt.version, flt.time):
            found += [r for r in self.read(key, flt) if flt.matches(r)]
        found.sort(key=lambda r: (r.time, r.request_id))
        return found

    def find(
        self, namespace: str, model: str | None, request_id: str, time_range: TimeRange
    ) -> Record:
        """The one record of a request, or an error naming what was searched."""
        found = self.records(namespace, model, RecordFilter(time=time_range, request_id=request_id))
        if not found:
            raise CliError(
                f"request id {request_id} not found in {self.where(namespace, model)} "
                f"(bucket {self.bucket}, prefix {self.prefix}, {time_range.describe()})"
            )
        if len(found) > 1:
            listed = ", ".join(
                f"{r.model} version {r.version} at {iso(r.time)} (s3://{self.bucket}/{r.key})"
                for r in found
            )
            raise CliError(
                f"request id {request_id} has {len(found)} records: {listed}; narrow it with "
                "MODEL, --from and --to"
            )
        return found[0]


# --------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class ArtifactSource:
    """Where the artifact with a record's digest is, and how it was found."""

    uri: str
    sha256: str
    source: str  # in words: "archived version 2 (s3://...)" or "the live MLModel's spec"
    manifest: ManifestView | None
    notes: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "source": self.source,
                "notes": list(self.notes)}  # fmt: skip


def choose_manifest(
    manifests: Sequence[ManifestView], version: str, sha256: str
) -> tuple[ManifestView | None, list[str]]:
    """The archived version to run a record of ``version`` made with ``sha256``.

    The archive of the same version with the record's digest (a version name archived
    with several digests has one archive per digest); otherwise any archived version of
    the model with the record's digest (the same bytes under another name). Never one
    with another digest.
    """
    same = [m for m in manifests if m.version == version]
    for m in same:
        if m.sha256 == sha256:
            return m, []
    notes = []
    if same:
        held = ", ".join(sorted({m.sha256 for m in same}))
        notes.append(
            f"the archived version {version} has sha256 {held}, not the record's "
            f"{sha256} (the version name was reused for other bytes)"
        )
    else:
        notes.append(f"version {version} is not archived")
    by_digest = sorted(
        (m for m in manifests if m.sha256 == sha256), key=lambda m: _version_key(m.version)
    )
    if by_digest:
        notes.append(
            f"the archived version {by_digest[0].version} has the record's sha256: using it"
        )
        return by_digest[0], notes
    return None, notes


def choose_live(obj: dict[str, Any], sha256: str) -> tuple[str | None, str]:
    """The artifact a live MLModel names with the record's digest: ``(uri, how)``."""
    spec = obj.get("spec") or {}
    artifact = spec.get("artifact") or {}
    if artifact.get("sha256") == sha256 and artifact.get("uri"):
        return str(
            artifact["uri"]
        ), f"the live MLModel's spec.artifact (version {spec.get('version')})"
    for entry in reversed((obj.get("status") or {}).get("history") or []):
        if entry.get("sha256") == sha256 and entry.get("uri"):
            return str(entry["uri"]), (
                f"the live MLModel's status.history (version {entry.get('version')})"
            )
    return None, (
        f"the live MLModel names sha256 {artifact.get('sha256')} (version "
        f"{spec.get('version')}), not the record's"
    )


def read_live_model(
    namespace: str, model: str, kubeconfig: str | None
) -> tuple[dict[str, Any] | None, str]:
    """The MLModel from the cluster, or None and why not."""
    from kubernetes import client

    from mlmodel_operator.kube import load_api_client

    try:
        api_client = load_api_client(kubeconfig)
    except Exception as exc:
        return None, f"no Kubernetes cluster to ask for the live MLModel ({_first_line(exc)})"
    try:
        obj: dict[str, Any] = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, model, _request_timeout=15
        )
        return obj, ""
    except client.ApiException as exc:
        if exc.status == 404:
            return None, f"MLModel {model} does not exist in namespace {namespace}"
        return None, f"reading MLModel {model}: HTTP {exc.status} {exc.reason}"
    except Exception as exc:
        return None, f"the Kubernetes API did not answer ({_first_line(exc)})"
    finally:
        api_client.close()


def _first_line(exc: BaseException) -> str:
    text = (str(exc) or type(exc).__name__).strip().splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."


def find_artifact(
    archive: ArchiveStore, namespace: str, model: str, version: str, sha256: str,
    kubeconfig: str | None,
) -> ArtifactSource:  # fmt: skip
    """The artifact with ``sha256``, from the archive or the live MLModel; else CliError."""
    notes: list[str] = []
    try:
        manifests = archive.manifests(namespace, model)
    except CliError as exc:
        manifests = []
        notes.append(f"the archive could not be read: {exc}")
    chosen, more = choose_manifest(manifests, version, sha256)
    notes += more
    if chosen is not None:
        return ArtifactSource(
            chosen.artifact_uri, sha256, f"archived version {chosen.version}, {chosen.where}", chosen,
            tuple(notes),
        )  # fmt: skip
    obj, why = read_live_model(namespace, model, kubeconfig)
    if obj is not None:
        uri, how = choose_live(obj, sha256)
        if uri is not None:
            return ArtifactSource(uri, sha256, how, None, tuple(notes))
        notes.append(how)
    else:
        notes.append(why)
    raise CliError(
        f"no artifact with sha256 {sha256} (version {version} of model {model}, namespace "
        f"{namespace}) to re-run: {'; '.join(notes)}; an artifact with another digest is "
        "never run in its place"
    )


@dataclass
class LoadedVersion:
    """A verified artifact, loaded the way the server loads it, and its library versions.

    With ``isolated``, the artifact is loaded in a worker process of an environment with
    the recorded library versions (:mod:`mlmodel_operator.isolated`); ``close()`` stops it.
    """

    source: ArtifactSource
    path: Path
    name: str
    version: str
    skew: SkewReport
    recorded: dict[str, Any]
    running: dict[str, str | None]
    notes: list[str] = field(default_factory=list)
    isolated: IsolatedModel | None = None
    _models: dict[str, SklearnModel] = field(default_factory=dict)
    _failed: dict[str, str] = field(default_factory=dict)
    _noted: set[str] = field(default_factory=set)

    def model(self, predict_path: str) -> SklearnModel | IsolatedModel:
        """The model computing the way the record says the server did."""
        from mlmodel_serving.model import PATH_LEAF_TABLES, SklearnModel

        if self.isolated is not None:
            if predict_path == PATH_LEAF_TABLES and predict_path not in self._noted:
                self._noted.add(predict_path)
                self.notes.append(
                    "the server computed with leaf tables, which it checked against "
                    "scikit-learn bit for bit when it loaded the model: re-run with "
                    "scikit-learn in the isolated environment"
                )
            return self.isolated
        if predict_path in self._failed:
            raise CliError(self._failed[predict_path])
        if predict_path not in self._models:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. InconsistentVersionWarning: reported
                try:
                    model = SklearnModel.load(
                        self.path, self.source.sha256, self.name, self.version
                    )
                except Exception as exc:  # unpickling runs foreign code: any error
                    self._failed[predict_path] = (
                        f"cannot load {self.source.uri}: {type(exc).__name__}: {_first_line(exc)}"
                    )
                    raise CliError(self._failed[predict_path]) from None
                if predict_path == PATH_LEAF_TABLES:
                    reason = model.use_leaf_tables()
                    if model.predict_path != PATH_LEAF_TABLES:
                        self.notes.append(
                            "the server computed with leaf tables, which could not be built "
                            f"here ({reason}): re-run with scikit-learn"
                        )
            self._models[predict_path] = model
        return self._models[predict_path]

    def libraries(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "running": self.running,
            "differences": [dataclasses.asdict(d) for d in self.skew.differences],
            "isolated": (
                self.isolated.worker.environment.as_json() if self.isolated is not None else None
            ),
        }

    def close(self) -> None:
        """Stop the isolated worker, if there is one."""
        if self.isolated is not None:
            self.isolated.worker.close()


def _major_minor(version: str | None) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)", version or "")
    return (int(match[1]), int(match[2])) if match else None


def isolation_from(args: argparse.Namespace) -> Isolation | None:
    try:
        return isolated.isolation_from(args)
    except isolated.IsolationUsageError as exc:
        raise UsageError(str(exc)) from None


def load_version(
    source: ArtifactSource,
    name: str,
    version: str,
    cache: Path,
    allow_skew: bool,
    isolation: Isolation | None = None,
) -> LoadedVersion:
    """Fetch and verify the artifact, compare library versions; refuse a major/minor skew.

    With ``isolation``: load it in an environment with the recorded versions instead, and
    compare with those.
    """
    from mlmodel_serving.artifacts import DigestMismatchError, S3Config, fetch_verified

    try:
        s3 = S3Config.from_env() if source.uri.startswith("s3://") else None
        path = fetch_verified(source.uri, source.sha256, cache, s3)
    except DigestMismatchError as exc:
        raise CliError(
            f"sha256 mismatch for {source.uri}: the record was made by {source.sha256}, the "
            f"stored bytes hash to {exc.actual}; refusing to load an artifact that does not "
            "match"
        ) from None
    except Exception as exc:
        raise CliError(f"fetch {source.uri}: {describe_s3_error(exc)}") from None
    if source.manifest is not None:
        pickled = source.manifest.trained_sklearn
    else:  # no manifest: what the pickle itself says
        from mlmodel_operator.pickle_scan import scan_artifact

        with open(path, "rb") as f:
            pickled = scan_artifact(f).sklearn_version
    isolated = None
    if isolation is not None:
        try:
            requirements = recorded_requirements(source.manifest, pickled)
            isolated = load_isolated(
                path, source.sha256, name, version, requirements, isolation, stderr_log
            )
        except IsolationError as exc:
            raise CliError(f"version {version} --isolated: {exc}") from None
        running: dict[str, str | None] = isolated.worker.environment.versions()
    else:
        running = dict(running_versions())
    if source.manifest is not None:
        m = source.manifest
        skew = compare_versions(m, running)
        recorded: dict[str, Any] = {
            "pickledWith": {"scikit-learn": m.trained_sklearn},
            "servingRelease": {k: v for k, v in m.release.items() if k != "note"},
        }
    else:
        recorded = {"pickledWith": {"scikit-learn": pickled}}
        here = running.get("scikit-learn")
        diffs: tuple[Difference, ...] = ()
        if pickled and here and pickled != here:
            blocking = _major_minor(pickled) != _major_minor(here)
            diffs = (Difference("scikit-learn", pickled, here, "pickled with", blocking),)
        skew = SkewReport(diffs)
    if skew.blocking and not allow_skew and isolated is None:
        d = skew.blocking[0]
        raise CliError(
            f"refusing to load version {version}: it was {d.source} scikit-learn {d.recorded}, "
            f"this environment has scikit-learn {d.running} (major/minor differ). Pass "
            "--isolated to run it in an environment with the recorded versions, or "
            "--allow-version-skew to load it here anyway"
        )
    loaded = LoadedVersion(source, path, name, version, skew, recorded, running, isolated=isolated)
    if isolated is not None:
        loaded.notes += [f"loading it raised {w}" for w in isolated.warnings]
    return loaded


def rerun(loaded: LoadedVersion, record: Record) -> dict[str, Any]:
    """The record's outputs computed again, as a record stores them."""
    from mlmodel_serving.decisions import output_values

    model = loaded.model(record.predict_path)
    names = model.check_outputs(tuple(record.outputs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as the server runs (quiet_warnings)
        try:
            outputs = model.predict(record.model_input(), names)
        except IsolationError as exc:  # the environment failed, not the model
            raise CliError(str(exc)) from None
    return {name: output_values(np.asarray(values)) for name, values in outputs.items()}


# --------------------------------------------------------------------------- ls and show


def _ms(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def outputs_summary(record: Record, limit: int = 60) -> str:
    """A short cell: the outputs (first values), or the error."""
    if record.status != 200 or not record.outputs:
        return _clip(record.error or "-", limit)
    parts = []
    for name, values in record.outputs.items():
        parts.append(f"{name}={json.dumps(json_safe(values), separators=(',', ':'))}")
    return _clip(" ".join(parts), limit)


def record_json(store: DecisionStore, record: Record) -> dict[str, Any]:
    data = record.as_json()
    data["object"] = f"s3://{store.bucket}/{record.key}"
    return json_object(data)


def decisions_ls(args: argparse.Namespace) -> int:
    store = DecisionStore.from_env(args.bucket, args.prefix)
    time_range = TimeRange(parse_time("--from", args.start), parse_time("--to", args.end))
    flt = RecordFilter(args.version, time_range, args.request_id, args.status)
    records = store.records(args.namespace, args.model, flt)
    if not records:
        print(
            f"no decision records in {store.where(args.namespace, args.model, args.version)} "
            f"{time_range.describe()}" + _filters_text(flt),
            file=sys.stderr,
        )
        return 0
    shown = records[-args.limit :]
    if len(shown) < len(records):
        print(
            f"showing the latest {len(shown)} of {len(records)} records (--limit)",
            file=sys.stderr,
        )
    if args.json:
        for r in shown:
            print(json.dumps(record_json(store, r), allow_nan=False))
        return 0
    with_model = args.model is None
    rows = [["TIME", *(["MODEL"] if with_model else []), "VERSION", "REQUEST ID", "STATUS",
             "ROWS", "LATENCY", "OUTPUTS"]]  # fmt: skip
    rows += [
        [_ms(r.time), *([r.model] if with_model else []), r.version, r.request_id,
         str(r.status), str(r.rows), f"{r.latency_ms:.1f} ms", outputs_summary(r)]
        for r in shown
    ]  # fmt: skip
    print(format_table(rows))
    return 0


def _filters_text(flt: RecordFilter) -> str:
    parts = []
    if flt.request_id:
        parts.append(f"request id {flt.request_id}")
    if flt.status:
        parts.append(f"status {flt.status}")
    return f" with {' and '.join(parts)}" if parts else ""


def format_record(store: DecisionStore, r: Record) -> list[str]:
    """One record in full, for people."""
    lines = [
        f"Request:      {r.request_id}",
        f"Time:         {iso(r.time)}",
        f"Model:        {r.model} (namespace {r.namespace}), version {r.version}",
        f"Artifact:     sha256 {r.sha256}",
        f"Protocol:     {r.protocol}",
        f"Status:       {r.status}" + (f" ({r.error})" if r.error else ""),
        f"Latency:      {r.latency_ms:.3f} ms",
        f"Rows:         {r.rows}",
        f"Computed by:  {r.predict_path}",
        f"Redacted:     {', '.join(sorted(r.redacted)) or '-'}",
        f"Object:       s3://{store.bucket}/{r.key}",
    ]
    if r.inputs is None:
        lines.append("Inputs:       (not recorded)")
    else:
        lines.append("Inputs (one value per row):")
        rows = [
            [f"  {c.name}", c.datatype + (" redacted" if c.name in r.redacted else ""),
             ", ".join(_cell(v) for v in r.inputs.get(c.name) or [])]
            for c in r.columns
        ]  # fmt: skip
        lines += format_table(rows).splitlines()
    if r.outputs:
        lines.append("Outputs (one value per row):")
        rows = [
            [f"  {name}", json.dumps(json_safe(values), separators=(", ", ": "))]
            for name, values in r.outputs.items()
        ]
        lines += format_table(rows).splitlines()
    else:
        lines.append("Outputs:      -")
    return lines


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "(missing)"
    return repr(value) if isinstance(value, float) else str(value)


def decisions_show(args: argparse.Namespace) -> int:
    store = DecisionStore.from_env(args.bucket, args.prefix)
    time_range = TimeRange(parse_time("--from", args.start), parse_time("--to", args.end))
    record = store.find(args.namespace, args.model, args.request_id, time_range)
    if args.json:
        print(json.dumps(record_json(store, record), indent=2, allow_nan=False))
    else:
        print("\n".join(format_record(store, record)))
    return 0


# --------------------------------------------------------------------------- audit


def audit(args: argparse.Namespace) -> int:
    store = DecisionStore.from_env(args.bucket, args.prefix)
    archive = ArchiveStore.from_env(args.archive_bucket)
    start, end = parse_time("--from", args.start), parse_time("--to", args.end)
    assert start is not None and end is not None  # required arguments
    time_range = TimeRange(start, end)
    records = store.records(args.namespace, args.model, RecordFilter(time=time_range))
    if not records:
        raise CliError(
            f"no decision records of model {args.model} in "
            f"{store.where(args.namespace, args.model)} {time_range.describe()} "
            f"(bucket {store.bucket}, prefix {store.prefix})"
        )
    isolation = isolation_from(args)
    running = running_versions()
    report = AuditReport(
        namespace=args.namespace, model=args.model, start=start, end=end, bucket=store.bucket,
        prefix=store.prefix, archive_bucket=archive.bucket, ran_at=dt.datetime.now(dt.UTC),
        ran_by=_user(), host=platform.node(), tool_version=__version__, running=running,
        versions=[],
    )  # fmt: skip
    for version, sha256, group in group_by_version(records):
        report.versions.append(_audit_version(args, archive, version, sha256, group, isolation))
    print(report.summary())
    if args.json:
        Path(args.json).write_text(report.to_json_text(), encoding="utf-8")
        print(f"wrote the JSON report to {args.json}", file=sys.stderr)
    if args.html:
        Path(args.html).write_text(report.to_html(), encoding="utf-8")
        print(f"wrote the HTML report to {args.html}", file=sys.stderr)
    return 0 if report.passed else 1


def _audit_version(
    args: argparse.Namespace, archive: ArchiveStore, version: str, sha256: str,
    records: list[Record], isolation: Isolation | None,
) -> VersionAudit:  # fmt: skip
    result = VersionAudit(version, sha256)
    runnable = result.sort(records)
    if not runnable:
        return result
    started = time.perf_counter()
    print(f"version {version} (sha256 {sha256[:12]}): re-running {len(runnable)} record(s)",
          file=sys.stderr)  # fmt: skip
    try:
        source = find_artifact(
            archive, args.namespace, args.model, version, sha256, args.kubeconfig
        )
        result.artifact = source.as_json()
        loaded = load_version(
            source, args.model, version, Path(args.cache_dir), args.allow_version_skew, isolation
        )
    except CliError as exc:
        result.skip(runnable, str(exc))
        return result
    try:
        _rerun_all(loaded, result, runnable, source)
    finally:
        loaded.close()
    print(f"  {result.identical} identical, {result.mismatched} mismatched in "
          f"{time.perf_counter() - started:.1f}s", file=sys.stderr)  # fmt: skip
    return result


def _rerun_all(
    loaded: LoadedVersion, result: VersionAudit, runnable: list[Record], source: ArtifactSource
) -> None:
    result.libraries = loaded.libraries()
    if loaded.skew.differences:
        print(f"  library versions differ: {loaded.skew.describe()}", file=sys.stderr)
    for record in runnable:
        try:
            outputs = rerun(loaded, record)
        except CliError as exc:
            result.skip([record], str(exc))
        except Exception as exc:  # the artifact fails where it once answered: not reproduced
            result.failed(record, f"{type(exc).__name__}: {_first_line(exc)}")
        else:
            result.compare(record, outputs)
    if loaded.notes:
        result.artifact = {**source.as_json(), "notes": [*source.notes, *loaded.notes]}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --------------------------------------------------------------------------- explain


def require_explain_libraries(plot: bool) -> Any:
    """shap (and matplotlib for ``--plot``), or a CliError saying how to install them."""
    try:
        import shap
    except ImportError as exc:
        raise CliError(
            f"explain needs shap ({exc}): pip install 'mlmodel-lifecycle[explain]'"
        ) from None
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise CliError(
                f"--plot needs matplotlib ({exc}): pip install 'mlmodel-lifecycle[explain]'"
            ) from None
    return shap


def background_sample(
    store: DecisionStore, record: Record, limit: int
) -> tuple[ModelInput, str, int]:
    """Rows of other decisions of the record's version (nearest days first), up to
    ``limit``; the record's own rows when there are none. Returns (rows, what, records)."""
    from mlmodel_operator.explain import concat_rows, n_rows, take_rows

    day = record.time.date()

    def distance(key: str) -> tuple[int, str]:
        d = partition_day(key)
        return (abs((d - day).days) if d else 10**6, key)

    keys = sorted(
        store.keys(record.namespace, record.model, record.version, TimeRange()), key=distance
    )
    parts: list[ModelInput] = []
    seen, rows = 0, 0
    for key in keys:
        for r in store.read(key):
            if r.request_id == record.request_id or r.sha256 != record.sha256:
                continue
            if classify(r)[0] != "rerun":
                continue
            parts.append(r.model_input())
            seen += 1
            rows += r.rows
            if rows >= limit:
                break
        if rows >= limit:
            break
    if not parts:
        return (
            record.model_input(),
            (
                "the record's own rows (no other decisions of this version were found), so the "
                "contributions are measured against the row itself"
            ),
            0,
        )
    sample = concat_rows(parts)
    sample = take_rows(sample, slice(0, min(limit, n_rows(sample))))
    return (
        sample,
        f"{n_rows(sample)} rows from {seen} other decisions of version {record.version}",
        seen,
    )


def explain_command(args: argparse.Namespace) -> int:
    shap = require_explain_libraries(bool(args.plot))
    store = DecisionStore.from_env(args.bucket, args.prefix)
    archive = ArchiveStore.from_env(args.archive_bucket)
    time_range = TimeRange(parse_time("--from", args.start), parse_time("--to", args.end))
    record = store.find(args.namespace, args.model, args.request_id, time_range)
    if record.status != 200:
        raise CliError(
            f"request {record.request_id} failed (HTTP {record.status}: {record.error}): "
            "there is no decision to explain"
        )
    hidden = [c.name for c in record.columns if c.name in record.redacted]
    if hidden:
        raise CliError(
            f"request {record.request_id}: column(s) {', '.join(hidden)} are redacted (the "
            "record holds only keyed hashes of their values), so the record cannot be re-run "
            "or explained"
        )
    if record.inputs is None or not record.outputs:
        raise CliError(f"request {record.request_id} has no recorded inputs and outputs")
    if args.row > record.rows:
        raise UsageError(f"--row {args.row}: request {record.request_id} has {record.rows} row(s)")
    isolation = isolation_from(args)
    source = find_artifact(
        archive, record.namespace, record.model, record.version, record.sha256, args.kubeconfig
    )
    loaded = load_version(
        source, record.model, record.version, Path(args.cache_dir), args.allow_version_skew,
        isolation,
    )  # fmt: skip
    try:
        return _explain_loaded(args, shap, store, record, source, loaded)
    finally:
        loaded.close()


def _explain_loaded(
    args: argparse.Namespace, shap: Any, store: DecisionStore, record: Record,
    source: ArtifactSource, loaded: LoadedVersion,
) -> int:  # fmt: skip
    from mlmodel_operator import explain as ex

    if loaded.skew.differences:
        print(f"library versions differ: {loaded.skew.describe()}", file=sys.stderr)
    try:
        outputs = rerun(loaded, record)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(
            f"!!! re-running request {record.request_id} on sha256 {record.sha256[:12]} failed "
            f"({type(exc).__name__}: {_first_line(exc)}): the record is not reproduced"
        ) from None
    differing = differing_outputs(record.outputs, outputs)
    model = loaded.model(record.predict_path)
    x = record.model_input()
    k = args.row - 1
    x_row = ex.take_rows(x, slice(k, k + 1))
    background, background_text, _ = background_sample(store, record, args.background)
    try:
        explanation = ex.explain_row(shap, model, record.columns, x_row, background)
    except ex.ExplainError as exc:
        raise CliError(f"request {record.request_id}: {exc}") from None
    except Exception as exc:  # shap's own failures, for a model it cannot take
        raise CliError(
            f"request {record.request_id}: shap could not explain this "
            f"{_estimator_name(model)} ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    if explanation.background_rows == 0:
        background_text = "not used (the trees' training cover is the background)"
    if differing:
        banner = (
            f"!!! THE RE-RUN DOES NOT REPRODUCE THE RECORD: {', '.join(differing)} differ. The "
            "explanation is of the artifact as it runs here, not of the decision as it was made."
        )
        print(banner, file=sys.stderr)
    if args.plot:
        ex.plot_contributions(
            explanation, Path(args.plot),
            f"request {record.request_id}, row {args.row}: {record.model} version {record.version}",
        )  # fmt: skip
        print(f"wrote {args.plot}", file=sys.stderr)
    row_outputs = {name: values[k] for name, values in record.outputs.items()}
    if args.json:
        data = {
            "record": {key: value for key, value in record_json(store, record).items()
                       if key not in ("inputs", "outputs")},
            "row": args.row,
            "inputs": dict(ex.row_values(x_row, [c.name for c in record.columns])),
            "outputs": row_outputs,
            "rerun": {
                "identical": not differing,
                "differing": differing,
                "outputs": {name: values[k] for name, values in outputs.items()},
            },
            "artifact": source.as_json(),
            "libraries": loaded.libraries(),
            "notes": loaded.notes,
            "background": background_text,
            **explanation.as_json(),
        }  # fmt: skip
        print(json.dumps(json_safe(data), indent=2, allow_nan=False))
    else:
        print("\n".join(_explain_text(record, args.row, x_row, row_outputs, differing,
                                      outputs, loaded, explanation, background_text, store)))  # fmt: skip
    return 0 if not differing and explanation.additive else 1


def _estimator_name(model: SklearnModel | IsolatedModel) -> str:
    if isinstance(model, IsolatedModel):
        return model.estimator_name
    return type(model.estimator).__name__


def _explain_text(
    record: Record, row: int, x_row: ModelInput, row_outputs: dict[str, Any],
    differing: list[str], outputs: dict[str, Any], loaded: LoadedVersion,
    explanation: Explanation, background_text: str, store: DecisionStore,
) -> Iterator[str]:  # fmt: skip
    from mlmodel_operator import explain as ex

    yield f"Request:      {record.request_id} (row {row} of {record.rows})"
    yield f"Time:         {iso(record.time)}"
    yield f"Model:        {record.model} (namespace {record.namespace}), version {record.version}"
    yield f"Artifact:     sha256 {record.sha256}"
    yield f"  from        {loaded.source.source}: {loaded.source.uri}"
    for note in [*loaded.source.notes, *loaded.notes]:
        yield f"  note        {note}"
    yield f"Libraries:    {describe_libraries(loaded.libraries())}"
    yield f"Record:       s3://{store.bucket}/{record.key}"
    if differing:
        yield f"Re-run:       !!! DIFFERS from the record in {', '.join(differing)} !!!"
        for name in differing:
            yield f"  {name} recorded {json.dumps(json_safe(record.outputs[name]))}"
            yield f"  {name} re-run   {json.dumps(json_safe(outputs.get(name)))}"
    else:
        yield f"Re-run:       identical to the record, bit for bit ({', '.join(record.outputs)})"
    yield "Inputs:"
    rows = [[f"  {name}", "(missing)" if value is None else _cell(value)]
            for name, value in ex.row_values(x_row, [c.name for c in record.columns])]  # fmt: skip
    yield from format_table(rows).splitlines()
    yield "Output:       " + "; ".join(
        f"{name} = {json.dumps(json_safe(value))}" for name, value in row_outputs.items()
    )
    yield f"Explained:    {explanation.target.label} = {explanation.explained_value:.9g}"
    yield f"Explainer:    {explanation.method}"
    yield f"  why         {explanation.why}"
    for note in explanation.notes:
        yield f"  note        {note}"
    yield f"Background:   {background_text}"
    yield f"Base value:   {explanation.base_value:.9g}"
    yield "Contributions (largest first):"
    yield from ("  " + line for line in ex.format_contributions(explanation))
    yield "Additivity:   " + ex.additivity_line(explanation)


# --------------------------------------------------------------------------- parsers


def _store_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="default", help="namespace (default: %(default)s)")
    p.add_argument(
        "--bucket",
        default=None,
        help="the decision records' bucket (default: the archive bucket, $MLMODEL_ARCHIVE_BUCKET "
        f"or {DEFAULT_ARCHIVE_BUCKET})",
    )
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix (default: %(default)s)")


def _range_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--from", dest="start", metavar="TIME", required=required,
                   help="from this time (ISO 8601, inclusive; without a zone, UTC)")  # fmt: skip
    p.add_argument("--to", dest="end", metavar="TIME", required=required,
                   help="until this time (ISO 8601, exclusive; without a zone, UTC)")  # fmt: skip


def _rerun_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--archive-bucket",
        default=None,
        help=f"bucket of the archive manifests (default: $MLMODEL_ARCHIVE_BUCKET or "
        f"{DEFAULT_ARCHIVE_BUCKET})",
    )
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="(default: %(default)s)")
    p.add_argument("--kubeconfig", help="for a version not archived yet: the cluster to read "
                   "the live MLModel from (default: in-cluster, then ~/.kube/config)")  # fmt: skip
    p.add_argument("--allow-version-skew", action="store_true",
                   help="load even if the scikit-learn major/minor version differs")  # fmt: skip
    isolated.add_options(p)


def add_parsers(sub: Any) -> None:
    """Add ``decisions ls|show``, ``audit`` and ``explain`` to the `mlmodel` parser."""
    decisions = sub.add_parser("decisions", help="list and show the server's decision records")
    dsub = decisions.add_subparsers(dest="decisions_command", required=True)
    ls = dsub.add_parser("ls", help="a table of decision records (JSON lines with --json)")
    ls.add_argument("model", nargs="?", help="only this model")
    ls.add_argument("--version", help="only this version")
    _range_options(ls, required=False)
    ls.add_argument("--request-id", help="only this request")
    ls.add_argument(
        "--status",
        metavar="CODE",
        type=parse_status,
        help="only this HTTP status (200) or class (4xx)",
    )
    ls.add_argument("--limit", metavar="N", type=positive, default=DEFAULT_LIMIT,
                    help="the latest N records (default: %(default)s)")  # fmt: skip
    ls.add_argument("--json", action="store_true", help="JSON lines, one record per line")
    _store_options(ls)
    ls.set_defaults(func=_wrap(decisions_ls, "decisions ls"))

    show = dsub.add_parser("show", help="one decision record in full")
    show.add_argument("request_id", metavar="REQUEST_ID")
    show.add_argument("model", nargs="?", help="search only this model")
    _range_options(show, required=False)
    show.add_argument("--json", action="store_true")
    _store_options(show)
    show.set_defaults(func=_wrap(decisions_show, "decisions show"))

    aud = sub.add_parser(
        "audit", help="re-run every logged decision of a period on its exact artifact"
    )
    aud.add_argument("--model", required=True)
    _range_options(aud, required=True)
    aud.add_argument("--json", metavar="FILE", help="write the JSON report here")
    aud.add_argument("--html", metavar="FILE", help="write an HTML report here")
    _store_options(aud)
    _rerun_options(aud)
    aud.set_defaults(func=_wrap(audit, "audit"))

    exp = sub.add_parser("explain", help="why a logged decision came out as it did (SHAP)")
    exp.add_argument("--request-id", required=True)
    exp.add_argument("--model", help="search only this model")
    exp.add_argument(
        "--row", metavar="K", type=positive, default=1, help="row of the request (default: 1)"
    )
    exp.add_argument("--plot", metavar="PNG", help="write a bar chart of the contributions")
    exp.add_argument("--json", action="store_true", help="print JSON")
    exp.add_argument("--background", metavar="N", type=positive, default=DEFAULT_BACKGROUND,
                     help="rows of other decisions as background (default: %(default)s)")  # fmt: skip
    _range_options(exp, required=False)
    _store_options(exp)
    _rerun_options(exp)
    exp.set_defaults(func=_wrap(explain_command, "explain"))


def _wrap(command: Any, name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            code: int = command(args)
            return code
        except UsageError as exc:
            print(f"mlmodel {name}: {exc}", file=sys.stderr)
            return 2
        except CliError as exc:
            print(f"mlmodel {name}: {exc}", file=sys.stderr)
            return 1

    return run
