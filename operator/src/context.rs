//! What every reconcile shares and what the process remembers between reconciles: the
//! [`Context`] (API client, Event recorder, settings, topic admin), the watch caches of the
//! children ([`ChildStores`]), and the per-stream memory: consecutive failures (for backoff),
//! the generation last pruned ([`PruneLog`]) and the children last applied ([`ApplyLog`], read
//! by [`crate::reconcile::skip`]'s decision). Its own module so that the controller and the
//! reconcile pipeline both depend on it and never on each other.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};

use crate::autoscale::History;
use crate::config::WorkloadDefaults;
use crate::lag::LagSource;
use crate::metrics::Metrics;
use crate::reconcile::sink_probe::SinkProbe;
use crate::reconcile::skip::Mark;
use crate::topics::TopicAdmin;

/// The first retry after a failure; each further failure doubles it.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub workload: WorkloadDefaults,
    /// Requeue of a healthy stream: repairs drift nobody told us about.
    pub resync: Duration,
    /// Whether the KafkaTopic CRD was found at startup.
    pub strimzi_installed: bool,
    pub metrics: Arc<Metrics>,
    pub topics: Arc<dyn TopicAdmin>,
    /// Asks the consumer pods how their sink does.
    pub sink_probe: SinkProbe,
    /// Measures a consumer group's lag, for the autoscaler.
    pub lag: Arc<dyn LagSource>,
    /// The autoscaler's recent recommendations per stream.
    pub autoscalers: AutoscalerLog,
    /// Consecutive failures per stream (namespace, name); reset on success.
    failures: Mutex<HashMap<(String, String), u32>>,
    pub pruned: PruneLog,
    /// What was applied per stream, so an unchanged child is not applied again.
    pub applied: ApplyLog,
    /// The watch caches of the children of the running controller. Without them (before the
    /// controller runs) every child is applied.
    children: Mutex<Option<Arc<ChildStores>>>,
}

/// What the operator talks to besides the API server.
pub struct OutsideClients {
    /// Kafka, for admin-API and external topics.
    pub topics: Arc<dyn TopicAdmin>,
    /// The consumer pods' admin ports.
    pub sink_probe: SinkProbe,
    /// Kafka's group offsets or the file consumers' export, for the autoscaler.
    pub lag: Arc<dyn LagSource>,
}

/// The watch caches of what the operator manages: Deployments and StatefulSets (metadata and
/// status, no spec), PVCs and the workloads' Pods (metadata and status, no spec), whose status is observed; only
/// the metadata of ConfigMaps, Services, NetworkPolicies and PodDisruptionBudgets.
pub struct ChildStores {
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub disruption_budgets: Store<PartialObjectMeta<PodDisruptionBudget>>,
    pub deployments: Store<Deployment>,
    /// The ingest StatefulSets of streams that spill.
    pub stateful_sets: Store<StatefulSet>,
    pub pvcs: Store<PersistentVolumeClaim>,
    /// The pods of the streams' Deployments, which say why a workload does not run.
    pub pods: Store<Pod>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        workload: WorkloadDefaults,
        resync: Duration,
        strimzi_installed: bool,
        metrics: Arc<Metrics>,
        clients: OutsideClients,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            workload,
            resync,
            strimzi_installed,
            metrics,
            topics: clients.topics,
            sink_probe: clients.sink_probe,
            lag: clients.lag,
            autoscalers: AutoscalerLog::default(),
            failures: Mutex::default(),
            pruned: PruneLog::default(),
            applied: ApplyLog::default(),
            children: Mutex::default(),
        }
    }

    /// Drops what is remembered about streams that no longer exist.
    pub fn forget_all_but(&self, keys: &HashSet<(String, String)>, uids: &HashSet<String>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.retain(|key, _| keys.contains(key));
        }
        self.pruned.retain(uids);
        self.applied.retain(uids);
        self.autoscalers.retain(uids);
        self.metrics.retain_streams(keys);
    }

    /// Publishes an Event on `regarding`; a failure to publish is logged, never fatal.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            // The API server refuses notes over 1 kB.
            note: Some(crate::text::head(&note, 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, "publishing an Event failed");
        }
    }

    pub fn child_stores(&self) -> Option<Arc<ChildStores>> {
        self.children.lock().ok()?.clone()
    }

    /// Drops the watch caches when the controller stops (a later run makes new ones).
    pub(crate) fn clear_child_stores(&self) {
        if let Ok(mut children) = self.children.lock() {
            *children = None;
        }
    }

    pub(crate) fn set_child_stores(&self, stores: ChildStores) {
        if let Ok(mut children) = self.children.lock() {
            *children = Some(Arc::new(stores));
        }
    }

    pub fn record_success(&self, key: &(String, String)) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(key);
        }
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn record_failure(&self, key: (String, String)) -> Duration {
        let attempt = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(key).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        backoff_delay(attempt)
    }
}

/// The generation each stream (by uid) was last pruned at by this process. Only a new spec (or
/// one this process has not pruned for yet, e.g. after an upgrade) can leave children behind, so
/// the prune LISTs run once per generation instead of on every reconcile.
#[derive(Default)]
pub struct PruneLog(Mutex<HashMap<String, i64>>);

impl PruneLog {
    pub fn needs_prune(&self, uid: &str, generation: Option<i64>) -> bool {
        let last = self.0.lock().ok().and_then(|log| log.get(uid).copied());
        prune_due(last, generation)
    }

    pub fn record(&self, uid: &str, generation: Option<i64>) {
        if let (Some(generation), Ok(mut log)) = (generation, self.0.lock()) {
            log.insert(uid.to_owned(), generation);
        }
    }

    fn retain(&self, uids: &HashSet<String>) {
        if let Ok(mut log) = self.0.lock() {
            log.retain(|uid, _| uids.contains(uid));
        }
    }
}

/// Prune unless this exact generation was pruned already; an object without a generation is
/// always pruned.
pub fn prune_due(last_pruned: Option<i64>, generation: Option<i64>) -> bool {
    generation.is_none() || last_pruned != generation
}

/// 1 s, 2 s, 4 s, … capped at 5 minutes, for the `attempt`-th consecutive failure.
pub fn backoff_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    BACKOFF_START
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

pub fn stream_key<K: Resource>(object: &K) -> (String, String) {
    (
        object.meta().namespace.clone().unwrap_or_default(),
        object.meta().name.clone().unwrap_or_default(),
    )
}

/// The autoscaler's recommendation history per stream (by uid); a stream seen for the first
/// time starts from its current consumers ([`History::starting_at`]).
#[derive(Default)]
pub struct AutoscalerLog(Mutex<HashMap<String, History>>);

impl AutoscalerLog {
    /// Runs `decide` on the stream's history.
    pub fn decide<T>(&self, uid: &str, current: u32, decide: impl FnOnce(&mut History) -> T) -> T {
        match self.0.lock() {
            Ok(mut log) => decide(
                log.entry(uid.to_owned())
                    .or_insert_with(|| History::starting_at(Instant::now(), current)),
            ),
            // A poisoned lock: decide from a fresh history (it holds the consumers as they are).
            Err(_) => decide(&mut History::starting_at(Instant::now(), current)),
        }
    }

    /// Whether the stream's last decision is younger than the decision interval.
    pub fn decided_recently(&self, uid: &str, now: Instant) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|log| log.get(uid).map(|history| history.decided_recently(now)))
            .unwrap_or(false)
    }

    fn retain(&self, uids: &HashSet<String>) {
        if let Ok(mut log) = self.0.lock() {
            log.retain(|uid, _| uids.contains(uid));
        }
    }
}

/// The children applied per stream (by uid), keyed by kind and name.
#[derive(Default)]
pub struct ApplyLog(Mutex<HashMap<String, HashMap<String, Mark>>>);

impl ApplyLog {
    pub fn get(&self, uid: &str, child: &str) -> Option<Mark> {
        let log = self.0.lock().ok()?;
        log.get(uid)?.get(child).cloned()
    }

    pub fn record(&self, uid: &str, child: String, mark: Mark) {
        if let Ok(mut log) = self.0.lock() {
            log.entry(uid.to_owned()).or_default().insert(child, mark);
        }
    }

    pub fn retain(&self, uids: &HashSet<String>) {
        if let Ok(mut log) = self.0.lock() {
            log.retain(|uid, _| uids.contains(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::reconcile::skip::Version;

    fn mark(fingerprint: u64, version: Version, applied_at: Instant) -> Mark {
        Mark {
            fingerprint,
            version,
            applied_at,
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn prune_runs_once_per_generation() {
        assert!(prune_due(None, Some(1)), "never pruned by this process");
        assert!(!prune_due(Some(1), Some(1)), "this generation was pruned");
        assert!(prune_due(Some(1), Some(2)), "a new spec");
        assert!(prune_due(Some(1), None), "no generation: always");
    }

    #[test]
    fn pruning_is_remembered_per_stream_until_it_is_gone() {
        let log = PruneLog::default();
        assert!(log.needs_prune("uid-a", Some(3)));
        log.record("uid-a", Some(3));
        log.record("uid-b", Some(1));
        assert!(!log.needs_prune("uid-a", Some(3)));
        assert!(log.needs_prune("uid-a", Some(4)));
        log.retain(&HashSet::from(["uid-b".to_owned()]));
        assert!(log.needs_prune("uid-a", Some(3)), "forgotten");
        assert!(!log.needs_prune("uid-b", Some(1)), "kept");
    }

    #[test]
    fn the_log_is_per_stream_and_forgets_gone_streams() {
        let log = ApplyLog::default();
        let now = Instant::now();
        let version = Version::Resource("1".into());
        log.record("u1", "ConfigMap/c".into(), mark(1, version.clone(), now));
        log.record("u2", "ConfigMap/c".into(), mark(2, version, now));
        assert_eq!(log.get("u1", "ConfigMap/c").map(|m| m.fingerprint), Some(1));
        assert!(log.get("u1", "Service/c").is_none());
        log.retain(&HashSet::from(["u2".to_owned()]));
        assert!(log.get("u1", "ConfigMap/c").is_none());
        assert!(log.get("u2", "ConfigMap/c").is_some());
    }
}
