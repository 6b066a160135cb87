//! The names the operator stamps on what it creates: labels, annotations, the field manager and
//! the finalizer. Pruning, watches and the cross-namespace KafkaTopic lookup all select by these.

use std::collections::BTreeMap;

/// The one server-side-apply field manager for every object the operator writes.
pub const FIELD_MANAGER: &str = "metricstream-operator";
/// Added only while the stream has something ownerReferences cannot collect.
pub const FINALIZER: &str = "metricstream.dev/cleanup";

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const STREAM: &str = "metricstream.dev/stream";
/// On a KafkaTopic in another namespace: where its MetricStream lives.
pub const OWNER_NAMESPACE: &str = "metricstream.dev/owner-namespace";
pub const OWNER_NAME: &str = "metricstream.dev/owner-name";
/// The label Strimzi's Topic Operator selects KafkaTopics by.
pub const STRIMZI_CLUSTER: &str = "strimzi.io/cluster";

/// Pod-template annotation: hash of the rendered config, so a config change rolls the pods.
pub const CONFIG_HASH: &str = "metricstream.dev/config-hash";
/// On pod templates: a hash of the copied Kafka credentials, so a rotated password or CA rolls
/// the workloads (librdkafka reads them once, at start).
pub const CREDENTIALS_HASH: &str = "metricstream.dev/credentials-hash";
/// Set on data the operator stopped managing but kept (deletionPolicy Retain).
pub const RETAINED: &str = "metricstream.dev/retained";

pub const APP_NAME: &str = "metricstream";
pub const MANAGER_VALUE: &str = "metricstream-operator";

/// Selects everything the operator manages (used to narrow the watches).
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER_VALUE}")
}

/// Selects what the operator manages for one stream in its namespace.
pub fn stream_selector(stream: &str) -> String {
    format!("{STREAM}={stream},{MANAGED_BY}={MANAGER_VALUE}")
}

/// Selects the KafkaTopics of one stream, wherever they live.
pub fn topic_owner_selector(namespace: &str, stream: &str) -> String {
    format!("{OWNER_NAMESPACE}={namespace},{OWNER_NAME}={stream},{MANAGED_BY}={MANAGER_VALUE}")
}

/// The labels on every object of `stream` with the given component.
pub fn standard(stream: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_owned(), APP_NAME.to_owned()),
        (INSTANCE.to_owned(), stream.to_owned()),
        (COMPONENT.to_owned(), component.to_owned()),
        (MANAGED_BY.to_owned(), MANAGER_VALUE.to_owned()),
        (STREAM.to_owned(), stream.to_owned()),
    ])
}

/// The stable pod selector of one workload (Deployment selectors are immutable: keep it small).
pub fn selector(stream: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COMPONENT.to_owned(), component.to_owned()),
        (STREAM.to_owned(), stream.to_owned()),
    ])
}

/// [`selector`] as a label selector's text (`key=value,...`), as the scale subresource reports.
pub fn selector_text(stream: &str, component: &str) -> String {
    selector(stream, component)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// FNV-1a, 64 bit: stable across Rust releases and operator builds (std's hasher is not), so a
/// rebuilt operator computes the same config hash and does not roll every workload.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Kubernetes' name rules, here because both the operator's flags (label selectors) and the
/// stream validation check names with them.
/// RFC 1123 label: 1..=63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty() && text.len() <= 253 && text.split('.').all(is_dns_label)
}

/// Longest KafkaTopic name we derive; longer ones are shortened with a hash.
pub const MAX_TOPIC_OBJECT_NAME: usize = 63;

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
        let hash = stable_hash(format!("{namespace}/{name}").as_bytes());
        let suffix = format!("-{:08x}", hash as u32);
        sanitized.truncate(MAX_TOPIC_OBJECT_NAME - suffix.len());
        while sanitized.ends_with(['-', '.']) {
            sanitized.pop();
        }
        sanitized.push_str(&suffix);
    }
    sanitized
}
