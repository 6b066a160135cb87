//! `metricstream-operator`: `crd` prints the CustomResourceDefinition; `run` runs the
//! controller (kubeconfig from `KUBECONFIG` or the in-cluster service account).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::api::{Api, ListParams};
use kube::core::GroupVersionKind;
use kube::runtime::events::Reporter;
use kube::{Client, CustomResourceExt};
use metricstream_operator::config::RunArgs;
use metricstream_operator::context::{Context, OutsideClients};
use metricstream_operator::controller;
use metricstream_operator::crd::MetricStream;
use metricstream_operator::lag::LiveLagSource;
use metricstream_operator::leader::{LeaderElector, LeaseSettings};
use metricstream_operator::metrics::Metrics;
use metricstream_operator::reconcile::sink_probe::SinkProbe;
use metricstream_operator::topics::KafkaTopicAdmin;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// The MetricStream Kubernetes operator.
#[derive(Parser)]
#[command(name = "metricstream-operator", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the MetricStream CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(Box<RunArgs>),
}

/// What `/readyz` reports.
const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const LEADING: u8 = 2;
const STOPPING: u8 = 3;

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Crd => {
            print!("{}", serde_yaml::to_string(&MetricStream::crd())?);
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Runtime::new()
            .context("starting the async runtime")?
            .block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    metricstream_service::init_logging(args.log.log_format);
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            metricstream_service::shutdown_signal().await;
            shutdown.cancel();
        });
    }

    let state = Arc::new(AtomicU8::new(STARTING));
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let readiness: metricstream_service::Readiness = {
        let state = state.clone();
        Arc::new(move || match state.load(Ordering::Relaxed) {
            STANDBY | LEADING => Ok(()),
            STARTING => Err("waiting for the MetricStream CRD".into()),
            _ => Err("stopping".into()),
        })
    };
    let admin = metricstream_service::serve_admin(
        args.admin.admin_listen,
        Arc::new(registry),
        readiness,
        shutdown.clone(),
    )
    .await?;

    if !wait_for_crd(&client, args.namespace.as_deref(), &shutdown).await {
        admin.await.ok();
        return Ok(());
    }
    let strimzi_installed = kube::discovery::pinned_kind(
        &client,
        &GroupVersionKind::gvk("kafka.strimzi.io", "v1", "KafkaTopic"),
    )
    .await
    .is_ok();
    if !strimzi_installed {
        tracing::info!(
            "the KafkaTopic CRD (kafka.strimzi.io/v1) is not installed: streams with topicManagement strimzi report StrimziNotInstalled until the operator restarts with it"
        );
    }

    let identity = args
        .identity
        .clone()
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| format!("metricstream-operator-{}", std::process::id()));
    let mut workload = args.workload.clone();
    // The namespace the operator runs in (the chart sets POD_NAMESPACE): admitted to the
    // consumers' admin port, whose /readyz feeds SinkAvailable.
    workload.posture.operator_namespace = Some(args.lease_namespace.clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        Reporter {
            controller: "metricstream-operator".into(),
            instance: Some(identity.clone()),
        },
        workload,
        args.resync(),
        strimzi_installed,
        metrics,
        OutsideClients {
            topics: Arc::new(KafkaTopicAdmin),
            sink_probe: SinkProbe::new()
                .context("building the HTTP client that asks the consumers")?,
            lag: Arc::new(
                LiveLagSource::new().context("building the clients that measure the lag")?,
            ),
        },
    ));

    let outcome = if args.leader_election {
        state.store(STANDBY, Ordering::Relaxed);
        let elector = LeaderElector::new(
            client.clone(),
            LeaseSettings {
                name: args.lease_name.clone(),
                namespace: args.lease_namespace.clone(),
                identity,
                duration: Duration::from_secs(args.lease_duration_seconds),
            },
        );
        if elector.acquire(&shutdown).await {
            state.store(LEADING, Ordering::Relaxed);
            let stop_controller = shutdown.child_token();
            let mut running = tokio::spawn(controller::run(
                ctx,
                args.namespace.clone(),
                stop_controller.clone(),
            ));
            let outcome = tokio::select! {
                held = elector.hold(&shutdown) => held.map_err(anyhow::Error::from),
                _ = &mut running => if shutdown.is_cancelled() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("the controller stopped unexpectedly"))
                },
            };
            // Stop reconciling before anyone else may start: only then hand the lease over.
            stop_controller.cancel();
            if !running.is_finished() {
                let _ = tokio::time::timeout(Duration::from_secs(20), running).await;
            }
            if outcome.is_ok() {
                elector.release().await;
            }
            outcome
        } else {
            Ok(())
        }
    } else {
        state.store(LEADING, Ordering::Relaxed);
        controller::run(ctx, args.namespace.clone(), shutdown.clone()).await;
        Ok(())
    };

    state.store(STOPPING, Ordering::Relaxed);
    shutdown.cancel();
    admin.await.ok();
    if let Err(error) = &outcome {
        tracing::error!(%error, "stepping down");
    }
    outcome
}

/// Waits until MetricStreams can be listed (the CRD is installed and we may read it); `false`
/// when shutdown came first.
async fn wait_for_crd(
    client: &Client,
    namespace: Option<&str>,
    shutdown: &CancellationToken,
) -> bool {
    let api: Api<MetricStream> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut logged = false;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(error) => {
                if !logged {
                    tracing::warn!(%error, "cannot list MetricStreams: is the CRD installed (kubectl apply -f crds/metricstream.yaml)? retrying");
                    logged = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}
