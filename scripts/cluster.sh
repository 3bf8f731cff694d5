#!/usr/bin/env bash
# The cluster in a box (issue 20 step 3): one Cassandra, three Kassa replicas as processes,
# Debian's HAProxy in front (round robin, health-checked on /readyz), a Prometheus scraping
# the three with the chart's own rules (helm/kassa/files/kassa-rules.yml), one sandbox
# payment gateway and one SMTP sink shared by the replicas, and kassa-loadtest driving the
# storefront and flash-sale scenarios through the balancer while one replica is killed
# (SIGKILL, started again ~2 s later) and another is stopped with SIGTERM (it drains) and
# started again.
#
# Usage: scripts/cluster.sh setup                          install HAProxy (apt), the SMTP
#                                                          sink's venv; check prometheus
#        scripts/cluster.sh test KASSA_BIN LOADTEST_BIN    setup, run the whole test, check,
#                                                          stop everything; exit 1 on failure
#        scripts/cluster.sh up KASSA_BIN                   start the cluster and leave it
#                                                          running for a person to look at
#        scripts/cluster.sh down                           stop what `up` started
#
# `test` passes when, after the load:
# - both load reports pass: nothing oversold, stock conserved, every order answered 200
#   exists and settled as driven, every paid order has its email; no unexpected answer;
# - no recorded answer is a 5xx other than 503, and the balancer's own log shows no 5xx but
#   503s carrying Retry-After and the 502s of requests in flight on the killed replica (the
#   load generator retries those, with --retry-interrupted, and its report counts them);
# - the SIGTERM'd replica drained (readyz 503, the balancer stops sending) and exited 0;
# - Prometheus saw the killed replica's `up` at 0, the KassaReplicaDown alert fired, every
#   rule evaluates, and every query of helm/kassa/files/kassa-dashboard.json returns data
#   over the run (a query_range, as Grafana draws a panel);
# - the SMTP sink got each email once (messages counted by Message-ID).
# The chart's KassaReplicaDown waits `for: 1m` (a pod restarted within a minute pages nobody),
# longer than this run's outage of about 3 s, which a `for: 2s` caught in some runs and not in
# others: the test loads a copy with `for:` set to KASSA_CLUSTER_ALERT_FOR (0s), so it checks
# the rule's expression and labels against the real scrape, the part a typo would break.
#
# Cassandra: KASSA_TEST_CASSANDRA=host:port when set (as the Rust tests use it), else the
# node of scripts/cassandra.sh on 127.0.0.1:${CASSANDRA_PORT:-9042}, started when it does not
# run (and then stopped at the end; scripts/test starts it before and reuses it). Each run
# migrates a fresh keyspace `kt_<unix seconds>_cluster_<random>`, which the Rust tests drop
# once it is 20 minutes old.
#
# Environment (all optional):
#   KASSA_CLUSTER_DIR        work dir (`test`: a new temporary one, kept on failure;
#                            `up`/`down`: /tmp/kassa-cluster)
#   KASSA_CLUSTER_DURATION   storefront load (default 20s)
#   KASSA_CLUSTER_CHAOS      0: no kill, no SIGTERM (the plain path; default 1)
#   KASSA_CLUSTER_ALERT_FOR  KassaReplicaDown's `for:` in the test's copy (default 0s)
#   KASSA_CLUSTER_SETTLE     how long the load's checks wait for orders and emails to settle
#                            (kassa-loadtest --settle-timeout; default 30s)
#   KASSA_CLUSTER_RETRY      how long the load generator sends an interrupted request again
#                            (--retry-interrupted; default 10s)
#   KASSA_CLUSTER_LB_PORT    the balancer's port for `up` (default a free one)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIB="$ROOT/scripts/lib"
RULES="$ROOT/helm/kassa/files/kassa-rules.yml"
DASHBOARD="$ROOT/helm/kassa/files/kassa-dashboard.json"
DURATION="${KASSA_CLUSTER_DURATION:-20s}"
SETTLE="${KASSA_CLUSTER_SETTLE:-30s}"
RETRY="${KASSA_CLUSTER_RETRY:-10s}"
CHAOS="${KASSA_CLUSTER_CHAOS:-1}"
ALERT_FOR="${KASSA_CLUSTER_ALERT_FOR:-0s}"
DRAIN_DELAY=2
REPLICAS=(r1 r2 r3)
KILLED=r1
DRAINED=r2

log() { printf '==> cluster: %s\n' "$*" >&2; }
die() { printf 'cluster.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
seconds_since() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}')" "$1"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# ------------------------------------------------------------------ setup ----

setup() {
  local missing=()
  command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${missing[*]}"
    log "installing ${missing[*]} (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || die "apt-get update failed"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
  fi
  command -v haproxy >/dev/null 2>&1 || die "haproxy is not installed"
  command -v prometheus >/dev/null 2>&1 || die "prometheus is not installed"
  "$ROOT/scripts/smtp-sink.sh" install
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "python3 >= 3.9 needed"
}

# -------------------------------------------------------------- processes ----

# Every process this script starts: NAME -> PID, also written to $WORK/pids/NAME for `down`.
declare -A PIDS=()
STARTED_CASSANDRA=0
SMTP_STARTED=0
RESULT=1

remember() {
  PIDS[$1]="$2"
  printf '%s\n' "$2" >"$WORK/pids/$1"
}

alive() { [ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null; }

# stop_all: SIGTERM to every process started (by its PID), SIGKILL to those left after 10 s.
stop_all() {
  local name pid waited=0
  for name in "${!PIDS[@]}"; do
    kill -TERM "${PIDS[$name]}" 2>/dev/null || true
  done
  for name in "${!PIDS[@]}"; do
    pid="${PIDS[$name]}"
    while kill -0 "$pid" 2>/dev/null; do
      if [ "$waited" -ge 100 ]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
      sleep 0.1
      waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
    rm -f "$WORK/pids/$name"
  done
  PIDS=()
  if [ "$SMTP_STARTED" = 1 ]; then
    "$ROOT/scripts/smtp-sink.sh" stop --dir "$WORK/smtp" >/dev/null 2>&1 || true
    SMTP_STARTED=0
  fi
  if [ "$STARTED_CASSANDRA" = 1 ]; then
    "$ROOT/scripts/cassandra.sh" stop >/dev/null 2>&1 || true
    STARTED_CASSANDRA=0
  fi
}

wait_http() { # NAME URL SECONDS: until URL answers 200 (and NAME's process lives)
  local name="$1" url="$2" deadline=$((SECONDS + $3))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    if ! alive "$name"; then
      tail -n 30 "$WORK/$name.log" >&2 || true
      die "$name exited while starting (log: $WORK/$name.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] || {
      tail -n 30 "$WORK/$name.log" >&2 || true
      die "$name did not answer $url within $3 s"
    }
    sleep 0.1
  done
}

# ---------------------------------------------------------------- the cluster ----

cassandra() {
  if [ -n "${KASSA_TEST_CASSANDRA:-}" ]; then
    CQL="$KASSA_TEST_CASSANDRA"
    return
  fi
  CQL="127.0.0.1:${CASSANDRA_PORT:-9042}"
  if ! "$ROOT/scripts/cassandra.sh" status >/dev/null 2>&1; then
    log "starting Cassandra (scripts/cassandra.sh)"
    "$ROOT/scripts/cassandra.sh" start >&2
    STARTED_CASSANDRA=1
  fi
}

secrets() {
  JWT_SECRET="$(head -c 48 /dev/urandom | base64 -w0)"
  WEBHOOK_SECRET="whsec_$(head -c 32 /dev/urandom | base64 -w0)"
  KEYSPACE="kt_$(date +%s)_cluster_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  STORE="scylla://$CQL/$KEYSPACE"
}

ports() {
  local p
  mapfile -t p < <(python3 "$LIB/cluster_check.py" ports 7)
  LB_PORT="${KASSA_CLUSTER_LB_PORT:-${p[0]}}"
  STATS_PORT="${p[1]}"
  PROM_PORT="${p[2]}"
  SANDBOX_PORT="${p[3]}"
  declare -gA PORT=([r1]="${p[4]}" [r2]="${p[5]}" [r3]="${p[6]}")
}

kassa_env() { # KENV: the environment every replica (and `kassa migrate`) gets, for `env -i`
  KENV=(
    PATH="$PATH" HOME="$HOME"
    KASSA_CONFIG="$WORK/empty.toml"
    KASSA_ENV=production
    KASSA_STORE="$STORE"
    KASSA_SCYLLA_REQUEST_TIMEOUT=30s
    KASSA_JWT_SECRET="$JWT_SECRET"
    KASSA_WEBHOOK_SECRET="$WEBHOOK_SECRET"
    KASSA_PUBLIC_URL="http://127.0.0.1:$LB_PORT"
    KASSA_GATEWAY="http://127.0.0.1:$SANDBOX_PORT"
    KASSA_SMTP_URL="$SMTP_URL"
    KASSA_SHUTDOWN_DELAY="${DRAIN_DELAY}s"
    KASSA_LOG=info
  )
}

migrate() {
  log "kassa migrate (keyspace $KEYSPACE on $CQL)"
  kassa_env
  env -i "${KENV[@]}" "$KASSA_BIN" migrate >"$WORK/migrate.log" 2>&1 || {
    cat "$WORK/migrate.log" >&2
    die "kassa migrate failed"
  }
}

start_sandbox() {
  # The replicas share one payment gateway (KASSA_GATEWAY=http://...): a payment page opened
  # through the balancer must find its payment whichever replica created it, and the
  # gateway's webhooks come back through the balancer.
  env -i PATH="$PATH" "$KASSA_BIN" sandbox-gateway --listen "127.0.0.1:$SANDBOX_PORT" \
    --webhook-secret "$WEBHOOK_SECRET" --journal "$WORK/sandbox.journal" \
    </dev/null >>"$WORK/sandbox.log" 2>&1 &
  remember sandbox $!
  wait_tcp sandbox "$SANDBOX_PORT"
}

wait_tcp() { # NAME PORT: until PORT accepts a connection
  local deadline=$((SECONDS + 30))
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    alive "$1" || die "$1 exited while starting (log: $WORK/$1.log)"
    [ "$SECONDS" -lt "$deadline" ] || die "$1 did not listen on $2 within 30 s"
    sleep 0.1
  done
}

start_smtp() {
  mkdir -p "$WORK/smtp"
  SMTP_URL="$("$ROOT/scripts/smtp-sink.sh" start --dir "$WORK/smtp" --port 0)"
  SMTP_STARTED=1
  MAIL_DIR="$WORK/smtp/messages"
}

start_replica() { # NAME: same port, data dir and settings every time
  local name="$1"
  mkdir -p "$WORK/$name"
  kassa_env
  # A simple command, so that $! is Kassa's own pid (env execs it): the signals reach Kassa.
  env -i "${KENV[@]}" KASSA_LISTEN="127.0.0.1:${PORT[$name]}" KASSA_DATA_DIR="$WORK/$name" \
    "$KASSA_BIN" serve </dev/null >>"$WORK/$name.log" 2>&1 &
  remember "$name" $!
}

start_replicas() {
  local name
  for name in "${REPLICAS[@]}"; do start_replica "$name"; done
  for name in "${REPLICAS[@]}"; do
    wait_http "$name" "http://127.0.0.1:${PORT[$name]}/readyz" 90
  done
}

start_haproxy() {
  local name servers=""
  for name in "${REPLICAS[@]}"; do
    servers+="  server $name 127.0.0.1:${PORT[$name]} check"$'\n'
  done
  cat >"$WORK/haproxy.cfg" <<EOF
# Generated by scripts/cluster.sh.
global
  log stdout format raw local0
  maxconn 4096

defaults
  mode http
  log global
  # One line per request: when it came, which replica, status, how it ended, how many times
  # the balancer retried it, total ms, what, and the answer's Retry-After.
  log-format "%Ts.%ms %b/%s %ST %tsc %rc %Tt %HM %HP %{+Q}hs"
  timeout connect 1s
  # Idle client connections outlive kassa-loadtest's (reqwest pools them for 60 s): a client
  # must never send on a connection the balancer is closing at that moment.
  timeout client 75s
  timeout http-keep-alive 75s
  timeout server 60s
  timeout http-request 10s
  # A replica that refuses the connection (dead, or closed after its drain): try another.
  # What HAProxy 2.6 does with a request in flight on a replica that dies (seen in these
  # runs): it sends it again to another replica (logged with retries +1), or it closes the
  # client's connection without an answer and without a log line, so that the client
  # retries (kassa-loadtest --retry-interrupted does, with the same Idempotency-Key); a 502
  # is allowed for the killed replica's requests but was not seen.
  retries 3
  option redispatch 1
  retry-on conn-failure

frontend kassa
  bind 127.0.0.1:$LB_PORT
  capture response header Retry-After len 8
  default_backend replicas

backend replicas
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
$servers
listen stats
  bind 127.0.0.1:$STATS_PORT
  no log
  stats enable
  stats uri /
  stats refresh 1s
EOF
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejects $WORK/haproxy.cfg"
  haproxy -db -f "$WORK/haproxy.cfg" </dev/null >>"$WORK/haproxy.log" 2>&1 &
  remember haproxy $!
  wait_http haproxy "http://127.0.0.1:$LB_PORT/readyz" 30
}

start_prometheus() {
  local name targets=""
  for name in "${REPLICAS[@]}"; do targets+="'127.0.0.1:${PORT[$name]}', "; done
  python3 "$LIB/cluster_check.py" rules "$RULES" "$WORK/kassa-rules.yml" "$ALERT_FOR"
  cat >"$WORK/prometheus.yml" <<EOF
# Generated by scripts/cluster.sh: the chart's rules (KassaReplicaDown's for: $ALERT_FOR).
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - '$WORK/kassa-rules.yml'
scrape_configs:
  - job_name: kassa
    static_configs:
      - targets: [${targets%, }]
EOF
  promtool check config "$WORK/prometheus.yml" >/dev/null || die "promtool rejects the config"
  prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prometheus" \
    --web.listen-address="127.0.0.1:$PROM_PORT" </dev/null >>"$WORK/prometheus.log" 2>&1 &
  remember prometheus $!
  wait_http prometheus "http://127.0.0.1:$PROM_PORT/-/ready" 60
  # The load (and the kill) start once every replica has been scraped up.
  local deadline=$((SECONDS + 30)) query='count(up{job="kassa"} == 1)'
  until curl -fsS --max-time 2 "http://127.0.0.1:$PROM_PORT/api/v1/query" \
      --data-urlencode "query=$query" 2>/dev/null | grep -q "\"value\":\[[0-9.]*,\"${#REPLICAS[@]}\"\]"; do
    [ "$SECONDS" -lt "$deadline" ] || die "Prometheus did not scrape the ${#REPLICAS[@]} replicas within 30 s"
    sleep 0.2
  done
}

up_cluster() {
  mkdir -p "$WORK/pids"
  : >"$WORK/empty.toml"
  cassandra
  secrets
  ports
  start_smtp
  migrate
  start_sandbox
  start_replicas
  start_haproxy
  start_prometheus
}

describe() {
  cat <<EOF
balancer    http://127.0.0.1:$LB_PORT        (stats: http://127.0.0.1:$STATS_PORT/)
replicas    $(for n in "${REPLICAS[@]}"; do printf '%s http://127.0.0.1:%s  ' "$n" "${PORT[$n]}"; done)
prometheus  http://127.0.0.1:$PROM_PORT
sandbox     http://127.0.0.1:$SANDBOX_PORT   smtp sink $SMTP_URL -> $MAIL_DIR
store       $STORE
work dir    $WORK   (logs: *.log)
EOF
}

# ------------------------------------------------------------------ load ----

loadtest() { # SCENARIO REPORT ARGS...: kassa-loadtest through the balancer
  local scenario="$1" report="$2"
  shift 2
  local retry=()
  [ "$CHAOS" = 1 ] && retry=(--retry-interrupted "$RETRY")
  "$LOADTEST_BIN" --target "http://127.0.0.1:$LB_PORT" --jwt-secret "$JWT_SECRET" \
    --webhook-secret "$WEBHOOK_SECRET" --mail-dir "$MAIL_DIR" --scenario "$scenario" \
    --baseline 0s --settle-timeout "$SETTLE" --json "$report" "${retry[@]}" "$@"
}

wait_for_line() { # FILE PATTERN SECONDS
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "no '$2' in $1 within $3 s"
    sleep 0.2
  done
}

# While the storefront load runs: SIGKILL r1, start it again ~2 s later; SIGTERM r2 (it
# drains: /readyz 503, the balancer stops sending, in-flight requests end), start it again.
chaos() {
  local load_pid="$1" t0
  wait_for_line "$WORK/storefront.out" 'storefront:' 120
  sleep 2
  log "SIGKILL $KILLED (pid ${PIDS[$KILLED]})"
  KILL_AT="$(now)"
  kill -KILL "${PIDS[$KILLED]}"
  wait "${PIDS[$KILLED]}" 2>/dev/null || true
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$KILLED]}") 2>/dev/null; then
    die "$KILLED's port ${PORT[$KILLED]} still answers after SIGKILL of pid ${PIDS[$KILLED]}"
  fi
  sleep 2
  log "starting $KILLED again"
  start_replica "$KILLED"
  wait_http "$KILLED" "http://127.0.0.1:${PORT[$KILLED]}/readyz" 90
  KILLED_READY_AT="$(now)"
  sleep 3
  kill -0 "$load_pid" 2>/dev/null || die "the storefront load ended before the SIGTERM; make KASSA_CLUSTER_DURATION longer"
  log "SIGTERM $DRAINED (pid ${PIDS[$DRAINED]}), drain ${DRAIN_DELAY}s"
  t0="$(now)"
  kill -TERM "${PIDS[$DRAINED]}"
  DRAINED_EXIT=0
  wait "${PIDS[$DRAINED]}" || DRAINED_EXIT=$?
  DRAINED_SECONDS="$(seconds_since "$t0")"
  log "$DRAINED exited $DRAINED_EXIT after ${DRAINED_SECONDS}s; starting it again"
  start_replica "$DRAINED"
  wait_http "$DRAINED" "http://127.0.0.1:${PORT[$DRAINED]}/readyz" 90
}

run_test() {
  [ $# -eq 2 ] || die "usage: scripts/cluster.sh test KASSA_BIN LOADTEST_BIN"
  KASSA_BIN="$(realpath "$1")"
  LOADTEST_BIN="$(realpath "$2")"
  [ -x "$KASSA_BIN" ] || die "no Kassa binary at $1"
  [ -x "$LOADTEST_BIN" ] || die "no kassa-loadtest binary at $2"
  if [ "$CHAOS" = 1 ] && ! "$LOADTEST_BIN" --help | grep -q -- '--retry-interrupted'; then
    die "$LOADTEST_BIN has no --retry-interrupted: it would count the balancer's 502s for the killed replica's requests as failures (KASSA_CLUSTER_CHAOS=0 runs without the kill)"
  fi
  setup
  WORK="${KASSA_CLUSTER_DIR:-$(mktemp -d /tmp/kassa-cluster.XXXXXX)}"
  mkdir -p "$WORK"
  local started t
  started="$(now)"
  trap 'stop_all; if [ "$RESULT" = 0 ]; then rm -rf "$WORK"; else log "kept $WORK for a look"; fi' EXIT
  trap 'exit 130' INT TERM

  t="$(now)"
  up_cluster
  local t_up
  t_up="$(seconds_since "$t")"
  log "cluster up in ${t_up}s"
  describe >&2
  START="$(now)"

  KILL_AT="" KILLED_READY_AT="" DRAINED_EXIT=0 DRAINED_SECONDS=0
  log "storefront for $DURATION through the balancer$([ "$CHAOS" = 1 ] && echo ", with a SIGKILL and a SIGTERM")"
  t="$(now)"
  loadtest storefront "$WORK/storefront.json" --duration "$DURATION" --concurrency 16 \
    --products 20 --users 50 >"$WORK/storefront.out" 2>&1 &
  local load_pid=$! load_rc=0
  if [ "$CHAOS" = 1 ]; then
    chaos "$load_pid"
  fi
  wait "$load_pid" || load_rc=$?
  local t_store
  t_store="$(seconds_since "$t")"
  sed -n '/^kassa-loadtest/,$p' "$WORK/storefront.out" >&2
  log "storefront exited $load_rc in ${t_store}s"

  log "flash-sale through the balancer"
  t="$(now)"
  local flash_rc=0
  loadtest flash-sale "$WORK/flash-sale.json" --stock 40 --shoppers 300 --concurrency 32 \
    --quiet >"$WORK/flash-sale.out" 2>&1 || flash_rc=$?
  local t_flash
  t_flash="$(seconds_since "$t")"
  cat "$WORK/flash-sale.out" >&2
  log "flash-sale exited $flash_rc in ${t_flash}s"
  # Two more scrapes and rule evaluations, so that the last of the load is in Prometheus.
  sleep 2
  END="$(now)"

  local killed_server="" killed_instance="127.0.0.1:${PORT[$KILLED]}"
  [ "$CHAOS" = 1 ] && killed_server="$KILLED"
  python3 - "$WORK/facts.json" <<EOF
import json, sys
t = lambda s: float(s) if s else None
json.dump({
    "storefront_report": "$WORK/storefront.json",
    "flash_sale_report": "$WORK/flash-sale.json",
    "haproxy_log": "$WORK/haproxy.log",
    "mail_dir": "$MAIL_DIR",
    "dashboard": "$DASHBOARD",
    "prometheus": "http://127.0.0.1:$PROM_PORT",
    "start": float("$START"),
    "end": float("$END"),
    "kill_at": t("$KILL_AT"),
    "killed_ready_at": t("$KILLED_READY_AT"),
    "killed_server": "$killed_server",
    "killed_instance": "$killed_instance",
    "replicas": {$(for n in "${REPLICAS[@]}"; do printf '"%s": "http://127.0.0.1:%s", ' "$n" "${PORT[$n]}"; done)},
    "drained_exit": $DRAINED_EXIT,
    "drained_seconds": float("$DRAINED_SECONDS"),
    "drain_limit": $((DRAIN_DELAY + 8)),
    "timings": {"cluster up": float("$t_up"), "storefront": float("$t_store"),
                "flash-sale": float("$t_flash")},
}, open(sys.argv[1], "w"), indent=2)
EOF
  local check_rc=0
  python3 "$LIB/cluster_check.py" check --facts "$WORK/facts.json" || check_rc=$?
  log "loadtest exits: storefront $load_rc, flash-sale $flash_rc; checks exit $check_rc; total $(seconds_since "$started")s"
  if [ "$load_rc" = 0 ] && [ "$flash_rc" = 0 ] && [ "$check_rc" = 0 ]; then
    RESULT=0
    log "PASS"
  else
    log "FAIL (logs in $WORK)"
  fi
  return "$RESULT"
}

# ------------------------------------------------------------------ up / down ----

run_up() {
  [ $# -eq 1 ] || die "usage: scripts/cluster.sh up KASSA_BIN"
  KASSA_BIN="$(realpath "$1")"
  [ -x "$KASSA_BIN" ] || die "no Kassa binary at $1"
  setup
  WORK="${KASSA_CLUSTER_DIR:-/tmp/kassa-cluster}"
  [ -z "$(ls -A "$WORK/pids" 2>/dev/null)" ] || die "a cluster already runs from $WORK (scripts/cluster.sh down)"
  rm -rf "$WORK"
  mkdir -p "$WORK"
  trap 'stop_all' EXIT
  up_cluster
  trap - EXIT
  describe | tee "$WORK/README" >&2
  cat >"$WORK/env" <<EOF
export KASSA_CLUSTER_URL=http://127.0.0.1:$LB_PORT
export KASSA_JWT_SECRET='$JWT_SECRET'
export KASSA_WEBHOOK_SECRET='$WEBHOOK_SECRET'
EOF
  log "running; secrets in $WORK/env; stop with: scripts/cluster.sh down"
}

run_down() {
  WORK="${KASSA_CLUSTER_DIR:-/tmp/kassa-cluster}"
  local file pid
  for file in "$WORK"/pids/*; do
    [ -f "$file" ] || continue
    pid="$(tr -dc '0-9' <"$file")"
    # Only a process of this cluster: its command line or environment names the work dir
    # (a pid written long ago may belong to another process by now).
    if [ -n "$pid" ] && cat "/proc/$pid/cmdline" "/proc/$pid/environ" 2>/dev/null \
        | tr '\0' '\n' | grep -qF "$WORK"; then
      PIDS[$(basename "$file")]="$pid"
    else
      rm -f "$file"
    fi
  done
  [ -d "$WORK/smtp" ] && SMTP_STARTED=1
  stop_all
  log "stopped what $WORK/pids listed (Cassandra stays: scripts/cassandra.sh stop)"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  setup) setup; log "ready: $(haproxy -v | head -1), $(prometheus --version 2>&1 | head -1)" ;;
  test) run_test "$@" ;;
  up) run_up "$@" ;;
  down) run_down ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
