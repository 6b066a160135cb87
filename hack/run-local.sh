#!/usr/bin/env bash
# Runs the MetricStream pipeline locally on the file backend: builds the release binaries,
# starts metricstream-ingest and metricstream-consumer on one data directory, waits until both
# are ready, prints a curl that works, and on Ctrl-C (or SIGTERM) stops both gracefully.
# With STORE=victoriametrics the consumer writes to a local VictoriaMetrics (remote write)
# instead of JSON Lines files: built once and cached by hack/victoriametrics.sh (needs Go), started
# here with its data in RUN_DIR, and stopped with the others.
#
#   hack/run-local.sh                          (what `make run` does)
#   STORE=victoriametrics hack/run-local.sh    (`STORE=victoriametrics make run`)
#
# Environment (all optional):
#   INGEST_PORT            ingest API port on 127.0.0.1 (default 8080)
#   INGEST_ADMIN_PORT      ingest /healthz /readyz /metrics port (default 9090)
#   CONSUMER_ADMIN_PORT    consumer /healthz /readyz /metrics port (default 9091)
#   RUN_DIR                where the queue, the sink, the store's data and the logs go
#                          (default <repo>/.data)
#   STORE                  file (default: JSON Lines files in RUN_DIR/sink) or victoriametrics
#   VICTORIAMETRICS_PORT   VictoriaMetrics' HTTP port on 127.0.0.1 (default 8428; STORE=victoriametrics)
#   PARTITIONS             partition count (default 4; may grow between runs, never shrink)
#   READY_TIMEOUT          seconds to wait for /readyz (default 60)

# shellcheck disable=SC2317,SC2329  # the stop functions run from traps, which shellcheck cannot see
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_NAME= # plain messages

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

INGEST_PORT=${INGEST_PORT:-8080}
INGEST_ADMIN_PORT=${INGEST_ADMIN_PORT:-9090}
CONSUMER_ADMIN_PORT=${CONSUMER_ADMIN_PORT:-9091}
RUN_DIR=${RUN_DIR:-$REPO_DIR/.data}
PARTITIONS=${PARTITIONS:-4}
READY_TIMEOUT=${READY_TIMEOUT:-60}
STORE=${STORE:-file}
VICTORIAMETRICS_PORT=${VICTORIAMETRICS_PORT:-8428}
case $STORE in
    file | victoriametrics) ;;
    *)
        log "STORE=$STORE: the stores are file (the default) and victoriametrics"
        exit 1
        ;;
esac

QUEUE_DIR=$RUN_DIR/queue
SINK_DIR=$RUN_DIR/sink
LOG_DIR=$RUN_DIR/logs
STORE_DIR=$RUN_DIR/victoriametrics
# Where `cargo build --release` below puts the binaries.
BIN_DIR=$(cargo_target_dir "$REPO_DIR")/release

ports=("$INGEST_PORT" "$INGEST_ADMIN_PORT" "$CONSUMER_ADMIN_PORT")
if [[ $STORE == victoriametrics ]]; then ports+=("$VICTORIAMETRICS_PORT"); fi
for port in "${ports[@]}"; do
    if port_in_use "$port"; then
        log "port $port on 127.0.0.1 is already in use; pick others with INGEST_PORT," \
            "INGEST_ADMIN_PORT, CONSUMER_ADMIN_PORT and VICTORIAMETRICS_PORT"
        exit 1
    fi
done

log "==> building the release binaries"
cargo build --release --bins -p metricstream-ingest -p metricstream-consumer

victoriametrics_bin=
if [[ $STORE == victoriametrics ]]; then
    log "==> building (or reusing) VictoriaMetrics (hack/victoriametrics.sh)"
    installed=$(bash hack/victoriametrics.sh install | tail -n 1)
    victoriametrics_bin=${installed#VICTORIAMETRICS=}
    if [[ $installed != VICTORIAMETRICS=* || ! -x $victoriametrics_bin ]]; then
        log "hack/victoriametrics.sh install printed no VICTORIAMETRICS=<path> line (it printed: $installed)"
        exit 1
    fi
fi

mkdir -p "$QUEUE_DIR" "$SINK_DIR" "$LOG_DIR"

ingest_pid=
consumer_pid=
store_pid=

# Sends SIGTERM to a process and waits for it; prints its exit status. Returns that status.
stop_one() {
    local name=$1 pid=$2 status=0
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || status=$?
    if [[ $status -eq 0 ]]; then
        log "    $name stopped (exit 0)"
    else
        log "    $name exited with status $status; see $LOG_DIR/$name.log"
    fi
    return "$status"
}

# Ingest first (it drains in-flight requests), then the consumer (it commits what it wrote),
# then the store the consumer wrote to.
stop_all() {
    local failed=0
    trap - INT TERM
    log ""
    log "==> stopping (SIGTERM)"
    stop_one ingest "$ingest_pid" || failed=1
    ingest_pid=
    stop_one consumer "$consumer_pid" || failed=1
    consumer_pid=
    stop_one victoriametrics "$store_pid" || failed=1
    store_pid=
    return "$failed"
}

on_signal() {
    if stop_all; then
        exit 0
    fi
    exit 1
}

# Stops whatever was started if the script itself fails before it is up.
on_exit() {
    local status=$?
    if [[ -n $ingest_pid || -n $consumer_pid || -n $store_pid ]]; then
        stop_all || true
    fi
    exit "$status"
}

trap on_signal INT TERM
trap on_exit EXIT

# The service answers GET $3 (/readyz) on its port $2 with 200; exits if it has exited.
ready() {
    local name=$1 pid=$2 port=$3 path=${4:-/readyz}
    [[ $(http_status 127.0.0.1 "$port" "$path") == 200 ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$name exited before it became ready; the end of $LOG_DIR/$name.log:"
        tail -n 30 "$LOG_DIR/$name.log" >&2 || true
        exit 1
    fi
    return 1
}

wait_ready() {
    if ! wait_until "$READY_TIMEOUT" ready "$@"; then
        log "$1 was not ready within ${READY_TIMEOUT}s; see $LOG_DIR/$1.log"
        exit 1
    fi
}

sink_args=(--sink-dir "$SINK_DIR")
store_url=http://127.0.0.1:$VICTORIAMETRICS_PORT
if [[ $STORE == victoriametrics ]]; then
    log "==> starting VictoriaMetrics on 127.0.0.1:$VICTORIAMETRICS_PORT (data in $STORE_DIR)"
    # -dedup.minScrapeInterval=1ms: a sample the consumer sends again after a crash is kept once
    # (docs/sink.md). -retentionPeriod=100y: samples with old timestamps are not dropped.
    # -search.latencyOffset=1s: queries show a sample a second after it arrives (default 30 s).
    "$victoriametrics_bin" \
        -storageDataPath="$STORE_DIR" \
        -httpListenAddr="127.0.0.1:$VICTORIAMETRICS_PORT" \
        -dedup.minScrapeInterval=1ms \
        -retentionPeriod=100y \
        -search.latencyOffset=1s \
        -loggerLevel=WARN \
        </dev/null >"$LOG_DIR/victoriametrics.log" 2>&1 &
    store_pid=$!
    wait_ready victoriametrics "$store_pid" "$VICTORIAMETRICS_PORT" /health
    # The remote-write sink still keeps its quarantine and dead letters in --sink-dir.
    sink_args+=(--sink remote-write --sink-url "$store_url/api/v1/write")
fi

log "==> starting metricstream-ingest and metricstream-consumer (logs in $LOG_DIR)"
NO_COLOR=1 "$BIN_DIR/metricstream-ingest" \
    --backend file \
    --partitions "$PARTITIONS" \
    --data-dir "$QUEUE_DIR" \
    --listen "127.0.0.1:$INGEST_PORT" \
    --admin-listen "127.0.0.1:$INGEST_ADMIN_PORT" \
    --shutdown-delay 0 \
    >"$LOG_DIR/ingest.log" 2>&1 &
ingest_pid=$!

NO_COLOR=1 "$BIN_DIR/metricstream-consumer" \
    --backend file \
    --partitions "$PARTITIONS" \
    --data-dir "$QUEUE_DIR" \
    "${sink_args[@]}" \
    --admin-listen "127.0.0.1:$CONSUMER_ADMIN_PORT" \
    >"$LOG_DIR/consumer.log" 2>&1 &
consumer_pid=$!

wait_ready ingest "$ingest_pid" "$INGEST_ADMIN_PORT"
wait_ready consumer "$consumer_pid" "$CONSUMER_ADMIN_PORT"

# The demo metric's name, the one the printed curl sends.
DEMO_METRIC=cpu
SEND_CURL="curl -sS -X POST http://127.0.0.1:$INGEST_PORT/metrics -H 'Authorization: demo-client' -H 'Content-Type: application/json' -d '{\"metrics\":[{\"name\":\"$DEMO_METRIC\",\"value\":75,\"tags\":{\"host\":\"a\"}}]}'"

if [[ $STORE == victoriametrics ]]; then
    cat <<EOF

MetricStream is running on the file backend ($PARTITIONS partitions), writing to VictoriaMetrics.

  ingest API      http://127.0.0.1:$INGEST_PORT/metrics
  ingest admin    http://127.0.0.1:$INGEST_ADMIN_PORT/{healthz,readyz,metrics}
  consumer admin  http://127.0.0.1:$CONSUMER_ADMIN_PORT/{healthz,readyz,metrics}
  VictoriaMetrics $store_url (remote write: $store_url/api/v1/write)
  queue           $QUEUE_DIR
  store data      $STORE_DIR
  dead letters    $SINK_DIR/dead-letters/
  logs            $LOG_DIR/{ingest,consumer,victoriametrics}.log

Send a metric:

  $SEND_CURL

and see it arrive in VictoriaMetrics' UI (vmui; a few seconds after the curl):

  $store_url/vmui/#/?g0.expr=$DEMO_METRIC&g0.tab=table

or through its export API:

  curl -sS $store_url/api/v1/export -d 'match[]=$DEMO_METRIC'

Press Ctrl-C to stop all three.
EOF
else
    cat <<EOF

MetricStream is running on the file backend ($PARTITIONS partitions).

  ingest API     http://127.0.0.1:$INGEST_PORT/metrics
  ingest admin   http://127.0.0.1:$INGEST_ADMIN_PORT/{healthz,readyz,metrics}
  consumer admin http://127.0.0.1:$CONSUMER_ADMIN_PORT/{healthz,readyz,metrics}
  queue          $QUEUE_DIR
  sink           $SINK_DIR/partition-NNNN.jsonl
  logs           $LOG_DIR/{ingest,consumer}.log

Send a metric:

  $SEND_CURL

and watch it arrive:

  tail -f $SINK_DIR/*.jsonl

Press Ctrl-C to stop both services.
EOF
fi

# Until Ctrl-C (the trap stops everything and exits), or until one of them dies on its own.
status=0
died=
wait -n -p died "$ingest_pid" "$consumer_pid" ${store_pid:+"$store_pid"} || status=$?
names=(ingest consumer)
case $died in
    "$ingest_pid") ingest_pid= ;;
    "$consumer_pid") consumer_pid= ;;
    *) store_pid= ;;
esac
if [[ $STORE == victoriametrics ]]; then names+=(victoriametrics); fi
log "a process exited on its own (status $status):"
for name in "${names[@]}"; do
    log "--- the end of $LOG_DIR/$name.log"
    tail -n 20 "$LOG_DIR/$name.log" >&2 || true
done
exit 1
