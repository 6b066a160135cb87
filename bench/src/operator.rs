//! Operator: time from apply to all children created for 1, 100 and 500 MetricStreams on the local control plane, and the operator's RSS holding 500.

use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct OperatorArgs {}

pub async fn run(_args: OperatorArgs) -> anyhow::Result<crate::results::SuiteResults> {
    anyhow::bail!("the operator suite is not written yet")
}
