# shellcheck shell=bash
# What every hack/ script shares: progress on stderr prefixed with the script's name, a fatal
# error, millisecond timing, and `usage` printing the script's header comment. Sourced right
# after `set -euo pipefail`.

log() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

die() {
  log "error: $*"
  exit 1
}

now_ms() {
  local t
  t=$(date +%s%N)
  echo $((t / 1000000))
}

# Seconds since a now_ms reading, with one decimal.
since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# The header comment of the script that was run (from line 2 to `set -euo`), then exit $1 (2).
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}
