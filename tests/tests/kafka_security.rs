//! Kafka over TLS and SASL/SCRAM, against the shared broker's SASL_SSL listener: a round trip
//! through the backend, a wrong password and an unrelated CA refused at once with errors that
//! say so, and the ingest and consumer binaries configured only through their
//! `METRICSTREAM_KAFKA_*` security variables, as a user granted exactly
//! [`workload_acls`] — and nothing once the group ACL is gone.
//!
//! Needs `KAFKA_BOOTSTRAP`, `KAFKA_SECURE_BOOTSTRAP`, `KAFKA_CA_FILE` and `KAFKA_SCRAM_*` (printed
//! by `hack/kafka.sh up`); `make test` starts the broker, exports them and runs these with
//! `--include-ignored`, and they fail when a variable is missing.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use metricstream_backend::kafka::{
    AclResourceType, KafkaAcl, KafkaBackendError, KafkaConsumer, KafkaMetrics, KafkaProducer,
    KafkaSasl, KafkaSecurity, KafkaSettings, KafkaTls, ProducerTuning, SaslMechanism, admin,
    workload_acls,
};
use metricstream_backend::{Partition, PollLimits, QueueConsumer, QueueProducer};
use metricstream_tests::kafka::{SecureKafka, unique_name};
use metricstream_tests::{
    LoadSpec, ServiceSpec, TestDir, assert_settled_exactly_once, run_load, wait_for_sink,
};

/// What "promptly" means: well under the 30 s a client waits for an unreachable cluster.
const PROMPT: Duration = Duration::from_secs(10);

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

/// Settings for `topic` on the SASL_SSL listener as `username`.
fn secure_settings(
    kafka: &SecureKafka,
    topic: &str,
    username: &str,
    password: &str,
    ca_pem: Option<String>,
) -> KafkaSettings {
    KafkaSettings {
        brokers: kafka.bootstrap.clone(),
        topic: topic.to_owned(),
        partitions: 3,
        client_id: "kafka-security-test".into(),
        security: KafkaSecurity {
            tls: Some(KafkaTls { ca_pem }),
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha512,
                username: username.to_owned(),
                password: password.to_owned(),
            }),
        },
        extra: Vec::new(),
    }
}

fn admin_settings(kafka: &SecureKafka, topic: &str) -> KafkaSettings {
    secure_settings(
        kafka,
        topic,
        &kafka.admin_username,
        read(&kafka.admin_password_file).trim(),
        Some(read(&kafka.ca_file)),
    )
}

fn workload_settings(kafka: &SecureKafka, topic: &str) -> KafkaSettings {
    secure_settings(
        kafka,
        topic,
        &kafka.username,
        read(&kafka.password_file).trim(),
        Some(read(&kafka.ca_file)),
    )
}

/// The refusal a backend call must end with, and how long it took.
async fn refused<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, KafkaBackendError>>,
) -> (String, Duration) {
    let started = Instant::now();
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Err(KafkaBackendError::Access(reason))) => (reason, started.elapsed()),
        Ok(Err(other)) => panic!("{what}: expected an access error, got {other}"),
        Ok(Ok(_)) => panic!("{what}: succeeded, expected a refusal"),
        Err(_) => panic!("{what}: still waiting after 60 s, expected a prompt refusal"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_SECURE_BOOTSTRAP etc. from hack/kafka.sh up (make test runs it)"]
async fn produce_and_consume_over_tls_and_scram() {
    let kafka = SecureKafka::from_env();
    let topic = unique_name("secure-round-trip");
    let settings = admin_settings(&kafka, &topic);
    // The admin client goes through TLS and SCRAM too: the super user creates the topic.
    admin::ensure_topic(&settings, 1, &[])
        .await
        .expect("creating the topic over SASL_SSL");
    let producer = KafkaProducer::open(
        settings.clone(),
        ProducerTuning::default(),
        KafkaMetrics::default(),
    )
    .await
    .expect("opening the producer over SASL_SSL");
    let mut sent = Vec::new();
    for index in 0..3u32 {
        let payload = Bytes::from(format!("record {index} of {topic}"));
        producer
            .append(Partition(index), payload.clone())
            .await
            .expect("append over SASL_SSL");
        sent.push(payload);
    }
    assert_eq!(producer.readiness(), Ok(()));
    producer.close().await;

    let mut consumer = KafkaConsumer::connect(
        &settings,
        &unique_name("secure-group"),
        KafkaMetrics::default(),
    )
    .await
    .expect("joining the group over SASL_SSL");
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "received {received:?} of {sent:?} within 60 s"
        );
        let poll = consumer
            .poll(
                PollLimits {
                    max_records: 100,
                    max_bytes: 1 << 20,
                },
                Duration::from_millis(500),
            )
            .await
            .expect("poll over SASL_SSL");
        let positions: Vec<_> = poll
            .records
            .iter()
            .map(|record| {
                (
                    record.partition,
                    metricstream_backend::Offset(record.offset.0 + 1),
                )
            })
            .collect();
        received.extend(poll.records.into_iter().map(|record| record.payload));
        consumer
            .commit(&positions)
            .await
            .expect("commit over SASL_SSL");
    }
    consumer.close().await;
    received.sort();
    sent.sort();
    assert_eq!(received, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_SECURE_BOOTSTRAP etc. from hack/kafka.sh up (make test runs it)"]
async fn a_wrong_password_is_refused_promptly_as_an_authentication_failure() {
    let kafka = SecureKafka::from_env();
    let topic = unique_name("secure-wrong-password");
    let mut settings = admin_settings(&kafka, &topic);
    if let Some(sasl) = settings.security.sasl.as_mut() {
        sasl.password = "not-the-password".into();
    }

    let (reason, took) = refused("topic metadata", admin::topic_partitions(&settings)).await;
    println!("metadata with a wrong password: refused after {took:?}: {reason}");
    assert!(reason.contains("SASL authentication failed"), "{reason}");
    assert!(took < PROMPT, "refused only after {took:?}");
    assert!(!reason.contains("not-the-password"), "{reason}");

    let (reason, took) = refused(
        "producer",
        KafkaProducer::open(
            settings.clone(),
            ProducerTuning::default(),
            KafkaMetrics::default(),
        ),
    )
    .await;
    assert!(reason.contains("SASL authentication failed"), "{reason}");
    assert!(took < PROMPT, "producer refused only after {took:?}");

    let (reason, took) = refused(
        "consumer",
        KafkaConsumer::connect(&settings, "wrong-password-group", KafkaMetrics::default()),
    )
    .await;
    assert!(reason.contains("SASL authentication failed"), "{reason}");
    assert!(took < PROMPT, "consumer refused only after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kafka broker: KAFKA_SECURE_BOOTSTRAP etc. from hack/kafka.sh up (make test runs it)"]
async fn a_ca_that_did_not_sign_the_broker_certificate_is_refused_as_a_tls_failure() {
    let kafka = SecureKafka::from_env();
    let dir = TestDir::new("kafka-unrelated-ca");
    let ca = dir.path().join("unrelated-ca.crt");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=Unrelated test CA",
            "-keyout",
        ])
        .arg(dir.path().join("unrelated-ca.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("running openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let topic = unique_name("secure-unrelated-ca");
    let mut settings = admin_settings(&kafka, &topic);
    settings.security.tls = Some(KafkaTls {
        ca_pem: Some(read(&ca)),
    });

    let (reason, took) = refused("topic metadata", admin::topic_partitions(&settings)).await;
    println!("metadata with an unrelated CA: refused after {took:?}: {reason}");
    assert!(reason.contains("TLS handshake failed"), "{reason}");
    assert!(reason.contains("certificate verify failed"), "{reason}");
    assert!(took < PROMPT, "refused only after {took:?}");

    // The system trust store does not know the throwaway CA either.
    settings.security.tls = Some(KafkaTls { ca_pem: None });
    let (reason, _) = refused("topic metadata", admin::topic_partitions(&settings)).await;
    assert!(reason.contains("certificate verify failed"), "{reason}");
}

/// `hack/kafka.sh tool acls` arguments adding (or removing) `acl` for `user`.
fn acl_args(action: &str, user: &str, acl: &KafkaAcl) -> Vec<String> {
    let mut args = vec![action.to_owned()];
    if action == "--remove" {
        args.push("--force".into());
    }
    args.extend(["--allow-principal".into(), format!("User:{user}")]);
    for operation in &acl.operations {
        args.extend(["--operation".into(), operation.kafka_name().to_owned()]);
    }
    let resource = match acl.resource_type {
        AclResourceType::Topic => "--topic",
        AclResourceType::Group => "--group",
    };
    args.extend([resource.to_owned(), acl.name.clone()]);
    args
}

/// Waits until `check` answers `true`: the broker applies an ACL change a moment after the
/// tool returns.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service on the SASL_SSL listener as the workload user, configured only through the
/// security environment variables; the topic exists already (the operator's job).
fn secure_service(spec: ServiceSpec, kafka: &SecureKafka, topic: &str) -> ServiceSpec {
    spec.kafka(&kafka.bootstrap, topic)
        .partitions(3)
        .env("METRICSTREAM_KAFKA_CREATE_TOPIC", "false")
        .env("METRICSTREAM_KAFKA_SECURITY_PROTOCOL", "sasl-ssl")
        .env("METRICSTREAM_KAFKA_CA_FILE", &kafka.ca_file)
        .env("METRICSTREAM_KAFKA_SASL_MECHANISM", "scram-sha-512")
        .env("METRICSTREAM_KAFKA_SASL_USERNAME", &kafka.username)
        .env(
            "METRICSTREAM_KAFKA_SASL_PASSWORD_FILE",
            &kafka.password_file,
        )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_SECURE_BOOTSTRAP etc. from hack/kafka.sh up (make test runs it)"]
async fn ingest_and_consumer_over_sasl_ssl_need_exactly_the_workload_acls() {
    let kafka = SecureKafka::from_env();
    let topic = unique_name("secure-pipeline");
    let group = unique_name("secure-writer");
    let mut topic_settings = admin_settings(&kafka, &topic);
    topic_settings.partitions = 3;
    admin::ensure_topic(&topic_settings, 1, &[])
        .await
        .expect("creating the topic as the admin user");

    // Before any grant the workload user may not even see the topic.
    let workload = workload_settings(&kafka, &topic);
    let (reason, _) = refused("metadata without ACLs", admin::topic_partitions(&workload)).await;
    assert!(reason.contains("not authorized for the topic"), "{reason}");

    let acls = workload_acls(&topic, &group);
    for acl in &acls {
        kafka
            .acl_tool(&acl_args("--add", &kafka.username, acl))
            .await;
    }
    wait_until("the topic ACL applies", || async {
        matches!(admin::topic_partitions(&workload).await, Ok(Some(3)))
    })
    .await;

    let dir = TestDir::new("kafka-sasl-ssl-pipeline");
    let ingest = secure_service(ServiceSpec::ingest(&dir, "ingest"), &kafka, &topic)
        .start()
        .await;
    let consumer_spec = secure_service(ServiceSpec::consumer(&dir, "consumer"), &kafka, &topic)
        .env("METRICSTREAM_GROUP", &group);
    let consumer = consumer_spec.start().await;

    let report = run_load(LoadSpec::new(vec![ingest.base_url()], 4, 10, 5)).await;
    report.assert_all_accepted();
    let expected = report.expected();
    wait_for_sink(&dir.sink_dir(), &expected, Duration::from_secs(120)).await;
    consumer.terminate().await;

    // Without the group ACL the consumer cannot join its group: it stops at startup, saying so.
    let group_acl = acls
        .iter()
        .find(|acl| acl.resource_type == AclResourceType::Group)
        .expect("workload_acls has a group ACL");
    kafka
        .acl_tool(&acl_args("--remove", &kafka.username, group_acl))
        .await;
    wait_until("the group ACL removal applies", || async {
        matches!(
            KafkaConsumer::connect(&workload, &group, KafkaMetrics::default()).await,
            Err(KafkaBackendError::Access(_))
        )
    })
    .await;
    let mut refused_consumer = consumer_spec.spawn();
    let started = Instant::now();
    let status = refused_consumer
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the consumer without its group ACL exits");
    let log = read(refused_consumer.log_path());
    assert!(!status.success(), "exit status {status}; log: {log}");
    assert!(
        log.contains("not authorized for the consumer group") && log.contains(&group),
        "log: {log}"
    );
    println!(
        "consumer without the group ACL exited ({status}) after {:?}",
        started.elapsed()
    );

    ingest.terminate().await;
    let verification = assert_settled_exactly_once(&dir.sink_dir(), &expected);
    assert_eq!(verification.lines, expected.len());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a Kafka broker: KAFKA_SECURE_BOOTSTRAP etc. from hack/kafka.sh up (make test runs it)"]
async fn ingest_with_a_wrong_password_exits_promptly_naming_the_authentication_failure() {
    let kafka = SecureKafka::from_env();
    let dir = TestDir::new("kafka-sasl-wrong-password");
    let password_file = dir.write_file("wrong-password", "not-the-password\n");
    let mut ingest = secure_service(
        ServiceSpec::ingest(&dir, "ingest"),
        &kafka,
        &unique_name("secure-wrong-password"),
    )
    .env("METRICSTREAM_KAFKA_SASL_PASSWORD_FILE", &password_file)
    .spawn();
    let started = Instant::now();
    let status = ingest
        .wait_exit(PROMPT)
        .await
        .unwrap_or_else(|| panic!("ingest still runs {PROMPT:?} after a refused login"));
    let log = read(ingest.log_path());
    assert!(!status.success(), "exit status {status}; log: {log}");
    assert!(log.contains("SASL authentication failed"), "log: {log}");
    assert!(
        !log.contains("not-the-password"),
        "the password is in the log: {log}"
    );
    println!(
        "ingest with a wrong password exited after {:?}",
        started.elapsed()
    );
}
