# shellcheck shell=bash disable=SC2154  # hack/e2e.sh's variables (work, repo, profile, ...)
# hack/e2e.sh's steps for issue 18 (autoscaling and observing), sourced by it: they use its
# helpers (kube, say, note, fail, send, verify_sink, wait_ready, ...) and its settings.
#
#   autoscale   per backend (file, kafka): a stream whose consumers write at most
#               E2E_SCALE_RATE_LIMIT metrics/s each, under a load one consumer cannot drain: the
#               operator scales the consumers up (never above the 4 partitions), the lag returns
#               under the target, and after the load they come back to 1; every acknowledged metric
#               in the sink exactly once across the rebalances. The timeline (lag, desired and
#               running consumers every 3 s) goes to autoscale-<backend>.csv and, as a text chart,
#               to the summary.
#   alerts      a real Prometheus (hack/prometheus.sh's build) on this machine discovers the pods
#               through the API server (kubernetes_sd, the chart's PodMonitor relabelling) and
#               evaluates the chart's alert rules (files/alerts.yaml, with `for:` and the lag
#               threshold shortened so a run can wait for them); web-kafka's consumers stopped
#               under load fire MetricStreamLagGrowing; started again, the load reaches the sink
#               exactly once.

scale_target_lag=100
scale_rate_limit=${E2E_SCALE_RATE_LIMIT:-400}
scale_load_seconds=${E2E_SCALE_LOAD_SECONDS:-60}

scale_status() { # stream -> "lag desired running"
  kube -n "$streams_namespace" get metricstream "$1" \
    -o jsonpath='{.status.autoscaling.lagRecords} {.status.autoscaling.desiredReplicas} {.status.consumerReplicas}'
}

# Samples the stream's autoscaling status every 3 s into CSV until killed.
sample_scaling() { # stream csv
  local t0=$SECONDS lag desired running
  echo "seconds,lag_records,desired_consumers,running_consumers" >"$2"
  while :; do
    read -r lag desired running <<<"$(scale_status "$1" 2>/dev/null || true)"
    echo "$((SECONDS - t0)),${lag:-},${desired:-},${running:-}" >>"$2"
    sleep 3
  done
}

# The CSV as a text chart: one line per sample, consumers as digits, lag as a bar.
scale_chart() { # csv marker-seconds
  awk -F, -v load_end="$2" 'NR == 1 { next }
    { t[NR] = $1; lag[NR] = $2; d[NR] = $3; r[NR] = $4; if ($2 + 0 > max) max = $2 + 0; n = NR }
    END {
      printf "    %5s  %-7s  %-7s  %s\n", "t (s)", "desired", "running", "lag (records; bar: up to " max ")"
      for (i = 2; i <= n; i++) {
        bar = ""; width = (max > 0) ? int(40 * lag[i] / max + 0.5) : 0
        for (j = 0; j < width; j++) bar = bar "#"
        mark = (t[i] >= load_end && !shown) ? "  <- load ends" : ""
        if (mark != "") shown = 1
        printf "    %5s  %-7s  %-7s  %-40s %s%s\n", t[i], d[i], r[i], bar, (lag[i] == "" ? "?" : lag[i]), mark
      }
    }' "$1"
}

scaled_event() { # stream reason
  kube -n "$streams_namespace" get events --field-selector "involvedObject.name=$1,reason=$2" \
    -o jsonpath='{.items[*].message}' 2>/dev/null | grep -q .
}

consumers_back_to_one() { # stream
  local lag desired running
  read -r lag desired running <<<"$(scale_status "$1")"
  [[ $desired == 1 && $running == 1 ]]
}

autoscale_one() { # backend
  local backend=$1 stream="web-scale-$1" port backend_spec
  case $backend in
    file)
      port=30084
      backend_spec="backend: file
  file: {storage: 1Gi}"
      ;;
    kafka)
      port=30085
      if [[ $profile == local ]]; then
        backend_spec="backend: kafka
  kafka: {bootstrapServers: $kafka_bootstrap, topicManagement: admin, replicationFactor: 1, topic: $stream}"
      else
        backend_spec="backend: kafka
  kafka: {bootstrapServers: metricstream-kafka-kafka-bootstrap.kafka.svc:9092, topicManagement: strimzi,
    strimzi: {cluster: metricstream-kafka, namespace: kafka}, replicationFactor: 1}"
      fi
      ;;
  esac
  # The other streams' NodePorts, on the same address (kind-config.yaml maps these too).
  stream_url["$stream"]="${stream_url[web-kafka]%:*}:$port"
  kube -n "$streams_namespace" apply -f - >/dev/null <<EOF
apiVersion: metricstream.dev/v1alpha1
kind: MetricStream
metadata: {name: $stream}
spec:
  $backend_spec
  partitions: 4
  ingest:
    # Open mode: each load client is its own client id, hashed to a partition. Under one token
    # every request would be one client on one partition, which no number of consumers drains
    # faster (a client's order is kept by its partition).
    replicas: 1
  consumer:
    sinkStorage: 1Gi
    sink: {rateLimit: $scale_rate_limit}
    autoscaling:
      minReplicas: 1
      maxReplicas: 8
      targetLagRecords: $scale_target_lag
      scaleDown: {stabilizationWindowSeconds: 20, maxStep: 2}
  deletionPolicy: Delete
---
apiVersion: v1
kind: Service
metadata: {name: $stream-ingest-nodeport}
spec:
  type: NodePort
  selector:
    app.kubernetes.io/component: ingest
    metricstream.dev/stream: $stream
  ports:
    - {name: http, port: 8080, targetPort: http, nodePort: $port, protocol: TCP}
EOF
  wait_ready "$stream"
  POLL_INTERVAL=0.5 wait_until 60 answers "${stream_url[$stream]}/" || fail "$stream's NodePort does not answer"
  local csv="$work/autoscale-$backend.csv" sampler started=$SECONDS
  sample_scaling "$stream" "$csv" &
  sampler=$!
  # 48 clients x 10 metrics, each pausing 600 ms: ~800 metrics/s, twice what one consumer may
  # write. A client's partition is the hash of its id: 48 of them spread over the 4 partitions
  # evenly enough that no partition gets more than its consumer may write.
  if ! "$load" send --url "${stream_url[$stream]}" --request-timeout-secs 10 \
    --expected-out "$work/$stream.load.expected.json" --clients 48 --duration-secs "$scale_load_seconds" \
    --metrics 10 --pause-ms 600 >"$work/$stream.load.send.txt" 2>&1; then
    kill "$sampler" 2>/dev/null || true
    cat "$work/$stream.load.send.txt"
    fail "the load on $stream was not fully acknowledged"
  fi
  local load_end=$((SECONDS - started))
  note "  $stream load: $(tr '\n' ' ' <"$work/$stream.load.send.txt" | sed 's/  */ /g')"
  if ! POLL_INTERVAL=3 wait_until 300 consumers_back_to_one "$stream"; then
    kill "$sampler" 2>/dev/null || true
    scale_chart "$csv" "$load_end"
    fail "$stream's consumers did not come back to 1 within 300 s after the load: $(scale_status "$stream")"
  fi
  sleep 3
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  local peak under_after_peak
  peak=$(awk -F, 'NR > 1 && $3 + 0 > m { m = $3 + 0 } END { print m + 0 }' "$csv")
  # The first sample, after the peak was reached and while the load still ran, with the lag back
  # under the target: the added consumers drain what one could not.
  under_after_peak=$(awk -F, -v p="$peak" -v target="$scale_target_lag" -v end="$load_end" \
    'NR > 1 && $3 + 0 == p { reached = 1 } reached && $1 + 0 < end && $2 != "" && $2 + 0 <= target { print $1; exit }' "$csv")
  scale_chart "$csv" "$load_end" | tee -a "$summary"
  ((peak >= 2)) || fail "$stream's consumers never scaled up under a load one consumer cannot drain (peak $peak; $csv)"
  ((peak <= 4)) || fail "$stream scaled to $peak consumers, above its 4 partitions ($csv)"
  [[ -n $under_after_peak ]] || fail "$stream's lag did not come back under $scale_target_lag records while the load ran, after the scale-up ($csv)"
  scaled_event "$stream" ScaledUp || fail "no ScaledUp Event on $stream"
  scaled_event "$stream" ScaledDown || fail "no ScaledDown Event on $stream"
  note "  $stream: 1 -> $peak consumers (4 partitions), lag under $scale_target_lag again at ${under_after_peak} s under the load (it ended at ${load_end} s), back to 1 consumer by $(tail -n 1 "$csv" | cut -d, -f1) s"
  verify_sink "$stream" "$work/$stream.load.expected.json" load
  kube -n "$streams_namespace" delete metricstream "$stream" --wait=true --timeout="${timeout}s" >/dev/null
  kube -n "$streams_namespace" delete service "$stream-ingest-nodeport" --ignore-not-found >/dev/null
  top_up_volumes
}

step_autoscale() {
  say "3d. autoscaling: consumers follow the lag (file and Kafka), exactly once across the rebalances"
  # Prometheus watches from here on (local): the alerts step reads it, and the dashboard picture
  # shows this step's load.
  [[ $profile != local ]] || start_prometheus
  kube apply -f "$repo/examples/token-secret.yaml" >/dev/null
  autoscale_one file
  autoscale_one kafka
}

# ---- alerts: a real Prometheus on this machine -------------------------------------------------

prometheus_port=${E2E_PROMETHEUS_PORT:-29190}
prometheus_pid=
prometheus_started_at=

prometheus_query() { # PromQL -> the JSON answer
  curl -sf --max-time 5 "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$1"
}

# Whether the query has at least one sample.
prometheus_has() { # PromQL
  prometheus_query "$1" | grep -q '"result":\[{'
}

stop_prometheus() {
  [[ -n $prometheus_pid ]] || return 0
  stop_pids 10 "$prometheus_pid" || true
  prometheus_pid=
}

# The chart's rules as shipped, with every `for:` at 15 s and the lag threshold at 50 records, so
# that one run can wait for them: the expressions themselves are the ones users load.
shortened_rules() { # out
  sed -e 's/^\( *for:\) [0-9]*[smh]$/\1 15s/' -e 's/metricstream:consumer_lag_records:sum > 10000/metricstream:consumer_lag_records:sum > 50/' \
    "$repo/charts/metricstream-operator/files/alerts.yaml" >"$1"
  grep -q 'consumer_lag_records:sum > 50' "$1" || fail "the lag threshold of files/alerts.yaml was not found to shorten"
}

start_prometheus() {
  [[ -z $prometheus_pid ]] || return 0
  local dir="$work/prometheus" bin kubeconfig
  bash "$repo/hack/prometheus.sh" install --env-file "$work/prometheus.env" >/dev/null || fail "hack/prometheus.sh install failed"
  bin=$(env_get "$work/prometheus.env" PROMETHEUS) || fail "hack/prometheus.sh wrote no PROMETHEUS"
  kubeconfig=$(env_get "$work/cluster.env" KUBECONFIG) || fail "no KUBECONFIG in $work/cluster.env"
  rm -rf "$dir" && mkdir -p "$dir/data"
  shortened_rules "$dir/rules.yaml"
  # The chart's PodMonitor (workloads) and the operator's ServiceMonitor, as plain scrape
  # configs: pods found through the API server, the admin port, the same relabelling.
  cat >"$dir/prometheus.yaml" <<EOC
global: {scrape_interval: 5s, evaluation_interval: 5s}
rule_files: [$dir/rules.yaml]
scrape_configs:
  - job_name: metricstream-workloads
    kubernetes_sd_configs:
      - {role: pod, kubeconfig_file: $kubeconfig, namespaces: {names: [$streams_namespace]}}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_label_metricstream_dev_stream], regex: .+, action: keep}
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: admin, action: keep}
      - {source_labels: [__meta_kubernetes_pod_label_metricstream_dev_stream], target_label: stream}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component], target_label: component}
  - job_name: metricstream-operator
    honor_labels: true
    kubernetes_sd_configs:
      - {role: pod, kubeconfig_file: $kubeconfig, namespaces: {names: [$operator_namespace]}}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_name], regex: metricstream-operator, action: keep}
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: admin, action: keep}
EOC
  launch prometheus "$dir/prometheus.pid" "$dir/prometheus.log" "$bin" --config.file="$dir/prometheus.yaml" \
    --storage.tsdb.path="$dir/data" --web.listen-address="127.0.0.1:$prometheus_port" || fail "Prometheus did not start"
  prometheus_pid=$(<"$dir/prometheus.pid")
  prometheus_started_at=$(date +%s)
  POLL_INTERVAL=1 wait_until 60 curl -sf --max-time 2 "http://127.0.0.1:$prometheus_port/-/ready" >/dev/null ||
    { tail -n 20 "$dir/prometheus.log"; fail "Prometheus not ready within 60 s (see $dir/prometheus.log)"; }
}

consumers_running() { # stream count
  [[ $(kube -n "$streams_namespace" get metricstream "$1" -o jsonpath='{.status.consumerReplicas}') == "$2" ]]
}

step_alerts() {
  say "3e. a real Prometheus scrapes the pods and the operator; web-kafka's consumers stopped under load fire MetricStreamLagGrowing"
  if [[ $profile != local ]]; then
    echo "not run on kind: it runs hack/prometheus.sh's build on the host (make e2e-local runs it)"
    return 0
  fi
  local stream=web-kafka started
  start_prometheus
  POLL_INTERVAL=2 wait_until 90 prometheus_has "up{job=\"metricstream-workloads\",stream=\"$stream\",component=\"consumer\"} == 1" ||
    fail "Prometheus does not scrape $stream's consumer (targets: $(curl -s "http://127.0.0.1:$prometheus_port/api/v1/targets" | head -c 2000))"
  POLL_INTERVAL=2 wait_until 90 prometheus_has "metricstream_operator_stream_ready{namespace=\"$streams_namespace\",stream=\"$stream\"} == 1" ||
    fail "Prometheus has no metricstream_operator_stream_ready == 1 for $stream from the operator's scrape"
  note "  Prometheus scrapes $stream's pods and the operator (kubernetes_sd through the API server)"
  patch_stream "$stream" '{"spec":{"consumer":{"replicas":0}}}'
  POLL_INTERVAL=1 wait_until "$timeout" consumers_running "$stream" 0 || fail "$stream's consumers did not stop"
  started=$SECONDS
  send "$stream" stalled --clients 4 --duration-secs 40 --metrics 5 --pause-ms 50 ||
    { cat "$work/$stream.stalled.send.txt"; fail "the load on $stream was not fully acknowledged"; }
  local alert="ALERTS{alertname=\"MetricStreamLagGrowing\",alertstate=\"firing\",namespace=\"$streams_namespace\",stream=\"$stream\"}"
  if ! POLL_INTERVAL=2 wait_until 180 prometheus_has "$alert"; then
    prometheus_query 'ALERTS' >"$work/alerts.json" || true
    prometheus_query "metricstream:consumer_lag_records:sum" >>"$work/alerts.json" || true
    fail "MetricStreamLagGrowing did not fire for $stream within 180 s of the load (see $work/alerts.json)"
  fi
  local lag
  lag=$(prometheus_query "metricstream:consumer_lag_records:sum{stream=\"$stream\"}" | sed -n 's/.*"value":\[[^,]*,"\([0-9.]*\)".*/\1/p')
  note "  $stream's consumers stopped under load: MetricStreamLagGrowing firing $((SECONDS - started)) s after the load began (lag ${lag:-?} records, from the operator's measurement)"
  prometheus_query 'ALERTS{alertstate="firing"}' >"$work/alerts-firing.json" || true
  patch_stream "$stream" '{"spec":{"consumer":{"replicas":1}}}'
  verify_sink "$stream" "$work/$stream.stalled.expected.json" stalled
  draw_dashboard
  stop_prometheus
}

# The chart's Overview dashboard drawn from what this Prometheus saw since the autoscale step
# (metricstream-bench dashboard): the picture in the README comes from such a run.
draw_dashboard() {
  local out="$work/dashboard-overview.svg" started=${prometheus_started_at:-$(($(date +%s) - 600))}
  if ! "$cargo_target/release/metricstream-bench" --out "$out" dashboard \
    --prometheus "http://127.0.0.1:$prometheus_port" \
    --dashboard "$repo/charts/metricstream-operator/files/dashboards/metricstream-overview.json" \
    --start "$started" --end "$(date +%s)" --step 5 --scrape-interval 5 \
    --var "namespace=$streams_namespace" --var stream=web-scale-kafka >"$work/dashboard.txt" 2>&1; then
    cat "$work/dashboard.txt"
    fail "metricstream-bench dashboard could not draw the Overview dashboard"
  fi
  note "  the Overview dashboard of web-scale-kafka, drawn from this run's Prometheus: $out"
}
