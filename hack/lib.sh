# shellcheck shell=bash
# What the hack/ scripts share, sourced right after `set -euo pipefail`:
#
#   log, die, usage          progress on stderr prefixed with the script's name, a fatal error,
#                            the script's header comment as its help
#   now_ms, since            millisecond timing
#   wait_until, wait_until_ms   poll a condition until a deadline
#   launch                   start a long-running component detached, with a pid file
#   read_pid_file, pid_alive, proc_cmdline   is the process a pid file names ours, and alive?
#   stop_pids                SIGTERM, then SIGKILL after a timeout
#   port_in_use, pick_port   TCP ports
#   http_status              a GET's status code over bash's /dev/tcp (no curl)
#   take_lock, release_lock  flock(1) on a lock file
#   cargo_target_dir         where cargo puts the binaries
#   env_file_option, emit, write_env_file   a script's KEY=value results on stdout and, with
#                            --env-file PATH, in a file written atomically
#   env_load, env_get, env_has   read such a file (the Makefile and hack/e2e.sh do)
#
# Nothing here kills a process by name: only by pid, and a pid only after checking that the
# process is the one its pid file names.

# ---- messages ----------------------------------------------------------------------------------

# The prefix of log lines (default: the script's file name; empty: none) and die's exit status.
LOG_NAME=${0##*/}
DIE_STATUS=1

log() { printf '%s%s\n' "${LOG_NAME:+$LOG_NAME: }" "$*" >&2; }

die() {
  log "error: $*"
  exit "$DIE_STATUS"
}

# The header comment of the script that was run (from line 2 to `set -euo`), then exit $1 (2).
usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[-1]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# ---- time --------------------------------------------------------------------------------------

# Milliseconds since the epoch (no fork: EPOCHREALTIME, whatever the locale's decimal point).
now_ms() {
  local t=${EPOCHREALTIME//[!0-9]/}
  echo $((10#$t / 1000))
}

# Seconds since a now_ms reading, with one decimal.
since() {
  local ms=$(($(now_ms) - $1))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# How often wait_until runs its command, in seconds.
POLL_INTERVAL=0.2

# wait_until_ms DEADLINE_MS COMMAND...: run COMMAND every POLL_INTERVAL seconds until it succeeds
# (0) or now_ms passes DEADLINE_MS (1). COMMAND runs in this shell: it may die to give up early.
wait_until_ms() {
  local deadline=$1
  shift
  until "$@"; do
    (($(now_ms) <= deadline)) || return 1
    sleep "$POLL_INTERVAL"
  done
}

# wait_until SECONDS COMMAND...: the same with a deadline SECONDS (whole) from now.
wait_until() {
  local seconds=$1
  shift
  wait_until_ms $(($(now_ms) + seconds * 1000)) "$@"
}

# ---- processes ---------------------------------------------------------------------------------

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
  POLL_INTERVAL=0.1 wait_until 5 test -s "$pidf" || die "$name did not start"
}

# CMDLINE := the command line of process $1, arguments joined by spaces (builtins only, no fork:
# a scan of every process reads each one's). Fails for a process that is gone, a zombie or a
# kernel thread.
# shellcheck disable=SC2034  # read by the callers
CMDLINE=
proc_cmdline() {
  local -a args
  CMDLINE=
  mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
  ((${#args[@]} > 0)) || return 1
  # shellcheck disable=SC2034  # read by the callers
  CMDLINE="${args[*]}"
}

# pid_alive PID: the process exists and is not a zombie. (A thread-group leader that has exited
# while other threads still run, as a JVM's does during its shutdown hooks, shows as a zombie
# too: that process is alive.)
pid_alive() {
  local stat tasks
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  stat=${stat##*) }
  [[ ${stat%% *} == Z ]] || return 0
  tasks=("/proc/$1/task/"*)
  ((${#tasks[@]} > 1))
}

# read_pid_file FILE: PID := the pid FILE holds and CMDLINE := that process's command line, if it
# is alive (not a zombie). The caller then checks CMDLINE, so that a pid reused by another
# process never counts:  read_pid_file "$f" && [[ $CMDLINE == *"$STATE_DIR"* ]] && echo "$PID"
PID=
read_pid_file() {
  PID=
  [[ -f $1 ]] || return 1
  read -r PID 2>/dev/null <"$1" || return 1
  [[ $PID =~ ^[0-9]+$ ]] || return 1
  proc_cmdline "$PID" || return 1
  pid_alive "$PID"
}

# stop_pids [--signal SIG] TIMEOUT PID...: send SIG (default TERM) and SIGCONT (a stopped process
# cannot act on SIGTERM) to every PID, wait until they have all exited, and SIGKILL those still
# alive after TIMEOUT seconds. Returns 1 if one survives SIGKILL for 10 s more (logged), else 0;
# STOP_KILLED=1 when SIGKILL was needed.
STOP_KILLED=
stop_pids() {
  local sig=TERM
  if [[ ${1:-} == --signal ]]; then
    sig=$2
    shift 2
  fi
  local timeout=$1 pid
  shift
  STOP_KILLED=
  (($# > 0)) || return 0
  kill -"$sig" "$@" 2>/dev/null || true
  kill -CONT "$@" 2>/dev/null || true
  local deadline=$(($(now_ms) + timeout * 1000)) alive
  while :; do
    alive=()
    for pid in "$@"; do
      if pid_alive "$pid"; then alive+=("$pid"); fi
    done
    ((${#alive[@]} > 0)) || return 0
    if (($(now_ms) > deadline)); then
      if [[ -n $STOP_KILLED ]]; then
        log "pids ${alive[*]} survive SIGKILL"
        return 1
      fi
      log "still running after ${timeout}s: SIGKILL ${alive[*]}"
      kill -KILL "${alive[@]}" 2>/dev/null || true
      deadline=$(($(now_ms) + 10000))
      STOP_KILLED=1
    fi
    sleep 0.1
  done
}

# ---- ports and HTTP ----------------------------------------------------------------------------

# port_in_use PORT [HOST...]: something accepts TCP connections on PORT at any HOST (default
# 127.0.0.1). Only for this machine's own addresses (no timeout: a connect answers at once).
port_in_use() {
  local port=$1 host
  shift
  for host in "${@:-127.0.0.1}"; do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
  done
  return 1
}

# pick_port VAR-NAME DEFAULT [HOST...]: the port the env var VAR-NAME names (which must be free)
# or else DEFAULT, or the next free port above it; never one already in PICKED (" p1 p2 ... ").
# Runs in a command substitution, so the caller adds each pick to PICKED.
PICKED=" "
pick_port() {
  local var=$1 default=$2 port
  shift 2
  if [[ -n ${!var:-} ]]; then
    port=${!var}
    [[ $port =~ ^[0-9]+$ ]] || die "$var=$port is not a port number"
    port_in_use "$port" "$@" && die "$var=$port: port $port (${*:-127.0.0.1}) is in use by another process"
  else
    port=$default
    while port_in_use "$port" "$@" || [[ $PICKED == *" $port "* ]]; do
      port=$((port + 1))
      ((port < default + 200)) || die "no free port in $default..$((default + 199)); set $var"
    done
    [[ $port == "$default" ]] || log "port $default is taken: using $port (set $var to choose)"
  fi
  echo "$port"
}

# http_status HOST PORT PATH: the status code of GET http://HOST:PORT/PATH (HTTP/1.0, 3 s at
# most); nothing when nothing answers.
http_status() {
  # shellcheck disable=SC2016  # the inner script expands its own arguments
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1" >&3
    read -r _ status _ <&3 && printf "%s" "$status"' probe "$@" 2>/dev/null || true
}

# ---- locks -------------------------------------------------------------------------------------

# take_lock FD FILE: open FILE (its directory made) on fd FD and wait for an exclusive flock on
# it; the lock lasts until release_lock FD or the end of the script. By convention fd 8 locks a
# cache and fd 9 a state dir (launch closes both). Without flock(1), no lock.
take_lock() {
  local fd=$1 file=$2
  [[ $fd =~ ^[0-9]$ ]] || die "take_lock: bad fd $fd"
  mkdir -p "$(dirname "$file")"
  eval "exec $fd>\"\$file\""
  if command -v flock >/dev/null; then flock "$fd"; fi
}

release_lock() {
  [[ $1 =~ ^[0-9]$ ]] || die "release_lock: bad fd $1"
  eval "exec $1>&-"
}

# ---- builds ------------------------------------------------------------------------------------

# cargo_target_dir REPO: where cargo puts its output: CARGO_TARGET_DIR (relative: to REPO, where
# the Makefile runs cargo) or REPO/target.
cargo_target_dir() {
  local dir=${CARGO_TARGET_DIR:-target}
  [[ $dir == /* ]] || dir=$1/$dir
  echo "$dir"
}

# ---- env files ---------------------------------------------------------------------------------

# A script's results are KEY=value lines on stdout (read by people and other scripts). With
# --env-file PATH a command also writes them to PATH, which the Makefile reads with env_load
# instead of parsing stdout. Values are written as they are, unquoted: read them literally
# (env_load, env_get), never with `source`.
ENV_FILE=

# env_file_option ARGS...: a command's arguments: `--env-file PATH` (or --env-file=PATH) sets
# ENV_FILE (made absolute); anything else is an error (usage).
# run_command "$@": a tool script's entry point. The first argument names the command when the
# script defines `cmd_<it>` (e.g. `cmd_install`, `cmd_version`); otherwise the command is
# `install` and every argument is an option. The options (--env-file) are read, then the command
# runs.
run_command() {
  local command=install
  if (($# > 0)) && declare -F "cmd_$1" >/dev/null; then
    command=$1
    shift
  fi
  env_file_option "$@"
  "cmd_$command"
}

env_file_option() {
  while (($# > 0)); do
    case $1 in
      --env-file)
        [[ $# -ge 2 && -n $2 ]] || die "--env-file needs a path"
        ENV_FILE=$2
        shift 2
        ;;
      --env-file=?*)
        ENV_FILE=${1#*=}
        shift
        ;;
      *)
        log "unknown argument: $1"
        usage
        ;;
    esac
  done
  [[ -z $ENV_FILE || $ENV_FILE == /* ]] || ENV_FILE=$PWD/$ENV_FILE
}

# write_env_file PATH LINE...: the lines, one each, into PATH atomically (a temp file beside it,
# renamed over it): a reader sees the old file or the whole new one, never a part.
write_env_file() {
  local path=$1 tmp
  shift
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.tmp.XXXXXX")
  if ! printf '%s\n' "$@" >"$tmp" || ! mv -f "$tmp" "$path"; then
    rm -f "$tmp"
    die "could not write $path"
  fi
}

# emit KEY=value...: print the lines on stdout and, when ENV_FILE is set, write them there too.
emit() {
  printf '%s\n' "$@"
  if [[ -n $ENV_FILE ]]; then write_env_file "$ENV_FILE" "$@"; fi
}

# env_load FILE [KEY...]: export FILE's KEY=value lines (only the KEYs named, when any are);
# nothing when FILE is missing or empty. Read literally: a value is never evaluated.
env_load() {
  local file=$1 key value keys
  shift
  keys=" $* "
  [[ -s $file ]] || return 0
  while IFS='=' read -r key value; do
    [[ $key =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    if [[ $keys == "  " || $keys == *" $key "* ]]; then export "$key=$value"; fi
  done <"$file"
}

# env_get FILE KEY: the value of KEY in FILE (the last one); fails if FILE has no KEY.
env_get() {
  local key value found=
  [[ -s $1 ]] || return 1
  while IFS='=' read -r key value; do
    if [[ $key == "$2" ]]; then found=$value; fi
  done <"$1"
  [[ -n $found ]] || return 1
  printf '%s\n' "$found"
}

# env_has FILE KEY...: FILE has a non-empty value for every KEY.
env_has() {
  local file=$1 key
  shift
  for key in "$@"; do env_get "$file" "$key" >/dev/null || return 1; done
}

# ---- cached builds -----------------------------------------------------------------------------

# stamp_ok DIR STAMP: DIR holds a finished build whose stamp is STAMP.
stamp_ok() { [[ -f $1/stamp && $(<"$1/stamp") == "$2" ]]; }

# build_cached NAME DIR STAMP FUNCTION [ARGS...]: unless DIR holds a build with this STAMP,
# FUNCTION ARGS... builds into a temp dir beside it (its last argument), which is then renamed
# into place: DIR only ever exists complete. Run it under the cache's lock. A script may remove
# the temp dirs of an interrupted build on exit (TMP_DIRS); the next build removes them anyway.
build_cached() {
  local name=$1 dir=$2 stamp=$3
  shift 3
  stamp_ok "$dir" "$stamp" && return 0
  local parent base tmp t0
  parent=$(dirname "$dir")
  base=$(basename "$dir")
  mkdir -p "$parent"
  rm -rf "$parent/.$base.tmp."* # left by an interrupted run (we hold the lock)
  tmp=$(mktemp -d "$parent/.$base.tmp.XXXXXX")
  TMP_DIRS+=("$tmp")
  chmod 755 "$tmp"
  t0=$(now_ms)
  log "$name: not cached, building into $dir"
  "$@" "$tmp"
  echo "$stamp" >"$tmp/stamp"
  if [[ -e $dir ]]; then # from other pins: move it aside, then delete it
    mv -T "$dir" "$parent/.$base.tmp.old.$$"
    rm -rf "$parent/.$base.tmp.old.$$"
  fi
  mv -T "$tmp" "$dir"
  log "$name: done in $(since "$t0") s ($(du -sh "$dir" | cut -f1) in $dir)"
}

# go_cached LOG ARGS...: `go ARGS...` niced, with the module and build caches shared by every Go
# build of ours ($GO_CACHE_ROOT) and no cgo; its output goes to LOG, shown (the tail) and kept
# only when it fails.
go_cached() {
  local log=$1
  shift
  command -v go >/dev/null || die "go (1.26+) is needed for this build (first run only)"
  if ! env GOMODCACHE="$GO_CACHE_ROOT/mod" GOCACHE="$GO_CACHE_ROOT/build" GOFLAGS="-modcacherw" \
    GOWORK=off CGO_ENABLED=0 GO111MODULE=on nice -n 10 go "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    return 1
  fi
  rm -f "$log"
}
