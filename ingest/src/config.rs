//! The ingest service's settings: every one a flag with an environment-variable fallback,
//! parsed once at startup into [`Args`] and handed down from there.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use metricstream_backend::file::{Durability, FileQueueConfig, Retention};
#[cfg(feature = "kafka")]
use metricstream_backend::kafka::ProducerTuning;
use metricstream_service::{CommonArgs, KafkaArgs};

use crate::request::Limits;

/// MetricStream's HTTP ingest service: accepts MetricStream's JSON (`POST /metrics`), OTLP/HTTP
/// metrics (`POST /v1/metrics`) and InfluxDB line protocol (`POST /api/v2/write`, `POST /write`),
/// and acknowledges a request only once the queue has made it durable.
#[derive(Clone, Debug, Parser)]
#[command(name = "metricstream-ingest", version, about, long_about = None)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address of the ingest API (POST /metrics, /v1/metrics, /api/v2/write, /write).
    #[arg(long, env = "METRICSTREAM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// File of `client_id=token` lines (blank lines and `#` comments ignored). When set, requests
    /// must send `Authorization: Bearer <token>`; when absent (open mode) the whole
    /// Authorization value is the client id. Reloaded when it changes (--secret-reload-interval);
    /// a file that cannot be used keeps the tokens loaded before.
    #[arg(long, env = "METRICSTREAM_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    #[command(flatten)]
    pub edge: EdgeArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub rate_limit: RateLimitArgs,

    #[command(flatten)]
    pub client_limits: ClientLimitArgs,

    #[command(flatten)]
    pub queue: FileQueueArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub kafka_producer: KafkaProducerArgs,

    #[command(flatten)]
    pub spill: SpillArgs,

    /// Seconds to keep serving after SIGTERM/SIGINT while /readyz answers 503, so that load
    /// balancers (Service endpoints, kube-proxy) stop sending new connections here before the
    /// listener closes; responses meanwhile carry `Connection: close` so kept-alive clients
    /// reconnect elsewhere. A second signal ends the delay early; 0 drains at once. The 5 s
    /// default covers endpoint propagation in a typical cluster (suffixes s, m, h, d accepted).
    #[arg(long, env = "METRICSTREAM_SHUTDOWN_DELAY", default_value = "5",
          value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Seconds to drain in-flight requests and close the queue once --shutdown-delay is over, in
    /// total; the last tenth is kept for closing the queue (suffixes s, m, h, d accepted).
    #[arg(long, env = "METRICSTREAM_SHUTDOWN_TIMEOUT", default_value = "30",
          value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// How the API listener protects itself from its clients: TLS, timeouts, the concurrency cap.
#[derive(Clone, Debug, clap::Args)]
pub struct EdgeArgs {
    /// PEM certificate chain (server certificate first) for TLS on the ingest API. Needs
    /// --tls-key-file; without both the API speaks plain HTTP. Reloaded when the file changes.
    #[arg(long, env = "METRICSTREAM_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert-file. Reloaded when it changes.
    #[arg(long, env = "METRICSTREAM_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// Seconds between checks of the tokens file and the TLS files for new content (a changed
    /// Secret volume); a new valid file replaces the old one, an invalid one is logged and
    /// ignored.
    #[arg(long, env = "METRICSTREAM_SECRET_RELOAD_INTERVAL", default_value = "10",
          value_parser = parse_positive_duration)]
    pub secret_reload_interval: Duration,

    /// Seconds a client has to send a request's headers: from the connection's start (after the
    /// TLS handshake, which has as long again) or from the first byte of the next request on a
    /// kept-alive connection. The connection is closed when they run out.
    #[arg(long, env = "METRICSTREAM_HEADER_READ_TIMEOUT", default_value = "10",
          value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,

    /// Seconds a client has to send a request's whole body once its headers are in; a slower
    /// body is answered 408 and the connection closed.
    #[arg(long, env = "METRICSTREAM_BODY_READ_TIMEOUT", default_value = "30",
          value_parser = parse_positive_duration)]
    pub body_read_timeout: Duration,

    /// Seconds a kept-alive connection may wait for its next request before it is closed.
    #[arg(long, env = "METRICSTREAM_IDLE_TIMEOUT", default_value = "60",
          value_parser = parse_positive_duration)]
    pub idle_timeout: Duration,

    /// Requests handled at once; one more is answered 503 with Retry-After at once (counted in
    /// metricstream_ingest_requests_shed_total) instead of waiting in a queue.
    #[arg(long, env = "METRICSTREAM_MAX_CONCURRENT_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_requests: u32,
}

/// Tuning of the Kafka producer (with `--backend kafka`).
#[derive(Clone, Debug, clap::Args)]
pub struct KafkaProducerArgs {
    /// How long a request waits for Kafka's acknowledgement before it is answered 503. The
    /// record may still land later (a duplicate of the client's retry, never a loss).
    #[arg(long, env = "METRICSTREAM_KAFKA_ACK_TIMEOUT", default_value = "10",
          value_parser = parse_duration)]
    pub kafka_ack_timeout: Duration,

    /// librdkafka message.timeout.ms: how long the producer keeps retrying a record at all.
    #[arg(long, env = "METRICSTREAM_KAFKA_MESSAGE_TIMEOUT", default_value = "30",
          value_parser = parse_duration)]
    pub kafka_message_timeout: Duration,

    /// Memory for records not yet acknowledged, in KiB; when full, requests get 503.
    #[arg(long, env = "METRICSTREAM_KAFKA_BUFFER_KBYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1024..=2_097_151))]
    pub kafka_buffer_kbytes: u32,

    /// librdkafka linger.ms: how long records wait to be batched.
    #[arg(long, env = "METRICSTREAM_KAFKA_LINGER_MS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=900_000))]
    pub kafka_linger_ms: u64,

    /// Compression of record batches.
    #[arg(long, env = "METRICSTREAM_KAFKA_COMPRESSION", default_value = "lz4",
          value_parser = ["none", "gzip", "snappy", "lz4"])]
    pub kafka_compression: String,
}

// The flags exist in every build (one command line); the tuning they make needs librdkafka.
#[cfg(feature = "kafka")]
impl KafkaProducerArgs {
    pub fn tuning(&self) -> ProducerTuning {
        ProducerTuning {
            ack_timeout: self.kafka_ack_timeout,
            message_timeout: self.kafka_message_timeout,
            max_buffer_kbytes: self.kafka_buffer_kbytes,
            linger: Duration::from_millis(self.kafka_linger_ms),
            compression: self.kafka_compression.clone(),
            ..ProducerTuning::default()
        }
    }
}

/// The spill (with `--backend kafka`): where accepted requests wait while Kafka cannot take them.
#[derive(Clone, Debug, clap::Args)]
pub struct SpillArgs {
    /// Directory of the spill. While Kafka is unreachable, stops acknowledging, or keeps its
    /// buffer full, accepted requests are made durable here and answered 202 ("spilled"), then
    /// forwarded to Kafka in order once it is back, exactly once. Use a volume that outlives the
    /// process: the next process on it forwards what is left. Unset: no spill, and requests get
    /// 503 while Kafka is down. Kafka backend only.
    #[arg(long, env = "METRICSTREAM_SPILL_DIR")]
    pub spill_dir: Option<PathBuf>,

    /// The most bytes of spilled requests not yet forwarded to Kafka; past it requests get 503 +
    /// Retry-After. Keep it below the volume's size: forwarded segments are deleted as the spill
    /// is written to, so the disk may hold up to a segment (16 MiB) per partition more.
    #[arg(long, env = "METRICSTREAM_SPILL_MAX_BYTES", default_value_t = 1 << 30,
          value_parser = clap::value_parser!(u64).range(1_048_576..))]
    pub spill_max_bytes: u64,
}

/// What a single request may carry.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Largest request body in bytes, checked both as received and after gzip decompression.
    #[arg(long, env = "METRICSTREAM_MAX_BODY_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_body_bytes: u64,

    /// Most metrics accepted in one request.
    #[arg(long, env = "METRICSTREAM_MAX_METRICS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_metrics: u64,

    /// Longest metric name in bytes.
    #[arg(long, env = "METRICSTREAM_MAX_NAME_BYTES", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_name_bytes: u64,

    /// Most tags on one metric.
    #[arg(long, env = "METRICSTREAM_MAX_TAGS", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=65_536))]
    pub max_tags: u64,

    /// Longest tag key, and longest tag value, in bytes.
    #[arg(long, env = "METRICSTREAM_MAX_TAG_BYTES", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_tag_bytes: u64,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        // The ranges above keep every value well inside usize on the 64-bit targets we build.
        let to_usize = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        Limits {
            max_body_bytes: to_usize(self.max_body_bytes),
            max_metrics: to_usize(self.max_metrics),
            max_name_bytes: to_usize(self.max_name_bytes),
            max_tags: to_usize(self.max_tags),
            max_tag_bytes: to_usize(self.max_tag_bytes),
        }
    }
}

/// Per-client request rate limiting, off unless a rate is given.
#[derive(Clone, Debug, clap::Args)]
pub struct RateLimitArgs {
    /// Requests per second each client may make on average, across all ingest replicas (see
    /// --rate-limit-replicas); 0 turns rate limiting off.
    #[arg(long, env = "METRICSTREAM_RATE_LIMIT_PER_SECOND", default_value_t = 0)]
    pub rate_limit_per_second: u32,

    /// Requests a client may make at once above its steady rate (bucket size), across all
    /// replicas; defaults to the per-second rate. Ignored while rate limiting is off.
    #[arg(long, env = "METRICSTREAM_RATE_LIMIT_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Ingest replicas sharing the rate limits (requests, and samples: --max-samples-per-second):
    /// each enforces its fair share, the per-second rate and the burst divided by this number
    /// and rounded up (never 0).
    #[arg(long, env = "METRICSTREAM_RATE_LIMIT_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_replicas: u32,
}

/// Per-client caps on samples and series (`crate::client_limits`), off unless given.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientLimitArgs {
    /// Samples per second each client may store on average, across all ingest replicas (shared
    /// like the request rate, see --rate-limit-replicas); 0 turns the cap off. A request that
    /// does not fit is refused whole with 429 and Retry-After.
    #[arg(long, env = "METRICSTREAM_MAX_SAMPLES_PER_SECOND", default_value_t = 0)]
    pub max_samples_per_second: u32,

    /// Samples a client may store at once above its steady rate, across all replicas; defaults
    /// to the per-second figure. A request larger than this passes when the client's budget is
    /// full, and the client then waits until it has paid for it.
    #[arg(long, env = "METRICSTREAM_MAX_SAMPLES_BURST",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_samples_burst: Option<u32>,

    /// Distinct series (name and tags) each client may have written within
    /// --active-series-window; 0 turns the cap off. Samples of new series beyond it are refused
    /// and the rest of their request stored (a partial write). Each replica enforces the whole
    /// figure: every replica sees nearly all of a client's series.
    #[arg(long, env = "METRICSTREAM_MAX_ACTIVE_SERIES", default_value_t = 0)]
    pub max_active_series: u32,

    /// How long a series counts as active after its last sample (suffixes s, m, h, d accepted).
    #[arg(long, env = "METRICSTREAM_ACTIVE_SERIES_WINDOW", default_value = "1h",
          value_parser = parse_positive_duration)]
    pub active_series_window: Duration,
}

impl ClientLimitArgs {
    /// The cluster-wide sample rate of each client; `None` when the cap is off.
    pub fn sample_rate(&self) -> Option<RateLimit> {
        RateLimit::from_flags(self.max_samples_per_second, self.max_samples_burst)
    }

    /// The series cap of each client; `None` when it is off.
    pub fn max_active_series(&self) -> Option<std::num::NonZeroUsize> {
        std::num::NonZeroUsize::new(usize::try_from(self.max_active_series).unwrap_or(usize::MAX))
    }
}

/// The rate a client may sustain and the burst it may spend at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A rate flag (0 is off) and its optional burst flag (the rate when absent).
    fn from_flags(per_second: u32, burst: Option<u32>) -> Option<Self> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Some(Self { per_second, burst })
    }

    /// One replica's share of a limit that `replicas` replicas enforce together: both figures
    /// divided and rounded up, so a limit never becomes 0 (and the cluster-wide figure is never
    /// undercut, only exceeded by less than one request per replica).
    pub fn replica_share(self, replicas: NonZeroU32) -> Self {
        let share = |figure: NonZeroU32| {
            NonZeroU32::new(figure.get().div_ceil(replicas.get())).unwrap_or(NonZeroU32::MIN)
        };
        Self {
            per_second: share(self.per_second),
            burst: share(self.burst),
        }
    }
}

impl RateLimitArgs {
    /// The cluster-wide limit of each client; `None` when rate limiting is off.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        RateLimit::from_flags(self.rate_limit_per_second, self.rate_limit_burst)
    }

    /// What this replica enforces: its share of [`Self::rate_limit`].
    pub fn replica_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit()
            .map(|limit| limit.replica_share(self.replicas()))
    }

    /// The ingest replicas sharing the limits.
    pub fn replicas(&self) -> NonZeroU32 {
        NonZeroU32::new(self.rate_limit_replicas).unwrap_or(NonZeroU32::MIN)
    }
}

/// Settings of the file queue this process appends to. The defaults mirror
/// [`FileQueueConfig::new`]; a test keeps them in step.
#[derive(Clone, Debug, clap::Args)]
pub struct FileQueueArgs {
    /// When an append is acknowledged: always (one fdatasync per request), batch (group commit:
    /// concurrent requests share one fdatasync) or none (page cache only; survives a process
    /// crash, not a machine crash).
    #[arg(long, env = "METRICSTREAM_DURABILITY", default_value_t = Durability::Batch)]
    pub durability: Durability,

    /// Size in bytes at which a partition's segment file is sealed and a new one started.
    #[arg(long, env = "METRICSTREAM_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub segment_bytes: u64,

    /// Appends that may wait per partition; further ones are refused with 503 until it drains.
    #[arg(long, env = "METRICSTREAM_QUEUE_DEPTH", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub queue_depth: u64,

    /// Seconds a segment every consumer group has read past is kept before deletion (suffixes
    /// s, m, h, d accepted).
    #[arg(long, env = "METRICSTREAM_RETENTION_AGE", default_value = "3600",
          value_parser = parse_duration)]
    pub retention_age: Duration,

    /// Bytes per partition above which fully consumed segments are deleted before they reach
    /// --retention-age. Unset: age alone decides.
    #[arg(long, env = "METRICSTREAM_RETENTION_BYTES")]
    pub retention_bytes: Option<u64>,

    /// Bytes per partition above which the oldest segments are deleted even if unread (counted
    /// in metricstream_queue_dropped_unconsumed_records_total). Unset: never drop unread data;
    /// a full disk then answers 503.
    #[arg(long, env = "METRICSTREAM_HARD_CAP_BYTES")]
    pub hard_cap_bytes: Option<u64>,
}

impl FileQueueArgs {
    pub fn file_queue_config(&self, root: PathBuf, partitions: u32) -> FileQueueConfig {
        let defaults = FileQueueConfig::new(root, partitions);
        FileQueueConfig {
            durability: self.durability,
            segment_bytes: self.segment_bytes,
            queue_depth: usize::try_from(self.queue_depth).unwrap_or(usize::MAX),
            retention: Retention {
                consumed_age: self.retention_age,
                consumed_bytes: self.retention_bytes,
                hard_cap_bytes: self.hard_cap_bytes,
            },
            ..defaults
        }
    }
}

/// [`parse_duration`], refusing 0 (a timeout or interval of nothing).
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be at least 1 second".to_owned());
    }
    Ok(duration)
}

/// Parses a duration given as whole seconds (`90`), or with one unit suffix: `90s`, `15m`,
/// `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a duration: expected seconds such as 30, or 30s, 5m, 2h, 1d")
    })?;
    let unit_seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?}: expected s, m, h or d"
            ));
        }
    };
    amount
        .checked_mul(unit_seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long a duration"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["metricstream-ingest"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("arguments parse")
    }

    #[test]
    fn command_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn every_flag_has_help_text() {
        for arg in Args::command().get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "version") {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "--{} has no help line",
                arg.get_id()
            );
        }
    }

    #[test]
    fn queue_flag_defaults_match_the_file_queue_defaults() {
        let args = parse(&[]);
        let ours = args.queue.file_queue_config(PathBuf::from("d"), 4);
        let theirs = FileQueueConfig::new("d", 4);
        assert_eq!(ours.durability, theirs.durability);
        assert_eq!(ours.segment_bytes, theirs.segment_bytes);
        assert_eq!(ours.queue_depth, theirs.queue_depth);
        assert_eq!(ours.max_record_bytes, theirs.max_record_bytes);
        assert_eq!(ours.max_batch_bytes, theirs.max_batch_bytes);
        assert_eq!(ours.retention.consumed_age, theirs.retention.consumed_age);
        assert_eq!(
            ours.retention.consumed_bytes,
            theirs.retention.consumed_bytes
        );
        assert_eq!(
            ours.retention.hard_cap_bytes,
            theirs.retention.hard_cap_bytes
        );
    }

    #[test]
    fn defaults_follow_the_contract() {
        let args = parse(&[]);
        assert_eq!(args.listen, "0.0.0.0:8080".parse().expect("address"));
        assert_eq!(args.tokens_file, None);
        let limits = args.limits.limits();
        assert_eq!(limits.max_body_bytes, 1024 * 1024);
        assert_eq!(limits.max_metrics, 10_000);
        assert_eq!(limits.max_name_bytes, 256);
        assert_eq!(limits.max_tags, 64);
        assert_eq!(limits.max_tag_bytes, 256);
        assert_eq!(args.rate_limit.rate_limit(), None);
        assert_eq!(args.shutdown_delay, Duration::from_secs(5));
        assert_eq!(args.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(args.common.partitions, 4);
    }

    #[test]
    fn queue_flags_reach_the_file_queue_config() {
        let args = parse(&[
            "--durability",
            "always",
            "--segment-bytes",
            "1048576",
            "--queue-depth",
            "10",
            "--retention-age",
            "2h",
            "--retention-bytes",
            "5000000",
            "--hard-cap-bytes",
            "9000000",
        ]);
        let config = args.queue.file_queue_config(PathBuf::from("q"), 8);
        assert_eq!(config.root, PathBuf::from("q"));
        assert_eq!(config.partitions, 8);
        assert_eq!(config.durability, Durability::Always);
        assert_eq!(config.segment_bytes, 1_048_576);
        assert_eq!(config.queue_depth, 10);
        assert_eq!(config.retention.consumed_age, Duration::from_secs(7200));
        assert_eq!(config.retention.consumed_bytes, Some(5_000_000));
        assert_eq!(config.retention.hard_cap_bytes, Some(9_000_000));
    }

    #[test]
    fn unknown_durability_is_rejected() {
        let argv = ["metricstream-ingest", "--durability", "sometimes"];
        assert!(Args::try_parse_from(argv).is_err());
    }

    #[test]
    fn burst_defaults_to_the_rate() {
        let args = parse(&["--rate-limit-per-second", "5"]);
        let limit = args.rate_limit.rate_limit().expect("rate limiting is on");
        assert_eq!(limit.per_second.get(), 5);
        assert_eq!(limit.burst.get(), 5);

        let args = parse(&["--rate-limit-per-second", "5", "--rate-limit-burst", "20"]);
        let limit = args.rate_limit.rate_limit().expect("rate limiting is on");
        assert_eq!(limit.burst.get(), 20);
    }

    #[test]
    fn replicas_enforce_their_share_rounded_up() {
        let limit = |per_second: u32, burst: u32| RateLimit {
            per_second: NonZeroU32::new(per_second).expect("positive"),
            burst: NonZeroU32::new(burst).expect("positive"),
        };
        let replicas = |n: u32| NonZeroU32::new(n).expect("positive");
        assert_eq!(limit(100, 200).replica_share(replicas(1)), limit(100, 200));
        assert_eq!(limit(100, 200).replica_share(replicas(2)), limit(50, 100));
        assert_eq!(limit(100, 200).replica_share(replicas(3)), limit(34, 67));
        // Never 0: a single request per second over ten replicas is one per replica.
        assert_eq!(limit(1, 1).replica_share(replicas(10)), limit(1, 1));
        assert_eq!(
            limit(u32::MAX, u32::MAX).replica_share(replicas(u32::MAX)),
            limit(1, 1)
        );

        let args = parse(&[
            "--rate-limit-per-second",
            "10",
            "--rate-limit-burst",
            "5",
            "--rate-limit-replicas",
            "4",
        ]);
        assert_eq!(args.rate_limit.rate_limit(), Some(limit(10, 5)));
        assert_eq!(args.rate_limit.replica_rate_limit(), Some(limit(3, 2)));
        assert!(
            Args::try_parse_from(["metricstream-ingest", "--rate-limit-replicas", "0"]).is_err()
        );
    }

    #[test]
    fn edge_defaults_and_tls_needs_both_files() {
        let args = parse(&[]);
        assert_eq!(args.edge.tls_cert_file, None);
        assert_eq!(args.edge.secret_reload_interval, Duration::from_secs(10));
        assert_eq!(args.edge.header_read_timeout, Duration::from_secs(10));
        assert_eq!(args.edge.body_read_timeout, Duration::from_secs(30));
        assert_eq!(args.edge.idle_timeout, Duration::from_secs(60));
        assert_eq!(args.edge.max_concurrent_requests, 1024);
        assert_eq!(args.rate_limit.rate_limit_replicas, 1);

        let only_cert = ["metricstream-ingest", "--tls-cert-file", "c.pem"];
        assert!(Args::try_parse_from(only_cert).is_err());
        let only_key = ["metricstream-ingest", "--tls-key-file", "k.pem"];
        assert!(Args::try_parse_from(only_key).is_err());
        let both = parse(&["--tls-cert-file", "c.pem", "--tls-key-file", "k.pem"]);
        assert_eq!(both.edge.tls_cert_file, Some(PathBuf::from("c.pem")));
        assert!(Args::try_parse_from(["metricstream-ingest", "--idle-timeout", "0"]).is_err());
    }

    #[test]
    fn zero_rate_turns_rate_limiting_off() {
        let args = parse(&["--rate-limit-per-second", "0", "--rate-limit-burst", "3"]);
        assert_eq!(args.rate_limit.rate_limit(), None);
    }

    #[test]
    fn durations_accept_seconds_and_unit_suffixes() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
