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
