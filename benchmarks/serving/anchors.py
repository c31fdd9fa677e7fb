"""The other servers we compare against, each in its own cached virtualenv.

Anchors never share the project's venv: KServe and MLServer pin FastAPI, pydantic and
protobuf in ways that would fight the project's own dependencies. Each venv is built
once, under a directory named by its pinned versions, and reused as-is afterwards.
scikit-learn, joblib and numpy are pinned to the versions of the interpreter that
trains the models, so every server unpickles the same file with the same library and
runs the same predict kernels.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

# Pinned anchor versions. Change a pin and a new venv is built beside the old one.
KSERVE_VERSION = "0.21.0"
MLSERVER_VERSION = "1.7.1"
FASTAPI_VERSION = "0.163.2"
UVICORN_VERSION = "0.54.0"

PIP_TIMEOUT_S = 1200


@dataclass(frozen=True)
class AnchorVenv:
    """One anchor's virtualenv: a name, its pinned packages and where it lives."""

    name: str
    version: str
    packages: tuple[str, ...]

    def requirements(self, ml_pins: dict[str, str]) -> list[str]:
        return [*self.packages, *(f"{k}=={v}" for k, v in sorted(ml_pins.items()))]

    def directory(self, cache_root: Path, ml_pins: dict[str, str]) -> Path:
        """`<name>-<version>-<digest of every pin and the Python version>`."""
        py = f"{sys.version_info.major}.{sys.version_info.minor}"
        key = "\n".join([py, *self.requirements(ml_pins)])
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        return cache_root / f"{self.name}-{self.version}-{digest}"


ANCHORS: dict[str, AnchorVenv] = {
    "kserve": AnchorVenv("kserve", KSERVE_VERSION, (f"kserve=={KSERVE_VERSION}",)),
    "mlserver": AnchorVenv(
        "mlserver",
        MLSERVER_VERSION,
        (
            f"mlserver=={MLSERVER_VERSION}",
            f"mlserver-sklearn=={MLSERVER_VERSION}",
            # MLServer 1.7.1's inference workers call asyncio.get_event_loop() with no
            # loop set, which uvloop >= 0.22 turns into an error; 0.21 is what MLServer
            # was released against.
            "uvloop==0.21.0",
        ),
    ),
    "fastapi": AnchorVenv(
        "fastapi",
        FASTAPI_VERSION,
        (f"fastapi=={FASTAPI_VERSION}", f"uvicorn[standard]=={UVICORN_VERSION}"),
    ),
}


def default_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mlmodel-lifecycle" / "bench-venvs"


def ml_pins() -> dict[str, str]:
    """The model libraries' versions in this interpreter, pinned in every anchor."""
    import joblib
    import numpy
    import sklearn

    return {
        "scikit-learn": sklearn.__version__,
        "joblib": joblib.__version__,
        "numpy": numpy.__version__,
    }


class AnchorInstallError(RuntimeError):
    """An anchor's venv could not be built; carries the failing command and its output."""


def ensure_venv(anchor: AnchorVenv, cache_root: Path, pins: dict[str, str], log: Path) -> Path:
    """Return the anchor's venv, building it first if it does not exist yet.

    The venv is built in a temporary directory and renamed into place only when the
    install succeeded, so a half-built venv is never mistaken for a cached one.
    """
    target = anchor.directory(cache_root, pins)
    if (target / "bin" / "python").exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    building = target.with_name(target.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    venv.create(building, with_pip=True, symlinks=True)
    # venv scripts embed their absolute path in the shebang; build with the final path
    # in mind by installing through `python -m pip` and fixing shebangs after the rename.
    cmd = [
        str(building / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        *anchor.requirements(pins),
    ]
    with log.open("ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        try:
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(building, ignore_errors=True)
            raise AnchorInstallError(f"{' '.join(cmd)}: timed out after {PIP_TIMEOUT_S}s") from exc
    if proc.returncode != 0:
        tail = _tail(log, 30)
        shutil.rmtree(building, ignore_errors=True)
        raise AnchorInstallError(f"{' '.join(cmd)} exited {proc.returncode}:\n{tail}")
    _rewrite_shebangs(building, target)
    building.rename(target)
    return target


def _rewrite_shebangs(old: Path, new: Path) -> None:
    """Point console scripts (e.g. `mlserver`) at the venv's final location.

    pip writes either `#!/path/python` or, for paths too long for a shebang, a
    `/bin/sh` trampoline that execs the path: replace the path wherever it appears.
    """
    old_b, new_b = str(old).encode(), str(new).encode()
    for script in (old / "bin").iterdir():
        if not script.is_file() or script.is_symlink():
            continue
        data = script.read_bytes()
        if b"\0" in data[:4096] or old_b not in data:
            continue
        script.write_bytes(data.replace(old_b, new_b))
    cfg = old / "pyvenv.cfg"
    cfg.write_text(cfg.read_text().replace(str(old), str(new)))


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
