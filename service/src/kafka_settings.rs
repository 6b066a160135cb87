//! The Kafka backend's connection settings from the flags: the TLS and SASL files read, the
//! topic created or grown when asked. Only with the `kafka` feature (librdkafka).

use std::path::Path;

use anyhow::Context;

use crate::backend_flags::CommonArgs;
use crate::kafka_flags::{KafkaArgs, KafkaSaslMechanism, KafkaSecurityProtocol};

impl KafkaSecurityProtocol {
    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl KafkaArgs {
    /// TLS and SASL settings from the flags, with the CA and password files read. Errors name
    /// the flag and the path, never the password.
    pub fn security(&self) -> anyhow::Result<metricstream_backend::kafka::KafkaSecurity> {
        use metricstream_backend::kafka::{KafkaSasl, KafkaSecurity, KafkaTls, SaslMechanism};
        let protocol = self.kafka_security_protocol;
        let tls = if protocol.tls() {
            let ca_pem = match &self.kafka_ca_file {
                Some(path) => {
                    let pem = read_secret_file("--kafka-ca-file", path)?;
                    anyhow::ensure!(
                        pem.contains("-----BEGIN CERTIFICATE-----"),
                        "--kafka-ca-file {}: no PEM certificate in it",
                        path.display()
                    );
                    Some(pem)
                }
                None => None,
            };
            Some(KafkaTls { ca_pem })
        } else {
            anyhow::ensure!(
                self.kafka_ca_file.is_none(),
                "--kafka-ca-file is only used with --kafka-security-protocol ssl or sasl-ssl"
            );
            None
        };
        let sasl = if protocol.sasl() {
            let username = self
                .kafka_sasl_username
                .as_deref()
                .filter(|name| !name.trim().is_empty())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--kafka-security-protocol {} needs --kafka-sasl-username \
                         (METRICSTREAM_KAFKA_SASL_USERNAME)",
                        protocol_name(protocol)
                    )
                })?;
            let path = self.kafka_sasl_password_file.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--kafka-security-protocol {} needs --kafka-sasl-password-file \
                     (METRICSTREAM_KAFKA_SASL_PASSWORD_FILE)",
                    protocol_name(protocol)
                )
            })?;
            let password = read_secret_file("--kafka-sasl-password-file", path)?;
            Some(KafkaSasl {
                mechanism: match self.kafka_sasl_mechanism {
                    KafkaSaslMechanism::ScramSha512 => SaslMechanism::ScramSha512,
                    KafkaSaslMechanism::ScramSha256 => SaslMechanism::ScramSha256,
                },
                username: username.trim().to_owned(),
                password: password.trim_end_matches(['\n', '\r']).to_owned(),
            })
        } else {
            anyhow::ensure!(
                self.kafka_sasl_username.is_none() && self.kafka_sasl_password_file.is_none(),
                "--kafka-sasl-username and --kafka-sasl-password-file are only used with \
                 --kafka-security-protocol sasl-plaintext or sasl-ssl"
            );
            None
        };
        Ok(KafkaSecurity { tls, sasl })
    }
}

fn protocol_name(protocol: KafkaSecurityProtocol) -> String {
    clap::ValueEnum::to_possible_value(&protocol)
        .map(|value| value.get_name().to_owned())
        .unwrap_or_else(|| format!("{protocol:?}"))
}

/// The contents of a file named by `flag`: an error naming the flag and the path (never the
/// contents) when it cannot be read, is not UTF-8 or holds only whitespace.
fn read_secret_file(flag: &str, path: &Path) -> anyhow::Result<String> {
    let contents = std::fs::read_to_string(path)
        .with_context(|| format!("{flag} {}: cannot read it", path.display()))?;
    anyhow::ensure!(
        !contents.trim().is_empty(),
        "{flag} {}: the file is empty",
        path.display()
    );
    Ok(contents)
}

/// The Kafka backend's settings from the command line. `role` tells the service's
/// connections apart in broker logs (`client.id` = `metricstream-<role>-<host>`).
pub fn kafka_settings(
    common: &CommonArgs,
    kafka: &KafkaArgs,
    role: &str,
) -> anyhow::Result<metricstream_backend::kafka::KafkaSettings> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| std::process::id().to_string());
    Ok(metricstream_backend::kafka::KafkaSettings {
        brokers: kafka.brokers()?.to_owned(),
        topic: kafka.topic.clone(),
        partitions: common.partitions,
        client_id: format!("metricstream-{role}-{host}"),
        security: kafka.security()?,
        extra: kafka.kafka_properties.clone(),
    })
}

/// The Kafka settings of a service, after creating or growing the topic when
/// `--kafka-create-topic` asks for it.
pub async fn prepare_kafka(
    common: &CommonArgs,
    kafka: &KafkaArgs,
    role: &str,
) -> anyhow::Result<metricstream_backend::kafka::KafkaSettings> {
    let settings = kafka_settings(common, kafka, role)?;
    if kafka.kafka_create_topic {
        let change = metricstream_backend::kafka::admin::ensure_topic(
            &settings,
            kafka.kafka_replication_factor,
            &kafka.kafka_topic_config,
        )
        .await
        .with_context(|| format!("creating or growing topic {}", settings.topic))?;
        tracing::info!(topic = %settings.topic, ?change, "topic ready");
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use crate::kafka_flags::KafkaArgs;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn parse(args: &[&str]) -> KafkaArgs {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .expect("parse")
            .kafka
    }

    fn file(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(contents.as_bytes()).expect("write");
        file
    }

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn plaintext_is_the_default() {
        let security = parse(&[]).security().expect("security");
        assert!(security.tls.is_none() && security.sasl.is_none());
    }

    #[test]
    fn sasl_ssl_reads_the_ca_and_the_password_file() {
        let ca = file(PEM);
        let password = file("pa55word\n");
        let ca_path = ca.path().to_str().expect("utf-8 path");
        let password_path = password.path().to_str().expect("utf-8 path");
        let security = parse(&[
            "--kafka-security-protocol=sasl-ssl",
            "--kafka-ca-file",
            ca_path,
            "--kafka-sasl-mechanism=scram-sha-256",
            "--kafka-sasl-username=ingest",
            "--kafka-sasl-password-file",
            password_path,
        ])
        .security()
        .expect("security");
        assert_eq!(
            security.tls.and_then(|tls| tls.ca_pem).as_deref(),
            Some(PEM)
        );
        let sasl = security.sasl.expect("sasl");
        assert_eq!(sasl.username, "ingest");
        assert_eq!(
            sasl.password, "pa55word",
            "the trailing newline is not part of it"
        );
        assert_eq!(
            sasl.mechanism,
            metricstream_backend::kafka::SaslMechanism::ScramSha256
        );
    }

    #[test]
    fn sasl_without_a_username_or_password_file_is_refused() {
        let password = file("pa55word");
        let password_path = password.path().to_str().expect("utf-8 path");
        let error = parse(&[
            "--kafka-security-protocol=sasl-plaintext",
            "--kafka-sasl-password-file",
            password_path,
        ])
        .security()
        .expect_err("no username");
        assert!(
            error.to_string().contains("--kafka-sasl-username"),
            "{error}"
        );
        let error = parse(&[
            "--kafka-security-protocol=sasl-ssl",
            "--kafka-sasl-username=u",
        ])
        .security()
        .expect_err("no password file");
        assert!(
            error.to_string().contains("--kafka-sasl-password-file"),
            "{error}"
        );
    }

    #[test]
    fn missing_or_empty_files_are_named_and_the_password_is_never_shown() {
        let error = parse(&[
            "--kafka-security-protocol=sasl-ssl",
            "--kafka-sasl-username=u",
            "--kafka-sasl-password-file=/nonexistent/password",
        ])
        .security()
        .expect_err("missing file");
        let message = format!("{error:#}");
        assert!(
            message.contains("--kafka-sasl-password-file /nonexistent/password"),
            "{message}"
        );
        let empty = file("\n");
        let error = parse(&[
            "--kafka-security-protocol=ssl",
            "--kafka-ca-file",
            empty.path().to_str().expect("utf-8 path"),
        ])
        .security()
        .expect_err("empty CA file");
        assert!(format!("{error:#}").contains("is empty"), "{error:#}");
        let not_pem = file("hello");
        let error = parse(&[
            "--kafka-security-protocol=ssl",
            "--kafka-ca-file",
            not_pem.path().to_str().expect("utf-8 path"),
        ])
        .security()
        .expect_err("not PEM");
        assert!(
            format!("{error:#}").contains("no PEM certificate"),
            "{error:#}"
        );

        let password = file("very-secret-password");
        let args = parse(&[
            "--kafka-security-protocol=sasl-ssl",
            "--kafka-sasl-username=u",
            "--kafka-sasl-password-file",
            password.path().to_str().expect("utf-8 path"),
        ]);
        let security = args.security().expect("security");
        let debug = format!("{args:?} {security:?}");
        assert!(!debug.contains("very-secret-password"), "{debug}");
    }

    #[test]
    fn tls_and_sasl_settings_without_their_protocol_are_refused() {
        let error = parse(&["--kafka-sasl-username=u"])
            .security()
            .expect_err("username on plaintext");
        assert!(
            error.to_string().contains("sasl-plaintext or sasl-ssl"),
            "{error}"
        );
        let ca = file(PEM);
        let error = parse(&[
            "--kafka-security-protocol=sasl-plaintext",
            "--kafka-sasl-username=u",
            "--kafka-ca-file",
            ca.path().to_str().expect("utf-8 path"),
        ])
        .security()
        .expect_err("CA without TLS");
        assert!(error.to_string().contains("ssl or sasl-ssl"), "{error}");
    }
}
