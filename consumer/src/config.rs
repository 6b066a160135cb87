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

    /// Where metrics go: `file` (JSON Lines files in --sink-dir) or `remote-write` (a
    /// time-series store at --sink-url, over Prometheus remote write 1.0).
    #[arg(long, env = "METRICSTREAM_SINK", value_enum, default_value_t = SinkKind::File)]
    pub sink: SinkKind,

    /// The remote-write endpoint of the store (`--sink remote-write` only), e.g.
    /// http://victoriametrics:8428/api/v1/write or https://vm.example:8428/api/v1/write.
    #[arg(
        long,
        env = "METRICSTREAM_SINK_URL",
        required_if_eq("sink", "remote-write")
    )]
    pub sink_url: Option<String>,

    /// A file holding a bearer token sent with every remote-write request
    /// (`Authorization: Bearer <token>`), surrounding whitespace trimmed. Re-read when the file
    /// changes (a rotated Kubernetes Secret is used without a restart); if it then cannot be
    /// read, the last token is kept. Not with basic auth.
    #[arg(long, env = "METRICSTREAM_SINK_BEARER_TOKEN_FILE",
          conflicts_with_all = ["sink_basic_auth_username", "sink_basic_auth_password_file"])]
    pub sink_bearer_token_file: Option<PathBuf>,

    /// The user name of HTTP basic auth to the store (no ':'); needs
    /// --sink-basic-auth-password-file.
    #[arg(
        long,
        env = "METRICSTREAM_SINK_BASIC_AUTH_USERNAME",
        requires = "sink_basic_auth_password_file"
    )]
    pub sink_basic_auth_username: Option<String>,

    /// A file holding the password of HTTP basic auth to the store, surrounding whitespace
    /// trimmed; re-read when it changes, like --sink-bearer-token-file.
    #[arg(
        long,
        env = "METRICSTREAM_SINK_BASIC_AUTH_PASSWORD_FILE",
        requires = "sink_basic_auth_username"
    )]
    pub sink_basic_auth_password_file: Option<PathBuf>,

    /// A PEM file of CA certificates for an https:// --sink-url: the store's certificate must
    /// chain to one of these, and the system's CA certificates are not used (as with
    /// Prometheus' `tls_config.ca_file`). Without it, the system's CA certificates. Read at
    /// startup.
    #[arg(long, env = "METRICSTREAM_SINK_CA_FILE")]
    pub sink_ca_file: Option<PathBuf>,

    /// A PEM certificate (chain) presented to an https:// store that asks for client
    /// certificates (mutual TLS); needs --sink-client-key-file. Read at startup.
    #[arg(
        long,
        env = "METRICSTREAM_SINK_CLIENT_CERT_FILE",
        requires = "sink_client_key_file"
    )]
    pub sink_client_cert_file: Option<PathBuf>,

    /// The PEM private key of --sink-client-cert-file (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "METRICSTREAM_SINK_CLIENT_KEY_FILE",
        requires = "sink_client_cert_file"
    )]
    pub sink_client_key_file: Option<PathBuf>,

    /// Most samples in one remote-write request; a batch is sent as several requests if needed.
    #[arg(long, env = "METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sink_max_samples_per_request: u32,

    /// The remote-write message: `1.0` (`prometheus.WriteRequest`, taken by every receiver) or
    /// `2.0` (`io.prometheus.write.v2.Request`, with each series' metadata type; Prometheus 3
    /// takes it, a receiver that does not answers 415).
    #[arg(long, env = "METRICSTREAM_SINK_PROTOCOL", value_enum, default_value_t = SinkProtocol::V1)]
    pub sink_protocol: SinkProtocol,

    /// Remote-write requests in flight at once. A batch's partitions are split into this many
    /// shards, each converting and sending its requests one after another, so a partition's
    /// samples (and so each client's) reach the store in order.
    #[arg(long, env = "METRICSTREAM_SINK_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub sink_concurrency: u32,

    /// Deadline of one remote-write request (connect, send, answer), in milliseconds.
    #[arg(long, env = "METRICSTREAM_SINK_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub sink_timeout_ms: u64,

    /// Most metrics per second this process writes to the sink (either sink); 0, the default,
    /// for no limit. Protects a store from a backlog sent at full speed after an outage. A
    /// second's worth may go at once; beyond that a batch waits (it is never split or dropped,
    /// so one larger than a second's worth waits for the rest of its cost). A shutdown ends the
    /// wait, leaving the batch uncommitted for re-delivery.
    #[arg(
        long,
        env = "METRICSTREAM_SINK_RATE_LIMIT",
        default_value_t = 0,
        value_name = "METRICS_PER_SECOND"
    )]
    pub sink_rate_limit: u32,

    /// Directory of the JSON Lines sink: one partition-NNNN.jsonl file per partition, and
    /// quarantine/ for the raw bytes of records that fail to decode. Created if missing. The
    /// remote-write sink keeps quarantine/ and dead-letters/ here.
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

    pub fn sink_timeout(&self) -> Duration {
        Duration::from_millis(self.sink_timeout_ms)
    }
}

/// The sinks `--sink` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkKind {
    /// JSON Lines files, one per partition, in --sink-dir.
    File,
    /// A time-series store over Prometheus remote write (--sink-protocol).
    RemoteWrite,
}

/// The remote-write messages `--sink-protocol` chooses from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkProtocol {
    /// `prometheus.WriteRequest`.
    #[value(name = "1.0")]
    V1,
    /// `io.prometheus.write.v2.Request`.
    #[value(name = "2.0")]
    V2,
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
        assert_eq!(config.sink, SinkKind::File);
        assert_eq!(config.sink_url, None);
        assert_eq!(config.sink_max_samples_per_request, 5000);
        assert_eq!(config.sink_timeout_ms, 30_000);
        assert_eq!(config.sink_rate_limit, 0, "no limit by default");
    }

    #[test]
    fn the_remote_write_sink_needs_a_url() {
        assert!(
            Config::try_parse_from(["metricstream-consumer", "--sink", "remote-write"]).is_err()
        );
        let config = Config::try_parse_from([
            "metricstream-consumer",
            "--sink",
            "remote-write",
            "--sink-url",
            "http://vm:8428/api/v1/write",
            "--sink-bearer-token-file",
            "/run/token",
            "--sink-max-samples-per-request",
            "100",
        ])
        .expect("flags parse");
        assert_eq!(config.sink, SinkKind::RemoteWrite);
        assert_eq!(
            config.sink_url.as_deref(),
            Some("http://vm:8428/api/v1/write")
        );
        assert_eq!(
            config.sink_bearer_token_file,
            Some(PathBuf::from("/run/token"))
        );
        assert_eq!(config.sink_max_samples_per_request, 100);
        assert!(
            Config::try_parse_from(["metricstream-consumer", "--sink", "kafka"]).is_err(),
            "unknown sinks are refused"
        );
    }

    #[test]
    fn basic_auth_and_a_bearer_token_exclude_each_other_and_pairs_go_together() {
        let parse = |extra: &[&str]| {
            let mut argv = vec![
                "metricstream-consumer",
                "--sink",
                "remote-write",
                "--sink-url",
                "https://vm:8428/api/v1/write",
            ];
            argv.extend_from_slice(extra);
            Config::try_parse_from(argv)
        };
        let config = parse(&[
            "--sink-basic-auth-username",
            "writer",
            "--sink-basic-auth-password-file",
            "/run/password",
            "--sink-ca-file",
            "/run/ca.pem",
            "--sink-client-cert-file",
            "/run/tls.crt",
            "--sink-client-key-file",
            "/run/tls.key",
        ])
        .expect("flags parse");
        assert_eq!(config.sink_basic_auth_username.as_deref(), Some("writer"));
        assert_eq!(
            config.sink_basic_auth_password_file,
            Some(PathBuf::from("/run/password"))
        );
        assert_eq!(config.sink_ca_file, Some(PathBuf::from("/run/ca.pem")));
        assert_eq!(
            config.sink_client_cert_file,
            Some(PathBuf::from("/run/tls.crt"))
        );
        assert_eq!(
            config.sink_client_key_file,
            Some(PathBuf::from("/run/tls.key"))
        );
        for refused in [
            &[
                "--sink-bearer-token-file",
                "/run/token",
                "--sink-basic-auth-username",
                "writer",
                "--sink-basic-auth-password-file",
                "/run/password",
            ][..],
            &["--sink-basic-auth-username", "writer"],
            &["--sink-basic-auth-password-file", "/run/password"],
            &["--sink-client-cert-file", "/run/tls.crt"],
            &["--sink-client-key-file", "/run/tls.key"],
        ] {
            let error = parse(refused).expect_err("refused");
            assert!(
                matches!(
                    error.kind(),
                    clap::error::ErrorKind::ArgumentConflict
                        | clap::error::ErrorKind::MissingRequiredArgument
                ),
                "{refused:?}: {error}"
            );
        }
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
            "--sink-rate-limit",
            "500",
        ])
        .expect("flags parse");
        assert_eq!(config.group, "audit");
        assert_eq!(config.sink_dir, PathBuf::from("/var/sink"));
        assert_eq!(config.max_batch_records, 10);
        assert_eq!(config.max_batch_bytes, 65536);
        assert_eq!(config.poll_wait_ms, 50);
        assert_eq!(config.shutdown_timeout, 5);
        assert_eq!(config.common.partitions, 8);
        assert_eq!(config.sink_rate_limit, 500);
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
