//! Consumer drain: records/s draining a pre-filled backlog of one million metrics on both
//! backends, beside a bare read of the same data.
//!
//! For each backend (the file queue always; Kafka when `KAFKA_BOOTSTRAP` is set):
//!
//! 1. The backlog (default 10,000 records × 100 metrics, spread evenly over 4 partitions, each
//!    record what the ingest stores for a request like the HTTP suite's) is appended through the
//!    backend crate's own producer (`FileProducer` with group commit, or the idempotent
//!    `KafkaProducer`), many appends in flight. Not measured.
//! 2. `bare-read-<backend>`, the ceiling. File: every segment file of every partition read in
//!    order on one thread, each frame's payload decoded (zero-copy, `codec::decode_ref`, as the consumer does), nothing
//!    written. Kafka: Kafka's ConsumerPerformance (`hack/kafka.sh tool consumer-perf`) reading
//!    the whole topic from the beginning; its fetch time (which excludes the group join).
//! 3. `queue-read-<backend>`, a diagnostic: the backend crate's `QueueConsumer` in this process
//!    (poll, decode, commit; no sink): the consumer minus its sink.
//! 4. `consumer-<backend>`: the real release `metricstream-consumer` on a fresh group and sink,
//!    watched through its `/metrics` until `metricstream_consumer_metrics_written_total` (lines
//!    written and synced) reaches the backlog's metrics; then its peak RSS (`VmHWM`), SIGTERM,
//!    and the sink counted by `(partition, offset, index)` for loss and duplicates.
//!
//! The rates of `queue-read` and `consumer` run from the moment the first records were polled
//! (`startup_seconds` before it: process start, group join) to the last metric written; so
//! does `seconds`. `total_seconds` runs from the start of the process.

pub mod consumer_process;
pub(crate) mod fill;
mod read;
pub mod sink_check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use metricstream_backend::kafka::{KafkaSettings, admin};
use serde_json::{Value, json};

use crate::backend::tools::{self, kafka_bootstrap, this_command_line};
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib};
use consumer_process::{ConsumerProcess, Sink, Source};
use fill::{fill_file, fill_kafka};
use read::{bare_read_file, bare_read_kafka, queue_read};

/// Records per poll of the in-process queue read: the consumer's default `--max-batch-records`.
const QUEUE_READ_BATCH: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DrainBackend {
    File,
    /// Needs KAFKA_BOOTSTRAP.
    Kafka,
}

impl DrainBackend {
    fn name(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Kafka => "kafka",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DrainArgs {
    /// Queue records in the backlog.
    #[arg(long, default_value_t = 10_000)]
    pub records: u64,
    /// Metrics per record (per request).
    #[arg(long, default_value_t = 100)]
    pub metrics_per_record: u32,
    /// Partitions of the queue.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// The backends to drain.
    #[arg(long, value_delimiter = ',', default_value = "file,kafka")]
    pub backends: Vec<DrainBackend>,
    /// The consumer's --max-batch-records in the main drain (default: the consumer's own
    /// default, and no `max_batch_records` in that measurement's params).
    #[arg(long)]
    pub max_batch_records: Option<u32>,
    /// Further drains with these --max-batch-records (params carry `max_batch_records`): how
    /// the consumer's batch size trades memory for throughput.
    #[arg(long, value_delimiter = ',', default_value = "256")]
    pub sweep_max_batch_records: Vec<u32>,
    /// Only the main drain: no --sweep-max-batch-records drains.
    #[arg(long)]
    pub no_sweep: bool,
    /// Where the queue and the sinks go (default: a scratch directory under the cargo target
    /// directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Longest one drain may take before the suite fails.
    #[arg(long, default_value_t = 180)]
    pub timeout_secs: u64,
    /// A quick check: a backlog of 1,000 records (100,000 metrics at the default size).
    #[arg(long)]
    pub quick: bool,
}

/// The backlog as filled: where it is and every record's `(partition, offset)`.
pub(crate) struct Backlog {
    backend: DrainBackend,
    queue: Queue,
    pub(crate) records: Vec<(u32, u64)>,
    pub(crate) metrics_per_record: u32,
    pub(crate) partitions: u32,
}

enum Queue {
    File { data_dir: PathBuf },
    Kafka { settings: KafkaSettings },
}

impl Backlog {
    pub(crate) fn metrics(&self) -> u64 {
        self.records.len() as u64 * u64::from(self.metrics_per_record)
    }

    pub(crate) fn params(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("metrics".to_owned(), json!(self.metrics())),
            ("records".to_owned(), json!(self.records.len())),
            (
                "metrics_per_record".to_owned(),
                json!(self.metrics_per_record),
            ),
            ("partitions".to_owned(), json!(self.partitions)),
        ])
    }

    pub(crate) fn source(&self) -> Source<'_> {
        match &self.queue {
            Queue::File { data_dir } => Source::File { data_dir },
            Queue::Kafka { settings } => Source::Kafka {
                bootstrap: &settings.brokers,
                topic: &settings.topic,
            },
        }
    }
}

/// What a read of the backlog measured.
struct ReadFigures {
    records: u64,
    metrics: u64,
    seconds: f64,
    /// Before the timed part: process start, group join (0 where there is none).
    startup_seconds: f64,
}

impl ReadFigures {
    fn figures(&self) -> BTreeMap<String, f64> {
        BTreeMap::from([
            (
                "records_per_sec".to_owned(),
                self.records as f64 / self.seconds,
            ),
            (
                "metrics_per_sec".to_owned(),
                self.metrics as f64 / self.seconds,
            ),
            ("seconds".to_owned(), self.seconds),
            ("startup_seconds".to_owned(), self.startup_seconds),
        ])
    }
}

pub async fn run(args: DrainArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let records = if args.quick {
        args.records.min(1_000)
    } else {
        args.records
    };
    fill::check_backlog(records, args.metrics_per_record, args.partitions)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let batch_sizes: Vec<Option<u32>> = std::iter::once(args.max_batch_records)
        .chain(
            args.sweep_max_batch_records
                .iter()
                .filter(|_| !args.no_sweep)
                .copied()
                .map(Some),
        )
        .collect();
    anyhow::ensure!(
        batch_sizes.iter().flatten().all(|&records| records > 0),
        "batch sizes must be positive"
    );

    let mut measurements = Vec::new();
    for &backend in &args.backends {
        let bootstrap = match backend {
            DrainBackend::File => None,
            DrainBackend::Kafka => match kafka_bootstrap() {
                Some(bootstrap) => Some(bootstrap),
                None => {
                    tools::warn_kafka_skipped("the Kafka drain (consumer-kafka, bare-read-kafka)");
                    continue;
                }
            },
        };
        let scratch = tools::scratch_dir(
            args.dir.as_deref(),
            &format!("bench-drain-{}-", backend.name()),
        )?;
        let filled = Instant::now();
        let backlog = match bootstrap {
            None => {
                let data_dir = scratch.path().join("data");
                fill_file(&data_dir, args.partitions, records, args.metrics_per_record).await?
            }
            Some(bootstrap) => {
                fill_kafka(
                    &bootstrap,
                    args.partitions,
                    records,
                    args.metrics_per_record,
                )
                .await?
            }
        };
        eprintln!(
            "drain: {} backlog of {} records ({} metrics) filled in {:.1} s (not measured)",
            backend.name(),
            backlog.records.len(),
            backlog.metrics(),
            filled.elapsed().as_secs_f64()
        );
        let outcome = measure_backlog(&backlog, scratch.path(), &batch_sizes, timeout).await;
        if let Queue::Kafka { settings } = &backlog.queue
            && let Err(error) = admin::delete_topic(settings).await
        {
            eprintln!("drain: could not delete topic {}: {error}", settings.topic);
        }
        measurements.extend(outcome?);
    }

    Ok(SuiteResults {
        suite: "drain".to_owned(),
        started,
        machine: Machine::this(),
        measurements,
    })
}

/// The bare read, the in-process queue read and the consumer drains of one backlog.
async fn measure_backlog(
    backlog: &Backlog,
    scratch: &Path,
    batch_sizes: &[Option<u32>],
    timeout: Duration,
) -> anyhow::Result<Vec<Measurement>> {
    let backend = backlog.backend.name();
    let mut measurements = Vec::new();

    let (bare, command) = match &backlog.queue {
        Queue::File { data_dir } => {
            let data_dir = data_dir.clone();
            let partitions = backlog.partitions;
            let figures =
                tokio::task::spawn_blocking(move || bare_read_file(&data_dir, partitions))
                    .await
                    .context("the bare read panicked")??;
            let command = format!(
                "{} (one thread: read each partition's segment files in order, decode every \
                 record with metricstream_backend::codec::decode_ref, write nothing)",
                this_command_line()
            );
            (figures, command)
        }
        Queue::Kafka { settings } => {
            bare_read_kafka(
                settings,
                backlog.records.len() as u64,
                backlog.metrics_per_record,
            )
            .await?
        }
    };
    check_read(&bare, backlog, "the bare read")?;
    measurements.push(measurement(
        backlog,
        &format!("bare-read-{backend}"),
        bare.figures(),
        command,
    ));

    let queue_read = queue_read(backlog, timeout).await?;
    check_read(&queue_read, backlog, "the in-process queue read")?;
    measurements.push(measurement(
        backlog,
        &format!("queue-read-{backend}"),
        queue_read.figures(),
        format!(
            "{} (in process: the backend crate's QueueConsumer, poll {QUEUE_READ_BATCH} records, \
             decode, commit; no sink)",
            this_command_line()
        ),
    ));

    for (run, &max_batch_records) in batch_sizes.iter().enumerate() {
        let drained = drain_with_consumer(backlog, scratch, run, max_batch_records, timeout)
            .await
            .with_context(|| format!("the {backend} consumer drain"))?;
        if run == 0 {
            let sink_bytes = drained
                .figures
                .get("sink_mib")
                .map_or(0, |mib| (mib * 1024.0 * 1024.0) as u64);
            let path = scratch.join("bare-write");
            let seconds = tokio::task::spawn_blocking(move || bare_write(&path, sink_bytes))
                .await
                .context("the bare write panicked")??;
            let metrics = backlog.metrics() as f64;
            measurements.push(measurement(
                backlog,
                &format!("bare-write-{backend}"),
                BTreeMap::from([
                    ("seconds".to_owned(), seconds),
                    ("sink_mib".to_owned(), sink_bytes as f64 / (1024.0 * 1024.0)),
                    ("metrics_per_sec".to_owned(), metrics / seconds.max(1e-9)),
                ]),
                format!(
                    "{} (one thread: write as many bytes as the consumer's sink holds, 1 MiB \
                     per write, then one fdatasync, on the same disk; read nothing)",
                    this_command_line()
                ),
            ));
        }
        measurements.push(drained);
    }
    for measurement in &measurements {
        eprintln!("drain: {}", crate::backend::summary(measurement));
    }
    Ok(measurements)
}

/// Writes `bytes` bytes to a new file at `path` in 1 MiB writes, then fdatasyncs it: what the
/// disk alone takes to hold what the consumer writes. Returns the seconds taken.
fn bare_write(path: &Path, bytes: u64) -> anyhow::Result<f64> {
    use std::io::Write;
    let chunk = vec![b'x'; 1024 * 1024];
    let started = Instant::now();
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = bytes;
    while left > 0 {
        let now = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..now])
            .with_context(|| format!("writing {}", path.display()))?;
        left -= now as u64;
    }
    file.sync_data()
        .with_context(|| format!("syncing {}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    Ok(seconds)
}

fn measurement(
    backlog: &Backlog,
    target: &str,
    figures: BTreeMap<String, f64>,
    command: String,
) -> Measurement {
    Measurement {
        suite: "drain".to_owned(),
        target: target.to_owned(),
        params: backlog.params(),
        figures,
        command,
    }
}

fn check_read(figures: &ReadFigures, backlog: &Backlog, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        figures.records == backlog.records.len() as u64 && figures.metrics == backlog.metrics(),
        "{what} found {} records and {} metrics; the backlog has {} and {}",
        figures.records,
        figures.metrics,
        backlog.records.len(),
        backlog.metrics()
    );
    Ok(())
}

/// Runs the real consumer on a fresh group and sink until it has written the whole backlog.
async fn drain_with_consumer(
    backlog: &Backlog,
    scratch: &Path,
    run: usize,
    max_batch_records: Option<u32>,
    timeout: Duration,
) -> anyhow::Result<Measurement> {
    let backend = backlog.backend.name();
    let sink_dir = scratch.join(format!("sink-{run}"));
    let log_path = scratch.join(format!("consumer-{run}.log"));
    let group = metricstream_tests::kafka::unique_name("bench-drain");
    let expected = backlog.metrics() as f64;
    let spawned = Instant::now();
    let mut process = ConsumerProcess::spawn(
        &backlog.source(),
        backlog.partitions,
        &group,
        &Sink::File { dir: &sink_dir },
        &log_path,
        max_batch_records,
    )?;
    let (progress, first_records) = process.wait_written(expected, spawned, timeout).await?;
    let done = Instant::now();
    let rss_peak_mib = peak_rss_mib(process.pid())?;
    let command = process.command.clone();
    process.terminate().await?;

    let records = backlog.records.clone();
    let metrics_per_record = backlog.metrics_per_record;
    let sink = sink_dir.clone();
    let count = tokio::task::spawn_blocking(move || {
        sink_check::count_sink(&sink, &records, metrics_per_record)
    })
    .await
    .context("counting the sink panicked")??;
    if count.lost > 0 || count.duplicates > 0 {
        eprintln!(
            "drain: {backend} consumer: {} LOST and {} DUPLICATED ({} at positions the backlog \
             does not have) in {}",
            count.lost,
            count.duplicates,
            count.unexpected,
            sink_dir.display()
        );
    }

    let first_records = first_records.unwrap_or(spawned);
    let seconds = done.duration_since(first_records).as_secs_f64();
    let read = ReadFigures {
        records: backlog.records.len() as u64,
        metrics: backlog.metrics(),
        seconds,
        startup_seconds: first_records.duration_since(spawned).as_secs_f64(),
    };
    let mut figures = read.figures();
    figures.extend([
        (
            "total_seconds".to_owned(),
            done.duration_since(spawned).as_secs_f64(),
        ),
        ("rss_peak_mib".to_owned(), rss_peak_mib),
        ("lost".to_owned(), count.lost as f64),
        ("duplicates".to_owned(), count.duplicates as f64),
        ("sink_lines".to_owned(), count.lines as f64),
        (
            "sink_mib".to_owned(),
            count.bytes as f64 / (1024.0 * 1024.0),
        ),
        // Time in the sink (JSON Lines written + fdatasync), from the consumer's histogram.
        ("sink_write_seconds".to_owned(), progress.sink_write_seconds),
        ("sink_batches".to_owned(), progress.sink_batches),
    ]);
    let mut params = backlog.params();
    if let Some(records) = max_batch_records {
        params.insert("max_batch_records".to_owned(), json!(records));
    }
    Ok(Measurement {
        suite: "drain".to_owned(),
        target: format!("consumer-{backend}"),
        params,
        figures,
        command,
    })
}
