//! The ingest service as a library: the HTTP edge (authentication, rate limits, request parsing)
//! that `metricstream-ingest` runs, exposed so fuzz targets and benchmarks drive the same code.

pub mod auth;
pub mod client_limits;
pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod protocols;
pub mod rate_limit;
pub mod reload;
pub mod request;
pub mod server;
pub mod tls;
pub mod write;
