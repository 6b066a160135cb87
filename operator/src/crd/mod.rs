//! The `MetricStream` custom resource (`metricstream.dev/v1alpha1`): what a user asks for, with
//! the rules the API server itself enforces (CEL), and the status the operator reports.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod autoscaling;
pub use autoscaling::{AutoscalingSpec, AutoscalingStatus, ScalingRules};

/// A metrics ingestion pipeline: an HTTP ingest service and a consumer service on a Kafka topic
/// or a partitioned file queue.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "metricstream.dev",
    version = "v1alpha1",
    kind = "MetricStream",
    namespaced,
    status = "MetricStreamStatus",
    shortname = "mst",
    category = "metricstream",
    printcolumn(name = "Backend", type_ = "string", json_path = ".spec.backend"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Consumers", type_ = "integer", json_path = ".status.consumerReplicas"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.autoscaling.lagRecords"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // An HPA or KEDA drives the consumers through this, when spec.consumer.autoscaling is absent.
    scale(
        spec_replicas_path = ".spec.consumer.replicas",
        status_replicas_path = ".status.consumerReplicas",
        label_selector_path = ".status.consumerSelector"
    ),
    doc = "A metrics ingestion pipeline: HTTP ingest and a consumer on a Kafka topic or a file queue",
    validation = Rule::new("self.spec.backend != 'kafka' || has(self.spec.kafka)")
        .message("spec.kafka is required when spec.backend is kafka"),
    validation = Rule::new("self.spec.backend != 'file' || has(self.spec.file)")
        .message("spec.file is required when spec.backend is file"),
    validation = Rule::new("self.spec.backend != 'file' || !has(self.spec.kafka) || !has(self.spec.kafka.spill) || !has(self.spec.kafka.spill.enabled) || !self.spec.kafka.spill.enabled")
        .message("spec.kafka.spill is for the kafka backend only: the file backend's queue is already on a volume"),
)]
#[serde(rename_all = "camelCase")]
pub struct MetricStreamSpec {
    /// Which queue carries the metrics between ingest and consumer.
    pub backend: Backend,

    /// Partitions of the queue (1..=1024). May grow, never shrink.
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions may grow but never decrease"))]
    // The prose above repeats MAX_PARTITIONS (a doc comment cannot name it); a test checks both.
    #[schemars(range(min = 1, max = metricstream_backend::MAX_PARTITIONS))]
    pub partitions: i32,

    /// Settings of the Kafka backend (required when backend is kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,

    /// Settings of the file backend (required when backend is file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSpec>,

    /// The ingest service.
    #[serde(default)]
    pub ingest: IngestSpec,

    /// The consumer service.
    #[serde(default)]
    pub consumer: ConsumerSpec,

    /// What happens to data (the file queue's volume, the sink's volume, a topic the operator
    /// created) when this resource is deleted or stops using it: `Retain` (default) keeps it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// Workload image override; the operator's `--workload-image` by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kafka,
    File,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Kafka => "kafka",
            Backend::File => "file",
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.topic) || (has(self.topic) && self.topic == oldSelf.topic)")
        .message("kafka.topic cannot be changed or removed once set"),
    validation = Rule::new("self.topicManagement != 'strimzi' || has(self.strimzi)")
        .message("kafka.strimzi is required when topicManagement is strimzi"),
    validation = Rule::new("!has(self.strimzi) || !has(self.strimzi.createUser) || !self.strimzi.createUser || !has(self.authentication)")
        .message("kafka.authentication cannot be set with kafka.strimzi.createUser: the operator authenticates the user it creates"),
)]
pub struct KafkaSpec {
    /// Bootstrap servers, host:port[,host:port...].
    #[schemars(length(min = 1))]
    pub bootstrap_servers: String,

    /// Topic name. Defaults to `metricstream.<namespace>.<name>`; immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249), regex(pattern = r"^[a-zA-Z0-9._-]+$"))]
    pub topic: Option<String>,

    /// Replication factor of the topic when the operator creates it.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 32767))]
    pub replication_factor: i32,

    /// Who creates the topic: `strimzi` (a KafkaTopic for Strimzi's Topic Operator), `admin`
    /// (the operator, through the Kafka admin API), `external` (someone else; only verified).
    #[serde(default)]
    pub topic_management: TopicManagement,

    /// The Strimzi Kafka cluster the KafkaTopic belongs to (with topicManagement strimzi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strimzi: Option<StrimziRef>,

    /// Topic configuration used when the topic is created, e.g. retention.ms.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// TLS to the brokers (the workloads, and the operator with topicManagement admin or
    /// external). Absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTlsSpec>,

    /// SASL SCRAM credentials for the brokers. Absent: no authentication, unless
    /// `strimzi.createUser` makes the operator create a user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<KafkaAuthenticationSpec>,

    /// While Kafka is unreachable the ingest keeps accepting into a spill queue on a volume of
    /// its own, and replays it to Kafka when the cluster is back. Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill: Option<SpillSpec>,
}

/// The ingest's spill: each ingest pod gets its own volume (the ingest becomes a StatefulSet
/// with a volume claim template) that holds the batches it accepted while Kafka was
/// unreachable, until they are replayed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(oldSelf.enabled) && oldSelf.enabled && has(self.enabled) && self.enabled) || (self.size == oldSelf.size && has(self.storageClass) == has(oldSelf.storageClass) && (!has(self.storageClass) || self.storageClass == oldSelf.storageClass))")
        .message("kafka.spill.size and kafka.spill.storageClass cannot change while spill is enabled: the claims of the ingest pods keep what they were made with (see the operator docs: turn spill off, delete the drained claims, turn it on again)"),
)]
pub struct SpillSpec {
    /// Spill when Kafka is unreachable (the ingest is a StatefulSet then).
    #[serde(default)]
    pub enabled: bool,
    /// Size of each ingest pod's spill volume (a Kubernetes quantity). The ingest spills at most
    /// 90 % of it; the rest is room for the file system and for replayed segments not yet
    /// deleted.
    #[serde(default = "default_spill_size")]
    pub size: String,
    /// StorageClass of the spill volumes; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class: Option<String>,
}

impl Default for SpillSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            size: default_spill_size(),
            storage_class: None,
        }
    }
}

fn default_spill_size() -> String {
    "1Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTlsSpec {
    /// Secret in this namespace holding the PEM CA that signed the brokers' certificates. When
    /// absent: with topicManagement strimzi, the Strimzi cluster CA
    /// (`<cluster>-cluster-ca-cert`, copied by the operator); otherwise the system trust store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the MetricStream's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret's data; by default `ca.crt` for a CA, `password` for a password,
    /// `token` for a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaAuthenticationSpec {
    /// The SASL mechanism.
    #[serde(rename = "type", default)]
    pub type_: SaslType,
    /// The SCRAM user name.
    #[schemars(length(min = 1, max = 253))]
    pub username: String,
    /// Secret in this namespace holding the user's password.
    pub password_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SaslType {
    #[default]
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
}

fn default_replication_factor() -> i32 {
    1
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TopicManagement {
    #[default]
    Strimzi,
    Admin,
    External,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrimziRef {
    /// Name of the Strimzi `Kafka` resource (the `strimzi.io/cluster` label of the KafkaTopic).
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// Namespace of the Strimzi Kafka cluster, where its Topic Operator watches KafkaTopics.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// Create a Strimzi `KafkaUser` (SCRAM-SHA-512) with exactly the ACLs the workloads need
    /// (write and read the topic, read the consumer group), and give the workloads its password
    /// (copied from the Secret Strimzi's User Operator makes into this namespace). The Kafka
    /// cluster's listener must use SCRAM-SHA-512 authentication and simple authorization.
    #[serde(default)]
    pub create_user: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileSpec {
    /// Size of the queue's PersistentVolumeClaim.
    #[serde(default = "default_queue_storage")]
    pub storage: String,
    /// StorageClass of the queue's volume; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// When an append is acknowledged: `always` (fsync each), `batch` (group commit), `none`.
    #[serde(default)]
    pub durability: Durability,
}

fn default_queue_storage() -> String {
    "5Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Always,
    #[default]
    Batch,
    None,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Ingest pods.
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Secret whose `tokens` key holds `client_id=token` lines; open mode when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretRef>,
    /// Largest request body in bytes (raw and decompressed).
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1024, max = 67108864))]
    pub max_body_bytes: i64,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`): the ingest port serves HTTPS with it,
    /// reloading the certificate when the Secret changes. Plain HTTP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_ref: Option<SecretRef>,
    /// Per-client request rate limit for the whole stream; each ingest pod enforces its share
    /// (the figures divided by `replicas`, rounded up). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Per-client caps on what a client stores: active series within an hour, and samples per
    /// second for the whole stream (each pod enforces its share). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_limits: Option<ClientLimitsSpec>,
}

impl Default for IngestSpec {
    fn default() -> Self {
        Self {
            replicas: 1,
            auth_secret_ref: None,
            max_body_bytes: default_max_body_bytes(),
            tls_secret_ref: None,
            rate_limit: None,
            client_limits: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientLimitsSpec {
    /// Distinct series a client may write within an hour; samples of new series beyond it are
    /// refused (a partial write), the rest stored. Each pod enforces the whole figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000000))]
    pub max_active_series: Option<i32>,
    /// Samples per second a client may store, across all ingest pods; a request over it is
    /// answered 429 with Retry-After.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub samples_per_second: Option<i32>,
    /// Samples a client may store at once above that rate; the per-second figure when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub samples_burst: Option<i32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Requests per second a client may sustain, across all ingest pods.
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_second: i32,
    /// Requests a client may make at once above that rate; the per-second figure when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub burst: Option<i32>,
}

fn one() -> i32 {
    1
}

fn default_max_body_bytes() -> i64 {
    1024 * 1024
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    #[schemars(length(min = 1))]
    pub name: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || !has(oldSelf.autoscaling) || self.replicas == oldSelf.replicas")
        .message("spec.consumer.replicas cannot change while spec.consumer.autoscaling is set: the operator scales the consumers by their lag (remove autoscaling to scale by hand, or with an HPA or KEDA through the scale subresource)"),
)]
pub struct ConsumerSpec {
    /// Consumer group.
    #[serde(default = "default_group")]
    #[schemars(
        length(min = 1, max = metricstream_backend::MAX_GROUP_LEN),
        regex(pattern = r"^[a-zA-Z0-9._-]+$")
    )]
    pub group: String,
    /// Consumer pods; ignored while `autoscaling` is set (and then it cannot change).
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 1024))]
    pub replicas: i32,
    /// Lag-driven scaling of the consumers by the operator: replicas within `[minReplicas,
    /// maxReplicas]` and never above the partition count. Absent: `replicas`, or whatever an HPA
    /// or KEDA sets through the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Size of the sink's PersistentVolumeClaim: the JSON Lines files of the file sink; with the
    /// remoteWrite sink, the records that fail to decode and the dead letters (data too: the
    /// volume survives restarts).
    #[serde(default = "default_sink_storage")]
    pub sink_storage: String,
    /// StorageClass of the sink's volume; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Where the consumers write the metrics: JSON Lines files on the sink's volume (`file`,
    /// the default) or a time-series store over Prometheus remote write (`remoteWrite`).
    #[serde(default)]
    pub sink: SinkSpec,
}

impl Default for ConsumerSpec {
    fn default() -> Self {
        Self {
            group: default_group(),
            replicas: 1,
            autoscaling: None,
            sink_storage: default_sink_storage(),
            storage_class_name: None,
            sink: SinkSpec::default(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'remoteWrite' || has(self.remoteWrite)")
        .message("consumer.sink.remoteWrite is required when consumer.sink.type is remoteWrite"),
    validation = Rule::new("self.type == 'remoteWrite' || !has(self.remoteWrite)")
        .message("consumer.sink.remoteWrite may only be set when consumer.sink.type is remoteWrite"),
)]
pub struct SinkSpec {
    /// `file` (JSON Lines files on the sink's volume) or `remoteWrite` (a time-series store;
    /// the sink's volume then keeps only the records that fail to decode and the dead letters).
    #[serde(rename = "type", default)]
    pub type_: SinkType,
    /// The store (with type remoteWrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_write: Option<RemoteWriteSpec>,
    /// Most metrics per second each consumer pod writes (both sink types): spares a store a
    /// backlog flushed at full speed. Records wait, never dropped. Unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate_limit: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SinkType {
    #[default]
    File,
    RemoteWrite,
}

/// The remote-write message the consumers send.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum RemoteWriteProtocol {
    /// `prometheus.WriteRequest`: taken by every receiver.
    #[default]
    #[serde(rename = "1.0")]
    V1,
    /// `io.prometheus.write.v2.Request`, with each series' metadata type (Prometheus 3 takes it;
    /// the consumer refuses to count a 2xx from a receiver that does not).
    #[serde(rename = "2.0")]
    V2,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.url.matches('^https?://[^/?#]+')")
        .message("consumer.sink.remoteWrite.url must be an http:// or https:// URL with a host, e.g. http://victoriametrics:8428/api/v1/write"),
    validation = Rule::new("!has(self.bearerTokenSecretRef) || !has(self.basicAuth)")
        .message("consumer.sink.remoteWrite.bearerTokenSecretRef and basicAuth are exclusive: a request carries one Authorization header"),
)]
pub struct RemoteWriteSpec {
    /// The store's remote-write endpoint, e.g. `http://victoriametrics:8428/api/v1/write`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Secret in this namespace holding a bearer token sent with every request (key `token`
    /// by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret_ref: Option<SecretKeyRef>,
    /// HTTP basic authentication; exclusive with bearerTokenSecretRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthSpec>,
    /// TLS to the store (https:// URLs): the CA that signed its certificate. The system trust
    /// store when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RemoteWriteTlsSpec>,
    /// Most samples in one request; a batch is sent as several requests if needed.
    #[serde(default = "default_max_samples_per_request")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_samples_per_request: i32,
    /// The remote-write message: "1.0" (default) or "2.0".
    #[serde(default)]
    pub protocol: RemoteWriteProtocol,
    /// Requests in flight at once per consumer; a batch's partitions are split among them, so
    /// each partition's samples still reach the store in order.
    #[serde(default = "default_remote_write_concurrency")]
    #[schemars(range(min = 1, max = 64))]
    pub concurrency: i32,
    /// Deadline of one request (connect, send, answer), in seconds.
    #[serde(default = "default_remote_write_timeout")]
    #[schemars(range(min = 1, max = 600))]
    pub timeout_seconds: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuthSpec {
    #[schemars(length(min = 1, max = 253))]
    pub username: String,
    /// Secret in this namespace holding the password (key `password` by default).
    pub password_secret_ref: SecretKeyRef,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteWriteTlsSpec {
    /// Secret in this namespace holding the PEM CA (key `ca.crt` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

fn default_max_samples_per_request() -> i32 {
    5000
}

fn default_remote_write_concurrency() -> i32 {
    4
}

fn default_remote_write_timeout() -> i32 {
    30
}

fn default_group() -> String {
    "storage-writer".into()
}

fn default_sink_storage() -> String {
    "1Gi".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What is running, as the operator last observed it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStreamStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `BackendReady`, `IngestAvailable`, `ConsumerAvailable`, `SinkAvailable`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Partitions the workloads are configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    /// The Kafka topic in use (kafka backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Where clients send metrics, inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_endpoint: Option<String>,
    /// Consumer pods that exist (the scale subresource's replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_replicas: Option<i32>,
    /// The consumer pods' label selector (the scale subresource's, for an HPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_selector: Option<String>,
    /// What the autoscaler last measured and decided (with `spec.consumer.autoscaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,
}

/// Conditions merge by `type` under server-side apply.
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    serde_json::from_value(serde_json::json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": { "type": "string", "format": "date-time" },
                "message": { "type": "string" },
                "observedGeneration": { "type": "integer", "format": "int64" },
                "reason": { "type": "string" },
                "status": { "type": "string", "enum": ["True", "False", "Unknown"] },
                "type": { "type": "string" }
            }
        }
    }))
    .expect("a valid literal schema")
}
