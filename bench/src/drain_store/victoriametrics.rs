//! A fresh VictoriaMetrics single-node per measurement (the binary `VICTORIAMETRICS` names,
//! built by `hack/victoriametrics.sh`), with the flags the remote-write sink needs, its own
//! counters read from its `/metrics`, and its samples counted through its export API.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Deserialize;

use crate::process::{Process, free_loopback_addr};

/// How long VictoriaMetrics may take to exit after SIGTERM (it flushes its buffers first).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the store's counters and exports are read while waiting for them.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The server binary: `$VICTORIAMETRICS`, which must exist.
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("VICTORIAMETRICS")
        .map(PathBuf::from)
        .context(
            "VICTORIAMETRICS is not set: run `bash hack/victoriametrics.sh install` and export the \
         VICTORIAMETRICS=... line it prints (make bench does both)",
        )?;
    anyhow::ensure!(
        path.is_file(),
        "VICTORIAMETRICS={} does not exist: bash hack/victoriametrics.sh install",
        path.display()
    );
    Ok(path)
}

/// The store's own counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreCounters {
    /// `vm_rows_added_to_storage_total`: samples added to the storage (each request's samples
    /// before VictoriaMetrics answers it).
    pub rows_added: f64,
    /// `vm_http_requests_total{path="/api/v1/write", ...}`: remote-write requests received.
    pub write_requests: f64,
}

pub struct VictoriaMetrics {
    process: Process,
    dir: PathBuf,
    pid: u32,
    base: String,
    client: reqwest::Client,
    /// The command line, for the results.
    pub command: String,
}

/// One series of an export: its labels (`__name__` too) and its samples' timestamps (the
/// values are not read).
#[derive(Deserialize)]
pub struct ExportedSeries {
    pub metric: std::collections::BTreeMap<String, String>,
    pub timestamps: Vec<i64>,
}

impl VictoriaMetrics {
    /// Starts a server on a free loopback port with its data in `dir` (which should not exist
    /// yet: a fresh store) and its output in `log_path`, and waits until `/health` answers.
    /// `-dedup.minScrapeInterval=1ms` as docs/sink.md requires for the sink's replays,
    /// `-retentionPeriod=100y` because the backlog's timestamps are from 2023.
    pub async fn start(dir: &Path, log_path: &Path) -> anyhow::Result<Self> {
        let program = binary()?;
        let listen = free_loopback_addr()?;
        let args = vec![
            format!("-storageDataPath={}", dir.display()),
            format!("-httpListenAddr={listen}"),
            "-dedup.minScrapeInterval=1ms".to_owned(),
            "-retentionPeriod=100y".to_owned(),
            "-loggerLevel=WARN".to_owned(),
        ];
        let env: [(&str, OsString); 0] = [];
        let mut process = Process::spawn("VictoriaMetrics", &program, &args, &env, log_path)?;
        let pid = process.pid()?;
        let client = metricstream_tests::http_client_builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building an HTTP client")?;
        let base = format!("http://{listen}");
        process
            .wait_ready(&client, &format!("{base}/health"))
            .await?;
        Ok(Self {
            process,
            dir: dir.to_path_buf(),
            pid,
            base,
            client,
            command: format!("victoria-metrics {}", args.join(" ")),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.base)
    }

    pub async fn counters(&self) -> anyhow::Result<StoreCounters> {
        let url = format!("{}/metrics", self.base);
        let text = self
            .client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .text()
            .await
            .with_context(|| format!("reading {url}"))?;
        Ok(parse_counters(&text))
    }

    /// Waits until the storage has added at least `samples` rows; fails after `timeout` or if
    /// the server exits.
    pub async fn wait_rows_added(&mut self, samples: f64, timeout: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            self.process.check_running()?;
            let counters = self.counters().await?;
            if counters.rows_added >= samples {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < timeout,
                "VictoriaMetrics added {} of {samples} rows within {timeout:?}; its log: {}",
                counters.rows_added,
                self.process.log_path().display()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Turns the rows buffered in memory into searchable parts (`/internal/force_flush`,
    /// answered when done): work the store would otherwise do within a second or two anyway.
    pub async fn force_flush(&self) -> anyhow::Result<()> {
        let flush = format!("{}/internal/force_flush", self.base);
        self.client
            .get(&flush)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {flush}"))?;
        Ok(())
    }

    /// Flushes, then counts the samples the export of `selector` holds (deduplicated, as every
    /// query sees them).
    pub async fn exported_samples(&self, selector: &str) -> anyhow::Result<u64> {
        let series = self.export(selector).await?;
        Ok(series.iter().map(|s| s.timestamps.len() as u64).sum())
    }

    /// Flushes, then exports every series of `selector`: its labels and its samples'
    /// timestamps (deduplicated, as every query sees them).
    pub async fn export(&self, selector: &str) -> anyhow::Result<Vec<ExportedSeries>> {
        self.force_flush().await?;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.base),
            [("match[]", selector)],
        )
        .context("the export URL")?;
        let text = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("GET /api/v1/export")?
            .text()
            .await
            .context("reading the export")?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("an export line: {:.200}", line))
            })
            .collect()
    }

    /// Flushes and exports until the export holds at least `samples` samples (a flushed sample
    /// can take a moment more to show) or `timeout` passes; returns the last count and the
    /// seconds it took.
    pub async fn wait_exported(
        &self,
        selector: &str,
        samples: u64,
        timeout: Duration,
    ) -> anyhow::Result<(u64, f64)> {
        let started = Instant::now();
        loop {
            let held = self.exported_samples(selector).await?;
            if held >= samples || started.elapsed() > timeout {
                return Ok((held, started.elapsed().as_secs_f64()));
            }
            tokio::time::sleep(POLL_INTERVAL * 10).await;
        }
    }

    /// Sends SIGTERM, waits for a clean exit (SIGKILL after [`STOP_TIMEOUT`]), and removes
    /// the store's data.
    pub async fn terminate(self) -> anyhow::Result<()> {
        self.process.terminate(STOP_TIMEOUT).await?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

fn parse_counters(text: &str) -> StoreCounters {
    let mut counters = StoreCounters::default();
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if name == "vm_rows_added_to_storage_total" {
            counters.rows_added = value;
        } else if name.starts_with("vm_http_requests_total{")
            && name.contains("path=\"/api/v1/write\"")
        {
            counters.write_requests += value;
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_stores_metrics() {
        let text = "vm_rows_added_to_storage_total 1000000\n\
                    vm_rows_added_to_storage_totalx 5\n\
                    vm_http_requests_total{path=\"/api/v1/write\", protocol=\"promremotewrite\"} 200\n\
                    vm_http_requests_total{path=\"/api/v1/export\"} 3\n";
        assert_eq!(
            parse_counters(text),
            StoreCounters {
                rows_added: 1_000_000.0,
                write_requests: 200.0,
            }
        );
    }
}
