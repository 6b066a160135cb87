//! Backend ceilings: Kafka's ProducerPerformance on the same broker, and a bare append +
//! fdatasync loop on the same disk.
//!
//! Both move records of the size the ingest stores for a request of 1 and of 100 metrics
//! ([`record`]), so the HTTP suite's ingest figures can be read as ratios of them:
//!
//! - `fdatasync`: `records_per_sync` file-queue frames written with one `pwrite` at the end of a
//!   segment file and made durable with one `fdatasync`, in a loop, for 1, 4, 16, 64 and 256
//!   records per sync (the ingest's group commit writes one batch per sync; the HTTP suite
//!   records how many records its syncs covered). Segments roll at the queue's 64 MiB. Nothing
//!   else of the queue (locks, catch-up, the writer task, the HTTP layer) is in the loop.
//! - `kafka-producer-perf`: `hack/kafka.sh tool producer-perf` with the ingest producer's
//!   settings (`acks=all`, idempotence, `linger.ms=5`, lz4) and `--throughput -1`, on a fresh
//!   4-partition topic, for about `--kafka-seconds` (the record count comes from the warm rate
//!   of a few seconds' calibration run; the first tenth of the run is its warm-up, excluded). Its payloads are ProducerPerformance's random letters of the records'
//!   size, which lz4 compresses less than the ingest's records.

pub mod record;
pub mod tools;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use metricstream_backend::codec;
use metricstream_backend::kafka::{KafkaSettings, admin};
use serde_json::json;

use crate::results::{Machine, Measurement, SuiteResults};
use record::{FILE_FRAME_HEADER_BYTES, client_name, representative_batch};
use tools::{kafka_bootstrap, kafka_tool_command, quantile, run_kafka_tool, this_command_line};

/// The file queue's default segment size (`--segment-bytes`): the loop rolls files like it.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Partitions of the ProducerPerformance topic: the services' default.
const KAFKA_PARTITIONS: u32 = 4;
/// The ingest producer's defaults (docs/configuration.md, `--kafka-linger-ms`, `--kafka-compression`).
const INGEST_PRODUCER_PROPERTIES: [&str; 4] = [
    "acks=all",
    "enable.idempotence=true",
    "linger.ms=5",
    "compression.type=lz4",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ceiling {
    /// The append + fdatasync loop.
    Fdatasync,
    /// Kafka's ProducerPerformance (needs KAFKA_BOOTSTRAP).
    Kafka,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Directory of the fdatasync loop's files; put it on the disk of the file queue's data
    /// (default: a scratch directory under the cargo target directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds measured per fdatasync load point (after a short warm-up).
    #[arg(long, default_value_t = 3.0)]
    pub fsync_seconds: f64,
    /// Records written per fdatasync, one load point each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    pub records_per_sync: Vec<usize>,
    /// Metrics per record (per request), one record size each.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    pub metrics_per_record: Vec<u32>,
    /// Seconds each ProducerPerformance run aims for (its record count comes from a short
    /// calibration run).
    #[arg(long, default_value_t = 10.0)]
    pub kafka_seconds: f64,
    /// Records of each ProducerPerformance run, instead of calibrating for --kafka-seconds.
    #[arg(long)]
    pub kafka_records: Option<u64>,
    /// The ceilings to measure.
    #[arg(long, value_delimiter = ',', default_value = "fdatasync,kafka")]
    pub only: Vec<Ceiling>,
    /// A quick check: at most 1 s per fdatasync point and about 3 s per Kafka run.
    #[arg(long)]
    pub quick: bool,
}

pub async fn run(args: BackendArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut measurements = Vec::new();
    let fsync_seconds = if args.quick {
        args.fsync_seconds.min(1.0)
    } else {
        args.fsync_seconds
    };
    let kafka_seconds = if args.quick {
        args.kafka_seconds.min(3.0)
    } else {
        args.kafka_seconds
    };
    anyhow::ensure!(
        fsync_seconds > 0.0 && kafka_seconds > 0.0,
        "durations must be positive"
    );

    if args.only.contains(&Ceiling::Fdatasync) {
        let scratch = tools::scratch_dir(args.dir.as_deref(), "bench-fdatasync-")?;
        eprintln!(
            "backend: fdatasync loop in {} ({fsync_seconds} s per point)",
            scratch.path().display()
        );
        for &metrics in &args.metrics_per_record {
            let payload = codec::encode(&representative_batch(&client_name(0), metrics, 0));
            for &records_per_sync in &args.records_per_sync {
                anyhow::ensure!(records_per_sync > 0, "--records-per-sync must be positive");
                let dir = scratch.path().to_path_buf();
                let payload = payload.clone();
                let duration = Duration::from_secs_f64(fsync_seconds);
                let figures = tokio::task::spawn_blocking(move || {
                    fdatasync_loop(&dir, &payload, records_per_sync, duration)
                })
                .await
                .context("the fdatasync loop panicked")??;
                let measurement = figures.measurement(metrics, records_per_sync);
                eprintln!("backend: {}", summary(&measurement));
                measurements.push(measurement);
            }
        }
    }

    if args.only.contains(&Ceiling::Kafka) {
        match kafka_bootstrap() {
            None => tools::warn_kafka_skipped("the kafka-producer-perf ceiling"),
            Some(bootstrap) => {
                for &metrics in &args.metrics_per_record {
                    let measurement =
                        producer_perf(&bootstrap, metrics, kafka_seconds, args.kafka_records)
                            .await
                            .with_context(|| {
                                format!("ProducerPerformance with {metrics} metrics per record")
                            })?;
                    eprintln!("backend: {}", summary(&measurement));
                    measurements.push(measurement);
                }
            }
        }
    }

    Ok(SuiteResults {
        suite: "backend".to_owned(),
        started,
        machine: Machine::this(),
        measurements,
    })
}

/// What one fdatasync load point measured.
struct FsyncFigures {
    record_bytes: usize,
    syncs: u64,
    records: u64,
    bytes: u64,
    elapsed: Duration,
    /// One batch's write + fdatasync, in milliseconds, sorted.
    batch_ms: Vec<f64>,
}

impl FsyncFigures {
    fn measurement(&self, metrics_per_record: u32, records_per_sync: usize) -> Measurement {
        let seconds = self.elapsed.as_secs_f64();
        let records_per_sec = self.records as f64 / seconds;
        Measurement {
            suite: "backend".to_owned(),
            target: "fdatasync".to_owned(),
            params: BTreeMap::from([
                ("record_bytes".to_owned(), json!(self.record_bytes)),
                ("records_per_sync".to_owned(), json!(records_per_sync)),
                ("metrics_per_record".to_owned(), json!(metrics_per_record)),
            ]),
            figures: BTreeMap::from([
                ("records_per_sec".to_owned(), records_per_sec),
                (
                    "metrics_per_sec".to_owned(),
                    records_per_sec * f64::from(metrics_per_record),
                ),
                ("syncs_per_sec".to_owned(), self.syncs as f64 / seconds),
                (
                    "mib_per_sec".to_owned(),
                    self.bytes as f64 / seconds / (1024.0 * 1024.0),
                ),
                ("p50_ms".to_owned(), quantile(&self.batch_ms, 0.5)),
                ("p99_ms".to_owned(), quantile(&self.batch_ms, 0.99)),
                ("max_ms".to_owned(), quantile(&self.batch_ms, 1.0)),
                ("seconds".to_owned(), seconds),
            ]),
            command: format!(
                "{} (loop: one pwrite of {records_per_sync} x {}-byte frames at the end of a \
                 segment file, then fdatasync; segments rolled at 64 MiB)",
                this_command_line(),
                self.record_bytes
            ),
        }
    }
}

/// Appends batches of `records_per_sync` file-queue frames carrying `payload` to segment files
/// in `dir`, each batch one `pwrite` and one `fdatasync`, for `duration` after a warm-up.
fn fdatasync_loop(
    dir: &Path,
    payload: &[u8],
    records_per_sync: usize,
    duration: Duration,
) -> anyhow::Result<FsyncFigures> {
    let record_bytes = FILE_FRAME_HEADER_BYTES + payload.len();
    let mut batch = Vec::with_capacity(record_bytes * records_per_sync);
    for offset in 0..records_per_sync as u64 {
        // The frame layout of the file queue; the checksum's value does not matter to the disk.
        batch.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        batch.extend_from_slice(&[0; 4]);
        batch.extend_from_slice(&offset.to_le_bytes());
        batch.extend_from_slice(payload);
    }
    let name_stem = format!("fdatasync-{record_bytes}b-{records_per_sync}r");
    let mut segment = Segment::create(dir, name_stem, 0)?;
    let warm_up = (duration / 10).min(Duration::from_millis(500));
    let warm_up_started = Instant::now();
    while warm_up_started.elapsed() < warm_up {
        segment = segment.append_durably(&batch)?.0;
    }
    let mut batch_ms = Vec::new();
    let started = Instant::now();
    while started.elapsed() < duration {
        let (next, took) = segment.append_durably(&batch)?;
        segment = next;
        batch_ms.push(took.as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    segment.remove()?;
    batch_ms.sort_by(f64::total_cmp);
    let syncs = batch_ms.len() as u64;
    Ok(FsyncFigures {
        record_bytes,
        syncs,
        records: syncs * records_per_sync as u64,
        bytes: syncs * batch.len() as u64,
        elapsed,
        batch_ms,
    })
}

/// The segment file the loop appends to.
struct Segment {
    dir: PathBuf,
    name_stem: String,
    number: u64,
    path: PathBuf,
    file: File,
    end: u64,
}

impl Segment {
    /// Creates segment `number` of a load point's files in `dir`.
    fn create(dir: &Path, name_stem: String, number: u64) -> anyhow::Result<Self> {
        let path = dir.join(format!("{name_stem}-{number:06}.log"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        // Like the queue: a new segment's directory entry is made durable once.
        File::open(dir)
            .and_then(|handle| handle.sync_all())
            .with_context(|| format!("syncing the directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            name_stem,
            number,
            path,
            file,
            end: 0,
        })
    }

    /// Writes `batch` at the end and fdatasyncs it; rolls to a new segment (deleting this one,
    /// so the loop's disk use stays bounded) once this one reaches the segment size. Returns
    /// the segment to continue with and how long the write and sync took.
    fn append_durably(mut self, batch: &[u8]) -> anyhow::Result<(Self, Duration)> {
        let started = Instant::now();
        self.file
            .write_all_at(batch, self.end)
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.file
            .sync_data()
            .with_context(|| format!("fdatasync of {}", self.path.display()))?;
        let took = started.elapsed();
        self.end += batch.len() as u64;
        if self.end < SEGMENT_BYTES {
            return Ok((self, took));
        }
        let next = Self::create(&self.dir, self.name_stem.clone(), self.number + 1)?;
        self.remove()?;
        Ok((next, took))
    }

    fn remove(self) -> anyhow::Result<()> {
        fs::remove_file(&self.path).with_context(|| format!("removing {}", self.path.display()))
    }
}

/// Runs ProducerPerformance for records of `metrics` metrics on a fresh topic, deleted after.
async fn producer_perf(
    bootstrap: &str,
    metrics: u32,
    seconds: f64,
    fixed_records: Option<u64>,
) -> anyhow::Result<Measurement> {
    let record_bytes = record::payload_bytes(metrics);
    let settings = KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: metricstream_tests::kafka::unique_name(&format!("bench-producer-perf-{metrics}")),
        partitions: KAFKA_PARTITIONS,
        client_id: "metricstream-bench".to_owned(),
        security: Default::default(),
        extra: Vec::new(),
    };
    admin::ensure_topic(&settings, 1, &[])
        .await
        .with_context(|| format!("creating topic {}", settings.topic))?;
    let outcome = producer_perf_on(&settings, record_bytes, metrics, seconds, fixed_records).await;
    if let Err(error) = admin::delete_topic(&settings).await {
        eprintln!(
            "backend: could not delete topic {}: {error}",
            settings.topic
        );
    }
    outcome
}

async fn producer_perf_on(
    settings: &KafkaSettings,
    record_bytes: usize,
    metrics: u32,
    seconds: f64,
    fixed_records: Option<u64>,
) -> anyhow::Result<Measurement> {
    let records = match fixed_records {
        Some(records) => records,
        None => {
            let rate = calibrate(settings, record_bytes).await?;
            let records = (rate * seconds) as u64;
            eprintln!(
                "backend: ProducerPerformance calibration: {rate:.0} records/s of {record_bytes} \
                 bytes; measuring {records} records"
            );
            records.max(1_000)
        }
    };
    // The first tenth warms the JVM and the connections up; the steady-state line excludes it.
    let args = producer_perf_args(settings, record_bytes, records, records / 10);
    let output = run_kafka_tool(&args).await?;
    let summary = parse_producer_perf(&output)?;
    Ok(Measurement {
        suite: "backend".to_owned(),
        target: "kafka-producer-perf".to_owned(),
        params: BTreeMap::from([
            ("record_bytes".to_owned(), json!(record_bytes)),
            ("metrics_per_record".to_owned(), json!(metrics)),
        ]),
        figures: BTreeMap::from([
            ("records_per_sec".to_owned(), summary.records_per_sec),
            (
                "metrics_per_sec".to_owned(),
                summary.records_per_sec * f64::from(metrics),
            ),
            ("mib_per_sec".to_owned(), summary.mib_per_sec),
            ("avg_ms".to_owned(), summary.avg_ms),
            ("max_ms".to_owned(), summary.max_ms),
            ("p50_ms".to_owned(), summary.p50_ms),
            ("p95_ms".to_owned(), summary.p95_ms),
            ("p99_ms".to_owned(), summary.p99_ms),
            ("p999_ms".to_owned(), summary.p999_ms),
            ("records".to_owned(), summary.records as f64),
        ]),
        command: kafka_tool_command(&args),
    })
}

/// One-second progress lines a calibration reads; only the last two count (the JVM warms up
/// for several seconds: earlier lines show half the steady rate).
const CALIBRATION_INTERVALS: usize = 5;

/// The rate ProducerPerformance reaches once warm: an unbounded run read one-second progress
/// line by line, stopped (killed) after [`CALIBRATION_INTERVALS`] lines.
async fn calibrate(settings: &KafkaSettings, record_bytes: usize) -> anyhow::Result<f64> {
    let mut args = producer_perf_args(settings, record_bytes, 1_000_000_000, 0);
    args.extend(["--reporting-interval".into(), "1000".into()]);
    let mut child = tokio::process::Command::new("bash")
        .arg(tools::kafka_script())
        .arg("tool")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", kafka_tool_command(&args)))?;
    let stdout = child
        .stdout
        .take()
        .context("ProducerPerformance's stdout")?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let mut rates = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        while rates.len() < CALIBRATION_INTERVALS {
            let Some(line) = lines.next_line().await? else {
                anyhow::bail!("ProducerPerformance ended during the calibration");
            };
            if let Some(rate) = interval_rate(&line) {
                rates.push(rate);
            }
        }
        Ok(())
    })
    .await;
    // The run is unbounded by design: stopping it is the end of the calibration.
    let _ = child.kill().await;
    read.context("no calibration figures from ProducerPerformance within 60 s")??;
    let warm = &rates[rates.len() - 2..];
    Ok(warm.iter().sum::<f64>() / warm.len() as f64)
}

/// The rate of a progress line (`1980 records sent, 1948.8 records/sec (9.71 MB/sec), ...`).
fn interval_rate(line: &str) -> Option<f64> {
    let (sent, rest) = line.split_once(" records sent, ")?;
    sent.trim().parse::<u64>().ok()?;
    rest.split_once(" records/sec")?.0.trim().parse().ok()
}

fn producer_perf_args(
    settings: &KafkaSettings,
    record_bytes: usize,
    records: u64,
    warmup_records: u64,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "producer-perf".into(),
        "--bootstrap-server".into(),
        settings.brokers.clone(),
        "--topic".into(),
        settings.topic.clone(),
        "--num-records".into(),
        records.to_string(),
        "--record-size".into(),
        record_bytes.to_string(),
        "--throughput".into(),
        "-1".into(),
    ];
    if warmup_records > 0 {
        args.extend(["--warmup-records".into(), warmup_records.to_string()]);
    }
    args.push("--command-property".into());
    args.extend(INGEST_PRODUCER_PROPERTIES.iter().map(|p| p.to_string()));
    args
}

/// ProducerPerformance's summary: the steady-state line when there is one, else the total.
#[derive(Debug, PartialEq)]
struct ProducerPerfSummary {
    records: u64,
    records_per_sec: f64,
    mib_per_sec: f64,
    avg_ms: f64,
    max_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

/// Parses lines like `200000 records sent, 39596.1 records/sec (2.27 MB/sec), 515.14 ms avg
/// latency, 981.00 ms max latency, 472 ms 50th, 939 ms 95th, 969 ms 99th, 980 ms 99.9th.`
/// (its "MB" are MiB: bytes / 1024 / 1024).
fn parse_producer_perf(output: &str) -> anyhow::Result<ProducerPerfSummary> {
    let line = output
        .lines()
        .rfind(|line| line.contains("steady state records sent"))
        .or_else(|| {
            output
                .lines()
                .rfind(|line| line.contains(" records sent, ") && line.contains("99.9th"))
        })
        .with_context(|| format!("no summary line in ProducerPerformance's output:\n{output}"))?;
    let number_before = |suffix: &str| -> anyhow::Result<f64> {
        let at = line
            .find(suffix)
            .with_context(|| format!("no {suffix:?} in {line:?}"))?;
        let before = line[..at].trim_end();
        let start = before
            .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map_or(0, |i| i + 1);
        before[start..]
            .parse()
            .with_context(|| format!("no number before {suffix:?} in {line:?}"))
    };
    Ok(ProducerPerfSummary {
        records: number_before(" records sent")
            .or_else(|_| number_before(" steady state records sent"))? as u64,
        records_per_sec: number_before(" records/sec")?,
        mib_per_sec: number_before(" MB/sec")?,
        avg_ms: number_before(" ms avg latency")?,
        max_ms: number_before(" ms max latency")?,
        p50_ms: number_before(" ms 50th")?,
        p95_ms: number_before(" ms 95th")?,
        p99_ms: number_before(" ms 99th")?,
        p999_ms: number_before(" ms 99.9th")?,
    })
}

/// One line for the progress log.
pub fn summary(measurement: &Measurement) -> String {
    let params: Vec<String> = measurement
        .params
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let figures: Vec<String> = measurement
        .figures
        .iter()
        .map(|(key, value)| format!("{key}={value:.2}"))
        .collect();
    format!(
        "{} [{}] {}",
        measurement.target,
        params.join(" "),
        figures.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Warmup first 20000 records. Steady state results will print after the complete test summary.\n\
        200000 records sent, 39596.119580 records/sec (2.27 MB/sec), 515.14 ms avg latency, 981.00 ms max latency, 472 ms 50th, 939 ms 95th, 969 ms 99th, 980 ms 99.9th.\n\
        180000 steady state records sent, 45351.473923 records/sec (2.60 MB/sec), 533.18 ms avg latency, 981.00 ms max latency, 690 ms 50th, 943 ms 95th, 969 ms 99th, 980 ms 99.9th.\n";

    #[test]
    fn the_steady_state_line_wins() {
        let summary = parse_producer_perf(OUTPUT).expect("parses");
        assert_eq!(
            summary,
            ProducerPerfSummary {
                records: 180_000,
                records_per_sec: 45_351.473923,
                mib_per_sec: 2.60,
                avg_ms: 533.18,
                max_ms: 981.0,
                p50_ms: 690.0,
                p95_ms: 943.0,
                p99_ms: 969.0,
                p999_ms: 980.0,
            }
        );
    }

    #[test]
    fn without_warm_up_the_total_line_is_read() {
        let total = OUTPUT.lines().nth(1).expect("the total line");
        let summary = parse_producer_perf(total).expect("parses");
        assert_eq!(summary.records, 200_000);
        assert_eq!(summary.p50_ms, 472.0);
    }

    #[test]
    fn progress_lines_give_their_rate() {
        let line = "1980 records sent, 1948.8 records/sec (9.71 MB/sec), 974.9 ms avg latency, \
                    1313.0 ms max latency.";
        assert_eq!(interval_rate(line), Some(1948.8));
        assert_eq!(
            interval_rate(OUTPUT.lines().nth(2).unwrap_or_default()),
            None
        );
        assert_eq!(interval_rate("Warmup first 20000 records."), None);
    }

    #[test]
    fn output_without_a_summary_is_an_error() {
        assert!(parse_producer_perf("1000 records sent, 200.0 records/sec").is_err());
    }

    #[test]
    fn the_loop_writes_frames_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let figures = fdatasync_loop(dir.path(), b"payload", 4, Duration::from_millis(50))
            .expect("loop runs");
        assert_eq!(figures.record_bytes, FILE_FRAME_HEADER_BYTES + 7);
        assert!(figures.syncs > 0);
        assert_eq!(figures.records, figures.syncs * 4);
        assert_eq!(figures.batch_ms.len() as u64, figures.syncs);
        // The segment is removed afterwards.
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
