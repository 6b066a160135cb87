//! The contract between the operator and the workloads it runs: every setting the operator
//! renders into a workload's environment is a flag that workload declares, and the rendered
//! environment (and command line) parses with the workload's own clap definition.
//!
//! Why a test: clap ignores environment variables it does not know, so a key the operator
//! renders under a name the binary does not declare (a typo, a renamed flag) is silently
//! dropped and the workload runs on its default. Nothing else would notice.
//!
//! The workloads are built by the operator's pure build step (`validate` → `build`), exactly as
//! a reconcile would, for a file-backed and two Kafka-backed (SASL over TLS) streams, one
//! whose consumers write to a store over remote write with a bearer token, and one whose ingest
//! spills (a StatefulSet whose container's own `env` names the spill's directory and bound). The
//! ConfigMap is shared by the ingest and the consumer (`envFrom`), so a key in it must be
//! declared by at least one workload that receives it; a key in a container's own `env` must be
//! declared by that container's workload. Each container's environment is then parsed for real
//! in a child process (clap reads the process environment; a child keeps the test's own
//! environment, and its threads, out of it).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use metricstream_operator::config::WorkloadDefaults;
use metricstream_operator::crd::{
    Backend, BasicAuthSpec, ConsumerSpec, DeletionPolicy, FileSpec, IngestSpec,
    KafkaAuthenticationSpec, KafkaSpec, KafkaTlsSpec, MetricStream, MetricStreamSpec,
    RateLimitSpec, RemoteWriteProtocol, RemoteWriteSpec, RemoteWriteTlsSpec, SaslType,
    SecretKeyRef, SecretRef, SinkSpec, SinkType, SpillSpec, StrimziRef, TopicManagement,
};
use metricstream_operator::reconcile::build::{CopiedCredentials, Desired, build};
use metricstream_operator::reconcile::validate::validate;

/// The settings' common prefix: what clap would silently ignore if undeclared.
const PREFIX: &str = "METRICSTREAM_";

/// Set in the child: which workload's flags to parse the environment with.
const CHILD_WORKLOAD: &str = "WORKLOAD_CONTRACT_CHILD";
/// Set in the child: the container's command line, its words separated by U+001F.
const CHILD_ARGV: &str = "WORKLOAD_CONTRACT_ARGV";
/// Printed by the child after a successful parse, so a child that ran no test cannot pass.
const CHILD_PARSED: &str = "workload-contract: parsed";
const ARGV_SEPARATOR: char = '\u{1f}';

/// A workload binary the operator runs, and its clap definition.
struct Workload {
    binary: &'static str,
    command: fn() -> clap::Command,
    parse: fn(&[String]) -> Result<(), clap::Error>,
}

const WORKLOADS: [Workload; 2] = [
    Workload {
        binary: "metricstream-ingest",
        command: metricstream_ingest::config::Args::command,
        parse: |argv| metricstream_ingest::config::Args::try_parse_from(argv).map(drop),
    },
    Workload {
        binary: "metricstream-consumer",
        command: metricstream_consumer::config::Config::command,
        parse: |argv| metricstream_consumer::config::Config::try_parse_from(argv).map(drop),
    },
];

fn workload(binary: &str) -> Option<&'static Workload> {
    let name = binary.rsplit('/').next().unwrap_or(binary);
    WORKLOADS.iter().find(|workload| workload.binary == name)
}

/// Every environment variable a clap command reads, subcommands included.
fn declared_env(command: &clap::Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for subcommand in command.get_subcommands() {
        names.extend(declared_env(subcommand));
    }
    names
}

fn stream(spec: MetricStreamSpec) -> MetricStream {
    let mut stream = MetricStream::new("web", spec);
    stream.metadata = ObjectMeta {
        name: Some("web".into()),
        namespace: Some("apps".into()),
        uid: Some("uid-1".into()),
        generation: Some(1),
        ..Default::default()
    };
    stream
}

/// Every optional ingest setting the operator renders: tokens, TLS, a rate limit.
fn full_ingest() -> IngestSpec {
    IngestSpec {
        replicas: 2,
        auth_secret_ref: Some(SecretRef {
            name: "web-tokens".into(),
        }),
        tls_secret_ref: Some(SecretRef {
            name: "web-tls".into(),
        }),
        rate_limit: Some(RateLimitSpec {
            requests_per_second: 100,
            burst: Some(200),
        }),
        ..Default::default()
    }
}

fn kafka_spec(management: TopicManagement) -> KafkaSpec {
    KafkaSpec {
        bootstrap_servers: "my-cluster-kafka-bootstrap.kafka:9093".into(),
        topic: Some("metrics-web".into()),
        replication_factor: 1,
        topic_management: management,
        tls: Some(KafkaTlsSpec {
            ca_secret_ref: Some(SecretKeyRef {
                name: "kafka-ca".into(),
                key: Some("ca.crt".into()),
            }),
        }),
        authentication: Some(KafkaAuthenticationSpec {
            type_: SaslType::ScramSha512,
            username: "web-writer".into(),
            password_secret_ref: SecretKeyRef {
                name: "web-kafka".into(),
                key: None,
            },
        }),
        strimzi: None,
        config: BTreeMap::new(),
        spill: None,
    }
}

/// The streams whose workloads are checked, by a name for the failure message.
fn scenarios() -> Vec<(&'static str, MetricStream)> {
    let file = stream(MetricStreamSpec {
        backend: Backend::File,
        partitions: 8,
        kafka: None,
        file: Some(FileSpec {
            storage: "5Gi".into(),
            storage_class_name: None,
            durability: Default::default(),
        }),
        ingest: full_ingest(),
        consumer: ConsumerSpec::default(),
        deletion_policy: DeletionPolicy::Retain,
        image: None,
    });
    let kafka = |management: TopicManagement, strimzi: Option<StrimziRef>| {
        stream(MetricStreamSpec {
            backend: Backend::Kafka,
            partitions: 8,
            kafka: Some(KafkaSpec {
                strimzi,
                ..kafka_spec(management)
            }),
            file: None,
            ingest: full_ingest(),
            consumer: ConsumerSpec::default(),
            deletion_policy: DeletionPolicy::Retain,
            image: None,
        })
    };
    let mut remote_write = kafka(TopicManagement::Admin, None);
    remote_write.spec.consumer.sink = SinkSpec {
        type_: SinkType::RemoteWrite,
        remote_write: Some(RemoteWriteSpec {
            url: "http://victoriametrics.monitoring:8428/api/v1/write".into(),
            bearer_token_secret_ref: Some(SecretKeyRef {
                name: "vm-token".into(),
                key: None,
            }),
            basic_auth: None,
            tls: None,
            max_samples_per_request: 2000,
            concurrency: 64,
            protocol: Default::default(),
            timeout_seconds: 600,
        }),
        // The consumer must accept the rate limit's variable too.
        rate_limit: Some(20_000),
    };
    let mut secured_remote_write = kafka(TopicManagement::Admin, None);
    secured_remote_write.spec.consumer.sink = SinkSpec {
        type_: SinkType::RemoteWrite,
        remote_write: Some(RemoteWriteSpec {
            url: "https://victoriametrics.monitoring:8428/api/v1/write".into(),
            bearer_token_secret_ref: None,
            basic_auth: Some(BasicAuthSpec {
                username: "writer".into(),
                password_secret_ref: SecretKeyRef {
                    name: "vm-auth".into(),
                    key: None,
                },
            }),
            tls: Some(RemoteWriteTlsSpec {
                ca_secret_ref: Some(SecretKeyRef {
                    name: "vm-ca".into(),
                    key: Some("ca.pem".into()),
                }),
            }),
            max_samples_per_request: 5000,
            concurrency: 1,
            protocol: RemoteWriteProtocol::V2,
            timeout_seconds: 30,
        }),
        rate_limit: None,
    };
    let mut spilling = kafka(TopicManagement::Admin, None);
    spilling.spec.kafka.as_mut().expect("kafka").spill = Some(SpillSpec {
        enabled: true,
        size: "2Gi".into(),
        storage_class: Some("fast-ssd".into()),
    });
    vec![
        ("file backend", file),
        (
            "kafka backend, admin topic, SASL_SSL, the ingest spilling",
            spilling,
        ),
        (
            "kafka backend, remote-write sink with a bearer token",
            remote_write,
        ),
        (
            "kafka backend, remote-write sink over https with basic auth and a CA",
            secured_remote_write,
        ),
        (
            "kafka backend, admin topic, SASL_SSL",
            kafka(TopicManagement::Admin, None),
        ),
        (
            "kafka backend, Strimzi topic, SASL_SSL",
            kafka(
                TopicManagement::Strimzi,
                Some(StrimziRef {
                    create_user: false,
                    cluster: "my-cluster".into(),
                    namespace: "kafka".into(),
                }),
            ),
        ),
    ]
}

/// Where a rendered variable comes from: the container's own `env`, or a ConfigMap it loads
/// whole (`envFrom`), which other containers may load too.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Own,
    ConfigMap(String),
}

/// A container's environment as the kubelet would give it: literal values, ConfigMap entries
/// looked up in the desired ConfigMap, a placeholder for anything from a Secret or the
/// downward API (its value is not the operator's to render).
fn rendered_env(
    desired: &Desired,
    container: &Container,
) -> Result<BTreeMap<String, (String, Source)>, String> {
    let config_map_name = desired.config_map.metadata.name.clone().unwrap_or_default();
    let config_map_data = desired.config_map.data.clone().unwrap_or_default();
    let mut env = BTreeMap::new();
    for EnvFromSource {
        config_map_ref,
        prefix,
        secret_ref,
    } in container.env_from.iter().flatten()
    {
        let prefix = prefix.clone().unwrap_or_default();
        match (config_map_ref, secret_ref) {
            (Some(reference), None) if reference.name == config_map_name => {
                for (key, value) in &config_map_data {
                    let source = Source::ConfigMap(reference.name.clone());
                    env.insert(format!("{prefix}{key}"), (value.clone(), source));
                }
            }
            _ => {
                return Err(format!(
                    "envFrom {config_map_ref:?} {secret_ref:?}: not the stream's ConfigMap, so \
                     its keys cannot be checked"
                ));
            }
        }
    }
    for EnvVar {
        name,
        value,
        value_from,
    } in container.env.iter().flatten()
    {
        let value = match (value, value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match &from.config_map_key_ref {
                Some(key) if key.name == config_map_name => config_map_data
                    .get(&key.key)
                    .cloned()
                    .ok_or_else(|| format!("{name}: the ConfigMap has no key {}", key.key))?,
                _ => format!("placeholder-for-{name}"),
            },
            (None, None) => String::new(),
        };
        env.insert(name.clone(), (value, Source::Own));
    }
    Ok(env)
}

/// The container's command line: its command, then its args.
fn argv(container: &Container) -> Vec<String> {
    container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect()
}

/// Parses `env` and `argv` with `workload`'s flags in a child process (this test binary again,
/// running only [`child_parses_its_environment`]), with nothing else in its environment.
fn parse_in_child(
    workload: &Workload,
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    let this_test_binary = std::env::current_exe().map_err(|error| error.to_string())?;
    let output = Command::new(this_test_binary)
        .args([
            "child_parses_its_environment",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .envs(env)
        .env(CHILD_WORKLOAD, workload.binary)
        .env(CHILD_ARGV, argv.join(&ARGV_SEPARATOR.to_string()))
        .output()
        .map_err(|error| format!("cannot run the child: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() && stdout.contains(CHILD_PARSED) {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let refusal = stderr
            .lines()
            .find(|line| line.contains("refuses its rendered settings"))
            .unwrap_or(&stderr);
        Err(format!("{} ({})", refusal.trim(), output.status))
    }
}

/// The child half of [`parse_in_child`]; in an ordinary run (no [`CHILD_WORKLOAD`]) it does
/// nothing.
#[test]
fn child_parses_its_environment() {
    let Ok(binary) = std::env::var(CHILD_WORKLOAD) else {
        return;
    };
    let workload = workload(&binary).unwrap_or_else(|| panic!("no workload {binary}"));
    let argv: Vec<String> = std::env::var(CHILD_ARGV)
        .unwrap_or_default()
        .split(ARGV_SEPARATOR)
        .map(str::to_owned)
        .collect();
    match (workload.parse)(&argv) {
        Ok(()) => println!("{CHILD_PARSED}"),
        Err(error) => {
            // Exit rather than panic: the parent reports clap's message, not a backtrace.
            eprintln!("{binary} refuses its rendered settings: {error}");
            std::process::exit(2);
        }
    }
}

#[test]
fn every_rendered_setting_is_a_flag_of_a_workload_that_receives_it_and_parses() {
    let mut problems = Vec::new();
    // Which workload received which key, over every scenario.
    let mut received = BTreeSet::new();
    for (scenario, stream) in scenarios() {
        let validated = validate(&stream).unwrap_or_else(|error| panic!("{scenario}: {error}"));
        let desired = build(
            &validated,
            &WorkloadDefaults::default(),
            &CopiedCredentials::NotNeeded,
        );
        let pods = desired
            .deployments
            .iter()
            .filter_map(|deployment| deployment.spec.as_ref())
            .map(|spec| &spec.template)
            .chain(
                desired
                    .stateful_sets
                    .iter()
                    .filter_map(|stateful_set| stateful_set.spec.as_ref())
                    .map(|spec| &spec.template),
            );
        let containers: Vec<&Container> = pods
            .filter_map(|template| template.spec.as_ref())
            .flat_map(|pod| pod.init_containers.iter().flatten().chain(&pod.containers))
            .collect();
        assert_eq!(containers.len(), 2, "{scenario}: an ingest and a consumer");

        // Per container: its workload, its environment, the variables its workload declares.
        let mut checked = Vec::new();
        for container in containers {
            let argv = argv(container);
            let Some(workload) = argv.first().and_then(|binary| workload(binary)) else {
                problems.push(format!(
                    "{scenario}: container {} runs {argv:?}, which is no known workload",
                    container.name
                ));
                continue;
            };
            match rendered_env(&desired, container) {
                Ok(env) => {
                    received.extend(env.keys().map(|key| (workload.binary, key.clone())));
                    checked.push((container, workload, argv, env));
                }
                Err(error) => problems.push(format!("{scenario}: {}: {error}", container.name)),
            }
        }
        let declared: Vec<BTreeSet<String>> = checked
            .iter()
            .map(|(_, workload, _, _)| declared_env(&(workload.command)()))
            .collect();

        for ((container, workload, argv, env), own_declared) in checked.iter().zip(&declared) {
            for (key, (_, source)) in env.iter().filter(|(key, _)| key.starts_with(PREFIX)) {
                if own_declared.contains(key) {
                    continue;
                }
                // A shared ConfigMap's key may be meant for another container that loads it.
                let declared_by_a_receiver = match source {
                    Source::Own => false,
                    Source::ConfigMap(_) => checked.iter().zip(&declared).any(
                        |((_, _, _, other_env), other_declared)| {
                            other_env.get(key).is_some_and(|(_, s)| s == source)
                                && other_declared.contains(key)
                        },
                    ),
                };
                if !declared_by_a_receiver {
                    problems.push(format!(
                        "{scenario}: {} ({}) gets {key} from {source:?}, which no workload \
                         receiving it declares",
                        container.name, workload.binary
                    ));
                }
            }
            let values: BTreeMap<String, String> = env
                .iter()
                .map(|(key, (value, _))| (key.clone(), value.clone()))
                .collect();
            if let Err(error) = parse_in_child(workload, argv, &values) {
                problems.push(format!(
                    "{scenario}: {} ({}) does not parse its rendered settings: {error}",
                    container.name, workload.binary
                ));
            }
        }
    }
    // The scenarios must keep exercising the settings only some streams get.
    for key in ["METRICSTREAM_SPILL_DIR", "METRICSTREAM_SPILL_MAX_BYTES"] {
        if !received.contains(&("metricstream-ingest", key.to_owned())) {
            problems.push(format!("no scenario gives the ingest {key}"));
        }
    }
    assert!(
        problems.is_empty(),
        "the operator and its workloads disagree:\n- {}",
        problems.join("\n- ")
    );
}
