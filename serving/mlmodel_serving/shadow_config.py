"""The shadow traffic configuration: a JSON file the operator mounts, read while serving.

The file (``MLMODEL_SHADOW_CONFIG``, default ``/etc/mlmodel/rollout/shadow.json``) comes
from an optional ConfigMap, so it may be absent, appear, change or disappear at any time;
the kubelet replaces it by swapping a symlink (``..data``), which gives the path a new
inode. :class:`ShadowConfigFile` stats it and re-reads it only when the stat changed,
and reports a change only when the content did: an invalid file is therefore reported
once per distinct content, not once per check.

Parsing is pure (:func:`parse_shadow_config`); every rejection names the file, the field,
the value and what is accepted.
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
FIELDS = ("target", "model", "version", "sample")
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

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


def _invalid(path: str, field: str, value: Any, accepted: str) -> ShadowConfigError:
    shown = repr(value) if not isinstance(value, str) or len(value) <= 200 else repr(value[:200])
    return ShadowConfigError(
        f"shadow config {path}: field {field!r} is {shown}; accepted: {accepted}"
    )


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
    unknown = sorted(set(doc) - set(FIELDS))
    if unknown:
        raise _invalid(path, unknown[0], doc[unknown[0]], "only the fields " + ", ".join(FIELDS))
    missing = [f for f in FIELDS if f not in doc]
    if missing:
        raise ShadowConfigError(
            f"shadow config {path}: field {missing[0]!r} is missing; accepted: an object "
            "with all of " + ", ".join(FIELDS)
        )
    host, port, authorization = parse_target(doc["target"], path)
    model, version = doc["model"], doc["version"]
    if not isinstance(model, str) or not model or "/" in model or ":" in model:
        raise _invalid(path, "model", model, "a non-empty model name without '/' or ':'")
    if not isinstance(version, str) or not version or "/" in version:
        raise _invalid(path, "version", version, "a non-empty version string without '/'")
    sample = doc["sample"]
    if (
        isinstance(sample, bool)
        or not isinstance(sample, int | float)
        or not math.isfinite(sample)
        or not 0.0 <= sample <= 1.0
    ):
        raise _invalid(path, "sample", sample, "a number from 0.0 to 1.0 (the share mirrored)")
    return ShadowConfig(host, port, model, version, float(sample), authorization)


def parse_target(value: Any, path: str = DEFAULT_SHADOW_CONFIG) -> tuple[str, int, str | None]:
    """``http://[user:password@]host:port`` -> (host, port, Authorization header or None)."""
    accepted = "http://<host>:<port> (plain HTTP, an explicit port, no path or query)"
    if not isinstance(value, str) or not value:
        raise _invalid(path, "target", value, accepted)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _invalid(path, "target", _without_credentials(value), accepted) from None
    shown = _without_credentials(value)
    if parts.scheme != "http":
        raise _invalid(path, "target", shown, accepted)
    if not parts.hostname or port is None or port == 0:
        raise _invalid(path, "target", shown, accepted)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _invalid(path, "target", shown, accepted)
    authorization = None
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return parts.hostname, port, authorization


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
