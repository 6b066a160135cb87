//! Pod diagnosis (pure): why a workload's pods do not run, read from what kubelet and the
//! scheduler write into each Pod's status, so the stream's `IngestAvailable` or
//! `ConsumerAvailable` names the cause instead of only "0/1 replicas available".
//!
//! Problems, most telling first (the order of [`ProblemKind`]):
//! 1. a container that keeps exiting (`CrashLoopBackOff`, or terminated / restarted after a
//!    failure), told with its last termination's exit code, reason and message;
//! 2. an image that cannot be had (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`,
//!    `InvalidImageName`, ...);
//! 3. any other waiting reason but the normal `ContainerCreating` / `PodInitializing`
//!    (`CreateContainerConfigError`: a missing Secret or ConfigMap key, ...);
//! 4. a pod the scheduler cannot place (`PodScheduled=False`, e.g. an unbound PVC);
//! 5. a container that runs but is not ready.
//!
//! Messages leave out what changes on every retry (kubelet's back-off delay, restart counts), so
//! an unchanged problem means an unchanged status and no new Event.

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

use crate::text::{head, tail};

/// Longest piece of kubelet or scheduler text quoted in a message (a condition message is read
/// by people; the full text stays on the Pod).
const MAX_QUOTE: usize = 400;
/// Longest termination message quoted: with `FallbackToLogsOnError` it is the log's tail, whose
/// end (the panic, the last error line) matters most.
const MAX_TERMINATION_MESSAGE: usize = 300;

/// What is wrong with a pod, most telling first: `Ord` is the priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    CrashLooping,
    ImageUnavailable,
    ContainerCannotStart,
    Unschedulable,
    NotReady,
}

impl ProblemKind {
    /// The condition reason that reports it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::CrashLooping => "PodCrashLooping",
            Self::ImageUnavailable => "ImageUnavailable",
            Self::ContainerCannotStart => "ContainerCannotStart",
            Self::Unschedulable => "PodUnschedulable",
            Self::NotReady => "PodNotReady",
        }
    }

    pub const ALL: [Self; 5] = [
        Self::CrashLooping,
        Self::ImageUnavailable,
        Self::ContainerCannotStart,
        Self::Unschedulable,
        Self::NotReady,
    ];
}

/// Whether a condition reason is a pod fault: one of the problems above but `PodNotReady`,
/// which every pod passes through while it starts.
pub fn is_fault_reason(reason: &str) -> bool {
    ProblemKind::ALL
        .iter()
        .any(|kind| *kind != ProblemKind::NotReady && kind.reason() == reason)
}

/// One pod's most telling problem.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodProblem {
    pub kind: ProblemKind,
    pub pod: String,
    /// What kubelet or the scheduler said, naming the container where there is one.
    pub detail: String,
}

impl PodProblem {
    pub fn message(&self) -> String {
        format!("pod {} {}", self.pod, self.detail)
    }
}

/// Waiting reasons that are a normal step of starting, not a problem.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];
/// Waiting reasons that mean the image cannot be had.
const IMAGE_REASONS: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "RegistryUnavailable",
    "SignatureValidationFailed",
];

/// The most telling problem among `pods` (ties: the first pod by name, so the choice is
/// stable), or `None` when none shows one.
pub fn most_telling<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<PodProblem> {
    pods.into_iter()
        .filter_map(pod_problem)
        .min_by(|a, b| (a.kind, &a.pod).cmp(&(b.kind, &b.pod)))
}

/// One pod's most telling problem. A pod that is going away (deleting, or finished) has none:
/// its replacement is what matters.
pub fn pod_problem(pod: &Pod) -> Option<PodProblem> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut found: Vec<(ProblemKind, String)> = containers.filter_map(container_problem).collect();
    if let Some(scheduled) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        let reason = scheduled.reason.as_deref().unwrap_or("not scheduled");
        let detail = match scheduled.message.as_deref().map(str::trim) {
            Some(message) if !message.is_empty() => {
                format!(
                    "cannot be scheduled ({reason}): {}",
                    head(message, MAX_QUOTE)
                )
            }
            _ => format!("cannot be scheduled ({reason})"),
        };
        found.push((ProblemKind::Unschedulable, detail));
    }
    found
        .into_iter()
        .min_by_key(|(kind, _)| *kind)
        .map(|(kind, detail)| PodProblem {
            kind,
            pod: name,
            detail,
        })
}

fn container_problem(container: &ContainerStatus) -> Option<(ProblemKind, String)> {
    let name = &container.name;
    let state = container.state.as_ref();
    let last = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or_default();
        if reason == "CrashLoopBackOff" {
            // kubelet's own message here is only the back-off delay; the last exit says why.
            return Some(crash_loop(name, last));
        }
        if !reason.is_empty() && !STARTING.contains(&reason) {
            let kind = if IMAGE_REASONS.contains(&reason) {
                ProblemKind::ImageUnavailable
            } else {
                ProblemKind::ContainerCannotStart
            };
            let message = match waiting.message.as_deref().map(str::trim) {
                Some(message) if !message.is_empty() => format!(": {}", head(message, MAX_QUOTE)),
                _ => String::new(),
            };
            return Some((kind, format!("container {name}: {reason}{message}")));
        }
        return None;
    }
    if let Some(now) = state.and_then(|s| s.terminated.as_ref())
        && now.exit_code != 0
    {
        // Between a crash and kubelet's back-off: the same problem, told the same way.
        return Some(crash_loop(name, Some(now)));
    }
    if container.ready {
        return None;
    }
    if state.is_some_and(|s| s.running.is_some()) {
        if last.is_some() {
            // Running again after a failure, not ready yet: still the crash loop (reporting
            // "not ready" between two crashes would flip the reason on every restart).
            return Some(crash_loop(name, last));
        }
        return Some((
            ProblemKind::NotReady,
            format!("container {name}: running but not ready"),
        ));
    }
    None
}

/// One wording for every step of a crash loop (waiting in back-off, just exited, restarted and
/// not ready yet), so a loop reads as one unchanged problem rather than three alternating ones.
fn crash_loop(container: &str, last: Option<&ContainerStateTerminated>) -> (ProblemKind, String) {
    let why = last.map(terminated).unwrap_or_default();
    (
        ProblemKind::CrashLooping,
        format!("container {container}: CrashLoopBackOff{why}"),
    )
}

/// `, last exit code 2 (Error): <the message's tail>`.
fn terminated(state: &ContainerStateTerminated) -> String {
    let mut text = format!(", last exit code {}", state.exit_code);
    if let Some(reason) = state.reason.as_deref().filter(|r| !r.is_empty()) {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(message) = state.message.as_deref() {
        let message = tail(&one_line(message), MAX_TERMINATION_MESSAGE);
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(&message);
        }
    }
    text
}

/// A multi-line text (a log tail) as one line: its non-empty lines, trimmed, joined by " | ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A pod of `web-ingest` as the API server returns it, with the given `status` (shaped as
    /// kubelet and the scheduler write it).
    fn pod(name: &str, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "apps",
                "labels": {
                    "app.kubernetes.io/component": "ingest",
                    "app.kubernetes.io/managed-by": "metricstream-operator",
                    "metricstream.dev/stream": "web",
                    "pod-template-hash": "7c9d8f6b5"
                }
            },
            "status": status,
        }))
        .expect("a Pod")
    }

    /// A scheduled, started pod whose `ingest` container has `state` and `lastState`.
    fn running_pod(
        name: &str,
        ready: bool,
        state: serde_json::Value,
        last: serde_json::Value,
    ) -> Pod {
        let ready_text = if ready { "True" } else { "False" };
        pod(
            name,
            json!({
                "phase": "Running",
                "hostIP": "10.89.0.2",
                "podIP": "10.244.0.17",
                "startTime": "2026-12-03T07:10:02Z",
                "qosClass": "Burstable",
                "conditions": [
                    { "type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2026-12-03T07:10:04Z" },
                    { "type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-03T07:10:02Z" },
                    { "type": "Ready", "status": ready_text, "lastTransitionTime": "2026-12-03T07:10:02Z",
                      "reason": "ContainersNotReady", "message": "containers with unready status: [ingest]" },
                    { "type": "ContainersReady", "status": ready_text, "lastTransitionTime": "2026-12-03T07:10:02Z",
                      "reason": "ContainersNotReady", "message": "containers with unready status: [ingest]" },
                    { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T07:10:02Z" }
                ],
                "containerStatuses": [{
                    "name": "ingest",
                    "image": "ghcr.io/metricstream/metricstream:0.1.0",
                    "imageID": "",
                    "containerID": "containerd://4f1c2e",
                    "ready": ready,
                    "started": false,
                    "restartCount": 4,
                    "state": state,
                    "lastState": last,
                }]
            }),
        )
    }

    fn waiting(reason: &str, message: &str) -> serde_json::Value {
        json!({ "waiting": { "reason": reason, "message": message } })
    }

    fn crash_loop(name: &str) -> Pod {
        running_pod(
            name,
            false,
            waiting(
                "CrashLoopBackOff",
                &format!(
                    "back-off 40s restarting failed container=ingest pod={name}_apps(0b6f4c1e-2f7a-4c49-9d7e-0d4f4c1e2f7a)"
                ),
            ),
            json!({ "terminated": {
                "exitCode": 2,
                "reason": "Error",
                "message": "{\"level\":\"INFO\",\"message\":\"starting\"}\nError: METRICSTREAM_PARTITIONS: invalid digit found in string\n",
                "startedAt": "2026-12-03T07:11:40Z",
                "finishedAt": "2026-12-03T07:11:40Z",
                "containerID": "containerd://4f1c2e"
            }}),
        )
    }

    fn image_never_pull(name: &str) -> Pod {
        pod(
            name,
            json!({
                "phase": "Pending",
                "hostIP": "10.89.0.2",
                "podIP": "10.244.0.18",
                "startTime": "2026-12-03T07:10:02Z",
                "qosClass": "Burstable",
                "conditions": [
                    { "type": "Ready", "status": "False", "lastTransitionTime": "2026-12-03T07:10:02Z",
                      "reason": "ContainersNotReady", "message": "containers with unready status: [ingest]" },
                    { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T07:10:02Z" }
                ],
                "containerStatuses": [{
                    "name": "ingest",
                    "image": "metricstream:dev",
                    "imageID": "",
                    "ready": false,
                    "started": false,
                    "restartCount": 0,
                    "state": waiting(
                        "ErrImageNeverPull",
                        "Container image \"metricstream:dev\" is not present with pull policy of Never",
                    ),
                    "lastState": {},
                }]
            }),
        )
    }

    fn unschedulable(name: &str) -> Pod {
        pod(
            name,
            json!({
                "phase": "Pending",
                "qosClass": "Burstable",
                "conditions": [{
                    "type": "PodScheduled",
                    "status": "False",
                    "lastProbeTime": null,
                    "lastTransitionTime": "2026-12-03T07:10:02Z",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
                }]
            }),
        )
    }

    #[test]
    fn a_crash_loop_names_the_container_and_its_last_exit() {
        let problem = pod_problem(&crash_loop("web-ingest-7c9d8f6b5-x2x7z")).expect("a problem");
        assert_eq!(problem.kind, ProblemKind::CrashLooping);
        assert_eq!(problem.kind.reason(), "PodCrashLooping");
        assert_eq!(
            problem.message(),
            "pod web-ingest-7c9d8f6b5-x2x7z container ingest: CrashLoopBackOff, last exit code 2 \
             (Error): {\"level\":\"INFO\",\"message\":\"starting\"} | Error: \
             METRICSTREAM_PARTITIONS: invalid digit found in string"
        );
        assert!(
            !problem.message().contains("back-off 40s"),
            "the back-off delay changes on every restart"
        );
    }

    #[test]
    fn the_crash_stays_the_problem_between_restarts() {
        let last =
            json!({ "terminated": { "exitCode": 101, "reason": "Error", "message": "panicked" } });
        let restarted = running_pod(
            "web-ingest-a",
            false,
            json!({ "running": { "startedAt": "2026-12-03T07:12:00Z" } }),
            last.clone(),
        );
        let problem = pod_problem(&restarted).expect("a problem");
        assert_eq!(problem.kind, ProblemKind::CrashLooping);
        assert_eq!(
            problem.detail,
            "container ingest: CrashLoopBackOff, last exit code 101 (Error): panicked"
        );
        let exited = running_pod("web-ingest-a", false, last.clone(), json!({}));
        assert_eq!(
            pod_problem(&exited),
            Some(problem.clone()),
            "told the same way"
        );
        let backing_off = running_pod(
            "web-ingest-a",
            false,
            waiting(
                "CrashLoopBackOff",
                "back-off 10s restarting failed container",
            ),
            last,
        );
        assert_eq!(
            pod_problem(&backing_off),
            Some(problem),
            "told the same way"
        );
        let recovered = running_pod(
            "web-ingest-a",
            true,
            json!({ "running": { "startedAt": "2026-12-03T07:12:00Z" } }),
            json!({ "terminated": { "exitCode": 101, "reason": "Error" } }),
        );
        assert_eq!(pod_problem(&recovered), None, "ready again");
    }

    #[test]
    fn a_missing_image_quotes_kubelet() {
        let problem = pod_problem(&image_never_pull("web-ingest-b")).expect("a problem");
        assert_eq!(problem.kind.reason(), "ImageUnavailable");
        assert_eq!(
            problem.message(),
            "pod web-ingest-b container ingest: ErrImageNeverPull: Container image \
             \"metricstream:dev\" is not present with pull policy of Never"
        );
        for reason in ["ImagePullBackOff", "ErrImagePull", "InvalidImageName"] {
            let pod = running_pod("p", false, waiting(reason, "x"), json!({}));
            assert_eq!(
                pod_problem(&pod).map(|p| p.kind),
                Some(ProblemKind::ImageUnavailable),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_config_error_is_a_container_that_cannot_start() {
        let pod = running_pod(
            "web-ingest-c",
            false,
            waiting(
                "CreateContainerConfigError",
                "secret \"web-tokens\" not found",
            ),
            json!({}),
        );
        let problem = pod_problem(&pod).expect("a problem");
        assert_eq!(problem.kind.reason(), "ContainerCannotStart");
        assert_eq!(
            problem.message(),
            "pod web-ingest-c container ingest: CreateContainerConfigError: secret \"web-tokens\" not found"
        );
    }

    #[test]
    fn an_unbound_volume_leaves_the_pod_unschedulable() {
        let problem = pod_problem(&unschedulable("web-consumer-d")).expect("a problem");
        assert_eq!(problem.kind.reason(), "PodUnschedulable");
        assert_eq!(
            problem.message(),
            "pod web-consumer-d cannot be scheduled (Unschedulable): 0/1 nodes are available: pod \
             has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 \
             Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn a_running_container_that_is_not_ready_is_the_weakest_problem() {
        let pod = running_pod(
            "web-ingest-e",
            false,
            json!({ "running": { "startedAt": "2026-12-03T07:12:00Z" } }),
            json!({}),
        );
        let problem = pod_problem(&pod).expect("a problem");
        assert_eq!(problem.kind.reason(), "PodNotReady");
        assert_eq!(
            problem.message(),
            "pod web-ingest-e container ingest: running but not ready"
        );
    }

    #[test]
    fn starting_pending_and_leaving_pods_are_no_problem() {
        let creating = running_pod("a", false, waiting("ContainerCreating", ""), json!({}));
        assert_eq!(pod_problem(&creating), None);
        let initializing = running_pod("a", false, waiting("PodInitializing", ""), json!({}));
        assert_eq!(pod_problem(&initializing), None);
        // No scheduler has looked at it yet (as in envtest): nothing to tell.
        assert_eq!(pod_problem(&pod("a", json!({ "phase": "Pending" }))), None);
        let mut deleting = crash_loop("a");
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_eq!(pod_problem(&deleting), None);
        let mut evicted = unschedulable("a");
        if let Some(status) = evicted.status.as_mut() {
            status.phase = Some("Failed".into());
        }
        assert_eq!(pod_problem(&evicted), None);
    }

    #[test]
    fn the_most_telling_problem_wins_across_pods() {
        let not_ready = running_pod(
            "web-ingest-a",
            false,
            json!({ "running": { "startedAt": "2026-12-03T07:12:00Z" } }),
            json!({}),
        );
        let pods = [
            not_ready,
            unschedulable("web-ingest-b"),
            image_never_pull("web-ingest-d"),
            crash_loop("web-ingest-e"),
            crash_loop("web-ingest-c"),
        ];
        let problem = most_telling(&pods).expect("a problem");
        assert_eq!(
            (problem.kind, problem.pod.as_str()),
            (ProblemKind::CrashLooping, "web-ingest-c"),
            "the worst kind, then the first pod by name"
        );
        assert_eq!(
            most_telling(&pods[..3]).map(|p| p.kind),
            Some(ProblemKind::ImageUnavailable)
        );
        assert_eq!(
            most_telling(&pods[..2]).map(|p| p.kind),
            Some(ProblemKind::Unschedulable)
        );
        assert_eq!(most_telling(&[] as &[Pod]), None);
        // Within a pod: a container's problem beats the pod's scheduling.
        let mut both = image_never_pull("x");
        if let Some(conditions) = both.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions.push(
                unschedulable("x")
                    .status
                    .and_then(|s| s.conditions)
                    .expect("c")[0]
                    .clone(),
            );
        }
        assert_eq!(
            pod_problem(&both).map(|p| p.kind),
            Some(ProblemKind::ImageUnavailable)
        );
    }

    #[test]
    fn long_texts_are_trimmed_to_their_telling_end() {
        let log: String = (0..200).map(|i| format!("line {i}\n")).collect();
        let message = tail(&one_line(&log), MAX_TERMINATION_MESSAGE);
        assert!(
            message.starts_with('…') && message.ends_with("line 199"),
            "{message}"
        );
        assert!(message.len() <= MAX_TERMINATION_MESSAGE + '…'.len_utf8());
        let long = "é".repeat(300);
        assert!(head(&long, MAX_QUOTE).ends_with('…'));
        assert!(tail(&long, 7).starts_with('…'));
        assert_eq!(head("short", 10), "short");
    }

    #[test]
    fn every_reason_but_not_ready_is_a_fault() {
        for kind in ProblemKind::ALL {
            assert_eq!(
                is_fault_reason(kind.reason()),
                kind != ProblemKind::NotReady,
                "{kind:?}"
            );
        }
        assert!(!is_fault_reason("NoReplicasAvailable"));
    }
}
