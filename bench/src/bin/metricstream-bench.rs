//! `metricstream-bench`: runs one benchmark suite and writes its results as JSON, or renders the
//! report from every suite's results. `make bench` runs them all (see docs/benchmarks.md).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use metricstream_bench::{
    backend, dashboard, drain, drain_store, http, intake, operator, peers, report, results,
};

#[derive(Parser)]
#[command(about, long_about = None)]
struct Args {
    /// Where a suite writes its results (default target/bench/<suite>.json); for `dashboard`,
    /// its SVG (default target/bench/dashboard.svg).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP suite: no-op ceiling vs ingest on both backends.
    Http(http::HttpArgs),
    /// The intake protocols (native JSON, Influx, remote write 1.0/2.0, OTLP protobuf/JSON):
    /// samples/s of ingest vs a decode-only ceiling of the same bodies.
    Intake(intake::IntakeArgs),
    /// The backend ceilings: Kafka ProducerPerformance, append + fdatasync.
    Backend(backend::BackendArgs),
    /// The consumer drain of a one-million-metric backlog vs a bare read.
    Drain(drain::DrainArgs),
    /// The consumer drain into a fresh VictoriaMetrics (`--sink remote-write`) vs the store's
    /// own ingestion of the same samples. Needs VICTORIAMETRICS.
    DrainStore(drain_store::DrainStoreArgs),
    /// The operator with 1, 100 and 500 MetricStreams.
    Operator(operator::OperatorArgs),
    /// MetricStream beside its peers in the same run: OTLP → Kafka against the OpenTelemetry
    /// Collector, remote write → VictoriaMetrics against vmagent. Needs KAFKA_BOOTSTRAP,
    /// OTELCOL_PEER, VMAGENT and VICTORIAMETRICS.
    Peers(peers::PeersArgs),
    /// Render BENCHMARKS.md and the charts from the suites' results.
    Report(report::ReportArgs),
    /// Draw Grafana dashboards (JSON files) as one SVG from a Prometheus' data over a time range:
    /// time series and stat panels where the dashboard's grid puts them.
    Dashboard(dashboard::DashboardArgs),
    /// Print this machine's description as the results record it.
    Machine,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    let (suite, results) = match args.command {
        Command::Http(a) => ("http", runtime.block_on(http::run(a))?),
        Command::Intake(a) => ("intake", runtime.block_on(intake::run(a))?),
        Command::Backend(a) => ("backend", runtime.block_on(backend::run(a))?),
        Command::Drain(a) => ("drain", runtime.block_on(drain::run(a))?),
        Command::DrainStore(a) => ("drain-store", runtime.block_on(drain_store::run(a))?),
        Command::Operator(a) => ("operator", runtime.block_on(operator::run(a))?),
        Command::Peers(a) => ("peers", runtime.block_on(peers::run(a))?),
        Command::Report(a) => {
            runtime.block_on(report::run(a))?;
            return Ok(());
        }
        Command::Dashboard(a) => {
            let out = args
                .out
                .unwrap_or_else(|| PathBuf::from("target/bench/dashboard.svg"));
            runtime.block_on(dashboard::run(a, &out))?;
            eprintln!(
                "metricstream-bench: the dashboard picture in {}",
                out.display()
            );
            return Ok(());
        }
        Command::Machine => {
            println!(
                "{}",
                serde_json::to_string_pretty(&results::Machine::this())?
            );
            return Ok(());
        }
    };
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/{suite}.json")));
    results.write(&out)?;
    eprintln!("metricstream-bench: {suite} results in {}", out.display());
    Ok(())
}
