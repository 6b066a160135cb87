//! Shutdown: SIGTERM and SIGINT, the signals that stop a service.

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    ShutdownSignals::install().next().await;
}

/// SIGTERM and SIGINT (Ctrl-C), listened to for the life of the process, so that a second
/// signal can be told apart from the first (and none arriving in between is missed).
pub struct ShutdownSignals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    pub fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::error!(
                    %error,
                    "cannot listen for {name}; only the other signal stops this process"
                );
                None
            }
        };
        Self {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Waits for the next SIGTERM or SIGINT and logs it.
    pub async fn next(&mut self) {
        async fn receive(stream: &mut Option<tokio::signal::unix::Signal>) {
            match stream {
                Some(stream) => {
                    stream.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = receive(&mut self.terminate) => tracing::info!("SIGTERM received; shutting down"),
            () = receive(&mut self.interrupt) => {
                tracing::info!("interrupt received; shutting down");
            }
        }
    }
}
