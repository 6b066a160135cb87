//! `metricstream-bench dashboard` end to end: a real Prometheus (`PROMETHEUS`, built by
//! hack/prometheus.sh; make test sets it) scraping itself every second, and a small dashboard
//! (tests/data/prometheus-self.json) with a row, a rate() time series, a stat, and in a collapsed
//! row a panel with no data and one whose query Prometheus refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metricstream_tests::process::free_loopback_addr;
use metricstream_tests::prometheus::Prometheus;

/// The first colour of the picture's palette (Grafana's green), as the SVG writes a stroke.
const FIRST_SERIES_STROKE: &str = r##"stroke="#73BF69""##;

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

fn test_dashboard() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/prometheus-self.json")
}

fn bench(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metricstream-bench"))
        .arg("dashboard")
        .args(args)
        .output()
        .expect("running metricstream-bench")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[tokio::test]
async fn draws_a_dashboard_from_a_real_prometheus() {
    if std::env::var_os("PROMETHEUS").is_none() {
        eprintln!(
            "SKIPPING draws_a_dashboard_from_a_real_prometheus: PROMETHEUS is not set (run \
             `bash hack/prometheus.sh install` and export the PROMETHEUS=... it prints; make \
             test does both)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let web = free_loopback_addr();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    \
             static_configs:\n      - targets: ['{web}']\n"
        ),
    )
    .expect("writing the config");
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.path().join("data").display()),
        "--log.level=warn".to_owned(),
    ];
    // Killed when dropped, at the end of the test.
    let _prometheus = Prometheus::spawn_on(web, dir.path(), "prometheus", &args).await;
    let start = unix_now();
    // Ten scrapes: enough for a rate over four of them at several steps.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = unix_now();

    let out = dir.path().join("dashboard.svg");
    let output = bench(&[
        "--prometheus".to_owned(),
        format!("http://{web}"),
        "--dashboard".to_owned(),
        test_dashboard().display().to_string(),
        "--start".to_owned(),
        start.to_string(),
        "--end".to_owned(),
        end.to_string(),
        "--step".to_owned(),
        "1".to_owned(),
        "--scrape-interval".to_owned(),
        "1".to_owned(),
        "--out".to_owned(),
        out.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // The refused query is named with its panel, and does not fail the picture.
    assert!(
        stderr.contains(r#"panel "A query Prometheus refuses", query A"#),
        "{stderr}"
    );
    let svg = std::fs::read_to_string(&out).expect("reading the SVG");
    for title in [
        "Prometheus scraping itself",
        "HTTP",
        "Requests per second by handler",
        "Series in the head",
        "Collapsed",
        "Nothing matches",
        "A query Prometheus refuses",
        // The legend of the rate panel: its handler label.
        "/metrics",
    ] {
        assert!(svg.contains(title), "{title:?} is not in the SVG");
    }
    assert!(
        svg.matches("no data").count() >= 2,
        "two panels say no data"
    );
    let drawn = svg
        .lines()
        .filter(|line| line.contains("<polyline") && line.contains(FIRST_SERIES_STROKE))
        .count();
    assert!(drawn >= 1, "no series drawn in {}", out.display());
}

#[tokio::test]
async fn an_unreachable_prometheus_fails_the_picture() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let nobody = free_loopback_addr();
    let mut args = strings(&["--start", "1000", "--end", "2000", "--dashboard"]);
    args.push(test_dashboard().display().to_string());
    args.extend(["--prometheus".to_owned(), format!("http://{nobody}")]);
    args.extend([
        "--out".to_owned(),
        dir.path().join("d.svg").display().to_string(),
    ]);
    let output = bench(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("Prometheus cannot be reached"), "{stderr}");
}

#[tokio::test]
async fn a_file_that_is_no_dashboard_fails_naming_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"panels\": 3}").expect("writing the file");
    let mut args = strings(&["--start", "1000", "--end", "2000", "--prometheus"]);
    args.push(format!("http://{}", free_loopback_addr()));
    args.extend(["--dashboard".to_owned(), bad.display().to_string()]);
    let output = bench(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad.json is not a Grafana dashboard"),
        "{stderr}"
    );
}
