//! Reloading mounted Secrets: the tokens file and the TLS certificate and key.
//!
//! Kubernetes updates a Secret volume by writing the new files into a fresh directory and
//! swapping the `..data` symlink to it, so file modification times and inotify watches on the
//! old paths say little. The files are therefore polled by content: every interval each path is
//! opened anew (following the symlinks as they are now) and read, and a change of the SHA-256
//! digest over all of them is what triggers a reload. A reload that fails keeps what is in use;
//! the failure is logged (never the content) and counted.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::metrics::IngestMetrics;
/// What is reloaded. It labels the reload metrics, so it lives with them in `metrics` (which must
/// not depend on this module); re-exported here, where callers name it.
pub use crate::metrics::SecretKind;

/// The files one secret is made of, and the digest of their content when last read.
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    last_digest: Option<[u8; 32]>,
    /// The last read error's message, so a file that stays unreadable is reported once.
    last_read_error: Option<String>,
}

impl WatchedFiles {
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            last_digest: None,
            last_read_error: None,
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every file. `Ok(Some(contents))` (in the order of the paths) when the content
    /// differs from the last read, `Ok(None)` when it is the same.
    pub fn read_if_changed(&mut self) -> std::io::Result<Option<Vec<Vec<u8>>>> {
        let mut contents = Vec::with_capacity(self.paths.len());
        let mut hasher = Sha256::new();
        for path in &self.paths {
            let content = std::fs::read(path).map_err(|error| {
                std::io::Error::new(error.kind(), format!("reading {}: {error}", path.display()))
            })?;
            // The length first, so moving bytes from one file to the next is a change too.
            hasher.update((content.len() as u64).to_le_bytes());
            hasher.update(&content);
            contents.push(content);
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if self.last_digest == Some(digest) {
            return Ok(None);
        }
        self.last_digest = Some(digest);
        Ok(Some(contents))
    }
}

/// Polls `files` every `interval` until `shutdown`, calling `apply` with the new content of a
/// change. `apply` parses it and swaps it in, or returns why it cannot (a message that must not
/// contain the secret); then the old one stays in use. `files` must have been read once
/// already (the content in use at startup), so only later changes count.
pub async fn poll_for_changes(
    kind: SecretKind,
    mut files: WatchedFiles,
    interval: Duration,
    metrics: IngestMetrics,
    shutdown: CancellationToken,
    mut apply: impl FnMut(&[Vec<u8>]) -> anyhow::Result<()> + Send,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; the startup read just happened.
    ticks.tick().await;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let contents = match files.read_if_changed() {
            Ok(Some(contents)) => {
                files.last_read_error = None;
                contents
            }
            Ok(None) => {
                files.last_read_error = None;
                continue;
            }
            Err(error) => {
                let message = error.to_string();
                if files.last_read_error.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        secret = kind.label(),
                        error = %message,
                        "cannot read the secret's files; still using the ones loaded before"
                    );
                    metrics.record_secret_reload(kind, false);
                    files.last_read_error = Some(message);
                }
                continue;
            }
        };
        match apply(&contents) {
            Ok(()) => {
                tracing::info!(
                    secret = kind.label(),
                    files = %display_paths(files.paths()),
                    "reloaded the secret after its files changed"
                );
                metrics.record_secret_reload(kind, true);
            }
            Err(error) => {
                tracing::error!(
                    secret = kind.label(),
                    files = %display_paths(files.paths()),
                    error = format!("{error:#}"),
                    "the secret's files changed but cannot be used; still using the ones \
                     loaded before"
                );
                metrics.record_secret_reload(kind, false);
            }
        }
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|path| Path::display(path).to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_seen_once_and_symlink_swaps_are_followed() {
        let dir = tempfile::tempdir().expect("temporary directory");
        // The layout kubelet makes: tokens -> ..data/tokens, ..data -> ..2026_1.
        let first = dir.path().join("..2026_1");
        let second = dir.path().join("..2026_2");
        std::fs::create_dir(&first).expect("mkdir");
        std::fs::create_dir(&second).expect("mkdir");
        std::fs::write(first.join("tokens"), "a=1").expect("write");
        std::fs::write(second.join("tokens"), "a=2").expect("write");
        std::os::unix::fs::symlink("..2026_1", dir.path().join("..data")).expect("symlink");
        std::os::unix::fs::symlink("..data/tokens", dir.path().join("tokens")).expect("symlink");

        let mut files = WatchedFiles::new(vec![dir.path().join("tokens")]);
        let read = files.read_if_changed().expect("reads");
        assert_eq!(read, Some(vec![b"a=1".to_vec()]));
        assert_eq!(files.read_if_changed().expect("reads"), None);

        // The atomic swap: a new symlink renamed over ..data.
        std::os::unix::fs::symlink("..2026_2", dir.path().join("..data_tmp")).expect("symlink");
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("rename");
        let read = files.read_if_changed().expect("reads");
        assert_eq!(read, Some(vec![b"a=2".to_vec()]));
        assert_eq!(files.read_if_changed().expect("reads"), None);
    }

    #[test]
    fn bytes_moving_between_files_is_a_change() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "xy").expect("write");
        std::fs::write(&b, "z").expect("write");
        let mut files = WatchedFiles::new(vec![a.clone(), b.clone()]);
        assert!(files.read_if_changed().expect("reads").is_some());
        std::fs::write(&a, "x").expect("write");
        std::fs::write(&b, "yz").expect("write");
        assert!(files.read_if_changed().expect("reads").is_some());
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut files = WatchedFiles::new(vec![dir.path().join("absent")]);
        let error = files.read_if_changed().expect_err("missing");
        assert!(error.to_string().contains("absent"), "{error}");
    }
}
