//! The load generator: concurrent clients, each with its own `Authorization` id (or one shared
//! bearer token) and connection pool, posting metrics that each carry their identity (`client`, `seq`, `i` tags), and
//! recording every request's status, answer and latency.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http_client;

/// The name of every metric the load generator sends.
pub const METRIC_NAME: &str = "m";
/// Timestamps are this plus the request's sequence number.
pub const BASE_TIMESTAMP_MS: i64 = 1_700_000_000_000;

/// The identity of one generated metric: the client that sent it, the client's request number,
/// and its position in the request. Carried in the metric's tags, so it survives the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricId {
    pub client: String,
    pub seq: u64,
    pub index: u32,
}

impl MetricId {
    pub fn new(client: impl Into<String>, seq: u64, index: u32) -> Self {
        Self {
            client: client.into(),
            seq,
            index,
        }
    }

    /// A value unique within the request and not an integer, so float handling shows.
    pub fn value(&self) -> f64 {
        self.seq as f64 * 1000.0 + f64::from(self.index) + 0.25
    }

    pub fn timestamp(&self) -> i64 {
        BASE_TIMESTAMP_MS + i64::try_from(self.seq).expect("seq fits i64")
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": METRIC_NAME,
            "value": self.value(),
            "timestamp": self.timestamp(),
            "tags": {
                "client": self.client,
                "seq": self.seq.to_string(),
                "i": self.index.to_string(),
            },
        })
    }

    /// Recovers the identity from a metric's name and tags; `None` for other metrics.
    pub fn from_tags(name: &str, tags: &BTreeMap<String, String>) -> Option<Self> {
        if name != METRIC_NAME {
            return None;
        }
        Some(Self {
            client: tags.get("client")?.clone(),
            seq: tags.get("seq")?.parse().ok()?,
            index: tags.get("i")?.parse().ok()?,
        })
    }
}

/// The body of request `seq` of `client`: `metrics` generated metrics.
pub fn request_body(client: &str, seq: u64, metrics: u32) -> Value {
    let metrics: Vec<Value> = (0..metrics)
        .map(|index| MetricId::new(client, seq, index).to_json())
        .collect();
    json!({ "metrics": metrics })
}

/// Gzips `bytes` (for `Content-Encoding: gzip` bodies).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// What load to send.
///
/// A load ends when every client has sent `requests_per_client` requests, or earlier when
/// [`RunningLoad::stop`] is called: give `u64::MAX` requests for a load that runs until stopped.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Ingest base URLs (`http://127.0.0.1:port`); client `c`'s request `s` goes to
    /// `targets[(c + s) % targets.len()]`.
    pub targets: Vec<String>,
    pub clients: usize,
    pub requests_per_client: u64,
    pub metrics_per_request: u32,
    /// Client `c` is named `<prefix>-<c>`; distinct prefixes keep several loads apart.
    pub client_prefix: String,
    /// The `Authorization` value every client sends (e.g. `Bearer <token>` for an ingest with a
    /// tokens file). `None` (the default): each client sends its own name, which open mode takes
    /// as the client id.
    pub authorization: Option<String>,
    /// A pause between one client's requests (none by default).
    pub pause: Duration,
    /// Send every other request gzip-compressed.
    pub gzip_every_other: bool,
    /// The client-side deadline of one request (connecting, sending, reading the answer).
    pub request_timeout: Duration,
    /// A pause after a request answered with anything but 2xx (a `503` while the backend is
    /// down, say), so that clients do not spin on fast refusals. None by default; a request
    /// with no answer at all is always followed by a short pause.
    pub refusal_pause: Duration,
}

impl LoadSpec {
    pub fn new(
        targets: Vec<String>,
        clients: usize,
        requests_per_client: u64,
        metrics_per_request: u32,
    ) -> Self {
        Self {
            targets,
            clients,
            requests_per_client,
            metrics_per_request,
            client_prefix: "client".to_owned(),
            authorization: None,
            pause: Duration::ZERO,
            gzip_every_other: false,
            request_timeout: Duration::from_secs(30),
            refusal_pause: Duration::ZERO,
        }
    }

    pub fn client_prefix(mut self, prefix: &str) -> Self {
        self.client_prefix = prefix.to_owned();
        self
    }

    /// Every client sends `value` as its `Authorization` header instead of its own name.
    pub fn authorization(mut self, value: impl Into<String>) -> Self {
        self.authorization = Some(value.into());
        self
    }

    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    pub fn gzip_every_other(mut self) -> Self {
        self.gzip_every_other = true;
        self
    }

    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    pub fn refusal_pause(mut self, pause: Duration) -> Self {
        self.refusal_pause = pause;
        self
    }

    /// The name of client `client` (`<prefix>-<client>`), carried in its metrics' `client` tag.
    pub fn client_name(&self, client: usize) -> String {
        client_name(&self.client_prefix, client)
    }

    pub fn total_metrics(&self) -> u64 {
        self.clients as u64 * self.requests_per_client * u64::from(self.metrics_per_request)
    }
}

/// The name of client `client` of a load with `prefix`: `<prefix>-<client>`.
pub fn client_name(prefix: &str, client: usize) -> String {
    format!("{prefix}-{client}")
}

/// The HTTP answer to one request.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The `Retry-After` header, if the answer had one.
    pub retry_after: Option<String>,
}

/// One request and what became of it.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub client: String,
    pub seq: u64,
    pub metrics: u32,
    pub target: usize,
    /// When the request was sent.
    pub sent_at: Instant,
    pub latency: Duration,
    /// The answer, or why there was none (connection refused or reset, timeout).
    pub result: Result<Answer, String>,
}

impl Outcome {
    /// When the answer (or the failure) arrived.
    pub fn answered_at(&self) -> Instant {
        self.sent_at + self.latency
    }

    /// The HTTP status, if there was an answer.
    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|answer| answer.status)
    }

    /// A 2xx: the ingest promised the metrics are durable.
    pub fn acknowledged(&self) -> bool {
        matches!(&self.result, Ok(answer) if (200..300).contains(&answer.status))
    }

    pub fn metric_ids(&self) -> impl Iterator<Item = MetricId> + '_ {
        (0..self.metrics).map(|index| MetricId::new(self.client.clone(), self.seq, index))
    }

    /// The request as its answer acknowledged it (the position from a
    /// `{"accepted":N,"partition":p,"offset":o}` body), with what is wrong with the body if it
    /// breaks that contract. `None` when there was no answer.
    pub fn acknowledged_request(&self) -> Option<(AcknowledgedRequest, Option<String>)> {
        let body = match &self.result {
            Ok(answer) => answer.body.as_str(),
            Err(_) => return None,
        };
        let mut request = AcknowledgedRequest {
            client: self.client.clone(),
            seq: self.seq,
            metrics: self.metrics,
            partition: None,
            offset: None,
        };
        let problem = match serde_json::from_str::<Value>(body) {
            Ok(ack) => {
                request.partition = ack["partition"].as_u64().map(|p| p as u32);
                // A spilled record's offset is its place in the ingest's spill; its offset in
                // Kafka is known only once the forwarder has appended it.
                let spilled = ack["spilled"].as_bool() == Some(true);
                request.offset = ack["offset"].as_u64().filter(|_| !spilled);
                (ack["accepted"].as_u64() != Some(u64::from(self.metrics))).then(|| {
                    format!(
                        "{} request {} sent {} metrics but the answer says {body}",
                        self.client, self.seq, self.metrics
                    )
                })
            }
            Err(error) => Some(format!(
                "{} request {}: the 2xx body is not JSON ({error}): {body:?}",
                self.client, self.seq
            )),
        };
        Some((request, problem))
    }

    /// A short description of the result: `202`, `503 backend_saturated`, `error: ...`.
    pub fn describe(&self) -> String {
        match &self.result {
            Ok(answer) if (200..300).contains(&answer.status) => answer.status.to_string(),
            Ok(answer) => {
                let code = serde_json::from_str::<Value>(&answer.body)
                    .ok()
                    .and_then(|body| body["error"]["code"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "(no error code)".to_owned());
                format!("{} {code}", answer.status)
            }
            Err(error) => format!("no answer: {error}"),
        }
    }
}

/// The `q`-quantile (0..=1, nearest rank) of `latencies`; zero when there are none.
pub fn quantile(latencies: impl IntoIterator<Item = Duration>, q: f64) -> Duration {
    let mut latencies: Vec<Duration> = latencies.into_iter().collect();
    if latencies.is_empty() {
        return Duration::ZERO;
    }
    latencies.sort_unstable();
    let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
    latencies[rank - 1]
}

/// Where an acknowledged metric must show up in the sink, as far as the `202` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExpectedPosition {
    pub partition: Option<u32>,
    pub offset: Option<u64>,
}

/// One acknowledged request in a form to store and check later (`metricstream-load`'s expected
/// file): its metrics are `(client, seq, 0..metrics)`, at the position its answer named.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgedRequest {
    pub client: String,
    pub seq: u64,
    pub metrics: u32,
    pub partition: Option<u32>,
    pub offset: Option<u64>,
}

impl AcknowledgedRequest {
    pub fn metric_ids(&self) -> impl Iterator<Item = MetricId> + '_ {
        (0..self.metrics).map(|index| MetricId::new(self.client.clone(), self.seq, index))
    }
}

/// Which `client` the sink must show for a generated metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkClient {
    /// The metric's `client` tag: in open mode the load sends each client's name as the
    /// `Authorization` value, and the ingest takes it as the client id.
    #[default]
    Tag,
    /// One and the same id for every metric, whichever the ingest's tokens file maps the shared
    /// bearer token to (the sender does not know it).
    Authenticated,
}

/// The acknowledged metrics the sink must hold, and any `202` body that broke the contract.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub metrics: HashMap<MetricId, ExpectedPosition>,
    pub problems: Vec<String>,
    pub sink_client: SinkClient,
}

impl Expected {
    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    /// Adds the acknowledged requests of `report`, checking each `202` body
    /// (`{"accepted":N,"partition":p,"offset":o}`).
    pub fn add_report(&mut self, report: &LoadReport) {
        for outcome in report.outcomes.iter().filter(|o| o.acknowledged()) {
            self.add_outcome(outcome);
        }
    }

    pub fn add_outcome(&mut self, outcome: &Outcome) {
        let Some((request, problem)) = outcome.acknowledged_request() else {
            return;
        };
        self.problems.extend(problem);
        self.add_request(&request);
    }

    /// Adds the metrics of one acknowledged request, all at the position its answer named.
    pub fn add_request(&mut self, request: &AcknowledgedRequest) {
        let position = ExpectedPosition {
            partition: request.partition,
            offset: request.offset,
        };
        for id in request.metric_ids() {
            if self.metrics.insert(id.clone(), position.clone()).is_some() {
                self.problems
                    .push(format!("{id:?} was sent twice by the load generator"));
            }
        }
    }

    pub fn insert(&mut self, id: MetricId, position: ExpectedPosition) {
        self.metrics.insert(id, position);
    }
}

/// Counters a running load updates, for tests that act in the middle of it.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub acknowledged: AtomicU64,
    pub failed: AtomicU64,
    /// Set by [`RunningLoad::stop`]: clients send no further request.
    pub stop: AtomicBool,
}

/// The result of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub outcomes: Vec<Outcome>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn acknowledged(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.acknowledged())
    }

    pub fn acknowledged_count(&self) -> usize {
        self.acknowledged().count()
    }

    /// The acknowledged metrics of this report.
    pub fn expected(&self) -> Expected {
        let mut expected = Expected::default();
        expected.add_report(self);
        expected
    }

    /// The acknowledged requests, and what is wrong with their answers' bodies (if anything).
    pub fn acknowledged_requests(&self) -> (Vec<AcknowledgedRequest>, Vec<String>) {
        let mut requests = Vec::new();
        let mut problems = Vec::new();
        for (request, problem) in self
            .acknowledged()
            .filter_map(Outcome::acknowledged_request)
        {
            requests.push(request);
            problems.extend(problem);
        }
        (requests, problems)
    }

    /// How many requests ended in each way (`202`, `503 backend_saturated`, `no answer: ...`).
    pub fn result_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for outcome in &self.outcomes {
            let mut key = outcome.describe();
            // Connection errors carry addresses and details; group them by their first words.
            key.truncate(120);
            *counts.entry(key).or_insert(0) += 1;
        }
        counts
    }

    /// The `q`-quantile (0..=1, nearest rank) of the acknowledged requests' latency.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        quantile(self.acknowledged().map(|o| o.latency), q)
    }

    /// Requests, throughput and latency in one line.
    ///
    /// The rates are over the acknowledged requests and the whole run.
    pub fn summary(&self) -> String {
        let seconds = self.elapsed.as_secs_f64().max(f64::EPSILON);
        let acknowledged = self.acknowledged_count();
        let metrics: u64 = self.acknowledged().map(|o| u64::from(o.metrics)).sum();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        format!(
            "{} requests ({acknowledged} acknowledged, {metrics} metrics) in {seconds:.2} s: \
             {:.0} req/s, {:.0} metrics/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.outcomes.len(),
            acknowledged as f64 / seconds,
            metrics as f64 / seconds,
            ms(self.latency_quantile(0.50)),
            ms(self.latency_quantile(0.99)),
            ms(self.latency_quantile(1.0)),
        )
    }

    /// Asserts that every request was answered `202`.
    pub fn assert_all_accepted(&self) {
        let rejected: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| !matches!(&o.result, Ok(answer) if answer.status == 202))
            .collect();
        if rejected.is_empty() {
            return;
        }
        let examples: Vec<String> = rejected
            .iter()
            .take(5)
            .map(|o| {
                let detail = match &o.result {
                    Ok(answer) => format!("{} {}", answer.status, answer.body),
                    Err(error) => error.clone(),
                };
                format!("  {} request {}: {detail}", o.client, o.seq)
            })
            .collect();
        panic!(
            "{} of {} requests were not answered 202; results: {:?}\nexamples:\n{}",
            rejected.len(),
            self.outcomes.len(),
            self.result_counts(),
            examples.join("\n")
        );
    }
}

/// A load running in the background.
pub struct RunningLoad {
    pub progress: Arc<Progress>,
    handle: tokio::task::JoinHandle<LoadReport>,
}

impl RunningLoad {
    pub fn acknowledged(&self) -> u64 {
        self.progress.acknowledged.load(Ordering::Relaxed)
    }

    /// Requests answered otherwise than 2xx, or not answered.
    pub fn failed(&self) -> u64 {
        self.progress.failed.load(Ordering::Relaxed)
    }

    /// Whether every client has finished.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Tells every client to send no further request; requests in flight run to their end.
    /// [`finish`](Self::finish) then returns once they have.
    pub fn stop(&self) {
        self.progress.stop.store(true, Ordering::Relaxed);
    }

    /// [`stop`](Self::stop), then [`finish`](Self::finish).
    pub async fn stop_and_finish(self) -> LoadReport {
        self.stop();
        self.finish().await
    }

    /// Waits until at least `count` requests were acknowledged.
    pub async fn wait_for_acknowledged(&self, count: u64, timeout: Duration) {
        let started = Instant::now();
        while self.acknowledged() < count {
            assert!(
                !self.handle.is_finished(),
                "the load finished with only {} of the {count} acknowledged requests waited for",
                self.acknowledged()
            );
            assert!(
                started.elapsed() < timeout,
                "only {} requests were acknowledged within {timeout:?}, waited for {count} \
                 ({} failed)",
                self.acknowledged(),
                self.progress.failed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for every client to send all of its requests.
    pub async fn finish(self) -> LoadReport {
        self.handle.await.expect("the load generator panicked")
    }
}

/// Starts `spec`'s clients in the background.
pub fn start_load(spec: LoadSpec) -> RunningLoad {
    assert!(!spec.targets.is_empty(), "a load needs at least one target");
    let progress = Arc::new(Progress::default());
    let spec = Arc::new(spec);
    let task_progress = progress.clone();
    let handle = tokio::spawn(async move {
        let started = Instant::now();
        let clients: Vec<_> = (0..spec.clients)
            .map(|client| tokio::spawn(run_client(spec.clone(), client, task_progress.clone())))
            .collect();
        let mut outcomes = Vec::new();
        for client in futures::future::join_all(clients).await {
            outcomes.extend(client.expect("a load client panicked"));
        }
        LoadReport {
            outcomes,
            elapsed: started.elapsed(),
        }
    });
    RunningLoad { progress, handle }
}

/// Runs `spec` to the end.
pub async fn run_load(spec: LoadSpec) -> LoadReport {
    start_load(spec).finish().await
}

/// An error with its sources, without the URL: `error sending request: connection refused`.
pub fn error_chain(error: reqwest::Error) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{}{causes}", error.without_url())
}

async fn run_client(spec: Arc<LoadSpec>, client: usize, progress: Arc<Progress>) -> Vec<Outcome> {
    let name = spec.client_name(client);
    let authorization = spec.authorization.clone().unwrap_or_else(|| name.clone());
    let http = http_client(spec.request_timeout);
    // A load that runs until stopped gives u64::MAX requests: do not reserve for all of them.
    let mut outcomes = Vec::with_capacity(spec.requests_per_client.min(1024) as usize);
    for seq in 0..spec.requests_per_client {
        if progress.stop.load(Ordering::Relaxed) {
            break;
        }
        let target = (client + seq as usize) % spec.targets.len();
        let url = format!("{}/metrics", spec.targets[target]);
        let json = serde_json::to_vec(&request_body(&name, seq, spec.metrics_per_request))
            .expect("serializing a request body");
        let mut request = http
            .post(&url)
            .header("authorization", authorization.as_str())
            .header("content-type", "application/json");
        request = if spec.gzip_every_other && seq % 2 == 1 {
            request.header("content-encoding", "gzip").body(gzip(&json))
        } else {
            request.body(json)
        };

        progress.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
                match response.text().await {
                    Ok(body) => Ok(Answer {
                        status,
                        body,
                        retry_after,
                    }),
                    Err(error) => Err(format!("reading the answer: {}", error_chain(error))),
                }
            }
            Err(error) => Err(error_chain(error)),
        };
        let latency = started.elapsed();

        let outcome = Outcome {
            client: name.clone(),
            seq,
            metrics: spec.metrics_per_request,
            target,
            sent_at: started,
            latency,
            result,
        };
        let unanswered = outcome.result.is_err();
        let acknowledged = outcome.acknowledged();
        if acknowledged {
            progress.acknowledged.fetch_add(1, Ordering::Relaxed);
        } else {
            progress.failed.fetch_add(1, Ordering::Relaxed);
        }
        outcomes.push(outcome);

        // The next request is always a new `seq`: a request that failed is never sent again
        // under the same identity, so a metric found twice in the sink is the pipeline's
        // duplicate, never the load generator's retry.
        let pause = if unanswered {
            // The ingest is down (being restarted, say): do not spin.
            spec.refusal_pause.max(Duration::from_millis(20))
        } else if !acknowledged {
            spec.refusal_pause
        } else {
            spec.pause
        };
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(seq: u64, latency_ms: u64, status: u16) -> Outcome {
        Outcome {
            client: "c".to_owned(),
            seq,
            metrics: 2,
            target: 0,
            sent_at: Instant::now(),
            latency: Duration::from_millis(latency_ms),
            result: Ok(Answer {
                status,
                body: format!(r#"{{"accepted":2,"partition":1,"offset":{seq}}}"#),
                retry_after: None,
            }),
        }
    }

    #[test]
    fn acknowledged_requests_rebuild_the_same_expectation() {
        let report = LoadReport {
            outcomes: vec![outcome(5, 1, 202), outcome(6, 1, 503), outcome(7, 1, 202)],
            elapsed: Duration::from_secs(1),
        };
        let (requests, problems) = report.acknowledged_requests();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(requests.len(), 2);
        let stored: Vec<AcknowledgedRequest> =
            serde_json::from_str(&serde_json::to_string(&requests).expect("serialize"))
                .expect("deserialize");
        let mut rebuilt = Expected::default();
        for request in &stored {
            rebuilt.add_request(request);
        }
        assert_eq!(rebuilt.metrics, report.expected().metrics);
    }

    #[test]
    fn an_acknowledgement_that_miscounts_is_a_problem() {
        let mut miscounted = outcome(5, 1, 202);
        miscounted.result = Ok(Answer {
            status: 202,
            body: r#"{"accepted":1,"partition":0,"offset":3}"#.to_owned(),
            retry_after: None,
        });
        let (requests, problems) = LoadReport {
            outcomes: vec![miscounted],
            elapsed: Duration::from_secs(1),
        }
        .acknowledged_requests();
        assert_eq!(requests[0].offset, Some(3));
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn identities_round_trip_through_tags() {
        let id = MetricId::new("client-7", 42, 3);
        let json = id.to_json();
        let tags: BTreeMap<String, String> =
            serde_json::from_value(json["tags"].clone()).expect("string tags");
        assert_eq!(MetricId::from_tags(METRIC_NAME, &tags), Some(id));
        assert_eq!(MetricId::from_tags("other", &tags), None);
    }

    #[test]
    fn quantiles_use_acknowledged_requests_only() {
        let report = LoadReport {
            outcomes: (1..=100)
                .map(|ms| outcome(ms, ms, 202))
                .chain([outcome(1000, 5000, 503)])
                .collect(),
            elapsed: Duration::from_secs(1),
        };
        assert_eq!(report.latency_quantile(0.5), Duration::from_millis(50));
        assert_eq!(report.latency_quantile(0.99), Duration::from_millis(99));
        assert_eq!(report.latency_quantile(1.0), Duration::from_millis(100));
        assert_eq!(report.acknowledged_count(), 100);
    }

    #[test]
    fn acknowledgements_give_every_metric_its_position() {
        let report = LoadReport {
            outcomes: vec![outcome(5, 1, 202), outcome(6, 1, 503)],
            elapsed: Duration::from_secs(1),
        };
        let expected = report.expected();
        assert!(expected.problems.is_empty(), "{:?}", expected.problems);
        assert_eq!(expected.len(), 2);
        assert_eq!(
            expected.metrics[&MetricId::new("c", 5, 1)],
            ExpectedPosition {
                partition: Some(1),
                offset: Some(5)
            }
        );
    }
}
