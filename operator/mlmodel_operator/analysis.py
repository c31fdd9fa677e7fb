"""A canary's or shadow's analysis: the candidate's own metrics, read from Prometheus.

The model servers export their metrics with the model's name; the ServiceMonitor the
operator writes adds ``namespace`` and the Pod's ``version``, so one version's series are
selected by ``{namespace, model, version}``. Each check is one instant query over the
step so far (at least :data:`MIN_WINDOW_SECONDS`), and a step is judged only once the
candidate answered ``minRequests`` requests (shadow: once that many copies were
compared): fewer say nothing either way.

:func:`queries` is pure (tested without a server); :class:`Prometheus` asks a real one.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from mlmodel_operator.monitoring import INFER_ROUTES
from mlmodel_operator.spec import AnalysisSpec

MIN_WINDOW_SECONDS: Final = 30  # several scrapes even at a 15 s interval
CONNECT_TIMEOUT: Final = 3.0
READ_TIMEOUT: Final = 10.0

ERROR_RATIO: Final = "errorRatio"
P99_LATENCY_MS: Final = "p99LatencyMs"
DRIFT_PSI: Final = "driftPsi"
AGREEMENT: Final = "agreement"


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None  # None: no data yet
    limit: float
    passed: bool | None  # None: not judged (no data)

    def describe(self) -> str:
        shown = "no data" if self.value is None else f"{self.value:.4g}"
        bound = "at least" if self.name == AGREEMENT else "at most"
        return f"{self.name} {shown} ({bound} {self.limit:g})"

    def to_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "limit": self.limit}
        if self.value is not None:
            out["value"] = round(self.value, 6)
        if self.passed is not None:
            out["passed"] = self.passed
        return out


@dataclass(frozen=True)
class Verdict:
    """What the analysis says about the step so far."""

    checks: tuple[Check, ...]
    requests: float  # the candidate's requests (canary) or compared copies (shadow)
    min_requests: int
    error: str | None = None  # Prometheus could not be asked; nothing is judged

    @property
    def enough(self) -> bool:
        return self.error is None and self.requests >= self.min_requests

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that failed with enough requests to say so (a rollback)."""
        return tuple(c for c in self.checks if c.passed is False) if self.enough else ()

    @property
    def passed(self) -> bool:
        """Every check holds, judged on enough requests (the step may end)."""
        return self.enough and all(c.passed is True for c in self.checks)

    def describe(self) -> str:
        if self.error:
            return f"analysis not read: {self.error}"
        parts = [f"{self.requests:.0f}/{self.min_requests} requests"]
        return "; ".join(parts + [c.describe() for c in self.checks])


class MetricsSource(Protocol):
    def query(self, expr: str) -> float | None:
        """The value of an instant PromQL query (one series), None when it has none."""


class AnalysisError(Exception):
    """Prometheus could not be asked (names the address and what went wrong)."""


class Prometheus:
    """A Prometheus HTTP API client: instant queries, short timeouts."""

    def __init__(self, url: str, timeout: float = READ_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> float | None:
        target = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(target, timeout=self.timeout) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            raise AnalysisError(f"{self.url}: HTTP {exc.code} for {expr!r}: {detail}") from None
        except (OSError, ValueError) as exc:
            raise AnalysisError(f"{self.url}: {exc}") from None
        if body.get("status") != "success":
            raise AnalysisError(f"{self.url}: {body.get('error', body)} for {expr!r}")
        result = (body.get("data") or {}).get("result") or []
        if not result:
            return None
        value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


def queries(
    namespace: str, model: str, candidate: str, strategy: str, window_seconds: float
) -> dict[str, str]:
    """The PromQL of each measurement of ``candidate`` over the last ``window_seconds``."""
    w = f"{max(MIN_WINDOW_SECONDS, math.ceil(window_seconds))}s"
    own = f'namespace="{namespace}", model="{model}", version="{candidate}"'
    infer = f'{own}, route=~"{INFER_ROUTES}"'
    copies = f'namespace="{namespace}", model="{model}", candidate="{candidate}"'
    out = {
        "requests": f"sum(increase(mlmodel_requests_total{{{infer}}}[{w}]))",
        ERROR_RATIO: (
            f'(sum(increase(mlmodel_requests_total{{{infer}, code=~"5.."}}[{w}])) or vector(0))'
            f" / sum(increase(mlmodel_requests_total{{{infer}}}[{w}]))"
        ),
        P99_LATENCY_MS: (
            "1000 * histogram_quantile(0.99, sum by (le) "
            f"(increase(mlmodel_request_duration_seconds_bucket{{{infer}}}[{w}])))"
        ),
        DRIFT_PSI: (
            f"max(max_over_time(mlmodel_feature_psi{{{own}}}[{w}]) "
            f"or max_over_time(mlmodel_prediction_psi{{{own}}}[{w}]))"
        ),
        "copies": (
            f'sum(increase(mlmodel_shadow_requests_total{{{copies}, result=~"agree|disagree"}}'
            f"[{w}]))"
        ),
        AGREEMENT: (
            f'(sum(increase(mlmodel_shadow_requests_total{{{copies}, result="agree"}}[{w}])) '
            f"or vector(0)) / sum(increase(mlmodel_shadow_requests_total{{{copies}, "
            f'result=~"agree|disagree"}}[{w}]))'
        ),
    }
    if strategy == "shadow":
        out["requests"] = out.pop("copies")
    else:
        del out["copies"]
    return out


def _limits(spec: AnalysisSpec) -> Mapping[str, float]:
    found = {
        ERROR_RATIO: spec.max_error_ratio,
        P99_LATENCY_MS: spec.max_p99_latency_ms,
        DRIFT_PSI: spec.max_drift_psi,
        AGREEMENT: spec.min_agreement,
    }
    return {name: limit for name, limit in found.items() if limit is not None}


def judge(
    source: MetricsSource,
    spec: AnalysisSpec,
    namespace: str,
    model: str,
    candidate: str,
    strategy: str,
    window_seconds: float,
) -> Verdict:
    """Read the candidate's metrics and judge each check the spec sets."""
    exprs = queries(namespace, model, candidate, strategy, window_seconds)
    try:
        requests = source.query(exprs["requests"]) or 0.0
        checks = []
        for name, limit in _limits(spec).items():
            value = source.query(exprs[name])
            if value is None and name == ERROR_RATIO and requests > 0:
                value = 0.0  # requests and no 5xx series: none failed
            passed = None
            if value is not None:
                passed = value >= limit if name == AGREEMENT else value <= limit
            checks.append(Check(name, value, limit, passed))
    except AnalysisError as exc:
        return Verdict((), 0.0, spec.min_requests, error=str(exc))
    return Verdict(tuple(checks), requests, spec.min_requests)
