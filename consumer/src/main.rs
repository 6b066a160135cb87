//! `metricstream-consumer`: reads a MetricStream queue as a member of a consumer group and writes
//! every metric to its sink (JSON Lines files, or a time-series store over remote write),
//! committing offsets only after the sink holds them durably.
//!
//! This file owns startup and shutdown; the loop itself is in [`pipeline`], the sink in
//! [`sink`].

mod health;
mod metrics;
mod pipeline;
mod sink;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use metricstream_backend::file::{
    FileConsumer, FileQueueMetrics, QUEUE_LAG_REFRESH, QueueLagMetrics, QueueLagReader,
    refresh_queue_lag,
};
use metricstream_backend::kafka::{KafkaConsumer, KafkaMetrics};
use metricstream_backend::{PollLimits, QueueConsumer};
use metricstream_service::{BackendKind, Readiness};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics::{ConsumerMetrics, LagGauges, RemoteWriteMetrics};
use crate::pipeline::{Pipeline, PipelineSettings, Stopped};
use crate::sink::{
    AuthSettings, ClientIdentityFiles, JsonlSink, Protocol, RemoteWriteSettings, RemoteWriteSink,
    Sink, TlsSettings,
};
use metricstream_consumer::config::{Config, SinkKind, SinkProtocol};

fn main() -> ExitCode {
    let config = Config::parse();
    metricstream_service::init_logging(config.common.log.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // A shutdown that timed out may leave a blocking sink call (an fsync on a sick disk) running;
    // it must not hold the exit hostage. Anything it did not finish is uncommitted and will be
    // re-delivered.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "consumer failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            metricstream_service::shutdown_signal().await;
            shutdown.cancel();
        }
    });

    let mut registry = Registry::default();
    let metrics = ConsumerMetrics::default();
    metrics.register(&mut registry);
    // The lag gauges live in the queue metrics whatever the backend, so dashboards need one name.
    let queue_metrics = FileQueueMetrics::default();
    queue_metrics.register(&mut registry);
    let kafka_metrics = KafkaMetrics::default();
    if config.common.backend == BackendKind::Kafka {
        kafka_metrics.register(&mut registry);
    }
    // Every partition's lag, owned or not, so that any one pod tells the operator the whole
    // queue's lag (file backend: every pod has the queue directory mounted).
    let queue_lag = (config.common.backend == BackendKind::File).then(|| {
        let metrics = QueueLagMetrics::default();
        metrics.register(&mut registry);
        let reader = QueueLagReader::new(
            config.common.data_dir.clone(),
            &config.group,
            config.common.partitions,
        );
        tokio::spawn(refresh_queue_lag(reader, metrics, QUEUE_LAG_REFRESH))
    });
    let remote_write_metrics = RemoteWriteMetrics::default();
    if config.sink == SinkKind::RemoteWrite {
        remote_write_metrics.register(&mut registry);
    }

    let health = Arc::new(Health::default());
    let readiness: Readiness = {
        let health = Arc::clone(&health);
        Arc::new(move || health.readiness())
    };
    // The admin listener outlives the pipeline so that /metrics can be scraped until the end.
    let admin_shutdown = CancellationToken::new();
    let admin = metricstream_service::serve_admin(
        config.common.admin.admin_listen,
        Arc::new(registry),
        readiness,
        admin_shutdown.clone(),
    )
    .await?;

    let outcome = consume(
        &config,
        metrics,
        remote_write_metrics,
        queue_metrics,
        kafka_metrics,
        health,
        shutdown,
    )
    .await;
    if let Some(queue_lag) = queue_lag {
        queue_lag.abort();
    }
    admin_shutdown.cancel();
    if let Err(error) = admin.await {
        tracing::warn!(%error, "admin listener task failed");
    }
    outcome
}

async fn consume(
    config: &Config,
    metrics: ConsumerMetrics,
    remote_write_metrics: RemoteWriteMetrics,
    queue_metrics: FileQueueMetrics,
    kafka_metrics: KafkaMetrics,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let lag_family = queue_metrics.consumer_lag.clone();
    let sink = open_sink(config, remote_write_metrics, shutdown.clone()).await?;

    let open = async {
        let consumer: Box<dyn QueueConsumer> = match config.common.backend {
            BackendKind::File => Box::new(
                FileConsumer::open(
                    config.common.data_dir.clone(),
                    config.common.partitions,
                    &config.group,
                    queue_metrics,
                )
                .await
                .with_context(|| {
                    format!(
                        "opening the file queue in {} as group {}",
                        config.common.data_dir.display(),
                        config.group
                    )
                })?,
            ),
            BackendKind::Kafka => {
                let settings =
                    metricstream_service::prepare_kafka(&config.common, &config.kafka, "consumer")
                        .await?;
                Box::new(
                    KafkaConsumer::connect(&settings, &config.group, kafka_metrics)
                        .await
                        .with_context(|| {
                            format!(
                                "joining group {} on topic {} at {}",
                                config.group, settings.topic, settings.brokers
                            )
                        })?,
                )
            }
        };
        anyhow::Ok(consumer)
    };
    let consumer = tokio::select! {
        consumer = open => consumer?,
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested before the queue was open");
            return Ok(());
        }
    };
    health.set_consumer_open(true);
    tracing::info!(
        backend = ?config.common.backend,
        group = %config.group,
        sink = ?config.sink,
        sink_dir = %config.sink_dir.display(),
        sink_url = config.sink_url.as_deref().unwrap_or(""),
        max_batch_records = config.max_batch_records,
        max_batch_bytes = config.max_batch_bytes,
        poll_wait_ms = config.poll_wait_ms,
        sink_rate_limit = config.sink_rate_limit,
        "consumer started"
    );

    let limits = PollLimits {
        max_records: config.max_batch_records as usize,
        max_bytes: usize::try_from(config.max_batch_bytes).unwrap_or(usize::MAX),
    };
    let settings = PipelineSettings {
        sink_rate_limit: config.sink_rate_limit,
        ..PipelineSettings::new(limits, config.poll_wait())
    };
    // The queue's own lag family (`metricstream_queue_consumer_lag_records`) is kept from what the
    // consumer reports after each commit; the file queue removes series it releases itself.
    let lag = LagGauges::new(lag_family);
    let pipeline = Pipeline::new(consumer, sink, metrics, health, lag, settings);
    let mut task = tokio::spawn(pipeline.run(shutdown.clone()));
    let joined = tokio::select! {
        joined = &mut task => joined,
        () = shutdown.cancelled() => {
            let timeout = config.shutdown_timeout();
            match tokio::time::timeout(timeout, &mut task).await {
                Ok(joined) => joined,
                Err(_) => {
                    task.abort();
                    anyhow::bail!(
                        "shutdown did not finish within {timeout:?}; uncommitted records will be \
                         re-delivered to the next owner"
                    );
                }
            }
        }
    };
    match joined.context("the pipeline task panicked")?? {
        Stopped::Drained => tracing::info!("shut down cleanly"),
        Stopped::AbandonedBatch => tracing::warn!(
            "shut down with the last batch uncommitted; it will be re-delivered and the sink \
             will skip whatever of it already landed"
        ),
    }
    Ok(())
}

/// Opens the sink `--sink` names (its directory is created if missing; nothing is sent yet).
async fn open_sink(
    config: &Config,
    remote_write_metrics: RemoteWriteMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<Box<dyn Sink>> {
    let sink_dir = config.sink_dir.clone();
    match config.sink {
        SinkKind::File => {
            let sink = tokio::task::spawn_blocking(move || JsonlSink::open(sink_dir))
                .await
                .context("opening the sink panicked")?
                .with_context(|| format!("opening the sink in {}", config.sink_dir.display()))?;
            tracing::info!(dir = %sink.dir().display(), "JSON Lines sink ready");
            Ok(Box::new(sink))
        }
        SinkKind::RemoteWrite => {
            let url = config
                .sink_url
                .clone()
                .context("--sink remote-write needs --sink-url")?;
            // clap makes the two kinds exclusive, and each basic-auth flag require the other.
            let auth = match (
                &config.sink_bearer_token_file,
                &config.sink_basic_auth_username,
                &config.sink_basic_auth_password_file,
            ) {
                (Some(path), _, _) => Some(AuthSettings::BearerTokenFile(path.clone())),
                (None, Some(username), Some(password_file)) => Some(AuthSettings::Basic {
                    username: username.clone(),
                    password_file: password_file.clone(),
                }),
                _ => None,
            };
            let client_identity =
                match (&config.sink_client_cert_file, &config.sink_client_key_file) {
                    (Some(cert_file), Some(key_file)) => Some(ClientIdentityFiles {
                        cert_file: cert_file.clone(),
                        key_file: key_file.clone(),
                    }),
                    _ => None,
                };
            let settings = RemoteWriteSettings {
                url,
                auth,
                tls: TlsSettings {
                    ca_file: config.sink_ca_file.clone(),
                    client_identity,
                },
                max_samples_per_request: config.sink_max_samples_per_request as usize,
                concurrency: config.sink_concurrency as usize,
                protocol: match config.sink_protocol {
                    SinkProtocol::V1 => Protocol::V1,
                    SinkProtocol::V2 => Protocol::V2,
                },
                request_timeout: config.sink_timeout(),
            };
            let runtime = tokio::runtime::Handle::current();
            let sink = tokio::task::spawn_blocking(move || {
                RemoteWriteSink::open(sink_dir, &settings, runtime, remote_write_metrics, shutdown)
            })
            .await
            .context("opening the sink panicked")?
            .context("opening the remote-write sink")?;
            tracing::info!(url = sink.url(), dir = %sink.dir().display(), "remote-write sink ready");
            Ok(Box::new(sink))
        }
    }
}
