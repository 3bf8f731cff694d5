# Shared by the scripts that run a test service in the background (sourced, not run).

# stop_pid PID PIDFILE: SIGTERM, up to 5 s for the process to exit, then SIGKILL; removes
# the pid file. Never signals anything but PID.
stop_pid() {
  local pid="$1" pidfile="$2" waited=0
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge 50 ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  rm -f "$pidfile"
}

# service_status: "running (pid P) on ADDR" or "stopped" (exit 3), using the caller's
# running_pid and report functions.
service_status() {
  local pid
  if pid="$(running_pid)"; then
    printf 'running (pid %s) on %s\n' "$pid" "$(report)"
  else
    printf 'stopped\n'
    return 3
  fi
}

# service_main DEFAULT_DIR DEFAULT_PORT ARGS...: parses `install|start|stop|status [--dir DIR]
# [--port PORT] [--env]` into DIR, PORT and ENV_OUT, then runs the caller's function of that
# name (`status` is service_status).
service_main() {
  DIR="$1"
  PORT="$2"
  shift 2
  ENV_OUT=0
  local command="${1:-}"
  [ $# -gt 0 ] && shift
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR="$2"; shift 2 ;;
      --port) PORT="$2"; shift 2 ;;
      --env) ENV_OUT=1; shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  case "$command" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) service_status ;;
    *) die "usage: $0 install|start|stop|status [--dir DIR] [--port PORT] [--env]" ;;
  esac
}
