//! `metricstream-ingest`: the HTTP front door of a MetricStream pipeline. This file owns the
//! process's life: settings, startup in a deliberate order, and a bounded graceful shutdown.
//!
//! Startup binds the API port first (a taken port fails before any disk work), then starts the
//! admin listener (so `/healthz` answers while a large queue recovers; `/readyz` says not yet),
//! then opens the queue, then serves. Shutdown has two steps. The first signal makes `/readyz`
//! answer 503 while the API keeps serving for `--shutdown-delay`, so load balancers stop sending
//! here before anything is refused (a second signal cuts the delay short). Then it stops
//! accepting, drains in-flight requests, closes the queue, and stops the admin listener last —
//! all within `--shutdown-timeout`.

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use metricstream_backend::QueueProducer;
use metricstream_backend::file::{FileProducer, FileQueueMetrics};
use metricstream_backend::kafka::{KafkaBackendError, KafkaMetrics, KafkaProducer, admin};
use metricstream_backend::spill::{SpillMetrics, SpillSettings, SpillingProducer};
use metricstream_service::{BackendKind, Readiness, kafka_settings, prepare_kafka};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use metricstream_ingest::auth::{Authenticator, TokenTable};
use metricstream_ingest::client_limits::{ActiveSeries, SampleBudget};
use metricstream_ingest::config::Args;
use metricstream_ingest::http::{AppState, ConcurrencyLimit};
use metricstream_ingest::metrics::IngestMetrics;
use metricstream_ingest::rate_limit::ClientRateLimiter;
use metricstream_ingest::reload::{SecretKind, WatchedFiles, poll_for_changes};
use metricstream_ingest::server::{ServeSettings, Timeouts};
use metricstream_ingest::tls::{self, ReloadableCertificate};

/// How often the rate limiter forgets clients whose allowance is full again.
const RATE_LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    metricstream_service::init_logging(args.common.log.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "metricstream-ingest failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (authenticator, token_files) = authenticator(&args)?;
    // A bad certificate or key stops the start, before any port is bound.
    let (tls_config, tls_reload) = match load_tls(&args)? {
        Some(tls) => (Some(tls.config), Some((tls.certificate, tls.files))),
        None => (None, None),
    };

    // `shutdown` is cancelled on the first SIGTERM/SIGINT, `skip_delay` on the second. Installed
    // before anything slow so a signal during startup is a clean exit rather than the default
    // kill.
    let shutdown = CancellationToken::new();
    let skip_delay = CancellationToken::new();
    tokio::spawn({
        let (shutdown, skip_delay) = (shutdown.clone(), skip_delay.clone());
        let mut signals = metricstream_service::ShutdownSignals::install();
        async move {
            signals.next().await;
            shutdown.cancel();
            signals.next().await;
            skip_delay.cancel();
        }
    });

    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the ingest listener on {}", args.listen))?;
    let listen_addr = listener
        .local_addr()
        .context("reading the ingest listener's address")?;

    let queue_metrics = FileQueueMetrics::default();
    let kafka_metrics = KafkaMetrics::default();
    let spill_metrics = SpillMetrics::default();
    let ingest_metrics = IngestMetrics::default();
    let mut registry = Registry::default();
    match args.common.backend {
        BackendKind::File => queue_metrics.register(&mut registry),
        BackendKind::Kafka => kafka_metrics.register(&mut registry),
    }
    if args.spill.spill_dir.is_some() {
        spill_metrics.register(&mut registry);
    }
    ingest_metrics.register(&mut registry);
    spawn_secret_reloads(
        &args,
        &authenticator,
        token_files,
        tls_reload,
        &ingest_metrics,
        &shutdown,
    );

    // Filled once the queue is open; until then, and from the shutdown signal on, not ready.
    let opened_producer: Arc<OnceLock<Arc<dyn QueueProducer>>> = Arc::new(OnceLock::new());
    let readiness: Readiness = Arc::new({
        let opened_producer = opened_producer.clone();
        let shutdown = shutdown.clone();
        move || {
            if shutdown.is_cancelled() {
                return Err("shutting down".to_owned());
            }
            match opened_producer.get() {
                Some(producer) => producer.readiness(),
                None => Err("the queue is still opening".to_owned()),
            }
        }
    });
    let admin_shutdown = CancellationToken::new();
    let admin = metricstream_service::serve_admin(
        args.common.admin.admin_listen,
        Arc::new(registry),
        readiness,
        admin_shutdown.clone(),
    )
    .await?;

    let producer = tokio::select! {
        opened = open_producer(&args, queue_metrics, kafka_metrics, spill_metrics) => opened,
        () = shutdown.cancelled() => {
            tracing::info!("shutdown requested while the queue was opening");
            admin_shutdown.cancel();
            return Ok(());
        }
    };
    let producer = match producer {
        Ok(producer) => producer,
        Err(error) => {
            admin_shutdown.cancel();
            return Err(error);
        }
    };
    // Only `run` sets the slot, once, so it is empty here.
    let _ = opened_producer.set(producer.clone());

    let rate_limiter = args
        .rate_limit
        .replica_rate_limit()
        .map(|limit| Arc::new(ClientRateLimiter::new(limit)));
    if let (Some(cluster), Some(replica)) = (
        args.rate_limit.rate_limit(),
        args.rate_limit.replica_rate_limit(),
    ) {
        tracing::info!(
            per_second = cluster.per_second,
            burst = cluster.burst,
            replicas = args.rate_limit.rate_limit_replicas,
            replica_per_second = replica.per_second,
            replica_burst = replica.burst,
            "per-client rate limit: this replica enforces its share of the cluster-wide figures"
        );
    }
    if let Some(limiter) = &rate_limiter {
        tokio::spawn(sweep_rate_limiter(limiter.clone(), shutdown.clone()));
    }
    let (sample_budget, active_series) = client_limits(&args, &ingest_metrics, &shutdown);
    let state = Arc::new(AppState {
        producer: producer.clone(),
        authenticator,
        limits: args.limits.limits(),
        rate_limiter,
        sample_budget,
        active_series,
        metrics: ingest_metrics.clone(),
        body_read_timeout: args.edge.body_read_timeout,
        concurrency: ConcurrencyLimit::new(
            usize::try_from(args.edge.max_concurrent_requests).unwrap_or(usize::MAX),
        ),
    });

    tracing::info!(
        listen = %listen_addr,
        partitions = producer.partitions(),
        durability = %args.queue.durability,
        data_dir = %args.common.data_dir.display(),
        tls = tls_config.is_some(),
        header_read_timeout = ?args.edge.header_read_timeout,
        body_read_timeout = ?args.edge.body_read_timeout,
        idle_timeout = ?args.edge.idle_timeout,
        max_concurrent_requests = args.edge.max_concurrent_requests,
        "ingest listening"
    );
    let settings = ServeSettings {
        timeouts: Timeouts {
            header_read: args.edge.header_read_timeout,
            idle: args.edge.idle_timeout,
        },
        tls: tls_config.map(tokio_rustls::TlsAcceptor::from),
        metrics: ingest_metrics,
        close_after_response: shutdown.clone(),
    };
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn(metricstream_ingest::server::serve(
        listener,
        metricstream_ingest::http::router(state),
        settings,
        stop_accepting.clone(),
    ));

    let phases = ShutdownPhases {
        requested: shutdown,
        skip_delay,
        stop_accepting,
        delay: args.shutdown_delay,
        timeout: args.shutdown_timeout,
    };
    let served = wait_then_drain(server, &phases, producer).await;

    admin_shutdown.cancel();
    // The admin listener has only quick endpoints; a stuck scrape must not hold the exit.
    if tokio::time::timeout(Duration::from_secs(1), admin)
        .await
        .is_err()
    {
        tracing::warn!("the admin listener did not stop within a second");
    }
    served?;
    tracing::info!("ingest stopped");
    Ok(())
}

/// The steps of a shutdown and their budgets.
struct ShutdownPhases {
    /// The first signal: not ready from here on, but still serving.
    requested: CancellationToken,
    /// A second signal: end the delay now.
    skip_delay: CancellationToken,
    /// Cancelled here at the end of the delay: the server stops accepting and drains.
    stop_accepting: CancellationToken,
    delay: Duration,
    timeout: Duration,
}

/// Serves until the shutdown signal, keeps serving (not ready) for the delay, then drains
/// in-flight requests and closes the queue, all within the timeout of the delay's end.
async fn wait_then_drain(
    mut server: tokio::task::JoinHandle<std::io::Result<()>>,
    phases: &ShutdownPhases,
    producer: Arc<dyn QueueProducer>,
) -> anyhow::Result<()> {
    // The server returns only once told to stop accepting, or on a failure of its own.
    let mut early_exit = tokio::select! {
        served = &mut server => Some(served),
        () = phases.requested.cancelled() => None,
    };
    if early_exit.is_none() && !phases.delay.is_zero() {
        tracing::info!(
            delay = ?phases.delay,
            "not ready; still serving for --shutdown-delay so that load balancers stop sending \
             requests here first (a second signal skips the rest)"
        );
        early_exit = tokio::select! {
            served = &mut server => Some(served),
            () = tokio::time::sleep(phases.delay) => None,
            () = phases.skip_delay.cancelled() => {
                tracing::info!("second signal; skipping the rest of the shutdown delay");
                None
            }
        };
    }
    phases.stop_accepting.cancel();
    let timeout = phases.timeout;
    let deadline = Instant::now() + timeout;
    // Requests that outlive the drain are abandoned, but the queue still gets the last tenth of
    // the budget to flush what reached it; an exhausted budget would cut that short too.
    let drain_deadline = deadline - timeout / 10;
    let served = match early_exit {
        Some(served) => Some(served),
        None => match tokio::time::timeout_at(drain_deadline, &mut server).await {
            Ok(served) => Some(served),
            Err(_) => {
                tracing::warn!(
                    ?timeout,
                    "in-flight requests did not finish in time; abandoning them unanswered \
                     (none of them was acknowledged)"
                );
                server.abort();
                None
            }
        },
    };

    match tokio::time::timeout_at(deadline, producer.close()).await {
        Ok(()) => tracing::info!("queue closed; everything acknowledged is durable"),
        Err(_) => tracing::warn!(
            ?timeout,
            "the queue did not close in time; appends still in flight were not acknowledged"
        ),
    }

    match served {
        Some(Ok(Ok(()))) | None => Ok(()),
        Some(Ok(Err(error))) => Err(anyhow::Error::new(error).context("serving the ingest API")),
        Some(Err(join_error)) => {
            Err(anyhow::Error::new(join_error).context("the ingest API task failed"))
        }
    }
}

/// The authenticator, and in token mode the tokens file as read, to watch for changes.
fn authenticator(args: &Args) -> anyhow::Result<(Authenticator, Option<WatchedFiles>)> {
    let Some(path) = &args.tokens_file else {
        tracing::warn!(
            "no --tokens-file: open mode, the Authorization header value is the client id \
             and is not verified"
        );
        return Ok((Authenticator::Open, None));
    };
    let mut files = WatchedFiles::new(vec![path.clone()]);
    let content = read_secret_files(&mut files)?;
    let table = TokenTable::parse_bytes(&content[0])
        .with_context(|| format!("in the tokens file {}", path.display()))?;
    tracing::info!(
        path = %path.display(),
        tokens = table.len(),
        reload_interval = ?args.edge.secret_reload_interval,
        "token mode: requests must send Authorization: Bearer <token>"
    );
    Ok((Authenticator::tokens(table), Some(files)))
}

/// The first read of a secret's files, at startup.
fn read_secret_files(files: &mut WatchedFiles) -> anyhow::Result<Vec<Vec<u8>>> {
    files
        .read_if_changed()?
        .context("a secret's files were read before startup")
}

/// TLS for the API listener, when both files are given.
struct ListenerTls {
    config: Arc<rustls::ServerConfig>,
    certificate: Arc<ReloadableCertificate>,
    files: WatchedFiles,
}

fn load_tls(args: &Args) -> anyhow::Result<Option<ListenerTls>> {
    let (Some(cert_file), Some(key_file)) = (&args.edge.tls_cert_file, &args.edge.tls_key_file)
    else {
        return Ok(None);
    };
    let describe = || {
        format!(
            "loading the TLS certificate {} and key {}",
            cert_file.display(),
            key_file.display()
        )
    };
    let mut files = WatchedFiles::new(vec![cert_file.clone(), key_file.clone()]);
    let content = read_secret_files(&mut files).with_context(describe)?;
    let provider = tls::crypto_provider();
    let certified =
        tls::certified_key_from_pem(&content[0], &content[1], &provider).with_context(describe)?;
    let certificate = Arc::new(ReloadableCertificate::new(certified));
    let config = tls::server_config(certificate.clone(), provider)?;
    tracing::info!(
        cert_file = %cert_file.display(),
        key_file = %key_file.display(),
        "TLS on the ingest API"
    );
    Ok(Some(ListenerTls {
        config: Arc::new(config),
        certificate,
        files,
    }))
}

/// Polls the tokens file and the TLS files for new content until shutdown.
fn spawn_secret_reloads(
    args: &Args,
    authenticator: &Authenticator,
    token_files: Option<WatchedFiles>,
    tls: Option<(Arc<ReloadableCertificate>, WatchedFiles)>,
    metrics: &IngestMetrics,
    shutdown: &CancellationToken,
) {
    let interval = args.edge.secret_reload_interval;
    if let (Authenticator::Tokens(tokens), Some(files)) = (authenticator, token_files) {
        let tokens = tokens.clone();
        tokio::spawn(poll_for_changes(
            SecretKind::Tokens,
            files,
            interval,
            metrics.clone(),
            shutdown.clone(),
            move |content| {
                let table = TokenTable::parse_bytes(&content[0])?;
                tracing::info!(tokens = table.len(), "loaded the changed tokens file");
                tokens.store(Arc::new(table));
                Ok(())
            },
        ));
    }
    if let Some((certificate, files)) = tls {
        let provider = tls::crypto_provider();
        tokio::spawn(poll_for_changes(
            SecretKind::Tls,
            files,
            interval,
            metrics.clone(),
            shutdown.clone(),
            move |content| {
                let certified = tls::certified_key_from_pem(&content[0], &content[1], &provider)?;
                certificate.replace(certified);
                Ok(())
            },
        ));
    }
}

async fn open_producer(
    args: &Args,
    queue_metrics: FileQueueMetrics,
    kafka_metrics: KafkaMetrics,
    spill_metrics: SpillMetrics,
) -> anyhow::Result<Arc<dyn QueueProducer>> {
    match args.common.backend {
        BackendKind::File if args.spill.spill_dir.is_some() => {
            anyhow::bail!("--spill-dir needs --backend kafka: the file queue is already local")
        }
        BackendKind::File => {
            let data_dir = &args.common.data_dir;
            let config = args
                .queue
                .file_queue_config(data_dir.clone(), args.common.partitions);
            let producer = FileProducer::open(config, queue_metrics)
                .await
                .with_context(|| format!("opening the file queue in {}", data_dir.display()))?;
            Ok(Arc::new(producer))
        }
        BackendKind::Kafka => {
            let producer = match &args.spill.spill_dir {
                None => open_kafka(args, kafka_metrics.clone()).await?,
                Some(_) => open_kafka_with_spill(args, kafka_metrics.clone()).await?,
            };
            let settings = kafka_settings(&args.common, &args.kafka, "ingest")?;
            let Some(spill_dir) = &args.spill.spill_dir else {
                return Ok(Arc::new(producer));
            };
            let mut spill = SpillSettings::new(spill_dir, args.spill.spill_max_bytes);
            // Half the shutdown budget forwards the spill; the rest closes Kafka's producer.
            spill.drain_timeout = args.shutdown_timeout / 2;
            // The forwarder's producer keeps retrying a record until it is delivered (no
            // message timeout), so a record it replays is never overtaken by a later one.
            let mut forward_tuning = args.kafka_producer.tuning();
            forward_tuning.message_timeout = Duration::ZERO;
            let forward_producer =
                KafkaProducer::open_unchecked(settings, forward_tuning, kafka_metrics)
                    .context("starting the spill's forwarder")?;
            let producer = SpillingProducer::open(
                spill,
                Arc::new(producer),
                Arc::new(forward_producer),
                spill_metrics,
            )
            .await
            .context("opening the spill")?;
            tracing::info!(
                dir = %spill_dir.display(),
                max_bytes = args.spill.spill_max_bytes,
                "spill on: while Kafka cannot take requests they wait here"
            );
            Ok(Arc::new(producer))
        }
    }
}

/// Prepares the topic (`--kafka-create-topic`) and opens the producer once the cluster confirms
/// the topic: without a spill an ingest cannot accept anything while Kafka is away anyway.
async fn open_kafka(args: &Args, metrics: KafkaMetrics) -> anyhow::Result<KafkaProducer> {
    let settings = prepare_kafka(&args.common, &args.kafka, "ingest").await?;
    KafkaProducer::open(settings.clone(), args.kafka_producer.tuning(), metrics)
        .await
        .with_context(|| {
            format!(
                "connecting to Kafka at {} (topic {})",
                settings.brokers, settings.topic
            )
        })
}

/// How long an ingest with a spill waits for the cluster at startup before it starts without it.
const SPILL_STARTUP_CHECK: Duration = Duration::from_secs(5);

/// Like [`open_kafka`], but an unreachable cluster does not stop the start: an ingest with a
/// spill accepts into the spill until Kafka answers. A cluster that answers and refuses (wrong
/// credentials, no such topic) still fails the start.
async fn open_kafka_with_spill(
    args: &Args,
    metrics: KafkaMetrics,
) -> anyhow::Result<KafkaProducer> {
    let settings = kafka_settings(&args.common, &args.kafka, "ingest")?;
    match admin::topic_partitions_within(&settings, SPILL_STARTUP_CHECK).await {
        Err(KafkaBackendError::Client(error)) => {
            tracing::warn!(
                %error,
                brokers = %settings.brokers,
                "Kafka does not answer; starting anyway: requests go to the spill until it does"
            );
            Ok(KafkaProducer::open_unchecked(
                settings,
                args.kafka_producer.tuning(),
                metrics,
            )?)
        }
        _ => open_kafka(args, metrics).await,
    }
}

/// The per-client caps on samples and series, each `None` when off, with their sweeps.
fn client_limits(
    args: &Args,
    metrics: &IngestMetrics,
    shutdown: &CancellationToken,
) -> (Option<Arc<SampleBudget>>, Option<Arc<ActiveSeries>>) {
    let replicas = args.rate_limit.replicas();
    let sample_budget = args.client_limits.sample_rate().map(|cluster| {
        let replica = cluster.replica_share(replicas);
        tracing::info!(
            per_second = cluster.per_second,
            burst = cluster.burst,
            replicas,
            replica_per_second = replica.per_second,
            replica_burst = replica.burst,
            "per-client sample rate: this replica enforces its share of the cluster-wide figures"
        );
        Arc::new(SampleBudget::new(replica))
    });
    let active_series = args.client_limits.max_active_series().map(|max_series| {
        let window = args.client_limits.active_series_window;
        tracing::info!(
            max_series,
            window_secs = window.as_secs(),
            "per-client active series cap: every replica enforces the whole figure"
        );
        Arc::new(ActiveSeries::new(max_series, window))
    });
    if sample_budget.is_some() || active_series.is_some() {
        let (budget, series, metrics, shutdown) = (
            sample_budget.clone(),
            active_series.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(RATE_LIMITER_SWEEP_INTERVAL);
            loop {
                tokio::select! {
                    _ = interval.tick() => {
                        if let Some(budget) = &budget {
                            budget.forget_idle_clients();
                        }
                        if let Some(series) = &series {
                            series.forget_quiet_series();
                            metrics
                                .active_series_tracked
                                .set(i64::try_from(series.tracked_series()).unwrap_or(i64::MAX));
                        }
                    }
                    () = shutdown.cancelled() => return,
                }
            }
        });
    }
    (sample_budget, active_series)
}

async fn sweep_rate_limiter(limiter: Arc<ClientRateLimiter>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(RATE_LIMITER_SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = interval.tick() => limiter.forget_idle_clients(),
            () = shutdown.cancelled() => return,
        }
    }
}
