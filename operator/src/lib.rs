//! The MetricStream operator: the `MetricStream` CRD and the controller that turns each one into
//! a running pipeline.

pub mod crd;
