#!/usr/bin/env bash
# A real, single-node Apache Kafka broker (KRaft, combined broker + controller) on 127.0.0.1,
# for MetricStream's tests and benchmarks. Needs Java 17+ and Maven; fetches the jars from
# Maven Central on first use.
#
#   hack/kafka.sh up [--env-file PATH]
#                               fetch jars (once), make a throwaway CA, broker certificate and SCRAM
#                               passwords (once), format storage (once), start the broker, wait
#                               until it serves metadata; prints the secure listener's settings
#                               (KAFKA_SECURE_BOOTSTRAP, KAFKA_CA_FILE, KAFKA_SCRAM_USERNAME,
#                               KAFKA_SCRAM_PASSWORD_FILE, KAFKA_SCRAM_ADMIN_USERNAME,
#                               KAFKA_SCRAM_ADMIN_PASSWORD_FILE), then, last,
#                               KAFKA_BOOTSTRAP=host:port (the PLAINTEXT listener); with
#                               --env-file, also writes those lines to PATH (atomically)
#   hack/kafka.sh down          stop the broker and delete its state dir (idempotent)
#   hack/kafka.sh status        exit 0 if the broker runs and serves metadata, non-zero otherwise
#   hack/kafka.sh stop-broker [--kill]   stop the process (SIGTERM, or SIGKILL), keep its data
#   hack/kafka.sh start-broker [--env-file PATH]   start it again on the same data (same as `up`)
#   hack/kafka.sh pause-broker / resume-broker   SIGSTOP / SIGCONT: a hung, not a dead, broker
#   hack/kafka.sh tool CLASS|ALIAS [ARGS...]     run a Kafka main class with the cached jars;
#                               aliases: topics producer-perf consumer-perf console-producer
#                               console-consumer consumer-groups api-versions get-offsets storage
#                               acls configs
#   hack/kafka.sh classpath     print the classpath of the cached jars
#
# Environment:
#   METRICSTREAM_KAFKA_STATE  state dir (config, data, broker.log, broker.pid); default <repo>/.kafka
#   KAFKA_HOST                the address every listener binds and advertises (default 127.0.0.1;
#                             hack/e2e.sh: the local cluster's bridge gateway, which pods reach)
#   KAFKA_PORT                PLAINTEXT port (default 19092)
#   KAFKA_CONTROLLER_PORT     KRaft controller port (default 19093)
#   KAFKA_SECURE_PORT         SASL_SSL (SCRAM-SHA-512) port (default KAFKA_PORT + 2: 19094)
#   KAFKA_HEAP_OPTS           broker heap (default "-Xms128m -Xmx512m")
#   KAFKA_TOOL_HEAP_OPTS      heap of `tool` (default "-Xmx512m")
#   KAFKA_OVERRIDES           extra broker settings, space-separated key=value pairs
#   KAFKA_READY_TIMEOUT       seconds `up` waits for the broker (default 90)
#   KAFKA_STOP_TIMEOUT        seconds between SIGTERM and SIGKILL (default 20)
#   KAFKA_CDS                 0: no class-data-sharing archive (default 1: faster JVM starts)
#   XDG_CACHE_HOME            jars go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/kafka-<version>/lib
#   JAVA_HOME                 the Java to use (default: java on PATH)
# Progress goes to stderr; stdout carries only results.
#
# Users of the SASL_SSL listener: KAFKA_SCRAM_ADMIN_USERNAME (metricstream-admin) is a super user;
# KAFKA_SCRAM_USERNAME (metricstream-workload) may do only what ACLs grant it (StandardAuthorizer;
# grant with `tool acls --bootstrap-server <KAFKA_BOOTSTRAP> --add ...`). PLAINTEXT connections
# are User:ANONYMOUS, a super user, so nothing changes for them.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pinned versions ---------------------------------------------------------------------------
KAFKA_VERSION=4.4.0
LOG4J_VERSION=2.25.5  # what kafka-server 4.4.0 itself depends on
SLF4J_VERSION=1.7.36  # Kafka 4.x logs through SLF4J 1.7
DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

# ---- layout ------------------------------------------------------------------------------------
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
SUPPORT_DIR=$HACK_DIR/kafka

CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
CACHE_DIR=$CACHE_ROOT/kafka-$KAFKA_VERSION
LIB_DIR=$CACHE_DIR/lib
M2_REPO=$CACHE_ROOT/maven-repo

STATE_DIR=${METRICSTREAM_KAFKA_STATE:-$REPO_DIR/.kafka}
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
DATA_DIR=$STATE_DIR/data
CONFIG_FILE=$STATE_DIR/server.properties
PID_FILE=$STATE_DIR/broker.pid
LOG_FILE=$STATE_DIR/broker.log
BOOTSTRAP_FILE=$STATE_DIR/bootstrap
SECURE_BOOTSTRAP_FILE=$STATE_DIR/secure-bootstrap
# The throwaway CA certificate, the broker's keystore and the SCRAM passwords.
SECURE_DIR=$STATE_DIR/secure
ADMIN_USER=metricstream-admin
WORKLOAD_USER=metricstream-workload
MARKER_FILE=$STATE_DIR/.metricstream-kafka

HOST=${KAFKA_HOST:-127.0.0.1}
PORT=${KAFKA_PORT:-19092}
CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
SECURE_PORT=${KAFKA_SECURE_PORT:-$((PORT + 2))}
READY_TIMEOUT=${KAFKA_READY_TIMEOUT:-90}
STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-20}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# ---- jars --------------------------------------------------------------------------------------

# What the cache must have been built from; a change of pins or of the pom rebuilds it.
cache_stamp() {
  local pom_sum
  pom_sum=$(sha256sum <"$SUPPORT_DIR/pom.xml")
  echo "kafka=$KAFKA_VERSION log4j=$LOG4J_VERSION slf4j=$SLF4J_VERSION pom=${pom_sum:0:16}"
}

cache_ok() {
  [[ -f $CACHE_DIR/stamp && $(<"$CACHE_DIR/stamp") == "$1" ]]
}

TMP_FETCH_DIR=
cleanup_fetch() { if [[ -n $TMP_FETCH_DIR ]]; then rm -rf "$TMP_FETCH_DIR"; fi; }

# Resolve the jars into a temp dir next to the cache, then rename it into place: a cache dir
# exists only when complete. A lock keeps concurrent callers from resolving twice.
ensure_jars() {
  local stamp
  stamp=$(cache_stamp)
  cache_ok "$stamp" && return 0

  command -v mvn >/dev/null || die "mvn (Maven) is needed to fetch the Kafka jars"
  take_lock 8 "$CACHE_ROOT/.kafka-$KAFKA_VERSION.lock"
  if cache_ok "$stamp"; then release_lock 8; return 0; fi
  # Holding the lock, any temp dir left here is from an interrupted run.
  rm -rf "$CACHE_ROOT/.kafka-$KAFKA_VERSION.tmp."*

  TMP_FETCH_DIR=$(mktemp -d "$CACHE_ROOT/.kafka-$KAFKA_VERSION.tmp.XXXXXX")
  trap cleanup_fetch EXIT
  trap 'exit 130' INT TERM
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $CACHE_DIR (first run only)"
  local t0
  t0=$(now_ms)
  if ! mvn -B -ntp -f "$SUPPORT_DIR/pom.xml" \
      -Dmaven.repo.local="$M2_REPO" \
      -Dkafka.version="$KAFKA_VERSION" -Dlog4j.version="$LOG4J_VERSION" -Dslf4j.version="$SLF4J_VERSION" \
      "$DEPENDENCY_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$TMP_FETCH_DIR/lib" \
      >"$TMP_FETCH_DIR/mvn.log" 2>&1; then
    tail -n 40 "$TMP_FETCH_DIR/mvn.log" >&2
    die "Maven could not resolve the Kafka jars (log above)"
  fi
  local jar
  for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar" \
      "log4j-slf4j-impl-$LOG4J_VERSION.jar" "log4j-core-$LOG4J_VERSION.jar" "slf4j-api-$SLF4J_VERSION.jar"; do
    [[ -f $TMP_FETCH_DIR/lib/$jar ]] || die "resolved jars lack $jar"
  done
  mv "$TMP_FETCH_DIR/mvn.log" "$TMP_FETCH_DIR/fetch.log"
  echo "$stamp" >"$TMP_FETCH_DIR/stamp"
  if [[ -e $CACHE_DIR ]]; then  # built from other pins: move it aside, then delete it
    local old="$CACHE_ROOT/.kafka-$KAFKA_VERSION.tmp.old.$$"
    mv -T "$CACHE_DIR" "$old"
    rm -rf "$old"
  fi
  mv -T "$TMP_FETCH_DIR" "$CACHE_DIR"
  TMP_FETCH_DIR=
  release_lock 8
  log "fetched $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $(since "$t0") s"
}

JAVA_VM_VERSION=unknown
check_java() {
  command -v "$JAVA" >/dev/null || die "java not found (Java 17+ is needed; set JAVA_HOME or PATH)"
  local v props
  props=$("$JAVA" -XshowSettings:properties -version 2>&1)
  v=$(sed -n 's/^ *java\.specification\.version = //p' <<<"$props")
  JAVA_VM_VERSION=$(sed -n 's/^ *java\.vm\.version = //p' <<<"$props")
  [[ ${v%%.*} =~ ^[0-9]+$ ]] || die "cannot tell the version of $JAVA"
  (( ${v%%.*} >= 17 )) || die "Kafka $KAFKA_VERSION needs Java 17+, $JAVA is $v"
}

# Class-data sharing: the first broker run dumps the classes it loaded into an archive at exit;
# later broker, format and tool JVMs map it and start a second or more sooner (a broker: 3-4 s).
# One archive per Kafka version and JVM build; KAFKA_CDS=0 turns it off.
CDS_RECORD=$STATE_DIR/cds-dump
cds_archive() { echo "$CACHE_DIR/broker-${JAVA_VM_VERSION//[^A-Za-z0-9._-]/_}.jsa"; }

# JVM options of a short-lived JVM (format, tools): the archive if there is one; JVM warnings
# go to stderr, not stdout.
TOOL_JVM_OPTS=()
tool_jvm_opts() {
  TOOL_JVM_OPTS=(-Xlog:disable -Xlog:all=warning:stderr -Djava.awt.headless=true
    -Dlog4j2.shutdownHookEnabled=false -Dlog4j2.configurationFile="$SUPPORT_DIR/tools-log4j2.properties")
  local jsa
  jsa=$(cds_archive)
  if [[ ${KAFKA_CDS:-1} == 1 && -s $jsa ]]; then TOOL_JVM_OPTS+=(-XX:SharedArchiveFile="$jsa"); fi
}

# Run a Java main class on the cached classpath, logging warnings only, to stderr.
run_java_tool() {
  local heap=$1 main=$2
  shift 2
  local -a heap_opts
  read -r -a heap_opts <<<"$heap"
  tool_jvm_opts
  exec "$JAVA" "${heap_opts[@]}" "${TOOL_JVM_OPTS[@]}" -cp "$LIB_DIR/*" "$main" "$@"
}

tool_class() {
  case $1 in
    topics) echo org.apache.kafka.tools.TopicCommand ;;
    producer-perf) echo org.apache.kafka.tools.ProducerPerformance ;;
    consumer-perf) echo org.apache.kafka.tools.ConsumerPerformance ;;
    console-producer) echo org.apache.kafka.tools.ConsoleProducer ;;
    console-consumer) echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    consumer-groups) echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    api-versions) echo org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    get-offsets) echo org.apache.kafka.tools.GetOffsetShell ;;
    storage) echo kafka.tools.StorageTool ;;
    acls) echo org.apache.kafka.tools.AclCommand ;;
    configs) echo org.apache.kafka.tools.ConfigCommand ;;
    *) echo "$1" ;;
  esac
}

# ---- the broker process ------------------------------------------------------------------------

# The pid of this state dir's broker if it is alive (a zombie or a reused pid does not count).
broker_pid() {
  read_pid_file "$PID_FILE" && [[ $CMDLINE == *kafka.Kafka*"$CONFIG_FILE"* ]] && echo "$PID"
}

bootstrap() {
  if [[ -f $BOOTSTRAP_FILE ]]; then cat "$BOOTSTRAP_FILE"; else echo "$HOST:$PORT"; fi
}

# Send a Metadata request (v4, all topics) to host:port and check that the answer carries our
# correlation id and at least one broker. No JVM: takes milliseconds. A KRaft broker only
# processes requests once it is registered and unfenced, so an answer means it is usable.
probe_metadata() {
  local host=${1%:*} port=${1##*:} hex
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  hex=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/$1/$2" || exit 1
    # size=20 | api_key=3 (Metadata) | version=4 | correlation_id=0x4d53 | client_id="probe"
    # | topics=null (all) | allow_auto_topic_creation=false
    printf "\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x4d\x53\x00\x05probe\xff\xff\xff\xff\x00" >&3
    # size | correlation_id | throttle_time_ms | brokers count
    head -c 16 <&3 | od -An -v -tx1
  ' probe "$host" "$port" 2>/dev/null) || return 1
  hex=${hex//[[:space:]]/}
  [[ ${#hex} -eq 32 && ${hex:8:8} == 00004d53 ]] || return 1
  local brokers=$((16#${hex:24:8}))
  ((brokers >= 1 && brokers < 1000))
}

# What a client of the SASL_SSL listener needs, then the PLAINTEXT bootstrap last.
# On stdout, and in ENV_FILE with --env-file.
print_endpoints() {
  local lines=()
  if [[ -f $SECURE_DIR/complete && -f $SECURE_BOOTSTRAP_FILE ]]; then
    lines+=("KAFKA_SECURE_BOOTSTRAP=$(<"$SECURE_BOOTSTRAP_FILE")"
      "KAFKA_CA_FILE=$SECURE_DIR/ca.crt"
      "KAFKA_SCRAM_USERNAME=$WORKLOAD_USER"
      "KAFKA_SCRAM_PASSWORD_FILE=$SECURE_DIR/workload.password"
      "KAFKA_SCRAM_ADMIN_USERNAME=$ADMIN_USER"
      "KAFKA_SCRAM_ADMIN_PASSWORD_FILE=$SECURE_DIR/admin.password")
  fi
  lines+=("KAFKA_BOOTSTRAP=$(bootstrap)")
  emit "${lines[@]}"
}

# 24 random bytes, base64url: a password without characters the SCRAM syntax treats specially.
random_secret() {
  head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'
}

# A throwaway CA, a broker certificate it signed (for 127.0.0.1 and localhost) in a PKCS12
# keystore, and the SCRAM users' passwords; made once per state dir, in a temp dir renamed
# into place when complete. The CA's key is deleted: nothing else is ever signed with it.
ensure_secure_material() {
  [[ -f $SECURE_DIR/complete ]] && return 0
  command -v openssl >/dev/null || die "openssl is needed for the SASL_SSL listener's certificates"
  local tmp=$STATE_DIR/.secure.tmp
  rm -rf "$tmp"
  mkdir -m 700 "$tmp"
  log "making a throwaway CA, the broker certificate and SCRAM passwords in $SECURE_DIR"
  if ! (
    set -e
    cd "$tmp"
    umask 077
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=MetricStream test CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
      -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:%s,DNS:localhost\nextendedKeyUsage=serverAuth\n' "$HOST" >broker.ext
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile broker.ext -out broker.crt
    random_secret >keystore.password
    openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
      -passout file:keystore.password -out broker.p12
    random_secret >admin.password
    random_secret >workload.password
    rm -f ca.key ca.srl broker.key broker.csr broker.ext
    chmod 644 ca.crt
  ) >"$STATE_DIR/secure.log" 2>&1; then
    cat "$STATE_DIR/secure.log" >&2
    die "making the certificates failed"
  fi
  touch "$tmp/complete"
  mv -T "$tmp" "$SECURE_DIR"
}

render_config() {
  local tmpl
  tmpl=$(<"$SUPPORT_DIR/server.properties.in")
  tmpl=${tmpl//@HOST@/"$HOST"}
  tmpl=${tmpl//@PORT@/"$PORT"}
  tmpl=${tmpl//@CONTROLLER_PORT@/"$CONTROLLER_PORT"}
  tmpl=${tmpl//@SECURE_PORT@/"$SECURE_PORT"}
  tmpl=${tmpl//@KEYSTORE@/"$SECURE_DIR/broker.p12"}
  tmpl=${tmpl//@KEYSTORE_PASSWORD@/"$(<"$SECURE_DIR/keystore.password")"}
  tmpl=${tmpl//@ADMIN_USER@/"$ADMIN_USER"}
  tmpl=${tmpl//@DATA_DIR@/"$DATA_DIR"}
  printf '%s\n' "$tmpl" >"$CONFIG_FILE.tmp"
  mv -f "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

# Format the KRaft storage once per state dir; later starts reuse the data.
ensure_formatted() {
  [[ -f $DATA_DIR/meta.properties ]] && return 0
  rm -rf "$DATA_DIR"  # an interrupted format leaves no meta.properties: start over
  local cluster_id=-
  # A cluster id is 16 random bytes, base64url without padding (22 characters); like Kafka's
  # own Uuid.randomUuid, avoid a leading '-', which the command line would take for an option.
  while [[ $cluster_id == -* ]]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
  done
  log "formatting KRaft storage in $DATA_DIR (cluster id $cluster_id)"
  # C1 only and a small heap: a short-lived JVM starts faster that way.
  tool_jvm_opts
  if ! "$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC "${TOOL_JVM_OPTS[@]}" \
      -cp "$LIB_DIR/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONFIG_FILE" \
      --add-scram "SCRAM-SHA-512=[name=$ADMIN_USER,password=$(<"$SECURE_DIR/admin.password")]" \
      --add-scram "SCRAM-SHA-512=[name=$WORKLOAD_USER,password=$(<"$SECURE_DIR/workload.password")]" \
      >"$STATE_DIR/format.log" 2>&1; then
    cat "$STATE_DIR/format.log" >&2
    die "formatting the storage failed"
  fi
}

# The broker's CDS option: map the archive, or dump one at exit if there is none yet.
cds_options() {
  cds_promote 0  # a dump left by a broker that died on its own cannot be trusted
  [[ ${KAFKA_CDS:-1} == 1 ]] || return 0
  local jsa
  jsa=$(cds_archive)
  if [[ -s $jsa ]]; then
    echo "-XX:SharedArchiveFile=$jsa"
  else
    local dump="$jsa.new.$$"
    printf '%s\n%s\n' "$dump" "$jsa" >"$CDS_RECORD"
    echo "-XX:ArchiveClassesAtExit=$dump"
  fi
}

# After a clean exit, move the dumped archive into the cache if the JVM accepts it (a truncated
# archive would crash every later JVM with SIGBUS, so it is checked with -Xshare:on first).
cds_promote() {
  local clean=$1 dump jsa
  [[ -f $CDS_RECORD ]] || return 0
  { read -r dump && read -r jsa; } <"$CDS_RECORD" || true
  rm -f "$CDS_RECORD"
  [[ -n ${dump:-} && -n ${jsa:-} ]] || return 0
  if [[ $clean == 1 && -s $dump ]] &&
      "$JAVA" -Xshare:on -XX:SharedArchiveFile="$dump" -cp "$LIB_DIR/*" -version >/dev/null 2>&1; then
    mv -f "$dump" "$jsa"
    log "saved the broker's class-data archive: later starts are faster"
  else
    rm -f "$dump"
  fi
}

launch_broker() {
  local -a heap_opts extra overrides=() cds_opts=()
  read -r -a heap_opts <<<"${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
  read -r -a extra <<<"${KAFKA_OVERRIDES:-}"
  local kv
  for kv in "${extra[@]}"; do overrides+=(--override "$kv"); done
  local cds
  cds=$(cds_options)
  [[ -z $cds ]] || cds_opts=("$cds")
  # Detached (setsid): the broker outlives this script and the caller's process group; the pid
  # file names the JVM.
  launch "Kafka $KAFKA_VERSION" "$PID_FILE" "$LOG_FILE" \
    "$JAVA" "${heap_opts[@]}" "${cds_opts[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$SUPPORT_DIR/log4j2.properties" -Dkafka.logs.dir="$STATE_DIR" \
    -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG_FILE" "${overrides[@]}"
}

# The broker serves metadata at $1; dies (with the log's tail) if it has exited.
broker_ready() {
  if ! broker_pid >/dev/null; then
    tail -n 40 "$LOG_FILE" >&2 || true
    die "the broker exited during startup (log above; full log: $LOG_FILE)"
  fi
  probe_metadata "$1"
}

# Wait until the broker serves metadata; on failure show the log's tail and fail.
wait_ready() {
  local addr
  addr=$(bootstrap)
  if ! wait_until "$READY_TIMEOUT" broker_ready "$addr"; then
    tail -n 40 "$LOG_FILE" >&2 || true
    stop_process KILL
    die "the broker did not serve metadata at $addr within ${READY_TIMEOUT}s (log above; full log: $LOG_FILE)"
  fi
}

# Stop the broker process with SIGTERM (then SIGKILL after STOP_TIMEOUT s) or SIGKILL at once.
stop_process() {
  local sig=${1:-TERM} pid
  pid=$(broker_pid) || { rm -f "$PID_FILE"; cds_promote 0; return 0; }
  log "stopping the broker (pid $pid, SIG$sig)"
  # (stop_pids also sends SIGCONT: a paused broker cannot act on SIGTERM.)
  stop_pids --signal "$sig" "$STOP_TIMEOUT" "$pid" || die "the broker (pid $pid) survives SIGKILL"
  rm -f "$PID_FILE"
  if [[ $sig == TERM && -z $STOP_KILLED ]]; then cds_promote 1; else cds_promote 0; fi
}

lock_state() { take_lock 9 "$STATE_DIR/.lock"; }

# A state dir we may delete: ours (marked) or nonexistent.
check_state_dir() {
  [[ -n $STATE_DIR && $STATE_DIR != / ]] || die "refusing state dir '$STATE_DIR'"
  if [[ -d $STATE_DIR && ! -f $MARKER_FILE ]] && [[ -n $(ls -A "$STATE_DIR") ]]; then
    die "$STATE_DIR exists and was not made by hack/kafka.sh; choose another METRICSTREAM_KAFKA_STATE"
  fi
}

# ---- commands ----------------------------------------------------------------------------------

cmd_up() {
  check_state_dir
  local t0 pid p
  t0=$(now_ms)
  if pid=$(broker_pid); then
    kill -CONT "$pid" 2>/dev/null || true  # resume a paused broker
  fi
  if [[ -n $pid ]] && probe_metadata "$(bootstrap)"; then
    print_endpoints
    return 0
  fi
  check_java
  ensure_jars
  lock_state
  touch "$MARKER_FILE"
  if ! broker_pid >/dev/null; then  # not started meanwhile by a concurrent `up`
    for p in "$PORT" "$CONTROLLER_PORT" "$SECURE_PORT"; do
      port_in_use "$p" "$HOST" && die "port $HOST:$p is in use by another process (set KAFKA_PORT / KAFKA_CONTROLLER_PORT / KAFKA_SECURE_PORT)"
    done
    mkdir -p "$STATE_DIR"
    if [[ -f $DATA_DIR/meta.properties && ! -f $SECURE_DIR/complete ]]; then
      die "$STATE_DIR predates the SASL_SSL listener (no SCRAM users in its storage): hack/kafka.sh down, then up"
    fi
    ensure_secure_material
    render_config
    echo "$HOST:$PORT" >"$BOOTSTRAP_FILE"
    echo "$HOST:$SECURE_PORT" >"$SECURE_BOOTSTRAP_FILE"
    ensure_formatted
    log "starting Kafka $KAFKA_VERSION on $HOST:$PORT (log: $LOG_FILE)"
    launch_broker
  fi
  wait_ready
  release_lock 9
  log "broker ready in $(since "$t0") s (pid $(broker_pid))"
  print_endpoints
}

cmd_down() {
  check_state_dir
  [[ -d $STATE_DIR ]] || return 0
  lock_state
  stop_process TERM
  rm -rf "$STATE_DIR"
  log "broker stopped, $STATE_DIR removed"
}

cmd_status() {
  local pid addr
  addr=$(bootstrap)
  if ! pid=$(broker_pid); then
    echo "kafka: not running (state dir $STATE_DIR)"
    return 3
  fi
  if probe_metadata "$addr"; then
    echo "kafka: running (pid $pid), serving metadata at $addr"
    print_endpoints
    return 0
  fi
  echo "kafka: running (pid $pid) but not answering metadata requests at $addr"
  return 1
}

cmd_stop_broker() {
  local sig=TERM
  case ${1:-} in
    --kill | -9) sig=KILL ;;
    --term | '') ;;
    *) die "usage: kafka.sh stop-broker [--kill]" ;;
  esac
  check_state_dir
  [[ -d $STATE_DIR ]] || return 0
  lock_state
  stop_process "$sig"
}

cmd_signal() {
  local sig=$1 pid
  pid=$(broker_pid) || die "no broker running from $STATE_DIR"
  kill -"$sig" "$pid"
  log "sent SIG$sig to the broker (pid $pid)"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up | start-broker)
      env_file_option "$@"
      cmd_up
      ;;
    down) cmd_down ;;
    status) cmd_status ;;
    stop-broker) cmd_stop_broker "$@" ;;
    pause-broker) cmd_signal STOP ;;
    resume-broker) cmd_signal CONT ;;
    tool)
      [[ $# -gt 0 ]] || die "usage: kafka.sh tool MAIN-CLASS|ALIAS [ARGS...]"
      local main
      main=$(tool_class "$1")
      shift
      check_java
      ensure_jars
      run_java_tool "${KAFKA_TOOL_HEAP_OPTS:--Xmx512m}" "$main" "$@"
      ;;
    classpath)
      ensure_jars
      echo "$LIB_DIR/*"
      ;;
    -h | --help | help) usage 0 ;;
    '') usage ;;
    *) log "unknown command: $cmd"; usage ;;
  esac
}

main "$@"
