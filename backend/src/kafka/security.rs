//! How the Kafka clients authenticate and encrypt: TLS (with a CA of the caller's or the system
//! trust store) and SASL/SCRAM, applied to every client (producer, consumer, admin) by
//! [`super::base_config`]. Also the ACLs a workload needs ([`workload_acls`]), and the
//! classification of librdkafka's errors into "retrying cannot help: fix the credentials, the CA
//! or the ACLs" ([`access_failure`]).

use std::fmt;
use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};

/// TLS and SASL settings of the Kafka clients. The default (neither) is a PLAINTEXT connection.
#[derive(Clone, Debug, Default)]
pub struct KafkaSecurity {
    pub tls: Option<KafkaTls>,
    pub sasl: Option<KafkaSasl>,
}

#[derive(Clone, Debug, Default)]
pub struct KafkaTls {
    /// PEM CA bundle; None = the system trust store
    pub ca_pem: Option<String>,
}

/// SASL credentials. `Debug` is written by hand so that the password never reaches a log.
#[derive(Clone)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    ScramSha512,
    ScramSha256,
}

impl SaslMechanism {
    /// librdkafka's (and Kafka's) name of the mechanism.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::ScramSha256 => "SCRAM-SHA-256",
        }
    }
}

impl KafkaSecurity {
    /// librdkafka's `security.protocol` for these settings.
    pub fn protocol(&self) -> &'static str {
        match (&self.tls, &self.sasl) {
            (None, None) => "plaintext",
            (Some(_), None) => "ssl",
            (None, Some(_)) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        }
    }

    /// Sets the librdkafka properties of these settings on `config`.
    pub(super) fn apply(&self, config: &mut rdkafka::ClientConfig) {
        config.set("security.protocol", self.protocol());
        if let Some(tls) = &self.tls {
            match &tls.ca_pem {
                Some(pem) => config.set("ssl.ca.pem", pem),
                // librdkafka looks in the usual bundle paths: the distroless runtime image has
                // /etc/ssl/certs/ca-certificates.crt but no OpenSSL directory layout.
                None => config.set("ssl.ca.location", "probe"),
            };
        }
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.kafka_name())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
    }
}

/// What a Kafka ACL applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclResourceType {
    Topic,
    Group,
}

/// An operation a Kafka ACL allows (the ones the workloads need).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AclOperation {
    Read,
    Write,
}

impl AclResourceType {
    /// Kafka's (and Strimzi's `KafkaUser`) name of the resource type.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Group => "group",
        }
    }
}

impl AclOperation {
    /// Kafka's (and Strimzi's `KafkaUser`) name of the operation.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Self::Read => "Read",
            Self::Write => "Write",
        }
    }
}

/// One "allow" ACL on a resource named literally (no prefix or wildcard), for any host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KafkaAcl {
    pub resource_type: AclResourceType,
    /// The literal name of the topic or group.
    pub name: String,
    pub operations: Vec<AclOperation>,
}

/// The ACLs the workloads of one pipeline need, and no more: the ingest produces to `topic`
/// (Topic Write), the consumer reads it as a member of `group` and commits there (Topic Read,
/// Group Read). Kafka lets Read and Write imply Describe (metadata, FindCoordinator,
/// OffsetFetch), and since Kafka 3.0 Write on a topic implies the idempotent producer's
/// cluster-level IdempotentWrite (KIP-679), so nothing more is needed; topic creation is the
/// operator's (Strimzi `KafkaTopic`), not the workloads'. The tests grant exactly this list to
/// a user of their own, run both binaries with it, and show that dropping the group ACL stops
/// the consumer.
pub fn workload_acls(topic: &str, group: &str) -> Vec<KafkaAcl> {
    vec![
        KafkaAcl {
            resource_type: AclResourceType::Topic,
            name: topic.to_owned(),
            operations: vec![AclOperation::Read, AclOperation::Write],
        },
        KafkaAcl {
            resource_type: AclResourceType::Group,
            name: group.to_owned(),
            operations: vec![AclOperation::Read],
        },
    ]
}

/// Why a client error means the connection is refused for its credentials, its TLS trust or its
/// ACLs — something retrying cannot fix — or `None` for any other error.
pub fn access_failure(error: &KafkaError, reason: &str) -> Option<String> {
    access_failure_code(error.rdkafka_error_code()?, reason)
}

/// [`access_failure`] for a bare error code and librdkafka's description of it.
pub fn access_failure_code(code: RDKafkaErrorCode, reason: &str) -> Option<String> {
    let what = match code {
        RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed => {
            "SASL authentication failed"
        }
        RDKafkaErrorCode::SSL => "TLS handshake failed",
        RDKafkaErrorCode::TopicAuthorizationFailed => "not authorized for the topic",
        RDKafkaErrorCode::GroupAuthorizationFailed => "not authorized for the consumer group",
        RDKafkaErrorCode::ClusterAuthorizationFailed => "not authorized for the cluster",
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed => {
            "not authorized for the transactional id"
        }
        RDKafkaErrorCode::UnsupportedSASLMechanism => "SASL mechanism not enabled on the broker",
        // A TLS client on a plaintext listener, or the reverse, shows up as a disconnect.
        RDKafkaErrorCode::BrokerTransportFailure
            if reason.contains("SSL") || reason.contains("security.protocol") =>
        {
            "TLS handshake failed"
        }
        _ => return None,
    };
    let reason = reason.trim();
    Some(if reason.is_empty() {
        format!("{what} ({code})")
    } else {
        format!("{what}: {reason}")
    })
}

/// Keeps the first refusal (authentication, TLS, authorization) librdkafka reports.
#[derive(Default)]
pub(super) struct AccessWatch {
    refused: Mutex<Option<String>>,
}

impl AccessWatch {
    pub(super) fn refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|refused| refused.clone())
    }
}

impl AccessWatch {
    pub(super) fn record(&self, refused: String) {
        if let Ok(mut slot) = self.refused.lock() {
            slot.get_or_insert(refused);
        }
    }
}

impl ClientContext for AccessWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        match access_failure(&error, reason) {
            Some(refused) => self.record(refused),
            None => tracing::debug!(%error, %reason, "librdkafka error during an access check"),
        }
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        // What matters reaches `error` and the caller's error; the rest is detail.
        tracing::debug!(fac, "librdkafka: {message}");
    }
}

/// The metadata client (a producer handle) never produces: there is nothing to deliver.
impl ProducerContext for AccessWatch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// The group access check's consumer never joins the group: the defaults do.
impl ConsumerContext for AccessWatch {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let security = KafkaSecurity {
            tls: Some(KafkaTls::default()),
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                username: "ingest".into(),
                password: "s3cret-value".into(),
            }),
        };
        let debug = format!("{security:?} {:#?}", security.sasl);
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(
            debug.contains("ingest") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn the_protocol_follows_from_tls_and_sasl() {
        let sasl = KafkaSasl {
            mechanism: SaslMechanism::ScramSha256,
            username: "u".into(),
            password: "p".into(),
        };
        let mut security = KafkaSecurity::default();
        assert_eq!(security.protocol(), "plaintext");
        security.tls = Some(KafkaTls::default());
        assert_eq!(security.protocol(), "ssl");
        security.sasl = Some(sasl);
        assert_eq!(security.protocol(), "sasl_ssl");
        security.tls = None;
        assert_eq!(security.protocol(), "sasl_plaintext");
    }

    #[test]
    fn authentication_and_tls_errors_are_access_failures_and_timeouts_are_not() {
        let auth = access_failure_code(
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: Authentication failed",
        );
        assert!(auth.is_some_and(|r| r.starts_with("SASL authentication failed")));
        let tls = access_failure_code(RDKafkaErrorCode::SSL, "certificate verify failed");
        assert!(tls.is_some_and(|r| r.contains("certificate verify failed")));
        assert_eq!(
            access_failure_code(RDKafkaErrorCode::AllBrokersDown, "1/1 brokers are down"),
            None
        );
        assert_eq!(
            access_failure_code(
                RDKafkaErrorCode::BrokerTransportFailure,
                "Connection refused"
            ),
            None
        );
    }

    #[test]
    fn workload_acls_are_literal_topic_and_group_grants() {
        let acls = workload_acls("metrics", "storage-writer");
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[0].resource_type, AclResourceType::Topic);
        assert_eq!(acls[0].name, "metrics");
        assert_eq!(acls[1].resource_type, AclResourceType::Group);
        assert_eq!(acls[1].name, "storage-writer");
        assert!(!acls[1].operations.contains(&AclOperation::Write));
    }
}
