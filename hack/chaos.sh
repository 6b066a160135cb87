#!/usr/bin/env bash
# Chaos run: the real pipeline (release metricstream-ingest and metricstream-consumer, and for the
# Kafka backend a private broker from hack/kafka.sh) under load for a bounded time while the
# ingest, the consumer and (Kafka) the broker are SIGKILLed at random and restarted after a short
# random pause. Then the load stops, every component is brought back, the consumer drains, and
# `metricstream-load verify` checks that every acknowledged metric is in the sink exactly once.
#
#   hack/chaos.sh               (what `make chaos` runs after building the release binaries)
#
# The load is `metricstream-load send --duration-secs`: clients keep sending through refusals
# and connection errors, and never resend a failed request under the same identity (the next
# request has a new sequence number), so a metric found twice is the pipeline's duplicate.
# Prints a summary per backend; exits 1 if any acknowledged metric is lost or duplicated (or
# anything else broke: a malformed sink, a component that would not come back), 2 on a setup
# error. Every run keeps its logs, sink, queue and load files in its own directory.
#
# Environment (all optional):
#   CHAOS_BACKENDS          comma-separated backends to run, in order (default file,kafka; also
#                           kafka-spill: Kafka with the ingest's spill on)
#   CHAOS_SECONDS           seconds of load and kills per backend (default 180)
#   CHAOS_SEED              seed of the random kill schedule (default: random, printed)
#   CHAOS_DIR               where runs go (default <repo>/target/chaos/<backend>-<time>)
#   CHAOS_BIN_DIR           the release binaries (default ${CARGO_TARGET_DIR:-<repo>/target}/release)
#   CHAOS_INGEST_PORT / CHAOS_INGEST_ADMIN_PORT / CHAOS_CONSUMER_ADMIN_PORT
#                           loopback ports (default 38080 / 38090 / 38091)
#   CHAOS_KAFKA_PORT / CHAOS_KAFKA_CONTROLLER_PORT
#                           ports of the private broker (default 38092 / 38093); it is started
#                           here on a state dir of its own, killed at random, and removed at the end
#   CHAOS_CLIENTS           concurrent load clients (default 8)
#   CHAOS_METRICS           metrics per request (default 5)
#   CHAOS_PAUSE_MS          pause of a client after an acknowledged request (default 10)
#   CHAOS_KILL_EVERY        seconds between kills of the ingest, and of the consumer, as MIN-MAX
#                           (default 4-15; drawn anew for each kill)
#   CHAOS_BROKER_KILL_EVERY seconds between kills of the broker, MIN-MAX (default 20-50)
#   CHAOS_DOWN              seconds a killed component stays down, MIN-MAX (default 0.2-3)
#   CHAOS_DRAIN_SECONDS     how long the consumer may take to drain after the load (default 180)
#   CHAOS_READY_TIMEOUT     seconds a component may take to become ready (default 90)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
LOG_NAME=chaos
DIE_STATUS=2 # a setup error

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_DIR"

CHAOS_BACKENDS=${CHAOS_BACKENDS:-file,kafka}
CHAOS_SECONDS=${CHAOS_SECONDS:-180}
CHAOS_SEED=${CHAOS_SEED:-$((RANDOM * 32768 + RANDOM))}
CHAOS_ROOT=${CHAOS_DIR:-$REPO_DIR/target/chaos}
BIN_DIR=${CHAOS_BIN_DIR:-$(cargo_target_dir "$REPO_DIR")/release}
INGEST_PORT=${CHAOS_INGEST_PORT:-38080}
INGEST_ADMIN_PORT=${CHAOS_INGEST_ADMIN_PORT:-38090}
CONSUMER_ADMIN_PORT=${CHAOS_CONSUMER_ADMIN_PORT:-38091}
BROKER_PORT=${CHAOS_KAFKA_PORT:-38092}
BROKER_CONTROLLER_PORT=${CHAOS_KAFKA_CONTROLLER_PORT:-38093}
CLIENTS=${CHAOS_CLIENTS:-8}
METRICS=${CHAOS_METRICS:-5}
PAUSE_MS=${CHAOS_PAUSE_MS:-10}
KILL_EVERY=${CHAOS_KILL_EVERY:-4-15}
BROKER_KILL_EVERY=${CHAOS_BROKER_KILL_EVERY:-20-50}
DOWN=${CHAOS_DOWN:-0.2-3}
DRAIN_SECONDS=${CHAOS_DRAIN_SECONDS:-180}
READY_TIMEOUT=${CHAOS_READY_TIMEOUT:-90}
PARTITIONS=4
# A client's deadline for one request: longer than the ingest's Kafka acknowledgement timeout
# (10 s by default), so a slow broker is answered 503 by the ingest, not cut off by the client.
REQUEST_TIMEOUT_SECS=15
REFUSAL_PAUSE_MS=50
STOP_TIMEOUT=30

# Milliseconds from a decimal number of seconds: 0.2 -> 200, 15 -> 15000.
seconds_to_ms() {
    local whole=${1%%.*} fraction=000
    [[ $1 == *.* ]] && fraction=${1#*.}000
    echo $((10#${whole:-0} * 1000 + 10#${fraction:0:3}))
}

# A random number of milliseconds in the range MIN-MAX (seconds), from bash's seeded $RANDOM.
random_ms() {
    local low high
    low=$(seconds_to_ms "${1%-*}")
    high=$(seconds_to_ms "${1#*-}")
    ((high >= low)) || die "bad range $1: MIN-MAX seconds"
    echo $((low + (RANDOM * 32768 + RANDOM) % (high - low + 1)))
}

sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# The number after `NAME:` on a line of a `metricstream-load` output file; empty if absent.
field() { sed -n "s/^$2: *\([0-9][0-9]*\).*/\1/p" "$1" | head -n 1; }

for range in "$KILL_EVERY" "$BROKER_KILL_EVERY" "$DOWN"; do random_ms "$range" >/dev/null; done
for bin in metricstream-ingest metricstream-consumer metricstream-load; do
    [[ -x $BIN_DIR/$bin ]] || die "$BIN_DIR/$bin is missing: build the release binaries first (make release)"
done

# ---- one component, supervised -----------------------------------------------------------------

# Runs a service (ingest or consumer) until the run's stop file appears: starts it, SIGKILLs it
# at random intervals once the chaos window opens (the chaos-until file holds its end, in ms),
# and restarts it after a random pause. A service that exits by itself is restarted too, and
# counted. On the stop file: SIGTERM, and the exit status is recorded. Counts go to NAME.counts.
supervise_service() {
    local name=$1 seed=$2
    shift 2
    RANDOM=$seed
    local kills=0 exits=0 starts=0 pid status next_kill=0 until_ms now
    local logfile=$RUN_DIR/logs/$name.log
    start_service() {
        NO_COLOR=1 "$@" >>"$logfile" 2>&1 &
        pid=$!
        starts=$((starts + 1))
        echo "$pid" >"$RUN_DIR/$name.pid"
    }
    start_service "$@"
    while [[ ! -e $RUN_DIR/stop ]]; do
        sleep 0.1
        if ! kill -0 "$pid" 2>/dev/null; then
            status=0
            wait "$pid" || status=$?
            exits=$((exits + 1))
            event "$name exited by itself with status $status (pid $pid); restarting"
            sleep_ms "$(random_ms "$DOWN")"
            start_service "$@"
            continue
        fi
        [[ -s $RUN_DIR/chaos-until ]] || continue
        until_ms=$(<"$RUN_DIR/chaos-until")
        now=$(now_ms)
        ((now < until_ms)) || continue
        if ((next_kill == 0)); then
            next_kill=$((now + $(random_ms "$KILL_EVERY")))
        elif ((now >= next_kill)); then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" || true
            kills=$((kills + 1))
            local down
            down=$(random_ms "$DOWN")
            event "SIGKILL $name (pid $pid), down ${down} ms"
            sleep_ms "$down"
            start_service "$@"
            next_kill=$(($(now_ms) + $(random_ms "$KILL_EVERY")))
        fi
    done
    local stop_status=0
    stop_pids "$STOP_TIMEOUT" "$pid" || true
    if [[ -n $STOP_KILLED ]]; then event "$name did not stop within ${STOP_TIMEOUT}s of SIGTERM; SIGKILL"; fi
    wait "$pid" || stop_status=$?
    event "$name stopped (SIGTERM), exit status $stop_status"
    printf 'kills=%d exits=%d starts=%d stop_status=%d\n' "$kills" "$exits" "$starts" "$stop_status" \
        >"$RUN_DIR/$name.counts"
}

kafka_sh() {
    METRICSTREAM_KAFKA_STATE=$RUN_DIR/kafka KAFKA_PORT=$BROKER_PORT \
        KAFKA_CONTROLLER_PORT=$BROKER_CONTROLLER_PORT \
        bash "$REPO_DIR/hack/kafka.sh" "$@" >>"$RUN_DIR/logs/kafka-sh.log" 2>&1
}

# Until the chaos window closes: SIGKILL the broker (hack/kafka.sh stop-broker --kill) at random
# intervals and start it again on the same data after a random pause. Leaves it running.
supervise_broker() {
    RANDOM=$1
    local kills=0 next_kill until_ms down
    until [[ -s $RUN_DIR/chaos-until || -e $RUN_DIR/stop ]]; do sleep 0.1; done
    next_kill=$(($(now_ms) + $(random_ms "$BROKER_KILL_EVERY")))
    while [[ ! -e $RUN_DIR/stop ]]; do
        sleep 0.1
        until_ms=$(<"$RUN_DIR/chaos-until")
        (($(now_ms) < until_ms)) || break
        (($(now_ms) >= next_kill)) || continue
        kafka_sh stop-broker --kill || event "hack/kafka.sh stop-broker --kill failed"
        kills=$((kills + 1))
        down=$(random_ms "$DOWN")
        event "SIGKILL broker, down ${down} ms"
        sleep_ms "$down"
        local started
        started=$(now_ms)
        until kafka_sh start-broker; do
            event "hack/kafka.sh start-broker failed; again"
            sleep 1
        done
        event "broker back after $(($(now_ms) - started)) ms of start-broker"
        next_kill=$(($(now_ms) + $(random_ms "$BROKER_KILL_EVERY")))
    done
    printf 'kills=%d\n' "$kills" >"$RUN_DIR/broker.counts"
}

event() {
    local ms=$(($(now_ms) - RUN_STARTED_MS))
    printf '%6d.%01ds %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >>"$RUN_DIR/events.log"
}

ready() { [[ $(http_status 127.0.0.1 "$1" /readyz) == 200 ]]; }

wait_ready() {
    local name=$1 port=$2
    if ! wait_until "$READY_TIMEOUT" ready "$port"; then
        log "$name was not ready within ${READY_TIMEOUT}s; the end of $RUN_DIR/logs/$name.log:"
        tail -n 20 "$RUN_DIR/logs/$name.log" >&2 || true
        return 1
    fi
}

count_of() { sed -n "s/.*\b$2=\([0-9]*\).*/\1/p" "$RUN_DIR/$1.counts" 2>/dev/null || true; }

# ---- one backend --------------------------------------------------------------------------------

SUPERVISORS=()
BROKER_STARTED=

# Stops whatever the run started: the supervisors stop their services, then the broker goes.
cleanup_run() {
    [[ -n ${RUN_DIR:-} ]] || return 0
    touch "$RUN_DIR/stop"
    local pid
    for pid in "${SUPERVISORS[@]}"; do wait "$pid" 2>/dev/null || true; done
    SUPERVISORS=()
    if [[ -n $BROKER_STARTED ]]; then
        if [[ -z ${CHAOS_KEEP_BROKER:-} ]]; then
            METRICSTREAM_KAFKA_STATE=$RUN_DIR/kafka KAFKA_PORT=$BROKER_PORT \
                KAFKA_CONTROLLER_PORT=$BROKER_CONTROLLER_PORT \
                bash "$REPO_DIR/hack/kafka.sh" down >>"$RUN_DIR/logs/kafka-sh.log" 2>&1 || true
        fi
        BROKER_STARTED=
    fi
}
trap cleanup_run EXIT
trap 'exit 130' INT TERM

SUMMARIES=()
FAILED=0

run_backend() {
    # kafka-spill: the Kafka backend with the ingest's spill on (--spill-dir in the run dir).
    local variant=$1 backend=${1%-spill} stamp
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    RUN_DIR=$CHAOS_ROOT/$variant-$stamp
    RUN_STARTED_MS=$(now_ms)
    mkdir -p "$RUN_DIR/queue" "$RUN_DIR/sink" "$RUN_DIR/logs"
    : >"$RUN_DIR/events.log"
    log "==> $variant backend: ${CHAOS_SECONDS}s of load and kills, seed $CHAOS_SEED, run dir $RUN_DIR"

    local port
    for port in "$INGEST_PORT" "$INGEST_ADMIN_PORT" "$CONSUMER_ADMIN_PORT"; do
        port_in_use "$port" && die "port 127.0.0.1:$port is in use (CHAOS_*_PORT picks others)"
    done

    local common=(--backend "$backend" --partitions "$PARTITIONS" --data-dir "$RUN_DIR/queue")
    if [[ $backend == kafka ]]; then
        log "    starting a private Kafka broker on 127.0.0.1:$BROKER_PORT (state $RUN_DIR/kafka)"
        BROKER_STARTED=1
        kafka_sh up || die "hack/kafka.sh up failed; see $RUN_DIR/logs/kafka-sh.log"
        common+=(--kafka-brokers "127.0.0.1:$BROKER_PORT" --topic "chaos-$stamp" --kafka-create-topic)
    fi

    local ingest_only=()
    [[ $variant == kafka-spill ]] && ingest_only+=(--spill-dir "$RUN_DIR/spill")
    supervise_service ingest "$((CHAOS_SEED + 1))" "$BIN_DIR/metricstream-ingest" "${common[@]}" "${ingest_only[@]}" \
        --listen "127.0.0.1:$INGEST_PORT" --admin-listen "127.0.0.1:$INGEST_ADMIN_PORT" --shutdown-delay 0 \
        2>>"$RUN_DIR/logs/supervisors.log" &
    SUPERVISORS+=($!)
    supervise_service consumer "$((CHAOS_SEED + 2))" "$BIN_DIR/metricstream-consumer" "${common[@]}" \
        --sink-dir "$RUN_DIR/sink" --admin-listen "127.0.0.1:$CONSUMER_ADMIN_PORT" \
        2>>"$RUN_DIR/logs/supervisors.log" &
    SUPERVISORS+=($!)
    if [[ $backend == kafka ]]; then
        supervise_broker "$((CHAOS_SEED + 3))" 2>>"$RUN_DIR/logs/supervisors.log" &
        SUPERVISORS+=($!)
    fi
    wait_ready ingest "$INGEST_ADMIN_PORT" || die "the ingest did not start"
    wait_ready consumer "$CONSUMER_ADMIN_PORT" || die "the consumer did not start"

    log "    load and kills for ${CHAOS_SECONDS}s (events: $RUN_DIR/events.log)"
    local started_ms
    started_ms=$(now_ms)
    echo $((started_ms + CHAOS_SECONDS * 1000)) >"$RUN_DIR/chaos-until"
    event "chaos window opens for ${CHAOS_SECONDS}s"
    local send_status=0
    "$BIN_DIR/metricstream-load" send \
        --url "http://127.0.0.1:$INGEST_PORT" \
        --clients "$CLIENTS" --metrics "$METRICS" \
        --duration-secs "$CHAOS_SECONDS" \
        --pause-ms "$PAUSE_MS" --refusal-pause-ms "$REFUSAL_PAUSE_MS" \
        --request-timeout-secs "$REQUEST_TIMEOUT_SECS" \
        --allow-unacknowledged \
        --client-prefix "chaos-$variant-$stamp" \
        --expected-out "$RUN_DIR/expected.json" \
        >"$RUN_DIR/send.out" 2>"$RUN_DIR/send.err" || send_status=$?
    local load_ms=$(($(now_ms) - started_ms))
    event "load stopped (metricstream-load send exit $send_status)"
    [[ -s $RUN_DIR/expected.json ]] || die "metricstream-load send wrote no expected file (exit $send_status); see $RUN_DIR/send.err"

    # The chaos window is over: every supervisor brings its component back and leaves it be.
    log "    load done; waiting for the pipeline to come back and the consumer to drain"
    local ready=1
    if [[ $backend == kafka ]]; then
        # The broker supervisor leaves the broker running when the window closes.
        while [[ ! -s $RUN_DIR/broker.counts ]]; do sleep 0.2; done
    fi
    wait_ready ingest "$INGEST_ADMIN_PORT" || ready=0
    wait_ready consumer "$CONSUMER_ADMIN_PORT" || ready=0
    local drain_status=0 drain_started=$SECONDS
    "$BIN_DIR/metricstream-load" verify --sink-dir "$RUN_DIR/sink" --expected "$RUN_DIR/expected.json" \
        --wait-secs "$DRAIN_SECONDS" >"$RUN_DIR/verify-live.out" 2>"$RUN_DIR/verify-live.err" ||
        drain_status=$?
    local drain_seconds=$((SECONDS - drain_started))
    event "drain check done after ${drain_seconds}s (exit $drain_status); stopping the services"

    # Stop the services (SIGTERM), then check the settled sink: the figures reported.
    touch "$RUN_DIR/stop"
    local pid
    for pid in "${SUPERVISORS[@]}"; do wait "$pid" || true; done
    SUPERVISORS=()
    local verify_status=0
    "$BIN_DIR/metricstream-load" verify --sink-dir "$RUN_DIR/sink" --expected "$RUN_DIR/expected.json" \
        --settled >"$RUN_DIR/verify.out" 2>"$RUN_DIR/verify.err" || verify_status=$?
    if [[ $backend == kafka ]]; then
        cleanup_run
    fi

    local out=$RUN_DIR/send.out check=$RUN_DIR/verify.out verdict=OK problems=()
    local requests acknowledged refused unanswered metrics_acked found found_once missing dups acked_dups unexpected
    requests=$(field "$out" requests)
    acknowledged=$(field "$out" acknowledged)
    refused=$(field "$out" refused)
    unanswered=$(field "$out" unanswered)
    metrics_acked=$(field "$check" expected)
    found=$(field "$check" found)
    found_once=$(field "$check" 'found once')
    missing=$(field "$check" missing)
    dups=$(field "$check" duplicates)
    acked_dups=$(field "$check" 'acked dups')
    unexpected=$(field "$check" unexpected)
    ((send_status <= 1)) || problems+=("metricstream-load send failed (exit $send_status, $RUN_DIR/send.err)")
    ((ready)) || problems+=("a service did not come back after the chaos window")
    ((verify_status == 0)) || problems+=("verify failed (exit $verify_status): $(grep -h -m1 -E '^(FAILED|metricstream-load: error)' "$check" "$RUN_DIR/verify.err" || true)")
    [[ -n $missing && -n $acked_dups ]] || problems+=("verify printed no figures; see $check and $RUN_DIR/verify.err")
    local status
    for name in ingest consumer; do
        status=$(count_of "$name" stop_status)
        [[ $status == 0 ]] || problems+=("$name exited with status ${status:-?} on the final SIGTERM")
    done
    if ((${#problems[@]} > 0)); then
        verdict=FAILED
        FAILED=1
    fi

    local broker_kills=-
    [[ $backend == kafka ]] && broker_kills=$(count_of broker kills)
    local summary
    summary=$(
        printf '%s backend (%s, seed %s)\n' "$variant" "$RUN_DIR" "$CHAOS_SEED"
        printf '  load duration        %d.%01d s (kills stop with it), drain check %d s\n' \
            $((load_ms / 1000)) $((load_ms % 1000 / 100)) "$drain_seconds"
        printf '  kills (SIGKILL)      ingest %s, consumer %s, broker %s\n' \
            "$(count_of ingest kills)" "$(count_of consumer kills)" "$broker_kills"
        printf '  exits by themselves  ingest %s, consumer %s (restarted)\n' \
            "$(count_of ingest exits)" "$(count_of consumer exits)"
        printf '  requests             %s sent, %s acknowledged, %s refused (non-2xx), %s unanswered\n' \
            "$requests" "$acknowledged" "$refused" "$unanswered"
        printf '  metrics acknowledged %s\n' "$metrics_acked"
        printf '  in the sink          %s found, %s exactly once, %s lost, %s duplicated\n' \
            "$found" "$found_once" "$missing" "$acked_dups"
        printf '  unacknowledged but delivered  %s metrics; duplicates of any metric: %s\n' \
            "$unexpected" "$dups"
        for problem in "${problems[@]}"; do printf '  problem: %s\n' "$problem"; done
        printf '  verdict              %s\n' "$verdict"
    )
    printf '%s\n' "$summary" >"$RUN_DIR/summary.txt"
    SUMMARIES+=("$summary")
    log "$summary"
    RUN_DIR=
}

IFS=, read -r -a backends <<<"$CHAOS_BACKENDS"
for backend in "${backends[@]}"; do
    case $backend in
        file | kafka | kafka-spill) ;;
        *) die "CHAOS_BACKENDS: unknown backend '$backend' (file, kafka, kafka-spill)" ;;
    esac
done
for backend in "${backends[@]}"; do
    run_backend "$backend"
done

printf '\n==> chaos summary (CHAOS_SECONDS=%s CHAOS_SEED=%s)\n' "$CHAOS_SECONDS" "$CHAOS_SEED"
printf '%s\n\n' "${SUMMARIES[@]}"
if ((FAILED)); then
    echo "chaos: FAILED"
    exit 1
fi
echo "chaos: every acknowledged metric in the sink exactly once, on every backend"
