//! The load generator: `oha` (installed by `hack/oha.sh`), open loop at a fixed rate with
//! coordinated-omission correction, or closed loop as fast as it goes; its JSON summary read
//! back into the figures the report wants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// `hack/oha.sh` of this repository.
fn install_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("hack")
        .join("oha.sh")
}

/// The oha binary: `configured` (`--oha` / `OHA`) if given, else whatever `hack/oha.sh` installs
/// (cached after the first time); its progress shows on our stderr.
pub async fn locate(configured: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = configured {
        if !path.is_file() {
            bail!("--oha / OHA names {}, which does not exist", path.display());
        }
        return Ok(path.to_path_buf());
    }
    let script = install_script();
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("install")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .await
        .with_context(|| format!("running {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("OHA="))
        .with_context(|| {
            format!(
                "{} printed no OHA=... line last: {stdout:?}",
                script.display()
            )
        })?;
    Ok(PathBuf::from(path.trim()))
}

/// How the load is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Open loop: `rate` requests/s in all, whatever the answers' latency, each latency counted
    /// from when the request was due (`-q rate --latency-correction`).
    Rate(u32),
    /// Closed loop: every client sends its next request as soon as the previous one is answered.
    Max,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Rate(_) => "rate",
            Mode::Max => "max",
        }
    }
}

/// One oha run against `url`.
#[derive(Clone, Debug)]
pub struct Load {
    pub url: String,
    pub clients: u32,
    pub mode: Mode,
    pub duration: Duration,
    /// The request body (the same for every request).
    pub body_path: PathBuf,
    /// The `Authorization` header: the client id in open mode.
    pub authorization: String,
    /// The body's `Content-Type`.
    pub content_type: String,
    /// Further headers, `Name: value` each (e.g. remote write's `Content-Encoding: snappy`).
    pub headers: Vec<String>,
}

impl Load {
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--no-tui".to_owned(),
            "--output-format".to_owned(),
            "json".to_owned(),
            "-z".to_owned(),
            format!("{}ms", self.duration.as_millis()),
            // Requests under way at the deadline finish and count; none is cut off half-sent,
            // so every request sent has an answer and the sink can be checked against them.
            "-w".to_owned(),
            "-c".to_owned(),
            self.clients.to_string(),
        ];
        if let Mode::Rate(rate) = self.mode {
            args.extend([
                "-q".to_owned(),
                rate.to_string(),
                "--latency-correction".to_owned(),
            ]);
        }
        args.extend([
            "-m".to_owned(),
            "POST".to_owned(),
            "-T".to_owned(),
            self.content_type.clone(),
            "-H".to_owned(),
            format!("Authorization: {}", self.authorization),
        ]);
        for header in &self.headers {
            args.extend(["-H".to_owned(), header.clone()]);
        }
        args.extend([
            "-D".to_owned(),
            self.body_path.display().to_string(),
            self.url.clone(),
        ]);
        args
    }

    /// The command line as a shell would take it, for the report.
    pub fn command_line(&self) -> String {
        std::iter::once("oha".to_owned())
            .chain(self.args())
            .map(|arg| shell_quote(&arg))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs oha and reads its summary.
    pub async fn run(&self, oha: &Path) -> anyhow::Result<Summary> {
        let mut command = tokio::process::Command::new(oha);
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The deadline plus the requests under way at it, plus start-up.
        let timeout = self.duration + Duration::from_secs(60);
        let output = tokio::time::timeout(timeout, command.output())
            .await
            .with_context(|| format!("{} did not finish within {timeout:?}", oha.display()))?
            .with_context(|| format!("running {}", oha.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}): {}",
                self.command_line(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Summary::parse(&output.stdout).with_context(|| {
            format!(
                "reading the JSON summary of {} (stderr: {})",
                self.command_line(),
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
    }
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// What the report needs of oha's JSON summary.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Wall time of the run, from the first request to the last answer.
    pub seconds: f64,
    /// Answers per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests without an HTTP answer, per error (connection refused, reset, deadline...).
    pub failures: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
}

#[derive(Deserialize)]
struct RawSummary {
    summary: RawTotals,
    /// Seconds, keyed `p50`, `p99`, `p99.9`...; `null` (NaN) when nothing was answered.
    #[serde(rename = "latencyPercentiles")]
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "statusCodeDistribution")]
    status_code_distribution: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution")]
    error_distribution: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct RawTotals {
    total: f64,
}

impl Summary {
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        let raw: RawSummary = serde_json::from_slice(json).context("parsing oha's JSON")?;
        let statuses = raw
            .status_code_distribution
            .into_iter()
            .map(|(status, count)| {
                let status = status
                    .parse::<u16>()
                    .with_context(|| format!("an HTTP status in oha's JSON: {status:?}"))?;
                Ok((status, count))
            })
            .collect::<anyhow::Result<_>>()?;
        let percentile_ms = |key: &str| {
            raw.latency_percentiles
                .get(key)
                .copied()
                .flatten()
                .map(|seconds| seconds * 1000.0)
        };
        Ok(Self {
            seconds: raw.summary.total,
            statuses,
            failures: raw.error_distribution,
            p50_ms: percentile_ms("p50"),
            p99_ms: percentile_ms("p99"),
            p999_ms: percentile_ms("p99.9"),
        })
    }

    /// Requests answered with a success: `202 Accepted` on `/metrics`; the other protocols
    /// answer `200` (OTLP) or `204` (remote write, Influx). The ingest answers no other 2xx.
    pub fn accepted(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| is_success(**status))
            .map(|(_, count)| count)
            .sum()
    }

    /// Requests answered with anything but a success, or not answered at all.
    pub fn errors(&self) -> u64 {
        let other_statuses: u64 = self
            .statuses
            .iter()
            .filter(|(status, _)| !is_success(**status))
            .map(|(_, count)| count)
            .sum();
        other_statuses + self.failures.values().sum::<u64>()
    }

    /// Successful answers per second of the run.
    pub fn accepted_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.accepted() as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// A one-line account of what went wrong, for the console.
    pub fn describe_errors(&self) -> String {
        let statuses = self
            .statuses
            .iter()
            .filter(|(status, _)| !is_success(**status))
            .map(|(status, count)| format!("{count}× HTTP {status}"));
        let failures = self
            .failures
            .iter()
            .map(|(error, count)| format!("{count}× {error}"));
        statuses.chain(failures).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_yields_statuses_failures_and_percentiles_in_milliseconds() {
        let json = br#"{
            "summary": {"successRate": 1.0, "total": 2.0, "requestsPerSec": 10.0},
            "latencyPercentiles": {"p50": 0.001, "p99": 0.004, "p99.9": 0.0105, "p99.99": null},
            "statusCodeDistribution": {"202": 18, "503": 1},
            "errorDistribution": {"connection closed": 1}
        }"#;
        let summary = Summary::parse(json).expect("parses");
        assert_eq!(summary.accepted(), 18);
        assert_eq!(summary.errors(), 2);
        assert_eq!(summary.accepted_per_sec(), 9.0);
        assert_eq!(summary.p50_ms, Some(1.0));
        assert_eq!(summary.p99_ms, Some(4.0));
        assert_eq!(summary.p999_ms, Some(10.5));
        assert_eq!(
            summary.describe_errors(),
            "1× HTTP 503, 1× connection closed"
        );
    }

    #[test]
    fn nothing_answered_has_no_percentiles() {
        let json = br#"{"summary": {"total": 1.0}, "latencyPercentiles": {"p50": null},
            "statusCodeDistribution": {}, "errorDistribution": {"refused": 5}}"#;
        let summary = Summary::parse(json).expect("parses");
        assert_eq!(summary.p50_ms, None);
        assert_eq!(summary.errors(), 5);
        assert_eq!(summary.accepted_per_sec(), 0.0);
    }

    #[test]
    fn rate_runs_are_open_loop_with_latency_correction_and_max_runs_are_not() {
        let load = Load {
            url: "http://127.0.0.1:1/metrics".to_owned(),
            clients: 20,
            mode: Mode::Rate(500),
            duration: Duration::from_secs(8),
            body_path: PathBuf::from("/tmp/body 1.json"),
            authorization: "bench".to_owned(),
            content_type: "application/json".to_owned(),
            headers: vec!["Content-Encoding: snappy".to_owned()],
        };
        let line = load.command_line();
        assert!(
            line.contains("-z 8000ms -w -c 20 -q 500 --latency-correction"),
            "{line}"
        );
        assert!(
            line.contains(
                "-T application/json -H 'Authorization: bench' -H 'Content-Encoding: snappy' \
                 -D '/tmp/body 1.json'"
            ),
            "{line}"
        );
        let max = Load {
            mode: Mode::Max,
            ..load
        };
        assert!(!max.command_line().contains("-q"));
    }
}
