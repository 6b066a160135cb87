//! VictoriaMetrics single-node (built by `hack/victoriametrics.sh`; `VICTORIAMETRICS` names the
//! binary) as the store the remote-write sink writes to, and reading its samples back through
//! `/api/v1/export`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http_client;
use crate::process::{free_loopback_addr, wait_for_http_ok};

pub fn victoriametrics_binary() -> String {
    std::env::var("VICTORIAMETRICS").unwrap_or_else(|_| {
        panic!(
            "VICTORIAMETRICS is not set: run `bash hack/victoriametrics.sh install` and export \
             the VICTORIAMETRICS=... line it prints (make test does both)"
        )
    })
}

/// Runs the binary with the flags [`VictoriaMetrics::start`] explains, appending to `log_path`.
fn spawn(listen: SocketAddr, data_dir: &Path, log_path: &Path, dedup: bool) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", log_path.display()));
    let log_for_stdout = log.try_clone().expect("duplicating the log handle");
    let mut command = Command::new(victoriametrics_binary());
    if dedup {
        command.arg("-dedup.minScrapeInterval=1ms");
    }
    command
        .arg(format!("-storageDataPath={}", data_dir.display()))
        .arg(format!("-httpListenAddr={listen}"))
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=WARN")
        .stdin(Stdio::null())
        .stdout(log_for_stdout)
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("starting VictoriaMetrics: {error}"))
}

/// One series of an export: its labels (`__name__` included) and its samples.
#[derive(Clone, Debug, Deserialize)]
pub struct ExportedSeries {
    pub metric: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps: Vec<i64>,
}

/// A running VictoriaMetrics, killed (SIGKILL) when dropped.
pub struct VictoriaMetrics {
    child: Child,
    pub listen: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    dedup: bool,
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl VictoriaMetrics {
    /// Starts VictoriaMetrics on a free loopback port with its data in `dir/victoriametrics`,
    /// its log in `logs_dir`, and the flags the sink needs:
    /// `-dedup.minScrapeInterval=1ms`, so that a replayed sample is kept once, and
    /// `-retentionPeriod=100y`, because the load's timestamps are from 2023 and samples older
    /// than the retention (1 month by default) are dropped silently, with a 2xx.
    pub async fn start(dir: &Path, logs_dir: &Path) -> Self {
        Self::start_with(dir, logs_dir, "victoriametrics", true).await
    }

    /// [`VictoriaMetrics::start`], named `name` (its data directory and log), with or without
    /// deduplication.
    pub async fn start_with(dir: &Path, logs_dir: &Path, name: &str, dedup: bool) -> Self {
        let listen = free_loopback_addr();
        let data_dir = dir.join(name);
        let log_path = logs_dir.join(format!("{name}.log"));
        let child = spawn(listen, &data_dir, &log_path, dedup);
        let mut store = Self {
            child,
            listen,
            data_dir,
            log_path,
            dedup,
        };
        store.wait_healthy().await;
        store
    }

    /// Stops the store the way an operator would (SIGTERM: it flushes what it acknowledged) and
    /// waits for it to exit.
    pub fn stop(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: `kill` with a pid of a child this struct has not reaped yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(
            sent,
            0,
            "SIGTERM to VictoriaMetrics: {}",
            std::io::Error::last_os_error()
        );
        let status = self.child.wait().expect("waiting for VictoriaMetrics");
        assert!(
            status.success(),
            "VictoriaMetrics exited with {status} after SIGTERM"
        );
    }

    /// Starts the store again on the same address and data (after [`VictoriaMetrics::stop`]).
    pub async fn restart(&mut self) {
        self.child = spawn(self.listen, &self.data_dir, &self.log_path, self.dedup);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let url = format!("http://{}/health", self.listen);
        wait_for_http_ok(
            &mut self.child,
            &url,
            "VictoriaMetrics",
            &self.log_path,
            Duration::from_secs(30),
        )
        .await;
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.listen)
    }

    /// Makes pending samples searchable, then exports every series `selector` matches.
    pub async fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        let client = http_client(Duration::from_secs(30));
        let flushed = client
            .get(format!("http://{}/internal/force_flush", self.listen))
            .send()
            .await
            .expect("GET /internal/force_flush");
        assert!(flushed.status().is_success(), "force_flush: {flushed:?}");
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/export", self.listen),
            [("match[]", selector)],
        )
        .expect("the export URL");
        let response = client.get(url).send().await.expect("GET /api/v1/export");
        assert!(response.status().is_success(), "export: {response:?}");
        let text = response.text().await.expect("reading the export");
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("export line {line:?}: {error}"))
            })
            .collect()
    }

    /// Exports `selector` until it holds at least `samples` samples or `timeout` passes (new
    /// samples take a moment to show even after a flush); returns the last export.
    pub async fn wait_for_samples(
        &self,
        selector: &str,
        samples: usize,
        timeout: Duration,
    ) -> Vec<ExportedSeries> {
        let started = Instant::now();
        loop {
            let series = self.export(selector).await;
            let held: usize = series.iter().map(|s| s.values.len()).sum();
            if held >= samples || started.elapsed() > timeout {
                return series;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
