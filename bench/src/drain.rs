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
pub mod sink_check;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use metricstream_backend::file::{FileConsumer, FileProducer, FileQueueConfig, FileQueueMetrics};
use metricstream_backend::kafka::{
    KafkaConsumer, KafkaMetrics, KafkaProducer, KafkaSettings, ProducerTuning, admin,
};
use metricstream_backend::{Offset, Partition, PollLimits, QueueConsumer, QueueProducer, codec};
use serde_json::{Value, json};

use crate::backend::record::{FILE_FRAME_HEADER_BYTES, client_per_partition, representative_batch};
use crate::backend::tools::{
    self, kafka_bootstrap, kafka_tool_command, run_kafka_tool, this_command_line,
};
use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib};
use consumer_process::{ConsumerProcess, Source};

/// Appends in flight while filling the backlog.
const FILL_CONCURRENCY: usize = 256;
/// Records per poll of the in-process queue read: the consumer's default `--max-batch-records`.
const QUEUE_READ_BATCH: usize = 2048;
/// How often the consumer's `/metrics` is read during a drain.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);

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
struct Backlog {
    backend: DrainBackend,
    queue: Queue,
    records: Vec<(u32, u64)>,
    metrics_per_record: u32,
    partitions: u32,
}

enum Queue {
    File { data_dir: PathBuf },
    Kafka { settings: KafkaSettings },
}

impl Backlog {
    fn metrics(&self) -> u64 {
        self.records.len() as u64 * u64::from(self.metrics_per_record)
    }

    fn params(&self) -> BTreeMap<String, Value> {
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

    fn source(&self) -> Source<'_> {
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
    anyhow::ensure!(records > 0, "--records must be positive");
    anyhow::ensure!(
        args.metrics_per_record > 0,
        "--metrics-per-record must be positive"
    );
    anyhow::ensure!(
        (1..=1024).contains(&args.partitions),
        "--partitions must be in 1..=1024"
    );
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

/// Appends `records` representative records round-robin over the partitions (each through a
/// client that hashes to it) and returns every record's `(partition, offset)`.
async fn fill<P: QueueProducer>(
    producer: &P,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<Vec<(u32, u64)>> {
    let clients = client_per_partition(partitions);
    futures::stream::iter(0..records)
        .map(|seq| {
            let partition = (seq % u64::from(partitions)) as u32;
            let batch = representative_batch(&clients[partition as usize], metrics_per_record, seq);
            let payload = Bytes::from(codec::encode(&batch));
            async move {
                producer
                    .append(Partition(partition), payload)
                    .await
                    .map(|Offset(offset)| (partition, offset))
                    .with_context(|| format!("appending record {seq} to partition {partition}"))
            }
        })
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect()
        .await
}

async fn fill_file(
    data_dir: &Path,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<Backlog> {
    // Group commit, as the ingest's default: the backlog is durable (no dirty pages left for
    // the drain to flush) and still written quickly.
    let producer = FileProducer::open(
        FileQueueConfig::new(data_dir, partitions),
        FileQueueMetrics::default(),
    )
    .await
    .with_context(|| format!("opening the file queue in {}", data_dir.display()))?;
    let filled = fill(&producer, partitions, records, metrics_per_record).await;
    producer.close().await;
    Ok(Backlog {
        backend: DrainBackend::File,
        queue: Queue::File {
            data_dir: data_dir.to_path_buf(),
        },
        records: filled?,
        metrics_per_record,
        partitions,
    })
}

async fn fill_kafka(
    bootstrap: &str,
    partitions: u32,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<Backlog> {
    let settings = KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: metricstream_tests::kafka::unique_name("bench-drain"),
        partitions,
        client_id: "metricstream-bench".to_owned(),
        security: Default::default(),
        extra: Vec::new(),
    };
    admin::ensure_topic(&settings, 1, &[])
        .await
        .with_context(|| format!("creating topic {}", settings.topic))?;
    let filled = async {
        let producer = KafkaProducer::open(
            settings.clone(),
            ProducerTuning::default(),
            KafkaMetrics::default(),
        )
        .await
        .with_context(|| format!("opening a producer on {}", settings.topic))?;
        let filled = fill(&producer, partitions, records, metrics_per_record).await;
        producer.close().await;
        filled
    }
    .await;
    let filled = match filled {
        Ok(filled) => filled,
        Err(error) => {
            let _ = admin::delete_topic(&settings).await;
            return Err(error);
        }
    };
    Ok(Backlog {
        backend: DrainBackend::Kafka,
        queue: Queue::Kafka { settings },
        records: filled,
        metrics_per_record,
        partitions,
    })
}

/// Reads every segment file of every partition in order on this thread and decodes each
/// record's payload with the codec. The frames' own checksums are not verified (the codec's
/// checksum covers the payload); nothing is written.
fn bare_read_file(data_dir: &Path, partitions: u32) -> anyhow::Result<ReadFigures> {
    let started = Instant::now();
    let mut records = 0u64;
    let mut metrics = 0u64;
    for partition in 0..partitions {
        let dir = data_dir.join("partitions").join(format!("{partition:04}"));
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        // Segments are named by their zero-padded base offset: name order is log order.
        segments.retain(|path| path.extension().is_some_and(|ext| ext == "log"));
        segments.sort();
        for segment in segments {
            let bytes = std::fs::read(&segment)
                .with_context(|| format!("reading {}", segment.display()))?;
            let mut at = 0;
            while at + FILE_FRAME_HEADER_BYTES <= bytes.len() {
                let mut length = [0u8; 4];
                length.copy_from_slice(&bytes[at..at + 4]);
                let length = u32::from_le_bytes(length) as usize;
                let payload_at = at + FILE_FRAME_HEADER_BYTES;
                let payload = bytes
                    .get(payload_at..payload_at + length)
                    .with_context(|| {
                        format!("{} has a truncated frame at byte {at}", segment.display())
                    })?;
                at = payload_at + length;
                // An empty frame is a segment's seal, not a record.
                if length == 0 {
                    continue;
                }
                let batch = codec::decode_ref(payload).with_context(|| {
                    format!("decoding a record of {} at byte {at}", segment.display())
                })?;
                records += 1;
                metrics += batch.len() as u64;
            }
        }
    }
    Ok(ReadFigures {
        records,
        metrics,
        seconds: started.elapsed().as_secs_f64(),
        startup_seconds: 0.0,
    })
}

/// Kafka's ConsumerPerformance over the whole topic from the beginning (a fresh group).
async fn bare_read_kafka(
    settings: &KafkaSettings,
    records: u64,
    metrics_per_record: u32,
) -> anyhow::Result<(ReadFigures, String)> {
    let args: Vec<String> = vec![
        "consumer-perf".into(),
        "--bootstrap-server".into(),
        settings.brokers.clone(),
        "--topic".into(),
        settings.topic.clone(),
        "--num-records".into(),
        records.to_string(),
        "--group".into(),
        metricstream_tests::kafka::unique_name("bench-consumer-perf"),
        "--timeout".into(),
        "30000".into(),
    ];
    let output = run_kafka_tool(&args).await?;
    let mut figures = parse_consumer_perf(&output)?;
    // ConsumerPerformance counts records only; each holds the backlog's metrics per record.
    figures.metrics = figures.records * u64::from(metrics_per_record);
    Ok((figures, kafka_tool_command(&args)))
}

/// Parses ConsumerPerformance's last line (after the `start.time, end.time, ...` header):
/// records from `data.consumed.in.nMsg`, time from `fetch.time.ms`, startup from
/// `rebalance.time.ms`.
fn parse_consumer_perf(output: &str) -> anyhow::Result<ReadFigures> {
    let mut lines = output
        .lines()
        .skip_while(|line| !line.starts_with("start.time"));
    let header: Vec<&str> = lines
        .next()
        .with_context(|| format!("no header in ConsumerPerformance's output:\n{output}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let values: Vec<&str> = lines
        .filter(|line| !line.trim().is_empty())
        .last()
        .with_context(|| format!("no figures in ConsumerPerformance's output:\n{output}"))?
        .split(',')
        .map(str::trim)
        .collect();
    let field = |name: &str| -> anyhow::Result<f64> {
        let at = header
            .iter()
            .position(|column| *column == name)
            .with_context(|| format!("no column {name} in {header:?}"))?;
        values
            .get(at)
            .and_then(|value| value.parse().ok())
            .with_context(|| format!("no number for {name} in {values:?}"))
    };
    Ok(ReadFigures {
        records: field("data.consumed.in.nMsg")? as u64,
        metrics: 0,
        seconds: field("fetch.time.ms")? / 1000.0,
        startup_seconds: field("rebalance.time.ms")? / 1000.0,
    })
}

/// The backend crate's consumer in this process, on a fresh group: poll, decode, commit.
async fn queue_read(backlog: &Backlog, timeout: Duration) -> anyhow::Result<ReadFigures> {
    let group = metricstream_tests::kafka::unique_name("bench-queue-read");
    let started = Instant::now();
    let mut consumer: Box<dyn QueueConsumer> = match &backlog.queue {
        Queue::File { data_dir } => Box::new(
            FileConsumer::open(
                data_dir.clone(),
                backlog.partitions,
                &group,
                FileQueueMetrics::default(),
            )
            .await
            .context("opening a file consumer")?,
        ),
        Queue::Kafka { settings } => Box::new(
            KafkaConsumer::open(settings, &group, KafkaMetrics::default())
                .context("opening a Kafka consumer")?,
        ),
    };
    let expected = backlog.records.len() as u64;
    let mut first_records: Option<Instant> = None;
    let mut records = 0u64;
    let mut metrics = 0u64;
    while records < expected {
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the queue read got {records} of {expected} records within {timeout:?}"
        );
        let poll = consumer
            .poll(
                PollLimits::records(QUEUE_READ_BATCH),
                Duration::from_millis(200),
            )
            .await
            .context("polling")?;
        if poll.records.is_empty() {
            continue;
        }
        first_records.get_or_insert_with(Instant::now);
        let mut next: BTreeMap<Partition, Offset> = BTreeMap::new();
        for record in &poll.records {
            let batch = codec::decode_ref(&record.payload).with_context(|| {
                format!(
                    "decoding partition {} offset {}",
                    record.partition, record.offset
                )
            })?;
            metrics += batch.len() as u64;
            let entry = next.entry(record.partition).or_default();
            *entry = (*entry).max(record.offset.next());
        }
        records += poll.records.len() as u64;
        let positions: Vec<(Partition, Offset)> = next.into_iter().collect();
        consumer.commit(&positions).await.context("committing")?;
    }
    let done = Instant::now();
    consumer.close().await;
    let first_records = first_records.unwrap_or(started);
    Ok(ReadFigures {
        records,
        metrics,
        seconds: done.duration_since(first_records).as_secs_f64(),
        startup_seconds: first_records.duration_since(started).as_secs_f64(),
    })
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
        &sink_dir,
        &log_path,
        max_batch_records,
    )?;
    let mut first_records: Option<Instant> = None;
    let progress = loop {
        process.check_running()?;
        let progress = process.progress().await;
        if let Some(progress) = progress {
            if first_records.is_none() && progress.records > 0.0 {
                first_records = Some(Instant::now());
            }
            if progress.metrics_written >= expected {
                break progress;
            }
        }
        anyhow::ensure!(
            spawned.elapsed() < timeout,
            "the consumer wrote {} of {expected} metrics within {timeout:?}; log: {}",
            progress.map_or(0.0, |p| p.metrics_written),
            log_path.display()
        );
        tokio::time::sleep(PROGRESS_INTERVAL).await;
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_perf_output_is_parsed_by_column_name() {
        let output = "start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec\n\
                      2026-11-26 21:05:00:695, 2026-11-26 21:05:03:149, 11.4441, 4.6634, 200000, 81499.5925, 1046, 1408, 8.1279, 142045.4545\n";
        let figures = parse_consumer_perf(output).expect("parses");
        assert_eq!(figures.records, 200_000);
        assert!((figures.seconds - 1.408).abs() < 1e-9);
        assert!((figures.startup_seconds - 1.046).abs() < 1e-9);
    }

    #[test]
    fn consumer_perf_output_without_figures_is_an_error() {
        assert!(parse_consumer_perf("WARN something went wrong\n").is_err());
    }

    #[tokio::test]
    async fn the_bare_read_decodes_what_the_file_producer_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let backlog = fill_file(&data_dir, 3, 30, 5).await.expect("fills");
        assert_eq!(backlog.records.len(), 30);
        // Round-robin: ten records per partition, offsets 0..10 each.
        for partition in 0..3 {
            let mut offsets: Vec<u64> = backlog
                .records
                .iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, o)| *o)
                .collect();
            offsets.sort_unstable();
            assert_eq!(offsets, (0..10).collect::<Vec<_>>());
        }
        let figures = bare_read_file(&data_dir, 3).expect("reads");
        assert_eq!((figures.records, figures.metrics), (30, 150));
        let queue = queue_read(&backlog, Duration::from_secs(30))
            .await
            .expect("reads");
        assert_eq!((queue.records, queue.metrics), (30, 150));
    }
}
