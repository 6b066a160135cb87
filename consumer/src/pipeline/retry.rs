//! Running sink operations off the async runtime (in blocking tasks) and retrying the failing
//! ones with a capped exponential backoff, keeping readiness and the error count up to date.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{PipelineError, PipelineSettings};
use crate::health::Health;
use crate::metrics::ConsumerMetrics;
use crate::sink::{Sink, SinkError};

/// Runs sink operations in blocking tasks and retries them. Kept apart from the consumer,
/// which is `Send` but not `Sync`, so that its futures may borrow it across awaits.
pub(super) struct SinkRunner<S: Sink> {
    /// Shared with the blocking tasks that do the sink's file I/O off the async runtime.
    pub(super) sink: Arc<Mutex<S>>,
    pub(super) metrics: ConsumerMetrics,
    pub(super) health: Arc<Health>,
    pub(super) settings: PipelineSettings,
}

impl<S: Sink> SinkRunner<S> {
    /// Retries a fallible sink operation until it succeeds (`true`) or shutdown is requested
    /// while it is failing (`false`). `make` builds a fresh attempt each time.
    pub(super) async fn retry<F>(
        &self,
        what: &str,
        make: impl Fn() -> F,
        shutdown: &CancellationToken,
    ) -> Result<bool, PipelineError>
    where
        F: FnOnce(&mut S) -> Result<(), SinkError> + Send + 'static,
    {
        Ok(self.retry_value(what, make, shutdown).await?.is_some())
    }

    pub(super) async fn retry_value<F, R>(
        &self,
        what: &str,
        make: impl Fn() -> F,
        shutdown: &CancellationToken,
    ) -> Result<Option<R>, PipelineError>
    where
        F: FnOnce(&mut S) -> Result<R, SinkError> + Send + 'static,
        R: Send + 'static,
    {
        let mut backoff = Backoff::new(&self.settings);
        loop {
            match self.run(make()).await? {
                Ok(value) => {
                    self.health.sink_recovered();
                    return Ok(Some(value));
                }
                Err(error) => {
                    self.metrics.sink_errors.inc();
                    self.health.sink_failed(error.to_string());
                    if shutdown.is_cancelled() {
                        tracing::error!(
                            %error,
                            "{what} failed during shutdown; leaving the batch uncommitted for \
                             re-delivery"
                        );
                        return Ok(None);
                    }
                    tracing::error!(%error, "{what} failed; retrying without committing");
                    // A sink that knows when trying again makes sense (its circuit breaker's
                    // next probe) is retried then, neither sooner nor later.
                    let delay = error.retry_in().unwrap_or_else(|| backoff.next_delay());
                    pause(delay, shutdown).await;
                }
            }
        }
    }

    /// Runs `operation` on the sink in a blocking task: sink I/O includes `fdatasync`, which
    /// must not stall the async workers.
    pub(super) async fn run<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Result<R, PipelineError> {
        let sink = Arc::clone(&self.sink);
        tokio::task::spawn_blocking(move || {
            let mut sink = sink.lock().map_err(|_| {
                PipelineError::SinkPanicked("an earlier sink operation panicked".to_owned())
            })?;
            Ok(operation(&mut sink))
        })
        .await
        .map_err(|error| PipelineError::SinkPanicked(error.to_string()))?
    }
}

/// Capped exponential backoff between retries of one failing operation.
pub(super) struct Backoff {
    pub(super) first: Duration,
    pub(super) max: Duration,
    pub(super) next: Duration,
}

impl Backoff {
    pub(super) fn new(settings: &PipelineSettings) -> Self {
        Self {
            first: settings.retry_backoff,
            max: settings.max_retry_backoff,
            next: settings.retry_backoff,
        }
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Sleeps for `delay`, waking early on shutdown so the caller can make its last attempt.
pub(super) async fn pause(delay: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use metricstream_backend::PollLimits;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut backoff = Backoff::new(&PipelineSettings::new(
            PollLimits::records(1),
            Duration::from_millis(1),
        ));
        let delays: Vec<u64> = (0..6).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_secs(1));
    }
}
