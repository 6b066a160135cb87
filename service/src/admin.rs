//! The admin listener every service runs: `/healthz`, `/readyz` and Prometheus `/metrics`, and
//! the flag that says where it listens.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Where the admin listener listens; flattened into every binary's flags (ingest, consumer and
/// the operator), so the flag, its variable and its default are the same everywhere.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// Address of the admin listener serving /healthz, /readyz and Prometheus /metrics.
    #[arg(
        long,
        env = "METRICSTREAM_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
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
