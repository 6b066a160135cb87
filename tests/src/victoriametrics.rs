//! VictoriaMetrics single-node (built by `hack/victoriametrics.sh`; `VICTORIAMETRICS` names the
//! binary) as the store the remote-write sink writes to, and reading its samples back through
//! `/api/v1/export`.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::process::{free_loopback_addr, wait_for_http_ok_with};
use crate::test_ca::TestCa;
use crate::{Expected, MetricId, http_client_builder};

pub fn victoriametrics_binary() -> String {
    std::env::var("VICTORIAMETRICS").unwrap_or_else(|_| {
        panic!(
            "VICTORIAMETRICS is not set: run `bash hack/victoriametrics.sh install` and export \
             the VICTORIAMETRICS=... line it prints (make test does both)"
        )
    })
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
    /// The client config that trusts its certificate, when it serves HTTPS.
    tls: Option<Arc<rustls::ClientConfig>>,
    basic_auth: Option<(String, String)>,
}

/// How a store started with [`VictoriaMetrics::start_secured`] is reached.
pub struct Security<'a> {
    /// Serve HTTPS (`-tls`) with a certificate for 127.0.0.1 this CA signs.
    pub tls: Option<&'a TestCa>,
    /// Require HTTP basic auth (`-httpAuth.username`, `-httpAuth.password`) on every endpoint.
    pub basic_auth: Option<(&'a str, &'a str)>,
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
        let open = Security {
            tls: None,
            basic_auth: None,
        };
        Self::start_secured(dir, logs_dir, name, dedup, &open).await
    }

    /// [`VictoriaMetrics::start_with`], serving HTTPS and/or requiring basic auth.
    pub async fn start_secured(
        dir: &Path,
        logs_dir: &Path,
        name: &str,
        dedup: bool,
        security: &Security<'_>,
    ) -> Self {
        let listen = free_loopback_addr();
        let log_path = logs_dir.join(format!("{name}.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", log_path.display()));
        let log_for_stdout = log.try_clone().expect("duplicating the log handle");
        let mut command = Command::new(victoriametrics_binary());
        if dedup {
            command.arg("-dedup.minScrapeInterval=1ms");
        }
        if let Some(ca) = security.tls {
            let cert = ca.issue(&["127.0.0.1"]);
            let cert_file = dir.join(format!("{name}.crt"));
            let key_file = dir.join(format!("{name}.key"));
            std::fs::write(&cert_file, &cert.cert_pem).expect("writing the store's certificate");
            std::fs::write(&key_file, &cert.key_pem).expect("writing the store's key");
            command
                .arg("-tls")
                .arg(format!("-tlsCertFile={}", cert_file.display()))
                .arg(format!("-tlsKeyFile={}", key_file.display()));
        }
        if let Some((username, password)) = security.basic_auth {
            command
                .arg(format!("-httpAuth.username={username}"))
                .arg(format!("-httpAuth.password={password}"));
        }
        let child = command
            .arg(format!("-storageDataPath={}", dir.join(name).display()))
            .arg(format!("-httpListenAddr={listen}"))
            .arg("-retentionPeriod=100y")
            .arg("-loggerLevel=WARN")
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("starting VictoriaMetrics: {error}"));
        let mut store = Self {
            child,
            listen,
            tls: security.tls.map(|ca| Arc::new(ca.client_config())),
            basic_auth: security
                .basic_auth
                .map(|(username, password)| (username.to_owned(), password.to_owned())),
        };
        store.wait_healthy(&log_path).await;
        store
    }

    async fn wait_healthy(&mut self, log: &Path) {
        let url = self.url("/health");
        let client = self.client(Duration::from_secs(2));
        let request = {
            let (url, basic_auth) = (url.clone(), self.basic_auth.clone());
            move || with_credentials(client.get(&url), basic_auth.as_ref())
        };
        wait_for_http_ok_with(
            request,
            &mut self.child,
            &url,
            "VictoriaMetrics",
            log,
            Duration::from_secs(30),
        )
        .await;
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.listen)
    }

    /// A client that trusts the store's certificate (if it serves HTTPS).
    fn client(&self, timeout: Duration) -> reqwest::Client {
        let builder = http_client_builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5));
        let builder = match &self.tls {
            Some(config) => builder.tls_backend_preconfigured((**config).clone()),
            None => builder,
        };
        builder.build().expect("building an HTTP client")
    }

    /// `GET url` with the store's credentials, if it requires any.
    fn get(&self, client: &reqwest::Client, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        with_credentials(client.get(url), self.basic_auth.as_ref())
    }

    /// The remote-write endpoint.
    pub fn write_url(&self) -> String {
        self.url("/api/v1/write")
    }

    /// Makes pending samples searchable, then exports every series `selector` matches.
    pub async fn export(&self, selector: &str) -> Vec<ExportedSeries> {
        let client = self.client(Duration::from_secs(30));
        let flushed = self
            .get(&client, self.url("/internal/force_flush"))
            .send()
            .await
            .expect("GET /internal/force_flush");
        assert!(flushed.status().is_success(), "force_flush: {flushed:?}");
        let url =
            reqwest::Url::parse_with_params(&self.url("/api/v1/export"), [("match[]", selector)])
                .expect("the export URL");
        let response = self
            .get(&client, url)
            .send()
            .await
            .expect("GET /api/v1/export");
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

fn with_credentials(
    request: reqwest::RequestBuilder,
    basic_auth: Option<&(String, String)>,
) -> reqwest::RequestBuilder {
    match basic_auth {
        Some((username, password)) => request.basic_auth(username, Some(password)),
        None => request,
    }
}

/// Every expected metric once in `series`, with exactly its labels, value and timestamp, and no
/// other series.
pub fn assert_exactly_once_in_store(series: &[ExportedSeries], expected: &Expected) {
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for exported in series {
        let name = exported.metric.get("__name__").map_or("", String::as_str);
        let Some(id) = MetricId::from_tags(name, &exported.metric) else {
            problems.push(format!(
                "a series the load did not send: {:?}",
                exported.metric
            ));
            continue;
        };
        let labels: Vec<&str> = exported.metric.keys().map(String::as_str).collect();
        if labels != ["__name__", "client", "i", "seq"] {
            problems.push(format!("{id:?} has the labels {labels:?}"));
        }
        if exported.values != [id.value()] || exported.timestamps != [id.timestamp()] {
            problems.push(format!(
                "{id:?}: values {:?} at {:?}, expected [{}] at [{}]",
                exported.values,
                exported.timestamps,
                id.value(),
                id.timestamp()
            ));
        }
        if !expected.metrics.contains_key(&id) {
            problems.push(format!("{id:?} is in the store but was not acknowledged"));
        }
        if !seen.insert(id.clone()) {
            problems.push(format!("{id:?} is exported as two series"));
        }
    }
    let missing = expected
        .metrics
        .keys()
        .filter(|id| !seen.contains(*id))
        .count();
    if missing > 0 {
        problems.push(format!(
            "{missing} acknowledged metrics are not in the store"
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problems (the first 20): {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
}
