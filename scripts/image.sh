#!/usr/bin/env bash
# The Kassa container image, built and run on a machine with no container registry: the
# runtime stage of the repository's Dockerfile (Debian bookworm, CA certificates, user 10001,
# the binary, ENTRYPOINT kassa, CMD serve), on a base made from Debian's own packages with
# debootstrap instead of a `debian:bookworm-slim` pull, with a kassa binary built on the host
# instead of the Dockerfile's build stage (same Debian release, so the same glibc).
#
# Usage: scripts/image.sh build [KASSA_BIN]   base (cached) + image localhost/kassa:dev
#        scripts/image.sh test [KASSA_BIN]    build, then run the image with podman as the
#                                             Helm chart runs it (user 10001, read-only root,
#                                             a tmpfs data dir, production mode) and check
#                                             /healthz, /readyz, /metrics and a clean stop
#        scripts/image.sh clean               remove the images and the cached base
# KASSA_BIN defaults to target/release/kassa (`cargo build --release --bin kassa`); a debug
# binary works too (its debug info is stripped from the copy that goes into the image).
#
# What it installs (apt-get, as root or through sudo; skipped when present): podman, buildah,
# debootstrap, runc, uidmap, containernetworking-plugins, iptables. The base is debootstrap's minbase of bookworm plus
# ca-certificates, cached as a tarball in ~/.cache/kassa/image (KASSA_DEBIAN_MIRROR chooses
# the mirror). Containers run with Debian's runc (`--runtime runc`: its default crun fails on
# a hybrid cgroup layout) and a containers.conf of our own (CONTAINERS_CONF) without default
# ulimits (setrlimit fails on them in a sandbox).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HOME}/.cache/kassa/image"
RELEASE="bookworm"
MIRROR="${KASSA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
BASE_TAR="${CACHE}/${RELEASE}-minbase.tar"
BASE_IMAGE="localhost/kassa-base:${RELEASE}"
IMAGE="${KASSA_IMAGE:-localhost/kassa:dev}"
CONTAINER="kassa-image-test"
UID_GID=10001

log() { printf '==> image: %s\n' "$*" >&2; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# Scratch space (the build context) and the test container: gone at exit, however it ends.
WORK="$(mktemp -d)"
cleanup() {
  rm -rf "$WORK"
  if [[ -n "${CONTAINERS_CONF:-}" ]]; then
    podman_ rm -f "$CONTAINER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

setup() {
  # Rootful podman's port mapping (-p) needs the CNI plugins and iptables, which
  # --no-install-recommends would not otherwise guarantee.
  local need=() pkg
  for pkg in podman buildah debootstrap runc uidmap containernetworking-plugins iptables; do
    [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" == "install ok installed" ]] ||
      need+=("$pkg")
  done
  if ((${#need[@]})); then
    log "installing ${need[*]} (apt)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need[@]}" >/dev/null
  fi
  mkdir -p "$CACHE"
  export CONTAINERS_CONF="${CACHE}/containers.conf"
  cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
CONF
}

podman_() { $SUDO env CONTAINERS_CONF="$CONTAINERS_CONF" podman "$@"; }

# debootstrap's minbase with ca-certificates and the kassa user, as a tarball, then imported.
base() {
  if [[ ! -s "$BASE_TAR" ]]; then
    local dir
    dir="$(mktemp -d "${CACHE}/rootfs.XXXXXX")"
    log "debootstrap --variant=minbase ${RELEASE} (${MIRROR}); cached in ${BASE_TAR}"
    $SUDO debootstrap --variant=minbase --include=ca-certificates "$RELEASE" "$dir" "$MIRROR" \
      >"${CACHE}/debootstrap.log" 2>&1 || {
      tail -20 "${CACHE}/debootstrap.log" >&2
      $SUDO rm -rf "$dir"
      die "debootstrap failed (log: ${CACHE}/debootstrap.log)"
    }
    # The Dockerfile's `useradd --system --uid 10001 ... kassa`, written directly (no chroot).
    printf 'kassa:x:%s:%s::/var/lib/kassa:/usr/sbin/nologin\n' "$UID_GID" "$UID_GID" |
      $SUDO tee -a "$dir/etc/passwd" >/dev/null
    printf 'kassa:x:%s:\n' "$UID_GID" | $SUDO tee -a "$dir/etc/group" >/dev/null
    printf 'kassa:!*:20000::::::\n' | $SUDO tee -a "$dir/etc/shadow" >/dev/null
    $SUDO install -d -o "$UID_GID" -g "$UID_GID" -m 0750 "$dir/var/lib/kassa"
    # As the Dockerfile's `rm -rf /var/lib/apt/lists/*`: no package lists or caches.
    $SUDO rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin \
      "$dir"/var/cache/apt/archives/*.deb "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
    $SUDO tar --numeric-owner -C "$dir" -cf "${BASE_TAR}.part" .
    $SUDO chown "$(id -u):$(id -g)" "${BASE_TAR}.part"
    mv "${BASE_TAR}.part" "$BASE_TAR"
    $SUDO rm -rf "$dir"
    podman_ rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true
  fi
  if ! podman_ image exists "$BASE_IMAGE"; then
    log "podman import ${BASE_TAR} ${BASE_IMAGE}"
    podman_ import --message "debootstrap ${RELEASE} minbase + ca-certificates + user kassa" \
      "$BASE_TAR" "$BASE_IMAGE" >/dev/null
  fi
}

build() {
  local bin="${1:-${ROOT}/target/release/kassa}"
  [[ -x "$bin" ]] || die "no kassa binary at ${bin}: cargo build --release --bin kassa, or name one"
  setup
  base
  local ctx="$WORK/context"
  mkdir -p "$ctx"
  strip --strip-debug -o "$ctx/kassa" "$bin" 2>/dev/null || cp "$bin" "$ctx/kassa"
  chmod 0755 "$ctx/kassa"
  # The runtime stage of the Dockerfile, from the debootstrap base (which already holds
  # ca-certificates and the user); keep the two alike.
  cat >"$ctx/Containerfile" <<EOF
FROM ${BASE_IMAGE}
COPY kassa /usr/local/bin/kassa
USER ${UID_GID}:${UID_GID}
WORKDIR /var/lib/kassa
ENV KASSA_LISTEN=0.0.0.0:8080 \\
    KASSA_DATA_DIR=/var/lib/kassa
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kassa"]
CMD ["serve"]
EOF
  log "podman build ${IMAGE} (binary: ${bin})"
  local previous
  previous="$(podman_ image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
  podman_ build --pull=never --quiet -t "$IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null
  # The image this tag named before, now untagged: removed, so rebuilds do not pile up.
  if [[ -n "$previous" && "$previous" != "$(podman_ image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    podman_ rmi "$previous" >/dev/null 2>&1 || true
  fi
  log "$(podman_ image inspect --format '{{.Id}} {{.Size}} bytes' "$IMAGE" | cut -c1-12,65-)"
}

# A free TCP port on loopback.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }

run_test() {
  build "$@"
  local port started
  port="$(free_port)"
  podman_ rm -f "$CONTAINER" >/dev/null 2>&1 || true
  # As the chart runs it: production (explicit secrets), user 10001 (the image's), a
  # read-only root and a scratch data dir (a tmpfs owned by that user, U=true: podman's
  # `mode=` leaves it root's, as a pod's emptyDir with fsGroup is not); the embedded store
  # and the sandbox here.
  log "podman run ${IMAGE} on 127.0.0.1:${port}"
  started=$(date +%s)
  podman_ run -d --name "$CONTAINER" --runtime runc \
    -p "127.0.0.1:${port}:8080" \
    --read-only --mount type=tmpfs,destination=/var/lib/kassa,U=true \
    -e KASSA_ENV=production \
    -e KASSA_PUBLIC_URL="http://127.0.0.1:${port}" \
    -e KASSA_STORE=embedded:/var/lib/kassa/store \
    -e KASSA_JWT_SECRET=image-test-0123456789abcdef0123456789 \
    -e KASSA_WEBHOOK_SECRET=whsec_aW1hZ2UtdGVzdC0wMTIzNDU2Nzg5YWJjZGVm \
    -e KASSA_SHUTDOWN_DELAY=1s \
    "$IMAGE" >/dev/null
  local status=""
  for _ in $(seq 1 120); do
    status="$(http_status "http://127.0.0.1:${port}/healthz")"
    [[ "$status" == 200 ]] && break
    if [[ "$(podman_ inspect --format '{{.State.Running}}' "$CONTAINER")" != true ]]; then
      podman_ logs "$CONTAINER" >&2 || true
      die "the container stopped before /healthz answered"
    fi
    sleep 0.5
  done
  [[ "$status" == 200 ]] || { podman_ logs "$CONTAINER" >&2; die "/healthz answered '${status}', not 200"; }
  log "/healthz 200 after $(($(date +%s) - started)) s"
  status="$(http_status "http://127.0.0.1:${port}/readyz")"
  [[ "$status" == 200 ]] || { podman_ logs "$CONTAINER" >&2; die "/readyz answered '${status}', not 200"; }
  log "/readyz 200"
  curl -s --max-time 2 "http://127.0.0.1:${port}/metrics" | grep -q '^kassa_http_requests_total' ||
    die "/metrics has no kassa_http_requests_total"
  local user
  user="$(podman_ exec "$CONTAINER" cat /proc/1/status | awk '/^Uid:/ {print $2}')"
  [[ "$user" == "$UID_GID" ]] || die "kassa runs as uid ${user}, not ${UID_GID}"
  log "runs as uid ${user} on a read-only root"
  podman_ stop -t 30 "$CONTAINER" >/dev/null
  local code
  code="$(podman_ inspect --format '{{.State.ExitCode}}' "$CONTAINER")"
  [[ "$code" == 0 ]] || { podman_ logs "$CONTAINER" >&2; die "kassa exited ${code} on SIGTERM, not 0"; }
  log "stopped cleanly on SIGTERM (exit 0)"
  podman_ rm -f "$CONTAINER" >/dev/null
  log "image OK: ${IMAGE}"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  test) shift; run_test "$@" ;;
  clean)
    setup
    podman_ rm -f "$CONTAINER" >/dev/null 2>&1 || true
    podman_ rmi -f "$IMAGE" "$BASE_IMAGE" >/dev/null 2>&1 || true
    rm -f "$BASE_TAR"
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
