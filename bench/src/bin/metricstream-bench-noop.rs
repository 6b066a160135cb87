//! `metricstream-bench-noop`: the no-op HTTP ceiling of the HTTP suite. It serves the ingest's
//! API surface with the same stack (axum on a multi-threaded tokio runtime) but does no work:
//! `POST /metrics` (and `/v1/metrics`) reads the whole body and answers `202` with a tiny fixed
//! JSON body. Whatever the ingest achieves is measured as a share of what this achieves under
//! the same load generator on the same machine.
//!
//! `GET /healthz` answers 200 once it serves; SIGTERM or SIGINT stops it gracefully.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "A no-op HTTP endpoint answering 202 to POST /metrics (the HTTP ceiling)")]
struct Args {
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// Shaped like the ingest's answer, so the response bytes match too.
const ACCEPTED_BODY: &str = r#"{"accepted":1,"partition":0,"offset":0}"#;

// Reading the body (into `Bytes`) is part of the ceiling: the ingest cannot answer before it has
// received the request either.
async fn accept(_body: Bytes) -> impl IntoResponse {
    (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        ACCEPTED_BODY,
    )
}

async fn shutdown_signal() {
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default actions still stop the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let app = Router::new()
        .route("/metrics", post(accept))
        .route("/v1/metrics", post(accept))
        .route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}
