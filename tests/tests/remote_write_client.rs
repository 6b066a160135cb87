//! Prometheus itself (built by `hack/prometheus.sh`; `PROMETHEUS` names the binary) in agent mode,
//! scraping a fixed target every second and remote-writing to the real ingest with protocol 1.0
//! and, in a second run, 2.0, with a bearer token:
//!
//! - at a quiet moment between two scrapes, the samples Prometheus counts as sent
//!   (`prometheus_remote_storage_samples_total`, counted only after our `2xx`) equal those the
//!   ingest acknowledged (`metricstream_ingest_metrics_accepted_total`), none failed or dropped;
//! - the sink holds each sample once, under the token's client, with Prometheus' `job` and
//!   `instance` labels and the target's values at every scrape; with 2.0 the series carry the
//!   kinds of their metadata (Prometheus runs with `--enable-feature=metadata-wal-records`, without
//!   which it sends none; 1.0 sends metadata in requests of its own, so its samples are untyped).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metricstream_tests::prometheus::Prometheus;
use metricstream_tests::{ReadMode, Service, TestDir, read_sink, start_token_pipeline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the scraped target exposes, always the same.
const EXPOSITION: &str = "\
# TYPE demo_requests_total counter
demo_requests_total{path=\"/a\"} 42
# TYPE demo_temperature gauge
demo_temperature 21.5
# TYPE demo_latency_seconds histogram
demo_latency_seconds_bucket{le=\"0.1\"} 1
demo_latency_seconds_bucket{le=\"1\"} 3
demo_latency_seconds_bucket{le=\"+Inf\"} 4
demo_latency_seconds_sum 2.5
demo_latency_seconds_count 4
";

/// Serves [`EXPOSITION`] to every request on `listener`, one response per connection.
async fn serve_target(listener: TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{EXPOSITION}",
                EXPOSITION.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

async fn start_prometheus(
    dir: &TestDir,
    target: SocketAddr,
    ingest: &Service,
    message: &str,
    token: &str,
) -> Prometheus {
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 500ms\n\
         scrape_configs:\n  - job_name: demo\n    fallback_scrape_protocol: PrometheusText0.0.4\n\
         \x20   static_configs:\n      - targets: ['{target}']\n\
         remote_write:\n  - url: {}/api/v1/write\n    protobuf_message: {message}\n\
         \x20   authorization:\n      credentials: {token}\n\
         \x20   metadata_config:\n      send_interval: 1s\n\
         \x20   queue_config:\n      batch_send_deadline: 100ms\n      min_backoff: 50ms\n",
        ingest.base_url()
    );
    let config_path = dir.write_file(&format!("prometheus-{message}.yml"), &config);
    let args = [
        "--agent".to_owned(),
        // Metadata reaches 2.0 requests only through the WAL, which records it with this flag.
        "--enable-feature=metadata-wal-records".to_owned(),
        format!("--config.file={}", config_path.display()),
        format!(
            "--storage.agent.path={}",
            dir.path().join(format!("wal-{message}")).display()
        ),
    ];
    Prometheus::spawn(&dir.logs_dir(), &format!("prometheus-{message}"), &args).await
}

async fn prometheus_remote_writes(message: &str, expect_kinds: bool) {
    let dir = TestDir::new(&format!(
        "remote-write-{}",
        if expect_kinds { "v2" } else { "v1" }
    ));
    let (ingest, consumer) = start_token_pipeline(&dir, "prometheus-agent", "prom-s3cret").await;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a target port");
    let target = listener.local_addr().expect("the target's address");
    let server = tokio::spawn(serve_target(listener));
    let prometheus = start_prometheus(&dir, target, &ingest, message, "prom-s3cret").await;

    // A quiet moment with at least five scrapes sent: Prometheus' sent count, read twice
    // around ours, equal to what the ingest acknowledged.
    let started = Instant::now();
    let snapshot = loop {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "Prometheus and the ingest never agreed on the samples sent; see {}",
            dir.logs_dir().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = prometheus
            .counter("prometheus_remote_storage_samples_total")
            .await;
        let stored = ingest.metrics_accepted().await as f64;
        let sent_again = prometheus
            .counter("prometheus_remote_storage_samples_total")
            .await;
        // Seven samples of the target and Prometheus' own per scrape (up, scrape_*).
        if sent >= 5.0 * 10.0 && sent == sent_again && sent == stored {
            break stored;
        }
    };
    for failure in [
        "prometheus_remote_storage_samples_failed_total",
        "prometheus_remote_storage_samples_dropped_total",
    ] {
        assert_eq!(prometheus.counter(failure).await, 0.0, "{failure}");
    }
    drop(prometheus);
    server.abort();

    // Everything acknowledged (by the snapshot, and whatever came after it) is in the sink once.
    let stored = ingest.wait_for_accepted_in_sink(&dir).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let sink = read_sink(&dir.sink_dir(), ReadMode::Settled).expect("the sink reads");
    assert_eq!(sink.lines.len(), stored);
    assert!(sink.lines.len() as f64 >= snapshot);
    let mut seen = HashSet::new();
    let mut scrapes: BTreeMap<i64, BTreeMap<String, (f64, Option<String>)>> = BTreeMap::new();
    for line in &sink.lines {
        assert_eq!(line.client, "prometheus-agent");
        assert!(
            seen.insert((line.name.clone(), line.tags.clone(), line.timestamp)),
            "twice: {line:?}"
        );
        assert_eq!(
            line.tags.get("job").map(String::as_str),
            Some("demo"),
            "{line:?}"
        );
        assert_eq!(
            line.tags.get("instance"),
            Some(&target.to_string()),
            "{line:?}"
        );
        // Prometheus 3 writes `le` as a float ("1.0"); compare bounds as numbers.
        let key = match line.tags.get("le") {
            Some(le) if le == "+Inf" => format!("{}{{le=+Inf}}", line.name),
            Some(le) => format!(
                "{}{{le={}}}",
                line.name,
                le.parse::<f64>().unwrap_or(f64::NAN)
            ),
            None => line.name.clone(),
        };
        scrapes
            .entry(line.timestamp.expect("a timestamp"))
            .or_default()
            .insert(key, (line.value, line.kind.clone()));
    }
    let demo: Vec<_> = scrapes
        .values()
        .filter(|scrape| scrape.contains_key("demo_requests_total"))
        .collect();
    assert!(
        demo.len() >= 5,
        "{} scrapes of the target in the sink",
        demo.len()
    );
    for scrape in demo {
        let kind = |kind: &str| expect_kinds.then(|| kind.to_owned());
        for (key, value, expected_kind) in [
            ("demo_requests_total", 42.0, kind("counter")),
            ("demo_temperature", 21.5, kind("gauge")),
            ("demo_latency_seconds_bucket{le=1}", 3.0, kind("histogram")),
            (
                "demo_latency_seconds_bucket{le=+Inf}",
                4.0,
                kind("histogram"),
            ),
            ("demo_latency_seconds_sum", 2.5, kind("histogram")),
        ] {
            assert_eq!(
                scrape.get(key),
                Some(&(value, expected_kind)),
                "{key} in {scrape:?}"
            );
        }
        assert_eq!(
            scrape.get("up").map(|(value, _)| *value),
            Some(1.0),
            "up in {scrape:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn prometheus_remote_write_1_0_arrives_exactly_once() {
    prometheus_remote_writes("prometheus.WriteRequest", false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PROMETHEUS: hack/prometheus.sh install (make test runs it)"]
async fn prometheus_remote_write_2_0_arrives_exactly_once() {
    prometheus_remote_writes("io.prometheus.write.v2.Request", true).await;
}
