//! The `metricstream-load` command line against the real ingest and consumer: `send` drives the
//! ingest and records what it acknowledged, `verify` passes on the sink it produced and fails on
//! copies with a line removed or duplicated; bearer tokens for an ingest with a tokens file;
//! `verify-export` on a real VictoriaMetrics' export of a remote-write consumer's load.
//!
//! The binary is this crate's own, found like the services (`cargo build --workspace --bins`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metricstream_tests::load::METRIC_NAME;
use metricstream_tests::sink::sink_files;
use metricstream_tests::victoriametrics::{ExportedSeries, VictoriaMetrics};
use metricstream_tests::{Binary, ReadMode, ServiceSpec, TestDir, read_sink};

/// Generous: `send` runs the whole default scenario in a debug build on a busy machine.
const CLI_TIMEOUT: Duration = Duration::from_secs(180);

/// How `metricstream-load` exited and what it printed.
struct CliRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl CliRun {
    /// The number after `key:` on the line that starts with it (`missing:       1`).
    fn count(&self, key: &str) -> u64 {
        let prefix = format!("{key}:");
        self.stdout
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix} <number>` line in the output:\n{self}"))
    }

    fn assert_exit(&self, code: i32, what: &str) {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit status {code}\n{self}"
        );
    }
}

impl std::fmt::Display for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

async fn load_cli(args: &[&str]) -> CliRun {
    let program = Binary::Load.path();
    let mut command = tokio::process::Command::new(&program);
    command.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(CLI_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("metricstream-load {args:?} ran longer than {CLI_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("running {}: {error}", program.display()));
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", path.display()))
}

/// Copies the sink's `*.jsonl` files into `to` (flat: the sink has one level).
fn copy_sink(from: &Path, to: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(to).unwrap_or_else(|error| panic!("creating {}: {error}", to.display()));
    sink_files(from)
        .iter()
        .map(|file| {
            let name = file.file_name().expect("a sink file has a name");
            let copy = to.join(name);
            fs::copy(file, &copy)
                .unwrap_or_else(|error| panic!("copying {}: {error}", file.display()));
            copy
        })
        .collect()
}

fn read_lines(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(file: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    fs::write(file, text).unwrap_or_else(|error| panic!("writing {}: {error}", file.display()));
}

/// The first sink file of `files` that holds at least two lines.
fn file_with_lines(files: &[PathBuf]) -> &Path {
    files
        .iter()
        .find(|file| read_lines(file).len() >= 2)
        .expect("a sink file with at least two lines")
}

#[tokio::test(flavor = "multi_thread")]
async fn send_then_verify_passes_and_catches_a_missing_and_a_duplicated_line() {
    let dir = TestDir::new("load-cli");
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    let expected_file = dir.path().join("expected.json");

    // The defaults are the prototype's scenario: 20 clients x 50 requests x 10 metrics.
    let sent = load_cli(&[
        "send",
        "--url",
        &format!("{}/", ingest.base_url()),
        "--expected-out",
        path_str(&expected_file),
    ])
    .await;
    sent.assert_exit(0, "send against a healthy ingest");
    assert_eq!(sent.count("requests"), 1000, "{sent}");
    assert_eq!(sent.count("acknowledged"), 1000, "{sent}");
    assert!(sent.stdout.contains("202 x1000"), "{sent}");
    assert!(
        sent.stdout.contains("p50") && sent.stdout.contains("p99"),
        "{sent}"
    );

    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(&expected_file).expect("send wrote the expected file"))
            .expect("the expected file is JSON");
    let requests = record["acknowledged_requests"]
        .as_array()
        .expect("acknowledged_requests is an array");
    assert_eq!(requests.len(), 1000);
    assert!(
        requests
            .iter()
            .all(|request| request["metrics"] == 10 && request["offset"].is_u64()),
        "every acknowledged request has its 10 metrics and its offset: {}",
        requests[0]
    );

    let sink = dir.sink_dir();
    let verify_args = |sink: &Path| {
        vec![
            "verify".to_owned(),
            "--sink-dir".to_owned(),
            path_str(sink).to_owned(),
            "--expected".to_owned(),
            path_str(&expected_file).to_owned(),
        ]
    };
    let run_verify = |sink: PathBuf, extra: &'static [&'static str]| {
        let mut args = verify_args(&sink);
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            load_cli(&args).await
        }
    };

    // The consumer may still be writing: --wait-secs re-reads until every metric is there.
    let live = run_verify(sink.clone(), &["--wait-secs", "60"]).await;
    live.assert_exit(0, "verify of the live sink");
    assert_eq!(live.count("found"), 10_000, "{live}");
    assert_eq!(live.count("missing"), 0, "{live}");
    assert_eq!(live.count("duplicates"), 0, "{live}");
    assert_eq!(live.count("unexpected"), 0, "{live}");

    consumer.terminate().await;
    ingest.terminate().await;
    let settled = run_verify(sink.clone(), &["--settled"]).await;
    settled.assert_exit(0, "verify of the settled sink");
    assert_eq!(settled.count("found"), 10_000, "{settled}");
    assert!(settled.stdout.contains("OK: "), "{settled}");

    // One line removed: exactly one metric missing.
    let missing_dir = dir.path().join("sink-missing");
    let files = copy_sink(&sink, &missing_dir);
    let file = file_with_lines(&files);
    let mut lines = read_lines(file);
    lines.remove(0);
    write_lines(file, &lines);
    let missing = run_verify(missing_dir, &[]).await;
    missing.assert_exit(1, "verify of a sink with a line removed");
    assert_eq!(missing.count("found"), 9_999, "{missing}");
    assert_eq!(missing.count("missing"), 1, "{missing}");
    assert_eq!(missing.count("duplicates"), 0, "{missing}");
    assert!(missing.stdout.contains("FAILED: 1 missing"), "{missing}");

    // One line written twice: exactly one metric duplicated, and its position.
    let duplicated_dir = dir.path().join("sink-duplicated");
    let files = copy_sink(&sink, &duplicated_dir);
    let file = file_with_lines(&files);
    let mut lines = read_lines(file);
    lines.push(lines[0].clone());
    write_lines(file, &lines);
    let duplicated = run_verify(duplicated_dir, &[]).await;
    duplicated.assert_exit(1, "verify of a sink with a line duplicated");
    assert_eq!(duplicated.count("found"), 10_000, "{duplicated}");
    assert_eq!(duplicated.count("missing"), 0, "{duplicated}");
    assert_eq!(duplicated.count("duplicates"), 1, "{duplicated}");
    assert_eq!(duplicated.count("dup positions"), 1, "{duplicated}");
    assert_eq!(duplicated.count("acked dups"), 1, "{duplicated}");
    assert_eq!(duplicated.count("found once"), 9_999, "{duplicated}");

    // Lines of other writers (another run, a hand-sent metric) are counted and ignored.
    let shared_dir = dir.path().join("sink-shared");
    let files = copy_sink(&sink, &shared_dir);
    let mut lines = read_lines(&files[0]);
    lines.push(
        r#"{"client":"demo-client","name":"cpu","value":75.0,"timestamp":1700000000000,"tags":{"host":"a"},"partition":0,"offset":999999,"index":0}"#
            .to_owned(),
    );
    write_lines(&files[0], &lines);
    let shared = run_verify(shared_dir, &[]).await;
    shared.assert_exit(0, "verify of a sink shared with another writer");
    assert!(shared.stdout.contains("1 other lines ignored"), "{shared}");

    // A sink that is not there is an error, not a pass.
    let absent = run_verify(dir.path().join("no-such-sink"), &[]).await;
    absent.assert_exit(2, "verify of a missing sink directory");
}

fn write_export(file: &Path, series: &[ExportedSeries]) {
    let lines: Vec<String> = series
        .iter()
        .map(|series| serde_json::to_string(series).expect("a series as JSON"))
        .collect();
    write_lines(file, &lines);
}

/// `verify-export` passes on what a remote-write consumer stored in a real VictoriaMetrics, and
/// fails on an export with a series removed, one duplicated, or one with another timestamp.
#[tokio::test(flavor = "multi_thread")]
async fn verify_export_passes_on_the_store_and_catches_a_missing_duplicated_or_altered_series() {
    let dir = TestDir::new("load-cli-export");
    let store = VictoriaMetrics::start(dir.path(), &dir.logs_dir()).await;
    let ingest = ServiceSpec::ingest(&dir, "ingest").start().await;
    let _consumer = ServiceSpec::consumer(&dir, "consumer")
        .env("METRICSTREAM_SINK", "remote-write")
        .env("METRICSTREAM_SINK_URL", store.write_url())
        .start()
        .await;
    let expected_file = dir.path().join("expected.json");
    let url = ingest.base_url().to_string();
    let sent = load_cli(&[
        "send",
        "--url",
        &url,
        "--clients",
        "4",
        "--requests",
        "10",
        "--metrics",
        "5",
        "--expected-out",
        path_str(&expected_file),
    ])
    .await;
    sent.assert_exit(0, "send against a healthy ingest");
    let series = store
        .wait_for_samples(
            &format!(r#"{{__name__="{METRIC_NAME}"}}"#),
            200,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(series.len(), 200, "every metric of the load is one series");

    let verify = |name: &'static str, series: Vec<ExportedSeries>| {
        let export = dir.path().join(name);
        write_export(&export, &series);
        let expected = expected_file.clone();
        async move {
            load_cli(&[
                "verify-export",
                "--export",
                path_str(&export),
                "--expected",
                path_str(&expected),
            ])
            .await
        }
    };
    let passed = verify("export.jsonl", series.clone()).await;
    passed.assert_exit(0, "verify-export of the store's export");
    assert_eq!(passed.count("expected"), 200, "{passed}");
    assert_eq!(passed.count("problems"), 0, "{passed}");
    assert!(passed.stdout.contains("OK: "), "{passed}");

    let missing = verify("missing.jsonl", series[1..].to_vec()).await;
    missing.assert_exit(1, "verify-export of an export with a series removed");
    assert!(
        missing
            .stdout
            .contains("1 acknowledged metrics are not in the store"),
        "{missing}"
    );

    let mut duplicated = series.clone();
    duplicated.push(series[0].clone());
    let duplicated = verify("duplicated.jsonl", duplicated).await;
    duplicated.assert_exit(1, "verify-export of an export with a series twice");
    assert!(
        duplicated.stdout.contains("is read back as two series"),
        "{duplicated}"
    );

    let mut altered = series.clone();
    altered[0].timestamps[0] += 1;
    let altered = verify("altered.jsonl", altered).await;
    altered.assert_exit(1, "verify-export of an export with a timestamp changed");
    assert_eq!(altered.count("problems"), 1, "{altered}");

    let broken = dir.path().join("broken.jsonl");
    fs::write(&broken, "not json\n").expect("writing the broken export");
    let broken = load_cli(&[
        "verify-export",
        "--export",
        path_str(&broken),
        "--expected",
        path_str(&expected_file),
    ])
    .await;
    broken.assert_exit(2, "verify-export of an export that is not JSON lines");
}

/// `send --duration-secs` keeps every client going while the ingest is SIGKILLed and restarted
/// (what `hack/chaos.sh` relies on): connection errors are counted, not fatal, with
/// --allow-unacknowledged the exit is 0, and what was acknowledged is in the sink exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn send_for_a_duration_keeps_going_through_a_killed_ingest() {
    let dir = TestDir::new("load-cli-duration");
    let ingest_spec = ServiceSpec::ingest(&dir, "ingest");
    let ingest = ingest_spec.start().await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    let expected_file = dir.path().join("expected.json");

    let url = ingest.base_url();
    let expected_arg = path_str(&expected_file).to_owned();
    let send = tokio::spawn(async move {
        load_cli(&[
            "send",
            "--url",
            &url,
            "--clients",
            "4",
            "--metrics",
            "2",
            "--duration-secs",
            "6",
            "--pause-ms",
            "5",
            "--refusal-pause-ms",
            "20",
            "--allow-unacknowledged",
            "--expected-out",
            &expected_arg,
        ])
        .await
    });
    // Kill the ingest once it has acknowledged some load, so both sides of the kill are seen.
    let started = std::time::Instant::now();
    while ingest.metrics_accepted().await < 100 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the ingest acknowledged no load within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ingest.kill();
    // The outage itself: the senders meet a closed port for this long.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ingest = ingest_spec.start().await;
    let sent = send.await.expect("the send task");

    sent.assert_exit(0, "send --allow-unacknowledged across a killed ingest");
    let requests = sent.count("requests");
    let acknowledged = sent.count("acknowledged");
    let unanswered = sent.count("unanswered");
    assert!(unanswered > 0, "no request hit the dead ingest: {sent}");
    assert!(acknowledged > 0, "{sent}");
    assert_eq!(
        requests,
        acknowledged + sent.count("refused") + unanswered,
        "{sent}"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(&expected_file).expect("send wrote the expected file"))
            .expect("the expected file is JSON");
    let recorded = record["acknowledged_requests"]
        .as_array()
        .expect("acknowledged_requests is an array");
    assert_eq!(recorded.len() as u64, acknowledged, "{sent}");
    // Kept going: some client had a request acknowledged after one of its requests failed (a
    // gap in its acknowledged sequence numbers, which always start at 0).
    let mut per_client: std::collections::HashMap<&str, (u64, u64)> = Default::default();
    for request in recorded {
        let client = request["client"].as_str().expect("a client name");
        let seq = request["seq"].as_u64().expect("a sequence number");
        let (count, max_seq) = per_client.entry(client).or_default();
        *count += 1;
        *max_seq = (*max_seq).max(seq);
    }
    assert!(
        per_client
            .values()
            .any(|(count, max_seq)| max_seq + 1 > *count),
        "no client had a request acknowledged after a failed one: {sent}"
    );

    let live = load_cli(&[
        "verify",
        "--sink-dir",
        path_str(&dir.sink_dir()),
        "--expected",
        path_str(&expected_file),
        "--wait-secs",
        "60",
    ])
    .await;
    live.assert_exit(0, "verify after a killed ingest");
    assert_eq!(live.count("found once"), acknowledged * 2, "{live}");
    assert_eq!(live.count("acked dups"), 0, "{live}");
    consumer.terminate().await;
    ingest.terminate().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_with_a_bearer_token_is_verified_against_the_tokens_client() {
    let dir = TestDir::new("load-cli-token");
    let tokens = dir.write_file(
        "tokens",
        "# client_id=token\nload-tester=s3cret-token\nother=another-token\n",
    );
    let ingest = ServiceSpec::ingest(&dir, "ingest")
        .env("METRICSTREAM_TOKENS_FILE", tokens)
        .start()
        .await;
    let consumer = ServiceSpec::consumer(&dir, "consumer").start().await;
    let url = ingest.base_url();
    let expected_file = dir.path().join("expected.json");

    let sent = load_cli(&[
        "send",
        "--url",
        &url,
        "--clients",
        "4",
        "--requests",
        "10",
        "--metrics",
        "3",
        "--client-prefix",
        "tok",
        "--token",
        "s3cret-token",
        "--expected-out",
        path_str(&expected_file),
    ])
    .await;
    sent.assert_exit(0, "send with the right token");
    assert_eq!(sent.count("acknowledged"), 40, "{sent}");

    let verified = load_cli(&[
        "verify",
        "--sink-dir",
        path_str(&dir.sink_dir()),
        "--expected",
        path_str(&expected_file),
        "--wait-secs",
        "60",
    ])
    .await;
    verified.assert_exit(0, "verify of the token run");
    assert_eq!(verified.count("found"), 120, "{verified}");
    assert_eq!(verified.count("missing"), 0, "{verified}");
    assert!(
        verified.stdout.contains("sink clients:  load-tester\n"),
        "the sink names the token's client: {verified}"
    );

    // A wrong token from a file: nothing acknowledged, the 401s named, the token never echoed.
    let wrong_token = dir.write_file("wrong-token", "not-the-token\n");
    let rejected = load_cli(&[
        "send",
        "--url",
        &url,
        "--clients",
        "2",
        "--requests",
        "3",
        "--metrics",
        "1",
        "--token-file",
        path_str(&wrong_token),
    ])
    .await;
    rejected.assert_exit(1, "send with a wrong token");
    assert_eq!(rejected.count("acknowledged"), 0, "{rejected}");
    assert!(
        rejected
            .stderr
            .contains("6 of 6 requests were not acknowledged: 401 unknown_token x6"),
        "{rejected}"
    );
    assert!(
        !rejected.stdout.contains("not-the-token") && !rejected.stderr.contains("not-the-token"),
        "the token is a secret: {rejected}"
    );

    // The ingest's own tokens file is not a token file: refused before anything is sent.
    let tokens_file = dir.path().join("tokens");
    let misused = load_cli(&[
        "send",
        "--url",
        &url,
        "--token-file",
        path_str(&tokens_file),
    ])
    .await;
    misused.assert_exit(2, "send with the ingest's tokens file as --token-file");
    assert!(misused.stderr.contains("holds 3 lines"), "{misused}");

    consumer.terminate().await;
    ingest.terminate().await;
    let contents = read_sink(&dir.sink_dir(), ReadMode::Settled)
        .unwrap_or_else(|error| panic!("the settled sink is malformed: {error}"));
    assert_eq!(contents.lines.len(), 120);
    assert!(
        contents
            .lines
            .iter()
            .all(|line| line.client == "load-tester"),
        "every metric is the token's client's"
    );
}
