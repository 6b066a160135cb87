//! The MetricStream operator: the `MetricStream` CRD and the controller that turns each one into
//! a running pipeline.
//!
//! - [`crd`]: the custom resource; [`strimzi`]: the KafkaTopic type we write.
//! - [`reconcile`]: the pipeline — `validate` (pure) → `dereference` (reads) → `build` (pure)
//!   → `apply` + prune → `status` (pure).
//! - [`controller`]: watches, backoff, Events; [`context`]: what reconciles share and remember;
//!   [`triggers`]: which watch events reconcile; [`leader`]: Lease-based leader election;
//!   [`metrics`], [`config`], [`topics`] (Kafka admin API), [`labels`], [`error`].
//! - [`autoscale`]: the autoscaler's decision (pure); [`lag`]: a consumer group's lag, from Kafka
//!   or the file consumers' metrics; [`lag_watch`]: the lag of the streams it does not scale.
//! - [`rbac`]: every API access the operator needs, which the chart's RBAC must match.

pub mod autoscale;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd;
pub mod error;
pub mod labels;
pub mod lag;
pub mod lag_watch;
pub mod leader;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod strimzi;
pub mod text;
pub mod topics;
pub mod triggers;
