#!/usr/bin/env bash
# Create the kind cluster of kind-config.yaml and install the MLModel CRD into it.
# Needs Docker and kind on the PATH. Untested in this project's CI (no Docker engine
# there); the tests run against the local control plane of hack/build-tools.sh instead.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-mlmodel}"

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "kind-up: '$tool' is not on the PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-up: the Docker engine is not running" >&2; exit 1; }

if kind get clusters | grep -qx "$CLUSTER"; then
  echo "kind-up: cluster '$CLUSTER' exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 120s
fi
kubectl --context "kind-$CLUSTER" apply --server-side -k "$ROOT/crds"
kubectl --context "kind-$CLUSTER" wait --for=condition=Established --timeout=60s crd/mlmodels.ml.lifecycle.io
echo "kind-up: cluster '$CLUSTER' is ready (kubectl --context kind-$CLUSTER get mlm -A)"
