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
//! volume: their budget lets one go at a time (`maxUnavailable: 1`, so a single replica never
//! blocks a drain) and always lets an unhealthy pod go (`unhealthyPodEvictionPolicy:
//! AlwaysAllow`, so a crash-looping pod cannot hold a node either).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, HTTPGetAction, KeyToPath, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

mod copied_credentials;

pub use copied_credentials::{CopiedCredentials, credentials_to_copy};

use super::termination;
use super::validate::{
    CaSource, KafkaSecurityPlan, KafkaTopicPlan, PasswordSource, TopicMode, ValidatedBackend,
    ValidatedStream,
};
use crate::config::WorkloadDefaults;
use crate::crd::{DeletionPolicy, Durability, MetricStream, SaslType};
use crate::labels;
use crate::strimzi::{
    AclResource, AclRule, KafkaTopic, KafkaTopicSpec, KafkaUser, KafkaUserAuthentication,
    KafkaUserAuthorization, KafkaUserSpec,
};

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
/// Longest KafkaTopic name we derive; longer ones are shortened with a hash.
pub const MAX_TOPIC_OBJECT_NAME: usize = 63;

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
    pub deployments: Vec<Deployment>,
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
    let mut deployments = vec![
        workload(stream, defaults, &config_hash, Role::Ingest),
        workload(stream, defaults, &config_hash, Role::Consumer),
    ];
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
    let credentials = credentials_to_copy(stream);
    let credentials_secret =
        copied_credentials::copied_secret(stream, credentials.as_ref(), copied);
    if let Some(secret) = &credentials_secret {
        copied_credentials::stamp_credentials_hash(&mut deployments, secret);
    }

    Desired {
        config_map,
        config_hash,
        pvcs,
        services,
        deployments,
        network_policies,
        disruption_budgets,
        topic,
        kafka_user,
        credentials,
        credentials_secret,
    }
}

/// The workloads' environment: every setting of both binaries, from the spec.
pub fn render_config(stream: &ValidatedStream) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |key: &str, value: String| {
        env.insert(key.to_owned(), value);
    };
    set("METRICSTREAM_PARTITIONS", stream.partitions.to_string());
    set("METRICSTREAM_SINK_DIR", SINK_MOUNT.into());
    set("METRICSTREAM_GROUP", stream.consumer.group.clone());
    set(
        "METRICSTREAM_MAX_BODY_BYTES",
        stream.ingest.max_body_bytes.to_string(),
    );
    set("METRICSTREAM_LOG_FORMAT", "json".into());
    set("METRICSTREAM_LISTEN", format!("0.0.0.0:{INGEST_PORT}"));
    set("METRICSTREAM_ADMIN_LISTEN", format!("0.0.0.0:{ADMIN_PORT}"));
    // Read by the ingest only (the consumer has no such flag).
    set(
        "METRICSTREAM_SHUTDOWN_DELAY",
        termination::INGEST_SHUTDOWN_DELAY_SECONDS.to_string(),
    );
    if stream.ingest.tls_secret.is_some() {
        set(
            "METRICSTREAM_TLS_CERT_FILE",
            format!("{INGEST_TLS_MOUNT}/tls.crt"),
        );
        set(
            "METRICSTREAM_TLS_KEY_FILE",
            format!("{INGEST_TLS_MOUNT}/tls.key"),
        );
    }
    if let Some((per_second, burst)) = stream.ingest.rate_limit {
        // The stream's figures; each pod enforces its share of them.
        set("METRICSTREAM_RATE_LIMIT_PER_SECOND", per_second.to_string());
        if let Some(burst) = burst {
            set("METRICSTREAM_RATE_LIMIT_BURST", burst.to_string());
        }
        set(
            "METRICSTREAM_RATE_LIMIT_REPLICAS",
            stream.ingest.replicas.max(1).to_string(),
        );
    }
    if stream.ingest.auth_secret.is_some() {
        set(
            "METRICSTREAM_TOKENS_FILE",
            format!("{TOKENS_MOUNT}/{TOKENS_KEY}"),
        );
    }
    match &stream.backend {
        ValidatedBackend::File { durability, .. } => {
            set("METRICSTREAM_BACKEND", "file".into());
            set("METRICSTREAM_DATA_DIR", QUEUE_DIR.into());
            let durability = match durability {
                Durability::Always => "always",
                Durability::Batch => "batch",
                Durability::None => "none",
            };
            set("METRICSTREAM_DURABILITY", durability.into());
        }
        ValidatedBackend::Kafka(plan) => {
            set("METRICSTREAM_BACKEND", "kafka".into());
            set("METRICSTREAM_KAFKA_BROKERS", plan.bootstrap_servers.clone());
            set("METRICSTREAM_TOPIC", plan.topic.clone());
            // The operator (or Strimzi, or someone else) owns the topic, not the workloads.
            set("METRICSTREAM_KAFKA_CREATE_TOPIC", "false".into());
            let security = &plan.security;
            let protocol = match (security.tls.is_some(), security.sasl.is_some()) {
                (false, false) => "plaintext",
                (true, false) => "ssl",
                (false, true) => "sasl-plaintext",
                (true, true) => "sasl-ssl",
            };
            set("METRICSTREAM_KAFKA_SECURITY_PROTOCOL", protocol.into());
            if matches!(
                security.tls,
                Some(CaSource::Secret { .. } | CaSource::StrimziClusterCa)
            ) {
                set(
                    "METRICSTREAM_KAFKA_CA_FILE",
                    format!("{KAFKA_CA_MOUNT}/{CREDENTIALS_CA_KEY}"),
                );
            }
            if let Some(sasl) = &security.sasl {
                let mechanism = match sasl.mechanism {
                    SaslType::ScramSha512 => "scram-sha-512",
                    SaslType::ScramSha256 => "scram-sha-256",
                };
                set("METRICSTREAM_KAFKA_SASL_MECHANISM", mechanism.into());
                set("METRICSTREAM_KAFKA_SASL_USERNAME", sasl.username.clone());
                set(
                    "METRICSTREAM_KAFKA_SASL_PASSWORD_FILE",
                    format!("{KAFKA_SASL_MOUNT}/{CREDENTIALS_PASSWORD_KEY}"),
                );
            }
        }
    }
    env
}

/// 16 hex digits identifying the rendered config.
pub fn config_hash(env: &BTreeMap<String, String>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in env {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
    }
    format!("{:016x}", labels::stable_hash(&bytes))
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

/// A data volume. With deletionPolicy Retain it has no ownerReference: the garbage collector
/// would otherwise delete it with the MetricStream.
fn pvc(
    stream: &ValidatedStream,
    name: String,
    component: &str,
    size: &str,
    storage_class: Option<&str>,
) -> PersistentVolumeClaim {
    let owned = stream.deletion_policy == DeletionPolicy::Delete;
    PersistentVolumeClaim {
        metadata: metadata(stream, name, component, owned),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(size.to_owned()),
                )])),
                ..Default::default()
            }),
            storage_class_name: storage_class.map(str::to_owned),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ingest_service(stream: &ValidatedStream) -> Service {
    Service {
        metadata: metadata(
            stream,
            Desired::ingest_name(&stream.name),
            COMPONENT_INGEST,
            true,
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(&stream.name, COMPONENT_INGEST)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: INGEST_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
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

    /// The name of the workload's Deployment, and of its NetworkPolicy and budget.
    fn object_name(self, stream: &str) -> String {
        match self {
            Role::Ingest => Desired::ingest_name(stream),
            Role::Consumer => Desired::consumer_name(stream),
        }
    }
}

fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// The workload's pods admit the admin port from the scraping namespaces' pods and, on ingest,
/// the ingest port from anywhere; nothing else. Egress is not restricted (module docs).
fn network_policy(
    stream: &ValidatedStream,
    defaults: &WorkloadDefaults,
    role: Role,
) -> NetworkPolicy {
    let component = role.component();
    let mut ingress = Vec::new();
    if role == Role::Ingest {
        // No `from`: every source, inside the cluster or not.
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp_port(INGEST_PORT)]),
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(defaults.posture.metrics_namespace_selector.clone()),
            ..Default::default()
        }]),
        ports: Some(vec![tcp_port(ADMIN_PORT)]),
    });
    NetworkPolicy {
        metadata: metadata(stream, role.object_name(&stream.name), component, true),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// One pod of the workload may be evicted at a time, and an unhealthy one always.
fn disruption_budget(stream: &ValidatedStream, role: Role) -> PodDisruptionBudget {
    let component = role.component();
    PodDisruptionBudget {
        metadata: metadata(stream, role.object_name(&stream.name), component, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            min_available: None,
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        ..Default::default()
    }
}

fn workload(
    stream: &ValidatedStream,
    defaults: &WorkloadDefaults,
    config_hash: &str,
    role: Role,
) -> Deployment {
    let (component, name) = (role.component(), role.object_name(&stream.name));
    let (replicas, binary) = match role {
        Role::Ingest => (stream.ingest.replicas, "metricstream-ingest"),
        Role::Consumer => (stream.consumer.replicas, "metricstream-consumer"),
    };
    let file_backend = matches!(stream.backend, ValidatedBackend::File { .. });

    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    let mut claim = |volume: &str, pvc: String, path: &str| {
        volumes.push(Volume {
            name: volume.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: pvc,
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume.into(),
            mount_path: path.into(),
            ..Default::default()
        });
    };
    if file_backend {
        claim("queue", Desired::queue_pvc_name(&stream.name), DATA_MOUNT);
    }
    if role == Role::Consumer {
        claim("sink", Desired::sink_pvc_name(&stream.name), SINK_MOUNT);
    }
    if role == Role::Ingest
        && let Some(secret) = &stream.ingest.auth_secret
    {
        volumes.push(secret_volume("tokens", secret, TOKENS_KEY, TOKENS_KEY));
        mounts.push(VolumeMount {
            name: "tokens".into(),
            mount_path: TOKENS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if role == Role::Ingest
        && let Some(secret) = &stream.ingest.tls_secret
    {
        let mut volume = secret_volume("ingest-tls", secret, "tls.crt", "tls.crt");
        if let Some(items) = volume.secret.as_mut().and_then(|s| s.items.as_mut()) {
            items.push(KeyToPath {
                key: "tls.key".into(),
                path: "tls.key".into(),
                mode: None,
            });
        }
        volumes.push(volume);
        mounts.push(VolumeMount {
            name: "ingest-tls".into(),
            mount_path: INGEST_TLS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }

    if let Some(plan) = stream.kafka() {
        let credentials = Desired::credentials_secret_name(&stream.name);
        let mut secret_file =
            |volume: &str, secret: &str, key: &str, file: &str, mount_path: &str| {
                volumes.push(secret_volume(volume, secret, key, file));
                mounts.push(VolumeMount {
                    name: volume.into(),
                    mount_path: mount_path.into(),
                    read_only: Some(true),
                    ..Default::default()
                });
            };
        match &plan.security.tls {
            Some(CaSource::Secret { name, key }) => {
                secret_file("kafka-ca", name, key, CREDENTIALS_CA_KEY, KAFKA_CA_MOUNT)
            }
            Some(CaSource::StrimziClusterCa) => secret_file(
                "kafka-ca",
                &credentials,
                CREDENTIALS_CA_KEY,
                CREDENTIALS_CA_KEY,
                KAFKA_CA_MOUNT,
            ),
            Some(CaSource::SystemRoots) | None => {}
        }
        match plan.security.sasl.as_ref().map(|sasl| &sasl.password) {
            Some(PasswordSource::Secret { name, key }) => secret_file(
                "kafka-sasl",
                name,
                key,
                CREDENTIALS_PASSWORD_KEY,
                KAFKA_SASL_MOUNT,
            ),
            Some(PasswordSource::StrimziUser) => secret_file(
                "kafka-sasl",
                &credentials,
                CREDENTIALS_PASSWORD_KEY,
                CREDENTIALS_PASSWORD_KEY,
                KAFKA_SASL_MOUNT,
            ),
            None => {}
        }
    }

    // Who shares a ReadWriteOnce volume with this pod, and so must run on its node.
    let co_scheduled_with = if file_backend {
        Some(BTreeMap::from([(
            labels::STREAM.to_owned(),
            stream.name.clone(),
        )]))
    } else if role == Role::Consumer {
        Some(labels::selector(&stream.name, COMPONENT_CONSUMER))
    } else {
        None
    };
    let affinity = co_scheduled_with.map(|match_labels| Affinity {
        pod_affinity: Some(PodAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: Some(LabelSelector {
                    match_labels: Some(match_labels),
                    match_expressions: None,
                }),
                topology_key: "kubernetes.io/hostname".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });

    let mut ports = vec![ContainerPort {
        name: Some("admin".into()),
        container_port: ADMIN_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    if role == Role::Ingest {
        ports.insert(
            0,
            ContainerPort {
                name: Some("http".into()),
                container_port: INGEST_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        );
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let quantity = |value: &str| Quantity(value.to_owned());

    let container = Container {
        name: component.into(),
        image: Some(
            stream
                .image
                .clone()
                .unwrap_or_else(|| defaults.workload_image.clone()),
        ),
        command: Some(vec![binary.into()]),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: Desired::config_map_name(&stream.name),
                optional: None,
            }),
            ..Default::default()
        }]),
        ports: Some(ports),
        // Not ready within 4 s of a failing queue. (A deleted pod leaves the Service's
        // endpoints at once, whatever the probe says; see `termination`.)
        readiness_probe: Some(probe("/readyz", 2, 2)),
        liveness_probe: Some(probe("/healthz", 10, 6)),
        lifecycle: (role == Role::Ingest).then(termination::ingest_lifecycle),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&defaults.workload_cpu_request)),
                (
                    "memory".to_owned(),
                    quantity(&defaults.workload_memory_request),
                ),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_owned(), quantity(&defaults.workload_cpu_limit)),
                (
                    "memory".to_owned(),
                    quantity(&defaults.workload_memory_limit),
                ),
            ])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        // A crash that writes no termination message (ours never do) still leaves its last log
        // lines in the container's status, where the operator quotes them in the stream's status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };

    let labels = labels::standard(&stream.name, component);
    Deployment {
        metadata: metadata(stream, name, component, true),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(BTreeMap::from([(
                        labels::CONFIG_HASH.to_owned(),
                        config_hash.to_owned(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    affinity,
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(runtime_default_seccomp()),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(
                        termination::TERMINATION_GRACE_PERIOD_SECONDS,
                    ),
                    automount_service_account_token: Some(false),
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One key of a Secret as a read-only file. A whole-directory mount (no subPath), so kubelet's
/// atomic updates reach the pod.
fn secret_volume(volume: &str, secret: &str, key: &str, file: &str) -> Volume {
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: file.to_owned(),
                mode: None,
            }]),
            default_mode: Some(0o440),
            optional: None,
        }),
        ..Default::default()
    }
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

/// The KafkaTopic lives in the Kafka cluster's namespace, so it can carry no ownerReference
/// (cross-namespace owners are invalid and the garbage collector deletes such dependents); the
/// owner labels find it instead, and the finalizer cleans it up.
fn kafka_topic(
    stream: &ValidatedStream,
    plan: &KafkaTopicPlan,
    cluster: &str,
    namespace: &str,
) -> KafkaTopic {
    let mut topic_labels = labels::standard(&stream.name, COMPONENT_TOPIC);
    topic_labels.insert(labels::STRIMZI_CLUSTER.into(), cluster.into());
    topic_labels.insert(labels::OWNER_NAMESPACE.into(), stream.namespace.clone());
    topic_labels.insert(labels::OWNER_NAME.into(), stream.name.clone());
    let mut topic = KafkaTopic::new(
        &kafka_topic_name(&stream.namespace, &stream.name),
        KafkaTopicSpec {
            topic_name: Some(plan.topic.clone()),
            partitions: Some(stream.partitions),
            replicas: Some(plan.replication_factor),
            config: plan
                .config
                .iter()
                .map(|(key, value)| (key.clone(), serde_json::Value::String(value.clone())))
                .collect(),
        },
    );
    topic.metadata.namespace = Some(namespace.to_owned());
    topic.metadata.labels = Some(topic_labels);
    topic
}

/// The KafkaUser, in the Kafka cluster's namespace (no ownerReference, like the KafkaTopic),
/// with SCRAM-SHA-512 credentials and exactly the ACLs the workloads use.
fn kafka_user(
    stream: &ValidatedStream,
    plan: &KafkaTopicPlan,
    username: &str,
    cluster: &str,
    namespace: &str,
) -> KafkaUser {
    let mut user_labels = labels::standard(&stream.name, COMPONENT_KAFKA_USER);
    user_labels.insert(labels::STRIMZI_CLUSTER.into(), cluster.into());
    user_labels.insert(labels::OWNER_NAMESPACE.into(), stream.namespace.clone());
    user_labels.insert(labels::OWNER_NAME.into(), stream.name.clone());
    let acls = workload_acls(&plan.topic, &stream.consumer.group);
    let mut user = KafkaUser::new(
        username,
        KafkaUserSpec {
            authentication: Some(KafkaUserAuthentication {
                type_: "scram-sha-512".into(),
            }),
            authorization: Some(KafkaUserAuthorization {
                type_: "simple".into(),
                acls,
            }),
        },
    );
    user.metadata.namespace = Some(namespace.to_owned());
    user.metadata.labels = Some(user_labels);
    user
}

/// The backend's [`workload_acls`](metricstream_backend::kafka::workload_acls) (the list its
/// tests grant a real broker's user) in Strimzi's spelling: literal names, any host.
fn workload_acls(topic: &str, group: &str) -> Vec<AclRule> {
    metricstream_backend::kafka::workload_acls(topic, group)
        .into_iter()
        .map(|acl| AclRule {
            resource: AclResource {
                type_: acl.resource_type.kafka_name().into(),
                name: Some(acl.name),
                pattern_type: Some("literal".into()),
            },
            operations: acl
                .operations
                .iter()
                .map(|op| op.kafka_name().to_owned())
                .collect(),
        })
        .collect()
}

fn credentials_copy(
    stream: &ValidatedStream,
    security: &KafkaSecurityPlan,
    cluster: &str,
    namespace: &str,
) -> CredentialsCopy {
    CredentialsCopy {
        secret_name: Desired::credentials_secret_name(&stream.name),
        kafka_namespace: namespace.to_owned(),
        password_from: security
            .sasl
            .as_ref()
            .filter(|sasl| sasl.password == PasswordSource::StrimziUser)
            .map(|sasl| sasl.username.clone()),
        ca_from: matches!(security.tls, Some(CaSource::StrimziClusterCa))
            .then(|| format!("{cluster}-cluster-ca-cert")),
    }
}

/// The stream's credentials Secret holding what was copied (`password`, `ca.crt`), owned by
/// the stream.
pub fn credentials_secret(
    stream: &ValidatedStream,
    copy: &CredentialsCopy,
    data: BTreeMap<String, ByteString>,
) -> Secret {
    Secret {
        metadata: metadata(
            stream,
            copy.secret_name.clone(),
            COMPONENT_CREDENTIALS,
            true,
        ),
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// 16 hex digits identifying the credentials, for [`labels::CREDENTIALS_HASH`].
pub fn credentials_hash(data: &BTreeMap<String, ByteString>) -> String {
    let mut bytes = Vec::new();
    for (key, value) in data {
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&value.0);
        bytes.push(0);
    }
    format!("{:016x}", labels::stable_hash(&bytes))
}

/// The KafkaUser's name, which is also the Kafka user name and the name of the Secret Strimzi
/// makes for it: the same sanitized `metricstream.<namespace>.<name>` as the KafkaTopic's.
pub fn kafka_user_name(namespace: &str, name: &str) -> String {
    kafka_topic_name(namespace, name)
}

/// The KafkaTopic's object name: `metricstream.<namespace>.<name>`, lowercased with anything
/// outside `[a-z0-9.-]` replaced by `-`, and when longer than [`MAX_TOPIC_OBJECT_NAME`], cut
/// and suffixed with a hash of the full `<namespace>/<name>` so distinct streams never collide.
/// (The Kafka topic's own name is `spec.topicName`, which may be anything Kafka accepts.)
pub fn kafka_topic_name(namespace: &str, name: &str) -> String {
    let raw = format!("metricstream.{namespace}.{name}");
    let mut sanitized: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let changed = sanitized != raw;
    if sanitized.len() > MAX_TOPIC_OBJECT_NAME || changed {
        let hash = labels::stable_hash(format!("{namespace}/{name}").as_bytes());
        let suffix = format!("-{:08x}", hash as u32);
        sanitized.truncate(MAX_TOPIC_OBJECT_NAME - suffix.len());
        while sanitized.ends_with(['-', '.']) {
            sanitized.pop();
        }
        sanitized.push_str(&suffix);
    }
    sanitized
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TopicManagement;
    use crate::reconcile::fixtures::{file_stream, kafka_stream};
    use crate::reconcile::validate::validate;

    fn built(stream: &MetricStream) -> Desired {
        build(
            &validate(stream).expect("valid"),
            &WorkloadDefaults::default(),
            &CopiedCredentials::NotNeeded,
        )
    }

    fn deployment<'a>(desired: &'a Desired, name: &str) -> &'a Deployment {
        desired
            .deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .expect("deployment")
    }

    fn pod_spec(deployment: &Deployment) -> &PodSpec {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn hash_annotation(deployment: &Deployment) -> String {
        deployment
            .spec
            .as_ref()
            .expect("spec")
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(labels::CONFIG_HASH))
            .cloned()
            .expect("hash annotation")
    }

    #[test]
    fn the_file_backend_wants_two_volumes_owned_only_under_delete() {
        for (policy, owned) in [
            (DeletionPolicy::Retain, false),
            (DeletionPolicy::Delete, true),
        ] {
            let mut stream = file_stream();
            stream.spec.deletion_policy = policy;
            let desired = built(&stream);
            let names: Vec<_> = desired
                .pvcs
                .iter()
                .map(|p| p.metadata.name.clone().expect("name"))
                .collect();
            assert_eq!(names, ["web-queue", "web-sink"]);
            for pvc in &desired.pvcs {
                assert_eq!(pvc.metadata.owner_references.is_some(), owned, "{policy:?}");
                let spec = pvc.spec.as_ref().expect("spec");
                assert_eq!(
                    spec.access_modes.as_deref(),
                    Some(&["ReadWriteOnce".to_owned()][..])
                );
            }
            // Everything else is always owned.
            assert!(desired.config_map.metadata.owner_references.is_some());
            assert!(
                desired
                    .deployments
                    .iter()
                    .all(|d| d.metadata.owner_references.is_some())
            );
            assert!(
                desired
                    .services
                    .iter()
                    .all(|s| s.metadata.owner_references.is_some())
            );
            assert!(
                desired
                    .network_policies
                    .iter()
                    .all(|n| n.metadata.owner_references
                        == Some(vec![owner_reference(&validate(&stream).expect("valid"))]))
            );
        }
    }

    fn network_policy<'a>(desired: &'a Desired, name: &str) -> &'a NetworkPolicySpec {
        desired
            .network_policies
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.spec.as_ref())
            .unwrap_or_else(|| panic!("NetworkPolicy {name}"))
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<(i32, String)> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| {
                let port = match p.port {
                    Some(IntOrString::Int(port)) => port,
                    ref other => panic!("a numeric port, got {other:?}"),
                };
                (port, p.protocol.clone().unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn ingest_admits_its_port_from_anywhere_and_the_admin_port_from_scrapers_only() {
        let desired = built(&kafka_stream(TopicManagement::Strimzi));
        let names: Vec<_> = desired
            .network_policies
            .iter()
            .map(|n| n.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(names, ["web-ingest", "web-consumer"]);

        let ingest = network_policy(&desired, "web-ingest");
        assert_eq!(
            ingest
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector("web", COMPONENT_INGEST)),
            "selects exactly the ingest pods (the Deployment's selector)"
        );
        assert_eq!(ingest.policy_types, Some(vec!["Ingress".to_owned()]));
        assert!(ingest.egress.is_none(), "egress stays open");
        let rules = ingest.ingress.as_ref().expect("ingress rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(ports(&rules[0]), [(INGEST_PORT, "TCP".to_owned())]);
        assert!(
            rules[0].from.is_none(),
            "the ingest port admits every source"
        );
        assert_eq!(ports(&rules[1]), [(ADMIN_PORT, "TCP".to_owned())]);
        let peers = rules[1]
            .from
            .as_ref()
            .expect("the admin port names its sources");
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].namespace_selector,
            Some(LabelSelector::default()),
            "by default pods of every namespace (and never outside sources)"
        );
        assert!(peers[0].pod_selector.is_none() && peers[0].ip_block.is_none());

        let consumer = network_policy(&desired, "web-consumer");
        assert_eq!(
            consumer
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector("web", COMPONENT_CONSUMER))
        );
        let rules = consumer.ingress.as_ref().expect("ingress rules");
        assert_eq!(rules.len(), 1, "consumers serve only the admin port");
        assert_eq!(ports(&rules[0]), [(ADMIN_PORT, "TCP".to_owned())]);
        assert!(rules[0].from.is_some());
        assert!(consumer.egress.is_none());

        // The policies' ports are the ports the containers listen on.
        for (name, expected) in [
            ("web-ingest", vec![INGEST_PORT, ADMIN_PORT]),
            ("web-consumer", vec![ADMIN_PORT]),
        ] {
            let listening: Vec<i32> = pod_spec(deployment(&desired, name)).containers[0]
                .ports
                .iter()
                .flatten()
                .map(|p| p.container_port)
                .collect();
            assert_eq!(listening, expected, "{name}");
        }
    }

    #[test]
    fn the_scrape_namespaces_come_from_the_operator_settings() {
        let selector =
            crate::config::parse_label_selector("kubernetes.io/metadata.name=monitoring")
                .expect("valid");
        let mut defaults = WorkloadDefaults::default();
        defaults.posture.metrics_namespace_selector = selector.clone();
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        for name in ["web-ingest", "web-consumer"] {
            let rules = network_policy(&desired, name)
                .ingress
                .clone()
                .expect("rules");
            let admin = rules.last().expect("the admin rule");
            assert_eq!(
                admin.from.as_ref().expect("peers")[0]
                    .namespace_selector
                    .as_ref(),
                Some(&selector),
                "{name}"
            );
        }
        let json = serde_json::to_value(&desired.network_policies[0]).expect("json");
        assert_eq!(
            json["spec"]["ingress"][1]["from"][0]["namespaceSelector"],
            serde_json::json!({ "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } })
        );

        defaults.posture.network_policies = false;
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        assert!(
            desired.network_policies.is_empty(),
            "switched off: none (and prune removes old ones)"
        );
    }

    #[test]
    fn only_pods_that_can_move_alone_get_a_disruption_budget() {
        // File backend: every pod shares the queue volume and moves with it; a budget could
        // only hang a drain.
        assert!(built(&file_stream()).disruption_budgets.is_empty());

        let desired = built(&kafka_stream(TopicManagement::Admin));
        assert_eq!(
            desired.disruption_budgets.len(),
            1,
            "consumers share the sink volume"
        );
        let budget = &desired.disruption_budgets[0];
        assert_eq!(budget.metadata.name.as_deref(), Some("web-ingest"));
        assert!(budget.metadata.owner_references.is_some());
        let spec = budget.spec.as_ref().expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.min_available, None,
            "minAvailable would block a lone replica"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let ingest = deployment(&desired, "web-ingest");
        assert_eq!(
            spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
            ingest
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
            "the budget covers exactly the Deployment's pods"
        );
        // ... which indeed mount no shared volume, while the consumers do.
        assert!(pod_spec(ingest).affinity.is_none());
        assert!(
            pod_spec(deployment(&desired, "web-consumer"))
                .affinity
                .is_some()
        );
    }

    #[test]
    fn the_kafka_backend_wants_only_the_sink_volume() {
        let desired = built(&kafka_stream(TopicManagement::Admin));
        let names: Vec<_> = desired
            .pvcs
            .iter()
            .map(|p| p.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(names, ["web-sink"]);
        assert!(
            matches!(desired.topic, DesiredTopic::Admin(ref t) if t.partitions == 4 && t.topic == "metrics-web")
        );
        let ingest = pod_spec(deployment(&desired, "web-ingest"));
        assert!(ingest.affinity.is_none(), "ingest mounts no shared volume");
        let consumer = pod_spec(deployment(&desired, "web-consumer"));
        assert!(
            consumer.affinity.is_some(),
            "consumers share the sink volume"
        );
    }

    #[test]
    fn the_config_map_renders_the_workload_environment() {
        let desired = built(&file_stream());
        let data = desired.config_map.data.as_ref().expect("data");
        let expect = [
            ("METRICSTREAM_BACKEND", "file"),
            ("METRICSTREAM_PARTITIONS", "4"),
            ("METRICSTREAM_DATA_DIR", "/data/queue"),
            ("METRICSTREAM_SINK_DIR", "/sink"),
            ("METRICSTREAM_GROUP", "storage-writer"),
            ("METRICSTREAM_DURABILITY", "batch"),
            ("METRICSTREAM_LOG_FORMAT", "json"),
            ("METRICSTREAM_LISTEN", "0.0.0.0:8080"),
            ("METRICSTREAM_ADMIN_LISTEN", "0.0.0.0:9090"),
            ("METRICSTREAM_MAX_BODY_BYTES", "1048576"),
        ];
        for (key, value) in expect {
            assert_eq!(data.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert!(!data.contains_key("METRICSTREAM_TOKENS_FILE"));
        assert!(!data.contains_key("METRICSTREAM_KAFKA_BROKERS"));

        let kafka = built(&kafka_stream(TopicManagement::Strimzi));
        let data = kafka.config_map.data.as_ref().expect("data");
        assert_eq!(data["METRICSTREAM_BACKEND"], "kafka");
        assert_eq!(
            data["METRICSTREAM_KAFKA_BROKERS"],
            "my-cluster-kafka-bootstrap.kafka:9092"
        );
        assert_eq!(data["METRICSTREAM_TOPIC"], "metrics-web");
        assert_eq!(
            data["METRICSTREAM_TOKENS_FILE"],
            "/etc/metricstream/tokens/tokens"
        );
        assert!(!data.contains_key("METRICSTREAM_DATA_DIR"));
    }

    #[test]
    fn partition_growth_changes_the_config_and_rolls_the_workloads() {
        let before = built(&file_stream());
        let mut grown = file_stream();
        grown.spec.partitions = 8;
        let after = built(&grown);
        assert_eq!(
            after.config_map.data.as_ref().expect("data")["METRICSTREAM_PARTITIONS"],
            "8"
        );
        assert_ne!(before.config_hash, after.config_hash);
        for name in ["web-ingest", "web-consumer"] {
            assert_eq!(
                hash_annotation(deployment(&before, name)),
                before.config_hash
            );
            assert_eq!(hash_annotation(deployment(&after, name)), after.config_hash);
        }
        // A change that does not touch the config (replicas) keeps the hash.
        let mut scaled = file_stream();
        scaled.spec.ingest.replicas = 5;
        assert_eq!(built(&scaled).config_hash, before.config_hash);
    }

    #[test]
    fn the_config_hash_is_stable_across_builds() {
        // A rebuilt operator must not roll every workload: the hash is FNV-1a of the data.
        let env = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        assert_eq!(config_hash(&env), config_hash(&env.clone()));
        assert_eq!(
            config_hash(&env),
            format!("{:016x}", labels::stable_hash(b"A\x001\x00"))
        );
    }

    #[test]
    fn workloads_run_restricted_with_probes_resources_and_crash_logs() {
        let desired = built(&file_stream());
        for deployment in &desired.deployments {
            let pod = pod_spec(deployment);
            let pod_security = pod.security_context.as_ref().expect("pod security");
            assert_eq!(pod_security.run_as_non_root, Some(true));
            assert_eq!(pod_security.fs_group, Some(RUN_AS_USER));
            let container = &pod.containers[0];
            let security = container.security_context.as_ref().expect("security");
            assert_eq!(security.run_as_non_root, Some(true));
            assert_eq!(security.run_as_user, Some(65532));
            assert_eq!(security.read_only_root_filesystem, Some(true));
            assert_eq!(security.allow_privilege_escalation, Some(false));
            assert_eq!(
                security.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_owned()])
            );
            assert_eq!(
                security.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
                Some("RuntimeDefault")
            );
            let readiness = container
                .readiness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("readiness");
            assert_eq!(readiness.path.as_deref(), Some("/readyz"));
            assert_eq!(readiness.port, IntOrString::String("admin".into()));
            let liveness = container
                .liveness_probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("liveness");
            assert_eq!(liveness.path.as_deref(), Some("/healthz"));
            assert_eq!(
                container.termination_message_policy.as_deref(),
                Some("FallbackToLogsOnError"),
                "a crash's last log lines reach the stream's status"
            );
            let resources = container.resources.as_ref().expect("resources");
            assert!(
                resources
                    .requests
                    .as_ref()
                    .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
            );
            assert!(
                resources
                    .limits
                    .as_ref()
                    .is_some_and(|r| r.contains_key("memory"))
            );
            assert_eq!(
                container.image.as_deref(),
                Some("ghcr.io/metricstream/metricstream:0.1.0")
            );
        }
    }

    #[test]
    fn the_ingest_sleeps_before_sigterm_and_every_stop_fits_the_grace_period() {
        /// The binaries' --shutdown-timeout default, and a margin for the exit itself.
        const DRAIN: i64 = 30;
        const EXIT: i64 = 5;
        let desired = built(&file_stream());
        let delay: i64 =
            desired.config_map.data.as_ref().expect("data")["METRICSTREAM_SHUTDOWN_DELAY"]
                .parse()
                .expect("whole seconds");
        assert!(
            delay > 0,
            "the ingest goes not-ready before it stops serving"
        );

        let ingest = pod_spec(deployment(&desired, "web-ingest"));
        let container = &ingest.containers[0];
        let pre_stop_sleep = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| s.seconds)
            .expect("a preStop sleep (the image has no shell)");
        assert!(pre_stop_sleep >= 3, "kube-proxy needs seconds, not less");
        let grace = ingest.termination_grace_period_seconds.expect("grace");
        assert!(grace >= pre_stop_sleep + delay + DRAIN + EXIT, "{grace}");
        let readiness = container.readiness_probe.as_ref().expect("readiness");
        let not_ready_within = readiness.period_seconds.expect("period")
            * readiness.failure_threshold.expect("threshold");
        assert!(not_ready_within <= 6, "{not_ready_within} s");

        let consumer = pod_spec(deployment(&desired, "web-consumer"));
        assert_eq!(consumer.containers[0].lifecycle, None, "no Service uses it");
        let grace = consumer.termination_grace_period_seconds.expect("grace");
        assert!(grace >= DRAIN + EXIT, "{grace}");
    }

    #[test]
    fn the_image_comes_from_the_spec_or_the_operator_default() {
        let mut stream = file_stream();
        stream.spec.image = Some("registry.local/ms:dev".into());
        let desired = built(&stream);
        for deployment in &desired.deployments {
            assert_eq!(
                pod_spec(deployment).containers[0].image.as_deref(),
                Some("registry.local/ms:dev")
            );
        }
        let defaults = WorkloadDefaults {
            workload_image: "other:1".into(),
            ..Default::default()
        };
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        assert_eq!(
            pod_spec(&desired.deployments[0]).containers[0]
                .image
                .as_deref(),
            Some("other:1")
        );
    }

    #[test]
    fn file_backend_pods_are_co_scheduled_and_share_the_queue_volume() {
        let desired = built(&file_stream());
        for deployment in &desired.deployments {
            let pod = pod_spec(deployment);
            let term = &pod
                .affinity
                .as_ref()
                .and_then(|a| a.pod_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .expect("required pod affinity")[0];
            assert_eq!(term.topology_key, "kubernetes.io/hostname");
            let selector = term
                .label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .expect("labels");
            assert_eq!(
                selector,
                &BTreeMap::from([(labels::STREAM.to_owned(), "web".to_owned())])
            );
            let claims: Vec<_> = pod
                .volumes
                .as_ref()
                .expect("volumes")
                .iter()
                .filter_map(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .map(|c| c.claim_name.clone())
                })
                .collect();
            assert!(claims.contains(&"web-queue".to_owned()));
            let pod_labels = deployment
                .spec
                .as_ref()
                .expect("spec")
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .expect("labels");
            assert_eq!(pod_labels[labels::STREAM], "web");
        }
    }

    /// The files a workload mounts from Secrets: (secret, key, mount path/file).
    fn secret_files(deployment: &Deployment) -> Vec<(String, String, String)> {
        let pod = pod_spec(deployment);
        let mounts = pod.containers[0].volume_mounts.clone().unwrap_or_default();
        pod.volumes
            .iter()
            .flatten()
            .filter_map(|volume| {
                let secret = volume.secret.as_ref()?;
                let item = &secret.items.as_ref()?[0];
                let mount = mounts.iter().find(|m| m.name == volume.name)?;
                assert_eq!(mount.read_only, Some(true), "{} is read-only", volume.name);
                assert_eq!(mount.sub_path, None, "whole-directory mounts get updates");
                Some((
                    secret.secret_name.clone()?,
                    item.key.clone(),
                    format!("{}/{}", mount.mount_path, item.path),
                ))
            })
            .collect()
    }

    #[test]
    fn a_plaintext_kafka_stream_sets_no_credentials() {
        let desired = built(&kafka_stream(TopicManagement::Admin));
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "plaintext");
        assert!(!env.contains_key("METRICSTREAM_KAFKA_SASL_USERNAME"));
        assert!(desired.kafka_user.is_none());
        assert!(desired.credentials.is_none());
        for deployment in &desired.deployments {
            assert!(
                secret_files(deployment)
                    .iter()
                    .all(|(secret, _, _)| secret == "web-tokens"),
                "only the tokens Secret"
            );
        }
    }

    #[test]
    fn user_given_tls_and_scram_secrets_are_mounted_into_both_workloads() {
        let mut stream = kafka_stream(TopicManagement::Admin);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(crate::crd::KafkaTlsSpec {
            ca_secret_ref: Some(crate::crd::SecretKeyRef {
                name: "kafka-ca".into(),
                key: Some("root.pem".into()),
            }),
        });
        kafka.authentication = Some(crate::crd::KafkaAuthenticationSpec {
            type_: SaslType::ScramSha256,
            username: "web-writer".into(),
            password_secret_ref: crate::crd::SecretKeyRef {
                name: "web-kafka".into(),
                key: None,
            },
        });
        let desired = built(&stream);
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_MECHANISM"], "scram-sha-256");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_USERNAME"], "web-writer");
        assert_eq!(
            env["METRICSTREAM_KAFKA_CA_FILE"],
            "/etc/metricstream/kafka-ca/ca.crt"
        );
        assert_eq!(
            env["METRICSTREAM_KAFKA_SASL_PASSWORD_FILE"],
            "/etc/metricstream/kafka-sasl/password"
        );
        assert!(
            !env.values().any(|value| value.contains("root.pem")),
            "the environment names files, never Secret contents"
        );
        assert!(desired.kafka_user.is_none() && desired.credentials.is_none());
        for deployment in &desired.deployments {
            let files = secret_files(deployment);
            assert!(files.contains(&(
                "kafka-ca".into(),
                "root.pem".into(),
                env["METRICSTREAM_KAFKA_CA_FILE"].clone()
            )));
            assert!(files.contains(&(
                "web-kafka".into(),
                "password".into(),
                env["METRICSTREAM_KAFKA_SASL_PASSWORD_FILE"].clone()
            )));
        }
    }

    #[test]
    fn strimzi_create_user_makes_a_kafka_user_with_exactly_the_workload_acls() {
        let mut stream = kafka_stream(TopicManagement::Strimzi);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(crate::crd::KafkaTlsSpec::default());
        kafka.strimzi.as_mut().expect("strimzi").create_user = true;
        let desired = built(&stream);

        let user = desired.kafka_user.as_ref().expect("a KafkaUser");
        assert_eq!(user.metadata.namespace.as_deref(), Some("kafka"));
        assert_eq!(
            user.metadata.owner_references, None,
            "cross-namespace: no owner"
        );
        let user_labels = user.metadata.labels.as_ref().expect("labels");
        assert_eq!(user_labels[labels::STRIMZI_CLUSTER], "my-cluster");
        assert_eq!(user_labels[labels::OWNER_NAMESPACE], "apps");
        let username = user.metadata.name.clone().expect("name");
        assert_eq!(username, kafka_topic_name("apps", "web"));
        let spec = &user.spec;
        assert_eq!(
            spec.authentication.as_ref().map(|a| a.type_.as_str()),
            Some("scram-sha-512")
        );
        let authorization = spec.authorization.as_ref().expect("authorization");
        assert_eq!(authorization.type_, "simple");
        let acls: Vec<(String, String, Vec<String>)> = authorization
            .acls
            .iter()
            .map(|acl| {
                assert_eq!(acl.resource.pattern_type.as_deref(), Some("literal"));
                (
                    acl.resource.type_.clone(),
                    acl.resource.name.clone().expect("a named resource"),
                    acl.operations.clone(),
                )
            })
            .collect();
        assert_eq!(
            acls,
            vec![
                (
                    "topic".into(),
                    "metrics-web".into(),
                    vec!["Read".into(), "Write".into()]
                ),
                ("group".into(), "storage-writer".into(), vec!["Read".into()]),
            ]
        );

        let copy = desired.credentials.as_ref().expect("a credentials copy");
        assert_eq!(copy.secret_name, "web-kafka-credentials");
        assert_eq!(copy.kafka_namespace, "kafka");
        assert_eq!(copy.password_from.as_deref(), Some(username.as_str()));
        assert_eq!(copy.ca_from.as_deref(), Some("my-cluster-cluster-ca-cert"));

        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_MECHANISM"], "scram-sha-512");
        assert_eq!(env["METRICSTREAM_KAFKA_SASL_USERNAME"], username);
        for deployment in &desired.deployments {
            let files = secret_files(deployment);
            assert!(files.contains(&(
                "web-kafka-credentials".into(),
                "password".into(),
                "/etc/metricstream/kafka-sasl/password".into()
            )));
            assert!(files.contains(&(
                "web-kafka-credentials".into(),
                "ca.crt".into(),
                "/etc/metricstream/kafka-ca/ca.crt".into()
            )));
        }
    }

    #[test]
    fn ingest_tls_and_the_rate_limit_share_reach_the_ingest() {
        let mut stream = file_stream();
        stream.spec.ingest.replicas = 3;
        stream.spec.ingest.tls_secret_ref = Some(crate::crd::SecretRef {
            name: "web-ingest-tls".into(),
        });
        stream.spec.ingest.rate_limit = Some(crate::crd::RateLimitSpec {
            requests_per_second: 300,
            burst: Some(600),
        });
        let desired = built(&stream);
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(
            env["METRICSTREAM_TLS_CERT_FILE"],
            "/etc/metricstream/ingest-tls/tls.crt"
        );
        assert_eq!(
            env["METRICSTREAM_TLS_KEY_FILE"],
            "/etc/metricstream/ingest-tls/tls.key"
        );
        assert_eq!(env["METRICSTREAM_RATE_LIMIT_PER_SECOND"], "300");
        assert_eq!(env["METRICSTREAM_RATE_LIMIT_BURST"], "600");
        assert_eq!(env["METRICSTREAM_RATE_LIMIT_REPLICAS"], "3");
        let ingest = deployment(&desired, "web-ingest");
        let pod = pod_spec(ingest);
        let tls = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "ingest-tls")
            .and_then(|v| v.secret.as_ref())
            .expect("the TLS Secret volume");
        assert_eq!(tls.secret_name.as_deref(), Some("web-ingest-tls"));
        let keys: Vec<&str> = tls.items.iter().flatten().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["tls.crt", "tls.key"]);
        let consumer = deployment(&desired, "web-consumer");
        assert!(
            pod_spec(consumer)
                .volumes
                .iter()
                .flatten()
                .all(|v| v.name != "ingest-tls"),
            "the consumer does not get the ingest's key"
        );
    }

    #[test]
    fn copied_credentials_hash_changes_with_any_byte() {
        let data = |password: &str| {
            BTreeMap::from([(
                CREDENTIALS_PASSWORD_KEY.to_owned(),
                ByteString(password.as_bytes().to_vec()),
            )])
        };
        assert_eq!(credentials_hash(&data("a")), credentials_hash(&data("a")));
        assert_ne!(credentials_hash(&data("a")), credentials_hash(&data("b")));
        assert!(!credentials_hash(&data("secret")).contains("secret"));
    }

    #[test]
    fn everything_carries_the_standard_labels() {
        let desired = built(&file_stream());
        let mut all: Vec<&ObjectMeta> = vec![&desired.config_map.metadata];
        all.extend(desired.pvcs.iter().map(|p| &p.metadata));
        all.extend(desired.services.iter().map(|s| &s.metadata));
        all.extend(desired.deployments.iter().map(|d| &d.metadata));
        all.extend(desired.network_policies.iter().map(|n| &n.metadata));
        let kafka = built(&kafka_stream(TopicManagement::Admin));
        all.extend(kafka.disruption_budgets.iter().map(|b| &b.metadata));
        assert_eq!(all.len(), 1 + 2 + 1 + 2 + 2 + 1, "every kind is covered");
        for meta in all {
            let l = meta.labels.as_ref().expect("labels");
            assert_eq!(l[labels::NAME], "metricstream");
            assert_eq!(l[labels::INSTANCE], "web");
            assert_eq!(l[labels::MANAGED_BY], "metricstream-operator");
            assert_eq!(l[labels::STREAM], "web");
            assert!(l.contains_key(labels::COMPONENT));
            assert_eq!(meta.namespace.as_deref(), Some("apps"));
        }
    }

    #[test]
    fn the_ingest_service_names_its_ports() {
        let desired = built(&file_stream());
        let service = &desired.services[0];
        assert_eq!(service.metadata.name.as_deref(), Some("web-ingest"));
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports");
        let named: Vec<_> = ports
            .iter()
            .map(|p| (p.name.clone().expect("name"), p.port))
            .collect();
        assert_eq!(
            named,
            [("http".to_owned(), 8080), ("admin".to_owned(), 9090)]
        );
    }

    #[test]
    fn the_tokens_secret_is_mounted_read_only_into_ingest_only() {
        let desired = built(&kafka_stream(TopicManagement::Strimzi));
        let ingest = pod_spec(deployment(&desired, "web-ingest"));
        let secret = ingest
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find_map(|v| v.secret.as_ref())
            .expect("secret volume");
        assert_eq!(secret.secret_name.as_deref(), Some("web-tokens"));
        let mount = ingest.containers[0]
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == "tokens")
            .expect("mount");
        assert_eq!(mount.read_only, Some(true));
        assert_eq!(mount.mount_path, TOKENS_MOUNT);
        let consumer = pod_spec(deployment(&desired, "web-consumer"));
        assert!(
            consumer
                .volumes
                .as_ref()
                .expect("volumes")
                .iter()
                .all(|v| v.secret.is_none())
        );
    }

    #[test]
    fn the_strimzi_topic_lives_in_the_kafka_namespace_without_an_owner() {
        let desired = built(&kafka_stream(TopicManagement::Strimzi));
        let DesiredTopic::Strimzi(topic) = &desired.topic else {
            panic!("expected a KafkaTopic, got {:?}", desired.topic);
        };
        assert_eq!(topic.metadata.namespace.as_deref(), Some("kafka"));
        assert_eq!(
            topic.metadata.name.as_deref(),
            Some("metricstream.apps.web")
        );
        assert!(topic.metadata.owner_references.is_none());
        let l = topic.metadata.labels.as_ref().expect("labels");
        assert_eq!(l[labels::STRIMZI_CLUSTER], "my-cluster");
        assert_eq!(l[labels::OWNER_NAMESPACE], "apps");
        assert_eq!(l[labels::OWNER_NAME], "web");
        assert_eq!(l[labels::MANAGED_BY], "metricstream-operator");
        assert_eq!(topic.spec.topic_name.as_deref(), Some("metrics-web"));
        assert_eq!(topic.spec.partitions, Some(4));
        assert_eq!(topic.spec.replicas, Some(1));
        assert_eq!(
            topic.spec.config["retention.ms"],
            serde_json::json!("604800000")
        );
        let json = serde_json::to_value(topic.as_ref()).expect("json");
        assert_eq!(json["apiVersion"], "kafka.strimzi.io/v1");
        assert_eq!(json["kind"], "KafkaTopic");
    }

    #[test]
    fn kafka_topic_names_are_sanitized_and_shortened_without_collisions() {
        assert_eq!(kafka_topic_name("apps", "web"), "metricstream.apps.web");
        let long_ns = "n".repeat(40);
        let a = kafka_topic_name(&long_ns, &"a".repeat(50));
        let b = kafka_topic_name(&long_ns, &format!("{}b", "a".repeat(49)));
        for name in [&a, &b] {
            assert!(name.len() <= MAX_TOPIC_OBJECT_NAME, "{name}");
            assert!(crate::reconcile::validate::is_dns_subdomain(name), "{name}");
        }
        assert_ne!(a, b);
        let odd = kafka_topic_name("apps", "We_b");
        assert!(crate::reconcile::validate::is_dns_subdomain(&odd), "{odd}");
        assert_ne!(odd, kafka_topic_name("apps", "we-b"));
    }
}
