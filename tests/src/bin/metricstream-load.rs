//! `metricstream-load`: the process-level tests' load generator and sink checker as a command
//! line, for end-to-end runs against a deployed pipeline (e.g. a kind cluster reached through a
//! NodePort, its sink directory copied out).
//!
//! `send` drives one or more ingests with uniquely tagged metrics and writes what they
//! acknowledged to a JSON file; `verify` reads a sink directory and checks every acknowledged
//! metric is there exactly once; `verify-export` does the same for a store's export (a
//! remote-write sink's VictoriaMetrics). All are thin wrappers over the harness's `load`, `sink`
//! and `store`.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

use metricstream_tests::load::client_name;
use metricstream_tests::sink::names;
use metricstream_tests::store::store_problems;
use metricstream_tests::victoriametrics::ExportedSeries;
use metricstream_tests::{
    AcknowledgedRequest, Expected, LoadReport, LoadSpec, MetricId, Outcome, ReadMode, SinkClient,
    SinkContents, Verification, read_sink, start_load, verify,
};

/// Written into the expected file so `verify` can refuse any other JSON clearly.
const EXPECTED_FORMAT: &str = "metricstream-load expected v1";
/// How many failed requests `send` shows in full.
const FAILURE_EXAMPLES: usize = 5;
/// Requests per client without --requests or --duration-secs.
const DEFAULT_REQUESTS: u64 = 50;

#[derive(Parser)]
#[command(
    name = "metricstream-load",
    version,
    about = "Load generator and sink checker for a running MetricStream pipeline",
    long_about = "Load generator and sink checker for a running MetricStream pipeline.\n\n\
        `send` posts uniquely tagged metrics to the ingest and records which requests were \
        acknowledged; `verify` reads the consumer's sink directory and checks that every \
        acknowledged metric is in it exactly once.\n\n\
        Example (an ingest on a NodePort, the sink directory copied out of the cluster to \
        ./sink):\n  \
        metricstream-load send --url http://127.0.0.1:30080 --expected-out run.json\n  \
        metricstream-load verify --sink-dir ./sink --expected run.json\n\n\
        Run `metricstream-load <COMMAND> --help` for each command's options.",
    after_help = "Exit status: 0 when the check passed, 1 when it failed (a request not \
        acknowledged, a metric missing or duplicated), 2 on an error (bad arguments, an \
        unreadable file, a malformed sink)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Send(SendArgs),
    Verify(VerifyArgs),
    VerifyExport(VerifyExportArgs),
}

/// Send generated metrics to the ingest and record which requests were acknowledged.
///
/// Every client sends its requests one after another, all clients at once. Each metric carries
/// its identity in its tags (client name, request number, position in the request), which is
/// how `verify` recognises it in the sink. The defaults are the C++ prototype's scenario:
/// 20 clients x 50 requests x 10 metrics.
///
/// Prints requests, acknowledged requests, the answers' status counts, req/s and the p50/p99
/// latency of acknowledged requests. Exits 1 if any request was not acknowledged (not 2xx, or
/// no answer) unless --allow-unacknowledged; the expected file is written anyway, with the
/// requests that were.
///
/// A request that fails is never resent: the client goes on with its next sequence number, so
/// every attempt is a distinct metric and `verify` tells a duplicate from a retry.
#[derive(Args)]
#[command(
    after_help = "Authentication: without --token (open mode, an ingest without a tokens file) \
        each client sends its name as the Authorization value, so the ingest takes it as the \
        client id (which picks the partition) and verify checks the sink's `client` field \
        against it. With --token or --token-file every client sends `Authorization: Bearer \
        <TOKEN>`: they all become the one client the ingest's tokens file maps the token to \
        (one partition, one rate limit), and verify checks that every metric of the run \
        shows that same client.\n\n\
        Exit status: 0 when every request was acknowledged (or --allow-unacknowledged); 1 \
        when some were not, or a 2xx \
        answer's body broke the {\"accepted\":N,\"partition\":p,\"offset\":o} contract; 2 on \
        an error (bad arguments, an unreadable token file, an unwritable expected file)."
)]
struct SendArgs {
    /// Base URL of an ingest, without /metrics (e.g. http://127.0.0.1:30080 for a NodePort).
    /// Repeat for several ingests: requests alternate between them.
    #[arg(long = "url", value_name = "URL", required = true)]
    urls: Vec<String>,

    /// Concurrent clients.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    clients: u32,

    /// Requests each client sends, one after another. Default 50, or unlimited with
    /// --duration-secs.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,

    /// Send for SECS seconds, then stop (requests in flight run to their answer). With
    /// --requests too, whichever ends first.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    duration_secs: Option<u64>,

    /// Pause each client for MS milliseconds after every acknowledged request (paces the load).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pause_ms: u64,

    /// Pause each client for MS milliseconds after a request that was refused (any answer but
    /// 2xx) or not answered, so that clients do not spin while the pipeline is down. A failed
    /// request is never resent: the client's next request has a new sequence number.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    refusal_pause_ms: u64,

    /// Exit 0 even if some requests were refused or not answered (a chaos run expects them):
    /// only the acknowledged ones are promised, and only they are checked by `verify`.
    #[arg(long)]
    allow_unacknowledged: bool,

    /// Metrics in each request.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    metrics: u32,

    /// Bearer token for an ingest with a tokens file: every client sends
    /// `Authorization: Bearer <TOKEN>`. Visible in the process list; prefer --token-file.
    #[arg(long, value_name = "TOKEN", conflicts_with = "token_file")]
    token: Option<String>,

    /// Read the bearer token from FILE: the token alone (surrounding whitespace ignored), not
    /// the ingest's `client_id=token` tokens file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,

    /// Clients are named <PREFIX>-0 .. <PREFIX>-<N-1>. The default, load-<unix time>-<pid>,
    /// differs per run, so several runs can share one sink and still be verified apart.
    #[arg(long, value_name = "PREFIX")]
    client_prefix: Option<String>,

    /// Write the acknowledged requests to FILE as JSON, for `verify --expected FILE`.
    #[arg(long, value_name = "FILE")]
    expected_out: Option<PathBuf>,

    /// Client-side deadline of one request (connect, send, answer), in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    request_timeout_secs: u64,
}

/// Check a sink directory against what `send` recorded: every acknowledged metric exactly once.
///
/// Reads every *.jsonl file under DIR (the consumer's sink directory, or a copy of it) and
/// considers the lines of the run's clients; lines of other runs or other writers are counted
/// and ignored. Prints found, missing, duplicates (metrics present more than once, and
/// (partition, offset, index) positions present more than once) and unexpected (metrics of the
/// run whose request was not acknowledged, e.g. it timed out after the ingest stored it: allowed).
///
/// Passes only when nothing is missing, nothing is duplicated, and no metric of the run is
/// altered or at another position than its acknowledgement named.
#[derive(Args)]
#[command(
    after_help = "Exit status: 0 when every acknowledged metric is in the sink exactly once; 1 \
        when one is missing, duplicated or altered; 2 on an error (an unreadable or foreign \
        expected file, a missing sink directory, a sink line that is not a metric)."
)]
struct VerifyArgs {
    /// The sink directory: the consumer's --sink-dir, or a local copy of it.
    #[arg(long, value_name = "DIR")]
    sink_dir: PathBuf,

    /// The file `send --expected-out` wrote.
    #[arg(long, value_name = "FILE")]
    expected: PathBuf,

    /// Re-read the sink until every acknowledged metric is there, for at most SECS seconds (for a
    /// sink still being written). 0: read it once.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    wait_secs: u64,

    /// The consumer has stopped: every file must end with a complete line. By default a last
    /// line without its newline (being written right now) is skipped.
    #[arg(long)]
    settled: bool,
}

/// Check a store's export against what `send` recorded: every acknowledged metric exactly once.
///
/// For a stream whose consumers write to a store over remote write (VictoriaMetrics): FILE is
/// the answer of its `/api/v1/export?match[]={__name__="m"}` (JSON lines, one series a line),
/// read after `/internal/force_flush`. Passes when every acknowledged metric is one series with
/// exactly the labels __name__, client, i and seq, its one value and its timestamp, and the
/// export holds no other series of the load's metric (so export a store only this run wrote to).
#[derive(Args)]
#[command(
    after_help = "Exit status: 0 when every acknowledged metric is in the export exactly once         and nothing else is; 1 when one is missing, duplicated, altered or foreign; 2 on an         error (an unreadable or foreign expected file, an export line that is not a series)."
)]
struct VerifyExportArgs {
    /// The store's export: JSON lines of {"metric":{...},"values":[...],"timestamps":[...]}.
    #[arg(long, value_name = "FILE")]
    export: PathBuf,

    /// The file `send --expected-out` wrote.
    #[arg(long, value_name = "FILE")]
    expected: PathBuf,
}

/// What `send --expected-out` writes and `verify --expected` reads.
#[derive(Serialize, Deserialize)]
struct ExpectedFile {
    format: String,
    client_prefix: String,
    clients: u32,
    /// `u64::MAX` for a run bounded by time (`send --duration-secs`).
    requests_per_client: u64,
    metrics_per_request: u32,
    urls: Vec<String>,
    sink_client: SinkClient,
    requests_sent: usize,
    acknowledged_requests: Vec<AcknowledgedRequest>,
    /// 2xx answers whose body broke the `{"accepted":N,"partition":p,"offset":o}` contract.
    answer_problems: Vec<String>,
}

impl ExpectedFile {
    fn client_names(&self) -> HashSet<String> {
        (0..self.clients as usize)
            .map(|client| client_name(&self.client_prefix, client))
            .collect()
    }

    fn expected(&self) -> Expected {
        let mut expected = Expected {
            problems: self.answer_problems.clone(),
            sink_client: self.sink_client,
            ..Expected::default()
        };
        for request in &self.acknowledged_requests {
            expected.add_request(request);
        }
        expected
    }
}

/// Whether the check passed (exit 0) or found a fault (exit 1); errors exit 2.
enum Verdict {
    Passed,
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Send(args) => send(args),
        Command::Verify(args) => verify_sink(args),
        Command::VerifyExport(args) => verify_export(args),
    };
    match result {
        Ok(Verdict::Passed) => ExitCode::SUCCESS,
        Ok(Verdict::Failed) => ExitCode::from(1),
        Err(error) => {
            eprintln!("metricstream-load: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn send(args: SendArgs) -> Result<Verdict> {
    let urls = args
        .urls
        .iter()
        .map(|url| base_url(url))
        .collect::<Result<Vec<_>>>()?;
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(check_token(token.trim())?),
        (None, Some(file)) => Some(read_token_file(file)?),
        (None, None) => None,
    };
    let client_prefix = match args.client_prefix {
        Some(prefix) => {
            ensure!(!prefix.is_empty(), "--client-prefix must not be empty");
            prefix
        }
        None => default_client_prefix(),
    };
    let requests = match (args.requests, args.duration_secs) {
        (Some(requests), _) => requests,
        (None, Some(_)) => u64::MAX,
        (None, None) => DEFAULT_REQUESTS,
    };
    let duration = args.duration_secs.map(Duration::from_secs);
    let mut spec = LoadSpec::new(urls.clone(), args.clients as usize, requests, args.metrics)
        .client_prefix(&client_prefix)
        .request_timeout(Duration::from_secs(args.request_timeout_secs))
        .pause(Duration::from_millis(args.pause_ms))
        .refusal_pause(Duration::from_millis(args.refusal_pause_ms));
    let sink_client = match token {
        Some(token) => {
            spec = spec.authorization(format!("Bearer {token}"));
            SinkClient::Authenticated
        }
        None => SinkClient::Tag,
    };

    let per_client = match (requests, duration) {
        (u64::MAX, Some(duration)) => format!("requests for {} s", duration.as_secs()),
        (requests, Some(duration)) => {
            format!(
                "requests (at most {requests}, for {} s)",
                duration.as_secs()
            )
        }
        (requests, None) => format!("{requests} requests"),
    };
    println!(
        "sending:       {} clients x {per_client} x {} metrics to {}",
        args.clients,
        args.metrics,
        urls.join(", ")
    );
    println!(
        "clients:       {} .. {} ({})",
        spec.client_name(0),
        spec.client_name(spec.clients - 1),
        match sink_client {
            SinkClient::Tag => "open mode: each client's name is its Authorization value",
            SinkClient::Authenticated => "all send the same bearer token",
        }
    );
    let report = run(spec, duration)?;
    let (acknowledged_requests, answer_problems) = report.acknowledged_requests();
    print_send_summary(&report);

    if let Some(path) = &args.expected_out {
        let file = ExpectedFile {
            format: EXPECTED_FORMAT.to_owned(),
            client_prefix,
            clients: args.clients,
            requests_per_client: requests,
            metrics_per_request: args.metrics,
            urls,
            sink_client,
            requests_sent: report.outcomes.len(),
            acknowledged_requests,
            answer_problems: answer_problems.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).context("serializing the expected file")?;
        fs::write(path, json)
            .with_context(|| format!("writing the expected file {}", path.display()))?;
        println!("expected:      written to {}", path.display());
    }

    let failed: Vec<&Outcome> = report
        .outcomes
        .iter()
        .filter(|outcome| !outcome.acknowledged())
        .collect();
    let mut verdict = Verdict::Passed;
    if !failed.is_empty() && !args.allow_unacknowledged {
        verdict = Verdict::Failed;
        let statuses: Vec<String> = report
            .result_counts()
            .into_iter()
            .filter(|(result, _)| !result.starts_with('2'))
            .map(|(result, count)| format!("{result} x{count}"))
            .collect();
        eprintln!(
            "FAILED: {} of {} requests were not acknowledged: {}",
            failed.len(),
            report.outcomes.len(),
            statuses.join(", ")
        );
        for outcome in failed.iter().take(FAILURE_EXAMPLES) {
            eprintln!("  {}", describe_failure(outcome));
        }
        if failed.len() > FAILURE_EXAMPLES {
            eprintln!("  ... and {} more", failed.len() - FAILURE_EXAMPLES);
        }
    }
    if !answer_problems.is_empty() {
        verdict = Verdict::Failed;
        eprintln!(
            "FAILED: {} acknowledgements broke the answer contract:",
            answer_problems.len()
        );
        for problem in answer_problems.iter().take(FAILURE_EXAMPLES) {
            eprintln!("  {problem}");
        }
    }
    Ok(verdict)
}

/// Runs the load on a runtime of its own, for at most `duration`, printing progress every few
/// seconds for long runs.
fn run(spec: LoadSpec, duration: Option<Duration>) -> Result<LoadReport> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let of_total = match spec.requests_per_client {
        u64::MAX => String::new(),
        requests => format!(" of {}", (spec.clients as u64).saturating_mul(requests)),
    };
    Ok(runtime.block_on(async move {
        let started = Instant::now();
        let load = start_load(spec);
        let mut progress = tokio::time::interval(Duration::from_secs(5));
        progress.tick().await;
        while !load.is_finished() {
            if duration.is_some_and(|duration| started.elapsed() >= duration) {
                load.stop();
            }
            tokio::select! {
                _ = progress.tick() => eprintln!(
                    "  ... {}{of_total} requests answered ({} acknowledged, {} not)",
                    load.acknowledged() + load.failed(),
                    load.acknowledged(),
                    load.failed()
                ),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        load.finish().await
    }))
}

fn print_send_summary(report: &LoadReport) {
    let seconds = report.elapsed.as_secs_f64().max(f64::EPSILON);
    let acknowledged = report.acknowledged_count();
    let metrics: u64 = report.acknowledged().map(|o| u64::from(o.metrics)).sum();
    let statuses: Vec<String> = report
        .result_counts()
        .into_iter()
        .map(|(result, count)| format!("{result} x{count}"))
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let unanswered = report.outcomes.iter().filter(|o| o.result.is_err()).count();
    let refused = report.outcomes.len() - acknowledged - unanswered;
    println!("requests:      {}", report.outcomes.len());
    println!("acknowledged:  {acknowledged} ({metrics} metrics)");
    println!("refused:       {refused} (answered, but not 2xx)");
    println!("unanswered:    {unanswered} (connection refused or reset, timeout)");
    println!("statuses:      {}", statuses.join(", "));
    println!(
        "throughput:    {:.0} req/s, {:.0} metrics/s acknowledged over {seconds:.2} s",
        acknowledged as f64 / seconds,
        metrics as f64 / seconds
    );
    if acknowledged > 0 {
        println!(
            "latency:       p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (acknowledged requests)",
            ms(report.latency_quantile(0.50)),
            ms(report.latency_quantile(0.99)),
            ms(report.latency_quantile(1.0))
        );
    } else {
        println!("latency:       none acknowledged");
    }
}

fn describe_failure(outcome: &Outcome) -> String {
    let detail = match &outcome.result {
        Ok(answer) => {
            let mut body = answer.body.trim().to_owned();
            // An error body is a short JSON object; anything longer is cut for the terminal.
            if body.len() > 300 {
                let mut end = 300;
                while !body.is_char_boundary(end) {
                    end -= 1;
                }
                body.truncate(end);
                body.push_str("...");
            }
            format!("{} {body}", answer.status)
        }
        Err(error) => format!("no answer: {error}"),
    };
    format!("{} request {}: {detail}", outcome.client, outcome.seq)
}

/// `http://host:port` from what the user typed: trailing slashes and a `/metrics` path dropped,
/// since the load generator appends `/metrics` itself.
fn base_url(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/metrics").unwrap_or(trimmed);
    let parsed = reqwest::Url::parse(trimmed)
        .with_context(|| format!("--url {url:?} is not a URL (e.g. http://127.0.0.1:30080)"))?;
    // The harness's HTTP client is built without TLS: loopback and NodePorts speak plain HTTP.
    ensure!(
        parsed.scheme() == "http",
        "--url {url:?}: only http:// URLs are supported"
    );
    ensure!(
        parsed.host_str().is_some(),
        "--url {url:?} has no host (e.g. http://127.0.0.1:30080)"
    );
    Ok(trimmed.to_owned())
}

fn read_token_file(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    // Never print the file's content: it is a secret.
    match lines.as_slice() {
        [token] => {
            check_token(token).with_context(|| format!("in the token file {}", path.display()))
        }
        [] => bail!("the token file {} is empty", path.display()),
        _ => bail!(
            "the token file {} holds {} lines; it must hold the token alone (the ingest's \
             tokens file has `client_id=token` lines: give the token part of one)",
            path.display(),
            lines.len()
        ),
    }
}

/// A token that can travel as `Authorization: Bearer <token>`. The error never repeats it.
fn check_token(token: &str) -> Result<String> {
    ensure!(!token.is_empty(), "the bearer token is empty");
    ensure!(
        token.chars().all(|c| c.is_ascii_graphic()),
        "the bearer token contains spaces, control or non-ASCII characters, which an \
         Authorization header cannot carry"
    );
    Ok(token.to_owned())
}

/// `load-<unix seconds>-<pid>`: distinct for every run, so runs sharing a sink stay apart.
fn default_client_prefix() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    format!("load-{seconds}-{}", std::process::id())
}

fn read_expected_file(path: &Path) -> Result<ExpectedFile> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the expected file {}", path.display()))?;
    let format = serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("{} is not JSON", path.display()))?
        .get("format")
        .and_then(|format| format.as_str().map(str::to_owned));
    ensure!(
        format.as_deref() == Some(EXPECTED_FORMAT),
        "{} is not an expected file of this version of metricstream-load (`send \
         --expected-out` writes one); its format is {format:?}, wanted {EXPECTED_FORMAT:?}",
        path.display()
    );
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid expected file", path.display()))
}

/// One reading of the sink, restricted to the run's lines.
struct Check {
    verification: Verification,
    files: usize,
    /// Lines of other runs or other writers, ignored.
    other_lines: usize,
    /// The distinct `client` values of the run's lines.
    sink_clients: BTreeSet<String>,
}

fn check_sink(
    dir: &Path,
    mode: ReadMode,
    run: &ExpectedFile,
    expected: &Expected,
) -> Result<Check> {
    let mut contents: SinkContents = read_sink(dir, mode)
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "the sink {} holds a line that is not a metric",
                dir.display()
            )
        })?;
    let clients = run.client_names();
    let other_lines = contents.retain_lines(|line| {
        MetricId::from_tags(&line.name, &line.tags).is_some_and(|id| clients.contains(&id.client))
    });
    let sink_clients = names(&contents)
        .into_keys()
        .map(|(client, _name)| client)
        .collect();
    Ok(Check {
        verification: verify(&contents, expected),
        files: contents.files.len(),
        other_lines,
        sink_clients,
    })
}

fn verify_sink(args: VerifyArgs) -> Result<Verdict> {
    let run = read_expected_file(&args.expected)?;
    let expected = run.expected();
    let mode = if args.settled {
        ReadMode::Settled
    } else {
        ReadMode::Live
    };
    let wait = Duration::from_secs(args.wait_secs);
    let started = Instant::now();
    let mut last_progress = started;

    let check = loop {
        // A missing directory is most likely a typo, unless the consumer is yet to create it.
        let dir_ready = args.sink_dir.is_dir();
        if !dir_ready && (started.elapsed() >= wait || args.sink_dir.exists()) {
            bail!(
                "the sink directory {} does not exist or is not a directory",
                args.sink_dir.display()
            );
        }
        if dir_ready {
            let check = check_sink(&args.sink_dir, mode, &run, &expected)?;
            if check.verification.complete() || started.elapsed() >= wait {
                break check;
            }
            if last_progress.elapsed() >= Duration::from_secs(5) {
                last_progress = Instant::now();
                eprintln!(
                    "  ... {} of {} acknowledged metrics in the sink after {:.0} s",
                    check.verification.found,
                    check.verification.expected,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    };

    let verification = &check.verification;
    let quarantined = quarantined_records(&args.sink_dir)?;
    println!(
        "sink:          {} ({} files, {} lines of this run, {} other lines ignored)",
        args.sink_dir.display(),
        check.files,
        verification.lines,
        check.other_lines
    );
    println!(
        "run:           clients {} .. {}, {} of {} requests acknowledged",
        client_name(&run.client_prefix, 0),
        client_name(&run.client_prefix, run.clients.saturating_sub(1) as usize),
        run.acknowledged_requests.len(),
        run.requests_sent
    );
    if !check.sink_clients.is_empty() {
        let clients: Vec<&str> = check.sink_clients.iter().map(String::as_str).collect();
        let shown = clients.len().min(3);
        println!(
            "sink clients:  {}{}",
            clients[..shown].join(", "),
            if clients.len() > shown {
                format!(" and {} more", clients.len() - shown)
            } else {
                String::new()
            }
        );
    }
    let extra_copies: usize = verification
        .duplicated_metrics
        .iter()
        .map(|(_, copies)| copies - 1)
        .sum();
    let acknowledged_duplicates = verification
        .duplicated_metrics
        .iter()
        .filter(|(id, _)| expected.metrics.contains_key(id))
        .count();
    println!("expected:      {}", verification.expected);
    println!("found:         {}", verification.found);
    println!(
        "found once:    {}",
        verification.found - acknowledged_duplicates
    );
    println!("missing:       {}", verification.missing.len());
    println!(
        "duplicates:    {} (metrics present more than once; extra copies: {extra_copies})",
        verification.duplicated_metrics.len()
    );
    println!(
        "acked dups:    {acknowledged_duplicates} (acknowledged metrics present more than once)"
    );
    println!(
        "dup positions: {} ((partition, offset, index) present more than once)",
        verification.duplicated_positions.len()
    );
    println!(
        "unexpected:    {} (metrics of this run never acknowledged: allowed)",
        verification.unacknowledged
    );
    println!("problems:      {}", verification.problems.len());
    if quarantined > 0 {
        println!(
            "quarantined:   {quarantined} records the consumer could not decode (in quarantine/)"
        );
    }
    // Indented, so that only the counts above start a line with `missing:` and the like.
    let details = verification.details();
    if !details.is_empty() {
        println!("examples:");
        for line in details.lines() {
            println!("  {line}");
        }
    }

    if verification.exactly_once() {
        println!("OK: every acknowledged metric is in the sink exactly once");
        Ok(Verdict::Passed)
    } else {
        let mut faults = Vec::new();
        for (count, what) in [
            (verification.missing.len(), "missing"),
            (verification.duplicated_metrics.len(), "duplicated"),
            (
                verification.duplicated_positions.len(),
                "duplicated positions",
            ),
            (verification.problems.len(), "other problems"),
        ] {
            if count > 0 {
                faults.push(format!("{count} {what}"));
            }
        }
        let waited = if args.wait_secs > 0 && !verification.complete() {
            format!(" (after waiting {} s)", args.wait_secs)
        } else {
            String::new()
        };
        println!("FAILED: {}{waited}", faults.join(", "));
        Ok(Verdict::Failed)
    }
}

fn verify_export(args: VerifyExportArgs) -> Result<Verdict> {
    let run = read_expected_file(&args.expected)?;
    let expected = run.expected();
    let text = fs::read_to_string(&args.export)
        .with_context(|| format!("reading the export {}", args.export.display()))?;
    let series = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<ExportedSeries>(line).with_context(|| {
                format!(
                    "{} holds a line that is not an exported series: {line:.200}",
                    args.export.display()
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let samples: usize = series.iter().map(|series| series.values.len()).sum();
    let problems = store_problems(&series, &expected);
    println!(
        "export:        {} ({} series, {samples} samples)",
        args.export.display(),
        series.len()
    );
    println!(
        "run:           clients {} .. {}, {} of {} requests acknowledged",
        client_name(&run.client_prefix, 0),
        client_name(&run.client_prefix, run.clients.saturating_sub(1) as usize),
        run.acknowledged_requests.len(),
        run.requests_sent
    );
    println!("expected:      {}", expected.metrics.len());
    println!("problems:      {}", problems.len());
    if !problems.is_empty() {
        println!("examples:");
        for problem in problems.iter().take(20) {
            println!("  {problem}");
        }
        println!("FAILED: the export does not hold every acknowledged metric exactly once");
        return Ok(Verdict::Failed);
    }
    println!(
        "OK: every acknowledged metric is in the store exactly once, with its labels, value \
         and timestamp"
    );
    Ok(Verdict::Passed)
}

/// The records the consumer set aside as undecodable (`<sink-dir>/quarantine/*.bin`): their
/// metrics count as missing, and this says why.
fn quarantined_records(sink_dir: &Path) -> Result<usize> {
    let dir = sink_dir.join("quarantine");
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error).with_context(|| format!("listing {}", dir.display())),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if entry.path().extension().is_some_and(|ext| ext == "bin") {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised_and_checked() {
        for typed in [
            "http://127.0.0.1:30080",
            "http://127.0.0.1:30080/",
            " http://127.0.0.1:30080/metrics ",
        ] {
            assert_eq!(
                base_url(typed).expect("a usable URL"),
                "http://127.0.0.1:30080"
            );
        }
        assert!(base_url("127.0.0.1:30080").is_err(), "no scheme");
        assert!(base_url("https://ingest.example").is_err(), "no TLS");
    }

    #[test]
    fn token_files_hold_one_token_and_errors_never_show_it() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let file = dir.path().join("token");
        fs::write(&file, "  s3cret\n").expect("writing the token file");
        assert_eq!(read_token_file(&file).expect("a token"), "s3cret");

        fs::write(&file, "a=s3cret\nb=other\n").expect("writing the token file");
        let error = format!("{:#}", read_token_file(&file).expect_err("two lines"));
        assert!(
            error.contains("holds 2 lines") && !error.contains("s3cret"),
            "{error}"
        );

        fs::write(&file, "s3cret token\n").expect("writing the token file");
        let error = format!("{:#}", read_token_file(&file).expect_err("a space"));
        assert!(!error.contains("s3cret"), "{error}");

        fs::write(&file, "\n").expect("writing the token file");
        assert!(read_token_file(&file).is_err(), "empty");
    }
}
