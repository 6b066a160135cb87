//! Apply: the step that writes the desired children, and what it observes of them.
//!
//! Apply is server-side apply with one field manager and `force` (the operator is the source of
//! truth for every field it sets; a field it stops setting is removed), kind by kind from the one
//! table in [`super::kinds`], in two steps: what the workloads use (ConfigMap, volumes,
//! credentials, topic, Services, NetworkPolicies, PodDisruptionBudgets), concurrently, before the
//! Deployments and the StatefulSet, so a workload never starts without its config or unprotected by its
//! NetworkPolicy. A child unchanged since its last apply is skipped and observed in the watch
//! cache instead ([`super::skip`]). An admin-API or external topic is not an object: it is
//! ensured or verified through the Kafka API alongside the first step.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, try_join_all};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::{COMPONENT_CONSUMER, COMPONENT_INGEST, Desired, DesiredTopic, TopicRequest};
use super::dereference::Dereferenced;
use super::kinds::{AppliedChildren, ChildKind, KindVisitor, Step, for_each_kind};
use super::skip::{self, Mark, Version};
use super::status::{
    BackendObservation, Observed, StrimziTopicState, VolumeObservation, WorkloadController,
    WorkloadObservation,
};
use super::validate::ValidatedStream;
use crate::context::{ChildStores, Context};
use crate::error::{Error, KubeResultExt};
use crate::labels;
use crate::topics::TopicChanged;

/// What applying found out, for the status step and for Events.
pub struct Applied {
    pub observed: Observed,
    /// A Normal Event worth publishing about the topic (created, grown).
    pub topic_change: Option<TopicChanged>,
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

/// At most this long after a child's last apply is it skipped: half the resync period, so each
/// periodic resync applies everything.
fn full_apply_every(ctx: &Context) -> Duration {
    ctx.resync / 2
}

/// Applies `desired` unless it is unchanged since the last apply and the watch cache shows it
/// as that apply left it (`live`); the applied object, or `None` when skipped. A successful
/// apply is remembered for the next reconcile.
async fn apply_child<K: ChildKind>(
    ctx: &Context,
    uid: &str,
    api: &Api<K>,
    desired: &K,
    live: Option<&ObjectMeta>,
) -> Result<Option<K>, Error> {
    let name = desired.meta().name.as_deref().unwrap_or_default();
    let key = format!("{}/{name}", K::kind(&()));
    let fingerprint = skip::fingerprint(desired);
    let live = live.and_then(|meta| Version::of(meta, K::BY_GENERATION));
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
    let applied = server_side_apply(api, desired).await?;
    if let Some(version) = Version::of(applied.meta(), K::BY_GENERATION) {
        let mark = Mark {
            fingerprint,
            version,
            applied_at: now,
        };
        ctx.applied.record(uid, key, mark);
    }
    Ok(Some(applied))
}

/// Applies (concurrently) what may have changed of the desired objects of kind `K`, each in its
/// own namespace; what the status reads of them, applied or (when skipped) cached.
async fn apply_kind<K: ChildKind>(
    ctx: &Context,
    uid: &str,
    stores: Option<&ChildStores>,
    desired: &Desired,
) -> Result<AppliedChildren, Error> {
    let objects = try_join_all(K::desired(desired).into_iter().map(|object| async move {
        let meta = object.meta();
        let namespace = meta
            .namespace
            .as_deref()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let name = meta.name.as_deref().ok_or(Error::MissingMetadata("name"))?;
        let cached = stores.and_then(|stores| K::cached(stores, namespace, name));
        let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
        let applied = apply_child(ctx, uid, &api, object, cached.as_ref().map(|c| &c.meta)).await?;
        Ok::<_, Error>(applied.or_else(|| cached.and_then(|cached| cached.object)))
    }))
    .await?;
    let mut children = AppliedChildren::default();
    K::observe(objects.into_iter().flatten().collect(), &mut children);
    Ok(children)
}

/// Collects the applies of one [`Step`] from the table.
struct ApplyKinds<'a> {
    ctx: &'a Context,
    uid: &'a str,
    stores: Option<&'a ChildStores>,
    desired: &'a Desired,
    step: Step,
    applies: Vec<BoxFuture<'a, Result<AppliedChildren, Error>>>,
}

impl KindVisitor for ApplyKinds<'_> {
    fn visit<K: ChildKind>(&mut self) {
        // Without Strimzi's CRDs there is nothing to apply them to; the status says so.
        if K::STEP != self.step || (K::STRIMZI && !self.ctx.strimzi_installed) {
            return;
        }
        self.applies.push(Box::pin(apply_kind::<K>(
            self.ctx,
            self.uid,
            self.stores,
            self.desired,
        )));
    }
}

/// Applies every kind of the table that belongs to `step`, concurrently.
async fn apply_step(
    ctx: &Context,
    stream: &ValidatedStream,
    stores: Option<&ChildStores>,
    desired: &Desired,
    step: Step,
) -> Result<AppliedChildren, Error> {
    let mut kinds = ApplyKinds {
        ctx,
        uid: &stream.uid,
        stores,
        desired,
        step,
        applies: Vec::new(),
    };
    for_each_kind(&mut kinds);
    let mut children = AppliedChildren::default();
    for applied in try_join_all(kinds.applies).await? {
        children.merge(applied);
    }
    Ok(children)
}

/// Applies what may have changed in `desired` and observes the results: first, concurrently,
/// all that the workloads use (and the admin-API or external topic), then the workloads.
pub async fn apply_all(
    ctx: &Context,
    stream: &ValidatedStream,
    dereferenced: &Dereferenced,
    desired: &Desired,
) -> Result<Applied, Error> {
    let stores = ctx.child_stores();
    let stores = stores.as_deref();
    let (mut children, topic) = futures::try_join!(
        apply_step(ctx, stream, stores, desired, Step::BeforeWorkloads),
        async { Ok(kafka_api_topic(ctx, dereferenced, desired).await) },
    )?;
    children.merge(apply_step(ctx, stream, stores, desired, Step::Workloads).await?);

    let (backend, topic_change, topic_error) = match topic {
        TopicOutcome::Ensured(Ok((partitions, change))) => {
            (BackendObservation::AdminTopic(Ok(partitions)), change, None)
        }
        TopicOutcome::Ensured(Err(error)) => (
            BackendObservation::AdminTopic(Err(error.clone())),
            None,
            Some(error),
        ),
        TopicOutcome::Verified(partitions) => {
            (BackendObservation::ExternalTopic(partitions), None, None)
        }
        TopicOutcome::NotThroughKafka => {
            let backend = match &desired.topic {
                DesiredTopic::Strimzi(_) if !ctx.strimzi_installed => {
                    BackendObservation::StrimziNotInstalled
                }
                DesiredTopic::Strimzi(_) => BackendObservation::StrimziTopic(
                    children.kafka_topic.as_ref().map(StrimziTopicState::of),
                ),
                // The file backend: the queue volume is the backend.
                _ => BackendObservation::Volumes(volumes(stream, &children)),
            };
            (backend, None, None)
        }
    };

    // The workloads' pods, from the watch cache (none without one: the status then says only
    // what the Deployments and the StatefulSet say).
    let pods = stores.map(|s| s.pods.state()).unwrap_or_default();
    let pods_of = |component: &str| pods_of(&pods, stream, component);
    // A spilling ingest runs as a StatefulSet; everything else as a Deployment.
    let observe = |name: String, component: &str, wanted: i32, stateful: bool| {
        let controller = if stateful {
            WorkloadController::StatefulSet(
                children.stateful_sets.iter().find(|s| s.name_any() == name),
            )
        } else {
            WorkloadController::Deployment(
                children.deployments.iter().find(|d| d.name_any() == name),
            )
        };
        WorkloadObservation::of(&name, wanted, controller, pods_of(component))
    };
    let sink = ctx
        .sink_probe
        .observe(stream.consumer.replicas, &pods_of(COMPONENT_CONSUMER))
        .await;
    Ok(Applied {
        observed: Observed {
            backend,
            credentials_pending: dereferenced.credentials.pending().map(str::to_owned),
            ingest: observe(
                Desired::ingest_name(&stream.name),
                COMPONENT_INGEST,
                stream.ingest.replicas,
                stream.ingest.spill.is_some(),
            ),
            consumer: observe(
                Desired::consumer_name(&stream.name),
                COMPONENT_CONSUMER,
                stream.consumer.replicas,
                false,
            ),
            sink,
        },
        topic_change,
        topic_error,
    })
}

/// The file backend's volumes (the queue's, then the sink's) and their phases.
fn volumes(stream: &ValidatedStream, children: &AppliedChildren) -> Vec<VolumeObservation> {
    let volume = |role: &'static str, name: String| {
        let phase = children
            .pvcs
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
    vec![
        volume("queue", Desired::queue_pvc_name(&stream.name)),
        volume("sink", Desired::sink_pvc_name(&stream.name)),
    ]
}

/// What the Kafka API said of a topic the operator manages (or checks) itself.
enum TopicOutcome {
    /// The topic is a Strimzi object (applied with the other children), or there is none.
    NotThroughKafka,
    /// Admin mode: created or grown; the partition count afterwards and what changed.
    Ensured(Result<(u32, Option<TopicChanged>), String>),
    /// External mode: the partition count, `None` when the topic does not exist.
    Verified(Result<Option<u32>, String>),
}

/// Ensures an admin-API topic or verifies an external one.
async fn kafka_api_topic(
    ctx: &Context,
    dereferenced: &Dereferenced,
    desired: &Desired,
) -> TopicOutcome {
    let security = |request: &TopicRequest| match &dereferenced.operator_security {
        Some(security) => security.clone(),
        None => Err(format!(
            "no Kafka security was read for topic {}",
            request.topic
        )),
    };
    match &desired.topic {
        DesiredTopic::None | DesiredTopic::Strimzi(_) => TopicOutcome::NotThroughKafka,
        DesiredTopic::Admin(request) => TopicOutcome::Ensured(match security(request) {
            Ok(security) => ctx.topics.ensure(request, &security).await,
            Err(error) => Err(error),
        }),
        DesiredTopic::External(request) => TopicOutcome::Verified(match security(request) {
            Ok(security) => {
                ctx.topics
                    .partitions(&request.bootstrap_servers, &request.topic, &security)
                    .await
            }
            Err(error) => Err(error),
        }),
    }
}

/// The pods of `stream`'s `component` among `pods` (the watch cache's).
pub(crate) fn pods_of<'a>(
    pods: &'a [Arc<Pod>],
    stream: &ValidatedStream,
    component: &str,
) -> Vec<&'a Pod> {
    let selector = labels::selector(&stream.name, component);
    pods.iter()
        .map(|pod| pod.as_ref())
        .filter(|pod| {
            pod.metadata.namespace.as_deref() == Some(stream.namespace.as_str())
                && selector
                    .iter()
                    .all(|(key, value)| pod.labels().get(key) == Some(value))
        })
        .collect()
}
