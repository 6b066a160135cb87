//! `metricstream-bench-noop`: the no-op HTTP ceiling of the HTTP suite. It serves the ingest's
//! API surface with the same stack (axum on a multi-threaded tokio runtime) but does no work:
//! `POST /metrics` reads the whole body and answers `202` with a tiny fixed
//! JSON body. Whatever the ingest achieves is measured as a share of what this achieves under
//! the same load generator on the same machine.
//!
//! It is also the decode-only ceiling of the intake suite: `POST /decode/<protocol>` (a name of
//! [`Protocol`]: `native-json`, `influx`, `remote-write-1`, `remote-write-2`, `otlp-protobuf`,
//! `otlp-json`) reads the body, decompresses and decodes it into samples with the ingest's own
//! decoders ([`metricstream_bench::intake::protocol::decode`]), drops them and answers the
//! ingest's success status for that protocol; a body that does not decode whole is `400`, an
//! unknown protocol `404`.
//!
//! `GET /healthz` answers 200 once it serves; SIGTERM or SIGINT stops it gracefully.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use metricstream_bench::intake::protocol::{self, Protocol};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(
    about = "A no-op HTTP endpoint answering 202 to POST /metrics (the HTTP ceiling), and \
    the decode-only ceiling on POST /decode/<protocol>"
)]
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

// Decoding runs inline on the runtime's worker, as the ingest's handlers do it (they also skip
// the blocking pool for bodies bounded by --max-body-bytes).
async fn decode(Path(name): Path<String>, body: Bytes) -> Response {
    let Some(protocol) = Protocol::from_name(&name) else {
        return (StatusCode::NOT_FOUND, format!("no protocol {name:?}\n")).into_response();
    };
    // Only samples without a timestamp take it, and the suite's bodies have none such.
    let received_at_ms = 0;
    match protocol::decode(protocol, &body, received_at_ms) {
        Ok(decoded) if !decoded.is_empty() => {
            drop(decoded);
            let status = StatusCode::from_u16(protocol.success_status()).unwrap_or(StatusCode::OK);
            match protocol {
                // The ingest's answers, so the response bytes match too: its JSON, OTLP's empty
                // ExportMetricsServiceResponse in either encoding, none for the others.
                Protocol::NativeJson => (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    ACCEPTED_BODY,
                )
                    .into_response(),
                Protocol::OtlpJson => (
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"partialSuccess":null}"#,
                )
                    .into_response(),
                Protocol::OtlpProtobuf => (
                    status,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    "",
                )
                    .into_response(),
                _ => status.into_response(),
            }
        }
        Ok(_) => (StatusCode::BAD_REQUEST, "no samples\n").into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!("{error:#}\n")).into_response(),
    }
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
        .route("/decode/{protocol}", post(decode))
        .route("/healthz", get(|| async { "ok\n" }));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")
}
