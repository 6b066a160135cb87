#!/usr/bin/env bash
# VictoriaMetrics single-node (the `victoria-metrics` server), the time-series store the
# remote-write sink's tests write into and read back from (its export API): built once with
# `go install` from the Go module proxy (module github.com/VictoriaMetrics/VictoriaMetrics, package
# app/victoria-metrics, pure Go: no cgo) and cached outside the repository by version. `make test`
# runs `install` (its `victoriametrics` step) for tests/tests/remote_write_sink.rs.
#
#   hack/victoriametrics.sh [install] [--env-file PATH]
#                             build if missing; the last stdout line is VICTORIAMETRICS=<path>;
#                             with --env-file, also writes it to PATH (atomically)
#   hack/victoriametrics.sh version
#   hack/victoriametrics.sh smoke
#                             build if missing, start the server on 127.0.0.1 with a temporary
#                             -storageDataPath, import one sample (/api/v1/import/prometheus),
#                             flush, read it back (/api/v1/export), stop the server and delete
#                             the directory; prints the exported JSON line; non-zero on failure
#
# Environment:
#   XDG_CACHE_HOME   the binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/victoriametrics-<version>,
#                    Go's module and build caches to .../metricstream/go (shared with the other builds)
#   VICTORIAMETRICS_SMOKE_PORT   the smoke check's HTTP port (default 18428, or the next free one)
# Needs: go 1.26.6+ (v1.151.0's go.mod), flock (util-linux); curl for `smoke`.
#
# Cost (measured on 2 cores, Go 1.26.8): 48 s of wall time with empty module and build caches
# (78 MB of module downloads; 225 MB of module cache and 200 MB of build cache afterwards; ~300 MB
# RSS), 29 s with the modules already downloaded; an 18 MB binary; <0.1 s warm. `smoke` ~1 s warm.
# v1.151.0 is the newest release this Go builds: the go.mod of v1.152.0 and v1.153.0 says
# `go 1.27.1` (v1.154.x, by an earlier note, also needs a module version the proxy refuses).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

VICTORIAMETRICS_VERSION=1.151.0
MODULE=github.com/VictoriaMetrics/VictoriaMetrics
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go
DIR=$CACHE_ROOT/victoriametrics-$VICTORIAMETRICS_VERSION
BIN=$DIR/bin/victoria-metrics

build_victoriametrics() {
  local out=$1
  log "building VictoriaMetrics v$VICTORIAMETRICS_VERSION with $(go env GOVERSION) (first run only: ~1 min)"
  mkdir -p "$out/bin"
  # -version prints lib/buildinfo.Version, which upstream's Makefile sets the same way.
  GOBIN="$out/bin" go_cached "$out/build.log" -C "$out" install -trimpath \
    -ldflags="-s -w -X $MODULE/lib/buildinfo.Version=victoria-metrics-v$VICTORIAMETRICS_VERSION-metricstream" \
    "$MODULE/app/victoria-metrics@v$VICTORIAMETRICS_VERSION" ||
    die "go install of VictoriaMetrics failed (log above)"
  "$out/bin/victoria-metrics" -version >/dev/null || die "the built VictoriaMetrics does not run"
}

cmd_install() {
  take_lock 8 "$CACHE_ROOT/.victoriametrics.lock"
  build_cached "VictoriaMetrics" "$DIR" "module=$MODULE/app/victoria-metrics@v$VICTORIAMETRICS_VERSION" \
    build_victoriametrics
  release_lock 8
  emit "VICTORIAMETRICS=$BIN"
}

# ---- smoke -------------------------------------------------------------------------------------

SMOKE_DIR=
SMOKE_PID=

smoke_cleanup() {
  if [[ -n $SMOKE_PID ]]; then stop_pids 10 "$SMOKE_PID" || true; fi
  SMOKE_PID=
  if [[ -n $SMOKE_DIR ]]; then rm -rf "$SMOKE_DIR"; fi
}

# smoke_fail MESSAGE: the server log's tail, then die (the EXIT trap stops it).
smoke_fail() {
  if [[ -f $SMOKE_DIR/server.log ]]; then
    log "the server's log (tail):"
    tail -n 20 "$SMOKE_DIR/server.log" >&2
  fi
  die "smoke: $*"
}

smoke_healthy() {
  pid_alive "$SMOKE_PID" || smoke_fail "the server exited during startup"
  [[ $(http_status 127.0.0.1 "$1" /health) == 200 ]]
}

# smoke_exported BASE-URL: force a flush, then SMOKE_OUT := the export of the smoke series, which
# holds the sample imported (42.5 at SMOKE_TS, with its labels).
SMOKE_TS=
SMOKE_OUT=
smoke_exported() {
  curl -fsS --max-time 30 "$1/internal/force_flush" >/dev/null || smoke_fail "GET /internal/force_flush failed"
  SMOKE_OUT=$(curl -fsS --max-time 10 -G --data-urlencode 'match[]=metricstream_smoke{job="smoke"}' \
    "$1/api/v1/export") || smoke_fail "GET /api/v1/export failed"
  [[ $SMOKE_OUT == *'"__name__":"metricstream_smoke"'* && $SMOKE_OUT == *'"job":"smoke"'* &&
    $SMOKE_OUT == *'"instance":"a"'* && $SMOKE_OUT == *'"values":[42.5]'* &&
    $SMOKE_OUT == *"\"timestamps\":[$SMOKE_TS]"* ]]
}

cmd_smoke() {
  command -v curl >/dev/null || die "smoke needs curl"
  cmd_install >/dev/null
  local port base t0 t1 ts
  t0=$(now_ms)
  port=$(pick_port VICTORIAMETRICS_SMOKE_PORT 18428)
  base=http://127.0.0.1:$port
  SMOKE_DIR=$(mktemp -d "${TMPDIR:-/tmp}/metricstream-vm-smoke.XXXXXX")
  trap smoke_cleanup EXIT
  launch victoria-metrics "$SMOKE_DIR/pid" "$SMOKE_DIR/server.log" "$BIN" \
    -storageDataPath="$SMOKE_DIR/data" -httpListenAddr="127.0.0.1:$port" -loggerLevel=WARN
  read_pid_file "$SMOKE_DIR/pid" && [[ $CMDLINE == *"$SMOKE_DIR"* ]] || smoke_fail "the server is not running"
  SMOKE_PID=$PID
  wait_until 30 smoke_healthy "$port" || smoke_fail "$base/health did not answer 200 within 30 s"

  ts=$(now_ms)
  curl -fsS --max-time 10 --data-binary "metricstream_smoke{job=\"smoke\",instance=\"a\"} 42.5 $ts" \
    "$base/api/v1/import/prometheus" || smoke_fail "POST /api/v1/import/prometheus failed"
  # /internal/force_flush makes pending rows searchable, but a new sample may still take up to
  # ~1 s more to show in /api/v1/export (measured): flush and export until it does.
  SMOKE_TS=$ts
  t1=$(now_ms)
  POLL_INTERVAL=0.1 wait_until 10 smoke_exported "$base" ||
    smoke_fail "/api/v1/export did not return the sample (value 42.5 at $ts) within 10 s; it returned: ${SMOKE_OUT:-nothing}"
  log "smoke: the sample was exported $(since "$t1") s after the import"

  stop_pids 10 "$SMOKE_PID" || smoke_fail "the server did not stop"
  [[ -z $STOP_KILLED ]] || smoke_fail "the server ignored SIGTERM for 10 s (SIGKILLed)"
  SMOKE_PID=
  smoke_cleanup
  trap - EXIT
  printf '%s\n' "$SMOKE_OUT"
  log "smoke: ok in $(since "$t0") s (port $port): imported, flushed and exported one sample, stopped cleanly"
}

cmd_version() { echo "VICTORIAMETRICS_VERSION=$VICTORIAMETRICS_VERSION"; }

run_command "$@"
