#!/usr/bin/env bash
# The suites of `make bench`, in order, then the report (BENCHMARKS.md, bench/report/).
#
# `make bench` builds the release binaries, VictoriaMetrics and the peers (hack/peers.sh), starts
# (or reuses) the local Kafka broker and control plane, and runs this with KAFKA_BOOTSTRAP,
# KUBECONFIG, OHA, VICTORIAMETRICS, OTELCOL_PEER and VMAGENT set. Every suite runs
# even if an earlier one failed; the report is rendered from whatever results exist, and the
# exit status is non-zero if any suite failed.
#
# Environment:
#   BENCH_SUITES  the suites to run (default: backend http intake peers drain drain-store operator)
#   BENCH_QUICK   1: every suite's --quick (seconds, not minutes; the figures mean little)
#   BENCH_OUT     where the suites write their JSON (default target/bench)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bench=$(cargo_target_dir "$repo")/release/metricstream-bench
suites=${BENCH_SUITES:-backend http intake peers drain drain-store operator}
out=${BENCH_OUT:-target/bench}
quick=()
if [[ ${BENCH_QUICK:-0} == 1 ]]; then quick=(--quick); fi

[[ -x $bench ]] || die "$bench is missing: cargo build --release --workspace --bins"
log "$(nproc) cores; KAFKA_BOOTSTRAP=${KAFKA_BOOTSTRAP:-<unset: Kafka targets skipped>}" \
  "KUBECONFIG=${KUBECONFIG:-<unset: operator suite fails>} OHA=${OHA:-<unset>}" \
  "VICTORIAMETRICS=${VICTORIAMETRICS:-<unset: drain-store and peers suites fail>}" \
  "OTELCOL_PEER=${OTELCOL_PEER:-<unset: peers suite fails>} VMAGENT=${VMAGENT:-<unset: peers suite fails>}"

mkdir -p "$out"
failed=()
summary=""
for suite in $suites; do
  printf '\n==> metricstream-bench %s\n' "$suite"
  rm -f "$out/$suite.json"
  started=$SECONDS
  if "$bench" "$suite" "${quick[@]}" --out "$out/$suite.json"; then
    result=ok
  else
    result=FAILED
    failed+=("$suite")
  fi
  summary+=$(printf '  %-10s %-6s %5ss' "$suite" "$result" "$((SECONDS - started))")$'\n'
done

printf '\n==> metricstream-bench report\n'
"$bench" report --results-dir "$out" --out-dir "$repo" --command "make bench"

printf '\n==> make bench summary\n%s' "$summary"
if ((${#failed[@]} > 0)); then
  echo "make bench: FAILED suites: ${failed[*]} (BENCHMARKS.md shows what did run)"
  exit 1
fi
echo "make bench: every suite ran; BENCHMARKS.md and bench/report/ are up to date"
