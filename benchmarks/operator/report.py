"""The operator benchmark's pure parts: percentiles, Prometheus histograms, tables.

No I/O and no servers: everything here takes numbers or text and returns numbers or
text, so tests/unit/benchmarks/test_bench_operator.py checks it in milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RECONCILE_HISTOGRAM = "mlmodel_operator_reconcile_duration_seconds"
RECONCILES_TOTAL = "mlmodel_operator_reconciles_total"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q={q} is not within 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99, mean, min and max of samples in seconds, reported in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "mean_ms": sum(ms) / len(ms),
        "min_ms": min(ms),
        "max_ms": max(ms),
    }


def ratio(value: float | None, floor: float | None) -> float | None:
    """value / floor, or None when either is missing or the floor is zero."""
    if value is None or floor is None or floor <= 0:
        return None
    return value / floor


# --------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class Histogram:
    """One Prometheus histogram: cumulative counts per upper bound, sum and count."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), sorted by le
    total: float
    count: float

    def minus(self, earlier: Histogram) -> Histogram:
        """The observations made between ``earlier`` and this snapshot."""
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
            self.total - earlier.total,
            self.count - earlier.count,
        )

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear within the bucket holding rank q*count.

        A rank in the +Inf bucket gives the largest finite bound (a lower bound, as in
        Prometheus). None when there are no observations.
        """
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        prev_le, prev_n = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if math.isinf(le):
                    return prev_le
                if n == prev_n:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
            prev_le, prev_n = le, n
        return prev_le


def parse_metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Prometheus text exposition -> {sample name: {sorted label pairs: value}}."""
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, rest = line.split("{", 1)
            label_text, value_text = rest.rsplit("}", 1)
            labels = tuple(sorted(_parse_labels(label_text)))
        else:
            name, value_text = line.split(None, 1)
            labels = ()
        value = value_text.split()[0]
        samples.setdefault(name, {})[labels] = float(value)
    return samples


def _parse_labels(text: str) -> Iterable[tuple[str, str]]:
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        key = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # past ="
        value = []
        while text[j] != '"':
            if text[j] == "\\":
                j += 1
                value.append({"n": "\n"}.get(text[j], text[j]))
            else:
                value.append(text[j])
            j += 1
        yield key, "".join(value)
        i = j + 1
        while i < len(text) and text[i] in ", ":
            i += 1


def histogram(
    samples: Mapping[str, Mapping[tuple[tuple[str, str], ...], float]], name: str
) -> Histogram:
    """The unlabelled histogram ``name`` from :func:`parse_metrics` output."""
    buckets = []
    for labels, value in samples.get(f"{name}_bucket", {}).items():
        le = dict(labels)["le"]
        buckets.append((math.inf if le == "+Inf" else float(le), value))
    buckets.sort()
    total = samples.get(f"{name}_sum", {}).get((), 0.0)
    count = samples.get(f"{name}_count", {}).get((), 0.0)
    return Histogram(tuple(buckets), total, count)


def counter_by(
    samples: Mapping[str, Mapping[tuple[tuple[str, str], ...], float]], name: str, label: str
) -> dict[str, float]:
    """A labelled counter as {label value: count} (``name`` without ``_total`` is accepted)."""
    family = samples.get(name) or samples.get(f"{name}_total") or {}
    return {dict(labels).get(label, ""): value for labels, value in family.items()}


def request_counts(
    samples: Mapping[str, Mapping[tuple[tuple[str, str], ...], float]],
    resources: Sequence[str],
) -> dict[str, float]:
    """``apiserver_request_total`` summed by "VERB resource[/subresource]" for ``resources``."""
    out: dict[str, float] = {}
    for labels, value in samples.get("apiserver_request_total", {}).items():
        d = dict(labels)
        if d.get("resource") not in resources:
            continue
        key = f"{d.get('verb', '?')} {d['resource']}"
        if d.get("subresource"):
            key += f"/{d['subresource']}"
        out[key] = out.get(key, 0.0) + value
    return out


def counts_delta(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """after - before for every key, leaving out keys that did not move."""
    keys = sorted(set(after) | set(before))
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in keys}
    return {k: v for k, v in delta.items() if v}


def histogram_summary(h: Histogram) -> dict[str, float | None]:
    """Count, mean and bucket-interpolated p50/p99 of a histogram, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else v * 1000

    return {
        "count": h.count,
        "mean_ms": ms(h.mean),
        "p50_ms": ms(h.quantile(0.5)),
        "p99_ms": ms(h.quantile(0.99)),
    }


def growth_per_object(points: Sequence[tuple[int, float]]) -> list[dict[str, float]]:
    """From (objects, bytes) points in order, the bytes added per object on each step."""
    steps = []
    for (n0, b0), (n1, b1) in itertools.pairwise(points):
        if n1 > n0:
            steps.append({"from": n0, "to": n1, "bytes_per_object": (b1 - b0) / (n1 - n0)})
    return steps


# --------------------------------------------------------------------------- tables


def fmt(value: Any, digits: int = 1) -> str:
    """A table cell: numbers rounded, None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}x"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; numeric-looking columns are right-aligned."""
    body = [[fmt(c) for c in row] for row in rows]
    align = []
    for i in range(len(header)):
        cells = [r[i] for r in body if i < len(r)]
        numeric = bool(cells) and all(_numeric(c) for c in cells)
        align.append("---:" if numeric else "---")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    text = cell.rstrip("x%").replace(",", "")
    if text == "—":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def latency_rows(measures: Mapping[str, Mapping[str, float]], floor_key: str) -> list[list[Any]]:
    """Rows of the latency table: p50, p99, mean, max, and p50/p99 as multiples of the floor."""
    floor = measures.get(floor_key, {})
    rows = []
    for label, s in measures.items():
        rows.append(
            [
                label,
                s.get("n", 0),
                s.get("p50_ms"),
                s.get("p99_ms"),
                s.get("mean_ms"),
                s.get("max_ms"),
                fmt_ratio(ratio(s.get("p50_ms"), floor.get("p50_ms"))),
                fmt_ratio(ratio(s.get("p99_ms"), floor.get("p99_ms"))),
            ]
        )
    return rows


LATENCY_HEADER = (
    "measure",
    "n",
    "p50 ms",
    "p99 ms",
    "mean ms",
    "max ms",
    "p50 / floor",
    "p99 / floor",
)


def replace_block(text: str, begin: str, end: str, block: str, heading: str) -> str:
    """Put ``block`` between the markers; when absent, append ``heading`` and the markers."""
    wrapped = f"{begin}\n{block}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        return head + wrapped + tail
    return text.rstrip("\n") + f"\n\n{heading}\n\n{wrapped}\n"


# --------------------------------------------------------------------------- fleet


def count_over_time(times: Iterable[float], start: float) -> list[tuple[float, int]]:
    """(seconds after ``start``, how many so far) at each event, in order: a step curve."""
    return [(t - start, i) for i, t in enumerate(sorted(times), 1)]


def time_to_fraction(times: Sequence[float], total: int, fraction: float) -> float | None:
    """When ``fraction`` of ``total`` events had happened (times as given), or None."""
    if total <= 0:
        return None
    target = max(1, math.ceil(fraction * total - 1e-9))
    ordered = sorted(times)
    return ordered[target - 1] if len(ordered) >= target else None


def max_in_window(times: Iterable[float], width: float) -> int:
    """The most events within any window of ``width`` seconds (a rate limit's check)."""
    ordered = sorted(times)
    best = lo = 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def max_overlap(intervals: Iterable[tuple[float, float]]) -> int:
    """The most intervals [start, end) open at one instant (e.g. Deployments rolling)."""
    edges = sorted(
        [(s, 1) for s, e in intervals if e > s] + [(e, -1) for s, e in intervals if e > s]
    )  # at a tie the end (-1) sorts first: back-to-back intervals do not overlap
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def rate_series(times: Iterable[float], start: float, end: float, width: float = 1.0) -> list[int]:
    """Events per bin of ``width`` seconds from ``start`` to ``end`` (the last bin may be
    shorter); events outside [start, end) are left out."""
    bins = [0] * max(1, math.ceil((end - start) / width))
    for t in times:
        if start <= t < end:
            bins[min(int((t - start) // width), len(bins) - 1)] += 1
    return bins


def settled_after(series: Sequence[int], threshold: float, window: int = 5) -> int | None:
    """The first bin from which every ``window``-bin stretch to the end of ``series`` has a
    mean of at most ``threshold`` per bin: when a rate is back to its steady level and
    stays there. None if it is not by the end (or the series is shorter than a window)."""
    if len(series) < window:
        return None
    sums = [sum(series[i : i + window]) for i in range(len(series) - window + 1)]
    settled = None
    for i in range(len(sums) - 1, -1, -1):
        if sums[i] > threshold * window:
            break
        settled = i
    return settled
