//! The flags that choose and size the queue, common to the ingest and the consumer.

use std::path::PathBuf;

use metricstream_backend::MAX_PARTITIONS;

use crate::admin::AdminArgs;
use crate::logging::LogArgs;

/// The queue implementation a service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// The partitioned segment log in `--data-dir`.
    File,
    /// An Apache Kafka topic (`--kafka-brokers`, `--topic`).
    Kafka,
}

/// Settings both services take.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonArgs {
    /// Which queue backend to use.
    #[arg(long, env = "METRICSTREAM_BACKEND", value_enum, default_value_t = BackendKind::File)]
    pub backend: BackendKind,

    /// Number of partitions (1..=1024). May grow between runs, never shrink.
    // The prose repeats MAX_PARTITIONS; a test below keeps the two in step.
    #[arg(long, env = "METRICSTREAM_PARTITIONS", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PARTITIONS)))]
    pub partitions: u32,

    /// Root directory of the file queue (shared by every ingest and consumer process).
    #[arg(long, env = "METRICSTREAM_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub admin: AdminArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn the_partitions_flag_takes_its_bounds_and_its_help_from_max_partitions() {
        let most = MAX_PARTITIONS.to_string();
        let parsed = Cli::try_parse_from(["test", "--partitions", most.as_str()]).expect("max");
        assert_eq!(parsed.common.partitions, MAX_PARTITIONS);
        let too_many = (MAX_PARTITIONS + 1).to_string();
        assert!(Cli::try_parse_from(["test", "--partitions", too_many.as_str()]).is_err());
        assert!(Cli::try_parse_from(["test", "--partitions", "0"]).is_err());

        let command = Cli::command();
        let help = command
            .get_arguments()
            .find(|arg| arg.get_id() == "partitions")
            .and_then(|arg| arg.get_help())
            .map(ToString::to_string)
            .expect("--partitions has help");
        assert!(help.contains(&format!("1..={MAX_PARTITIONS}")), "{help}");
    }
}
