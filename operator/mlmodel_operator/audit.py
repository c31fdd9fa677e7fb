"""`mlmodel audit`, the pure part: sorting records, comparing outputs bit for bit, the report.

A record is re-run when it succeeded (HTTP 200), its inputs were recorded and none of
them is redacted; failed requests and redacted records are counted apart, with the
reason. A re-run is *identical* when every recorded output equals the re-run's, value
for value as a record stores it (:func:`mlmodel_serving.decisions.output_values`):
floats compared by their 64 bits (NaN equals NaN), integers and text by equality. The
command that finds the artifacts and re-runs is in :mod:`mlmodel_operator.decisions_cli`.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlmodel_serving.decisions import Record

REPORT_FORMAT = "ml.lifecycle.io/decision-audit/v1"
# How many mismatches the text summary lists per version (the JSON and HTML list all).
SUMMARY_MISMATCHES = 10


# --------------------------------------------------------------------------- comparing


def same_value(recorded: Any, rerun: Any) -> bool:
    """Equal as stored: floats bit for bit (any NaN equals any NaN), lists element-wise."""
    if isinstance(recorded, list) and isinstance(rerun, list):
        return len(recorded) == len(rerun) and all(
            same_value(a, b) for a, b in zip(recorded, rerun, strict=True)
        )
    if isinstance(recorded, float) and isinstance(rerun, float):
        if math.isnan(recorded) and math.isnan(rerun):
            return True
        return struct.pack("<d", recorded) == struct.pack("<d", rerun)  # 0.0 is not -0.0
    return type(recorded) is type(rerun) and bool(recorded == rerun)


def differing_outputs(recorded: Mapping[str, Any], rerun: Mapping[str, Any]) -> list[str]:
    """The recorded outputs the re-run does not reproduce exactly (or did not compute)."""
    return [
        name
        for name, value in recorded.items()
        if name not in rerun or not same_value(value, rerun[name])
    ]


def classify(record: Record) -> tuple[str, str]:
    """``(kind, reason)``: kind is ``rerun``, ``error``, ``redacted`` or ``skipped``."""
    if record.status != 200:
        return "error", f"HTTP {record.status}"
    hidden = [c.name for c in record.columns if c.name in record.redacted]
    if hidden:
        return "redacted", (
            f"column(s) {', '.join(hidden)} stored as keyed hashes: the inputs cannot be re-run"
        )
    if record.inputs is None:
        return "skipped", "no inputs recorded"
    if not record.outputs:
        return "skipped", "no outputs recorded"
    return "rerun", ""


def group_by_version(records: Iterable[Record]) -> list[tuple[str, str, list[Record]]]:
    """``(version, sha256, records)`` per artifact, in the order they first answered."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in sorted(records, key=lambda r: (r.time, r.request_id)):
        groups.setdefault((r.version, r.sha256), []).append(r)
    return [(v, sha, rs) for (v, sha), rs in groups.items()]


def json_safe(value: Any) -> Any:
    """``value`` with NaN as null and infinities as strings: strict JSON."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def json_object(value: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`json_safe` of a mapping, typed as the dict it is."""
    out = json_safe(value)
    assert isinstance(out, dict)
    return out


def iso(at: dt.datetime) -> str:
    """UTC with microseconds when there are any: ``2026-03-14T10:00:00.250000Z``."""
    text = at.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


# --------------------------------------------------------------------------- one version


@dataclass(frozen=True)
class Mismatch:
    request_id: str
    time: dt.datetime
    key: str  # the object the record was read from
    outputs: dict[str, dict[str, Any]]  # name -> {"recorded": ..., "rerun": ...}
    error: str | None = None  # the re-run raised instead of answering

    def as_json(self) -> dict[str, Any]:
        return json_object(
            {
                "requestId": self.request_id,
                "time": iso(self.time),
                "object": self.key,
                "outputs": self.outputs,
                **({"rerunError": self.error} if self.error else {}),
            }
        )


@dataclass
class VersionAudit:
    """What the audit found for the records of one version (one artifact digest)."""

    version: str
    sha256: str
    records: int = 0
    identical: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    redacted: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)  # reason -> first message
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    artifact: dict[str, Any] | None = None  # uri, source, notes
    libraries: dict[str, Any] | None = None  # recorded, running, differences
    predict_paths: Counter[str] = field(default_factory=Counter)

    @property
    def rerun(self) -> int:
        return self.identical + len(self.mismatches)

    @property
    def mismatched(self) -> int:
        return len(self.mismatches)

    def sort(self, records: Sequence[Record]) -> list[Record]:
        """Count every record; return those to re-run."""
        runnable = []
        for r in records:
            self.records += 1
            self.first = r.time if self.first is None else min(self.first, r.time)
            self.last = r.time if self.last is None else max(self.last, r.time)
            kind, reason = classify(r)
            if kind == "error":
                self.errors[reason] += 1
                self.error_examples.setdefault(reason, r.error or "(no message)")
            elif kind == "redacted":
                self.redacted[reason] += 1
            elif kind == "skipped":
                self.skipped[reason] += 1
            else:
                self.predict_paths[r.predict_path] += 1
                runnable.append(r)
        return runnable

    def skip(self, records: Sequence[Record], reason: str) -> None:
        self.skipped[reason] += len(records)

    def compare(self, record: Record, rerun: Mapping[str, Any]) -> bool:
        """Count one re-run (outputs as a record stores them); True when identical."""
        names = differing_outputs(record.outputs, rerun)
        if not names:
            self.identical += 1
            return True
        self.mismatches.append(
            Mismatch(
                record.request_id, record.time, record.key,
                {n: {"recorded": record.outputs[n], "rerun": rerun.get(n)} for n in names},
            )
        )  # fmt: skip
        return False

    def failed(self, record: Record, error: str) -> None:
        """The re-run raised: a record the artifact does not reproduce."""
        self.mismatches.append(
            Mismatch(record.request_id, record.time, record.key,
                     {n: {"recorded": v, "rerun": None} for n, v in record.outputs.items()},
                     error)
        )  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return json_object(
            {
                "version": self.version,
                "sha256": self.sha256,
                "firstRecord": iso(self.first) if self.first else None,
                "lastRecord": iso(self.last) if self.last else None,
                "artifact": self.artifact,
                "libraries": self.libraries,
                "predictPaths": dict(self.predict_paths),
                "records": self.records,
                "rerun": self.rerun,
                "identical": self.identical,
                "mismatched": self.mismatched,
                "errors": {
                    "count": sum(self.errors.values()),
                    "reasons": [
                        {"reason": k, "count": n, "example": self.error_examples.get(k)}
                        for k, n in sorted(self.errors.items())
                    ],
                },
                "redacted": _counted(self.redacted),
                "skipped": _counted(self.skipped),
                "mismatches": [m.as_json() for m in self.mismatches],
            }
        )


def _counted(counter: Counter[str]) -> dict[str, Any]:
    return {
        "count": sum(counter.values()),
        "reasons": [{"reason": k, "count": n} for k, n in sorted(counter.items())],
    }


# --------------------------------------------------------------------------- the report


@dataclass
class AuditReport:
    """The whole audit: what was searched, by whom, and per version what it found."""

    namespace: str
    model: str
    start: dt.datetime
    end: dt.datetime
    bucket: str
    prefix: str
    archive_bucket: str
    ran_at: dt.datetime
    ran_by: str
    host: str
    tool_version: str
    running: Mapping[str, str | None]
    versions: list[VersionAudit]

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix.strip('/')}/{self.namespace}/{self.model}/"

    def total(self, attribute: str) -> int:
        return sum(int(getattr(v, attribute)) for v in self.versions)

    @property
    def skipped(self) -> int:
        return sum(sum(v.skipped.values()) for v in self.versions)

    @property
    def passed(self) -> bool:
        """Every record that could be re-run was, and reproduced bit for bit.

        A skipped record (no artifact with its digest, a version skew refused, no inputs)
        is one the audit cannot vouch for, so it fails the audit as a mismatch does; so
        does a range where nothing could be re-run (only errors or redacted records).
        """
        return self.total("rerun") > 0 and self.total("mismatched") == 0 and self.skipped == 0

    @property
    def verdict(self) -> str:
        rerun, mismatched, skipped = self.total("rerun"), self.total("mismatched"), self.skipped
        if self.passed:
            return f"REPRODUCED: all {rerun} re-run records are identical, bit for bit"
        parts = []
        if not rerun:
            errors = sum(sum(v.errors.values()) for v in self.versions)
            redacted = sum(sum(v.redacted.values()) for v in self.versions)
            parts.append(f"no record could be re-run ({errors} errors, {redacted} redacted)")
        if mismatched:
            parts.append(f"{mismatched} of {rerun} re-run records differ")
        if skipped:
            parts.append(f"{skipped} record{'' if skipped == 1 else 's'} could not be re-run")
        return "NOT REPRODUCED: " + "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return json_object(
            {
                "format": REPORT_FORMAT,
                "namespace": self.namespace,
                "model": self.model,
                "range": {"from": iso(self.start), "to": iso(self.end), "end": "exclusive"},
                "decisions": self.location,
                "archiveBucket": self.archive_bucket,
                "ranAt": iso(self.ran_at),
                "ranBy": self.ran_by,
                "host": self.host,
                "tool": {"mlmodel-lifecycle": self.tool_version},
                "runningLibraries": dict(self.running),
                "comparison": "each recorded output against the re-run's, as stored: "
                "float64 bit for bit (NaN equals NaN), integers and text by equality",
                "totals": {
                    "records": self.total("records"),
                    "rerun": self.total("rerun"),
                    "identical": self.total("identical"),
                    "mismatched": self.total("mismatched"),
                    "errors": sum(sum(v.errors.values()) for v in self.versions),
                    "redacted": sum(sum(v.redacted.values()) for v in self.versions),
                    "skipped": self.skipped,
                },
                "passed": self.passed,
                "verdict": self.verdict,
                "versions": [v.as_json() for v in self.versions],
            }
        )

    def summary(self) -> str:
        """The text printed on stdout."""
        from mlmodel_operator.archive_cli import format_table

        lines = [
            f"audit of model {self.model} (namespace {self.namespace}) from {iso(self.start)} "
            f"to {iso(self.end)}",
            f"decisions: {self.location}; artifacts: bucket {self.archive_bucket}",
            "",
        ]
        rows = [["VERSION", "SHA256", "RECORDS", "RE-RUN", "IDENTICAL", "MISMATCHED", "ERRORS",
                 "REDACTED", "SKIPPED"]]  # fmt: skip
        rows += [
            [v.version, v.sha256[:12], str(v.records), str(v.rerun), str(v.identical),
             str(v.mismatched), str(sum(v.errors.values())), str(sum(v.redacted.values())),
             str(sum(v.skipped.values()))]
            for v in self.versions
        ]  # fmt: skip
        lines += format_table(rows).splitlines()
        for v in self.versions:
            lines.append("")
            lines.append(f"version {v.version} (sha256 {v.sha256}):")
            if v.artifact:
                lines.append(f"  artifact   {v.artifact['uri']} ({v.artifact['source']})")
                lines += [f"  note       {n}" for n in v.artifact.get("notes", [])]
            if v.libraries:
                lines.append(f"  libraries  {describe_libraries(v.libraries)}")
            for reason, n in sorted(v.errors.items()):
                lines.append(f"  errors     {n} x {reason} (e.g. {v.error_examples[reason]!r})")
            lines += [f"  redacted   {n} x {reason}" for reason, n in sorted(v.redacted.items())]
            lines += [f"  skipped    {n} x {reason}" for reason, n in sorted(v.skipped.items())]
            for m in v.mismatches[:SUMMARY_MISMATCHES]:
                lines.append(f"  MISMATCH   request {m.request_id} at {iso(m.time)} ({m.key})")
                if m.error:
                    lines.append(f"             re-run failed: {m.error}")
                for name, pair in m.outputs.items():
                    lines.append(f"             {name}: recorded {_short(pair['recorded'])}")
                    lines.append(
                        f"             {' ' * len(name)}  re-run   {_short(pair['rerun'])}"
                    )
            if v.mismatched > SUMMARY_MISMATCHES:
                lines.append(
                    f"  ... and {v.mismatched - SUMMARY_MISMATCHES} more mismatches "
                    "(all are in the --json and --html reports)"
                )
        lines += ["", self.verdict]
        return "\n".join(lines)

    def to_html(self) -> str:
        """A short self-contained HTML page of the report."""
        e = html.escape
        data = self.as_json()
        totals = data["totals"]
        version_rows = "".join(
            "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in (
                v["version"], v["sha256"], (v["artifact"] or {}).get("uri", "-"), v["records"],
                v["rerun"], v["identical"], v["mismatched"], v["errors"]["count"],
                v["redacted"]["count"], v["skipped"]["count"],
            )) + "</tr>"
            for v in data["versions"]
        )  # fmt: skip
        details = []
        for v in data["versions"]:
            items = []
            if v["artifact"]:
                items.append(f"artifact {e(v['artifact']['uri'])} ({e(v['artifact']['source'])})")
                items += [f"note: {e(n)}" for n in v["artifact"].get("notes", [])]
            if v["libraries"]:
                items.append(f"libraries: {e(describe_libraries(v['libraries']))}")
            for group in ("errors", "redacted", "skipped"):
                items += [
                    f"{group}: {r['count']} &times; {e(r['reason'])}" for r in v[group]["reasons"]
                ]
            mismatches = "".join(
                f"<tr><td>{e(m['requestId'])}</td><td>{e(m['time'])}</td><td>{e(name)}</td>"
                f"<td><code>{e(_short(pair['recorded'], 300))}</code></td>"
                f"<td><code>{e(_short(pair['rerun'], 300))}</code></td></tr>"
                for m in v["mismatches"]
                for name, pair in m["outputs"].items()
            )
            details.append(
                f"<h2>Version {e(v['version'])}</h2><p><code>sha256 {e(v['sha256'])}</code></p>"
                + ("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else "")
                + (
                    "<table><tr><th>request id</th><th>time</th><th>output</th><th>recorded</th>"
                    f"<th>re-run</th></tr>{mismatches}</table>"
                    if mismatches
                    else ""
                )
            )
        verdict_class = "pass" if self.passed else "fail"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Decision audit: {e(self.model)} ({e(self.namespace)})</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; font-size: 0.9em; }}
.pass {{ color: #1e7b34; }} .fail {{ color: #b22222; }}
code {{ font-size: 0.85em; word-break: break-all; }}
</style></head><body>
<h1>Decision audit: model {e(self.model)}, namespace {e(self.namespace)}</h1>
<p class="{verdict_class}"><strong>{e(self.verdict)}</strong></p>
<table>
<tr><th>range</th><td>{e(iso(self.start))} to {e(iso(self.end))} (end exclusive)</td></tr>
<tr><th>decisions</th><td>{e(self.location)}</td></tr>
<tr><th>archive bucket</th><td>{e(self.archive_bucket)}</td></tr>
<tr><th>run at</th><td>{e(iso(self.ran_at))} by {e(self.ran_by)} on {e(self.host)}</td></tr>
<tr><th>tool</th><td>mlmodel-lifecycle {e(self.tool_version)}; running
{e(", ".join(f"{k} {v}" for k, v in self.running.items()))}</td></tr>
<tr><th>comparison</th><td>{e(data["comparison"])}</td></tr>
<tr><th>totals</th><td>{totals["records"]} records, {totals["rerun"]} re-run,
{totals["identical"]} identical, {totals["mismatched"]} mismatched, {totals["errors"]} errors,
{totals["redacted"]} redacted, {totals["skipped"]} skipped</td></tr>
</table>
<table><tr><th>version</th><th>sha256</th><th>artifact</th><th>records</th><th>re-run</th>
<th>identical</th><th>mismatched</th><th>errors</th><th>redacted</th><th>skipped</th></tr>
{version_rows}</table>
{"".join(details)}
</body></html>
"""

    def to_json_text(self) -> str:
        return json.dumps(self.as_json(), indent=2, allow_nan=False) + "\n"


def describe_libraries(libraries: Mapping[str, Any]) -> str:
    """One line: the differences between recorded and running, or that there are none."""
    differences = libraries.get("differences") or []
    recorded = libraries.get("recorded") or {}
    pickled = (recorded.get("pickledWith") or {}).get("scikit-learn")
    if not differences:
        base = f"scikit-learn {pickled} (pickled with)" if pickled else "recorded versions"
        return f"{base}: the same here"
    return "; ".join(
        f"{d['library']} {d['recorded']} ({d['source']}) vs {d['running']} here"
        + (" [major/minor differ]" if d.get("blocking") else "")
        for d in differences
    )


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(json_safe(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."
