//! The HTTP call to the store: the client (TLS, credentials) built once at startup, and one
//! attempt at a request, its answer classified.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::RemoteWriteSettings;
use super::credentials::Credentials;
use super::delivery::{Answer, StatusClass, classify, parse_retry_after};
use super::series::Protocol;
use super::tls;
use crate::metrics::RemoteWriteMetrics;
use crate::sink::SinkError;

/// The most of a store's error answer kept (for logs and dead letters).
const MAX_REASON_BYTES: usize = 1024;

/// Where and how requests go.
pub(super) struct Endpoint {
    client: reqwest::Client,
    pub(super) url: reqwest::Url,
    pub(super) protocol: Protocol,
    credentials: Option<Credentials>,
}

impl Endpoint {
    /// Checks the URL, reads the credentials and TLS files, and builds the HTTP client; makes
    /// no request.
    pub(super) fn open(settings: &RemoteWriteSettings) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(&settings.url).map_err(|error| {
            SinkError::Store(format!(
                "--sink-url {:?} is not a URL: {error}",
                settings.url
            ))
        })?;
        let builder = reqwest::Client::builder().timeout(settings.request_timeout);
        let builder = match url.scheme() {
            "https" => builder.tls_backend_preconfigured(tls::client_config(&settings.tls)?),
            // reqwest has no provider of its own (see the workspace's Cargo.toml), so even a
            // plain-text client gets a config: one that trusts nothing, for an https:// redirect.
            "http" if settings.tls.is_empty() => {
                builder.tls_backend_preconfigured(tls::trusting_nothing()?)
            }
            // TLS files for a plain-text store are a mistake that would send the credentials in
            // clear, not something to ignore.
            "http" => {
                return Err(SinkError::Store(format!(
                    "--sink-url {url} is http://, but TLS files (--sink-ca-file, \
                     --sink-client-cert-file) are set: use an https:// URL"
                )));
            }
            _ => {
                return Err(SinkError::Store(format!(
                    "--sink-url {url}: only http:// and https:// are supported"
                )));
            }
        };
        let client = builder
            .build()
            .map_err(|error| SinkError::Store(format!("building the HTTP client: {error}")))?;
        let credentials = settings.auth.as_ref().map(Credentials::open).transpose()?;
        Ok(Self {
            client,
            url,
            protocol: settings.protocol,
            credentials,
        })
    }

    /// Posts one snappy-compressed remote-write body and classifies the answer, counting
    /// the request by outcome and timing it.
    pub(super) async fn post(&self, body: Bytes, metrics: &RemoteWriteMetrics) -> Answer {
        let started = Instant::now();
        let answer = self.attempt(body).await;
        metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.request(match answer {
            Answer::Success => RemoteWriteMetrics::SUCCESS,
            Answer::Retryable { .. } => RemoteWriteMetrics::RETRYABLE,
            Answer::Rejected { .. } => RemoteWriteMetrics::REJECTED,
            Answer::Network(_) => RemoteWriteMetrics::NETWORK_ERROR,
        });
        answer
    }

    async fn attempt(&self, body: Bytes) -> Answer {
        let mut request = self
            .client
            .post(self.url.clone())
            .header("Content-Type", self.protocol.content_type())
            .header("Content-Encoding", "snappy")
            .header(
                "X-Prometheus-Remote-Write-Version",
                self.protocol.version_header(),
            )
            .body(body);
        if let Some(credentials) = &self.credentials {
            request = credentials.authorize(request);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Answer::Network(error_chain(&error)),
        };
        let status = response.status().as_u16();
        if let (401 | 403, Some(credentials)) = (status, &self.credentials) {
            credentials.refused();
        }
        // A 2.0 receiver counts what it wrote in these headers; a 1.0 receiver reads a 2.0 body
        // as an empty 1.0 request (its fields have other numbers) and answers 2xx having
        // written nothing. So a 2xx without the count is not taken as stored.
        let counted = response
            .headers()
            .contains_key("X-Prometheus-Remote-Write-Samples-Written");
        let retry_after = response
            .headers()
            .get("Retry-After")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        // The answer is read (a bounded part of it) so the connection can be reused.
        let mut reason = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_REASON_BYTES.saturating_sub(reason.len());
                    reason.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(error) if classify(status) == StatusClass::Success => {
                    // Stored, whatever happened to the rest of the answer.
                    tracing::debug!(error = %error_chain(&error), "reading a 2xx answer failed");
                    break;
                }
                Err(error) => return Answer::Network(error_chain(&error)),
            }
        }
        let mut reason = String::from_utf8_lossy(&reason).trim().to_owned();
        if status == 415 && self.protocol == Protocol::V2 {
            reason.push_str(
                " (the store does not take remote write 2.0 here: --sink-protocol 1.0 sends what \
                 every receiver takes)",
            );
        }
        match classify(status) {
            StatusClass::Success if self.protocol == Protocol::V2 && !counted => {
                Answer::Retryable {
                    status,
                    retry_after: None,
                    reason: "a 2xx without X-Prometheus-Remote-Write-Samples-Written: the store \
                             does not take remote write 2.0 (a 1.0 receiver reads a 2.0 body as \
                             an empty request); --sink-protocol 1.0 sends what every receiver \
                             takes"
                        .to_owned(),
                }
            }
            StatusClass::Success => Answer::Success,
            StatusClass::Retryable => Answer::Retryable {
                status,
                retry_after,
                reason,
            },
            StatusClass::Rejected => Answer::Rejected { status, reason },
        }
    }
}

/// An error with its sources, on one line (reqwest's own message alone says little).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
