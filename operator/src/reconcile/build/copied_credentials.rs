//! The Kafka credentials a stream copies from the Kafka cluster's namespace, as build sees them:
//! which Secrets to copy from ([`credentials_to_copy`], also what dereference reads), and what
//! the values dereference found become — the stream's credentials Secret and a hash of its
//! content on both pod templates, so a rotated password or CA rolls the workloads.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};

use super::{CredentialsCopy, credentials_copy, credentials_hash, credentials_secret};
use crate::labels;
use crate::reconcile::validate::{TopicMode, ValidatedStream};

/// What dereference found of the Secrets a [`CredentialsCopy`] copies from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CopiedCredentials {
    /// The stream copies nothing from the Kafka namespace.
    #[default]
    NotNeeded,
    /// A source Secret (or key) does not exist yet: why.
    Pending(String),
    /// The values, by their key in the stream's credentials Secret.
    Copied(BTreeMap<String, ByteString>),
}

impl CopiedCredentials {
    /// Why the credentials are not there yet, for the status.
    pub fn pending(&self) -> Option<&str> {
        match self {
            Self::Pending(why) => Some(why),
            Self::NotNeeded | Self::Copied(_) => None,
        }
    }
}

/// What `stream` copies from the Kafka cluster's namespace: only a Strimzi-managed topic's
/// stream can, when its spec asks for the KafkaUser's password or the cluster CA.
pub fn credentials_to_copy(stream: &ValidatedStream) -> Option<CredentialsCopy> {
    let plan = stream.kafka()?;
    match &plan.management {
        TopicMode::Strimzi { cluster, namespace } => plan
            .security
            .copies_credentials()
            .then(|| credentials_copy(stream, &plan.security, cluster, namespace)),
        TopicMode::Admin | TopicMode::External => None,
    }
}

/// The stream's credentials Secret, when everything it copies was found.
pub(super) fn copied_secret(
    stream: &ValidatedStream,
    copy: Option<&CredentialsCopy>,
    copied: &CopiedCredentials,
) -> Option<Secret> {
    match (copy, copied) {
        (Some(copy), CopiedCredentials::Copied(data)) => {
            Some(credentials_secret(stream, copy, data.clone()))
        }
        _ => None,
    }
}

/// Puts the hash of the copied credentials on the pod templates: a rotated password or CA
/// changes the template and so rolls the workloads, which read them only at start.
pub(super) fn stamp_credentials_hash(templates: &mut [PodTemplateSpec], secret: &Secret) {
    let hash = credentials_hash(secret.data.as_ref().unwrap_or(&BTreeMap::new()));
    for template in templates {
        template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(labels::CREDENTIALS_HASH.to_owned(), hash.clone());
    }
}
