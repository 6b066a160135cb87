#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, with a real kubelet, for MetricStream's
# end-to-end test (`make e2e-local`, hack/e2e.sh) where there is no Docker engine for kind:
# hack/envtest.sh's control plane (etcd, kube-apiserver, kube-controller-manager) plus
# kube-scheduler, kubelet and kube-proxy (built once, in the same `go build`, into the same cache),
# and containerd, runc, the CNI plugins, iptables and conntrack from Debian's packages (installed
# when missing). Images come from hack/image.sh, imported into containerd: no registry.
#
#   hack/cluster.sh up [--env-file PATH]
#                            install what is missing, start what is not running, wait until the
#                            node is Ready and untainted and the StorageClass has volumes; prints
#                            K8S_BIN=<dir of kubectl>, CLUSTER_GATEWAY=<the bridge's address>,
#                            CONTAINERD_ADDRESS=<socket>, then, last, KUBECONFIG=<path> (with
#                            --env-file, also into PATH, atomically).
#                            Idempotent: on a running cluster it only tops up the volumes and
#                            prints the lines. One cluster per host (/run/metricstream/cluster
#                            names its state dir): refused while another one runs; one left by a
#                            killed run is taken down first.
#   hack/cluster.sh down     delete every pod (so the kubelet tears their sandboxes down), stop
#                            every process by its pid file, remove the bridge, the route, the
#                            iptables chains (ours and kube-proxy's), the kubepods cgroups and
#                            every mount under the state dir, restore ip_forward, delete the state
#                            dir (idempotent)
#   hack/cluster.sh status   exit 0 if every component runs and the node is Ready (then prints the
#                            lines `up` prints), 3 otherwise
#   hack/cluster.sh kubectl ARGS...   the cached kubectl with this cluster's kubeconfig
#   hack/cluster.sh ctr ARGS...       containerd's ctr on this cluster's containerd (namespace k8s.io)
#
# Network: pods get addresses in CLUSTER_POD_CIDR on the bridge CLUSTER_BRIDGE, whose gateway
# (the first address) is also the node's address: the API server, the kubelet and NodePorts
# listen there, never on an outside interface. Pods have a route to the Service range only (no
# default route), the bridge does no masquerading, and guard chains (METRICSTREAM-GUARD-*) drop
# anything forwarded from or to the pod range or the Service range through any other interface,
# and anything arriving at the pod range from outside: pod traffic never leaves the machine.
# PersistentVolumes: the default StorageClass `standard` (no provisioner, WaitForFirstConsumer)
# with `local` volumes under the state dir, kept at CLUSTER_FREE_VOLUMES unclaimed ones by `up`.
# (Not hostPath: the kubelet ignores fsGroup there and non-root pods cannot write.)
#
# Environment:
#   METRICSTREAM_CLUSTER_STATE  state dir (control plane, containerd, kubelet, volumes, logs, pid
#                               files); default <repo>/.cluster
#   CLUSTER_POD_CIDR            the pods' /24 (default 10.244.0.0/24); the Service range is the
#                               control plane's 10.0.0.0/16. Both must not be routed on this host.
#   CLUSTER_BRIDGE              the bridge's name (default msbr0)
#   CLUSTER_FREE_VOLUMES        unclaimed PersistentVolumes `up` keeps (default 8)
#   CLUSTER_READY_TIMEOUT       seconds `up` waits for each component and the node (default 120)
#   CLUSTER_APISERVER_PORT, CLUSTER_ETCD_PORT, CLUSTER_KCM_PORT, CLUSTER_SCHEDULER_PORT
#                               ports (defaults 17443, 24790 (+10 for peers), 10357, 10359), apart
#                               from `make envtest-up`'s so both can run at once
#   XDG_CACHE_HOME              binaries: see hack/envtest.sh (the same cache)
# Needs: root (network, mounts, cgroups), Debian's apt (for the packages, first run only), go (the
# first build), openssl, gcc (the pause image), util-linux, iproute2. Progress goes to stderr;
# stdout carries only results.
#
# Costs (measured on 2 cores): the node's binaries make hack/envtest.sh's one build ~11 min (641 s
# cold, alone on the machine; 488 MB of binaries); `up` with the binaries cached and the packages
# installed 7 s (22 s on a busy machine), ~4 s when already up; `down` ~9 s.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$HACK_DIR")

STATE_DIR=${METRICSTREAM_CLUSTER_STATE:-$REPO_DIR/.cluster}
[[ $STATE_DIR == /* ]] || STATE_DIR=$PWD/$STATE_DIR
MARKER_FILE=$STATE_DIR/.metricstream-cluster
CP_STATE=$STATE_DIR/control-plane
NODE_DIR=$STATE_DIR/node
LOG_DIR=$STATE_DIR/logs
PID_DIR=$STATE_DIR/pids
SAVED_DIR=$STATE_DIR/saved # the host settings `up` changed, restored by `down`
VOLUMES_DIR=$STATE_DIR/volumes
PKI_DIR=$NODE_DIR/pki
CONTAINERD_DIR=$NODE_DIR/containerd
CONTAINERD_SOCK=$CONTAINERD_DIR/containerd.sock
CNI_DIR=$NODE_DIR/cni
KUBELET_DIR=$NODE_DIR/kubelet

POD_CIDR=${CLUSTER_POD_CIDR:-10.244.0.0/24}
[[ $POD_CIDR =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || {
  echo "cluster.sh: CLUSTER_POD_CIDR must be a /24 ending in .0/24, not $POD_CIDR" >&2
  exit 2
}
GATEWAY=${BASH_REMATCH[1]}.1
SERVICE_CIDR=10.0.0.0/16 # hack/envtest.sh's --service-cluster-ip-range
BRIDGE=${CLUSTER_BRIDGE:-msbr0}
NODE_NAME=metricstream-node
FREE_VOLUMES=${CLUSTER_FREE_VOLUMES:-8}
READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-120}
APISERVER_PORT=${CLUSTER_APISERVER_PORT:-17443}
ETCD_PORT=${CLUSTER_ETCD_PORT:-24790}
KCM_PORT=${CLUSTER_KCM_PORT:-10357}
SCHEDULER_PORT=${CLUSTER_SCHEDULER_PORT:-10359}
KUBELET_HEALTHZ_PORT=10248
PROXY_HEALTHZ_PORT=10356
PROXY_METRICS_PORT=10349
PAUSE_IMAGE_VAR= # set by ensure_pause_image

# The control plane's controllers for a node that runs pods: envtest's, plus scheduling-related
# ones. node-lifecycle: without it the node keeps its not-ready taint and every pod stays Pending;
# persistentvolume-binder: PVCs bind; endpointslice(+mirroring)/endpoints: Services get endpoints;
# root-ca-certificate-publisher: kube-root-ca.crt, which every ServiceAccount token volume mounts;
# disruption: PodDisruptionBudgets get a status; pod-garbage-collector: pods of a gone node.
CLUSTER_KCM_CONTROLLERS=garbage-collector-controller,namespace-controller,deployment-controller,replicaset-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,serviceaccount-controller,clusterrole-aggregation-controller,node-lifecycle-controller,persistentvolume-binder-controller,endpointslice-controller,endpointslice-mirroring-controller,endpoints-controller,root-ca-certificate-publisher-controller,disruption-controller,pod-garbage-collector-controller,statefulset-controller,job-controller,ttl-after-finished-controller

PACKAGES=(containerd runc containernetworking-plugins iptables conntrack iproute2 openssl gcc)
CNI_BIN_DIR=/usr/lib/cni
NODE_COMPONENTS=(containerd kubelet kube-scheduler kube-proxy)

# The control plane's environment for hack/envtest.sh.
envtest() {
  env METRICSTREAM_ENVTEST_STATE="$CP_STATE" ENVTEST_APISERVER_HOST="$GATEWAY" \
    ENVTEST_APISERVER_PORT="$APISERVER_PORT" ENVTEST_ETCD_PORT="$ETCD_PORT" \
    ENVTEST_ETCD_PEER_PORT="$((ETCD_PORT + 10))" ENVTEST_KCM_PORT="$KCM_PORT" \
    ENVTEST_KCM_CONTROLLERS="$CLUSTER_KCM_CONTROLLERS" \
    ENVTEST_APISERVER_ARGS="--kubelet-preferred-address-types=InternalIP ${ENVTEST_APISERVER_ARGS:-}" \
    bash "$HACK_DIR/envtest.sh" "$@"
}

BIN_DIR=
KUBECONFIG_FILE=$CP_STATE/kubeconfig
kubectl() { "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=30s "$@"; }
ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# ---- packages and binaries ---------------------------------------------------------------------

ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  log "installing Debian packages: ${missing[*]}"
  local t0
  t0=$(now_ms)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOG_DIR/apt.log" 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$LOG_DIR/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$LOG_DIR/apt.log" 2>&1; } ||
    { tail -n 20 "$LOG_DIR/apt.log" >&2; die "apt-get could not install ${missing[*]}"; }
  log "  installed in $(since "$t0") s"
}

ensure_binaries() {
  BIN_DIR=$(bash "$HACK_DIR/envtest.sh" build | sed -n 's/^K8S_BIN=//p' | tail -n 1)
  echo "$BIN_DIR" >"$STATE_DIR/k8s-bin"
  local b
  for b in kubectl kubelet kube-scheduler kube-proxy; do
    [[ -x $BIN_DIR/$b ]] || die "hack/envtest.sh build left no $b in $BIN_DIR"
  done
}

# ---- processes ---------------------------------------------------------------------------------

pid_file() { echo "$PID_DIR/$1.pid"; }

# The pid of component $1 if it runs: its pid file names a live process whose command line is
# the component's binary with this state dir in its arguments (so a reused pid never counts).
component_pid() {
  read_pid_file "$(pid_file "$1")" && [[ $CMDLINE == *"$1 "*"$STATE_DIR"* ]] && echo "$PID"
}

# stop_pids_or_log TIMEOUT PID...: lib.sh's stop_pids (SIGTERM, SIGKILL after TIMEOUT s); `down`
# goes on when one survives.
stop_pids_or_log() { stop_pids "$@" || log "  going on: pids that survive SIGKILL are left"; }

stop_component() {
  local pid
  if pid=$(component_pid "$1"); then
    log "stopping $1 (pid $pid)"
    stop_pids_or_log "${2:-15}" "$pid"
  fi
  rm -f "$(pid_file "$1")"
}

# The containerd shims of our containerd (they outlive it): their command line names our socket.
shim_pids() {
  local d
  for d in /proc/[0-9]*; do
    proc_cmdline "${d#/proc/}" || continue
    [[ "$CMDLINE " == *containerd-shim*"-address $CONTAINERD_SOCK "* ]] && echo "${d#/proc/}"
  done
  return 0
}

# Runs COMMAND... quietly (for wait_for).
quietly() { "$@" >/dev/null 2>&1; }

# wait_for WHAT COMMAND...: until COMMAND succeeds, at most READY_TIMEOUT seconds.
wait_for() {
  local what=$1 t0
  shift
  t0=$(now_ms)
  if ! POLL_INTERVAL=0.3 wait_until "$READY_TIMEOUT" quietly "$@"; then
    log "$what: not within ${READY_TIMEOUT}s; last log lines:"
    local f
    for f in "$LOG_DIR"/*.log; do
      printf -- '----- %s\n' "$f" >&2
      tail -n 15 "$f" >&2
    done
    die "$what timed out (logs in $LOG_DIR)"
  fi
  log "  $what ($(since "$t0") s)"
}

# ---- network -----------------------------------------------------------------------------------

save_once() { # name value: remember a host setting before the first change
  [[ -f $SAVED_DIR/$1 ]] || printf '%s\n' "$2" >"$SAVED_DIR/$1"
}

check_ranges_free() {
  local r
  for r in "$POD_CIDR" "$SERVICE_CIDR"; do
    if ip -4 route show to match "${r%/*}" | grep -v '^default' | grep -v " dev $BRIDGE " | grep . >/dev/null; then
      die "$r is already routed on this host ($(ip -4 route show to match "${r%/*}" | grep -v '^default' | head -n 1)); set CLUSTER_POD_CIDR"
    fi
  done
}

# guard CHAIN PARENT RULES...: (re)create our chain, first in PARENT.
guard_chain() {
  local chain=$1 parent=$2
  shift 2
  iptables -w -N "$chain" 2>/dev/null || iptables -w -F "$chain"
  local rule
  for rule in "$@"; do
    # shellcheck disable=SC2086  # a rule is words
    iptables -w -A "$chain" $rule
  done
  first_in "$chain" "$parent"
}

# Keep the jump to our chain first in PARENT (kube-proxy inserts its own at the top: an ACCEPT of
# its could otherwise come before our DROPs).
first_in() {
  local chain=$1 parent=$2
  if [[ $(iptables -w -S "$parent" 2>/dev/null | sed -n 2p) != "-A $parent -j $chain" ]]; then
    while iptables -w -D "$parent" -j "$chain" 2>/dev/null; do :; done
    iptables -w -I "$parent" 1 -j "$chain"
  fi
}

setup_network() {
  check_ranges_free
  save_once ip_forward "$(cat /proc/sys/net/ipv4/ip_forward)"
  local table
  if [[ ! -f $SAVED_DIR/kube_chains ]]; then
    for table in filter nat mangle; do iptables -w -t "$table" -S | awk -v t="$table" '/^-N KUBE-/ { print t " " $2 }'; done >"$SAVED_DIR/kube_chains"
  fi
  save_once bridge_nf_call_iptables "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo none)"
  # Guards before forwarding is on: nothing from or to the pod and Service ranges crosses any
  # interface but the bridge (and loopback for the host's own connections).
  guard_chain METRICSTREAM-GUARD-FWD FORWARD \
    "-s $POD_CIDR ! -o $BRIDGE -j DROP" "-d $POD_CIDR ! -i $BRIDGE -j DROP" \
    "-d $SERVICE_CIDR ! -o $BRIDGE -j DROP"
  guard_chain METRICSTREAM-GUARD-IN INPUT "-i lo -j RETURN" "-i $BRIDGE -j RETURN" "-d $POD_CIDR -j DROP"
  guard_chain METRICSTREAM-GUARD-OUT OUTPUT "-o lo -j RETURN" "-o $BRIDGE -j RETURN" \
    "-d $POD_CIDR -j DROP" "-d $SERVICE_CIDR -j DROP"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  # Captured, not piped into `grep -q`: under pipefail grep's early exit can end `ip` with
  # SIGPIPE, the test reads "absent", and the add fails on the address that is there ("ipv4:
  # Address already assigned" on a running cluster: two CI runs failed on it).
  local addresses
  addresses=$(ip -4 -o addr show dev "$BRIDGE")
  [[ $addresses == *" $GATEWAY/24 "* ]] || ip addr add "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Host connections to a ClusterIP are routed to the bridge before kube-proxy's DNAT (never to
  # the default route).
  ip route replace "$SERVICE_CIDR" dev "$BRIDGE" src "$GATEWAY"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Pod-to-Service traffic within the bridge must pass iptables for kube-proxy's DNAT.
  [[ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]] || die "no /proc/sys/net/bridge (the br_netfilter module is needed)"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
}

# The KUBE-* chains that were not there before `up` (kube-proxy --cleanup leaves some, the kubelet
# its canaries): their jumps, rules and the chains themselves.
remove_new_kube_chains() {
  local table chain rule
  for table in filter nat mangle; do
    for chain in $(iptables -w -t "$table" -S | awk '/^-N KUBE-/ { print $2 }'); do
      grep -qxF "$table $chain" "$SAVED_DIR/kube_chains" 2>/dev/null && continue
      while read -r rule; do
        # shellcheck disable=SC2086  # a rule is words
        [[ -z $rule ]] || iptables -w -t "$table" ${rule/#-A/-D} 2>/dev/null || true
      done < <(iptables -w -t "$table" -S | grep -E -- "-j $chain( |\$)" || true)
      iptables -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "$table" -S | awk '/^-N KUBE-/ { print $2 }'); do
      grep -qxF "$table $chain" "$SAVED_DIR/kube_chains" 2>/dev/null || iptables -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

teardown_network() {
  remove_new_kube_chains
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  ip route del "$SERVICE_CIDR" dev "$BRIDGE" 2>/dev/null || true
  local chain parent pair
  for pair in METRICSTREAM-GUARD-FWD:FORWARD METRICSTREAM-GUARD-IN:INPUT METRICSTREAM-GUARD-OUT:OUTPUT; do
    chain=${pair%%:*} parent=${pair##*:}
    while iptables -w -D "$parent" -j "$chain" 2>/dev/null; do :; done
    iptables -w -F "$chain" 2>/dev/null || true
    iptables -w -X "$chain" 2>/dev/null || true
  done
  if [[ -f $SAVED_DIR/ip_forward ]]; then cat "$SAVED_DIR/ip_forward" >/proc/sys/net/ipv4/ip_forward; fi
  if [[ -f $SAVED_DIR/bridge_nf_call_iptables && $(<"$SAVED_DIR/bridge_nf_call_iptables") != none ]]; then
    cat "$SAVED_DIR/bridge_nf_call_iptables" >/proc/sys/net/bridge/bridge-nf-call-iptables
  fi
}

# ---- node components ---------------------------------------------------------------------------

write_node_pki() {
  [[ -s $PKI_DIR/kubelet-client.crt ]] && return 0
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  # The API server authorizes with RBAC only (no Node authorizer): the node's identity is in
  # system:masters, as the other components' are. A test node only.
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI_DIR/kubelet-client.key" -out "$PKI_DIR/kubelet-client.csr" \
    -subj "/O=system:masters/CN=system:node:$NODE_NAME" 2>/dev/null
  openssl x509 -req -in "$PKI_DIR/kubelet-client.csr" -CA "$CP_STATE/pki/ca.crt" -CAkey "$CP_STATE/pki/ca.key" \
    -CAcreateserial -days 365 -sha256 -out "$PKI_DIR/kubelet-client.crt" \
    -extfile <(printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n') 2>/dev/null ||
    die "openssl could not sign the kubelet's client certificate"
  rm -f "$PKI_DIR/kubelet-client.csr" "$CP_STATE/pki/ca.srl"
  cat >"$NODE_DIR/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: metricstream-local
  cluster:
    server: https://$GATEWAY:$APISERVER_PORT
    certificate-authority: $CP_STATE/pki/ca.crt
users:
- name: kubelet
  user:
    client-certificate: $PKI_DIR/kubelet-client.crt
    client-key: $PKI_DIR/kubelet-client.key
contexts:
- name: metricstream-local
  context: {cluster: metricstream-local, user: kubelet}
current-context: metricstream-local
EOF
  chmod 600 "$NODE_DIR/kubelet.kubeconfig"
}

write_configs() {
  mkdir -p "$CNI_DIR/net.d" "$CNI_DIR/ipam" "$CONTAINERD_DIR" "$KUBELET_DIR" "$NODE_DIR/pod-logs"
  # restrict_oom_score_adj: this machine withholds CAP_SYS_RESOURCE, so runc cannot lower the
  # pause container's oom_score_adj and every sandbox would fail without it.
  cat >"$CONTAINERD_DIR/config.toml" <<EOF
version = 2
root = "$CONTAINERD_DIR/root"
state = "$CONTAINERD_DIR/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_DIR/containerd.ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CONTAINERD_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE_VAR"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN_DIR"
    conf_dir = "$CNI_DIR/net.d"
EOF
  # Pods: an address on the bridge, a route to the Service range only, no masquerading.
  cat >"$CNI_DIR/net.d/10-metricstream.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "metricstream",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$CNI_DIR/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$GATEWAY"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # A test node: anonymous, always-allowed kubelet API, reachable only from this machine and its
  # pods (the guard chains). Image GC off: imported images cannot be pulled again.
  cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $GATEWAY
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: $NODE_DIR/pod-logs
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: $CP_STATE/pki/ca.crt}
authorization: {mode: AlwaysAllow}
resolvConf: ""
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
EOF
  cat >"$NODE_DIR/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
leaderElection: {leaderElect: false}
EOF
  # conntrack settings 0: leave the host's sysctls alone. NodePorts only on the bridge's address.
  cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_FILE}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
nodePortAddresses: ["$GATEWAY/32"]
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

http_ok() { [[ $(http_status "$@") == 200 ]]; } # host port path

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version; }

ensure_pause_image() {
  local out
  out=$(bash "$HACK_DIR/image.sh" pause) || die "hack/image.sh pause failed"
  PAUSE_IMAGE_VAR=$(sed -n 's/^PAUSE_IMAGE=//p' <<<"$out" | tail -n 1)
  PAUSE_ARCHIVE=$(sed -n 's/^PAUSE_ARCHIVE=//p' <<<"$out" | tail -n 1)
  [[ -n $PAUSE_IMAGE_VAR && -f $PAUSE_ARCHIVE ]] || die "hack/image.sh pause printed no PAUSE_IMAGE/PAUSE_ARCHIVE"
}

start_node() {
  if ! component_pid containerd >/dev/null; then
    # Leftovers of a previous containerd (a SIGKILLed one) keep their shims: stop them first.
    mapfile -t shims < <(shim_pids)
    stop_pids_or_log 10 "${shims[@]}"
    launch containerd "$(pid_file containerd)" "$LOG_DIR/containerd.log" \
      containerd --config "$CONTAINERD_DIR/config.toml" --log-level warn
  fi
  wait_for "containerd ready" containerd_ready
  if ! ctr_ images ls -q | grep -xF "$PAUSE_IMAGE_VAR" >/dev/null; then
    CONTAINERD_ADDRESS=$CONTAINERD_SOCK bash "$HACK_DIR/image.sh" import "$PAUSE_ARCHIVE" >/dev/null ||
      die "could not import the pause image"
  fi
  if ! component_pid kubelet >/dev/null; then
    launch kubelet "$(pid_file kubelet)" "$LOG_DIR/kubelet.log" \
      "$BIN_DIR/kubelet" --config="$NODE_DIR/kubelet.yaml" \
      --kubeconfig="$NODE_DIR/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" \
      --cert-dir="$PKI_DIR/kubelet-serving" --node-ip="$GATEWAY" --hostname-override="$NODE_NAME" --v=1
  fi
  wait_for "kubelet healthy" http_ok 127.0.0.1 "$KUBELET_HEALTHZ_PORT" /healthz
  if ! component_pid kube-scheduler >/dev/null; then
    launch kube-scheduler "$(pid_file kube-scheduler)" "$LOG_DIR/kube-scheduler.log" \
      "$BIN_DIR/kube-scheduler" --config="$NODE_DIR/kube-scheduler.yaml" \
      --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$PKI_DIR/scheduler-serving" \
      --authentication-skip-lookup=true
  fi
  if ! component_pid kube-proxy >/dev/null; then
    launch kube-proxy "$(pid_file kube-proxy)" "$LOG_DIR/kube-proxy.log" \
      "$BIN_DIR/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
  fi
  wait_for "kube-proxy healthy" http_ok 127.0.0.1 "$PROXY_HEALTHZ_PORT" /healthz
  # kube-proxy put its jumps at the top: ours go back in front.
  first_in METRICSTREAM-GUARD-FWD FORWARD
  first_in METRICSTREAM-GUARD-IN INPUT
  first_in METRICSTREAM-GUARD-OUT OUTPUT
}

node_ready() {
  local out
  out=$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status} {.spec.taints}') || return 1
  [[ $out == "True " ]]
}

# ---- storage -----------------------------------------------------------------------------------

ensure_storage() {
  kubectl apply --server-side --field-manager=metricstream-cluster -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  local free
  free=$(kubectl get pv -l metricstream.dev/local-volume -o jsonpath='{range .items[?(@.status.phase=="Available")]}{.metadata.name}{"\n"}{end}' | grep -c . || true)
  local n=0 name
  while ((free < FREE_VOLUMES)); do
    name=local-pv-$(date +%s%N | tail -c 10)-$n
    n=$((n + 1))
    mkdir -p "$VOLUMES_DIR/$name"
    kubectl apply --server-side --field-manager=metricstream-cluster -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata:
  name: $name
  labels: {metricstream.dev/local-volume: "true"}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: standard
  local: {path: $VOLUMES_DIR/$name}
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
EOF
    free=$((free + 1))
  done
}

# ---- the host claim ----------------------------------------------------------------------------

# One cluster per host: the bridge, the Service route, kube-proxy's iptables chains and the
# kubelet's ports are host-wide. /run/metricstream/cluster names the state dir that holds them;
# /run is emptied at boot, so a claim outlives only a run that was killed (no `down`).
HOST_CLAIM_DIR=/run/metricstream
HOST_CLAIM=$HOST_CLAIM_DIR/cluster

# Whether any process still runs with state dir $1 in its command line (every component has it).
cluster_alive() {
  local d
  for d in /proc/[0-9]*; do
    proc_cmdline "${d#/proc/}" || continue
    [[ $CMDLINE == *"$1/"* ]] && return 0
  done
  return 1
}

# The network namespaces whose interfaces hold an address in POD_CIDR: a killed cluster's pod
# sandboxes (their containerd is gone, so nothing else would delete them).
remove_stale_pod_netns() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
    if ip -n "$ns" -4 -o addr show 2>/dev/null | grep " inet ${GATEWAY%.1}\." >/dev/null; then
      log "  removing network namespace $ns (a pod of the stopped cluster)"
      ip netns delete "$ns" 2>/dev/null || log "  could not remove network namespace $ns"
    fi
  done
}

# Takes the host for this state dir. A claim by a live cluster elsewhere is refused with the way
# out; one left by a killed run (no process alive) is taken down first, so its bridge, route and
# chains never meet ours.
claim_host() {
  take_lock 7 "$HOST_CLAIM_DIR/cluster.lock"
  local owner
  owner=$(cat "$HOST_CLAIM" 2>/dev/null) || owner=
  if [[ -n $owner && $owner != "$STATE_DIR" ]]; then
    cluster_alive "$owner" &&
      die "another MetricStream cluster runs on this host (state dir $owner); one cluster per host (bridge, routes, kube-proxy's chains, the kubelet's ports): stop it first with METRICSTREAM_CLUSTER_STATE=$owner hack/cluster.sh down"
    log "the cluster in $owner was left by a killed run (no process alive): taking it down first"
    if [[ -f $owner/.metricstream-cluster ]]; then
      METRICSTREAM_CLUSTER_STATE=$owner CLUSTER_HOST_LOCKED=1 bash "$HACK_DIR/cluster.sh" down ||
        die "could not take down the stale cluster in $owner"
    fi
  fi
  if [[ $owner != "$STATE_DIR" ]] || ! cluster_alive "$STATE_DIR"; then
    # Leftovers of a killed cluster whose state dir is gone, or of this one: nothing runs.
    remove_stale_pod_netns
  fi
  echo "$STATE_DIR" >"$HOST_CLAIM"
  release_lock 7
}

# Whether the host's network is another live cluster's (then `down` must leave it alone).
host_claimed_by_other() {
  local owner
  owner=$(cat "$HOST_CLAIM" 2>/dev/null) || return 1
  [[ -n $owner && $owner != "$STATE_DIR" ]] && cluster_alive "$owner"
}

# Drops this state dir's claim (CLUSTER_HOST_LOCKED: claim_host holds the lock for us).
release_host() {
  [[ -n ${CLUSTER_HOST_LOCKED:-} ]] || take_lock 7 "$HOST_CLAIM_DIR/cluster.lock"
  [[ $(cat "$HOST_CLAIM" 2>/dev/null) != "$STATE_DIR" ]] || rm -f "$HOST_CLAIM"
  [[ -n ${CLUSTER_HOST_LOCKED:-} ]] || release_lock 7
}

# ---- commands ----------------------------------------------------------------------------------

check_state_dir() {
  [[ -n $STATE_DIR && $STATE_DIR != / && $STATE_DIR != "$REPO_DIR" && $STATE_DIR != "${HOME:-}" ]] ||
    die "refusing state dir '$STATE_DIR'"
  if [[ -d $STATE_DIR && ! -f $MARKER_FILE ]] && [[ -n $(ls -A "$STATE_DIR") ]]; then
    die "$STATE_DIR exists and was not made by hack/cluster.sh; choose another METRICSTREAM_CLUSTER_STATE"
  fi
}

lock_state() {
  command -v flock >/dev/null || die "flock (util-linux) is needed"
  take_lock 9 "$STATE_DIR/.lock"
}

# On stdout, and in ENV_FILE with --env-file.
print_env() {
  emit "K8S_BIN=$BIN_DIR" "CLUSTER_GATEWAY=$GATEWAY" "CONTAINERD_ADDRESS=$CONTAINERD_SOCK" \
    "KUBECONFIG=$KUBECONFIG_FILE"
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "needs root (network namespaces, iptables, mounts, cgroups)"
  check_state_dir
  local t0
  t0=$(now_ms)
  claim_host
  lock_state
  touch "$MARKER_FILE"
  mkdir -p "$LOG_DIR" "$PID_DIR" "$SAVED_DIR" "$VOLUMES_DIR" "$NODE_DIR"
  ensure_packages
  ensure_binaries
  ensure_pause_image
  setup_network
  envtest up >"$LOG_DIR/control-plane-up.out" || die "the control plane did not start (hack/envtest.sh; logs in $CP_STATE)"
  write_node_pki
  write_configs
  start_node
  wait_for "node $NODE_NAME Ready and untainted" node_ready
  ensure_storage
  release_lock 9
  log "cluster up in $(since "$t0") s (node $NODE_NAME at $GATEWAY, state $STATE_DIR)"
  print_env
}

no_running_tasks() { ! ctr_ tasks ls 2>/dev/null | awk '$3 == "RUNNING" { found = 1 } END { exit !found }'; }

# Deletes every pod so the kubelet stops the containers and tears the sandboxes' networks down.
delete_pods() {
  component_pid kubelet >/dev/null || return 0
  envtest status >/dev/null 2>&1 || return 0
  log "deleting every pod (the kubelet tears the sandboxes down)"
  kubectl delete pods --all-namespaces --all --grace-period=1 --wait=false >/dev/null 2>&1 || true
  POLL_INTERVAL=0.5 wait_until 60 no_running_tasks ||
    log "  containers still running after 60 s; they are killed with containerd"
}

unmount_under_state() {
  local m
  # Deepest first.
  while read -r m; do
    [[ -n $m ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "  could not unmount $m"
  done < <(awk -v s="$STATE_DIR/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r)
}

remove_kubepods_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ ! -d $d ]] || log "  could not remove cgroup $d"
  done
}

cmd_down() {
  check_state_dir
  [[ -d $STATE_DIR ]] || return 0
  local t0
  t0=$(now_ms)
  lock_state
  BIN_DIR=$(cat "$STATE_DIR/k8s-bin" 2>/dev/null) || true
  # The scheduler first: the pods that controllers make in place of the deleted ones stay Pending.
  stop_component kube-scheduler
  delete_pods
  stop_component kube-proxy
  if [[ -x $BIN_DIR/kube-proxy ]]; then "$BIN_DIR/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  stop_component kubelet 20
  if component_pid containerd >/dev/null; then
    local id
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  fi
  stop_component containerd
  local -a shims
  mapfile -t shims < <(shim_pids)
  stop_pids_or_log 10 "${shims[@]}"
  ENVTEST_STOP_TIMEOUT=5 envtest down || log "  hack/envtest.sh down failed"
  unmount_under_state
  remove_kubepods_cgroups
  if host_claimed_by_other; then
    log "  the bridge, routes and chains belong to the cluster in $(cat "$HOST_CLAIM"): left alone"
  else
    teardown_network
    remove_stale_pod_netns
  fi
  release_host
  release_lock 9
  rm -rf "$STATE_DIR"
  log "cluster stopped, $STATE_DIR removed ($(since "$t0") s)"
}

cmd_status() {
  [[ -f $MARKER_FILE ]] || { echo "cluster: not running (no state dir $STATE_DIR)"; return 3; }
  local c rc=0
  for c in "${NODE_COMPONENTS[@]}"; do
    if pid=$(component_pid "$c"); then echo "cluster: $c running (pid $pid)"; else
      echo "cluster: $c not running"
      rc=3
    fi
  done
  envtest status || rc=3
  BIN_DIR=$(cat "$STATE_DIR/k8s-bin" 2>/dev/null) || true
  if ((rc == 0)) && node_ready; then echo "cluster: node $NODE_NAME Ready"; else
    echo "cluster: node $NODE_NAME not Ready"
    rc=3
  fi
  ((rc == 0)) || return "$rc"
  print_env
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
    kubectl)
      BIN_DIR=$(cat "$STATE_DIR/k8s-bin" 2>/dev/null) || die "no cluster in $STATE_DIR: run hack/cluster.sh up"
      exec "$BIN_DIR/kubectl" --kubeconfig="$KUBECONFIG_FILE" "$@"
      ;;
    ctr) exec ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@" ;;
    -h | --help | help) usage 0 ;;
    *) usage ;;
  esac
}

main "$@"
