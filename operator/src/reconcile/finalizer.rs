//! The finalizer `metricstream.dev/cleanup`: present only while the stream has something
//! ownerReferences cannot collect (see [`super::cleanup`]). Changed by merge patches guarded by
//! resourceVersion, so a concurrent change to the list is a conflict and a retry, never a lost
//! finalizer.

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crd::MetricStream;
use crate::error::{Error, KubeResultExt, is_not_found};
use crate::labels;

pub fn has_finalizer(stream: &MetricStream) -> bool {
    stream.finalizers().iter().any(|f| f == labels::FINALIZER)
}

/// Adds the finalizer and returns the updated object.
pub async fn add_finalizer(
    api: &Api<MetricStream>,
    stream: &MetricStream,
) -> Result<MetricStream, Error> {
    if has_finalizer(stream) {
        return Ok(stream.clone());
    }
    let mut finalizers = stream.finalizers().to_vec();
    finalizers.push(labels::FINALIZER.to_owned());
    patch_finalizers(api, stream, finalizers).await
}

pub async fn remove_finalizer(api: &Api<MetricStream>, stream: &MetricStream) -> Result<(), Error> {
    if !has_finalizer(stream) {
        return Ok(());
    }
    let finalizers: Vec<String> = stream
        .finalizers()
        .iter()
        .filter(|f| *f != labels::FINALIZER)
        .cloned()
        .collect();
    match patch_finalizers(api, stream, finalizers).await {
        Ok(_) => Ok(()),
        // Gone already: the last finalizer was ours and the object was deleted.
        Err(Error::Kube { source, .. }) if is_not_found(&source) => Ok(()),
        Err(error) => Err(error),
    }
}

async fn patch_finalizers(
    api: &Api<MetricStream>,
    stream: &MetricStream,
    finalizers: Vec<String>,
) -> Result<MetricStream, Error> {
    let name = stream.name_any();
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": stream.resource_version(),
        }
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .doing(|| format!("updating the finalizers of MetricStream {name}"))
}
