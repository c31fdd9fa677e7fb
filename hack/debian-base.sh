#!/usr/bin/env bash
# The base root filesystem of the project's images when no Docker engine is at hand:
# Debian bookworm (debootstrap, minbase) with Debian's Python 3.11, pip and venv, made
# once and cached as a tarball keyed by a hash of this file (suite, packages, the steps):
#
#   hack/debian-base.sh            build or reuse it; prints the tarball's path
#   hack/debian-base.sh --key      prints the cache key only
#   hack/debian-base.sh --path     prints where the tarball is (or will be) only
#   hack/debian-base.sh --mirror   prints the Debian mirror read from this machine's apt sources
#
# It stands in for the Dockerfiles' `FROM python:3.11.7-slim-bookworm` (hack/buildah-images.sh
# tags it under that name), so it has what they use: `python` (python-is-python3), pip,
# `python -m venv`, groupadd/useradd (passwd), CA certificates, and no EXTERNALLY-MANAGED
# marker (the serving Dockerfile installs into the system Python, as on the python image).
# Debian's Python is 3.11.2, not the 3.11.7 the Dockerfiles name.
#
# The mirror is this machine's own: the first `deb` entry of the apt sources
# (${MLMODEL_APT_DIR:-/etc/apt}/sources.list, sources.list.d/*.list and *.sources) whose
# suites include bookworm, else the first whose URI ends in /debian;
# MLMODEL_DEBIAN_MIRROR overrides. Settings: MLMODEL_CACHE (~/.cache/mlmodel-lifecycle).
set -euo pipefail

SUITE=bookworm
PACKAGES=(python3 python3-pip python3-venv python-is-python3 ca-certificates passwd)
SELF="${BASH_SOURCE[0]}"
CACHE="${MLMODEL_CACHE:-$HOME/.cache/mlmodel-lifecycle}"
IMAGES="$CACHE/images"
APT_DIR="${MLMODEL_APT_DIR:-/etc/apt}"
DEBOOTSTRAP_TIMEOUT="${MLMODEL_DEBOOTSTRAP_TIMEOUT:-1200}"

log() { printf '[debian-base %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

key() { sha256sum "$SELF" | cut -c1-64; }
tarball() { local k; k="$(key)"; echo "$IMAGES/base-${k:0:16}/rootfs.tar"; }

# apt sources, in the order apt reads them, as `deb <uri> <suite>...` lines (one-line
# format as is; deb822 stanzas flattened; disabled stanzas and deb-src left out)
sources_as_lines() {
  local f
  [[ -f "$APT_DIR/sources.list" ]] && grep -E '^[[:space:]]*deb[[:space:]]' "$APT_DIR/sources.list" \
    | sed -E 's/\[[^]]*\]//'
  for f in "$APT_DIR"/sources.list.d/*.list "$APT_DIR"/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    if [[ "$f" == *.list ]]; then
      grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/\[[^]]*\]//'
    else
      awk '
        function flush() {
          if (types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "")
            for (i = 1; i <= n; i++) print "deb", u[i], suites
          split("", value); types = ""; uris = ""; suites = ""; enabled = ""; n = 0; last = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); next }
        /^[ \t]/ { value[last] = value[last] " " $0; sub(/^[ \t]+/, "", value[last]) }
        /^[^ \t]/ {
          last = tolower($0); sub(/:.*/, "", last)
          v = $0; sub(/^[^:]*:[ \t]*/, "", v); value[last] = v
        }
        { types = value["types"]; uris = value["uris"]; suites = value["suites"]
          enabled = tolower(value["enabled"]); n = split(uris, u, /[ \t]+/) }
        END { flush() }
      ' "$f"
    fi
  done
}

mirror() {
  if [[ -n "${MLMODEL_DEBIAN_MIRROR:-}" ]]; then echo "${MLMODEL_DEBIAN_MIRROR%/}"; return; fi
  local lines uri
  lines="$(sources_as_lines || true)"
  uri="$(awk -v s="$SUITE" '{ for (i = 3; i <= NF; i++) if ($i == s) { print $2; exit } }' <<<"$lines")"
  [[ -n "$uri" ]] || uri="$(awk '$2 ~ /\/debian\/?$/ { print $2; exit }' <<<"$lines")"
  [[ -n "$uri" ]] || die "no Debian mirror in the apt sources under $APT_DIR (none lists '$SUITE' or ends in /debian); set MLMODEL_DEBIAN_MIRROR"
  echo "${uri%/}"
}

DEBOOTSTRAP_PID=""
stop_debootstrap() {
  [[ -n "$DEBOOTSTRAP_PID" ]] || return 0
  kill -TERM -- "-$DEBOOTSTRAP_PID" "$DEBOOTSTRAP_PID" 2>/dev/null || true
  wait "$DEBOOTSTRAP_PID" 2>/dev/null || true  # at most 30 s: timeout -k 30
  DEBOOTSTRAP_PID=""
}

# unmount whatever debootstrap left mounted under $1 (it mounts proc and sys in the target)
unmount_under() {
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done \
    < <(awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r)
}

build() {
  local k dest staging start
  k="$(key)"
  dest="$IMAGES/base-${k:0:16}"
  if [[ -f "$dest/rootfs.tar" ]]; then log "cached: $dest/rootfs.tar"; echo "$dest/rootfs.tar"; return; fi
  command -v debootstrap >/dev/null || die "debootstrap is not installed (hack/build-tools.sh debian)"
  [[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
  local url old; url="$(mirror)"
  mkdir -p "$IMAGES"
  for old in "$IMAGES"/.base-*; do  # what a build killed outright left (we hold the lock)
    [[ -d "$old" ]] || continue
    unmount_under "$old"
    rm -rf --one-file-system "$old"
  done
  staging="$(mktemp -d "$IMAGES/.base-${k:0:16}.XXXX")"
  # shellcheck disable=SC2064  # expand now: the staging path is fixed
  trap "unmount_under '$staging'; rm -rf --one-file-system '$staging'" EXIT
  local rootfs="$staging/rootfs" list
  list="$(IFS=,; echo "${PACKAGES[*]}")"
  log "debootstrap $SUITE (minbase + $list) from $url ..."
  start=$SECONDS
  # timeout(1) puts debootstrap in a process group of its own: stop that group if we are
  timeout -k 30 "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase --components=main \
    --include="$list" "$SUITE" "$rootfs" "$url" >"$staging/debootstrap.log" 2>&1 </dev/null &
  DEBOOTSTRAP_PID=$!
  trap 'stop_debootstrap; exit 130' INT
  trap 'stop_debootstrap; exit 143' TERM
  if ! wait "$DEBOOTSTRAP_PID"; then
    log "debootstrap FAILED after $((SECONDS - start))s (limit ${DEBOOTSTRAP_TIMEOUT}s); last lines of its log:"
    tail -n 30 "$staging/debootstrap.log" >&2
    [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    exit 1
  fi
  DEBOOTSTRAP_PID=""
  log "debootstrap done in $((SECONDS - start))s"
  unmount_under "$rootfs"
  start=$SECONDS
  # like the python image: pip may install into the system Python; no apt lists, no docs,
  # manuals or message translations (copyright files stay)
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/debootstrap
  find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
  : >"$rootfs/etc/machine-id"
  rm -f "$rootfs/etc/hostname" "$rootfs/etc/resolv.conf"
  [[ -x "$rootfs/usr/bin/python" && -x "$rootfs/usr/bin/pip" ]] || die "the base has no python or pip"
  chroot "$rootfs" python --version >&2
  (cd "$rootfs" && tar --numeric-owner --xattrs -cf "$staging/rootfs.tar" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' --exclude='./tmp/*' .)
  {
    echo "suite=$SUITE"
    echo "packages=$list"
    echo "key=$k"
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  } >"$staging/info.txt"
  rm -rf --one-file-system "$rootfs"
  rm -rf "$dest"
  mv "$staging" "$dest"
  trap - EXIT
  # bases of earlier versions of this script are of no more use
  find "$IMAGES" -mindepth 1 -maxdepth 1 -name 'base-*' ! -name "base-${k:0:16}" -exec rm -rf {} +
  log "packed in $((SECONDS - start))s: $dest/rootfs.tar ($(du -h "$dest/rootfs.tar" | cut -f1))"
  echo "$dest/rootfs.tar"
}

case "${1:-}" in
  --key) key ;;
  --path) tarball ;;
  --mirror) mirror ;;
  "")
    mkdir -p "$IMAGES"
    exec 8>"$IMAGES/.base.lock"
    flock -w "$DEBOOTSTRAP_TIMEOUT" 8 || die "another base build holds $IMAGES/.base.lock"
    build
    ;;
  *) echo "usage: $0 [--key|--path|--mirror]" >&2; exit 2 ;;
esac
