//! The real release `metricstream-consumer` as a process: started with only the settings chosen
//! here (as `tests/src/process.rs` does), watched through its admin `/metrics`, stopped with
//! SIGTERM.
//!
//! The tests' `ServiceSpec` finds binaries beside a test executable in `target/<profile>/deps`;
//! the bench executable lives in `target/release` itself, so this starts the process directly.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use metricstream_tests::process::free_loopback_addr;

use crate::backend::tools::service_binary;
use crate::process::Process;

/// How long the consumer may take to exit after SIGTERM (it finishes its batch first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the consumer's `/metrics` is read during a drain.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(20);

/// Where the consumer reads from.
pub enum Source<'a> {
    File { data_dir: &'a Path },
    Kafka { bootstrap: &'a str, topic: &'a str },
}

/// Where the consumer writes.
pub enum Sink<'a> {
    /// JSON Lines files in `dir` (`--sink file`).
    File { dir: &'a Path },
    /// A store's remote-write endpoint `url` (`--sink remote-write`) in requests of at most
    /// `max_samples_per_request` samples; `dir` keeps the quarantine and the dead letters.
    RemoteWrite {
        dir: &'a Path,
        url: &'a str,
        max_samples_per_request: u32,
        /// Requests in flight (`--sink-concurrency`).
        concurrency: u32,
    },
}

pub struct ConsumerProcess {
    process: Process,
    pid: u32,
    admin: SocketAddr,
    client: reqwest::Client,
    /// The command line, for the results.
    pub command: String,
}

/// The consumer's counters as its `/metrics` shows them.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// `metricstream_consumer_records_total`: records received from the queue.
    pub records: f64,
    /// `metricstream_consumer_metrics_written_total`: metrics written to the sink and synced.
    pub metrics_written: f64,
    /// `metricstream_consumer_duplicates_skipped_total`.
    pub duplicates_skipped: f64,
    /// `metricstream_consumer_sink_write_seconds_sum` / `_count`: time in the sink (writing the
    /// JSON Lines and fdatasync) and the batches it took.
    pub sink_write_seconds: f64,
    pub sink_batches: f64,
    /// `metricstream_consumer_dead_lettered_samples_total` (the remote-write sink).
    pub dead_lettered: f64,
    /// `metricstream_consumer_remote_write_samples_sent_total`: samples the store acknowledged,
    /// a resent request's again.
    pub samples_sent: f64,
}

impl ConsumerProcess {
    /// Starts the consumer of `group` on `source` with `partitions`, writing to `sink`, its
    /// output in `log_path`. `max_batch_records` sets `--max-batch-records` when given.
    pub fn spawn(
        source: &Source<'_>,
        partitions: u32,
        group: &str,
        sink: &Sink<'_>,
        log_path: &Path,
        max_batch_records: Option<u32>,
    ) -> anyhow::Result<Self> {
        let program = service_binary("metricstream-consumer")?;
        let admin = free_loopback_addr();
        let mut env: Vec<(&str, OsString)> = vec![
            ("METRICSTREAM_PARTITIONS", partitions.to_string().into()),
            ("METRICSTREAM_GROUP", group.into()),
            ("METRICSTREAM_ADMIN_LISTEN", admin.to_string().into()),
            ("METRICSTREAM_LOG_FORMAT", "text".into()),
            ("RUST_LOG", "info".into()),
            ("NO_COLOR", "1".into()),
        ];
        match source {
            Source::File { data_dir } => {
                env.push(("METRICSTREAM_BACKEND", "file".into()));
                env.push(("METRICSTREAM_DATA_DIR", (*data_dir).into()));
            }
            Source::Kafka { bootstrap, topic } => {
                env.push(("METRICSTREAM_BACKEND", "kafka".into()));
                env.push(("METRICSTREAM_KAFKA_BROKERS", (*bootstrap).into()));
                env.push(("METRICSTREAM_TOPIC", (*topic).into()));
            }
        }
        match sink {
            Sink::File { dir } => env.push(("METRICSTREAM_SINK_DIR", (*dir).into())),
            Sink::RemoteWrite {
                dir,
                url,
                max_samples_per_request,
                concurrency,
            } => env.extend([
                (
                    "METRICSTREAM_SINK_CONCURRENCY",
                    concurrency.to_string().into(),
                ),
                ("METRICSTREAM_SINK_DIR", (*dir).into()),
                ("METRICSTREAM_SINK", "remote-write".into()),
                ("METRICSTREAM_SINK_URL", (*url).into()),
                (
                    "METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST",
                    max_samples_per_request.to_string().into(),
                ),
            ]),
        }
        let mut args = Vec::new();
        if let Some(records) = max_batch_records {
            args.extend(["--max-batch-records".to_owned(), records.to_string()]);
        }
        let process = Process::spawn("the consumer", &program, &args, &env, log_path)?;
        let pid = process.pid()?;
        let shown_env: Vec<String> = env
            .iter()
            .filter(|(key, _)| *key != "NO_COLOR")
            .map(|(key, value)| format!("{key}={}", value.to_string_lossy()))
            .collect();
        Ok(Self {
            process,
            pid,
            admin,
            client: metricstream_tests::http_client_builder()
                .timeout(Duration::from_secs(5))
                .build()
                .context("building an HTTP client")?,
            command: format!(
                "{} metricstream-consumer {}",
                shown_env.join(" "),
                args.join(" ")
            )
            .trim_end()
            .to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the exit of a consumer signalled elsewhere, see [`Process::wait_exit`].
    pub async fn wait_exit(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.process.wait_exit().await
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.process
            .check_running()
            .with_context(|| log_tail(self.process.log_path()))
    }

    /// The counters, or `None` while the admin listener does not answer yet.
    pub async fn progress(&self) -> Option<Progress> {
        let url = format!("http://{}/metrics", self.admin);
        let text = self.client.get(&url).send().await.ok()?.text().await.ok()?;
        Some(parse_progress(&text))
    }

    /// Reads the counters every [`PROGRESS_INTERVAL`] until `metrics_written` reaches
    /// `expected`; returns them and when the first records were polled (`None` if that was
    /// never seen). Fails if the process exits, or `timeout` after `spawned`.
    pub async fn wait_written(
        &mut self,
        expected: f64,
        spawned: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Progress, Option<Instant>)> {
        let mut first_records: Option<Instant> = None;
        loop {
            self.check_running()?;
            let progress = self.progress().await;
            if let Some(progress) = progress {
                if first_records.is_none() && progress.records > 0.0 {
                    first_records = Some(Instant::now());
                }
                if progress.metrics_written >= expected {
                    return Ok((progress, first_records));
                }
            }
            anyhow::ensure!(
                spawned.elapsed() < timeout,
                "the consumer wrote {} of {expected} metrics within {timeout:?}; log: {}",
                progress.map_or(0.0, |p| p.metrics_written),
                self.process.log_path().display()
            );
            tokio::time::sleep(PROGRESS_INTERVAL).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit (SIGKILL after [`STOP_TIMEOUT`]).
    pub async fn terminate(self) -> anyhow::Result<()> {
        let log_path = self.process.log_path().to_path_buf();
        self.process
            .terminate(STOP_TIMEOUT)
            .await
            .with_context(|| log_tail(&log_path))?;
        Ok(())
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_else(|error| format!("(cannot read: {error})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn parse_progress(text: &str) -> Progress {
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or(0.0)
    };
    Progress {
        records: value("metricstream_consumer_records_total"),
        metrics_written: value("metricstream_consumer_metrics_written_total"),
        duplicates_skipped: value("metricstream_consumer_duplicates_skipped_total"),
        sink_write_seconds: value("metricstream_consumer_sink_write_seconds_sum"),
        sink_batches: value("metricstream_consumer_sink_write_seconds_count"),
        dead_lettered: value("metricstream_consumer_dead_lettered_samples_total"),
        samples_sent: value("metricstream_consumer_remote_write_samples_sent_total"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_openmetrics_text() {
        let text = "# HELP metricstream_consumer_records Records received from the queue.\n\
                    # TYPE metricstream_consumer_records counter\n\
                    metricstream_consumer_records_total 2048\n\
                    metricstream_consumer_metrics_written_total 204800\n\
                    metricstream_consumer_sink_write_seconds_sum 1.5\n\
                    metricstream_consumer_sink_write_seconds_count 3\n\
                    metricstream_consumer_sink_write_seconds_bucket{le=\"0.1\"} 1\n\
                    # EOF\n";
        let progress = parse_progress(text);
        assert_eq!(progress.records, 2048.0);
        assert_eq!(progress.metrics_written, 204_800.0);
        assert_eq!(progress.duplicates_skipped, 0.0);
        assert_eq!(progress.sink_write_seconds, 1.5);
        assert_eq!(progress.sink_batches, 3.0);
    }
}
