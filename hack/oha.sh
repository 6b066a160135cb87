#!/usr/bin/env bash
# oha (https://github.com/hatoo/oha), the HTTP load generator of `metricstream-bench http`:
# open-loop load at a fixed rate with coordinated-omission correction (-q RATE
# --latency-correction), or as fast as it can, with a JSON summary (--output-format json).
#
# Installed from crates.io with `cargo install --locked` (the crate's own Cargo.lock), pinned by
# version and cached outside the repository by version, so a second run costs nothing:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/oha-<version>/bin/oha
#
# With oha's default features (rustls): the benchmarks talk plain HTTP on loopback, but oha
# 1.16 does not compile without a TLS feature, and native-tls would need OpenSSL's headers.
#
#   hack/oha.sh [install] [--env-file PATH]
#                           install if missing and check that it runs; the last stdout line is
#                           OHA=<absolute path of the binary> (with --env-file, also written to
#                           PATH, atomically)
#   hack/oha.sh version     print the pinned version (OHA_VERSION=...)
#
# Environment:
#   XDG_CACHE_HOME  see above
#   CARGO           the cargo to build with (default: cargo on PATH; needs Rust 1.88+)
# Needs: a Rust toolchain, a C compiler and cmake (oha's bundled SQLite, rustls' aws-lc-sys),
# flock (util-linux).
# Progress goes to stderr; stdout carries only the result.
#
# Cost (measured on 2 cores shared with other builds, empty cache): a cold install compiles
# ~220 crates in about 17 minutes of wall time (~15 CPU-minutes, a third of it rustls' aws-lc-sys),
# downloading ~40 MB of crates into cargo's registry cache; a warm run takes ~0.1 s. The cache
# holds one ~20 MB binary per version.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

OHA_VERSION=1.16.0

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/metricstream"
install_root="$cache_root/oha-$OHA_VERSION"
oha_bin="$install_root/bin/oha"
cargo="${CARGO:-cargo}"

# True when the cached binary runs and reports the pinned version.
installed() {
  [[ -x "$oha_bin" ]] && "$oha_bin" --version 2>/dev/null | grep -qx "oha $OHA_VERSION"
}

install() {
  if installed; then
    log "oha $OHA_VERSION is cached in $install_root"
    return
  fi
  command -v "$cargo" >/dev/null || die "cargo not found (set CARGO or install a Rust toolchain)"
  command -v flock >/dev/null || die "flock not found (util-linux)"
  mkdir -p "$cache_root"
  # One installer at a time; whoever waited finds the binary the other one built.
  take_lock 8 "$cache_root/oha-$OHA_VERSION.lock"
  if installed; then
    log "oha $OHA_VERSION was installed meanwhile in $install_root"
    return
  fi
  # Built into a scratch root and renamed into place, so an interrupted build never leaves a
  # half-installed version that looks cached.
  local scratch="$install_root.partial.$$"
  rm -rf "$scratch"
  trap 'rm -rf "$scratch"' EXIT
  log "installing oha $OHA_VERSION from crates.io into $install_root (cold: 10-20 minutes on 2 cores)"
  local started=$SECONDS
  nice -n 10 "$cargo" install --locked oha --version "$OHA_VERSION" --root "$scratch" >&2 ||
    die "cargo install oha $OHA_VERSION failed (see cargo's output above)"
  rm -rf "$install_root"
  mv "$scratch" "$install_root"
  trap - EXIT
  installed || die "$oha_bin does not run or is not version $OHA_VERSION"
  log "installed oha $OHA_VERSION in $((SECONDS - started)) s"
}

cmd=${1:-install}
[[ $# -eq 0 ]] || shift
case "$cmd" in
  install | --env-file | --env-file=*)
    if [[ $cmd == --env-file* ]]; then set -- "$cmd" "$@"; fi
    env_file_option "$@"
    install
    emit "OHA=$oha_bin"
    ;;
  version)
    echo "OHA_VERSION=$OHA_VERSION"
    ;;
  *)
    die "usage: hack/oha.sh [install|version]"
    ;;
esac
