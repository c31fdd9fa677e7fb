#!/usr/bin/env bash
# Build (once) the real control-plane binaries from their Go modules into a cache keyed
# by component and version:  $MLMODEL_CACHE/bin/<component>-<version>/
# A component whose directory already holds its binaries is never rebuilt.
# Prometheus, promtool and shellcheck come from Debian's packages.
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.env
source "$HACK/versions.env"
CACHE="${MLMODEL_CACHE:-$HOME/.cache/mlmodel-lifecycle}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# run_build NAME VERSION BINARY... -- COMMAND...: runs COMMAND with $OUT set to a fresh
# staging directory, then moves it into place atomically so a killed build leaves no
# half-filled cache entry.
run_build() {
  local name="$1" version="$2"; shift 2
  local bins=()
  while [[ "$1" != "--" ]]; do bins+=("$1"); shift; done; shift
  local dest="$BIN/$name-$version" missing=0
  for b in "${bins[@]}"; do [[ -x "$dest/$b" ]] || missing=1; done
  if [[ $missing -eq 0 ]]; then log "$name $version: cached in $dest"; return 0; fi
  log "$name $version: building ..."
  local start=$SECONDS
  OUT="$(mktemp -d "$BIN/.$name-$version.XXXX")"
  export OUT
  if ! "$@"; then rm -rf "$OUT"; log "$name $version: FAILED"; return 1; fi
  rm -rf "$dest"; mv "$OUT" "$dest"
  log "$name $version: built in $((SECONDS - start))s -> $dest"
}

build_kubernetes() {
  local v="$KUBERNETES_VERSION" minor
  minor="$(echo "$v" | cut -d. -f2)"
  local pkg=k8s.io/component-base/version
  local ld="-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$HACK/go/kubernetes" && go build -trimpath -ldflags "$ld" -o "$OUT/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
}

build_etcd() {
  (cd "$HACK/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

# containerd 2.x for the real node (Debian's 1.6 lacks the CRI RuntimeConfig call the
# kubelet of Kubernetes 1.35 makes): the daemon, its runc shim and ctr (image import).
build_containerd() {
  local m=github.com/containerd/containerd/v2 v="$CONTAINERD_VERSION"
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w -X $m/version.Version=$v" \
    "$m/cmd/containerd@$v" "$m/cmd/containerd-shim-runc-v2@$v" "$m/cmd/ctr@$v"
}

# CoreDNS for the real node's pods (cluster.local only, nothing forwarded), built from a
# wrapper module with the few plugins it needs (hack/go/coredns).
build_coredns() {
  (cd "$HACK/go/coredns" && go build -trimpath -ldflags "-s -w" -o "$OUT/coredns" .)
}

build_minio() {
  GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
}

# The Prometheus operator's ServiceMonitor and PrometheusRule CRDs, from its Go module
# (the module proxy verifies the download against the checksum database), copied once
# into $CACHE/crds/prometheus-operator-<version>/ for the monitoring tests and the demo.
fetch_prometheus_operator_crds() {
  local v="$PROMETHEUS_OPERATOR_VERSION" dest="$CACHE/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
  local files=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
  local missing=0 f
  for f in "${files[@]}"; do [[ -f "$dest/$f" ]] || missing=1; done
  if [[ $missing -eq 0 ]]; then log "prometheus-operator CRDs $v: cached in $dest"; return 0; fi
  log "prometheus-operator CRDs $v: fetching the Go module ..."
  local dir staging work
  work="$(mktemp -d)"
  dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$v" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  rmdir "$work"
  [[ -n "$dir" && -d "$dir/example/prometheus-operator-crd" ]] || { log "prometheus-operator CRDs $v: no example/prometheus-operator-crd in the module"; return 1; }
  mkdir -p "$CACHE/crds"
  staging="$(mktemp -d "$CACHE/crds/.prometheus-operator-$v.XXXX")"
  for f in "${files[@]}"; do cp "$dir/example/prometheus-operator-crd/$f" "$staging/"; done
  rm -rf "$dest"; mv "$staging" "$dest"
  log "prometheus-operator CRDs $v: -> $dest"
}

# Debian packages the tests use: Prometheus + promtool, shellcheck for the scripts, and
# for the real node: runc, the CNI plugins, iptables and conntrack (kube-proxy), and
# buildah + debootstrap to build the images without a Docker engine.
install_debian_packages() {
  local missing=() pair
  for pair in prometheus:prometheus promtool:prometheus shellcheck:shellcheck runc:runc \
    /usr/lib/cni/bridge:containernetworking-plugins iptables:iptables conntrack:conntrack \
    buildah:buildah debootstrap:debootstrap; do
    local cmd="${pair%%:*}" pkg="${pair#*:}"
    if [[ "$cmd" == /* ]]; then [[ -x "$cmd" ]] && continue; else command -v "$cmd" >/dev/null && continue; fi
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "debian packages: installed ($(prometheus --version 2>&1 | head -1))"; return 0
  fi
  log "debian packages: installing ${missing[*]} ..."
  local start=$SECONDS sudo=()
  [[ "$(id -u)" -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Where systemd runs, the package starts a system Prometheus; the harness runs its own.
  log "debian packages: installed in $((SECONDS - start))s"
}

want="${*:-etcd kubernetes kwok containerd coredns minio debian prometheus-operator-crds}"
total=$SECONDS
for c in $want; do
  case "$c" in
    etcd) run_build etcd "$ETCD_VERSION" etcd -- build_etcd ;;
    kubernetes) run_build kubernetes "$KUBERNETES_VERSION" kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy -- build_kubernetes ;;
    coredns) run_build coredns "$COREDNS_VERSION" coredns -- build_coredns ;;
    containerd) run_build containerd "$CONTAINERD_VERSION" containerd containerd-shim-runc-v2 ctr -- build_containerd ;;
    kwok) run_build kwok "$KWOK_VERSION" kwok -- build_kwok ;;
    minio) run_build minio "$MINIO_VERSION" minio -- build_minio ;;
    debian) install_debian_packages ;;
    prometheus-operator-crds) fetch_prometheus_operator_crds ;;
    *) echo "unknown component: $c (accepted: etcd kubernetes kwok containerd coredns minio debian prometheus-operator-crds)" >&2; exit 2 ;;
  esac
done
log "all tools ready in $((SECONDS - total))s (cache: $BIN)"
