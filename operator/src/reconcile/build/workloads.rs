//! The workloads: their pod templates (volumes, probes, security, scheduling), the ingest and
//! consumer Deployments around them (a spilling ingest's StatefulSet is `spill.rs`'s), and the
//! file backend's PersistentVolumeClaims.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    ADMIN_PORT, COMPONENT_CONSUMER, CREDENTIALS_CA_KEY, CREDENTIALS_PASSWORD_KEY, DATA_MOUNT,
    Desired, INGEST_PORT, INGEST_TLS_MOUNT, KAFKA_CA_MOUNT, KAFKA_SASL_MOUNT, RUN_AS_USER, Role,
    SINK_MOUNT, TOKENS_KEY, TOKENS_MOUNT, metadata, sink,
};
use crate::config::WorkloadDefaults;
use crate::crd::DeletionPolicy;
use crate::labels;
use crate::reconcile::termination;
use crate::reconcile::validate::{CaSource, PasswordSource, ValidatedBackend, ValidatedStream};

/// A data volume. With deletionPolicy Retain it has no ownerReference: the garbage collector
/// would otherwise delete it with the MetricStream.
pub(super) fn pvc(
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

/// A workload's Deployment around its pod template.
pub(super) fn workload_deployment(
    stream: &ValidatedStream,
    role: Role,
    template: PodTemplateSpec,
) -> Deployment {
    let component = role.component();
    Deployment {
        metadata: metadata(stream, role.object_name(&stream.name), component, true),
        spec: Some(DeploymentSpec {
            replicas: Some(role.replicas(stream)),
            selector: LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            },
            template,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pods of a workload: its container, volumes, probes, security and scheduling.
pub(super) fn pod_template(
    stream: &ValidatedStream,
    defaults: &WorkloadDefaults,
    config_hash: &str,
    role: Role,
) -> PodTemplateSpec {
    let component = role.component();
    let binary = match role {
        Role::Ingest => "metricstream-ingest",
        Role::Consumer => "metricstream-consumer",
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
        for file in sink::sink_secret_files(stream) {
            volumes.push(secret_volume(
                file.volume,
                &file.secret,
                &file.key,
                file.file,
            ));
            mounts.push(VolumeMount {
                name: file.volume.into(),
                mount_path: file.mount_path.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
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
        env: match role {
            Role::Consumer => Some(sink::sink_env(stream)).filter(|env| !env.is_empty()),
            Role::Ingest => None,
        },
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

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels::standard(&stream.name, component)),
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
            termination_grace_period_seconds: Some(termination::TERMINATION_GRACE_PERIOD_SECONDS),
            automount_service_account_token: Some(false),
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

/// One key of a Secret as a read-only file. A whole-directory mount (no subPath), so kubelet's
/// atomic updates reach the pod.
pub(super) fn secret_volume(volume: &str, secret: &str, key: &str, file: &str) -> Volume {
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

pub(super) fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        localhost_profile: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TopicManagement;
    use crate::reconcile::build::tests::*;
    use crate::reconcile::build::*;
    use crate::reconcile::fixtures::{file_stream, kafka_stream};
    use crate::reconcile::validate::validate;

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
    fn client_limits_reach_the_ingest_with_the_replica_count_that_shares_them() {
        let mut stream = file_stream();
        stream.spec.ingest.replicas = 2;
        stream.spec.ingest.client_limits = Some(crate::crd::ClientLimitsSpec {
            max_active_series: Some(50_000),
            samples_per_second: Some(100_000),
            samples_burst: None,
        });
        let desired = built(&stream);
        let env = desired.config_map.data.as_ref().expect("data");
        assert_eq!(env["METRICSTREAM_MAX_ACTIVE_SERIES"], "50000");
        assert_eq!(env["METRICSTREAM_MAX_SAMPLES_PER_SECOND"], "100000");
        assert!(!env.contains_key("METRICSTREAM_MAX_SAMPLES_BURST"));
        assert_eq!(env["METRICSTREAM_RATE_LIMIT_REPLICAS"], "2");
        assert!(!env.contains_key("METRICSTREAM_RATE_LIMIT_PER_SECOND"));
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
}
