//! Validate (pure): a `MetricStream` as read from the API server → a [`ValidatedStream`] that
//! carries every decision later steps need, or an [`InvalidSpec`] naming what is wrong.
//!
//! The CRD's schema and CEL rules already reject most mistakes at admission; this step repeats
//! the ones later steps rely on (an older CRD may be installed) and adds what CEL cannot see:
//! quantity syntax, names that would make child names too long.

use std::collections::BTreeMap;

use kube::ResourceExt;
use metricstream_backend::{MAX_PARTITIONS, check_group_name};

use crate::labels::{is_dns_label, is_dns_subdomain};

mod quantity;
mod sink;
mod spill;
pub use quantity::parse_quantity;
pub use sink::{DEFAULT_TOKEN_KEY, InvalidSink, RemoteWritePlan, SinkPlan};
pub use spill::{InvalidSpill, MAX_SPILL_NAME_LEN, SPILL_FILL_PERCENT, SpillPlan};

use crate::crd::{
    AutoscalingSpec, Backend, ClientLimitsSpec, DeletionPolicy, Durability, MetricStream, SaslType,
    SecretKeyRef, TopicManagement,
};

/// Longest MetricStream name: its ingest Service `<name>-ingest` must be a 63-character DNS
/// label, and the name is also a label value.
pub const MAX_NAME_LEN: usize = 63 - "-ingest".len();

/// A MetricStream whose spec the operator can act on.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedStream {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub partitions: i32,
    pub backend: ValidatedBackend,
    pub ingest: IngestSettings,
    pub consumer: ConsumerSettings,
    pub deletion_policy: DeletionPolicy,
    /// `spec.image`, when set.
    pub image: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ValidatedBackend {
    File {
        storage: String,
        storage_class: Option<String>,
        durability: Durability,
    },
    Kafka(Box<KafkaTopicPlan>),
}

/// The topic a Kafka-backed stream uses and who manages it.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaTopicPlan {
    pub bootstrap_servers: String,
    /// The effective topic: `spec.kafka.topic` or `metricstream.<namespace>.<name>`.
    pub topic: String,
    pub replication_factor: i32,
    pub config: BTreeMap<String, String>,
    pub management: TopicMode,
    pub security: KafkaSecurityPlan,
}

/// How the workloads (and the operator's admin client) secure their Kafka connections.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KafkaSecurityPlan {
    /// TLS and where its CA comes from; `None`: plaintext.
    pub tls: Option<CaSource>,
    /// SASL SCRAM; `None`: no authentication.
    pub sasl: Option<SaslPlan>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CaSource {
    /// The workloads' system trust store.
    SystemRoots,
    /// A key of a Secret in the stream's namespace.
    Secret { name: String, key: String },
    /// The Strimzi cluster CA (`<cluster>-cluster-ca-cert`, key `ca.crt`, in the Kafka
    /// namespace), copied by the operator into the stream's credentials Secret.
    StrimziClusterCa,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SaslPlan {
    pub mechanism: SaslType,
    pub username: String,
    pub password: PasswordSource,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PasswordSource {
    /// A key of a Secret in the stream's namespace.
    Secret { name: String, key: String },
    /// The password Strimzi's User Operator generated for the KafkaUser the operator created,
    /// copied into the stream's credentials Secret.
    StrimziUser,
}

impl KafkaSecurityPlan {
    /// Whether the operator copies anything from the Kafka namespace into the stream's
    /// credentials Secret.
    pub fn copies_credentials(&self) -> bool {
        matches!(self.tls, Some(CaSource::StrimziClusterCa))
            || matches!(
                &self.sasl,
                Some(SaslPlan {
                    password: PasswordSource::StrimziUser,
                    ..
                })
            )
    }
}

/// Default keys of the Secrets a stream references.
pub const DEFAULT_CA_KEY: &str = "ca.crt";
pub const DEFAULT_PASSWORD_KEY: &str = "password";

#[derive(Clone, Debug, PartialEq)]
pub enum TopicMode {
    /// A KafkaTopic in the Strimzi cluster's namespace.
    Strimzi { cluster: String, namespace: String },
    /// Created and grown by the operator through the Kafka admin API.
    Admin,
    /// Someone else's: only verified.
    External,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IngestSettings {
    pub replicas: i32,
    pub auth_secret: Option<String>,
    pub max_body_bytes: i64,
    pub tls_secret: Option<String>,
    /// (requests per second, burst) for the whole stream.
    pub rate_limit: Option<(i32, Option<i32>)>,
    /// Per-client caps: active series (per pod), and (samples per second, burst) for the whole
    /// stream.
    pub max_active_series: Option<i32>,
    pub sample_rate: Option<(i32, Option<i32>)>,
    /// The spill (Kafka backend only): the ingest is then a StatefulSet with a volume per pod.
    pub spill: Option<SpillPlan>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsumerSettings {
    pub group: String,
    /// `spec.consumer.replicas`, or the autoscaler's decision when it scales the consumers.
    pub replicas: i32,
    pub autoscaling: Option<AutoscalingSpec>,
    pub sink_storage: String,
    pub storage_class: Option<String>,
    pub sink: SinkPlan,
    /// Most metrics per second per consumer pod (`spec.consumer.sink.rateLimit`).
    pub sink_rate_limit: Option<i64>,
}

impl ValidatedStream {
    pub fn kafka(&self) -> Option<&KafkaTopicPlan> {
        match &self.backend {
            ValidatedBackend::Kafka(plan) => Some(plan),
            ValidatedBackend::File { .. } => None,
        }
    }

    /// True when something outside ownerReferences' reach must be cleaned up on deletion: a
    /// KafkaTopic in another namespace (deleted or released per policy), or an admin-API topic
    /// the policy says to delete.
    pub fn needs_finalizer(&self) -> bool {
        match self.kafka().map(|plan| &plan.management) {
            Some(TopicMode::Strimzi { .. }) => true,
            Some(TopicMode::Admin) => self.deletion_policy == DeletionPolicy::Delete,
            Some(TopicMode::External) | None => false,
        }
    }
}

/// Why a spec cannot be acted on. Shown to users in the Ready condition and a Warning Event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("the object has no {0}")]
    MissingMetadata(&'static str),
    #[error(
        "name {name:?} is not usable: it must be a DNS label (lowercase letters, digits, '-', starting with a letter) of at most {MAX_NAME_LEN} characters, as `<name>-ingest` names a Service"
    )]
    BadName { name: String },
    #[error("spec.partitions is {0}; it must be in 1..={MAX_PARTITIONS}")]
    PartitionsOutOfRange(i32),
    #[error("spec.backend is {0} but spec.{0} is missing")]
    MissingBackendSettings(&'static str),
    #[error("spec.kafka.topicManagement is strimzi but spec.kafka.strimzi is missing")]
    MissingStrimziRef,
    #[error("spec.kafka.bootstrapServers is empty")]
    NoBootstrapServers,
    #[error(
        "spec.kafka.topic {0:?} is not a Kafka topic name (1..=249 of letters, digits, '.', '_', '-'; not '.' or '..')"
    )]
    BadTopic(String),
    #[error("{field} {value:?} is not a Kubernetes quantity greater than zero (e.g. 5Gi)")]
    BadQuantity { field: &'static str, value: String },
    #[error("{field} is {value}; it must be at least {min}")]
    TooSmall {
        field: &'static str,
        value: i64,
        min: i64,
    },
    #[error("{field} {value:?} is empty or not a valid name")]
    BadReference { field: &'static str, value: String },
    #[error("spec.consumer.group {0:?}: {1}")]
    BadGroup(String, String),
    #[error("spec.kafka.config has an empty key")]
    EmptyConfigKey,
    #[error(
        "spec.kafka.authentication cannot be set with spec.kafka.strimzi.createUser: the operator authenticates the user it creates"
    )]
    AuthenticationWithCreatedUser,
    #[error(transparent)]
    Sink(#[from] InvalidSink),
    #[error(transparent)]
    Spill(#[from] InvalidSpill),
}

fn security_plan(
    kafka: &crate::crd::KafkaSpec,
    management: &TopicMode,
    namespace: &str,
    name: &str,
) -> Result<KafkaSecurityPlan, InvalidSpec> {
    let strimzi = matches!(management, TopicMode::Strimzi { .. });
    let create_user = strimzi && kafka.strimzi.as_ref().is_some_and(|s| s.create_user);
    let secret_key = |field: &'static str, reference: &SecretKeyRef, default_key: &str| {
        check_reference(field, &reference.name)?;
        Ok::<_, InvalidSpec>((
            reference.name.clone(),
            reference
                .key
                .clone()
                .unwrap_or_else(|| default_key.to_owned()),
        ))
    };
    let tls = match &kafka.tls {
        None => None,
        Some(tls) => Some(match &tls.ca_secret_ref {
            Some(reference) => {
                let (name, key) =
                    secret_key("spec.kafka.tls.caSecretRef.name", reference, DEFAULT_CA_KEY)?;
                CaSource::Secret { name, key }
            }
            None if strimzi => CaSource::StrimziClusterCa,
            None => CaSource::SystemRoots,
        }),
    };
    let sasl = match (&kafka.authentication, create_user) {
        (Some(_), true) => return Err(InvalidSpec::AuthenticationWithCreatedUser),
        (None, true) => Some(SaslPlan {
            mechanism: SaslType::ScramSha512,
            username: crate::labels::kafka_user_name(namespace, name),
            password: PasswordSource::StrimziUser,
        }),
        (Some(auth), false) => {
            if auth.username.trim().is_empty() {
                return Err(InvalidSpec::BadReference {
                    field: "spec.kafka.authentication.username",
                    value: auth.username.clone(),
                });
            }
            let (name, key) = secret_key(
                "spec.kafka.authentication.passwordSecretRef.name",
                &auth.password_secret_ref,
                DEFAULT_PASSWORD_KEY,
            )?;
            Some(SaslPlan {
                mechanism: auth.type_,
                username: auth.username.clone(),
                password: PasswordSource::Secret { name, key },
            })
        }
        (None, false) => None,
    };
    Ok(KafkaSecurityPlan { tls, sasl })
}

/// Checks `stream` and derives everything the build step needs.
pub fn validate(stream: &MetricStream) -> Result<ValidatedStream, InvalidSpec> {
    let name = stream.name_any();
    let namespace = stream
        .namespace()
        .ok_or(InvalidSpec::MissingMetadata("namespace"))?;
    let uid = stream.uid().ok_or(InvalidSpec::MissingMetadata("uid"))?;
    if !is_dns_label(&name)
        || name.len() > MAX_NAME_LEN
        || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return Err(InvalidSpec::BadName { name });
    }
    let spec = &stream.spec;
    if !(1..=MAX_PARTITIONS as i32).contains(&spec.partitions) {
        return Err(InvalidSpec::PartitionsOutOfRange(spec.partitions));
    }

    let backend = match spec.backend {
        Backend::File => {
            let file = spec
                .file
                .as_ref()
                .ok_or(InvalidSpec::MissingBackendSettings("file"))?;
            check_quantity("spec.file.storage", &file.storage)?;
            if let Some(class) = &file.storage_class_name {
                check_reference("spec.file.storageClassName", class)?;
            }
            ValidatedBackend::File {
                storage: file.storage.clone(),
                storage_class: file.storage_class_name.clone(),
                durability: file.durability,
            }
        }
        Backend::Kafka => {
            let kafka = spec
                .kafka
                .as_ref()
                .ok_or(InvalidSpec::MissingBackendSettings("kafka"))?;
            let servers = kafka.bootstrap_servers.trim();
            if servers.split(',').all(|server| server.trim().is_empty()) {
                return Err(InvalidSpec::NoBootstrapServers);
            }
            let topic = kafka
                .topic
                .clone()
                .unwrap_or_else(|| default_topic(&namespace, &name));
            if !is_kafka_topic(&topic) {
                return Err(InvalidSpec::BadTopic(topic));
            }
            if kafka.replication_factor < 1 {
                return Err(InvalidSpec::TooSmall {
                    field: "spec.kafka.replicationFactor",
                    value: kafka.replication_factor.into(),
                    min: 1,
                });
            }
            if kafka.config.keys().any(|key| key.trim().is_empty()) {
                return Err(InvalidSpec::EmptyConfigKey);
            }
            let management = match kafka.topic_management {
                TopicManagement::Strimzi => {
                    let strimzi = kafka
                        .strimzi
                        .as_ref()
                        .ok_or(InvalidSpec::MissingStrimziRef)?;
                    check_reference("spec.kafka.strimzi.cluster", &strimzi.cluster)?;
                    if !is_dns_label(&strimzi.namespace) {
                        return Err(InvalidSpec::BadReference {
                            field: "spec.kafka.strimzi.namespace",
                            value: strimzi.namespace.clone(),
                        });
                    }
                    TopicMode::Strimzi {
                        cluster: strimzi.cluster.clone(),
                        namespace: strimzi.namespace.clone(),
                    }
                }
                TopicManagement::Admin => TopicMode::Admin,
                TopicManagement::External => TopicMode::External,
            };
            let security = security_plan(kafka, &management, &namespace, &name)?;
            ValidatedBackend::Kafka(Box::new(KafkaTopicPlan {
                bootstrap_servers: servers.to_owned(),
                topic,
                replication_factor: kafka.replication_factor,
                config: kafka.config.clone(),
                management,
                security,
            }))
        }
    };

    let ingest = &spec.ingest;
    check_min("spec.ingest.replicas", ingest.replicas.into(), 0)?;
    check_min("spec.ingest.maxBodyBytes", ingest.max_body_bytes, 1024)?;
    if let Some(secret) = &ingest.auth_secret_ref {
        check_reference("spec.ingest.authSecretRef.name", &secret.name)?;
    }
    if let Some(secret) = &ingest.tls_secret_ref {
        check_reference("spec.ingest.tlsSecretRef.name", &secret.name)?;
    }
    if let Some(limit) = &ingest.rate_limit {
        check_min(
            "spec.ingest.rateLimit.requestsPerSecond",
            limit.requests_per_second.into(),
            1,
        )?;
        if let Some(burst) = limit.burst {
            check_min("spec.ingest.rateLimit.burst", burst.into(), 1)?;
        }
    }
    let client_limits = ingest.client_limits.clone().unwrap_or(ClientLimitsSpec {
        max_active_series: None,
        samples_per_second: None,
        samples_burst: None,
    });
    for (field, value) in [
        (
            "spec.ingest.clientLimits.maxActiveSeries",
            client_limits.max_active_series,
        ),
        (
            "spec.ingest.clientLimits.samplesPerSecond",
            client_limits.samples_per_second,
        ),
        (
            "spec.ingest.clientLimits.samplesBurst",
            client_limits.samples_burst,
        ),
    ] {
        if let Some(value) = value {
            check_min(field, value.into(), 1)?;
        }
    }
    let spill = spill::spill_plan(spec, &name)?;
    let consumer = &spec.consumer;
    check_min("spec.consumer.replicas", consumer.replicas.into(), 0)?;
    if let Some(autoscaling) = &consumer.autoscaling {
        check_min(
            "spec.consumer.autoscaling.minReplicas",
            autoscaling.min_replicas.into(),
            1,
        )?;
        check_min(
            "spec.consumer.autoscaling.maxReplicas",
            autoscaling.max_replicas.into(),
            autoscaling.min_replicas.into(),
        )?;
        check_min(
            "spec.consumer.autoscaling.targetLagRecords",
            autoscaling.target_lag_records,
            1,
        )?;
    }
    if let Err(reason) = check_group_name(&consumer.group) {
        return Err(InvalidSpec::BadGroup(consumer.group.clone(), reason));
    }
    check_quantity("spec.consumer.sinkStorage", &consumer.sink_storage)?;
    if let Some(class) = &consumer.storage_class_name {
        check_reference("spec.consumer.storageClassName", class)?;
    }
    let sink = sink::sink_plan(&consumer.sink, is_dns_subdomain)?;
    if let Some(limit) = consumer.sink.rate_limit {
        check_min("spec.consumer.sink.rateLimit", limit, 1)?;
    }
    if let Some(image) = &spec.image
        && (image.trim().is_empty() || image.chars().any(char::is_whitespace))
    {
        return Err(InvalidSpec::BadReference {
            field: "spec.image",
            value: image.clone(),
        });
    }

    Ok(ValidatedStream {
        name,
        namespace,
        uid,
        generation: stream.metadata.generation,
        partitions: spec.partitions,
        backend,
        ingest: IngestSettings {
            replicas: ingest.replicas,
            auth_secret: ingest.auth_secret_ref.as_ref().map(|s| s.name.clone()),
            tls_secret: ingest.tls_secret_ref.as_ref().map(|s| s.name.clone()),
            rate_limit: ingest
                .rate_limit
                .as_ref()
                .map(|limit| (limit.requests_per_second, limit.burst)),
            max_active_series: client_limits.max_active_series,
            sample_rate: client_limits
                .samples_per_second
                .map(|per_second| (per_second, client_limits.samples_burst)),
            max_body_bytes: ingest.max_body_bytes,
            spill,
        },
        consumer: ConsumerSettings {
            group: consumer.group.clone(),
            replicas: consumer.replicas,
            autoscaling: consumer.autoscaling.clone(),
            sink_storage: consumer.sink_storage.clone(),
            storage_class: consumer.storage_class_name.clone(),
            sink,
            sink_rate_limit: consumer.sink.rate_limit,
        },
        deletion_policy: spec.deletion_policy,
        image: spec.image.clone(),
    })
}

/// The topic of a stream that names none.
pub fn default_topic(namespace: &str, name: &str) -> String {
    format!("metricstream.{namespace}.{name}")
}

fn check_min(field: &'static str, value: i64, min: i64) -> Result<(), InvalidSpec> {
    if value < min {
        return Err(InvalidSpec::TooSmall { field, value, min });
    }
    Ok(())
}

fn check_reference(field: &'static str, value: &str) -> Result<(), InvalidSpec> {
    if !is_dns_subdomain(value) {
        return Err(InvalidSpec::BadReference {
            field,
            value: value.to_owned(),
        });
    }
    Ok(())
}

fn check_quantity(field: &'static str, value: &str) -> Result<(), InvalidSpec> {
    if parse_quantity(value).is_some_and(|bytes| bytes > 0.0) {
        Ok(())
    } else {
        Err(InvalidSpec::BadQuantity {
            field,
            value: value.to_owned(),
        })
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn is_kafka_topic(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.chars().all(is_topic_char)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fixtures::{file_stream, kafka_stream};

    #[test]
    fn a_file_stream_validates_with_its_settings() {
        let validated = validate(&file_stream()).expect("valid");
        assert_eq!(validated.name, "web");
        assert_eq!(validated.namespace, "apps");
        assert_eq!(validated.partitions, 4);
        assert_eq!(
            validated.backend,
            ValidatedBackend::File {
                storage: "5Gi".into(),
                storage_class: None,
                durability: Durability::Batch
            }
        );
        assert!(!validated.needs_finalizer());
    }

    #[test]
    fn the_default_topic_is_derived_from_namespace_and_name() {
        let mut stream = kafka_stream(TopicManagement::Admin);
        stream.spec.kafka.as_mut().expect("kafka").topic = None;
        let validated = validate(&stream).expect("valid");
        assert_eq!(
            validated.kafka().expect("kafka").topic,
            "metricstream.apps.web"
        );
    }

    #[test]
    fn the_finalizer_is_needed_only_for_what_owner_references_cannot_collect() {
        let cases = [
            (TopicManagement::Strimzi, DeletionPolicy::Retain, true),
            (TopicManagement::Strimzi, DeletionPolicy::Delete, true),
            (TopicManagement::Admin, DeletionPolicy::Retain, false),
            (TopicManagement::Admin, DeletionPolicy::Delete, true),
            (TopicManagement::External, DeletionPolicy::Delete, false),
        ];
        for (mode, policy, expected) in cases {
            let mut stream = kafka_stream(mode);
            stream.spec.deletion_policy = policy;
            let validated = validate(&stream).expect("valid");
            assert_eq!(validated.needs_finalizer(), expected, "{mode:?} {policy:?}");
        }
    }

    #[test]
    fn tls_without_a_ca_uses_the_strimzi_cluster_ca_or_the_system_roots() {
        for (management, expected) in [
            (TopicManagement::Strimzi, CaSource::StrimziClusterCa),
            (TopicManagement::Admin, CaSource::SystemRoots),
            (TopicManagement::External, CaSource::SystemRoots),
        ] {
            let mut stream = kafka_stream(management);
            stream.spec.kafka.as_mut().expect("kafka").tls =
                Some(crate::crd::KafkaTlsSpec::default());
            let validated = validate(&stream).expect("valid");
            let plan = validated.kafka().expect("kafka");
            assert_eq!(plan.security.tls, Some(expected));
            assert_eq!(plan.security.sasl, None);
        }
    }

    #[test]
    fn create_user_is_only_for_strimzi_and_excludes_given_credentials() {
        let mut stream = kafka_stream(TopicManagement::Admin);
        stream
            .spec
            .kafka
            .as_mut()
            .and_then(|k| k.strimzi.as_mut())
            .expect("strimzi")
            .create_user = true;
        let validated = validate(&stream).expect("valid");
        assert_eq!(
            validated.kafka().expect("kafka").security.sasl,
            None,
            "createUser means nothing without topicManagement strimzi"
        );

        let mut stream = kafka_stream(TopicManagement::Strimzi);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.strimzi.as_mut().expect("strimzi").create_user = true;
        kafka.authentication = Some(crate::crd::KafkaAuthenticationSpec {
            type_: SaslType::ScramSha512,
            username: "someone".into(),
            password_secret_ref: SecretKeyRef {
                name: "pw".into(),
                key: None,
            },
        });
        assert_eq!(
            validate(&stream),
            Err(InvalidSpec::AuthenticationWithCreatedUser)
        );
    }

    #[test]
    fn invalid_specs_are_named() {
        type Mutation = fn(&mut MetricStream);
        let cases: Vec<(&str, Mutation, InvalidSpec)> = vec![
            (
                "strimzi without a cluster reference",
                |s| s.spec.kafka.as_mut().expect("kafka").strimzi = None,
                InvalidSpec::MissingStrimziRef,
            ),
            (
                "kafka backend without kafka settings",
                |s| s.spec.kafka = None,
                InvalidSpec::MissingBackendSettings("kafka"),
            ),
            (
                "empty bootstrap servers",
                |s| s.spec.kafka.as_mut().expect("kafka").bootstrap_servers = " , ".into(),
                InvalidSpec::NoBootstrapServers,
            ),
            (
                "a bad topic",
                |s| s.spec.kafka.as_mut().expect("kafka").topic = Some("a topic".into()),
                InvalidSpec::BadTopic("a topic".into()),
            ),
            (
                "a sink size that is no quantity",
                |s| s.spec.consumer.sink_storage = "lots".into(),
                InvalidSpec::BadQuantity {
                    field: "spec.consumer.sinkStorage",
                    value: "lots".into(),
                },
            ),
            (
                "a zero sink size",
                |s| s.spec.consumer.sink_storage = "0Gi".into(),
                InvalidSpec::BadQuantity {
                    field: "spec.consumer.sinkStorage",
                    value: "0Gi".into(),
                },
            ),
            (
                "too many partitions",
                |s| s.spec.partitions = 2000,
                InvalidSpec::PartitionsOutOfRange(2000),
            ),
            (
                "a bad consumer group",
                |s| s.spec.consumer.group = "a/b".into(),
                InvalidSpec::BadGroup(
                    "a/b".into(),
                    "'/' is not allowed: use letters, digits, '.', '_' and '-'".into(),
                ),
            ),
            (
                "a consumer group naming the queue's parent directory",
                |s| s.spec.consumer.group = "..".into(),
                InvalidSpec::BadGroup("..".into(), "must not be '.' or '..'".into()),
            ),
            (
                "a remote-write sink without its settings",
                |s| s.spec.consumer.sink.type_ = crate::crd::SinkType::RemoteWrite,
                InvalidSpec::Sink(InvalidSink::MissingRemoteWrite),
            ),
            (
                "an image with spaces",
                |s| s.spec.image = Some("my image".into()),
                InvalidSpec::BadReference {
                    field: "spec.image",
                    value: "my image".into(),
                },
            ),
        ];
        for (what, mutate, expected) in cases {
            let mut stream = kafka_stream(TopicManagement::Strimzi);
            mutate(&mut stream);
            assert_eq!(validate(&stream), Err(expected), "{what}");
        }
    }

    #[test]
    fn spill_reaches_the_ingest_settings_of_a_kafka_stream_only() {
        let spill = crate::crd::SpillSpec {
            enabled: true,
            ..Default::default()
        };
        let mut stream = kafka_stream(TopicManagement::Admin);
        stream.spec.kafka.as_mut().expect("kafka").spill = Some(spill.clone());
        let plan = validate(&stream).expect("valid").ingest.spill.expect("on");
        assert_eq!((plan.size.as_str(), plan.max_bytes), ("1Gi", 966_367_641));
        stream.spec.backend = Backend::File;
        stream.spec.file = file_stream().spec.file;
        assert_eq!(
            validate(&stream),
            Err(InvalidSpec::Spill(InvalidSpill::NotKafka))
        );
    }

    #[test]
    fn a_file_stream_needs_its_file_settings_and_a_valid_size() {
        let mut stream = file_stream();
        stream.spec.file.as_mut().expect("file").storage = "5 Gi".into();
        assert!(matches!(
            validate(&stream),
            Err(InvalidSpec::BadQuantity {
                field: "spec.file.storage",
                ..
            })
        ));
        stream.spec.file = None;
        assert_eq!(
            validate(&stream),
            Err(InvalidSpec::MissingBackendSettings("file"))
        );
    }

    #[test]
    fn names_too_long_for_child_services_are_rejected() {
        let mut stream = file_stream();
        stream.metadata.name = Some("a".repeat(MAX_NAME_LEN));
        assert!(validate(&stream).is_ok());
        stream.metadata.name = Some("a".repeat(MAX_NAME_LEN + 1));
        assert!(matches!(
            validate(&stream),
            Err(InvalidSpec::BadName { .. })
        ));
        stream.metadata.name = Some("1abc".into());
        assert!(matches!(
            validate(&stream),
            Err(InvalidSpec::BadName { .. })
        ));
    }
}
