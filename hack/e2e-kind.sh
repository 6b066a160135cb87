#!/usr/bin/env bash
# The end-to-end test on kind with Strimzi: `make e2e-kind` (and `make e2e-kind-down`).
#
#   hack/e2e-kind.sh up     create (or reuse) the cluster, install Strimzi + a KRaft Kafka, build
#                           and load the image, install the chart, apply both example
#                           MetricStreams, send the prototype's load to each and check the sinks
#   hack/e2e-kind.sh down   delete the cluster
#
# Needs Docker (a running engine), kind, kubectl and helm on the PATH, a Rust toolchain (for the
# load generator), and internet access for the images and Strimzi's chart. Everything it creates
# lives in the kind cluster named by E2E_CLUSTER, which `down` deletes.
#
# Settings (environment):
#   E2E_CLUSTER      kind cluster name (default metricstream; kind-config.yaml names it too)
#   E2E_IMAGE        image built and loaded into kind (default metricstream:e2e)
#   STRIMZI_VERSION  Strimzi release installed from its Helm chart (default 1.2.0)
#   E2E_CLIENTS, E2E_REQUESTS, E2E_METRICS
#                    the load per stream: clients x requests per client x metrics per request
#                    (default 20 x 50 x 10, the prototype's scenario)
#   E2E_TIMEOUT      seconds to wait for each readiness step (default 900)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cluster=${E2E_CLUSTER:-metricstream}
image=${E2E_IMAGE:-metricstream:e2e}
strimzi_version=${STRIMZI_VERSION:-1.2.0}
clients=${E2E_CLIENTS:-20}
requests=${E2E_REQUESTS:-50}
metrics=${E2E_METRICS:-10}
timeout=${E2E_TIMEOUT:-900}
work="$repo/target/e2e-kind"

operator_namespace=metricstream-system
kafka_namespace=kafka
streams_namespace=metrics
# The stream names, their NodePort URLs on the host (kind-config.yaml, examples/ingest-nodeports.yaml).
streams=(web-kafka web-file)
declare -A stream_url=([web-kafka]=http://127.0.0.1:30080 [web-file]=http://127.0.0.1:30081)
# The client token of examples/token-secret.yaml.
token=$(sed -n 's/^ *e2e-load=//p' "$repo/examples/token-secret.yaml")

say() { printf '\n==> %s\n' "$*"; }
fail() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

need() {
  local tool=$1 hint=$2
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed: $hint"
}

check_tools() {
  need docker "install Docker (https://docs.docker.com/get-docker/); kind runs its nodes as containers"
  docker info >/dev/null 2>&1 ||
    fail "docker is installed but no Docker engine answers (is the daemon running, may this user use it?)"
  need kind "install kind v0.23 or newer (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
  need kubectl "install kubectl (https://kubernetes.io/docs/tasks/tools/)"
  need helm "install Helm 3.14 or newer (https://helm.sh/docs/intro/install/)"
  need cargo "install a Rust toolchain (https://rustup.rs): it builds the load generator"
}

kube() { kubectl --context "kind-$cluster" "$@"; }
helm_kind() { helm --kube-context "kind-$cluster" "$@"; }

create_cluster() {
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "reusing kind cluster $cluster"
  else
    say "creating kind cluster $cluster (kind-config.yaml)"
    kind create cluster --name "$cluster" --config "$repo/kind-config.yaml" --wait "${timeout}s"
  fi
}

install_strimzi() {
  say "installing Strimzi $strimzi_version (namespace $kafka_namespace) and a single-node KRaft Kafka"
  helm_kind upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator \
    --version "$strimzi_version" --namespace "$kafka_namespace" --create-namespace \
    --wait --timeout "${timeout}s"
  kube apply -f "$repo/examples/kafka-cluster.yaml"
  say "waiting for Kafka metricstream-kafka to be Ready (pulling Kafka's image takes a while)"
  kube -n "$kafka_namespace" wait kafka/metricstream-kafka --for=condition=Ready --timeout="${timeout}s"
}

build_and_load_image() {
  say "building $image (Dockerfile) and loading it into kind"
  docker build -t "$image" "$repo"
  kind load docker-image "$image" --name "$cluster"
}

install_operator() {
  say "installing the chart charts/metricstream-operator (namespace $operator_namespace)"
  helm_kind upgrade --install metricstream-operator "$repo/charts/metricstream-operator" \
    --namespace "$operator_namespace" --create-namespace \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
    --set image.pullPolicy=Never \
    --wait --timeout "${timeout}s"
  helm_kind test metricstream-operator --namespace "$operator_namespace" --timeout 120s
}

apply_streams() {
  say "applying the token Secret, both MetricStreams and their NodePorts (namespace $streams_namespace)"
  kube create namespace "$streams_namespace" --dry-run=client -o yaml | kube apply -f -
  kube apply -f "$repo/examples/token-secret.yaml"
  kube apply -f "$repo/examples/metricstream-kafka.yaml" -f "$repo/examples/metricstream-file.yaml"
  kube apply -f "$repo/examples/ingest-nodeports.yaml"
  local stream
  for stream in "${streams[@]}"; do
    say "waiting for MetricStream $stream to be Ready"
    if ! kube -n "$streams_namespace" wait "metricstream/$stream" --for=condition=Ready --timeout="${timeout}s"; then
      kube -n "$streams_namespace" describe "metricstream/$stream" || true
      fail "MetricStream $stream did not become Ready"
    fi
  done
}

build_load_generator() {
  say "building the load generator (metricstream-load)"
  cargo build --release --manifest-path "$repo/Cargo.toml" -p metricstream-tests --bin metricstream-load
  load="$repo/target/release/metricstream-load"
}

send_load() {
  local stream=$1
  say "sending ${clients} clients x ${requests} requests x ${metrics} metrics to $stream (${stream_url[$stream]})"
  "$load" send --url "${stream_url[$stream]}" --token-file "$work/token" \
    --clients "$clients" --requests "$requests" --metrics "$metrics" \
    --expected-out "$work/$stream.expected.json" |
    tee "$work/$stream.send.txt"
}

# Copies the stream's sink out of the cluster through a pod that mounts its volume read-only
# (the runtime image has no shell or tar), then checks every acknowledged metric is there once.
verify_sink() {
  local stream=$1 reader="$1-sink-reader" deadline=$((SECONDS + 300))
  say "checking the sink of $stream"
  kube -n "$streams_namespace" delete pod "$reader" --ignore-not-found --wait=true >/dev/null
  kube -n "$streams_namespace" apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $reader
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: reader
      image: docker.io/library/busybox:1.37
      command: [sleep, "3600"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
      volumeMounts:
        - {name: sink, mountPath: /sink, readOnly: true}
  volumes:
    - name: sink
      persistentVolumeClaim: {claimName: $stream-sink, readOnly: true}
EOF
  kube -n "$streams_namespace" wait "pod/$reader" --for=condition=Ready --timeout="${timeout}s"
  local sink="$work/$stream-sink"
  while :; do
    rm -rf "$sink" && mkdir -p "$sink"
    kube -n "$streams_namespace" exec "$reader" -- tar cf - -C /sink . | tar xf - -C "$sink"
    if "$load" verify --sink-dir "$sink" --expected "$work/$stream.expected.json" >"$work/$stream.verify.txt" 2>&1; then
      cat "$work/$stream.verify.txt"
      break
    fi
    if ((SECONDS >= deadline)); then
      cat "$work/$stream.verify.txt"
      fail "the sink of $stream is still incomplete after 300 s"
    fi
    sleep 5
  done
  kube -n "$streams_namespace" delete pod "$reader" --wait=false >/dev/null
}

up() {
  check_tools
  mkdir -p "$work"
  [[ -n "$token" ]] || fail "examples/token-secret.yaml has no e2e-load token line"
  # A file keeps the token out of the process list.
  (umask 077 && printf '%s\n' "$token" >"$work/token")
  create_cluster
  install_strimzi
  build_and_load_image
  install_operator
  apply_streams
  build_load_generator
  local stream
  for stream in "${streams[@]}"; do
    send_load "$stream"
    verify_sink "$stream"
  done
  say "summary"
  kube -n "$streams_namespace" get metricstreams
  for stream in "${streams[@]}"; do
    printf -- '--- %s\n' "$stream"
    cat "$work/$stream.send.txt"
    cat "$work/$stream.verify.txt"
  done
  echo "e2e-kind: passed (logs and copies of the sinks in $work; make e2e-kind-down deletes the cluster)"
}

down() {
  need kind "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind delete cluster --name "$cluster"
  else
    echo "no kind cluster named $cluster"
  fi
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 [up|down]" >&2; exit 2 ;;
esac
