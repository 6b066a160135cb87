//! Consumer drain: records/s draining a pre-filled backlog of one million metrics on both backends, beside a bare read of the same data.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct DrainArgs {}

pub async fn run(_args: DrainArgs) -> anyhow::Result<crate::results::SuiteResults> {
    anyhow::bail!("the drain suite is not written yet")
}
