//! Intake: samples/s of every intake protocol — native JSON, Influx line protocol, Prometheus
//! remote write 1.0 and 2.0, OTLP/HTTP protobuf and JSON — on the ingest, each beside a ceiling
//! that only decodes the same bodies, measured in the same run.
//!
//! One deterministic set of `--samples-per-request` samples ([`bodies`]) is encoded once per
//! protocol and written to a file; `oha` posts that body in a closed loop (`max` mode,
//! `--clients` clients, `--duration-secs`) to:
//!
//! - `decode-ceiling`: `metricstream-bench-noop`'s `POST /decode/<protocol>`, the same axum
//!   stack decoding the body with the ingest's own decoders ([`protocol::decode`]) and dropping
//!   the samples: what the ingest could reach if storing cost nothing;
//! - `ingest-file-batch`: the real `metricstream-ingest` on the file backend, `--durability
//!   batch` (group commit), a fresh queue directory per protocol, on the protocol's endpoint.
//!
//! The two targets of a protocol run back to back, so a drift of the machine touches both, and
//! the whole sequence runs `--rounds` times; each figure is the round with the median samples/s.
//! Every answer must be the protocol's success status; anything else is counted in `errors`
//! (and shown), never hidden. After an ingest run, its `metricstream_ingest_metrics_accepted_total`
//! must equal the accepted requests × samples per request (`samples_mismatch` is the difference).
//!
//! Measurements (target / params / figures), one per protocol and target:
//! - targets `decode-ceiling`, `ingest-file-batch`;
//! - params `protocol`, `clients`, `samples_per_request`, `body_bytes`, `mode` (`max`),
//!   `duration_secs`, `rounds`; a target of which every round failed has `failed` (an error)
//!   and no figures;
//! - figures of the median round: `requests_per_sec` (successful answers per second),
//!   `samples_per_sec`, `p50_ms`, `p99_ms`, `p999_ms`, `accepted_requests`; for the ingest also
//!   `metrics_accepted_total`, `rss_peak_mib`, `records_per_sync` and `fsync_mean_ms`; over all
//!   rounds: `samples_per_sec_min` and `_max`, `errors` (summed), `samples_mismatch` (the
//!   largest), `failed_rounds`.

pub mod bodies;
pub mod protocol;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use self::protocol::Protocol;
use crate::http::oha::{self, Load, Mode};
use crate::http::{
    Noop, STOP_TIMEOUT, file_queue_figures, get_text, keep_dir, load_figures, prometheus_sample,
    run_dir, start_ingest,
};
use crate::process::{bin_dir, binary, free_loopback_addr};
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib, print_not_measured};

pub const SUITE: &str = "intake";
/// The decode-only ceiling's target name.
pub const CEILING: &str = "decode-ceiling";
/// The ingest's target name: the file backend with group commit, the HTTP suite's main target.
pub const INGEST: &str = "ingest-file-batch";
const PARTITIONS: u32 = 4;
/// Every request's client id (open mode), so all go to one partition, as one sender's would.
const CLIENT_ID: &str = "bench-intake";

#[derive(Args, Debug, Clone)]
pub struct IntakeArgs {
    /// The protocols to measure (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Protocol::ALL)]
    protocols: Vec<Protocol>,
    /// Seconds of load per run (one run per protocol, target and round).
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Rounds over every protocol and target; each figure is the round with the median
    /// samples/s (on a machine shared with other work one round can be far off).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// A smoke run: 2 seconds per run (overrides --duration-secs).
    #[arg(long)]
    quick: bool,
    /// Concurrent clients of the closed loop: enough to keep both targets busy on a small
    /// machine without oha itself taking most of it.
    #[arg(long, default_value_t = 20)]
    clients: u32,
    /// Samples per request: a typical remote-write or OTLP batch is hundreds to a few thousand.
    #[arg(long, default_value_t = 100)]
    samples_per_request: u32,
    /// The oha binary (default: the one hack/oha.sh installs and caches).
    #[arg(long, env = "OHA")]
    oha: Option<PathBuf>,
    /// The directory of the release binaries (default: this executable's, target/release).
    #[arg(long, env = "METRICSTREAM_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Where the bodies, the runs' queues and logs go.
    #[arg(long, default_value = "target/bench/work")]
    work_dir: PathBuf,
    /// Keep every run's directory (queue, logs) instead of deleting it.
    #[arg(long)]
    keep_dirs: bool,
}

/// What every run shares.
struct Suite {
    args: IntakeArgs,
    duration: Duration,
    oha: PathBuf,
    bin_dir: PathBuf,
    http: reqwest::Client,
}

/// One protocol's body, written to a file for oha.
struct Body {
    protocol: Protocol,
    path: PathBuf,
    bytes: usize,
}

pub async fn run(args: IntakeArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let duration = Duration::from_secs(if args.quick { 2 } else { args.duration_secs });
    if duration.is_zero() {
        bail!("--duration-secs must be at least 1");
    }
    if args.samples_per_request == 0 || args.clients == 0 || args.rounds == 0 {
        bail!("--samples-per-request, --clients and --rounds must be at least 1");
    }
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    binary(&bin_dir, "metricstream-bench-noop")?;
    binary(&bin_dir, "metricstream-ingest")?;
    let oha = oha::locate(args.oha.as_deref()).await?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("creating {}", args.work_dir.display()))?;
    let work_dir = std::path::absolute(&args.work_dir)
        .with_context(|| format!("resolving {}", args.work_dir.display()))?;
    let series = bodies::series(args.samples_per_request as usize);
    let mut bodies = Vec::new();
    for &protocol in &args.protocols {
        let path = work_dir.join(format!(
            "intake-body-{protocol}-{}.bin",
            args.samples_per_request
        ));
        let bytes = bodies::write_checked(protocol, &series, &path)?;
        bodies.push(Body {
            protocol,
            path,
            bytes,
        });
    }
    let http = metricstream_tests::http_client_builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building an HTTP client")?;
    let suite = Suite {
        args: IntakeArgs {
            work_dir,
            ..args.clone()
        },
        duration,
        oha,
        bin_dir,
        http,
    };

    // Rounds interleave the targets and protocols, so a burst of other load on the machine
    // lands in one round of a pair, not in every run of one target.
    let mut runs: BTreeMap<(usize, &str), Vec<Measurement>> = BTreeMap::new();
    let mut errors: BTreeMap<(usize, &str), String> = BTreeMap::new();
    let mut failed = Vec::new();
    for round in 1..=suite.args.rounds {
        for (index, body) in bodies.iter().enumerate() {
            for target in [CEILING, INGEST] {
                let protocol = body.protocol;
                let what = format!("round {round}: {protocol} → {target}");
                eprintln!("intake: {what} ...");
                match suite.run_point(target, body).await {
                    Ok(measurement) => {
                        eprintln!("intake: {what}: {}", summarize(&measurement));
                        runs.entry((index, target)).or_default().push(measurement);
                    }
                    Err(error) => {
                        eprintln!("\n!!!!! intake: {what} FAILED: {error:#} !!!!!\n");
                        failed.push(format!("{what}: {error:#}"));
                        errors.insert((index, target), format!("{error:#}"));
                    }
                }
            }
        }
    }
    let mut measurements = Vec::new();
    for (index, body) in bodies.iter().enumerate() {
        for target in [CEILING, INGEST] {
            let rounds = runs.remove(&(index, target)).unwrap_or_default();
            let failed_rounds = suite.args.rounds as usize - rounds.len();
            match median_round(rounds, failed_rounds) {
                Some(measurement) => measurements.push(measurement),
                None => measurements.push(Measurement::failed(
                    SUITE,
                    target,
                    suite.params(body),
                    &errors.remove(&(index, target)).unwrap_or_default(),
                )),
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
    fn params(&self, body: &Body) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("protocol".to_owned(), json!(body.protocol.name())),
            ("clients".to_owned(), json!(self.args.clients)),
            (
                "samples_per_request".to_owned(),
                json!(self.args.samples_per_request),
            ),
            ("body_bytes".to_owned(), json!(body.bytes)),
            ("mode".to_owned(), json!("max")),
            ("duration_secs".to_owned(), json!(self.duration.as_secs())),
        ])
    }

    fn load(&self, body: &Body, url: String) -> Load {
        Load {
            url,
            clients: self.args.clients,
            mode: Mode::Max,
            duration: self.duration,
            body_path: body.path.clone(),
            authorization: CLIENT_ID.to_owned(),
            content_type: body.protocol.content_type().to_owned(),
            headers: body
                .protocol
                .headers()
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }

    async fn run_point(&self, target: &str, body: &Body) -> anyhow::Result<Measurement> {
        let prefix = format!("intake-{}-{target}-", body.protocol);
        let mut dir = run_dir(&self.args.work_dir, &prefix)?;
        let logs = dir.path().join("logs");
        let measured = if target == CEILING {
            self.run_ceiling(&logs, body).await
        } else {
            self.run_ingest(dir.path(), &logs, body).await
        };
        keep_dir(&mut dir, self.args.keep_dirs || measured.is_err());
        measured
    }

    async fn run_ceiling(&self, logs: &Path, body: &Body) -> anyhow::Result<Measurement> {
        let noop = Noop {
            bin_dir: &self.bin_dir,
            http: &self.http,
            oha: &self.oha,
            log: &logs.join("noop.log"),
        };
        let path = format!("/decode/{}", body.protocol);
        let (load, summary) = noop.run(&path, |url| Ok(self.load(body, url))).await?;
        Ok(Measurement {
            suite: SUITE.to_owned(),
            target: CEILING.to_owned(),
            params: self.params(body),
            figures: load_figures(&summary, self.args.samples_per_request, "samples_per_sec"),
            command: load.command_line(),
        })
    }

    async fn run_ingest(
        &self,
        dir: &Path,
        logs: &Path,
        body: &Body,
    ) -> anyhow::Result<Measurement> {
        let listen = free_loopback_addr()?;
        let admin = free_loopback_addr()?;
        let args = [
            "--backend",
            "file",
            "--data-dir",
            &dir.join("data").display().to_string(),
            "--partitions",
            &PARTITIONS.to_string(),
            "--durability",
            "batch",
            "--listen",
            &listen.to_string(),
        ]
        .map(str::to_owned);
        let ingest = start_ingest(
            &self.bin_dir,
            &self.http,
            &args,
            admin,
            &logs.join("ingest.log"),
        )
        .await?;
        let load = self.load(
            body,
            format!("http://{listen}{}", body.protocol.ingest_path()),
        );
        let summary = load.run(&self.oha).await?;
        let mut figures = load_figures(&summary, self.args.samples_per_request, "samples_per_sec");
        figures.insert("rss_peak_mib".to_owned(), peak_rss_mib(ingest.pid()?)?);
        let exposition = get_text(&self.http, &format!("http://{admin}/metrics")).await?;
        figures.extend(file_queue_figures(&exposition)?);
        let counted = prometheus_sample(&exposition, "metricstream_ingest_metrics_accepted_total")
            .context("no metricstream_ingest_metrics_accepted_total in the ingest's /metrics")?;
        let expected = summary.accepted() as f64 * f64::from(self.args.samples_per_request);
        figures.insert("metrics_accepted_total".to_owned(), counted);
        figures.insert("samples_mismatch".to_owned(), counted - expected);
        if counted != expected {
            eprintln!(
                "\n!!!!! intake: {}: the ingest counted {counted} accepted samples, but {} \
                 successful answers × {} samples are {expected} !!!!!\n",
                body.protocol,
                summary.accepted(),
                self.args.samples_per_request
            );
        }
        ingest.terminate(STOP_TIMEOUT).await?;
        Ok(Measurement {
            suite: SUITE.to_owned(),
            target: INGEST.to_owned(),
            params: self.params(body),
            figures,
            command: load.command_line(),
        })
    }
}

/// The round with the median samples/s stands for all (the lower middle of an even count), with
/// `samples_per_sec_min` and `_max` of all rounds, `errors` summed over them, the largest
/// `samples_mismatch` of any, and `failed_rounds`; `None` when no round succeeded.
pub(crate) fn median_round(
    mut rounds: Vec<Measurement>,
    failed_rounds: usize,
) -> Option<Measurement> {
    let rate = |m: &Measurement| m.figures.get("samples_per_sec").copied().unwrap_or(0.0);
    rounds.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let min = rate(rounds.first()?);
    let max = rate(rounds.last()?);
    let errors: f64 = rounds.iter().filter_map(|m| m.figures.get("errors")).sum();
    let mismatch = rounds
        .iter()
        .filter_map(|m| m.figures.get("samples_mismatch").copied())
        .max_by(|a, b| a.abs().total_cmp(&b.abs()));
    let count = rounds.len();
    let mut median = rounds.swap_remove((count - 1) / 2);
    median
        .params
        .insert("rounds".to_owned(), json!(count + failed_rounds));
    let figures = &mut median.figures;
    figures.insert("samples_per_sec_min".to_owned(), min);
    figures.insert("samples_per_sec_max".to_owned(), max);
    figures.insert("errors".to_owned(), errors);
    figures.insert("failed_rounds".to_owned(), failed_rounds as f64);
    if let Some(mismatch) = mismatch {
        figures.insert("samples_mismatch".to_owned(), mismatch);
    }
    Some(median)
}

/// One console line of a run's figures.
fn summarize(measurement: &Measurement) -> String {
    let f = |name: &str| measurement.figures.get(name).copied().unwrap_or(f64::NAN);
    format!(
        "{:.0} samples/s ({:.0} req/s), p50 {:.2} ms, p99 {:.2} ms, errors {:.0}",
        f("samples_per_sec"),
        f("requests_per_sec"),
        f("p50_ms"),
        f("p99_ms"),
        f("errors")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(samples_per_sec: f64, errors: f64, mismatch: f64) -> Measurement {
        Measurement {
            suite: SUITE.to_owned(),
            target: INGEST.to_owned(),
            params: BTreeMap::new(),
            figures: BTreeMap::from([
                ("samples_per_sec".to_owned(), samples_per_sec),
                ("errors".to_owned(), errors),
                ("samples_mismatch".to_owned(), mismatch),
            ]),
            command: String::new(),
        }
    }

    #[test]
    fn the_median_round_stands_for_all_and_no_error_of_another_round_is_lost() {
        let rounds = vec![
            round(300.0, 0.0, 0.0),
            round(100.0, 2.0, -5.0),
            round(200.0, 1.0, 1.0),
        ];
        let median = median_round(rounds, 1).expect("a round succeeded");
        let figure = |name: &str| median.figures[name];
        assert_eq!(figure("samples_per_sec"), 200.0);
        assert_eq!(figure("samples_per_sec_min"), 100.0);
        assert_eq!(figure("samples_per_sec_max"), 300.0);
        assert_eq!(figure("errors"), 3.0);
        assert_eq!(figure("samples_mismatch"), -5.0);
        assert_eq!(figure("failed_rounds"), 1.0);
        assert_eq!(median.params["rounds"], json!(4));
        assert!(median_round(Vec::new(), 3).is_none());
    }
}
