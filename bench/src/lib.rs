//! MetricStream's benchmarks (`make bench`): every figure of the pipeline is measured beside a
//! ceiling measured in the same run on the same machine, and reported as a ratio of it.
//!
//! Each suite writes its [`results::SuiteResults`] as JSON; `report` turns them into
//! BENCHMARKS.md and SVG charts. `dashboard` draws Grafana dashboards from a Prometheus' data.

pub mod backend;
pub mod dashboard;
pub mod drain;
pub mod drain_store;
pub mod http;
pub mod intake;
pub mod operator;
pub mod peers;
pub mod process;
pub mod report;
pub mod results;
