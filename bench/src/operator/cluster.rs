//! The control plane side of the operator suite: the CRD, a namespace per run, the streams the
//! bench applies, and watches that see each child and each status as the API server stores it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Event as CoreEvent, Namespace, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, CustomResourceExt, Resource, ResourceExt};
use metricstream_operator::crd::MetricStream;
use metricstream_operator::labels;
use metricstream_operator::reconcile::build::Desired;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::mpsc;

/// The field manager of what the bench writes.
const MANAGER: &str = "metricstream-bench";
const NEEDS_CONTROL_PLANE: &str = "start the local control plane with `bash hack/envtest.sh up` \
     and export the KUBECONFIG=<path> it prints";

/// A client of the control plane KUBECONFIG names, and that path.
pub async fn connect() -> anyhow::Result<(Client, PathBuf)> {
    let kubeconfig = std::env::var_os("KUBECONFIG")
        .filter(|path| !path.is_empty())
        .map(PathBuf::from)
        .with_context(|| format!("KUBECONFIG is not set: {NEEDS_CONTROL_PLANE}"))?;
    let client = Client::try_default().await.with_context(|| {
        format!(
            "reading KUBECONFIG={}: {NEEDS_CONTROL_PLANE}",
            kubeconfig.display()
        )
    })?;
    client.apiserver_version().await.with_context(|| {
        format!(
            "the control plane of KUBECONFIG={} does not answer: {NEEDS_CONTROL_PLANE}",
            kubeconfig.display()
        )
    })?;
    Ok((client, kubeconfig))
}

/// Applies the MetricStream CRD server-side (a no-op when it is there) and waits until it is
/// served. The CRD is generated from the operator crate, which a test keeps identical to
/// crds/metricstream.yaml.
pub async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crd = MetricStream::crd();
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let established = api
            .get(&name)
            .await
            .with_context(|| format!("reading CRD {name}"))?
            .status
            .and_then(|status| status.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} was not Established within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ServiceCIDR the bench adds when the control plane has too few Service IPs.
const BENCH_SERVICE_CIDR: (&str, &str) = ("metricstream-bench", "10.200.0.0/16");

/// Makes sure `needed` more ClusterIP Services fit: every stream has one, and hack/envtest.sh's
/// kube-apiserver has `--service-cluster-ip-range=10.0.0.0/24` (254 addresses), where a 255th
/// Service fails with "failed to allocate a serviceIP: range is full". When they do not fit,
/// adds a ServiceCIDR (networking.k8s.io/v1; the allocator uses one without a Ready condition,
/// so no controller is needed) and leaves it in place for later runs.
pub async fn ensure_service_ips(client: &Client, needed: usize) -> anyhow::Result<()> {
    let cidrs: Api<ServiceCIDR> = Api::all(client.clone());
    let listed = match cidrs.list(&ListParams::default()).await {
        Ok(listed) => listed,
        Err(error) => {
            eprintln!(
                "operator: cannot list ServiceCIDRs ({error}): not checking that {needed} \
                 Services fit"
            );
            return Ok(());
        }
    };
    let capacity: u64 = listed
        .items
        .iter()
        .filter(|cidr| cidr.metadata.deletion_timestamp.is_none())
        .flat_map(|cidr| {
            cidr.spec
                .iter()
                .flat_map(|spec| spec.cidrs.iter().flatten())
        })
        .map(|cidr| ipv4_service_addresses(cidr))
        .sum();
    let used = Api::<IPAddress>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .context("listing the allocated Service IPAddresses")?
        .items
        .len() as u64;
    let free = capacity.saturating_sub(used);
    // Headroom for other engineers' tests on the same control plane.
    if free >= needed as u64 + 64 {
        return Ok(());
    }
    let (name, range) = BENCH_SERVICE_CIDR;
    eprintln!(
        "operator: the control plane has {free} free Service IPs and {needed} streams need one \
         each: adding ServiceCIDR {name} ({range})"
    );
    let cidr: ServiceCIDR = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "ServiceCIDR",
        "metadata": { "name": name },
        "spec": { "cidrs": [range] },
    }))
    .context("building a ServiceCIDR")?;
    cidrs
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&cidr))
        .await
        .with_context(|| format!("applying ServiceCIDR {name} ({range})"))?;
    Ok(())
}

/// Allocatable Service addresses of an IPv4 CIDR (network and broadcast addresses excluded);
/// 0 for IPv6 (the Services are single-stack IPv4) or what does not parse.
fn ipv4_service_addresses(cidr: &str) -> u64 {
    let Some((address, prefix)) = cidr.split_once('/') else {
        return 0;
    };
    match (address.parse::<std::net::Ipv4Addr>(), prefix.parse::<u32>()) {
        (Ok(_), Ok(prefix)) if prefix <= 32 => {
            let size = 1u64 << (32 - prefix);
            if size > 2 { size - 2 } else { size }
        }
        _ => 0,
    }
}

/// The API server's request counters (`apiserver_request_total` of its /metrics) by verb,
/// without long-running watches: every client's requests, the operator's, the
/// controller-manager's and the bench's alike.
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .context("building GET /metrics")?;
    let text = client
        .request_text(request)
        .await
        .context("GET /metrics of kube-apiserver")?;
    Ok(requests_by_verb(&text))
}

fn requests_by_verb(metrics: &str) -> BTreeMap<String, f64> {
    let mut by_verb = BTreeMap::new();
    for line in metrics.lines() {
        let Some(labels_and_value) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = labels_and_value.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let verb = labels
            .split_once("verb=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(verb, _)| verb)
            .unwrap_or("");
        if verb.is_empty() || verb == "WATCH" || verb == "CONNECT" {
            continue;
        }
        *by_verb.entry(verb.to_owned()).or_insert(0.0) += value;
    }
    by_verb
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } }))
        .context("building a Namespace")?;
    api.create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Deletes a namespace and waits up to `timeout` until it is gone; returns how long that took,
/// or `None` if it was still there (its deletion goes on in the background). MetricStream
/// finalizers, which no operator will release any more, are removed first.
///
/// Its contents are deleted first, one collection per kind: left to kube-controller-manager
/// (namespace controller and garbage collector, at its default 20 requests/s), the pods,
/// ReplicaSets and Deployments of 500 streams take minutes to go, loading the control plane
/// during the next measurement. The PVCs' `kubernetes.io/pvc-protection` finalizers are removed
/// by the bench too (no pod ever ran, and the pods are deleted before), which the controller-manager
/// would otherwise release one at a time.
pub async fn delete_namespace(
    client: &Client,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<Option<Duration>> {
    let started = Instant::now();
    let streams: Api<MetricStream> = Api::namespaced(client.clone(), name);
    let listed = streams
        .list_metadata(&ListParams::default())
        .await
        .with_context(|| format!("listing MetricStreams in {name}"))?;
    for stream in listed.items.iter().filter(|s| !s.finalizers().is_empty()) {
        streams
            .patch(
                &stream.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
            )
            .await
            .with_context(|| format!("removing the finalizers of {}", stream.name_any()))?;
    }
    delete_all::<MetricStream>(client, name).await;
    delete_all::<Deployment>(client, name).await;
    delete_all::<ReplicaSet>(client, name).await;
    delete_all::<Pod>(client, name).await;
    delete_all::<Service>(client, name).await;
    delete_all::<ConfigMap>(client, name).await;
    release_volumes(client, name).await;
    delete_all::<PersistentVolumeClaim>(client, name).await;
    delete_all::<CoreEvent>(client, name).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .delete(name, &DeleteParams::background())
        .await
        .with_context(|| format!("deleting namespace {name}"))?;
    loop {
        let present = namespaces
            .get_opt(name)
            .await
            .with_context(|| format!("reading namespace {name}"))?;
        if present.is_none() {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes every object of one kind in a namespace; a failure is reported, and left to the
/// namespace's deletion.
async fn delete_all<K>(client: &Client, namespace: &str)
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    if let Err(error) = api
        .delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
    {
        eprintln!(
            "operator: deleting the {}s of {namespace}: {error}",
            K::kind(&Default::default())
        );
    }
}

/// Removes the finalizers of every PVC of a namespace, many at a time; failures are reported and
/// left to the controller-manager.
async fn release_volumes(client: &Client, namespace: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let listed = match api.list_metadata(&ListParams::default()).await {
        Ok(listed) => listed,
        Err(error) => {
            eprintln!("operator: listing the PVCs of {namespace}: {error}");
            return;
        }
    };
    let failures = stream::iter(listed.items)
        .filter(|pvc| std::future::ready(!pvc.finalizers().is_empty()))
        .map(|pvc| {
            let api = api.clone();
            async move {
                api.patch(
                    &pvc.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(32)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    if failures > 0 {
        eprintln!("operator: could not release {failures} PVC(s) of {namespace}");
    }
}

/// The names of the streams of one run.
pub fn stream_names(count: usize) -> Vec<String> {
    (0..count)
        .map(|index| format!("bench-{index:04}"))
        .collect()
}

/// Server-side applies one file-backed MetricStream per name, `in_flight` at a time, and reports
/// each as its apply returns. Returns how long applying all took.
pub async fn apply_streams(
    client: Client,
    namespace: String,
    names: Vec<String>,
    in_flight: usize,
    applied: mpsc::UnboundedSender<Progress>,
) -> anyhow::Result<Duration> {
    let api: Api<MetricStream> = Api::namespaced(client, &namespace);
    let started = Instant::now();
    stream::iter(names)
        .map(|name| {
            let api = api.clone();
            let namespace = namespace.clone();
            let applied = applied.clone();
            async move {
                let manifest = json!({
                    "apiVersion": MetricStream::api_version(&()),
                    "kind": MetricStream::kind(&()),
                    "metadata": { "name": name, "namespace": namespace },
                    "spec": {
                        "backend": "file",
                        "partitions": 4,
                        "file": { "storage": "1Gi", "durability": "batch" },
                    },
                });
                api.patch(
                    &name,
                    &PatchParams::apply(MANAGER),
                    &Patch::Apply(&manifest),
                )
                .await
                .with_context(|| format!("applying MetricStream {namespace}/{name}"))?;
                // The receiver only goes away when the run is over.
                let _ = applied.send(Progress::Applied(name, Instant::now()));
                anyhow::Ok(())
            }
        })
        .buffer_unordered(in_flight.max(1))
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed())
}

/// What the watches (and the applier) saw.
#[derive(Debug)]
pub enum Progress {
    /// A watch finished its initial list.
    Synced(&'static str),
    /// The bench's apply of this stream returned.
    Applied(String, Instant),
    /// A child object, as `Kind/name`.
    Child(String),
    /// This stream's status describes its current generation.
    StatusObserved(String),
}

/// Every child the operator creates per stream: (kind, name).
fn expected_children(stream: &str) -> [(&'static str, String); 6] {
    [
        ("ConfigMap", Desired::config_map_name(stream)),
        ("Deployment", Desired::ingest_name(stream)),
        ("Deployment", Desired::consumer_name(stream)),
        ("Service", Desired::ingest_name(stream)),
        ("PersistentVolumeClaim", Desired::queue_pvc_name(stream)),
        ("PersistentVolumeClaim", Desired::sink_pvc_name(stream)),
    ]
}

pub const WATCHED_KINDS: usize = 5;

/// Metadata watches of each child kind (by the operator's managed-by label) and a watch of the
/// MetricStreams, merged into one stream of [`Progress`].
pub fn watch_progress(client: &Client, namespace: &str) -> BoxStream<'static, Progress> {
    fn children<K>(client: &Client, namespace: &str) -> BoxStream<'static, Progress>
    where
        K: Resource<Scope = NamespaceResourceScope>
            + k8s_openapi::Resource
            + Clone
            + DeserializeOwned
            + Debug
            + Send
            + 'static,
        K::DynamicType: Default,
    {
        let kind = <K as k8s_openapi::Resource>::KIND;
        // Metadata only: names are all that is counted.
        let api: Api<PartialObjectMeta<K>> = Api::namespaced(client.clone(), namespace);
        let config = watcher::Config::default().labels(&labels::managed_selector());
        watcher(api, config)
            .default_backoff()
            .filter_map(move |event| async move {
                match event {
                    Ok(Event::InitDone) => Some(Progress::Synced(kind)),
                    Ok(Event::Apply(object) | Event::InitApply(object)) => {
                        Some(Progress::Child(format!("{kind}/{}", object.name_any())))
                    }
                    Ok(_) => None,
                    Err(error) => {
                        eprintln!("operator: watch of {kind}s: {error}");
                        None
                    }
                }
            })
            .boxed()
    }
    let streams: Api<MetricStream> = Api::namespaced(client.clone(), namespace);
    let statuses = watcher(streams, watcher::Config::default())
        .default_backoff()
        .filter_map(|event| async move {
            match event {
                Ok(Event::InitDone) => Some(Progress::Synced("MetricStream")),
                Ok(Event::Apply(stream) | Event::InitApply(stream)) => {
                    let observed = stream.status.as_ref().and_then(|s| s.observed_generation);
                    (observed.is_some() && observed == stream.metadata.generation)
                        .then(|| Progress::StatusObserved(stream.name_any()))
                }
                Ok(_) => None,
                Err(error) => {
                    eprintln!("operator: watch of MetricStreams: {error}");
                    None
                }
            }
        })
        .boxed();
    stream::select_all([
        children::<ConfigMap>(client, namespace),
        children::<Deployment>(client, namespace),
        children::<Service>(client, namespace),
        children::<PersistentVolumeClaim>(client, namespace),
        statuses,
    ])
    .boxed()
}

/// Where a run got to, measured from the first apply.
#[derive(Debug, Default)]
pub struct Outcome {
    pub children_seen: usize,
    pub children_expected: usize,
    pub statuses_seen: usize,
    /// Streams with all six children and their status.
    pub reconciled: usize,
    /// When the last child appeared.
    pub to_children: Option<Duration>,
    /// When the last status was written.
    pub to_status: Option<Duration>,
    /// Per stream: from its apply returning to its last child appearing.
    pub per_stream_children: Vec<Duration>,
}

/// Counts what the watches see until every stream has its six children and its status, or the
/// deadline passes.
pub struct Tally {
    started: Instant,
    /// Child `Kind/name` → its stream.
    owner_of: HashMap<String, String>,
    children: HashSet<String>,
    missing_per_stream: BTreeMap<String, usize>,
    applied_at: HashMap<String, Instant>,
    done_at: HashMap<String, Instant>,
    expected_streams: usize,
    statuses: HashSet<String>,
    outcome: Outcome,
}

impl Tally {
    pub fn new(names: &[String], started: Instant) -> Self {
        let mut owner_of = HashMap::new();
        let mut missing_per_stream = BTreeMap::new();
        for name in names {
            for (kind, child) in expected_children(name) {
                owner_of.insert(format!("{kind}/{child}"), name.clone());
            }
            missing_per_stream.insert(name.clone(), 6);
        }
        Self {
            started,
            outcome: Outcome {
                children_expected: owner_of.len(),
                ..Outcome::default()
            },
            owner_of,
            children: HashSet::new(),
            missing_per_stream,
            applied_at: HashMap::new(),
            done_at: HashMap::new(),
            expected_streams: names.len(),
            statuses: HashSet::new(),
        }
    }

    pub fn record(&mut self, progress: Progress) {
        let now = Instant::now();
        match progress {
            Progress::Synced(_) => {}
            Progress::Applied(name, at) => {
                self.applied_at.insert(name, at);
            }
            Progress::Child(key) => {
                let Some(stream) = self.owner_of.get(&key) else {
                    return;
                };
                if !self.children.insert(key.clone()) {
                    return;
                }
                if let Some(missing) = self.missing_per_stream.get_mut(stream) {
                    *missing -= 1;
                    if *missing == 0 {
                        self.done_at.insert(stream.clone(), now);
                    }
                }
                if self.children.len() == self.outcome.children_expected {
                    self.outcome.to_children = Some(now - self.started);
                }
            }
            Progress::StatusObserved(name) => {
                if self.statuses.insert(name) && self.statuses.len() == self.expected_streams {
                    self.outcome.to_status = Some(now - self.started);
                }
            }
        }
    }

    pub fn complete(&self) -> bool {
        self.outcome.to_children.is_some() && self.outcome.to_status.is_some()
    }

    pub fn finish(mut self) -> Outcome {
        self.outcome.children_seen = self.children.len();
        self.outcome.statuses_seen = self.statuses.len();
        self.outcome.reconciled = self
            .done_at
            .keys()
            .filter(|stream| self.statuses.contains(*stream))
            .count();
        let mut per_stream: Vec<Duration> = self
            .done_at
            .iter()
            .filter_map(|(stream, done)| {
                let applied = self.applied_at.get(stream)?;
                // A child can be seen before the apply's answer arrives: count that as zero.
                Some(done.saturating_duration_since(*applied))
            })
            .collect();
        per_stream.sort();
        self.outcome.per_stream_children = per_stream;
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_completes_with_six_children_and_a_status_per_stream() {
        let names = stream_names(2);
        let mut tally = Tally::new(&names, Instant::now());
        for name in &names {
            tally.record(Progress::Applied(name.clone(), Instant::now()));
            for (kind, child) in expected_children(name) {
                tally.record(Progress::Child(format!("{kind}/{child}")));
                // A repeated event (an update) counts once.
                tally.record(Progress::Child(format!("{kind}/{child}")));
            }
        }
        tally.record(Progress::Child("ConfigMap/someone-else".into()));
        assert!(!tally.complete());
        for name in &names {
            tally.record(Progress::StatusObserved(name.clone()));
        }
        assert!(tally.complete());
        let outcome = tally.finish();
        assert_eq!(outcome.children_seen, 12);
        assert_eq!(outcome.children_expected, 12);
        assert_eq!(outcome.statuses_seen, 2);
        assert_eq!(outcome.reconciled, 2);
        assert_eq!(outcome.per_stream_children.len(), 2);
    }

    #[test]
    fn service_cidrs_are_counted_in_allocatable_addresses() {
        assert_eq!(ipv4_service_addresses("10.0.0.0/24"), 254);
        assert_eq!(ipv4_service_addresses("10.200.0.0/16"), 65_534);
        assert_eq!(ipv4_service_addresses("fd00::/108"), 0);
        assert_eq!(ipv4_service_addresses("nonsense"), 0);
    }

    #[test]
    fn apiserver_requests_are_summed_by_verb_without_watches() {
        let metrics = r#"# HELP apiserver_request_total Counter of apiserver requests
apiserver_request_total{code="200",component="apiserver",dry_run="",group="apps",resource="deployments",scope="resource",subresource="",verb="PATCH",version="v1"} 10
apiserver_request_total{code="201",component="apiserver",dry_run="",group="",resource="configmaps",scope="resource",subresource="",verb="PATCH",version="v1"} 5
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="LIST",version="v1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="configmaps",scope="namespace",subresource="",verb="WATCH",version="v1"} 3
"#;
        let by_verb = requests_by_verb(metrics);
        assert_eq!(by_verb.get("PATCH"), Some(&15.0));
        assert_eq!(by_verb.get("LIST"), Some(&7.0));
        assert_eq!(by_verb.get("WATCH"), None);
    }
}
