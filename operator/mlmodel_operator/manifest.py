"""The archive's layout and its ``manifest.json``: pure functions, no I/O.

An archived version lives at ``s3://<bucket>/<namespace>/<model>/<version>/``:

    model.joblib     the artifact, byte for byte (server-side copy of the served one)
    manifest.json    what it is, what served it, when and why it left (MANIFEST_FORMAT)

A version name archived again with other bytes (the MLModel was deleted and re-created,
or status.history forgot the version) is archived beside the first, in a folder named by
its digest: ``<namespace>/<model>/<version>/sha256-<hex>/``, holding the same two files.
So a version name alone does not identify an archive; a version and a digest do.

The served-version ledger lives beside the versions, at ``<namespace>/<model>/ledger/``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mlmodel_operator import __version__
from mlmodel_operator.conditions import format_time
from mlmodel_operator.plan import HistoryEntry
from mlmodel_operator.spec import ModelSpec

MANIFEST_FORMAT: Final = "ml.lifecycle.io/archive-manifest/v1"
ARTIFACT_NAME: Final = "model.joblib"
MANIFEST_NAME: Final = "manifest.json"

# What `spec` in a manifest is, said in the manifest itself.
SPEC_NOTE: Final = (
    "the MLModel spec as the operator parsed it (defaults filled in) when the version was "
    "archived, with version and artifact set to the archived version's; on a SpecChanged "
    "retirement the other fields are the ones in force at that moment"
)
SERVING_RELEASE_NOTE: Final = (
    "the Python of the base image and the versions pinned in serving/requirements.txt of "
    "the mlmodel-lifecycle release the operator runs, which its default serving image "
    "installs: what the pods ran when imageIsDefault is true; for another image, unknown"
)


DIGEST_FOLDER_PREFIX: Final = "sha256-"
_HEX = frozenset("0123456789abcdef")


def version_prefix(namespace: str, model: str, version: str) -> str:
    """The version's folder: its first archive, and the folders of any others."""
    return f"{namespace}/{model}/{version}/"


def digest_prefix(namespace: str, model: str, version: str, sha256: str) -> str:
    """The folder of an archive of ``version`` whose folder is taken by other bytes."""
    return f"{version_prefix(namespace, model, version)}{DIGEST_FOLDER_PREFIX}{sha256}/"


def artifact_key(namespace: str, model: str, version: str) -> str:
    """The first archive's artifact (the layout every archive had before digests)."""
    return version_prefix(namespace, model, version) + ARTIFACT_NAME


def manifest_key(namespace: str, model: str, version: str) -> str:
    """The first archive's manifest."""
    return version_prefix(namespace, model, version) + MANIFEST_NAME


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


@dataclass(frozen=True)
class ManifestKey:
    """Where a manifest.json sits: the version it archives, and the digest its folder
    names (None for a version's own folder)."""

    namespace: str
    model: str
    version: str
    sha256: str | None


def parse_manifest_key(key: str) -> ManifestKey | None:
    """The archive a key is the manifest of, or None when it is not an archive's manifest
    (an artifact, a ledger record, anything else in the bucket)."""
    parts = key.split("/")
    if parts[-1] != MANIFEST_NAME:
        return None
    if len(parts) == 4:
        return ManifestKey(parts[0], parts[1], parts[2], None)
    folder = parts[3] if len(parts) == 5 else ""
    digest = folder.removeprefix(DIGEST_FOLDER_PREFIX)
    if folder.startswith(DIGEST_FOLDER_PREFIX) and is_sha256(digest):
        return ManifestKey(parts[0], parts[1], parts[2], digest)
    return None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _plain(value: Any) -> Any:
    """Dataclasses and mappings as JSON-ready dicts with the CRD's camelCase names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = _plain(getattr(value, f.name))
            if item is not None:
                out[_camel(f.name)] = item
        return out
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def spec_to_dict(model: ModelSpec) -> dict[str, Any]:
    """The parsed spec in the CRD's shape (camelCase, defaults filled, unset fields left out)."""
    out: dict[str, Any] = _plain(model)
    for key in ("ref", "generation"):
        out.pop(key, None)
    return out


def served_spec(model: ModelSpec, entry: HistoryEntry) -> dict[str, Any]:
    """The spec the archived version served with, as far as the operator knows it."""
    spec = spec_to_dict(model)
    spec["version"] = entry.version
    spec["artifact"] = {
        "uri": entry.uri or model.artifact.uri,
        "sha256": entry.sha256 or model.artifact.sha256,
        "format": model.artifact.format,
    }
    return spec


# What the default serving image of this release is built with: the base image's Python
# (serving/Dockerfile) and the pins of serving/requirements.txt. Kept equal to those
# files by tests/unit/archive/test_archive_release_pins.py.
SERVING_IMAGE_PYTHON: Final = "3.11.7"
SERVING_IMAGE_PINS: Final[Mapping[str, str]] = {
    "scikit-learn": "1.9.1",
    "joblib": "1.6.0",
    "numpy": "2.4.6",
    "pandas": "3.1.1",
}


def serving_release() -> dict[str, str | None]:
    """The library versions the default serving image of this release is built with."""
    return {
        "mlmodel-lifecycle": __version__,
        "python": SERVING_IMAGE_PYTHON,
        **SERVING_IMAGE_PINS,
    }


@dataclass(frozen=True)
class StoredArtifact:
    """The archived copy as verified in the store."""

    uri: str
    sha256: str
    size: int
    source_uri: str


def build_manifest(
    model: ModelSpec,
    entry: HistoryEntry,
    reason: str,
    now: dt.datetime,
    stored: StoredArtifact,
    serving_image: str,
    default_image: str,
    scan: Mapping[str, Any],
    release: Mapping[str, str | None],
    retention: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The manifest of one archived version (JSON-ready, keys in a stable order)."""
    return {
        "format": MANIFEST_FORMAT,
        "model": model.name,
        "namespace": model.namespace,
        "uid": model.ref.uid,
        "version": entry.version,
        "sha256": stored.sha256,
        "size": stored.size,
        "artifactUri": stored.uri,
        "sourceUri": stored.source_uri,
        "artifactFormat": model.artifact.format,
        "deployedAt": entry.deployed_at or None,
        "retiredAt": entry.retired_at or format_time(now),
        "reason": reason,
        "archivedAt": format_time(now),
        "servingImage": serving_image,
        "spec": served_spec(model, entry),
        "specNote": SPEC_NOTE,
        "libraries": {
            "trainedWith": dict(scan),
            "servingRelease": {
                **release,
                "imageIsDefault": serving_image == default_image,
                "note": SERVING_RELEASE_NOTE,
            },
        },
        "retention": dict(retention) if retention else None,
    }


class ManifestError(ValueError):
    """A manifest.json that cannot be read as one."""


@dataclass(frozen=True)
class ManifestView:
    """The fields the CLI reads from a manifest, checked."""

    model: str
    namespace: str
    version: str
    sha256: str
    size: int
    artifact_uri: str
    source_uri: str
    deployed_at: str | None
    retired_at: str | None
    reason: str
    serving_image: str
    trained_sklearn: str | None
    release: Mapping[str, Any]
    raw: Mapping[str, Any]
    where: str = ""  # the manifest's own s3:// URI, when read from the store

    @property
    def location(self) -> str:
        """The archive's folder (``s3://.../<version>/`` or ``.../sha256-<hex>/``)."""
        return self.where.rsplit("/", 1)[0] + "/" if "/" in self.where else self.where

    @classmethod
    def parse(cls, raw: Any, where: str) -> ManifestView:
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: not a JSON object")
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where}: format {raw.get('format')!r} is not {MANIFEST_FORMAT!r}")
        missing = [k for k in ("model", "namespace", "version", "sha256", "size",
                               "artifactUri") if k not in raw]  # fmt: skip
        if missing:
            raise ManifestError(f"{where}: missing {', '.join(missing)}")
        libraries = raw.get("libraries") or {}
        trained = (libraries.get("trainedWith") or {}).get("scikit-learn")
        return cls(
            model=str(raw["model"]),
            namespace=str(raw["namespace"]),
            version=str(raw["version"]),
            sha256=str(raw["sha256"]),
            size=int(raw["size"]),
            artifact_uri=str(raw["artifactUri"]),
            source_uri=str(raw.get("sourceUri", "")),
            deployed_at=raw.get("deployedAt"),
            retired_at=raw.get("retiredAt"),
            reason=str(raw.get("reason", "")),
            serving_image=str(raw.get("servingImage", "")),
            trained_sklearn=trained if isinstance(trained, str) else None,
            release=dict(libraries.get("servingRelease") or {}),
            raw=raw,
            where=where,
        )


# A digest given to choose among archives may be shortened to this many characters
# (`archive ls` shows 12); shorter prefixes would match by accident too easily.
MIN_DIGEST_PREFIX: Final = 8


def with_digest(views: Iterable[ManifestView], digest: str) -> list[ManifestView]:
    """The archives whose sha256 is ``digest`` or starts with it (case-insensitive)."""
    wanted = digest.strip().lower()
    return [v for v in views if v.sha256.startswith(wanted)]


def by_digest(views: Iterable[ManifestView]) -> list[ManifestView]:
    """One archive per digest (the same bytes archived twice are the same choice), in the
    order they served."""
    seen: dict[str, ManifestView] = {}
    for v in sorted(views, key=lambda v: (v.deployed_at or "", v.retired_at or "", v.where)):
        seen.setdefault(v.sha256, v)
    return list(seen.values())
