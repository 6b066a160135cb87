#!/usr/bin/env bash
# A local Kubernetes control plane for MetricStream's operator tests: etcd, kube-apiserver and
# kube-controller-manager on 127.0.0.1, with generated certificates. No kubelet and no scheduler
# run, so Pods stay Pending: tests assert what the API shows and never wait on pod availability.
# The binaries (and kubectl) are built from the Go module proxy, once, through the wrapper module
# in hack/envtest/ (go.mod pins Kubernetes and etcd and maps Kubernetes' staging modules).
#
#   hack/envtest.sh up [--env-file PATH]
#                             build the binaries (first run only), start the control plane, wait
#                             until it is ready; the last two stdout lines are
#                             KUBECONFIG=<path> and K8S_BIN=<directory holding kubectl>.
#                             When it already runs and is healthy, only prints those lines.
#                             With --env-file, also writes them to PATH (atomically).
#   hack/envtest.sh down      stop everything (SIGTERM, then SIGKILL) and delete the state dir
#                             (idempotent)
#   hack/envtest.sh status    exit 0 if every component runs and is healthy (then also prints the
#                             two lines), 1 if one runs but is not ready, 3 if one is not running
#   hack/envtest.sh build     only build (or find) the cached binaries; prints K8S_BIN=<dir>
#   hack/envtest.sh smoke     `up`, then hack/envtest/smoke.sh against it (it stays up)
#   hack/envtest.sh kubectl ARGS...   the cached kubectl with this control plane's kubeconfig
#   hack/envtest.sh pin       regenerate hack/envtest/go.mod and go.sum from the pins below
#                             (after changing K8S_VERSION / ETCD_VERSION)
#
# Environment:
#   METRICSTREAM_ENVTEST_STATE  state dir (certs, kubeconfigs, etcd data, logs, pid files);
#                               default <repo>/.envtest
#   ENVTEST_APISERVER_PORT      kube-apiserver HTTPS port (default 16443)
#   ENVTEST_ETCD_PORT           etcd client port (default 23790)
#   ENVTEST_ETCD_PEER_PORT      etcd peer port (default 23800)
#   ENVTEST_KCM_PORT            kube-controller-manager HTTPS (health) port (default 10257)
#                               A port left at its default that is taken is replaced by a free
#                               one nearby; a port set explicitly must be free.
#   ENVTEST_CRDS                CRD files or directories (colon-separated) that `up` applies
#                               (server-side) and waits for; when it starts the control plane,
#                               before kube-controller-manager, whose garbage collector otherwise
#                               learns of a CRD created later only at its next rediscovery
#                               (every 30 s): until then children of such custom resources are
#                               not collected. Example (Strimzi's, from hack/strimzi-crds.sh):
#                               ENVTEST_CRDS=$HOME/.cache/metricstream/strimzi-crds-1.2.0
#   ENVTEST_KCM_CONTROLLERS     kube-controller-manager --controllers (default: see KCM_CONTROLLERS)
#   ENVTEST_APISERVER_HOST      an address of this machine that pods can reach (hack/cluster.sh:
#                               its bridge's gateway). When set, kube-apiserver listens there (not
#                               on 127.0.0.1, and the kubeconfig names it), writes the `kubernetes`
#                               Service's endpoints (lease reconciler) and admits ServiceAccount
#                               tokens: pods then run and talk to it. Default: 127.0.0.1, no pods.
#   ENVTEST_APISERVER_ARGS, ENVTEST_KCM_ARGS, ENVTEST_ETCD_ARGS   extra flags, space-separated
#   ENVTEST_READY_TIMEOUT       seconds `up` waits for the control plane (default 120)
#   ENVTEST_STOP_TIMEOUT        seconds between SIGTERM and SIGKILL in `down` (default 15)
#   XDG_CACHE_HOME              binaries go to ${XDG_CACHE_HOME:-$HOME/.cache}/metricstream/
#                               k8s-<version>/bin, Go's module and build caches to .../metricstream/go
# Needs: go (1.24+, for the first build only), openssl, setsid and flock (util-linux), coreutils.
# Progress goes to stderr; stdout carries only results.
#
# Costs (measured on 2 cores): the first build ~1330 s of CPU (19-38 min wall on a machine shared
# with other builds; ~100 MB of module downloads; 270 MB of binaries; Go caches ~3.6 GB under
# .../metricstream/go, which may be deleted once built); `up` from a warm cache ~8-10 s, when
# already running <1 s; `down` ~1.5 s; ~480 MB RSS while running (apiserver ~340, kcm ~90,
# etcd ~45).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---- pinned versions ---------------------------------------------------------------------------
# Kubernetes 1.34.4 pins etcd's client at 3.6.4 (its go.mod): the etcd server is that same
# release, so one module (and one `go build`) serves all seven binaries without bumping any
# dependency of Kubernetes. Change both, then run `hack/envtest.sh pin`.
K8S_VERSION=1.34.4
ETCD_VERSION=3.6.4
WRAPPER_MODULE=local.metricstream/envtest
GO_PACKAGES=(
  go.etcd.io/etcd/server/v3 # builds as "server", renamed to etcd
  k8s.io/kubernetes/cmd/kube-apiserver
  k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kubectl
  # The node of hack/cluster.sh: built in the same `go build`, so the packages they share with
  # the control plane compile once (~8 CPU-min more).
  k8s.io/kubernetes/cmd/kube-scheduler
  k8s.io/kubernetes/cmd/kubelet
  k8s.io/kubernetes/cmd/kube-proxy
)
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl kube-scheduler kubelet kube-proxy)

# garbage-collector: ownerReferences; namespace: namespace deletion finishes; deployment and
# replicaset: Deployments get ReplicaSets, Pods and status conditions (Available=False here);
# statefulset: a spilling stream's ingest StatefulSet gets its Pods and its volume claims;
# the *-protection controllers release the finalizers of deleted PVCs/PVs; serviceaccount and
# clusterrole-aggregation: the default ServiceAccount and the aggregated admin/edit/view roles.
KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,statefulset-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,serviceaccount-controller,clusterrole-aggregation-controller

# ---- layout ------------------------------------------------------------------------------------
HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")
SUPPORT_DIR=$HACK_DIR/envtest

CACHE_ROOT=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/metricstream
CACHE_DIR=$CACHE_ROOT/k8s-$K8S_VERSION
BIN_DIR=$CACHE_DIR/bin
GO_CACHE_ROOT=$CACHE_ROOT/go

STATE_DIR=${METRICSTREAM_ENVTEST_STATE:-$REPO_DIR/.envtest}
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
PKI_DIR=$STATE_DIR/pki
ETCD_DATA=$STATE_DIR/etcd-data
PORTS_FILE=$STATE_DIR/ports
KUBECONFIG_FILE=$STATE_DIR/kubeconfig
KCM_KUBECONFIG=$STATE_DIR/kube-controller-manager.kubeconfig
MARKER_FILE=$STATE_DIR/.metricstream-envtest

HOST=127.0.0.1
APISERVER_HOST=${ENVTEST_APISERVER_HOST:-$HOST}
READY_TIMEOUT=${ENVTEST_READY_TIMEOUT:-120}
STOP_TIMEOUT=${ENVTEST_STOP_TIMEOUT:-15}
COMPONENTS=(etcd kube-apiserver kube-controller-manager)

# ---- building the binaries ---------------------------------------------------------------------

# -s -w: no symbol tables or DWARF (smaller binaries, less link time); version stamps so
# /version and `kubectl version` tell the truth (otherwise v0.0.0-master+$Format:%H$).
build_ldflags() {
  local minor=${K8S_VERSION#*.}
  minor=${minor%%.*}
  local ldflags="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
  done
  echo "$ldflags"
}
# The tags upstream builds its release binaries with (hack/lib/golang.sh).
BUILD_TAGS=selinux,notest

# What the cached binaries were built from; a change of pins, module files or flags rebuilds.
cache_stamp() {
  local sums
  sums=$(cat "$SUPPORT_DIR/go.mod" "$SUPPORT_DIR/go.sum" | sha256sum)
  echo "k8s=$K8S_VERSION etcd=$ETCD_VERSION mod=${sums:0:16} tags=$BUILD_TAGS ldflags=$(build_ldflags)"
}

cache_ok() {
  [[ -f $CACHE_DIR/stamp && $(<"$CACHE_DIR/stamp") == "$1" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x $BIN_DIR/$b ]] || return 1; done
}

# The Go environment of every go command here: module and build caches of our own (so the cache
# dir is self-contained and `rm -rf` of it starts over), static binaries, no workspace.
GO_ENV=(env GOMODCACHE="$GO_CACHE_ROOT/mod" GOCACHE="$GO_CACHE_ROOT/build"
  GOFLAGS="-modcacherw -mod=readonly" GOWORK=off CGO_ENABLED=0 GO111MODULE=on)

check_go_module_pins() {
  if ! grep -Eq "^[[:space:]]*k8s.io/kubernetes v$K8S_VERSION\$" "$SUPPORT_DIR/go.mod" ||
    ! grep -Eq "^[[:space:]]*go.etcd.io/etcd/server/v3 v$ETCD_VERSION\$" "$SUPPORT_DIR/go.mod"; then
    die "hack/envtest/go.mod does not pin Kubernetes $K8S_VERSION and etcd $ETCD_VERSION; run: hack/envtest.sh pin"
  fi
}

BUILD_TMP=
BUILD_PID=
cleanup_build() {
  if [[ -n $BUILD_PID ]]; then kill -TERM -- "-$BUILD_PID" 2>/dev/null || kill -TERM "$BUILD_PID" 2>/dev/null || true; fi
  if [[ -n $BUILD_TMP ]]; then rm -rf "$BUILD_TMP"; fi
}

# Run a long command (in its own process group, output to a log) and report progress every
# minute, so a CI log does not look hung. Fails with the log's tail.
run_logged() {
  local what=$1 logfile=$2 t0
  shift 2
  t0=$(now_ms)
  setsid -w "$@" >"$logfile" 2>&1 </dev/null 8>&- &
  BUILD_PID=$!
  local n=0
  while kill -0 "$BUILD_PID" 2>/dev/null; do
    sleep 1
    n=$((n + 1))
    if ((n % 60 == 0)); then log "  ... still $what ($(since "$t0") s)"; fi
  done
  if ! wait "$BUILD_PID"; then
    BUILD_PID=
    tail -n 40 "$logfile" >&2 || true
    die "$what failed (log above; full log: $logfile)"
  fi
  BUILD_PID=
  log "$what: done in $(since "$t0") s"
}

# Build into a temp dir next to the cache, then rename it into place: a k8s-<version> dir exists
# only when complete. A lock keeps concurrent callers from building twice.
ensure_bins() {
  local stamp
  stamp=$(cache_stamp)
  cache_ok "$stamp" && return 0

  command -v go >/dev/null || die "go (1.24+) is needed to build the control plane binaries once"
  check_go_module_pins
  take_lock 8 "$CACHE_ROOT/.k8s-$K8S_VERSION.lock"
  if cache_ok "$stamp"; then
    release_lock 8
    return 0
  fi
  # Holding the lock, any temp dir left here is from an interrupted build.
  rm -rf "$CACHE_ROOT/.k8s-$K8S_VERSION.tmp."*

  BUILD_TMP=$(mktemp -d "$CACHE_ROOT/.k8s-$K8S_VERSION.tmp.XXXXXX")
  trap cleanup_build EXIT
  trap 'exit 130' INT TERM
  chmod 755 "$BUILD_TMP"
  mkdir -p "$BUILD_TMP/src" "$BUILD_TMP/bin"
  cp "$SUPPORT_DIR/go.mod" "$SUPPORT_DIR/go.sum" "$BUILD_TMP/src/"
  local t0
  t0=$(now_ms)
  log "building Kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kubectl, kube-scheduler, kubelet, kube-proxy) and etcd $ETCD_VERSION"
  log "  into $CACHE_DIR (first run only: ~22 min of CPU, ~100 MB of modules; $(go env GOVERSION))"
  # Resolve and download only the modules these packages need (not `go mod download`: that
  # fetches every module in the graph, 800+ MB).
  run_logged "downloading modules" "$BUILD_TMP/download.log" \
    "${GO_ENV[@]}" go -C "$BUILD_TMP/src" list -deps -tags="$BUILD_TAGS" "${GO_PACKAGES[@]}"
  # One `go build` for all seven: packages they share are compiled once.
  run_logged "compiling" "$BUILD_TMP/build.log" \
    "${GO_ENV[@]}" go -C "$BUILD_TMP/src" build -trimpath -tags="$BUILD_TAGS" -ldflags="$(build_ldflags)" \
    -o "$BUILD_TMP/bin/" "${GO_PACKAGES[@]}"
  mv "$BUILD_TMP/bin/server" "$BUILD_TMP/bin/etcd"
  "$BUILD_TMP/bin/kubectl" version --client >/dev/null || die "the built kubectl does not run"
  "$BUILD_TMP/bin/etcd" --version >/dev/null || die "the built etcd does not run"
  rm -f "$BUILD_TMP/download.log"
  echo "$stamp" >"$BUILD_TMP/stamp"
  if [[ -e $CACHE_DIR ]]; then # built from other pins: move it aside, then delete it
    local old="$CACHE_ROOT/.k8s-$K8S_VERSION.tmp.old.$$"
    mv -T "$CACHE_DIR" "$old"
    rm -rf "$old"
  fi
  mv -T "$BUILD_TMP" "$CACHE_DIR"
  BUILD_TMP=
  trap - EXIT
  release_lock 8
  log "built in $(since "$t0") s: $(du -sh "$BIN_DIR" | cut -f1) of binaries in $BIN_DIR"
}

# Regenerate hack/envtest/go.mod and go.sum: require k8s.io/kubernetes and etcd's server at the
# pins and map every staging module Kubernetes replaces with ./staging/... to its published
# v0.<minor>.<patch> (a dependency's replace directives are ignored, so its v0.0.0 requirements
# would not resolve otherwise; that is also why `go install k8s.io/kubernetes/cmd/...@v` fails).
cmd_pin() {
  command -v go >/dev/null || die "go is needed"
  local tmp gomod godir godebug staging=() m
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  "${GO_ENV[@]}" go -C "$tmp" mod init "$WRAPPER_MODULE" 2>/dev/null
  gomod=$("${GO_ENV[@]}" go -C "$tmp" mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@v$K8S_VERSION's go.mod"
  godir=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
  godebug=$(sed -n 's/^godebug default=\(.*\)$/\1/p' "$gomod")
  mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod")
  ((${#staging[@]} > 10)) || die "found no staging modules in $gomod"
  local -a edits=(-go="$godir" -require="k8s.io/kubernetes@v$K8S_VERSION" -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION")
  [[ -z $godebug ]] || edits+=(-godebug="default=$godebug")
  for m in "${staging[@]}"; do edits+=(-replace="$m=$m@v0.${K8S_VERSION#*.}"); done
  "${GO_ENV[@]}" go -C "$tmp" mod edit "${edits[@]}"
  # Requirements and checksums for exactly what the build needs (`go mod tidy` would also pull
  # in every test dependency: 800+ MB).
  # (A bare `go get PKG` means PKG@upgrade: name the pinned versions.)
  local -a pinned=()
  for m in "${GO_PACKAGES[@]}"; do
    if [[ $m == go.etcd.io/* ]]; then pinned+=("$m@v$ETCD_VERSION"); else pinned+=("$m@v$K8S_VERSION"); fi
  done
  env GOFLAGS=-modcacherw GOMODCACHE="$GO_CACHE_ROOT/mod" GOCACHE="$GO_CACHE_ROOT/build" GOWORK=off \
    go -C "$tmp" get "${pinned[@]}" >&2
  # Kubernetes is tested with the versions its go.mod names; say which ones etcd's server bumps.
  local bumps
  bumps=$("${GO_ENV[@]}" go -C "$tmp" list -m -f '{{.Path}} {{.Version}}' all | awk '
    NR == FNR { if ($1 ~ /^[a-z0-9.-]+\.[a-z]+\// && $2 ~ /^v/) want[$1] = $2; next }
    ($1 in want) && want[$1] != $2 && want[$1] != "v0.0.0" { print $1 " " want[$1] " -> " $2 }' "$gomod" -)
  { echo "// Generated by \`hack/envtest.sh pin\` from its K8S_VERSION and ETCD_VERSION: do not edit."
    echo "// The wrapper module that builds etcd, kube-apiserver, kube-controller-manager and kubectl."
    cat "$tmp/go.mod"; } >"$SUPPORT_DIR/go.mod"
  cp "$tmp/go.sum" "$SUPPORT_DIR/go.sum"
  log "wrote hack/envtest/go.mod (go $godir, ${#staging[@]} staging modules at v0.${K8S_VERSION#*.}) and go.sum"
  if [[ -n $bumps ]]; then
    log "versions that differ from Kubernetes $K8S_VERSION's own go.mod:"
    printf '  %s\n' "$bumps" >&2
  else
    log "every dependency is at the version Kubernetes $K8S_VERSION's go.mod names"
  fi
}

# ---- processes ---------------------------------------------------------------------------------

pid_file() { echo "$STATE_DIR/$1.pid"; }
log_file() { echo "$STATE_DIR/$1.log"; }

# The pid of this state dir's component $1 if it is alive (a zombie or a reused pid does not count).
component_pid() {
  read_pid_file "$(pid_file "$1")" && [[ $CMDLINE == *"/$1 "*"$STATE_DIR/"* ]] && echo "$PID"
}

# Processes of this state dir whose pid files are gone (say, the dir was deleted by hand):
# the binary from our cache with our state dir in its arguments.
stray_pids() {
  local d b
  for d in /proc/[0-9]*; do
    proc_cmdline "${d#/proc/}" || continue
    for b in "${COMPONENTS[@]}"; do
      if [[ $CMDLINE == "$BIN_DIR/$b "*"$STATE_DIR/"* ]]; then
        echo "${d#/proc/}"
        break
      fi
    done
  done
}

# SIGTERM every running component, wait, SIGKILL what is left after STOP_TIMEOUT seconds.
stop_all() {
  local -a pids=()
  local c pid
  for c in "${COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then pids+=("$pid"); fi
  done
  while read -r pid; do [[ -z $pid ]] || pids+=("$pid"); done < <(stray_pids)
  if ((${#pids[@]} > 0)); then
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | sort -u)
    log "stopping pids ${pids[*]} (SIGTERM)"
    stop_pids "$STOP_TIMEOUT" "${pids[@]}" || die "the control plane's processes survive SIGKILL"
  fi
  for c in "${COMPONENTS[@]}"; do rm -f "$(pid_file "$c")"; done
}

show_log_tails() {
  local c
  for c in "${COMPONENTS[@]}"; do
    [[ -s $(log_file "$c") ]] || continue
    printf '\n----- last lines of %s -----\n' "$(log_file "$c")" >&2
    tail -n 25 "$(log_file "$c")" >&2
  done
}

# ---- ports -------------------------------------------------------------------------------------

APISERVER_PORT='' ETCD_PORT='' ETCD_PEER_PORT='' KCM_PORT=''
load_ports() {
  [[ -f $PORTS_FILE ]] || return 1
  local k v
  while IFS='=' read -r k v; do
    case $k in
      APISERVER_PORT) APISERVER_PORT=$v ;;
      ETCD_PORT) ETCD_PORT=$v ;;
      ETCD_PEER_PORT) ETCD_PEER_PORT=$v ;;
      KCM_PORT) KCM_PORT=$v ;;
    esac
  done <"$PORTS_FILE"
  [[ -n $APISERVER_PORT && -n $ETCD_PORT && -n $ETCD_PEER_PORT && -n $KCM_PORT ]]
}

# A port left at its default that is taken (on 127.0.0.1 or the API server's address) is
# replaced by a free one nearby; one set explicitly must be free (lib.sh's pick_port).
choose_ports() {
  local hosts=("$HOST")
  [[ $APISERVER_HOST == "$HOST" ]] || hosts+=("$APISERVER_HOST")
  APISERVER_PORT=$(pick_port ENVTEST_APISERVER_PORT 16443 "${hosts[@]}")
  PICKED+="$APISERVER_PORT "
  ETCD_PORT=$(pick_port ENVTEST_ETCD_PORT 23790 "${hosts[@]}")
  PICKED+="$ETCD_PORT "
  ETCD_PEER_PORT=$(pick_port ENVTEST_ETCD_PEER_PORT 23800 "${hosts[@]}")
  PICKED+="$ETCD_PEER_PORT "
  KCM_PORT=$(pick_port ENVTEST_KCM_PORT 10257 "${hosts[@]}")
  printf 'APISERVER_PORT=%s\nETCD_PORT=%s\nETCD_PEER_PORT=%s\nKCM_PORT=%s\n' \
    "$APISERVER_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT" "$KCM_PORT" >"$PORTS_FILE"
}

# ---- certificates and kubeconfigs --------------------------------------------------------------

# ECDSA P-256 keys in PKCS#8 ("BEGIN PRIVATE KEY"): fast to make, read by client-go, kubectl and
# kube-rs (rustls and openssl); a one-year validity is ample for a throw-away state dir.
new_key_csr() { # name subject
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI_DIR/$1.key" -out "$PKI_DIR/$1.csr" -subj "$2" 2>/dev/null
}
sign() { # name extensions
  openssl x509 -req -in "$PKI_DIR/$1.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -CAcreateserial -days 365 -sha256 -out "$PKI_DIR/$1.crt" -extfile <(printf '%b' "$2") 2>/dev/null
  rm -f "$PKI_DIR/$1.csr"
}

gen_certs() {
  command -v openssl >/dev/null || die "openssl is needed to make the control plane's certificates"
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 -days 365 \
    -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" -subj "/CN=metricstream-envtest-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null || die "openssl could not make the CA"
  local leaf='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n'
  # The serving cert: 127.0.0.1/localhost, plus the in-cluster names and the `kubernetes`
  # Service's first IP of --service-cluster-ip-range.
  new_key_csr apiserver "/CN=kube-apiserver"
  sign apiserver "${leaf}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:$APISERVER_HOST,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1"
  # Client certs: CN is the user, O the group; system:masters bypasses RBAC.
  new_key_csr admin "/O=system:masters/CN=metricstream-envtest-admin"
  sign admin "${leaf}extendedKeyUsage=clientAuth"
  new_key_csr kube-controller-manager "/O=system:masters/CN=system:kube-controller-manager"
  sign kube-controller-manager "${leaf}extendedKeyUsage=clientAuth"
  # kube-controller-manager's own serving cert, so its /healthz can be checked with our CA.
  new_key_csr kube-controller-manager-serving "/CN=kube-controller-manager"
  sign kube-controller-manager-serving "${leaf}extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
  # Service-account token signing key pair (ES256 tokens; an RSA key takes a second or more).
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI_DIR/sa.key" 2>/dev/null
  openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  rm -f "$PKI_DIR/ca.srl"
  for f in "$PKI_DIR"/*.crt "$PKI_DIR"/sa.pub; do [[ -s $f ]] || die "openssl did not write $f"; done
}

# A kubeconfig with the certificates embedded (no file references: usable by kube-rs, kubectl,
# client-go, from any working directory).
write_kubeconfig() { # file user-cert-name
  local tmp="$1.tmp"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: metricstream-envtest
  cluster:
    server: https://$APISERVER_HOST:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI_DIR/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 <"$PKI_DIR/$2.crt")
    client-key-data: $(base64 -w0 <"$PKI_DIR/$2.key")
contexts:
- name: metricstream-envtest
  context:
    cluster: metricstream-envtest
    user: $2
    namespace: default
current-context: metricstream-envtest
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$1"
}

# ---- health ------------------------------------------------------------------------------------

# etcd's /readyz over plain HTTP on the client port (no curl needed).
etcd_ready() { [[ $(http_status "$HOST" "$ETCD_PORT" /readyz) == 200 ]]; }

apiserver_ready() {
  "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=3s get --raw /readyz >/dev/null 2>&1 </dev/null
}

# kube-controller-manager's /healthz (always allowed, even anonymously) reports each controller.
kcm_ready() {
  "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --server="https://$HOST:$KCM_PORT" \
    --request-timeout=3s get --raw /healthz >/dev/null 2>&1 </dev/null
}

component_ready() {
  case $1 in
    etcd) etcd_ready ;;
    kube-apiserver) apiserver_ready ;;
    kube-controller-manager) kcm_ready ;;
  esac
}

healthy() {
  load_ports || return 1
  [[ -f $KUBECONFIG_FILE ]] || return 1
  local c
  for c in "${COMPONENTS[@]}"; do component_pid "$c" >/dev/null || return 1; done
  for c in "${COMPONENTS[@]}"; do component_ready "$c" || return 1; done
}

# Component $1 is ready; stops everything and dies if it has exited.
started_and_ready() {
  component_ready "$1" && return 0
  if ! component_pid "$1" >/dev/null; then
    show_log_tails
    stop_all
    die "$1 exited during startup (logs above; all logs in $STATE_DIR)"
  fi
  return 1
}

# Wait for component $1 to be ready before the overall deadline $2 (ms).
wait_ready() {
  local c=$1 deadline=$2 t0
  t0=$(now_ms)
  if ! wait_until_ms "$deadline" started_and_ready "$c"; then
    show_log_tails
    stop_all
    die "the control plane was not ready within ${READY_TIMEOUT}s ($c not ready; logs above; all logs in $STATE_DIR)"
  fi
  log "  $c ready ($(since "$t0") s)"
}

# ---- the control plane -------------------------------------------------------------------------

start_all() {
  local deadline=$(($(now_ms) + READY_TIMEOUT * 1000))
  local -a extra

  read -r -a extra <<<"${ENVTEST_ETCD_ARGS:-}"
  mkdir -p "$ETCD_DATA"
  chmod 700 "$ETCD_DATA"
  launch etcd "$(pid_file etcd)" "$(log_file etcd)" "$BIN_DIR/etcd" \
    --name=envtest --data-dir="$ETCD_DATA" \
    --listen-client-urls="http://$HOST:$ETCD_PORT" --advertise-client-urls="http://$HOST:$ETCD_PORT" \
    --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster="envtest=http://$HOST:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --log-level=warn "${extra[@]}"
  wait_ready etcd "$deadline"

  # --advertise-address: without it kube-apiserver looks for the default route's interface and
  # exits where there is none (an offline machine); a loopback address is accepted only with
  # --endpoint-reconciler-type=none (nothing writes the `kubernetes` Endpoints: nothing needs
  # them without pods). ServiceAccount admission off: Pods need no token Secrets/ServiceAccounts.
  # With pods (ENVTEST_APISERVER_HOST), both are on: in-cluster clients find the API through the
  # `kubernetes` Service and authenticate with their ServiceAccount's token.
  local -a pod_mode=(--endpoint-reconciler-type=none --disable-admission-plugins=ServiceAccount)
  if [[ $APISERVER_HOST != "$HOST" ]]; then pod_mode=(--endpoint-reconciler-type=lease); fi
  read -r -a extra <<<"${ENVTEST_APISERVER_ARGS:-}"
  launch kube-apiserver "$(pid_file kube-apiserver)" "$(log_file kube-apiserver)" \
    "$BIN_DIR/kube-apiserver" \
    --etcd-servers="http://$HOST:$ETCD_PORT" \
    --bind-address="$APISERVER_HOST" --secure-port="$APISERVER_PORT" \
    --advertise-address="$APISERVER_HOST" "${pod_mode[@]}" \
    --tls-cert-file="$PKI_DIR/apiserver.crt" --tls-private-key-file="$PKI_DIR/apiserver.key" \
    --client-ca-file="$PKI_DIR/ca.crt" \
    --authorization-mode=RBAC \
    --service-account-issuer="https://$APISERVER_HOST:$APISERVER_PORT" \
    --service-account-key-file="$PKI_DIR/sa.pub" --service-account-signing-key-file="$PKI_DIR/sa.key" \
    --service-cluster-ip-range=10.0.0.0/16 \
    --allow-privileged=true \
    --profiling=false "${extra[@]}"
  wait_ready kube-apiserver "$deadline"
  if ! apply_crds; then
    stop_all
    die "ENVTEST_CRDS could not be installed (all logs in $STATE_DIR)"
  fi

  # No leader election: with it, losing the lease makes kube-controller-manager exit.
  read -r -a extra <<<"${ENVTEST_KCM_ARGS:-}"
  launch kube-controller-manager "$(pid_file kube-controller-manager)" \
    "$(log_file kube-controller-manager)" "$BIN_DIR/kube-controller-manager" \
    --kubeconfig="$KCM_KUBECONFIG" \
    --controllers="${ENVTEST_KCM_CONTROLLERS:-$KCM_CONTROLLERS}" \
    --leader-elect=false \
    --bind-address="$HOST" --secure-port="$KCM_PORT" \
    --tls-cert-file="$PKI_DIR/kube-controller-manager-serving.crt" \
    --tls-private-key-file="$PKI_DIR/kube-controller-manager-serving.key" \
    --root-ca-file="$PKI_DIR/ca.crt" \
    --profiling=false "${extra[@]}"
  wait_ready kube-controller-manager "$deadline"
}

# Apply ENVTEST_CRDS server-side (client-side apply cannot take CRDs as big as Strimzi's: the
# last-applied annotation would exceed 256 KiB) and wait until they are established.
apply_crds() {
  [[ -n ${ENVTEST_CRDS:-} ]] || return 0
  local -a paths args=() crds
  local p out
  IFS=: read -r -a paths <<<"$ENVTEST_CRDS"
  for p in "${paths[@]}"; do
    [[ -e $p ]] || { log "ENVTEST_CRDS: $p does not exist"; return 1; }
    args+=(-f "$p")
  done
  local k=("$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=60s)
  if ! out=$("${k[@]}" apply --server-side --force-conflicts --field-manager=metricstream-envtest \
      "${args[@]}" -o name 2>&1 </dev/null); then
    printf '%s\n' "$out" >&2
    log "applying ENVTEST_CRDS ($ENVTEST_CRDS) failed"
    return 1
  fi
  mapfile -t crds < <(grep '^customresourcedefinition' <<<"$out" || true)
  # `kubectl wait` fails at once (rather than waiting) on a CRD that has no status yet.
  if ((${#crds[@]} > 0)) && ! wait_until 60 crds_established "${crds[@]}"; then
    log "the CRDs of ENVTEST_CRDS did not become established within 60 s"
    return 1
  fi
  log "  applied ${#crds[@]} CRD(s) from ENVTEST_CRDS"
}

crds_established() {
  "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=60s \
    wait --for=condition=Established --timeout=10s "$@" >/dev/null 2>&1 </dev/null
}

lock_state() { take_lock 9 "$STATE_DIR/.lock"; }

# A state dir we may delete: ours (marked) or nonexistent/empty.
check_state_dir() {
  [[ -n $STATE_DIR && $STATE_DIR != / && $STATE_DIR != "$REPO_DIR" && $STATE_DIR != "${HOME:-}" ]] ||
    die "refusing state dir '$STATE_DIR'"
  if [[ -d $STATE_DIR && ! -f $MARKER_FILE ]] && [[ -n $(ls -A "$STATE_DIR") ]]; then
    die "$STATE_DIR exists and was not made by hack/envtest.sh; choose another METRICSTREAM_ENVTEST_STATE"
  fi
}

# On stdout, and in ENV_FILE with --env-file.
print_env() { emit "KUBECONFIG=$KUBECONFIG_FILE" "K8S_BIN=$BIN_DIR"; }

# ---- commands ----------------------------------------------------------------------------------

cmd_up() {
  check_state_dir
  local t0 p crd_paths
  t0=$(now_ms)
  if [[ -n ${ENVTEST_CRDS:-} ]]; then
    IFS=: read -r -a crd_paths <<<"$ENVTEST_CRDS"
    for p in "${crd_paths[@]}"; do [[ -e $p ]] || die "ENVTEST_CRDS: $p does not exist"; done
  fi
  ensure_bins
  if healthy; then
    apply_crds || die "ENVTEST_CRDS could not be installed"
    print_env
    return 0
  fi
  lock_state
  mkdir -p "$STATE_DIR" # a concurrent `down` may have removed it while we waited for the lock
  touch "$MARKER_FILE"
  if ! healthy; then # not started meanwhile by a concurrent `up`
    stop_all          # leftovers of a crashed or half-started control plane
    rm -rf "$ETCD_DATA" "$PKI_DIR" "$PORTS_FILE" "$KUBECONFIG_FILE" "$KCM_KUBECONFIG"
    choose_ports
    gen_certs
    write_kubeconfig "$KUBECONFIG_FILE" admin
    write_kubeconfig "$KCM_KUBECONFIG" kube-controller-manager
    log "starting etcd $ETCD_VERSION and Kubernetes $K8S_VERSION on $HOST (apiserver $APISERVER_HOST:$APISERVER_PORT, etcd :$ETCD_PORT, kcm :$KCM_PORT; state $STATE_DIR)"
    start_all
    log "control plane ready in $(since "$t0") s"
  fi
  release_lock 9
  print_env
}

cmd_down() {
  check_state_dir
  [[ -d $STATE_DIR ]] || return 0
  local t0
  t0=$(now_ms)
  lock_state
  stop_all
  rm -rf "$STATE_DIR"
  log "control plane stopped, $STATE_DIR removed ($(since "$t0") s)"
}

cmd_status() {
  if [[ ! -f $MARKER_FILE ]]; then
    echo "envtest: not running (no state dir $STATE_DIR)"
    return 3
  fi
  local c pid rc=0
  load_ports || true
  for c in "${COMPONENTS[@]}"; do
    if ! pid=$(component_pid "$c"); then
      echo "envtest: $c not running"
      rc=3
    elif [[ -z $APISERVER_PORT ]] || ! component_ready "$c"; then
      echo "envtest: $c running (pid $pid) but not ready"
      ((rc != 0)) || rc=1
    else
      echo "envtest: $c running (pid $pid), ready"
    fi
  done
  ((rc == 0)) || return "$rc"
  print_env
}

cmd_kubectl() {
  [[ -x $BIN_DIR/kubectl ]] || die "no kubectl in $BIN_DIR yet: run hack/envtest.sh up (or build)"
  [[ -f $KUBECONFIG_FILE ]] || die "no control plane in $STATE_DIR: run hack/envtest.sh up"
  exec "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
    up)
      env_file_option "$@"
      cmd_up
      ;;
    down) cmd_down ;;
    status) cmd_status ;;
    build)
      ensure_bins
      echo "K8S_BIN=$BIN_DIR"
      ;;
    smoke)
      local out
      out=$(cmd_up)
      printf '%s\n' "$out"
      env KUBECONFIG="$KUBECONFIG_FILE" K8S_BIN="$BIN_DIR" "$SUPPORT_DIR/smoke.sh"
      ;;
    kubectl) cmd_kubectl "$@" ;;
    pin) cmd_pin ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
