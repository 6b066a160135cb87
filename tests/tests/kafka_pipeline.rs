//! The pipeline on the Kafka backend, run against a real broker: the prototype's scenario, which
//! its Kafka producer failed (it crashed under 20 concurrent clients; 1.4 % of requests
//! succeeded), 200 concurrent clients, `kill -9` of each service under load, and the broker
//! itself stopped for 30 s under load.
//!
//! Needs `KAFKA_BOOTSTRAP` (printed by `hack/kafka.sh up`); `make test` starts the broker and runs
//! these with `--include-ignored`. Every test uses its own topic and consumer group, so they run
//! side by side on the one broker; the outage test stops a private broker of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metricstream_tests::kafka::{PrivateBroker, bootstrap_from_env, unique_name};
use metricstream_tests::sink::count_lines;
use metricstream_tests::{
    LoadReport, LoadSpec, Outcome, Service, ServiceSpec, TestDir, assert_settled_exactly_once,
    http_client, quantile, run_load, start_load, try_wait_for_sink, wait_for_lines, wait_for_sink,
};

/// How long the consumer may take to bring every acknowledged metric to the sink. Longer than
/// on the file backend: a restarted member waits for the killed one's session to expire (10 s)
/// before it gets its partitions, and the tests share two cores with a broker.
const KAFKA_DRAIN_TIMEOUT: Duration = Duration::from_secs(180);

/// An ingest and a consumer (group of its own) on `topic` at `bootstrap`.
fn kafka_services(dir: &TestDir, bootstrap: &str, topic: &str) -> (ServiceSpec, ServiceSpec) {
    let ingest = ServiceSpec::ingest(dir, "ingest").kafka(bootstrap, topic);
    let consumer = ServiceSpec::consumer(dir, "consumer")
        .kafka(bootstrap, topic)
        .env("METRICSTREAM_GROUP", unique_name("storage-writer"));
    (ingest, consumer)
}

fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_twenty_clients_fifty_requests_all_accepted_and_sunk_exactly_once() {
    let bootstrap = bootstrap_from_env();
    let dir = TestDir::new("kafka-prototype-scenario");
    let topic = unique_name("metricstream-test");
    let (ingest_spec, consumer_spec) = kafka_services(&dir, &bootstrap, &topic);
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 20, 50, 10)).await;
    println!(
        "Kafka backend, 20 clients x 50 requests x 10 metrics ({} build): {}",
        build_kind(),
        report.summary()
    );
    report.assert_all_accepted();

    let expected = report.expected();
    assert_eq!(expected.len(), 10_000);
    wait_for_sink(&dir.sink_dir(), &expected, KAFKA_DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(verification.lines, expected.len());
}

const MANY_CLIENTS: usize = 200;
const MANY_CLIENTS_REQUESTS: u64 = 10;
const MANY_CLIENTS_METRICS: u32 = 10;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_two_hundred_concurrent_clients_all_accepted_and_sunk_exactly_once() {
    let bootstrap = bootstrap_from_env();
    let dir = TestDir::new("kafka-200-clients");
    let topic = unique_name("metricstream-test-200");
    let (ingest_spec, consumer_spec) = kafka_services(&dir, &bootstrap, &topic);
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    // Every client has its own connection pool: 200 connections at once.
    let report = run_load(LoadSpec::new(
        vec![ingest.base_url()],
        MANY_CLIENTS,
        MANY_CLIENTS_REQUESTS,
        MANY_CLIENTS_METRICS,
    ))
    .await;
    println!(
        "Kafka backend, {MANY_CLIENTS} concurrent clients x {MANY_CLIENTS_REQUESTS} requests x \
         {MANY_CLIENTS_METRICS} metrics ({} build): {}",
        build_kind(),
        report.summary()
    );
    report.assert_all_accepted();
    assert_eq!(
        report.outcomes.len(),
        MANY_CLIENTS * MANY_CLIENTS_REQUESTS as usize
    );

    let expected = report.expected();
    assert_eq!(
        expected.len(),
        MANY_CLIENTS * MANY_CLIENTS_REQUESTS as usize * MANY_CLIENTS_METRICS as usize
    );
    wait_for_sink(&dir.sink_dir(), &expected, KAFKA_DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(
        verification.lines,
        expected.len(),
        "the sink holds exactly the metrics sent"
    );
}

/// The continuous load of the kill tests: clients, and metrics per request.
const KILL_LOAD_CLIENTS: usize = 10;
const KILL_LOAD_METRICS: u32 = 5;
/// How many times the ingest is killed and restarted under one continuous load.
const INGEST_KILLS: usize = 2;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_ingest_killed_under_load_loses_no_acknowledged_metric() {
    let bootstrap = bootstrap_from_env();
    let dir = TestDir::new("kafka-ingest-killed");
    let topic = unique_name("metricstream-test-ingest-killed");
    let (ingest_spec, consumer_spec) = kafka_services(&dir, &bootstrap, &topic);
    let mut ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    // One load across every kill and restart: requests in flight at a kill, and those refused
    // while the ingest is down, are not acknowledged; everything acknowledged must arrive.
    let load = start_load(
        LoadSpec::new(
            vec![ingest_spec.base_url()],
            KILL_LOAD_CLIENTS,
            u64::MAX,
            KILL_LOAD_METRICS,
        )
        .client_prefix("load")
        .pause(Duration::from_millis(2)),
    );
    for kill in 1..=INGEST_KILLS {
        load.wait_for_acknowledged(load.acknowledged() + 300, Duration::from_secs(90))
            .await;
        ingest.kill();
        let acknowledged_at_kill = load.acknowledged();
        println!(
            "kill {kill}: the ingest killed after {acknowledged_at_kill} acknowledged requests"
        );
        // Same ports, a new producer: what the old one had acknowledged is in Kafka already.
        ingest = ingest_spec.start().await;
        load.wait_for_acknowledged(acknowledged_at_kill + 1, Duration::from_secs(90))
            .await;
    }
    load.wait_for_acknowledged(load.acknowledged() + 300, Duration::from_secs(90))
        .await;
    let report = load.stop_and_finish().await;
    println!(
        "{} kills of the ingest under load: {}; results: {:?}",
        INGEST_KILLS,
        report.summary(),
        report.result_counts()
    );
    let unanswered = report.outcomes.iter().filter(|o| o.result.is_err()).count();
    assert!(
        unanswered >= INGEST_KILLS,
        "only {unanswered} requests went unanswered: the kills did not happen under load"
    );

    let expected = report.expected();
    wait_for_sink(&dir.sink_dir(), &expected, KAFKA_DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    println!("{}", verification.summary());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_consumer_killed_under_load_resumes_without_loss_or_duplicates() {
    let bootstrap = bootstrap_from_env();
    let dir = TestDir::new("kafka-consumer-killed");
    let topic = unique_name("metricstream-test-consumer-killed");
    let (ingest_spec, consumer_spec) = kafka_services(&dir, &bootstrap, &topic);
    // Small batches: many sink writes and commits to be killed between.
    let consumer_spec = consumer_spec.env("METRICSTREAM_MAX_BATCH_RECORDS", "64");
    let ingest = ingest_spec.start().await;
    let consumer = consumer_spec.start().await;

    let load = start_load(
        LoadSpec::new(
            vec![ingest.base_url()],
            KILL_LOAD_CLIENTS,
            u64::MAX,
            KILL_LOAD_METRICS,
        )
        .client_prefix("load")
        .pause(Duration::from_millis(5)),
    );

    // First kill as soon as it has written anything: likely between a sink write and its commit.
    let at_first_kill = wait_for_lines(
        &dir.sink_dir(),
        1,
        Duration::from_millis(1),
        Duration::from_secs(90),
    )
    .await;
    consumer.kill();
    println!("kill 1: the consumer killed with {at_first_kill} lines in the sink");

    // Restarted at once in the same group: it gets the partitions once the killed member's
    // session expires (~10 s), while the load piles up a backlog; killed again mid-drain.
    // (Polled less often than the first kill: each look reads the whole sink.)
    let consumer = consumer_spec.spawn();
    let at_second_kill = wait_for_lines(
        &dir.sink_dir(),
        at_first_kill + 2_000,
        Duration::from_millis(20),
        Duration::from_secs(90),
    )
    .await;
    consumer.kill();
    println!(
        "kill 2: the consumer killed with {at_second_kill} lines in the sink, {} metrics \
         acknowledged",
        load.acknowledged() * u64::from(KILL_LOAD_METRICS)
    );

    let consumer = consumer_spec.start().await;
    load.wait_for_acknowledged(load.acknowledged() + 300, Duration::from_secs(90))
        .await;
    let report = load.stop_and_finish().await;
    println!(
        "load across 2 consumer kills: {}; sink lines now {}",
        report.summary(),
        count_lines(&dir.sink_dir())
    );
    report.assert_all_accepted();

    let expected = report.expected();
    wait_for_sink(&dir.sink_dir(), &expected, KAFKA_DRAIN_TIMEOUT).await;
    consumer.terminate().await;
    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(
        verification.lines,
        expected.len(),
        "the sink holds exactly the metrics sent"
    );
}

// ---- the broker stopped for 30 s under load -----------------------------------------------------

/// How long the broker stays stopped.
const OUTAGE: Duration = Duration::from_secs(30);
/// The ingest's `--kafka-ack-timeout`, set explicitly: the bound a request waits for Kafka.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The clients' own deadline per request: above the ack timeout, so a request the ingest
/// holds until then is answered, and one it holds longer shows as a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// The ingest must notice a stopped broker within this long of the process being gone.
const DETECTION_BOUND: Duration = Duration::from_secs(10);
/// Once the outage is known, a request must be refused within this (at the 99th percentile).
const FAST_FAIL_P99_BOUND: Duration = Duration::from_secs(2);
/// After the broker serves metadata again, the first `202` must come within this long.
const RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// After the broker serves metadata again, the consumer must write to the sink within this
/// long: it rejoins its group (its session expired during the outage) after at most one
/// retry pause of the pipeline (10 s at most), plus room for a loaded machine.
const CONSUMER_RECOVERY_BOUND: Duration = Duration::from_secs(45);
/// Requests sent this long after the first `202` of the recovery must all be accepted.
const SETTLE_AFTER_RECOVERY: Duration = Duration::from_secs(5);
/// How long the load keeps running after the recovery.
const LOAD_AFTER_RECOVERY: Duration = Duration::from_secs(15);
/// How often the services' `/readyz` and the sink are sampled.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(200);

/// One look at the services from outside.
struct Sample {
    at: Instant,
    /// `/readyz` answered 200 (`Ok(true)`), something else (`Ok(false)`), or not at all.
    ingest_ready: Result<bool, String>,
    consumer_ready: Result<bool, String>,
    sink_lines: usize,
}

/// Samples the services' `/readyz` and the sink's line count in the background.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(ingest: &Service, consumer: &Service, sink_dir: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task_stop = stop.clone();
        let ingest_url = ingest.admin_url("/readyz");
        let consumer_url = consumer.admin_url("/readyz");
        let handle = tokio::spawn(async move {
            let client = http_client(Duration::from_secs(5));
            let ready = |url: String| {
                let client = client.clone();
                async move {
                    match client.get(&url).send().await {
                        Ok(response) => Ok(response.status().as_u16() == 200),
                        Err(error) => Err(error.to_string()),
                    }
                }
            };
            let mut samples = Vec::new();
            while !task_stop.load(Ordering::Relaxed) {
                let (ingest_ready, consumer_ready) =
                    tokio::join!(ready(ingest_url.clone()), ready(consumer_url.clone()));
                samples.push(Sample {
                    at: Instant::now(),
                    ingest_ready,
                    consumer_ready,
                    sink_lines: count_lines(&sink_dir),
                });
                tokio::time::sleep(SAMPLE_INTERVAL).await;
            }
            samples
        });
        Self { stop, handle }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("the sampler panicked")
    }
}

/// The start of the last stretch of samples in `[from, to)` for which `not_ready` holds, if the
/// last sample before `to` is one.
fn not_ready_since(
    samples: &[Sample],
    from: Instant,
    to: Instant,
    not_ready: impl Fn(&Sample) -> bool,
) -> Option<Instant> {
    let mut since = None;
    for sample in samples.iter().filter(|s| s.at < to) {
        if sample.at >= from && not_ready(sample) {
            since.get_or_insert(sample.at);
        } else {
            since = None;
        }
    }
    since
}

/// Fails the test if either service has exited.
fn assert_alive(services: &mut [&mut Service], when: &str) {
    for service in services.iter_mut() {
        if let Some(status) = service.try_exit() {
            panic!(
                "{} exited ({status}) {when}; log: {}",
                service.label(),
                service.log_path().display()
            );
        }
    }
}

/// Waits `duration`, checking every 100 ms that both services still run.
async fn watch_alive(services: &mut [&mut Service], duration: Duration, when: &str) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        assert_alive(services, when);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_alive(services, when);
}

/// Seconds from `t0` to `t`.
fn at(t0: Instant, t: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One line of counts and latency for the requests sent in `[from, to)`.
fn phase_line(
    name: &str,
    t0: Instant,
    from: Instant,
    to: Instant,
    outcomes: &[&Outcome],
) -> String {
    let accepted = outcomes.iter().filter(|o| o.status() == Some(202)).count();
    let unavailable = outcomes.iter().filter(|o| o.status() == Some(503)).count();
    let other = outcomes.len() - accepted - unavailable;
    let latencies = || outcomes.iter().map(|o| o.latency);
    format!(
        "  {name:<11} sent in [{:6.2}, {:6.2}) s: {:5} requests, 202: {accepted:5}, 503: \
         {unavailable:5}, other: {other}; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(t0, from),
        at(t0, to),
        outcomes.len(),
        ms(quantile(latencies(), 0.50)),
        ms(quantile(latencies(), 0.99)),
        ms(quantile(latencies(), 1.0)),
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_BOOTSTRAP from hack/kafka.sh up (make test runs it)"]
async fn kafka_broker_outage_answers_503_fast_and_recovers() {
    // Not the shared broker, which the other tests use meanwhile, but a private one from the
    // same script; still run only where a broker can be (KAFKA_BOOTSTRAP set, as make test does).
    let _ = bootstrap_from_env();
    let dir = TestDir::new("kafka-broker-outage");
    // Declared after `dir`, so dropped before it: `down` even when the test fails, and its log
    // copied into the kept directory first.
    let broker = PrivateBroker::up(&dir).await;
    let topic = unique_name("metricstream-test-outage");
    let (ingest_spec, consumer_spec) = kafka_services(&dir, broker.bootstrap(), &topic);
    let ingest_spec = ingest_spec.env(
        "METRICSTREAM_KAFKA_ACK_TIMEOUT",
        ACK_TIMEOUT.as_secs().to_string(),
    );
    let mut ingest = ingest_spec.start().await;
    let mut consumer = consumer_spec.start().await;

    // Steady paced load: 20 clients, each a request every ~20 ms plus its latency.
    let t0 = Instant::now();
    let load = start_load(
        LoadSpec::new(vec![ingest.base_url()], 20, u64::MAX, 5)
            .client_prefix("outage")
            .pause(Duration::from_millis(20))
            .request_timeout(CLIENT_TIMEOUT),
    );
    let sampler = Sampler::start(&ingest, &consumer, dir.sink_dir());
    // Both services at work before the broker goes: requests accepted, the consumer writing.
    load.wait_for_acknowledged(200, Duration::from_secs(90))
        .await;
    wait_for_lines(
        &dir.sink_dir(),
        1,
        Duration::from_millis(50),
        Duration::from_secs(90),
    )
    .await;

    let stop_begin = Instant::now();
    broker.stop_broker(false).await;
    let stop_done = Instant::now();
    watch_alive(
        &mut [&mut ingest, &mut consumer],
        OUTAGE,
        "while the broker was stopped",
    )
    .await;

    let acknowledged_before_start = load.acknowledged();
    let start_begin = Instant::now();
    broker.start_broker().await;
    let start_done = Instant::now();

    // 202s must resume by themselves.
    let recovery_deadline = start_done + RECOVERY_BOUND;
    while load.acknowledged() <= acknowledged_before_start {
        assert_alive(
            &mut [&mut ingest, &mut consumer],
            "after the broker restarted",
        );
        assert!(
            Instant::now() < recovery_deadline,
            "no request was accepted within {RECOVERY_BOUND:?} of the broker serving metadata \
             again ({} refused since it stopped); ingest log: {}",
            load.failed(),
            ingest.log_path().display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed_live = Instant::now();
    watch_alive(
        &mut [&mut ingest, &mut consumer],
        LOAD_AFTER_RECOVERY,
        "after the recovery",
    )
    .await;
    let stopped = Instant::now();
    let report: LoadReport = load.stop_and_finish().await;
    assert_alive(&mut [&mut ingest, &mut consumer], "at the end of the load");

    // Every 202 — before, during, after — must reach the sink (checked after the timeline).
    let expected = report.expected();
    let drained = try_wait_for_sink(&dir.sink_dir(), &expected, KAFKA_DRAIN_TIMEOUT).await;
    let sink_complete = drained.is_ok().then(Instant::now);
    let samples = sampler.finish().await;
    assert_alive(&mut [&mut ingest, &mut consumer], "after the drain");

    // ---- the timeline -------------------------------------------------------------------------
    let outcomes = &report.outcomes;
    let sent_in = |from: Instant, to: Instant| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.sent_at >= from && o.sent_at < to)
            .collect()
    };
    let last_accepted_before = outcomes
        .iter()
        .filter(|o| o.status() == Some(202) && o.sent_at < start_begin)
        .max_by_key(|o| o.answered_at());
    let first_refusal = outcomes
        .iter()
        .filter(|o| o.status() != Some(202) && o.answered_at() >= stop_begin)
        .min_by_key(|o| o.answered_at());
    let first_accepted_after = outcomes
        .iter()
        .filter(|o| o.status() == Some(202) && o.sent_at >= start_begin)
        .min_by_key(|o| o.answered_at());
    // The outage is known from the start of the last stretch of "not ready" before the restart
    // (the producer cannot mark the cluster reachable again while no broker runs).
    let ingest_unready_since = not_ready_since(&samples, stop_begin, start_begin, |s| {
        matches!(s.ingest_ready, Ok(false))
    });
    let consumer_unready_since = not_ready_since(&samples, stop_begin, start_begin, |s| {
        matches!(s.consumer_ready, Ok(false))
    });
    let ready_again = |ready: fn(&Sample) -> bool| {
        samples
            .iter()
            .find(|s| s.at >= start_begin && ready(s))
            .map(|s| s.at)
    };
    let ingest_ready_again = ready_again(|s| matches!(s.ingest_ready, Ok(true)));
    let consumer_ready_again = ready_again(|s| matches!(s.consumer_ready, Ok(true)));
    let lines_at_restart = samples
        .iter()
        .rev()
        .find(|s| s.at < start_done)
        .map_or(0, |s| s.sink_lines);
    let sink_grows_again = samples
        .iter()
        .find(|s| s.at >= start_done && s.sink_lines > lines_at_restart)
        .map(|s| s.at);
    let unanswered_readyz: Vec<String> = samples
        .iter()
        .flat_map(|s| [&s.ingest_ready, &s.consumer_ready])
        .filter_map(|answer| answer.as_ref().err().cloned())
        .collect();
    let detected = ingest_unready_since.map(|since| since.max(stop_done));
    let fast_window = detected.map(|since| sent_in(since, start_begin));
    let first_fast_refusal = fast_window
        .as_ref()
        .and_then(|window| window.iter().min_by_key(|o| o.answered_at()).copied());

    let mut timeline = vec![format!(
        "Kafka broker outage ({} build; private broker {}; ack timeout {ACK_TIMEOUT:?}, client \
         timeout {CLIENT_TIMEOUT:?}); seconds since the load started:",
        build_kind(),
        broker.bootstrap()
    )];
    let mut event = |what: &str, t: Option<Instant>, detail: String| {
        let t = t.map_or_else(|| "     -".to_owned(), |t| format!("{:6.2}", at(t0, t)));
        timeline.push(format!("  {t}  {what}{detail}"));
    };
    event(
        "stop-broker (SIGTERM) invoked",
        Some(stop_begin),
        String::new(),
    );
    event(
        "last 202 before the outage (answered)",
        last_accepted_before.map(Outcome::answered_at),
        String::new(),
    );
    event(
        "ingest /readyz not ready (for the rest of the outage) from",
        ingest_unready_since,
        String::new(),
    );
    event(
        "broker process gone",
        Some(stop_done),
        format!(
            " (stopping took {:.2} s)",
            (stop_done - stop_begin).as_secs_f64()
        ),
    );
    event(
        "consumer /readyz not ready (for the rest of the outage) from",
        consumer_unready_since,
        String::new(),
    );
    event(
        "first non-202 answer",
        first_refusal.map(Outcome::answered_at),
        first_refusal.map_or_else(String::new, |o| {
            format!(
                ": {} after {:.1} ms (sent at {:.2})",
                o.describe(),
                ms(o.latency),
                at(t0, o.sent_at)
            )
        }),
    );
    event(
        "first answer to a request sent with the outage known",
        first_fast_refusal.map(Outcome::answered_at),
        first_fast_refusal.map_or_else(String::new, |o| {
            format!(": {} after {:.1} ms", o.describe(), ms(o.latency))
        }),
    );
    event("start-broker invoked", Some(start_begin), String::new());
    event(
        "broker serving metadata again",
        Some(start_done),
        format!(
            " (restart took {:.2} s)",
            (start_done - start_begin).as_secs_f64()
        ),
    );
    event(
        "ingest /readyz ready again",
        ingest_ready_again,
        String::new(),
    );
    event(
        "first 202 after the restart (answered)",
        first_accepted_after.map(Outcome::answered_at),
        first_accepted_after.map_or_else(String::new, |o| {
            format!(
                ": {:.2} s after the broker served metadata (seen live at {:.2})",
                at(start_done, o.answered_at()),
                at(t0, resumed_live)
            )
        }),
    );
    event(
        "consumer /readyz ready again",
        consumer_ready_again,
        String::new(),
    );
    event(
        "the sink grows again",
        sink_grows_again,
        sink_grows_again.map_or_else(String::new, |t| {
            format!(
                " ({:.2} s after the broker served metadata)",
                at(start_done, t)
            )
        }),
    );
    event("load stopped", Some(stopped), String::new());
    event(
        "the sink holds every acknowledged metric",
        sink_complete,
        match (sink_complete, &drained) {
            (Some(t), _) => format!(" ({:.2} s after the load stopped)", at(stopped, t)),
            (None, Err(verification)) => format!(
                ": not within {KAFKA_DRAIN_TIMEOUT:?} of the load stopping: {}",
                verification.summary()
            ),
            (None, Ok(_)) => String::new(),
        },
    );
    let end = stopped + CLIENT_TIMEOUT;
    let phases = [
        ("before", t0, stop_begin),
        ("stopping", stop_begin, stop_done),
        ("down", stop_done, start_begin),
        ("restarting", start_begin, start_done),
        ("after", start_done, end),
    ];
    timeline.push("requests by phase of sending:".to_owned());
    for (name, from, to) in phases {
        timeline.push(phase_line(name, t0, from, to, &sent_in(from, to)));
    }
    if let (Some(since), Some(window)) = (detected, &fast_window) {
        timeline.push(format!(
            "sent with the outage known, before start-broker:\n{}",
            phase_line("known-down", t0, since, start_begin, window)
        ));
    }
    timeline.push(format!("all results: {:?}", report.result_counts()));
    println!("{}", timeline.join("\n"));

    // ---- the assertions -----------------------------------------------------------------------
    // No hang, no dropped connection: every request answered within the client's deadline.
    let unanswered: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(
        unanswered.is_empty(),
        "{} requests got no answer (the ingest hung past {CLIENT_TIMEOUT:?} or dropped the \
         connection); first: {:?}",
        unanswered.len(),
        unanswered.first().map(|o| o.describe())
    );
    // Refusals are 503 with Retry-After, nothing else.
    let bad_refusals: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status() != Some(202))
        .filter(|o| {
            o.status() != Some(503)
                || o.result
                    .as_ref()
                    .map_or(true, |answer| answer.retry_after.is_none())
        })
        .map(|o| format!("{} ({:?})", o.describe(), o.result))
        .take(5)
        .collect();
    assert!(
        bad_refusals.is_empty(),
        "refusals other than 503 with Retry-After: {bad_refusals:?}"
    );
    assert!(
        unanswered_readyz.is_empty(),
        "/readyz went unanswered {} times: {:?}",
        unanswered_readyz.len(),
        unanswered_readyz.first()
    );
    // The outage is noticed promptly...
    let detected = detected.unwrap_or_else(|| {
        panic!(
            "the ingest's /readyz did not stay not-ready through the outage; ingest log: {}",
            ingest.log_path().display()
        )
    });
    assert!(
        detected <= stop_done + DETECTION_BOUND,
        "the ingest noticed the stopped broker {:.2} s after the process was gone, allowed {:?}",
        at(stop_done, detected),
        DETECTION_BOUND
    );
    // ... and from then on every request is refused at once.
    let window = fast_window.expect("a detection gives a window");
    assert!(
        window.len() >= 100,
        "only {} requests were sent while the outage was known: the load did not keep up",
        window.len()
    );
    let accepted_in_outage = window.iter().filter(|o| o.status() == Some(202)).count();
    assert_eq!(
        accepted_in_outage, 0,
        "requests were accepted while no broker ran"
    );
    let p99 = quantile(window.iter().map(|o| o.latency), 0.99);
    assert!(
        p99 < FAST_FAIL_P99_BOUND,
        "with the outage known, refusals took {:.1} ms at the 99th percentile, allowed {:?}",
        ms(p99),
        FAST_FAIL_P99_BOUND
    );
    // The ingest recovers by itself, and stays recovered.
    let first_accepted_after = first_accepted_after.expect("the recovery loop saw a 202");
    assert!(
        first_accepted_after.answered_at() <= start_done + RECOVERY_BOUND,
        "the first 202 came {:.2} s after the broker served metadata, allowed {RECOVERY_BOUND:?}",
        at(start_done, first_accepted_after.answered_at())
    );
    let settled_from = first_accepted_after.answered_at() + SETTLE_AFTER_RECOVERY;
    let settled = sent_in(settled_from, end);
    assert!(
        settled.len() >= 100,
        "only {} requests were sent after the recovery settled",
        settled.len()
    );
    let refused_after: Vec<String> = settled
        .iter()
        .filter(|o| o.status() != Some(202))
        .map(|o| format!("{:.2} s: {}", at(t0, o.sent_at), o.describe()))
        .take(5)
        .collect();
    assert!(
        refused_after.is_empty(),
        "requests sent {SETTLE_AFTER_RECOVERY:?} after the recovery were still refused: \
         {refused_after:?}"
    );

    // Every 202 exactly once in the sink, and both services stop cleanly.
    let consumer_log = consumer.log_path().to_path_buf();
    if drained.is_ok() {
        consumer.terminate().await;
        ingest.terminate().await;
        let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
        println!("settled: {}", verification.summary());
    }

    // The consumer recovers by itself too.
    assert!(
        sink_grows_again.is_some_and(|t| t <= start_done + CONSUMER_RECOVERY_BOUND),
        "the consumer did not write to the sink again within {CONSUMER_RECOVERY_BOUND:?} of the \
         broker serving metadata ({}); consumer log: {}",
        sink_grows_again.map_or_else(
            || "not at all".to_owned(),
            |t| format!("it did after {:.2} s", at(start_done, t))
        ),
        consumer_log.display()
    );
    if let Err(verification) = drained {
        panic!(
            "the sink did not receive every acknowledged metric within {KAFKA_DRAIN_TIMEOUT:?} \
             of the load stopping: {}; first missing: {:?}",
            verification.summary(),
            verification.missing.iter().take(5).collect::<Vec<_>>()
        );
    }
}
