//! The consumer's settings: flags with environment-variable fallbacks, parsed once at startup.

use std::path::PathBuf;
use std::time::Duration;

use metricstream_backend::{PollLimits, check_group_name};
use metricstream_service::{CommonArgs, KafkaArgs};

/// Reads every partition of a MetricStream queue as one member of a consumer group and writes
/// each metric to JSON Lines files, committing offsets only once the files are durable.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "metricstream-consumer", version)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group to join. Members of one group share the partitions; each group reads
    /// every record once. Letters, digits, '.', '_' and '-' only.
    #[arg(long, env = "METRICSTREAM_GROUP", default_value = "storage-writer",
          value_parser = parse_group)]
    pub group: String,

    /// Directory of the JSON Lines sink: one partition-NNNN.jsonl file per partition, and
    /// quarantine/ for the raw bytes of records that fail to decode. Created if missing.
    #[arg(long, env = "METRICSTREAM_SINK_DIR", default_value = "sink")]
    pub sink_dir: PathBuf,

    /// Most records taken from the queue per poll; each poll's records are written and synced
    /// together, then committed.
    #[arg(long, env = "METRICSTREAM_MAX_BATCH_RECORDS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_batch_records: u32,

    /// Most payload bytes taken from the queue per poll (at least one record is always taken).
    /// With the record limit, this bounds the consumer's memory: a batch is held encoded, and
    /// its JSON lines are appended in 1 MiB chunks per partition, then synced once.
    #[arg(long, env = "METRICSTREAM_MAX_BATCH_BYTES", default_value_t = PollLimits::DEFAULT_MAX_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024 * 1024))]
    pub max_batch_bytes: u64,

    /// Longest a poll waits for records when the queue is idle, in milliseconds. Also bounds how
    /// long a shutdown waits for an idle poll to return.
    #[arg(long, env = "METRICSTREAM_POLL_WAIT_MS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_wait_ms: u64,

    /// On SIGTERM or SIGINT, seconds allowed to finish the current batch, commit it and release
    /// the partitions before exiting with an error anyway (uncommitted records are re-delivered).
    #[arg(long, env = "METRICSTREAM_SHUTDOWN_TIMEOUT", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout: u64,
}

impl Config {
    pub fn poll_wait(&self) -> Duration {
        Duration::from_millis(self.poll_wait_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout)
    }
}

/// A group name becomes a directory name in the file queue (and a group id in Kafka), so it is
/// kept to characters that are safe in both.
fn parse_group(value: &str) -> Result<String, String> {
    check_group_name(value)?;
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn command_definition_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::try_parse_from(["metricstream-consumer"]).expect("defaults parse");
        assert_eq!(config.group, "storage-writer");
        assert_eq!(config.sink_dir, PathBuf::from("sink"));
        assert_eq!(config.max_batch_records, 2048);
        assert_eq!(config.max_batch_bytes, 8 * 1024 * 1024);
        assert_eq!(config.poll_wait(), Duration::from_millis(200));
        assert_eq!(config.shutdown_timeout(), Duration::from_secs(30));
        assert_eq!(config.common.partitions, 4);
    }

    #[test]
    fn flags_override_defaults() {
        let config = Config::try_parse_from([
            "metricstream-consumer",
            "--group",
            "audit",
            "--sink-dir",
            "/var/sink",
            "--max-batch-records",
            "10",
            "--max-batch-bytes",
            "65536",
            "--poll-wait-ms",
            "50",
            "--shutdown-timeout",
            "5",
            "--partitions",
            "8",
        ])
        .expect("flags parse");
        assert_eq!(config.group, "audit");
        assert_eq!(config.sink_dir, PathBuf::from("/var/sink"));
        assert_eq!(config.max_batch_records, 10);
        assert_eq!(config.max_batch_bytes, 65536);
        assert_eq!(config.poll_wait_ms, 50);
        assert_eq!(config.shutdown_timeout, 5);
        assert_eq!(config.common.partitions, 8);
    }

    #[test]
    fn group_names_that_are_unsafe_as_paths_are_rejected() {
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(parse_group(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["storage-writer", "audit.v2", "A_1"] {
            assert_eq!(parse_group(good).as_deref(), Ok(good));
        }
    }

    #[test]
    fn zero_sized_batches_and_waits_are_rejected() {
        assert!(
            Config::try_parse_from(["metricstream-consumer", "--max-batch-records", "0"]).is_err()
        );
        assert!(Config::try_parse_from(["metricstream-consumer", "--poll-wait-ms", "0"]).is_err());
        assert!(
            Config::try_parse_from(["metricstream-consumer", "--max-batch-bytes", "1023"]).is_err()
        );
    }
}
