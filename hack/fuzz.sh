#!/usr/bin/env bash
# The fuzz targets of fuzz/ (cargo-fuzz, libFuzzer), each run for a bounded time.
#
#   hack/fuzz.sh [run]     install cargo-fuzz if missing, build every target, run each for
#                          FUZZ_SECONDS; print per target the executions libFuzzer made; fail if
#                          any target crashed (its input's path is in the output)
#   hack/fuzz.sh install   install cargo-fuzz if missing; the last stdout line is
#                          CARGO_FUZZ=<absolute path of the binary>
#   hack/fuzz.sh build     install if missing and build the targets only
#   hack/fuzz.sh list      the targets
#
# cargo-fuzz is installed from crates.io with `cargo install --locked`, pinned by version and
# cached outside the repository by version, so a second run costs nothing:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/cargo-fuzz-<version>/bin/cargo-fuzz
#
# The targets build with a nightly toolchain (sanitizer flags), which must already be installed
# (`rustup toolchain list`); the workspace itself never needs nightly.
#
# Environment:
#   FUZZ_SECONDS     seconds each target runs (default 60)
#   FUZZ_TARGETS     space-separated targets to run (default: all of `hack/fuzz.sh list`)
#   FUZZ_TOOLCHAIN   the rustup toolchain to build with (default nightly)
#   FUZZ_WORK_DIR    where the growing corpora and crash artifacts go, per target
#                    <dir>/corpus/<target> and <dir>/artifacts/<target>
#                    (default: $CARGO_TARGET_DIR/fuzz-work, or target/fuzz-work)
#   FUZZ_BUILD_DIR   cargo's target directory for the fuzz build
#                    (default: $CARGO_TARGET_DIR/fuzz-build, or target/fuzz-build)
#   XDG_CACHE_HOME   see above
# Each target starts from its committed seeds (fuzz/seeds/<target>) plus what earlier runs
# found (the working corpus), and new finds go to the working corpus only: the clone stays clean.
# Needs: rustup with a nightly toolchain, a C compiler (libFuzzer), flock (util-linux).
# Progress goes to stderr; stdout carries the results.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CARGO_FUZZ_VERSION=0.13.2

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$repo/fuzz"
cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/metricstream"
install_root="$cache_root/cargo-fuzz-$CARGO_FUZZ_VERSION"
cargo_fuzz_bin="$install_root/bin/cargo-fuzz"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
target_root="$(cargo_target_dir "$repo")"
work_dir="${FUZZ_WORK_DIR:-$target_root/fuzz-work}"
build_dir="${FUZZ_BUILD_DIR:-$target_root/fuzz-build}"
seconds="${FUZZ_SECONDS:-60}"

[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive whole number, not '$seconds'"
# cargo-fuzz's defaults (optimised, with debug assertions and overflow checks: an arithmetic
# overflow on hostile input is a finding, not a wrap-around) without AddressSanitizer: the code
# under test is safe Rust, where ASan finds nothing a panic does not, at twice the run time.
build_flags=(--target-dir "$build_dir" --sanitizer none)


# True when the cached binary runs and reports the pinned version.
installed() {
  [[ -x "$cargo_fuzz_bin" ]] &&
    "$cargo_fuzz_bin" fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"
}

install() {
  if installed; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION is cached in $install_root"
    return
  fi
  command -v cargo >/dev/null || die "cargo not found (install a Rust toolchain with rustup)"
  command -v flock >/dev/null || die "flock not found (util-linux)"
  mkdir -p "$cache_root"
  # One installer at a time; whoever waited finds the binary the other one built.
  take_lock 8 "$cache_root/cargo-fuzz-$CARGO_FUZZ_VERSION.lock"
  if installed; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION was installed meanwhile in $install_root"
    return
  fi
  # Built into a scratch root and renamed into place, so an interrupted build never leaves a
  # half-installed version that looks cached. Its own target directory, so it never mixes with
  # the project's build.
  local scratch="$install_root.partial.$$"
  rm -rf "$scratch"
  trap 'rm -rf "$scratch"' EXIT
  log "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io into $install_root"
  local started=$SECONDS
  CARGO_TARGET_DIR="$scratch/build" nice -n 10 cargo install --locked cargo-fuzz \
    --version "$CARGO_FUZZ_VERSION" --root "$scratch" >&2 ||
    die "cargo install cargo-fuzz $CARGO_FUZZ_VERSION failed (see cargo's output above)"
  rm -rf "$scratch/build" "$install_root"
  mv "$scratch" "$install_root"
  trap - EXIT
  installed || die "$cargo_fuzz_bin does not run or is not version $CARGO_FUZZ_VERSION"
  log "installed cargo-fuzz $CARGO_FUZZ_VERSION in $((SECONDS - started)) s"
}

# cargo-fuzz as the cargo subcommand of the fuzz toolchain, run in fuzz/.
cargo_fuzz() {
  (cd "$fuzz_dir" && PATH="$install_root/bin:$PATH" cargo "+$toolchain" fuzz "$@")
}

check_toolchain() {
  command -v rustup >/dev/null || die "rustup not found: the fuzz build needs a nightly toolchain"
  rustup run "$toolchain" rustc --version >/dev/null 2>&1 ||
    die "the Rust toolchain '$toolchain' is not installed (rustup toolchain list; set FUZZ_TOOLCHAIN)"
}

list_targets() {
  cargo_fuzz list
}

build() {
  install
  check_toolchain
  local started=$SECONDS
  log "building the fuzz targets with $toolchain into $build_dir"
  cargo_fuzz build "${build_flags[@]}" >&2 || die "cargo fuzz build failed"
  log "built in $((SECONDS - started)) s"
}

# Runs one target; prints its summary line; returns non-zero when it crashed.
run_target() {
  local target="$1"
  local corpus="$work_dir/corpus/$target"
  local artifacts="$work_dir/artifacts/$target"
  local seeds="$fuzz_dir/seeds/$target"
  local log_file="$work_dir/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log_file")"
  local inputs=("$corpus")
  if [[ -d "$seeds" ]]; then
    inputs+=("$seeds")
  fi
  log "running $target for $seconds s (log: $log_file)"
  local started=$SECONDS status=0
  # Inputs written from here on are this run's; older ones are earlier runs' findings.
  local marker="$work_dir/logs/$target.started"
  touch "$marker"
  # -max_total_time bounds the run; a hung input is caught by -timeout (libFuzzer reports it as
  # a crash); -rss_limit_mb catches runaway memory. The first corpus directory receives new
  # inputs, the seeds are only read.
 cargo_fuzz run "${build_flags[@]}" "$target" "${inputs[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" \
    >"$log_file" 2>&1 || status=$?
  local executions elapsed
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log_file" | tail -n 1)
  # libFuzzer's own count of seconds ("Done N runs in S second(s)"), without cargo's build.
  elapsed=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log_file" | tail -n 1)
  executions=${executions:-0}
  elapsed=${elapsed:-$((SECONDS - started))}
  if [[ $status -ne 0 ]]; then
    echo "fuzz $target: CRASHED after $executions executions in $elapsed s (exit $status)"
    grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY:|artifact_prefix|Test unit written to)|panicked at' "$log_file" | head -n 20 || true
    local artifact
    while IFS= read -r artifact; do
      echo "fuzz $target: crashing input: $artifact"
    done < <(find "$artifacts" -type f -newer "$marker")
    echo "fuzz $target: full log: $log_file"
    return 1
  fi
  echo "fuzz $target: ok, $executions executions in $elapsed s, no crash"
}

run() {
  build
  local targets
  if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
  else
    mapfile -t targets < <(list_targets)
  fi
  [[ ${#targets[@]} -gt 0 ]] || die "no fuzz targets found in $fuzz_dir"
  local failed=() target
  for target in "${targets[@]}"; do
    run_target "$target" || failed+=("$target")
  done
  if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: FAILED: ${failed[*]} crashed (crashing inputs under $work_dir/artifacts)"
    return 1
  fi
  echo "fuzz: all ${#targets[@]} targets ran $seconds s each without a crash"
}

case "${1:-run}" in
  install)
    install
    echo "CARGO_FUZZ=$cargo_fuzz_bin"
    ;;
  build)
    build
    ;;
  list)
    install
    list_targets
    ;;
  run)
    run
    ;;
  *)
    die "usage: hack/fuzz.sh [run|install|build|list]"
    ;;
esac
