//! Peers: MetricStream beside the systems a user would pick instead, on the same machine, in the
//! same run, under the same load, each configured as durably as it can be.
//!
//! Scenarios ([`Scenario`]), each with two systems ([`systems`]):
//!
//! - `otlp-kafka`: OTLP/HTTP protobuf in, Kafka out (4 partitions, acks=all). `metricstream`:
//!   `metricstream-ingest --backend kafka`, which answers once Kafka has acknowledged the
//!   record. `otelcol`: the OpenTelemetry Collector (hack/peers.sh) with the `otlp` receiver and
//!   the `kafka` exporter behind a persistent sending queue (`file_storage`, fsynced): it answers
//!   once the batch is committed to that queue, before Kafka has it.
//! - `remote-write-store`: Prometheus remote write 1.0 in, a fresh VictoriaMetrics out.
//!   `metricstream`: the ingest on the file queue (batch durability: answered after fdatasync)
//!   and the consumer's remote-write sink. `vmagent`: remote write in, its persistent queue
//!   (`-remoteWrite.tmpDataPath`), remote write out; it answers once the samples are in its
//!   memory, which reaches the on-disk queue only when full, when the store stalls or at a clean
//!   shutdown (docs/peers.md has the sources).
//!
//! For every scenario, client count (`--clients`) and round, each system gets a fresh process (and
//! a fresh topic or store) and `oha` posts one body of `--samples-per-request` samples in a
//! closed loop (as fast as the clients go) for `--duration-secs`. After the load the suite waits
//! until everything acknowledged has reached the far end (Kafka's end offsets or the
//! Collector's sent count; the store's added rows) and only then reads the systems' CPU time, so
//! the work a system defers past its answer is counted too.
//!
//! Measurements (target / params / figures), one per scenario, client count and system:
//! - targets `metricstream`, `otelcol`, `vmagent`;
//! - params `scenario`, `protocol`, `clients`, `samples_per_request`, `body_bytes`, `mode`
//!   (`max`), `duration_secs`, `rounds`, `processes` (what was measured, e.g. `ingest+consumer`);
//!   a failed one has `failed` (the error) and no figures;
//! - figures of the median round (by samples/s): `requests_per_sec`, `samples_per_sec`,
//!   `p50_ms`, `p99_ms`, `p999_ms`, `accepted_requests`, `errors` (summed over rounds),
//!   `cpu_seconds` (user + system of the system's processes from the load's start until
//!   delivered), `cpu_seconds_per_million_samples`, `samples_per_cpu_second`, `rss_peak_mib`
//!   (the sum of the processes' VmHWM), `delivery_secs` (from the load's end until delivered),
//!   `samples_per_sec_min` and `_max` over the rounds, `failed_rounds`;
//! - and one crash run per scenario and system (params `mode` `crash`, `rate_per_client`): see
//!   [`crash`] for its figures (`lost`, `duplicates`, ...).

mod crash;
mod systems;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use self::systems::{Running, System};
use crate::http::oha::{self, Load, Mode};
use crate::http::{keep_dir, load_figures, run_dir};
use crate::intake::protocol::Protocol;
use crate::intake::{bodies, median_round};
use crate::operator::procfs::process_cpu_seconds;
use crate::process::bin_dir;
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib, print_not_measured};

pub const SUITE: &str = "peers";
/// Every request's `Authorization` (MetricStream's open mode takes it as the client id).
const CLIENT_ID: &str = "bench-peers";

/// What goes in and where it must end up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Scenario {
    /// OTLP/HTTP protobuf → Kafka: MetricStream's ingest beside the OpenTelemetry Collector.
    OtlpKafka,
    /// Prometheus remote write → VictoriaMetrics: MetricStream's ingest, queue and consumer
    /// beside vmagent.
    RemoteWriteStore,
}

impl Scenario {
    pub const ALL: [Scenario; 2] = [Scenario::OtlpKafka, Scenario::RemoteWriteStore];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::OtlpKafka => "otlp-kafka",
            Scenario::RemoteWriteStore => "remote-write-store",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn protocol(self) -> Protocol {
        match self {
            Scenario::OtlpKafka => Protocol::OtlpProtobuf,
            Scenario::RemoteWriteStore => Protocol::RemoteWrite1,
        }
    }

    /// MetricStream first, then its peer.
    pub fn systems(self) -> [System; 2] {
        match self {
            Scenario::OtlpKafka => [System::MetricStreamKafka, System::Collector],
            Scenario::RemoteWriteStore => [System::MetricStreamStore, System::Vmagent],
        }
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Args, Debug, Clone)]
pub struct PeersArgs {
    /// The scenarios to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Scenario::ALL)]
    scenarios: Vec<Scenario>,
    /// Client counts of the closed loop (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [20, 200])]
    clients: Vec<u32>,
    /// Samples per request: a typical remote-write or OTLP batch is hundreds to a few thousand.
    #[arg(long, default_value_t = 100)]
    samples_per_request: u32,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Rounds over every scenario, client count and system; each figure is the round with the
    /// median samples/s (on a shared machine one round can be far off).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// A smoke run: 2 seconds per run and one round (overrides --duration-secs and --rounds).
    #[arg(long)]
    quick: bool,
    /// The longest the far end may take to receive everything acknowledged after the load.
    #[arg(long, default_value_t = 300)]
    delivery_timeout_secs: u64,
    /// The oha binary (default: the one hack/oha.sh installs and caches).
    #[arg(long, env = "OHA")]
    oha: Option<PathBuf>,
    /// The directory of the release binaries (default: this executable's, target/release).
    #[arg(long, env = "METRICSTREAM_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The Kafka broker of `otlp-kafka`; without it that scenario fails.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    kafka_bootstrap: Option<String>,
    /// The peer Collector (`bash hack/peers.sh install` prints OTELCOL_PEER=...).
    #[arg(long, env = "OTELCOL_PEER")]
    otelcol: Option<PathBuf>,
    /// vmagent (`bash hack/peers.sh install` prints VMAGENT=...).
    #[arg(long, env = "VMAGENT")]
    vmagent: Option<PathBuf>,
    /// Seconds of the crash run of each system (one SIGKILL of all its processes a third of the
    /// way in); 0 skips the crash runs.
    #[arg(long, default_value_t = 30)]
    crash_secs: u64,
    /// Clients of the crash runs, each with its own samples.
    #[arg(long, default_value_t = 20)]
    crash_clients: u32,
    /// Requests/s of each crash-run client: a steady load every system carries, so what is
    /// counted is the crash, not an overload.
    #[arg(long, default_value_t = 10)]
    crash_rate: u32,
    /// The Collector's configuration for `otlp-kafka` (`${env:...}` placeholders, filled per run).
    #[arg(long, default_value = "hack/otelcol-peer/kafka.yaml")]
    otelcol_kafka_config: PathBuf,
    /// Where the bodies and the runs' queues, stores and logs go: the disk under test.
    #[arg(long, default_value = "target/bench/work")]
    work_dir: PathBuf,
    /// Keep every run's directory instead of deleting it.
    #[arg(long)]
    keep_dirs: bool,
}

/// What every run shares.
pub(crate) struct Suite {
    args: PeersArgs,
    duration: Duration,
    oha: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) http: reqwest::Client,
}

/// One scenario's body, written to a file for oha.
struct Body {
    scenario: Scenario,
    path: PathBuf,
    bytes: usize,
}

pub async fn run(args: PeersArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let duration = Duration::from_secs(if args.quick { 2 } else { args.duration_secs });
    let rounds = if args.quick { 1 } else { args.rounds };
    if duration.is_zero() || rounds == 0 || args.samples_per_request == 0 {
        bail!("--duration-secs, --rounds and --samples-per-request must be at least 1");
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs at least one count, each at least 1");
    }
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let oha = oha::locate(args.oha.as_deref()).await?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = std::path::absolute(&args.work_dir)
        .with_context(|| format!("resolving {}", args.work_dir.display()))?;
    let series = bodies::series(args.samples_per_request as usize);
    let mut bodies = Vec::new();
    for &scenario in &args.scenarios {
        let path = work_dir.join(format!(
            "peers-body-{scenario}-{}.bin",
            args.samples_per_request
        ));
        let bytes = bodies::write_checked(scenario.protocol(), &series, &path)?;
        bodies.push(Body {
            scenario,
            path,
            bytes,
        });
    }
    let http = metricstream_tests::http_client_builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("building an HTTP client")?;
    let suite = Suite {
        args: PeersArgs {
            work_dir,
            rounds,
            ..args.clone()
        },
        duration,
        oha,
        bin_dir,
        http,
    };

    // Rounds interleave the systems, so a burst of other work on the machine lands in one round
    // of a pair, not in every run of one system.
    type Key = (usize, u32, System);
    let mut runs: BTreeMap<Key, Vec<Measurement>> = BTreeMap::new();
    let mut errors: BTreeMap<Key, String> = BTreeMap::new();
    let mut failed = Vec::new();
    for round in 1..=rounds {
        for (index, body) in bodies.iter().enumerate() {
            for &clients in &suite.args.clients {
                for system in body.scenario.systems() {
                    let what = format!(
                        "round {round}: {} with {clients} clients → {}",
                        body.scenario,
                        system.target()
                    );
                    eprintln!("peers: {what} ...");
                    match suite.run_point(system, body, clients).await {
                        Ok(measurement) => {
                            eprintln!("peers: {what}: {}", summarize(&measurement));
                            runs.entry((index, clients, system))
                                .or_default()
                                .push(measurement);
                        }
                        Err(error) => {
                            eprintln!("\n!!!!! peers: {what} FAILED: {error:#} !!!!!\n");
                            failed.push(format!("{what}: {error:#}"));
                            errors.insert((index, clients, system), format!("{error:#}"));
                        }
                    }
                }
            }
        }
    }
    let mut measurements = Vec::new();
    for (index, body) in bodies.iter().enumerate() {
        for &clients in &suite.args.clients {
            for system in body.scenario.systems() {
                let key = (index, clients, system);
                let done = runs.remove(&key).unwrap_or_default();
                let failed_rounds = rounds as usize - done.len();
                match median_round(done, failed_rounds) {
                    Some(measurement) => measurements.push(measurement),
                    None => measurements.push(Measurement::failed(
                        SUITE,
                        system.target(),
                        suite.params(body, clients, system),
                        &errors.remove(&key).unwrap_or_default(),
                    )),
                }
            }
        }
    }
    if suite.args.crash_secs > 0 {
        let load = crash::CrashLoad {
            clients: suite.args.crash_clients,
            rate: suite.args.crash_rate,
            duration: Duration::from_secs(if suite.args.quick {
                10
            } else {
                suite.args.crash_secs
            }),
            samples_per_request: suite.args.samples_per_request,
        };
        for body in &bodies {
            for system in body.scenario.systems() {
                let what = format!("kill -9 of {} in {}", system.target(), body.scenario);
                eprintln!("peers: {what} ...");
                let prefix = format!("peers-crash-{}-{}-", body.scenario, system.target());
                let mut dir = run_dir(&suite.args.work_dir, &prefix)?;
                let measured =
                    crash::crash_run(&suite, system, body.scenario, dir.path(), load).await;
                keep_dir(&mut dir, suite.args.keep_dirs || measured.is_err());
                match measured {
                    Ok(measurement) => {
                        eprintln!("peers: {what}: {:?}", measurement.figures);
                        measurements.push(measurement);
                    }
                    Err(error) => {
                        eprintln!("\n!!!!! peers: {what} FAILED: {error:#} !!!!!\n");
                        failed.push(format!("{what}: {error:#}"));
                        measurements.push(Measurement::failed(
                            SUITE,
                            system.target(),
                            crash::params(body.scenario, load, system),
                            &format!("{error:#}"),
                        ));
                    }
                }
            }
        }
    }
    print_not_measured(SUITE, &failed);
    Ok(SuiteResults {
        suite: SUITE.to_owned(),
        started,
        machine: Machine::this(),
        measurements,
    })
}

impl Suite {
    fn params(&self, body: &Body, clients: u32, system: System) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("scenario".to_owned(), json!(body.scenario.name())),
            (
                "protocol".to_owned(),
                json!(body.scenario.protocol().name()),
            ),
            ("clients".to_owned(), json!(clients)),
            (
                "samples_per_request".to_owned(),
                json!(self.args.samples_per_request),
            ),
            ("body_bytes".to_owned(), json!(body.bytes)),
            ("mode".to_owned(), json!("max")),
            ("duration_secs".to_owned(), json!(self.duration.as_secs())),
            ("processes".to_owned(), json!(system.processes())),
        ])
    }

    pub(crate) fn kafka_bootstrap(&self) -> anyhow::Result<&str> {
        self.args.kafka_bootstrap.as_deref().context(
            "KAFKA_BOOTSTRAP is not set: start a broker with `bash hack/kafka.sh up` (make bench \
             does)",
        )
    }

    pub(crate) fn otelcol(&self) -> anyhow::Result<(&Path, &Path)> {
        let binary = self.args.otelcol.as_deref().context(
            "OTELCOL_PEER is not set: run `bash hack/peers.sh install` and export the \
             OTELCOL_PEER=... line it prints (make bench does both)",
        )?;
        Ok((binary, &self.args.otelcol_kafka_config))
    }

    pub(crate) fn vmagent(&self) -> anyhow::Result<&Path> {
        self.args.vmagent.as_deref().context(
            "VMAGENT is not set: run `bash hack/peers.sh install` and export the VMAGENT=... \
             line it prints (make bench does both)",
        )
    }

    async fn run_point(
        &self,
        system: System,
        body: &Body,
        clients: u32,
    ) -> anyhow::Result<Measurement> {
        let prefix = format!("peers-{}-{}-{clients}-", body.scenario, system.target());
        let mut dir = run_dir(&self.args.work_dir, &prefix)?;
        let measured = self.measure(system, dir.path(), body, clients).await;
        keep_dir(&mut dir, self.args.keep_dirs || measured.is_err());
        measured
    }

    async fn measure(
        &self,
        system: System,
        dir: &Path,
        body: &Body,
        clients: u32,
    ) -> anyhow::Result<Measurement> {
        let mut running = system.start(self, dir).await?;
        let outcome = self.load_and_deliver(&mut running, body, clients).await;
        let stopped = running.stop().await;
        let (load, mut figures) = outcome?;
        stopped?;
        figures.retain(|_, value| value.is_finite());
        Ok(Measurement {
            suite: SUITE.to_owned(),
            target: system.target().to_owned(),
            params: self.params(body, clients, system),
            figures,
            command: format!("{}\n{}", running.command, load.command_line()),
        })
    }

    async fn load_and_deliver(
        &self,
        running: &mut Running,
        body: &Body,
        clients: u32,
    ) -> anyhow::Result<(Load, BTreeMap<String, f64>)> {
        let protocol = body.scenario.protocol();
        let load = Load {
            url: format!("{}{}", running.base_url, protocol.ingest_path()),
            clients,
            mode: Mode::Max,
            duration: self.duration,
            body_path: body.path.clone(),
            authorization: CLIENT_ID.to_owned(),
            content_type: protocol.content_type().to_owned(),
            headers: protocol.headers().iter().map(|h| (*h).to_owned()).collect(),
        };
        let pids = running.pids();
        let cpu_before = cpu_seconds(&pids)?;
        let summary = load.run(&self.oha).await?;
        let ended = Instant::now();
        let samples = summary.accepted() as f64 * f64::from(self.args.samples_per_request);
        running
            .wait_delivered(
                &self.http,
                samples,
                Duration::from_secs(self.args.delivery_timeout_secs),
            )
            .await
            .context("waiting for the far end to hold every acknowledged sample")?;
        let delivery_secs = ended.elapsed().as_secs_f64();
        let cpu = cpu_seconds(&pids)? - cpu_before;
        let mut rss = 0.0;
        for &pid in &pids {
            rss += peak_rss_mib(pid)?;
        }
        let mut figures = load_figures(&summary, self.args.samples_per_request, "samples_per_sec");
        figures.extend([
            ("cpu_seconds".to_owned(), cpu),
            ("rss_peak_mib".to_owned(), rss),
            ("delivery_secs".to_owned(), delivery_secs),
            ("delivered_samples".to_owned(), samples),
        ]);
        if samples > 0.0 && cpu > 0.0 {
            figures.insert(
                "cpu_seconds_per_million_samples".to_owned(),
                cpu / samples * 1e6,
            );
            figures.insert("samples_per_cpu_second".to_owned(), samples / cpu);
        }
        Ok((load, figures))
    }
}

/// User plus system CPU seconds of all `pids` so far.
fn cpu_seconds(pids: &[u32]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for &pid in pids {
        total += process_cpu_seconds(pid)?;
    }
    Ok(total)
}

/// One console line of a run's figures.
fn summarize(measurement: &Measurement) -> String {
    let f = |name: &str| measurement.figures.get(name).copied().unwrap_or(f64::NAN);
    format!(
        "{:.0} samples/s ({:.0} req/s), p50 {:.2} ms, p99 {:.2} ms, errors {:.0}, {:.2} CPU s per \
         million samples, {:.0} MiB, delivered {:.1} s after the load",
        f("samples_per_sec"),
        f("requests_per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        f("errors"),
        f("cpu_seconds_per_million_samples"),
        f("rss_peak_mib"),
        f("delivery_secs"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_named_as_their_command_line_values() {
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::from_name(scenario.name()), Some(scenario));
            let value = scenario
                .to_possible_value()
                .expect("every scenario is a value");
            assert_eq!(value.get_name(), scenario.name());
        }
    }
}
