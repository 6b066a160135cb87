//! Operator: how fast the real `metricstream-operator` turns 1, 100 and 500 MetricStreams into
//! their children and statuses on the local control plane (`hack/envtest.sh up`), and how much
//! memory and CPU it spends holding them.
//!
//! Per stream count, in a fresh namespace: start the release operator watching it, wait for its
//! `/readyz`, apply the streams server-side (`--in-flight` at a time, file backend), and watch
//! the API until every stream has its six children (ConfigMap `<name>-config`, Deployments
//! `<name>-ingest` and `<name>-consumer`, Service `<name>-ingest`, PVCs `<name>-queue` and
//! `<name>-sink`) and a status whose observedGeneration is its generation. Then read the
//! operator's peak RSS and CPU time, stop it and delete the namespace.

mod cluster;
mod process;
pub(crate) mod procfs;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;

use crate::results::{Machine, Measurement, SuiteResults, peak_rss_mib};
use cluster::{Outcome, Progress, Tally, WATCHED_KINDS};
use process::{OperatorProcess, ReconcileCounters};
use procfs::{ControlPlane, MachineCpu, process_cpu_seconds, resident_mib};

#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {
    /// MetricStream counts to measure, each in a fresh namespace with a fresh operator.
    #[arg(long, value_delimiter = ',', default_value = "1,100,500")]
    pub streams: Vec<usize>,

    /// Applies in flight at once.
    #[arg(long, default_value_t = 24)]
    pub in_flight: usize,

    /// Give up on one stream count after this many seconds from its first apply (it is then
    /// recorded with how far it got).
    #[arg(long, default_value_t = 240)]
    pub timeout_secs: u64,

    /// Seconds the operator keeps running after the last status, holding every stream, before
    /// its memory is read (it handles the controller-manager's Deployment status updates).
    #[arg(long, default_value_t = 5)]
    pub hold_secs: u64,

    /// How long to wait for a namespace's deletion before going on (it then goes on in the
    /// background).
    #[arg(long, default_value_t = 120)]
    pub delete_timeout_secs: u64,

    /// The operator binary; default: metricstream-operator beside this binary (target/release).
    #[arg(long)]
    pub operator_bin: Option<PathBuf>,

    /// A quick check: 1 and 20 streams (instead of --streams), a 1 s hold.
    #[arg(long)]
    pub quick: bool,

    /// Keep each run's operator log (its directory is printed); logs of failed runs are kept
    /// anyway.
    #[arg(long)]
    pub keep_logs: bool,
}

pub async fn run(mut args: OperatorArgs) -> anyhow::Result<SuiteResults> {
    let started = k8s_openapi::jiff::Timestamp::now().to_string();
    if args.quick {
        args.streams = vec![1, 20];
        args.hold_secs = args.hold_secs.min(1);
    }
    if args.streams.is_empty() || args.streams.contains(&0) {
        bail!("--streams needs stream counts of at least 1");
    }
    let binary = process::operator_binary(args.operator_bin.as_deref())?;
    let (client, kubeconfig) = cluster::connect().await?;
    cluster::install_crd(&client).await?;
    cluster::ensure_service_ips(&client, args.streams.iter().copied().max().unwrap_or(0)).await?;
    let control_plane = ControlPlane::beside(&kubeconfig);
    if control_plane.is_empty() {
        eprintln!(
            "operator: no hack/envtest.sh pid files beside {}: the control plane's CPU is not \
             measured",
            kubeconfig.display()
        );
    }
    let machine = Machine::this();
    let suite = Suite {
        client: &client,
        binary: &binary,
        args: &args,
        control_plane: &control_plane,
        machine: &machine,
    };
    let mut measurements = Vec::new();
    for &streams in &args.streams {
        eprintln!("operator: {streams} MetricStream(s)");
        let measurement = run_one(&suite, streams)
            .await
            .with_context(|| format!("the operator run with {streams} MetricStream(s)"))?;
        measurements.push(measurement);
    }
    Ok(SuiteResults {
        suite: "operator".into(),
        started,
        machine,
        measurements,
    })
}

/// What every run of the suite shares.
struct Suite<'a> {
    client: &'a Client,
    binary: &'a Path,
    args: &'a OperatorArgs,
    control_plane: &'a ControlPlane,
    machine: &'a Machine,
}

/// One stream count in its own namespace, which is deleted afterwards whatever happened.
async fn run_one(suite: &Suite<'_>, streams: usize) -> anyhow::Result<Measurement> {
    let Suite { client, args, .. } = *suite;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.subsec_nanos())
        .unwrap_or_default();
    let namespace = format!("bench-operator-{streams}-{}-{nanos:x}", std::process::id());
    let mut logs = tempfile::Builder::new()
        .prefix("metricstream-bench-operator-")
        .tempdir()
        .context("creating a directory for the operator's log")?;
    cluster::create_namespace(client, &namespace).await?;
    let measured = measure(
        suite,
        &namespace,
        streams,
        &logs.path().join("operator.log"),
    )
    .await;
    // Waiting for the namespace to go keeps its deletion out of the next measurement.
    let wait_for_deletion = Duration::from_secs(args.delete_timeout_secs);
    let deleted = cluster::delete_namespace(client, &namespace, wait_for_deletion).await;
    let complete = matches!(&measured, Ok(m) if !m.figures.contains_key("timed_out_after_seconds"));
    if args.keep_logs || !complete {
        logs.disable_cleanup(true);
        eprintln!(
            "operator: the operator's log is kept in {}",
            logs.path().display()
        );
    }
    let mut measurement = measured?;
    match deleted {
        Ok(Some(took)) => {
            measurement
                .figures
                .insert("seconds_to_delete_namespace".into(), took.as_secs_f64());
        }
        Ok(None) => eprintln!(
            "operator: namespace {namespace} still exists after {} s; its deletion goes on in \
             the background",
            wait_for_deletion.as_secs()
        ),
        Err(error) => eprintln!("operator: cleaning up namespace {namespace}: {error:#}"),
    }
    Ok(measurement)
}

/// What the machine's processes had used, and the API server had served, at one moment.
struct CpuMark {
    operator: f64,
    bench: f64,
    control_plane: BTreeMap<&'static str, f64>,
    machine: MachineCpu,
    /// Requests by verb; empty when the API server's /metrics could not be read.
    apiserver_requests: BTreeMap<String, f64>,
}

impl CpuMark {
    async fn now(
        client: &Client,
        operator_pid: u32,
        control_plane: &ControlPlane,
    ) -> anyhow::Result<Self> {
        let apiserver_requests =
            cluster::apiserver_requests(client)
                .await
                .unwrap_or_else(|error| {
                    eprintln!("operator: not counting API requests: {error:#}");
                    BTreeMap::new()
                });
        Ok(Self {
            operator: process_cpu_seconds(operator_pid)?,
            bench: process_cpu_seconds(std::process::id())?,
            control_plane: control_plane.cpu_seconds(),
            machine: MachineCpu::now()?,
            apiserver_requests,
        })
    }

    /// CPU figures of the window from `self` to `later`.
    fn figures_until(&self, later: &Self, cores: usize) -> BTreeMap<String, f64> {
        let mut figures = BTreeMap::from([
            ("cpu_seconds".to_owned(), later.operator - self.operator),
            ("bench_cpu_seconds".to_owned(), later.bench - self.bench),
            (
                "machine_busy_cores".to_owned(),
                later.machine.busy_cores_since(&self.machine, cores),
            ),
        ]);
        let mut control_plane_total = 0.0;
        for (component, before) in &self.control_plane {
            if let Some(after) = later.control_plane.get(component) {
                control_plane_total += after - before;
                figures.insert(format!("{component}_cpu_seconds"), after - before);
            }
        }
        if !self.control_plane.is_empty() {
            figures.insert("control_plane_cpu_seconds".into(), control_plane_total);
        }
        if !self.apiserver_requests.is_empty() && !later.apiserver_requests.is_empty() {
            let served = |verb: &str| {
                later.apiserver_requests.get(verb).copied().unwrap_or(0.0)
                    - self.apiserver_requests.get(verb).copied().unwrap_or(0.0)
            };
            let total: f64 = later
                .apiserver_requests
                .keys()
                .map(|verb| served(verb))
                .sum();
            figures.insert("apiserver_requests".into(), total);
            for (verb, figure) in [
                ("APPLY", "apiserver_applies"),
                ("PATCH", "apiserver_patches"),
                ("POST", "apiserver_creates"),
                ("PUT", "apiserver_updates"),
                ("LIST", "apiserver_lists"),
                ("GET", "apiserver_gets"),
            ] {
                figures.insert(figure.into(), served(verb));
            }
        }
        figures
    }
}

async fn measure(
    suite: &Suite<'_>,
    namespace: &str,
    streams: usize,
    log: &Path,
) -> anyhow::Result<Measurement> {
    let Suite {
        client,
        binary,
        args,
        control_plane,
        machine,
    } = *suite;
    let mut operator = OperatorProcess::spawn(binary, namespace, log)?;
    operator.wait_ready(Duration::from_secs(30)).await?;

    // The watches list the (empty) namespace first, so nothing created later is missed.
    let mut progress = cluster::watch_progress(client, namespace);
    let mut synced = HashSet::new();
    let sync_deadline = Instant::now() + Duration::from_secs(30);
    while synced.len() < WATCHED_KINDS {
        match tokio::time::timeout_at(sync_deadline.into(), progress.next()).await {
            Ok(Some(Progress::Synced(kind))) => {
                synced.insert(kind);
            }
            Ok(Some(_)) => {}
            Ok(None) => bail!("the watches of namespace {namespace} ended"),
            Err(_) => bail!("the watches of namespace {namespace} did not sync within 30 s"),
        }
    }

    let names = cluster::stream_names(streams);
    let before = CpuMark::now(client, operator.pid(), control_plane).await?;
    let (applied_tx, mut applied_rx) = mpsc::unbounded_channel();
    let first_apply = Instant::now();
    let mut applier = tokio::spawn(cluster::apply_streams(
        client.clone(),
        namespace.to_owned(),
        names.clone(),
        args.in_flight,
        applied_tx,
    ));
    let mut tally = Tally::new(&names, first_apply);
    let deadline = tokio::time::Instant::from(first_apply + Duration::from_secs(args.timeout_secs));
    let mut liveness = tokio::time::interval(Duration::from_millis(500));
    let mut applied_in = None;
    while !tally.complete() {
        tokio::select! {
            Some(seen) = progress.next() => tally.record(seen),
            Some(seen) = applied_rx.recv() => tally.record(seen),
            joined = &mut applier, if applied_in.is_none() => {
                applied_in = Some(joined.context("the applying task failed")??);
            }
            _ = liveness.tick() => operator.ensure_running()?,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let window = first_apply.elapsed();
    let after = CpuMark::now(client, operator.pid(), control_plane).await?;
    if applied_in.is_none() {
        applier.abort();
    }
    while let Ok(seen) = applied_rx.try_recv() {
        tally.record(seen);
    }
    let outcome = tally.finish();

    let hold_until = Instant::now() + Duration::from_secs(args.hold_secs);
    while Instant::now() < hold_until {
        operator.ensure_running()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Read after the hold, so the reconciles the controller-manager's status updates cause are in.
    let counters = operator.reconcile_counters().await.unwrap_or_else(|error| {
        eprintln!("operator: reading the operator's /metrics: {error:#}");
        ReconcileCounters::default()
    });
    let rss_peak_mib = peak_rss_mib(operator.pid())?;
    let rss_mib = resident_mib(operator.pid())?;
    let command = format!(
        "{} ({streams} file-backed MetricStreams applied server-side, {} in flight, by \
         metricstream-bench operator)",
        operator.command_line, args.in_flight
    );
    let log_path = operator.log().to_path_buf();
    operator.stop().await?;

    let mut figures = before.figures_until(&after, machine.cores);
    figures.extend([
        ("rss_peak_mib".to_owned(), rss_peak_mib),
        ("rss_mib".to_owned(), rss_mib),
        ("children".to_owned(), outcome.children_seen as f64),
        (
            "streams_with_status".to_owned(),
            outcome.statuses_seen as f64,
        ),
        ("reconciles".to_owned(), counters.reconciles),
        ("reconcile_failures".to_owned(), counters.failures),
        ("reconcile_mean_ms".to_owned(), counters.mean_ms()),
    ]);
    if let Some(applied) = applied_in {
        figures.insert("seconds_to_apply".into(), applied.as_secs_f64());
    }
    add_timings(&mut figures, &outcome, streams, window);
    print_summary(streams, &figures, &outcome, window, &log_path);
    Ok(Measurement {
        suite: "operator".into(),
        target: "operator".into(),
        params: BTreeMap::from([("streams".to_owned(), json!(streams))]),
        figures,
        command,
    })
}

fn add_timings(
    figures: &mut BTreeMap<String, f64>,
    outcome: &Outcome,
    streams: usize,
    window: Duration,
) {
    figures.insert("streams_reconciled".into(), outcome.reconciled as f64);
    if let Some(children) = outcome.to_children {
        figures.insert("seconds_to_children".into(), children.as_secs_f64());
    }
    if let Some(status) = outcome.to_status {
        figures.insert("seconds_to_status".into(), status.as_secs_f64());
    }
    // Reconciled = children created and status written. A run cut off by --timeout-secs gets
    // the rate it reached: the streams reconciled by then over the whole window.
    let streams_per_sec = match (outcome.to_children, outcome.to_status) {
        (Some(children), Some(status)) => streams as f64 / children.max(status).as_secs_f64(),
        _ => {
            figures.insert("timed_out_after_seconds".into(), window.as_secs_f64());
            outcome.reconciled as f64 / window.as_secs_f64()
        }
    };
    figures.insert("streams_per_sec".into(), streams_per_sec);
    let per_stream = &outcome.per_stream_children;
    if !per_stream.is_empty() {
        let at = |quantile: f64| {
            let index = ((per_stream.len() - 1) as f64 * quantile).round() as usize;
            per_stream[index].as_secs_f64()
        };
        figures.insert("stream_children_p50_seconds".into(), at(0.5));
        figures.insert("stream_children_max_seconds".into(), at(1.0));
    }
}

fn print_summary(
    streams: usize,
    figures: &BTreeMap<String, f64>,
    outcome: &Outcome,
    window: Duration,
    log: &Path,
) {
    let figure = |name: &str| {
        figures
            .get(name)
            .map_or_else(|| "-".to_owned(), |value| format!("{value:.2}"))
    };
    eprintln!(
        "operator: {streams} streams: children {} s, status {} s, {} streams/s; RSS peak {} MiB; \
         operator CPU {} s, control plane CPU {} s, machine {} busy cores; {} reconciles",
        figure("seconds_to_children"),
        figure("seconds_to_status"),
        figure("streams_per_sec"),
        figure("rss_peak_mib"),
        figure("cpu_seconds"),
        figure("control_plane_cpu_seconds"),
        figure("machine_busy_cores"),
        figure("reconciles"),
    );
    if outcome.to_children.is_none() || outcome.to_status.is_none() {
        eprintln!(
            "operator: WARNING: {streams} streams not reconciled within {window:?}: {}/{} \
             children, {}/{streams} statuses (operator log: {})",
            outcome.children_seen,
            outcome.children_expected,
            outcome.statuses_seen,
            log.display()
        );
    }
}
