//! The Kafka backend's flags, shared by the ingest and the consumer. They exist in every build,
//! so both binaries accept the same command line; turning them into connection settings
//! ([`crate::kafka_settings`]) needs the `kafka` feature.

use std::path::PathBuf;

/// Settings of the Kafka backend, shared by both services.
#[derive(Clone, Debug, clap::Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, host:port[,host:port...] (required with --backend kafka).
    #[arg(long, env = "METRICSTREAM_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// Kafka topic holding the metrics.
    #[arg(long, env = "METRICSTREAM_TOPIC", default_value = "metricstream")]
    pub topic: String,

    /// Create the topic with --partitions partitions if it is missing, and grow it if it has
    /// fewer (never shrinks it). Off: the topic must already exist with enough partitions.
    #[arg(long, env = "METRICSTREAM_KAFKA_CREATE_TOPIC", default_value_t = false)]
    pub kafka_create_topic: bool,

    /// Replication factor used when creating the topic.
    #[arg(long, env = "METRICSTREAM_KAFKA_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(i32).range(1..=32))]
    pub kafka_replication_factor: i32,

    /// Topic configuration used when creating the topic, as key=value (repeatable), e.g.
    /// retention.ms=604800000.
    #[arg(long = "kafka-topic-config", env = "METRICSTREAM_KAFKA_TOPIC_CONFIG",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_topic_config: Vec<(String, String)>,

    /// Extra librdkafka client properties as key=value (repeatable), applied last, e.g.
    /// socket.keepalive.enable=true. Use the --kafka-security-protocol, --kafka-ca-file and
    /// --kafka-sasl-* flags for TLS and SASL.
    #[arg(long = "kafka-property", env = "METRICSTREAM_KAFKA_PROPERTIES",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,

    /// How to connect to Kafka: plaintext, ssl (TLS), sasl-plaintext (SCRAM login without TLS)
    /// or sasl-ssl (SCRAM login over TLS).
    #[arg(long, env = "METRICSTREAM_KAFKA_SECURITY_PROTOCOL", value_enum,
          default_value_t = KafkaSecurityProtocol::Plaintext)]
    pub kafka_security_protocol: KafkaSecurityProtocol,

    /// PEM file of the CA certificates that signed the brokers' certificates (ssl, sasl-ssl).
    /// Without it, the system trust store is used.
    #[arg(long, env = "METRICSTREAM_KAFKA_CA_FILE")]
    pub kafka_ca_file: Option<PathBuf>,

    /// SASL mechanism (sasl-plaintext, sasl-ssl).
    #[arg(long, env = "METRICSTREAM_KAFKA_SASL_MECHANISM", value_enum,
          default_value_t = KafkaSaslMechanism::ScramSha512)]
    pub kafka_sasl_mechanism: KafkaSaslMechanism,

    /// SASL user name (required with sasl-plaintext and sasl-ssl).
    #[arg(long, env = "METRICSTREAM_KAFKA_SASL_USERNAME")]
    pub kafka_sasl_username: Option<String>,

    /// File holding the SASL password (required with sasl-plaintext and sasl-ssl; a trailing
    /// newline is ignored). A file, so the password is in no environment or command line.
    #[arg(long, env = "METRICSTREAM_KAFKA_SASL_PASSWORD_FILE")]
    pub kafka_sasl_password_file: Option<PathBuf>,
}

/// `--kafka-security-protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSecurityProtocol {
    /// No TLS, no login.
    Plaintext,
    /// TLS, no login.
    Ssl,
    /// SASL login, no TLS (SCRAM never sends the password itself; the data travels in clear).
    SaslPlaintext,
    /// SASL login over TLS.
    SaslSsl,
}

/// `--kafka-sasl-mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSaslMechanism {
    #[value(name = "scram-sha-512")]
    ScramSha512,
    #[value(name = "scram-sha-256")]
    ScramSha256,
}

impl KafkaArgs {
    /// The brokers, or a clear error when the Kafka backend was chosen without them.
    pub fn brokers(&self) -> anyhow::Result<&str> {
        self.kafka_brokers
            .as_deref()
            .filter(|brokers| !brokers.trim().is_empty())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--backend kafka needs --kafka-brokers (METRICSTREAM_KAFKA_BROKERS)"
                )
            })
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}
