//! What the ingest and consumer services share: the settings common to both, the admin listener
//! (`/healthz`, `/readyz`, `/metrics`), logging, and the shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// security.protocol=SASL_SSL.
    #[arg(long = "kafka-property", env = "METRICSTREAM_KAFKA_PROPERTIES",
          value_delimiter = ',', value_parser = parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
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
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C stops this process");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received; shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; shutting down"),
    }
}
