"""Pure parts of the serving benchmark: parse wrk and Prometheus text, compute ratios,
render markdown. Standard library only, no I/O, so the unit tests run in milliseconds.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)(us|ms|s|m|h)\s*$")

# Servers that are anchors (other projects' model servers) and floors (not servers of a
# model at all). Ours are the rest.
ANCHORS_UNBATCHED = ("kserve", "mlserver", "mlserver-2proc")
ANCHORS_ALL = (*ANCHORS_UNBATCHED, "mlserver-batching", "mlserver-batching-2proc")
# Floors: no model at all, the same requests. "hello" is a bare ASGI app on uvicorn;
# "hello-raw" an asyncio protocol on httptools, the stack mlmodel-serve is built on.
FLOORS = ("hello", "hello-raw")
PLAIN = "fastapi"


def parse_duration_ms(text: str) -> float:
    """Parse one of wrk's durations ("812.00us", "1.20ms", "2.01s", "1.00m") to ms."""
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNIT_MS[m.group(2)]


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    latency_avg_ms: float
    latency_max_ms: float
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = self.errors
        return d


def parse_wrk(output: str) -> WrkResult:
    """Parse the text wrk prints with `--latency` into a WrkResult.

    Raises ValueError naming what is missing when the output is not a finished run
    (for example when wrk could not connect at all).
    """
    pct: dict[str, float] = {}
    for m in re.finditer(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M):
        pct[m.group(1)] = parse_duration_ms(m.group(2))
    missing = [p for p in ("50", "75", "90", "99") if p not in pct]
    if missing:
        raise ValueError(
            f"wrk output has no latency distribution for {missing}: run with --latency"
        )
    lat = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s*$", output, re.M)
    if not lat:
        raise ValueError("wrk output has no 'Latency' thread-stats line")
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m|h),", output, re.M)
    if not total:
        raise ValueError("wrk output has no 'N requests in T' line")
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)\s*$", output, re.M)
    if not rps:
        raise ValueError("wrk output has no 'Requests/sec:' line")
    sock: dict[str, int] = {}
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if se:
        sock = dict(
            zip(("connect", "read", "write", "timeout"), map(int, se.groups()), strict=True)
        )
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        duration_s=parse_duration_ms(total.group(2) + total.group(3)) / 1000.0,
        rps=float(rps.group(1)),
        p50_ms=pct["50"],
        p75_ms=pct["75"],
        p90_ms=pct["90"],
        p99_ms=pct["99"],
        latency_avg_ms=parse_duration_ms(lat.group(1)),
        latency_max_ms=parse_duration_ms(lat.group(3)),
        socket_errors=sock,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
    )


def wrk_lua_script(body: str, content_type: str = "application/json") -> str:
    """A wrk Lua script that POSTs `body` on every request."""
    delim = "="
    while f"]{delim}]" in body:
        delim += "="
    return (
        'wrk.method = "POST"\n'
        f'wrk.headers["Content-Type"] = "{content_type}"\n'
        f"wrk.body = [{delim}[{body}]{delim}]\n"
    )


def wrk_lua_file_script(body_path: str, headers: Mapping[str, str]) -> str:
    """A wrk Lua script that POSTs the bytes of the file `body_path`, with `headers`.

    For binary bodies: a Lua long string would turn the body's CR LF pairs into LF.
    """
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}" for k, v in headers.items()]
    lines += [
        f'local f = assert(io.open({_lua_str(body_path)}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
    ]
    return "\n".join(lines) + "\n"


def _lua_str(text: str) -> str:
    if any(c in text for c in '"\\\n\r'):
        raise ValueError(f"not a plain Lua string: {text!r}")
    return f'"{text}"'


def histogram_sum_count(
    metrics_text: str, name_contains: str, labels_contain: str = ""
) -> tuple[float, float]:
    """Sum and count of the Prometheus histogram whose name contains `name_contains`.

    Adds up all label sets of the first matching histogram family (only those whose
    label text contains `labels_contain`), so a histogram labelled by model or output
    still gives one total.
    """
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        # Label values may hold braces (a route template), so skip quoted strings whole.
        m = re.match(
            r'^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)', line
        )
        if not m or name_contains not in m.group(1) or labels_contain not in line:
            continue
        name, value = m.group(1), float(m.group(2))
        if name.endswith("_sum"):
            base = name[: -len("_sum")]
            sums[base] = sums.get(base, 0.0) + value
        elif name.endswith("_count"):
            base = name[: -len("_count")]
            counts[base] = counts.get(base, 0.0) + value
    for base in sorted(sums):
        if base in counts:
            return sums[base], counts[base]
    raise ValueError(f"no histogram with {name_contains!r} in its name in the metrics text")


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


@dataclass(frozen=True)
class Row:
    """One server's result for one model, concurrency and batch size."""

    server: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def best_of(rows: Iterable[Row], names: Sequence[str]) -> Row | None:
    """The row with the highest req/s among `names` (error-free rows first)."""
    candidates = [r for r in rows if r.server in names]
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.errors == 0, r.rps))


@dataclass(frozen=True)
class Comparison:
    """Ours against the anchors and floors in one configuration."""

    ours: str
    best_anchor: str | None
    rps_vs_best_anchor: float | None
    p99_vs_best_anchor: float | None
    rps_vs_plain: float | None
    rps_vs_floors: dict[str, float | None]
    rps_vs_inprocess: float | None


def compare(
    rows: Sequence[Row],
    ours: str,
    anchors: Sequence[str],
    inprocess_rps: float | None,
) -> Comparison | None:
    """Ratios of `ours` to the best of `anchors`, to plain FastAPI and to both floors."""
    by_name = {r.server: r for r in rows}
    mine = by_name.get(ours)
    if mine is None:
        return None
    best = best_of(rows, anchors)
    plain = by_name.get(PLAIN)
    floors = {f: ratio(mine.rps, by_name[f].rps) for f in FLOORS if f in by_name}
    return Comparison(
        ours=ours,
        best_anchor=best.server if best else None,
        rps_vs_best_anchor=ratio(mine.rps, best.rps if best else None),
        p99_vs_best_anchor=ratio(mine.p99_ms, best.p99_ms if best else None),
        rps_vs_plain=ratio(mine.rps, plain.rps if plain else None),
        rps_vs_floors=floors,
        rps_vs_inprocess=ratio(mine.rps, inprocess_rps),
    )


def before_after_line(rows: Sequence[Row], after: str, before: str, label: str) -> str | None:
    """One markdown line: `after` against `before` (the same server at an older commit)."""
    by_name = {r.server: r for r in rows}
    new, old = by_name.get(after), by_name.get(before)
    if new is None or old is None:
        return None
    return (
        f"- **{after} against {before}** ({label}): {fmt_ratio(ratio(new.rps, old.rps))} its"
        f" req/s, p99 {fmt_ratio(ratio(new.p99_ms, old.p99_ms))} of its p99"
    )


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:,.{digits}f}"


def fmt_ms(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "-"
    if x < 1:
        return f"{x:.3f}"
    if x < 100:
        return f"{x:.2f}"
    return f"{x:,.0f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def config_section(
    title: str,
    rows: Sequence[Row],
    inprocess_ms: float | None,
    comparisons: Sequence[Comparison],
) -> str:
    """Markdown for one model/concurrency/batch: a row per server, then the ratios."""
    inproc_rps = 1000.0 / inprocess_ms if inprocess_ms else None
    table_rows = [
        [r.server, fmt_num(r.rps), fmt_ms(r.p50_ms), fmt_ms(r.p99_ms), str(r.errors)] for r in rows
    ]
    table_rows.append(
        ["in-process predict (floor)", fmt_num(inproc_rps), fmt_ms(inprocess_ms), "-", "-"]
    )
    out = [
        f"#### {title}",
        "",
        markdown_table(["server", "req/s", "p50 ms", "p99 ms", "errors"], table_rows),
        "",
    ]
    for c in comparisons:
        out.append(
            f"- **{c.ours}**: {fmt_ratio(c.rps_vs_best_anchor)} the req/s of the best anchor"
            f" ({c.best_anchor or '-'}), p99 {fmt_ratio(c.p99_vs_best_anchor)} of its p99;"
            f" {fmt_ratio(c.rps_vs_plain)} plain FastAPI;"
            + "".join(f" {fmt_ratio(v)} the {k} floor;" for k, v in c.rps_vs_floors.items())
            + (
                f" {fmt_ratio(c.rps_vs_inprocess)} the in-process predict floor"
                if c.rps_vs_inprocess is not None
                else ""
            )
        )
    out.append("")
    return "\n".join(out)


def overhead_vs_inprocess(mean_latency_ms: float, inprocess_ms: float) -> float:
    """Server overhead as a fraction of in-process predict time (0.10 == 10%)."""
    return (mean_latency_ms - inprocess_ms) / inprocess_ms


def rows_from_runs(runs: Iterable[Mapping[str, Any]]) -> list[Row]:
    return [
        Row(
            server=str(r["server"]),
            rps=float(r["rps"]),
            p50_ms=float(r["p50_ms"]),
            p99_ms=float(r["p99_ms"]),
            errors=int(r.get("errors", 0)),
        )
        for r in runs
    ]


def replace_block(readme: Path, begin: str, end: str, markdown: str) -> None:
    """Put ``markdown`` between the ``begin`` and ``end`` markers of ``readme`` (appended,
    with the markers, when they are not there yet)."""
    text = readme.read_text() if readme.exists() else ""
    block = f"{begin}\n{markdown}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(text)


def save_results(results_dir: Path, suite: str, results: Any) -> Path:
    """Write ``results`` as ``<results_dir>/<suite>-<UTC stamp>.json``; return the path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M")
    out = results_dir / f"{suite}-{stamp}.json"
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return out
