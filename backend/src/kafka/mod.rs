//! The Kafka backend: the same [`QueueProducer`](crate::QueueProducer) and
//! [`QueueConsumer`](crate::QueueConsumer) contracts on an Apache Kafka topic, through
//! librdkafka (linked statically).
//!
//! - [`KafkaProducer`]: one idempotent producer per process (`acks=all`), the partition chosen
//!   explicitly by the shared partitioner, bounded buffering whose exhaustion is backpressure,
//!   fast failure while the cluster is unreachable, rebuilt after a fatal error, flushed on close.
//! - [`KafkaConsumer`]: a consumer-group member that commits synchronously only what the caller
//!   says is durable downstream, and reports rebalances and lag; it drops the second copies of
//!   records replayed from an ingest's spill, keeping what it needs in the commits' metadata.
//! - [`admin`]: create a topic with N partitions, or grow it to N.
//! - [`group_offsets`]: a group's committed offsets and its topic's ends, read without joining.
//! - [`KafkaSecurity`]: TLS and SASL/SCRAM for all of them; [`workload_acls`]: what a workload
//!   user must be allowed.

pub mod admin;
mod consumer;
pub mod group_offsets;
mod metrics;
mod producer;
mod security;

use std::time::Duration;

pub use consumer::KafkaConsumer;
pub use metrics::KafkaMetrics;
pub use producer::{KafkaProducer, PendingAck};
pub use security::{
    AclOperation, AclResourceType, KafkaAcl, KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism,
    access_failure, workload_acls,
};

/// Where the topic lives and how to reach it.
#[derive(Clone, Debug)]
pub struct KafkaSettings {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    pub topic: String,
    /// Partitions the partitioner spreads clients over; the topic must have at least this many.
    pub partitions: u32,
    /// librdkafka `client.id`, to tell our connections apart in broker logs and quotas.
    pub client_id: String,
    /// TLS and SASL (default: PLAINTEXT). `Debug` redacts the password.
    pub security: KafkaSecurity,
    /// Further librdkafka properties, applied last (tuning).
    pub extra: Vec<(String, String)>,
}

/// Producer tuning. The defaults favour durability first, then throughput.
#[derive(Clone, Debug)]
pub struct ProducerTuning {
    /// How long an append waits for Kafka's acknowledgement before answering "unavailable".
    /// The record may still be delivered later (librdkafka keeps retrying until
    /// `message_timeout`); it is then a duplicate of the client's retry, never a loss.
    pub ack_timeout: Duration,
    /// librdkafka `message.timeout.ms`: how long it keeps retrying a record at all.
    pub message_timeout: Duration,
    /// librdkafka `queue.buffering.max.kbytes`: memory for records not yet acknowledged.
    /// When it is full, appends are refused as saturated (503) instead of queueing unboundedly.
    pub max_buffer_kbytes: u32,
    /// librdkafka `linger.ms`.
    pub linger: Duration,
    /// librdkafka `compression.type`.
    pub compression: String,
    /// No acknowledgement for this long while records are in flight marks the cluster
    /// unreachable: new appends then fail at once until a metadata probe succeeds.
    pub stall_threshold: Duration,
}

impl Default for ProducerTuning {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(30),
            max_buffer_kbytes: 64 * 1024,
            linger: Duration::from_millis(5),
            compression: "lz4".into(),
            stall_threshold: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaBackendError {
    #[error("kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("invalid setting: {0}")]
    Config(String),
    /// The cluster refuses this client: its credentials, its TLS trust or its ACLs are wrong.
    /// Retrying with the same settings cannot help.
    #[error("Kafka refused access: {0}")]
    Access(String),
}

fn base_config(settings: &KafkaSettings) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.brokers)
        .set("client.id", &settings.client_id)
        // Quiet by default: librdkafka's own log lines arrive through `tracing` at warn.
        .set("log_level", "4");
    settings.security.apply(&mut config);
    config
}

fn apply_extra(config: &mut rdkafka::ClientConfig, settings: &KafkaSettings) {
    for (key, value) in &settings.extra {
        config.set(key, value);
    }
}
