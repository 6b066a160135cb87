//! Dereference: the one step of a reconcile that reads what the build needs from the cluster,
//! so that build stays pure. It reads
//!
//! - the Secrets in the Kafka cluster's namespace that the stream copies into its credentials
//!   Secret (the KafkaUser's password, the Strimzi cluster CA): workloads in the stream's
//!   namespace cannot mount Secrets of another namespace;
//! - the Secrets in the stream's namespace that the operator's own Kafka client needs for an
//!   admin-API or external topic.
//!
//! What it found is a plain [`Dereferenced`]; a missing source is not an error but a
//! [`CopiedCredentials::Pending`] the status reports.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use metricstream_backend::kafka::KafkaSecurity;

use super::build::{
    CREDENTIALS_CA_KEY, CREDENTIALS_PASSWORD_KEY, CopiedCredentials, CredentialsCopy,
    credentials_to_copy,
};
use super::validate::{KafkaSecurityPlan, TopicMode, ValidatedStream};
use crate::context::Context;
use crate::error::{Error, KubeResultExt};

/// What a reconcile read from the cluster for the build and apply steps.
#[derive(Clone, Debug, Default)]
pub struct Dereferenced {
    /// The values the stream's credentials Secret copies from the Kafka namespace.
    pub credentials: CopiedCredentials,
    /// How the operator's own Kafka client connects, for an admin-API or external topic or the
    /// autoscaler's lag; `None` when the operator does not connect (file backend, a
    /// Strimzi-managed topic without autoscaling). An error says
    /// which Secret or key is missing and is reported in status.
    pub operator_security: Option<Result<KafkaSecurity, String>>,
}

/// Reads what building and applying `stream` needs.
pub async fn dereference(ctx: &Context, stream: &ValidatedStream) -> Result<Dereferenced, Error> {
    let credentials = async {
        match credentials_to_copy(stream) {
            Some(copy) => read_credentials(ctx, &copy).await,
            None => Ok(CopiedCredentials::NotNeeded),
        }
    };
    let operator_security = async {
        match stream.kafka() {
            // The autoscaler reads the group's offsets whatever makes the topic.
            Some(plan)
                if matches!(plan.management, TopicMode::Admin | TopicMode::External)
                    || stream.consumer.autoscaling.is_some() =>
            {
                Some(operator_security(ctx, &stream.namespace, &plan.security).await)
            }
            _ => None,
        }
    };
    let (credentials, operator_security) = futures::join!(credentials, operator_security);
    Ok(Dereferenced {
        credentials: credentials?,
        operator_security,
    })
}

/// The security the operator's own Kafka client uses for a stream in `stream_namespace`: the
/// stream's plan with the Secrets it names.
pub async fn operator_security(
    ctx: &Context,
    stream_namespace: &str,
    plan: &KafkaSecurityPlan,
) -> Result<KafkaSecurity, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), stream_namespace);
    crate::topics::resolve_security(&secrets, plan).await
}

/// One value the credentials Secret copies: from which Secret and key, to which key, and who
/// makes the source (for the message while it is missing).
#[derive(Clone, Debug, PartialEq)]
struct Source<'a> {
    secret: &'a str,
    key: &'static str,
    copy_as: &'static str,
    made_by: &'static str,
}

fn sources(copy: &CredentialsCopy) -> Vec<Source<'_>> {
    let password = copy.password_from.as_deref().map(|secret| Source {
        secret,
        key: "password",
        copy_as: CREDENTIALS_PASSWORD_KEY,
        made_by: "Strimzi's User Operator makes it for the KafkaUser",
    });
    let ca = copy.ca_from.as_deref().map(|secret| Source {
        secret,
        key: "ca.crt",
        copy_as: CREDENTIALS_CA_KEY,
        made_by: "Strimzi's Cluster Operator makes it for the Kafka cluster",
    });
    password.into_iter().chain(ca).collect()
}

async fn read_credentials(
    ctx: &Context,
    copy: &CredentialsCopy,
) -> Result<CopiedCredentials, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &copy.kafka_namespace);
    let mut found = Vec::new();
    for source in sources(copy) {
        let secret = secrets
            .get_opt(source.secret)
            .await
            .doing(|| format!("reading Secret {}/{}", copy.kafka_namespace, source.secret))?;
        found.push((source, secret));
    }
    Ok(copied(&copy.kafka_namespace, found))
}

/// The copies, from each source and the Secret found for it (`None`: it does not exist); pending
/// while any source Secret or key is missing.
fn copied(kafka_namespace: &str, found: Vec<(Source<'_>, Option<Secret>)>) -> CopiedCredentials {
    let mut data = BTreeMap::new();
    let mut missing = Vec::new();
    for (source, secret) in found {
        match secret.and_then(|secret| secret.data?.remove(source.key)) {
            Some(value) => {
                data.insert(source.copy_as.to_owned(), value);
            }
            None => missing.push(format!(
                "key {} of Secret {kafka_namespace}/{} ({})",
                source.key, source.secret, source.made_by
            )),
        }
    }
    if missing.is_empty() {
        CopiedCredentials::Copied(data)
    } else {
        CopiedCredentials::Pending(format!("waiting for {}", missing.join(" and ")))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::config::WorkloadDefaults;
    use crate::crd::{KafkaTlsSpec, MetricStream, TopicManagement};
    use crate::labels;
    use crate::reconcile::build::{Desired, build, credentials_hash};
    use crate::reconcile::fixtures::kafka_stream;
    use crate::reconcile::validate::validate;

    /// A Strimzi-managed stream with a created KafkaUser and the cluster CA: it copies both.
    fn copying_stream() -> ValidatedStream {
        let mut stream: MetricStream = kafka_stream(TopicManagement::Strimzi);
        let kafka = stream.spec.kafka.as_mut().expect("kafka");
        kafka.tls = Some(KafkaTlsSpec::default());
        kafka.strimzi.as_mut().expect("strimzi").create_user = true;
        validate(&stream).expect("valid")
    }

    fn secret(name: &str, key: &str, value: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some([(key.to_owned(), ByteString(value.as_bytes().to_vec()))].into()),
            ..Default::default()
        }
    }

    fn hashes(desired: &Desired) -> Vec<Option<String>> {
        desired
            .deployments
            .iter()
            .map(|deployment| {
                deployment
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.template.metadata.as_ref())
                    .and_then(|meta| meta.annotations.as_ref())
                    .and_then(|annotations| annotations.get(labels::CREDENTIALS_HASH).cloned())
            })
            .collect()
    }

    #[test]
    fn a_copying_stream_reads_the_user_password_and_the_cluster_ca() {
        let copy = credentials_to_copy(&copying_stream()).expect("copies");
        let read: Vec<(&str, &str, &str)> = sources(&copy)
            .iter()
            .map(|s| (s.secret, s.key, s.copy_as))
            .collect();
        assert_eq!(
            read,
            [
                ("metricstream.apps.web", "password", "password"),
                ("my-cluster-cluster-ca-cert", "ca.crt", "ca.crt"),
            ]
        );
    }

    #[test]
    fn every_source_found_is_copied_and_any_missing_one_is_pending() {
        let copy = credentials_to_copy(&copying_stream()).expect("copies");
        let found = |password: Option<Secret>, ca: Option<Secret>| {
            let mut secrets = [password, ca].into_iter();
            let found = sources(&copy)
                .into_iter()
                .map(|source| (source, secrets.next().flatten()))
                .collect();
            copied("kafka", found)
        };
        let user = secret("metricstream.apps.web", "password", "s3cret");
        let ca = secret("my-cluster-cluster-ca-cert", "ca.crt", "PEM");
        assert_eq!(
            found(Some(user.clone()), Some(ca.clone())),
            CopiedCredentials::Copied(
                [
                    ("ca.crt".to_owned(), ByteString(b"PEM".to_vec())),
                    ("password".to_owned(), ByteString(b"s3cret".to_vec())),
                ]
                .into()
            )
        );
        let pending = found(None, Some(ca));
        assert_eq!(
            pending.pending(),
            Some(
                "waiting for key password of Secret kafka/metricstream.apps.web (Strimzi's User Operator makes it for the KafkaUser)"
            )
        );
        let wrong_key = secret("my-cluster-cluster-ca-cert", "tls.crt", "PEM");
        let pending = found(Some(user), Some(wrong_key));
        assert!(
            pending.pending().is_some_and(
                |why| why.contains("key ca.crt of Secret kafka/my-cluster-cluster-ca-cert")
            ),
            "{pending:?}"
        );
    }

    #[test]
    fn copied_credentials_become_the_secret_and_roll_the_workloads() {
        let stream = copying_stream();
        let data: BTreeMap<String, ByteString> =
            [("password".to_owned(), ByteString(b"s3cret".to_vec()))].into();
        let defaults = WorkloadDefaults::default();
        let desired = build(&stream, &defaults, &CopiedCredentials::Copied(data.clone()));
        let secret = desired.credentials_secret.as_ref().expect("a Secret");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("web-kafka-credentials")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(secret.data.as_ref(), Some(&data));
        let owners = secret.metadata.owner_references.as_ref().expect("owned");
        assert_eq!(owners[0].uid, "uid-1");
        let hash = credentials_hash(&data);
        assert_eq!(hashes(&desired), [Some(hash.clone()), Some(hash)]);

        let rotated: BTreeMap<String, ByteString> =
            [("password".to_owned(), ByteString(b"rotated".to_vec()))].into();
        let after = build(&stream, &defaults, &CopiedCredentials::Copied(rotated));
        assert_ne!(
            hashes(&after),
            hashes(&desired),
            "a rotation rolls the pods"
        );
    }

    #[test]
    fn without_every_copy_there_is_no_secret_and_no_hash() {
        let stream = copying_stream();
        let defaults = WorkloadDefaults::default();
        for copied in [
            CopiedCredentials::Pending("waiting".into()),
            CopiedCredentials::NotNeeded,
        ] {
            let desired = build(&stream, &defaults, &copied);
            assert!(
                desired.credentials.is_some(),
                "still copies: pruning keeps it"
            );
            assert_eq!(desired.credentials_secret, None);
            assert_eq!(hashes(&desired), [None, None]);
        }
    }
}
