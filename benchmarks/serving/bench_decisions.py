"""The decision log's cost: mlmodel-serve with it off, on (best-effort) and on (required).

`python benchmarks/run.py decisions [--duration S] [--rounds N] [--quick] [--update-readme]`

Issue 15's target: with every inference request recorded, the small model's throughput
at c=32 stays within 20% of the log off (req/s ratio >= 0.80), and memory stays bounded
by the queue. The script

1. trains the serving benchmark's small numeric model (`iris`) and its DataFrame
   Pipeline (`churn`), and sends each the serving benchmark's V2 JSON body of one row;
2. starts a real MinIO on 127.0.0.1 (the harness's `MinioServer`), one bucket per
   model and logging server;
3. per model, starts three `mlmodel-serve` side by side, each with the serving
   benchmark's batching defaults and no gRPC: `off`, `best-effort`
   (`MLMODEL_DECISION_LOG=true`) and `required` (`MLMODEL_DECISION_LOG_MODE=required`),
   the log's other settings as shipped;
4. drives them with wrk at c=32, interleaved (off, best-effort, required, off, ...) for
   --rounds rounds, each run after a warm-up; the median run per server is reported, and
   the ratio to `off` is the median of the ratios within a round;
5. scrapes each server's counters, stops it with SIGTERM (which writes what is queued)
   and reads the bucket back: every inference request the server counted must be one
   record (`mlmodel_requests_total` of the infer route against the Parquet rows, and
   as many distinct request ids).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.serving import bench_serving, report
from benchmarks.serving.bench_serving import ModelCase
from benchmarks.serving.procs import Server, session_cpu_s

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"
README = REPO / "benchmarks" / "README.md"
BEGIN = "<!-- decisions:begin -->"
END = "<!-- decisions:end -->"
OFF, BEST_EFFORT, REQUIRED = "off", "best-effort", "required"
CONFIGS = (OFF, BEST_EFFORT, REQUIRED)
MODELS = ("iris", "churn")
TARGET_RATIO = 0.80
TARGET_MODEL = "iris"  # issue 15: the small model at c=32
INFER_ROUTE = "/infer"  # the V2 infer route's template ends so
STOP_GRACE_S = 60.0  # drain (25 s at most) + the log's own flush (4 s), with room


# ------------------------------------------------------------------------- pure parts


def metric_total(text: str, sample: str, **labels_contain: str) -> float | None:
    """Sum of the samples named `sample` whose labels contain the given texts, or None.

    ``metric_total(t, "mlmodel_requests_total", route="/infer")`` adds up every status
    code of the infer route.
    """
    from prometheus_client.parser import text_string_to_metric_families

    found = False
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name != sample:
                continue
            if all(v in s.labels.get(k, "") for k, v in labels_contain.items()):
                found = True
                total += s.value
    return total if found else None


def median_runs(runs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """One run per (model, config): the median by req/s over the rounds."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        if "rps" in r:
            grouped.setdefault((r["model"], r["config"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in grouped.items()}


def ratio_to_off(runs: Iterable[Mapping[str, Any]], model: str, config: str) -> float | None:
    """Median over rounds of req/s(config) / req/s(off) within the same round.

    The runs of one round are side by side in time, so their ratio cancels most of the
    machine's drift; rounds missing either run are left out.
    """
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["model"] == model and "rps" in r:
            by_round.setdefault(r["round"], {})[r["config"]] = r["rps"]
    ratios = [
        q
        for rs in by_round.values()
        if (q := report.ratio(rs.get(config), rs.get(OFF))) is not None
    ]
    return statistics.median(ratios) if ratios else None


def cpu_per_1k(
    runs: Iterable[Mapping[str, Any]], model: str, config: str, key: str = "server_cpu_s"
) -> float | None:
    """CPU seconds per 1,000 requests over every measured run of (model, config)."""
    cpu = requests = 0.0
    for r in runs:
        if r["model"] == model and r["config"] == config and "rps" in r and key in r:
            cpu += r[key]
            requests += r["requests"]
    return 1000.0 * cpu / requests if requests else None


def records_check(server: Mapping[str, Any]) -> str:
    """'ok' when the bucket holds one record per inference request answered 200, else why not.

    Compared on status 200: the 503s answered while the model (and so the log) was still
    loading are counted by the server but are not decisions, and a required-mode refusal
    is counted but never recorded. Request ids must be distinct too.
    """
    bucket = server.get("bucket")
    answered = server.get("answered_ok")
    if bucket is None or answered is None:
        return "not checked"
    problems = []
    if bucket["ok_records"] != answered:
        problems.append(f"{bucket['ok_records']:,} records of status 200 for {answered:,.0f}")
    if bucket["distinct_ids"] != bucket["records"]:
        problems.append(f"{bucket['distinct_ids']:,} distinct ids in {bucket['records']:,}")
    return "; ".join(problems) or "ok"


def bytes_per_record(server: Mapping[str, Any]) -> float | None:
    bucket = server.get("bucket")
    if not bucket or not bucket["records"]:
        return None
    return float(bucket["bytes"]) / float(bucket["records"])


def render(results: Mapping[str, Any]) -> str:
    """The markdown section: command, date, machine, a table, one sentence per finding."""
    runs = results["runs"]
    medians = median_runs(runs)
    m, s = results["machine"], results["settings"]
    loads = sorted(r["loadavg1"] for r in runs if "loadavg1" in r)
    log = s["decision_log"]
    lines = [
        f"### Decision log benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']};"
        " load average (1 min) at the start of each run: "
        + (
            f"min {loads[0]:.2f}, median {statistics.median(loads):.2f}, max {loads[-1]:.2f}"
            if loads
            else "-"
        )
        + "  ",
        f"c={s['concurrency']}, one row per request, {s['duration_s']} s per run after a"
        f" {s['warmup_s']} s warm-up, {s['rounds']} round(s) interleaved"
        f" ({', '.join(CONFIGS)}); batching {s['batching'][0]} rows / {s['batching'][1]:g} ms;"
        f" the log as shipped: a file every {log['flush_seconds']:g} s or"
        f" {log['max_records']:,} records, queue of {log['queue_records']:,} records; MinIO on"
        " the same machine  ",
        "req/s, p50 and p99: the median run; vs off: the median of the ratios within a round;"
        " CPU: every measured run's CPU seconds over its requests; RSS: after the last run;"
        " records: the bucket read back after SIGTERM, against the server's count of infer"
        " requests answered 200 just before it",
        "",
    ]
    table = []
    for model, info in results["models"].items():
        for config in CONFIGS:
            r = medians.get((model, config))
            srv = info["servers"].get(config, {})
            if r is None:
                continue
            logged = config != OFF
            table.append(
                [
                    model,
                    config,
                    report.fmt_num(r["rps"]),
                    report.fmt_ms(r["p50_ms"]),
                    report.fmt_ms(r["p99_ms"]),
                    str(r.get("errors", 0)),
                    "1.00x" if not logged else report.fmt_ratio(ratio_to_off(runs, model, config)),
                    report.fmt_num(cpu_per_1k(runs, model, config), 3),
                    report.fmt_num(cpu_per_1k(runs, model, config, "store_cpu_s"), 3)
                    if logged
                    else "-",
                    report.fmt_num(srv.get("rss_mb"), 1),
                    report.fmt_num(srv.get("bucket", {}).get("records")) if logged else "-",
                    report.fmt_num(srv.get("dropped")) if logged else "-",
                    report.fmt_num(bytes_per_record(srv), 1) if logged else "-",
                    records_check(srv) if logged else "-",
                ]
            )
    lines += [
        report.markdown_table(
            [
                "model",
                "decision log",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "vs off",
                "server CPU s / 1k req",
                "MinIO CPU s / 1k req",
                "RSS MiB",
                "records in bucket",
                "dropped",
                "B / record",
                "records = answered 200",
            ],
            table,
        ),
        "",
        *(f"- {f}" for f in findings(results)),
        "",
    ]
    return "\n".join(lines)


def findings(results: Mapping[str, Any]) -> list[str]:
    """One sentence per finding, per model. The target is the small model's."""
    runs = results["runs"]
    capacity = results["settings"]["decision_log"]["queue_records"]
    out = []
    for model, info in results["models"].items():
        servers = info["servers"]
        ratios = {c: ratio_to_off(runs, model, c) for c in (BEST_EFFORT, REQUIRED)}
        known = [v for v in ratios.values() if v is not None]
        if known:
            text = (
                f"{model}: with every request recorded the server keeps"
                f" {fmt_ratio3(ratios[BEST_EFFORT])} (best-effort) and"
                f" {fmt_ratio3(ratios[REQUIRED])} (required) the req/s of the log off"
            )
            if model == TARGET_MODEL:
                verdict = "met" if min(known) >= TARGET_RATIO else "MISSED"
                text += f"; target >= {TARGET_RATIO:.2f}x: **{verdict}**"
            out.append(text + ".")
        off_cpu = cpu_per_1k(runs, model, OFF)
        on_cpu = cpu_per_1k(runs, model, BEST_EFFORT)
        store_cpu = cpu_per_1k(runs, model, BEST_EFFORT, "store_cpu_s")
        if off_cpu is not None and on_cpu is not None:
            out.append(
                f"{model}: the log costs the server {on_cpu - off_cpu:+.3f} CPU s per 1,000"
                f" requests ({on_cpu:.3f} against {off_cpu:.3f}, best-effort), and MinIO"
                f" {report.fmt_num(store_cpu, 3)} on the same machine."
            )
        rss = {c: servers.get(c, {}).get("rss_mb") for c in CONFIGS}
        queues = [
            r["queue_after"]
            for r in runs
            if r["model"] == model and r.get("queue_after") is not None
        ]
        if rss[OFF] is not None and rss[BEST_EFFORT] is not None:
            out.append(
                f"{model}: RSS after the runs {rss[OFF]:.0f} MiB off,"
                f" {rss[BEST_EFFORT]:.0f} MiB best-effort ({rss[BEST_EFFORT] - rss[OFF]:+.0f}),"
                f" {report.fmt_num(rss[REQUIRED])} MiB required; the queue held at most"
                f" {max(queues, default=0):,.0f} records at the end of a run (capacity"
                f" {capacity:,})."
            )
        checks = {c: records_check(servers.get(c, {})) for c in (BEST_EFFORT, REQUIRED)}
        if all(v == "ok" for v in checks.values()):
            total = sum(servers[c]["bucket"]["records"] for c in checks)
            dropped = sum(servers[c].get("dropped") or 0 for c in checks)
            out.append(
                f"{model}: after SIGTERM the buckets hold exactly one record per inference"
                f" request answered 200 ({total:,} records, every request id once;"
                f" {dropped:,.0f} dropped)."
            )
        else:
            out.append(
                f"{model}: records in the bucket against requests answered: "
                + "; ".join(f"{c}: {v}" for c, v in checks.items())
                + "."
            )
        sizes = [b for c in (BEST_EFFORT, REQUIRED) if (b := bytes_per_record(servers.get(c, {})))]
        if sizes:
            out.append(
                f"{model}: a record takes {statistics.fmean(sizes):.0f} bytes in the bucket"
                " (zstd Parquet files, inputs and outputs included)."
            )
    return out


def fmt_ratio3(x: float | None) -> str:
    """A ratio with three digits, so that one just under the target does not read 0.80x."""
    return "-" if x is None else f"{x:.3f}x"


# ------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class Options:
    duration_s: int
    warmup_s: int
    rounds: int
    concurrency: int
    models: tuple[str, ...]
    ours_bin: Path
    update_readme: bool
    from_json: Path | None
    keep_workdir: bool


def server_env(config: str, store: Any, bucket: str) -> dict[str, str]:
    """The environment of one server: ours without any MLMODEL_* of this shell, plus the
    decision log's settings when it is on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLMODEL_")}
    if config == OFF:
        return env
    return env | {
        "MLMODEL_DECISION_LOG": "true",
        "MLMODEL_DECISION_LOG_BUCKET": bucket,
        "MLMODEL_DECISION_LOG_MODE": config,
        "MLMODEL_S3_ENDPOINT": store.endpoint,
        "MLMODEL_S3_ACCESS_KEY": store.access_key,
        "MLMODEL_S3_SECRET_KEY": store.secret_key,
    }


def bucket_name(model: str, config: str) -> str:
    return f"bench-{model}-{config}"


def bucket_stats(client: Any, bucket: str) -> dict[str, int]:
    """Objects, Parquet rows, distinct request ids and bytes of everything in `bucket`."""
    from mlmodel_serving.decisions import read_table

    objects = records = ok_records = size = 0
    ids: set[str] = set()
    for obj in client.list_objects(bucket, recursive=True):
        response = client.get_object(bucket, obj.object_name)
        try:
            data = response.read()
        finally:
            response.close()
            response.release_conn()
        table = read_table(data)
        objects += 1
        size += len(data)
        records += table.num_rows
        ok_records += table.column("status").to_pylist().count(200)
        ids.update(table.column("request_id").to_pylist())
    return {
        "objects": objects,
        "records": records,
        "ok_records": ok_records,
        "distinct_ids": len(ids),
        "bytes": size,
    }


def scrape_log(srv: Server) -> dict[str, float | None]:
    """The server's own counts: infer requests answered, and the decision log's series."""
    text = srv.scrape_metrics()
    return {
        "answered": metric_total(text, "mlmodel_requests_total", route=INFER_ROUTE),
        "answered_ok": metric_total(text, "mlmodel_requests_total", route=INFER_ROUTE, code="200"),
        "written": metric_total(text, "mlmodel_decisions_written_total"),
        "dropped": metric_total(text, "mlmodel_decisions_dropped_total"),
        "refused": metric_total(text, "mlmodel_decisions_refused_total"),
        "flush_failures": metric_total(text, "mlmodel_decision_flush_failures_total"),
        "bytes_written": metric_total(text, "mlmodel_decision_bytes_total"),
        "flushes": metric_total(text, "mlmodel_decision_flush_seconds_count"),
        "flush_seconds_sum": metric_total(text, "mlmodel_decision_flush_seconds_sum"),
        "queue": metric_total(text, "mlmodel_decision_queue_records"),
    }


def bench_model(
    case: ModelCase, opts: Options, store: Any, workdir: Path, wrk: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Three servers of one model side by side, interleaved runs, then the bucket check."""
    print(f"# model {case.name}: {case.description}", file=sys.stderr)
    request = case.request(OFF, 1)
    script = workdir / f"{case.name}.lua"
    script.write_text(report.wrk_lua_script(request.body.decode(), request.content_type))
    batching = bench_serving.ours_batching_defaults()
    info: dict[str, Any] = {
        "description": case.description,
        "request_b1": request.body[:600].decode(),
        "servers": {},
    }
    runs: list[dict[str, Any]] = []
    live: dict[str, Server] = {}
    client = store.client()
    try:
        for config in CONFIGS:
            bucket = bucket_name(case.name, config)
            if config != OFF:
                client.make_bucket(bucket)
            env = server_env(config, store, bucket)
            cold = bench_serving.start_ours_beside(
                config, case, request, opts.ours_bin, workdir, env, live, batching=batching
            )
            info["servers"][config] = {"cold_start_s": round(cold, 3), "argv": live[config].argv}
            print(f"#   {config}: first prediction {cold:.2f}s after start", file=sys.stderr)
        assert store.process is not None and store.process.popen is not None
        store_pid = store.process.popen.pid
        for rnd in range(opts.rounds):
            for config in CONFIGS:
                srv = live[config]
                if not srv.alive():
                    raise RuntimeError(f"{case.name} {config} died:\n{srv.log_tail()}")
                assert srv.proc is not None
                bench_serving.run_wrk(wrk, srv.url, script, opts.concurrency, opts.warmup_s)
                bench_serving.drain(srv, case)
                load0 = os.getloadavg()[0]
                cpu0, store0 = session_cpu_s(srv.proc.pid), session_cpu_s(store_pid)
                res, text = bench_serving.run_wrk(
                    wrk, srv.url, script, opts.concurrency, opts.duration_s
                )
                queue = scrape_log(srv)["queue"] if config != OFF else None
                bench_serving.drain(srv, case)
                entry: dict[str, Any] = {
                    "model": case.name,
                    "config": config,
                    "round": rnd,
                    "loadavg1": load0,
                    "server_cpu_s": session_cpu_s(srv.proc.pid) - cpu0,
                    "store_cpu_s": session_cpu_s(store_pid) - store0,
                    "queue_after": queue,
                }
                if res is None:
                    entry["failed"] = text[-2000:]
                    print(f"#   {config}: wrk failed: {text[:200]}", file=sys.stderr)
                else:
                    entry.update(res.to_dict())
                    print(
                        f"#   {case.name} round {rnd} {config:12s} {res.rps:9.1f} req/s"
                        f" p50 {res.p50_ms:7.2f} ms p99 {res.p99_ms:7.2f} ms"
                        f" errors {res.errors} queue {queue if queue is not None else '-'}",
                        file=sys.stderr,
                    )
                runs.append(entry)
        # The last counts, then SIGTERM: the server drains and writes what is queued.
        for config, srv in live.items():
            final = info["servers"][config]
            final["rss_mb"] = round(srv.rss_mb(), 1)
            final.update(scrape_log(srv))
            assert srv.proc is not None
            t0 = time.monotonic()
            srv.stop(grace_s=STOP_GRACE_S)
            final["stop_s"] = round(time.monotonic() - t0, 2)
            final["exit_code"] = srv.proc.returncode
            if config != OFF:
                final["bucket"] = bucket_stats(client, bucket_name(case.name, config))
                print(
                    f"#   {config}: answered {final['answered']:.0f}, bucket"
                    f" {final['bucket']}, check: {records_check(final)}",
                    file=sys.stderr,
                )
    finally:
        for srv in live.values():
            srv.stop(grace_s=STOP_GRACE_S)
    return info, runs


def run(opts: Options, command: str) -> dict[str, Any]:
    from mlmodel_operator.localcluster import MinioServer
    from mlmodel_serving import decisionlog

    wrk = bench_serving.ensure_wrk()
    started = dt.datetime.now(dt.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="mlmodel-bench-decisions-"))
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
            "batching": list(bench_serving.ours_batching_defaults()),
            "decision_log": {
                "flush_seconds": decisionlog.DEFAULT_FLUSH_SECONDS,
                "max_records": decisionlog.DEFAULT_MAX_RECORDS,
                "queue_records": decisionlog.DEFAULT_QUEUE_RECORDS,
            },
            "niceness": os.getpriority(os.PRIO_PROCESS, 0),
        },
        "models": {},
        "runs": [],
    }
    store = MinioServer(workdir / "minio")
    finished = False
    try:
        store.start()
        for case in bench_serving.train_models(workdir, opts.models):
            info, runs = bench_model(case, opts, store, workdir, wrk)
            results["models"][case.name] = info
            results["runs"] += runs
        finished = True
    finally:
        store.stop()
        if finished and not opts.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"# logs and MinIO's data left in {workdir}", file=sys.stderr)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["finished_utc"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return results


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench_decisions", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=None, help="seconds per run (15; --quick 5)")
    p.add_argument("--warmup", type=int, default=None, help="seconds of warm-up (3; --quick 1)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3; --quick 1)")
    p.add_argument("--quick", action="store_true", help="a smoke run, not for the README")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    p.add_argument("--ours-bin", default=str(REPO / ".venv" / "bin" / "mlmodel-serve"))
    p.add_argument("--update-readme", action="store_true", help="copy the section into the README")
    p.add_argument("--from-json", default=None, help="run nothing: render an earlier results file")
    p.add_argument("--keep-workdir", action="store_true", help="keep the logs and MinIO's data")
    a = p.parse_args(argv)
    quick = {"duration": 5, "warmup": 1, "rounds": 1}
    full = {"duration": 15, "warmup": 3, "rounds": 3}
    values = {k: getattr(a, k) or (quick if a.quick else full)[k] for k in full}
    if min(values.values()) < 1 or a.concurrency < 1:
        p.error("--duration, --warmup, --rounds and --concurrency must be >= 1")
    models = tuple(m for m in a.models.split(",") if m)
    if not models or set(models) - set(MODELS):
        p.error(f"--models {a.models!r}: known models are {', '.join(MODELS)}")
    return Options(
        duration_s=values["duration"],
        warmup_s=values["warmup"],
        rounds=values["rounds"],
        concurrency=a.concurrency,
        models=models,
        ours_bin=Path(a.ours_bin),
        update_readme=a.update_readme,
        from_json=Path(a.from_json) if a.from_json else None,
        keep_workdir=a.keep_workdir,
    )


def main(argv: Sequence[str], command: str = "python benchmarks/run.py decisions") -> int:
    opts = parse_args(argv)
    if opts.from_json is not None:
        results = json.loads(opts.from_json.read_text())
    else:
        if not opts.ours_bin.exists():
            print(f"{opts.ours_bin} does not exist", file=sys.stderr)
            return 2
        results = run(opts, command)
        out = report.save_results(RESULTS_DIR, "decisions", results)
        print(f"# results: {out}", file=sys.stderr)
    markdown = render(results)
    print(markdown)
    if opts.update_readme:
        report.replace_block(README, BEGIN, END, markdown)
        print(f"# section copied into {README}", file=sys.stderr)
    return 0
