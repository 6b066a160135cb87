#!/usr/bin/env bash
# Runs the MetricStream pipeline locally on the file backend: builds the release binaries,
# starts metricstream-ingest and metricstream-consumer on one data directory, waits until both
# are ready, prints a curl that works, and on Ctrl-C (or SIGTERM) stops both gracefully.
#
#   hack/run-local.sh            (what `make run` does)
#
# Environment (all optional):
#   INGEST_PORT            ingest API port on 127.0.0.1 (default 8080)
#   INGEST_ADMIN_PORT      ingest /healthz /readyz /metrics port (default 9090)
#   CONSUMER_ADMIN_PORT    consumer /healthz /readyz /metrics port (default 9091)
#   RUN_DIR                where the queue, the sink and the logs go (default <repo>/.data)
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

QUEUE_DIR=$RUN_DIR/queue
SINK_DIR=$RUN_DIR/sink
LOG_DIR=$RUN_DIR/logs
# Where `cargo build --release` below puts the binaries.
BIN_DIR=$(cargo_target_dir "$REPO_DIR")/release

for port in "$INGEST_PORT" "$INGEST_ADMIN_PORT" "$CONSUMER_ADMIN_PORT"; do
    if port_in_use "$port"; then
        log "port $port on 127.0.0.1 is already in use; pick others with INGEST_PORT," \
            "INGEST_ADMIN_PORT and CONSUMER_ADMIN_PORT"
        exit 1
    fi
done

log "==> building the release binaries"
cargo build --release --bins -p metricstream-ingest -p metricstream-consumer

mkdir -p "$QUEUE_DIR" "$SINK_DIR" "$LOG_DIR"

ingest_pid=
consumer_pid=

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

# Ingest first (it drains in-flight requests), then the consumer (it commits what it wrote).
stop_all() {
    local failed=0
    trap - INT TERM
    log ""
    log "==> stopping (SIGTERM)"
    stop_one ingest "$ingest_pid" || failed=1
    ingest_pid=
    stop_one consumer "$consumer_pid" || failed=1
    consumer_pid=
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
    if [[ -n $ingest_pid || -n $consumer_pid ]]; then
        stop_all || true
    fi
    exit "$status"
}

trap on_signal INT TERM
trap on_exit EXIT

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
    --sink-dir "$SINK_DIR" \
    --admin-listen "127.0.0.1:$CONSUMER_ADMIN_PORT" \
    >"$LOG_DIR/consumer.log" 2>&1 &
consumer_pid=$!

# The service answers /readyz with 200; exits if it has exited.
ready() {
    local name=$1 pid=$2 port=$3
    [[ $(http_status 127.0.0.1 "$port" /readyz) == 200 ]] && return 0
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
wait_ready ingest "$ingest_pid" "$INGEST_ADMIN_PORT"
wait_ready consumer "$consumer_pid" "$CONSUMER_ADMIN_PORT"

cat <<EOF

MetricStream is running on the file backend ($PARTITIONS partitions).

  ingest API     http://127.0.0.1:$INGEST_PORT/metrics
  ingest admin   http://127.0.0.1:$INGEST_ADMIN_PORT/{healthz,readyz,metrics}
  consumer admin http://127.0.0.1:$CONSUMER_ADMIN_PORT/{healthz,readyz,metrics}
  queue          $QUEUE_DIR
  sink           $SINK_DIR/partition-NNNN.jsonl
  logs           $LOG_DIR/{ingest,consumer}.log

Send a metric:

  curl -sS -X POST http://127.0.0.1:$INGEST_PORT/metrics -H 'Authorization: demo-client' -H 'Content-Type: application/json' -d '{"metrics":[{"name":"cpu","value":75,"tags":{"host":"a"}}]}'

and watch it arrive:

  tail -f $SINK_DIR/*.jsonl

Press Ctrl-C to stop both services.
EOF

# Until Ctrl-C (the trap stops both and exits), or until one of them dies on its own.
status=0
died=
wait -n -p died "$ingest_pid" "$consumer_pid" || status=$?
if [[ $died == "$ingest_pid" ]]; then
    ingest_pid=
else
    consumer_pid=
fi
log "a service exited on its own (status $status):"
for name in ingest consumer; do
    log "--- the end of $LOG_DIR/$name.log"
    tail -n 20 "$LOG_DIR/$name.log" >&2 || true
done
exit 1
