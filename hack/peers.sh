#!/usr/bin/env bash
# The two peer systems `make bench` compares MetricStream with (issue 19), built once from the Go
# module proxy, pinned, and cached outside the repository:
#   - the OpenTelemetry Collector "peer": the wrapper module hack/otelcol-peer/ (core v1.71.0 /
#     v0.165.0: the OTLP receiver and the batch processor; contrib v0.165.0: the kafka and
#     prometheus_remote_write exporters and the file_storage extension), pinned by its go.sum and
#     keyed by the module's files; configurations hack/otelcol-peer/kafka.yaml (OTLP -> Kafka,
#     sending queue on file_storage) and remotewrite.yaml (OTLP -> remote write, with its WAL);
#   - vmagent from the VictoriaMetrics module (package app/vmagent, pure Go), at the version
#     hack/victoriametrics.sh builds the server at.
# What each acknowledges its client on, with the sources read: docs/peers.md.
#
#   hack/peers.sh [install] [--env-file PATH]
#                             build both if missing; the last two stdout lines are
#                             OTELCOL_PEER=<path> and VMAGENT=<path>; with --env-file, also
#                             writes them to PATH (atomically)
#   hack/peers.sh version
#   hack/peers.sh smoke       build if missing, then prove each peer works end to end here:
#                             (a) VictoriaMetrics (hack/victoriametrics.sh install) and vmagent in
#                             front of it (persistent queue in a temp dir): one Prometheus
#                             remote-write 1.0 request (protobuf and snappy encoded by a
#                             stdlib-only python3 snippet) to vmagent's
#                             /api/v1/write, read back from VictoriaMetrics' /api/v1/export;
#                             the Collector with remotewrite.yaml into the same VictoriaMetrics:
#                             one OTLP/HTTP JSON request, read back the same way;
#                             (b) a private Kafka broker (hack/kafka.sh up/down, state in
#                             $PEERS_KAFKA_STATE) and the Collector with kafka.yaml: one OTLP/HTTP
#                             JSON request to /v1/metrics, then the topic's end offset > 0; both
#                             configurations pass the Collector's `validate`. Stops what it
#                             started (by pid) and deletes its temp dirs; non-zero on failure
#
# Environment:
#   XDG_CACHE_HOME   the binaries go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/otelcol-peer-<version>-<hash>
#                    and .../metricstream/vmagent-<version>, Go's module and build caches to
#                    .../metricstream/go (shared with the other builds)
#   PEERS_SMOKE_PORT     the first port `smoke` tries (default 47400; it takes free ones up to 47499)
#   PEERS_KAFKA_PORT     the smoke broker's PLAINTEXT port (default 47092; controller +1, SASL_SSL +2)
#   PEERS_KAFKA_STATE    the smoke broker's state dir (default ${TMPDIR:-/tmp}/metricstream-peers-kafka),
#                        deleted by `hack/kafka.sh down` at the end
# Needs: go 1.26.6+ (VictoriaMetrics v1.151.0's go.mod), flock (util-linux), sha256sum; for
# `smoke` also curl, python3 (stdlib only) and what hack/kafka.sh needs (Java 17+, Maven).
#
# Cost (measured on 2 cores, Go 1.26.8, with another CI run sharing the machine): 278 s of wall
# time with empty module and build caches (the Collector peer 247 s, vmagent 30 s; 1.3 GB of module
# cache and 0.9 GB of build cache afterwards), a 47 MB and a 14 MB binary; vmagent alone takes ~5 s
# when hack/victoriametrics.sh has already built the same module; <0.1 s warm. `smoke` 12-21 s
# warm (the Kafka broker's start is most of it).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OTELCOL_PEER_VERSION=0.165.0
VMAGENT_VERSION=1.151.0 # = VICTORIAMETRICS_VERSION in hack/victoriametrics.sh
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE_DIR=$HACK_DIR/otelcol-peer
VM_MODULE=github.com/VictoriaMetrics/VictoriaMetrics
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go
VMAGENT_DIR=$CACHE_ROOT/vmagent-$VMAGENT_VERSION
VMAGENT_BIN=$VMAGENT_DIR/bin/vmagent
OTELCOL_PEER_BIN= # set by install_otelcol_peer

# ---- install -----------------------------------------------------------------------------------

build_otelcol_peer() {
  local out=$1
  log "building the OpenTelemetry Collector peer v$OTELCOL_PEER_VERSION (hack/otelcol-peer/) with $(go env GOVERSION) (first run only: 2-6 min)"
  go_cached "$out/build.log" -C "$MODULE_DIR" build -mod=readonly -trimpath -ldflags="-s -w" \
    -o "$out/bin/metricstream-otelcol-peer" . ||
    die "go build of the OpenTelemetry Collector peer failed (log above)"
  "$out/bin/metricstream-otelcol-peer" --version >/dev/null || die "the built Collector peer does not run"
}

install_otelcol_peer() {
  local hash dir
  # The module's files are the pin: a change to any of them is another build.
  hash=$(cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" "$MODULE_DIR/main.go" | sha256sum | cut -c1-12)
  dir=$CACHE_ROOT/otelcol-peer-$OTELCOL_PEER_VERSION-$hash
  take_lock 8 "$CACHE_ROOT/.otelcol-peer.lock"
  build_cached "OpenTelemetry Collector peer" "$dir" "$hash" build_otelcol_peer
  release_lock 8
  OTELCOL_PEER_BIN=$dir/bin/metricstream-otelcol-peer
}

build_vmagent() {
  local out=$1
  log "building vmagent v$VMAGENT_VERSION with $(go env GOVERSION) (first run only: ~1 min)"
  mkdir -p "$out/bin"
  # -version prints lib/buildinfo.Version, which upstream's Makefile sets the same way.
  GOBIN="$out/bin" go_cached "$out/build.log" -C "$out" install -trimpath \
    -ldflags="-s -w -X $VM_MODULE/lib/buildinfo.Version=vmagent-v$VMAGENT_VERSION-metricstream" \
    "$VM_MODULE/app/vmagent@v$VMAGENT_VERSION" ||
    die "go install of vmagent failed (log above)"
  "$out/bin/vmagent" -version >/dev/null || die "the built vmagent does not run"
}

install_vmagent() {
  take_lock 8 "$CACHE_ROOT/.vmagent.lock"
  build_cached "vmagent" "$VMAGENT_DIR" "module=$VM_MODULE/app/vmagent@v$VMAGENT_VERSION" build_vmagent
  release_lock 8
}

cmd_install() {
  install_otelcol_peer
  install_vmagent
  emit "OTELCOL_PEER=$OTELCOL_PEER_BIN" "VMAGENT=$VMAGENT_BIN"
}

cmd_version() {
  echo "OTELCOL_PEER_VERSION=$OTELCOL_PEER_VERSION"
  echo "VMAGENT_VERSION=$VMAGENT_VERSION"
}

# ---- smoke -------------------------------------------------------------------------------------

SMOKE_DIR=
SMOKE_PIDS=()
KAFKA_UP=
PEERS_KAFKA_PORT=${PEERS_KAFKA_PORT:-47092}
PEERS_KAFKA_STATE=${PEERS_KAFKA_STATE:-${TMPDIR:-/tmp}/metricstream-peers-kafka}

# kafka_sh ARGS...: hack/kafka.sh with the smoke broker's ports and state dir.
kafka_sh() {
  METRICSTREAM_KAFKA_STATE=$PEERS_KAFKA_STATE KAFKA_PORT=$PEERS_KAFKA_PORT \
    KAFKA_CONTROLLER_PORT=$((PEERS_KAFKA_PORT + 1)) KAFKA_SECURE_PORT=$((PEERS_KAFKA_PORT + 2)) \
    bash "$HACK_DIR/kafka.sh" "$@"
}

smoke_cleanup() {
  if ((${#SMOKE_PIDS[@]} > 0)); then stop_pids 15 "${SMOKE_PIDS[@]}" || true; fi
  SMOKE_PIDS=()
  if [[ -n $KAFKA_UP ]]; then kafka_sh down >&2 || log "hack/kafka.sh down failed"; fi
  KAFKA_UP=
  if [[ -n $SMOKE_DIR ]]; then rm -rf "$SMOKE_DIR"; fi
  SMOKE_DIR=
}

# smoke_fail MESSAGE: the tails of the logs of what smoke started, then die (the EXIT trap
# cleans up).
smoke_fail() {
  local f
  for f in "$SMOKE_DIR"/*.log; do
    [[ -f $f ]] || continue
    log "${f##*/} (tail):"
    tail -n 20 "$f" >&2
  done
  die "smoke: $*"
}

# smoke_launch NAME COMMAND...: launch COMMAND (log $SMOKE_DIR/NAME.log) and remember its pid.
smoke_launch() {
  local name=$1
  shift
  launch "$name" "$SMOKE_DIR/$name.pid" "$SMOKE_DIR/$name.log" "$@"
  # The pid file names the process launch exec'd: COMMAND itself.
  read_pid_file "$SMOKE_DIR/$name.pid" || smoke_fail "$name is not running"
  [[ $CMDLINE == "$1"* ]] || smoke_fail "pid $PID in $SMOKE_DIR/$name.pid is not $name"
  SMOKE_PIDS+=("$PID")
  LAUNCHED_PID=$PID
}
LAUNCHED_PID=

# smoke_port: a free port in PEERS_SMOKE_PORT (47400)..47499 not handed out yet.
smoke_port() {
  local port
  for ((port = ${PEERS_SMOKE_PORT:-47400}; port <= 47499; port++)); do
    [[ $PICKED == *" $port "* ]] && continue
    port_in_use "$port" && continue
    PICKED+="$port "
    SMOKE_PORT=$port
    return 0
  done
  smoke_fail "no free port in ${PEERS_SMOKE_PORT:-47400}..47499"
}
SMOKE_PORT=

# healthy PID PORT PATH: PID is alive (else fail) and GET PATH on PORT answers 200.
healthy() {
  pid_alive "$1" || smoke_fail "a process smoke started (pid $1) exited during startup"
  [[ $(http_status 127.0.0.1 "$2" "$3") == 200 ]]
}

# write_request NAME VALUE TIMESTAMP-MS: a Prometheus remote-write 1.0 request body on stdout: a
# WriteRequest with one series ({__name__=NAME, instance="a", job="peers-smoke"}, labels sorted)
# and one sample, protobuf-encoded by hand and snappy-compressed as a block of literals only
# (valid snappy that any decoder reads; python3 has no snappy module here).
write_request() {
  python3 - "$@" <<'PY'
import struct, sys

def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)

def field(num, data):  # a length-delimited field
    return varint(num << 3 | 2) + varint(len(data)) + data

def label(name, value):
    return field(1, name.encode()) + field(2, value.encode())

name, value, ts = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
labels = [("__name__", name), ("instance", "a"), ("job", "peers-smoke")]
sample = varint(1 << 3 | 1) + struct.pack("<d", value) + varint(2 << 3 | 0) + varint(ts)
series = b"".join(field(1, label(n, v)) for n, v in labels) + field(2, sample)
request = field(1, series)  # WriteRequest.timeseries

block = bytearray(varint(len(request)))
for i in range(0, len(request), 65536):
    chunk = request[i:i + 65536]
    n = len(chunk) - 1
    if n < 60:
        block.append(n << 2)
    elif n < 256:
        block += bytes([60 << 2, n])
    else:
        block += bytes([61 << 2]) + struct.pack("<H", n)
    block += chunk
sys.stdout.buffer.write(bytes(block))
PY
}

# vm_exported NAME TIMESTAMP-MS: force VictoriaMetrics (VM_BASE) to flush, then VM_OUT := the
# export of the series NAME{job="peers-smoke"}; true when it holds the sample 42.5 at TIMESTAMP-MS.
VM_OUT=
VM_BASE=
vm_exported() {
  curl -fsS --max-time 30 "$VM_BASE/internal/force_flush" >/dev/null || return 1
  VM_OUT=$(curl -fsS --max-time 10 -G --data-urlencode "match[]=$1{job=\"peers-smoke\"}" \
    "$VM_BASE/api/v1/export") || return 1
  [[ $VM_OUT == *"\"__name__\":\"$1\""* && $VM_OUT == *'"values":[42.5]'* &&
    $VM_OUT == *"\"timestamps\":[$2]"* ]]
}

smoke_vmagent() {
  local vm_bin vm_port agent_port ts t0 status
  vm_bin=$(bash "$HACK_DIR/victoriametrics.sh" install | tail -n 1)
  vm_bin=${vm_bin#VICTORIAMETRICS=}
  smoke_port && vm_port=$SMOKE_PORT
  smoke_port && agent_port=$SMOKE_PORT
  smoke_launch victoria-metrics "$vm_bin" -storageDataPath="$SMOKE_DIR/vm-data" \
    -httpListenAddr="127.0.0.1:$vm_port" -loggerLevel=WARN
  wait_until 30 healthy "$LAUNCHED_PID" "$vm_port" /health || smoke_fail "VictoriaMetrics did not get healthy"
  VM_BASE=http://127.0.0.1:$vm_port
  smoke_launch vmagent "$VMAGENT_BIN" -httpListenAddr="127.0.0.1:$agent_port" \
    -remoteWrite.url="http://127.0.0.1:$vm_port/api/v1/write" \
    -remoteWrite.tmpDataPath="$SMOKE_DIR/vmagent-queue" -remoteWrite.flushInterval=100ms -loggerLevel=WARN
  wait_until 30 healthy "$LAUNCHED_PID" "$agent_port" /health || smoke_fail "vmagent did not get healthy"

  ts=$(now_ms)
  write_request metricstream_peers_smoke 42.5 "$ts" >"$SMOKE_DIR/write-request.bin"
  status=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
    -H 'Content-Type: application/x-protobuf' -H 'Content-Encoding: snappy' \
    -H 'X-Prometheus-Remote-Write-Version: 0.1.0' --data-binary "@$SMOKE_DIR/write-request.bin" \
    "http://127.0.0.1:$agent_port/api/v1/write") || smoke_fail "POST to vmagent's /api/v1/write failed"
  [[ $status == 2* ]] || smoke_fail "vmagent answered $status to the remote-write request"
  log "smoke: vmagent answered $status to a remote-write 1.0 request ($(stat -c %s "$SMOKE_DIR/write-request.bin") bytes)"
  t0=$(now_ms)
  POLL_INTERVAL=0.2 wait_until 30 vm_exported metricstream_peers_smoke "$ts" ||
    smoke_fail "VictoriaMetrics did not export the sample within 30 s; it returned: ${VM_OUT:-nothing}"
  log "smoke: vmagent -> VictoriaMetrics: the sample was exported $(since "$t0") s after the write"
  printf 'vmagent: %s\n' "$VM_OUT"
}

# otlp_request NAME TIMESTAMP-MS: one gauge data point (42.5) as an OTLP/HTTP JSON
# ExportMetricsServiceRequest, service.name peers-smoke (the `job` label in remote write).
otlp_request() {
  printf '{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"peers-smoke"}}]},'
  printf '"scopeMetrics":[{"scope":{"name":"peers-smoke"},"metrics":[{"name":"%s",' "$1"
  printf '"gauge":{"dataPoints":[{"timeUnixNano":"%s000000","asDouble":42.5}]}}]}]}]}' "$2"
}

# post_otlp PORT NAME TIMESTAMP-MS: POST otlp_request to the Collector's /v1/metrics; fails unless
# it answers 200 (logged with its body).
post_otlp() {
  local status
  status=$(otlp_request "$2" "$3" | curl -sS --max-time 10 -o "$SMOKE_DIR/otlp-response" \
    -w '%{http_code}' -H 'Content-Type: application/json' --data-binary @- \
    "http://127.0.0.1:$1/v1/metrics") || smoke_fail "POST to the Collector's /v1/metrics failed"
  [[ $status == 200 ]] || smoke_fail "the Collector answered $status: $(<"$SMOKE_DIR/otlp-response")"
  log "smoke: the Collector answered 200 to an OTLP/HTTP JSON request: $(<"$SMOKE_DIR/otlp-response")"
}

# smoke_remotewrite: the Collector with remotewrite.yaml in front of the VictoriaMetrics that
# smoke_vmagent started: one OTLP/HTTP JSON request, read back from /api/v1/export; then stops it.
smoke_remotewrite() {
  local port ts t0 pid p rest=()
  smoke_port && port=$SMOKE_PORT
  PEER_OTLP_HTTP_PORT=$port PEER_REMOTE_WRITE_URL=$VM_BASE/api/v1/write PEER_WAL_DIR=$SMOKE_DIR/otelcol-wal \
    smoke_launch otelcol-peer-remotewrite "$OTELCOL_PEER_BIN" --config "$MODULE_DIR/remotewrite.yaml"
  pid=$LAUNCHED_PID
  wait_until 30 otlp_up "$pid" "$port" || smoke_fail "the Collector's OTLP/HTTP receiver did not come up"
  ts=$(now_ms)
  post_otlp "$port" metricstream_peers_smoke_otlp "$ts"
  t0=$(now_ms)
  POLL_INTERVAL=0.2 wait_until 30 vm_exported metricstream_peers_smoke_otlp "$ts" ||
    smoke_fail "VictoriaMetrics did not export the Collector's sample within 30 s; it returned: ${VM_OUT:-nothing}"
  log "smoke: Collector (remotewrite.yaml) -> VictoriaMetrics: the sample was exported $(since "$t0") s after the 200"
  printf 'otelcol-peer remotewrite: %s\n' "$VM_OUT"
  stop_pids 15 "$pid" || smoke_fail "the Collector (remotewrite.yaml) did not stop"
  for p in "${SMOKE_PIDS[@]}"; do [[ $p == "$pid" ]] || rest+=("$p"); done
  SMOKE_PIDS=("${rest[@]}") # stopped: no more ours
}

# topic_end_offset BOOTSTRAP: OFFSET := the sum of otlp_metrics' partitions' end offsets (0 while
# the topic does not exist).
OFFSET=
topic_end_offset() {
  local out line sum=0
  out=$(kafka_sh tool get-offsets --bootstrap-server "$1" --topic otlp_metrics --time -1 2>/dev/null) || out=
  while IFS= read -r line; do
    [[ $line =~ ^otlp_metrics:[0-9]+:([0-9]+)$ ]] && sum=$((sum + BASH_REMATCH[1]))
  done <<<"$out"
  OFFSET=$sum
  ((sum > 0))
}

# smoke_validate: both configurations pass the Collector's `validate` (placeholder values).
smoke_validate() {
  local config
  for config in kafka remotewrite; do
    PEER_OTLP_HTTP_PORT=4318 PEER_KAFKA_BROKERS=127.0.0.1:9092 PEER_STORAGE_DIR=$SMOKE_DIR/validate \
      PEER_KAFKA_TOPIC=otlp_metrics PEER_TELEMETRY_PORT=8888 PEER_REMOTE_WRITE_URL=http://127.0.0.1:8428/api/v1/write PEER_WAL_DIR=$SMOKE_DIR/validate \
      "$OTELCOL_PEER_BIN" validate --config "$MODULE_DIR/$config.yaml" ||
      smoke_fail "hack/otelcol-peer/$config.yaml does not validate"
  done
  log "smoke: hack/otelcol-peer/kafka.yaml and remotewrite.yaml pass \`validate\`"
}

smoke_collector() {
  local bootstrap port telemetry_port t0

  KAFKA_UP=1
  kafka_sh up --env-file "$SMOKE_DIR/kafka.env" >/dev/null || smoke_fail "hack/kafka.sh up failed"
  bootstrap=$(env_get "$SMOKE_DIR/kafka.env" KAFKA_BOOTSTRAP) || smoke_fail "no KAFKA_BOOTSTRAP from hack/kafka.sh"
  # hack/kafka.sh's broker does not create topics on demand (auto.create.topics.enable=false).
  kafka_sh tool topics --bootstrap-server "$bootstrap" --create --topic otlp_metrics --partitions 1 \
    --replication-factor 1 >&2 || smoke_fail "could not create the topic otlp_metrics"
  smoke_port && telemetry_port=$SMOKE_PORT
  smoke_port && port=$SMOKE_PORT
  PEER_OTLP_HTTP_PORT=$port PEER_KAFKA_BROKERS=$bootstrap PEER_STORAGE_DIR=$SMOKE_DIR/otelcol-storage \
    PEER_KAFKA_TOPIC=otlp_metrics PEER_TELEMETRY_PORT=$telemetry_port \
    smoke_launch otelcol-peer "$OTELCOL_PEER_BIN" --config "$MODULE_DIR/kafka.yaml"
  # The OTLP receiver has no health path: an empty export answering 200 means it is up.
  wait_until 30 otlp_up "$LAUNCHED_PID" "$port" || smoke_fail "the Collector's OTLP/HTTP receiver did not come up"

  post_otlp "$port" metricstream_peers_smoke "$(now_ms)"
  t0=$(now_ms)
  POLL_INTERVAL=1 wait_until 60 topic_end_offset "$bootstrap" ||
    smoke_fail "no record on topic otlp_metrics within 60 s"
  log "smoke: Collector -> Kafka: topic otlp_metrics has end offset $OFFSET, $(since "$t0") s after the 200"
  printf 'otelcol-peer: otlp_metrics end offset %s\n' "$OFFSET"
}

# otlp_up PID PORT: the Collector (PID) is alive and its receiver answers an empty JSON export.
otlp_up() {
  pid_alive "$1" || smoke_fail "the Collector exited during startup"
  [[ $(curl -s --max-time 3 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary '{}' "http://127.0.0.1:$2/v1/metrics") == 200 ]]
}

cmd_smoke() {
  command -v curl >/dev/null || die "smoke needs curl"
  command -v python3 >/dev/null || die "smoke needs python3"
  cmd_install >/dev/null
  local t0
  t0=$(now_ms)
  SMOKE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/metricstream-peers-smoke.XXXXXX")
  trap smoke_cleanup EXIT
  smoke_validate
  smoke_vmagent
  smoke_remotewrite
  smoke_collector
  stop_pids 15 "${SMOKE_PIDS[@]}" || smoke_fail "a process smoke started did not stop"
  [[ -z $STOP_KILLED ]] || smoke_fail "a process smoke started ignored SIGTERM for 15 s (SIGKILLed)"
  SMOKE_PIDS=()
  smoke_cleanup
  trap - EXIT
  log "smoke: ok in $(since "$t0") s: vmagent -> VictoriaMetrics and Collector -> Kafka, all stopped, temp dirs removed"
}

run_command "$@"
