//! Every kind of request the operator makes of the API server, as the RBAC access that allows
//! exactly those and nothing more. The chart's Roles and ClusterRoles must grant precisely this
//! table (`operator/tests/chart.rs` compares them), and the envtest that runs the operator as the
//! chart's ServiceAccount shows the grant is enough. A new API call needs a row here and a rule
//! in the chart (`templates/_helpers.tpl`); either alone fails a test.
//!
//! Where each verb comes from:
//! - `list`, `watch`: the controller's watches (`controller::run`; Pods only watched, by the
//!   managed-by label, to say why a workload does not run), the prune LISTs
//!   (`apply::prune`), the CRD wait at startup (`main::wait_for_crd`), the KafkaTopic lookup
//!   (`apply::strimzi_topics_of`).
//! - `patch`: server-side apply of every child (`apply::server_side_apply`), the merge patches
//!   that release retained data (`apply::let_go`) and set finalizers, the status apply.
//! - `create`: a server-side apply that creates its object is authorized as a create too.
//! - `delete`: prune and cleanup (`apply::let_go`).
//! - Events: kube's `Recorder` creates an Event and patches it when it repeats.
//! - Leases (`leader`): `get`, then `create` or `update` (a replace, guarded by resourceVersion).
//! - `metricstreams/finalizers` `update`: no request uses it; the children's ownerReferences set
//!   `blockOwnerDeletion`, which the OwnerReferencesPermissionEnforcement admission plugin (on in
//!   OpenShift and many hardened clusters) allows only to who may update the owner's finalizers.
//!
//! - Secrets: `<stream>-kafka-credentials` is applied, prune-listed and deleted in the stream's
//!   namespace (never watched or cached), where the Secrets a stream names for the operator's own
//!   Kafka client (topicManagement admin, external) are read by name; in the Kafka namespace, the Secrets Strimzi makes (a
//!   created KafkaUser's password, the cluster CA) are read by name (`apply::apply_credentials`;
//!   chart value `rbac.strimziSecrets`).
//!
//! No other `get` than the Lease and those Secrets: the reconciler reads children from its watch
//! caches and from the responses of its own writes.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Resource;

use crate::crd::MetricStream;
use crate::strimzi::{KafkaTopic, KafkaUser};

/// Where a grant applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// The watched namespace (a Role) or, without `--namespace`, every namespace (a ClusterRole).
    Streams,
    /// Every namespace even in single-namespace mode: KafkaTopics live in the Kafka cluster's
    /// namespace (chart value `rbac.kafkaTopics`).
    KafkaTopics,
    /// The operator's own namespace, only with leader election; `get` and `update` only on the
    /// Lease the operator is configured with (create cannot be limited by name).
    LeaderElection,
}

/// Verbs on one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub scope: Scope,
    /// The API group: "" for the core group.
    pub group: String,
    /// The plural resource name, with `/subresource` where it applies.
    pub resource: String,
    pub verbs: Vec<&'static str>,
}

/// What the operator does with the children it owns: watch and prune-list them, apply
/// (patch, or create the first time), delete what it no longer wants.
const CHILD_VERBS: &[&str] = &["list", "watch", "create", "patch", "delete"];

fn access<K: Resource<DynamicType = ()>>(
    scope: Scope,
    subresource: Option<&str>,
    verbs: &[&'static str],
) -> Access {
    let plural = K::plural(&());
    Access {
        scope,
        group: K::group(&()).into_owned(),
        resource: match subresource {
            Some(sub) => format!("{plural}/{sub}"),
            None => plural.into_owned(),
        },
        verbs: verbs.to_vec(),
    }
}

/// Everything the operator needs.
pub fn required() -> Vec<Access> {
    use Scope::*;
    vec![
        access::<MetricStream>(Streams, None, &["list", "watch", "patch"]),
        access::<MetricStream>(Streams, Some("status"), &["patch"]),
        access::<MetricStream>(Streams, Some("finalizers"), &["update"]),
        access::<ConfigMap>(Streams, None, CHILD_VERBS),
        access::<Service>(Streams, None, CHILD_VERBS),
        access::<PersistentVolumeClaim>(Streams, None, CHILD_VERBS),
        access::<Deployment>(Streams, None, CHILD_VERBS),
        // The ingest of a stream that spills. Its claims are made by the StatefulSet
        // controller, never by the operator, which neither reads nor deletes them.
        access::<StatefulSet>(Streams, None, CHILD_VERBS),
        access::<NetworkPolicy>(Streams, None, CHILD_VERBS),
        access::<PodDisruptionBudget>(Streams, None, CHILD_VERBS),
        // The workloads' pods: read from a watch cache for the status, never written.
        access::<Pod>(Streams, None, &["list", "watch"]),
        access::<Event>(Streams, None, &["create", "patch"]),
        access::<Secret>(Streams, None, &["get", "list", "create", "patch", "delete"]),
        access::<KafkaTopic>(KafkaTopics, None, CHILD_VERBS),
        access::<KafkaUser>(KafkaTopics, None, &["list", "create", "patch", "delete"]),
        access::<Secret>(KafkaTopics, None, &["get"]),
        access::<Lease>(LeaderElection, None, &["get", "create", "update"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_real_groups_and_resources_once() {
        let table = required();
        let find = |resource: &str| {
            table
                .iter()
                .find(|a| a.resource == resource)
                .unwrap_or_else(|| panic!("{resource}"))
        };
        assert_eq!(find("networkpolicies").group, "networking.k8s.io");
        assert_eq!(find("poddisruptionbudgets").group, "policy");
        assert_eq!(find("events").group, "events.k8s.io");
        assert_eq!(find("leases").group, "coordination.k8s.io");
        assert_eq!(find("kafkatopics").group, "kafka.strimzi.io");
        assert_eq!(find("metricstreams/status").group, "metricstream.dev");
        assert_eq!(find("configmaps").group, "");
        assert_eq!(find("kafkausers").group, "kafka.strimzi.io");
        assert_eq!(
            find("pods").verbs,
            ["list", "watch"],
            "pods are only observed"
        );
        let mut keys: Vec<_> = table
            .iter()
            .map(|a| (a.scope, &a.group, &a.resource))
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), table.len(), "one row per resource and scope");
        let read_by_get: Vec<_> = table
            .iter()
            .filter(|a| a.verbs.contains(&"get"))
            .map(|a| (a.scope, a.resource.as_str()))
            .collect();
        assert_eq!(
            read_by_get,
            [
                (Scope::Streams, "secrets"),
                (Scope::KafkaTopics, "secrets"),
                (Scope::LeaderElection, "leases")
            ],
            "only Secrets and the Lease are read by GET"
        );
        assert!(
            table
                .iter()
                .filter(|a| a.resource == "secrets")
                .all(|a| !a.verbs.contains(&"watch")),
            "Secrets are never watched (nor cached)"
        );
    }
}
