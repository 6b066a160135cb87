#!/usr/bin/env bash
# Prometheus, the real remote-write sender of the process tests (tests/tests/remote_write_client.rs)
# and the second store of the remote-write sink's tests (tests/tests/remote_write_sink.rs):
# built once with `go install` from the Go module proxy (module github.com/prometheus/prometheus,
# whose v0.316.0 is Prometheus 3.x; no web UI assets, which agent mode does not serve) and cached
# outside the repository by version. The tests run it in agent mode (--agent), scraping a local
# target and remote-writing with protocol 1.0 and 2.0, and as a store with its remote-write
# receiver on (--web.enable-remote-write-receiver; tests/src/prometheus.rs). promtool, from the
# same module version, checks and unit-tests the chart's alerting rules (`make rules-check`).
#
#   hack/prometheus.sh [install] [--env-file PATH]
#                             build if missing; stdout ends with PROMTOOL=<path> and, the last
#                             line, PROMETHEUS=<path>; with --env-file, also writes both to PATH
#                             (atomically)
#   hack/prometheus.sh version
#
# Environment:
#   XDG_CACHE_HOME   the binaries go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/prometheus-<version>/bin,
#                    Go's module and build caches to .../metricstream/go (shared with hack/tools.sh
#                    and hack/envtest.sh)
# Needs: go 1.26+, flock (util-linux).
#
# Cost (measured on 2 cores): 4 min of wall time alone, 11 min beside other builds, ~3 GB of
# memory cold (most of it compiling Prometheus' dependencies), a 100 MB binary, and promtool
# beside it (~1 min more, sharing those dependencies); <0.1 s warm. A cache built before promtool
# was added is completed in place: promtool alone is built and moved into its bin/.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_MODULE_VERSION=0.316.0
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go
DIR=$CACHE_ROOT/prometheus-$PROMETHEUS_MODULE_VERSION
PROMETHEUS_CMD=github.com/prometheus/prometheus/cmd/prometheus@v$PROMETHEUS_MODULE_VERSION
PROMTOOL_CMD=github.com/prometheus/prometheus/cmd/promtool@v$PROMETHEUS_MODULE_VERSION

# go_install_into LOG BIN PACKAGE@VERSION...: `go install` of the packages into BIN.
go_install_into() {
  local log=$1 bin=$2
  shift 2
  mkdir -p "$bin"
  GOBIN="$bin" go_cached "$log" -C "$(dirname "$bin")" install -trimpath -ldflags="-s -w" "$@"
}

build_prometheus() {
  local out=$1
  log "building Prometheus and promtool v$PROMETHEUS_MODULE_VERSION with $(go env GOVERSION) (first run only: 4-11 min)"
  go_install_into "$out/build.log" "$out/bin" "$PROMETHEUS_CMD" "$PROMTOOL_CMD" ||
    die "go install of Prometheus failed (log above)"
  "$out/bin/prometheus" --version >/dev/null || die "the built Prometheus does not run"
  "$out/bin/promtool" --version >/dev/null || die "the built promtool does not run"
}

# complete_promtool: a cache built before promtool was added holds prometheus alone (same stamp):
# build promtool into a temp dir beside it and rename it into bin/, so a reader of bin/ sees no
# promtool or the whole one, and the running Prometheus is left alone. Run under the lock.
complete_promtool() {
  [[ -x $DIR/bin/promtool ]] && return 0
  local tmp
  rm -rf "$DIR/.promtool.tmp."* # left by an interrupted run (we hold the lock)
  tmp=$(mktemp -d "$DIR/.promtool.tmp.XXXXXX")
  TMP_DIRS+=("$tmp")
  log "completing the cache: building promtool v$PROMETHEUS_MODULE_VERSION into $DIR/bin (first run only: ~1 min)"
  go_install_into "$tmp/build.log" "$tmp/bin" "$PROMTOOL_CMD" || die "go install of promtool failed (log above)"
  "$tmp/bin/promtool" --version >/dev/null || die "the built promtool does not run"
  mv -f "$tmp/bin/promtool" "$DIR/bin/promtool"
  rm -rf "$tmp"
}

cmd_install() {
  take_lock 8 "$CACHE_ROOT/.prometheus.lock"
  build_cached "Prometheus" "$DIR" "module=github.com/prometheus/prometheus@v$PROMETHEUS_MODULE_VERSION" \
    build_prometheus
  complete_promtool
  release_lock 8
  emit "PROMTOOL=$DIR/bin/promtool" "PROMETHEUS=$DIR/bin/prometheus"
}

cmd_version() { echo "PROMETHEUS_MODULE_VERSION=$PROMETHEUS_MODULE_VERSION"; }

run_command "$@"
