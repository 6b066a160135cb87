//! What the HTTP and intake suites share to run a target: a run's directory, the no-op server
//! for one oha run, the ingest started and ready, the services' environment.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::oha::{Load, Summary};
use crate::process::{Process, binary, free_loopback_addr};

/// How long a process may take to drain and exit after SIGTERM.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh directory for one run under `work_dir`, named `<prefix>…`, with a `logs` directory.
pub(crate) fn run_dir(work_dir: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(work_dir)
        .with_context(|| format!("creating a run directory in {}", work_dir.display()))?;
    std::fs::create_dir(dir.path().join("logs"))
        .with_context(|| format!("creating {}/logs", dir.path().display()))?;
    Ok(dir)
}

/// Keeps a run's directory (`--keep-dirs`, or a failed run to look into) instead of deleting it.
pub(crate) fn keep_dir(dir: &mut tempfile::TempDir, keep: bool) {
    if keep {
        dir.disable_cleanup(true);
        eprintln!("kept {}", dir.path().display());
    }
}

/// The environment of a service under test: info logs without colour, and no shutdown delay
/// (there is no load balancer to wait for; the default delay is for clusters).
pub(crate) fn service_env() -> [(&'static str, OsString); 3] {
    [
        ("RUST_LOG", OsString::from("info")),
        ("NO_COLOR", OsString::from("1")),
        ("METRICSTREAM_SHUTDOWN_DELAY", OsString::from("0")),
    ]
}

/// How to start `metricstream-ingest` for a bench run: its `args`, its admin endpoint on
/// `admin`, the [`service_env`]; ready once `/readyz` answers. The same command starts it again
/// on the same directories and ports (the peers' crash runs, after a SIGKILL).
pub(crate) struct IngestCommand {
    pub program: PathBuf,
    /// `args` and `--admin-listen <admin>`.
    pub args: Vec<String>,
    admin: SocketAddr,
}

impl IngestCommand {
    pub(crate) fn new(bin_dir: &Path, args: &[String], admin: SocketAddr) -> anyhow::Result<Self> {
        let mut args = args.to_vec();
        args.extend(["--admin-listen".to_owned(), admin.to_string()]);
        Ok(Self {
            program: binary(bin_dir, "metricstream-ingest")?,
            args,
            admin,
        })
    }

    /// Starts it, its output to `log`; returns once its `/readyz` answers.
    pub(crate) async fn start(
        &self,
        http: &reqwest::Client,
        log: &Path,
    ) -> anyhow::Result<Process> {
        let mut ingest = Process::spawn("ingest", &self.program, &self.args, &service_env(), log)?;
        ingest
            .wait_ready(http, &format!("http://{}/readyz", self.admin))
            .await?;
        Ok(ingest)
    }
}

/// Starts `metricstream-ingest` with `args`, its admin endpoint on `admin` and the
/// [`service_env`], its output to `log`; returns once its `/readyz` answers.
pub(crate) async fn start_ingest(
    bin_dir: &Path,
    http: &reqwest::Client,
    args: &[String],
    admin: SocketAddr,
    log: &Path,
) -> anyhow::Result<Process> {
    IngestCommand::new(bin_dir, args, admin)?
        .start(http, log)
        .await
}

/// A fresh `metricstream-bench-noop` for one oha run.
pub(crate) struct Noop<'a> {
    pub bin_dir: &'a Path,
    pub http: &'a reqwest::Client,
    pub oha: &'a Path,
    pub log: &'a Path,
}

impl Noop<'_> {
    /// Starts the server, runs the load `load` makes for the URL of `path` on it, stops it.
    pub(crate) async fn run(
        &self,
        path: &str,
        load: impl FnOnce(String) -> anyhow::Result<Load>,
    ) -> anyhow::Result<(Load, Summary)> {
        let listen = free_loopback_addr()?;
        let mut noop = Process::spawn(
            "noop",
            &binary(self.bin_dir, "metricstream-bench-noop")?,
            &["--listen".to_owned(), listen.to_string()],
            &[],
            self.log,
        )?;
        noop.wait_ready(self.http, &format!("http://{listen}/healthz"))
            .await?;
        let load = load(format!("http://{listen}{path}"))?;
        let summary = load.run(self.oha).await?;
        noop.terminate(STOP_TIMEOUT).await?;
        Ok((load, summary))
    }
}
