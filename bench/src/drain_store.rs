//! Consumer drain into a store: samples/s of the release `metricstream-consumer` draining a
//! filled file queue with `--sink remote-write` into a fresh VictoriaMetrics, beside the store's
//! own ingestion ceiling for the same samples.
//!
//! 1. The backlog (default 30,000 records × 100 metrics over 4 partitions) is appended through
//!    the file queue's own producer, as the drain suite fills it, except that every metric is a
//!    distinct sample (each record one scrape of 100 series at its own millisecond,
//!    `backend::record::scrape_batch`), so the store keeps all of them. Not measured.
//! 2. `consumer-victoriametrics`: a fresh VictoriaMetrics (`-dedup.minScrapeInterval=1ms
//!    -retentionPeriod=100y`, as docs/sink.md requires), then the consumer on a fresh group with
//!    `--sink remote-write --sink-max-samples-per-request <n> --sink-concurrency <c>`, for each
//!    `--consumer-concurrency` (1 and the default 4). Timed from the first records
//!    polled until the store holds every sample: its own `vm_rows_added_to_storage_total`
//!    reaches the backlog's samples (checked once the consumer's `metrics_written_total` does:
//!    the store adds a request's rows before answering it), and a `/internal/force_flush` has
//!    made them searchable. `accepted_seconds` stops at the count, before the flush.
//! 3. `remote-write-victoriametrics`, the ceiling: for each `--direct-concurrency`, a fresh
//!    VictoriaMetrics fed the same samples by this process in requests of the same size,
//!    encoded before the clock starts; timed from the first request the same way.
//!
//! After each, the store's export is counted: `samples_exported` must equal the backlog
//! (`samples_missing` is the shortfall; duplicates cannot show, the store keeps one of each),
//! and `searchable_seconds` is how long the export took to show them all. The consumer's
//! `samples_sent` beyond the backlog are requests it sent again. CPU seconds are the store's
//! (and the consumer's) over the timed window, `machine_busy_cores` how busy the whole machine
//! was meanwhile (others share it). The consumer and the direct loads
//! take turns `--rounds` times, each on a fresh store; each figure is the round with the median
//! samples/s, with `metrics_per_sec_min` and `_max` of all rounds.

mod direct;
pub mod victoriametrics;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::backend::record::scrape_batch;
use crate::backend::tools::{self, this_command_line};
use crate::drain::Backlog;
use crate::drain::consumer_process::{ConsumerProcess, Sink};
use crate::drain::fill::fill_file_with;
use crate::operator::procfs::{MachineCpu, process_cpu_seconds};
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib};
use direct::{Requests, encode_requests, send_all};
use victoriametrics::VictoriaMetrics;

const SUITE: &str = "drain-store";
/// The series every backlog sample belongs to (`cpu{host,region}`).
const SELECTOR: &str = "{__name__=\"cpu\"}";
/// How long the flushed samples may take to show in an export.
const SEARCHABLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args, Debug, Clone)]
pub struct DrainStoreArgs {
    /// Queue records in the backlog.
    #[arg(long, default_value_t = 30_000)]
    pub records: u64,
    /// Metrics per record (one sample each).
    #[arg(long, default_value_t = 100)]
    pub metrics_per_record: u32,
    /// Partitions of the queue.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Samples per remote-write request: the consumer's --sink-max-samples-per-request (its
    /// default) and the size of the direct load's requests.
    #[arg(long, default_value_t = 5000)]
    pub samples_per_request: u32,
    /// Requests in flight of the direct load, one measurement each (default: 1, as the consumer
    /// sends them, and the partition count).
    #[arg(long, value_delimiter = ',')]
    pub direct_concurrency: Vec<usize>,
    /// The consumer's `--sink-concurrency`, one measurement each (default: 1 and 4, the
    /// consumer's default).
    #[arg(long, value_delimiter = ',')]
    pub consumer_concurrency: Vec<u32>,
    /// Where the queue, the stores' data and the logs go (default: a scratch directory under
    /// the cargo target directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Longest one drain or load may take before the suite fails.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
    /// Rounds of every measurement; each figure is the round with the median samples/s.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// A quick check: a backlog of 1,000 records (100,000 samples at the default size), one
    /// round.
    #[arg(long)]
    pub quick: bool,
}

/// CPU counters at the start of a timed window.
struct Window {
    started: Instant,
    store_cpu: f64,
    machine: MachineCpu,
}

impl Window {
    fn open(store: &VictoriaMetrics) -> anyhow::Result<Self> {
        Ok(Self {
            started: Instant::now(),
            store_cpu: process_cpu_seconds(store.pid())?,
            machine: MachineCpu::now()?,
        })
    }

    /// The store's figures for the window ending once it has flushed (the store's rows counted
    /// already, now), then its export checked against `samples`.
    async fn close(
        &self,
        store: &VictoriaMetrics,
        samples: u64,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        let accepted = Instant::now();
        store.force_flush().await?;
        let done = Instant::now();
        let seconds = done.duration_since(self.started).as_secs_f64();
        let store_cpu = process_cpu_seconds(store.pid())? - self.store_cpu;
        let busy = MachineCpu::now()?.busy_cores_since(&self.machine, Machine::this().cores);
        let counters = store.counters().await?;
        let (exported, searchable_seconds) = store
            .wait_exported(SELECTOR, samples, SEARCHABLE_TIMEOUT)
            .await?;
        if exported != samples {
            eprintln!(
                "{SUITE}: the store exports {exported} samples of the backlog's {samples} after \
                 {searchable_seconds:.1} s"
            );
        }
        Ok(BTreeMap::from([
            ("seconds".to_owned(), seconds),
            ("metrics_per_sec".to_owned(), samples as f64 / seconds),
            (
                "accepted_seconds".to_owned(),
                accepted.duration_since(self.started).as_secs_f64(),
            ),
            ("store_cpu_seconds".to_owned(), store_cpu),
            ("store_rss_peak_mib".to_owned(), peak_rss_mib(store.pid())?),
            ("store_write_requests".to_owned(), counters.write_requests),
            ("machine_busy_cores".to_owned(), busy),
            ("samples_exported".to_owned(), exported as f64),
            (
                "samples_missing".to_owned(),
                samples.saturating_sub(exported) as f64,
            ),
            ("searchable_seconds".to_owned(), searchable_seconds),
        ]))
    }
}

pub async fn run(args: DrainStoreArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    victoriametrics::binary()?;
    let (records, rounds) = if args.quick {
        (args.records.min(1_000), 1)
    } else {
        (args.records, args.rounds)
    };
    anyhow::ensure!(rounds > 0, "--rounds must be positive");
    crate::drain::fill::check_backlog(records, args.metrics_per_record, args.partitions)?;
    anyhow::ensure!(
        args.samples_per_request > 0,
        "--samples-per-request must be positive"
    );
    let mut concurrencies = args.direct_concurrency.clone();
    if concurrencies.is_empty() {
        concurrencies = vec![1, args.partitions as usize];
    }
    concurrencies.dedup();
    let mut consumer_concurrencies = args.consumer_concurrency.clone();
    if consumer_concurrencies.is_empty() {
        consumer_concurrencies = vec![1, 4];
    }
    consumer_concurrencies.dedup();
    anyhow::ensure!(
        consumer_concurrencies
            .iter()
            .all(|&c| (1..=64).contains(&c)),
        "--consumer-concurrency must be in 1..=64"
    );
    anyhow::ensure!(
        concurrencies.iter().all(|&c| c > 0),
        "--direct-concurrency must be positive"
    );
    let timeout = Duration::from_secs(args.timeout_secs);

    let scratch = tools::scratch_dir(args.dir.as_deref(), "bench-drain-store-")?;
    let filled = Instant::now();
    let backlog = fill_file_with(
        &scratch.path().join("data"),
        args.partitions,
        records,
        args.metrics_per_record,
        scrape_batch,
    )
    .await?;
    let requests = encode_requests(
        records,
        args.metrics_per_record,
        args.partitions,
        args.samples_per_request,
        scrape_batch,
    )?;
    anyhow::ensure!(
        requests.samples == backlog.metrics(),
        "the direct load's samples"
    );
    eprintln!(
        "{SUITE}: backlog of {} records ({} samples) filled and {} requests ({:.1} MiB) encoded \
         in {:.1} s (not measured)",
        backlog.records.len(),
        backlog.metrics(),
        requests.bodies.len(),
        requests.bytes() as f64 / (1024.0 * 1024.0),
        filled.elapsed().as_secs_f64()
    );

    // runs[c]: the consumer's rounds at consumer_concurrencies[c]; after them, the direct
    // load's at each of concurrencies.
    let consumers = consumer_concurrencies.len();
    let mut runs: Vec<Vec<Measurement>> = vec![Vec::new(); consumers + concurrencies.len()];
    for round in 1..=rounds {
        let dir = scratch.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for (index, &concurrency) in consumer_concurrencies.iter().enumerate() {
            let drained = drain_with_consumer(
                &backlog,
                &dir.join(format!("consumer-{concurrency}")),
                args.samples_per_request,
                concurrency,
                timeout,
            )
            .await
            .with_context(|| {
                format!("round {round}: the consumer's drain, {concurrency} in flight")
            })?;
            eprintln!(
                "{SUITE}: round {round}: {}",
                crate::backend::summary(&drained)
            );
            runs[index].push(drained);
        }
        for (index, &concurrency) in concurrencies.iter().enumerate() {
            let loaded = direct_load(
                &backlog,
                &requests,
                &dir,
                args.samples_per_request,
                concurrency,
                timeout,
            )
            .await
            .with_context(|| format!("round {round}: the direct load, {concurrency} in flight"))?;
            eprintln!(
                "{SUITE}: round {round}: {}",
                crate::backend::summary(&loaded)
            );
            runs[consumers + index].push(loaded);
        }
    }
    let measurements: Vec<Measurement> = runs.into_iter().filter_map(median_round).collect();
    for measurement in &measurements {
        eprintln!("{SUITE}: {}", crate::backend::summary(measurement));
    }
    Ok(SuiteResults {
        suite: SUITE.to_owned(),
        started,
        machine: Machine::this(),
        measurements,
    })
}

/// The round with the median samples/s stands for all (the lower middle of an even count), with
/// `metrics_per_sec_min` and `_max` of every round and the largest `samples_missing` of any;
/// `None` for no rounds.
fn median_round(mut rounds: Vec<Measurement>) -> Option<Measurement> {
    let rate = |m: &Measurement| m.figures.get("metrics_per_sec").copied().unwrap_or(0.0);
    rounds.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    let min = rate(rounds.first()?);
    let max = rate(rounds.last()?);
    let missing = rounds
        .iter()
        .filter_map(|m| m.figures.get("samples_missing").copied())
        .fold(0.0, f64::max);
    let count = rounds.len();
    let mut median = rounds.swap_remove((count - 1) / 2);
    median.params.insert("rounds".to_owned(), json!(count));
    median.figures.extend([
        ("metrics_per_sec_min".to_owned(), min),
        ("metrics_per_sec_max".to_owned(), max),
        ("samples_missing".to_owned(), missing),
    ]);
    Some(median)
}

fn params(backlog: &Backlog, samples_per_request: u32) -> BTreeMap<String, serde_json::Value> {
    let mut params = backlog.params();
    params.insert("samples_per_request".to_owned(), json!(samples_per_request));
    params
}

/// The consumer on a fresh group draining the backlog into a fresh store.
async fn drain_with_consumer(
    backlog: &Backlog,
    scratch: &Path,
    samples_per_request: u32,
    concurrency: u32,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    std::fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut store = VictoriaMetrics::start(
        &scratch.join("store-consumer"),
        &scratch.join("victoriametrics-consumer.log"),
    )
    .await?;
    let expected = backlog.metrics();
    let log_path = scratch.join("consumer.log");
    let url = store.write_url();
    let spawned = Instant::now();
    let mut window = Window::open(&store)?;
    let mut process = ConsumerProcess::spawn(
        &backlog.source(),
        backlog.partitions,
        &metricstream_tests::kafka::unique_name("bench-drain-store"),
        &Sink::RemoteWrite {
            dir: &scratch.join("sink"),
            url: &url,
            max_samples_per_request: samples_per_request,
            concurrency,
        },
        &log_path,
        None,
    )?;
    let (progress, first_records) = process
        .wait_written(expected as f64, spawned, timeout)
        .await
        .context("the consumer's drain into the store")?;
    store
        .wait_rows_added(expected as f64, timeout.saturating_sub(spawned.elapsed()))
        .await?;
    // The clock runs from the first records polled, as the drain suite's does.
    let first_records = first_records.unwrap_or(spawned);
    let total_seconds = spawned.elapsed().as_secs_f64();
    window.started = first_records;
    let consumer_cpu = process_cpu_seconds(process.pid())?;
    let consumer_rss = peak_rss_mib(process.pid())?;
    let mut figures = window.close(&store, expected).await?;
    let final_progress = process.progress().await.unwrap_or(progress);
    let command = format!(
        "{} (the remote-write sink: {concurrency} request(s) in flight; into {})",
        process.command, store.command
    );
    process.terminate().await?;
    store.terminate().await?;
    figures.extend([
        (
            "startup_seconds".to_owned(),
            first_records.duration_since(spawned).as_secs_f64(),
        ),
        ("total_seconds".to_owned(), total_seconds),
        ("cpu_seconds".to_owned(), consumer_cpu),
        ("rss_peak_mib".to_owned(), consumer_rss),
        ("sink_write_seconds".to_owned(), progress.sink_write_seconds),
        ("sink_batches".to_owned(), progress.sink_batches),
        ("dead_lettered".to_owned(), final_progress.dead_lettered),
        // Beyond the backlog's samples: requests sent again (a failed batch is resent whole).
        ("samples_sent".to_owned(), final_progress.samples_sent),
    ]);
    Ok(Measurement {
        suite: SUITE.to_owned(),
        target: "consumer-victoriametrics".to_owned(),
        params: {
            let mut params = params(backlog, samples_per_request);
            params.insert("concurrency".to_owned(), json!(concurrency));
            params
        },
        figures,
        command,
    })
}

/// The same samples sent by this process straight to a fresh store, `concurrency` requests in
/// flight.
async fn direct_load(
    backlog: &Backlog,
    requests: &Requests,
    scratch: &Path,
    samples_per_request: u32,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let name = format!("direct-{concurrency}");
    let mut store = VictoriaMetrics::start(
        &scratch.join(format!("store-{name}")),
        &scratch.join(format!("victoriametrics-{name}.log")),
    )
    .await?;
    let client = metricstream_tests::http_client_builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;
    let url = store.write_url();
    let window = Window::open(&store)?;
    tokio::time::timeout(timeout, send_all(&client, &url, requests, concurrency))
        .await
        .with_context(|| format!("the direct load took more than {timeout:?}"))??;
    store
        .wait_rows_added(
            requests.samples as f64,
            timeout.saturating_sub(window.started.elapsed()),
        )
        .await?;
    let mut figures = window.close(&store, requests.samples).await?;
    let command = format!(
        "{} (in process: the backlog's samples as {} snappy remote-write 1.0 bodies of at most \
         {samples_per_request} samples, {:.1} MiB, encoded before the clock starts; \
         {concurrency} in flight; into {})",
        this_command_line(),
        requests.bodies.len(),
        requests.bytes() as f64 / (1024.0 * 1024.0),
        store.command
    );
    store.terminate().await?;
    figures.insert(
        "request_mib".to_owned(),
        requests.bytes() as f64 / (1024.0 * 1024.0),
    );
    let mut params = params(backlog, samples_per_request);
    params.insert("concurrency".to_owned(), json!(concurrency));
    Ok(Measurement {
        suite: SUITE.to_owned(),
        target: "remote-write-victoriametrics".to_owned(),
        params,
        figures,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rate: f64, missing: f64) -> Measurement {
        Measurement {
            suite: SUITE.to_owned(),
            target: "consumer-victoriametrics".to_owned(),
            params: BTreeMap::new(),
            figures: BTreeMap::from([
                ("metrics_per_sec".to_owned(), rate),
                ("samples_missing".to_owned(), missing),
                ("seconds".to_owned(), 1_000_000.0 / rate),
            ]),
            command: String::new(),
        }
    }

    #[test]
    fn the_median_round_stands_for_all_and_keeps_the_worst_loss() {
        let median = median_round(vec![run(300.0, 0.0), run(100.0, 7.0), run(200.0, 0.0)])
            .expect("a median");
        assert_eq!(median.figures["metrics_per_sec"], 200.0);
        assert_eq!(
            median.figures["seconds"], 5_000.0,
            "the median round's own figures"
        );
        assert_eq!(median.figures["metrics_per_sec_min"], 100.0);
        assert_eq!(median.figures["metrics_per_sec_max"], 300.0);
        assert_eq!(
            median.figures["samples_missing"], 7.0,
            "a loss in any round shows"
        );
        assert_eq!(median.params["rounds"], json!(3));
        assert!(median_round(Vec::new()).is_none());
    }
}
