//! The raw results every suite writes and the report reads.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One measured figure set: one target under one load point.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Measurement {
    /// The part of the report: `http`, `backend`, `drain`, `operator`.
    pub suite: String,
    /// What ran, e.g. `noop-http`, `ingest-file-batch`, `ingest-file-always`, `ingest-kafka`,
    /// `kafka-producer-perf`, `fdatasync`, `consumer-file`, `bare-read-file`, `operator`.
    pub target: String,
    /// The load point, e.g. `{"clients": 20, "metrics_per_request": 100, "mode": "rate"}`.
    pub params: BTreeMap<String, Value>,
    /// The figures, named with their unit: `requests_per_sec`, `metrics_per_sec`, `p50_ms`,
    /// `p99_ms`, `p999_ms`, `errors`, `lost`, `duplicates`, `rss_peak_mib`, `records_per_sec`,
    /// `seconds`, ...
    pub figures: BTreeMap<String, f64>,
    /// The command line (or tool invocation) that produced it, for the report.
    pub command: String,
}

impl Measurement {
    /// A measurement that did not run: `params` with `failed` (the error), no figures.
    pub fn failed(
        suite: &str,
        target: &str,
        mut params: BTreeMap<String, Value>,
        error: &str,
    ) -> Self {
        params.insert("failed".to_owned(), Value::from(error));
        Self {
            suite: suite.to_owned(),
            target: target.to_owned(),
            params,
            figures: BTreeMap::new(),
            command: String::new(),
        }
    }
}

/// Prints what a suite could not measure, loudly, after its runs (empty: nothing).
pub fn print_not_measured(suite: &str, failed: &[String]) {
    if failed.is_empty() {
        return;
    }
    eprintln!("\n!!!!! {suite}: NOT MEASURED:");
    for line in failed {
        eprintln!("!!!!!   {line}");
    }
    eprintln!();
}

/// What one suite wrote: its measurements and where they were taken.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SuiteResults {
    pub suite: String,
    /// RFC 3339 UTC.
    pub started: String,
    pub machine: Machine,
    pub measurements: Vec<Measurement>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    /// Reads this machine's description from /proc.
    pub fn this() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_gib = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map(|kib| kib / (1024.0 * 1024.0))
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model,
            memory_gib,
            kernel,
        }
    }
}

impl SuiteResults {
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Peak resident set size of a running process in MiB (`VmHWM` of /proc/<pid>/status).
pub fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmHWM in {path}"))?;
    Ok(kib / 1024.0)
}
