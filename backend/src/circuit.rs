//! A circuit breaker in front of a store that can fail for a while: the remote-write sink's in
//! front of the time-series store, the ingest's spill in front of Kafka. After a few failed
//! attempts in a row the caller stops sending (open), lets one request through once a wait has
//! passed (half-open: the probe), and sends normally again once a probe succeeds (closed). A failed probe opens the circuit again
//! for twice as long, up to a cap, so a dead store is asked about twice a minute at most instead
//! of being hammered by every retry.
//!
//! Pure state: the caller says what happened and when, the circuit says whether to send and how
//! long to wait. What counts as a failure is the caller's choice (the sink counts no answer and
//! the statuses it retries, except `429`, which `Retry-After` already paces; the spill counts an
//! append Kafka did not acknowledge).

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The circuit's three states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests are sent.
    Closed,
    /// Nothing is sent until the wait is over.
    Open,
    /// The wait is over: the next request is a probe.
    HalfOpen,
}

impl CircuitState {
    pub const ALL: [CircuitState; 3] = [Self::Closed, Self::Open, Self::HalfOpen];

    /// The name in logs and in the `state` label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// When the circuit opens and how long it stays open.
#[derive(Clone, Copy, Debug)]
pub struct CircuitPolicy {
    /// Failed attempts in a row that open a closed circuit.
    pub failures_to_open: u32,
    /// How long the circuit stays open the first time; it doubles after each failed probe.
    pub first_open: Duration,
    pub max_open: Duration,
}

impl Default for CircuitPolicy {
    fn default() -> Self {
        Self {
            failures_to_open: 3,
            first_open: Duration::from_secs(1),
            max_open: Duration::from_secs(30),
        }
    }
}

/// A change of state, for the caller to log and count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    /// Open only: how long until the next probe.
    pub wait: Duration,
    /// Closed only: how long the circuit was not closed.
    pub was_open_for: Option<Duration>,
}

#[derive(Debug)]
pub struct Circuit {
    policy: CircuitPolicy,
    state: CircuitState,
    /// Failed attempts in a row while closed.
    failures: u32,
    /// The current (or, once closed, the last) open period.
    open_for: Duration,
    /// Open: when the probe may go.
    probe_at: Instant,
    /// When the circuit last left `Closed`.
    opened_at: Option<Instant>,
}

impl Circuit {
    pub fn new(policy: CircuitPolicy, now: Instant) -> Self {
        Self {
            policy,
            state: CircuitState::Closed,
            failures: 0,
            open_for: policy.first_open,
            probe_at: now,
            opened_at: None,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Since when the circuit has not been closed (`None` while closed).
    pub fn opened_at(&self) -> Option<Instant> {
        self.opened_at
            .filter(|_| self.state != CircuitState::Closed)
    }

    /// May a request go now? `Ok` (possibly moving open → half-open: this request is the probe)
    /// or `Err(wait)` until the probe may go.
    pub fn permit(&mut self, now: Instant) -> Result<Option<Transition>, Duration> {
        match self.state {
            CircuitState::Closed | CircuitState::HalfOpen => Ok(None),
            CircuitState::Open if now >= self.probe_at => {
                Ok(Some(self.move_to(CircuitState::HalfOpen, Duration::ZERO)))
            }
            CircuitState::Open => Err(self.probe_at - now),
        }
    }

    /// The store answered in a way that shows it works (stored, or refused the data for good).
    pub fn succeeded(&mut self) -> Option<Transition> {
        self.failures = 0;
        if self.state == CircuitState::Closed {
            return None;
        }
        self.open_for = self.policy.first_open;
        Some(self.move_to(CircuitState::Closed, Duration::ZERO))
    }

    /// An attempt failed: counts towards opening a closed circuit; a failed probe opens the
    /// circuit again for twice as long.
    pub fn failed(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            CircuitState::Closed => {
                self.failures += 1;
                if self.failures < self.policy.failures_to_open {
                    return None;
                }
                self.opened_at = Some(now);
                self.open_for = self.policy.first_open;
            }
            CircuitState::HalfOpen => {
                self.open_for = (self.open_for * 2).min(self.policy.max_open);
            }
            // Only a probe is sent while not closed; a failure reported while open changes
            // nothing.
            CircuitState::Open => return None,
        }
        self.failures = 0;
        self.probe_at = now + self.open_for;
        Some(self.move_to(CircuitState::Open, self.open_for))
    }

    fn move_to(&mut self, to: CircuitState, wait: Duration) -> Transition {
        let from = std::mem::replace(&mut self.state, to);
        let was_open_for = self
            .opened_at
            .filter(|_| to == CircuitState::Closed)
            .map(|opened_at| opened_at.elapsed());
        Transition {
            from,
            to,
            wait,
            was_open_for,
        }
    }
}

/// A circuit's state as metrics: `<name>_state{state}` (1 for the current state, 0 for the
/// others), `<name>_transitions_total{state}` (by the state entered) and
/// `<name>_open_seconds_total` (time spent not closed).
#[derive(Clone, Debug, Default)]
pub struct CircuitMetrics {
    pub state: Family<StateLabel, Gauge>,
    pub transitions: Family<StateLabel, Counter>,
    pub open_seconds: Counter<f64, AtomicU64>,
}

/// A state of a circuit breaker (the `state` label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

impl CircuitMetrics {
    /// Shows `current` as the circuit's state; `entered` counts a transition into it.
    pub fn show(&self, current: CircuitState, entered: bool) {
        for state in CircuitState::ALL {
            self.state
                .get_or_create(&StateLabel {
                    state: state.name(),
                })
                .set(i64::from(state == current));
            // Every state shows from the start, at zero.
            let transitions = self.transitions.get_or_create(&StateLabel {
                state: state.name(),
            });
            if entered && state == current {
                transitions.inc();
            }
        }
    }

    /// Counts a transition and, when it closes the circuit, the time it was open.
    pub fn record(&self, transition: &Transition) {
        self.show(transition.to, true);
        if let Some(open_for) = transition.was_open_for {
            self.open_seconds.inc_by(open_for.as_secs_f64());
        }
    }

    /// Registers the three metrics as `<name>_state`, `<name>_transitions` and
    /// `<name>_open_seconds`; `what` names the circuit in their help.
    pub fn register(&self, registry: &mut Registry, name: &str, what: &str) {
        self.show(CircuitState::Closed, false);
        registry.register(
            format!("{name}_state"),
            format!("1 for the {what} circuit breaker's current state (closed, open, half_open)"),
            self.state.clone(),
        );
        registry.register(
            format!("{name}_transitions"),
            format!("Changes of the {what} circuit breaker's state, by the state entered"),
            self.transitions.clone(),
        );
        registry.register(
            format!("{name}_open_seconds"),
            format!(
                "Time the {what} circuit breaker spent open or half-open, counted when it closes"
            ),
            self.open_seconds.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CircuitPolicy {
        CircuitPolicy {
            failures_to_open: 3,
            first_open: Duration::from_secs(1),
            max_open: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_failures_in_a_row_only() {
        let start = Instant::now();
        let mut circuit = Circuit::new(policy(), start);
        assert_eq!(circuit.failed(start), None);
        assert_eq!(circuit.failed(start), None);
        assert_eq!(circuit.succeeded(), None, "a success resets the count");
        assert_eq!(circuit.failed(start), None);
        assert_eq!(circuit.failed(start), None);
        assert_eq!(circuit.permit(start), Ok(None));
        let opened = circuit
            .failed(start)
            .expect("the third failure in a row opens it");
        assert_eq!(
            (opened.from, opened.to, opened.wait),
            (
                CircuitState::Closed,
                CircuitState::Open,
                Duration::from_secs(1)
            )
        );
        assert_eq!(circuit.opened_at(), Some(start));
        assert_eq!(
            circuit.permit(start + Duration::from_millis(400)),
            Err(Duration::from_millis(600)),
            "nothing goes while open"
        );
    }

    #[test]
    fn probes_after_the_wait_back_off_and_close_on_success() {
        let start = Instant::now();
        let mut circuit = Circuit::new(policy(), start);
        for _ in 0..3 {
            circuit.failed(start);
        }
        let mut now = start;
        // Each failed probe doubles the wait, up to the cap.
        for expected in [2, 4, 5, 5] {
            let waited = circuit.permit(now).expect_err("still open");
            now += waited;
            let probe = circuit.permit(now).expect("the wait is over");
            assert_eq!(
                probe.map(|t| t.to),
                Some(CircuitState::HalfOpen),
                "the next request is the probe"
            );
            assert_eq!(circuit.permit(now), Ok(None), "half-open lets the probe go");
            let reopened = circuit.failed(now).expect("a failed probe reopens");
            assert_eq!(reopened.to, CircuitState::Open);
            assert_eq!(reopened.wait, Duration::from_secs(expected));
        }
        assert_eq!(
            circuit.opened_at(),
            Some(start),
            "open since the first time"
        );
        now += circuit.permit(now).expect_err("open");
        circuit.permit(now).expect("probe");
        let closed = circuit.succeeded().expect("a stored probe closes it");
        assert_eq!(
            (closed.from, closed.to),
            (CircuitState::HalfOpen, CircuitState::Closed)
        );
        assert_eq!(circuit.opened_at(), None);
        // The next outage starts again from the first wait.
        for _ in 0..3 {
            circuit.failed(now);
        }
        assert_eq!(circuit.permit(now), Err(Duration::from_secs(1)));
    }

    #[test]
    fn a_failure_reported_while_open_changes_nothing() {
        let start = Instant::now();
        let mut circuit = Circuit::new(policy(), start);
        for _ in 0..3 {
            circuit.failed(start);
        }
        assert_eq!(circuit.failed(start), None);
        assert_eq!(circuit.permit(start), Err(Duration::from_secs(1)));
        assert_eq!(circuit.state(), CircuitState::Open);
    }
}
