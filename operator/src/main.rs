//! `metricstream-operator`: `crd` prints the CustomResourceDefinition; `run` (to come) runs the
//! controller.

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use metricstream_operator::crd::MetricStream;

/// The MetricStream Kubernetes operator.
#[derive(Parser)]
#[command(name = "metricstream-operator", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the MetricStream CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Crd => {
            print!("{}", serde_yaml::to_string(&MetricStream::crd())?);
            Ok(())
        }
    }
}
