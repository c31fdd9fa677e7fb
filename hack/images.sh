#!/usr/bin/env bash
# Build both images (`make images`): the operator and the model server.
#   IMAGE_REGISTRY=ghcr.io/mlmodel-lifecycle IMAGE_TAG=0.1.0 hack/images.sh
# The defaults are the images manifests/operator and the operator's
# MLMODEL_SERVING_IMAGE name, so `kind load` (hack/kind-up.sh) needs no retagging.
# Needs a Docker engine (or DOCKER=podman); untested in this project's CI, which has none.
# The Dockerfiles are linted with hadolint by tests/unit/shipping/test_images.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/mlmodel-lifecycle}"
TAG="${IMAGE_TAG:-0.1.0}"
DOCKER="${DOCKER:-docker}"

command -v "$DOCKER" >/dev/null || { echo "images: '$DOCKER' is not on the PATH" >&2; exit 1; }
"$DOCKER" info >/dev/null 2>&1 || { echo "images: the $DOCKER engine is not running" >&2; exit 1; }

build() {
  local name="$1" dockerfile="$2"
  echo "images: building $REGISTRY/$name:$TAG from $dockerfile"
  "$DOCKER" build --pull -f "$ROOT/$dockerfile" -t "$REGISTRY/$name:$TAG" "$ROOT"
}

build mlmodel-operator operator/Dockerfile
build mlmodel-serving serving/Dockerfile
"$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep "^$REGISTRY/mlmodel-" || true
