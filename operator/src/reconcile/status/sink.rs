//! `SinkAvailable` (pure): what the consumer pods' `/readyz` said about their sink → a
//! condition. The answers are read by [`crate::reconcile::sink_probe`].
//!
//! - `True`, `SinkWriting`: no pod reports its sink failing and at least one is ready;
//! - `False`, `SinkFailing`: a pod reports `the sink is failing: <why>` (the consumer's own
//!   words, trimmed);
//! - `Unknown`: no consumer wanted or running, or none could tell (unreachable, or not ready
//!   for another reason, such as its queue), each with why.

use super::conditions::Draft;
use crate::text::head;

pub const SINK_AVAILABLE: &str = "SinkAvailable";

/// What the consumer's `/readyz` says before the sink's error (`consumer::health`).
const SINK_FAILING_MARKER: &str = "the sink is failing: ";
/// What the admin listener puts before any reason it is not ready (`service::admin`).
const NOT_READY_PREFIX: &str = "not ready: ";
/// Longest reason quoted from one pod (the full text is in the pod's log and /readyz).
const MAX_QUOTE: usize = 400;
/// Longest message in all.
const MAX_MESSAGE: usize = 1000;

/// What one consumer pod's `/readyz` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsumerReport {
    /// `200`: consuming, and neither the sink nor the queue fails.
    Ready,
    /// Not ready because its sink fails, and why.
    SinkFailing(String),
    /// Not ready for another reason (opening, its queue failing): nothing about the sink.
    NotReady(String),
    /// No answer: a refused or timed-out connection (a NetworkPolicy, the operator outside the
    /// pod network), or no address.
    Unreachable(String),
}

impl ConsumerReport {
    /// The report an answer with `status` and `body` makes.
    pub fn of_answer(status: u16, body: &str) -> Self {
        if status == 200 {
            return Self::Ready;
        }
        let body = body.trim();
        match body.find(SINK_FAILING_MARKER) {
            Some(at) => Self::SinkFailing(body[at + SINK_FAILING_MARKER.len()..].trim().to_owned()),
            None => Self::NotReady(
                body.strip_prefix(NOT_READY_PREFIX)
                    .unwrap_or(&format!("HTTP {status}: {body}"))
                    .to_owned(),
            ),
        }
    }
}

/// The consumer pods asked and what each said.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SinkObservation {
    /// Consumer pods the spec asks for.
    pub wanted: i32,
    /// Running consumer pods (more than were asked, when there are many).
    pub running: usize,
    /// (pod, what it said), for the pods asked.
    pub reports: Vec<(String, ConsumerReport)>,
}

pub(super) fn sink_condition(observed: &SinkObservation) -> Draft {
    let quote = |text: &str| head(text, MAX_QUOTE);
    let failing: Vec<String> = observed
        .reports
        .iter()
        .filter_map(|(pod, report)| match report {
            ConsumerReport::SinkFailing(why) => Some(format!("pod {pod}: {}", quote(why))),
            _ => None,
        })
        .collect();
    if let Some(first) = failing.first() {
        let more = match failing.len() {
            1 => String::new(),
            n => format!(" (and {} more consumer pods report it failing)", n - 1),
        };
        return Draft::new(
            SINK_AVAILABLE,
            false,
            "SinkFailing",
            head(&format!("the sink is failing: {first}{more}"), MAX_MESSAGE),
        );
    }
    let ready = observed
        .reports
        .iter()
        .filter(|(_, report)| *report == ConsumerReport::Ready)
        .count();
    if ready > 0 {
        return Draft::new(
            SINK_AVAILABLE,
            true,
            "SinkWriting",
            format!(
                "{ready} of {} consumer pods asked report their sink working",
                observed.reports.len()
            ),
        );
    }
    if observed.wanted == 0 {
        return Draft::unknown(
            SINK_AVAILABLE,
            "NoConsumers",
            "spec.consumer.replicas is 0: no consumer writes to the sink".into(),
        );
    }
    if observed.running == 0 {
        return Draft::unknown(
            SINK_AVAILABLE,
            "NoConsumerRunning",
            "no consumer pod is running to report on its sink".into(),
        );
    }
    let silent: Vec<String> = observed
        .reports
        .iter()
        .map(|(pod, report)| match report {
            ConsumerReport::NotReady(why) => format!("pod {pod} is not ready: {}", quote(why)),
            ConsumerReport::Unreachable(why) => {
                format!("pod {pod} did not answer: {}", quote(why))
            }
            ConsumerReport::Ready | ConsumerReport::SinkFailing(_) => String::new(),
        })
        .collect();
    Draft::unknown(
        SINK_AVAILABLE,
        "ConsumersNotReporting",
        head(
            &format!(
                "no consumer pod could tell how its sink does: {}",
                silent.join("; ")
            ),
            MAX_MESSAGE,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(wanted: i32, reports: &[(&str, ConsumerReport)]) -> SinkObservation {
        SinkObservation {
            wanted,
            running: reports.len(),
            reports: reports
                .iter()
                .map(|(pod, report)| (pod.to_string(), report.clone()))
                .collect(),
        }
    }

    fn decided(observed: &SinkObservation) -> (&'static str, String, String) {
        let draft = sink_condition(observed);
        (draft.status, draft.reason, draft.message)
    }

    #[test]
    fn answers_become_reports() {
        assert_eq!(
            ConsumerReport::of_answer(200, "ready\n"),
            ConsumerReport::Ready
        );
        assert_eq!(
            ConsumerReport::of_answer(
                503,
                "not ready: the sink is failing: the store answered 503 Service Unavailable: overloaded\n"
            ),
            ConsumerReport::SinkFailing(
                "the store answered 503 Service Unavailable: overloaded".into()
            )
        );
        assert_eq!(
            ConsumerReport::of_answer(503, "not ready: the queue is failing: I/O error\n"),
            ConsumerReport::NotReady("the queue is failing: I/O error".into())
        );
        assert_eq!(
            ConsumerReport::of_answer(404, "no such page"),
            ConsumerReport::NotReady("HTTP 404: no such page".into())
        );
    }

    #[test]
    fn every_ready_consumer_means_the_sink_writes() {
        let (status, reason, message) = decided(&observed(
            2,
            &[
                ("c-1", ConsumerReport::Ready),
                ("c-2", ConsumerReport::Ready),
            ],
        ));
        assert_eq!((status, reason.as_str()), ("True", "SinkWriting"));
        assert_eq!(
            message,
            "2 of 2 consumer pods asked report their sink working"
        );
    }

    #[test]
    fn one_failing_sink_makes_it_false_with_the_consumers_words() {
        let long = "x".repeat(2000);
        let (status, reason, message) = decided(&observed(
            3,
            &[
                ("c-1", ConsumerReport::Ready),
                (
                    "c-2",
                    ConsumerReport::SinkFailing("401 Unauthorized".into()),
                ),
                ("c-3", ConsumerReport::SinkFailing(long)),
            ],
        ));
        assert_eq!((status, reason.as_str()), ("False", "SinkFailing"));
        assert_eq!(
            message,
            "the sink is failing: pod c-2: 401 Unauthorized (and 1 more consumer pods report it failing)"
        );
        let (_, _, message) = decided(&observed(
            1,
            &[("c-3", ConsumerReport::SinkFailing("y".repeat(5000)))],
        ));
        assert!(message.len() < 500, "trimmed: {} bytes", message.len());
    }

    #[test]
    fn without_an_answer_about_the_sink_it_is_unknown_and_says_why() {
        let cases = [
            (
                observed(0, &[]),
                "NoConsumers",
                "spec.consumer.replicas is 0",
            ),
            (
                observed(2, &[]),
                "NoConsumerRunning",
                "no consumer pod is running",
            ),
            (
                observed(
                    2,
                    &[
                        (
                            "c-1",
                            ConsumerReport::Unreachable("connection timed out".into()),
                        ),
                        (
                            "c-2",
                            ConsumerReport::NotReady("the queue is failing: EIO".into()),
                        ),
                    ],
                ),
                "ConsumersNotReporting",
                "pod c-1 did not answer: connection timed out; pod c-2 is not ready: the queue is failing: EIO",
            ),
        ];
        for (observed, expected_reason, words) in cases {
            let (status, reason, message) = decided(&observed);
            assert_eq!(status, "Unknown", "{observed:?}");
            assert_eq!(reason, expected_reason);
            assert!(message.contains(words), "{message}");
        }
    }
}
