//! Build (pure): a [`ValidatedStream`] and the operator's workload defaults → [`Desired`], every
//! object this stream should have, fully specified. Nothing here talks to the API server, so
//! what the operator creates is decided (and tested) in one place.
//!
//! Scheduling with ReadWriteOnce volumes: a RWO volume can be mounted by several pods only on
//! one node. Every pod that mounts a shared volume therefore carries a *required* pod affinity
//! (topologyKey `kubernetes.io/hostname`) to the pods it shares with: for the file backend all of
//! the stream's pods (label `metricstream.dev/stream`) share the queue volume; the consumers
//! share the sink volume. The scheduler lets the first such pod go anywhere (it matches its own
//! term); every later one follows it.
//!
//! Rollouts use the Deployment default, RollingUpdate, not Recreate: the co-scheduling keeps a
//! surge pod on the volume's node, and the file queue is built for several writer and reader
//! processes on one volume (file locks hand partitions over), so old and new pods may overlap.
//! Recreate would turn every config change into an ingest outage. The price: a surge pod cannot
//! start when that node is full, and the rollout waits while the old pods keep serving.
//!
//! NetworkPolicies (one per workload, unless the operator runs with `--network-policies=false`)
//! admit, on ingest pods, the ingest port from anywhere and the admin port (metrics, probes) only
//! from the namespaces of `--metrics-namespace-selector`; on consumer pods only that admin rule.
//! Kubelet probes come from the pod's own node, which NetworkPolicies always admit. Egress stays
//! open: the brokers, DNS and (for nothing today) the API server are cluster-specific addresses
//! and ports the operator cannot know, and a wrong guess silently breaks the pipeline.
//!
//! PodDisruptionBudgets: only for pods that can move one at a time. Pods co-scheduled on a
//! ReadWriteOnce volume (every pod of a file-backend stream, the consumers of any stream, which
//! share the sink volume) cannot: an evicted one's replacement must start on the node holding the
//! volume, which a drain has cordoned, so it stays Pending until the last of its group has left.
//! Any budget short of "all at once" would then refuse the next eviction for ever and hang the
//! drain; such groups get none and move together. Kafka-backend ingest pods mount no shared
//! volume (a spilling ingest's pods each mount their own, `spill.rs`; on node-bound storage an
//! evicted one waits for its node, which docs/operator.md warns of): their budget lets one go at
//! a time (`maxUnavailable: 1`, so a single replica never blocks a drain) and always lets an
//! unhealthy pod go (`unhealthyPodEvictionPolicy: AlwaysAllow`, so a crash-looping pod cannot
//! hold a node either).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

mod config;
mod copied_credentials;
mod kafka;
mod network;
mod sink;
mod spill;
#[cfg(test)]
mod tests;
mod workloads;

pub use crate::labels::{MAX_TOPIC_OBJECT_NAME, kafka_topic_name, kafka_user_name};
pub use config::{config_hash, render_config};
pub use copied_credentials::{CopiedCredentials, credentials_to_copy};
use kafka::{credentials_copy, kafka_topic, kafka_user};
pub use kafka::{credentials_hash, credentials_secret};
use network::{disruption_budget, ingest_service, network_policy};
pub use sink::{SINK_TOKEN_FILE, SINK_TOKEN_MOUNT};
use workloads::{pod_template, pvc, workload_deployment};

use super::validate::{
    KafkaSecurityPlan, PasswordSource, TopicMode, ValidatedBackend, ValidatedStream,
};
use crate::config::WorkloadDefaults;
use crate::crd::MetricStream;
use crate::labels;
use crate::strimzi::{KafkaTopic, KafkaUser};

pub const INGEST_PORT: i32 = 8080;
pub const ADMIN_PORT: i32 = 9090;
/// Where the queue volume is mounted; the queue lives in a subdirectory (not the volume root,
/// which may hold `lost+found`).
pub const DATA_MOUNT: &str = "/data";
pub const QUEUE_DIR: &str = "/data/queue";
pub const SINK_MOUNT: &str = "/sink";
pub const TOKENS_MOUNT: &str = "/etc/metricstream/tokens";
pub const TOKENS_KEY: &str = "tokens";
/// Where the ingest's TLS Secret (`tls.crt`, `tls.key`) is mounted.
pub const INGEST_TLS_MOUNT: &str = "/etc/metricstream/ingest-tls";
/// Where the Kafka CA (`ca.crt`) and the SASL password (`password`) are mounted.
pub const KAFKA_CA_MOUNT: &str = "/etc/metricstream/kafka-ca";
pub const KAFKA_SASL_MOUNT: &str = "/etc/metricstream/kafka-sasl";
/// Keys of the stream's credentials Secret (what the operator copies from the Kafka namespace).
pub const CREDENTIALS_CA_KEY: &str = "ca.crt";
pub const CREDENTIALS_PASSWORD_KEY: &str = "password";
/// The non-root user (and group) the workloads run as (distroless `nonroot`).
pub const RUN_AS_USER: i64 = 65532;

pub const COMPONENT_CONFIG: &str = "config";
pub const COMPONENT_INGEST: &str = "ingest";
pub const COMPONENT_CONSUMER: &str = "consumer";
pub const COMPONENT_QUEUE: &str = "queue";
pub const COMPONENT_SINK: &str = "sink";
pub const COMPONENT_TOPIC: &str = "topic";
pub const COMPONENT_KAFKA_USER: &str = "kafka-user";
pub const COMPONENT_CREDENTIALS: &str = "kafka-credentials";

/// Every object one MetricStream should have.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    /// Hash of the rendered config, also on both pod templates.
    pub config_hash: String,
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    /// The consumer's, and the ingest's unless it spills.
    pub deployments: Vec<Deployment>,
    /// The ingest's when it spills: one volume per pod (`spill.rs`).
    pub stateful_sets: Vec<StatefulSet>,
    /// Who may connect to the pods; empty when the operator creates none.
    pub network_policies: Vec<NetworkPolicy>,
    /// For the pods that can be evicted one at a time (see the module documentation).
    pub disruption_budgets: Vec<PodDisruptionBudget>,
    pub topic: DesiredTopic,
    /// The Strimzi KafkaUser (in the Kafka namespace), with `strimzi.createUser`.
    pub kafka_user: Option<Box<KafkaUser>>,
    /// What to copy from the Kafka namespace into the stream's credentials Secret.
    pub credentials: Option<CredentialsCopy>,
    /// That Secret, holding the copies; `None` until every source exists (or with nothing to
    /// copy). The pod templates then carry the hash of its content.
    pub credentials_secret: Option<Secret>,
}

/// The stream's credentials Secret, `<stream>-kafka-credentials`, assembled from Secrets in the
/// Kafka cluster's namespace (which the workloads, in another namespace, cannot mount).
#[derive(Clone, Debug, PartialEq)]
pub struct CredentialsCopy {
    pub secret_name: String,
    pub kafka_namespace: String,
    /// The KafkaUser's Secret (key `password`), made by Strimzi's User Operator.
    pub password_from: Option<String>,
    /// The Strimzi cluster CA Secret (key `ca.crt`).
    pub ca_from: Option<String>,
}

/// The Kafka topic, by who manages it.
#[derive(Clone, Debug, PartialEq)]
pub enum DesiredTopic {
    /// The file backend has none.
    None,
    Strimzi(Box<KafkaTopic>),
    Admin(TopicRequest),
    External(TopicRequest),
}

/// A topic the operator creates, grows or verifies through the Kafka API.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicRequest {
    pub bootstrap_servers: String,
    pub topic: String,
    pub partitions: i32,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
    /// How the operator connects (its Secrets are read at apply time).
    pub security: KafkaSecurityPlan,
}

impl Desired {
    pub fn queue_pvc_name(stream: &str) -> String {
        format!("{stream}-queue")
    }
    pub fn sink_pvc_name(stream: &str) -> String {
        format!("{stream}-sink")
    }
    pub fn config_map_name(stream: &str) -> String {
        format!("{stream}-config")
    }
    pub fn ingest_name(stream: &str) -> String {
        format!("{stream}-ingest")
    }
    pub fn consumer_name(stream: &str) -> String {
        format!("{stream}-consumer")
    }
    pub fn credentials_secret_name(stream: &str) -> String {
        format!("{stream}-kafka-credentials")
    }
}

/// Everything `stream` should have, given the credentials dereference copied.
pub fn build(
    stream: &ValidatedStream,
    defaults: &WorkloadDefaults,
    copied: &CopiedCredentials,
) -> Desired {
    let env = render_config(stream);
    let config_hash = config_hash(&env);
    let config_map = ConfigMap {
        metadata: metadata(
            stream,
            Desired::config_map_name(&stream.name),
            COMPONENT_CONFIG,
            true,
        ),
        data: Some(env),
        ..Default::default()
    };

    let mut pvcs = Vec::new();
    if let ValidatedBackend::File {
        storage,
        storage_class,
        ..
    } = &stream.backend
    {
        pvcs.push(pvc(
            stream,
            Desired::queue_pvc_name(&stream.name),
            COMPONENT_QUEUE,
            storage,
            storage_class.as_deref(),
        ));
    }
    pvcs.push(pvc(
        stream,
        Desired::sink_pvc_name(&stream.name),
        COMPONENT_SINK,
        &stream.consumer.sink_storage,
        stream.consumer.storage_class.as_deref(),
    ));

    let services = vec![ingest_service(stream)];
    let credentials = credentials_to_copy(stream);
    let credentials_secret =
        copied_credentials::copied_secret(stream, credentials.as_ref(), copied);
    let mut templates = [Role::Ingest, Role::Consumer]
        .map(|role| pod_template(stream, defaults, &config_hash, role));
    if let Some(secret) = &credentials_secret {
        copied_credentials::stamp_credentials_hash(&mut templates, secret);
    }
    let [ingest_pods, consumer_pods] = templates;
    let (mut deployments, stateful_sets) = match &stream.ingest.spill {
        None => (
            vec![workload_deployment(stream, Role::Ingest, ingest_pods)],
            Vec::new(),
        ),
        Some(plan) => (
            Vec::new(),
            vec![spill::ingest_stateful_set(stream, ingest_pods, plan)],
        ),
    };
    deployments.push(workload_deployment(stream, Role::Consumer, consumer_pods));
    let network_policies = if defaults.posture.network_policies {
        vec![
            network_policy(stream, defaults, Role::Ingest),
            network_policy(stream, defaults, Role::Consumer),
        ]
    } else {
        Vec::new()
    };
    // Consumers always share the sink volume; on the file backend ingest shares the queue's.
    let file_backend = matches!(stream.backend, ValidatedBackend::File { .. });
    let disruption_budgets = if file_backend {
        Vec::new()
    } else {
        vec![disruption_budget(stream, Role::Ingest)]
    };
    let topic = match stream.kafka() {
        None => DesiredTopic::None,
        Some(plan) => {
            let request = TopicRequest {
                bootstrap_servers: plan.bootstrap_servers.clone(),
                topic: plan.topic.clone(),
                partitions: stream.partitions,
                replication_factor: plan.replication_factor,
                config: plan.config.clone(),
                security: plan.security.clone(),
            };
            match &plan.management {
                TopicMode::Strimzi { cluster, namespace } => {
                    DesiredTopic::Strimzi(Box::new(kafka_topic(stream, plan, cluster, namespace)))
                }
                TopicMode::Admin => DesiredTopic::Admin(request),
                TopicMode::External => DesiredTopic::External(request),
            }
        }
    };

    let kafka_user = match stream.kafka() {
        Some(plan) => match &plan.management {
            TopicMode::Strimzi { cluster, namespace } => plan
                .security
                .sasl
                .as_ref()
                .filter(|sasl| sasl.password == PasswordSource::StrimziUser)
                .map(|sasl| Box::new(kafka_user(stream, plan, &sasl.username, cluster, namespace))),
            TopicMode::Admin | TopicMode::External => None,
        },
        None => None,
    };

    Desired {
        config_map,
        config_hash,
        pvcs,
        services,
        deployments,
        stateful_sets,
        network_policies,
        disruption_budgets,
        topic,
        kafka_user,
        credentials,
        credentials_secret,
    }
}

/// The controller ownerReference to the MetricStream: the garbage collector deletes the child
/// with it.
pub fn owner_reference(stream: &ValidatedStream) -> OwnerReference {
    OwnerReference {
        api_version: MetricStream::api_version(&()).into_owned(),
        kind: MetricStream::kind(&()).into_owned(),
        name: stream.name.clone(),
        uid: stream.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn metadata(stream: &ValidatedStream, name: String, component: &str, owned: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(stream.namespace.clone()),
        labels: Some(labels::standard(&stream.name, component)),
        owner_references: owned.then(|| vec![owner_reference(stream)]),
        ..Default::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ingest,
    Consumer,
}

impl Role {
    fn component(self) -> &'static str {
        match self {
            Role::Ingest => COMPONENT_INGEST,
            Role::Consumer => COMPONENT_CONSUMER,
        }
    }

    /// The name of the workload's Deployment (or StatefulSet), and of its NetworkPolicy and
    /// budget.
    fn object_name(self, stream: &str) -> String {
        match self {
            Role::Ingest => Desired::ingest_name(stream),
            Role::Consumer => Desired::consumer_name(stream),
        }
    }

    fn replicas(self, stream: &ValidatedStream) -> i32 {
        match self {
            Role::Ingest => stream.ingest.replicas,
            Role::Consumer => stream.consumer.replicas,
        }
    }
}
