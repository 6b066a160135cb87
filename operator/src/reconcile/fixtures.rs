//! Test fixtures: MetricStreams as the API server would hand them to the reconciler.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::crd::{
    Backend, ConsumerSpec, DeletionPolicy, FileSpec, IngestSpec, KafkaSpec, MetricStream,
    MetricStreamSpec, RemoteWriteSpec, SecretKeyRef, SecretRef, SinkSpec, SinkType, StrimziRef,
    TopicManagement,
};

fn stream(spec: MetricStreamSpec) -> MetricStream {
    let mut stream = MetricStream::new("web", spec);
    stream.metadata = ObjectMeta {
        name: Some("web".into()),
        namespace: Some("apps".into()),
        uid: Some("uid-1".into()),
        generation: Some(3),
        ..Default::default()
    };
    stream
}

/// `web` in `apps`: file backend, 4 partitions, defaults elsewhere.
pub fn file_stream() -> MetricStream {
    stream(MetricStreamSpec {
        backend: Backend::File,
        partitions: 4,
        kafka: None,
        file: Some(FileSpec {
            storage: "5Gi".into(),
            storage_class_name: None,
            durability: Default::default(),
        }),
        ingest: IngestSpec::default(),
        consumer: ConsumerSpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        image: None,
    })
}

/// `web` in `apps`: Kafka backend on topic `metrics-web`, with a tokens Secret.
pub fn kafka_stream(management: TopicManagement) -> MetricStream {
    stream(MetricStreamSpec {
        backend: Backend::Kafka,
        partitions: 4,
        kafka: Some(KafkaSpec {
            bootstrap_servers: "my-cluster-kafka-bootstrap.kafka:9092".into(),
            topic: Some("metrics-web".into()),
            replication_factor: 1,
            topic_management: management,
            tls: None,
            authentication: None,
            spill: None,
            strimzi: Some(StrimziRef {
                create_user: false,
                cluster: "my-cluster".into(),
                namespace: "kafka".into(),
            }),
            config: BTreeMap::from([("retention.ms".to_owned(), "604800000".to_owned())]),
        }),
        file: None,
        ingest: IngestSpec {
            auth_secret_ref: Some(SecretRef {
                name: "web-tokens".into(),
            }),
            ..Default::default()
        },
        consumer: ConsumerSpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        image: None,
    })
}

/// `web` in `apps`: Kafka backend (admin topic), its consumers writing to VictoriaMetrics over
/// remote write with a bearer token (Secret `vm-token`, key `bearer`).
pub fn remote_write_stream() -> MetricStream {
    let mut stream = kafka_stream(TopicManagement::Admin);
    stream.spec.consumer.sink = SinkSpec {
        type_: SinkType::RemoteWrite,
        remote_write: Some(RemoteWriteSpec {
            url: "http://victoriametrics.monitoring:8428/api/v1/write".into(),
            bearer_token_secret_ref: Some(SecretKeyRef {
                name: "vm-token".into(),
                key: Some("bearer".into()),
            }),
            basic_auth: None,
            tls: None,
            max_samples_per_request: 2000,
            concurrency: 8,
            protocol: Default::default(),
            timeout_seconds: 10,
        }),
        rate_limit: None,
    };
    stream
}
