# shellcheck shell=bash
# What every hack/ script shares: progress on stderr prefixed with the script's name, a fatal
# error, millisecond timing, `usage` printing the script's header comment, and `launch` for
# long-running components. Sourced right after `set -euo pipefail`.

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

# launch NAME PID_FILE LOG_FILE COMMAND...: start COMMAND detached from this script (setsid, so
# it outlives the caller's process group), appending to LOG_FILE; the inner shell writes its own
# pid and execs, so PID_FILE names the component itself. Fds 8 and 9 (the scripts' locks) are
# closed: a component inheriting them would hold them.
launch() {
  local name=$1 pidf=$2 logf=$3
  shift 3
  rm -f "$pidf"
  printf '\n===== %s: starting %s =====\n' "$(date -u +%FT%TZ)" "$name" >>"$logf"
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' "$name" "$pidf" "$@" \
    >>"$logf" 2>&1 </dev/null 8>&- 9>&- &
  local i
  for ((i = 0; i < 50; i++)); do
    [[ -s $pidf ]] && return 0
    sleep 0.1
  done
  die "$name did not start"
}
