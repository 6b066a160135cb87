//! The network side of a stream: the ingest Service, the NetworkPolicies and the
//! PodDisruptionBudgets.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{ADMIN_PORT, COMPONENT_INGEST, Desired, INGEST_PORT, Role, metadata};
use crate::config::WorkloadDefaults;
use crate::labels;
use crate::reconcile::validate::ValidatedStream;

pub(super) fn ingest_service(stream: &ValidatedStream) -> Service {
    Service {
        metadata: metadata(
            stream,
            Desired::ingest_name(&stream.name),
            COMPONENT_INGEST,
            true,
        ),
        spec: Some(ServiceSpec {
            selector: Some(labels::selector(&stream.name, COMPONENT_INGEST)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: INGEST_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The label the API server sets on every namespace, holding its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub(super) fn tcp_port(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// The workload's pods admit the admin port from the scraping namespaces' pods and, on ingest,
/// the ingest port from anywhere; nothing else. Egress is not restricted (module docs).
pub(super) fn network_policy(
    stream: &ValidatedStream,
    defaults: &WorkloadDefaults,
    role: Role,
) -> NetworkPolicy {
    let component = role.component();
    let mut ingress = Vec::new();
    if role == Role::Ingest {
        // No `from`: every source, inside the cluster or not.
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![tcp_port(INGEST_PORT)]),
        });
    }
    let mut admin_sources = vec![NetworkPolicyPeer {
        namespace_selector: Some(defaults.posture.metrics_namespace_selector.clone()),
        ..Default::default()
    }];
    // The operator reads the consumers' /readyz (the SinkAvailable condition).
    if role == Role::Consumer
        && let Some(namespace) = &defaults.posture.operator_namespace
    {
        admin_sources.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some([(NAMESPACE_NAME_LABEL.to_owned(), namespace.clone())].into()),
                match_expressions: None,
            }),
            ..Default::default()
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        from: Some(admin_sources),
        ports: Some(vec![tcp_port(ADMIN_PORT)]),
    });
    NetworkPolicy {
        metadata: metadata(stream, role.object_name(&stream.name), component, true),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    }
}

/// One pod of the workload may be evicted at a time, and an unhealthy one always.
pub(super) fn disruption_budget(stream: &ValidatedStream, role: Role) -> PodDisruptionBudget {
    let component = role.component();
    PodDisruptionBudget {
        metadata: metadata(stream, role.object_name(&stream.name), component, true),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            min_available: None,
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector(&stream.name, component)),
                match_expressions: None,
            }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
        }),
        ..Default::default()
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

    fn network_policy<'a>(desired: &'a Desired, name: &str) -> &'a NetworkPolicySpec {
        desired
            .network_policies
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .and_then(|n| n.spec.as_ref())
            .unwrap_or_else(|| panic!("NetworkPolicy {name}"))
    }

    fn ports(rule: &NetworkPolicyIngressRule) -> Vec<(i32, String)> {
        rule.ports
            .iter()
            .flatten()
            .map(|p| {
                let port = match p.port {
                    Some(IntOrString::Int(port)) => port,
                    ref other => panic!("a numeric port, got {other:?}"),
                };
                (port, p.protocol.clone().unwrap_or_default())
            })
            .collect()
    }

    #[test]
    fn ingest_admits_its_port_from_anywhere_and_the_admin_port_from_scrapers_only() {
        let desired = built(&kafka_stream(TopicManagement::Strimzi));
        let names: Vec<_> = desired
            .network_policies
            .iter()
            .map(|n| n.metadata.name.clone().expect("name"))
            .collect();
        assert_eq!(names, ["web-ingest", "web-consumer"]);

        let ingest = network_policy(&desired, "web-ingest");
        assert_eq!(
            ingest
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector("web", COMPONENT_INGEST)),
            "selects exactly the ingest pods (the Deployment's selector)"
        );
        assert_eq!(ingest.policy_types, Some(vec!["Ingress".to_owned()]));
        assert!(ingest.egress.is_none(), "egress stays open");
        let rules = ingest.ingress.as_ref().expect("ingress rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(ports(&rules[0]), [(INGEST_PORT, "TCP".to_owned())]);
        assert!(
            rules[0].from.is_none(),
            "the ingest port admits every source"
        );
        assert_eq!(ports(&rules[1]), [(ADMIN_PORT, "TCP".to_owned())]);
        let peers = rules[1]
            .from
            .as_ref()
            .expect("the admin port names its sources");
        assert_eq!(peers.len(), 1);
        assert_eq!(
            peers[0].namespace_selector,
            Some(LabelSelector::default()),
            "by default pods of every namespace (and never outside sources)"
        );
        assert!(peers[0].pod_selector.is_none() && peers[0].ip_block.is_none());

        let consumer = network_policy(&desired, "web-consumer");
        assert_eq!(
            consumer
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(labels::selector("web", COMPONENT_CONSUMER))
        );
        let rules = consumer.ingress.as_ref().expect("ingress rules");
        assert_eq!(rules.len(), 1, "consumers serve only the admin port");
        assert_eq!(ports(&rules[0]), [(ADMIN_PORT, "TCP".to_owned())]);
        assert!(rules[0].from.is_some());
        assert!(consumer.egress.is_none());

        // The policies' ports are the ports the containers listen on.
        for (name, expected) in [
            ("web-ingest", vec![INGEST_PORT, ADMIN_PORT]),
            ("web-consumer", vec![ADMIN_PORT]),
        ] {
            let listening: Vec<i32> = pod_spec(deployment(&desired, name)).containers[0]
                .ports
                .iter()
                .flatten()
                .map(|p| p.container_port)
                .collect();
            assert_eq!(listening, expected, "{name}");
        }
    }

    #[test]
    fn the_scrape_namespaces_come_from_the_operator_settings() {
        let selector =
            crate::config::parse_label_selector("kubernetes.io/metadata.name=monitoring")
                .expect("valid");
        let mut defaults = WorkloadDefaults::default();
        defaults.posture.metrics_namespace_selector = selector.clone();
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        for name in ["web-ingest", "web-consumer"] {
            let rules = network_policy(&desired, name)
                .ingress
                .clone()
                .expect("rules");
            let admin = rules.last().expect("the admin rule");
            assert_eq!(
                admin.from.as_ref().expect("peers")[0]
                    .namespace_selector
                    .as_ref(),
                Some(&selector),
                "{name}"
            );
        }
        let json = serde_json::to_value(&desired.network_policies[0]).expect("json");
        assert_eq!(
            json["spec"]["ingress"][1]["from"][0]["namespaceSelector"],
            serde_json::json!({ "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } })
        );

        defaults.posture.network_policies = false;
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        assert!(
            desired.network_policies.is_empty(),
            "switched off: none (and prune removes old ones)"
        );
    }

    #[test]
    fn the_operator_namespace_may_read_the_consumers_readiness_only() {
        let mut defaults = WorkloadDefaults::default();
        defaults.posture.metrics_namespace_selector =
            crate::config::parse_label_selector("kubernetes.io/metadata.name=monitoring")
                .expect("valid");
        defaults.posture.operator_namespace = Some("metricstream-system".into());
        let desired = build(
            &validate(&file_stream()).expect("valid"),
            &defaults,
            &CopiedCredentials::NotNeeded,
        );
        let sources = |name: &str| {
            let rules = network_policy(&desired, name)
                .ingress
                .clone()
                .expect("rules");
            let admin = rules.last().expect("the admin rule").clone();
            assert_eq!(ports(&admin), [(ADMIN_PORT, "TCP".to_owned())]);
            serde_json::to_value(admin.from).expect("json")
        };
        assert_eq!(
            sources("web-consumer"),
            serde_json::json!([
                { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } } },
                { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "metricstream-system" } } },
            ])
        );
        assert_eq!(
            sources("web-ingest"),
            serde_json::json!([
                { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "monitoring" } } },
            ]),
            "the operator reads only the consumers"
        );
    }

    #[test]
    fn only_pods_that_can_move_alone_get_a_disruption_budget() {
        // File backend: every pod shares the queue volume and moves with it; a budget could
        // only hang a drain.
        assert!(built(&file_stream()).disruption_budgets.is_empty());

        let desired = built(&kafka_stream(TopicManagement::Admin));
        assert_eq!(
            desired.disruption_budgets.len(),
            1,
            "consumers share the sink volume"
        );
        let budget = &desired.disruption_budgets[0];
        assert_eq!(budget.metadata.name.as_deref(), Some("web-ingest"));
        assert!(budget.metadata.owner_references.is_some());
        let spec = budget.spec.as_ref().expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.min_available, None,
            "minAvailable would block a lone replica"
        );
        assert_eq!(
            spec.unhealthy_pod_eviction_policy.as_deref(),
            Some("AlwaysAllow")
        );
        let ingest = deployment(&desired, "web-ingest");
        assert_eq!(
            spec.selector.as_ref().and_then(|s| s.match_labels.clone()),
            ingest
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
            "the budget covers exactly the Deployment's pods"
        );
        // ... which indeed mount no shared volume, while the consumers do.
        assert!(pod_spec(ingest).affinity.is_none());
        assert!(
            pod_spec(deployment(&desired, "web-consumer"))
                .affinity
                .is_some()
        );
    }

    #[test]
    fn the_ingest_service_names_its_ports() {
        let desired = built(&file_stream());
        let service = &desired.services[0];
        assert_eq!(service.metadata.name.as_deref(), Some("web-ingest"));
        let ports = service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .expect("ports");
        let named: Vec<_> = ports
            .iter()
            .map(|p| (p.name.clone().expect("name"), p.port))
            .collect();
        assert_eq!(
            named,
            [("http".to_owned(), 8080), ("admin".to_owned(), 9090)]
        );
    }
}
