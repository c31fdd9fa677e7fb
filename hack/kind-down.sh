#!/usr/bin/env bash
# Delete the kind cluster made by hack/kind-up.sh.
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-mlmodel}"
command -v kind >/dev/null || { echo "kind-down: 'kind' is not on the PATH" >&2; exit 1; }
kind delete cluster --name "$CLUSTER"
