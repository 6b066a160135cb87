//! The MetricStream operator. Not built yet: the operator issue fills this crate with the CRD
//! types and the reconciler. Until then the binary says so and exits non-zero, so nothing can
//! mistake it for a working controller.

use clap::Parser;

/// The MetricStream Kubernetes operator (not implemented yet).
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "metricstream-operator: the operator is not implemented yet; \
         run metricstream-ingest and metricstream-consumer directly"
    );
    std::process::ExitCode::from(2)
}
