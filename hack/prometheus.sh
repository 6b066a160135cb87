#!/usr/bin/env bash
# Prometheus, the real remote-write sender of the process tests (tests/tests/remote_write_client.rs)
# and the second store of the remote-write sink's tests (tests/tests/remote_write_sink.rs):
# built once with `go install` from the Go module proxy (module github.com/prometheus/prometheus,
# whose v0.316.0 is Prometheus 3.x; no web UI assets, which agent mode does not serve) and cached
# outside the repository by version. The tests run it in agent mode (--agent), scraping a local
# target and remote-writing with protocol 1.0 and 2.0, and as a store with its remote-write
# receiver on (--web.enable-remote-write-receiver; tests/src/prometheus.rs).
#
#   hack/prometheus.sh [install] [--env-file PATH]
#                             build if missing; the last stdout line is PROMETHEUS=<path>; with
#                             --env-file, also writes it to PATH (atomically)
#   hack/prometheus.sh version
#
# Environment:
#   XDG_CACHE_HOME   the binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/prometheus-<version>,
#                    Go's module and build caches to .../metricstream/go (shared with hack/tools.sh
#                    and hack/envtest.sh)
# Needs: go 1.26+, flock (util-linux).
#
# Cost (measured on 2 cores): 4 min of wall time alone, 11 min beside other builds, ~3 GB of
# memory cold (most of it compiling Prometheus' dependencies), a 100 MB binary; <0.1 s warm.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROMETHEUS_MODULE_VERSION=0.316.0
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go
DIR=$CACHE_ROOT/prometheus-$PROMETHEUS_MODULE_VERSION


build_prometheus() {
  local out=$1
  log "building Prometheus v$PROMETHEUS_MODULE_VERSION with $(go env GOVERSION) (first run only: 4-11 min)"
  mkdir -p "$out/bin"
  GOBIN="$out/bin" go_cached "$out/build.log" -C "$out" install -trimpath -ldflags="-s -w" \
    "github.com/prometheus/prometheus/cmd/prometheus@v$PROMETHEUS_MODULE_VERSION" ||
    die "go install of Prometheus failed (log above)"
  "$out/bin/prometheus" --version >/dev/null || die "the built Prometheus does not run"
}

cmd_install() {
  take_lock 8 "$CACHE_ROOT/.prometheus.lock"
  build_cached "Prometheus" "$DIR" "module=github.com/prometheus/prometheus@v$PROMETHEUS_MODULE_VERSION" \
    build_prometheus
  release_lock 8
  emit "PROMETHEUS=$DIR/bin/prometheus"
}

cmd_version() { echo "PROMETHEUS_MODULE_VERSION=$PROMETHEUS_MODULE_VERSION"; }

run_command "$@"
