//! Prometheus (built by `hack/prometheus.sh`; `PROMETHEUS` names the binary) in the process tests:
//! as a remote-write *sender* in agent mode (tests/tests/remote_write_client.rs starts it with its
//! own flags through [`Prometheus::spawn`]), and as a *store*, its remote-write receiver on
//! (`--web.enable-remote-write-receiver`), whose raw samples are read back through the query API
//! ([`Prometheus::start_store`], [`Prometheus::raw_samples`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::http_client;
use crate::process::{free_loopback_addr, wait_for_http_ok};
use crate::victoriametrics::ExportedSeries;

pub fn prometheus_binary() -> String {
    std::env::var("PROMETHEUS").unwrap_or_else(|_| {
        panic!(
            "PROMETHEUS is not set: run `bash hack/prometheus.sh install` and export the \
             PROMETHEUS=... line it prints (make test does both)"
        )
    })
}

/// How long Prometheus may take to answer `/-/ready` (longer on a busy machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Prometheus, killed (SIGKILL) when dropped.
pub struct Prometheus {
    child: Child,
    /// Its web listener: the API, `/metrics` and, as a store, `/api/v1/write`.
    pub web: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a Prometheus store treats samples older than the newest of their series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutOfOrder {
    /// The default (`out_of_order_time_window` 0): refused with a 400.
    Refused,
    /// `storage.tsdb.out_of_order_time_window` set (to 1 day): accepted within it.
    Window,
}

impl Prometheus {
    /// Runs `prometheus` with `args` plus `--web.listen-address` on a free loopback port, its
    /// output in `logs_dir/<name>.log`, and waits until it is ready.
    pub async fn spawn(logs_dir: &Path, name: &str, args: &[String]) -> Self {
        Self::spawn_on(free_loopback_addr(), logs_dir, name, args).await
    }

    /// [`Prometheus::spawn`] on `web`, for a config that must name the address beforehand (a
    /// Prometheus scraping itself).
    pub async fn spawn_on(web: SocketAddr, logs_dir: &Path, name: &str, args: &[String]) -> Self {
        let log_path = logs_dir.join(format!("{name}.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", log_path.display()));
        let child = Command::new(prometheus_binary())
            .args(args)
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting Prometheus: {error}"));
        let mut prometheus = Self { child, web };
        let url = format!("http://{web}/-/ready");
        wait_for_http_ok(
            &mut prometheus.child,
            &url,
            "Prometheus",
            &log_path,
            READY_TIMEOUT,
        )
        .await;
        prometheus
    }

    /// Prometheus as a remote-write store named `name`: its TSDB in `dir/<name>`, its config in
    /// `dir/<name>.yml` (no scrapes; with [`OutOfOrder::Window`], an out-of-order window of one
    /// day), its log in `logs_dir`.
    ///
    /// A fresh TSDB takes the load's 2023 timestamps: its head starts at the first sample it
    /// gets, and only samples older than the newest one minus an hour (half the head's 2 h
    /// chunk range) are then out of bounds, or more than 10 minutes ahead of the wall clock.
    pub async fn start_store(
        dir: &Path,
        logs_dir: &Path,
        name: &str,
        out_of_order: OutOfOrder,
    ) -> Self {
        let config = match out_of_order {
            OutOfOrder::Refused => "global: {}\n".to_owned(),
            OutOfOrder::Window => {
                "global: {}\nstorage:\n  tsdb:\n    out_of_order_time_window: 1d\n".to_owned()
            }
        };
        let config_path = dir.join(format!("{name}.yml"));
        std::fs::write(&config_path, config)
            .unwrap_or_else(|error| panic!("writing {}: {error}", config_path.display()));
        let args = [
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join(name).display()),
            "--web.enable-remote-write-receiver".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        Self::spawn(logs_dir, name, &args).await
    }

    /// The remote-write endpoint (of a store).
    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.web)
    }

    /// The sum of a counter over its series on Prometheus' own /metrics.
    pub async fn counter(&self, name: &str) -> f64 {
        let text = http_client(Duration::from_secs(5))
            .get(format!("http://{}/metrics", self.web))
            .send()
            .await
            .expect("Prometheus answers /metrics")
            .text()
            .await
            .expect("a text body");
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Every raw sample of the series `selector` matches with a timestamp in
    /// `(from_ms, to_ms]`: the range vector `selector[<to - from>ms]` evaluated at `to_ms`, which
    /// the query API returns unprocessed (no lookback, no step), timestamps in milliseconds.
    pub async fn raw_samples(
        &self,
        selector: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Vec<ExportedSeries> {
        let url = reqwest::Url::parse_with_params(
            &format!("http://{}/api/v1/query", self.web),
            [
                ("query", format!("{selector}[{}ms]", to_ms - from_ms)),
                ("time", format!("{}.{:03}", to_ms / 1000, to_ms % 1000)),
            ],
        )
        .expect("the query URL");
        let response = http_client(Duration::from_secs(30))
            .get(url)
            .send()
            .await
            .expect("GET /api/v1/query");
        let status = response.status();
        let text = response.text().await.expect("reading the query's answer");
        assert!(status.is_success(), "query: {status}: {text}");
        let answer: QueryAnswer =
            serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"));
        assert_eq!(answer.data.result_type, "matrix", "{text}");
        answer
            .data
            .result
            .into_iter()
            .map(|series| {
                let (timestamps, values) = series
                    .values
                    .iter()
                    .map(|(seconds, value)| {
                        let value = value
                            .parse::<f64>()
                            .unwrap_or_else(|error| panic!("the value {value:?}: {error}"));
                        ((seconds * 1000.0).round() as i64, value)
                    })
                    .unzip();
                ExportedSeries {
                    metric: series.metric,
                    values,
                    timestamps,
                }
            })
            .collect()
    }

    /// [`Prometheus::raw_samples`] until they number at least `samples` or `timeout` passes;
    /// returns the last answer.
    pub async fn wait_for_samples(
        &self,
        selector: &str,
        (from_ms, to_ms): (i64, i64),
        samples: usize,
        timeout: Duration,
    ) -> Vec<ExportedSeries> {
        let started = Instant::now();
        loop {
            let series = self.raw_samples(selector, from_ms, to_ms).await;
            let held: usize = series.iter().map(|s| s.values.len()).sum();
            if held >= samples || started.elapsed() > timeout {
                return series;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[derive(Deserialize)]
struct QueryAnswer {
    data: QueryData,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<RangeSeries>,
}

#[derive(Deserialize)]
struct RangeSeries {
    metric: BTreeMap<String, String>,
    /// `[seconds since the epoch (float), "value"]` pairs.
    values: Vec<(f64, String)>,
}
