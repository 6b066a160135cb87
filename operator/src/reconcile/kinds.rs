//! Every kind of child object the operator writes, in one table ([`for_each_kind`]) that apply
//! and prune both walk, so a new kind cannot be applied and then forgotten by prune (or the
//! reverse). What differs between kinds is said once, in its [`ChildKind`] impl: which objects of
//! [`Desired`] it has, whether it is applied before the workloads or with them, how a skipped
//! apply tells that it changed ([`super::skip`]), whether it is data that deletionPolicy Retain
//! keeps, and whether it is a Strimzi object in the Kafka cluster's namespace.

use std::collections::BTreeSet;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;
use kube::api::ObjectMeta;
use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{Desired, DesiredTopic};
use crate::context::ChildStores;
use crate::strimzi::{KafkaTopic, KafkaUser};

/// When a kind is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Concurrently, before the workloads: what they use (config, volumes, credentials, topic,
    /// Services, NetworkPolicies, PodDisruptionBudgets), so a workload never starts without its
    /// config or unprotected by its NetworkPolicy.
    BeforeWorkloads,
    /// The workloads themselves.
    Workloads,
}

/// What the watch cache shows of a child: its metadata, and the whole object where the cache
/// keeps it (Deployments, StatefulSets, PVCs), so a skipped apply can still be observed.
pub struct Cached<K> {
    pub meta: ObjectMeta,
    pub object: Option<K>,
}

/// What the status step reads of the applied (or, when skipped, cached) children.
#[derive(Default)]
pub struct AppliedChildren {
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub deployments: Vec<Deployment>,
    pub stateful_sets: Vec<StatefulSet>,
    pub kafka_topic: Option<KafkaTopic>,
}

impl AppliedChildren {
    pub fn merge(&mut self, other: AppliedChildren) {
        self.pvcs.extend(other.pvcs);
        self.deployments.extend(other.deployments);
        self.stateful_sets.extend(other.stateful_sets);
        if other.kafka_topic.is_some() {
            self.kafka_topic = other.kafka_topic;
        }
    }
}

/// A kind of child: what apply and prune need to know of it.
pub trait ChildKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    const STEP: Step = Step::BeforeWorkloads;
    /// Compared by generation rather than resourceVersion when deciding to skip an apply: a
    /// controller keeps writing its status ([`super::skip`]).
    const BY_GENERATION: bool = false;
    /// Data: under deletionPolicy Retain it is let go of (unlabelled, kept), never deleted.
    const DATA: bool = false;
    /// A Strimzi custom resource: it lives in the Kafka cluster's namespace, is found by its
    /// owner labels, and exists only where Strimzi's CRDs are installed.
    const STRIMZI: bool = false;

    /// The objects of this kind the stream should have.
    fn desired(desired: &Desired) -> Vec<&Self>;

    /// What prune keeps, by (namespace, name): by default the desired objects.
    fn keep(desired: &Desired) -> BTreeSet<(String, String)> {
        Self::desired(desired)
            .into_iter()
            .filter_map(|object| {
                let meta = object.meta();
                Some((meta.namespace.clone()?, meta.name.clone()?))
            })
            .collect()
    }

    /// The watch cache's view of the child `namespace/name`; `None` when there is no cache of
    /// this kind (it is then always applied) or the child is not in it.
    fn cached(_stores: &ChildStores, _namespace: &str, _name: &str) -> Option<Cached<Self>> {
        None
    }

    /// Keeps what the status step reads of this kind's applied or cached objects.
    fn observe(_objects: Vec<Self>, _into: &mut AppliedChildren) {}
}

/// Something done for each kind in the table.
pub trait KindVisitor {
    fn visit<K: ChildKind>(&mut self);
}

/// Every kind the operator writes: the one table apply and prune walk.
pub fn for_each_kind(visitor: &mut impl KindVisitor) {
    visitor.visit::<ConfigMap>();
    visitor.visit::<PersistentVolumeClaim>();
    visitor.visit::<Service>();
    visitor.visit::<NetworkPolicy>();
    visitor.visit::<PodDisruptionBudget>();
    visitor.visit::<Secret>();
    visitor.visit::<KafkaUser>();
    visitor.visit::<KafkaTopic>();
    visitor.visit::<Deployment>();
    visitor.visit::<StatefulSet>();
}

/// The cached object `namespace/name`, if the cache has it.
fn lookup<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

impl ChildKind for ConfigMap {
    fn desired(desired: &Desired) -> Vec<&Self> {
        vec![&desired.config_map]
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.config_maps, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: None,
        })
    }
}

impl ChildKind for PersistentVolumeClaim {
    const DATA: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.pvcs.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.pvcs, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: Some((*live).clone()),
        })
    }
    fn observe(objects: Vec<Self>, into: &mut AppliedChildren) {
        into.pvcs.extend(objects);
    }
}

impl ChildKind for Service {
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.services.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.services, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: None,
        })
    }
}

impl ChildKind for NetworkPolicy {
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.network_policies.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.network_policies, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: None,
        })
    }
}

impl ChildKind for PodDisruptionBudget {
    // The disruption controller writes a budget's status whenever its pods come and go.
    const BY_GENERATION: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.disruption_budgets.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.disruption_budgets, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: None,
        })
    }
}

/// The credentials Secret, the only Secret the operator makes in the stream's namespace. Not
/// watched (Secrets are not cached), so always applied.
impl ChildKind for Secret {
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.credentials_secret.iter().collect()
    }
    /// Kept while the stream copies credentials, also while a source is missing and the copy
    /// cannot be made: a rotation in progress must not take the workloads' credentials away.
    fn keep(desired: &Desired) -> BTreeSet<(String, String)> {
        let namespace = desired.config_map.metadata.namespace.clone();
        desired
            .credentials
            .iter()
            .filter_map(|copy| Some((namespace.clone()?, copy.secret_name.clone())))
            .collect()
    }
}

/// The KafkaUser is credentials, not data: deleted whatever the deletionPolicy.
impl ChildKind for KafkaUser {
    const STRIMZI: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired
            .kafka_user
            .iter()
            .map(|user| user.as_ref())
            .collect()
    }
}

impl ChildKind for KafkaTopic {
    const DATA: bool = true;
    const STRIMZI: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        match &desired.topic {
            DesiredTopic::Strimzi(topic) => vec![topic.as_ref()],
            DesiredTopic::None | DesiredTopic::Admin(_) | DesiredTopic::External(_) => Vec::new(),
        }
    }
    fn observe(objects: Vec<Self>, into: &mut AppliedChildren) {
        into.kafka_topic = objects.into_iter().next();
    }
}

impl ChildKind for Deployment {
    const STEP: Step = Step::Workloads;
    // kube-controller-manager writes a Deployment's status with every change of its pods.
    const BY_GENERATION: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.deployments.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.deployments, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: Some((*live).clone()),
        })
    }
    fn observe(objects: Vec<Self>, into: &mut AppliedChildren) {
        into.deployments.extend(objects);
    }
}

/// The ingest of a stream that spills. Switching spill on or off swaps it with the ingest
/// Deployment of the same name: the new kind is applied, then prune deletes the old one.
impl ChildKind for StatefulSet {
    const STEP: Step = Step::Workloads;
    // Its status is kube-controller-manager's, like a Deployment's.
    const BY_GENERATION: bool = true;
    fn desired(desired: &Desired) -> Vec<&Self> {
        desired.stateful_sets.iter().collect()
    }
    fn cached(stores: &ChildStores, namespace: &str, name: &str) -> Option<Cached<Self>> {
        lookup(&stores.stateful_sets, namespace, name).map(|live| Cached {
            meta: live.metadata.clone(),
            object: Some((*live).clone()),
        })
    }
    fn observe(objects: Vec<Self>, into: &mut AppliedChildren) {
        into.stateful_sets.extend(objects);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::config::WorkloadDefaults;
    use crate::crd::{KafkaTlsSpec, MetricStream, SpillSpec, TopicManagement};
    use crate::reconcile::build::{CopiedCredentials, build};
    use crate::reconcile::fixtures::{file_stream, kafka_stream};
    use crate::reconcile::validate::validate;

    /// (kind, namespace, name) of every object in `desired`. The destructuring names every
    /// field: a new field of [`Desired`] does not compile until it is listed here, and then
    /// [`every_desired_object_is_in_the_table`] fails until the table has its kind.
    fn every_object(desired: &Desired) -> BTreeSet<(String, String, String)> {
        fn id<K: Resource<DynamicType = ()>>(object: &K) -> (String, String, String) {
            let meta = object.meta();
            (
                K::kind(&()).into_owned(),
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            )
        }
        let Desired {
            config_map,
            config_hash: _,
            pvcs,
            services,
            deployments,
            stateful_sets,
            network_policies,
            disruption_budgets,
            topic,
            kafka_user,
            // What to copy, not an object; the Secret holding the copies is.
            credentials: _,
            credentials_secret,
        } = desired;
        let mut objects = BTreeSet::from([id(config_map)]);
        objects.extend(pvcs.iter().map(id));
        objects.extend(services.iter().map(id));
        objects.extend(deployments.iter().map(id));
        objects.extend(stateful_sets.iter().map(id));
        objects.extend(network_policies.iter().map(id));
        objects.extend(disruption_budgets.iter().map(id));
        match topic {
            DesiredTopic::Strimzi(topic) => {
                objects.insert(id(topic.as_ref()));
            }
            // Not an object: the operator talks to Kafka itself.
            DesiredTopic::None | DesiredTopic::Admin(_) | DesiredTopic::External(_) => {}
        }
        objects.extend(kafka_user.iter().map(|user| id(user.as_ref())));
        objects.extend(credentials_secret.iter().map(id));
        objects
    }

    /// What the table's kinds say the desired objects are.
    struct TableObjects<'a>(&'a Desired, BTreeSet<(String, String, String)>);

    impl KindVisitor for TableObjects<'_> {
        fn visit<K: ChildKind>(&mut self) {
            for object in K::desired(self.0) {
                let meta = object.meta();
                self.1.insert((
                    K::kind(&()).into_owned(),
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                ));
            }
        }
    }

    /// Desired sets between them holding every kind of object build makes.
    fn desired_sets() -> Vec<Desired> {
        let mut copying = kafka_stream(TopicManagement::Strimzi);
        let kafka = copying.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(KafkaTlsSpec::default());
        kafka.strimzi.as_mut().expect("strimzi").create_user = true;
        let copied = CopiedCredentials::Copied(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"p".to_vec()),
        )]));
        let mut spilling = kafka_stream(TopicManagement::Admin);
        spilling.spec.kafka.as_mut().expect("kafka").spill = Some(SpillSpec {
            enabled: true,
            ..Default::default()
        });
        let streams: Vec<(MetricStream, CopiedCredentials)> = vec![
            (file_stream(), CopiedCredentials::NotNeeded),
            (spilling, CopiedCredentials::NotNeeded),
            (
                kafka_stream(TopicManagement::Admin),
                CopiedCredentials::NotNeeded,
            ),
            (copying, copied),
        ];
        streams
            .into_iter()
            .map(|(stream, copied)| {
                build(
                    &validate(&stream).expect("valid"),
                    &WorkloadDefaults::default(),
                    &copied,
                )
            })
            .collect()
    }

    #[test]
    fn every_desired_object_is_in_the_table() {
        let mut kinds = BTreeSet::new();
        for desired in desired_sets() {
            let mut table = TableObjects(&desired, BTreeSet::new());
            for_each_kind(&mut table);
            let objects = every_object(&desired);
            assert_eq!(table.1, objects, "apply and prune must see every object");
            kinds.extend(objects.into_iter().map(|(kind, _, _)| kind));
        }
        // The sets above must keep covering every kind build makes.
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "Deployment",
                "KafkaTopic",
                "KafkaUser",
                "NetworkPolicy",
                "PersistentVolumeClaim",
                "PodDisruptionBudget",
                "Secret",
                "Service",
                "StatefulSet",
            ]
            .map(String::from)
            .into()
        );
    }

    #[test]
    fn only_data_is_retained_and_only_workloads_wait() {
        struct Traits(Vec<(String, bool, Step, bool)>);
        impl KindVisitor for Traits {
            fn visit<K: ChildKind>(&mut self) {
                self.0
                    .push((K::kind(&()).into_owned(), K::DATA, K::STEP, K::STRIMZI));
            }
        }
        let mut traits = Traits(Vec::new());
        for_each_kind(&mut traits);
        let data: Vec<&str> = traits
            .0
            .iter()
            .filter(|t| t.1)
            .map(|t| t.0.as_str())
            .collect();
        assert_eq!(data, ["PersistentVolumeClaim", "KafkaTopic"]);
        let last: Vec<&str> = traits
            .0
            .iter()
            .filter(|t| t.2 == Step::Workloads)
            .map(|t| t.0.as_str())
            .collect();
        assert_eq!(last, ["Deployment", "StatefulSet"]);
        let strimzi: Vec<&str> = traits
            .0
            .iter()
            .filter(|t| t.3)
            .map(|t| t.0.as_str())
            .collect();
        assert_eq!(strimzi, ["KafkaUser", "KafkaTopic"]);
    }

    #[test]
    fn the_credentials_secret_is_kept_while_its_copy_is_pending() {
        let mut stream = kafka_stream(TopicManagement::Strimzi);
        stream.spec.kafka.as_mut().expect("kafka").tls = Some(KafkaTlsSpec::default());
        let desired = build(
            &validate(&stream).expect("valid"),
            &WorkloadDefaults::default(),
            &CopiedCredentials::Pending("waiting".into()),
        );
        assert!(Secret::desired(&desired).is_empty());
        assert_eq!(
            Secret::keep(&desired),
            [("apps".to_owned(), "web-kafka-credentials".to_owned())].into()
        );
    }
}
