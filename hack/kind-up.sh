#!/usr/bin/env bash
# `make kind-up`: the whole story on a kind cluster, for a laptop with Docker.
#
#   1. create the kind cluster of kind-config.yaml (or reuse it)
#   2. build both images (hack/images.sh) and load them into the node: with Docker as
#      `docker-image`s; where hack/images.sh builds with buildah (no Docker engine answers,
#      or MLMODEL_IMAGE_BUILDER=buildah), from its docker-archive tarballs
#   3. optionally, the Prometheus operator stack (MLMODEL_KIND_MONITORING=1, needs helm)
#   4. install the CRDs, MinIO (laptop only) and the operator (manifests/); MinIO's setup
#      Job makes the buckets and the least-privilege keys: the operator's, and the example
#      namespace's (Secret mlmodel-s3-credentials in default); root stays with MinIO
#   5. train and upload the example model in the cluster (manifests/examples/upload),
#      under s3://models/default/, the example namespace's prefix
#   6. apply the example MLModel with the digest the Job printed, wait until it serves
#   7. port-forward its Service to 127.0.0.1 and make a V2 prediction with curl
#
# Settings (environment): KIND_CLUSTER_NAME (mlmodel), MLMODEL_KIND_MONITORING (0),
# MLMODEL_KIND_SKIP_BUILD (0: set 1 to load images you built yourself),
# MLMODEL_KIND_PORT (18080, the local end of the port-forward),
# KUBE_PROMETHEUS_STACK_VERSION (the chart version, pinned below).
# KIND_EXPERIMENTAL_PROVIDER (docker; kind's own setting, e.g. podman).
# Every wait has a time limit. Needs kind, kubectl, curl, the engine kind runs its node in
# (docker or podman), and helm for monitoring.
#
# Untested in this project's CI (no Docker engine there): kept correct by review and by
# the shellcheck linter; the manifests it applies are checked on a real apiserver by
# tests/integration/shipping, and the operator's lifecycle by tests/integration/controller.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-mlmodel}"
MONITORING="${MLMODEL_KIND_MONITORING:-0}"
SKIP_BUILD="${MLMODEL_KIND_SKIP_BUILD:-0}"
LOCAL_PORT="${MLMODEL_KIND_PORT:-18080}"
STACK_VERSION="${KUBE_PROMETHEUS_STACK_VERSION:-82.6.0}"
REGISTRY=ghcr.io/mlmodel-lifecycle
TAG=0.1.0
IMAGES=("$REGISTRY/mlmodel-operator:$TAG" "$REGISTRY/mlmodel-serving:$TAG")
EXAMPLE_NS=default
STATE="${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-lifecycle/kind-$CLUSTER"

step() { printf '\n=== kind-up: %s\n' "$*"; }
die() { echo "kind-up: $*" >&2; exit 1; }

PROVIDER="${KIND_EXPERIMENTAL_PROVIDER:-docker}"
need=("$PROVIDER" kind kubectl curl)
[[ "$MONITORING" == 1 ]] && need+=(helm)
for tool in "${need[@]}"; do
  command -v "$tool" >/dev/null || die "'$tool' is not on the PATH"
done
timeout --foreground 30 "$PROVIDER" info >/dev/null 2>&1 || die "the $PROVIDER engine is not running (kind runs its node in it)"

step "cluster '$CLUSTER'"
if kind get clusters | grep -qx "$CLUSTER"; then
  echo "exists; reusing it"
else
  kind create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" --wait 180s
fi
k() { kubectl --context "kind-$CLUSTER" "$@"; }

BUILDER="$("$ROOT/hack/images.sh" --which)"
step "images (built with $BUILDER)"
if [[ "$BUILDER" == docker ]]; then
  if [[ "$SKIP_BUILD" == 1 ]]; then
    echo "MLMODEL_KIND_SKIP_BUILD=1: loading ${IMAGES[*]} as they are"
  else
    IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" "$ROOT/hack/images.sh" --docker
  fi
  timeout --foreground 900 kind load docker-image --name "$CLUSTER" "${IMAGES[@]}"
else
  # hack/buildah-images.sh prints `archive<TAB>short<TAB>name<TAB>path` per image
  if [[ "$SKIP_BUILD" == 1 ]]; then
    echo "MLMODEL_KIND_SKIP_BUILD=1: loading the archives as they are"
    archives="$(IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" "$ROOT/hack/buildah-images.sh" --list mlmodel-operator mlmodel-serving)"
  else
    archives="$(IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" "$ROOT/hack/images.sh" --buildah mlmodel-operator mlmodel-serving)"
  fi
  while IFS=$'\t' read -r kind_of _ name path; do
    [[ "$kind_of" == archive ]] || continue
    [[ -f "$path" ]] || die "no archive of $name at $path"
    echo "loading $name from $path"
    timeout --foreground 900 kind load image-archive --name "$CLUSTER" "$path"
  done <<<"$archives"
fi

if [[ "$MONITORING" == 1 ]]; then
  step "Prometheus operator stack (kube-prometheus-stack $STACK_VERSION, namespace monitoring)"
  # Select every ServiceMonitor and PrometheusRule, not only the chart's own; Grafana on
  # NodePort 30300 = 127.0.0.1:3000 (kind-config.yaml), its sidecar loads our dashboard.
  helm upgrade --install kube-prometheus-stack \
    oci://ghcr.io/prometheus-community/charts/kube-prometheus-stack \
    --version "$STACK_VERSION" --kube-context "kind-$CLUSTER" \
    --namespace monitoring --create-namespace \
    --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
    --set prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false \
    --set grafana.service.type=NodePort --set grafana.service.nodePort=30300 \
    --wait --timeout 10m
else
  echo "(set MLMODEL_KIND_MONITORING=1 to install the Prometheus operator stack first)"
fi

step "CRDs, MinIO (laptop only) and the operator"
k apply --server-side -k "$ROOT/crds"
# `kubectl wait` fails outright while a new CRD has no status yet: retry, 60 s at most
crds=(crd/mlmodels.ml.lifecycle.io crd/clusterkopfpeerings.kopf.dev crd/kopfpeerings.kopf.dev)
for _ in $(seq 1 12); do
  k wait --for=condition=Established --timeout=5s "${crds[@]}" >/dev/null 2>&1 && break
  sleep 1
done
k wait --for=condition=Established --timeout=5s "${crds[@]}"
# the archive finalizer at creation (crds/admission), where the apiserver serves
# MutatingAdmissionPolicy (kind-config.yaml turns it on); without it the operator adds it
if k api-resources --api-group=admissionregistration.k8s.io -o name | grep -q '^mutatingadmissionpolicies'; then
  k apply --server-side -k "$ROOT/crds/admission"
else
  echo "no MutatingAdmissionPolicy API here: the operator adds the archive finalizer itself"
fi
k apply --server-side -k "$ROOT/manifests"
# the setup Job's template cannot change, and re-running it is safe (keys are kept)
k -n mlmodel-system delete job minio-buckets --ignore-not-found --wait=true --timeout=60s
k apply --server-side -k "$ROOT/manifests/minio"
if [[ "$MONITORING" == 1 ]]; then
  k apply --server-side -k "$ROOT/manifests/operator/prometheus"
  k apply --server-side -k "$ROOT/manifests/monitoring"
fi
k -n mlmodel-system rollout status deployment/minio --timeout=180s
k -n mlmodel-system wait --for=condition=Complete --timeout=300s job/minio-buckets
k -n mlmodel-system rollout status deployment/mlmodel-operator --timeout=180s

step "train and upload the example model (in the cluster)"
# a Job's template cannot change: run it afresh each time
k -n mlmodel-system delete job upload-example-models --ignore-not-found --wait=true --timeout=60s
k apply -k "$ROOT/manifests/examples/upload"
k -n mlmodel-system wait --for=condition=Complete --timeout=600s job/upload-example-models
digests="$(k -n mlmodel-system logs job/upload-example-models | grep '^digest churn ' || true)"
digest_of() { awk -v v="$1" '$3 == v { print $4 }' <<<"$digests"; }
d1="$(digest_of 1)"; d2="$(digest_of 2)"
[[ "$d1" =~ ^[0-9a-f]{64}$ && "$d2" =~ ^[0-9a-f]{64}$ ]] \
  || die "the upload Job printed no digests; see: kubectl -n mlmodel-system logs job/upload-example-models"
echo "churn v1 sha256 $d1"
echo "churn v2 sha256 $d2"

step "the example MLModel (namespace $EXAMPLE_NS)"
# The serving pods read the object store with the Secret mlmodel-s3-credentials of their
# namespace: the namespace's own key (read s3://models/default/*, write its decision
# records), which MinIO's setup Job (manifests/minio/buckets-job.yaml) wrote.
k -n "$EXAMPLE_NS" get secret mlmodel-s3-credentials >/dev/null \
  || die "no Secret mlmodel-s3-credentials in $EXAMPLE_NS; see: kubectl -n mlmodel-system logs job/minio-buckets"
mkdir -p "$STATE"
for v in 1 2; do
  digest="$d1"; [[ "$v" == 2 ]] && digest="$d2"
  sed -E "s/sha256: [0-9a-f]{64}/sha256: $digest/" "$ROOT/manifests/examples/churn-v$v.yaml" \
    >"$STATE/churn-v$v.yaml"
done
k apply -f "$STATE/churn-v1.yaml"
k -n "$EXAMPLE_NS" wait mlmodel/churn --for=jsonpath='{.status.phase}'=Serving --timeout=300s
k -n "$EXAMPLE_NS" get mlmodel churn -o wide

step "a prediction through the Service (port-forward to 127.0.0.1:$LOCAL_PORT)"
k -n "$EXAMPLE_NS" port-forward --address 127.0.0.1 svc/churn "$LOCAL_PORT:8080" >"$STATE/port-forward.log" 2>&1 &
pf=$!
trap 'kill "$pf" 2>/dev/null || true' EXIT
base="http://127.0.0.1:$LOCAL_PORT"
for _ in $(seq 1 30); do
  curl -fsS --max-time 2 "$base/v2/health/ready" >/dev/null 2>&1 && break
  kill -0 "$pf" 2>/dev/null || die "port-forward exited: $(cat "$STATE/port-forward.log")"
  sleep 1
done
curl -fsS --max-time 2 "$base/v2/health/ready" >/dev/null || die "the model is not ready at $base"
curl -fsS --max-time 10 -H 'content-type: application/json' "$base/v2/models/churn/infer" -d '{
  "inputs": [{"name": "input-0", "shape": [1, 8], "datatype": "FP64",
              "data": [0.2, -1.1, 0.7, 1.4, -0.3, 0.9, -0.5, 0.1]}],
  "outputs": [{"name": "predict"}, {"name": "predict_proba"}]}'
echo

step "done"
cat <<EOF
The operator serves churn v1 in namespace $EXAMPLE_NS. Next:
  kubectl --context kind-$CLUSTER apply -f $STATE/churn-v2.yaml   # roll to v2
  kubectl --context kind-$CLUSTER -n $EXAMPLE_NS get mlm churn -w          # switch, retire, archive
  kubectl --context kind-$CLUSTER -n $EXAMPLE_NS port-forward svc/churn $LOCAL_PORT:8080
EOF
[[ "$MONITORING" == 1 ]] && echo "  Grafana: http://127.0.0.1:3000 (dashboard 'MLModel')"
echo "Remove everything: make kind-down"
