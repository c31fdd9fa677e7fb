"""Encodings of one request to mlmodel-serve: V2 JSON, the V2 binary data extension, gRPC.

`python benchmarks/run.py encodings [--rows 1,1000] [--concurrency 1,32] [--update-readme]`

The serving benchmark's forest (100 trees, 20 features) behind one `mlmodel-serve`
(batching off unless `--batching`), asked for the same rows, with the same answer
(`predict`), five ways:

- `json-wrk`: V2 JSON over HTTP/1.1, one FP64 tensor ``[rows, 20]``, driven by wrk;
- `binary-wrk`: the V2 binary data extension over HTTP/1.1 (the body
  ``tritonclient.http`` builds: a JSON header, then the tensor's raw bytes; the answer
  binary too), driven by wrk with ``Inference-Header-Content-Length``;
- `grpc-py`: the Open Inference Protocol over gRPC (``ModelInfer``, inputs as
  ``raw_input_contents``), driven by a closed-loop Python client on grpc.aio;
- `json-py` and `binary-py`: the two HTTP bodies driven by the same closed-loop Python
  client, so gRPC has like-for-like rows beside it (wrk is C; a Python client spends
  many times its CPU per request, on the same 2 cores as the server).

Every request body is built once; every way must answer the in-process ``predict`` of
the same rows before it is timed. Runs rotate over the ways per configuration, each after
a warm-up, as in the serving benchmark. Besides req/s and latency, the server's CPU time
per request (its whole process session, from /proc) is reported: on a shared machine it
is the steadier measure of what decoding each encoding costs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

from benchmarks.serving import bench_serving, loadgen, report
from benchmarks.serving.bench_serving import ModelCase
from benchmarks.serving.procs import JSON, LOOPBACK, Server, free_port, http, session_cpu_s

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
BEGIN = "<!-- encodings-results:begin -->"
END = "<!-- encodings-results:end -->"
MODEL = "forest"
OUTPUT = "predict"
HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET = "application/octet-stream"
GRPC_READY_TIMEOUT_S = 30.0

# method -> (encoding, client)
METHODS: dict[str, tuple[str, str]] = {
    "json-wrk": ("json", "wrk"),
    "binary-wrk": ("binary", "wrk"),
    "json-py": ("json", "python"),
    "binary-py": ("binary", "python"),
    "grpc-py": ("grpc", "python"),
}


@dataclass(frozen=True)
class Bodies:
    """The three encodings of one batch, built once, and what they must answer."""

    rows: int
    json_body: bytes
    binary_body: bytes
    binary_json_size: int
    grpc_request: bytes
    expected: list[float]

    def http_for(self, encoding: str) -> tuple[bytes, dict[str, str]]:
        if encoding == "json":
            return self.json_body, dict(JSON)
        return self.binary_body, {
            "Content-Type": OCTET,
            HEADER_LENGTH: str(self.binary_json_size),
        }


def build_bodies(case: ModelCase, rows: int) -> Bodies:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.grpc import service_pb2

    x = np.ascontiguousarray(case.batch(rows), dtype=np.float64)
    doc = json.loads(case.v2_body(rows))
    doc["outputs"] = [{"name": OUTPUT}]
    json_body = json.dumps(doc, separators=(",", ":")).encode()

    tensor = httpclient.InferInput("input-0", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=True)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=[httpclient.InferRequestedOutput(OUTPUT, binary_data=True)]
    )
    if json_size is None:
        raise RuntimeError("tritonclient built a JSON-only body; expected binary tensor data")

    request = service_pb2.ModelInferRequest(model_name=case.name)
    grpc_input = request.inputs.add()
    grpc_input.name, grpc_input.datatype = "input-0", "FP64"
    grpc_input.shape.extend(x.shape)
    request.outputs.add().name = OUTPUT
    request.raw_input_contents.append(x.astype("<f8").tobytes())

    expected = [float(v) for v in case.model.predict(x)]
    return Bodies(
        rows, json_body, bytes(body), int(json_size), request.SerializeToString(), expected
    )


# ------------------------------------------------------------------------ verification


def post_with_headers(
    port: int, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    conn = HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def verify(method: str, srv: Server, grpc_port: int | None, bodies: Bodies) -> int:
    """Send the method's request once; raise unless it answers `expected`. Response bytes."""
    import numpy as np

    encoding, _ = METHODS[method]
    if encoding == "grpc":
        from tritonclient.grpc import service_pb2

        if grpc_port is None:
            raise RuntimeError("no gRPC port")
        raw = loadgen.grpc_call_once(grpc_port, bodies.grpc_request)
        reply = service_pb2.ModelInferResponse.FromString(raw)
        names = [o.name for o in reply.outputs]
        if names != [OUTPUT] or len(reply.raw_output_contents) != 1:
            raise RuntimeError(f"gRPC answered outputs {names}, expected [{OUTPUT!r}] raw")
        dtype = {"INT64": "<i8", "INT32": "<i4", "FP64": "<f8", "FP32": "<f4"}.get(
            reply.outputs[0].datatype
        )
        if dtype is None:
            raise RuntimeError(f"gRPC answered datatype {reply.outputs[0].datatype}")
        got = [float(v) for v in np.frombuffer(reply.raw_output_contents[0], dtype=dtype)]
        if got != bodies.expected:
            raise RuntimeError(f"gRPC answered {got[:10]}..., expected {bodies.expected[:10]}...")
        return len(raw)
    body, headers = bodies.http_for(encoding)
    status, resp_headers, out = post_with_headers(srv.port, srv.infer_path, body, headers)
    if status != 200:
        raise RuntimeError(f"{method} answered {status}: {out[:300]!r}")
    if encoding == "json":
        if not bench_serving.prediction_checker(bodies.expected)(out):
            raise RuntimeError(f"{method} answered wrongly: {out[:300]!r}")
        return len(out)
    import tritonclient.http as httpclient

    length = resp_headers.get(HEADER_LENGTH.lower())
    if length is None:
        raise RuntimeError(f"{method}: the answer has no {HEADER_LENGTH}; asked for binary")
    result = httpclient.InferenceServerClient.parse_response_body(out, header_length=int(length))
    got = [float(v) for v in result.as_numpy(OUTPUT).ravel()]
    if got != bodies.expected:
        raise RuntimeError(f"{method} answered {got[:10]}..., expected {bodies.expected[:10]}...")
    return len(out)


# ------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    rows: tuple[int, ...]
    concurrency: tuple[int, ...]
    methods: tuple[str, ...]
    rounds: int
    batching: bool
    ours_bin: Path
    update_readme: bool
    from_json: Path | None
    nice: int


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_once(
    method: str,
    srv: Server,
    grpc_port: int | None,
    bodies: Bodies,
    scripts: dict[tuple[str, int], Path],
    wrk: str,
    conc: int,
    seconds: int,
) -> dict[str, Any]:
    """One run of `method`: req/s, latencies, errors and the client's CPU seconds."""
    encoding, client = METHODS[method]
    if client == "wrk":
        cpu0 = children_cpu_s()
        res, text = bench_serving.run_wrk(
            wrk, srv.url, scripts[encoding, bodies.rows], conc, seconds
        )
        cpu = children_cpu_s() - cpu0
        if res is None:
            return {"failed": text[-2000:]}
        out = res.to_dict()
        out["client_cpu_s"] = cpu
        return out
    if encoding == "grpc":
        assert grpc_port is not None
        load = loadgen.run_grpc(grpc_port, bodies.grpc_request, conc, seconds)
    else:
        body, headers = bodies.http_for(encoding)
        request = loadgen.http_request_bytes(srv.port, srv.infer_path, body, headers)
        load = loadgen.run_http(srv.port, request, conc, seconds)
    return load.to_dict()


def drain(srv: Server, bodies: Bodies) -> None:
    """One more request, which waits behind whatever the last run left in flight."""
    with contextlib.suppress(OSError):
        http("POST", srv.url, bodies.json_body, timeout=60, headers=JSON)


def run(opts: Options, command: str) -> dict[str, Any]:
    wrk = bench_serving.ensure_wrk()
    if opts.nice:
        os.setpriority(os.PRIO_PROCESS, 0, opts.nice)
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-enc-"))
    print(f"# work directory {workdir}", file=sys.stderr)
    results: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": bench_serving.machine_info(),
        "settings": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "rows": list(opts.rows),
            "concurrency": list(opts.concurrency),
            "methods": list(opts.methods),
            "rounds": opts.rounds,
            "batching": opts.batching,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        },
        "skipped": {},
        "sizes": {},
        "runs": [],
    }
    methods = list(opts.methods)
    srv: Server | None = None
    try:
        (case,) = bench_serving.train_models(workdir, (MODEL,))
        results["model"] = {"name": case.name, "description": case.description}
        bodies = {n: build_bodies(case, n) for n in opts.rows}
        scripts: dict[tuple[str, int], Path] = {}
        for n, b in bodies.items():
            scripts["json", n] = workdir / f"json-{n}.lua"
            scripts["json", n].write_text(report.wrk_lua_script(b.json_body.decode()))
            body_file = workdir / f"binary-{n}.bin"
            body_file.write_bytes(b.binary_body)
            scripts["binary", n] = workdir / f"binary-{n}.lua"
            scripts["binary", n].write_text(
                report.wrk_lua_file_script(str(body_file), b.http_for("binary")[1])
            )
        grpc_port: int | None = free_port() if bench_serving.ours_has_grpc(opts.ours_bin) else None
        port = free_port()
        cwd = workdir / "run"
        cwd.mkdir(parents=True, exist_ok=True)
        batching = (
            bench_serving.ours_batching_defaults() if opts.batching else None
        )  # mlmodel-serve's own defaults
        argv = bench_serving.ours_command(
            opts.ours_bin, case, port, cwd / "cache", batching=batching, grpc_port=grpc_port
        )
        srv = Server(
            "ours-batching" if opts.batching else "ours",
            argv,
            port,
            f"/v2/models/{case.name}/infer",
            dict(os.environ),
            cwd,
            workdir / "ours.log",
            metrics_path="/metrics",
        )
        results["server"] = {"name": srv.name, "argv": argv, "grpc_port": grpc_port}
        srv.start()
        first = bodies[min(bodies)]
        cold = srv.wait_first_prediction(
            first.json_body,
            bench_serving.prediction_checker(first.expected),
            bench_serving.COLD_START_TIMEOUT_S,
        )
        print(f"# {srv.name}: first prediction {cold:.2f}s after start", file=sys.stderr)
        grpc_methods = [m for m in methods if METHODS[m][0] == "grpc"]
        if grpc_methods:
            why = (
                f"{opts.ours_bin} has no --grpc-port (this mlmodel-serve serves no gRPC)"
                if grpc_port is None
                else loadgen.grpc_ready(grpc_port, case.name, GRPC_READY_TIMEOUT_S)
            )
            if why:
                print(f"# skipping gRPC: {why}", file=sys.stderr)
                for m in grpc_methods:
                    results["skipped"][m] = why
                methods = [m for m in methods if m not in grpc_methods]
        for m in methods:
            for n, b in bodies.items():
                encoding = METHODS[m][0]
                size = (
                    len(b.grpc_request)
                    if encoding == "grpc"
                    else len(b.json_body if encoding == "json" else b.binary_body)
                )
                answer = verify(m, srv, grpc_port, b)
                results["sizes"].setdefault(m, {})[str(n)] = {
                    "request_bytes": size,
                    "response_bytes": answer,
                }
                print(f"#   {m} {n} rows: right ({size} B in, {answer} B out)", file=sys.stderr)
        configs = [(n, c) for n in opts.rows for c in opts.concurrency]
        for rnd in range(opts.rounds):
            for i, (n, conc) in enumerate(configs):
                shift = (i + rnd) % len(methods)
                for m in methods[shift:] + methods[:shift]:
                    if not srv.alive():
                        raise RuntimeError(f"{srv.name} died:\n{srv.log_tail()}")
                    measure_once(m, srv, grpc_port, bodies[n], scripts, wrk, conc, opts.warmup_s)
                    drain(srv, bodies[n])
                    load0 = os.getloadavg()[0]
                    assert srv.proc is not None
                    cpu0 = session_cpu_s(srv.proc.pid)
                    out = measure_once(
                        m, srv, grpc_port, bodies[n], scripts, wrk, conc, opts.duration_s
                    )
                    drain(srv, bodies[n])
                    server_cpu = session_cpu_s(srv.proc.pid) - cpu0
                    entry: dict[str, Any] = {
                        "method": m,
                        "encoding": METHODS[m][0],
                        "client": METHODS[m][1],
                        "rows": n,
                        "concurrency": conc,
                        "round": rnd,
                        "loadavg1": load0,
                        "server_cpu_s": server_cpu,
                        **out,
                    }
                    results["runs"].append(entry)
                    if "rps" in out:
                        print(
                            f"#   {n:5d} rows c={conc:<3d} {m:11s} {out['rps']:9.1f} req/s"
                            f" p50 {out['p50_ms']:8.2f} ms p99 {out['p99_ms']:8.2f} ms"
                            f" errors {out['errors']}"
                            f" server CPU {cpu_per_request_ms(server_cpu, out):.3f} ms/req",
                            file=sys.stderr,
                        )
                    else:
                        print(f"#   {m} {n} rows c={conc}: failed", file=sys.stderr)
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(workdir / "run", ignore_errors=True)
    results["methods"] = methods
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def cpu_per_request_ms(cpu_s: float | None, run: dict[str, Any]) -> float:
    n = run.get("requests") or 0
    if cpu_s is None or n <= 0:
        return float("nan")
    return 1000.0 * cpu_s / n


# ----------------------------------------------------------------------------- output


def median_runs(runs: list[dict[str, Any]]) -> dict[tuple[int, int, str], dict[str, Any]]:
    """One run per (rows, concurrency, method): the median by req/s over rounds."""
    grouped: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for r in runs:
        if "rps" in r:
            grouped.setdefault((r["rows"], r["concurrency"], r["method"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in grouped.items()}


def render(results: dict[str, Any]) -> str:
    runs = median_runs(results["runs"])
    m, s = results["machine"], results["settings"]
    loads = sorted(r["loadavg1"] for r in results["runs"] if "loadavg1" in r)
    lines = [
        f"### Encodings benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Model: {results['model']['description']}; server: `{results['server']['name']}`"
        f" (batching {'on' if s['batching'] else 'off'}), gRPC on its own port  ",
        f"Machine: {m['cores']} cores ({m['cpu']}), Python {m['python']}; load average (1 min)"
        " at the start of each run: "
        + (
            f"min {loads[0]:.2f}, median {statistics.median(loads):.2f}, max {loads[-1]:.2f}"
            if loads
            else "-"
        )
        + "  ",
        f"{s['duration_s']} s per run after a {s['warmup_s']} s warm-up, {s['rounds']} round(s),"
        " ways rotated per configuration",
        "",
    ]
    for method, why in results.get("skipped", {}).items():
        lines.append(f"- skipped `{method}`: {why}")
    if results.get("skipped"):
        lines.append("")
    table = []
    for n in s["rows"]:
        for c in s["concurrency"]:
            for method in results.get("methods", s["methods"]):
                r = runs.get((n, c, method))
                if r is None:
                    continue
                size = results["sizes"].get(method, {}).get(str(n), {})
                table.append(
                    [
                        str(n),
                        str(c),
                        method,
                        report.fmt_num(r["rps"]),
                        report.fmt_ms(r["p50_ms"]),
                        report.fmt_ms(r["p99_ms"]),
                        str(r.get("errors", 0)),
                        report.fmt_ms(cpu_per_request_ms(r.get("server_cpu_s"), r)),
                        report.fmt_ms(cpu_per_request_ms(r.get("client_cpu_s"), r)),
                        report.fmt_num(size.get("request_bytes")),
                        report.fmt_num(size.get("response_bytes")),
                    ]
                )
    lines += [
        report.markdown_table(
            [
                "rows",
                "c",
                "way",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server CPU ms/req",
                "client CPU ms/req",
                "request B",
                "response B",
            ],
            table,
        ),
        "",
    ]
    ratios = []
    for n in s["rows"]:
        for c in s["concurrency"]:

            def rps(method: str, n: int = n, c: int = c) -> float | None:
                r = runs.get((n, c, method))
                return r["rps"] if r else None

            cells = [
                ("binary-wrk / json-wrk", report.ratio(rps("binary-wrk"), rps("json-wrk"))),
                ("binary-py / json-py", report.ratio(rps("binary-py"), rps("json-py"))),
                ("grpc-py / json-py", report.ratio(rps("grpc-py"), rps("json-py"))),
                ("grpc-py / binary-py", report.ratio(rps("grpc-py"), rps("binary-py"))),
            ]
            if any(v is not None for _, v in cells):
                ratios.append(
                    f"- {n} rows, c={c}: "
                    + ", ".join(f"{k} {report.fmt_ratio(v)}" for k, v in cells if v is not None)
                )
    if ratios:
        lines += ["req/s ratios:", "", *ratios, ""]
    return "\n".join(lines)


def update_readme(markdown: str) -> None:
    report.replace_block(README, BEGIN, END, markdown)


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_encodings", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each run")
    p.add_argument("--rows", default="1,1000", help="rows per request, comma-separated")
    p.add_argument("--concurrency", default="1,32")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"ways to send, comma-separated, from {', '.join(METHODS)}",
    )
    p.add_argument("--rounds", type=int, default=1, help="the median run (req/s) is reported")
    p.add_argument(
        "--batching", action="store_true", help="serve with mlmodel-serve's batching defaults"
    )
    p.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "mlmodel-serve"))
    p.add_argument("--update-readme", action="store_true", help="copy the table into the README")
    p.add_argument("--nice", type=int, default=0, help="niceness for the run and its children")
    p.add_argument("--from-json", default=None, help="run nothing: render an earlier results file")
    a = p.parse_args(argv)

    def ints(text: str, flag: str) -> tuple[int, ...]:
        try:
            out = tuple(int(x) for x in text.split(",") if x)
        except ValueError:
            p.error(f"{flag} {text!r}: expected comma-separated integers")
        if not out or min(out) < 1:
            p.error(f"{flag} {text!r}: every value must be >= 1")
        return out

    methods = tuple(m for m in a.methods.split(",") if m)
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        p.error(f"--methods {a.methods!r}: known ways are {', '.join(METHODS)}")
    if a.duration < 1 or a.warmup < 1 or a.rounds < 1:
        p.error("--duration, --warmup and --rounds must be >= 1")
    return Options(
        duration_s=a.duration,
        warmup_s=a.warmup,
        rows=ints(a.rows, "--rows"),
        concurrency=ints(a.concurrency, "--concurrency"),
        methods=methods,
        rounds=a.rounds,
        batching=a.batching,
        ours_bin=Path(a.ours_bin),
        update_readme=a.update_readme,
        from_json=Path(a.from_json) if a.from_json else None,
        nice=a.nice,
    )


def main(argv: Sequence[str], command: str = "python benchmarks/run.py encodings") -> int:
    opts = parse_args(argv)
    if opts.from_json is not None:
        results = json.loads(opts.from_json.read_text())
    else:
        if not opts.ours_bin.exists():
            print(f"{opts.ours_bin} does not exist", file=sys.stderr)
            return 2
        results = run(opts, command)
        out = report.save_results(RESULTS_DIR, "encodings", results)
        print(f"# results: {out}", file=sys.stderr)
    markdown = render(results)
    print(markdown)
    if opts.update_readme:
        update_readme(markdown)
        print(f"# table copied into {README}", file=sys.stderr)
    return 0
