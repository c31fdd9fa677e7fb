"""Run the project's benchmarks: `python benchmarks/run.py [SUITE] [SUITE OPTIONS]`.

Suites: `serving` (the model server against KServe, MLServer and plain FastAPI; the
default). `python benchmarks/run.py serving --help` lists its options, e.g. `--quick`.
`operator` (MLModel applied -> Deployment against the apiserver's own create latency,
hundreds of models, the operator's memory): `python benchmarks/run.py operator --help`.
`forest` (the server's leaf tables against scikit-learn's forest predict, in one process).
`encodings` (one request to mlmodel-serve as V2 JSON, the V2 binary data extension and
gRPC, at 1 and 1,000 rows: `python benchmarks/run.py encodings --help`).
`decisions` (the decision log's cost: mlmodel-serve with it off, best-effort and required
side by side, against a real MinIO: `python benchmarks/run.py decisions --help`).
`node` (the lifecycle on a real node: apply -> first prediction, version switches and a
Pod deletion under load; needs root).
`soak` (mlmodel-serve under wrk for ten minutes, its RSS sampled: flat after the warm-up?
`python benchmarks/run.py soak --help`).
`fleet` (issue 17: the operator at fleet scale against the floor, in one run: a burst of
1,000 MLModels, steady state, memory beside unrelated objects, a fleet-wide change with a
rate limit, a restart: `python benchmarks/run.py fleet --help`; also `operator --fleet`).
`shadow` (mlmodel-serve alone against the same server mirroring to a candidate at sample
1.0 and 0.1: `python benchmarks/run.py shadow --help`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SUITES = (
    "serving",
    "operator",
    "fleet",
    "forest",
    "encodings",
    "decisions",
    "node",
    "soak",
    "shadow",
)


def main(argv: list[str]) -> int:
    suite = "serving"
    if argv and not argv[0].startswith("-"):
        suite, argv = argv[0], argv[1:]
    if suite not in SUITES:
        print(f"unknown suite {suite!r}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    command = " ".join(["python", "benchmarks/run.py", suite, *argv])
    if suite == "forest":
        from benchmarks.serving import bench_forest

        return bench_forest.main(argv, command=command)
    if suite == "encodings":
        from benchmarks.serving import bench_encodings

        return bench_encodings.main(argv, command=command)
    if suite == "decisions":
        from benchmarks.serving import bench_decisions

        return bench_decisions.main(argv, command=command)
    if suite == "shadow":
        from benchmarks.serving import bench_shadow

        return bench_shadow.main(argv, command=command)
    if suite == "soak":
        from benchmarks.serving import bench_soak

        return bench_soak.main(argv, command=command)
    if suite == "node":
        from benchmarks.node import bench_node

        return bench_node.main(argv, command=command)
    if suite == "fleet" or (suite == "operator" and "--fleet" in argv):
        from benchmarks.operator import bench_fleet

        return bench_fleet.main([a for a in argv if a != "--fleet"], command=command)
    if suite == "operator":
        from benchmarks.operator import bench_operator

        return bench_operator.main(argv, command=command)
    from benchmarks.serving import bench_serving

    return bench_serving.main(argv, command=command)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
