//! After an ingest run: the real consumer drains the run's queue into a fresh sink, and the sink
//! is counted by position against what the ingest acknowledged.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::sink::SinkTail;
use super::{STOP_TIMEOUT, Suite, get_text, prometheus_sample, service_env};
use crate::process::{Process, binary, free_loopback_addr};
use crate::results::peak_rss_mib;

/// The consumer group that drains a run's queue.
const CONSUMER_GROUP: &str = "bench-drain";
/// How often the sink is polled while the consumer drains.
const SINK_POLL: Duration = Duration::from_millis(100);
/// A drained sink must stay unchanged this long before it is counted (late duplicates).
const SINK_QUIET: Duration = Duration::from_millis(500);
/// A drain that makes no progress this long is over: what is missing then is lost.
const DRAIN_STALL: Duration = Duration::from_secs(20);

impl Suite {
    /// Starts the consumer on the queue of `queue_args` (the ingest's, which has stopped), waits
    /// until the sink holds the `acknowledged` metrics and settles (see [`Self::wait_for_drain`]),
    /// and counts it: `lost`, `duplicates`, `unacknowledged_in_sink`, `sink_lines`,
    /// `acknowledged_metrics`, `drain_secs`, `consumer_rss_peak_mib`, and where the consumer
    /// exports it `replay_duplicates_dropped` (second copies of spilled records it dropped).
    ///
    /// `refused` is how many requests of the run were not answered 2xx (or not at all): with
    /// none, every request sent was acknowledged, so a stored metric beyond the acknowledged
    /// ones can only be a second copy and counts as a duplicate; otherwise it may be a refused
    /// request that was stored after all (a 503 after a Kafka ack timeout) and counts as
    /// `unacknowledged_in_sink`, not a loss.
    pub(super) async fn drain_and_count(
        &self,
        dir: &Path,
        mut queue_args: Vec<String>,
        acknowledged: u64,
        refused: u64,
    ) -> anyhow::Result<BTreeMap<String, f64>> {
        let sink_dir = dir.join("sink");
        let consumer_admin = free_loopback_addr()?;
        queue_args.extend([
            "--sink-dir".to_owned(),
            sink_dir.display().to_string(),
            "--group".to_owned(),
            CONSUMER_GROUP.to_owned(),
            "--admin-listen".to_owned(),
            consumer_admin.to_string(),
        ]);
        let drain_started = Instant::now();
        let mut consumer = Process::spawn(
            "consumer",
            &binary(&self.bin_dir, "metricstream-consumer")?,
            &queue_args,
            &service_env(),
            &dir.join("logs").join("consumer.log"),
        )?;
        consumer
            .wait_ready(&self.http, &format!("http://{consumer_admin}/readyz"))
            .await?;
        let mut tail = SinkTail::new(&sink_dir);
        self.wait_for_drain(&mut tail, acknowledged, &consumer)
            .await?;
        let drain_secs = drain_started.elapsed().as_secs_f64();
        let mut figures = BTreeMap::from([
            ("drain_secs".to_owned(), drain_secs),
            (
                "consumer_rss_peak_mib".to_owned(),
                peak_rss_mib(consumer.pid()?)?,
            ),
        ]);
        let exposition = get_text(&self.http, &format!("http://{consumer_admin}/metrics")).await?;
        if let Some(dropped) = prometheus_sample(
            &exposition,
            "metricstream_kafka_replay_duplicates_dropped_total",
        ) {
            figures.insert("replay_duplicates_dropped".to_owned(), dropped);
        }
        consumer.terminate(STOP_TIMEOUT).await?;
        let count = tail.finish()?;

        let surplus = count.distinct_positions.saturating_sub(acknowledged);
        let (second_copies, unacknowledged) = if refused == 0 {
            (surplus, 0)
        } else {
            (0, surplus)
        };
        figures.insert("acknowledged_metrics".to_owned(), acknowledged as f64);
        figures.insert("sink_lines".to_owned(), count.lines as f64);
        figures.insert(
            "lost".to_owned(),
            acknowledged.saturating_sub(count.distinct_positions) as f64,
        );
        figures.insert(
            "duplicates".to_owned(),
            (count.duplicates() + second_copies) as f64,
        );
        figures.insert("unacknowledged_in_sink".to_owned(), unacknowledged as f64);
        Ok(figures)
    }

    /// Polls the sink until it holds at least `acknowledged` lines and has stayed unchanged for
    /// [`SINK_QUIET`]; gives up (what is missing then counts as lost) after [`DRAIN_STALL`]
    /// without progress or `--drain-timeout-secs` in all.
    async fn wait_for_drain(
        &self,
        tail: &mut SinkTail,
        acknowledged: u64,
        consumer: &Process,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let timeout = Duration::from_secs(self.args.drain_timeout_secs);
        let mut lines = 0;
        let mut changed = Instant::now();
        loop {
            let now_lines = tail.poll()?;
            if now_lines != lines {
                lines = now_lines;
                changed = Instant::now();
            }
            if lines >= acknowledged && changed.elapsed() >= SINK_QUIET {
                return Ok(());
            }
            if changed.elapsed() >= DRAIN_STALL || started.elapsed() >= timeout {
                eprintln!(
                    "http: the consumer stopped short: {lines} of {acknowledged} acknowledged \
                     metrics in the sink after {:.0} s; its log: {}",
                    started.elapsed().as_secs_f64(),
                    consumer.log_path().display()
                );
                return Ok(());
            }
            tokio::time::sleep(SINK_POLL).await;
        }
    }
}
