//! Prune: lists each kind of child ([`super::kinds`]) by the stream's labels and removes what
//! this run no longer wants, so a backend switch or a removed feature leaves nothing behind.
//! Data (PVCs, KafkaTopics) is the exception: under deletionPolicy Retain it is kept and only
//! loses the managed-by label, so it is visibly orphaned and never silently deleted. Also the
//! listing and letting go that deletion ([`super::cleanup`]) uses.

use futures::future::BoxFuture;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use serde_json::json;

use super::build::Desired;
use super::kinds::{ChildKind, KindVisitor, for_each_kind};
use super::validate::ValidatedStream;
use crate::context::Context;
use crate::crd::DeletionPolicy;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::labels;

/// One object prune removed or let go of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pruned {
    Deleted { kind: String, name: String },
    Retained { kind: String, name: String },
}

/// Removes the stream's objects that `desired` no longer contains, kind after kind.
pub async fn prune(
    ctx: &Context,
    stream: &ValidatedStream,
    desired: &Desired,
) -> Result<Vec<Pruned>, Error> {
    let mut kinds = PruneKinds {
        ctx,
        stream,
        desired,
        steps: Vec::new(),
    };
    for_each_kind(&mut kinds);
    let mut pruned = Vec::new();
    for step in kinds.steps {
        pruned.extend(step.await?);
    }
    Ok(pruned)
}

/// Collects one prune per kind of the table.
struct PruneKinds<'a> {
    ctx: &'a Context,
    stream: &'a ValidatedStream,
    desired: &'a Desired,
    steps: Vec<BoxFuture<'a, Result<Vec<Pruned>, Error>>>,
}

impl KindVisitor for PruneKinds<'_> {
    fn visit<K: ChildKind>(&mut self) {
        if K::STRIMZI && !self.ctx.strimzi_installed {
            return;
        }
        self.steps.push(Box::pin(prune_kind::<K>(
            self.ctx,
            self.stream,
            self.desired,
        )));
    }
}

async fn prune_kind<K: ChildKind>(
    ctx: &Context,
    stream: &ValidatedStream,
    desired: &Desired,
) -> Result<Vec<Pruned>, Error> {
    let keep = K::keep(desired);
    let known_namespace = K::desired(desired)
        .first()
        .and_then(|object| object.meta().namespace.clone());
    let listed = listed::<K>(
        ctx,
        &stream.namespace,
        &stream.name,
        known_namespace.as_deref(),
    )
    .await?;
    let retain = K::DATA && stream.deletion_policy == DeletionPolicy::Retain;
    let mut pruned = Vec::new();
    for meta in listed {
        let namespace = meta
            .namespace
            .clone()
            .unwrap_or_else(|| stream.namespace.clone());
        let key = (namespace, meta.name.clone().unwrap_or_default());
        if keep.contains(&key) || meta.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.0);
        pruned.push(let_go(&api, &meta, retain, &stream.uid).await?);
    }
    Ok(pruned)
}

/// The metadata of the objects of kind `K` the operator manages for the stream
/// `namespace/name`: by the stream's labels in its namespace, or, for a Strimzi kind, by its
/// owner labels in whatever namespace they live ([`strimzi_objects_of`]).
pub async fn listed<K: ChildKind>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    known_namespace: Option<&str>,
) -> Result<Vec<ObjectMeta>, Error> {
    if K::STRIMZI {
        return strimzi_objects_of::<K>(ctx, namespace, name, known_namespace).await;
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let params = ListParams::default().labels(&labels::stream_selector(name));
    let listed = api
        .list_metadata(&params)
        .await
        .doing(|| format!("listing {}s to prune", K::kind(&())))?;
    Ok(listed.items.into_iter().map(|item| item.metadata).collect())
}

/// The KafkaTopics (or KafkaUsers) the operator manages for a stream, in whatever namespace
/// they live. Lists across namespaces; where RBAC forbids that (a single-namespace
/// installation), lists only in `known_namespace`, the Strimzi namespace the spec names.
async fn strimzi_objects_of<K: ChildKind>(
    ctx: &Context,
    namespace: &str,
    name: &str,
    known_namespace: Option<&str>,
) -> Result<Vec<ObjectMeta>, Error> {
    let kind = K::kind(&()).into_owned();
    let params = ListParams::default().labels(&labels::topic_owner_selector(namespace, name));
    let all: Api<K> = Api::all(ctx.client.clone());
    match all.list_metadata(&params).await {
        Ok(listed) => return Ok(listed.items.into_iter().map(|i| i.metadata).collect()),
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
    let api: Api<K> = Api::namespaced(ctx.client.clone(), known);
    api.list_metadata(&params)
        .await
        .map(|listed| listed.items.into_iter().map(|i| i.metadata).collect())
        .doing(|| format!("listing {kind}s of {namespace}/{name} in {known}"))
}

/// Deletes an object this stream no longer wants, or, for retained data, removes the
/// managed-by label and any ownerReference to the stream (so the garbage collector cannot take
/// it with the MetricStream later) and marks it retained.
pub async fn let_go<K: ChildKind>(
    api: &Api<K>,
    meta: &ObjectMeta,
    retain: bool,
    owner_uid: &str,
) -> Result<Pruned, Error> {
    let kind = K::kind(&()).into_owned();
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
