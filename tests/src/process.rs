//! Running the real binaries: a temporary directory per test, free loopback ports, each process's
//! output captured to a log file, readiness with a deadline, SIGTERM and SIGKILL.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{READY_TIMEOUT, STOP_TIMEOUT, http_client};

/// The lines of each log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;

/// A test's temporary directory: `data/` (the file queue), `sink/` (the consumer's JSON Lines),
/// `logs/` (every process's stdout and stderr) and whatever else the test writes there.
///
/// Deleted when the test passes, unless `METRICSTREAM_KEEP_TEST_DIRS` is set (to read the logs
/// of a passing run). When it fails, the directory is kept and the tail of every process log is
/// printed.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new(test_name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("metricstream-{test_name}-"))
            .tempdir()
            .expect("creating the test's temporary directory");
        fs::create_dir(dir.path().join("logs")).expect("creating the test's logs directory");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The file queue's root. Not created here: the services create it.
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// The consumer's sink directory. Not created here: the consumer creates it.
    pub fn sink_dir(&self) -> PathBuf {
        self.path().join("sink")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.path().join("logs")
    }

    /// Writes `contents` to `name` inside the test directory and returns its path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, contents)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if std::env::var_os("METRICSTREAM_KEEP_TEST_DIRS").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!(
                    "METRICSTREAM_KEEP_TEST_DIRS: kept {}",
                    self.path().display()
                );
            }
            return;
        }
        self.dir.disable_cleanup(true);
        eprintln!(
            "\n===== test failed: its directory is kept at {} =====",
            self.path().display()
        );
        print_log_tails(&self.logs_dir());
    }
}

fn print_log_tails(logs_dir: &Path) {
    let mut logs: Vec<PathBuf> = match fs::read_dir(logs_dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(error) => {
            eprintln!("cannot list {}: {error}", logs_dir.display());
            return;
        }
    };
    logs.sort();
    for log in logs {
        let text = fs::read(&log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|error| format!("(cannot read: {error})"));
        let lines: Vec<&str> = text.lines().collect();
        let skipped = lines.len().saturating_sub(LOG_TAIL_LINES);
        eprintln!(
            "----- {} ({} lines{}) -----",
            log.display(),
            lines.len(),
            if skipped > 0 {
                format!(", the first {skipped} skipped")
            } else {
                String::new()
            }
        );
        for line in &lines[skipped..] {
            eprintln!("{line}");
        }
    }
    eprintln!("===== end of logs =====");
}

/// Waits until `url` answers 200, polling every 100 ms, for a third-party server (Prometheus,
/// VictoriaMetrics) started as `child` whose listener comes up a while after the process starts.
/// Panics, naming `what` and its log, if the process exits first or `timeout` passes.
pub async fn wait_for_http_ok(
    child: &mut Child,
    url: &str,
    what: &str,
    log: &Path,
    timeout: Duration,
) {
    let client = http_client(Duration::from_secs(2));
    wait_for_http_ok_with(|| client.get(url), child, url, what, log, timeout).await;
}

/// [`wait_for_http_ok`] with requests `request` makes (a client with a CA, credentials).
pub async fn wait_for_http_ok_with(
    request: impl Fn() -> reqwest::RequestBuilder,
    child: &mut Child,
    url: &str,
    what: &str,
    log: &Path,
    timeout: Duration,
) {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}) before it was ready; see {}",
                log.display()
            );
        }
        let ready = request()
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if ready {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{what} was not ready within {timeout:?} ({url}); see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A loopback address no one listens on right now, taken below the kernel's ephemeral range
/// (32768–60999 by default). A port from `bind(0)` is itself ephemeral: between letting it go and
/// the service binding it, an outgoing connection of any process (to the broker, say) can be
/// given it, and the service fails with "Address already in use" (CI saw exactly that). Ports
/// are tried in turn from an offset of this process' id, so test threads and test binaries do
/// not meet either.
pub fn free_loopback_addr() -> SocketAddr {
    const FIRST_PORT: u32 = 11_000;
    const PORTS: u32 = 5_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let offset = std::process::id().wrapping_mul(7919) % PORTS;
    for _ in 0..PORTS {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + (offset + step) % PORTS;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener
                .local_addr()
                .expect("reading the address of a bound port");
        }
    }
    panic!(
        "no free loopback port in {FIRST_PORT}..{}",
        FIRST_PORT + PORTS
    );
}

/// An ingest in token mode, whose tokens file maps `token` to `client`, and a consumer, both on
/// `dir` and ready: the pipeline the protocol tests drive with real clients.
pub async fn start_token_pipeline(dir: &TestDir, client: &str, token: &str) -> (Service, Service) {
    let tokens = dir.write_file("tokens", &format!("{client}={token}\n"));
    let ingest = ServiceSpec::ingest(dir, "ingest")
        .env("METRICSTREAM_TOKENS_FILE", tokens)
        .start()
        .await;
    let consumer = ServiceSpec::consumer(dir, "consumer").start().await;
    (ingest, consumer)
}

/// A binary of the workspace: the services a [`ServiceSpec`] runs, and the `metricstream-load`
/// command-line tool (this crate's own binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Ingest,
    Consumer,
    Load,
}

impl Binary {
    pub fn file_name(self) -> &'static str {
        match self {
            Binary::Ingest => "metricstream-ingest",
            Binary::Consumer => "metricstream-consumer",
            Binary::Load => "metricstream-load",
        }
    }

    /// The built binary: `$METRICSTREAM_BIN_DIR/<name>`, or `<name>` beside the directory of the
    /// test executable (`target/<profile>/deps/..`).
    pub fn path(self) -> PathBuf {
        let dir = match std::env::var_os("METRICSTREAM_BIN_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let exe = std::env::current_exe().expect("locating the test executable");
                exe.parent()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
            }
        };
        let path = dir.join(self.file_name());
        assert!(
            path.is_file(),
            "{} does not exist: run `cargo build --bins` first (with the tests' profile: \
             `cargo build --release --bins` for `cargo test --release`), or point \
             METRICSTREAM_BIN_DIR at the directory holding the binaries",
            path.display()
        );
        path
    }
}

/// How to start one service process; reusable, so a killed process can be restarted with the
/// same ports and directories.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    binary: Binary,
    label: String,
    logs_dir: PathBuf,
    env: BTreeMap<String, OsString>,
    args: Vec<String>,
    /// The ingest API's address (ingest only).
    pub listen: Option<SocketAddr>,
    /// The admin listener's address (`/healthz`, `/readyz`, `/metrics`).
    pub admin: SocketAddr,
}

impl ServiceSpec {
    /// An ingest on the file backend in `dir`'s data directory, 4 partitions, open mode, on free
    /// loopback ports. `label` names its log files and must be unique within the test.
    ///
    /// It drains at once on SIGTERM (`--shutdown-delay 0`): no load balancer needs time to stop
    /// sending here, and most tests stop many ingests. `tests/termination.rs` sets a delay.
    pub fn ingest(dir: &TestDir, label: &str) -> Self {
        let listen = free_loopback_addr();
        let mut spec = Self::common(Binary::Ingest, dir, label)
            .env("METRICSTREAM_LISTEN", listen.to_string())
            .env("METRICSTREAM_SHUTDOWN_DELAY", "0");
        spec.listen = Some(listen);
        spec
    }

    /// A consumer of group `storage-writer` on `dir`'s data directory, writing `dir`'s sink.
    pub fn consumer(dir: &TestDir, label: &str) -> Self {
        Self::common(Binary::Consumer, dir, label)
            .env("METRICSTREAM_SINK_DIR", dir.sink_dir())
            .env("METRICSTREAM_GROUP", "storage-writer")
    }

    fn common(binary: Binary, dir: &TestDir, label: &str) -> Self {
        let admin = free_loopback_addr();
        let spec = Self {
            binary,
            label: label.to_owned(),
            logs_dir: dir.logs_dir(),
            env: BTreeMap::new(),
            args: Vec::new(),
            listen: None,
            admin,
        };
        spec.env("METRICSTREAM_BACKEND", "file")
            .env("METRICSTREAM_PARTITIONS", "4")
            .env("METRICSTREAM_DATA_DIR", dir.data_dir())
            .env("METRICSTREAM_ADMIN_LISTEN", admin.to_string())
            .env("METRICSTREAM_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
    }

    /// Sets an environment variable of the process.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs on the Kafka backend: `topic` on the broker at `bootstrap`, created (with this
    /// spec's partition count) if missing.
    pub fn kafka(self, bootstrap: &str, topic: &str) -> Self {
        self.env("METRICSTREAM_BACKEND", "kafka")
            .env("METRICSTREAM_KAFKA_BROKERS", bootstrap)
            .env("METRICSTREAM_TOPIC", topic)
            .env("METRICSTREAM_KAFKA_CREATE_TOPIC", "true")
    }

    pub fn partitions(self, partitions: u32) -> Self {
        self.env("METRICSTREAM_PARTITIONS", partitions.to_string())
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// `http://<listen>` of an ingest.
    pub fn base_url(&self) -> String {
        let listen = self
            .listen
            .unwrap_or_else(|| panic!("{} has no ingest listener", self.label));
        format!("http://{listen}")
    }

    /// Starts the process without waiting for it to become ready.
    pub fn spawn(&self) -> Service {
        static STARTS: AtomicU64 = AtomicU64::new(0);
        let start = STARTS.fetch_add(1, Ordering::Relaxed);
        let log_path = self.logs_dir.join(format!("{}.{start:03}.log", self.label));
        let log = File::create(&log_path)
            .unwrap_or_else(|error| panic!("creating {}: {error}", log_path.display()));
        let log_for_stdout = log
            .try_clone()
            .unwrap_or_else(|error| panic!("duplicating {}: {error}", log_path.display()));
        let program = self.binary.path();
        let mut command = Command::new(&program);
        // Only the settings chosen here: none inherited from whoever runs the tests.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("METRICSTREAM_") {
                command.env_remove(key);
            }
        }
        command
            .envs(&self.env)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log_for_stdout)
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("starting {}: {error}", program.display()));
        Service {
            label: self.label.clone(),
            child: Some(child),
            log_path,
            listen: self.listen,
            admin: self.admin,
        }
    }

    /// Starts the process and waits until its `/readyz` answers 200.
    pub async fn start(&self) -> Service {
        let mut service = self.spawn();
        service.wait_ready(READY_TIMEOUT).await;
        service
    }
}

/// A running service process. Dropping it kills the process if it still runs.
pub struct Service {
    label: String,
    child: Option<Child>,
    log_path: PathBuf,
    pub listen: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Service {
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn pid(&self) -> u32 {
        self.child().id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `http://<listen>` of an ingest.
    pub fn base_url(&self) -> String {
        let listen = self
            .listen
            .unwrap_or_else(|| panic!("{} has no ingest listener", self.label));
        format!("http://{listen}")
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// GETs `path` on the admin listener: its status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let url = self.admin_url(path);
        let response = http_client(Duration::from_secs(10))
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {url} ({}): {error}", self.label));
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .unwrap_or_else(|error| panic!("reading GET {url} ({}): {error}", self.label));
        (status, body)
    }

    /// The value of one sample of the service's admin `/metrics`, named exactly as printed
    /// (`name` or `name{label="value"}`); panics when it is missing.
    pub async fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{series} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from {}'s /metrics:\n{text}", self.label))
    }

    /// `metricstream_ingest_metrics_accepted_total` from an ingest's admin `/metrics`: every
    /// metric it acknowledged as durable (0 before the first).
    pub async fn metrics_accepted(&self) -> u64 {
        let (status, text) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        text.lines()
            .find_map(|line| {
                line.strip_prefix("metricstream_ingest_metrics_accepted_total ")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |value| value as u64)
    }

    /// Waits until `dir`'s sink holds a line for every metric this ingest acknowledged, and
    /// returns that count.
    pub async fn wait_for_accepted_in_sink(&self, dir: &TestDir) -> usize {
        let accepted = self.metrics_accepted().await as usize;
        crate::wait_for_lines(
            &dir.sink_dir(),
            accepted,
            Duration::from_millis(100),
            crate::DRAIN_TIMEOUT,
        )
        .await;
        accepted
    }

    fn child(&self) -> &Child {
        self.child.as_ref().expect("the process handle is present")
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the process handle is present")
    }

    /// The exit status if the process has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        let label = self.label.clone();
        self.child_mut()
            .try_wait()
            .unwrap_or_else(|error| panic!("polling {label}: {error}"))
    }

    /// Waits until `/readyz` answers 200; fails if the process exits or the deadline passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let client = http_client(Duration::from_secs(2));
        let url = self.admin_url("/readyz");
        let started = Instant::now();
        let mut last;
        loop {
            if let Some(status) = self.try_exit() {
                panic!(
                    "{} exited ({status}) before it became ready; log: {}",
                    self.label,
                    self.log_path.display()
                );
            }
            match client.get(&url).send().await {
                Ok(response) if response.status().as_u16() == 200 => return,
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    last = format!("{status} {}", body.trim());
                }
                Err(error) => last = error.to_string(),
            }
            if started.elapsed() > timeout {
                panic!(
                    "{} was not ready within {timeout:?}; last answer of {url}: {last}; log: {}",
                    self.label,
                    self.log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The exit status once the process exits, or `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if started.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so it cannot have been
        // reused by another process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "sending signal {signal} to {} (pid {pid}): {}",
            self.label,
            std::io::Error::last_os_error()
        );
    }

    /// Sends SIGTERM without waiting for the exit.
    pub fn send_sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends SIGTERM and asserts that the process exits with status 0 within [`STOP_TIMEOUT`].
    /// Returns how long the shutdown took.
    pub async fn terminate(mut self) -> Duration {
        let started = Instant::now();
        self.signal(libc::SIGTERM);
        match self.wait_exit(STOP_TIMEOUT).await {
            Some(status) if status.success() => started.elapsed(),
            Some(status) => panic!(
                "{} exited with {status} after SIGTERM, expected exit status 0; log: {}",
                self.label,
                self.log_path.display()
            ),
            None => panic!(
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM; log: {}",
                self.label,
                self.log_path.display()
            ),
        }
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill(mut self) {
        let label = self.label.clone();
        let child = self.child_mut();
        if let Ok(None) = child.try_wait() {
            child
                .kill()
                .unwrap_or_else(|error| panic!("SIGKILL to {label}: {error}"));
        }
        child
            .wait()
            .unwrap_or_else(|error| panic!("reaping {label}: {error}"));
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
