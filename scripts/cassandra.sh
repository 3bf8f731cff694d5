#!/usr/bin/env bash
# Run a throwaway single-node Apache Cassandra 5.0 for Kassa's local
# development and tests, without Docker and without a Cassandra tarball:
# cassandra-all and its runtime dependencies come from Maven Central.
#
# Usage: scripts/cassandra.sh {fetch|start|stop|status|restart|clean}
#
#   fetch    download cassandra-all + runtime deps into the cache (once)
#   start    fetch if needed, write config, start the node in the background
#            and wait until it serves CQL; exits 0 if it is already running
#   stop     stop the node (SIGTERM, SIGKILL after CASSANDRA_STOP_TIMEOUT s)
#   status   exit 0 if running, 3 if not
#   restart  stop then start
#   clean    stop, then delete the run directory (all data)
#
# Environment (all optional):
#   CASSANDRA_VERSION        cassandra-all version         (default 5.0.9)
#   KASSA_CACHE_DIR          jar cache                      (default ~/.cache/kassa/cassandra)
#   KASSA_CASSANDRA_DIR      run dir: config, data, logs    (default /tmp/kassa-cassandra)
#   CASSANDRA_PORT           CQL native transport port      (default 9042)
#   CASSANDRA_STORAGE_PORT   inter-node storage port        (default 7000)
#   CASSANDRA_JMX_PORT       local JMX port, for nodetool   (default: JMX off)
#   CASSANDRA_HEAP           -Xms/-Xmx                      (default 2G: a full test run creates
#                            some 130 keyspaces of 9 tables each; 1G ran out of heap)
#   CASSANDRA_CLUSTER_NAME   cluster_name                   (default kassa)
#   CASSANDRA_START_TIMEOUT  seconds to wait for CQL        (default 180)
#   CASSANDRA_STOP_TIMEOUT   seconds before SIGKILL         (default 30)
#   CASSANDRA_JVM_OPTS       extra JVM options (word-split)
#   CASSANDRA_SECURE         1: clients must log in (PasswordAuthenticator, the default
#                            superuser cassandra/cassandra) and speak TLS; the node's
#                            certificate (IP 127.0.0.1, DNS localhost) is signed by a CA
#                            made on first start, whose PEM is $RUN_DIR/tls/ca.pem
#   JAVA                     java binary                    (default: java on PATH)
#
# The Maven local repository is the default (~/.m2); the jars are copied from
# it into $KASSA_CACHE_DIR/<version>/lib, and a second fetch does nothing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/cassandra/pom.xml"

CASSANDRA_VERSION="${CASSANDRA_VERSION:-5.0.9}"
CACHE_DIR="${KASSA_CACHE_DIR:-$HOME/.cache/kassa/cassandra}"
RUN_DIR="${KASSA_CASSANDRA_DIR:-/tmp/kassa-cassandra}"
CQL_PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
JMX_PORT="${CASSANDRA_JMX_PORT:-}"
HEAP="${CASSANDRA_HEAP:-2G}"
CLUSTER_NAME="${CASSANDRA_CLUSTER_NAME:-kassa}"
START_TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
STOP_TIMEOUT="${CASSANDRA_STOP_TIMEOUT:-30}"
JAVA="${JAVA:-java}"
SECURE="${CASSANDRA_SECURE:-}"

LIB_DIR="$CACHE_DIR/$CASSANDRA_VERSION/lib"
FETCH_MARKER="$CACHE_DIR/$CASSANDRA_VERSION/.fetched"

log() { echo "cassandra: $*"; }
err() { echo "cassandra: error: $*" >&2; }
die() { err "$*"; exit 1; }

# Absolute run dir (cassandra.config must be a file:/// URL).
abs_run_dir() {
  mkdir -p "$RUN_DIR"
  RUN_DIR="$(cd "$RUN_DIR" && pwd -P)"
  PID_FILE="$RUN_DIR/cassandra.pid"
  LOG_FILE="$RUN_DIR/cassandra.log"
  YAML="$RUN_DIR/cassandra.yaml"
  LOGBACK="$RUN_DIR/logback.xml"
}

# ---------------------------------------------------------------- fetch ----

jar_count() {
  local jars=("$LIB_DIR"/*.jar)
  echo "${#jars[@]}"
}

is_fetched() {
  [[ -f "$FETCH_MARKER" ]] && compgen -G "$LIB_DIR/cassandra-all-$CASSANDRA_VERSION.jar" >/dev/null \
    && compgen -G "$LIB_DIR/jamm-*.jar" >/dev/null
}

cmd_fetch() {
  if is_fetched; then
    log "cassandra-all $CASSANDRA_VERSION already fetched ($(jar_count) jars in $LIB_DIR)"
    return 0
  fi
  command -v mvn >/dev/null || die "mvn (Maven) not found on PATH; it is needed to fetch Cassandra"
  [[ -f "$POM" ]] || die "missing $POM"
  log "fetching org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION and its runtime dependencies with Maven..."
  local start tmp out
  start=$(date +%s)
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp -d "$CACHE_DIR/.fetch.XXXXXX")"
  out="$tmp/mvn.log"
  if ! mvn -B -q -f "$POM" -Dcassandra.version="$CASSANDRA_VERSION" \
      dependency:copy-dependencies -DoutputDirectory="$tmp/lib" >"$out" 2>&1; then
    tail -n 40 "$out" >&2 || true
    rm -rf "$tmp"
    die "Maven could not fetch cassandra-all $CASSANDRA_VERSION (output above)"
  fi
  if ! compgen -G "$tmp/lib/cassandra-all-$CASSANDRA_VERSION.jar" >/dev/null; then
    rm -rf "$tmp"
    die "Maven finished but cassandra-all-$CASSANDRA_VERSION.jar is missing"
  fi
  rm -rf "${CACHE_DIR:?}/${CASSANDRA_VERSION:?}"
  mkdir -p "$CACHE_DIR/$CASSANDRA_VERSION"
  mv "$tmp/lib" "$LIB_DIR"
  rm -rf "$tmp"
  date -u +%FT%TZ >"$FETCH_MARKER"
  log "fetched $(jar_count) jars ($(du -sh "$LIB_DIR" | cut -f1)) into $LIB_DIR in $(( $(date +%s) - start ))s"
}

# -------------------------------------------------------------- process ----

# PID from the pidfile if that process is alive and is our CassandraDaemon.
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'org.apache.cassandra.service.CassandraDaemon' || return 1
  fi
  echo "$pid"
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

show_log_tail() {
  if [[ -s "$LOG_FILE" ]]; then
    echo "cassandra: ---- last 50 lines of $LOG_FILE ----" >&2
    tail -n 50 "$LOG_FILE" >&2
    echo "cassandra: ---- end of log ----" >&2
  else
    err "$LOG_FILE is empty or missing"
  fi
}

# --------------------------------------------------------------- config ----

# CASSANDRA_SECURE: a CA and the node's key and certificate, made once per run dir (openssl).
write_tls() {
  local dir="$RUN_DIR/tls"
  [[ -s "$dir/keystore.pem" ]] && return 0
  command -v openssl >/dev/null || die "openssl not found on PATH (CASSANDRA_SECURE needs it)"
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=Kassa test Cassandra CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=cassandra" \
    -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=CA:FALSE" \
    "keyUsage=digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/node.ext"
  openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 3650 -extfile "$dir/node.ext" -out "$dir/node.pem" 2>/dev/null
  cat "$dir/node.key" "$dir/node.pem" >"$dir/keystore.pem"
  log "made a test CA ($dir/ca.pem) and the node's certificate"
}

# The cassandra.yaml lines of CASSANDRA_SECURE (or of an open node).
security_config() {
  if [[ "$SECURE" != 1 ]]; then
    echo "authenticator: AllowAllAuthenticator"
    return
  fi
  cat <<EOF
authenticator: PasswordAuthenticator
client_encryption_options:
  enabled: true
  optional: false
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: $RUN_DIR/tls/keystore.pem
  require_client_auth: false
EOF
}

write_config() {
  mkdir -p "$RUN_DIR"/{data,commitlog,saved_caches,hints,cdc_raw,triggers,logs}
  if [[ "$SECURE" == 1 ]]; then
    write_tls
  fi
  cat >"$YAML" <<EOF
# Generated by scripts/cassandra.sh on every start -- edits are overwritten.
# Minimal single-node Cassandra $CASSANDRA_VERSION for local development/tests.
cluster_name: '$CLUSTER_NAME'
num_tokens: 16
allocate_tokens_for_local_replication_factor: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch

seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"

listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
start_native_transport: true
native_transport_port: $CQL_PORT

data_file_directories:
  - $RUN_DIR/data
commitlog_directory: $RUN_DIR/commitlog
saved_caches_directory: $RUN_DIR/saved_caches
hints_directory: $RUN_DIR/hints
cdc_raw_directory: $RUN_DIR/cdc_raw

commitlog_sync: periodic
commitlog_sync_period: 10000ms

# Paxos v2: fewer round trips for lightweight transactions (IF ... clauses).
paxos_variant: v2
# Fresh single-node cluster: no need to stay wire/disk compatible with 4.x.
storage_compatibility_mode: NONE

$(security_config)
authorizer: AllowAllAuthorizer
role_manager: CassandraRoleManager
network_authorizer: AllowAllNetworkAuthorizer

# Throwaway dev node: no snapshots on TRUNCATE/DROP, no bootstrapping.
auto_snapshot: false
auto_bootstrap: false
incremental_backups: false
snapshot_before_compaction: false
EOF

  cat >"$LOGBACK" <<EOF
<!-- Generated by scripts/cassandra.sh: everything goes to one file, nothing to the console. -->
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$LOG_FILE</file>
    <append>true</append>
    <encoder>
      <pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <root level="INFO">
    <appender-ref ref="FILE"/>
  </root>
</configuration>
EOF
}

# ------------------------------------------------------------------ jvm ----

java_major() {
  "$JAVA" -XshowSettings:properties -version 2>&1 \
    | awk -F'= ' '/java.specification.version/ {print $2; exit}'
}

build_jvm_args() {
  local jamm
  jamm="$(compgen -G "$LIB_DIR/jamm-*.jar" | head -n1)"
  [[ -n "$jamm" ]] || die "jamm jar not found in $LIB_DIR"

  JVM_ARGS=(
    # --- conf/jvm-server.options (general settings) ---
    -ea
    -da:net.openhft...
    -XX:+UseThreadPriorities
    -XX:+HeapDumpOnOutOfMemoryError
    -XX:+ExitOnOutOfMemoryError
    "-XX:HeapDumpPath=$RUN_DIR"
    -Xss256k
    -XX:+AlwaysPreTouch
    -XX:+UseTLAB
    -XX:+ResizeTLAB
    -XX:+UseNUMA
    -XX:+PerfDisableSharedMem
    -Djava.net.preferIPv4Stack=true
    # --- conf/jvm17-server.options ---
    -XX:+UseG1GC
    -XX:+ParallelRefProcEnabled
    -XX:MaxTenuringThreshold=1
    -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5
    -XX:MaxGCPauseMillis=300
    -XX:InitiatingHeapOccupancyPercent=70
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    # --- what bin/cassandra + cassandra-env.sh would add ---
    "-Xms$HEAP"
    "-Xmx$HEAP"
    "-javaagent:$jamm"
    -Dcassandra-foreground=yes
    "-Dcassandra.config=file://$YAML"
    "-Dlogback.configurationFile=file://$LOGBACK"
    "-Dcassandra.logdir=$RUN_DIR/logs"
    "-Dcassandra.storagedir=$RUN_DIR"
    "-Dcassandra.triggers_dir=$RUN_DIR/triggers"
    # --- fast single-node startup ---
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=1000
    -Dcassandra.superuser_setup_delay_ms=0
  )
  if [[ -n "$JMX_PORT" ]]; then
    JVM_ARGS+=("-Dcassandra.jmx.local.port=$JMX_PORT")
  fi
  if [[ -n "${CASSANDRA_JVM_OPTS:-}" ]]; then
    # shellcheck disable=SC2206 # word splitting is intended
    JVM_ARGS+=($CASSANDRA_JVM_OPTS)
  fi
  JVM_ARGS+=(-cp "$LIB_DIR/*" org.apache.cassandra.service.CassandraDaemon)
}

# ------------------------------------------------------------- commands ----

cmd_start() {
  abs_run_dir
  # Test binaries (and developers) may start the node at the same moment: one starts it,
  # the others wait for it and then find it running.
  if command -v flock >/dev/null; then
    exec 9>"$RUN_DIR/start.lock"
    flock 9
  fi
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid, CQL on 127.0.0.1:$CQL_PORT, run dir $RUN_DIR)"
    return 0
  fi
  rm -f "$PID_FILE"

  command -v "$JAVA" >/dev/null || die "java not found on PATH (OpenJDK 17 is needed)"
  local major
  major="$(java_major)"
  if [[ "$major" != "17" ]]; then
    err "warning: Cassandra $CASSANDRA_VERSION is set up here for Java 17, found Java ${major:-unknown}"
  fi

  if port_open "$CQL_PORT"; then
    die "port $CQL_PORT on 127.0.0.1 is already in use by another process (not ours: no live pid in $PID_FILE); set CASSANDRA_PORT"
  fi
  if port_open "$STORAGE_PORT"; then
    die "storage port $STORAGE_PORT on 127.0.0.1 is already in use; set CASSANDRA_STORAGE_PORT"
  fi

  cmd_fetch
  write_config
  build_jvm_args

  # Keep the previous run's log for post-mortems.
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"

  log "starting Cassandra $CASSANDRA_VERSION (CQL 127.0.0.1:$CQL_PORT, run dir $RUN_DIR, log $LOG_FILE)"
  local t0
  t0=$(date +%s)
  # New session so the node outlives this shell; the inner bash writes its own
  # PID and then execs java, so the pidfile holds the JVM's PID.
  # shellcheck disable=SC2016 # $$, $0 and $@ are for the inner bash
  # The node must not inherit the start lock (fd 9), or the next start would wait forever.
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PID_FILE" "$JAVA" "${JVM_ARGS[@]}" \
    </dev/null >>"$LOG_FILE" 2>&1 9>&- &

  local deadline=$(( t0 + START_TIMEOUT ))
  pid=""
  while :; do
    sleep 1
    [[ -z "$pid" && -s "$PID_FILE" ]] && pid="$(tr -dc '0-9' <"$PID_FILE")"
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      err "Cassandra (pid $pid) exited during startup"
      show_log_tail
      rm -f "$PID_FILE"
      exit 1
    fi
    if grep -q 'Starting listening for CQL clients' "$LOG_FILE" 2>/dev/null && port_open "$CQL_PORT"; then
      break
    fi
    if (( $(date +%s) >= deadline )); then
      err "Cassandra did not serve CQL on 127.0.0.1:$CQL_PORT within ${START_TIMEOUT}s"
      show_log_tail
      # Do not leave a half-started JVM holding the ports.
      cmd_stop >&2 || true
      exit 1
    fi
  done
  log "ready: pid $pid, CQL on 127.0.0.1:$CQL_PORT, started in $(( $(date +%s) - t0 ))s"
}

cmd_stop() {
  abs_run_dir
  local pid
  if ! pid="$(running_pid)"; then
    if [[ -f "$PID_FILE" ]]; then
      log "not running (removing stale pidfile $PID_FILE)"
      rm -f "$PID_FILE"
    else
      log "not running"
    fi
    return 0
  fi
  log "stopping pid $pid (SIGTERM)..."
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for (( i = 0; i < STOP_TIMEOUT * 2; i++ )); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 20; i++ )); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && die "pid $pid survived SIGKILL"
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

cmd_status() {
  abs_run_dir
  local pid
  if pid="$(running_pid)"; then
    if port_open "$CQL_PORT"; then
      log "running (pid $pid, CQL on 127.0.0.1:$CQL_PORT, run dir $RUN_DIR)"
    else
      log "running (pid $pid) but CQL port $CQL_PORT is not accepting connections yet"
    fi
    return 0
  fi
  log "not running (run dir $RUN_DIR)"
  return 3
}

cmd_clean() {
  cmd_stop
  [[ "$RUN_DIR" != "/" ]] || die "refusing to remove /"
  log "removing $RUN_DIR"
  rm -rf "${RUN_DIR:?}"
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'
}

case "${1:-}" in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_stop; cmd_start ;;
  clean) cmd_clean ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
