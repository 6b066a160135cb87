//! HTTP: the no-op HTTP ceiling and ingest on file (batch, always) and Kafka (without and with a
//! spill, and the spill alone while Kafka is down), under oha with latency correction; loss and
//! duplicates from the sink; peak RSS of ingest and consumer.
//!
//! For every load point and every target one fresh process (and, for ingest, a fresh queue
//! directory or Kafka topic) takes `oha` for `--duration-secs`; the targets of a load point run
//! one after the other, then the next load point's:
//!
//! - mode `rate`: open loop at `--rate` requests/s with coordinated-omission correction, by 20
//!   and 200 clients (`--clients`);
//! - mode `max`: closed loop, as fast as `--max-clients` clients go;
//!
//! each with 1 and 100 metrics per request (`--metrics-per-request`). All requests carry one
//! client id, so on ingest they all go to one of the 4 partitions.
//!
//! After an ingest run the ingest is stopped (SIGTERM), the real consumer drains the queue into a
//! fresh sink, and the sink is counted by `(partition, offset, index)`: acknowledged metrics
//! (2xx answers × metrics per request) not found there are `lost`; lines beyond the distinct
//! positions, and, when every request was answered 2xx, distinct positions beyond the
//! acknowledged metrics (a second copy at another offset), are `duplicates`.
//!
//! Measurements (target / params / figures):
//! - targets `noop-http`, `noop-decode` (the same no-op server decoding each body with the
//!   ingest's native JSON decoder, `POST /decode/native-json`: what parsing alone allows),
//!   `ingest-file-batch`, `ingest-file-always`, `ingest-kafka`,
//!   `ingest-kafka-spill` (`ingest-kafka` plus `--spill-dir` in the run's directory: Kafka is
//!   healthy, so the spill should stay idle), `ingest-kafka-spill-outage` (the spill's accept
//!   rate while a private broker is stopped, see `spill`);
//! - params `clients`, `metrics_per_request`, `mode` (`rate` | `max`), `rate` (offered
//!   requests/s, mode `rate` only), `duration_secs`, `partitions` (ingest); a load point that did
//!   not run has `skipped` (why, e.g. no `KAFKA_BOOTSTRAP`) or `failed` (the error) and no
//!   figures;
//! - figures `requests_per_sec` (202 answers per second), `metrics_per_sec`, `p50_ms`, `p99_ms`,
//!   `p999_ms` (every answer, latency-corrected in mode `rate`), `errors` (non-202 answers and
//!   requests without an answer), `accepted_requests`; for ingest also `lost`, `duplicates`,
//!   `acknowledged_metrics`, `sink_lines`, `unacknowledged_in_sink` (stored although not
//!   answered 202, e.g. a 503 after a Kafka ack timeout: not a loss), `rss_peak_mib` (the
//!   ingest's VmHWM), `consumer_rss_peak_mib` (the consumer's VmHWM in its drain),
//!   `drain_secs`, and `replay_duplicates_dropped` where the consumer exports it; for the file
//!   targets `records_per_sync` (appended records / fdatasyncs, from the ingest's `/metrics`)
//!   and `fsync_mean_ms`, and the disk's stalls apart from the service's own latency:
//!   `stalled_fsyncs` (`fdatasync`s slower than 12.8 ms) and `fsync_slowest_ms` (the bucket
//!   bound of the slowest); for the spill targets `spill_records`
//!   (`metricstream_spill_records_total` after the load: 0 for an idle spill); for the outage
//!   target also `circuit_open_secs` and `opening_requests` (the single requests, all counted
//!   as acknowledged, that opened the circuit after the broker's stop), `spill_bytes`,
//!   `spill_full_refusals`, `forward_secs` (from the broker's restart to an empty spill),
//!   `replayed_records` (forwarded from the spill) and `kafka_acked_records` (all Kafka
//!   acknowledged to the ingest by then: forwarded records plus direct ones delivered late).

mod drain;
mod exposition;
pub(crate) mod oha;
mod runs;
mod sink;
mod spill;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

pub(crate) use self::exposition::{
    STALL_FSYNC_SECS, file_queue_figures, get_text, prometheus_sample,
};
use self::oha::{Load, Mode, Summary};
pub(crate) use self::runs::{
    IngestCommand, Noop, STOP_TIMEOUT, keep_dir, run_dir, service_env, start_ingest,
};
use crate::process::{Process, bin_dir, binary, free_loopback_addr};
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib};

/// The ingest's partition count in every run (the services' default, docs/configuration.md).
const PARTITIONS: u32 = 4;
/// The client id (open mode) of every request.
const CLIENT_ID: &str = "bench-client";

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// The targets to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Target::ALL)]
    targets: Vec<Target>,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// A smoke run: 2 seconds per run (overrides --duration-secs).
    #[arg(long)]
    quick: bool,
    /// The offered rate of the open-loop runs, requests/s across all clients. The default is five
    /// times what the prototype managed, within what every target sustains on two cores except
    /// ingest-file-always with 100 metrics per request (one fdatasync per request).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Client counts of the open-loop runs (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [20, 200])]
    clients: Vec<u32>,
    /// Client count of the maximum-throughput run; 0 skips it.
    #[arg(long, default_value_t = 200)]
    max_clients: u32,
    /// Metrics per request (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100])]
    metrics_per_request: Vec<u32>,
    /// The oha binary (default: the one hack/oha.sh installs and caches).
    #[arg(long, env = "OHA")]
    oha: Option<PathBuf>,
    /// The directory of the release binaries (default: this executable's, target/release).
    #[arg(long, env = "METRICSTREAM_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The Kafka broker of `ingest-kafka`; without it that target is skipped.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// Where the runs' queues, sinks and logs go: the disk under test.
    #[arg(long, default_value = "target/bench/work")]
    work_dir: PathBuf,
    /// Keep every run's directory (queue, sink, logs) instead of deleting it.
    #[arg(long)]
    keep_dirs: bool,
    /// The longest a consumer may take to drain one run's queue.
    #[arg(long, default_value_t = 300)]
    drain_timeout_secs: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    NoopHttp,
    /// The no-op server decoding each body with the ingest's own native JSON decoder and
    /// dropping it: the ceiling of a server that must parse what it accepts.
    NoopDecode,
    IngestFileBatch,
    IngestFileAlways,
    IngestKafka,
    /// `ingest-kafka` with `--spill-dir`: the spill on, Kafka healthy, so the spill stays idle.
    IngestKafkaSpill,
    /// The spill's accept rate while Kafka is down: a private broker stopped before the load.
    IngestKafkaSpillOutage,
}

impl Target {
    const ALL: [Target; 7] = [
        Target::NoopHttp,
        Target::NoopDecode,
        Target::IngestFileBatch,
        Target::IngestFileAlways,
        Target::IngestKafka,
        Target::IngestKafkaSpill,
        Target::IngestKafkaSpillOutage,
    ];

    fn name(self) -> &'static str {
        match self {
            Target::NoopHttp => "noop-http",
            Target::NoopDecode => "noop-decode",
            Target::IngestFileBatch => "ingest-file-batch",
            Target::IngestFileAlways => "ingest-file-always",
            Target::IngestKafka => "ingest-kafka",
            Target::IngestKafkaSpill => "ingest-kafka-spill",
            Target::IngestKafkaSpillOutage => "ingest-kafka-spill-outage",
        }
    }

    /// Whether the target is the no-op server (no ingest, no queue).
    fn is_noop(self) -> bool {
        matches!(self, Target::NoopHttp | Target::NoopDecode)
    }

    /// Whether the target needs Kafka (`KAFKA_BOOTSTRAP`; the outage target starts a private
    /// broker of its own, with the jars and the Java that `hack/kafka.sh up` found there).
    fn needs_kafka(self) -> bool {
        matches!(
            self,
            Target::IngestKafka | Target::IngestKafkaSpill | Target::IngestKafkaSpillOutage
        )
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One load point of one target.
#[derive(Clone, Copy, Debug)]
struct LoadPoint {
    clients: u32,
    mode: Mode,
    metrics_per_request: u32,
    duration: Duration,
}

impl LoadPoint {
    fn params(&self, target: Target) -> BTreeMap<String, Value> {
        let mut params = BTreeMap::from([
            ("clients".to_owned(), json!(self.clients)),
            (
                "metrics_per_request".to_owned(),
                json!(self.metrics_per_request),
            ),
            ("mode".to_owned(), json!(self.mode.name())),
            ("duration_secs".to_owned(), json!(self.duration.as_secs())),
        ]);
        if let Mode::Rate(rate) = self.mode {
            params.insert("rate".to_owned(), json!(rate));
        }
        if !target.is_noop() {
            params.insert("partitions".to_owned(), json!(PARTITIONS));
        }
        params
    }

    /// What `target` measured at this load point under `load`.
    fn measurement(
        &self,
        target: Target,
        figures: BTreeMap<String, f64>,
        load: &Load,
    ) -> Measurement {
        Measurement {
            suite: "http".to_owned(),
            target: target.name().to_owned(),
            params: self.params(target),
            figures,
            command: load.command_line(),
        }
    }

    fn describe(&self) -> String {
        let mode = match self.mode {
            Mode::Rate(rate) => format!("{rate} req/s"),
            Mode::Max => "max".to_owned(),
        };
        format!(
            "{} clients, {mode}, {} metrics/request",
            self.clients, self.metrics_per_request
        )
    }
}

/// What every run shares.
struct Suite {
    args: HttpArgs,
    oha: PathBuf,
    bin_dir: PathBuf,
    http: reqwest::Client,
    /// `http-body-<metrics>.json` in the work directory, by metrics per request.
    bodies: BTreeMap<u32, PathBuf>,
}

pub async fn run(args: HttpArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let duration = Duration::from_secs(if args.quick { 2 } else { args.duration_secs });
    if duration.is_zero() {
        bail!("--duration-secs must be at least 1");
    }
    if args.rate == 0 {
        bail!("--rate must be at least 1 request/s");
    }
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let needs_ingest = args.targets.iter().any(|t| !t.is_noop());
    binary(&bin_dir, "metricstream-bench-noop")?;
    if needs_ingest {
        binary(&bin_dir, "metricstream-ingest")?;
        binary(&bin_dir, "metricstream-consumer")?;
    }
    let oha = oha::locate(args.oha.as_deref()).await?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = std::path::absolute(&args.work_dir)
        .with_context(|| format!("resolving {}", args.work_dir.display()))?;
    let mut bodies = BTreeMap::new();
    for &metrics in &args.metrics_per_request {
        if metrics == 0 {
            bail!("--metrics-per-request must be at least 1");
        }
        let path = work_dir.join(format!("http-body-{metrics}.json"));
        std::fs::write(&path, request_body(metrics))
            .with_context(|| format!("writing {}", path.display()))?;
        bodies.insert(metrics, path);
    }
    let http = metricstream_tests::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")?;

    let mut load_points = Vec::new();
    for &metrics_per_request in &args.metrics_per_request {
        for &clients in &args.clients {
            load_points.push(LoadPoint {
                clients,
                mode: Mode::Rate(args.rate),
                metrics_per_request,
                duration,
            });
        }
        if args.max_clients > 0 {
            load_points.push(LoadPoint {
                clients: args.max_clients,
                mode: Mode::Max,
                metrics_per_request,
                duration,
            });
        }
    }

    let suite = Suite {
        args: HttpArgs {
            work_dir,
            ..args.clone()
        },
        oha,
        bin_dir,
        http,
        bodies,
    };
    let mut measurements = Vec::new();
    let mut not_run = Vec::new();
    let mut targets = Vec::new();
    for &target in &args.targets {
        let skip = (target.needs_kafka() && suite.args.kafka_bootstrap.is_none()).then_some(
            "KAFKA_BOOTSTRAP is not set: start a broker with `bash hack/kafka.sh up` and \
             export what it prints",
        );
        let Some(reason) = skip else {
            targets.push(target);
            continue;
        };
        eprintln!(
            "\n!!!!! http: SKIPPING {target}: {reason} — its {} load points are recorded as \
             skipped, with no figures !!!!!\n",
            load_points.len()
        );
        not_run.push(format!("{target}: skipped ({reason})"));
        for point in &load_points {
            let mut params = point.params(target);
            params.insert("skipped".to_owned(), json!(reason));
            measurements.push(Measurement {
                suite: "http".to_owned(),
                target: target.name().to_owned(),
                params,
                figures: BTreeMap::new(),
                command: String::new(),
            });
        }
    }
    // Load points outside, targets inside: the targets of one load point run one after the
    // other, so a comparison between them (a ceiling, the spill's 5 % bound) is as close in time
    // as the run allows.
    for point in &load_points {
        for &target in &targets {
            eprintln!("http: {target}: {} ...", point.describe());
            let load = suite.load(point, "http://127.0.0.1:0/metrics")?;
            match suite.run_point(target, point).await {
                Ok(measurement) => {
                    eprintln!("http: {target}: {}", summarize(&measurement.figures));
                    measurements.push(measurement);
                }
                Err(error) => {
                    eprintln!(
                        "\n!!!!! http: {target} ({}) FAILED: {error:#} !!!!!\n",
                        point.describe()
                    );
                    not_run.push(format!(
                        "{target} ({}): failed: {error:#}",
                        point.describe()
                    ));
                    let mut params = point.params(target);
                    params.insert("failed".to_owned(), json!(format!("{error:#}")));
                    measurements.push(Measurement {
                        suite: "http".to_owned(),
                        target: target.name().to_owned(),
                        params,
                        figures: BTreeMap::new(),
                        command: load.command_line(),
                    });
                }
            }
        }
    }
    if !not_run.is_empty() {
        eprintln!("\n!!!!! http: NOT MEASURED:");
        for line in &not_run {
            eprintln!("!!!!!   {line}");
        }
        eprintln!();
    }
    Ok(SuiteResults {
        suite: "http".to_owned(),
        started,
        machine: Machine::this(),
        measurements,
    })
}

impl Suite {
    fn load(&self, point: &LoadPoint, url: &str) -> anyhow::Result<Load> {
        let body_path = self
            .bodies
            .get(&point.metrics_per_request)
            .with_context(|| format!("no body of {} metrics", point.metrics_per_request))?
            .clone();
        Ok(Load {
            url: url.to_owned(),
            clients: point.clients,
            mode: point.mode,
            duration: point.duration,
            body_path,
            authorization: CLIENT_ID.to_owned(),
            content_type: "application/json".to_owned(),
            headers: Vec::new(),
        })
    }

    fn run_dir(&self, target: Target) -> anyhow::Result<tempfile::TempDir> {
        run_dir(&self.args.work_dir, &format!("http-{target}-"))
    }

    async fn run_point(&self, target: Target, point: &LoadPoint) -> anyhow::Result<Measurement> {
        let mut dir = self.run_dir(target)?;
        let measured = match target {
            Target::NoopHttp | Target::NoopDecode => self.run_noop(target, dir.path(), point).await,
            Target::IngestKafkaSpillOutage => self.run_spill_outage(dir.path(), point).await,
            _ => self.run_ingest(target, dir.path(), point).await,
        };
        keep_dir(&mut dir, self.args.keep_dirs || measured.is_err());
        measured
    }

    async fn run_noop(
        &self,
        target: Target,
        dir: &Path,
        point: &LoadPoint,
    ) -> anyhow::Result<Measurement> {
        let noop = Noop {
            bin_dir: &self.bin_dir,
            http: &self.http,
            oha: &self.oha,
            log: &dir.join("logs").join("noop.log"),
        };
        let path = if target == Target::NoopDecode {
            "/decode/native-json"
        } else {
            "/metrics"
        };
        let (load, summary) = noop.run(path, |url| self.load(point, &url)).await?;
        Ok(point.measurement(
            target,
            load_figures(&summary, point.metrics_per_request, "metrics_per_sec"),
            &load,
        ))
    }

    async fn run_ingest(
        &self,
        target: Target,
        dir: &Path,
        point: &LoadPoint,
    ) -> anyhow::Result<Measurement> {
        // The queue both processes use: a directory, or a topic of its own on the broker.
        let (queue_args, ingest_args) = match target {
            Target::IngestFileBatch | Target::IngestFileAlways => {
                let durability = if target == Target::IngestFileBatch {
                    "batch"
                } else {
                    "always"
                };
                (
                    file_queue_args(dir),
                    vec!["--durability".to_owned(), durability.to_owned()],
                )
            }
            Target::IngestKafka | Target::IngestKafkaSpill => {
                let bootstrap = self
                    .args
                    .kafka_bootstrap
                    .as_deref()
                    .context("KAFKA_BOOTSTRAP is not set")?;
                let mut ingest_args = vec!["--kafka-create-topic".to_owned()];
                if target == Target::IngestKafkaSpill {
                    ingest_args.extend(spill_args(dir));
                }
                (kafka_queue_args(bootstrap), ingest_args)
            }
            Target::NoopHttp | Target::NoopDecode | Target::IngestKafkaSpillOutage => {
                bail!("{target} is not run by run_ingest")
            }
        };

        let RunIngest {
            process: ingest,
            listen,
            admin: ingest_admin,
        } = self
            .start_run_ingest(dir, &queue_args, &ingest_args)
            .await?;

        let load = self.load(point, &format!("http://{listen}/metrics"))?;
        let summary = load.run(&self.oha).await?;
        let mut figures = load_figures(&summary, point.metrics_per_request, "metrics_per_sec");
        figures.insert("rss_peak_mib".to_owned(), peak_rss_mib(ingest.pid()?)?);
        let exposition = get_text(&self.http, &format!("http://{ingest_admin}/metrics")).await?;
        match target {
            Target::IngestFileBatch | Target::IngestFileAlways => {
                figures.extend(file_queue_figures(&exposition)?);
            }
            Target::IngestKafkaSpill => {
                let spilled = spill::spilled_records(&exposition)?;
                if spilled > 0.0 {
                    eprintln!(
                        "\n!!!!! http: {target}: {spilled} records went to the spill: Kafka did \
                         not keep up, so this run is not the spill idle (see {}) !!!!!\n",
                        ingest.log_path().display()
                    );
                }
                figures.insert("spill_records".to_owned(), spilled);
            }
            _ => {}
        }
        ingest.terminate(STOP_TIMEOUT).await?;

        let acknowledged = summary.accepted() * u64::from(point.metrics_per_request);
        figures.extend(
            self.drain_and_count(dir, queue_args, acknowledged, summary.errors())
                .await?,
        );
        Ok(point.measurement(target, figures, &load))
    }
}

/// An ingest started for one run.
struct RunIngest {
    process: Process,
    /// Its API.
    listen: SocketAddr,
    /// Its admin endpoint (`/metrics`).
    admin: SocketAddr,
}

impl Suite {
    /// Starts an ingest on `queue_args` and `ingest_args`, on fresh loopback ports, its log in
    /// the run's `logs`; returns once it is ready.
    async fn start_run_ingest(
        &self,
        dir: &Path,
        queue_args: &[String],
        ingest_args: &[String],
    ) -> anyhow::Result<RunIngest> {
        let listen = free_loopback_addr()?;
        let admin = free_loopback_addr()?;
        let mut args = [queue_args, ingest_args].concat();
        args.extend(["--listen".to_owned(), listen.to_string()]);
        let process = start_ingest(
            &self.bin_dir,
            &self.http,
            &args,
            admin,
            &dir.join("logs").join("ingest.log"),
        )
        .await?;
        Ok(RunIngest {
            process,
            listen,
            admin,
        })
    }
}

/// The queue arguments of a file-backed run: its own directory in the run's.
fn file_queue_args(dir: &Path) -> Vec<String> {
    vec![
        "--partitions".to_owned(),
        PARTITIONS.to_string(),
        "--backend".to_owned(),
        "file".to_owned(),
        "--data-dir".to_owned(),
        dir.join("data").display().to_string(),
    ]
}

/// The queue arguments of a Kafka-backed run: a topic of its own on `bootstrap`.
fn kafka_queue_args(bootstrap: &str) -> Vec<String> {
    vec![
        "--partitions".to_owned(),
        PARTITIONS.to_string(),
        "--backend".to_owned(),
        "kafka".to_owned(),
        "--kafka-brokers".to_owned(),
        bootstrap.to_owned(),
        "--topic".to_owned(),
        metricstream_tests::kafka::unique_name("bench-http"),
    ]
}

/// The ingest's spill in a fresh directory of the run, at its default size limit.
fn spill_args(dir: &Path) -> [String; 2] {
    [
        "--spill-dir".to_owned(),
        dir.join("spill").display().to_string(),
    ]
}

/// A valid request body (docs/http-api.md) of `metrics` metrics: a handful of names, each
/// metric with two tags, like a host reporting a batch.
fn request_body(metrics: u32) -> String {
    let metrics: Vec<Value> = (0..metrics)
        .map(|i| {
            json!({
                "name": format!("bench_metric_{}", i % 8),
                "value": f64::from(i) + 0.5,
                "tags": {"host": "bench-host-1", "series": i.to_string()},
            })
        })
        .collect();
    json!({ "metrics": metrics }).to_string()
}

/// The figures every target has, from oha's summary: `requests_per_sec`, `<per_sec_key>` (that
/// × `per_request`, e.g. `metrics_per_sec`), `accepted_requests`, `errors` and the percentiles.
pub(crate) fn load_figures(
    summary: &Summary,
    per_request: u32,
    per_sec_key: &str,
) -> BTreeMap<String, f64> {
    let requests_per_sec = summary.accepted_per_sec();
    let mut figures = BTreeMap::from([
        ("requests_per_sec".to_owned(), requests_per_sec),
        (
            per_sec_key.to_owned(),
            requests_per_sec * f64::from(per_request),
        ),
        ("accepted_requests".to_owned(), summary.accepted() as f64),
        ("errors".to_owned(), summary.errors() as f64),
    ]);
    for (name, value) in [
        ("p50_ms", summary.p50_ms),
        ("p99_ms", summary.p99_ms),
        ("p999_ms", summary.p999_ms),
    ] {
        if let Some(value) = value {
            figures.insert(name.to_owned(), value);
        }
    }
    if summary.errors() > 0 {
        eprintln!("errors: {}", summary.describe_errors());
    }
    figures
}

/// One console line of a run's figures.
fn summarize(figures: &BTreeMap<String, f64>) -> String {
    let mut line = String::new();
    for (name, format) in [
        ("requests_per_sec", "req/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("p999_ms", "p99.9 ms"),
        ("errors", "errors"),
        ("lost", "lost"),
        ("duplicates", "duplicates"),
        ("records_per_sync", "records/sync"),
        ("stalled_fsyncs", "fsyncs > 12.8 ms"),
        ("fsync_slowest_ms", "slowest fsync ≤ ms"),
        ("spill_records", "spilled"),
        ("forward_secs", "forward s"),
        ("rss_peak_mib", "ingest MiB"),
        ("consumer_rss_peak_mib", "consumer MiB"),
        ("drain_secs", "drain s"),
    ] {
        if let Some(value) = figures.get(name) {
            let _ = write!(line, "{format} {value:.2}  ");
        }
    }
    line.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_hold_the_asked_number_of_valid_metrics() {
        let body: Value = serde_json::from_str(&request_body(100)).expect("JSON");
        let metrics = body["metrics"].as_array().expect("a metrics array");
        assert_eq!(metrics.len(), 100);
        assert!(metrics.iter().all(|m| m["name"].is_string()
            && m["value"].as_f64().is_some_and(f64::is_finite)
            && m["tags"].is_object()));
    }

    #[test]
    fn params_name_the_load_point() {
        let point = LoadPoint {
            clients: 20,
            mode: Mode::Rate(1000),
            metrics_per_request: 100,
            duration: Duration::from_secs(8),
        };
        let params = point.params(Target::IngestFileBatch);
        assert_eq!(params["mode"], json!("rate"));
        assert_eq!(params["rate"], json!(1000));
        assert_eq!(params["clients"], json!(20));
        assert_eq!(params["partitions"], json!(4));
        let max = LoadPoint {
            mode: Mode::Max,
            ..point
        };
        let params = max.params(Target::NoopHttp);
        assert_eq!(params["mode"], json!("max"));
        assert!(!params.contains_key("rate") && !params.contains_key("partitions"));
    }
}
