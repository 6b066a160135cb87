#!/usr/bin/env bash
# The OpenTelemetry Collector, the real OTLP/HTTP JSON client of the process tests
# (tests/tests/otlp_client.rs): the wrapper module hack/otelcol/ (the OTLP receiver and the OTLP/HTTP
# exporter of collector v0.165.0, pinned by its go.sum) built once with the Go module proxy and
# cached outside the repository, keyed by the module's go.mod and go.sum. The tests feed it with
# the OpenTelemetry Python SDK and let it forward to the ingest as OTLP JSON, which no Python
# exporter speaks.
#
#   hack/otelcol.sh [install] [--env-file PATH]
#                             build if missing; the last stdout line is OTELCOL=<path>; with
#                             --env-file, also writes it to PATH (atomically)
#   hack/otelcol.sh version
#
# Environment:
#   XDG_CACHE_HOME   the binary goes to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/otelcol-<version>-<hash>,
#                    Go's module and build caches to .../metricstream/go (shared with the other builds)
# Needs: go 1.26+, flock (util-linux), sha256sum.
#
# Cost (measured on 2 cores): 96 s of wall time with empty module and build caches, a 37 MB
# binary; <0.1 s warm.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OTELCOL_VERSION=0.165.0
MODULE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/otelcol" && pwd)
CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
GO_CACHE_ROOT=$CACHE_ROOT/go

build_otelcol() {
  local out=$1
  log "building the OpenTelemetry Collector v$OTELCOL_VERSION (hack/otelcol/) with $(go env GOVERSION) (first run only: 1-5 min)"
  go_cached "$out/build.log" -C "$MODULE_DIR" build -mod=readonly -trimpath -ldflags="-s -w" \
    -o "$out/bin/metricstream-otelcol" . ||
    die "go build of the OpenTelemetry Collector failed (log above)"
  "$out/bin/metricstream-otelcol" --version >/dev/null || die "the built Collector does not run"
}

cmd_install() {
  local hash dir
  # The module's files are the pin: a change to any of them is another build.
  hash=$(cat "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" "$MODULE_DIR/main.go" | sha256sum | cut -c1-12)
  dir=$CACHE_ROOT/otelcol-$OTELCOL_VERSION-$hash
  take_lock 8 "$CACHE_ROOT/.otelcol.lock"
  build_cached "OpenTelemetry Collector" "$dir" "$hash" build_otelcol
  release_lock 8
  emit "OTELCOL=$dir/bin/metricstream-otelcol"
}

cmd_version() { echo "OTELCOL_VERSION=$OTELCOL_VERSION"; }

run_command "$@"
