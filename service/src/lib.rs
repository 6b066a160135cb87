//! What the ingest and consumer services share: the settings common to both, the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), logging, and the shutdown signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The queue implementation a service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The partitioned segment log in `--data-dir`.
    File,
    /// An Apache Kafka topic (`--kafka-brokers`, `--topic`).
    Kafka,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors in clusters.
    Json,
}

/// Settings both services take.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Which queue backend to use.
    #[arg(long, env = "METRICSTREAM_BACKEND", value_enum, default_value_t = BackendKind::File)]
    pub backend: BackendKind,

    /// Number of partitions (1..=1024). May grow between runs, never shrink.
    #[arg(long, env = "METRICSTREAM_PARTITIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Root directory of the file queue (shared by every ingest and consumer process).
    #[arg(long, env = "METRICSTREAM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Address of the admin listener serving /healthz, /readyz and Prometheus /metrics.
    #[arg(
        long,
        env = "METRICSTREAM_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,

    /// Log format.
    #[arg(long, env = "METRICSTREAM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

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

impl KafkaSecurityProtocol {
    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
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

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// Installs the global `tracing` subscriber. The filter comes from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only help a terminal; in a file or a log collector they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Answers `Ok` when the service can do its work, or why it cannot.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Arc<Registry>,
    readiness: Readiness,
}

/// Binds the admin listener and serves it until `shutdown` is cancelled.
pub async fn serve_admin(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin listener on {addr}"))?;
    tracing::info!(%addr, "admin listener ready");
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AdminState {
            registry,
            readiness,
        });
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener failed");
        }
    }))
}

async fn readyz(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> impl IntoResponse {
    match (state.readiness)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(
    axum::extract::State(state): axum::extract::State<AdminState>,
) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics failed: {error}\n"),
        ),
    }
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    ShutdownSignals::install().next().await;
}

/// SIGTERM and SIGINT (Ctrl-C), listened to for the life of the process, so that a second
/// signal can be told apart from the first (and none arriving in between is missed).
pub struct ShutdownSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot listen for {name}; only the other signal stops this process"
                );
                None
            }
        };
        Self {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for the next SIGTERM or SIGINT and logs it.
    pub async fn next(&mut self) {
        async fn receive(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = receive(&mut self.terminate) => tracing::info!("SIGTERM received; shutting down"),
            () = receive(&mut self.interrupt) => {
                tracing::info!("interrupt received; shutting down");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use clap::Parser;

    use super::*;

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
