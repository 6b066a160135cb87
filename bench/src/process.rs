//! The processes the suites start (the no-op server, the ingest, the consumer): started from the
//! release binaries with only the settings given here, output to a log file, ready when an HTTP
//! probe answers 200, stopped with SIGTERM.
//!
//! The tests crate's harness (`metricstream_tests::process`) does the same for tests, but it
//! panics on every failure and finds binaries relative to a test executable; a benchmark wants
//! errors with context and the binaries beside its own executable.

use std::ffi::OsString;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long a process may take to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback address no one listens on right now, below the kernel's ephemeral range (see
/// `metricstream_tests::process::free_loopback_addr`: a `bind(0)` port can be given to an
/// outgoing connection before the service binds it).
pub fn free_loopback_addr() -> anyhow::Result<SocketAddr> {
    Ok(metricstream_tests::process::free_loopback_addr())
}

/// The directory of the release binaries: `--bin-dir`, else the one holding this executable
/// (`target/release`, where `cargo build --release --workspace --bins` puts them all).
pub fn bin_dir(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    let exe = std::env::current_exe().context("locating metricstream-bench's executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no parent directory", exe.display()))
}

/// `<dir>/<name>`, which must exist.
pub fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release --workspace --bins` \
             (or point --bin-dir / METRICSTREAM_BIN_DIR at the binaries)",
            path.display()
        );
    }
    Ok(path)
}

/// A running process; killed if dropped while it runs.
pub struct Process {
    label: String,
    child: Child,
    log_path: PathBuf,
}

impl Process {
    /// Starts `program` with `args` and `env` (and no `METRICSTREAM_*` variable inherited from
    /// whoever runs the benchmark), its stdout and stderr going to `log_path`.
    pub fn spawn(
        label: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, OsString)],
        log_path: &Path,
    ) -> anyhow::Result<Self> {
        let log =
            File::create(log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let log_for_stdout = log
            .try_clone()
            .with_context(|| format!("duplicating {}", log_path.display()))?;
        let mut command = Command::new(program);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("METRICSTREAM_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("{} has already exited", self.label))
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self
            .child
            .try_wait()
            .with_context(|| format!("polling {}", self.label))?
        {
            bail!(
                "{} exited early ({status}); its log: {}",
                self.label,
                self.log_path.display()
            );
        }
        Ok(())
    }

    /// Waits until GET `url` answers 200; fails if the process exits first or after
    /// [`READY_TIMEOUT`].
    pub async fn wait_ready(&mut self, client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut last;
        loop {
            if let Some(status) = self
                .child
                .try_wait()
                .with_context(|| format!("polling {}", self.label))?
            {
                bail!(
                    "{} exited ({status}) before it became ready; its log: {}",
                    self.label,
                    self.log_path.display()
                );
            }
            match client.get(url).send().await {
                Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(response) => last = format!("status {}", response.status()),
                Err(error) => last = error.to_string(),
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} was not ready within {READY_TIMEOUT:?} (last answer of {url}: {last}); \
                     its log: {}",
                    self.label,
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the exit of a process signalled elsewhere (SIGKILL) and reaps it. A process is
    /// not gone when kill(2) returns: until this does, it may still hold its listening port and
    /// its file locks, and a restart on the same ones fails.
    pub async fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {} to exit", self.label))
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then SIGKILL). Fails unless the
    /// process exited with status 0 by itself.
    pub async fn terminate(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let pid = libc::pid_t::try_from(self.pid()?).context("a pid that fits pid_t")?;
        // SAFETY: kill(2) on our own child, not reaped yet, so the pid cannot have been reused.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("sending SIGTERM to {} (pid {pid})", self.label));
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                let status = status.with_context(|| format!("waiting for {}", self.label))?;
                if !status.success() {
                    bail!(
                        "{} exited with {status} after SIGTERM; its log: {}",
                        self.label,
                        self.log_path.display()
                    );
                }
                Ok(status)
            }
            Err(_) => {
                self.child
                    .kill()
                    .await
                    .with_context(|| format!("killing {}", self.label))?;
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM and was killed; its log: {}",
                    self.label,
                    self.log_path.display()
                )
            }
        }
    }
}
