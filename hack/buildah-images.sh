#!/usr/bin/env bash
# The project's images without a Docker engine, with buildah, and a docker-archive tarball
# of each for containerd (`ctr -n k8s.io images import`) or kind (`kind load image-archive`):
#
#   mlmodel-operator  $IMAGE_REGISTRY/mlmodel-operator:$IMAGE_TAG  operator/Dockerfile (unmodified)
#   mlmodel-serving   $IMAGE_REGISTRY/mlmodel-serving:$IMAGE_TAG   serving/Dockerfile (unmodified)
#   minio             localhost/mlmodel/minio:$MINIO_VERSION      the MinIO binary of hack/build-tools.sh
#   pause             localhost/mlmodel/pause:1.0                 hack/go/pause, the Pods' sandbox
#
#   hack/buildah-images.sh [SHORT...]         build what changed (default: all four)
#   hack/buildah-images.sh --list [SHORT...]  the archives, without building
#   hack/buildah-images.sh --keys [SHORT...]  the input hash of each image
#
# stdout carries one line per image, `archive<TAB>short<TAB>name<TAB>path`; the log goes to
# stderr. Archives: $MLMODEL_CACHE/images/archives/<short>.tar, each with <short>.stamp, the
# hash of its inputs (Dockerfile, requirements, the source trees the Dockerfile copies,
# pyproject.toml and README.md for the operator, the base's key, this script, the name).
# An archive whose stamp matches is not rebuilt: a run with nothing changed takes about a
# second and starts no buildah.
#
# The Dockerfiles' `FROM python:3.11.7-slim-bookworm` is the Debian base of
# hack/debian-base.sh (Debian's Python 3.11.2), tagged under that name in a buildah storage
# of our own ($MLMODEL_CACHE/buildah; overlay driver, vfs where overlay cannot mount), so
# nothing is pulled (--pull=never). The RUN steps reach the package index as this
# machine's pip does: its pip settings (index, trusted hosts, CA bundle, proxy, timeout;
# from the pip config files and PIP_* variables) are mounted read-only at /etc/xdg/pip for
# the build only, so they are in no image and no cache key. Needs root, buildah,
# debootstrap (hack/build-tools.sh debian), Go (the pause program) and python3.
# Every step is logged with its time and has a time limit; a failing step is named with
# the end of its log (full logs in $MLMODEL_CACHE/images/logs/).
set -euo pipefail

HACK="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HACK/.." && pwd)"
SELF="$HACK/$(basename "${BASH_SOURCE[0]}")"
# shellcheck source=hack/versions.env
source "$HACK/versions.env"
CACHE="${MLMODEL_CACHE:-$HOME/.cache/mlmodel-lifecycle}"
IMAGES="$CACHE/images"
ARCHIVES="$IMAGES/archives"
LOGS="$IMAGES/logs"
STORE="${MLMODEL_BUILDAH_ROOT:-$CACHE/buildah}"
REGISTRY="${IMAGE_REGISTRY:-ghcr.io/mlmodel-lifecycle}"
TAG="${IMAGE_TAG:-0.1.0}"
PAUSE_VERSION=1.0
ALL=(mlmodel-operator mlmodel-serving minio pause)
BUILD_TIMEOUT="${MLMODEL_IMAGE_BUILD_TIMEOUT:-2400}"  # one Dockerfile, seconds
LOCK_TIMEOUT=3600

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
# a command with a time limit that stays in our process group (so a signal to the group,
# Ctrl-C or the step's own limit, reaches it too)
t() { timeout --foreground -k 10 "$@"; }

image_name() {
  case "$1" in
    mlmodel-operator | mlmodel-serving) echo "$REGISTRY/$1:$TAG" ;;
    minio) echo "localhost/mlmodel/minio:$MINIO_VERSION" ;;
    pause) echo "localhost/mlmodel/pause:$PAUSE_VERSION" ;;
    *) echo "unknown image '$1' (accepted: ${ALL[*]})" >&2; return 2 ;;
  esac
}

# sha256sum lines of the files under the given paths (relative to the repository), in a
# fixed order; Python byte code is left out (not an input, and rewritten by every run)
hash_paths() {
  (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum)
}

input_key() {
  local short="$1"
  {
    echo "name=$(image_name "$short")"
    echo "script=$(sha256sum <"$SELF" | cut -c1-64)"
    case "$short" in
      mlmodel-serving)
        echo "base=$("$HACK/debian-base.sh" --key)"
        hash_paths serving/Dockerfile serving/requirements.txt serving/mlmodel_serving ;;
      mlmodel-operator)
        echo "base=$("$HACK/debian-base.sh" --key)"
        hash_paths operator/Dockerfile operator/requirements.txt pyproject.toml README.md \
          operator/mlmodel_operator serving/mlmodel_serving ;;
      minio) echo "minio=$MINIO_VERSION" ;;
      pause) hash_paths hack/go/pause ;;
    esac
  } | sha256sum | cut -c1-64
}

archive_line() { printf 'archive\t%s\t%s\t%s\n' "$1" "$(image_name "$1")" "$ARCHIVES/$1.tar"; }

up_to_date() {
  [[ -f "$ARCHIVES/$1.tar" && -f "$ARCHIVES/$1.stamp" && "$(<"$ARCHIVES/$1.stamp")" == "$(input_key "$1")" ]]
}

# ---- buildah storage ----------------------------------------------------------------------

BUILDAH=()
use_driver() {
  local runroot
  runroot="/run/mlmodel-buildah-$(printf '%s' "$STORE" | sha256sum | cut -c1-12)"
  BUILDAH=(buildah --root "$STORE/storage" --runroot "$runroot" --storage-driver "$1")
}

# A storage of our own. Its driver is chosen once: overlay if a layer mounts, else vfs
# (e.g. overlay on overlay); MLMODEL_BUILDAH_DRIVER forces one.
setup_storage() {
  local driver="${MLMODEL_BUILDAH_DRIVER:-}" c
  mkdir -p "$STORE"
  [[ -n "$driver" ]] || driver="$(cat "$STORE/driver" 2>/dev/null || true)"
  if [[ -z "$driver" ]]; then
    for driver in overlay vfs; do
      use_driver "$driver"
      if c="$(t 120 "${BUILDAH[@]}" from --name mlmodel-probe scratch 2>&1)" \
        && t 60 "${BUILDAH[@]}" mount "$c" >/dev/null 2>&1; then
        t 60 "${BUILDAH[@]}" rm "$c" >/dev/null
        echo "$driver" >"$STORE/driver"
        break
      fi
      log "storage driver $driver does not work here: $c"
      t 60 "${BUILDAH[@]}" rm mlmodel-probe >/dev/null 2>&1 || true
      rm -rf "$STORE/storage"
      driver=""
    done
    [[ -n "$driver" ]] || die "neither the overlay nor the vfs storage driver works"
  fi
  echo "$driver" >"$STORE/driver"
  use_driver "$driver"
}

# The Dockerfiles' FROM images, minus their stages and scratch, named as docker reads
# them (docker.io/library/...): the Debian base is tagged under each.
from_names() {
  awk '
    toupper($1) == "FROM" {
      i = 2; while ($i ~ /^--/) i++
      name = $i
      if (tolower($(i + 1)) == "as") stage[tolower($(i + 2))] = 1
      if (!(tolower(name) in stage) && name != "scratch") print name
    }' "$@" | sort -u | while read -r name; do
    local first="${name%%/*}"
    if [[ "$name" != */* ]]; then
      echo "docker.io/library/$name"
    elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
      echo "docker.io/$name"
    else
      echo "$name"
    fi
  done
}

# ---- steps: each runs in a copy of this script (--step), output in $LOGS/<name>.log -------

CONTAINERS=()  # working containers of the current step, removed when it ends
remove_containers() {
  local c
  for c in "${CONTAINERS[@]}"; do t 60 "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
}

# new_container NAME: a working container from scratch (one a killed run left is removed)
new_container() {
  t 60 "${BUILDAH[@]}" rm "$1" >/dev/null 2>&1 || true
  CONTAINERS+=("$1")
  t 120 "${BUILDAH[@]}" from --name "$1" scratch >/dev/null
}

step_base() { "$HACK/debian-base.sh"; }

step_import_base() {
  local tar="$1" name="$2" c=mlmodel-work-base mnt suite
  new_container "$c"
  mnt="$(t 60 "${BUILDAH[@]}" mount "$c")"
  tar -C "$mnt" --numeric-owner --xattrs -xpf "$tar"
  t 60 "${BUILDAH[@]}" umount "$c"
  suite="$(sed -n 's/^suite=//p' "$(dirname "$tar")/info.txt")"
  t 60 "${BUILDAH[@]}" config --env LANG=C.UTF-8 --cmd '["python3"]' \
    --label org.opencontainers.image.description="Debian $suite with Python 3, pip and venv (hack/debian-base.sh)" "$c"
  t 600 "${BUILDAH[@]}" commit --rm --format docker "$c" "$name"
}

# step_dockerfile SHORT NAME DOCKERFILE. On overlay, with --layers: a rebuild after a
# source change reuses the steps before the first changed COPY (the pip installs). The
# final image keeps its own steps' cache alive; an earlier stage's ("AS build") steps are
# kept by building that stage first under a tag of its own (localhost/mlmodel/build-cache),
# else the pruning after the build would drop them. On vfs each layer is a full copy: no
# layers there.
step_dockerfile() {
  local short="$1" name="$2" dockerfile="$3" bud stage
  bud=("${BUILDAH[@]}" bud --pull=never --isolation chroot --network host --format docker --force-rm
    --volume "$PIPDIR:/etc/xdg/pip:ro" -f "$ROOT/$dockerfile")
  if [[ "${BUILDAH[*]}" == *"--storage-driver overlay"* ]]; then
    bud+=(--layers)
    while read -r stage; do
      echo "== stage $stage (kept as the build cache)"
      t "$BUILD_TIMEOUT" "${bud[@]}" --target "$stage" \
        -t "localhost/mlmodel/build-cache:$short-$stage" "$ROOT"
    done < <(stages_before_last "$ROOT/$dockerfile")
  fi
  echo "== $name"
  t "$BUILD_TIMEOUT" "${bud[@]}" -t "$name" "$ROOT"
}

# the names of a Dockerfile's stages (FROM ... AS name), the last stage left out
stages_before_last() {
  awk 'toupper($1) == "FROM" {
         name = ""; for (i = 2; i < NF; i++) if (tolower($i) == "as") name = $(i + 1)
         print (name == "" ? "-" : name)
       }' "$1" | sed '$d' | { grep -v '^-$' || true; }
}

step_minio_binary() { "$HACK/build-tools.sh" minio; }

# scratch + the static MinIO binary as ENTRYPOINT, so manifests/minio's args
# (server /data --address :9000 ...) apply; uid 10001 with HOME=/ (its config directory is
# the /.minio the manifest mounts); /data, /tmp and /.minio exist as mount points.
step_minio() {
  local name="$1" c=mlmodel-work-minio mnt
  new_container "$c"
  mnt="$(t 60 "${BUILDAH[@]}" mount "$c")"
  install -D -m 0755 "$CACHE/bin/minio-$MINIO_VERSION/minio" "$mnt/usr/bin/minio"
  install -d -m 0755 "$mnt/etc"
  install -d -m 0700 -o 10001 -g 10001 "$mnt/data" "$mnt/.minio"
  install -d -m 1777 "$mnt/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nminio:x:10001:10001:minio:/:/sbin/nologin\n' >"$mnt/etc/passwd"
  printf 'root:x:0:\nminio:x:10001:\n' >"$mnt/etc/group"
  t 60 "${BUILDAH[@]}" umount "$c"
  t 60 "${BUILDAH[@]}" config --user 10001:10001 --env HOME=/ --workingdir / \
    --entrypoint '["/usr/bin/minio"]' --cmd '["server","/data"]' --port 9000 \
    --label org.opencontainers.image.version="$MINIO_VERSION" \
    --label org.opencontainers.image.description="MinIO built from its Go module (hack/build-tools.sh)" "$c"
  t 600 "${BUILDAH[@]}" commit --rm --format docker "$c" "$name"
}

# scratch + our static pause program (hack/go/pause), as in Kubernetes' own: uid 65535
step_pause() {
  local name="$1" c=mlmodel-work-pause mnt work
  work="$(mktemp -d)"
  (cd "$HACK/go/pause" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false t 600 \
    go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
  new_container "$c"
  mnt="$(t 60 "${BUILDAH[@]}" mount "$c")"
  install -D -m 0755 "$work/pause" "$mnt/pause"
  rm -rf "$work"
  t 60 "${BUILDAH[@]}" umount "$c"
  t 60 "${BUILDAH[@]}" config --user 65535:65535 --entrypoint '["/pause"]' \
    --label org.opencontainers.image.version="$PAUSE_VERSION" \
    --label org.opencontainers.image.description="The Pods' sandbox process (hack/go/pause)" "$c"
  t 600 "${BUILDAH[@]}" commit --rm --format docker "$c" "$name"
}

# buildah push to a staging file, then move it into place; the stamp comes last
step_push() {
  local short="$1" key="$2" name staging
  name="$(image_name "$short")"
  staging="$(mktemp -d "$ARCHIVES/.$short.XXXX")"
  # shellcheck disable=SC2064  # expand now
  trap "rm -rf '$staging'; remove_containers" EXIT
  t 900 "${BUILDAH[@]}" push "$name" "docker-archive:$staging/image.tar:$name"
  rm -f "$ARCHIVES/$short.stamp"
  mv -f "$staging/image.tar" "$ARCHIVES/$short.tar"
  echo "$key" >"$ARCHIVES/$short.stamp"
}

# run_step NAME LIMIT FUNCTION ARGS...: runs step_FUNCTION in a copy of this script under
# timeout(1), which gives it a process group of its own; at LIMIT seconds, or when this
# script is stopped (INT, TERM), that group is stopped, buildah's children included.
# Logs the start and the time taken; on failure names the step, shows the end of its log
# and exits.
STEP_PID=""
stop_step() {
  [[ -n "$STEP_PID" ]] || return 0
  kill -TERM -- "-$STEP_PID" "$STEP_PID" 2>/dev/null || true
  wait "$STEP_PID" 2>/dev/null || true  # timeout(1) kills it within 30 s
}
run_step() {
  local name="$1" limit="$2"; shift 2
  local log="$LOGS/$name.log" start=$SECONDS rc=0
  log "$name ..."
  timeout -k 30 "$limit" bash "$SELF" --step "$@" >"$log" 2>&1 </dev/null &
  STEP_PID=$!
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  if [[ $rc -ne 0 ]]; then
    local why="exit $rc"
    [[ $rc -eq 124 || $rc -eq 137 ]] && why="over its limit of ${limit}s"
    log "FAILED step $name after $((SECONDS - start))s ($why); log: $log"
    tail -n 40 "$log" | sed 's/^/  | /' >&2
    exit 1
  fi
  log "$name: done in $((SECONDS - start))s"
}

# This machine's pip settings for the RUN steps: the options that decide how the index is
# reached, from pip's config files (in pip's order) and PIP_* variables (which win), in one
# pip.conf; the certificate files it names are copied beside it and renamed to match.
write_pip_settings() {
  python3 - "$1" <<'PY'
import configparser, os, shutil, sys
from pathlib import Path

out = Path(sys.argv[1])
keys = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "proxy",
        "timeout", "retries")
files = ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", "~/.pip/pip.conf", "~/.config/pip/pip.conf"]
if os.environ.get("PIP_CONFIG_FILE") == os.devnull:
    files = []
elif os.environ.get("PIP_CONFIG_FILE"):
    files.append(os.environ["PIP_CONFIG_FILE"])
merged: dict[str, dict[str, str]] = {}
for f in files:
    parser = configparser.RawConfigParser()
    parser.read(os.path.expanduser(f))
    for section in parser.sections():
        for key, value in parser.items(section):
            if key.replace("_", "-") in keys:
                merged.setdefault(section, {})[key.replace("_", "-")] = value
for key in keys:
    env = "PIP_" + ("DEFAULT_TIMEOUT" if key == "timeout" else key.upper().replace("-", "_"))
    if os.environ.get(env):
        merged.setdefault("global", {})[key] = os.environ[env]
for section in merged.values():
    for key in ("cert", "client-cert"):
        if key in section:
            src = Path(os.path.expanduser(section[key]))
            if not src.is_file():
                sys.exit(f"pip's {key} {src} is not a file")
            shutil.copyfile(src, out / f"{key}.pem")
            section[key] = f"/etc/xdg/pip/{key}.pem"
parser = configparser.RawConfigParser()
parser.read_dict(merged)
with open(out / "pip.conf", "w") as fh:
    parser.write(fh)
print(" ".join(f"{s}.{k}" for s, kv in merged.items() for k in kv) or "none")
PY
}

# ---- main ----------------------------------------------------------------------------

if [[ "${1:-}" == --step ]]; then
  # inside run_step: the storage chosen by the main run; errexit as everywhere
  use_driver "$(cat "$STORE/driver")"
  trap remove_containers EXIT
  "step_$2" "${@:3}"
  exit 0
fi

mode=build
case "${1:-}" in
  --list) mode=list; shift ;;
  --keys) mode=keys; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "usage: $0 [--list|--keys] [SHORT...]  (SHORT: ${ALL[*]})" >&2; exit 2 ;;
esac
want=("$@")
[[ ${#want[@]} -gt 0 ]] || want=("${ALL[@]}")
for short in "${want[@]}"; do image_name "$short" >/dev/null; done

case "$mode" in
  list) for short in "${want[@]}"; do archive_line "$short"; done; exit 0 ;;
  keys) for short in "${want[@]}"; do printf '%s %s\n' "$short" "$(input_key "$short")"; done; exit 0 ;;
esac

stale_images() {
  local short
  for short in "${want[@]}"; do up_to_date "$short" || echo "$short"; done
}
total=$SECONDS
mapfile -t stale < <(stale_images)
if [[ ${#stale[@]} -gt 0 ]]; then
  [[ "$(id -u)" -eq 0 ]] || die "building images with buildah needs root"
  for tool in buildah python3; do
    command -v "$tool" >/dev/null || die "'$tool' is not on the PATH (hack/build-tools.sh debian)"
  done
  mkdir -p "$ARCHIVES" "$LOGS"
  exec 9>"$IMAGES/.lock"
  if ! flock -n 9; then
    log "waiting for another image build (lock $IMAGES/.lock, at most ${LOCK_TIMEOUT}s) ..."
    flock -w "$LOCK_TIMEOUT" 9 || die "another image build still holds $IMAGES/.lock"
    mapfile -t stale < <(stale_images)  # it may have built them
  fi
  # staging files of a push that was killed outright
  find "$ARCHIVES" -mindepth 1 -maxdepth 1 -type d -name '.*' -exec rm -rf {} +
fi
if [[ ${#stale[@]} -eq 0 ]]; then
  log "up to date: ${want[*]} ($ARCHIVES)"
else
  log "to build: ${stale[*]}"
  PIPDIR=""
  trap 'stop_step; [[ -z "$PIPDIR" ]] || rm -rf "$PIPDIR"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  setup_storage
  # working containers a killed run left behind (this storage is ours, and we hold the lock)
  t 120 "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  log "buildah $(buildah --version | awk '{print $3}'), storage $STORE/storage ($(cat "$STORE/driver"))"
  if [[ " ${stale[*]} " == *" mlmodel-"* ]]; then
    base_tar="$("$HACK/debian-base.sh" --path)"
    base_key="$("$HACK/debian-base.sh" --key)"
    base_name="localhost/mlmodel/debian-base:${base_key:0:16}"
    if t 60 "${BUILDAH[@]}" inspect --type image "$base_name" >/dev/null 2>&1; then
      log "base image $base_name: in the storage"
    else
      if [[ -f "$base_tar" ]]; then
        log "base root filesystem: cached in $base_tar"
      else
        run_step base 1500 base
        grep -E '^\[debian-base' "$LOGS/base.log" | sed 's/^/  /' >&2
      fi
      run_step base-import 900 import_base "$base_tar" "$base_name"
    fi
    for from in $(from_names "$ROOT/operator/Dockerfile" "$ROOT/serving/Dockerfile"); do
      t 60 "${BUILDAH[@]}" tag "$base_name" "$from"
      log "base image $base_name tagged $from"
    done
    PIPDIR="$(mktemp -d)"
    export PIPDIR
    log "pip settings for the builds: $(write_pip_settings "$PIPDIR")"
  fi
  for short in "${stale[@]}"; do
    name="$(image_name "$short")"
    # the inputs' hash before the build: an input edited while it runs makes the stamp
    # stale (a rebuild next time), never an old archive look new
    key="$(input_key "$short")"
    case "$short" in
      mlmodel-operator) run_step "build-$short" "$BUILD_TIMEOUT" dockerfile "$short" "$name" operator/Dockerfile ;;
      mlmodel-serving) run_step "build-$short" "$BUILD_TIMEOUT" dockerfile "$short" "$name" serving/Dockerfile ;;
      minio)
        [[ -x "$CACHE/bin/minio-$MINIO_VERSION/minio" ]] || run_step minio-binary 3600 minio_binary
        run_step "build-$short" 900 minio "$name" ;;
      pause) run_step "build-$short" 900 pause "$name" ;;
    esac
    run_step "push-$short" 900 push "$short" "$key"
    log "$name -> $ARCHIVES/$short.tar ($(du -h "$ARCHIVES/$short.tar" | cut -f1))"
  done
  # drop what the new images replaced (untagged, unused) and bases of earlier keys; the
  # layer cache of the current images stays, as do the base and its tags
  t 300 "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  if [[ -n "${base_name:-}" ]]; then
    t 60 "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' | { grep '^localhost/mlmodel/debian-base:' || true; } \
      | { grep -vxF "$base_name" || true; } | while read -r old; do
      t 120 "${BUILDAH[@]}" rmi "$old" >/dev/null 2>&1 || true
    done
    t 300 "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  fi
  t 60 "${BUILDAH[@]}" images >&2 || true
fi
for short in "${want[@]}"; do archive_line "$short"; done
log "images ready in $((SECONDS - total))s"
