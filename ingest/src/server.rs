//! The ingest API's accept loop: plain TCP or TLS, HTTP/1.1 through hyper, with the deadlines
//! that keep a slow or silent client from holding a connection, and a graceful shutdown that
//! stops accepting, lets requests in progress finish and closes idle connections. Between the
//! shutdown signal and that graceful shutdown (`--shutdown-delay`), responses carry
//! `Connection: close` so that kept-alive clients move to another replica on their own.
//!
//! hyper 1.x offers `header_read_timeout`, but its timer starts whenever the connection waits
//! for a request head, idle time between kept-alive requests included, so it cannot give idle
//! connections longer than a request's headers. Each connection therefore has a watchdog here
//! that knows which phase it is in:
//! - waiting for the first byte of the next request on a kept-alive connection: `idle_timeout`;
//! - reading a request's head (from the connection's start, or from the first byte of the next
//!   request): `header_read_timeout`;
//! - a request in progress: no deadline here (the handler bounds the body with
//!   `--body-read-timeout`, and the queue bounds the append).
//!
//! When a deadline passes the connection is dropped, which closes the socket.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::IngestMetrics;

/// The deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// How the API listener serves.
pub struct ServeSettings {
    pub timeouts: Timeouts,
    /// `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    pub metrics: IngestMetrics,
    /// Once cancelled (the shutdown signal, ahead of `shutdown`), every response carries
    /// `Connection: close`: a kept-alive client then reconnects through the load balancer, which
    /// no longer picks this process, instead of reusing a connection that is about to close.
    pub close_after_response: CancellationToken,
}

/// Accepts connections on `listener` and serves `router` on each until `shutdown`; then stops
/// accepting and returns once every connection has finished its requests and closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let settings = Arc::new(settings);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // Out of file descriptors, say: retrying at once would spin.
                tracing::error!(%error, "accepting a connection failed; retrying in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "cannot set TCP_NODELAY");
        }
        tokio::spawn(serve_connection(
            stream,
            router.clone(),
            settings.clone(),
            graceful.watcher(),
        ));
    }
    drop(listener);
    tracing::debug!(
        connections = graceful.count(),
        "stopped accepting; waiting for open connections to finish"
    );
    graceful.shutdown().await;
    Ok(())
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    settings: Arc<ServeSettings>,
    watcher: Watcher,
) {
    let Some(tls) = &settings.tls else {
        serve_http(stream, router, &settings, watcher).await;
        return;
    };
    // The handshake counts as part of receiving the first request's head.
    match tokio::time::timeout(settings.timeouts.header_read, tls.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(stream, router, &settings, watcher).await,
        Ok(Err(error)) => {
            tracing::debug!(%error, "TLS handshake failed");
            settings.metrics.record_connection_closed("tls_handshake");
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out");
            settings.metrics.record_connection_closed("tls_handshake");
        }
    }
}

async fn serve_http<S>(stream: S, router: Router, settings: &ServeSettings, watcher: Watcher)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(ConnectionPhase::new());
    let io = TokioIo::new(WatchedIo {
        inner: stream,
        phase: phase.clone(),
    });
    let service = {
        let phase = phase.clone();
        let close_after_response = settings.close_after_response.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_progress = RequestInProgress::begin(phase.clone());
            let router = router.clone();
            let close_after_response = close_after_response.clone();
            async move {
                let mut response = router.oneshot(request.map(Body::new)).await;
                // hyper closes the connection after a response that says so.
                if close_after_response.is_cancelled()
                    && let Ok(response) = &mut response
                {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                drop(in_progress);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog below keeps the header deadline (hyper's own one would also cut idle
    // kept-alive connections at the header deadline).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let connection = watcher.watch(builder.serve_connection(io, service));
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        reason = phase.deadline_passed(settings.timeouts) => {
            tracing::debug!(reason, "closing a connection whose client is too slow");
            settings.metrics.record_connection_closed(reason);
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first byte of the next request on a kept-alive connection.
    Idle,
    /// Receiving a request's head.
    ReadingHead,
    /// This many requests are being handled (HTTP/1.1 handles one at a time).
    Busy(usize),
}

/// Where a connection is, and since when; shared by the socket wrapper (bytes arriving), the
/// service (requests starting and ending) and the watchdog.
struct ConnectionPhase {
    state: Mutex<(Phase, Instant)>,
    changed: Notify,
}

impl ConnectionPhase {
    fn new() -> Self {
        Self {
            // A new connection owes us a request head from its first moment.
            state: Mutex::new((Phase::ReadingHead, Instant::now())),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(Phase) -> Option<Phase>) {
        // A poisoned lock means a panic while holding it, which the code below cannot do; the
        // state is two plain values and stays consistent either way.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(next) = change(state.0) {
            *state = (next, Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn current(&self) -> (Phase, Instant) {
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_arrived(&self) {
        self.update(|phase| (phase == Phase::Idle).then_some(Phase::ReadingHead));
    }

    fn request_started(&self) {
        self.update(|phase| match phase {
            Phase::Busy(requests) => Some(Phase::Busy(requests + 1)),
            Phase::Idle | Phase::ReadingHead => Some(Phase::Busy(1)),
        });
    }

    fn request_ended(&self) {
        self.update(|phase| match phase {
            Phase::Busy(requests) if requests > 1 => Some(Phase::Busy(requests - 1)),
            _ => Some(Phase::Idle),
        });
    }

    /// Resolves with the metric reason once the connection has been idle or reading a head for
    /// too long.
    async fn deadline_passed(&self, timeouts: Timeouts) -> &'static str {
        loop {
            // Registered before reading the state, so a change in between still wakes us.
            let changed = self.changed.notified();
            let (phase, since) = self.current();
            let (limit, reason) = match phase {
                Phase::Idle => (timeouts.idle, "idle_timeout"),
                Phase::ReadingHead => (timeouts.header_read, "header_timeout"),
                Phase::Busy(_) => {
                    changed.await;
                    continue;
                }
            };
            tokio::select! {
                () = tokio::time::sleep_until(since + limit) => {
                    // Still the same phase since the same moment: the deadline holds.
                    if self.current() == (phase, since) {
                        return reason;
                    }
                }
                () = changed => {}
            }
        }
    }
}

/// Marks a request as being handled for as long as it lives (dropped also when the connection
/// is, mid-request).
struct RequestInProgress(Arc<ConnectionPhase>);

impl RequestInProgress {
    fn begin(phase: Arc<ConnectionPhase>) -> Self {
        phase.request_started();
        Self(phase)
    }
}

impl Drop for RequestInProgress {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The connection's byte stream, telling the watchdog when bytes arrive.
struct WatchedIo<S> {
    inner: S,
    phase: Arc<ConnectionPhase>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.bytes_arrived();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
