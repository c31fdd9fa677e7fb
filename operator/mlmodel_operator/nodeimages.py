"""The project's container images as docker-archive tarballs, built without Docker.

For the real-node harness: containerd imports each archive (``ctr -n k8s.io images
import``). ``hack/buildah-images.sh`` does the work (a cached Debian base from
debootstrap, the unmodified Dockerfiles with buildah, MinIO and our pause program on
scratch) and rebuilds an image only when its inputs changed, so a second call returns in
about a second. This module runs it, with a time limit, and reads its answer.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "hack" / "buildah-images.sh"
SHORT_NAMES = ("mlmodel-operator", "mlmodel-serving", "minio", "pause")

_FAILED = re.compile(r"FAILED step (?P<step>\S+) .*?; log: (?P<log>\S+)")


@dataclass(frozen=True)
class ImageArchive:
    """One image: its short name, its full name (as the manifests and kubelet use it), and
    the docker-archive tarball holding it under that name."""

    short: str
    name: str
    path: Path


class ImageBuildError(RuntimeError):
    """The images could not be built; names the failing step and shows the end of its log."""

    def __init__(self, step: str, detail: str, log: Path | None = None) -> None:
        where = f" (log: {log})" if log else ""
        super().__init__(f"image build failed at step '{step}'{where}:\n{detail}")
        self.step = step
        self.log = log


def parse_archive_lines(stdout: str) -> dict[str, ImageArchive]:
    """The ``archive<TAB>short<TAB>name<TAB>path`` lines the script prints, by short name."""
    found: dict[str, ImageArchive] = {}
    for line in stdout.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0] == "archive":
            found[fields[1]] = ImageArchive(fields[1], fields[2], Path(fields[3]))
    return found


def failed_step(stderr: str) -> tuple[str, Path | None]:
    """The step the script's log names as failed (the last one), else ``("buildah-images.sh",
    None)``: it stopped before or between steps."""
    matches = list(_FAILED.finditer(stderr))
    if not matches:
        return "buildah-images.sh", None
    return matches[-1]["step"], Path(matches[-1]["log"])


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _stop(proc: subprocess.Popen[str], grace: float = 60) -> tuple[str, str]:
    """Stop the script: SIGTERM to its process group lets it stop the step it runs (each
    step has a process group of its own), then SIGKILL whatever is left of the group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate()


def run_script(
    args: Sequence[str] = (),
    *,
    timeout: float = 1800,
    env: Mapping[str, str] | None = None,
    script: Path = SCRIPT,
) -> str:
    """Run the build script and return its stdout. On a time-out it is stopped with what it
    started (buildah, debootstrap, go); any failure raises ImageBuildError."""
    proc = subprocess.Popen(
        ["bash", str(script), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stdout, stderr = _stop(proc)
        running = re.findall(r"\] (\S+) \.\.\.$", stderr, flags=re.MULTILINE)
        raise ImageBuildError(
            running[-1] if running else "buildah-images.sh",
            f"not done after {timeout:.0f}s; last lines:\n{_tail(stderr, 30)}",
        ) from None
    if proc.returncode != 0:
        step, log = failed_step(stderr)
        raise ImageBuildError(
            step, f"exit status {proc.returncode}; last lines:\n{_tail(stderr, 50)}", log
        )
    return stdout


def image_archives(shorts: Sequence[str] = SHORT_NAMES) -> dict[str, ImageArchive]:
    """Names and archive paths, without building (the archives may not exist yet)."""
    return parse_archive_lines(run_script(["--list", *shorts], timeout=60))


def build_image_archives(
    timeout: float = 1800, shorts: Sequence[str] = SHORT_NAMES, *, script: Path = SCRIPT
) -> dict[str, ImageArchive]:
    """Build (or reuse) the images' archives and return them by short name."""
    archives = parse_archive_lines(run_script(list(shorts), timeout=timeout, script=script))
    missing = [s for s in shorts if s not in archives or not archives[s].path.is_file()]
    if missing:
        raise ImageBuildError("archives", f"the script reported success but made no {missing}")
    return archives


def ensure_image_archives(timeout: float = 1800) -> dict[str, Path]:
    """The four archives ({"mlmodel-operator", "mlmodel-serving", "minio", "pause"} ->
    tarball), built if needed; each image's full name is in ``image_archives()``."""
    return {short: a.path for short, a in build_image_archives(timeout).items()}
