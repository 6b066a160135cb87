//! Every metric the alert rules (`charts/metricstream-operator/files/alerts.yaml`) and the
//! Grafana dashboards (`charts/metricstream-operator/files/dashboards/*.json`) name is one the
//! running services export: the real ingest and consumer on the file backend, a consumer with
//! the remote-write sink, an ingest with a spill and a consumer on Kafka (when
//! `KAFKA_BOOTSTRAP` names a broker), and the operator (its process when `KUBECONFIG` names a
//! control plane; otherwise the registry its `Metrics::register` builds, encoded here, and the
//! report says the operator was not scraped).
//!
//! An expression's metric names are its identifiers that start with `metricstream_`, outside
//! strings, comments and label matchers; recording-rule names (with a `:`) are the rules' own,
//! and a dashboard may name only those alerts.yaml records. A dashboard's expressions are its
//! panels' target `expr`s (Grafana's `$variables` sit in strings and ranges, never in a name).
//! A name is known when a scraped exposition has a sample of exactly that name, or when a
//! `# TYPE` line declares a family whose samples carry it (a counter `F`: `F_total`; a
//! histogram: `F_bucket`, `F_sum`, `F_count`; ...), so a family with no series yet still counts
//! and `_bucket` is never stripped from a name that is not a histogram's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use metricstream_tests::kafka::unique_name;
use metricstream_tests::process::free_loopback_addr;
use metricstream_tests::{Binary, Service, ServiceSpec, TestDir, http_client, post_raw};

fn rules_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/metricstream-operator/files/alerts.yaml")
}

fn rules_text() -> String {
    std::fs::read_to_string(rules_path())
        .unwrap_or_else(|error| panic!("reading {}: {error}", rules_path().display()))
}

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/metricstream-operator/files/dashboards")
}

/// Every dashboard file: its path and text.
fn dashboard_texts() -> Vec<(PathBuf, String)> {
    let dir = dashboards_dir();
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("listing the dashboards").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            (path, text)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());
    files
}

/// Names, each with what uses it (rules, or dashboard panels).
type NameUsers = BTreeMap<String, BTreeSet<String>>;

/// The names a dashboard's panel targets use, metric names and recording-rule names alike,
/// each with the panels (`<dashboard title> / <panel title>`) that use it.
fn dashboard_names(dashboard_json: &str) -> NameUsers {
    let dashboard: serde_json::Value =
        serde_json::from_str(dashboard_json).expect("a dashboard is JSON");
    let title = dashboard["title"].as_str().unwrap_or("untitled");
    let top = dashboard["panels"]
        .as_array()
        .expect("a dashboard has panels");
    // Panels inside a collapsed row are the row's `panels`.
    let panels = top.iter().flat_map(|panel| {
        std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten())
    });
    let mut names = NameUsers::new();
    for panel in panels {
        let user = format!(
            "{title} / {}",
            panel["title"].as_str().unwrap_or("untitled")
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let identifiers = expression_identifiers(expr);
            for name in identifiers
                .into_iter()
                .filter(|name| is_metric_name(name) || is_rule_name(name))
            {
                names.entry(name).or_default().insert(user.clone());
            }
        }
    }
    names
}

/// The record names of a rule file (`metricstream:...`).
fn recording_rules(rules_yaml: &str) -> BTreeSet<String> {
    let file: serde_yaml::Value = serde_yaml::from_str(rules_yaml).expect("the rules are YAML");
    file["groups"]
        .as_sequence()
        .expect("the rules have groups")
        .iter()
        .flat_map(|group| group["rules"].as_sequence().cloned().unwrap_or_default())
        .filter_map(|rule| rule["record"].as_str().map(str::to_owned))
        .collect()
}

/// The metric names the rules' expressions use, each with the rules (alert or record name)
/// that use it.
fn rule_metric_names(rules_yaml: &str) -> NameUsers {
    let file: serde_yaml::Value = serde_yaml::from_str(rules_yaml).expect("the rules are YAML");
    let groups = file["groups"].as_sequence().expect("the rules have groups");
    let mut names = NameUsers::new();
    for group in groups {
        for rule in group["rules"].as_sequence().expect("a group has rules") {
            let rule_name = rule["alert"]
                .as_str()
                .or_else(|| rule["record"].as_str())
                .expect("a rule is an alert or a record");
            let expr = rule["expr"].as_str().expect("a rule has an expr");
            for name in expression_metric_names(expr) {
                names.entry(name).or_default().insert(rule_name.to_owned());
            }
        }
    }
    names
}

/// The `metricstream_*` identifiers of a PromQL expression: not in strings, comments or label
/// matchers (`{...}`), and not recording-rule names (they hold a `:`).
fn expression_metric_names(expr: &str) -> BTreeSet<String> {
    expression_identifiers(expr)
        .into_iter()
        .filter(|token| is_metric_name(token))
        .collect()
}

fn is_metric_name(token: &str) -> bool {
    token.starts_with("metricstream_") && !token.contains(':')
}

/// A recording rule's name as the rules write them: `metricstream:<what>:<how>`.
fn is_rule_name(token: &str) -> bool {
    token.starts_with("metricstream:")
}

/// The identifiers of a PromQL expression outside strings, comments and label matchers
/// (`{...}`): metric and recording-rule names, but also functions, keywords and grouping labels.
fn expression_identifiers(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                if braces == 0 {
                    names.insert(chars[start..i].iter().collect());
                }
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (5m, 1e3): never a name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The sample names an exposition (Prometheus text or OpenMetrics) carries or declares: every
/// sample line's name, and for each `# TYPE` family the names its samples take.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let line = line.trim();
        if let Some(declaration) = line.strip_prefix("# TYPE ") {
            let mut parts = declaration.split_whitespace();
            let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" if family.ends_with("_total") => &["", "_created"],
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                "gaugehistogram" => &["_bucket", "_gsum", "_gcount"],
                "summary" => &["", "_sum", "_count", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{family}{suffix}")));
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// The `# TYPE` families of an exposition and their types.
fn declared_families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.trim().strip_prefix("# TYPE "))
        .filter_map(|declaration| {
            let mut parts = declaration.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// One exposition checked against: who served it and how it was obtained.
struct Source {
    what: String,
    exposition: String,
}

/// The names of `used` (each with what uses it) that none of `sources` exports and that are not
/// in `also_known`, each with its users and a hint when a family of a similar name exists (a
/// histogram named without `_bucket`, a counter without `_total`).
fn unknown_names(
    used: NameUsers,
    also_known: &BTreeSet<String>,
    sources: &[Source],
) -> Vec<String> {
    let mut known = also_known.clone();
    let mut families = BTreeMap::new();
    for source in sources {
        known.extend(exported_names(&source.exposition));
        families.extend(declared_families(&source.exposition));
    }
    used.into_iter()
        .filter(|(name, _)| !known.contains(name))
        .map(|(name, users)| {
            let base = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            let hint = [name.as_str(), base]
                .iter()
                .find_map(|family| {
                    families
                        .get(*family)
                        .map(|kind| format!(" (a {kind} family `{family}` is exported)"))
                })
                .unwrap_or_default();
            format!("{name}, used by {users:?}{hint}")
        })
        .collect()
}

const EXPOSITION: &str = "\
# HELP metricstream_ingest_requests Requests.
# TYPE metricstream_ingest_requests counter
metricstream_ingest_requests_total{code=\"200\"} 3
# TYPE metricstream_queue_append_duration_seconds histogram
metricstream_queue_append_duration_seconds_bucket{le=\"+Inf\"} 1
metricstream_queue_append_duration_seconds_sum 0.1
metricstream_queue_append_duration_seconds_count 1
# TYPE metricstream_spill_usage_bytes gauge
# TYPE metricstream_consumer_lag_count gauge
metricstream_consumer_lag_count 0
# EOF
";

fn exposition_source() -> Vec<Source> {
    vec![Source {
        what: "a sample exposition".into(),
        exposition: EXPOSITION.into(),
    }]
}

#[test]
fn rule_names_are_the_expressions_identifiers_not_recording_rules_strings_or_labels() {
    let rules = r#"
groups:
  - name: g
    rules:
      - record: metricstream:requests:rate5m
        expr: sum by (namespace) (rate(metricstream_ingest_requests_total{code=~"5..", x="metricstream_in_a_string"}[5m]))
      - alert: A
        expr: |
          metricstream:requests:rate5m > 0 # metricstream_in_a_comment
          and on (namespace) histogram_quantile(0.99, rate(metricstream_queue_append_duration_seconds_bucket[5m])) > 1e3
"#;
    assert_eq!(
        rule_metric_names(rules).keys().cloned().collect::<Vec<_>>(),
        [
            "metricstream_ingest_requests_total",
            "metricstream_queue_append_duration_seconds_bucket"
        ]
    );
    assert!(
        unknown_names(
            rule_metric_names(rules),
            &BTreeSet::new(),
            &exposition_source()
        )
        .is_empty()
    );
}

#[test]
fn suffixes_follow_the_declared_type_of_the_family() {
    let names = exported_names(EXPOSITION);
    // A gauge declared with no series yet still counts, under its own name only.
    assert!(names.contains("metricstream_spill_usage_bytes"));
    assert!(!names.contains("metricstream_spill_usage_bytes_count"));
    // A counter's samples end in _total; a histogram's in _bucket, _sum and _count.
    assert!(names.contains("metricstream_ingest_requests_total"));
    assert!(!names.contains("metricstream_ingest_requests"));
    assert!(names.contains("metricstream_queue_append_duration_seconds_count"));
    assert!(!names.contains("metricstream_queue_append_duration_seconds"));
    // A gauge whose own name ends in _count is itself, not a histogram's part.
    assert!(names.contains("metricstream_consumer_lag_count"));
    assert!(!names.contains("metricstream_consumer_lag"));
}

#[test]
fn a_bogus_name_in_a_copy_of_the_real_rules_is_reported_with_its_rule() {
    let mut rules = rules_text();
    let real = rule_metric_names(&rules);
    assert!(real.len() >= 10, "the rules name {real:?}");
    rules.push_str(
        "  - name: bogus\n    rules:\n      - alert: Bogus\n        expr: \
         rate(metricstream_ingest_requests[5m]) > 0 or metricstream_no_such_thing > 1\n",
    );
    let unknown = unknown_names(
        rule_metric_names(&rules),
        &BTreeSet::new(),
        &exposition_source(),
    );
    let report = unknown.join("\n");
    assert!(
        report.contains("metricstream_no_such_thing, used by {\"Bogus\"}"),
        "{report}"
    );
    // A counter named without its _total: reported, with the family it probably meant.
    assert!(
        report.contains("metricstream_ingest_requests, used by {\"Bogus\"} (a counter family"),
        "{report}"
    );
}

/// A copy of the first real dashboard with one more panel, whose expression is `expr`.
fn dashboard_with_extra_panel(expr: &str) -> String {
    let (_, text) = &dashboard_texts()[0];
    let mut dashboard: serde_json::Value = serde_json::from_str(text).expect("JSON");
    dashboard["panels"]
        .as_array_mut()
        .expect("panels")
        .push(serde_json::json!({
            "type": "row", "title": "Collapsed", "collapsed": true,
            "panels": [{"type": "timeseries", "title": "Bogus", "targets": [{"refId": "A", "expr": expr}]}]
        }));
    dashboard.to_string()
}

#[test]
fn dashboard_names_are_their_targets_identifiers_records_included() {
    let title = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text).expect("JSON")["title"]
            .as_str()
            .expect("a title")
            .to_owned()
    };
    let dashboard = dashboard_with_extra_panel(
        "sum by (partition) (rate(metricstream_ingest_requests_total{stream=\"$stream\", \
         x=\"metricstream_in_a_string\"}[$__rate_interval])) / metricstream:consumer_lag_records:sum",
    );
    let names = dashboard_names(&dashboard);
    let bogus = format!("{} / Bogus", title(&dashboard));
    let used_by_bogus: Vec<&String> = names
        .iter()
        .filter(|(_, users)| users.contains(&bogus))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        used_by_bogus,
        [
            "metricstream:consumer_lag_records:sum",
            "metricstream_ingest_requests_total"
        ]
    );
    // Every real dashboard names metrics, from more than one panel.
    for (path, text) in dashboard_texts() {
        let names = dashboard_names(&text);
        assert!(names.len() >= 5, "{}: {names:?}", path.display());
    }
}

#[test]
fn a_bogus_name_in_a_copy_of_a_real_dashboard_is_reported_with_its_panel() {
    let records = recording_rules(&rules_text());
    assert!(
        records.contains("metricstream:consumer_lag_records:sum"),
        "{records:?}"
    );
    let dashboard = dashboard_with_extra_panel(
        "metricstream_no_such_thing + metricstream:no_such_record:sum \
         + metricstream:consumer_lag_records:sum + metricstream_ingest_requests_total",
    );
    let unknown: Vec<String> =
        unknown_names(dashboard_names(&dashboard), &records, &exposition_source())
            .into_iter()
            .filter(|line| line.contains("/ Bogus"))
            .collect();
    let report = unknown.join("\n");
    // An unknown metric and a record alerts.yaml does not define are reported with the panel; a
    // record it defines and an exported name are not.
    assert_eq!(unknown.len(), 2, "{report}");
    assert!(
        report.contains("metricstream_no_such_thing, used by {\""),
        "{report}"
    );
    assert!(
        report.contains("metricstream:no_such_record:sum, used by {\""),
        "{report}"
    );
}

/// POSTs a few requests (accepted, and refused ones) so the labelled families have series.
async fn send_requests(ingest: &Service) {
    for client in ["client-a", "client-b", "client-c"] {
        let body =
            format!(r#"{{"metrics":[{{"name":"cpu","value":1,"tags":{{"host":"{client}"}}}}]}}"#);
        let answer = post_raw(
            ingest,
            "/metrics",
            &[
                ("authorization", client),
                ("content-type", "application/json"),
            ],
            body.into_bytes(),
        )
        .await;
        assert!(
            (200..300).contains(&answer.status),
            "{} {}",
            answer.status,
            answer.body
        );
    }
    let refused = post_raw(
        ingest,
        "/metrics",
        &[
            ("authorization", "client-a"),
            ("content-type", "application/json"),
        ],
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
}

/// Gives the ingest's families that stay empty until a client trips them a series each: a
/// sample refused by the active-series cap (`samples_limited`) and a connection cut at the
/// header deadline (`connections_closed`).
async fn trip_limits(ingest: &Service) {
    let body = br#"{"metrics":[{"name":"cpu","value":1,"tags":{"host":"a"}},{"name":"cpu","value":1,"tags":{"host":"b"}}]}"#;
    let answer = post_raw(
        ingest,
        "/metrics",
        &[
            ("authorization", "limited-client"),
            ("content-type", "application/json"),
        ],
        body.to_vec(),
    )
    .await;
    assert_eq!(
        answer.status, 400,
        "one of two series over a cap of 1: {}",
        answer.body
    );
    let listen = ingest.listen.expect("an ingest listener");
    let mut silent = tokio::net::TcpStream::connect(listen)
        .await
        .expect("connecting to the ingest");
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        while let Ok(n) = silent.read(&mut buf).await
            && n > 0
        {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent connection outlived the 1 s header deadline"
    );
}

async fn scrape(service: &Service, what: &str) -> Source {
    let (status, exposition) = service.admin_get("/metrics").await;
    assert_eq!(status, 200, "{what}: {exposition}");
    Source {
        what: what.to_owned(),
        exposition,
    }
}

/// A consumer with the remote-write sink (registered only with it), pointed at a port where no
/// store listens: its families are registered at start, whether or not the store answers.
async fn remote_write_consumer_source(dir: &TestDir) -> Source {
    let store = free_loopback_addr();
    let consumer = ServiceSpec::consumer(dir, "remote-write-consumer")
        .env("METRICSTREAM_GROUP", "remote-write-metric-names")
        .env("METRICSTREAM_SINK", "remote-write")
        .env(
            "METRICSTREAM_SINK_URL",
            format!("http://{store}/api/v1/write"),
        )
        .spawn();
    scrape_when_served(
        &consumer.admin_url("/metrics"),
        "a consumer with the remote-write sink (file backend, no store)",
        consumer.log_path(),
    )
    .await
}

/// GETs `url` (a process's /metrics) until it answers 200, for at most 30 s.
async fn scrape_when_served(url: &str, what: &str, log: &Path) -> Source {
    let client = http_client(Duration::from_secs(2));
    let started = Instant::now();
    loop {
        if let Ok(response) = client.get(url).send().await
            && response.status() == 200
        {
            return Source {
                what: what.to_owned(),
                exposition: response
                    .text()
                    .await
                    .unwrap_or_else(|error| panic!("reading {what}'s /metrics: {error}")),
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} served no /metrics within 30 s; log: {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator process, killed when dropped.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The operator's registered families (`Metrics::register`, operator/src/metrics.rs), encoded
/// in-process with one failure and one stream recorded: a labelled family prints nothing, not
/// even its `# TYPE`, until it has a series, and here no reconcile fails and no stream exists.
fn operator_registry_source() -> Source {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = metricstream_operator::metrics::Metrics::register(&mut registry);
    metrics.failed("metric-name-check");
    let stream = metricstream_operator::metrics::StreamLabels {
        namespace: "metric-name-check".into(),
        stream: "metric-name-check".into(),
    };
    for family in [
        &metrics.stream_ready,
        &metrics.consumer_replicas,
        &metrics.consumer_desired_replicas,
    ] {
        family.get_or_create(&stream).set(1);
    }
    metrics.set_stream_lag(&stream, Some(0));
    let mut exposition = String::new();
    prometheus_client::encoding::text::encode(&mut exposition, &registry)
        .expect("encoding the operator's registry");
    Source {
        what: "the operator's registered families (operator/src/metrics.rs, encoded in-process, \
               one failure and one stream recorded)"
            .into(),
        exposition,
    }
}

/// The operator process's /metrics against `KUBECONFIG` (it serves them before it waits for
/// the CRD); `None` without a control plane.
async fn operator_process_source(dir: &TestDir) -> Option<Source> {
    let kubeconfig = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty())?;
    let binary = Binary::Ingest
        .path()
        .with_file_name("metricstream-operator");
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --bins",
        binary.display()
    );
    let admin = free_loopback_addr();
    let log_path = dir.logs_dir().join("operator.log");
    let log = std::fs::File::create(&log_path).expect("creating the operator log");
    let child = Command::new(&binary)
        .args(["run", "--namespace", &unique_name("metric-names")])
        .arg("--admin-listen")
        .arg(admin.to_string())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicating the log handle"))
        .stderr(log)
        .spawn()
        .expect("starting metricstream-operator");
    let _operator = Operator(child);
    Some(
        scrape_when_served(
            &format!("http://{admin}/metrics"),
            "the operator process (KUBECONFIG)",
            &log_path,
        )
        .await,
    )
}

#[tokio::test]
#[ignore = "the Kafka ingest's names need a broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn every_metric_the_alert_rules_and_dashboards_name_is_exported_by_a_running_service() {
    let dir = TestDir::new("metric-names");
    let mut sources = Vec::new();
    let mut not_checked = Vec::new();

    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    send_requests(&ingest).await;
    ingest.wait_for_accepted_in_sink(&dir).await;
    sources.push(scrape(&ingest, "the ingest (file backend)").await);
    sources.push(scrape(&consumer, "the consumer (file backend)").await);
    let remote_write = remote_write_consumer_source(&dir).await;
    sources.push(remote_write);
    let limits = ServiceSpec::ingest(&dir, "limits-ingest")
        .env("METRICSTREAM_MAX_ACTIVE_SERIES", "1")
        .env("METRICSTREAM_HEADER_READ_TIMEOUT", "1")
        .start()
        .await;
    trip_limits(&limits).await;
    sources.push(
        scrape(
            &limits,
            "an ingest with --max-active-series 1, header timeout 1 s",
        )
        .await,
    );

    let kafka_dir = TestDir::new("metric-names-kafka");
    let mut kafka_services = Vec::new();
    match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(bootstrap) if !bootstrap.is_empty() => {
            let topic = unique_name("metricstream-test-metric-names");
            let ingest = ServiceSpec::ingest(&kafka_dir, "kafka-ingest")
                .kafka(&bootstrap, &topic)
                .env("METRICSTREAM_SPILL_DIR", kafka_dir.path().join("spill"))
                .start()
                .await;
            let consumer = ServiceSpec::consumer(&kafka_dir, "kafka-consumer")
                .kafka(&bootstrap, &topic)
                .env("METRICSTREAM_GROUP", unique_name("metric-names"))
                .start()
                .await;
            send_requests(&ingest).await;
            ingest.wait_for_accepted_in_sink(&kafka_dir).await;
            sources.push(scrape(&ingest, "the ingest (Kafka backend, --spill-dir)").await);
            sources.push(scrape(&consumer, "the consumer (Kafka backend)").await);
            kafka_services.extend([ingest, consumer]);
        }
        _ => not_checked.push(
            "the ingest and consumer on Kafka, with a spill (KAFKA_BOOTSTRAP unset): the \
             metricstream_kafka_* and metricstream_spill_* families could not be scraped",
        ),
    }
    let registry = operator_registry_source();
    match operator_process_source(&dir).await {
        Some(process) => {
            // The process's labelled families stay empty until a reconcile fails; the registry
            // stands in for them only if it is what the process serves.
            let served = declared_families(&process.exposition);
            let registered = declared_families(&registry.exposition);
            let unregistered: Vec<_> = served
                .iter()
                .filter(|(family, kind)| registered.get(*family) != Some(*kind))
                .collect();
            assert!(
                unregistered.is_empty(),
                "the operator serves families its Metrics::register does not: {unregistered:?}"
            );
            sources.push(process);
        }
        None => not_checked.push(
            "the operator process was NOT scraped (KUBECONFIG unset): its names were checked \
             only against the families operator/src/metrics.rs registers",
        ),
    }
    sources.push(registry);

    let rules = rules_text();
    // What is checked: a file, the names it uses (each with its users), names it may use besides.
    let mut checked: Vec<(String, NameUsers, BTreeSet<String>)> = vec![(
        rules_path().display().to_string(),
        rule_metric_names(&rules),
        BTreeSet::new(),
    )];
    // A dashboard may also name the rules' records.
    let dashboard_known = recording_rules(&rules);
    for (path, text) in dashboard_texts() {
        checked.push((
            path.display().to_string(),
            dashboard_names(&text),
            dashboard_known.clone(),
        ));
    }
    let mut failures = Vec::new();
    for (what, names, also_known) in checked {
        eprintln!("{} names in {what}, checked against:", names.len());
        for source in &sources {
            let exported = exported_names(&source.exposition);
            let found: Vec<&String> = names
                .keys()
                .filter(|name| exported.contains(*name))
                .collect();
            eprintln!("  {}: {} of them: {found:?}", source.what, found.len());
        }
        let unknown = unknown_names(names, &also_known, &sources);
        if !unknown.is_empty() {
            failures.push(format!("{what}:\n  {}", unknown.join("\n  ")));
        }
    }
    for what in &not_checked {
        eprintln!("  NOT CHECKED: {what}");
    }
    assert!(
        failures.is_empty(),
        "metrics that no scraped service exports are named in {}{}",
        failures.join("\n"),
        if not_checked.is_empty() {
            String::new()
        } else {
            format!(
                "\nnot checked, so some may be exported there: {}",
                not_checked.join("; ")
            )
        }
    );
    drop(kafka_services);
}
