#!/usr/bin/env bash
# A real SMTP server for Kassa's mail tests: aiosmtpd (from PyPI, in a venv under
# $HOME/.cache/kassa/venv) that writes every message it accepts to DIR/messages/*.eml, and
# answers 550 to recipients whose domain is listed in DIR/reject-domains (re-read on every
# RCPT, so a test can switch rejection on and off while the sink runs). When DIR/auth holds
# `user:password` at start, the sink requires AUTH (PLAIN or LOGIN) with exactly those.
#
# Usage: scripts/smtp-sink.sh install
#        scripts/smtp-sink.sh start  [--dir DIR] [--port PORT] [--env]
#        scripts/smtp-sink.sh stop   [--dir DIR]
#        scripts/smtp-sink.sh status [--dir DIR]
# DIR defaults to $HOME/.cache/kassa/smtp-sink, PORT to 2525 (0 picks a free port). `start`
# prints the sink's URL (with --env: `export KASSA_TEST_SMTP=... KASSA_TEST_SMTP_DIR=...`
# lines for eval). Every subcommand is idempotent; the sink is found by the PID in DIR/sink.pid.
set -euo pipefail

# shellcheck source=lib/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/process.sh"

CACHE="${HOME}/.cache/kassa"
VENV="${CACHE}/venv"
AIOSMTPD_VERSION="1.4.6"

die() { printf 'smtp-sink: %s\n' "$*" >&2; exit 1; }

install() {
  mkdir -p "$CACHE"
  # Several test processes may ask at once: one installs, the others wait for it.
  exec 9>"${CACHE}/venv.lock"
  flock 9
  if [ -x "${VENV}/bin/python" ] && "${VENV}/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    exec 9>&-
    return 0
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "${VENV}/bin/pip" install --quiet --disable-pip-version-check "aiosmtpd==${AIOSMTPD_VERSION}" \
    || die "pip install aiosmtpd==${AIOSMTPD_VERSION} failed"
  exec 9>&-
}

write_sink_program() {
  cat >"${VENV}/kassa_smtp_sink.py" <<'PY'
"""Kassa's test SMTP sink: accepts mail and stores each message as an .eml file."""
import argparse
import asyncio
import itertools
import os
import signal
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

COUNTER = itertools.count()


class Sink:
    def __init__(self, directory):
        self.directory = directory
        self.messages = os.path.join(directory, "messages")
        os.makedirs(self.messages, exist_ok=True)

    def rejected_domains(self):
        try:
            with open(os.path.join(self.directory, "reject-domains"), encoding="utf-8") as f:
                return {line.strip().lower() for line in f if line.strip()}
        except FileNotFoundError:
            return set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        domain = address.rpartition("@")[2].lower()
        if domain in self.rejected_domains():
            return f"550 5.7.1 <{address}>: recipient rejected by the test sink"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{os.getpid()}-{next(COUNTER)}"
        tmp = os.path.join(self.messages, f".{name}.tmp")
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(self.messages, f"{name}.eml"))
        return "250 2.0.0 OK: stored"


def authenticator(directory):
    """Accepts only the `user:password` in DIR/auth; None when the file is absent."""
    try:
        with open(os.path.join(directory, "auth"), encoding="utf-8") as f:
            user, _, password = f.read().strip().partition(":")
    except FileNotFoundError:
        return None

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok)

    return check


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    sink = Sink(args.dir)
    check = authenticator(args.dir)
    options = {}
    if check is not None:
        options = {"authenticator": check, "auth_required": True, "auth_require_tls": False}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(sink, hostname="kassa-sink", enable_SMTPUTF8=True, **options),
        host="127.0.0.1",
        port=args.port,
    )
    port = server.sockets[0].getsockname()[1]
    with open(os.path.join(args.dir, "sink.port.tmp"), "w") as f:
        f.write(f"{port}\n")
    os.rename(os.path.join(args.dir, "sink.port.tmp"), os.path.join(args.dir, "sink.port"))
    with open(os.path.join(args.dir, "sink.pid.tmp"), "w") as f:
        f.write(f"{os.getpid()}\n")
    os.rename(os.path.join(args.dir, "sink.pid.tmp"), os.path.join(args.dir, "sink.pid"))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"smtp sink listening on 127.0.0.1:{port}, storing in {sink.messages}", flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()


asyncio.run(main())
PY
}

# The PID in DIR/sink.pid if that process is alive and is our sink.
running_pid() {
  local pidfile="${DIR}/sink.pid" pid
  [ -f "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q kassa_smtp_sink "/proc/${pid}/cmdline" 2>/dev/null || return 1
  printf '%s\n' "$pid"
}

report() {
  local port
  port="$(cat "${DIR}/sink.port")"
  if [ "$ENV_OUT" = 1 ]; then
    printf 'export KASSA_TEST_SMTP=smtp://127.0.0.1:%s\n' "$port"
    printf 'export KASSA_TEST_SMTP_DIR=%s\n' "${DIR}/messages"
  else
    printf 'smtp://127.0.0.1:%s\n' "$port"
  fi
}

start() {
  if running_pid >/dev/null; then
    report
    return 0
  fi
  install
  write_sink_program
  mkdir -p "${DIR}/messages"
  rm -f "${DIR}/sink.pid" "${DIR}/sink.port"
  setsid "${VENV}/bin/python" "${VENV}/kassa_smtp_sink.py" --dir "$DIR" --port "$PORT" \
    >>"${DIR}/sink.log" 2>&1 </dev/null &
  local child=$! waited=0
  while ! running_pid >/dev/null; do
    if ! kill -0 "$child" 2>/dev/null || [ "$waited" -ge 100 ]; then
      tail -n 20 "${DIR}/sink.log" >&2 || true
      die "the sink did not start (log: ${DIR}/sink.log)"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  report
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "${DIR}/sink.pid"
    return 0
  fi
  stop_pid "$pid" "${DIR}/sink.pid"
}

service_main "${CACHE}/smtp-sink" 2525 "$@"
