"""The operator's configuration, read from the environment once at startup.

`Settings.from_env` takes the mapping it reads (``os.environ`` in production, a plain
dict in tests), so nothing here touches the process environment by itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

GROUP: Final = "ml.lifecycle.io"
FINALIZER: Final = f"{GROUP}/archive"
DEFAULT_SERVING_IMAGE: Final = "ghcr.io/mlmodel-lifecycle/mlmodel-serving:0.1.0"
DEFAULT_S3_ENDPOINT: Final = "minio.mlmodel-system.svc:9000"
DEFAULT_S3_SECRET_NAME: Final = "mlmodel-s3-credentials"
DEFAULT_ARCHIVE_BUCKET: Final = "model-archive"
DEFAULT_CLUSTER_DOMAIN: Final = "cluster.local"
SERVING_PORT: Final = 8080
DEFAULT_WORKERS: Final = 32
DEFAULT_FLEET_UPDATES_PER_SECOND: Final = 10.0
# Each model's periodic look, the safety net for what no watch announces (a Secret, the
# monitoring CRDs installed later): every wait a reconcile knows of (a drain, a step, the
# ready timeout, a blocked model's retry) names its own, sooner look.
DEFAULT_RECONCILE_INTERVAL: Final = 300.0

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_PULL_POLICIES = ("Always", "IfNotPresent", "Never")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_HOST_PORT = re.compile(
    r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:(?P<port>\d{1,5}))?$"
)
# A reference as `docker pull` takes it: [registry[:port]/]path[:tag][@sha256:digest].
_IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+|__[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)

# An entry of MLMODEL_ALLOWED_IMAGES: a repository ("registry.example/ml/serving": its tags
# and digests), a registry or path prefix ending in "/" ("registry.example/ml/": every
# repository below it), or "*" (any image).
_IMAGE_SOURCE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+|__[a-z0-9]+)*)*/?$"
)
ANY_IMAGE: Final = "*"


def image_repository(image: str) -> str:
    """``image`` without its tag and digest: ``registry[:port]/path``."""
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


class SettingsError(ValueError):
    """An environment variable the operator cannot use.

    The message names the variable, the value and what would be accepted.
    """

    def __init__(self, variable: str, value: str, accepted: str) -> None:
        self.variable = variable
        self.value = value
        self.accepted = accepted
        super().__init__(f"{variable}={value!r} is not accepted; expected {accepted}")


@dataclass(frozen=True)
class Settings:
    """Everything the operator reads from its environment, validated."""

    serving_image: str = DEFAULT_SERVING_IMAGE
    image_pull_policy: str = "IfNotPresent"
    s3_endpoint: str = DEFAULT_S3_ENDPOINT
    s3_secure: bool = False
    s3_credentials_secret: str = DEFAULT_S3_SECRET_NAME
    s3_access_key_key: str = "accessKey"
    s3_secret_key_key: str = "secretKey"
    archive_bucket: str = DEFAULT_ARCHIVE_BUCKET
    # Empty means every namespace.
    namespaces: tuple[str, ...] = ()
    finalizer: str = FINALIZER
    cluster_domain: str = DEFAULT_CLUSTER_DOMAIN
    serving_port: int = SERVING_PORT
    reconcile_interval_seconds: float = DEFAULT_RECONCILE_INTERVAL
    # Where serving images may come from (MLMODEL_ALLOWED_IMAGES); empty: the repository
    # of serving_image only.
    allowed_images: tuple[str, ...] = ()
    require_image_digest: bool = False
    # Where a canary's or shadow's analysis reads the servers' metrics
    # (MLMODEL_PROMETHEUS_URL, http(s)://host:port[/path]); empty: no analysis possible.
    prometheus_url: str = ""
    # Reconciles run at once (kopf's executor threads; MLMODEL_WORKERS): each mostly waits
    # for the apiserver, so more threads than cores (32: a burst of 1,000 new models made
    # its Deployments with a p99 half that of 16; 48 or 64 finished it no sooner on 2 cores).
    workers: int = DEFAULT_WORKERS
    # The most serving Deployments whose Pod template the operator changes per second,
    # across every model (MLMODEL_FLEET_UPDATES_PER_SECOND; 0: no limit). New Deployments
    # are not counted: this paces a change of the operator's own settings (a new default
    # serving image) through a fleet, so its Pods do not all restart at once.
    fleet_updates_per_second: float = DEFAULT_FLEET_UPDATES_PER_SECOND

    @property
    def all_namespaces(self) -> bool:
        return not self.namespaces

    @property
    def image_sources(self) -> tuple[str, ...]:
        return self.allowed_images or (image_repository(self.serving_image),)

    def image_problem(self, image: str) -> str | None:
        """Why the serving image ``image`` may not run, or None when it may.

        The serving Pods get the namespace's object-store credentials, so whoever may
        create an MLModel must not choose just any image for them.
        """
        sources = self.image_sources
        repository = image_repository(image)
        allowed = any(
            source == ANY_IMAGE
            or (image.startswith(source) if source.endswith("/") else repository == source)
            for source in sources
        )
        if not allowed:
            return (
                f"spec.serving.image {image!r} is not allowed: the operator runs serving "
                f"images only from {', '.join(sources)} (its setting MLMODEL_ALLOWED_IMAGES; "
                "a repository, or a prefix ending in '/')"
            )
        if self.require_image_digest and "@sha256:" not in image:
            return (
                f"spec.serving.image {image!r} is not pinned by digest: the operator's "
                "setting MLMODEL_REQUIRE_IMAGE_DIGEST is true, so the image must be named as "
                "<repository>@sha256:<64 hex digits>"
            )
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Parse the operator's settings from `env`; raise SettingsError on a bad value.

        Unset and empty variables take their defaults.
        """

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value if value else default

        serving_image = get("MLMODEL_SERVING_IMAGE", DEFAULT_SERVING_IMAGE)
        if not _IMAGE.match(serving_image):
            raise SettingsError(
                "MLMODEL_SERVING_IMAGE",
                serving_image,
                "a container image reference such as registry.example/org/name:tag",
            )

        pull_policy = get("MLMODEL_IMAGE_PULL_POLICY", "IfNotPresent")
        if pull_policy not in _PULL_POLICIES:
            raise SettingsError(
                "MLMODEL_IMAGE_PULL_POLICY", pull_policy, "one of " + ", ".join(_PULL_POLICIES)
            )

        s3_endpoint = get("MLMODEL_S3_ENDPOINT", DEFAULT_S3_ENDPOINT)
        endpoint = _HOST_PORT.match(s3_endpoint)
        if not endpoint or (endpoint["port"] and not 0 < int(endpoint["port"]) < 65536):
            raise SettingsError(
                "MLMODEL_S3_ENDPOINT",
                s3_endpoint,
                "host[:port] without a scheme, e.g. minio.mlmodel-system.svc:9000 "
                "(set MLMODEL_S3_SECURE=true for TLS)",
            )

        s3_secure = _parse_bool(env, "MLMODEL_S3_SECURE", default=False)

        secret = get("MLMODEL_S3_SECRET_NAME", DEFAULT_S3_SECRET_NAME)
        if not _DNS_SUBDOMAIN.match(secret):
            raise SettingsError(
                "MLMODEL_S3_SECRET_NAME",
                secret,
                "a Secret name: lowercase letters, digits, '-' and '.', at most 253 characters",
            )

        bucket = get("MLMODEL_ARCHIVE_BUCKET", DEFAULT_ARCHIVE_BUCKET)
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise SettingsError(
                "MLMODEL_ARCHIVE_BUCKET",
                bucket,
                "an S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', "
                "starting and ending with a letter or digit",
            )

        namespaces = _parse_namespaces(env.get("MLMODEL_NAMESPACES", ""))

        cluster_domain = get("MLMODEL_CLUSTER_DOMAIN", DEFAULT_CLUSTER_DOMAIN)
        if not _DNS_SUBDOMAIN.match(cluster_domain):
            raise SettingsError(
                "MLMODEL_CLUSTER_DOMAIN", cluster_domain, "a DNS domain such as cluster.local"
            )

        raw_interval = get("MLMODEL_RECONCILE_INTERVAL", f"{DEFAULT_RECONCILE_INTERVAL:g}")
        try:
            interval = float(raw_interval)
        except ValueError:
            interval = math.nan
        if not 0.1 <= interval <= 86400:  # also rejects NaN
            raise SettingsError(
                "MLMODEL_RECONCILE_INTERVAL",
                raw_interval,
                "a number of seconds from 0.1 to 86400",
            )

        workers = _parse_number(env, "MLMODEL_WORKERS", DEFAULT_WORKERS, 1, 256, integer=True)
        fleet_rate = _parse_number(
            env, "MLMODEL_FLEET_UPDATES_PER_SECOND", DEFAULT_FLEET_UPDATES_PER_SECOND, 0, 10000
        )

        allowed = _parse_image_sources(env.get("MLMODEL_ALLOWED_IMAGES", ""))
        require_digest = _parse_bool(env, "MLMODEL_REQUIRE_IMAGE_DIGEST", default=False)
        if require_digest and "@sha256:" not in serving_image:
            raise SettingsError(
                "MLMODEL_SERVING_IMAGE", serving_image,
                "an image pinned by digest (<repository>@sha256:<digest>), because "
                "MLMODEL_REQUIRE_IMAGE_DIGEST is true",
            )  # fmt: skip
        if cls(serving_image=serving_image, allowed_images=allowed).image_problem(serving_image):
            raise SettingsError(
                "MLMODEL_ALLOWED_IMAGES", env.get("MLMODEL_ALLOWED_IMAGES", ""),
                f"a list that allows the default serving image {serving_image} too",
            )  # fmt: skip

        prometheus = get("MLMODEL_PROMETHEUS_URL", "")
        if prometheus and not re.match(r"^https?://[^/\s?#]+(/[^\s?#]*)?$", prometheus):
            raise SettingsError(
                "MLMODEL_PROMETHEUS_URL", prometheus,
                "the Prometheus HTTP API's base URL, e.g. http://prometheus.monitoring.svc:9090",
            )  # fmt: skip

        return cls(
            serving_image=serving_image,
            allowed_images=allowed,
            prometheus_url=prometheus.rstrip("/"),
            require_image_digest=require_digest,
            image_pull_policy=pull_policy,
            s3_endpoint=s3_endpoint,
            s3_secure=s3_secure,
            s3_credentials_secret=secret,
            archive_bucket=bucket,
            namespaces=namespaces,
            cluster_domain=cluster_domain,
            reconcile_interval_seconds=interval,
            workers=int(workers),
            fleet_updates_per_second=fleet_rate,
        )


def _parse_number(
    env: Mapping[str, str],
    name: str,
    default: float,
    low: float,
    high: float,
    *,
    integer: bool = False,
) -> float:
    """A number from ``low`` to ``high`` (a whole one when ``integer``); unset: ``default``."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:  # also rejects NaN
        kind = "a whole number" if integer else "a number"
        raise SettingsError(name, raw, f"{kind} from {low:g} to {high:g}")
    return value


def _parse_bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False if value else default
    raise SettingsError(name, raw, "true or false (also 1/0, yes/no, on/off)")


def _parse_image_sources(raw: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in raw.split(","):
        source = part.strip()
        if not source:
            continue
        if source != ANY_IMAGE and not _IMAGE_SOURCE.match(source):
            raise SettingsError(
                "MLMODEL_ALLOWED_IMAGES",
                raw,
                "a comma-separated list of image repositories (registry.example/ml/serving: "
                "its tags and digests), prefixes ending in '/' (registry.example/ml/: every "
                f"repository below), or * for any image; {source!r} is none of these (no "
                "tags or digests in the list)",
            )
        seen[source] = None
    return tuple(seen)


def _parse_namespaces(raw: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        if not _DNS_LABEL.match(name):
            raise SettingsError(
                "MLMODEL_NAMESPACES",
                raw,
                "a comma-separated list of namespace names (lowercase letters, digits and '-', "
                f"at most 63 characters each; {name!r} is not one), or empty for all namespaces",
            )
        seen[name] = None
    return tuple(seen)
