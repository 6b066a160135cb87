//! The report: BENCHMARKS.md and SVG charts rendered from every suite's JSON.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {}

pub async fn run(_args: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("the report suite is not written yet")
}
