//! `spec.consumer.autoscaling` and what the autoscaler reports in `status.autoscaling`
//! (docs/autoscaling.md; the decision is [`crate::autoscale`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Lag-driven scaling of a stream's consumers, HPA-like: the operator measures the consumer
/// group's lag (committed versus end offsets) and keeps `ceil(lag / targetLagRecords)` consumers,
/// within `[minReplicas, maxReplicas]` and never more than the partitions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.minReplicas <= self.maxReplicas")
        .message("spec.consumer.autoscaling.minReplicas must not exceed maxReplicas"),
)]
pub struct AutoscalingSpec {
    /// Fewest consumers (at least 1: a stream is never scaled to zero, whatever its lag reads).
    #[serde(default = "super::one")]
    #[schemars(range(min = 1, max = 1024))]
    pub min_replicas: i32,
    /// Most consumers; the partition count caps it too (a consumer beyond it would idle).
    #[schemars(range(min = 1, max = 1024))]
    pub max_replicas: i32,
    /// Records of lag each consumer may have behind it: the operator keeps
    /// `ceil(lag / targetLagRecords)` consumers (within 10 %: no change).
    #[schemars(range(min = 1))]
    pub target_lag_records: i64,
    /// How fast to add consumers (defaults: no stabilization window, at most 4 more at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<ScalingRules>,
    /// How fast to remove consumers (defaults: the highest recommendation of the last 300 s,
    /// at most 1 fewer at a time: each removal is a rebalance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<ScalingRules>,
}

/// One direction's pace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Seconds of recommendations considered: scaling up follows the lowest of them, scaling
    /// down the highest, so a brief swing does not move the consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// Most consumers added (or removed) by one decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1024))]
    pub max_step: Option<i32>,
}

/// What the autoscaler last measured and decided.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// The consumer group's lag in records, summed over the partitions; absent when it could not
    /// be measured (then the consumers are left as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_records: Option<i64>,
    /// Consumers the autoscaler wants.
    pub desired_replicas: i32,
    /// When the autoscaler last changed the consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the consumers are what they are (or why the lag is unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
