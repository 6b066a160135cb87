//! VictoriaMetrics single-node (built by `hack/victoriametrics.sh`; `VICTORIAMETRICS` names the
//! binary) as the store the remote-write sink writes to, and reading its samples back through
//! `/api/v1/export`.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::http_client_builder;
use crate::process::{free_loopback_addr, wait_for_http_ok_with};
use crate::test_ca::TestCa;

pub fn victoriametrics_binary() -> String {
    std::env::var("VICTORIAMETRICS").unwrap_or_else(|_| {
        panic!(
            "VICTORIAMETRICS is not set: run `bash hack/victoriametrics.sh install` and export \
             the VICTORIAMETRICS=... line it prints (make test does both)"
        )
    })
}

/// One series of an export: its labels (`__name__` included) and its samples (one JSON line of
/// `/api/v1/export`).
#[derive(Clone, Debug, Deserialize, Serialize)]
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
    /// Its command-line arguments and log, to start it again the same way.
    args: Vec<String>,
    log_path: PathBuf,
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
        let mut args = Vec::new();
        if dedup {
            args.push("-dedup.minScrapeInterval=1ms".to_owned());
        }
        if let Some(ca) = security.tls {
            let cert = ca.issue(&["127.0.0.1"]);
            let cert_file = dir.join(format!("{name}.crt"));
            let key_file = dir.join(format!("{name}.key"));
            std::fs::write(&cert_file, &cert.cert_pem).expect("writing the store's certificate");
            std::fs::write(&key_file, &cert.key_pem).expect("writing the store's key");
            args.push("-tls".to_owned());
            args.push(format!("-tlsCertFile={}", cert_file.display()));
            args.push(format!("-tlsKeyFile={}", key_file.display()));
        }
        if let Some((username, password)) = security.basic_auth {
            args.push(format!("-httpAuth.username={username}"));
            args.push(format!("-httpAuth.password={password}"));
        }
        args.push(format!("-storageDataPath={}", dir.join(name).display()));
        args.push(format!("-httpListenAddr={listen}"));
        args.push("-retentionPeriod=100y".to_owned());
        args.push("-loggerLevel=WARN".to_owned());
        let child = spawn(&args, &log_path);
        let mut store = Self {
            child,
            listen,
            tls: security.tls.map(|ca| Arc::new(ca.client_config())),
            basic_auth: security
                .basic_auth
                .map(|(username, password)| (username.to_owned(), password.to_owned())),
            args,
            log_path,
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

    /// Starts the store again on the same address, data and flags (after
    /// [`VictoriaMetrics::stop`]).
    pub async fn restart(&mut self) {
        self.child = spawn(&self.args, &self.log_path);
        self.wait_healthy().await;
    }

    async fn wait_healthy(&mut self) {
        let log = self.log_path.clone();
        let log = log.as_path();
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

/// Runs the binary with `args`, appending to `log_path`.
fn spawn(args: &[String], log_path: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", log_path.display()));
    let log_for_stdout = log.try_clone().expect("duplicating the log handle");
    Command::new(victoriametrics_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_for_stdout)
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("starting VictoriaMetrics: {error}"))
}
