"""The shadow traffic configuration: a JSON file the operator mounts, read while serving.

The file (``MLMODEL_SHADOW_CONFIG``, default ``/etc/mlmodel/rollout/shadow.json``) comes
from an optional ConfigMap, so it may be absent, appear, change or disappear at any time;
the kubelet replaces it by swapping a symlink (``..data``), which gives the path a new
inode. :class:`ShadowConfigFile` stats it and re-reads it only when the stat changed,
and reports a change only when the content did: an invalid file is therefore reported
once per distinct content, not once per check.

The same configuration may instead be discovered (:mod:`mlmodel_serving.shadow_discovery`):
a candidate that offers to take copies answers ``GET /v2/shadow/offer`` with its model,
version and sample (:func:`parse_offer`), and the target is the URL it was asked at.

Parsing is pure (:func:`parse_shadow_config`, :func:`parse_offer` and the environment
values); every rejection names the file, offer or variable, the field, the value and what
is accepted.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

DEFAULT_SHADOW_CONFIG = "/etc/mlmodel/rollout/shadow.json"
DEFAULT_SHADOW_TIMEOUT_SECONDS = 2.0
DEFAULT_SHADOW_MAX_IN_FLIGHT = 16
DEFAULT_DISCOVERY_SECONDS = 5.0
DISCOVERY_SECONDS_RANGE = (1.0, 300.0)
FIELDS = ("target", "model", "version", "sample")
OFFER_FIELDS = ("model", "version", "sample")
#: Where a candidate offers to take copies (and the stable asks).
OFFER_PATH = "/v2/shadow/offer"
TARGET_ACCEPTED = "http://<host>:<port> (plain HTTP, an explicit port, no path or query)"
SAMPLE_ACCEPTED = "a number from 0.0 to 1.0 (the share mirrored)"
# Files larger than this are not read: the configuration is four short fields.
MAX_CONFIG_BYTES = 64 * 1024


class ShadowConfigError(ValueError):
    """The file's content is not a valid configuration; the message says why."""


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """Where a copy of each sampled request goes, and which candidate answers it."""

    host: str
    port: int
    model: str
    version: str
    sample: float
    # "Basic ..." when the target URL carries user:password, else None. Never shown.
    authorization: str | None = None

    @property
    def target(self) -> str:
        """The target as ``http://host:port``, without credentials (safe to log)."""
        return format_target(self.host, self.port)

    @property
    def candidate(self) -> tuple[str, int, str, str]:
        """What identifies the candidate: counts start over when it changes."""
        return (self.host, self.port, self.model, self.version)

    def describe(self) -> dict[str, Any]:
        """The configuration as the status endpoint shows it (no credentials)."""
        return {
            "target": self.target,
            "model": self.model,
            "version": self.version,
            "sample": self.sample,
        }


def format_target(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _invalid(source: str, field: str, value: Any, accepted: str) -> ShadowConfigError:
    """``source``: what was read, e.g. ``shadow config /etc/.../shadow.json``."""
    shown = repr(value) if not isinstance(value, str) or len(value) <= 200 else repr(value[:200])
    return ShadowConfigError(f"{source}: field {field!r} is {shown}; accepted: {accepted}")


def parse_shadow_config(data: bytes, path: str = DEFAULT_SHADOW_CONFIG) -> ShadowConfig | None:
    """The configuration in ``data`` (the file's bytes), or None for no mirroring.

    Empty (or only whitespace) and ``{}`` mean no mirroring. Otherwise all four fields are
    required and no others are accepted (a misspelt field must not pass silently).
    Raises :class:`ShadowConfigError`.
    """
    if not data.strip():
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ShadowConfigError(
            f"shadow config {path}: not JSON ({exc}); accepted: a JSON object "
            '{"target": "http://<host>:<port>", "model": "<name>", "version": "<version>", '
            '"sample": <0.0..1.0>}, or an empty file for no mirroring'
        ) from None
    if not isinstance(doc, dict):
        raise ShadowConfigError(
            f"shadow config {path}: the document is a JSON {type(doc).__name__}, not an "
            "object; accepted: an object with the fields " + ", ".join(FIELDS)
        )
    if not doc:
        return None
    source = f"shadow config {path}"
    _check_fields(doc, FIELDS, source)
    host, port, authorization = parse_target(doc["target"], path)
    model, version, sample = _candidate_fields(doc, source)
    return ShadowConfig(host, port, model, version, sample, authorization)


def parse_offer(data: bytes, target: str) -> ShadowConfig:
    """The configuration a candidate offers at ``target`` (``http://host:port``, as
    :func:`parse_discovery_url` accepts it): its answer to ``GET /v2/shadow/offer``,
    ``{"model": ..., "version": ..., "sample": ...}``, all three required, no others.

    Raises :class:`ShadowConfigError`.
    """
    host, port, authorization = parse_discovery_url(target)
    source = f"shadow offer {format_target(host, port)}{OFFER_PATH}"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        shown = data[:200].decode("utf-8", "replace")
        raise ShadowConfigError(
            f"{source}: not JSON ({shown!r}); accepted: a JSON object "
            '{"model": "<name>", "version": "<version>", "sample": <0.0..1.0>}'
        ) from None
    if not isinstance(doc, dict):
        raise ShadowConfigError(
            f"{source}: the document is a JSON {type(doc).__name__}, not an object; "
            "accepted: an object with the fields " + ", ".join(OFFER_FIELDS)
        )
    _check_fields(doc, OFFER_FIELDS, source)
    model, version, sample = _candidate_fields(doc, source)
    return ShadowConfig(host, port, model, version, sample, authorization)


def build_offer(model: str, version: str, sample: float) -> dict[str, Any]:
    """What a candidate answers to ``GET /v2/shadow/offer``."""
    return {"model": model, "version": version, "sample": sample}


def _check_fields(doc: dict[str, Any], fields: tuple[str, ...], source: str) -> None:
    """All of ``fields`` present, no other (a misspelt field must not pass silently)."""
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise _invalid(source, unknown[0], doc[unknown[0]], "only the fields " + ", ".join(fields))
    missing = [f for f in fields if f not in doc]
    if missing:
        raise ShadowConfigError(
            f"{source}: field {missing[0]!r} is missing; accepted: an object "
            "with all of " + ", ".join(fields)
        )


def _candidate_fields(doc: dict[str, Any], source: str) -> tuple[str, str, float]:
    """``model``, ``version`` and ``sample``, checked."""
    model, version = doc["model"], doc["version"]
    if not isinstance(model, str) or not model or "/" in model or ":" in model:
        raise _invalid(source, "model", model, "a non-empty model name without '/' or ':'")
    if not isinstance(version, str) or not version or "/" in version:
        raise _invalid(source, "version", version, "a non-empty version string without '/'")
    sample = doc["sample"]
    if not _is_share(sample):
        raise _invalid(source, "sample", sample, SAMPLE_ACCEPTED)
    return model, version, float(sample)


def _is_share(value: Any) -> bool:
    """A number from 0 to 1 (not a bool, not NaN)."""
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


def parse_target(value: Any, path: str = DEFAULT_SHADOW_CONFIG) -> tuple[str, int, str | None]:
    """``http://[user:password@]host:port`` -> (host, port, Authorization header or None)."""
    source = f"shadow config {path}"
    accepted = TARGET_ACCEPTED
    if not isinstance(value, str) or not value:
        raise _invalid(source, "target", value, accepted)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _invalid(source, "target", _without_credentials(value), accepted) from None
    shown = _without_credentials(value)
    if parts.scheme != "http":
        raise _invalid(source, "target", shown, accepted)
    if not parts.hostname or port is None or port == 0:
        raise _invalid(source, "target", shown, accepted)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _invalid(source, "target", shown, accepted)
    authorization = None
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return parts.hostname, port, authorization


# -- the environment (checked at start: a bad value stops the server) ---------------------


def parse_discovery_url(value: str) -> tuple[str, int, str | None]:
    """``MLMODEL_SHADOW_DISCOVERY``: ``http://host:port`` -> (host, port, Authorization or
    None). Raises ValueError naming the variable, the value and what is accepted."""
    try:
        return parse_target(value)
    except ShadowConfigError:
        raise ValueError(
            "invalid MLMODEL_SHADOW_DISCOVERY (--shadow-discovery) "
            f"{_without_credentials(value)!r}: expected {TARGET_ACCEPTED}, where the "
            f"candidate answers {OFFER_PATH}"
        ) from None


def parse_discovery_seconds(value: str | float) -> float:
    """``MLMODEL_SHADOW_DISCOVERY_SECONDS``: how often the offer is asked for."""
    low, high = DISCOVERY_SECONDS_RANGE
    seconds = _number(value)
    if seconds is None or not low <= seconds <= high:
        raise ValueError(
            "invalid MLMODEL_SHADOW_DISCOVERY_SECONDS (--shadow-discovery-seconds) "
            f"{value!r}: expected a number of seconds from {low:g} to {high:g}"
        )
    return seconds


def parse_shadow_sample(value: str | float) -> float:
    """``MLMODEL_SHADOW_SAMPLE``: the share of requests a candidate offers to take copies of."""
    share = _number(value)
    if share is None or not _is_share(share):
        raise ValueError(
            f"invalid MLMODEL_SHADOW_SAMPLE (--shadow-sample) {value!r}: expected a number "
            "from 0.0 to 1.0 (the share of the stable's requests this candidate offers to "
            "take copies of), or unset to offer none"
        )
    return share


def _number(value: str | float) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@`` (for messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{tail}"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What a check of the file found: a new configuration (or None: off), or an error."""

    config: ShadowConfig | None
    error: str | None = None


class ShadowConfigFile:
    """Watches the configuration file: :meth:`check` costs a ``stat`` when nothing changed."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._stat: tuple[int, ...] | None = None
        self._content: bytes | None = None  # None: absent (or never read)

    def check(self) -> ConfigChange | None:
        """The change since the last check, or None when the content is the same.

        An absent or unreadable file is the same as an empty one (no mirroring); a file
        that cannot be read is reported as an error once.
        """
        try:
            st = os.stat(self.path)  # follows the kubelet's symlinks: a swap is a new inode
        except FileNotFoundError:
            key: tuple[int, ...] | None = None
        except OSError as exc:
            key = (-1, exc.errno or 0)
        else:
            key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, st.st_ctime_ns)
        if key == self._stat:
            return None
        self._stat = key
        error: str | None = None
        try:
            content = self._read() if key is not None else None
        except OSError as exc:
            content = b"\0unreadable: " + str(exc).encode()
            error = (
                f"shadow config {self.path}: cannot be read ({exc.strerror or exc}); accepted: "
                "a readable JSON file, or no file for no mirroring"
            )
        if content == self._content:
            return None
        self._content = content
        if error is not None:
            return ConfigChange(None, error)
        if content is None:
            return ConfigChange(None)
        try:
            return ConfigChange(parse_shadow_config(content, self.path))
        except ShadowConfigError as exc:
            return ConfigChange(None, str(exc))

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_CONFIG_BYTES + 1)
        except FileNotFoundError:  # removed between the stat and the read
            return None
        if len(data) > MAX_CONFIG_BYTES:
            raise OSError(0, f"larger than {MAX_CONFIG_BYTES} bytes")
        return data
