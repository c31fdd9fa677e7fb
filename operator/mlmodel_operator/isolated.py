"""Run an archived version with the library versions it was served with (``--isolated``).

scikit-learn does not promise that a pickle loads, or computes the same, under another
minor version; years after a model was retired the running `mlmodel` will have moved on.
With ``--isolated``, `replay`, `audit` and `explain` build a Python environment (``venv``
and ``pip`` from the package index, wheels only) with the versions the archive manifest
records, cache it under ``--env-dir`` by those versions, and load and run the artifact
there, in a worker process (:mod:`mlmodel_operator.isolated_worker`) that imports nothing
of this project. The worker hashes the bytes it reads and unpickles those same bytes.

Which versions: those of the serving release that made the decisions (the manifest's
``libraries.servingRelease``: scikit-learn, numpy, joblib, and pandas and scipy where
recorded), unless the version was served from a custom image, whose libraries are not
known; then the scikit-learn version the pickle names (``libraries.trainedWith``), with
pip choosing the rest. pandas is always installed (named columns arrive as a DataFrame).
Python itself is the interpreter given with ``--python`` (default: the one running
`mlmodel`); a different recorded Python is reported, not installed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from mlmodel_operator import isolated_worker
from mlmodel_operator.manifest import ManifestView

ENV_FORMAT = 1
DEFAULT_ENV_DIR = Path.home() / ".cache" / "mlmodel-lifecycle" / "envs"
ENV_DIR_VARIABLE = "MLMODEL_ENV_DIR"
# Pinned where the manifest records them; the first four are installed in any case.
LIBRARIES = ("scikit-learn", "numpy", "joblib", "pandas", "scipy")
ALWAYS = ("scikit-learn", "numpy", "joblib", "pandas")
BUILD_TIMEOUT = 1800.0  # seconds for venv + pip install
CALL_TIMEOUT = 900.0  # seconds for one load or predict in the worker
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]{0,63}$")
_WORKER = "mlmodel_worker.py"


class IsolationError(RuntimeError):
    """The isolated environment cannot be built, or its worker cannot answer."""


class WorkerCallError(RuntimeError):
    """The model raised in the worker (the call itself worked)."""


class IsolationUsageError(ValueError):
    """``--env-dir`` or ``--python`` without ``--isolated``."""


def default_env_dir() -> Path:
    value = os.environ.get(ENV_DIR_VARIABLE)
    return Path(value) if value else DEFAULT_ENV_DIR


@dataclass(frozen=True)
class Isolation:
    """What ``--isolated`` was given: where environments live, which Python builds them."""

    env_dir: Path
    python: str = sys.executable


def add_options(p: argparse.ArgumentParser) -> None:
    """``--isolated``, ``--env-dir`` and ``--python`` (also used by `replay`)."""
    p.add_argument(
        "--isolated",
        action="store_true",
        help="run the version in a Python environment with the library versions it was served "
        "with (built once with venv and pip, then reused)",
    )
    p.add_argument(
        "--env-dir",
        metavar="DIR",
        help="with --isolated: where environments are kept (default: $MLMODEL_ENV_DIR or "
        "~/.cache/mlmodel-lifecycle/envs)",
    )
    p.add_argument(
        "--python",
        metavar="PATH",
        help="with --isolated: the interpreter to build the environment with (default: the "
        "one running mlmodel)",
    )


def isolation_from(args: argparse.Namespace) -> Isolation | None:
    """``--isolated`` (with ``--env-dir`` and ``--python``), or None."""
    if not args.isolated:
        for flag, value in (("--env-dir", args.env_dir), ("--python", args.python)):
            if value is not None:
                raise IsolationUsageError(f"{flag} goes with --isolated")
        return None
    return Isolation(
        Path(args.env_dir) if args.env_dir else default_env_dir(),
        args.python or sys.executable,
    )


# --------------------------------------------------------------------------- requirements


@dataclass(frozen=True)
class Requirements:
    """The distributions to install: ``pins`` exactly, ``unpinned`` as pip resolves them."""

    pins: tuple[tuple[str, str], ...]
    unpinned: tuple[str, ...]
    python: str | None  # the recorded Python version, if any
    source: str  # where the pins come from, in words

    def lines(self) -> list[str]:
        return [f"{name}=={version}" for name, version in self.pins] + list(self.unpinned)

    def describe(self) -> str:
        return " ".join(self.lines())


def _checked(library: str, value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _VERSION.match(value):
        raise IsolationError(
            f"{where} records {library} version {value!r}, which is not a version number: "
            "refusing to pass it to pip"
        )
    return value


def recorded_requirements(
    manifest: ManifestView | None, pickled_sklearn: str | None
) -> Requirements:
    """The versions an archived version was served with, as pip requirements."""
    pins: dict[str, str] = {}
    python = None
    release = dict(manifest.release) if manifest is not None else {}
    if release and release.get("imageIsDefault") is not False:
        where = "the manifest's serving release"
        for library in LIBRARIES:
            version = _checked(library, release.get(library), where)
            if version:
                pins[library] = version
        recorded_python = release.get("python")
        python = recorded_python if isinstance(recorded_python, str) else None
        source = "the serving release that made the decisions (archive manifest)"
    else:
        version = _checked("scikit-learn", pickled_sklearn, "the pickle")
        if version:
            pins["scikit-learn"] = version
        source = (
            "the scikit-learn version the pickle names (the version was served from a custom "
            "image whose libraries are not recorded)"
            if release
            else "the scikit-learn version the pickle names (no archive manifest)"
        )
    if "scikit-learn" not in pins:
        raise IsolationError(
            "no recorded scikit-learn version to build an environment with: the manifest has "
            "no serving release and the pickle names none"
        )
    unpinned = tuple(name for name in ALWAYS if name not in pins)
    return Requirements(tuple(sorted(pins.items())), unpinned, python, source)


# --------------------------------------------------------------------------- environments


@dataclass(frozen=True)
class Environment:
    """A built environment: its directory, interpreter and what pip installed."""

    path: Path
    requirements: Requirements
    python_version: str
    installed: Mapping[str, str]  # distribution (lower case) -> version
    reused: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def versions(self) -> dict[str, str | None]:
        """In the shape of :func:`mlmodel_operator.replay.running_versions`."""
        return {
            "python": self.python_version,
            **{name: self.installed.get(name) for name in ("scikit-learn", "joblib", "numpy")},
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "requirements": self.requirements.lines(),
            "source": self.requirements.source,
            "python": self.python_version,
            "recordedPython": self.requirements.python,
            "installed": {name: self.installed.get(name) for name in LIBRARIES},
            "reused": self.reused,
        }


def interpreter_version(python: str) -> str:
    if python == sys.executable:
        return platform.python_version()
    try:
        out = subprocess.run(
            [python, "-I", "-c", "import platform; print(platform.python_version())"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise IsolationError(f"--python {python}: cannot run it ({exc})") from None
    return out.stdout.strip()


def environment_key(requirements: Requirements, python_version: str) -> str:
    """The cache key: the format, the interpreter's version and the requirements."""
    text = json.dumps(
        {"format": ENV_FORMAT, "python": python_version, "requirements": requirements.lines()},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def ensure_environment(
    requirements: Requirements, isolation: Isolation, log: Callable[[str], None]
) -> Environment:
    """The environment for ``requirements``: reused when built before, else built now.

    Built in a temporary directory and renamed into place once pip succeeded and the
    installed versions were checked, under a lock, so a half-built environment is never
    used and two commands never build the same one at once.
    """
    version = interpreter_version(isolation.python)
    root = isolation.env_dir
    root.mkdir(parents=True, exist_ok=True)
    key = environment_key(requirements, version)
    final = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _read_ready(final)
        if found is not None:
            return Environment(final, requirements, version, found, reused=True)
        if final.exists():  # left by a build that did not finish
            shutil.rmtree(final)
        log(
            f"building an isolated environment with {requirements.describe()} on Python "
            f"{version} (once; cached in {final})"
        )
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            installed = _build(tmp, requirements, isolation.python)
            _check_installed(requirements, installed)
            (tmp / "mlmodel-env.json").write_text(
                json.dumps(
                    {
                        "format": ENV_FORMAT,
                        "python": version,
                        "requirements": requirements.lines(),
                        "source": requirements.source,
                        "builtAt": dt.datetime.now(dt.UTC).isoformat(),
                        "installed": installed,
                    },
                    indent=2,
                    sort_keys=True,
                ),
                encoding="utf-8",
            )
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log(f"built it in {time.monotonic() - started:.0f}s")
        return Environment(final, requirements, version, installed, reused=False)


def _read_ready(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads((path / "mlmodel-env.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("format") != ENV_FORMAT or not (path / "bin" / "python").exists():
        return None
    installed = data.get("installed")
    return {str(k): str(v) for k, v in installed.items()} if isinstance(installed, dict) else None


def _run(argv: Sequence[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise IsolationError(f"{what}: no result within {timeout:.0f}s") from None
    except OSError as exc:
        raise IsolationError(f"{what}: {exc}") from None
    if done.returncode != 0:
        tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-6:]
        raise IsolationError(f"{what} failed (exit {done.returncode}): " + " | ".join(tail))
    return done.stdout


def _build(path: Path, requirements: Requirements, python: str) -> dict[str, str]:
    _run([python, "-m", "venv", str(path)], f"{python} -m venv", 300)
    env_python = str(path / "bin" / "python")
    what = f"pip install {requirements.describe()}"
    try:
        _run(
            [env_python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
             "--only-binary=:all:", "--quiet", *requirements.lines()],
            what, BUILD_TIMEOUT,
        )  # fmt: skip
    except IsolationError as exc:
        raise IsolationError(
            f"{exc}. The recorded versions may have no wheel for this Python; give an "
            f"interpreter of the recorded version with --python"
            + (f" (Python {requirements.python})" if requirements.python else "")
        ) from None
    out = _run(
        [env_python, "-I", "-c",
         "import importlib.metadata as m, json; print(json.dumps({str(d.metadata['Name'])"
         ".lower(): d.version for d in m.distributions()}))"],
        "listing the environment's distributions", 120,
    )  # fmt: skip
    return {str(k): str(v) for k, v in json.loads(out).items()}


def _check_installed(requirements: Requirements, installed: Mapping[str, str]) -> None:
    for name, version in requirements.pins:
        if installed.get(name) != version:
            raise IsolationError(
                f"pip installed {name} {installed.get(name)} where {version} was asked for"
            )


# --------------------------------------------------------------------------- the worker


class Worker:
    """The worker process of one environment; JSON lines both ways; stop with close()."""

    def __init__(self, environment: Environment) -> None:
        script = environment.path / _WORKER
        source = Path(isolated_worker.__file__).read_bytes()
        if not script.is_file() or script.read_bytes() != source:
            script.write_bytes(source)
        self.environment = environment
        try:
            self._proc = subprocess.Popen(
                [str(environment.python), "-I", str(script)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=environment.path,
            )  # fmt: skip
        except OSError as exc:
            raise IsolationError(f"cannot start {environment.python}: {exc}") from None
        self._buffer = b""
        # The worker's stderr (what libraries print), drained so it never blocks; the
        # last lines go into the error when the worker stops.
        self._stderr_tail: deque[str] = deque(maxlen=5)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        stderr = self._proc.stderr
        assert stderr is not None
        for raw in stderr:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._stderr_tail.append(line)

    def call(self, request: Mapping[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """Send one request; its answer, or WorkerCallError for the model's own failure."""
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(request, allow_nan=False).encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            raise IsolationError(self._died()) from None
        line = self._read_line(time.monotonic() + timeout)
        answer = json.loads(line)
        if not answer.get("ok"):
            raise WorkerCallError(f"{answer.get('type')}: {answer.get('error')}")
        return dict(answer)

    def _read_line(self, deadline: float) -> bytes:
        stdout = self._proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.close()
                    raise IsolationError(
                        f"the isolated worker ({self.environment.path}) gave no answer in time"
                    )
                if not selector.select(min(remaining, 1.0)):
                    continue
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise IsolationError(self._died())
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _died(self) -> str:
        try:
            code = self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        self._drain.join(timeout=5)
        tail = list(self._stderr_tail)
        return f"the isolated worker ({self.environment.python}) stopped (exit {code})" + (
            ": " + " | ".join(tail) if tail else ""
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._drain.join(timeout=5)
        for pipe in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def encode_input(x: Any) -> dict[str, Any]:
    """A model input (a float64 array, or Columns) as the worker's ``input``."""
    if isinstance(x, np.ndarray):
        return {"array": isolated_worker.encode(np.ascontiguousarray(x, dtype=np.float64))}
    return {
        "columns": [
            {"name": name, "values": isolated_worker.encode(values)}
            for name, values in zip(x.names, x.arrays, strict=True)
        ]
    }


@dataclass
class IsolatedModel:
    """The artifact loaded in a worker: what `audit`, `explain` and `replay` call.

    It has the attributes of :class:`mlmodel_serving.model.SklearnModel` they read, with
    ``estimator`` None (the estimator lives in the other process), so ``explain`` uses
    the model-agnostic explainer, which only calls the model.
    """

    worker: Worker
    name: str
    version: str
    sha256: str
    info: dict[str, Any]
    estimator: Any = None
    predict_path: str = "sklearn"
    classes: np.ndarray[Any, Any] | None = field(init=False)
    outputs: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        classes = self.info.get("classes")
        self.classes = isolated_worker.decode(classes) if classes else None
        self.outputs = tuple(self.info.get("outputs") or ("predict",))

    @classmethod
    def load(
        cls, worker: Worker, path: Path, sha256: str, name: str, version: str
    ) -> IsolatedModel:
        try:
            answer = worker.call({"op": "load", "path": str(path), "sha256": sha256})
        except WorkerCallError as exc:
            raise IsolationError(f"cannot load {path} in the isolated environment: {exc}") from None
        return cls(worker, name, version, sha256, dict(answer["info"]))

    @property
    def is_classifier(self) -> bool:
        return self.classes is not None

    @property
    def estimator_name(self) -> str:
        return str(self.info.get("estimator"))

    @property
    def final_step_name(self) -> str:
        return str(self.info.get("finalStep"))

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.info.get("warnings") or []]

    @property
    def feature_names(self) -> list[str] | None:
        names = self.info.get("featureNames")
        return [str(n) for n in names] if names is not None else None

    @property
    def n_features(self) -> int | None:
        n = self.info.get("nFeatures")
        return int(n) if n is not None else None

    def check_outputs(self, requested: tuple[str, ...]) -> tuple[str, ...]:
        if not requested:
            return ("predict",)
        for name in requested:
            if name not in self.outputs:
                raise ValueError(
                    f"unknown output {name!r}: model {self.name!r} has outputs {list(self.outputs)}"
                )
        return requested

    def predict(self, x: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray[Any, Any]]:
        """The named outputs for the rows of ``x``, computed in the worker."""
        answer = self.worker.call(
            {"op": "predict", "outputs": list(outputs), "input": encode_input(x)}
        )
        return {name: isolated_worker.decode(v) for name, v in answer["outputs"].items()}


def load_isolated(
    path: Path,
    sha256: str,
    name: str,
    version: str,
    requirements: Requirements,
    isolation: Isolation,
    log: Callable[[str], None],
) -> IsolatedModel:
    """Build (or reuse) the environment, start its worker and load the artifact there."""
    environment = ensure_environment(requirements, isolation, log)
    worker = Worker(environment)
    try:
        return IsolatedModel.load(worker, path, sha256, name, version)
    except BaseException:
        worker.close()
        raise


def stderr_log(message: str, out: IO[str] | None = None) -> None:
    print(message, file=out or sys.stderr, flush=True)
