//! The workloads' configuration: the environment both binaries read from the stream's
//! ConfigMap, and the hash that rolls the workloads when it changes.

use std::collections::BTreeMap;

use super::{
    ADMIN_PORT, CREDENTIALS_CA_KEY, CREDENTIALS_PASSWORD_KEY, INGEST_PORT, INGEST_TLS_MOUNT,
    KAFKA_CA_MOUNT, KAFKA_SASL_MOUNT, QUEUE_DIR, SINK_MOUNT, TOKENS_KEY, TOKENS_MOUNT,
};
use crate::crd::{Durability, SaslType};
use crate::labels;
use crate::reconcile::termination;
use crate::reconcile::validate::{CaSource, ValidatedBackend, ValidatedStream};

/// The workloads' environment: every setting of both binaries, from the spec.
pub fn render_config(stream: &ValidatedStream) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        env.insert(key.to_owned(), value);
    };
    set("METRICSTREAM_PARTITIONS", stream.partitions.to_string());
    set("METRICSTREAM_SINK_DIR", SINK_MOUNT.into());
    set("METRICSTREAM_GROUP", stream.consumer.group.clone());
    set(
        "METRICSTREAM_MAX_BODY_BYTES",
        stream.ingest.max_body_bytes.to_string(),
    );
    set("METRICSTREAM_LOG_FORMAT", "json".into());
    set("METRICSTREAM_LISTEN", format!("0.0.0.0:{INGEST_PORT}"));
    set("METRICSTREAM_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}"));
    // Read by the ingest only (the consumer has no such flag).
    set(
        "METRICSTREAM_SHUTDOWN_DELAY",
        termination::INGEST_SHUTDOWN_DELAY_SECONDS.to_string(),
    );
    if stream.ingest.tls_secret.is_some() {
        set(
            "METRICSTREAM_TLS_CERT_FILE",
            format!("{INGEST_TLS_MOUNT}/tls.crt"),
        );
        set(
            "METRICSTREAM_TLS_KEY_FILE",
            format!("{INGEST_TLS_MOUNT}/tls.key"),
        );
    }
    if let Some((per_second, burst)) = stream.ingest.rate_limit {
        // The stream's figures; each pod enforces its share of them.
        set("METRICSTREAM_RATE_LIMIT_PER_SECOND", per_second.to_string());
        if let Some(burst) = burst {
            set("METRICSTREAM_RATE_LIMIT_BURST", burst.to_string());
        }
    }
    if let Some((per_second, burst)) = stream.ingest.sample_rate {
        set(
            "METRICSTREAM_MAX_SAMPLES_PER_SECOND",
            per_second.to_string(),
        );
        if let Some(burst) = burst {
            set("METRICSTREAM_MAX_SAMPLES_BURST", burst.to_string());
        }
    }
    if stream.ingest.rate_limit.is_some() || stream.ingest.sample_rate.is_some() {
        // The stream's figures; each pod enforces its share of them.
        set(
            "METRICSTREAM_RATE_LIMIT_REPLICAS",
            stream.ingest.replicas.max(1).to_string(),
        );
    }
    if let Some(max_series) = stream.ingest.max_active_series {
        set("METRICSTREAM_MAX_ACTIVE_SERIES", max_series.to_string());
    }
    if stream.ingest.auth_secret.is_some() {
        set(
            "METRICSTREAM_TOKENS_FILE",
            format!("{TOKENS_MOUNT}/{TOKENS_KEY}"),
        );
    }
    match &stream.backend {
        ValidatedBackend::File { durability, .. } => {
            set("METRICSTREAM_BACKEND", "file".into());
            set("METRICSTREAM_DATA_DIR", QUEUE_DIR.into());
            let durability = match durability {
                Durability::Always => "always",
                Durability::Batch => "batch",
                Durability::None => "none",
            };
            set("METRICSTREAM_DURABILITY", durability.into());
        }
        ValidatedBackend::Kafka(plan) => {
            set("METRICSTREAM_BACKEND", "kafka".into());
            set("METRICSTREAM_KAFKA_BROKERS", plan.bootstrap_servers.clone());
            set("METRICSTREAM_TOPIC", plan.topic.clone());
            // The operator (or Strimzi, or someone else) owns the topic, not the workloads.
            set("METRICSTREAM_KAFKA_CREATE_TOPIC", "false".into());
            let security = &plan.security;
            let protocol = match (security.tls.is_some(), security.sasl.is_some()) {
                (false, false) => "plaintext",
                (true, false) => "ssl",
                (false, true) => "sasl-plaintext",
                (true, true) => "sasl-ssl",
            };
            set("METRICSTREAM_KAFKA_SECURITY_PROTOCOL", protocol.into());
            if matches!(
                security.tls,
                Some(CaSource::Secret { .. } | CaSource::StrimziClusterCa)
            ) {
                set(
                    "METRICSTREAM_KAFKA_CA_FILE",
                    format!("{KAFKA_CA_MOUNT}/{CREDENTIALS_CA_KEY}"),
                );
            }
            if let Some(sasl) = &security.sasl {
                let mechanism = match sasl.mechanism {
                    SaslType::ScramSha512 => "scram-sha-512",
                    SaslType::ScramSha256 => "scram-sha-256",
                };
                set("METRICSTREAM_KAFKA_SASL_MECHANISM", mechanism.into());
                set("METRICSTREAM_KAFKA_SASL_USERNAME", sasl.username.clone());
                set(
                    "METRICSTREAM_KAFKA_SASL_PASSWORD_FILE",
                    format!("{KAFKA_SASL_MOUNT}/{CREDENTIALS_PASSWORD_KEY}"),
                );
            }
        }
    }
    env
}

/// 16 hex digits identifying the rendered config.
pub fn config_hash(env: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in env {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", labels::stable_hash(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TopicManagement;
    use crate::reconcile::build::tests::*;

    use crate::reconcile::fixtures::{file_stream, kafka_stream};

    #[test]
    fn the_config_map_renders_the_workload_environment() {
        let desired = built(&file_stream());
        let data = desired.config_map.data.as_ref().expect("data");
        let expect = [
            ("METRICSTREAM_BACKEND", "file"),
            ("METRICSTREAM_PARTITIONS", "4"),
            ("METRICSTREAM_DATA_DIR", "/data/queue"),
            ("METRICSTREAM_SINK_DIR", "/sink"),
            ("METRICSTREAM_GROUP", "storage-writer"),
            ("METRICSTREAM_DURABILITY", "batch"),
            ("METRICSTREAM_LOG_FORMAT", "json"),
            ("METRICSTREAM_LISTEN", "0.0.0.0:8080"),
            ("METRICSTREAM_ADMIN_LISTEN", "0.0.0.0:9090"),
            ("METRICSTREAM_MAX_BODY_BYTES", "1048576"),
        ];
        for (key, value) in expect {
            assert_eq!(data.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert!(!data.contains_key("METRICSTREAM_TOKENS_FILE"));
        assert!(!data.contains_key("METRICSTREAM_KAFKA_BROKERS"));

        let kafka = built(&kafka_stream(TopicManagement::Strimzi));
        let data = kafka.config_map.data.as_ref().expect("data");
        assert_eq!(data["METRICSTREAM_BACKEND"], "kafka");
        assert_eq!(
            data["METRICSTREAM_KAFKA_BROKERS"],
            "my-cluster-kafka-bootstrap.kafka:9092"
        );
        assert_eq!(data["METRICSTREAM_TOPIC"], "metrics-web");
        assert_eq!(
            data["METRICSTREAM_TOKENS_FILE"],
            "/etc/metricstream/tokens/tokens"
        );
        assert!(!data.contains_key("METRICSTREAM_DATA_DIR"));
    }

    #[test]
    fn partition_growth_changes_the_config_and_rolls_the_workloads() {
        let before = built(&file_stream());
        let mut grown = file_stream();
        grown.spec.partitions = 8;
        let after = built(&grown);
        assert_eq!(
            after.config_map.data.as_ref().expect("data")["METRICSTREAM_PARTITIONS"],
            "8"
        );
        assert_ne!(before.config_hash, after.config_hash);
        for name in ["web-ingest", "web-consumer"] {
            assert_eq!(
                hash_annotation(deployment(&before, name)),
                before.config_hash
            );
            assert_eq!(hash_annotation(deployment(&after, name)), after.config_hash);
        }
        // A change that does not touch the config (replicas) keeps the hash.
        let mut scaled = file_stream();
        scaled.spec.ingest.replicas = 5;
        assert_eq!(built(&scaled).config_hash, before.config_hash);
    }

    #[test]
    fn the_config_hash_is_stable_across_builds() {
        // A rebuilt operator must not roll every workload: the hash is FNV-1a of the data.
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(config_hash(&env), config_hash(&env.clone()));
        assert_eq!(
            config_hash(&env),
            format!("{:016x}", labels::stable_hash(b"A\x001\x00"))
        );
    }
}
