//! Backend ceilings: Kafka's ProducerPerformance on the same broker, and a bare append + fdatasync loop on the same disk.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {}

pub async fn run(_args: BackendArgs) -> anyhow::Result<crate::results::SuiteResults> {
    anyhow::bail!("the backend suite is not written yet")
}
