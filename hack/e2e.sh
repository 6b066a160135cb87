#!/usr/bin/env bash
# MetricStream's end-to-end scenario, one script for every cluster: `make e2e-local` (a
# single-node cluster with a real kubelet on this machine, hack/cluster.sh; no Docker) and
# `make e2e-kind` (kind with Strimzi; needs Docker). What CI proves on the local node is what a
# kind user runs; only the cluster, the image and the Kafka broker differ:
#
#                 local (hack/cluster.sh)                     kind
#   cluster       envtest control plane + kubelet,            kind create cluster
#                 containerd, kube-proxy (reused if up)
#   image         hack/image.sh from release binaries,        docker build, kind load
#                 imported into containerd
#   Kafka         hack/kafka.sh on the node's bridge address; Strimzi 1.2.0 + a KRaft Kafka;
#                 the stream's topic made with the admin API  the topic is a KafkaTopic
#   ingest URL    NodePorts on the bridge address             NodePorts mapped to 127.0.0.1
#
# The scenario (each step fails the run with what it saw):
#   1. namespaces labelled pod-security.kubernetes.io/enforce=restricted; `helm install` of the
#      chart, then `helm test`
#   2. the token Secret and two streams, web-file (file queue on PVCs) and web-kafka; both Ready
#      with IngestAvailable=True and ConsumerAvailable=True from pods that run
#   3. the prototype's load (E2E_CLIENTS x E2E_REQUESTS x E2E_METRICS) through each ingest
#      Service; every acknowledged metric found exactly once in the sink volume
#   3b. (remote_write) VictoriaMetrics in the cluster (basic auth, an emptyDir) and web-rw, a file
#      stream with `consumer.sink: remoteWrite` to the store's ClusterIP with basicAuth from a
#      Secret: Ready and SinkAvailable=True (SinkWriting, from the consumers' /readyz); the same
#      load, every acknowledged metric once in the store's /api/v1/export with its labels, value
#      and timestamp; the store scaled to 0 under a small load: SinkAvailable=False with the
#      consumer's words; back: True again and that load in the store exactly once; web-rw and
#      the store deleted
#   3c. (spill) web-spill rides out a broker stop (local only)
#   3d. (autoscale, alerts; hack/e2e-observe.sh) consumers follow the lag on both backends, exactly
#      once across the rebalances; a real Prometheus scrapes the pods and fires the lag alert when
#      web-kafka's consumers stop
#   4. a second load on both streams for E2E_LOAD_SECONDS while: ingest replicas 1 -> 2, one
#      ingest pod and one consumer pod deleted, replicas 2 -> 1, partitions 4 -> 8, a config change
#      that rolls the pods; then: every request acknowledged (none refused or timed out) and
#      every metric in the sink exactly once
#   5. `helm upgrade` with changed values (the operator rolls; the streams stay Ready; helm test)
#   6. a user's mistakes show in the stream's status and in a Warning Event: an image that cannot
#      be pulled, a crash-looping ingest (a malformed tokens file), a PVC that cannot bind
#   7. web-file deleted (deletionPolicy Delete: its children and PVCs go) and web-kafka deleted
#      (local: deletionPolicy Retain, the topic stays); `helm uninstall` (the CRD stays)
#
#   hack/e2e.sh local        the scenario on hack/cluster.sh's node (started here unless it runs;
#                            stopped again at the end if started here, unless E2E_KEEP=1)
#   hack/e2e.sh kind         the scenario on the kind cluster E2E_CLUSTER (created unless it exists)
#   hack/e2e.sh kind-down    delete the kind cluster
#
# Settings (environment):
#   E2E_CLIENTS, E2E_REQUESTS, E2E_METRICS   the first load per stream (default 20 x 50 x 10,
#                            the prototype's scenario)
#   E2E_LOAD_SECONDS         the second load's length (default 150; it must outlast step 4's
#                            changes, or the run fails saying so)
#   E2E_LOAD_CLIENTS, E2E_LOAD_PAUSE_MS      the second load's clients per stream (default 8) and
#                            each client's pause after an acknowledged request (default 20)
#   E2E_TIMEOUT              seconds to wait for each readiness step (default 300; kind: 900)
#   E2E_KEEP=1               local: leave the cluster and the broker running at the end
#   E2E_STEPS                the steps to run, in order (default: install streams first_load
#                            remote_write spill autoscale alerts disruptions upgrade mistakes
#                            delete; a later step needs the earlier ones' state, e.g.
#                            E2E_STEPS="mistakes" on a kept cluster; remote_write, spill and
#                            autoscale need only install, alerts install and streams)
#   E2E_KAFKA_PORT           local: the broker's PLAINTEXT port on the bridge address (default
#                            29092; +1 controller, +2 SASL_SSL)
#   E2E_CLUSTER, E2E_IMAGE, STRIMZI_VERSION  kind: cluster name (default metricstream), image
#                            (default metricstream:e2e), Strimzi release (default 1.2.0)
#   HELM, KUBECTL            the tools (local: from hack/tools.sh and hack/cluster.sh by default)
# Output: progress on stdout; everything (load reports, sinks, describe output of a failure, the
# summary) in target/e2e-<profile>/.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/e2e-observe.sh" # steps autoscale and alerts

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Where cargo puts the binaries (CARGO_TARGET_DIR, if set, is relative to the repository here).
cargo_target=$(cargo_target_dir "$repo")
profile=${1:-}
clients=${E2E_CLIENTS:-20}
requests=${E2E_REQUESTS:-50}
metrics=${E2E_METRICS:-10}
load_seconds=${E2E_LOAD_SECONDS:-150}
load_clients=${E2E_LOAD_CLIENTS:-8}
load_pause_ms=${E2E_LOAD_PAUSE_MS:-20}

operator_namespace=metricstream-system
streams_namespace=metrics
release=metricstream-operator
streams=(web-file web-kafka)
store=e2e-store # step_remote_write's VictoriaMetrics
store_user=e2e
store_password=
store_url=
store_image=
token=$(sed -n 's/^ *e2e-load=//p' "$repo/examples/token-secret.yaml")
work=
summary=
GOT= # what the last condition function saw (for a failure's message)
WAITED= # the seconds the last wait_condition took
declare -A stream_url=()

say() { printf '\n==> [%s] %s\n' "$(date -u +%T)" "$*"; }
fail() {
  printf 'e2e: FAILED: %s\n' "$*" >&2
  if [[ -n $summary ]]; then
    printf 'e2e: FAILED: %s\n' "$*" >>"$summary"
    dump_state >"$work/state-at-failure.txt" 2>&1 || true
    echo "e2e: pods, events and the operator's log at the failure: $work/state-at-failure.txt" >&2
  fi
  exit 1
}

# What a failure report needs: every pod, the streams, recent events, the operator's log.
dump_state() {
  kube get pods -A -o wide
  kube -n "$streams_namespace" get metricstreams -o yaml
  kube get events -A --sort-by=.lastTimestamp | tail -n 60
  kube -n "$operator_namespace" logs deployment/"$release" --tail=200
}
note() { printf '%s\n' "$*" | tee -a "$summary"; }

kube() { "$KUBECTL" "${kube_args[@]}" "$@"; }
helm_() { "$HELM" "${helm_args[@]}" "$@"; }

# ---- profiles ----------------------------------------------------------------------------------

cluster_started=
kafka_started=
local_setup() {
  work="$repo/target/e2e-local"
  mkdir -p "$work"
  say "the local cluster (hack/cluster.sh)"
  bash "$repo/hack/cluster.sh" status >/dev/null 2>&1 || cluster_started=1
  # `up` also on a running cluster: it tops up the free PersistentVolumes.
  rm -f "$work/cluster.env"
  bash "$repo/hack/cluster.sh" up --env-file "$work/cluster.env" >/dev/null || fail "hack/cluster.sh up failed"
  local gateway containerd kubeconfig bin
  if ! { gateway=$(env_get "$work/cluster.env" CLUSTER_GATEWAY) &&
    containerd=$(env_get "$work/cluster.env" CONTAINERD_ADDRESS) &&
    kubeconfig=$(env_get "$work/cluster.env" KUBECONFIG) &&
    bin=$(env_get "$work/cluster.env" K8S_BIN); }; then
    fail "hack/cluster.sh up wrote no KUBECONFIG/K8S_BIN/CLUSTER_GATEWAY/CONTAINERD_ADDRESS to $work/cluster.env"
  fi
  KUBECTL=${KUBECTL:-$bin/kubectl}
  kube_args=(--kubeconfig "$kubeconfig")
  helm_args=(--kubeconfig "$kubeconfig")
  if [[ -z ${HELM:-} ]]; then
    # What `make tools` wrote, else hack/tools.sh itself.
    HELM=$(env_get "$repo/target/tools.env" HELM) ||
      { bash "$repo/hack/tools.sh" install --env-file "$work/tools.env" >/dev/null &&
        HELM=$(env_get "$work/tools.env" HELM); } || fail "hack/tools.sh install failed"
  fi
  [[ -x $HELM ]] || fail "no helm (HELM=$HELM)"

  say "release binaries and the images (hack/image.sh), imported into the node's containerd"
  cargo build --release --manifest-path "$repo/Cargo.toml" -p metricstream-operator -p metricstream-ingest \
    -p metricstream-consumer -p metricstream-tests -p metricstream-bench --bin metricstream-operator \
    --bin metricstream-ingest --bin metricstream-consumer --bin metricstream-load --bin metricstream-bench
  load="$cargo_target/release/metricstream-load"
  local image_out tools_out store_out
  image_out=$(bash "$repo/hack/image.sh" build --binaries "$cargo_target/release") || fail "hack/image.sh build failed"
  tools_out=$(bash "$repo/hack/image.sh" tools) || fail "hack/image.sh tools failed"
  store_out=$(bash "$repo/hack/image.sh" store) || fail "hack/image.sh store failed"
  image=$(sed -n 's/^IMAGE=//p' <<<"$image_out" | tail -n 1)
  tools_image=$(sed -n 's/^TOOLS_IMAGE=//p' <<<"$tools_out" | tail -n 1)
  store_image=$(sed -n 's/^STORE_IMAGE=//p' <<<"$store_out" | tail -n 1)
  CONTAINERD_ADDRESS=$containerd bash "$repo/hack/image.sh" import \
    "$(sed -n 's/^IMAGE_ARCHIVE=//p' <<<"$image_out" | tail -n 1)" \
    "$(sed -n 's/^TOOLS_ARCHIVE=//p' <<<"$tools_out" | tail -n 1)" \
    "$(sed -n 's/^STORE_ARCHIVE=//p' <<<"$store_out" | tail -n 1)" >/dev/null || fail "hack/image.sh import failed"
  echo "image $image, tools image $tools_image, store image $store_image"

  say "a Kafka broker on the node's bridge address $gateway (hack/kafka.sh)"
  local kafka_port=${E2E_KAFKA_PORT:-29092}
  kafka_env=(env METRICSTREAM_KAFKA_STATE="$work/kafka" KAFKA_HOST="$gateway" KAFKA_PORT="$kafka_port"
    KAFKA_CONTROLLER_PORT="$((kafka_port + 1))" KAFKA_SECURE_PORT="$((kafka_port + 2))")
  if ! "${kafka_env[@]}" bash "$repo/hack/kafka.sh" status >/dev/null 2>&1; then kafka_started=1; fi
  rm -f "$work/kafka.env"
  "${kafka_env[@]}" bash "$repo/hack/kafka.sh" up --env-file "$work/kafka.env" >/dev/null || fail "hack/kafka.sh up failed"
  kafka_bootstrap=$(env_get "$work/kafka.env" KAFKA_BOOTSTRAP) || fail "hack/kafka.sh up wrote no KAFKA_BOOTSTRAP"

  stream_url=([web-kafka]="http://$gateway:30080" [web-file]="http://$gateway:30081" [web-rw]="http://$gateway:30082"
    [web-spill]="http://$gateway:30083")
  store_url="http://$gateway:30428"
  helm_values=(--set "image.repository=${image%:*}" --set "image.tag=${image##*:}" --set image.pullPolicy=Never
    --set "test.image=$tools_image")
  reader_image=$tools_image
  timeout=${E2E_TIMEOUT:-300}
  # The Kafka stream: the admin API makes the topic (Strimzi's operators cannot be had here);
  # Retain shows that deleting the stream keeps the data.
  kafka_stream_manifest=$(
    cat <<EOF
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata:
  name: web-kafka
  namespace: $streams_namespace
spec:
  backend: kafka
  partitions: 4
  kafka:
    bootstrapServers: $kafka_bootstrap
    topicManagement: admin
    replicationFactor: 1
  ingest:
    replicas: 1
    authSecretRef: {name: metricstream-tokens}
  consumer:
    replicas: 1
    sinkStorage: 1Gi
  deletionPolicy: Retain
EOF
  )
}

local_teardown() {
  stop_prometheus # step alerts' (hack/e2e-observe.sh)
  [[ ${E2E_KEEP:-} == 1 ]] && { echo "E2E_KEEP=1: leaving the cluster and the broker running"; return 0; }
  if [[ -n $kafka_started ]]; then "${kafka_env[@]}" bash "$repo/hack/kafka.sh" down || true; fi
  if [[ -n $cluster_started ]]; then bash "$repo/hack/cluster.sh" down || true; fi
}

kind_setup() {
  work="$repo/target/e2e-kind"
  mkdir -p "$work"
  local cluster=${E2E_CLUSTER:-metricstream} strimzi_version=${STRIMZI_VERSION:-1.2.0}
  image=${E2E_IMAGE:-metricstream:e2e}
  local tool
  for tool in docker kind kubectl helm cargo; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (kind needs Docker, kind, kubectl, helm and a Rust toolchain)"
  done
  docker info >/dev/null 2>&1 || fail "docker is installed but no Docker engine answers"
  KUBECTL=${KUBECTL:-kubectl} HELM=${HELM:-helm}
  kube_args=(--context "kind-$cluster")
  helm_args=(--kube-context "kind-$cluster")
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then say "reusing kind cluster $cluster"; else
    say "creating kind cluster $cluster (kind-config.yaml)"
    kind create cluster --name "$cluster" --config "$repo/kind-config.yaml" --wait 900s
  fi
  say "Strimzi $strimzi_version and a single-node KRaft Kafka"
  helm_ upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator --version "$strimzi_version" \
    --namespace kafka --create-namespace --wait --timeout 900s
  kube apply -f "$repo/examples/kafka-cluster.yaml"
  kube -n kafka wait kafka/metricstream-kafka --for=condition=Ready --timeout=900s
  say "building $image and loading it into kind"
  docker build -t "$image" "$repo"
  kind load docker-image "$image" --name "$cluster"
  cargo build --release --manifest-path "$repo/Cargo.toml" -p metricstream-tests --bin metricstream-load
  load="$cargo_target/release/metricstream-load"
  stream_url=([web-kafka]=http://127.0.0.1:30080 [web-file]=http://127.0.0.1:30081 [web-rw]=http://127.0.0.1:30082)
  store_url=http://127.0.0.1:30428
  store_image=docker.io/victoriametrics/victoria-metrics:v$(bash "$repo/hack/victoriametrics.sh" version | sed -n 's/^VICTORIAMETRICS_VERSION=//p')
  helm_values=(--set "image.repository=${image%:*}" --set "image.tag=${image##*:}" --set image.pullPolicy=Never)
  reader_image=docker.io/library/busybox:1.37
  timeout=${E2E_TIMEOUT:-900}
  kafka_stream_manifest=$(sed 's/partitions: 6/partitions: 4/' "$repo/examples/metricstream-kafka.yaml")
}

# ---- helpers -----------------------------------------------------------------------------------

condition() { # stream type -> "status reason message"
  kube -n "$streams_namespace" get metricstream "$1" \
    -o jsonpath="{.status.conditions[?(@.type==\"$2\")].status} {.status.conditions[?(@.type==\"$2\")].reason} {.status.conditions[?(@.type==\"$2\")].message}"
}

is_ready() { [[ $(condition "$1" Ready) == True* ]]; } # stream

wait_ready() { # stream...
  local stream deadline=$(($(now_ms) + timeout * 1000))
  for stream in "$@"; do
    if ! POLL_INTERVAL=1 wait_until_ms "$deadline" is_ready "$stream"; then
      kube -n "$streams_namespace" describe metricstream "$stream" >"$work/$stream.describe.txt" 2>&1 || true
      kube -n "$streams_namespace" get pods -o wide >>"$work/$stream.describe.txt" 2>&1 || true
      fail "MetricStream $stream not Ready within ${timeout}s: $(condition "$stream" Ready) (see $work/$stream.describe.txt)"
    fi
    local type
    for type in BackendReady IngestAvailable ConsumerAvailable; do
      [[ $(condition "$stream" "$type") == True* ]] || fail "$stream is Ready but $type is $(condition "$stream" "$type")"
    done
  done
}

# The names of a stream's pods of a component that are not being deleted.
live_pods() { # stream component
  kube -n "$streams_namespace" get pods -l "metricstream.dev/stream=$1,app.kubernetes.io/component=$2" \
    -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}} {{end}}{{end}}'
}

patch_stream() { # stream json-merge-patch
  kube -n "$streams_namespace" patch metricstream "$1" --type merge -p "$2" >/dev/null
}

observed() { # stream generation
  [[ $(kube -n "$streams_namespace" get metricstream "$1" -o jsonpath='{.status.observedGeneration}') == "$2" ]]
}

# Waits until the stream's workloads have rolled out what the operator last applied.
wait_rollout() { # stream...
  local stream d
  for stream in "$@"; do
    # The operator applies after it sees the change: wait for it to observe the new generation.
    local generation
    generation=$(kube -n "$streams_namespace" get metricstream "$stream" -o jsonpath='{.metadata.generation}')
    POLL_INTERVAL=0.5 wait_until "$timeout" observed "$stream" "$generation" ||
      fail "the operator did not observe generation $generation of $stream"
    for d in "$stream-ingest" "$stream-consumer"; do
      kube -n "$streams_namespace" rollout status "deployment/$d" --timeout="${timeout}s" >/dev/null ||
        fail "deployment $d did not roll out"
    done
  done
  wait_ready "$@"
}

# Copies the sink out through the reader pod into a fresh directory and verifies it.
sink_exactly_once() { # reader-pod sink-dir expected-file verify-output
  rm -rf "$2" && mkdir -p "$2"
  kube -n "$streams_namespace" exec "$1" -- tar cf - -C /sink . | tar xf - -C "$2"
  "$load" verify --sink-dir "$2" --expected "$3" >"$4" 2>&1
}

# Copies the stream's sink out of the cluster through a pod that mounts its volume read-only (the
# runtime image has no shell or tar), then checks every acknowledged metric is there once.
verify_sink() { # stream expected-file label
  local stream=$1 expected=$2 label=$3 reader="$1-sink-reader"
  kube -n "$streams_namespace" delete pod "$reader" --ignore-not-found --wait=true >/dev/null
  kube -n "$streams_namespace" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $reader
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: reader
      image: $reader_image
      imagePullPolicy: IfNotPresent
      command: [sleep, "3600"]
      resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}
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
  kube -n "$streams_namespace" wait "pod/$reader" --for=condition=Ready --timeout="${timeout}s" >/dev/null ||
    fail "the sink reader of $stream did not start"
  local sink="$work/$stream-sink-$label" out="$work/$stream.$label.verify.txt"
  if ! POLL_INTERVAL=3 wait_until 300 sink_exactly_once "$reader" "$sink" "$expected" "$out"; then
    cat "$out"
    fail "the sink of $stream ($label) is still not exactly once after 300 s (see $out)"
  fi
  kube -n "$streams_namespace" delete pod "$reader" --wait=false >/dev/null
  note "  $stream $label sink: $(tr '\n' ' ' <"$out" | sed 's/  */ /g')"
}

send() { # stream label extra-args...
  local stream=$1 label=$2
  shift 2
  "$load" send --url "${stream_url[$stream]}" --token-file "$work/token" --request-timeout-secs 10 \
    --expected-out "$work/$stream.$label.expected.json" "$@" >"$work/$stream.$label.send.txt" 2>&1
}

# ---- the scenario ------------------------------------------------------------------------------

step_install() {
  say "1. namespaces (restricted pod security), helm install, helm test"
  local ns
  for ns in "$operator_namespace" "$streams_namespace"; do
    kube create namespace "$ns" --dry-run=client -o yaml | kube apply -f - >/dev/null
    kube label namespace "$ns" --overwrite pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest >/dev/null
  done
  install_started=$SECONDS
  helm_ upgrade --install "$release" "$repo/charts/metricstream-operator" --namespace "$operator_namespace" \
    "${helm_values[@]}" --wait --timeout "${timeout}s" >"$work/helm-install.txt" ||
    fail "helm install failed (see $work/helm-install.txt)"
  helm_ test "$release" --namespace "$operator_namespace" --timeout 120s >"$work/helm-test.txt" 2>&1 ||
    { cat "$work/helm-test.txt"; fail "helm test failed"; }
  note "helm install --wait: $((SECONDS - install_started)) s; helm test: passed"
}

step_streams() {
  say "2. the token Secret and the streams web-file and web-kafka"
  kube apply -f "$repo/examples/token-secret.yaml" >/dev/null
  kube apply -f "$repo/examples/metricstream-file.yaml" >/dev/null
  kube apply -f - >/dev/null <<<"$kafka_stream_manifest"
  kube apply -f "$repo/examples/ingest-nodeports.yaml" >/dev/null
  wait_ready "${streams[@]}"
  note "helm install to both streams Ready (IngestAvailable, ConsumerAvailable True): $((SECONDS - install_started)) s"
}

step_first_load() {
  say "3. the prototype's load (${clients} x ${requests} x ${metrics}) through each ingest Service"
  local stream
  for stream in "${streams[@]}"; do
    send "$stream" first --clients "$clients" --requests "$requests" --metrics "$metrics" ||
      { cat "$work/$stream.first.send.txt"; fail "the first load on $stream was not fully acknowledged"; }
    note "  $stream load: $(tr '\n' ' ' <"$work/$stream.first.send.txt" | sed 's/  */ /g')"
    verify_sink "$stream" "$work/$stream.first.expected.json" first
  done
}

# ---- remote write: a store in the cluster ------------------------------------------------------

# The local node's volumes are Retain (a deleted claim's volume is not reused): `up` adds new ones
# so that later steps still find free volumes. kind provisions them.
top_up_volumes() {
  [[ $profile != local ]] || bash "$repo/hack/cluster.sh" up >/dev/null ||
    fail "hack/cluster.sh up (topping up the volumes) failed"
}

# VictoriaMetrics single-node as the sink's store: basic auth (its password from a Secret),
# deduplication (a replayed batch is stored once), a retention that keeps the load's 2023
# timestamps, data in an emptyDir. One Service: its ClusterIP for the consumers (no DNS on the
# local node), its NodePort 30428 for reading back from here.
deploy_store() {
  kube -n "$streams_namespace" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: $store-auth}
stringData:
  password: $store_password
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: $store
  labels: {app.kubernetes.io/name: $store}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector:
    matchLabels: {app.kubernetes.io/name: $store}
  template:
    metadata:
      labels: {app.kubernetes.io/name: $store}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: victoriametrics
          image: $store_image
          imagePullPolicy: IfNotPresent
          args:
            - -storageDataPath=/storage
            - -httpListenAddr=:8428
            - -retentionPeriod=100y
            - -dedup.minScrapeInterval=1ms
            - -httpAuth.username=$store_user
            - -httpAuth.password=file:///etc/store-auth/password
            - -loggerLevel=WARN
          ports:
            - {name: http, containerPort: 8428}
          readinessProbe:
            httpGet: {path: /health, port: http}
            periodSeconds: 2
          resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 512Mi}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          volumeMounts:
            - {name: storage, mountPath: /storage}
            - {name: auth, mountPath: /etc/store-auth, readOnly: true}
      volumes:
        - {name: storage, emptyDir: {}}
        - name: auth
          secret: {secretName: $store-auth, items: [{key: password, path: password}]}
---
apiVersion: v1
kind: Service
metadata: {name: $store}
spec:
  type: NodePort
  selector: {app.kubernetes.io/name: $store}
  ports:
    - {name: http, port: 8428, targetPort: http, nodePort: 30428, protocol: TCP}
EOF
  kube -n "$streams_namespace" rollout status "deployment/$store" --timeout="${timeout}s" >/dev/null ||
    fail "the store (VictoriaMetrics) did not become ready"
}

# The stream web-rw: a file queue, consumers writing to the store's ClusterIP over remote write
# with the store's basic auth, and a NodePort (30082) in front of its ingest.
deploy_remote_write_stream() { # store-cluster-ip
  kube -n "$streams_namespace" apply -f - >/dev/null <<EOF
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: web-rw}
spec:
  backend: file
  partitions: 4
  file: {storage: 1Gi}
  ingest:
    replicas: 1
    authSecretRef: {name: metricstream-tokens}
  consumer:
    replicas: 1
    sinkStorage: 1Gi
    sink:
      type: remoteWrite
      remoteWrite:
        url: http://$1:8428/api/v1/write
        basicAuth:
          username: $store_user
          passwordSecretRef: {name: $store-auth}
        timeoutSeconds: 10
  deletionPolicy: Delete
---
apiVersion: v1
kind: Service
metadata: {name: web-rw-ingest-nodeport}
spec:
  type: NodePort
  selector:
    app.kubernetes.io/component: ingest
    metricstream.dev/stream: web-rw
  ports:
    - {name: http, port: 8080, targetPort: http, nodePort: 30082, protocol: TCP}
EOF
}

# Something answers HTTP at the URL (any status).
answers() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") != 000 ]]; }

# Flushes the store, exports the load's metric and checks it against the expected file.
store_exactly_once() { # expected-file export-file verify-output
  curl -sSf -K "$work/store.curlrc" "$store_url/internal/force_flush" >/dev/null 2>"$3" &&
    curl -sSf -K "$work/store.curlrc" -G "$store_url/api/v1/export" \
      --data-urlencode 'match[]={__name__="m"}' -o "$2" 2>"$3" &&
    "$load" verify-export --export "$2" --expected "$1" >"$3" 2>&1
}

verify_store() { # expected-file label
  local export="$work/web-rw.$2.export.jsonl" out="$work/web-rw.$2.verify.txt"
  if ! POLL_INTERVAL=2 wait_until 300 store_exactly_once "$1" "$export" "$out"; then
    cat "$out"
    fail "the store of web-rw ($2) does not hold the load exactly once after 300 s (see $out)"
  fi
  note "  web-rw $2 store: $(grep -E '^(export|expected|problems):' "$out" | tr '\n' ' ' | sed 's/  */ /g')"
}

# GOT := the stream's condition (status reason message); it matches the regex.
condition_is() { # stream type regex
  GOT=$(condition "$1" "$2") && [[ $GOT =~ $3 ]]
}

# Waits until the stream's condition matches the regex; WAITED := the seconds it took.
wait_condition() { # stream type regex
  local t0=$SECONDS
  GOT=
  POLL_INTERVAL=1 wait_until "$timeout" condition_is "$@" ||
    fail "$1: $2 should match /$3/; it is: $GOT"
  WAITED=$((SECONDS - t0))
}

step_remote_write() {
  say "3b. web-rw: consumers writing over remote write to VictoriaMetrics in the cluster"
  local started store_ip
  kube apply -f "$repo/examples/token-secret.yaml" >/dev/null
  store_password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf 'user = "%s:%s"\n' "$store_user" "$store_password" >"$work/store.curlrc")
  deploy_store
  store_ip=$(kube -n "$streams_namespace" get service "$store" -o jsonpath='{.spec.clusterIP}')
  [[ -n $store_ip ]] || fail "the store's Service has no ClusterIP"
  started=$SECONDS
  deploy_remote_write_stream "$store_ip"
  wait_ready web-rw
  note "  web-rw (remoteWrite to http://$store_ip:8428, basic auth) Ready: $((SECONDS - started)) s"
  wait_condition web-rw SinkAvailable '^True SinkWriting'
  note "  web-rw SinkAvailable: $GOT"
  # The NodePort was made with the stream: kube-proxy may not forward it yet (refused).
  POLL_INTERVAL=0.5 wait_until 60 answers "${stream_url[web-rw]}/" || fail "web-rw's NodePort does not answer"

  send web-rw first --clients "$clients" --requests "$requests" --metrics "$metrics" ||
    { cat "$work/web-rw.first.send.txt"; fail "the load on web-rw was not fully acknowledged"; }
  note "  web-rw load: $(tr '\n' ' ' <"$work/web-rw.first.send.txt" | sed 's/  */ /g')"
  verify_store "$work/web-rw.first.expected.json" first

  echo "the store scaled to 0 under a small load: the queue keeps it, the status says why"
  kube -n "$streams_namespace" scale "deployment/$store" --replicas=0 >/dev/null
  POLL_INTERVAL=1 wait_until "$timeout" none_left pods "app.kubernetes.io/name=$store" ||
    fail "the store's pod did not go: $GOT"
  local down_started=$SECONDS
  started=$SECONDS
  send web-rw outage --clients 4 --requests 25 --metrics 5 ||
    { cat "$work/web-rw.outage.send.txt"; fail "the ingest did not acknowledge the load while the store was down"; }
  wait_condition web-rw SinkAvailable "^False SinkFailing .*$store_ip:8428"
  note "  store down: web-rw SinkAvailable after $((SECONDS - started)) s: $GOT"
  local down_for=20
  if ((SECONDS - started < down_for)); then sleep $((down_for - (SECONDS - started))); fi
  kube -n "$streams_namespace" scale "deployment/$store" --replicas=1 >/dev/null
  kube -n "$streams_namespace" rollout status "deployment/$store" --timeout="${timeout}s" >/dev/null ||
    fail "the store did not come back"
  started=$SECONDS
  wait_condition web-rw SinkAvailable '^True SinkWriting'
  note "  store back (empty: an emptyDir), $((started - down_started)) s after it went: SinkAvailable True again after $WAITED s"
  verify_store "$work/web-rw.outage.expected.json" outage
  note "  web-rw: the load sent while the store was down is in it exactly once $((SECONDS - started)) s after it came back"

  kube -n "$streams_namespace" delete metricstream web-rw --wait=true --timeout="${timeout}s" >/dev/null
  kube -n "$streams_namespace" delete service web-rw-ingest-nodeport "$store" --ignore-not-found >/dev/null
  kube -n "$streams_namespace" delete deployment "$store" --ignore-not-found --wait=true >/dev/null
  kube -n "$streams_namespace" delete secret "$store-auth" --ignore-not-found >/dev/null
  top_up_volumes
}

# ---- spill: a Kafka-backed stream rides out a broker stop -----------------------------------------

step_spill() {
  say "3c. web-spill: a Kafka-backed stream with a spill (StatefulSet, a volume per ingest pod) rides out a broker stop"
  if [[ $profile != local ]]; then
    echo "not run on kind: its broker is Strimzi's, which this script does not stop (make e2e-local runs it)"
    return 0
  fi
  local started
  kube apply -f "$repo/examples/token-secret.yaml" >/dev/null
  kube -n "$streams_namespace" apply -f - >/dev/null <<EOF
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: web-spill}
spec:
  backend: kafka
  partitions: 4
  kafka:
    bootstrapServers: $kafka_bootstrap
    topicManagement: admin
    replicationFactor: 1
    topic: web-spill
    spill: {enabled: true, size: 256Mi}
  ingest:
    replicas: 1
    authSecretRef: {name: metricstream-tokens}
  consumer:
    replicas: 1
    sinkStorage: 1Gi
  deletionPolicy: Delete
---
apiVersion: v1
kind: Service
metadata: {name: web-spill-ingest-nodeport}
spec:
  type: NodePort
  selector:
    app.kubernetes.io/component: ingest
    metricstream.dev/stream: web-spill
  ports:
    - {name: http, port: 8080, targetPort: http, nodePort: 30083, protocol: TCP}
EOF
  started=$SECONDS
  wait_ready web-spill
  kube -n "$streams_namespace" get statefulset web-spill-ingest >/dev/null 2>&1 ||
    fail "web-spill's ingest is not a StatefulSet"
  note "  web-spill (spill on: a StatefulSet with a claim per pod) Ready: $((SECONDS - started)) s"
  POLL_INTERVAL=0.5 wait_until 60 answers "${stream_url[web-spill]}/" || fail "web-spill's NodePort does not answer"
  send web-spill before --clients 4 --requests 25 --metrics 5 ||
    { cat "$work/web-spill.before.send.txt"; fail "the load on web-spill was not fully acknowledged"; }

  echo "the broker stopped (SIGTERM): the ingest keeps acknowledging into its spill"
  "${kafka_env[@]}" bash "$repo/hack/kafka.sh" stop-broker >/dev/null || fail "hack/kafka.sh stop-broker failed"
  local down_started=$SECONDS
  if ! send web-spill outage --clients 4 --requests 100 --metrics 5; then
    cat "$work/web-spill.outage.send.txt"
    "${kafka_env[@]}" bash "$repo/hack/kafka.sh" start-broker >/dev/null || true
    fail "the ingest did not acknowledge every request while the broker was down"
  fi
  note "  broker down: web-spill load $(tr '\n' ' ' <"$work/web-spill.outage.send.txt" | sed 's/  */ /g')"
  local down_for=20
  if ((SECONDS - down_started < down_for)); then sleep $((down_for - (SECONDS - down_started))); fi
  "${kafka_env[@]}" bash "$repo/hack/kafka.sh" start-broker >/dev/null || fail "hack/kafka.sh start-broker failed"
  note "  broker back after $((SECONDS - down_started)) s"
  started=$SECONDS
  verify_sink web-spill "$work/web-spill.before.expected.json" before
  verify_sink web-spill "$work/web-spill.outage.expected.json" outage
  note "  web-spill: what was acknowledged while the broker was down is in the sink exactly once $((SECONDS - started)) s after it came back"

  kube -n "$streams_namespace" delete metricstream web-spill --wait=true --timeout="${timeout}s" >/dev/null
  kube -n "$streams_namespace" delete service web-spill-ingest-nodeport --ignore-not-found >/dev/null
  # A spill's claims outlive the stream (they may hold acknowledged data): delete them here.
  kube -n "$streams_namespace" delete pvc -l metricstream.dev/stream=web-spill --ignore-not-found >/dev/null
  top_up_volumes
}

step_disruptions() {
  say "4. a second load for ${load_seconds}s on both streams while they scale, repartition, roll and lose pods"
  local stream pids=() started=$SECONDS
  for stream in "${streams[@]}"; do
    send "$stream" second --clients "$load_clients" --duration-secs "$load_seconds" --metrics 5 \
      --pause-ms "$load_pause_ms" &
    pids+=($!)
  done
  sleep 5
  echo "ingest replicas 1 -> 2"
  for stream in "${streams[@]}"; do patch_stream "$stream" '{"spec":{"ingest":{"replicas":2}}}'; done
  wait_rollout "${streams[@]}"
  echo "one ingest pod and one consumer pod deleted per stream"
  for stream in "${streams[@]}"; do
    local pod
    for component in ingest consumer; do
      pod=$(kube -n "$streams_namespace" get pods -l "metricstream.dev/stream=$stream,app.kubernetes.io/component=$component" \
        -o jsonpath='{.items[0].metadata.name}')
      [[ -n $pod ]] || fail "no $component pod of $stream to delete"
      kube -n "$streams_namespace" delete pod "$pod" --wait=false >/dev/null
    done
  done
  sleep 3
  wait_rollout "${streams[@]}"
  echo "ingest replicas 2 -> 1"
  for stream in "${streams[@]}"; do patch_stream "$stream" '{"spec":{"ingest":{"replicas":1}}}'; done
  wait_rollout "${streams[@]}"
  echo "partitions 4 -> 8"
  for stream in "${streams[@]}"; do patch_stream "$stream" '{"spec":{"partitions":8}}'; done
  wait_rollout "${streams[@]}"
  echo "a config change that rolls the pods (ingest maxBodyBytes)"
  local -A before=()
  for stream in "${streams[@]}"; do before[$stream]=$(live_pods "$stream" ingest); done
  for stream in "${streams[@]}"; do patch_stream "$stream" '{"spec":{"ingest":{"maxBodyBytes":2097152}}}'; done
  wait_rollout "${streams[@]}"
  for stream in "${streams[@]}"; do
    local after old
    after=" $(live_pods "$stream" ingest) "
    for old in ${before[$stream]}; do
      [[ $after != *" $old "* ]] || fail "the config change did not roll $stream's ingest pod $old"
    done
  done
  local changes_done=$((SECONDS - started))
  local failed=0 i=0
  for stream in "${streams[@]}"; do
    if ! wait "${pids[$i]}"; then failed=1; fi
    i=$((i + 1))
  done
  ((changes_done < load_seconds)) ||
    fail "the changes took ${changes_done}s, longer than the load (${load_seconds}s): raise E2E_LOAD_SECONDS"
  for stream in "${streams[@]}"; do
    note "  $stream second load: $(grep -v '^ *\.\.\. ' "$work/$stream.second.send.txt" | tr '\n' ' ' | sed 's/  */ /g')"
  done
  ((failed == 0)) || fail "requests were refused or timed out during the changes (see $work/*.second.send.txt)"
  for stream in "${streams[@]}"; do verify_sink "$stream" "$work/$stream.second.expected.json" second; done
}

step_upgrade() {
  say "5. helm upgrade with changed values"
  local before after
  before=$(kube -n "$operator_namespace" get pods -l app.kubernetes.io/name=metricstream-operator -o jsonpath='{.items[*].metadata.uid}')
  helm_ upgrade "$release" "$repo/charts/metricstream-operator" --namespace "$operator_namespace" \
    "${helm_values[@]}" --set resyncSeconds=120 --set logFormat=text --wait --timeout "${timeout}s" \
    >"$work/helm-upgrade.txt" || fail "helm upgrade failed"
  after=$(kube -n "$operator_namespace" get pods -l app.kubernetes.io/name=metricstream-operator \
    --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.uid}')
  [[ -n $after && $after != "$before" ]] || fail "helm upgrade did not roll the operator (pods before: $before, after: $after)"
  # The test reaches the operator through its Service, whose endpoints move to the new pod only
  # after the rollout; right after `--wait` kube-proxy may still be catching up (seen once), so a
  # failed test is tried again, twice at most, and every failed attempt is reported.
  local attempt
  for attempt in 1 2 3; do
    if helm_ test "$release" --namespace "$operator_namespace" --timeout 120s >>"$work/helm-test.txt" 2>&1; then
      break
    fi
    kube -n "$operator_namespace" logs "$release-test-readyz" >>"$work/helm-test.txt" 2>&1 || true
    ((attempt < 3)) || { cat "$work/helm-test.txt"; fail "helm test after the upgrade failed 3 times"; }
    note "  helm test after the upgrade failed (attempt $attempt; see helm-test.txt); again in 5 s"
    sleep 5
  done
  wait_ready "${streams[@]}"
  note "helm upgrade: the operator rolled, helm test passed, both streams Ready"
}

# expect_problem stream condition-type regex: the condition is False with a message matching the
# regex, and a Warning Event on the stream says so too.
expect_problem() {
  local stream=$1 type=$2 regex=$3 deadline=$(($(now_ms) + timeout * 1000))
  GOT=
  if ! POLL_INTERVAL=1 wait_until_ms "$deadline" condition_matches "$stream" "$type" "$regex"; then
    kube -n "$streams_namespace" describe metricstream "$stream" >"$work/$stream.describe.txt" 2>&1 || true
    kube -n "$streams_namespace" get pods -o wide >>"$work/$stream.describe.txt" 2>&1 || true
    fail "$stream: $type should be False and match /$regex/; it is: $GOT"
  fi
  local got=$GOT
  POLL_INTERVAL=1 wait_until_ms "$deadline" warning_matches "$stream" "$regex" ||
    fail "$stream: no Warning Event matching /$regex/ (events: $GOT)"
  note "  $stream: $type = $got"
}

# GOT := the stream's condition (status reason message); it is False and matches the regex.
condition_matches() { # stream type regex
  GOT=$(condition "$1" "$2") && [[ $GOT == False* && $GOT =~ $3 ]]
}

# GOT := the stream's Warning Events (reason: note, a line each); one matches the regex.
warning_matches() { # stream regex
  GOT=$(kube -n "$streams_namespace" get events.events.k8s.io \
    --field-selector "regarding.name=$1,regarding.kind=MetricStream,type=Warning" \
    -o jsonpath='{range .items[*]}{.reason}: {.note}{"\n"}{end}') && [[ $GOT =~ $2 ]]
}

step_mistakes() {
  say "6. a user's mistakes in the status: an image that cannot be pulled, a crash loop, a PVC that cannot bind"
  kube apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata: {name: malformed-tokens, namespace: $streams_namespace}
stringData:
  tokens: |
    this line has no client id and no equals sign
---
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: bad-image, namespace: $streams_namespace}
spec:
  backend: file
  partitions: 1
  image: localhost/metricstream/does-not-exist:1
  file: {storage: 1Gi}
  consumer: {sinkStorage: 1Gi}
---
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: crash-loop, namespace: $streams_namespace}
spec:
  backend: file
  partitions: 1
  file: {storage: 1Gi}
  ingest: {authSecretRef: {name: malformed-tokens}}
  consumer: {sinkStorage: 1Gi}
---
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: unbound-volume, namespace: $streams_namespace}
spec:
  backend: file
  partitions: 1
  file: {storage: 1Gi, storageClassName: e2e-no-such-class}
  consumer: {sinkStorage: 1Gi, storageClassName: e2e-no-such-class}
EOF
  expect_problem bad-image IngestAvailable 'ImageUnavailable.*(ErrImagePull|ImagePullBackOff)'
  expect_problem crash-loop IngestAvailable 'PodCrashLooping.*(CrashLoopBackOff|exit code).*tokens file'
  expect_problem unbound-volume IngestAvailable 'PodUnschedulable.*unbound.*PersistentVolumeClaim'
  kube -n "$streams_namespace" delete metricstream bad-image crash-loop unbound-volume --wait=true --timeout="${timeout}s" >/dev/null
  kube -n "$streams_namespace" delete secret malformed-tokens >/dev/null
}

# GOT := the objects of these kinds with this label selector; there are none.
none_left() { # kinds selector
  GOT=$(kube -n "$streams_namespace" get "$1" -l "$2" -o name) && [[ -z $GOT ]]
}

step_delete() {
  say "7. streams deleted (per their deletionPolicy), helm uninstall"
  local stream=web-file
  local selector="metricstream.dev/stream=$stream"
  local kinds=deployments,services,configmaps,persistentvolumeclaims
  [[ -n $(kube -n "$streams_namespace" get "$kinds" -l "$selector" -o name) ]] ||
    fail "no children of $stream labelled $selector before its deletion: the check below would prove nothing"
  kube -n "$streams_namespace" delete metricstream "$stream" --wait=true --timeout="${timeout}s" >/dev/null
  POLL_INTERVAL=1 wait_until "$timeout" none_left "$kinds" "$selector" ||
    fail "children of the deleted $stream are still there: $GOT"
  note "  $stream deleted (deletionPolicy Delete): its Deployments, Services, ConfigMap and PVCs are gone"
  local policy topic
  policy=$(kube -n "$streams_namespace" get metricstream web-kafka -o jsonpath='{.spec.deletionPolicy}')
  topic=$(kube -n "$streams_namespace" get metricstream web-kafka -o jsonpath='{.status.topic}')
  kube -n "$streams_namespace" delete metricstream web-kafka --wait=true --timeout="${timeout}s" >/dev/null
  if [[ $profile == local && $policy == Retain ]]; then
    "${kafka_env[@]}" bash "$repo/hack/kafka.sh" tool topics --bootstrap-server "$kafka_bootstrap" --describe \
      --topic "$topic" >"$work/kept-topic.txt" 2>&1 || fail "the Retain stream's topic $topic is gone"
    note "  web-kafka deleted (deletionPolicy Retain): its topic $topic is kept"
  fi
  helm_ uninstall "$release" --namespace "$operator_namespace" --wait --timeout "${timeout}s" >/dev/null
  kube get crd metricstreams.metricstream.dev >/dev/null || fail "helm uninstall removed the MetricStream CRD"
  note "helm uninstall: the release is gone, the MetricStream CRD kept"
}

run() {
  case $profile in
    local) local_setup ;;
    kind) kind_setup ;;
  esac
  summary="$work/summary.txt"
  : >"$summary"
  [[ -n $token ]] || fail "examples/token-secret.yaml has no e2e-load token line"
  (umask 077 && printf '%s\n' "$token" >"$work/token")
  local t0=$SECONDS
  note "e2e ($profile), $(date -u +%FT%TZ)"
  local step
  for step in ${E2E_STEPS:-install streams first_load remote_write spill autoscale alerts disruptions upgrade mistakes delete}; do
    declare -F "step_$step" >/dev/null || fail "E2E_STEPS: no step $step"
    "step_$step"
  done
  note "e2e ($profile): passed in $((SECONDS - t0)) s (steps: ${E2E_STEPS:-all})"
  say "summary ($summary)"
  cat "$summary"
}

case $profile in
  local)
    trap local_teardown EXIT
    run
    ;;
  kind) run ;;
  kind-down)
    if kind get clusters 2>/dev/null | grep -qx "${E2E_CLUSTER:-metricstream}"; then
      kind delete cluster --name "${E2E_CLUSTER:-metricstream}"
    fi
    ;;
  *) usage ;;
esac
