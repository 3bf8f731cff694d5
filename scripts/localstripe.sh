#!/usr/bin/env bash
# A real Stripe-compatible API for Kassa's Stripe tests: localstripe (from PyPI, in a venv
# under $HOME/.cache/kassa/venv-localstripe), served on a loopback port. Objects live in memory
# only: the wrapper below neither reads nor writes localstripe's /tmp/localstripe.pickle, so
# every start is empty and two instances never share state.
#
# Usage: scripts/localstripe.sh install
#        scripts/localstripe.sh start  [--dir DIR] [--port PORT] [--env]
#        scripts/localstripe.sh stop   [--dir DIR]
#        scripts/localstripe.sh status [--dir DIR]
# DIR (pid, port and log files) defaults to $HOME/.cache/kassa/localstripe, PORT to 8420 (0
# picks a free port). `start` prints the API base URL (with --env: an
# `export KASSA_TEST_LOCALSTRIPE=...` line for eval). Every subcommand is idempotent; the
# server is found by the PID in DIR/localstripe.pid.
set -euo pipefail

# shellcheck source=lib/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/process.sh"

CACHE="${HOME}/.cache/kassa"
VENV="${CACHE}/venv-localstripe"
LOCALSTRIPE_VERSION="1.15.10"

die() { printf 'localstripe: %s\n' "$*" >&2; exit 1; }

install() {
  mkdir -p "$CACHE"
  # Several test processes may ask at once: one installs, the others wait for it.
  exec 9>"${CACHE}/venv-localstripe.lock"
  flock 9
  if [ -x "${VENV}/bin/python" ] && "${VENV}/bin/python" -c \
    "import localstripe, sys; sys.exit(localstripe.__version__ != '${LOCALSTRIPE_VERSION}')" 2>/dev/null; then
    exec 9>&-
    return 0
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check "localstripe==${LOCALSTRIPE_VERSION}" \
    || die "pip install localstripe==${LOCALSTRIPE_VERSION} failed"
  exec 9>&-
}

write_server_program() {
  cat >"${VENV}/kassa_localstripe.py" <<'PY'
"""localstripe on 127.0.0.1 only, in memory only, reporting the port it bound."""
import argparse
import asyncio
import logging
import os
import signal

from aiohttp import web
from localstripe import resources
from localstripe.server import app

# localstripe pickles its whole store to /tmp/localstripe.pickle after every write: shared
# between instances and slower with every object. Tests want neither.
resources.Store.dump_to_disk = lambda self: None


def write_atomically(directory, name, value):
    tmp = os.path.join(directory, f".{name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{value}\n")
    os.rename(tmp, os.path.join(directory, name))


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.INFO)
    access.addHandler(logging.StreamHandler())
    runner = web.AppRunner(app, access_log=access)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    port = runner.addresses[0][1]
    write_atomically(args.dir, "localstripe.port", port)
    write_atomically(args.dir, "localstripe.pid", os.getpid())
    print(f"localstripe listening on http://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


asyncio.run(main())
PY
}

# The PID in DIR/localstripe.pid if that process is alive and is our server.
running_pid() {
  local pidfile="${DIR}/localstripe.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q kassa_localstripe "/proc/${pid}/cmdline" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

report() {
  local port
  port="$(cat "${DIR}/localstripe.port")"
  if [ "$ENV_OUT" = 1 ]; then
    printf 'export KASSA_TEST_LOCALSTRIPE=http://127.0.0.1:%s\n' "$port"
  else
    printf 'http://127.0.0.1:%s\n' "$port"
  fi
}

start() {
  # One start at a time per DIR: concurrent callers get the same server.
  exec 8>"${DIR}/start.lock"
  flock 8
  if running_pid >/dev/null; then
    exec 8>&-
    report
    return 0
  fi
  install
  write_server_program
  rm -f "${DIR}/localstripe.pid" "${DIR}/localstripe.port"
  setsid "${VENV}/bin/python" "${VENV}/kassa_localstripe.py" --dir "$DIR" --port "$PORT" \
    >>"${DIR}/localstripe.log" 2>&1 </dev/null 8>&- &
  local child=$! waited=0
  while ! running_pid >/dev/null; do
    if ! kill -0 "$child" 2>/dev/null || [ "$waited" -ge 150 ]; then
      tail -n 20 "${DIR}/localstripe.log" >&2 || true
      die "localstripe did not start (log: ${DIR}/localstripe.log)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  exec 8>&-
  report
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "${DIR}/localstripe.pid"
    return 0
  fi
  stop_pid "$pid" "${DIR}/localstripe.pid"
}

service_main "${CACHE}/localstripe" 8420 "$@"
