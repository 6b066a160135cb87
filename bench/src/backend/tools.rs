//! What the backend and drain suites share: where scratch data and the release binaries live,
//! the broker from the environment, Kafka's command-line tools, and percentiles.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context;

/// The cargo target directory the running bench binary was built into (`target/`), whose disk
/// is the one the services' data lives on in `make bench`.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the bench executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .with_context(|| format!("{} is not in target/<profile>/", exe.display()))
}

/// A fresh scratch directory under `parent` (default: the target directory), removed on drop.
pub fn scratch_dir(parent: Option<&Path>, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    let parent = match parent {
        Some(parent) => parent.to_path_buf(),
        None => target_dir()?,
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))
}

/// A service binary (`metricstream-consumer`, ...) of this build: `$METRICSTREAM_BIN_DIR/<name>`,
/// or `<name>` beside the bench executable (`target/release/`).
pub fn service_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("METRICSTREAM_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_exe()
            .context("locating the bench executable")?
            .parent()
            .map(Path::to_path_buf)
            .context("the bench executable has no directory")?,
    };
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} does not exist: build the services first (`cargo build --release --workspace --bins`)",
        path.display()
    );
    Ok(path)
}

/// The broker named by `KAFKA_BOOTSTRAP`, if set (`hack/kafka.sh up` prints it).
pub fn kafka_bootstrap() -> Option<String> {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// Says loudly that a Kafka measurement is skipped.
pub fn warn_kafka_skipped(what: &str) {
    eprintln!(
        "metricstream-bench: KAFKA_BOOTSTRAP is not set: SKIPPING {what} (start a broker with \
         `bash hack/kafka.sh up` and export the KAFKA_BOOTSTRAP=... it prints); nothing recorded"
    );
}

/// `hack/kafka.sh` of this repository.
pub fn kafka_script() -> PathBuf {
    metricstream_tests::kafka::kafka_script()
}

/// The command line of `hack/kafka.sh tool <args>`, as the results record it.
pub fn kafka_tool_command(args: &[String]) -> String {
    format!("bash hack/kafka.sh tool {}", args.join(" "))
}

/// Runs `hack/kafka.sh tool <args>` (one of Kafka's Java tools) and returns its stdout.
pub async fn run_kafka_tool(args: &[String]) -> anyhow::Result<String> {
    let script = kafka_script();
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .arg("tool")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", kafka_tool_command(args)))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::bail!(
            "{} failed ({}):\n{}\n{}",
            kafka_tool_command(args),
            output.status,
            tail(&stdout, 20),
            tail(&stderr, 20)
        );
    }
    Ok(stdout)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `q` quantile (0..=1) of `sorted` by the nearest-rank method; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The command line this process was started with, for the results.
pub fn this_command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|program| {
            Path::new(&program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or(program)
        })
        .unwrap_or_else(|| "metricstream-bench".to_owned());
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), 50.0);
        assert_eq!(quantile(&sorted, 0.99), 99.0);
        assert_eq!(quantile(&sorted, 0.999), 100.0);
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}
