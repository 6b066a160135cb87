//! `kill -9` of each system mid-run, and a count of what it lost or duplicated of what it
//! acknowledged.
//!
//! `--crash-clients` clients each send `--crash-rate` requests/s of their own samples (the
//! intake set's series with the client in `instance`, the request's number in the timestamp),
//! retrying a request until it is answered 2xx, as an agent does. A third of the way into
//! `--crash-secs` every process of the system is SIGKILLed at once and started again on the
//! same directories and ports. After the load the far end is read whole — the Kafka topic (each
//! system's records decoded: MetricStream's codec, the Collector's OTLP protobuf) or the store's
//! export — and each acknowledged sample is looked for by (instance, method, code, timestamp).
//!
//! Figures: `acknowledged_samples`, `lost` (acknowledged, not found), `duplicates` (copies
//! beyond the first of a sample found; for the store as a query sees them, after its
//! deduplication), `resent_samples` (store only: rows the store added beyond the distinct ones
//! exported — deliveries its deduplication absorbed), `unacknowledged_delivered` (found though
//! never answered 2xx: not a loss), `refused_requests` (answers other than 2xx and requests
//! without an answer, each retried), `down_secs` (SIGKILL to every process up again).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metricstream_backend::kafka::{KafkaConsumer, KafkaMetrics, KafkaSettings};
use metricstream_backend::{PollLimits, QueueConsumer, codec};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use serde_json::{Value, json};

use super::systems::{Running, System};
use super::{SUITE, Scenario, Suite};
use crate::intake::bodies::{self, Series, TIMESTAMP_MS};
use crate::results::Measurement;

/// How long the far end may go without a new record or row before the count is final.
const QUIET: Duration = Duration::from_secs(20);
/// The longest the count waits for the far end after the load.
const COUNT_TIMEOUT: Duration = Duration::from_secs(240);
/// A refused or unanswered request is sent again after this pause.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A sample's identity: (instance, method, code, timestamp in ms).
type Key = (String, String, String, i64);

/// How a crash run loads the system.
#[derive(Clone, Copy, Debug)]
pub(super) struct CrashLoad {
    pub clients: u32,
    /// Requests/s of each client.
    pub rate: u32,
    pub duration: Duration,
    pub samples_per_request: u32,
}

/// Client `client`'s request `request`: the intake set with the client in every instance and
/// the request's number in the timestamp, so each sample is unique in the run.
fn request_series(set: &[Series], client: u32, request: u64) -> Vec<Series> {
    set.iter()
        .map(|s| Series {
            instance: format!("c{client}-{}", s.instance),
            timestamp_ms: TIMESTAMP_MS + i64::try_from(request).unwrap_or(i64::MAX),
            ..s.clone()
        })
        .collect()
}

fn key_of(s: &Series) -> Key {
    (
        s.instance.clone(),
        s.method.to_owned(),
        s.code.to_owned(),
        s.timestamp_ms,
    )
}

pub(super) async fn crash_run(
    suite: &Suite,
    system: System,
    scenario: Scenario,
    dir: &std::path::Path,
    load: CrashLoad,
) -> anyhow::Result<Measurement> {
    let mut running = system.start(suite, dir).await?;
    let outcome = crash_and_count(suite, system, scenario, &mut running, load).await;
    let stopped = running.stop().await;
    let figures = outcome?;
    stopped?;
    let params = params(scenario, load, system);
    Ok(Measurement {
        suite: SUITE.to_owned(),
        target: system.target().to_owned(),
        params,
        figures,
        command: running.command.clone(),
    })
}

/// The params of a crash run of `system` in `scenario` under `load`, measured or failed.
pub(super) fn params(
    scenario: Scenario,
    load: CrashLoad,
    system: System,
) -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("scenario".to_owned(), json!(scenario.name())),
        ("protocol".to_owned(), json!(scenario.protocol().name())),
        ("mode".to_owned(), json!("crash")),
        ("clients".to_owned(), json!(load.clients)),
        ("rate_per_client".to_owned(), json!(load.rate)),
        (
            "samples_per_request".to_owned(),
            json!(load.samples_per_request),
        ),
        ("duration_secs".to_owned(), json!(load.duration.as_secs())),
        ("processes".to_owned(), json!(system.processes())),
    ])
}

async fn crash_and_count(
    suite: &Suite,
    system: System,
    scenario: Scenario,
    running: &mut Running,
    load: CrashLoad,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let protocol = scenario.protocol();
    let url = format!("{}{}", running.base_url, protocol.ingest_path());
    let set = Arc::new(bodies::series(load.samples_per_request as usize));
    let http = metricstream_tests::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building an HTTP client")?;
    let deadline = Instant::now() + load.duration;
    let mut clients = Vec::new();
    for client in 0..load.clients {
        let (http, url, set) = (http.clone(), url.clone(), set.clone());
        let interval = Duration::from_secs_f64(1.0 / f64::from(load.rate.max(1)));
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut refused = 0u64;
            let mut request = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                let body = bodies::encode(protocol, &request_series(&set, client, request))?;
                let mut post = http
                    .post(&url)
                    .header("content-type", protocol.content_type())
                    .header("authorization", format!("bench-crash-{client}"));
                for header in protocol.headers() {
                    if let Some((name, value)) = header.split_once(": ") {
                        post = post.header(name, value);
                    }
                }
                match post.body(body).send().await {
                    Ok(answer) if answer.status().is_success() => {
                        acknowledged.push(request);
                        request += 1;
                        next += interval;
                        tokio::time::sleep_until(next.into()).await;
                    }
                    _ => {
                        refused += 1;
                        tokio::time::sleep(RETRY_PAUSE).await;
                        next = Instant::now();
                    }
                }
            }
            anyhow::Ok((client, acknowledged, refused))
        }));
    }
    tokio::time::sleep(load.duration / 3).await;
    let down = running
        .kill_and_restart(&suite.http)
        .await
        .context("restarting after SIGKILL")?;
    eprintln!(
        "peers: {} SIGKILLed and up again in {:.1} s",
        system.target(),
        down.as_secs_f64()
    );
    let mut expected: HashMap<Key, ()> = HashMap::new();
    let mut refused = 0u64;
    for client in clients {
        let (client, acknowledged, client_refused) = client.await.context("a load client")??;
        refused += client_refused;
        for request in acknowledged {
            for s in request_series(&set, client, request) {
                expected.insert(key_of(&s), ());
            }
        }
    }
    let (found, resent) = match (running.topic(), running.store()) {
        (Some(topic), _) => (read_topic(topic, system, expected.len()).await?, None),
        (None, Some(store)) => {
            // Until the store has added a row for every acknowledged sample, or goes quiet.
            let started = Instant::now();
            let mut last = (0.0, Instant::now());
            loop {
                let rows = store.counters().await?.rows_added;
                if rows >= expected.len() as f64
                    || last.1.elapsed() > QUIET
                    || started.elapsed() > COUNT_TIMEOUT
                {
                    break;
                }
                if rows > last.0 {
                    last = (rows, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let mut found: HashMap<Key, u32> = HashMap::new();
            for series in store
                .export(&format!("{{__name__=\"{}\"}}", bodies::NAME))
                .await?
            {
                let label = |name: &str| series.metric.get(name).cloned().unwrap_or_default();
                for &timestamp in &series.timestamps {
                    let key = (label("instance"), label("method"), label("code"), timestamp);
                    *found.entry(key).or_default() += 1;
                }
            }
            let rows = store.counters().await?.rows_added;
            let exported: u32 = found.values().sum();
            (found, Some(rows - f64::from(exported)))
        }
        (None, None) => anyhow::bail!("{} has neither a topic nor a store", system.target()),
    };
    let lost = expected.keys().filter(|k| !found.contains_key(*k)).count();
    let duplicates: u64 = found
        .values()
        .map(|&n| u64::from(n.saturating_sub(1)))
        .sum();
    let unacknowledged = found.keys().filter(|k| !expected.contains_key(*k)).count();
    let mut figures = BTreeMap::from([
        ("acknowledged_samples".to_owned(), expected.len() as f64),
        ("lost".to_owned(), lost as f64),
        ("duplicates".to_owned(), duplicates as f64),
        ("unacknowledged_delivered".to_owned(), unacknowledged as f64),
        ("refused_requests".to_owned(), refused as f64),
        ("down_secs".to_owned(), down.as_secs_f64()),
    ]);
    if let Some(resent) = resent {
        figures.insert("resent_samples".to_owned(), resent);
    }
    Ok(figures)
}

/// Reads the whole topic on a fresh group until every expected sample is found and the topic
/// has been quiet for a moment, or it stays quiet for [`QUIET`]; counts each sample's copies.
async fn read_topic(
    topic: &KafkaSettings,
    system: System,
    expected: usize,
) -> anyhow::Result<HashMap<Key, u32>> {
    let group = metricstream_tests::kafka::unique_name("bench-peers-count");
    let mut consumer = KafkaConsumer::open(topic, &group, KafkaMetrics::default())
        .context("opening a Kafka consumer")?;
    let mut found: HashMap<Key, u32> = HashMap::new();
    let started = Instant::now();
    let mut last_record = Instant::now();
    loop {
        let poll = consumer
            .poll(PollLimits::records(1000), Duration::from_millis(500))
            .await
            .context("polling the topic")?;
        if poll.records.is_empty() {
            let quiet = last_record.elapsed();
            let complete = found.len() >= expected;
            if (complete && quiet > Duration::from_secs(3))
                || quiet > QUIET
                || started.elapsed() > COUNT_TIMEOUT
            {
                break;
            }
            continue;
        }
        last_record = Instant::now();
        for record in &poll.records {
            let keys = match system {
                System::Collector => otlp_keys(&record.payload)?,
                _ => metricstream_keys(&record.payload)?,
            };
            for key in keys {
                *found.entry(key).or_default() += 1;
            }
        }
    }
    consumer.close().await;
    Ok(found)
}

fn metricstream_keys(payload: &[u8]) -> anyhow::Result<Vec<Key>> {
    let batch = codec::decode(payload).context("decoding a MetricStream record")?;
    Ok(batch
        .metrics
        .into_iter()
        .map(|m| {
            let tag = |name: &str| m.tags.get(name).cloned().unwrap_or_default();
            (
                tag("instance"),
                tag("method"),
                tag("code"),
                m.timestamp.unwrap_or_default(),
            )
        })
        .collect())
}

fn otlp_keys(payload: &[u8]) -> anyhow::Result<Vec<Key>> {
    let request = ExportMetricsServiceRequest::decode(payload)
        .context("decoding the Collector's OTLP record")?;
    let text = |attributes: &[KeyValue], key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|value| match value {
                AnyValueKind::StringValue(text) => text.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default()
    };
    let mut keys = Vec::new();
    for resource in &request.resource_metrics {
        let attributes = resource
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default();
        let instance = text(attributes, "service.instance.id");
        for scope in &resource.scope_metrics {
            for metric in &scope.metrics {
                let Some(Data::Sum(sum)) = &metric.data else {
                    continue;
                };
                for point in &sum.data_points {
                    let millis =
                        i64::try_from(point.time_unix_nano / 1_000_000).unwrap_or_default();
                    keys.push((
                        instance.clone(),
                        text(&point.attributes, "method"),
                        text(&point.attributes, "code"),
                        millis,
                    ));
                }
            }
        }
    }
    Ok(keys)
}
