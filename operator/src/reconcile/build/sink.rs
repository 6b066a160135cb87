//! The consumer's sink settings: environment variables in the consumer container's own `env`
//! (not the ConfigMap both workloads load, so a sink change rolls only the consumers, and a
//! store URL stays off the ingest pods), and the Secrets the sink reads, each mounted read-only.
//!
//! The sink's volume (`<stream>-sink`, `--sink-dir`) is kept for every sink type: with
//! remote write it holds `quarantine/` and `dead-letters/`, which are data and must survive a
//! restart (an emptyDir would not).

use k8s_openapi::api::core::v1::EnvVar;

use crate::crd::RemoteWriteProtocol;
use crate::reconcile::validate::{SinkPlan, ValidatedStream};

/// Where the remote-write sink's Secrets are mounted, and the file each holds.
pub const SINK_TOKEN_MOUNT: &str = "/etc/metricstream/sink-token";
pub const SINK_TOKEN_FILE: &str = "token";
pub const SINK_PASSWORD_MOUNT: &str = "/etc/metricstream/sink-password";
pub const SINK_PASSWORD_FILE: &str = "password";
pub const SINK_CA_MOUNT: &str = "/etc/metricstream/sink-ca";
pub const SINK_CA_FILE: &str = "ca.crt";

/// The consumer container's sink environment, sorted by name; empty for the file sink without
/// a rate limit (the consumer's defaults, so an existing stream's pods do not roll).
pub(super) fn sink_env(stream: &ValidatedStream) -> Vec<EnvVar> {
    let rate_limit = stream
        .consumer
        .sink_rate_limit
        .map(|limit| ("METRICSTREAM_SINK_RATE_LIMIT", limit.to_string()));
    let SinkPlan::RemoteWrite(plan) = &stream.consumer.sink else {
        return rate_limit.into_iter().map(env_var).collect();
    };
    let mut env = vec![
        ("METRICSTREAM_SINK", "remote-write".to_owned()),
        ("METRICSTREAM_SINK_URL", plan.url.clone()),
        (
            "METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST",
            plan.max_samples_per_request.to_string(),
        ),
        (
            "METRICSTREAM_SINK_CONCURRENCY",
            plan.concurrency.to_string(),
        ),
        (
            "METRICSTREAM_SINK_PROTOCOL",
            match plan.protocol {
                RemoteWriteProtocol::V1 => "1.0",
                RemoteWriteProtocol::V2 => "2.0",
            }
            .to_owned(),
        ),
        (
            "METRICSTREAM_SINK_TIMEOUT_MS",
            (i64::from(plan.timeout_seconds) * 1000).to_string(),
        ),
    ];
    if plan.bearer_token.is_some() {
        env.push((
            "METRICSTREAM_SINK_BEARER_TOKEN_FILE",
            format!("{SINK_TOKEN_MOUNT}/{SINK_TOKEN_FILE}"),
        ));
    }
    if let Some((username, _)) = &plan.basic_auth {
        env.push(("METRICSTREAM_SINK_BASIC_AUTH_USERNAME", username.clone()));
        env.push((
            "METRICSTREAM_SINK_BASIC_AUTH_PASSWORD_FILE",
            format!("{SINK_PASSWORD_MOUNT}/{SINK_PASSWORD_FILE}"),
        ));
    }
    if plan.ca.is_some() {
        env.push((
            "METRICSTREAM_SINK_CA_FILE",
            format!("{SINK_CA_MOUNT}/{SINK_CA_FILE}"),
        ));
    }
    env.extend(rate_limit);
    env.sort();
    env.into_iter().map(env_var).collect()
}

fn env_var((name, value): (&str, String)) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        value_from: None,
    }
}

/// One key of a Secret the sink reads, as the file the consumer finds it in.
pub(super) struct SecretFile {
    pub volume: &'static str,
    pub secret: String,
    pub key: String,
    pub mount_path: &'static str,
    pub file: &'static str,
}

/// The Secrets the consumer's sink reads (mounted read-only by `workloads`).
pub(super) fn sink_secret_files(stream: &ValidatedStream) -> Vec<SecretFile> {
    let SinkPlan::RemoteWrite(plan) = &stream.consumer.sink else {
        return Vec::new();
    };
    let file = |volume, (secret, key): &(String, String), mount_path, file| SecretFile {
        volume,
        secret: secret.clone(),
        key: key.clone(),
        mount_path,
        file,
    };
    let mut files = Vec::new();
    if let Some(token) = &plan.bearer_token {
        files.push(file("sink-token", token, SINK_TOKEN_MOUNT, SINK_TOKEN_FILE));
    }
    if let Some((_, password)) = &plan.basic_auth {
        files.push(file(
            "sink-password",
            password,
            SINK_PASSWORD_MOUNT,
            SINK_PASSWORD_FILE,
        ));
    }
    if let Some(ca) = &plan.ca {
        files.push(file("sink-ca", ca, SINK_CA_MOUNT, SINK_CA_FILE));
    }
    files
}

#[cfg(test)]
mod tests {
    use crate::crd::{MetricStream, RemoteWriteSpec, SecretKeyRef, SinkSpec, SinkType};
    use crate::reconcile::build::tests::*;
    use crate::reconcile::fixtures::{file_stream, remote_write_stream};

    fn env_of(desired: &super::super::Desired, name: &str) -> Vec<(String, String)> {
        pod_spec(deployment(desired, name)).containers[0]
            .env
            .iter()
            .flatten()
            .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn the_file_sink_renders_nothing_new() {
        let desired = built(&file_stream());
        assert!(env_of(&desired, "web-consumer").is_empty());
        assert!(
            secret_files(deployment(&desired, "web-consumer")).is_empty(),
            "the file sink reads no Secret"
        );
    }

    #[test]
    fn a_remote_write_sink_reaches_the_consumer_only() {
        let desired = built(&remote_write_stream());
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            env_of(&desired, "web-consumer"),
            pairs(&[
                ("METRICSTREAM_SINK", "remote-write"),
                (
                    "METRICSTREAM_SINK_BEARER_TOKEN_FILE",
                    "/etc/metricstream/sink-token/token"
                ),
                ("METRICSTREAM_SINK_CONCURRENCY", "8"),
                ("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "2000"),
                ("METRICSTREAM_SINK_PROTOCOL", "1.0"),
                ("METRICSTREAM_SINK_TIMEOUT_MS", "10000"),
                (
                    "METRICSTREAM_SINK_URL",
                    "http://victoriametrics.monitoring:8428/api/v1/write"
                ),
            ])
        );
        assert_eq!(
            secret_files(deployment(&desired, "web-consumer")),
            [(
                "vm-token".to_owned(),
                "bearer".to_owned(),
                "/etc/metricstream/sink-token/token".to_owned()
            )]
        );
        assert!(env_of(&desired, "web-ingest").is_empty());
        assert!(
            secret_files(deployment(&desired, "web-ingest"))
                .iter()
                .all(|(secret, _, _)| secret != "vm-token"),
            "the ingest does not get the store's token"
        );
        let config = desired.config_map.data.as_ref().expect("data");
        assert!(
            config.keys().all(|key| !key.starts_with("METRICSTREAM_SINK_")
                || key == "METRICSTREAM_SINK_DIR"),
            "the shared ConfigMap holds no sink setting: {config:?}"
        );
        let claims: Vec<_> = pod_spec(deployment(&desired, "web-consumer"))
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect();
        assert!(
            claims.contains(&"web-sink".to_owned()),
            "dead letters keep their volume: {claims:?}"
        );
    }

    #[test]
    fn a_changed_sink_rolls_only_the_consumers() {
        let before = built(&remote_write_stream());
        let with = |change: fn(&mut RemoteWriteSpec)| -> super::super::Desired {
            let mut stream: MetricStream = remote_write_stream();
            change(
                stream
                    .spec
                    .consumer
                    .sink
                    .remote_write
                    .as_mut()
                    .expect("remote write"),
            );
            built(&stream)
        };
        let template = |desired: &super::super::Desired, name: &str| {
            deployment(desired, name)
                .spec
                .as_ref()
                .map(|s| s.template.clone())
        };
        let changes: [fn(&mut RemoteWriteSpec); 3] = [
            |rw| rw.url = "http://vm-2:8428/api/v1/write".into(),
            |rw| {
                rw.bearer_token_secret_ref = Some(SecretKeyRef {
                    name: "vm-token-2".into(),
                    key: None,
                })
            },
            |rw| rw.timeout_seconds = 60,
        ];
        for change in changes {
            let after = with(change);
            assert_ne!(
                template(&before, "web-consumer"),
                template(&after, "web-consumer"),
                "the consumer pod template changes, so its pods roll"
            );
            assert_eq!(
                template(&before, "web-ingest"),
                template(&after, "web-ingest"),
                "ingest is untouched"
            );
            assert_eq!(before.config_hash, after.config_hash);
        }
        let mut file = remote_write_stream();
        file.spec.consumer.sink = SinkSpec {
            type_: SinkType::File,
            remote_write: None,
            rate_limit: None,
        };
        assert!(env_of(&built(&file), "web-consumer").is_empty());
        file.spec.consumer.sink.rate_limit = Some(300);
        assert_eq!(
            env_of(&built(&file), "web-consumer"),
            [("METRICSTREAM_SINK_RATE_LIMIT".to_owned(), "300".to_owned())],
            "a rate limit is the file sink's only setting"
        );
    }

    #[test]
    fn basic_auth_and_a_ca_are_files_from_their_secrets() {
        let mut stream = remote_write_stream();
        let Some(remote_write) = stream.spec.consumer.sink.remote_write.as_mut() else {
            panic!("a remote-write fixture");
        };
        remote_write.url = "https://vm.monitoring:8428/api/v1/write".into();
        remote_write.bearer_token_secret_ref = None;
        remote_write.basic_auth = Some(crate::crd::BasicAuthSpec {
            username: "writer".into(),
            password_secret_ref: SecretKeyRef {
                name: "vm-auth".into(),
                key: None,
            },
        });
        remote_write.tls = Some(crate::crd::RemoteWriteTlsSpec {
            ca_secret_ref: Some(SecretKeyRef {
                name: "vm-ca".into(),
                key: Some("ca.pem".into()),
            }),
        });
        let desired = built(&stream);
        let env = env_of(&desired, "web-consumer");
        for expected in [
            ("METRICSTREAM_SINK_BASIC_AUTH_USERNAME", "writer"),
            (
                "METRICSTREAM_SINK_BASIC_AUTH_PASSWORD_FILE",
                "/etc/metricstream/sink-password/password",
            ),
            (
                "METRICSTREAM_SINK_CA_FILE",
                "/etc/metricstream/sink-ca/ca.crt",
            ),
        ] {
            assert!(
                env.contains(&(expected.0.to_owned(), expected.1.to_owned())),
                "{expected:?} missing from {env:?}"
            );
        }
        assert!(
            !env.iter()
                .any(|(name, _)| name == "METRICSTREAM_SINK_BEARER_TOKEN_FILE")
        );
        let mut files = secret_files(deployment(&desired, "web-consumer"));
        files.retain(|(secret, _, _)| secret.starts_with("vm-"));
        files.sort();
        assert_eq!(
            files,
            [
                (
                    "vm-auth".to_owned(),
                    "password".to_owned(),
                    "/etc/metricstream/sink-password/password".to_owned()
                ),
                (
                    "vm-ca".to_owned(),
                    "ca.pem".to_owned(),
                    "/etc/metricstream/sink-ca/ca.crt".to_owned()
                ),
            ]
        );
    }
}
