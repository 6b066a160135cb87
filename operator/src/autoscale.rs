//! The autoscaler's decision, pure: from a stream's lag and its recent recommendations, how many
//! consumers it should have (docs/autoscaling.md). HPA-like: a recommendation
//! `ceil(lag / target)` within `[min, max]` (max capped by the partitions), a 10 % tolerance
//! around the current count, stabilization windows (up follows the lowest recommendation of its
//! window, down the highest of its), and a step limit per decision.
//!
//! A lag that could not be measured (a broker outage, no consumer answering) never moves the
//! consumers: scaling to zero or to the maximum on a missing figure is what makes lag scalers
//! dangerous. The one exception is a count outside `[min, max]` (the bounds changed): that is
//! corrected whatever the lag.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::crd::AutoscalingSpec;

/// Scale-up defaults: react at once, at most 4 consumers more per decision.
pub const DEFAULT_UP_WINDOW: Duration = Duration::ZERO;
pub const DEFAULT_UP_STEP: u32 = 4;
/// Scale-down defaults: the highest recommendation of 5 minutes, one consumer at a time.
pub const DEFAULT_DOWN_WINDOW: Duration = Duration::from_secs(300);
pub const DEFAULT_DOWN_STEP: u32 = 1;
/// No change while lag per consumer is within this fraction of the target.
pub const TOLERANCE: f64 = 0.1;

/// A stream's autoscaling settings, made concrete.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub min: u32,
    /// `maxReplicas`, or the partition count when lower.
    pub max: u32,
    pub target_lag: u64,
    pub up_window: Duration,
    pub up_step: u32,
    pub down_window: Duration,
    pub down_step: u32,
}

impl Policy {
    pub fn new(spec: &AutoscalingSpec, partitions: i32) -> Self {
        let positive = |value: i32| u32::try_from(value.max(1)).unwrap_or(1);
        let min = positive(spec.min_replicas);
        let max = positive(spec.max_replicas)
            .min(positive(partitions))
            .max(min);
        let window = |seconds: Option<i32>, default: Duration| {
            seconds.map_or(default, |s| {
                Duration::from_secs(u64::try_from(s).unwrap_or(0))
            })
        };
        let up = spec.scale_up.clone().unwrap_or_default();
        let down = spec.scale_down.clone().unwrap_or_default();
        Self {
            min,
            max,
            target_lag: u64::try_from(spec.target_lag_records.max(1)).unwrap_or(1),
            up_window: window(up.stabilization_window_seconds, DEFAULT_UP_WINDOW),
            up_step: up.max_step.map_or(DEFAULT_UP_STEP, positive),
            down_window: window(down.stabilization_window_seconds, DEFAULT_DOWN_WINDOW),
            down_step: down.max_step.map_or(DEFAULT_DOWN_STEP, positive),
        }
    }

    fn clamp(&self, replicas: u32) -> u32 {
        replicas.clamp(self.min, self.max)
    }

    /// What the lag alone asks for, with the tolerance around `current`.
    pub fn recommend(&self, current: u32, lag: u64) -> u32 {
        if current > 0 {
            let per_consumer = lag as f64 / (f64::from(current) * self.target_lag as f64);
            if (per_consumer - 1.0).abs() <= TOLERANCE {
                return self.clamp(current);
            }
        }
        let wanted = lag.div_ceil(self.target_lag);
        self.clamp(u32::try_from(wanted).unwrap_or(u32::MAX))
    }
}

/// Decisions are at least this far apart, however often the stream is reconciled: a step
/// limit means one step per period (a scale-down's own rollout would otherwise trigger the next
/// step at once), and the lag is not measured on every burst of watch events.
pub const DECISION_INTERVAL: Duration = Duration::from_secs(10);

/// A stream's recent recommendations (kept by the operator process, per stream).
#[derive(Clone, Debug)]
pub struct History {
    recommendations: VecDeque<(Instant, u32)>,
    last_decision: Option<Instant>,
}

impl History {
    /// A history that starts as if `current` had been recommended just now: a restarted
    /// operator waits one window before it scales down, rather than acting on one sample.
    pub fn starting_at(now: Instant, current: u32) -> Self {
        Self {
            recommendations: VecDeque::from([(now, current)]),
            last_decision: None,
        }
    }

    /// Whether a decision was made less than [`DECISION_INTERVAL`] before `now`.
    pub fn decided_recently(&self, now: Instant) -> bool {
        self.last_decision
            .is_some_and(|at| now.saturating_duration_since(at) < DECISION_INTERVAL)
    }

    fn record(&mut self, now: Instant, recommendation: u32, keep: Duration) {
        self.recommendations.push_back((now, recommendation));
        while let Some((at, _)) = self.recommendations.front() {
            if now.saturating_duration_since(*at) > keep {
                self.recommendations.pop_front();
            } else {
                break;
            }
        }
    }

    fn within(&self, now: Instant, window: Duration) -> impl Iterator<Item = u32> + '_ {
        self.recommendations
            .iter()
            .filter(move |(at, _)| now.saturating_duration_since(*at) <= window)
            .map(|(_, recommendation)| *recommendation)
    }
}

/// One decision and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub desired: u32,
    /// What the lag alone asked for (`None`: the lag is unknown).
    pub recommendation: Option<u32>,
    pub reason: String,
}

/// The consumers `current` should become, given the lag (`Err`: why it is unknown).
pub fn decide(
    policy: &Policy,
    current: u32,
    lag: Result<u64, &str>,
    history: &mut History,
    now: Instant,
) -> Decision {
    history.last_decision = Some(now);
    let lag = match lag {
        Ok(lag) => lag,
        Err(why) => {
            let desired = policy.clamp(current);
            let reason = if desired == current {
                format!("lag unknown ({why}): consumers left at {current}")
            } else {
                format!(
                    "lag unknown ({why}); {current} consumers is outside [{}, {}]: {desired}",
                    policy.min, policy.max
                )
            };
            return Decision {
                desired,
                recommendation: None,
                reason,
            };
        }
    };
    let recommendation = policy.recommend(current, lag);
    history.record(
        now,
        recommendation,
        policy.up_window.max(policy.down_window),
    );
    let target = policy.target_lag;
    let (desired, reason) = if recommendation > current {
        // Up: the lowest recommendation of the up window, so one spike does not add consumers
        // that the next sample would not ask for.
        let stable = history
            .within(now, policy.up_window)
            .min()
            .unwrap_or(recommendation)
            .max(current);
        let desired = stable.min(current.saturating_add(policy.up_step));
        let reason = format!(
            "lag {lag} records over {current} consumers (target {target} each) asks for {recommendation}"
        );
        (desired, limited(reason, desired, stable))
    } else if recommendation < current {
        let stable = history
            .within(now, policy.down_window)
            .max()
            .unwrap_or(recommendation)
            .min(current);
        let desired = stable.max(current.saturating_sub(policy.down_step));
        let reason = format!(
            "lag {lag} records (target {target} per consumer) asks for {recommendation} of {current} consumers"
        );
        (desired, limited(reason, desired, stable))
    } else {
        (
            current,
            format!("lag {lag} records, {current} consumers (target {target} each): no change"),
        )
    };
    let desired = policy.clamp(desired);
    Decision {
        desired,
        recommendation: Some(recommendation),
        reason,
    }
}

fn limited(reason: String, desired: u32, stable: u32) -> String {
    if desired == stable {
        format!("{reason}: {desired}")
    } else {
        format!("{reason}: {desired} (step limit; the window's recommendation is {stable})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ScalingRules;

    fn spec(min: i32, max: i32, target: i64) -> AutoscalingSpec {
        AutoscalingSpec {
            min_replicas: min,
            max_replicas: max,
            target_lag_records: target,
            scale_up: None,
            scale_down: None,
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_partitions_cap_the_maximum_and_the_minimum_wins_over_both() {
        assert_eq!(Policy::new(&spec(1, 10, 100), 4).max, 4);
        assert_eq!(Policy::new(&spec(1, 3, 100), 8).max, 3);
        assert_eq!(
            Policy::new(&spec(6, 8, 100), 4).max,
            6,
            "min above the partitions"
        );
    }

    #[test]
    fn a_recommendation_is_lag_over_target_within_bounds_and_tolerance() {
        let policy = Policy::new(&spec(1, 8, 1000), 8);
        assert_eq!(policy.recommend(1, 0), 1, "never below min");
        assert_eq!(policy.recommend(1, 2500), 3);
        assert_eq!(policy.recommend(1, 1_000_000), 8, "never above max");
        assert_eq!(policy.recommend(2, 2100), 2, "within 10 %");
        assert_eq!(policy.recommend(2, 2300), 3, "beyond 10 %");
        assert_eq!(policy.recommend(4, 3700), 4, "within 10 % below");
        assert_eq!(policy.recommend(0, 500), 1, "from zero");
    }

    #[test]
    fn an_unknown_lag_never_moves_the_consumers_unless_they_are_out_of_bounds() {
        let policy = Policy::new(&spec(2, 4, 100), 4);
        let now = Instant::now();
        let mut history = History::starting_at(now, 3);
        let decision = decide(&policy, 3, Err("broker unreachable"), &mut history, now);
        assert_eq!(decision.desired, 3);
        assert_eq!(decision.recommendation, None);
        assert!(
            decision.reason.contains("broker unreachable"),
            "{decision:?}"
        );
        assert_eq!(
            decide(&policy, 1, Err("x"), &mut history, now).desired,
            2,
            "below min"
        );
        assert_eq!(
            decide(&policy, 9, Err("x"), &mut history, now).desired,
            4,
            "above max"
        );
    }

    #[test]
    fn scale_up_is_immediate_by_default_and_limited_to_the_step() {
        let policy = Policy::new(&spec(1, 16, 100), 16);
        let now = Instant::now();
        let mut history = History::starting_at(now, 1);
        let decision = decide(&policy, 1, Ok(1000), &mut history, now + secs(15));
        assert_eq!(decision.desired, 5, "1 + the default step 4: {decision:?}");
        assert_eq!(decision.recommendation, Some(10));
        assert!(decision.reason.contains("step limit"), "{decision:?}");
        let decision = decide(&policy, 5, Ok(1000), &mut history, now + secs(30));
        assert_eq!(decision.desired, 9);
    }

    #[test]
    fn scale_down_follows_the_highest_recommendation_of_its_window_one_at_a_time() {
        let mut spec = spec(1, 8, 100);
        spec.scale_down = Some(ScalingRules {
            stabilization_window_seconds: Some(60),
            max_step: None,
        });
        let policy = Policy::new(&spec, 8);
        let start = Instant::now();
        let mut history = History::starting_at(start, 4);
        // The lag is gone, but 4 was recommended within the window: stay.
        let at = |s| start + secs(s);
        assert_eq!(decide(&policy, 4, Ok(0), &mut history, at(15)).desired, 4);
        assert_eq!(decide(&policy, 4, Ok(0), &mut history, at(45)).desired, 4);
        // The seed left the window: down by one per decision.
        assert_eq!(decide(&policy, 4, Ok(0), &mut history, at(61)).desired, 3);
        assert_eq!(decide(&policy, 3, Ok(0), &mut history, at(76)).desired, 2);
        // A burst in between holds it.
        assert_eq!(decide(&policy, 2, Ok(250), &mut history, at(91)).desired, 3);
        assert_eq!(decide(&policy, 3, Ok(0), &mut history, at(106)).desired, 3);
        assert_eq!(decide(&policy, 3, Ok(0), &mut history, at(152)).desired, 2);
    }

    #[test]
    fn a_decision_is_recent_for_the_decision_interval() {
        let policy = Policy::new(&spec(1, 8, 100), 8);
        let start = Instant::now();
        let mut history = History::starting_at(start, 1);
        assert!(!history.decided_recently(start), "no decision yet");
        decide(&policy, 1, Ok(0), &mut history, start);
        assert!(history.decided_recently(start + secs(9)));
        assert!(!history.decided_recently(start + DECISION_INTERVAL));
    }

    #[test]
    fn an_up_window_needs_the_lag_to_last() {
        let mut spec = spec(1, 8, 100);
        spec.scale_up = Some(ScalingRules {
            stabilization_window_seconds: Some(30),
            max_step: Some(8),
        });
        let policy = Policy::new(&spec, 8);
        let start = Instant::now();
        let mut history = History::starting_at(start, 1);
        let at = |s| start + secs(s);
        assert_eq!(decide(&policy, 1, Ok(800), &mut history, at(10)).desired, 1);
        assert_eq!(decide(&policy, 1, Ok(800), &mut history, at(25)).desired, 1);
        // The seed's 1 has left the 30 s window; the lowest left is 8.
        assert_eq!(decide(&policy, 1, Ok(800), &mut history, at(41)).desired, 8);
    }
}
