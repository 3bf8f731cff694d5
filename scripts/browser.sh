#!/usr/bin/env bash
# Kassa's real-browser tests: the shopper pages (demo shop, checkout, the 409 and 422 pages,
# the sandbox payment page, the order page) driven in Debian's Chromium by Playwright for
# Python, checked with axe-core, screenshotted at 320 px and 1280 px.
#
# Usage: scripts/browser.sh setup                  install what the suite needs (idempotent)
#        scripts/browser.sh test [KASSA_BIN] [PYTEST_ARGS...]
#                                                  setup, then run tests/browser against
#                                                  KASSA_BIN (default target/debug/kassa)
#        scripts/browser.sh check                  setup, then prove Playwright drives the
#                                                  browser and axe runs (no Kassa needed)
#
# What setup installs (each step skipped when already done, so a second run takes a second):
# - Debian's `chromium` (and a font) with apt-get, as root or through sudo. No browser is ever
#   downloaded by Playwright: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, and `playwright install`
#   is never run; the suite launches /usr/bin/chromium (KASSA_CHROMIUM overrides it).
# - A venv at ~/.cache/kassa/browser-venv with tests/browser/requirements.txt (Playwright,
#   pytest) from PyPI; reinstalled when that file changes.
# - axe-core from npm under ~/.cache/kassa/axe (node_modules/axe-core/axe.min.js).
# Anything missing or failing makes the script exit non-zero: the suite never skips.
#
# Screenshots: docs/checkout-320.png and docs/checkout-1280.png in the repository, the
# others under target/browser-shots/ (KASSA_BROWSER_SHOTS overrides that folder).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${HOME}/.cache/kassa"
VENV="${CACHE}/browser-venv"
AXE_DIR="${CACHE}/axe"
AXE_VERSION="4.14.1"
REQUIREMENTS="${ROOT}/tests/browser/requirements.txt"
CHROMIUM="${KASSA_CHROMIUM:-/usr/bin/chromium}"
# The Chromium major version the pinned Playwright was built against (requirements.txt).
PLAYWRIGHT_CHROMIUM_MAJOR=156

export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

log() { printf '==> browser: %s\n' "$*" >&2; }
die() { printf 'browser.sh: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

apt_missing() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  printf '%s\n' "${missing[@]}"
}

setup_chromium() {
  local missing=()
  if [ -z "${KASSA_CHROMIUM:-}" ]; then
    mapfile -t missing < <(apt_missing chromium fonts-dejavu-core)
    [ -n "${missing[0]:-}" ] || missing=()
  fi
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install Chromium and set KASSA_CHROMIUM"
    log "installing ${missing[*]} (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
  [ -x "$CHROMIUM" ] || die "no browser at $CHROMIUM (apt-get install chromium, or set KASSA_CHROMIUM)"
  local version major
  version="$("$CHROMIUM" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1)" \
    || die "$CHROMIUM --version failed"
  [ -n "$version" ] || die "$CHROMIUM --version printed no version"
  major="${version%%.*}"
  if [ "$major" != "$PLAYWRIGHT_CHROMIUM_MAJOR" ]; then
    log "note: Chromium ${version}, Playwright is pinned for ${PLAYWRIGHT_CHROMIUM_MAJOR}; 'scripts/browser.sh check' tells whether they still get along"
  fi
}

venv_ready() {
  [ -x "${VENV}/bin/python" ] \
    && [ -f "${VENV}/.requirements" ] \
    && cmp -s "${VENV}/.requirements" "$REQUIREMENTS" \
    && "${VENV}/bin/python" -c 'import playwright.sync_api, pytest' 2>/dev/null
}

setup_venv() {
  venv_ready && return 0
  log "creating ${VENV} (PyPI: $(grep -v '^#' "$REQUIREMENTS" | xargs))"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS" \
    || die "pip install -r $REQUIREMENTS failed"
  cp "$REQUIREMENTS" "${VENV}/.requirements"
  venv_ready || die "the venv at $VENV does not import playwright and pytest"
}

setup_axe() {
  local axe="${AXE_DIR}/node_modules/axe-core/axe.min.js"
  local pkg="${AXE_DIR}/node_modules/axe-core/package.json"
  if [ -f "$axe" ] && grep -q "\"version\": \"${AXE_VERSION}\"" "$pkg" 2>/dev/null; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm not found (Node.js is needed to install axe-core)"
  log "installing axe-core@${AXE_VERSION} (npm) into ${AXE_DIR}"
  mkdir -p "$AXE_DIR"
  npm install --prefix "$AXE_DIR" --no-audit --no-fund --silent "axe-core@${AXE_VERSION}" >&2 \
    || die "npm install axe-core@${AXE_VERSION} failed"
  [ -f "$axe" ] || die "axe-core installed but $axe is missing"
}

setup() {
  mkdir -p "$CACHE"
  # Several runs may set up at once: one installs, the others wait for it.
  exec 8>"${CACHE}/browser-setup.lock"
  flock 8
  setup_chromium
  setup_venv
  setup_axe
  exec 8>&-
}

suite_env() {
  export KASSA_CHROMIUM="$CHROMIUM"
  export KASSA_AXE_JS="${AXE_DIR}/node_modules/axe-core/axe.min.js"
  export KASSA_REPO_ROOT="$ROOT"
  export KASSA_BROWSER_SHOTS="${KASSA_BROWSER_SHOTS:-${ROOT}/target/browser-shots}"
}

run_tests() {
  local bin="${ROOT}/target/debug/kassa"
  if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    bin="$1"
    shift
  fi
  case "$bin" in /*) ;; *) bin="$(pwd)/${bin}" ;; esac
  [ -x "$bin" ] || die "no Kassa binary at $bin (cargo build --bin kassa)"
  setup
  suite_env
  export KASSA_BIN="$bin"
  log "running tests/browser against $bin"
  cd "$ROOT"
  "${VENV}/bin/python" -m pytest -p no:cacheprovider tests/browser "$@"
}

check() {
  setup
  suite_env
  cd "$ROOT"
  "${VENV}/bin/python" -m pytest -p no:cacheprovider tests/browser/test_infrastructure.py "$@"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  setup) setup; log "ready: $("$CHROMIUM" --version 2>/dev/null), $("${VENV}/bin/python" -m pip show playwright 2>/dev/null | grep '^Version' | sed 's/Version: /Playwright /'), axe-core ${AXE_VERSION}" ;;
  test) run_tests "$@" ;;
  check) check "$@" ;;
  *) die "usage: scripts/browser.sh setup | test [KASSA_BIN] [PYTEST_ARGS...] | check" ;;
esac
