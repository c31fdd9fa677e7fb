#!/usr/bin/env bash
# Build both images (`make images`): the operator and the model server.
#   IMAGE_REGISTRY=ghcr.io/mlmodel-lifecycle IMAGE_TAG=0.1.0 hack/images.sh
# The defaults are the images manifests/operator and the operator's
# MLMODEL_SERVING_IMAGE name, so `kind load` (hack/kind-up.sh) needs no retagging.
#
# Two builders, the same unmodified Dockerfiles:
#   - Docker (or DOCKER=podman) when its engine answers: `docker build --pull`, as always;
#   - otherwise buildah (hack/buildah-images.sh, as root): no engine, the FROM image is a
#     local Debian bookworm base (debootstrap), and each image is also written as a
#     docker-archive tarball under ~/.cache/mlmodel-lifecycle/images/archives/, rebuilt
#     only when its inputs change. Extra arguments name images to build, e.g. `minio pause`.
#   hack/images.sh --docker | --buildah [SHORT...]   force one (or MLMODEL_IMAGE_BUILDER)
#   hack/images.sh --which                           print the builder that would be used
# The Dockerfiles are linted with hadolint by tests/unit/shipping/test_shipping_images.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/mlmodel-lifecycle}"
TAG="${IMAGE_TAG:-0.1.0}"
DOCKER="${DOCKER:-docker}"
BUILDER="${MLMODEL_IMAGE_BUILDER:-}"

which_only=0
case "${1:-}" in
  --docker) BUILDER=docker; shift ;;
  --buildah) BUILDER=buildah; shift ;;
  --which) which_only=1; shift ;;
  -*) echo "usage: $0 [--docker|--buildah|--which] [SHORT...]" >&2; exit 2 ;;
esac
if [[ -z "$BUILDER" ]]; then
  BUILDER=buildah
  if command -v "$DOCKER" >/dev/null && timeout --foreground 30 "$DOCKER" info >/dev/null 2>&1; then
    BUILDER=docker
  fi
fi
case "$BUILDER" in
  docker | buildah) ;;
  *) echo "images: MLMODEL_IMAGE_BUILDER must be docker or buildah, not '$BUILDER'" >&2; exit 2 ;;
esac
if [[ $which_only -eq 1 ]]; then echo "$BUILDER"; exit 0; fi

if [[ "$BUILDER" == buildah ]]; then
  [[ $# -gt 0 ]] || set -- mlmodel-operator mlmodel-serving
  IMAGE_REGISTRY="$REGISTRY" IMAGE_TAG="$TAG" exec "$ROOT/hack/buildah-images.sh" "$@"
fi

[[ $# -eq 0 ]] || { echo "images: with $DOCKER, only the two project images are built (got: $*)" >&2; exit 2; }
command -v "$DOCKER" >/dev/null || { echo "images: '$DOCKER' is not on the PATH" >&2; exit 1; }
timeout --foreground 30 "$DOCKER" info >/dev/null 2>&1 || { echo "images: the $DOCKER engine is not running" >&2; exit 1; }

build() {
  local name="$1" dockerfile="$2"
  echo "images: building $REGISTRY/$name:$TAG from $dockerfile"
  timeout --foreground 3600 "$DOCKER" build --pull -f "$ROOT/$dockerfile" -t "$REGISTRY/$name:$TAG" "$ROOT"
}

build mlmodel-operator operator/Dockerfile
build mlmodel-serving serving/Dockerfile
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$REGISTRY/mlmodel-" || true
