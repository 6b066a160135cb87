//! Kafka for the process-level tests: the shared broker named by `KAFKA_BOOTSTRAP` (started by
//! `make test` with `hack/kafka.sh up`), unique topic and group names, and a private broker a
//! test may stop and start without disturbing the tests that share the other one.

use std::fs::{self, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::TestDir;

/// The message of a Kafka test run without a broker.
pub const NEEDS_KAFKA: &str = "KAFKA_BOOTSTRAP is not set: start a broker with `hack/kafka.sh up` \
                               and export what it prints (make test does)";

/// How long `hack/kafka.sh up` / `start-broker` may take (its own readiness wait is 90 s).
pub const BROKER_START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long `hack/kafka.sh stop-broker` / `down` may take (SIGTERM, SIGKILL after 20 s).
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(90);

/// The shared broker's bootstrap address from `KAFKA_BOOTSTRAP`; panics with [`NEEDS_KAFKA`].
pub fn bootstrap_from_env() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(NEEDS_KAFKA)
}

/// A topic or group name no other run has used, so runs against one broker never see each other.
pub fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// `hack/kafka.sh` of this repository.
pub fn kafka_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("hack")
        .join("kafka.sh")
}

/// A free loopback port below the kernel's ephemeral range, so that no outgoing connection can
/// take it while a stopped broker waits to listen on it again.
pub fn free_port_below_ephemeral_range() -> u16 {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low: u16 = 20_000;
    let high = ephemeral_low.max(low + 1_000);
    let random = std::collections::hash_map::RandomState::new();
    for attempt in 0u64..1_000 {
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        let port = low + (hasher.finish() % u64::from(high - low)) as u16;
        // The shared broker's default ports.
        if (19_090..=19_100).contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// A single-node broker of the test's own (`hack/kafka.sh` with its own state directory and
/// ports), which the test may stop and start. `down` when dropped, also when the test fails
/// (then its log is first copied into the test's logs directory).
pub struct PrivateBroker {
    state_dir: PathBuf,
    logs_dir: PathBuf,
    port: u16,
    controller_port: u16,
    secure_port: u16,
    bootstrap: String,
}

impl PrivateBroker {
    /// `hack/kafka.sh up` in `<dir>/kafka` on free ports; returns once it serves metadata.
    pub async fn up(dir: &TestDir) -> Self {
        Self::try_up(dir.path().join("kafka"), dir.logs_dir())
            .await
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`PrivateBroker::up`] with the broker's state in `state_dir` and the script's log in
    /// `logs_dir/kafka-sh.log`, for callers that report a failure instead of panicking (the
    /// benchmark). `state_dir` must not exist yet or be one `hack/kafka.sh` made.
    pub async fn try_up(state_dir: PathBuf, logs_dir: PathBuf) -> Result<Self, String> {
        let port = free_port_below_ephemeral_range();
        let mut controller_port = free_port_below_ephemeral_range();
        while controller_port == port {
            controller_port = free_port_below_ephemeral_range();
        }
        let mut secure_port = free_port_below_ephemeral_range();
        while secure_port == port || secure_port == controller_port {
            secure_port = free_port_below_ephemeral_range();
        }
        let mut broker = Self {
            state_dir,
            logs_dir,
            port,
            controller_port,
            secure_port,
            bootstrap: String::new(),
        };
        let started = Instant::now();
        // From here on a failure drops `broker`, whose `down` stops whatever did start.
        let stdout = broker.run(&["up"], BROKER_START_TIMEOUT).await?;
        broker.bootstrap = stdout
            .lines()
            .last()
            .and_then(|line| line.strip_prefix("KAFKA_BOOTSTRAP="))
            .ok_or_else(|| {
                format!("hack/kafka.sh up printed no KAFKA_BOOTSTRAP line last: {stdout:?}")
            })?
            .trim()
            .to_owned();
        println!(
            "private broker {} up in {:.1} s (state {})",
            broker.bootstrap,
            started.elapsed().as_secs_f64(),
            broker.state_dir.display()
        );
        Ok(broker)
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `hack/kafka.sh stop-broker`: SIGTERM (or SIGKILL with `kill`) to the broker, returning
    /// once the process is gone; its data stays.
    pub async fn stop_broker(&self, kill: bool) {
        self.try_stop_broker(kill)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// [`PrivateBroker::stop_broker`], failing instead of panicking.
    pub async fn try_stop_broker(&self, kill: bool) -> Result<(), String> {
        let args: &[&str] = if kill {
            &["stop-broker", "--kill"]
        } else {
            &["stop-broker"]
        };
        self.run(args, BROKER_STOP_TIMEOUT).await.map(drop)
    }

    /// `hack/kafka.sh start-broker`: the broker again on the same data and ports, returning once
    /// it serves metadata.
    pub async fn start_broker(&self) {
        self.try_start_broker()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
    }

    /// [`PrivateBroker::start_broker`], failing instead of panicking.
    pub async fn try_start_broker(&self) -> Result<(), String> {
        self.run(&["start-broker"], BROKER_START_TIMEOUT)
            .await
            .map(drop)
    }

    /// Copies the broker's log into the logs directory (`down` deletes the state directory).
    fn keep_broker_log(&self) {
        let log = self.state_dir.join("broker.log");
        let kept = self.logs_dir.join("kafka-broker.log");
        if let Err(error) = fs::copy(&log, &kept) {
            eprintln!("cannot keep {}: {error}", log.display());
        }
    }

    fn script_log_path(&self) -> PathBuf {
        self.logs_dir.join("kafka-sh.log")
    }

    fn command(&self, args: &[&str]) -> Result<std::process::Command, String> {
        let log_path = self.script_log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| format!("opening {}: {error}", log_path.display()))?;
        let mut command = std::process::Command::new("bash");
        command
            .arg(kafka_script())
            .args(args)
            .env("METRICSTREAM_KAFKA_STATE", &self.state_dir)
            .env("KAFKA_PORT", self.port.to_string())
            .env("KAFKA_CONTROLLER_PORT", self.controller_port.to_string())
            .env("KAFKA_SECURE_PORT", self.secure_port.to_string())
            .stdin(Stdio::null())
            .stderr(log);
        Ok(command)
    }

    /// Runs `hack/kafka.sh <args>` and returns its stdout; fails if it fails or overruns.
    async fn run(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut command = tokio::process::Command::from(self.command(args)?);
        command.stdout(Stdio::piped()).kill_on_drop(true);
        let what = format!("hack/kafka.sh {} (port {})", args.join(" "), self.port);
        let output = match tokio::time::timeout(timeout, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => return Err(format!("running {what}: {error}")),
            Err(_) => {
                self.keep_broker_log();
                return Err(format!(
                    "{what} did not finish within {timeout:?}; its log: {}",
                    self.script_log_path().display()
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            self.keep_broker_log();
            return Err(format!(
                "{what} failed ({}); stdout: {stdout:?}; its log: {}",
                output.status,
                self.script_log_path().display()
            ));
        }
        Ok(stdout)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.keep_broker_log();
        }
        // Blocking, but only at the end of a test; `down` also deletes the state directory.
        let status = self.command(&["down"]).and_then(|mut command| {
            command
                .stdout(Stdio::null())
                .status()
                .map_err(|error| format!("could not run: {error}"))
        });
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => eprintln!(
                "hack/kafka.sh down of the private broker on port {} failed ({status})",
                self.port
            ),
            Err(error) => eprintln!(
                "hack/kafka.sh down of the private broker on port {}: {error}",
                self.port
            ),
        }
    }
}

/// The message of a SASL_SSL test run without the secure listener's settings.
pub const NEEDS_SECURE_KAFKA: &str = "is not set: start a broker with `hack/kafka.sh up` and \
     export the KAFKA_SECURE_BOOTSTRAP, KAFKA_CA_FILE and KAFKA_SCRAM_* lines it prints (make test \
     does; a broker started by an older hack/kafka.sh has no SASL_SSL listener: \
     `hack/kafka.sh down` first)";

/// The shared broker's SASL_SSL (SCRAM-SHA-512) listener, as `hack/kafka.sh up` printed it.
#[derive(Clone, Debug)]
pub struct SecureKafka {
    /// `KAFKA_SECURE_BOOTSTRAP`: the SASL_SSL listener.
    pub bootstrap: String,
    /// `KAFKA_BOOTSTRAP`: the PLAINTEXT listener of the same broker, a super user's (ACL grants).
    pub plaintext_bootstrap: String,
    /// `KAFKA_CA_FILE`: the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// `KAFKA_SCRAM_USERNAME`: a user allowed only what ACLs grant it.
    pub username: String,
    pub password_file: PathBuf,
    /// `KAFKA_SCRAM_ADMIN_USERNAME`: a super user.
    pub admin_username: String,
    pub admin_password_file: PathBuf,
}

impl SecureKafka {
    /// From the environment; panics naming the first missing variable.
    pub fn from_env() -> Self {
        let var = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| panic!("{name} {NEEDS_SECURE_KAFKA}"))
        };
        Self {
            bootstrap: var("KAFKA_SECURE_BOOTSTRAP"),
            plaintext_bootstrap: var("KAFKA_BOOTSTRAP"),
            ca_file: var("KAFKA_CA_FILE").into(),
            username: var("KAFKA_SCRAM_USERNAME"),
            password_file: var("KAFKA_SCRAM_PASSWORD_FILE").into(),
            admin_username: var("KAFKA_SCRAM_ADMIN_USERNAME"),
            admin_password_file: var("KAFKA_SCRAM_ADMIN_PASSWORD_FILE").into(),
        }
    }

    /// Runs Kafka's ACL tool (`hack/kafka.sh tool acls`) on the PLAINTEXT listener with `args`;
    /// panics if it fails.
    pub async fn acl_tool(&self, args: &[String]) -> String {
        let mut command = tokio::process::Command::new("bash");
        command
            .arg(kafka_script())
            .args([
                "tool",
                "acls",
                "--bootstrap-server",
                &self.plaintext_bootstrap,
            ])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let what = format!("hack/kafka.sh tool acls {}", args.join(" "));
        let output = match tokio::time::timeout(Duration::from_secs(120), command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => panic!("running {what}: {error}"),
            Err(_) => panic!("{what} did not finish within 120 s"),
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{what} failed ({}): {stdout} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}
