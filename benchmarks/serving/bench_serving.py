"""Serving benchmark: mlmodel-serve against KServe, MLServer, plain FastAPI and two floors.

One command runs it all (`make bench`, or `python benchmarks/run.py serving`):

1. trains the models (LogisticRegression on iris; a 100-tree RandomForest on 20
   features from make_classification; the churn Pipeline of numeric and text columns,
   fitted on a DataFrame), with fixed seeds, and saves them with joblib;
2. builds (once, cached) a venv per anchor with pinned versions, and for `ours-before`
   a git worktree of --before-ref (removed at the end);
3. per model, starts every server on 127.0.0.1 with one worker process, one at a time,
   timing process start -> first correct prediction (cold start);
4. drives them with wrk at each concurrency x batch size, round-robin over servers per
   configuration, each run preceded by a warm-up;
5. writes JSON to benchmarks/results/serving-<date>.json and prints markdown tables.

Every process started here is stopped in a `finally`, and every wait is bounded.
Every server must answer the in-process predictions before it is timed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.serving import anchors, paired, report
from benchmarks.serving.procs import LOOPBACK, Server, free_port, http

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SERVERS_DIR = HERE / "servers"
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
README_BEGIN = "<!-- serving-results:begin -->"
README_END = "<!-- serving-results:end -->"

ALL_SERVERS = (
    "ours",
    "ours-batching",
    "ours-sklearn",
    "ours-before",
    "kserve",
    "mlserver",
    "mlserver-2proc",
    "mlserver-batching",
    "mlserver-batching-2proc",
    "fastapi",
    "hello",
    "hello-raw",
)
# ours-sklearn: batching off and leaf tables off, so a forest is predicted by
# scikit-learn's own predict, the same computation as the in-process floor.
OURS = ("ours", "ours-batching", "ours-sklearn")
# ours-before: `ours` (batching off) as it was at --before-ref, from a git worktree.
BEFORE = "ours-before"
DEFAULT_BEFORE_REF = "06e5586^"  # the last commit before the tabular (DataFrame) work
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
COLD_START_TIMEOUT_S = 180.0
INPROCESS = "in-process"
MODELS = ("iris", "forest", "churn")
DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Request:
    """One inference request as a server is sent it: where, what and with which headers."""

    path: str
    body: bytes
    content_type: str = "application/json"

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type}


# How each server is asked, per kind of model. Numeric models: every server gets the same
# V2 body, one FP64 tensor of shape [rows, features]. The tabular (DataFrame) model: each
# server the way its own documentation asks for a DataFrame (see TabularCase.request).
NUMERIC = "numeric"
TABULAR = "tabular"
# Servers that cannot take a tabular request at all: the plain FastAPI endpoint reads one
# FP64 tensor, and ours-before predates named per-column tensors.
NUMERIC_ONLY = ("fastapi", "ours-before")
# Rows every server must predict right before it is timed, whatever --batch is: enough rows
# that a server decoding a column wrongly (text as bytes, columns out of order) answers
# something else for some of them.
VERIFY_ROWS = 100


@dataclass(frozen=True)
class ModelCase:
    """A trained model saved to disk, and the rows requests are made of."""

    name: str
    description: str
    path: Path
    sha256: str
    rows: Any  # numpy array of request rows (a DataFrame for a tabular model)
    model: Any
    kind: str = NUMERIC

    def batch(self, size: int) -> Any:
        reps = -(-size // len(self.rows))
        if self.kind == TABULAR:
            import pandas as pd

            return pd.concat([self.rows] * reps, ignore_index=True).iloc[:size]
        import numpy as np

        return np.concatenate([self.rows] * reps)[:size]

    def serves(self, server: str) -> bool:
        return not (self.kind == TABULAR and server in NUMERIC_ONLY)

    def v2_body(self, size: int) -> bytes:
        """Numeric: one FP64 tensor [rows, features]. Tabular: one tensor per column."""
        x = self.batch(size)
        if self.kind == TABULAR:
            doc = {"inputs": v2_columns(x)}
        else:
            doc = {
                "inputs": [
                    {
                        "name": "input-0",
                        "shape": list(x.shape),
                        "datatype": "FP64",
                        "data": [float(v) for v in x.ravel()],
                    }
                ]
            }
        return json.dumps(doc, separators=(",", ":")).encode()

    def request(self, server: str, size: int) -> Request:
        """What `server` is sent for `size` rows.

        Tabular: ours, the V2 per-column tensors; MLServer, the same with its pandas codec
        named (request ``parameters.content_type: "pd"``, its documented way to get a
        DataFrame); kserve, V1 rows as objects. KServe 0.21 makes a DataFrame of each V1
        instance, and one of scalars fails ("If using all scalar values, you must pass an
        index"), so the rows go as one instance, a list of row objects
        (``{"instances": [[{column: value}, ...]]}``): one DataFrame of every row. KServe's
        V2 DataFrame path cannot answer string labels (see :meth:`kserve_probes`). The
        floors get ours.
        """
        v2 = f"/v2/models/{self.name}/infer"
        if self.kind != TABULAR:
            return Request(v2, self.v2_body(size))
        x = self.batch(size)
        if server.startswith("mlserver"):
            return self.v2_pandas(size)
        if server == "kserve":
            body = json.dumps({"instances": [self.object_rows(x)]}, separators=(",", ":"))
            return Request(f"/v1/models/{self.name}:predict", body.encode())
        return Request(v2, self.v2_body(size))

    def v2_pandas(self, size: int) -> Request:
        """V2 per-column tensors with the request's ``content_type: "pd"``."""
        doc = {"parameters": {"content_type": "pd"}, "inputs": v2_columns(self.batch(size))}
        body = json.dumps(doc, separators=(",", ":")).encode()
        return Request(f"/v2/models/{self.name}/infer", body)

    def kserve_probes(self, size: int) -> dict[str, Request]:
        """Ways of asking KServe 0.21 for a DataFrame that it answers wrongly or not at all.

        Sent once and recorded (not timed), so each run shows whether they still fail:
        V1 rows as objects, one instance per row (KServe builds a DataFrame of each
        instance's scalars: ValueError); V2 columns with ``content_type: "pd"`` (read
        into a DataFrame, but ``get_predict_response`` cannot encode string labels:
        TypeError).
        """
        rows = json.dumps({"instances": self.object_rows(self.batch(size))}, separators=(",", ":"))
        return {
            "v1_one_object_per_instance": Request(f"/v1/models/{self.name}:predict", rows.encode()),
            "v2_content_type_pd": self.v2_pandas(size),
        }

    def object_rows(self, x: Any) -> list[dict[str, Any]]:
        numeric = self.numeric_columns()
        return [
            {k: (float(v) if k in numeric else str(v)) for k, v in r.items()}
            for r in x.to_dict("records")
        ]

    def numeric_columns(self) -> tuple[str, ...]:
        return tuple(str(c) for c, t in self.rows.dtypes.items() if t.kind == "f")

    def expected(self, size: int) -> list[Any]:
        """The model's own predictions in this process: floats, or strings for text labels."""
        return [v if isinstance(v, str) else float(v) for v in self.model.predict(self.batch(size))]


def v2_columns(frame: Any) -> list[dict[str, Any]]:
    """One V2 tensor per DataFrame column: FP64 for numbers, BYTES (strings) for text."""
    out = []
    for column, dtype in frame.dtypes.items():
        numeric = dtype.kind == "f"
        values = frame[column].tolist()
        out.append(
            {
                "name": str(column),
                "shape": [len(frame)],
                "datatype": "FP64" if numeric else "BYTES",
                "data": [float(v) for v in values] if numeric else [str(v) for v in values],
            }
        )
    return out


def train_models(
    workdir: Path, names: Sequence[str] = ("iris", "forest", "churn")
) -> list[ModelCase]:
    import joblib
    from sklearn.datasets import load_iris, make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    trained: list[tuple[str, str, Any, Any, str]] = []
    if "iris" in names:
        xi, yi = load_iris(return_X_y=True)
        small = LogisticRegression(max_iter=1000, random_state=0).fit(xi, yi)
        trained.append(("iris", "LogisticRegression on iris (4 features)", small, xi, NUMERIC))
    if "forest" in names:
        xf, yf = make_classification(
            n_samples=2000, n_features=20, n_informative=10, random_state=0
        )
        medium = RandomForestClassifier(n_estimators=100, random_state=0).fit(xf, yf)
        trained.append(
            ("forest", "RandomForest, 100 trees, 20 features", medium, xf[:200], NUMERIC)
        )
    if "churn" in names:
        trained.append(churn_case())
    cases = []
    for name, desc, model, rows, kind in trained:
        path = workdir / "models" / name / "model.joblib"
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        # Serve and time exactly what is on disk.
        loaded = joblib.load(path)
        cases.append(ModelCase(name, desc, path, digest, rows, loaded, kind))
    return cases


def churn_case() -> tuple[str, str, Any, Any, str]:
    """The mixed-type churn Pipeline ("onehot") and 200 complete rows to send it.

    Rows with a missing value are left out: JSON has no NaN, and each server spells a
    missing value its own way (or not at all), so every server gets the same complete rows.
    """
    from mlmodel_operator.example_models import CHURN_TEXT, churn_frame, fit_churn_pipeline

    model = fit_churn_pipeline("onehot")
    frame, _ = churn_frame(300, seed=5)
    rows = frame.dropna().reset_index(drop=True).iloc[:200]
    # The correctness check must be able to tell a server that mangles the text columns:
    # with every text value unknown, some of the verified rows must change their label.
    head = rows.iloc[:VERIFY_ROWS]
    blank = head.copy()
    for column in CHURN_TEXT:
        blank[column] = "?"
    if (model.predict(blank) == model.predict(head)).all():
        raise RuntimeError("churn rows cannot tell a server that ignores the text columns")
    desc = (
        "churn Pipeline: ColumnTransformer (impute + StandardScaler on 3 numeric columns,"
        " impute + OneHotEncoder on 3 text columns) + LogisticRegression, string labels"
    )
    return "churn", desc, model, rows, TABULAR


def inprocess_predict_ms(
    case: ModelCase,
    size: int,
    budget_s: float = 2.0,
    predict: Callable[[Any], Any] | None = None,
) -> dict[str, float]:
    """Median and mean time of `predict` (the model's, or the one given) on the same batch."""
    call = predict or case.model.predict
    x = case.batch(size)
    for _ in range(5):
        call(x)
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while (time.perf_counter() < end and len(times) < 5000) or len(times) < 20:
        t0 = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {
        "median_ms": statistics.median(times),
        "mean_ms": statistics.fmean(times),
        "n": len(times),
    }


def tables_predict(case: ModelCase) -> Callable[[Any], Any] | None:
    """The leaf-table predict ``mlmodel-serve`` runs for this model, or None (not a forest)."""
    from mlmodel_serving.model import PATH_LEAF_TABLES, PREDICT, SklearnModel

    model = SklearnModel(case.model, case.name, "1", case.sha256)
    model.use_leaf_tables()
    if model.predict_path != PATH_LEAF_TABLES:
        return None
    return lambda x: model.predict(x, (PREDICT,))[PREDICT]


def prediction_checker(expected: list[Any]) -> Callable[[bytes], bool]:
    """True when a V2 response (or a V1 one) carries exactly the expected predictions.

    Numbers compare as floats, text labels as strings: ``"churn"`` must come back as
    ``"churn"``, not as bytes or a number.
    """
    text = bool(expected) and isinstance(expected[0], str)

    def same(data: Any) -> bool:
        if not isinstance(data, list) or len(data) != len(expected):
            return False
        if text:
            return data == expected
        return [float(v) for v in data] == expected

    def check(body: bytes) -> bool:
        try:
            doc = json.loads(body)
            if "predictions" in doc:  # KServe V1
                return same(doc["predictions"])
            return any(same(out.get("data")) for out in doc.get("outputs", []))
        except (ValueError, TypeError, AttributeError):
            return False

    return check


def accept_any(body: bytes) -> bool:
    return True


# ---------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    concurrency: tuple[int, ...]
    batches: tuple[int, ...]
    models: tuple[str, ...]
    servers: tuple[str, ...]
    rounds: int
    ours_bin: Path
    venv_cache: Path
    max_batch_size: int
    max_batch_latency_ms: float
    mlserver_max_batch_size: int
    update_readme: bool
    keep_workdir: bool
    from_json: Path | None
    nice: int
    before_ref: str = DEFAULT_BEFORE_REF


def ours_command(
    ours_bin: Path,
    case: ModelCase,
    port: int,
    cache_dir: Path,
    *,
    batching: tuple[int, float] | None,
    leaf_tables: bool = True,
    grpc_port: int | None = None,
) -> list[str]:
    """mlmodel-serve's command line for one model; batching None turns it off.

    ``grpc_port`` None passes no ``--grpc-port`` (a server from before gRPC has no such
    flag); every other server gets a port of its own, or 0 for none: the default, 8081,
    would be taken by the first of several servers running side by side.
    """
    argv = [
        str(ours_bin),
        "--model-name",
        case.name,
        "--model-version",
        "1",
        "--artifact-uri",
        str(case.path),
        "--artifact-sha256",
        case.sha256,
        "--cache-dir",
        str(cache_dir),
        "--host",
        LOOPBACK,
        "--port",
        str(port),
    ]
    if grpc_port is not None:
        argv += ["--grpc-port", str(grpc_port)]
    if batching is None:
        argv += ["--max-batch-size", "0", "--max-batch-latency-ms", "0"]
    else:
        argv += ["--max-batch-size", str(batching[0]), "--max-batch-latency-ms", f"{batching[1]:g}"]
    if not leaf_tables:
        argv += ["--leaf-tables", "false"]
    return argv


def start_ours_beside(
    name: str,
    case: ModelCase,
    request: Request,
    ours_bin: Path,
    workdir: Path,
    env: Mapping[str, str],
    live: dict[str, Server],
    *,
    batching: tuple[int, float] | None,
    version: str = "1",
) -> float:
    """Start mlmodel-serve ``name`` on ``case`` beside others (no gRPC; it runs in
    ``workdir/run/<model>-<name>``, logs to ``workdir/logs/<model>-<name>.log``) and wait
    for its first correct answer to ``request``; returns the seconds that took.

    The server is in ``live[name]`` from its start, so the caller's cleanup that stops
    ``live`` stops it too when it never answers (RuntimeError).
    """
    cwd = workdir / "run" / f"{case.name}-{name}"
    port = free_port()
    argv = ours_command(ours_bin, case, port, cwd / "cache", batching=batching, grpc_port=0)
    argv[argv.index("--model-version") + 1] = version
    log = workdir / "logs" / f"{case.name}-{name}.log"
    srv = Server(name, argv, port, request.path, env, cwd, log, metrics_path="/metrics")
    srv.log_path.parent.mkdir(parents=True, exist_ok=True)
    srv.start()
    live[name] = srv
    return srv.wait_first_prediction(
        request.body,
        prediction_checker(case.expected(1)),
        COLD_START_TIMEOUT_S,
        headers=request.headers,
    )


def ours_has_grpc(ours_bin: Path) -> bool:
    """Whether this mlmodel-serve knows ``--grpc-port`` (it serves gRPC, on 8081 by default)."""
    try:
        proc = subprocess.run(
            [str(ours_bin), "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--grpc-port" in proc.stdout


def build_server(
    name: str,
    case: ModelCase,
    opts: Options,
    venvs: dict[str, Path],
    workdir: Path,
    before_src: Path | None = None,
) -> Server:
    """The command, environment and probe paths for one server on one model."""
    port = free_port()
    env = dict(os.environ)
    cwd = workdir / "run" / f"{case.name}-{name}"
    cwd.mkdir(parents=True, exist_ok=True)
    log = workdir / "logs" / f"{case.name}-{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    infer = case.request(name, 1).path
    if name in OURS:
        # gRPC on, on a port of its own, as shipped (it idles: every request here is HTTP).
        grpc = free_port() if ours_has_grpc(opts.ours_bin) else None
        batching = (
            (opts.max_batch_size, opts.max_batch_latency_ms) if name == "ours-batching" else None
        )
        argv = ours_command(
            opts.ours_bin,
            case,
            port,
            cwd / "cache",
            batching=batching,
            leaf_tables=name != "ours-sklearn",
            grpc_port=grpc,
        )
        return Server(name, argv, port, infer, env, cwd, log, metrics_path="/metrics")
    if name == BEFORE:
        # mlmodel-serve as it was at --before-ref, from a git worktree, under the same venv
        # (so the same numpy, scikit-learn and uvloop): only the server's own code differs.
        if before_src is None:
            raise ValueError("ours-before needs the worktree of --before-ref")
        argv = ours_command(
            venv_python(opts.ours_bin), case, port, cwd / "cache", batching=None, grpc_port=None
        )
        argv[1:1] = ["-m", "mlmodel_serving.cli"]
        env["PYTHONPATH"] = str(before_src / "serving")
        return Server(name, argv, port, infer, env, cwd, log, metrics_path="/metrics")
    if name == "kserve":
        py = venvs["kserve"] / "bin" / "python"
        argv = [
            str(py),
            str(SERVERS_DIR / "kserve_server.py"),
            "--model_name",
            case.name,
            "--artifact",
            str(case.path),
            "--http_port",
            str(port),
            "--grpc_port",
            str(free_port()),
            "--enable_grpc",
            "false",
            "--workers",
            "1",
            "--enable_latency_logging",
            "false",
        ]
        return Server(name, argv, port, infer, env, cwd, log)
    if name.startswith("mlserver"):
        # "-2proc": MLServer's default parallel_workers=1, inference in a second process
        # beside the HTTP one; without it, everything in the one server process.
        settings = {
            "debug": False,
            "host": LOOPBACK,
            "http_port": port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 1 if name.endswith("-2proc") else 0,
            "metrics_dir": str(cwd / ".metrics"),
            "environments_dir": str(cwd / ".envs"),
        }
        model_settings: dict[str, Any] = {
            "name": case.name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(case.path)},
        }
        if "-batching" in name:
            model_settings["max_batch_size"] = opts.mlserver_max_batch_size
            model_settings["max_batch_time"] = opts.max_batch_latency_ms / 1000.0
        repo = cwd / "repo"
        (repo / case.name).mkdir(parents=True, exist_ok=True)
        (repo / "settings.json").write_text(json.dumps(settings, indent=2))
        (repo / case.name / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        argv = [str(venvs["mlserver"] / "bin" / "mlserver"), "start", str(repo)]
        return Server(name, argv, port, infer, env, cwd, log)
    if name == "fastapi":
        py = venvs["fastapi"] / "bin" / "python"
        argv = [
            str(py),
            str(SERVERS_DIR / "fastapi_server.py"),
            "--artifact",
            str(case.path),
            "--model-name",
            case.name,
            "--port",
            str(port),
        ]
        return Server(name, argv, port, infer, env, cwd, log)
    if name in ("hello", "hello-raw"):
        py = venvs["fastapi"] / "bin" / "python"
        script = "hello_server.py" if name == "hello" else "hello_raw_server.py"
        argv = [str(py), str(SERVERS_DIR / script), "--port", str(port)]
        return Server(name, argv, port, infer, env, cwd, log)
    raise ValueError(f"unknown server {name!r}; known: {', '.join(ALL_SERVERS)}")


def venv_python(ours_bin: Path) -> Path:
    """The interpreter beside mlmodel-serve (the project's venv), or this one."""
    py = ours_bin.parent / "python"
    return py if py.exists() else Path(sys.executable)


def add_before_worktree(ref: str, workdir: Path, python: Path) -> tuple[Path, str]:
    """Check `ref` out, detached, into a git worktree under `workdir`; (path, commit).

    Also checks that the venv's interpreter, with ``PYTHONPATH=<worktree>/serving``,
    imports mlmodel_serving from the worktree and not the project's editable install.
    Remove it with :func:`remove_worktree`.
    """
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run(
        [*git, "rev-parse", "--verify", f"{ref}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if commit.returncode != 0:
        raise RuntimeError(f"--before-ref {ref!r} is not a commit: {commit.stderr.strip()}")
    sha = commit.stdout.strip()
    path = workdir / "before-src"
    proc = subprocess.run(
        [*git, "worktree", "add", "--detach", str(path), sha],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git worktree add {path} {sha} failed: {proc.stderr.strip()}")
    probe = subprocess.run(
        [str(python), "-c", "import mlmodel_serving; print(mlmodel_serving.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(path / "serving")),
        check=False,
        cwd=path,
    )
    where = probe.stdout.strip()
    if probe.returncode != 0 or not where.startswith(str(path)):
        remove_worktree(path)
        raise RuntimeError(
            f"{python} with PYTHONPATH={path / 'serving'} imports mlmodel_serving from"
            f" {where or probe.stderr.strip()!r}, not from the worktree"
        )
    return path, sha


def remove_worktree(path: Path) -> None:
    """Remove a worktree made by :func:`add_before_worktree` (only that one)."""
    proc = subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        print(
            f"# could not remove the worktree {path}: {proc.stderr.strip()}; remove it with"
            f" `git worktree remove --force {path}`",
            file=sys.stderr,
        )


def needed_venvs(servers: Sequence[str]) -> list[str]:
    need = []
    for s in servers:
        v = (
            "mlserver"
            if s.startswith("mlserver")
            else "kserve"
            if s == "kserve"
            else "fastapi"
            if s in ("fastapi", "hello", "hello-raw")
            else None
        )
        if v and v not in need:
            need.append(v)
    return need


# ---------------------------------------------------------------------------- wrk


def ensure_wrk() -> str:
    """Path to wrk, installing Debian's package first if it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is not installed; run `sudo apt-get install -y wrk` and try again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "install", "-y", "-q", "wrk"],
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "wrk"],
    ):
        subprocess.run(cmd, env=env, timeout=600, check=False, stdout=subprocess.DEVNULL)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("could not install wrk with apt-get: `apt-get install -y wrk` failed")


def run_wrk(
    wrk: str, url: str, script: Path, concurrency: int, duration_s: int
) -> tuple[report.WrkResult | None, str]:
    if not url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"wrk only ever targets {LOOPBACK}: {url}")
    cmd = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{duration_s}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + 30, check=False
        )
    except subprocess.TimeoutExpired:
        return None, "wrk timed out"
    out = proc.stdout + proc.stderr
    try:
        return report.parse_wrk(out), out
    except ValueError as exc:
        return None, f"{exc}\n{out}"


# ---------------------------------------------------------------------------- main run


def machine_info() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "blas_env": {k: os.environ.get(k) for k in BLAS_ENV},
    }


def anchor_versions(venvs: dict[str, Path]) -> dict[str, str]:
    pkgs = {
        "kserve": ["kserve", "fastapi", "uvicorn", "pandas"],
        "mlserver": ["mlserver", "mlserver-sklearn", "fastapi", "uvicorn", "pandas"],
        "fastapi": ["fastapi", "uvicorn", "pydantic"],
    }
    out: dict[str, str] = {}
    for venv_name, path in venvs.items():
        code = (
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
        )
        proc = subprocess.run(
            [str(path / "bin" / "python"), "-c", code, *pkgs[venv_name]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 0:
            for k, v in json.loads(proc.stdout).items():
                out[f"{venv_name}:{k}"] = v
    return out


def run(opts: Options, argv_text: str) -> dict[str, Any]:
    wrk = ensure_wrk()
    if opts.nice:
        # Children inherit it: every server, wrk and the in-process floor alike.
        os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-"))
    print(f"# work directory {workdir}", file=sys.stderr)
    results: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": argv_text,
        "machine": machine_info(),
        "settings": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "concurrency": list(opts.concurrency),
            "batches": list(opts.batches),
            "rounds": opts.rounds,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
            "wrk": subprocess.run(
                [wrk, "-v"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.splitlines()[:1],
            "batching": {
                "max_batch_size": opts.max_batch_size,
                "max_batch_latency_ms": opts.max_batch_latency_ms,
                "mlserver_max_batch_size": opts.mlserver_max_batch_size,
                "applies_to": ["ours-batching", "mlserver-batching", "mlserver-batching-2proc"],
            },
        },
        "install_failures": {},
        "models": {},
        "runs": [],
    }
    pins = anchors.ml_pins()
    results["ml_pins"] = pins
    venvs: dict[str, Path] = {}
    servers = list(opts.servers)
    for vname in needed_venvs(servers):
        t0 = time.monotonic()
        print(f"# venv {vname} ...", file=sys.stderr)
        try:
            venvs[vname] = anchors.ensure_venv(
                anchors.ANCHORS[vname], opts.venv_cache, pins, workdir / f"pip-{vname}.log"
            )
            print(f"#   {venvs[vname]} ({time.monotonic() - t0:.0f}s)", file=sys.stderr)
        except anchors.AnchorInstallError as exc:
            print(f"# could not install {vname}: {exc}", file=sys.stderr)
            results["install_failures"][vname] = str(exc)
    servers = [s for s in servers if not (set(needed_venvs([s])) - set(venvs))]
    if any(s in OURS for s in servers) and not opts.ours_bin.exists():
        print(f"# {opts.ours_bin} does not exist: skipping ours", file=sys.stderr)
        results["install_failures"]["ours"] = f"{opts.ours_bin} not found"
        servers = [s for s in servers if s not in OURS]
    results["versions"] = anchor_versions(venvs)
    with contextlib.suppress(ImportError):
        import pandas

        results["versions"]["ours:pandas"] = pandas.__version__
    before_src: Path | None = None
    if BEFORE in servers:
        try:
            before_src, sha = add_before_worktree(
                opts.before_ref, workdir, venv_python(opts.ours_bin)
            )
            results["settings"]["before"] = {"ref": opts.before_ref, "commit": sha}
            print(f"# {BEFORE}: {opts.before_ref} = {sha[:12]} in {before_src}", file=sys.stderr)
        except RuntimeError as exc:
            print(f"# skipping {BEFORE}: {exc}", file=sys.stderr)
            results["install_failures"][BEFORE] = str(exc)
            servers = [s for s in servers if s != BEFORE]
    results["servers"] = servers

    try:
        cases = [c for c in train_models(workdir, opts.models) if c.name in opts.models]
        for case in cases:
            results["models"][case.name] = bench_model(
                case,
                [s for s in servers if case.serves(s)],
                opts,
                venvs,
                workdir,
                wrk,
                results["runs"],
                before_src,
            )
    finally:
        if before_src is not None:
            remove_worktree(before_src)
        if not opts.keep_workdir:
            shutil.rmtree(workdir / "run", ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def bench_model(
    case: ModelCase,
    servers: list[str],
    opts: Options,
    venvs: dict[str, Path],
    workdir: Path,
    wrk: str,
    runs: list[dict[str, Any]],
    before_src: Path | None = None,
) -> dict[str, Any]:
    print(f"# model {case.name}: {case.description}", file=sys.stderr)
    info: dict[str, Any] = {
        "description": case.description,
        "kind": case.kind,
        "sha256": case.sha256,
        "requests": {
            name: {
                "path": case.request(name, 1).path,
                "body_b1": case.request(name, 1).body[:600].decode(),
            }
            for name in servers
        },
        "inprocess": {str(b): inprocess_predict_ms(case, b) for b in opts.batches},
        "servers": {},
    }
    tables = tables_predict(case)
    if tables is not None:
        info["inprocess_tables"] = {
            str(b): inprocess_predict_ms(case, b, predict=tables) for b in opts.batches
        }
    live: dict[str, Server] = {}
    scripts: dict[tuple[str, int], Path] = {}
    for name in servers:
        for b in opts.batches:
            req = case.request(name, b)
            script = workdir / f"{case.name}-{name}-b{b}.lua"
            script.write_text(report.wrk_lua_script(req.body.decode(), req.content_type))
            scripts[name, b] = script
    try:
        # Cold start: one server at a time, so they do not compete for the CPU.
        for name in servers:
            srv = build_server(name, case, opts, venvs, workdir, before_src)
            check = accept_any if name in report.FLOORS else prediction_checker(case.expected(1))
            srv.start()
            live[name] = srv
            first = case.request(name, 1)
            try:
                cold = srv.wait_first_prediction(
                    first.body, check, COLD_START_TIMEOUT_S, headers=first.headers
                )
            except RuntimeError as exc:
                print(f"# {name} failed to serve {case.name}: {exc}", file=sys.stderr)
                info["servers"][name] = {"error": str(exc)}
                srv.stop()
                del live[name]
                continue
            info["servers"][name] = {"cold_start_s": round(cold, 3), "log": str(srv.log_path)}
            print(f"#   {name}: first prediction {cold:.2f}s after start", file=sys.stderr)
            # Larger batches must be right too before we time them, and VERIFY_ROWS rows
            # (whatever --batch is) against the in-process predict of the same rows.
            for b in sorted({*opts.batches, VERIFY_ROWS}):
                if name in report.FLOORS:
                    break
                req = case.request(name, b)
                status, out = http("POST", srv.url, req.body, timeout=30, headers=req.headers)
                if status != 200 or not prediction_checker(case.expected(b))(out):
                    raise RuntimeError(f"{name} answered batch {b} wrongly: {status} {out[:300]!r}")
            info["servers"][name]["verified_rows"] = sorted({*opts.batches, VERIFY_ROWS})
            if name == "kserve" and case.kind == TABULAR:
                # Recorded, not timed: the ways KServe 0.21 does not answer this model.
                probes = info["servers"][name]["probes"] = {}
                for label, req in case.kserve_probes(2).items():
                    url = f"http://{LOOPBACK}:{srv.port}{req.path}"
                    status, out = http("POST", url, req.body, timeout=30, headers=req.headers)
                    probes[label] = {
                        "path": req.path,
                        "status": status,
                        "right": status == 200 and prediction_checker(case.expected(2))(out),
                        "answer": out[:300].decode(errors="replace"),
                    }

        configs = [(c, b) for c in opts.concurrency for b in opts.batches]
        order = [s for s in servers if s in live]
        if not order:
            raise RuntimeError(f"no server could serve {case.name}; see the logs above")
        # The in-process floor takes its turn in the rotation too, so it is timed under
        # the same background load as the servers around it.
        order.append(INPROCESS)
        for rnd in range(opts.rounds):
            for i, (conc, b) in enumerate(configs):
                shift = (i + rnd) % len(order)
                for name in order[shift:] + order[:shift]:
                    if name == INPROCESS:
                        t = inprocess_predict_ms(case, b, budget_s=min(3.0, opts.duration_s))
                        runs.append(
                            {
                                "model": case.name,
                                "server": INPROCESS,
                                "concurrency": conc,
                                "batch": b,
                                "round": rnd,
                                "rps": 1000.0 / t["median_ms"],
                                **t,
                            }
                        )
                        continue
                    srv = live[name]
                    if not srv.alive():
                        continue
                    run_wrk(wrk, srv.url, scripts[name, b], conc, opts.warmup_s)
                    drain(srv, case)
                    before = scrape_batch(srv) if name == "ours-batching" else None
                    load0 = os.getloadavg()[0]
                    res, text = run_wrk(wrk, srv.url, scripts[name, b], conc, opts.duration_s)
                    after = scrape_batch(srv) if name == "ours-batching" else None
                    drain(srv, case)
                    entry: dict[str, Any] = {
                        "model": case.name,
                        "server": name,
                        "concurrency": conc,
                        "batch": b,
                        "round": rnd,
                        "loadavg1": load0,
                    }
                    if res is None:
                        entry["failed"] = text[-2000:]
                        print(
                            f"#   {name} c={conc} b={b}: wrk failed: {text[:200]}", file=sys.stderr
                        )
                    else:
                        entry.update(res.to_dict())
                        if before and after and after[1] > before[1]:
                            entry["mean_batch_rows"] = (after[0] - before[0]) / (
                                after[1] - before[1]
                            )
                        print(
                            f"#   {case.name} c={conc} b={b} {name:18s} {res.rps:9.1f} req/s"
                            f" p50 {res.p50_ms:8.2f} ms p99 {res.p99_ms:8.2f} ms errors {res.errors}",
                            file=sys.stderr,
                        )
                    runs.append(entry)
        info["paired"] = {}
        # hello-raw too: the bare HTTP round trip under the same rhythm (a server that
        # idled through an in-process predict answers slower than a busy one: on this VM
        # a wake-up from idle costs ~0.3 ms), the floor of the overhead.
        for name in (*OURS, BEFORE, "hello-raw"):
            srv = live.get(name)
            if srv is None or not srv.alive():
                continue
            for b in opts.batches:
                before = scrape_server_side(srv)
                try:
                    p = paired.paired_overhead(
                        case.model,
                        case.batch(b),
                        srv.port,
                        srv.infer_path,
                        case.request(name, b).body,
                        budget_s=opts.duration_s * 1.5,
                        tables=tables,
                    )
                except (OSError, RuntimeError) as exc:  # keep the grid's results
                    print(f"#   {name} b={b}: paired run failed: {exc}", file=sys.stderr)
                    continue
                after = scrape_server_side(srv)
                if before is not None and after is not None and after[1] > before[1]:
                    # The server's own clock: from request read to answer, and in predict.
                    p["in_server_request_ms"] = (
                        1000.0 * (after[0] - before[0]) / (after[1] - before[1])
                    )
                    p["in_server_predict_ms"] = (
                        1000.0 * (after[2] - before[2]) / (after[3] - before[3])
                    )
                info["paired"].setdefault(name, {})[str(b)] = p
                print(
                    f"#   {case.name} c=1 b={b} {name:18s} paired: predict"
                    f" {p['inprocess_server_filters_ms']:.3f} ms, request {p['server_ms']:.3f} ms,"
                    f" overhead {p['overhead_ms']:.3f} ms ({p['overhead_fraction'] * 100:.0f}%)"
                    + (
                        f", leaf tables {p['inprocess_tables_ms']:.3f} ms"
                        if "inprocess_tables_ms" in p
                        else ""
                    ),
                    file=sys.stderr,
                )
        for name, srv in live.items():
            info["servers"][name]["rss_mb_after_load"] = round(srv.rss_mb(), 1)
    finally:
        for srv in live.values():
            srv.stop()
    return info


def drain(srv: Server, case: ModelCase) -> None:
    """Wait until the server has worked off what wrk left in flight.

    wrk stops with up to `concurrency` requests still queued in the server; one more
    request waits behind them, so the next run (of this server or another) does not
    share the CPU with the last run's backlog.
    """
    req = case.request(srv.name, 1)
    with contextlib.suppress(OSError):
        http("POST", srv.url, req.body, timeout=DRAIN_TIMEOUT_S, headers=req.headers)


def scrape_server_side(srv: Server) -> tuple[float, float, float, float] | None:
    """(request seconds sum, count, predict seconds sum, count) of ours' inference route."""
    try:
        text = srv.scrape_metrics()
        request = report.histogram_sum_count(text, "request_duration", "/infer")
        predict = report.histogram_sum_count(text, "predict_duration")
    except (ValueError, RuntimeError, OSError):
        return None
    return (*request, *predict)


def scrape_batch(srv: Server) -> tuple[float, float] | None:
    try:
        return report.histogram_sum_count(srv.scrape_metrics(), "batch_size")
    except (ValueError, RuntimeError, OSError):
        return None


# ---------------------------------------------------------------------------- output


def median_runs(runs: list[dict[str, Any]]) -> dict[tuple[str, int, int, str], dict[str, Any]]:
    """One run per (model, concurrency, batch, server): the median by req/s over rounds."""
    grouped: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        if "rps" in r:
            grouped.setdefault((r["model"], r["concurrency"], r["batch"], r["server"]), []).append(
                r
            )
    out = {}
    for key, rs in grouped.items():
        rs = sorted(rs, key=lambda r: r["rps"])
        out[key] = rs[len(rs) // 2]
    return out


def inprocess_ms(
    results: dict[str, Any],
    runs: dict[tuple[str, int, int, str], dict[str, Any]],
    model: str,
    conc: int,
    batch: int,
) -> float:
    """In-process predict time for a configuration: timed in its rotation when it was."""
    r = runs.get((model, conc, batch, INPROCESS))
    if r is not None:
        return float(r["median_ms"])
    return float(results["models"][model]["inprocess"][str(batch)]["median_ms"])


def load_range(results: dict[str, Any]) -> str:
    loads = sorted(r["loadavg1"] for r in results["runs"] if "loadavg1" in r)
    if not loads:
        return "-"
    return f"min {loads[0]:.2f}, median {statistics.median(loads):.2f}, max {loads[-1]:.2f}"


def render_markdown(results: dict[str, Any]) -> str:
    runs = median_runs(results["runs"])
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"### Serving benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']};"
        f" load average at start {m['loadavg_start'][0]:.2f}, at end {m['loadavg_end'][0]:.2f}  ",
        f"Load average (1 min) at the start of each measured run: {load_range(results)}"
        " (2 cores: above ~1 means other work shared the machine)  ",
        f"wrk: 1 thread, {s['duration_s']} s per run after a {s['warmup_s']} s warm-up,"
        f" {s['rounds']} round(s), servers interleaved per configuration,"
        f" niceness {s.get('niceness', 0)} for all  ",
        f"Versions: {', '.join(f'{k} {v}' for k, v in sorted(results.get('versions', {}).items()))};"
        f" models {', '.join(f'{k} {v}' for k, v in results['ml_pins'].items())}  ",
        f"BLAS environment: {', '.join(f'{k}={v}' for k, v in m['blas_env'].items() if v) or 'none set'}",
        "",
    ]
    if results.get("install_failures"):
        lines.append(
            "Could not run: "
            + "; ".join(f"{k}: {v.splitlines()[0]}" for k, v in results["install_failures"].items())
        )
        lines.append("")
    summary: list[list[str]] = []
    before_after: list[list[str]] = []
    before = s.get("before")
    before_label = f"{before['ref']} = {before['commit'][:12]}" if before else BEFORE
    for model, info in results["models"].items():
        lines += [f"#### {model}: {info['description']}", ""]
        if info.get("kind") == TABULAR:
            lines += [tabular_requests_markdown(info), ""]
        for conc in s["concurrency"]:
            for b in s["batches"]:
                rows = [
                    report.Row(
                        server=name,
                        rps=r["rps"],
                        p50_ms=r["p50_ms"],
                        p99_ms=r["p99_ms"],
                        errors=r.get("errors", 0),
                    )
                    for name in results["servers"]
                    if (r := runs.get((model, conc, b, name))) is not None
                ]
                inproc = inprocess_ms(results, runs, model, conc, b)
                comps = []
                for ours, anchors_ in (
                    ("ours", report.ANCHORS_UNBATCHED),
                    ("ours-batching", report.ANCHORS_ALL),
                    ("ours-sklearn", report.ANCHORS_UNBATCHED),
                ):
                    c = report.compare(rows, ours, anchors_, 1000.0 / inproc if conc == 1 else None)
                    if c:
                        comps.append(c)
                        summary.append(
                            [
                                model,
                                str(conc),
                                str(b),
                                ours,
                                c.best_anchor or "-",
                                report.fmt_ratio(c.rps_vs_best_anchor),
                                report.fmt_ratio(c.p99_vs_best_anchor),
                            ]
                        )
                section = report.config_section(
                    f"{model}, concurrency {conc}, batch {b}", rows, inproc, comps
                )
                line = report.before_after_line(rows, "ours", BEFORE, before_label)
                if line:
                    section += line + "\n"
                    mine = next(r for r in rows if r.server == "ours")
                    old = next(r for r in rows if r.server == BEFORE)
                    before_after.append(
                        [
                            model,
                            str(conc),
                            str(b),
                            report.fmt_num(old.rps),
                            report.fmt_num(mine.rps),
                            report.fmt_ratio(report.ratio(mine.rps, old.rps)),
                            report.fmt_ms(old.p99_ms),
                            report.fmt_ms(mine.p99_ms),
                        ]
                    )
                batch_rows = runs.get((model, conc, b, "ours-batching"), {}).get("mean_batch_rows")
                if batch_rows is not None:
                    section += f"- ours-batching mean rows per predict: {batch_rows:.1f}\n"
                tables_ms = info.get("inprocess_tables", {}).get(str(b), {}).get("median_ms")
                if tables_ms is not None:
                    section += (
                        f"- in-process leaf-table predict (what ours and ours-batching run for"
                        f" this model; the floor above is scikit-learn's predict): {tables_ms:.3f} ms\n"
                    )
                lines += [section.replace("#### ", "##### ", 1)]
        srv_rows = [
            [
                name,
                f"{d['cold_start_s']:.2f}" if "cold_start_s" in d else "failed",
                report.fmt_num(d.get("rss_mb_after_load"), 0),
            ]
            for name, d in info["servers"].items()
        ]
        lines += [
            f"Cold start (process start -> first correct prediction) and RSS, {model}:",
            "",
            report.markdown_table(["server", "cold start s", "RSS MiB after load"], srv_rows),
            "",
        ]
        paired_rows = [
            [
                name,
                b,
                str(p["samples"]),
                f"{p['inprocess_default_filters_ms']:.3f}",
                f"{p['inprocess_server_filters_ms']:.3f}",
                f"{p['server_ms']:.3f}",
                f"{p['overhead_ms']:+.3f}" if name in (*OURS, BEFORE) else "-",
                f"{p['overhead_fraction'] * 100:+.1f}%" if name in (*OURS, BEFORE) else "-",
                report.fmt_num(p.get("inprocess_tables_ms"), 3),
                f"{p['overhead_vs_tables_ms']:+.3f}"
                if name in ("ours", "ours-batching") and "overhead_vs_tables_ms" in p
                else "-",  # ours-sklearn runs scikit-learn's predict, not the tables
                report.fmt_num(p.get("in_server_request_ms"), 3),
                report.fmt_num(p.get("in_server_predict_ms"), 3),
            ]
            for name, by_batch in info.get("paired", {}).items()
            for b, p in by_batch.items()
        ]
        if paired_rows:
            lines += [
                f"Server overhead at concurrency 1, paired samples, {model} (medians, ms;"
                " each sample is one request, then one in-process `predict` of the same rows"
                " with the server's single warnings filter; every other sample times the"
                " `predict` with the default filters instead, a column of its own; for a forest,"
                " each sample also times the in-process leaf-table predict that ours and"
                " ours-batching run, and ours-sklearn is ours with leaf tables off; hello-raw"
                ' is the bare HTTP round trip under the same rhythm; "in server" is the'
                " server's own clock, mean time from reading a request to answering it, and in"
                " predict):",
                "",
                report.markdown_table(
                    [
                        "server",
                        "batch",
                        "samples",
                        "predict, default filters",
                        "predict, server's filter",
                        "request",
                        "overhead",
                        "overhead / predict",
                        "predict, leaf tables",
                        "request minus leaf tables",
                        "in server: request",
                        "in server: predict",
                    ],
                    paired_rows,
                ),
                "",
            ]
    lines += [
        "#### Summary: ours against the best anchor",
        "",
        report.markdown_table(
            ["model", "c", "batch", "ours", "best anchor", "req/s ratio", "p99 ratio"], summary
        ),
        "",
    ]
    if before_after:
        lines += [
            f"#### Before and after: ours against {BEFORE} ({before_label}), numeric models",
            "",
            f"Both batching off, the same venv; {BEFORE} runs the server's code as it was at"
            " that commit, from a git worktree.",
            "",
            report.markdown_table(
                [
                    "model",
                    "c",
                    "batch",
                    f"{BEFORE} req/s",
                    "ours req/s",
                    "req/s ratio",
                    f"{BEFORE} p99 ms",
                    "ours p99 ms",
                ],
                before_after,
            ),
            "",
        ]
    lines += targets_markdown(results, runs)
    return "\n".join(lines)


def tabular_requests_markdown(info: dict[str, Any]) -> str:
    """How each server was asked for the tabular model (the request of one row)."""
    out = ["Requests (one row; batches repeat the rows of each column or object):", ""]
    for name, req in info.get("requests", {}).items():
        if name in report.FLOORS:
            continue
        out.append(f"- `{name}`: `POST {req['path']}` `{req['body_b1']}`")
    labels = {
        "v1_one_object_per_instance": "V1 rows as objects, one instance per row"
        ' (`{"instances": [{column: value}, ...]}`)',
        "v2_content_type_pd": 'V2 columns with `"parameters": {"content_type": "pd"}`'
        " (as MLServer is asked)",
    }
    for label, probe in info.get("servers", {}).get("kserve", {}).get("probes", {}).items():
        out.append(
            f"- KServe asked with {labels.get(label, label)}, once, not timed: HTTP"
            f" {probe['status']}, {'right' if probe['right'] else 'no prediction'}"
            f" (`{probe['answer'][:160]}`)"
        )
    return "\n".join(out)


def targets_markdown(
    results: dict[str, Any], runs: dict[tuple[str, int, int, str], dict[str, Any]]
) -> list[str]:
    """The issue targets, each with what was measured and whether it was met."""
    out = ["#### Targets", ""]

    def row(model: str, c: int, b: int, server: str) -> report.Row | None:
        r = runs.get((model, c, b, server))
        return (
            report.Row(server, r["rps"], r["p50_ms"], r["p99_ms"], r.get("errors", 0))
            if r
            else None
        )

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "MISSED")

    def vs_anchor(
        model: str,
        ours: str,
        anchors_: Sequence[str],
        factor: float,
        label: str,
        batch: int = 1,
        p99_lower: bool = True,
    ) -> None:
        rows = [r for n in results["servers"] if (r := row(model, 32, batch, n))]
        c = report.compare(rows, ours, anchors_, None)
        ok = (
            None
            if c is None or c.rps_vs_best_anchor is None
            else (
                c.rps_vs_best_anchor >= factor
                and (not p99_lower or (c.p99_vs_best_anchor or 99) < 1)
            )
        )
        out.append(
            f"- {label}: {report.fmt_ratio(c.rps_vs_best_anchor if c else None)} req/s of {c.best_anchor if c else '-'},"
            f" p99 {report.fmt_ratio(c.p99_vs_best_anchor if c else None)} -> **{verdict(ok)}**"
        )

    vs_anchor(
        "iris",
        "ours",
        report.ANCHORS_UNBATCHED,
        2.0,
        "Issue 4, small model c=32 b=1, >= 2x best of KServe/MLServer with lower p99",
    )
    for b in results["settings"]["batches"]:
        info = results["models"].get("forest")
        if not info:
            continue
        by_server = info.get("paired", {})
        p = by_server.get("ours-sklearn", {}).get(str(b))
        if p is not None:
            out.append(
                f"- Issue 4, forest c=1 b={b}, server overhead within 10% of in-process predict,"
                f" like for like (ours-sklearn: scikit-learn's predict in the server and in"
                f" process; paired, {p['samples']} samples): predict"
                f" {p['inprocess_server_filters_ms']:.2f} ms, request {p['server_ms']:.2f} ms,"
                f" overhead {p['overhead_ms']:+.2f} ms ({p['overhead_fraction'] * 100:+.1f}%)"
                f" -> **{verdict(p['overhead_fraction'] <= 0.10)}**"
            )
        p = by_server.get("ours", {}).get(str(b))
        if p is not None:
            out.append(
                f"- Issue 4, forest c=1 b={b}, ours as shipped (leaf tables) against in-process"
                f" scikit-learn predict (paired): request {p['server_ms']:.2f} ms vs predict"
                f" {p['inprocess_server_filters_ms']:.2f} ms ({p['overhead_fraction'] * 100:+.1f}%)"
                f" -> **{verdict(p['overhead_fraction'] <= 0.10)}**"
            )
            if "inprocess_tables_ms" in p:
                out.append(
                    f"  - what the server adds around its own computation: request minus the"
                    f" in-process leaf-table predict ({p['inprocess_tables_ms']:.2f} ms)"
                    f" {p['overhead_vs_tables_ms']:+.2f} ms"
                    f" ({p['overhead_vs_tables_fraction'] * 100:+.0f}% of it)"
                )
        r = row("forest", 1, b, "ours-sklearn")
        if r is not None:
            inproc = inprocess_ms(results, runs, "forest", 1, b)
            over = report.overhead_vs_inprocess(1000.0 / r.rps, inproc)
            out.append(
                f"  - ours-sklearn from the wrk run and the rotation's in-process floor (default"
                f" filters, timed in another slot, so machine drift counts): mean latency"
                f" {1000.0 / r.rps:.2f} ms vs {inproc:.2f} ms, {over * 100:+.0f}%"
            )
    vs_anchor(
        "forest",
        "ours-batching",
        report.ANCHORS_ALL,
        5.0,
        "Issue 8, forest c=32 b=1 batching on, >= 5x best anchor with lower p99",
    )
    vs_anchor(
        "iris",
        "ours-batching",
        report.ANCHORS_ALL,
        3.0,
        "Issue 8, small model c=32 b=1 batching on, >= 3x best anchor",
    )
    if "churn" in results["models"]:
        for b in results["settings"]["batches"]:
            vs_anchor(
                "churn",
                "ours",
                report.ANCHORS_UNBATCHED,
                2.0,
                f"Tabular churn Pipeline c=32 b={b}, batching off, >= 2x best of"
                " KServe/MLServer (unbatched)",
                batch=b,
                p99_lower=False,
            )
            vs_anchor(
                "churn",
                "ours-batching",
                report.ANCHORS_ALL,
                2.0,
                f"Tabular churn Pipeline c=32 b={b}, as shipped (batching on), >= 2x best of"
                " KServe/MLServer (MLServer's adaptive batching included)",
                batch=b,
                p99_lower=False,
            )
    for model in results["models"]:
        for b in results["settings"]["batches"]:
            on, off = row(model, 1, b, "ours-batching"), row(model, 1, b, "ours")
            if on and off:
                out.append(
                    f"- Issue 8, added latency at c=1 ({model}, b={b}): p50 {on.p50_ms - off.p50_ms:+.3f} ms,"
                    f" p99 {on.p99_ms - off.p99_ms:+.3f} ms (batching on minus off)"
                )
    out.append("")
    return out


def update_readme(markdown: str) -> None:
    report.replace_block(README, README_BEGIN, README_END, markdown)


def ours_batching_defaults() -> tuple[int, float]:
    """mlmodel-serve's own batching defaults (rows, ms), so MLServer gets the same."""
    try:
        from mlmodel_serving.settings import (
            DEFAULT_MAX_BATCH_LATENCY_MS,
            DEFAULT_MAX_BATCH_SIZE,
        )
    except ImportError:
        return 1024, 2.0
    return int(DEFAULT_MAX_BATCH_SIZE), float(DEFAULT_MAX_BATCH_LATENCY_MS)


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_serving", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="3 s runs after 1 s warm-ups (a smoke run, not for the README)",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each run")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument("--batch", default="1,100")
    p.add_argument(
        "--models",
        default="iris,forest,churn",
        help="iris and forest (numeric, one FP64 tensor), churn (a DataFrame Pipeline of"
        " numeric and text columns; not served by fastapi and ours-before)",
    )
    p.add_argument("--servers", default=",".join(ALL_SERVERS))
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat every configuration; the median run is reported",
    )
    p.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "mlmodel-serve"))
    p.add_argument("--venv-cache", default=str(anchors.default_cache_root()))
    ours_size, ours_latency = ours_batching_defaults()
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=ours_size,
        help="ours-batching: most rows per predict (mlmodel-serve's default)",
    )
    p.add_argument(
        "--mlserver-max-batch-size",
        type=int,
        default=None,
        help="mlserver-batching: most requests per predict (MLServer counts requests; the"
        " default, the highest --concurrency, lets it group every request in flight)",
    )
    p.add_argument(
        "--max-batch-latency-ms",
        type=float,
        default=ours_latency,
        help="batching servers (ours and MLServer alike): longest the first request of a"
        " batch waits for others",
    )
    p.add_argument(
        "--update-readme", action="store_true", help="copy the tables into benchmarks/README.md"
    )
    p.add_argument(
        "--before-ref",
        default=DEFAULT_BEFORE_REF,
        help=f"{BEFORE}: the git commit (or ref) mlmodel-serve is run from, checked out into"
        " a worktree in the work directory and removed afterwards (default: the parent of"
        " 06e5586, the last commit before the tabular work)",
    )
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the benchmark, and so every server and wrk it starts, at this niceness"
        " (e.g. -10 as root on a machine shared with other jobs; the same for all servers)",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="run nothing: render the tables of an earlier results file (and --update-readme)",
    )
    a = p.parse_args(argv)
    if a.quick:
        a.duration, a.warmup = 3, 1
    servers = tuple(s for s in a.servers.split(",") if s)
    unknown = set(servers) - set(ALL_SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; known: {', '.join(ALL_SERVERS)}")
    if a.mlserver_max_batch_size is not None and a.mlserver_max_batch_size < 1:
        p.error(
            f"--mlserver-max-batch-size {a.mlserver_max_batch_size}: expected >= 1 requests"
            " (unset: the highest --concurrency)"
        )
    if a.max_batch_size < 0 or a.max_batch_latency_ms < 0:
        p.error(
            f"--max-batch-size {a.max_batch_size} / --max-batch-latency-ms"
            f" {a.max_batch_latency_ms:g}: expected >= 0"
        )
    concurrency = tuple(int(x) for x in a.concurrency.split(","))
    models = tuple(m for m in a.models.split(",") if m)
    unknown = set(models) - set(MODELS)
    if unknown:
        p.error(f"unknown models {sorted(unknown)}; known: {', '.join(MODELS)}")
    return Options(
        duration_s=a.duration,
        warmup_s=a.warmup,
        concurrency=concurrency,
        batches=tuple(int(x) for x in a.batch.split(",")),
        models=models,
        servers=servers,
        rounds=a.rounds,
        ours_bin=Path(a.ours_bin),
        venv_cache=Path(a.venv_cache),
        max_batch_size=a.max_batch_size,
        max_batch_latency_ms=a.max_batch_latency_ms,
        mlserver_max_batch_size=a.mlserver_max_batch_size or max(concurrency),
        update_readme=a.update_readme,
        keep_workdir=a.keep_workdir,
        from_json=Path(a.from_json) if a.from_json else None,
        nice=a.nice,
        before_ref=a.before_ref,
    )


def main(argv: Sequence[str] | None = None, command: str | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    command = command or " ".join(["python", "benchmarks/serving/bench_serving.py", *args])
    if opts.from_json is not None:
        results = json.loads(opts.from_json.read_text())
    else:
        results = run(opts, command)
        out = report.save_results(RESULTS_DIR, "serving", results)
        print(f"# results: {out}", file=sys.stderr)
    md = render_markdown(results)
    print(md)
    if opts.update_readme:
        update_readme(md)
        print(f"# tables copied into {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
