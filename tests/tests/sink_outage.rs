//! The remote-write sink riding out a store outage: the real ingest (file backend) and consumer
//! in front of a real VictoriaMetrics that is stopped for 30 s under a steady load.
//!
//! While the store is down the ingest keeps accepting (the queue holds the data), the consumer's
//! circuit breaker opens (it says so in `/readyz` and its metrics), the consumer spends almost no
//! CPU, and what was acknowledged but not yet stored grows; once the store is back the circuit
//! closes, the backlog drains, and every acknowledged metric is in the store exactly once.

use std::time::{Duration, Instant};

use metricstream_tests::store::assert_exactly_once_in_store;
use metricstream_tests::victoriametrics::VictoriaMetrics;
use metricstream_tests::{DRAIN_TIMEOUT, LoadSpec, Service, ServiceSpec, TestDir, start_load};

/// How long the store is down, as the issue asks.
const OUTAGE: Duration = Duration::from_secs(30);
/// The consumer's CPU while the circuit is open, as a share of one core, must stay below this.
const MAX_CPU_SHARE_WHILE_OPEN: f64 = 0.05;
/// The consumer's resident memory must stay below this (a debug build holding one batch).
const MAX_RSS_BYTES: u64 = 256 << 20;

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// Resident memory of a process in bytes, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kib| kib * 1024)
        .expect("VmRSS")
}

/// Metrics acknowledged by the ingest and not yet written to the store by the consumer.
async fn backlog(ingest: &Service, consumer: &Service) -> f64 {
    ingest.metrics_accepted().await as f64
        - consumer
            .metric("metricstream_consumer_metrics_written_total")
            .await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs VICTORIAMETRICS: hack/victoriametrics.sh install (make test runs it)"]
async fn a_store_stopped_for_30_s_under_load_loses_nothing_and_costs_no_cpu_while_open() {
    let dir = TestDir::new("sink-outage");
    let mut store = VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await;
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = ServiceSpec::consumer(&dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store.write_url())
        .start()
        .await;

    // A steady load across the whole outage: 8 clients, a request each every 0.5 s for ~45 s.
    let load = start_load(
        LoadSpec::new(vec![ingest.base_url()], 8, 90, 10).pause(Duration::from_millis(500)),
    );
    load.wait_for_acknowledged(40, Duration::from_secs(30))
        .await;

    store.stop();
    let stopped = Instant::now();
    // The circuit opens after a few failed attempts (a few seconds of backoff).
    let opened_within = Duration::from_secs(15);
    loop {
        let (status, body) = consumer.admin_get("/readyz").await;
        if status == 503 && body.contains("circuit open") {
            break;
        }
        assert!(
            stopped.elapsed() < opened_within,
            "the circuit did not open within {opened_within:?} of the store stopping: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let opened = stopped.elapsed();
    let backlog_at_open = backlog(&ingest, &consumer).await;

    // The rest of the outage: what the consumer spends while the circuit is open.
    let cpu_before = cpu_seconds(consumer.pid());
    let window_started = Instant::now();
    let mut max_rss = rss_bytes(consumer.pid());
    let mut open_seen = 0;
    let mut scrapes = 0;
    while stopped.elapsed() < OUTAGE {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        max_rss = max_rss.max(rss_bytes(consumer.pid()));
        scrapes += 1;
        if consumer
            .metric(r#"metricstream_consumer_remote_write_circuit_state{state="open"}"#)
            .await
            == 1.0
        {
            open_seen += 1;
        }
    }
    let window = window_started.elapsed().as_secs_f64();
    let cpu_share = (cpu_seconds(consumer.pid()) - cpu_before) / window;
    let backlog_at_end = backlog(&ingest, &consumer).await;
    let transitions_open = consumer
        .metric(r#"metricstream_consumer_remote_write_circuit_transitions_total{state="open"}"#)
        .await;

    store.restart().await;
    let restarted = Instant::now();
    let report = load.finish().await;
    report.assert_all_accepted();
    let expected = report.expected();
    assert!(expected.problems.is_empty(), "{:?}", expected.problems);
    let series = store
        .wait_for_samples(r#"{__name__="m"}"#, expected.len(), DRAIN_TIMEOUT)
        .await;
    let drained = restarted.elapsed();
    assert_exactly_once_in_store(&series, &expected);
    let backlog_after = backlog(&ingest, &consumer).await;
    let (ready, body) = consumer.admin_get("/readyz").await;
    max_rss = max_rss.max(rss_bytes(consumer.pid()));

    println!(
        "store down {:.1?}: circuit open after {opened:.1?}; consumer CPU {:.2} % of a core over \
         {window:.1} s while open (circuit open at {open_seen} of {scrapes} scrapes, {transitions_open} \
         transitions to open); backlog (acknowledged, not yet in the store) {backlog_at_open} at \
         open, {backlog_at_end} at the end of the outage, {backlog_after} once drained; all {} \
         metrics exactly once {drained:.1?} after the restart; consumer peak RSS {:.1} MiB",
        OUTAGE,
        cpu_share * 100.0,
        expected.len(),
        max_rss as f64 / (1 << 20) as f64,
    );
    assert!(
        cpu_share < MAX_CPU_SHARE_WHILE_OPEN,
        "the consumer used {:.1} % of a core while the circuit was open",
        cpu_share * 100.0
    );
    assert!(
        open_seen * 2 > scrapes,
        "the circuit was open at only {open_seen} of {scrapes} scrapes"
    );
    assert!(transitions_open >= 1.0);
    assert!(
        backlog_at_end > backlog_at_open,
        "the backlog did not grow while the store was down: {backlog_at_open} -> {backlog_at_end}"
    );
    assert_eq!(backlog_after, 0.0, "the backlog did not drain");
    assert_eq!(ready, 200, "the consumer is not ready again: {body}");
    assert_eq!(
        consumer
            .metric(r#"metricstream_consumer_remote_write_circuit_state{state="closed"}"#)
            .await,
        1.0
    );
    assert!(max_rss < MAX_RSS_BYTES, "consumer RSS {max_rss} bytes");
    consumer.terminate().await;
    ingest.terminate().await;
}
