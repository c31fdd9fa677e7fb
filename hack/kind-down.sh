#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster made by hack/kind-up.sh, and the example
# manifests it wrote (with real digests) under the user's cache.
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-mlmodel}"
STATE="${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-lifecycle/kind-$CLUSTER"
command -v kind >/dev/null || { echo "kind-down: 'kind' is not on the PATH" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "kind-down: no kind cluster '$CLUSTER'"
fi
rm -rf "$STATE"
