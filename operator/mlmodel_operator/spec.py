"""A typed, validated view of an MLModel, parsed once per reconcile.

The CRD schema rejects most bad input at the apiserver; `parse_model` checks it all
again (an object may predate a schema change, or come from a file in the CLI) and adds
the checks a schema cannot express: name lengths across fields, quantities that must
compare, S3 naming rules. Every rejection is a `SpecError` naming the field, the value
and what would be accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, Generic, TypeVar

API_GROUP: Final = "ml.lifecycle.io"
API_VERSION: Final = "v1alpha1"
KIND: Final = "MLModel"

ARTIFACT_FORMATS: Final = ("joblib",)

# Kept in step with crds/mlmodels.ml.lifecycle.io.yaml (tests/unit/operator/test_crd.py
# checks that they are the same strings).
VERSION_PATTERN: Final = r"^[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?$"
SHA256_PATTERN: Final = r"^[a-f0-9]{64}$"
BUCKET_PATTERN: Final = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
S3_URI_PATTERN: Final = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^/\s]([^\s]*[^/\s])?$"
QUANTITY_PATTERN: Final = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
# The Service is named after the model, so the name must be a DNS-1035 label.
MODEL_NAME_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_NAME_LENGTH: Final = 63
# The decision log (spec.decisionLog): an object key prefix of S3's safe characters, a
# Secret name (DNS-1123 subdomain) and key, and input column names that can be joined
# with ',' for MLMODEL_DECISION_LOG_REDACT.
DECISION_PREFIX_PATTERN: Final = r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$"
SECRET_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"
REDACT_COLUMN_PATTERN: Final = r"^[^,\s]([^,]*[^,\s])?$"
DECISION_LOG_MODES: Final = ("best-effort", "required")
MAX_PREFIX_LENGTH: Final = 256
MAX_SECRET_NAME_LENGTH: Final = 253
MAX_REDACT_COLUMNS: Final = 100
MAX_COLUMN_LENGTH: Final = 256

DEFAULT_REQUESTS: Final[Mapping[str, str]] = {"cpu": "100m", "memory": "256Mi"}
DEFAULT_LIMITS: Final[Mapping[str, str]] = {"memory": "1Gi"}
DEFAULT_PSI_THRESHOLD: Final = 0.2
# spec.rollout.analysis.minRequests when unset (the CRD's default too: test_crd checks)
DEFAULT_MIN_REQUESTS: Final = 20
# The serving Pod's emptyDirs get size limits: the model cache holds the artifact as
# downloaded (spec.serving.modelCacheSize), /tmp only what libraries write there.
DEFAULT_MODEL_CACHE_SIZE: Final = "4Gi"
MIN_MODEL_CACHE_BYTES: Final = 16 * 2**20
TMP_SIZE_LIMIT: Final = "256Mi"

_VERSION = re.compile(VERSION_PATTERN)
# Names the archive uses beside the versions under <namespace>/<name>/ (ledger.py).
RESERVED_VERSIONS: Final = frozenset({"ledger"})
_SHA256 = re.compile(SHA256_PATTERN)
_BUCKET = re.compile(BUCKET_PATTERN)
_S3_URI = re.compile(S3_URI_PATTERN)
_QUANTITY = re.compile(QUANTITY_PATTERN)
_MODEL_NAME = re.compile(MODEL_NAME_PATTERN)
_DECISION_PREFIX = re.compile(DECISION_PREFIX_PATTERN)
_SECRET_NAME = re.compile(SECRET_NAME_PATTERN)
_SECRET_KEY = re.compile(SECRET_KEY_PATTERN)
_REDACT_COLUMN = re.compile(REDACT_COLUMN_PATTERN)
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_RESOURCE_NAME = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_SUFFIXES: Final[Mapping[str, Fraction]] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 10**3),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}

_S3_URI_ACCEPTED = (
    "s3://<bucket>/<key>: a bucket name of 3-63 lowercase letters, digits, '.' and '-', "
    "then an object key with no spaces that neither starts nor ends with '/'"
)
_BUCKET_ACCEPTED = (
    "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and "
    "ending with a letter or digit, no '..', not an IP address"
)


class SpecError(ValueError):
    """A field of an MLModel the operator cannot act on.

    `field` is the path as a person would write it (``spec.artifact.uri``), `value` the
    offending value (None when the field is missing) and `accepted` what would do.
    """

    def __init__(self, field: str, value: Any, accepted: str) -> None:
        self.field = field
        self.value = value
        self.accepted = accepted
        if value is None:
            message = f"{field} is required; expected {accepted}"
        else:
            message = f"{field}: {value!r} is not accepted; expected {accepted}"
        super().__init__(message)


K = TypeVar("K")
V_co = TypeVar("V_co", covariant=True)


class FrozenMap(Mapping[K, V_co], Generic[K, V_co]):
    """A read-only, hashable mapping, so that the spec dataclasses stay hashable."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V_co] | Iterable[tuple[K, V_co]] = ()) -> None:
        self._data: dict[K, V_co] = dict(data)

    def __getitem__(self, key: K) -> V_co:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True)
class ArtifactSpec:
    uri: str
    sha256: str
    format: str = "joblib"

    @property
    def bucket(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.uri.removeprefix("s3://").split("/", 1)[1]


@dataclass(frozen=True)
class BatchingSpec:
    max_batch_size: int | None = None
    max_batch_latency_ms: int | None = None


def _default_resources() -> Mapping[str, Mapping[str, str]]:
    return FrozenMap({"requests": FrozenMap(DEFAULT_REQUESTS), "limits": FrozenMap(DEFAULT_LIMITS)})


@dataclass(frozen=True)
class ServingSpec:
    replicas: int = 1
    # None: the operator's default serving image (Settings.serving_image).
    image: str | None = None
    # {"requests": {name: quantity}, "limits": {name: quantity}}, defaults filled in.
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=_default_resources)
    batching: BatchingSpec = field(default_factory=BatchingSpec)
    # None: the server's default (leaf tables on for forests that pass its load check).
    leaf_tables: bool | None = None
    # The size limit of the Pod's model cache (an emptyDir), a Kubernetes quantity.
    model_cache_size: str = DEFAULT_MODEL_CACHE_SIZE


STRATEGIES: Final = ("switch", "canary", "shadow")
MAX_STEPS: Final = 10


@dataclass(frozen=True)
class RolloutStep:
    """One step of a canary (``weight``: the candidate's share of requests, in percent)
    or of a shadow (``weight``: the share of requests copied to the candidate)."""

    weight: int
    pause_seconds: int = 60


@dataclass(frozen=True)
class AnalysisSpec:
    """Checks on the candidate's own metrics (from Prometheus) that must all hold at the
    end of every step; None: not checked."""

    max_error_ratio: float | None = None
    max_p99_latency_ms: float | None = None
    max_drift_psi: float | None = None
    min_agreement: float | None = None  # shadow only
    # the candidate requests (canary) or compared copies (shadow) a step needs before it
    # is judged: fewer say nothing either way
    min_requests: int = DEFAULT_MIN_REQUESTS

    @property
    def enabled(self) -> bool:
        return any(
            v is not None
            for v in (
                self.max_error_ratio,
                self.max_p99_latency_ms,
                self.max_drift_psi,
                self.min_agreement,
            )
        )


@dataclass(frozen=True)
class RolloutSpec:
    ready_timeout_seconds: int = 600
    strategy: str = "switch"  # one of STRATEGIES
    steps: tuple[RolloutStep, ...] = ()
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)

    @property
    def progressive(self) -> bool:
        return self.strategy != "switch"


@dataclass(frozen=True)
class RetirementSpec:
    drain_seconds: int = 30


@dataclass(frozen=True)
class SloSpec:
    p99_latency_ms: float | None = None
    error_ratio: float | None = None


@dataclass(frozen=True)
class DriftSpec:
    baseline_uri: str | None = None
    psi_threshold: float = DEFAULT_PSI_THRESHOLD

    @property
    def enabled(self) -> bool:
        return self.baseline_uri is not None


@dataclass(frozen=True)
class MonitoringSpec:
    enabled: bool = True
    slo: SloSpec = field(default_factory=SloSpec)
    drift: DriftSpec = field(default_factory=DriftSpec)


@dataclass(frozen=True)
class ArchiveSpec:
    # None: the operator's default archive bucket (Settings.archive_bucket).
    bucket: str | None = None
    # None: keep archives for ever.
    retain_days: int | None = None


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of a Secret in the model's namespace, passed to the pods by reference."""

    name: str
    key: str = "key"


@dataclass(frozen=True)
class DecisionLogSpec:
    """The server's decision log: one record per inference, as Parquet in the object store.

    Each field becomes one MLMODEL_DECISION_LOG_* variable of the serving container.
    """

    enabled: bool = False
    # None: the operator's default archive bucket (Settings.archive_bucket).
    bucket: str | None = None
    prefix: str = "decisions"
    mode: str = "best-effort"  # one of DECISION_LOG_MODES
    flush_seconds: float = 10.0
    max_records: int = 1000
    queue_records: int = 100000
    # Input columns stored only as a keyed hash (HMAC with the key in redact_key_secret).
    redact: tuple[str, ...] = ()
    redact_key_secret: SecretKeyRef | None = None
    retention_days: int = 183

    @property
    def required(self) -> bool:
        """Whether the server may answer only what it can log (mode "required")."""
        return self.mode == "required"


@dataclass(frozen=True)
class ModelRef:
    name: str
    namespace: str
    uid: str


@dataclass(frozen=True)
class ModelSpec:
    ref: ModelRef
    generation: int
    version: str
    artifact: ArtifactSpec
    serving: ServingSpec = field(default_factory=ServingSpec)
    rollout: RolloutSpec = field(default_factory=RolloutSpec)
    retirement: RetirementSpec = field(default_factory=RetirementSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    archive: ArchiveSpec = field(default_factory=ArchiveSpec)
    decision_log: DecisionLogSpec = field(default_factory=DecisionLogSpec)

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def namespace(self) -> str:
        return self.ref.namespace


def parse_model(body: Mapping[str, Any]) -> ModelSpec:
    """Parse a whole MLModel object (as kopf's `body` or a loaded manifest).

    Raises SpecError for the first field that cannot work.
    """
    metadata = _object(body.get("metadata"), "metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise SpecError("metadata.name", name, "the MLModel's name")
    if not _MODEL_NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise SpecError(
            "metadata.name",
            name,
            "a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, "
            f"at most {MAX_NAME_LENGTH} characters), since the model's Service takes its name",
        )
    namespace = metadata.get("namespace") or "default"
    if not isinstance(namespace, str):
        raise SpecError("metadata.namespace", namespace, "a namespace name")
    uid = metadata.get("uid") or ""
    if not isinstance(uid, str):
        raise SpecError("metadata.uid", uid, "a string")
    generation = metadata.get("generation", 0)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
        raise SpecError("metadata.generation", generation, "a non-negative integer")

    spec = body.get("spec")
    if spec is None:
        raise SpecError("spec", None, "an object with at least version and artifact")
    spec = _object(spec, "spec")

    version = _required_string(spec, "version", "spec.version")
    if not _VERSION.match(version):
        raise SpecError(
            "spec.version",
            version,
            "1-32 lowercase letters, digits, '.' and '-', starting and ending with a letter "
            "or digit (e.g. '3' or '2024.06.1')",
        )
    if version in RESERVED_VERSIONS:
        raise SpecError(
            "spec.version", version,
            "any version but 'ledger', the archive's name for the model's ledger "
            "(s3://<archive>/<namespace>/<name>/ledger/)",
        )  # fmt: skip
    deployment = f"{name}-v{version}"
    if len(deployment) > MAX_NAME_LENGTH:
        raise SpecError(
            "spec.version",
            version,
            f"a shorter version or model name: the Deployment name {deployment!r} has "
            f"{len(deployment)} characters, at most {MAX_NAME_LENGTH} are allowed",
        )

    model = ModelSpec(
        ref=ModelRef(name=name, namespace=namespace, uid=uid),
        generation=generation,
        version=version,
        artifact=_parse_artifact(_object(spec.get("artifact"), "spec.artifact", required=True)),
        serving=_parse_serving(_object(spec.get("serving"), "spec.serving")),
        rollout=_parse_rollout(_object(spec.get("rollout"), "spec.rollout")),
        retirement=RetirementSpec(
            drain_seconds=_integer(
                _object(spec.get("retirement"), "spec.retirement"),
                "drainSeconds",
                "spec.retirement.drainSeconds",
                default=30,
                low=0,
                high=3600,
            )
        ),
        monitoring=_parse_monitoring(_object(spec.get("monitoring"), "spec.monitoring")),
        archive=_parse_archive(_object(spec.get("archive"), "spec.archive")),
        decision_log=_parse_decision_log(_object(spec.get("decisionLog"), "spec.decisionLog")),
    )
    psi = model.rollout.analysis.max_drift_psi
    if psi is not None and not model.monitoring.drift.enabled:
        raise SpecError(
            "spec.rollout.analysis.maxDriftPsi", psi,
            "no maxDriftPsi without spec.monitoring.drift.baselineUri (the drift the check "
            "reads is measured against that baseline)",
        )  # fmt: skip
    return model


def check_version_reuse(model: ModelSpec, history: Iterable[Mapping[str, Any]]) -> None:
    """Reject a version that `status.history` records with another digest.

    The CRD's CEL rule enforces this at the apiserver on every spec change; this check
    lets the operator report it too (e.g. for an object written before the rule existed).
    """
    for entry in history:
        recorded = entry.get("sha256")
        if entry.get("version") == model.version and recorded and recorded != model.artifact.sha256:
            raise SpecError(
                "spec.artifact.sha256",
                model.artifact.sha256,
                f"{recorded}, the digest version {model.version!r} was served with before "
                "(status.history): a version's digest never changes, publish a new version "
                "(a new spec.version)",
            )


def parse_quantity(value: str) -> Fraction:
    """A Kubernetes resource quantity ('100m', '1Gi', '2e3') as an exact number."""
    match = _QUANTITY.match(value)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = Fraction(match.group(1)), match.group(3) or ""
    if suffix[:1] in ("e", "E"):
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


# --- the parts of the spec ---------------------------------------------------------


def _parse_artifact(raw: Mapping[str, Any]) -> ArtifactSpec:
    uri = _required_string(raw, "uri", "spec.artifact.uri")
    _check_s3_uri(uri, "spec.artifact.uri")
    sha256 = _required_string(raw, "sha256", "spec.artifact.sha256")
    if not _SHA256.match(sha256):
        raise SpecError(
            "spec.artifact.sha256",
            sha256,
            "the artifact's SHA-256 digest as 64 lowercase hexadecimal characters",
        )
    fmt = _string(raw, "format", "spec.artifact.format") or "joblib"
    if fmt not in ARTIFACT_FORMATS:
        raise SpecError("spec.artifact.format", fmt, "one of " + ", ".join(ARTIFACT_FORMATS))
    return ArtifactSpec(uri=uri, sha256=sha256, format=fmt)


def _parse_serving(raw: Mapping[str, Any]) -> ServingSpec:
    replicas = _integer(raw, "replicas", "spec.serving.replicas", default=1, low=0, high=100)
    image = _string(raw, "image", "spec.serving.image")
    if image is not None and (not image or any(c.isspace() for c in image)):
        raise SpecError(
            "spec.serving.image", image, "a container image reference with no spaces, or unset"
        )
    batching_raw = _object(raw.get("batching"), "spec.serving.batching")
    batching = BatchingSpec(
        max_batch_size=_optional_integer(
            batching_raw, "maxBatchSize", "spec.serving.batching.maxBatchSize", low=0, high=4096
        ),
        max_batch_latency_ms=_optional_integer(
            batching_raw,
            "maxBatchLatencyMs",
            "spec.serving.batching.maxBatchLatencyMs",
            low=0,
            high=1000,
        ),
    )
    resources = _parse_resources(_object(raw.get("resources"), "spec.serving.resources"))
    leaf_tables = raw.get("leafTables")
    if leaf_tables is not None and not isinstance(leaf_tables, bool):
        raise SpecError("spec.serving.leafTables", leaf_tables, "true, false or unset")
    cache_size = raw.get("modelCacheSize", DEFAULT_MODEL_CACHE_SIZE)
    if (
        not isinstance(cache_size, str)
        or not _QUANTITY.match(cache_size)
        or parse_quantity(cache_size) < MIN_MODEL_CACHE_BYTES
    ):
        raise SpecError(
            "spec.serving.modelCacheSize", cache_size,
            "a Kubernetes quantity of at least 16Mi, such as 512Mi or 8Gi",
        )  # fmt: skip
    return ServingSpec(
        replicas=replicas,
        image=image,
        resources=resources,
        batching=batching,
        leaf_tables=leaf_tables,
        model_cache_size=cache_size,
    )


def _parse_resources(raw: Mapping[str, Any]) -> Mapping[str, Mapping[str, str]]:
    for key in raw:
        if key not in ("requests", "limits"):
            raise SpecError(f"spec.serving.resources.{key}", raw[key], "only requests and limits")
    user_requests = _quantities(raw.get("requests"), "spec.serving.resources.requests")
    user_limits = _quantities(raw.get("limits"), "spec.serving.resources.limits")

    # Defaults fill what the user left out, but never make a spec invalid: a default
    # request above a user's limit drops to that limit, and a default limit below a
    # user's request rises to that request.
    requests = dict(DEFAULT_REQUESTS)
    for name, quantity in DEFAULT_REQUESTS.items():
        limit = user_limits.get(name)
        if limit is not None and parse_quantity(quantity) > parse_quantity(limit):
            requests[name] = limit
    requests.update(user_requests)
    limits = dict(DEFAULT_LIMITS)
    for name, quantity in DEFAULT_LIMITS.items():
        request = user_requests.get(name)
        if request is not None and parse_quantity(request) > parse_quantity(quantity):
            limits[name] = request
    limits.update(user_limits)

    for name, request in requests.items():
        limit = limits.get(name)
        if limit is not None and parse_quantity(request) > parse_quantity(limit):
            raise SpecError(
                f"spec.serving.resources.requests.{name}",
                request,
                f"at most the limit spec.serving.resources.limits.{name} ({limit})",
            )
    return FrozenMap({"requests": FrozenMap(requests), "limits": FrozenMap(limits)})


def _quantities(raw: Any, path: str) -> dict[str, str]:
    values = _object(raw, path)
    out: dict[str, str] = {}
    for name, value in values.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not _RESOURCE_NAME.match(name):
            raise SpecError(where, name, "a resource name such as cpu, memory or nvidia.com/gpu")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[name] = str(value)
        elif isinstance(value, str) and _QUANTITY.match(value):
            out[name] = value
        else:
            raise SpecError(
                where, value, "a non-negative Kubernetes quantity such as 500m, 2, 256Mi or 1Gi"
            )
    return out


def _parse_monitoring(raw: Mapping[str, Any]) -> MonitoringSpec:
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError("spec.monitoring.enabled", enabled, "true or false")
    slo_raw = _object(raw.get("slo"), "spec.monitoring.slo")
    slo = SloSpec(
        p99_latency_ms=_optional_number(
            slo_raw, "p99LatencyMs", "spec.monitoring.slo.p99LatencyMs", low=0, high=600000
        ),
        error_ratio=_optional_number(
            slo_raw, "errorRatio", "spec.monitoring.slo.errorRatio", low=0, high=1
        ),
    )
    if slo.p99_latency_ms == 0:
        raise SpecError(
            "spec.monitoring.slo.p99LatencyMs", 0, "a latency above 0 and at most 600000 ms"
        )
    drift_raw = _object(raw.get("drift"), "spec.monitoring.drift")
    baseline = _string(drift_raw, "baselineUri", "spec.monitoring.drift.baselineUri")
    if baseline is not None:
        _check_s3_uri(baseline, "spec.monitoring.drift.baselineUri")
    threshold = _optional_number(
        drift_raw, "psiThreshold", "spec.monitoring.drift.psiThreshold", low=0, high=10
    )
    if threshold == 0:
        raise SpecError(
            "spec.monitoring.drift.psiThreshold", 0, "a PSI threshold above 0 and at most 10"
        )
    drift = DriftSpec(
        baseline_uri=baseline,
        psi_threshold=DEFAULT_PSI_THRESHOLD if threshold is None else threshold,
    )
    return MonitoringSpec(enabled=enabled, slo=slo, drift=drift)


def _parse_rollout(raw: Mapping[str, Any]) -> RolloutSpec:
    timeout = _integer(
        raw, "readyTimeoutSeconds", "spec.rollout.readyTimeoutSeconds",
        default=600, low=10, high=86400,
    )  # fmt: skip
    strategy = _string(raw, "strategy", "spec.rollout.strategy") or "switch"
    if strategy not in STRATEGIES:
        raise SpecError("spec.rollout.strategy", strategy, f"one of {', '.join(STRATEGIES)}")
    steps_raw = raw.get("steps")
    if steps_raw is None:
        steps_raw = []
    if not isinstance(steps_raw, list) or len(steps_raw) > MAX_STEPS:
        raise SpecError("spec.rollout.steps", steps_raw, f"a list of at most {MAX_STEPS} steps")
    top = 100 if strategy == "shadow" else 99
    steps: list[RolloutStep] = []
    for i, item in enumerate(steps_raw):
        path = f"spec.rollout.steps[{i}]"
        step = _object(item, path, required=True)
        weight = _optional_integer(step, "weight", f"{path}.weight", low=1, high=top)
        if weight is None:
            raise SpecError(f"{path}.weight", None, f"an integer from 1 to {top}")
        if steps and weight < steps[-1].weight and strategy == "canary":
            raise SpecError(
                f"{path}.weight", weight,
                f"a weight of at least {steps[-1].weight}, the step before's: a canary's "
                "share only grows",
            )  # fmt: skip
        pause = _integer(
            step, "pauseSeconds", f"{path}.pauseSeconds", default=60, low=0, high=86400
        )
        steps.append(RolloutStep(weight, pause))
    if strategy != "switch" and not steps:
        raise SpecError(
            "spec.rollout.steps", steps_raw,
            f"at least one step for strategy {strategy}, e.g. [{{weight: 10, pauseSeconds: "
            "120}]",
        )  # fmt: skip
    a = _object(raw.get("analysis"), "spec.rollout.analysis")
    path = "spec.rollout.analysis"
    analysis = AnalysisSpec(
        max_error_ratio=_optional_number(
            a, "maxErrorRatio", f"{path}.maxErrorRatio", low=0, high=1
        ),
        max_p99_latency_ms=_optional_number(
            a, "maxP99LatencyMs", f"{path}.maxP99LatencyMs", low=0, high=600000
        ),
        max_drift_psi=_optional_number(a, "maxDriftPsi", f"{path}.maxDriftPsi", low=0, high=10),
        min_agreement=_optional_number(a, "minAgreement", f"{path}.minAgreement", low=0, high=1),
        min_requests=_integer(
            a,
            "minRequests",
            f"{path}.minRequests",
            default=DEFAULT_MIN_REQUESTS,
            low=1,
            high=1000000,
        ),
    )
    if analysis.min_agreement is not None and strategy != "shadow":
        raise SpecError(
            f"{path}.minAgreement", analysis.min_agreement,
            "no minAgreement unless spec.rollout.strategy is shadow (only a shadow compares "
            "the candidate's answers with the stable version's)",
        )  # fmt: skip
    return RolloutSpec(timeout, strategy, tuple(steps), analysis)


def _parse_archive(raw: Mapping[str, Any]) -> ArchiveSpec:
    bucket = _string(raw, "bucket", "spec.archive.bucket")
    if bucket is not None:
        _check_bucket(bucket, "spec.archive.bucket", bucket)
    retain = _optional_integer(raw, "retainDays", "spec.archive.retainDays", low=0, high=36500)
    return ArchiveSpec(bucket=bucket, retain_days=retain)


def _parse_decision_log(raw: Mapping[str, Any]) -> DecisionLogSpec:
    at = "spec.decisionLog"
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise SpecError(f"{at}.enabled", enabled, "true or false")
    bucket = _string(raw, "bucket", f"{at}.bucket")
    if bucket is not None:
        _check_bucket(bucket, f"{at}.bucket", bucket)
    prefix = _string(raw, "prefix", f"{at}.prefix")
    if prefix is None:
        prefix = "decisions"
    elif (
        not _DECISION_PREFIX.fullmatch(prefix)
        or len(prefix) > MAX_PREFIX_LENGTH
        or any(part in (".", "..") for part in prefix.split("/"))
    ):
        raise SpecError(
            f"{at}.prefix",
            prefix,
            f"an object key prefix of 1-{MAX_PREFIX_LENGTH} letters, digits, '.', '_', '-' "
            "and '/', neither starting nor ending with '/', without empty, '.' or '..' "
            "segments (e.g. decisions or audit/decisions)",
        )
    mode = _string(raw, "mode", f"{at}.mode")
    if mode is None:
        mode = "best-effort"
    elif mode not in DECISION_LOG_MODES:
        raise SpecError(f"{at}.mode", mode, "one of " + ", ".join(DECISION_LOG_MODES))
    flush = _optional_number(raw, "flushSeconds", f"{at}.flushSeconds", low=1, high=3600)
    max_records = _integer(raw, "maxRecords", f"{at}.maxRecords", default=1000, low=1, high=100_000)
    queue_records = _integer(
        raw, "queueRecords", f"{at}.queueRecords", default=100_000, low=1, high=10_000_000
    )
    if queue_records < max_records:
        raise SpecError(
            f"{at}.queueRecords",
            queue_records,
            f"at least {at}.maxRecords ({max_records}): the queue must hold one whole object",
        )
    redact = _parse_redact(raw.get("redact"), f"{at}.redact")
    secret_raw = raw.get("redactKeySecret")
    secret = None
    if secret_raw is not None:
        secret = _parse_secret_key_ref(
            _object(secret_raw, f"{at}.redactKeySecret"), f"{at}.redactKeySecret"
        )
    if redact and secret is None:
        raise SpecError(
            f"{at}.redactKeySecret",
            None,
            f"{{name, key}} of the Secret holding the HMAC key, since {at}.redact names "
            f"columns ({', '.join(redact)}) to store only as keyed hashes",
        )
    retention = _integer(
        raw, "retentionDays", f"{at}.retentionDays", default=183, low=1, high=36500
    )
    return DecisionLogSpec(
        enabled=enabled,
        bucket=bucket,
        prefix=prefix,
        mode=mode,
        flush_seconds=10.0 if flush is None else flush,
        max_records=max_records,
        queue_records=queue_records,
        redact=redact,
        redact_key_secret=secret,
        retention_days=retention,
    )


def _parse_redact(raw: Any, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(path, raw, "a list of input column names")
    if len(raw) > MAX_REDACT_COLUMNS:
        raise SpecError(path, raw, f"at most {MAX_REDACT_COLUMNS} column names")
    seen: dict[str, None] = {}
    for i, column in enumerate(raw):
        if (
            not isinstance(column, str)
            or not _REDACT_COLUMN.fullmatch(column)
            or len(column) > MAX_COLUMN_LENGTH
        ):
            raise SpecError(
                f"{path}[{i}]",
                column,
                f"an input column name of 1-{MAX_COLUMN_LENGTH} characters, without ',' and "
                "without leading or trailing spaces",
            )
        if column in seen:
            raise SpecError(f"{path}[{i}]", column, "each column named once")
        seen[column] = None
    return tuple(seen)


def _parse_secret_key_ref(raw: Mapping[str, Any], path: str) -> SecretKeyRef:
    name = _required_string(raw, "name", f"{path}.name")
    if not _SECRET_NAME.fullmatch(name) or len(name) > MAX_SECRET_NAME_LENGTH:
        raise SpecError(
            f"{path}.name",
            name,
            "a Secret name: lowercase letters, digits, '-' and '.', starting and ending with "
            f"a letter or digit, at most {MAX_SECRET_NAME_LENGTH} characters",
        )
    key = _string(raw, "key", f"{path}.key")
    if key is None:
        key = "key"
    elif not _SECRET_KEY.fullmatch(key) or len(key) > MAX_SECRET_NAME_LENGTH:
        raise SpecError(
            f"{path}.key",
            key,
            f"a Secret data key: 1-{MAX_SECRET_NAME_LENGTH} letters, digits, '-', '_' and '.'",
        )
    return SecretKeyRef(name=name, key=key)


# --- checks and readers ------------------------------------------------------------


def _check_bucket(bucket: str, path: str, value: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket or _IPV4.match(bucket):
        raise SpecError(path, value, _BUCKET_ACCEPTED)


def _check_s3_uri(uri: str, path: str) -> None:
    if not _S3_URI.match(uri):
        raise SpecError(path, uri, _S3_URI_ACCEPTED)
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    _check_bucket(bucket, path, uri)
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise SpecError(path, uri, "an object key without empty, '.' or '..' path segments")


def _object(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    if value is None:
        if required:
            raise SpecError(path, None, "an object")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, value, "an object")
    return value


def _string(raw: Mapping[str, Any], key: str, path: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise SpecError(path, value, 'a string (quote numbers in YAML, e.g. "3")')
    return value


def _required_string(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = _string(raw, key, path)
    if value is None:
        raise SpecError(path, None, "a string")
    return value


def _optional_integer(
    raw: Mapping[str, Any], key: str, path: str, *, low: int, high: int
) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise SpecError(path, value, f"an integer from {low} to {high}")
    return value


def _integer(
    raw: Mapping[str, Any], key: str, path: str, *, default: int, low: int, high: int
) -> int:
    value = _optional_integer(raw, key, path, low=low, high=high)
    return default if value is None else value


def _optional_number(
    raw: Mapping[str, Any], key: str, path: str, *, low: float, high: float
) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not low <= value <= high  # also rejects NaN
    ):
        raise SpecError(path, value, f"a number from {low:g} to {high:g}")
    return float(value)
