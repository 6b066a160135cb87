//! HTTP: the no-op HTTP ceiling and ingest on file (batch, always) and Kafka, under oha with latency correction; loss and duplicates from the sink; peak RSS of ingest and consumer.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {}

pub async fn run(_args: HttpArgs) -> anyhow::Result<crate::results::SuiteResults> {
    anyhow::bail!("the http suite is not written yet")
}
