//! The autoscaler's part of a reconcile (`spec.consumer.autoscaling`), between dereference and
//! build: measure the consumer group's lag ([`crate::lag`]: the Kafka admin API, or the file
//! consumers' export of the whole queue's lag), decide ([`crate::autoscale`], pure), and set the
//! consumers the build asks for. What it measured and decided goes to `status.autoscaling`, a
//! change of consumers to an Event.

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use metricstream_backend::kafka::KafkaSecurity;

use super::apply::pods_of;
use super::build::{ADMIN_PORT, COMPONENT_CONSUMER};
use super::dereference::Dereferenced;
use super::sink_probe::targets;
use super::validate::{ValidatedBackend, ValidatedStream};
use crate::autoscale::{Decision, Policy, decide};
use crate::context::Context;
use crate::crd::{AutoscalingSpec, AutoscalingStatus, MetricStreamStatus};

/// What one autoscaling step decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaled {
    pub status: AutoscalingStatus,
    /// An Event's (warning, reason, note) for what changed: consumers added or removed, or the
    /// lag becoming unknown.
    pub notice: Option<(bool, &'static str, String)>,
}

/// Measures, decides, and sets `stream.consumer.replicas` to the decision; `None` when the
/// stream does not autoscale.
pub async fn autoscale(
    ctx: &Context,
    stream: &mut ValidatedStream,
    dereferenced: &Dereferenced,
    old: Option<&MetricStreamStatus>,
    now: &Time,
) -> Option<Scaled> {
    let spec = stream.consumer.autoscaling.clone()?;
    let policy = Policy::new(&spec, stream.partitions);
    let previous = old.and_then(|s| s.autoscaling.as_ref());
    let current = current_replicas(&spec, stream.consumer.replicas, previous);
    if let Some(previous) = previous
        && ctx
            .autoscalers
            .decided_recently(&stream.uid, Instant::now())
    {
        // A reconcile between two decisions (a child's status changed): keep the last one.
        stream.consumer.replicas = i32::try_from(current).unwrap_or(i32::MAX);
        return Some(Scaled {
            status: previous.clone(),
            notice: None,
        });
    }
    let lag = measure(ctx, stream, dereferenced.operator_security.as_ref()).await;
    let decision = ctx.autoscalers.decide(&stream.uid, current, |history| {
        decide(
            &policy,
            current,
            lag.as_ref().map(|lag| *lag).map_err(String::as_str),
            history,
            Instant::now(),
        )
    });
    stream.consumer.replicas = i32::try_from(decision.desired).unwrap_or(i32::MAX);
    Some(outcome(current, &decision, lag.ok(), previous, now))
}

/// What the autoscaler set last (the status says, so a restarted operator starts from it), else
/// the spec's replicas.
fn current_replicas(
    spec: &AutoscalingSpec,
    spec_replicas: i32,
    previous: Option<&AutoscalingStatus>,
) -> u32 {
    let current = previous.map_or(spec_replicas, |p| p.desired_replicas);
    u32::try_from(current.max(0))
        .unwrap_or(0)
        .max(u32::try_from(spec.min_replicas).unwrap_or(1))
}

/// The status and the Event of a decision (pure).
fn outcome(
    current: u32,
    decision: &Decision,
    lag: Option<u64>,
    previous: Option<&AutoscalingStatus>,
    now: &Time,
) -> Scaled {
    let changed = decision.desired != current;
    let status = AutoscalingStatus {
        lag_records: lag.map(|lag| i64::try_from(lag).unwrap_or(i64::MAX)),
        desired_replicas: i32::try_from(decision.desired).unwrap_or(i32::MAX),
        last_scale_time: if changed {
            Some(now.clone())
        } else {
            previous.and_then(|p| p.last_scale_time.clone())
        },
        message: decision.reason.clone(),
    };
    let was_known = previous.is_none_or(|p| p.lag_records.is_some());
    let notice = if decision.desired > current {
        Some((false, "ScaledUp", decision.reason.clone()))
    } else if decision.desired < current {
        Some((false, "ScaledDown", decision.reason.clone()))
    } else if lag.is_none() && was_known {
        Some((true, "LagUnknown", decision.reason.clone()))
    } else {
        None
    };
    Scaled { status, notice }
}

/// The group's total lag, or why it is unknown. `operator_security`: how the operator's own
/// Kafka client connects (Kafka backend).
pub(crate) async fn measure(
    ctx: &Context,
    stream: &ValidatedStream,
    operator_security: Option<&Result<KafkaSecurity, String>>,
) -> Result<u64, String> {
    let lag = match &stream.backend {
        ValidatedBackend::Kafka(plan) => {
            let security = match operator_security {
                Some(Ok(security)) => security.clone(),
                Some(Err(error)) => return Err(error.clone()),
                None => return Err("no Kafka security was read".into()),
            };
            ctx.lag
                .kafka_lag(
                    &plan.bootstrap_servers,
                    &plan.topic,
                    &stream.consumer.group,
                    &security,
                )
                .await
        }
        ValidatedBackend::File { .. } => {
            let pods = ctx
                .child_stores()
                .map(|s| s.pods.state())
                .unwrap_or_default();
            let (_, running) = targets(&pods_of(&pods, stream, COMPONENT_CONSUMER));
            let urls: Vec<String> = running
                .iter()
                .map(|(_, ip)| {
                    format!(
                        "http://{}/metrics",
                        std::net::SocketAddr::new(*ip, ADMIN_PORT as u16)
                    )
                })
                .collect();
            if urls.is_empty() {
                return Err("no consumer pod runs to report the queue's lag".into());
            }
            ctx.lag
                .file_lag(
                    &urls,
                    &stream.consumer.group,
                    u32::try_from(stream.partitions).unwrap_or(0),
                )
                .await
        }
    };
    lag.map(|lag| lag.total).map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(desired: u32, reason: &str) -> Decision {
        Decision {
            desired,
            recommendation: Some(desired),
            reason: reason.into(),
        }
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn a_change_is_an_event_and_a_scale_time() {
        let scaled = outcome(1, &decision(3, "lag"), Some(900), None, &now());
        assert_eq!(scaled.notice, Some((false, "ScaledUp", "lag".into())));
        assert_eq!(scaled.status.desired_replicas, 3);
        assert_eq!(scaled.status.lag_records, Some(900));
        assert_eq!(scaled.status.last_scale_time, Some(now()));
        let down = outcome(
            3,
            &decision(2, "less"),
            Some(0),
            Some(&scaled.status),
            &now(),
        );
        assert_eq!(down.notice.map(|n| n.1), Some("ScaledDown"));
    }

    #[test]
    fn no_change_keeps_the_last_scale_time_and_says_nothing() {
        let previous = AutoscalingStatus {
            lag_records: Some(5),
            desired_replicas: 2,
            last_scale_time: Some(now()),
            message: String::new(),
        };
        let later = Time(k8s_openapi::jiff::Timestamp::MAX);
        let scaled = outcome(2, &decision(2, "same"), Some(7), Some(&previous), &later);
        assert_eq!(scaled.notice, None);
        assert_eq!(scaled.status.last_scale_time, Some(now()));
    }

    #[test]
    fn an_unknown_lag_warns_once() {
        let unknown = Decision {
            desired: 2,
            recommendation: None,
            reason: "lag unknown (down)".into(),
        };
        let known = AutoscalingStatus {
            lag_records: Some(5),
            desired_replicas: 2,
            ..Default::default()
        };
        let first = outcome(2, &unknown, None, Some(&known), &now());
        assert_eq!(
            first.notice.as_ref().map(|n| (n.0, n.1)),
            Some((true, "LagUnknown"))
        );
        assert_eq!(first.status.lag_records, None);
        let again = outcome(2, &unknown, None, Some(&first.status), &now());
        assert_eq!(again.notice, None);
    }

    #[test]
    fn the_current_count_comes_from_the_last_decision_else_the_spec_never_below_min() {
        let spec = AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 4,
            target_lag_records: 10,
            scale_up: None,
            scale_down: None,
        };
        assert_eq!(current_replicas(&spec, 1, None), 2);
        assert_eq!(current_replicas(&spec, 3, None), 3);
        let previous = AutoscalingStatus {
            desired_replicas: 4,
            ..Default::default()
        };
        assert_eq!(current_replicas(&spec, 1, Some(&previous)), 4);
    }
}
