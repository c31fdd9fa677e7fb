"""Soak: mlmodel-serve under wrk for ten minutes, its memory sampled the whole time.

`python benchmarks/run.py soak [--duration 600] [--model churn] [--update-readme]`

1. trains the model (the churn DataFrame Pipeline with text columns by default) and starts
   `mlmodel-serve` on 127.0.0.1 with its defaults (batching, limits);
2. drives it with wrk at c=32 for ``--duration`` seconds, one V2 request of one row;
3. samples the server's RSS (every process of its session, from /proc) every
   ``--sample`` seconds while wrk runs;
4. reports the RSS when the warm-up ends, its highest and last value after, the growth
   and the least-squares slope after the warm-up, and wrk's throughput and errors.

"Flat" means: after the warm-up, RSS grew by less than :data:`FLAT_GROWTH_MIB` and the
slope is under :data:`FLAT_SLOPE_MIB_PER_MIN`. Memory is not a speed figure: the result
is the same on a busy machine, but run it alone anyway (wrk and the server share the
cores with whatever else runs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving import bench_serving, report
from benchmarks.serving.procs import Server, free_port, session_rss_kib

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
BEGIN = "<!-- soak:begin -->"
END = "<!-- soak:end -->"
FLAT_GROWTH_MIB = 16.0
FLAT_SLOPE_MIB_PER_MIN = 0.5
MODELS = ("iris", "forest", "churn")


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    sample_s: float
    concurrency: int
    model: str
    ours_bin: Path
    update_readme: bool
    from_json: Path | None


def rss_trend(samples: Sequence[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """From ``(seconds since start, RSS MiB)`` samples: the figures after the warm-up."""
    after = [(t, m) for t, m in samples if t >= warmup_s]
    if len(after) < 2:
        raise ValueError(f"{len(after)} samples after the warm-up of {warmup_s:g} s: too few")
    ts = [t for t, _ in after]
    ms = [m for _, m in after]
    mean_t, mean_m = sum(ts) / len(ts), sum(ms) / len(ms)
    var = sum((t - mean_t) ** 2 for t in ts)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in after) / var if var else 0.0
    start = ms[0]
    growth = max(ms) - start
    slope_per_min = slope * 60
    return {
        "samples": len(after),
        "rss_after_warmup_mib": round(start, 1),
        "rss_max_mib": round(max(ms), 1),
        "rss_last_mib": round(ms[-1], 1),
        "growth_mib": round(growth, 1),
        "slope_mib_per_min": round(slope_per_min, 3),
        "flat": growth < FLAT_GROWTH_MIB and slope_per_min < FLAT_SLOPE_MIB_PER_MIN,
    }


def per_minute(samples: Sequence[tuple[float, float]]) -> list[tuple[int, float]]:
    """The last sample of each whole minute: (minute, RSS MiB)."""
    out: dict[int, float] = {}
    for t, m in samples:
        out[int(t // 60)] = m
    return sorted(out.items())


def render(results: dict[str, Any]) -> str:
    trend = results["trend"]
    wrk = results["wrk"]
    verdict = "**flat**" if trend["flat"] else "**growing**"
    seconds = results["settings"]["duration_s"]
    length = f"{seconds // 60} minutes" if seconds >= 120 else f"{seconds} seconds"
    lines = [
        f"### Soak: {length} under wrk ({results['date']})",
        "",
        f"`{results['command']}`: {results['model']['description']}, one row per V2 request, "
        f"c={results['settings']['concurrency']}, mlmodel-serve with its default settings. "
        f"RSS of the server's processes every {results['settings']['sample_s']:g} s; the "
        f"first {results['settings']['warmup_s']} s are the warm-up.",
        "",
        "| requests | req/s | non-2xx | socket errors | p99 | RSS after warm-up | max | last "
        "| growth | slope | memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {wrk['requests']:,} | {wrk['rps']:,.0f} | {wrk['non_2xx']} | {wrk['socket_errors']} "
        f"| {wrk['p99_ms']:.2f} ms | {trend['rss_after_warmup_mib']} MiB "
        f"| {trend['rss_max_mib']} MiB | {trend['rss_last_mib']} MiB "
        f"| {trend['growth_mib']} MiB | {trend['slope_mib_per_min']} MiB/min | {verdict} |",
        "",
        "RSS by minute: "
        + ", ".join(f"{minute}: {mib:.0f}" for minute, mib in results["per_minute"])
        + " MiB.",
        f"Flat: growth after the warm-up under {FLAT_GROWTH_MIB:g} MiB and a slope under "
        f"{FLAT_SLOPE_MIB_PER_MIN:g} MiB/min. Machine: {results['machine'].get('cpu', '?')}, "
        f"load average at the end {results['machine'].get('loadavg_end', '?')}.",
    ]
    return "\n".join(lines)


def run(opts: Options, command: str) -> dict[str, Any]:
    wrk = bench_serving.ensure_wrk()
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-soak-"))
    try:
        (case,) = bench_serving.train_models(workdir, (opts.model,))
        request = case.request("ours", 1)
        script = workdir / "soak.lua"
        script.write_text(report.wrk_lua_script(request.body.decode(), request.content_type))
        port = free_port()
        argv = bench_serving.ours_command(
            opts.ours_bin, case, port, workdir / "cache",
            batching=bench_serving.ours_batching_defaults(), grpc_port=0,
        )  # fmt: skip
        srv = Server("ours", argv, port, request.path, dict(os.environ), workdir / "run",
                     workdir / "serve.log", metrics_path="/metrics")  # fmt: skip
        srv.start()
        try:
            srv.wait_first_prediction(
                request.body, bench_serving.prediction_checker(case.expected(1)),
                bench_serving.COLD_START_TIMEOUT_S, headers=request.headers,
            )  # fmt: skip
            assert srv.proc is not None
            samples: list[tuple[float, float]] = []
            done = threading.Event()
            t0 = time.monotonic()

            def sample() -> None:
                while not done.is_set():
                    assert srv.proc is not None
                    samples.append((time.monotonic() - t0, session_rss_kib(srv.proc.pid) / 1024))
                    done.wait(opts.sample_s)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            result, text = bench_serving.run_wrk(
                wrk, srv.url, script, opts.concurrency, opts.duration_s
            )
            done.set()
            sampler.join(timeout=10)
            if result is None:
                raise RuntimeError(f"wrk failed: {text[:500]}")
            alive = srv.alive()
        finally:
            srv.stop(grace_s=10)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not alive:
        raise RuntimeError("the server died during the soak")
    machine = bench_serving.machine_info()
    machine["loadavg_end"] = os.getloadavg()
    return {
        "date": started.strftime("%Y-%m-%d"),
        "started_utc": started.isoformat(timespec="seconds"),
        "command": command,
        "machine": machine,
        "settings": {
            "duration_s": opts.duration_s,
            "warmup_s": opts.warmup_s,
            "sample_s": opts.sample_s,
            "concurrency": opts.concurrency,
        },
        "model": {"name": case.name, "description": case.description},
        "wrk": {
            "requests": result.requests,
            "rps": result.rps,
            "non_2xx": result.non_2xx,
            "socket_errors": sum(result.socket_errors.values()),
            "p99_ms": result.p99_ms,
        },
        "samples": [(round(t, 1), round(m, 1)) for t, m in samples],
        "per_minute": per_minute(samples),
        "trend": rss_trend(samples, opts.warmup_s),
    }


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=600, help="seconds under wrk (600)")
    p.add_argument("--warmup", type=int, default=60, help="seconds before RSS is judged (60)")
    p.add_argument("--sample", type=float, default=5.0, help="seconds between RSS samples (5)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--model", default="churn", choices=MODELS)
    p.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "mlmodel-serve"))
    p.add_argument("--update-readme", action="store_true", help="copy the section into the README")
    p.add_argument("--from-json", default=None, help="run nothing: render an earlier results file")
    a = p.parse_args(argv)
    if a.duration <= a.warmup or a.warmup < 0 or a.sample <= 0 or a.concurrency < 1:
        p.error("--duration must exceed --warmup; --sample and --concurrency must be positive")
    return Options(a.duration, a.warmup, a.sample, a.concurrency, a.model, Path(a.ours_bin),
                   a.update_readme, Path(a.from_json) if a.from_json else None)  # fmt: skip


def main(argv: Sequence[str], command: str = "python benchmarks/run.py soak") -> int:
    opts = parse_args(argv)
    if opts.from_json is not None:
        results = json.loads(opts.from_json.read_text())
    else:
        if not opts.ours_bin.exists():
            print(f"{opts.ours_bin} does not exist", file=sys.stderr)
            return 2
        results = run(opts, command)
        out = report.save_results(RESULTS_DIR, "soak", results)
        print(f"# results: {out}", file=sys.stderr)
    markdown = render(results)
    print(markdown)
    if opts.update_readme:
        report.replace_block(README, BEGIN, END, markdown)
        print(f"# section copied into {README}", file=sys.stderr)
    return 0
