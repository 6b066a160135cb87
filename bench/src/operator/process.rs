//! The real `metricstream-operator` as a child process: started on a namespace, ready on its
//! admin port, its Prometheus counters, stopped with SIGTERM.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long the operator may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The operator binary beside the running bench binary (both in target/release), unless given.
pub fn operator_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => std::env::current_exe()
            .context("locating the metricstream-bench executable")?
            .parent()
            .context("the metricstream-bench executable has no directory")?
            .join("metricstream-operator"),
    };
    if !path.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release --workspace --bins` \
             (or pass --operator-bin)",
            path.display()
        );
    }
    Ok(path)
}

pub struct OperatorProcess {
    child: Child,
    pid: u32,
    admin: SocketAddr,
    log: PathBuf,
    /// The command line, for the results.
    pub command_line: String,
}

impl OperatorProcess {
    /// Starts `metricstream-operator run --namespace <namespace>` on a free loopback admin port,
    /// its output in `log`. Killed when dropped.
    pub fn spawn(binary: &Path, namespace: &str, log: &Path) -> anyhow::Result<Self> {
        let admin = metricstream_tests::process::free_loopback_addr();
        let args = [
            "run".to_owned(),
            "--namespace".to_owned(),
            namespace.to_owned(),
            "--admin-listen".to_owned(),
            admin.to_string(),
        ];
        let log_file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let log_for_stdout = log_file
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        let mut command = Command::new(binary);
        // Only the settings chosen here: none inherited from whoever runs the bench.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("METRICSTREAM_") {
                command.env_remove(key);
            }
        }
        command
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log_file)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child
            .id()
            .context("the operator exited before its pid was read")?;
        let shown = std::env::current_dir()
            .ok()
            .and_then(|cwd| binary.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| binary.to_path_buf());
        Ok(Self {
            child,
            pid,
            admin,
            log: log.to_path_buf(),
            command_line: format!("{} {}", shown.display(), args.join(" ")),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Fails if the operator has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the operator")? {
            bail!(
                "the operator exited ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (it has found the CRD and leads).
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = metricstream_tests::http_client(Duration::from_secs(2));
        let url = format!("http://{}/readyz", self.admin);
        let started = Instant::now();
        loop {
            self.ensure_running()?;
            let last = match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    format!("{status} {}", body.trim())
                }
                Err(error) => error.to_string(),
            };
            if started.elapsed() > timeout {
                bail!(
                    "the operator was not ready within {timeout:?}; last answer of {url}: {last}; \
                     its log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The operator's own reconcile counters from its `/metrics`.
    pub async fn reconcile_counters(&self) -> anyhow::Result<ReconcileCounters> {
        let url = format!("http://{}/metrics", self.admin);
        let text = metricstream_tests::http_client(Duration::from_secs(5))
            .get(&url)
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .with_context(|| format!("GET {url}"))?
            .text()
            .await
            .with_context(|| format!("reading GET {url}"))?;
        Ok(ReconcileCounters::parse(&text))
    }

    /// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.pid).context("the operator's pid fits pid_t")?;
        // SAFETY: kill(2) on our own child, not reaped yet, so the pid cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                status.context("waiting for the operator to exit")?;
            }
            Err(_) => {
                eprintln!("operator: no exit {STOP_TIMEOUT:?} after SIGTERM; killing it");
                self.child.kill().await.context("killing the operator")?;
            }
        }
        Ok(())
    }
}

/// The operator's reconcile metrics (`metricstream_operator_*` on its admin `/metrics`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReconcileCounters {
    pub reconciles: f64,
    pub failures: f64,
    pub duration_sum_seconds: f64,
    pub duration_count: f64,
}

impl ReconcileCounters {
    fn parse(text: &str) -> Self {
        let mut counters = Self::default();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            match name {
                "metricstream_operator_reconciles_total" => counters.reconciles += value,
                "metricstream_operator_reconcile_failures_total" => counters.failures += value,
                "metricstream_operator_reconcile_duration_seconds_sum" => {
                    counters.duration_sum_seconds += value
                }
                "metricstream_operator_reconcile_duration_seconds_count" => {
                    counters.duration_count += value
                }
                _ => {}
            }
        }
        counters
    }

    /// Mean time of one reconcile in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        if self.duration_count > 0.0 {
            self.duration_sum_seconds / self.duration_count * 1000.0
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_openmetrics_text() {
        let text = "\
# HELP metricstream_operator_reconciles Reconciles of MetricStreams started.
# TYPE metricstream_operator_reconciles counter
metricstream_operator_reconciles_total 1200
metricstream_operator_reconcile_failures_total{reason=\"conflict\"} 3
metricstream_operator_reconcile_failures_total{reason=\"kube\"} 2
metricstream_operator_reconcile_duration_seconds_sum 60.0
metricstream_operator_reconcile_duration_seconds_count 1200
metricstream_operator_reconcile_duration_seconds_bucket{le=\"0.005\"} 0
# EOF
";
        let counters = ReconcileCounters::parse(text);
        assert_eq!(counters.reconciles, 1200.0);
        assert_eq!(counters.failures, 5.0);
        assert_eq!(counters.mean_ms(), 50.0);
    }
}
