//! Apply and prune: the only step that writes children.
//!
//! Apply is server-side apply with one field manager and `force` (the operator is the source of
//! truth for every field it sets; a field it stops setting is removed), in two steps: the
//! ConfigMap, volumes, topic, Services, NetworkPolicies and PodDisruptionBudgets (concurrently)
//! before the Deployments that use them, so a workload never starts without its config or
//! unprotected by its NetworkPolicy. A child unchanged since its last apply is
//! skipped and observed in the watch cache instead ([`super::skip`]).
//!
//! Prune lists each kind by the stream's labels and removes what this run no longer wants, so a
//! backend switch or a removed feature leaves nothing behind. Data (PVCs, KafkaTopics) is the
//! exception: under deletionPolicy Retain it is kept and only loses the managed-by label, so it
//! is visibly orphaned and never silently deleted.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::build::{
    COMPONENT_CONSUMER, COMPONENT_INGEST, CREDENTIALS_CA_KEY, CREDENTIALS_PASSWORD_KEY, Desired,
    DesiredTopic, credentials_hash, credentials_secret,
};
use super::skip::{self, Mark, Version};
use super::status::{
    BackendObservation, Observed, StrimziTopicState, VolumeObservation, WorkloadObservation,
};
use super::validate::ValidatedStream;
use crate::context::Context;
use crate::crd::DeletionPolicy;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::labels;
use crate::strimzi::{KafkaTopic, KafkaUser};

/// What applying found out, for the status step and for Events.
pub struct Applied {
    pub observed: Observed,
    /// A Normal Event worth publishing about the topic (created, grown).
    pub topic_change: Option<crate::topics::TopicChanged>,
    /// The admin API failed: reported in status, then retried with backoff.
    pub topic_error: Option<String>,
}

/// Server-side applies `object` under the operator's field manager, with force.
pub async fn server_side_apply<K>(api: &Api<K>, object: &K) -> Result<K, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingMetadata("name"))?;
    api.patch(
        &name,
        &PatchParams::apply(labels::FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .doing(|| format!("applying {} {name}", K::kind(&Default::default())))
}

fn namespaced<K>(ctx: &Context, namespace: &str) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    Api::namespaced(ctx.client.clone(), namespace)
}

/// A child that is applied only when [`skip::may_skip`] says it may have changed: the desired
/// object, its API, and what the watch cache shows of it.
struct Child<'a, K> {
    api: &'a Api<K>,
    desired: &'a K,
    /// The cached metadata; `None` when the cache does not have it (or there is no cache).
    live: Option<ObjectMeta>,
    by_generation: bool,
}

/// At most this long after a child's last apply is it skipped: half the resync period, so each
/// periodic resync applies everything.
fn full_apply_every(ctx: &Context) -> Duration {
    ctx.resync / 2
}

/// Applies the child unless it is unchanged since the last apply; the applied object, or
/// `None` when skipped. A successful apply is remembered for the next reconcile.
async fn apply_child<K>(ctx: &Context, uid: &str, child: Child<'_, K>) -> Result<Option<K>, Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let name = child.desired.meta().name.as_deref().unwrap_or_default();
    let key = format!("{}/{name}", K::kind(&Default::default()));
    let fingerprint = skip::fingerprint(child.desired);
    let live = child
        .live
        .as_ref()
        .and_then(|meta| Version::of(meta, child.by_generation));
    let mark = ctx.applied.get(uid, &key);
    let now = Instant::now();
    if skip::may_skip(
        mark.as_ref(),
        fingerprint,
        live.as_ref(),
        now,
        full_apply_every(ctx),
    ) {
        ctx.metrics.applies_skipped.inc();
        return Ok(None);
    }
    let applied = server_side_apply(child.api, child.desired).await?;
    if let Some(version) = Version::of(applied.meta(), child.by_generation) {
        let mark = Mark {
            fingerprint,
            version,
            applied_at: now,
        };
        ctx.applied.record(uid, key, mark);
    }
    Ok(Some(applied))
}

/// The object named like `desired` in namespace `ns` in the watch cache, if any.
fn cached<K, D>(store: Option<&Store<K>>, ns: &str, desired: &D) -> Option<Arc<K>>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    D: Resource,
{
    let name = desired.meta().name.as_deref()?;
    store?.get(&ObjectRef::new(name).within(ns))
}

/// Applies what may have changed in `desired` and observes the results: first, concurrently,
/// all that the workloads use (ConfigMap, volumes, topic, Services), then the Deployments. A
/// child that was skipped is observed in the watch cache.
pub async fn apply_all(
    ctx: &Context,
    stream: &ValidatedStream,
    desired: &Desired,
) -> Result<Applied, Error> {
    let ns = stream.namespace.as_str();
    let uid = stream.uid.as_str();
    let stores = ctx.child_stores();
    let stores = stores.as_deref();
    let config_maps = namespaced::<ConfigMap>(ctx, ns);
    let pvcs = namespaced::<PersistentVolumeClaim>(ctx, ns);
    let services = namespaced::<Service>(ctx, ns);
    let config_map = Child {
        api: &config_maps,
        desired: &desired.config_map,
        live: cached(stores.map(|s| &s.config_maps), ns, &desired.config_map)
            .map(|m| m.metadata.clone()),
        by_generation: false,
    };
    let cached_pvcs: Vec<Option<Arc<PersistentVolumeClaim>>> = desired
        .pvcs
        .iter()
        .map(|pvc| cached(stores.map(|s| &s.pvcs), ns, pvc))
        .collect();
    let network_policies = namespaced::<NetworkPolicy>(ctx, ns);
    let budgets = namespaced::<PodDisruptionBudget>(ctx, ns);
    let (_, applied_pvcs, topic, _, _, _, credentials) = futures::try_join!(
        apply_child(ctx, uid, config_map),
        try_join_all(desired.pvcs.iter().zip(&cached_pvcs).map(|(pvc, live)| {
            let child = Child {
                api: &pvcs,
                desired: pvc,
                live: live.as_ref().map(|l| l.metadata.clone()),
                by_generation: false,
            };
            apply_child(ctx, uid, child)
        })),
        apply_topic(ctx, ns, desired),
        try_join_all(desired.services.iter().map(|service| {
            let live = cached(stores.map(|s| &s.services), ns, service);
            let child = Child {
                api: &services,
                desired: service,
                live: live.map(|l| l.metadata.clone()),
                by_generation: false,
            };
            apply_child(ctx, uid, child)
        })),
        try_join_all(desired.network_policies.iter().map(|policy| {
            let live = cached(stores.map(|s| &s.network_policies), ns, policy);
            let child = Child {
                api: &network_policies,
                desired: policy,
                live: live.map(|l| l.metadata.clone()),
                by_generation: false,
            };
            apply_child(ctx, uid, child)
        })),
        // The disruption controller writes a budget's status whenever its pods come and go:
        // compared by generation, like a Deployment.
        try_join_all(desired.disruption_budgets.iter().map(|budget| {
            let live = cached(stores.map(|s| &s.disruption_budgets), ns, budget);
            let child = Child {
                api: &budgets,
                desired: budget,
                live: live.map(|l| l.metadata.clone()),
                by_generation: true,
            };
            apply_child(ctx, uid, child)
        })),
        apply_credentials(ctx, stream, desired),
    )?;
    let applied_pvcs: Vec<PersistentVolumeClaim> = applied_pvcs
        .into_iter()
        .zip(cached_pvcs)
        .filter_map(|(applied, live)| applied.or_else(|| live.map(|l| (*l).clone())))
        .collect();
    let (backend, topic_change, topic_error) = match topic {
        TopicOutcome::Observed(backend) => (backend, None, None),
        TopicOutcome::Admin(Ok((partitions, change))) => {
            (BackendObservation::AdminTopic(Ok(partitions)), change, None)
        }
        TopicOutcome::Admin(Err(error)) => (
            BackendObservation::AdminTopic(Err(error.clone())),
            None,
            Some(error),
        ),
        TopicOutcome::NoTopic => {
            let volume = |role: &'static str, name: String| {
                let phase = applied_pvcs
                    .iter()
                    .find(|pvc| pvc.name_any() == name)
                    .map(|pvc| {
                        pvc.status
                            .as_ref()
                            .and_then(|s| s.phase.clone())
                            .unwrap_or_else(|| "Pending".into())
                    });
                VolumeObservation { role, name, phase }
            };
            let volumes = vec![
                volume("queue", Desired::queue_pvc_name(&stream.name)),
                volume("sink", Desired::sink_pvc_name(&stream.name)),
            ];
            (BackendObservation::Volumes(volumes), None, None)
        }
    };

    let deployments = namespaced::<Deployment>(ctx, ns);
    let cached_deployments: Vec<Option<Arc<Deployment>>> = desired
        .deployments
        .iter()
        .map(|deployment| cached(stores.map(|s| &s.deployments), ns, deployment))
        .collect();
    // Copied credentials roll the workloads when they change (a rotated password or CA).
    let desired_deployments: Vec<Deployment> = match &credentials {
        CredentialsOutcome::Copied { hash } => desired
            .deployments
            .iter()
            .cloned()
            .map(|mut deployment| {
                if let Some(template) = deployment
                    .spec
                    .as_mut()
                    .and_then(|spec| spec.template.metadata.as_mut())
                {
                    template
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(labels::CREDENTIALS_HASH.to_owned(), hash.clone());
                }
                deployment
            })
            .collect(),
        CredentialsOutcome::NotNeeded | CredentialsOutcome::Pending(_) => {
            desired.deployments.clone()
        }
    };
    let applied_deployments =
        try_join_all(desired_deployments.iter().zip(&cached_deployments).map(
            |(deployment, live)| {
                let child = Child {
                    api: &deployments,
                    desired: deployment,
                    live: live.as_ref().map(|l| l.metadata.clone()),
                    by_generation: true,
                };
                apply_child(ctx, uid, child)
            },
        ))
        .await?;
    let applied_deployments: Vec<Deployment> = applied_deployments
        .into_iter()
        .zip(cached_deployments)
        .filter_map(|(applied, live)| applied.or_else(|| live.map(|l| (*l).clone())))
        .collect();
    // The workloads' pods, from the watch cache (none without one: the status then says only
    // what the Deployments say).
    let pods = stores.map(|s| s.pods.state()).unwrap_or_default();
    let observe = |name: String, component: &str, wanted: i32| {
        let selector = labels::selector(&stream.name, component);
        let pods = pods.iter().map(|pod| pod.as_ref()).filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(ns)
                && selector
                    .iter()
                    .all(|(key, value)| pod.labels().get(key) == Some(value))
        });
        WorkloadObservation::of(
            &name,
            wanted,
            applied_deployments.iter().find(|d| d.name_any() == name),
            pods,
        )
    };
    Ok(Applied {
        observed: Observed {
            backend,
            credentials_pending: match credentials {
                CredentialsOutcome::Pending(why) => Some(why),
                CredentialsOutcome::NotNeeded | CredentialsOutcome::Copied { .. } => None,
            },
            ingest: observe(
                Desired::ingest_name(&stream.name),
                COMPONENT_INGEST,
                stream.ingest.replicas,
            ),
            consumer: observe(
                Desired::consumer_name(&stream.name),
                COMPONENT_CONSUMER,
                stream.consumer.replicas,
            ),
        },
        topic_change,
        topic_error,
    })
}

/// What the credentials step did.
enum CredentialsOutcome {
    /// The stream copies nothing from the Kafka namespace.
    NotNeeded,
    /// A source Secret (or key) does not exist yet: why.
    Pending(String),
    /// The stream's credentials Secret holds the copies; their hash.
    Copied { hash: String },
}

/// Applies the KafkaUser, then copies its password and the Strimzi cluster CA (as the spec
/// asks) into the stream's credentials Secret. Workloads in the stream's namespace cannot mount
/// Secrets of the Kafka namespace, where Strimzi makes them.
async fn apply_credentials(
    ctx: &Context,
    stream: &ValidatedStream,
    desired: &Desired,
) -> Result<CredentialsOutcome, Error> {
    if let Some(user) = &desired.kafka_user
        && ctx.strimzi_installed
    {
        let user_ns = user
            .namespace()
            .ok_or(Error::MissingMetadata("namespace"))?;
        server_side_apply(&namespaced::<KafkaUser>(ctx, &user_ns), user.as_ref()).await?;
    }
    let Some(copy) = &desired.credentials else {
        return Ok(CredentialsOutcome::NotNeeded);
    };
    let sources = namespaced::<Secret>(ctx, &copy.kafka_namespace);
    let wanted = [
        (
            copy.password_from.as_deref(),
            "password",
            CREDENTIALS_PASSWORD_KEY,
            "Strimzi's User Operator makes it for the KafkaUser",
        ),
        (
            copy.ca_from.as_deref(),
            "ca.crt",
            CREDENTIALS_CA_KEY,
            "Strimzi's Cluster Operator makes it for the Kafka cluster",
        ),
    ];
    let mut data = BTreeMap::new();
    let mut missing = Vec::new();
    for (source, source_key, key, who) in wanted {
        let Some(source) = source else { continue };
        let found = sources
            .get_opt(source)
            .await
            .doing(|| format!("reading Secret {}/{source}", copy.kafka_namespace))?;
        match found.and_then(|secret| secret.data?.remove(source_key)) {
            Some(value) => {
                data.insert(key.to_owned(), value);
            }
            None => missing.push(format!(
                "key {source_key} of Secret {}/{source} ({who})",
                copy.kafka_namespace
            )),
        }
    }
    if !missing.is_empty() {
        return Ok(CredentialsOutcome::Pending(format!(
            "waiting for {}",
            missing.join(" and ")
        )));
    }
    let hash = credentials_hash(&data);
    let secret = credentials_secret(stream, copy, data);
    server_side_apply(&namespaced::<Secret>(ctx, &stream.namespace), &secret).await?;
    Ok(CredentialsOutcome::Copied { hash })
}

enum TopicOutcome {
    /// File backend: the queue volume is the backend.
    NoTopic,
    Observed(BackendObservation),
    Admin(Result<(u32, Option<crate::topics::TopicChanged>), String>),
}

/// The security the operator's own Kafka client uses for `request`.
async fn operator_security(
    ctx: &Context,
    stream_ns: &str,
    request: &crate::reconcile::build::TopicRequest,
) -> Result<metricstream_backend::kafka::KafkaSecurity, String> {
    crate::topics::resolve_security(&namespaced::<Secret>(ctx, stream_ns), &request.security).await
}

async fn apply_topic(
    ctx: &Context,
    stream_ns: &str,
    desired: &Desired,
) -> Result<TopicOutcome, Error> {
    Ok(match &desired.topic {
        DesiredTopic::None => TopicOutcome::NoTopic,
        DesiredTopic::Strimzi(_) if !ctx.strimzi_installed => {
            TopicOutcome::Observed(BackendObservation::StrimziNotInstalled)
        }
        DesiredTopic::Strimzi(topic) => {
            let topic_ns = topic
                .namespace()
                .ok_or(Error::MissingMetadata("namespace"))?;
            let applied =
                server_side_apply(&namespaced::<KafkaTopic>(ctx, &topic_ns), topic).await?;
            TopicOutcome::Observed(BackendObservation::StrimziTopic(Some(
                StrimziTopicState::of(&applied),
            )))
        }
        DesiredTopic::Admin(request) => {
            TopicOutcome::Admin(match operator_security(ctx, stream_ns, request).await {
                Ok(security) => ctx.topics.ensure(request, &security).await,
                Err(error) => Err(error),
            })
        }
        DesiredTopic::External(request) => {
            let partitions = match operator_security(ctx, stream_ns, request).await {
                Ok(security) => {
                    ctx.topics
                        .partitions(&request.bootstrap_servers, &request.topic, &security)
                        .await
                }
                Err(error) => Err(error),
            };
            TopicOutcome::Observed(BackendObservation::ExternalTopic(partitions))
        }
    })
}

/// One object prune removed or let go of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pruned {
    Deleted { kind: String, name: String },
    Retained { kind: String, name: String },
}

/// Removes the stream's objects that `desired` no longer contains.
pub async fn prune(
    ctx: &Context,
    stream: &ValidatedStream,
    desired: &Desired,
) -> Result<Vec<Pruned>, Error> {
    let ns = stream.namespace.as_str();
    let selector = labels::stream_selector(&stream.name);
    let names = |metas: Vec<&kube::api::ObjectMeta>| -> BTreeSet<String> {
        metas.into_iter().filter_map(|m| m.name.clone()).collect()
    };
    let retain = stream.deletion_policy == DeletionPolicy::Retain;
    let mut pruned = Vec::new();

    let keep = names(vec![&desired.config_map.metadata]);
    prune_kind(
        ctx,
        &namespaced::<ConfigMap>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    let keep = names(desired.services.iter().map(|s| &s.metadata).collect());
    prune_kind(
        ctx,
        &namespaced::<Service>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    let keep = names(desired.deployments.iter().map(|d| &d.metadata).collect());
    prune_kind(
        ctx,
        &namespaced::<Deployment>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    let keep = names(
        desired
            .network_policies
            .iter()
            .map(|n| &n.metadata)
            .collect(),
    );
    prune_kind(
        ctx,
        &namespaced::<NetworkPolicy>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    let keep = names(
        desired
            .disruption_budgets
            .iter()
            .map(|b| &b.metadata)
            .collect(),
    );
    prune_kind(
        ctx,
        &namespaced::<PodDisruptionBudget>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    // The credentials Secret is the only Secret the operator makes in the stream's namespace.
    let keep: BTreeSet<String> = desired
        .credentials
        .iter()
        .map(|copy| copy.secret_name.clone())
        .collect();
    prune_kind(
        ctx,
        &namespaced::<Secret>(ctx, ns),
        &selector,
        &keep,
        false,
        stream,
        &mut pruned,
    )
    .await?;
    let keep = names(desired.pvcs.iter().map(|p| &p.metadata).collect());
    prune_kind(
        ctx,
        &namespaced::<PersistentVolumeClaim>(ctx, ns),
        &selector,
        &keep,
        retain,
        stream,
        &mut pruned,
    )
    .await?;

    if ctx.strimzi_installed {
        let keep: BTreeSet<(String, String)> = match &desired.topic {
            DesiredTopic::Strimzi(topic) => {
                [(topic.namespace().unwrap_or_default(), topic.name_any())].into()
            }
            _ => BTreeSet::new(),
        };
        let known_namespace = match &desired.topic {
            DesiredTopic::Strimzi(topic) => topic.namespace(),
            _ => None,
        };
        let topics = strimzi_objects_of::<KafkaTopic>(
            ctx,
            &stream.namespace,
            &stream.name,
            known_namespace.as_deref(),
        )
        .await?;
        for topic in topics {
            let key = (topic.namespace().unwrap_or_default(), topic.name_any());
            if keep.contains(&key) || topic.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api = namespaced::<KafkaTopic>(ctx, &key.0);
            pruned.push(let_go(&api, &topic.metadata, retain, &stream.uid).await?);
        }
        // A KafkaUser is credentials, not data: deleted whatever the deletionPolicy.
        let keep = desired
            .kafka_user
            .as_ref()
            .map(|user| (user.namespace().unwrap_or_default(), user.name_any()));
        let users = strimzi_objects_of::<KafkaUser>(
            ctx,
            &stream.namespace,
            &stream.name,
            desired
                .kafka_user
                .as_ref()
                .and_then(|user| user.namespace())
                .as_deref(),
        )
        .await?;
        for user in users {
            let key = (user.namespace().unwrap_or_default(), user.name_any());
            if keep.as_ref() == Some(&key) || user.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api = namespaced::<KafkaUser>(ctx, &key.0);
            pruned.push(let_go(&api, &user.metadata, false, &stream.uid).await?);
        }
    }
    Ok(pruned)
}

/// The KafkaTopics (or KafkaUsers) the operator manages for a stream, in whatever namespace
/// they live. Lists across namespaces; where RBAC forbids that (a single-namespace
/// installation), lists only in `known_namespace`, the Strimzi namespace the spec names.
pub async fn strimzi_objects_of<K>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    known_namespace: Option<&str>,
) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).into_owned();
    let params = ListParams::default().labels(&labels::topic_owner_selector(namespace, name));
    let all: Api<K> = Api::all(ctx.client.clone());
    match all.list(&params).await {
        Ok(listed) => return Ok(listed.items),
        // The kind's CRD is not installed (e.g. KafkaTopics without KafkaUsers): none exist.
        Err(error) if is_not_found(&error) => return Ok(Vec::new()),
        Err(kube::Error::Api(status)) if status.is_forbidden() => {
            tracing::debug!(
                "listing {kind}s in all namespaces is forbidden; trying the Strimzi namespace"
            );
        }
        Err(source) => {
            return Err(Error::Kube {
                action: format!("listing {kind}s of {namespace}/{name}"),
                source,
            });
        }
    }
    let Some(known) = known_namespace else {
        return Ok(Vec::new());
    };
    namespaced::<K>(ctx, known)
        .list(&params)
        .await
        .map(|listed| listed.items)
        .doing(|| format!("listing {kind}s of {namespace}/{name} in {known}"))
}

async fn prune_kind<K>(
    _ctx: &Context,
    api: &Api<K>,
    selector: &str,
    keep: &BTreeSet<String>,
    retain: bool,
    stream: &ValidatedStream,
    pruned: &mut Vec<Pruned>,
) -> Result<(), Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let listed = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .doing(|| format!("listing {}s to prune", K::kind(&Default::default())))?;
    for object in listed.items {
        let name = object.metadata.name.clone().unwrap_or_default();
        if keep.contains(&name) || object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        pruned.push(let_go(api, &object.metadata, retain, &stream.uid).await?);
    }
    Ok(())
}

/// Deletes an object this stream no longer wants, or, for retained data, removes the
/// managed-by label and any ownerReference to the stream (so the garbage collector cannot take
/// it with the MetricStream later) and marks it retained.
pub async fn let_go<K>(
    api: &Api<K>,
    meta: &kube::api::ObjectMeta,
    retain: bool,
    owner_uid: &str,
) -> Result<Pruned, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).into_owned();
    let name = meta.name.clone().ok_or(Error::MissingMetadata("name"))?;
    if retain {
        let mut patch = json!({
            "metadata": {
                "labels": { (labels::MANAGED_BY): null },
                "annotations": { (labels::RETAINED): "true" },
            }
        });
        if let Some(owners) = &meta.owner_references {
            let others: Vec<_> = owners.iter().filter(|o| o.uid != owner_uid).collect();
            patch["metadata"]["ownerReferences"] = json!(others);
        }
        let params = PatchParams {
            field_manager: Some(labels::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                return Err(Error::Kube {
                    action: format!("releasing retained {kind} {name}"),
                    source: error,
                });
            }
        }
        Ok(Pruned::Retained { kind, name })
    } else {
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(error) if is_not_found(&error) => {}
            Err(error) => {
                return Err(Error::Kube {
                    action: format!("deleting {kind} {name}"),
                    source: error,
                });
            }
        }
        Ok(Pruned::Deleted { kind, name })
    }
}
