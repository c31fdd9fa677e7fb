"""Shadow traffic's cost: mlmodel-serve alone against the same server mirroring to a candidate.

`python benchmarks/run.py shadow [--duration S] [--rounds N] [--pairs-seconds S] [--quick]`

1. trains the serving benchmark's models (`iris` by default; `--models iris,churn`) and
   sends each the serving benchmark's V2 JSON body of one row;
2. per model, starts one candidate (the same artifact as version 2) and three stables
   side by side, each with the serving benchmark's batching defaults and no gRPC:
   `alone` (no shadow config), `sample-1.0` and `sample-0.1` (a config file naming the
   candidate);
3. throughput: wrk at c=32 on each stable, interleaved (alone, sample-1.0, sample-0.1,
   alone, ...) for --rounds rounds, each after a warm-up; the ratio to `alone` is the
   median of the ratios within a round;
4. latency, paired (as `paired.py` measures overhead): one request to `alone`, then one
   to `sample-1.0`, back to back on kept-alive connections, for --pairs-seconds; the
   added latency is the median of the per-pair differences;
5. reads each stable's /v2/models/{name}/shadow: copies agreed, dropped, errors.

The candidate runs on the same machine, so at sample 1.0 it takes CPU from the stable
under load (as a candidate Pod on the same node would): the c=32 ratio includes that.
No README section is written: the figures go to stdout and benchmarks/results/.
Every process started here is stopped in a `finally`, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving import bench_serving, report
from benchmarks.serving.bench_serving import ModelCase
from benchmarks.serving.paired import KeepAliveClient
from benchmarks.serving.procs import LOOPBACK, Server, http, session_cpu_s

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
ALONE, FULL, TENTH = "alone", "sample-1.0", "sample-0.1"
CONFIGS = (ALONE, FULL, TENTH)
SAMPLES = {FULL: 1.0, TENTH: 0.1}
MODELS = ("iris", "churn")
SETTLE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    rounds: int
    pairs_s: float
    concurrency: int
    models: tuple[str, ...]
    ours_bin: Path


def shadow_status(srv: Server, model: str) -> dict[str, Any]:
    status, body = http("GET", f"http://{LOOPBACK}:{srv.port}/v2/models/{model}/shadow")
    if status != 200:
        raise RuntimeError(f"{srv.name}: shadow status answered {status}")
    out: dict[str, Any] = json.loads(body)
    return out


def settle(srv: Server, model: str) -> None:
    """Wait (bounded) until no copy is in flight, so runs do not overlap."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while shadow_status(srv, model)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)


def paired_latency(full: Server, alone: Server, body: bytes, budget_s: float) -> dict[str, Any]:
    """Median per-pair difference of one request to `sample-1.0` and one to `alone`."""
    a = KeepAliveClient(alone.port, alone.infer_path, body)
    b = KeepAliveClient(full.port, full.infer_path, body)
    alone_ms: list[float] = []
    full_ms: list[float] = []
    try:
        for _ in range(20):
            a.call()
            b.call()
        end = time.perf_counter() + budget_s
        while time.perf_counter() < end or len(alone_ms) < 30:
            t0 = time.perf_counter()
            a.call()
            t1 = time.perf_counter()
            b.call()
            t2 = time.perf_counter()
            alone_ms.append((t1 - t0) * 1000.0)
            full_ms.append((t2 - t1) * 1000.0)
    finally:
        a.close()
        b.close()
    diffs = [f - s for f, s in zip(full_ms, alone_ms, strict=True)]
    return {
        "pairs": len(diffs),
        "alone_ms": statistics.median(alone_ms),
        "mirroring_ms": statistics.median(full_ms),
        "added_ms": statistics.median(diffs),
    }


def bench_model(
    case: ModelCase, opts: Options, workdir: Path, wrk: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    print(f"# model {case.name}: {case.description}", file=sys.stderr)
    request = case.request(ALONE, 1)
    script = workdir / f"{case.name}.lua"
    script.write_text(report.wrk_lua_script(request.body.decode(), request.content_type))
    batching = bench_serving.ours_batching_defaults()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    info: dict[str, Any] = {"description": case.description, "servers": {}}
    runs: list[dict[str, Any]] = []
    live: dict[str, Server] = {}

    def start(name: str, env: dict[str, str], version: str) -> Server:
        bench_serving.start_ours_beside(
            name, case, request, opts.ours_bin, workdir, env, live, batching=batching,
            version=version,
        )  # fmt: skip
        return live[name]

    try:
        candidate = start("candidate", base_env | {"MLMODEL_SHADOW_CONFIG": "/nonexistent"}, "2")
        for config in CONFIGS:
            path = workdir / f"{case.name}-{config}.json"
            if config != ALONE:
                path.write_text(json.dumps({
                    "target": f"http://{LOOPBACK}:{candidate.port}", "model": case.name,
                    "version": "2", "sample": SAMPLES[config],
                }))  # fmt: skip
            start(config, base_env | {"MLMODEL_SHADOW_CONFIG": str(path)}, "1")
        for config in (FULL, TENTH):
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while not shadow_status(live[config], case.name)["active"]:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{config}: shadow config not applied")
                time.sleep(0.1)
        assert candidate.proc is not None
        for rnd in range(opts.rounds):
            for config in CONFIGS:
                srv = live[config]
                if not srv.alive() or not candidate.alive():
                    raise RuntimeError(f"{case.name} {config} died:\n{srv.log_tail()}")
                assert srv.proc is not None
                bench_serving.run_wrk(wrk, srv.url, script, opts.concurrency, opts.warmup_s)
                bench_serving.drain(srv, case)
                settle(srv, case.name)
                load0 = os.getloadavg()[0]
                cpu0, cand0 = session_cpu_s(srv.proc.pid), session_cpu_s(candidate.proc.pid)
                res, text = bench_serving.run_wrk(
                    wrk, srv.url, script, opts.concurrency, opts.duration_s
                )
                bench_serving.drain(srv, case)
                settle(srv, case.name)
                entry: dict[str, Any] = {
                    "model": case.name, "config": config, "round": rnd, "loadavg1": load0,
                    "server_cpu_s": session_cpu_s(srv.proc.pid) - cpu0,
                    "candidate_cpu_s": session_cpu_s(candidate.proc.pid) - cand0,
                }  # fmt: skip
                if res is None:
                    entry["failed"] = text[-2000:]
                    print(f"#   {config}: wrk failed: {text[:200]}", file=sys.stderr)
                else:
                    entry.update(res.to_dict())
                    print(
                        f"#   {case.name} round {rnd} {config:11s} {res.rps:9.1f} req/s"
                        f" p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms errors {res.errors}",
                        file=sys.stderr,
                    )
                runs.append(entry)
        info["paired_c1"] = paired_latency(live[FULL], live[ALONE], request.body, opts.pairs_s)
        print(f"#   paired c=1: {info['paired_c1']}", file=sys.stderr)
        for config in (FULL, TENTH):
            settle(live[config], case.name)
            status = shadow_status(live[config], case.name)
            info["servers"][config] = {
                k: status.get(k) for k in ("counts", "dropped", "errors", "agreement")
            }
    finally:
        for srv in live.values():
            srv.stop(grace_s=30.0)
    return info, runs


def ratio_to_alone(runs: list[dict[str, Any]], model: str, config: str) -> float | None:
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["model"] == model and "rps" in r:
            by_round.setdefault(r["round"], {})[r["config"]] = r["rps"]
    ratios = [q for rs in by_round.values() if (q := report.ratio(rs.get(config), rs.get(ALONE)))]
    return statistics.median(ratios) if ratios else None


def render(results: dict[str, Any]) -> str:
    runs = results["runs"]
    s = results["settings"]
    lines = [
        f"### Shadow traffic benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"c={s['concurrency']}, one row per request, {s['duration_s']} s per run after a"
        f" {s['warmup_s']} s warm-up, {s['rounds']} round(s) interleaved; the candidate on"
        " the same machine",
        "",
        "| model | config | req/s (median run) | p50 | p99 | vs alone | server CPU s / 1k req"
        " | candidate CPU s / 1k req | agree | disagree | error | dropped |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, info in results["models"].items():
        for config in CONFIGS:
            mine = [r for r in runs if r["model"] == model and r["config"] == config and "rps" in r]
            if not mine:
                continue
            median = sorted(mine, key=lambda r: r["rps"])[len(mine) // 2]
            n = sum(r["requests"] for r in mine)
            cpu = 1000.0 * sum(r["server_cpu_s"] for r in mine) / n if n else None
            cand = 1000.0 * sum(r["candidate_cpu_s"] for r in mine) / n if n else None
            srv = info["servers"].get(config, {})
            counts = srv.get("counts") or {}
            ratio = "1.00x" if config == ALONE else report.fmt_ratio(
                ratio_to_alone(runs, model, config))  # fmt: skip
            lines.append(
                "| "
                + " | ".join(
                    [
                        model,
                        config,
                        report.fmt_num(median["rps"]),
                        report.fmt_ms(median["p50_ms"]),
                        report.fmt_ms(median["p99_ms"]),
                        ratio,
                        report.fmt_num(cpu, 3),
                        report.fmt_num(cand, 3),
                        *(str(counts.get(k, "-")) for k in ("agree", "disagree", "error")),
                        str(srv.get("dropped", "-")),
                    ]
                )
                + " |"
            )
    lines.append("")
    for model, info in results["models"].items():
        p = info.get("paired_c1")
        if p:
            lines.append(
                f"{model}, c=1, {p['pairs']:,} pairs: {p['alone_ms']:.3f} ms alone,"
                f" {p['mirroring_ms']:.3f} ms mirroring every request; median difference"
                f" {p['added_ms']:+.3f} ms."
            )
    return "\n".join(lines)


def run(opts: Options, command: str) -> dict[str, Any]:
    wrk = bench_serving.ensure_wrk()
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-shadow-"))
    print(f"# work directory {workdir}", file=sys.stderr)
    results: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": bench_serving.machine_info(),
        "settings": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "rounds": opts.rounds,
            "concurrency": opts.concurrency,
            "pairs_s": opts.pairs_s,
            "batching": list(bench_serving.ours_batching_defaults()),
        },
        "models": {},
        "runs": [],
    }
    finished = False
    try:
        for case in bench_serving.train_models(workdir, opts.models):
            info, runs = bench_model(case, opts, workdir, wrk)
            results["models"][case.name] = info
            results["runs"] += runs
        finished = True
    finally:
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"# logs left in {workdir}", file=sys.stderr)
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_shadow", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=None, help="seconds per run (15; --quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="seconds of warm-up (3; --quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; --quick 1)")
    p.add_argument("--pairs-seconds", type=float, default=None, help="c=1 pairs (20; --quick 3)")
    p.add_argument("--quick", action="store_true", help="a smoke run, not for the README")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--models", default="iris", help=f"from {', '.join(MODELS)}")
    p.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "mlmodel-serve"))
    a = p.parse_args(argv)
    quick = {"duration": 3, "warmup": 1, "rounds": 1, "pairs_seconds": 3.0}
    full = {"duration": 15, "warmup": 3, "rounds": 3, "pairs_seconds": 20.0}
    values = {k: getattr(a, k) or (quick if a.quick else full)[k] for k in full}
    if min(values.values()) <= 0 or a.concurrency < 1:
        p.error("--duration, --warmup, --rounds, --pairs-seconds and --concurrency must be > 0")
    models = tuple(m for m in a.models.split(",") if m)
    if not models or set(models) - set(MODELS):
        p.error(f"--models {a.models!r}: known models are {', '.join(MODELS)}")
    return Options(
        duration_s=int(values["duration"]),
        warmup_s=int(values["warmup"]),
        rounds=int(values["rounds"]),
        pairs_s=float(values["pairs_seconds"]),
        concurrency=a.concurrency,
        models=models,
        ours_bin=Path(a.ours_bin),
    )


def main(argv: Sequence[str], command: str = "python benchmarks/run.py shadow") -> int:
    opts = parse_args(argv)
    if not opts.ours_bin.exists():
        print(f"{opts.ours_bin} does not exist", file=sys.stderr)
        return 2
    results = run(opts, command)
    out = report.save_results(RESULTS_DIR, "shadow", results)
    print(f"# results: {out}", file=sys.stderr)
    print(render(results))
    return 0
