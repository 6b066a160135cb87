//! The operator against a real API server: `hack/envtest.sh up` (etcd, kube-apiserver and
//! kube-controller-manager on loopback; no kubelet, so pods stay Pending) and, for the `admin`
//! topic mode, the local Kafka broker (`hack/kafka.sh up`).
//!
//! Each test creates its own namespace, installs the CRDs (server-side apply: idempotent), runs
//! the real `metricstream-operator run --namespace <ns>` binary (found next to the test
//! executable, in target/<profile>), and deletes the namespace at the end, also when it fails.
//! On failure the tail of the operator's log is printed.
//!
//! The tests are `#[ignore]`d unless a control plane is given: `make test` starts one and runs
//! everything with `--include-ignored`; by hand:
//!
//! ```text
//! eval "$(hack/envtest.sh up | tail -n 2 | head -n 1 | sed 's/^/export /')"
//! KAFKA_BOOTSTRAP=127.0.0.1:19092 cargo test -p metricstream-operator --test envtest -- --include-ignored
//! ```
//!
//! Every test's name starts with `envtest_` (so `--skip envtest_` leaves them out).
//!
//! Strimzi's KafkaTopic and KafkaUser CRDs come from `STRIMZI_CRDS_DIR`: the directory
//! `hack/strimzi-crds.sh` generates from Strimzi's artifacts on Maven Central (`make test` sets
//! it; never copied into the repository).

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use metricstream_backend::kafka::KafkaSettings;
use metricstream_backend::kafka::admin::topic_partitions;
use metricstream_operator::crd::MetricStream;
use metricstream_operator::strimzi::{KafkaTopic, KafkaUser};
use serde_json::{Value, json};

const NEEDS_KUBECONFIG: &str = "KUBECONFIG must point at a control plane: run `hack/envtest.sh up` and export the \
     KUBECONFIG=<path> it prints (make test does this)";
const NEEDS_KAFKA: &str = "KAFKA_BOOTSTRAP must name a Kafka broker for the admin-mode tests: \
     run `hack/kafka.sh up` and export the KAFKA_BOOTSTRAP=<address> it prints (make test does this)";
/// How long anything the operator or the controller-manager does may take.
const DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(250);
const MANAGER: &str = "metricstream-envtest";
const LOG_TAIL_LINES: usize = 80;

// ---- harness ------------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives in the workspace")
        .to_path_buf()
}

/// Where Strimzi's CRDs are, and how they were found (said in the test output).
fn strimzi_crds_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("STRIMZI_CRDS_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("043-Crd-kafkatopic.yaml").is_file(),
            "STRIMZI_CRDS_DIR={} holds no 043-Crd-kafkatopic.yaml",
            dir.display()
        );
        eprintln!("Strimzi CRDs: {} (from STRIMZI_CRDS_DIR)", dir.display());
        return Some(dir);
    }
    eprintln!(
        "Strimzi CRDs: none (STRIMZI_CRDS_DIR unset: run `hack/strimzi-crds.sh` and export the \
         STRIMZI_CRDS_DIR=<dir> it prints; make test does this)"
    );
    None
}

async fn client() -> Client {
    std::env::var_os("KUBECONFIG")
        .filter(|k| !k.is_empty())
        .expect(NEEDS_KUBECONFIG);
    Client::try_default().await.expect(NEEDS_KUBECONFIG)
}

/// Applies a CRD server-side (a no-op when it is already there) and waits until it is served.
async fn install_crd(client: &Client, path: &Path) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
    let name = crd.name_any();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    eventually(&format!("CRD {name} Established"), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let crd = api.get(&name).await.ok()?;
            let established = crd
                .status?
                .conditions?
                .into_iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await;
}

/// The MetricStream CRD always; Strimzi's KafkaTopic CRD when it is available (required when
/// `need_strimzi`).
async fn install_crds(client: &Client, need_strimzi: bool) {
    install_crd(client, &repo_root().join("crds/metricstream.yaml")).await;
    match strimzi_crds_dir() {
        Some(dir) => {
            install_crd(client, &dir.join("043-Crd-kafkatopic.yaml")).await;
            install_crd(client, &dir.join("044-Crd-kafkauser.yaml")).await;
        }
        None if need_strimzi => panic!(
            "this test needs Strimzi's KafkaTopic CRD: set STRIMZI_CRDS_DIR to the directory \
             `hack/strimzi-crds.sh` prints (Strimzi 1.2.0's CRDs, 043-Crd-kafkatopic.yaml)"
        ),
        None => {}
    }
}

/// Polls `check` until it returns `Some`, for at most [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    format!("{}-{:x}", std::process::id(), nanos)
}

/// A free loopback port below the ephemeral range (32768+), so no outgoing connection can be
/// given it before the operator binds it; 20000.. keeps clear of the process tests' 11000..16000.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    (0..2_000)
        .map(|_| 20_000 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2_000)
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free loopback port in 20000..22000")
}

fn operator_binary() -> PathBuf {
    let dir = match std::env::var_os("METRICSTREAM_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("locating the test executable");
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| panic!("{} is not in target/<profile>/deps", exe.display()))
        }
    };
    let path = dir.join(format!(
        "metricstream-operator{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --bins` first (make test does), or point \
         METRICSTREAM_BIN_DIR at the directory holding the binaries",
        path.display()
    );
    path
}

/// One test's world: its namespaces and the operator process watching the first. Dropping it
/// kills the operator, prints its log tail if the test is failing, and deletes the namespaces
/// (after removing MetricStream finalizers, which no operator will release any more).
struct Env {
    client: Client,
    ns: String,
    extra_namespaces: Vec<String>,
    operator: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start(test: &str, need_strimzi: bool) -> Self {
        Self::start_with(test, need_strimzi, &[]).await
    }

    /// [`Env::start`] with extra flags for the operator.
    async fn start_with(test: &str, need_strimzi: bool, flags: &[&str]) -> Self {
        let mut env = Self::without_operator(test, need_strimzi).await;
        let operator = env.operator_command(flags);
        env.spawn_operator(operator);
        env
    }

    fn operator_command(&self, flags: &[&str]) -> Command {
        let mut operator = Command::new(operator_binary());
        operator
            .args(["run", "--namespace", &self.ns, "--admin-listen"])
            .arg(format!("127.0.0.1:{}", free_port()))
            .args(flags);
        operator
    }

    /// Stops the operator and starts it again with other flags (same log).
    fn restart_operator(&mut self, flags: &[&str]) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let operator = self.operator_command(flags);
        self.spawn_operator(operator);
    }

    /// The test's namespace and CRDs, for a test that starts the operator its own way.
    async fn without_operator(test: &str, need_strimzi: bool) -> Self {
        let client = client().await;
        install_crds(&client, need_strimzi).await;
        let ns = format!("envtest-{test}-{}", unique_suffix());
        create_namespace(&client, &ns).await;
        let dir = tempfile::Builder::new()
            .prefix(&format!("metricstream-envtest-{test}-"))
            .tempdir()
            .expect("creating a temporary directory");
        let log = dir.path().join("operator.log");
        Self {
            client,
            ns,
            extra_namespaces: Vec::new(),
            operator: None,
            log,
            _dir: dir,
        }
    }

    /// Starts the operator command with its output in the test's log.
    fn spawn_operator(&mut self, mut operator: Command) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the operator log");
        if !operator.get_envs().any(|(name, _)| name == "RUST_LOG") {
            operator.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        let child = operator
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicating the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting metricstream-operator");
        self.operator = Some(child);
    }

    /// A second namespace (e.g. a Strimzi cluster's), deleted with the test's.
    async fn extra_namespace(&mut self, what: &str) -> String {
        let ns = format!("{}-{what}", self.ns);
        create_namespace(&self.client, &ns).await;
        self.extra_namespaces.push(ns.clone());
        ns
    }

    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn streams(&self) -> Api<MetricStream> {
        self.api()
    }

    async fn create_stream(&self, name: &str, spec: Value) -> MetricStream {
        self.try_create_stream(name, spec)
            .await
            .unwrap_or_else(|e| panic!("creating MetricStream {name}: {e}"))
    }

    /// Creates a MetricStream the API server may refuse.
    async fn try_create_stream(
        &self,
        name: &str,
        spec: Value,
    ) -> Result<MetricStream, kube::Error> {
        let stream: MetricStream = serde_json::from_value(json!({
            "apiVersion": "metricstream.dev/v1alpha1",
            "kind": "MetricStream",
            "metadata": { "name": name, "namespace": self.ns },
            "spec": spec,
        }))
        .expect("a MetricStream");
        self.streams().create(&PostParams::default(), &stream).await
    }

    async fn merge_spec(&self, name: &str, spec: Value) -> Result<MetricStream, kube::Error> {
        self.streams()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
    }

    /// Waits for a child object of this namespace to exist, and returns it.
    async fn child<K>(&self, name: &str) -> K
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let api: Api<K> = self.api();
        let kind = K::kind(&Default::default()).into_owned();
        eventually(&format!("{kind} {name}"), || {
            let api = api.clone();
            async move { api.get_opt(name).await.ok().flatten() }
        })
        .await
    }

    /// Waits until `check` accepts the stream's status, and returns the stream.
    async fn stream_until(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&MetricStream) -> bool,
    ) -> MetricStream {
        let api = self.streams();
        let check = &check;
        eventually(what, || {
            let api = api.clone();
            async move {
                let stream = api.get_opt(name).await.ok().flatten()?;
                check(&stream).then_some(stream)
            }
        })
        .await
    }

    async fn gone<K>(&self, api: Api<K>, name: &str)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
        <K as Resource>::DynamicType: Default,
    {
        let kind = K::kind(&Default::default()).into_owned();
        eventually(&format!("{kind} {name} to be deleted"), || {
            let api = api.clone();
            async move { matches!(api.get_opt(name).await, Ok(None)).then_some(()) }
        })
        .await
    }

    fn assert_operator_running(&mut self) {
        if let Some(child) = self.operator.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("the operator exited early: {status}");
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some(mut child) = self.operator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last {LOG_TAIL_LINES} lines of the operator log ({}) ----\n{}\n----",
                self.log.display(),
                self.log_tail()
            );
        }
        let mut namespaces = vec![self.ns.clone()];
        namespaces.append(&mut self.extra_namespaces);
        // A fresh runtime on a fresh thread: Drop may run inside (or after) the test's runtime.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime for cleanup");
            runtime.block_on(async move {
                let Ok(client) = Client::try_default().await else {
                    return;
                };
                for ns in &namespaces {
                    let streams: Api<MetricStream> = Api::namespaced(client.clone(), ns);
                    if let Ok(list) = streams.list(&ListParams::default()).await {
                        for stream in list {
                            let _ = streams
                                .patch(
                                    &stream.name_any(),
                                    &PatchParams::default(),
                                    &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
                                )
                                .await;
                        }
                    }
                    let namespaces: Api<Namespace> = Api::all(client.clone());
                    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("a Namespace");
    api.create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

// ---- assertions ---------------------------------------------------------------------------

fn condition<'a>(stream: &'a MetricStream, type_: &str) -> Option<&'a Condition> {
    stream
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_is(stream: &MetricStream, type_: &str, status: &str) -> bool {
    condition(stream, type_).is_some_and(|c| c.status == status)
}

/// `result` is the API server refusing a write as invalid (422), saying `words`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str, words: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{what}: {status:?}");
            assert!(status.message.contains(words), "{what}: {status:?}");
        }
        other => panic!("{what} was not refused: {other:?}"),
    }
}

/// The status describes the current spec.
/// Waits for the first object in `api` with the labels `selector`, and returns it.
async fn first_labelled<K>(what: &str, api: &Api<K>, selector: &str) -> K
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async move {
        let list = api
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items.into_iter().next()
    })
    .await
}

/// Writes (server-side applies) a Secret holding one key.
async fn put_secret(api: &Api<Secret>, name: &str, key: &str, value: &str) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name },
        "data": { key: ByteString(value.as_bytes().to_vec()) },
    }))
    .expect("a Secret");
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .unwrap_or_else(|e| panic!("writing Secret {name}: {e}"));
}

fn observed(stream: &MetricStream) -> bool {
    let status = stream.status.as_ref();
    status.and_then(|s| s.observed_generation) == stream.metadata.generation
}

fn assert_labels(meta: &kube::core::ObjectMeta, stream: &str) {
    let labels = meta.labels.clone().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or("?");
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("metricstream-operator"),
        "{name}: managed-by label, labels {labels:?}"
    );
    assert_eq!(
        labels.get("metricstream.dev/stream").map(String::as_str),
        Some(stream),
        "{name}: stream label, labels {labels:?}"
    );
}

fn assert_controlled_by(meta: &kube::core::ObjectMeta, owner: &MetricStream) {
    let name = meta.name.as_deref().unwrap_or("?");
    let refs: &[OwnerReference] = meta.owner_references.as_deref().unwrap_or_default();
    let controller: Vec<&OwnerReference> =
        refs.iter().filter(|r| r.controller == Some(true)).collect();
    assert_eq!(
        controller.len(),
        1,
        "{name}: one controller reference, got {refs:?}"
    );
    let r = controller[0];
    assert_eq!(r.kind, "MetricStream", "{name}: {r:?}");
    assert_eq!(r.api_version, "metricstream.dev/v1alpha1", "{name}: {r:?}");
    assert_eq!(r.name, owner.name_any(), "{name}: {r:?}");
    assert_eq!(Some(&r.uid), owner.metadata.uid.as_ref(), "{name}: {r:?}");
}

fn config_hash(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get("metricstream.dev/config-hash")
        .cloned()
}

fn partitions_in(config: &ConfigMap) -> Option<String> {
    config
        .data
        .as_ref()?
        .get("METRICSTREAM_PARTITIONS")
        .cloned()
}

fn file_spec(partitions: i32) -> Value {
    json!({ "backend": "file", "partitions": partitions, "file": { "storage": "1Gi" } })
}

fn kafka_settings(bootstrap: &str, topic: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        partitions: 1,
        client_id: "metricstream-envtest".into(),
        security: Default::default(),
        extra: Vec::new(),
    }
}

fn kafka_bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP")
        .ok()
        .filter(|b| !b.is_empty())
        .expect(NEEDS_KAFKA)
}

async fn partitions_of(bootstrap: &str, topic: &str) -> Option<u32> {
    topic_partitions(&kafka_settings(bootstrap, topic))
        .await
        .unwrap_or_else(|e| panic!("reading topic {topic}'s metadata from {bootstrap}: {e}"))
}

// ---- tests --------------------------------------------------------------------------------

/// A file-backed stream gets every child, labelled and owned (data volumes not owned under the
/// default Retain), and a truthful status: nothing runs without a kubelet.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_file_stream_gets_its_children_and_a_truthful_status() {
    let mut env = Env::start("file", false).await;
    let created = env.create_stream("demo", file_spec(4)).await;

    let config: ConfigMap = env.child("demo-config").await;
    let ingest: Deployment = env.child("demo-ingest").await;
    let service: Service = env.child("demo-ingest").await;
    let consumer: Deployment = env.child("demo-consumer").await;
    let queue: PersistentVolumeClaim = env.child("demo-queue").await;
    let sink: PersistentVolumeClaim = env.child("demo-sink").await;
    let ingest_policy: NetworkPolicy = env.child("demo-ingest").await;
    let consumer_policy: NetworkPolicy = env.child("demo-consumer").await;

    for meta in [
        &config.metadata,
        &ingest.metadata,
        &service.metadata,
        &consumer.metadata,
        &ingest_policy.metadata,
        &consumer_policy.metadata,
    ] {
        assert_labels(meta, "demo");
        assert_controlled_by(meta, &created);
    }
    for pvc in [&queue, &sink] {
        assert_labels(&pvc.metadata, "demo");
        assert!(
            pvc.metadata
                .owner_references
                .as_deref()
                .unwrap_or_default()
                .is_empty(),
            "{}: no ownerReference under deletionPolicy Retain, got {:?}",
            pvc.name_any(),
            pvc.metadata.owner_references
        );
    }
    assert_eq!(partitions_in(&config).as_deref(), Some("4"));
    let hash = config_hash(&ingest).expect("the ingest pod template has a config hash");
    assert_eq!(config_hash(&consumer).as_ref(), Some(&hash));

    let stream = env
        .stream_until(
            "demo",
            "a status for the current generation with IngestAvailable and Ready",
            |s| {
                observed(s)
                    && condition(s, "IngestAvailable").is_some()
                    && condition(s, "Ready").is_some()
            },
        )
        .await;
    let ingest_available = condition(&stream, "IngestAvailable").expect("IngestAvailable");
    assert_eq!(
        ingest_available.status, "False",
        "no kubelet: {ingest_available:?}"
    );
    assert!(
        !ingest_available.reason.is_empty(),
        "IngestAvailable has a reason: {ingest_available:?}"
    );
    let ready = condition(&stream, "Ready").expect("Ready");
    assert_eq!(ready.status, "False", "{ready:?}");
    assert!(
        !ready.reason.is_empty() && !ready.message.is_empty(),
        "{ready:?}"
    );
    assert_eq!(stream.status.as_ref().and_then(|s| s.partitions), Some(4));
    // The file backend's pods share a ReadWriteOnce volume and must move together: no budget.
    let budgets = env
        .api::<PodDisruptionBudget>()
        .list(&ListParams::default())
        .await
        .expect("listing PodDisruptionBudgets");
    assert!(budgets.items.is_empty(), "{:?}", budgets.items);
    env.assert_operator_running();
}

/// The operator reconciles only on changes that matter (see `triggers`), yet still notices what
/// happens to its children: the controller-manager's Deployment availability, a PVC's phase, a
/// deleted child (recreated at once, not at the next resync).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_child_status_changes_and_deleted_children_are_noticed() {
    let mut env = Env::start("heal", false).await;
    env.create_stream("heal", file_spec(2)).await;
    // The message of the Deployment's Available condition, which only kube-controller-manager
    // writes (after the operator created the Deployment), shows in the stream's status.
    env.stream_until(
        "heal",
        "IngestAvailable with the Deployment's Available message",
        |s| {
            observed(s)
                && condition(s, "IngestAvailable")
                    .is_some_and(|c| c.message.contains("minimum availability"))
        },
    )
    .await;

    // No PersistentVolume controller runs here: the phase is the test's to set. The file
    // backend is ready once both its volumes are bound; until then the message names the other.
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    pvcs.patch_status(
        "heal-queue",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "phase": "Bound" } })),
    )
    .await
    .expect("binding the queue PVC");
    env.stream_until(
        "heal",
        "BackendReady=False naming the sink volume as Pending",
        |s| {
            condition(s, "BackendReady").is_some_and(|c| {
                c.status == "False"
                    && c.message
                        == "sink volume heal-sink is Pending: not bound to a PersistentVolume yet"
            })
        },
    )
    .await;
    pvcs.patch_status(
        "heal-sink",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "phase": "Bound" } })),
    )
    .await
    .expect("binding the sink PVC");
    env.stream_until(
        "heal",
        "BackendReady=True once the volumes are bound",
        |s| condition_is(s, "BackendReady", "True"),
    )
    .await;

    let config: ConfigMap = env.child("heal-config").await;
    let consumer: Deployment = env.child("heal-consumer").await;
    env.api::<ConfigMap>()
        .delete("heal-config", &DeleteParams::default())
        .await
        .expect("deleting the ConfigMap");
    env.api::<Deployment>()
        .delete("heal-consumer", &DeleteParams::default())
        .await
        .expect("deleting the consumer Deployment");
    for (kind, name, old_uid) in [
        ("ConfigMap", "heal-config", config.uid()),
        ("Deployment", "heal-consumer", consumer.uid()),
    ] {
        let recreated = |uid: Option<String>| (uid.is_some() && uid != old_uid).then_some(());
        let (configs, deployments) = (env.api::<ConfigMap>(), env.api::<Deployment>());
        eventually(&format!("{kind} {name} to be recreated"), || {
            let (configs, deployments) = (configs.clone(), deployments.clone());
            async move {
                let uid = match kind {
                    "ConfigMap" => configs.get_opt(name).await.ok()??.uid(),
                    _ => deployments.get_opt(name).await.ok()??.uid(),
                };
                recreated(uid)
            }
        })
        .await;
    }

    // Edits are repaired at once too: the operator remembers what it applied, but an edited
    // child no longer shows the version that apply returned (resourceVersion for a ConfigMap,
    // generation for a Deployment), so it is applied again.
    let partitions = partitions_in(&env.child::<ConfigMap>("heal-config").await);
    env.api::<ConfigMap>()
        .patch(
            "heal-config",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "METRICSTREAM_PARTITIONS": "7" } })),
        )
        .await
        .expect("editing the ConfigMap");
    env.api::<Deployment>()
        .patch(
            "heal-consumer",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 3 } })),
        )
        .await
        .expect("scaling the consumer Deployment");
    let (configs, deployments) = (env.api::<ConfigMap>(), env.api::<Deployment>());
    eventually("the edited ConfigMap and Deployment to be reverted", || {
        let (configs, deployments) = (configs.clone(), deployments.clone());
        let partitions = partitions.clone();
        async move {
            let config = configs.get("heal-config").await.ok()?;
            let consumer = deployments.get("heal-consumer").await.ok()?;
            let replicas = consumer.spec.as_ref()?.replicas;
            (partitions_in(&config) == partitions && replicas != Some(3)).then_some(())
        }
    })
    .await;
    env.assert_operator_running();
}

/// The API server enforces the CRD's CEL rules; partition growth reaches the config, rolls the
/// workloads (hash annotation) and shows in status.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_cel_rules_hold_and_partition_growth_rolls_the_workloads() {
    let mut env = Env::start("growth", false).await;

    // A file backend without its settings block never reaches the operator.
    assert_refused(
        env.try_create_stream("nofile", json!({ "backend": "file", "partitions": 4 }))
            .await,
        "a file stream without spec.file",
        "spec.file is required",
    );

    env.create_stream("grow", file_spec(4)).await;
    let config: ConfigMap = env.child("grow-config").await;
    assert_eq!(partitions_in(&config).as_deref(), Some("4"));
    let before = config_hash(&env.child::<Deployment>("grow-ingest").await)
        .expect("a config hash on ingest");

    assert_refused(
        env.merge_spec("grow", json!({ "partitions": 2 })).await,
        "a partition decrease",
        "never decrease",
    );

    env.merge_spec("grow", json!({ "partitions": 8 }))
        .await
        .expect("growing partitions 4 -> 8");
    let configs: Api<ConfigMap> = env.api();
    eventually("METRICSTREAM_PARTITIONS=8 in the ConfigMap", || {
        let configs = configs.clone();
        async move {
            let config = configs.get("grow-config").await.ok()?;
            (partitions_in(&config).as_deref() == Some("8")).then_some(())
        }
    })
    .await;
    let deployments: Api<Deployment> = env.api();
    for name in ["grow-ingest", "grow-consumer"] {
        let before = &before;
        let deployments = &deployments;
        let after = eventually(&format!("a new config hash on {name}"), || async move {
            let hash = config_hash(&deployments.get(name).await.ok()?)?;
            (hash != *before).then_some(hash)
        })
        .await;
        assert_ne!(&after, before);
    }
    let stream = env
        .stream_until(
            "grow",
            "status.partitions 8 for the current generation",
            |s| observed(s) && s.status.as_ref().and_then(|st| st.partitions) == Some(8),
        )
        .await;
    assert_eq!(stream.spec.partitions, 8);
    env.assert_operator_running();
}

/// The scale subresource drives the consumers (what an HPA or KEDA does), and reports the
/// consumer pods' selector; with `spec.consumer.autoscaling` the API server refuses both a scale
/// write and a change of replicas, and the autoscaler, unable to measure any lag (no consumer
/// runs without a kubelet), holds the consumers where they are with a Warning Event.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_scale_subresource_and_autoscaling_take_turns() {
    let mut env = Env::start("scale", false).await;
    env.create_stream("scaled", file_spec(4)).await;
    let streams = env.streams();
    let patch = |replicas: i32| Patch::Merge(json!({ "spec": { "replicas": replicas } }));
    streams
        .patch_scale("scaled", &PatchParams::default(), &patch(3))
        .await
        .expect("scaling the consumers to 3 through the scale subresource");
    let deployments: Api<Deployment> = env.api();
    eventually("the consumer Deployment at 3 replicas", || {
        let deployments = deployments.clone();
        async move {
            let spec = deployments.get("scaled-consumer").await.ok()?.spec?;
            (spec.replicas == Some(3)).then_some(())
        }
    })
    .await;
    let stream = env
        .stream_until("scaled", "status.consumerSelector", |s| {
            s.status
                .as_ref()
                .is_some_and(|st| st.consumer_selector.is_some())
        })
        .await;
    let selector = stream
        .status
        .and_then(|s| s.consumer_selector)
        .expect("a selector");
    assert!(
        selector.contains("metricstream.dev/stream=scaled"),
        "{selector}"
    );
    let scale = streams
        .get_scale("scaled")
        .await
        .expect("reading the scale");
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some(selector.as_str())
    );

    assert_refused(
        env.merge_spec(
            "scaled",
            json!({ "consumer": { "autoscaling": {
                "minReplicas": 3, "maxReplicas": 2, "targetLagRecords": 100 } } }),
        )
        .await,
        "minReplicas above maxReplicas",
        "must not exceed maxReplicas",
    );
    env.merge_spec(
        "scaled",
        json!({ "consumer": { "autoscaling": {
            "minReplicas": 1, "maxReplicas": 4, "targetLagRecords": 100 } } }),
    )
    .await
    .expect("turning autoscaling on");
    assert_refused(
        streams
            .patch_scale("scaled", &PatchParams::default(), &patch(2))
            .await,
        "a scale write while the operator autoscales",
        "cannot change while spec.consumer.autoscaling is set",
    );
    assert_refused(
        env.merge_spec("scaled", json!({ "consumer": { "replicas": 1 } }))
            .await,
        "a replicas change while the operator autoscales",
        "cannot change while spec.consumer.autoscaling is set",
    );
    let stream = env
        .stream_until("scaled", "status.autoscaling with an unknown lag", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.autoscaling.as_ref())
                .is_some_and(|a| a.lag_records.is_none() && a.message.contains("lag unknown"))
        })
        .await;
    let autoscaling = stream
        .status
        .and_then(|s| s.autoscaling)
        .expect("autoscaling status");
    assert_eq!(
        autoscaling.desired_replicas, 3,
        "held where it was: {autoscaling:?}"
    );
    warning_event(&env, "scaled", "LagUnknown", &["no consumer pod runs"]).await;
    let spec = deployments
        .get("scaled-consumer")
        .await
        .expect("the consumer Deployment")
        .spec
        .expect("a spec");
    assert_eq!(
        spec.replicas,
        Some(3),
        "an unknown lag never moves the consumers"
    );
    env.assert_operator_running();
}

/// A stream whose consumers write over remote write: the API server refuses wrong sink
/// combinations with the CRD's messages; a right one gives the consumers (and only them) the
/// sink's environment and the token's Secret, keeps the sink volume (dead letters), and a
/// `SinkAvailable` condition that says why it cannot tell (no kubelet, so no consumer runs).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_a_remote_write_sink_reaches_the_consumers_and_cel_refuses_bad_sinks() {
    let mut env = Env::start("sink", false).await;
    let with_sink = |sink: Value| {
        let mut spec = file_spec(2);
        spec["consumer"] = json!({ "sink": sink });
        spec
    };
    let refused = [
        (
            json!({ "type": "file", "remoteWrite": { "url": "http://vm:8428/api/v1/write" } }),
            "remoteWrite may only be set when consumer.sink.type is remoteWrite",
        ),
        (
            json!({ "type": "remoteWrite" }),
            "consumer.sink.remoteWrite is required when consumer.sink.type is remoteWrite",
        ),
        (
            json!({ "type": "remoteWrite", "remoteWrite": { "url": "vm:8428/api/v1/write" } }),
            "url must be an http:// or https:// URL",
        ),
        (
            json!({ "type": "remoteWrite", "remoteWrite": {
                "url": "http://vm:8428/api/v1/write",
                "bearerTokenSecretRef": { "name": "vm-token" },
                "basicAuth": { "username": "u", "passwordSecretRef": { "name": "vm-password" } },
            } }),
            "bearerTokenSecretRef and basicAuth are exclusive",
        ),
    ];
    for (index, (sink, words)) in refused.into_iter().enumerate() {
        assert_refused(
            env.try_create_stream(&format!("bad-{index}"), with_sink(sink.clone()))
                .await,
            &format!("sink {sink}"),
            words,
        );
    }

    env.create_stream(
        "rw",
        with_sink(json!({ "type": "remoteWrite", "remoteWrite": {
            "url": "http://victoriametrics.monitoring:8428/api/v1/write",
            "bearerTokenSecretRef": { "name": "vm-token" },
            "timeoutSeconds": 5,
        } })),
    )
    .await;
    let consumer: Deployment = env.child("rw-consumer").await;
    let ingest: Deployment = env.child("rw-ingest").await;
    let _sink_volume: PersistentVolumeClaim = env.child("rw-sink").await;
    let pod = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("a pod template")
    };
    let consumer_pod = pod(&consumer);
    let container = &consumer_pod.containers[0];
    let env_vars: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("METRICSTREAM_SINK", "remote-write"),
        (
            "METRICSTREAM_SINK_URL",
            "http://victoriametrics.monitoring:8428/api/v1/write",
        ),
        (
            "METRICSTREAM_SINK_BEARER_TOKEN_FILE",
            "/etc/metricstream/sink-token/token",
        ),
        ("METRICSTREAM_SINK_MAX_SAMPLES_PER_REQUEST", "5000"),
        ("METRICSTREAM_SINK_CONCURRENCY", "4"),
        ("METRICSTREAM_SINK_PROTOCOL", "1.0"),
        ("METRICSTREAM_SINK_TIMEOUT_MS", "5000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(env_vars, expected);
    let token_volume = consumer_pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "sink-token")
        .and_then(|v| v.secret.clone())
        .expect("the token's Secret volume");
    assert_eq!(token_volume.secret_name.as_deref(), Some("vm-token"));
    let items: Vec<(String, String)> = token_volume
        .items
        .iter()
        .flatten()
        .map(|item| (item.key.clone(), item.path.clone()))
        .collect();
    assert_eq!(items, [("token".to_owned(), "token".to_owned())]);
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "sink-token")
        .expect("the token's mount");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/metricstream/sink-token", Some(true))
    );
    assert!(
        consumer_pod.volumes.iter().flatten().any(|v| v
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str())
            == Some("rw-sink")),
        "the consumers keep the sink volume for quarantine and dead letters"
    );
    let ingest_pod = pod(&ingest);
    assert_eq!(
        ingest_pod.containers[0].env, None,
        "the ingest gets no sink setting"
    );
    assert!(
        ingest_pod
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != "sink-token")
    );

    let stream = env
        .stream_until("rw", "SinkAvailable for the current generation", |s| {
            observed(s) && condition(s, "SinkAvailable").is_some()
        })
        .await;
    let sink = condition(&stream, "SinkAvailable").expect("SinkAvailable");
    assert_eq!(
        (sink.status.as_str(), sink.reason.as_str()),
        ("Unknown", "NoConsumerRunning"),
        "no kubelet, so no consumer can tell: {sink:?}"
    );

    // A changed token reference rolls the consumers (their pod template changes).
    env.merge_spec(
        "rw",
        json!({ "consumer": { "sink": { "remoteWrite": {
            "bearerTokenSecretRef": { "name": "vm-token-2", "key": "bearer" },
        } } } }),
    )
    .await
    .expect("changing the token reference");
    let deployments: Api<Deployment> = env.api();
    eventually("the consumer to mount vm-token-2", || {
        let deployments = deployments.clone();
        async move {
            let consumer = deployments.get("rw-consumer").await.ok()?;
            let template = consumer.spec?.template.spec?;
            template
                .volumes?
                .iter()
                .any(|v| {
                    v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("vm-token-2")
                })
                .then_some(())
        }
    })
    .await;

    // Scaled to zero, nothing can report: the condition says so.
    env.merge_spec("rw", json!({ "consumer": { "replicas": 0 } }))
        .await
        .expect("scaling the consumers to zero");
    env.stream_until("rw", "SinkAvailable Unknown/NoConsumers", |s| {
        observed(s)
            && condition(s, "SinkAvailable")
                .is_some_and(|c| c.status == "Unknown" && c.reason == "NoConsumers")
    })
    .await;
    env.assert_operator_running();
}

/// `topicManagement: admin` creates and grows the topic on the real broker; with
/// deletionPolicy Delete, deleting the stream deletes the topic and releases the finalizer.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_admin_mode_manages_the_topic_on_the_broker() {
    let bootstrap = kafka_bootstrap();
    let mut env = Env::start("admin", false).await;
    let topic = format!("metricstream-envtest-{}", unique_suffix());
    env.create_stream(
        "kstream",
        json!({
            "backend": "kafka",
            "partitions": 3,
            "deletionPolicy": "Delete",
            "kafka": {
                "bootstrapServers": bootstrap,
                "topic": topic,
                "topicManagement": "admin",
            },
        }),
    )
    .await;

    let stream = env
        .stream_until("kstream", "BackendReady=True", |s| {
            observed(s) && condition_is(s, "BackendReady", "True")
        })
        .await;
    assert_eq!(partitions_of(&bootstrap, &topic).await, Some(3));
    assert_eq!(
        stream.status.as_ref().and_then(|s| s.topic.as_deref()),
        Some(topic.as_str())
    );
    assert!(
        stream
            .finalizers()
            .iter()
            .any(|f| f == "metricstream.dev/cleanup"),
        "a Delete-policy admin topic needs the finalizer: {:?}",
        stream.finalizers()
    );
    assert!(
        env.child::<PersistentVolumeClaim>("kstream-sink")
            .await
            .name_any()
            == "kstream-sink"
    );

    // Growth reaches the topic.
    env.merge_spec("kstream", json!({ "partitions": 5 }))
        .await
        .expect("growing partitions 3 -> 5");
    let (bootstrap_ref, topic_ref) = (&bootstrap, &topic);
    eventually("the topic to have 5 partitions", || async move {
        (partitions_of(bootstrap_ref, topic_ref).await == Some(5)).then_some(())
    })
    .await;

    env.streams()
        .delete("kstream", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "kstream").await;
    eventually("the topic to be deleted", || async move {
        partitions_of(bootstrap_ref, topic_ref)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    env.assert_operator_running();
}

/// The broker's SASL_SSL listener and its admin user, from `hack/kafka.sh up` (make test exports
/// them with KAFKA_BOOTSTRAP).
fn secure_kafka() -> (String, String, String, String) {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!("{name} must be set: `hack/kafka.sh up` prints it (make test exports it)")
            })
    };
    let read = |path: String| {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    };
    (
        var("KAFKA_SECURE_BOOTSTRAP"),
        read(var("KAFKA_CA_FILE")),
        var("KAFKA_SCRAM_ADMIN_USERNAME"),
        read(var("KAFKA_SCRAM_ADMIN_PASSWORD_FILE"))
            .trim_end()
            .to_owned(),
    )
}

/// `topicManagement: admin` over the real broker's SASL_SSL listener: the operator's own client
/// takes the CA and the SCRAM password from the Secrets the stream names, creates and grows the
/// topic; with a wrong password it reports the refusal in status (never the password) and
/// leaves the topic alone.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane and a broker: KUBECONFIG and KAFKA_SECURE_* (make test runs them)"]
async fn envtest_admin_mode_over_tls_and_scram_uses_the_streams_secrets() {
    let plaintext = kafka_bootstrap();
    let (secure, ca_pem, admin_user, admin_password) = secure_kafka();
    let mut env = Env::start("adminsec", false).await;
    let secrets: Api<Secret> = env.api();
    put_secret(&secrets, "kafka-ca", "ca.crt", &ca_pem).await;
    put_secret(
        &secrets,
        "kafka-admin",
        "password",
        &format!("{admin_password}\n"),
    )
    .await;
    let topic = format!("metricstream-envtest-secure-{}", unique_suffix());
    env.create_stream(
        "sec",
        json!({
            "backend": "kafka",
            "partitions": 2,
            "kafka": {
                "bootstrapServers": secure,
                "topic": topic,
                "topicManagement": "admin",
                "tls": { "caSecretRef": { "name": "kafka-ca" } },
                "authentication": {
                    "type": "scram-sha-512",
                    "username": admin_user,
                    "passwordSecretRef": { "name": "kafka-admin" },
                },
            },
        }),
    )
    .await;
    env.stream_until("sec", "BackendReady=True over SASL_SSL", |s| {
        observed(s) && condition_is(s, "BackendReady", "True")
    })
    .await;
    assert_eq!(partitions_of(&plaintext, &topic).await, Some(2));
    let config: ConfigMap = env.child("sec-config").await;
    let data = config.data.unwrap_or_default();
    assert_eq!(data["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
    assert!(
        !data.values().any(|v| v.contains(&admin_password)),
        "the password never reaches the ConfigMap"
    );

    // A wrong password: growth is refused and said so, the topic stays as it was.
    put_secret(&secrets, "kafka-admin", "password", "not-the-password").await;
    env.merge_spec("sec", json!({ "partitions": 3 }))
        .await
        .expect("growing partitions 2 -> 3");
    let refused = env
        .stream_until("sec", "BackendReady=False naming the refusal", |s| {
            observed(s)
                && condition(s, "BackendReady").is_some_and(|c| {
                    c.status == "False" && c.message.contains("SASL authentication failed")
                })
        })
        .await;
    let status = serde_json::to_string(&refused.status).expect("status as JSON");
    assert!(!status.contains("not-the-password"), "{status}");
    assert_eq!(partitions_of(&plaintext, &topic).await, Some(2));
    env.assert_operator_running();
}

/// `topicManagement: strimzi` writes a KafkaTopic (Strimzi's real CRD) into the Kafka cluster's
/// namespace, reports its Ready condition, and under Retain leaves it behind on deletion.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_strimzi_mode_writes_a_kafka_topic_and_reports_its_readiness() {
    let mut env = Env::start("strimzi", true).await;
    let kafka_ns = env.extra_namespace("kafka").await;
    env.create_stream(
        "strm",
        json!({
            "backend": "kafka",
            "partitions": 6,
            "kafka": {
                "bootstrapServers": "my-cluster-kafka-bootstrap:9092",
                "topicManagement": "strimzi",
                "strimzi": { "cluster": "my-cluster", "namespace": kafka_ns },
            },
        }),
    )
    .await;

    let topics: Api<KafkaTopic> = Api::namespaced(env.client.clone(), &kafka_ns);
    let selector = format!(
        "metricstream.dev/owner-namespace={},metricstream.dev/owner-name=strm",
        env.ns
    );
    let topic = first_labelled("a KafkaTopic in the Kafka namespace", &topics, &selector).await;
    let labels: BTreeMap<String, String> = topic.labels().clone();
    assert_eq!(
        labels.get("strimzi.io/cluster").map(String::as_str),
        Some("my-cluster"),
        "{labels:?}"
    );
    assert_eq!(topic.spec.partitions, Some(6));
    let expected_topic = format!("metricstream.{}.strm", env.ns);
    assert_eq!(
        topic.spec.topic_name.as_deref(),
        Some(expected_topic.as_str())
    );
    assert!(
        topic
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .is_empty(),
        "no cross-namespace ownerReference: {:?}",
        topic.metadata.owner_references
    );

    let stream = env
        .stream_until("strm", "BackendReady=False before Strimzi reports", |s| {
            observed(s) && condition_is(s, "BackendReady", "False")
        })
        .await;
    assert!(
        stream
            .finalizers()
            .iter()
            .any(|f| f == "metricstream.dev/cleanup"),
        "a KafkaTopic in another namespace needs the finalizer: {:?}",
        stream.finalizers()
    );

    // Play Strimzi's Topic Operator: mark the KafkaTopic Ready.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    topics
        .patch_status(
            &topic.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {
                    "conditions": [{
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": now,
                    }],
                    "topicName": expected_topic,
                    "observedGeneration": topic.metadata.generation,
                },
            })),
        )
        .await
        .expect("patching the KafkaTopic's status");
    env.stream_until(
        "strm",
        "BackendReady=True after the KafkaTopic is Ready",
        |s| condition_is(s, "BackendReady", "True"),
    )
    .await;

    // Retain: the KafkaTopic stays, the finalizer is released.
    env.streams()
        .delete("strm", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "strm").await;
    let kept = topics
        .get_opt(&topic.name_any())
        .await
        .expect("reading the KafkaTopic");
    let kept = kept.expect("deletionPolicy Retain keeps the KafkaTopic");
    assert!(kept.metadata.deletion_timestamp.is_none(), "{kept:?}");
    env.assert_operator_running();
}

/// `strimzi.createUser` writes a KafkaUser with the workloads' ACLs into the Kafka namespace,
/// waits (BackendReady=False, CredentialsPending) until Strimzi has made the user's Secret and
/// the cluster CA, copies both into the stream's namespace, rolls the workloads when the password
/// rotates, and deletes the KafkaUser with the stream even under Retain.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_strimzi_create_user_copies_the_users_credentials_into_the_stream() {
    let mut env = Env::start("kuser", true).await;
    let kafka_ns = env.extra_namespace("kafka").await;
    env.create_stream(
        "secure",
        json!({
            "backend": "kafka",
            "partitions": 2,
            "kafka": {
                "bootstrapServers": "my-cluster-kafka-bootstrap:9093",
                "topicManagement": "strimzi",
                "tls": {},
                "strimzi": { "cluster": "my-cluster", "namespace": kafka_ns, "createUser": true },
            },
            "consumer": { "group": "secure-writers" },
        }),
    )
    .await;

    let users: Api<KafkaUser> = Api::namespaced(env.client.clone(), &kafka_ns);
    let selector = format!(
        "metricstream.dev/owner-namespace={},metricstream.dev/owner-name=secure",
        env.ns
    );
    let user = first_labelled("a KafkaUser in the Kafka namespace", &users, &selector).await;
    let username = user.name_any();
    let topic = format!("metricstream.{}.secure", env.ns);
    assert_eq!(
        user.labels().get("strimzi.io/cluster").map(String::as_str),
        Some("my-cluster")
    );
    let spec = serde_json::to_value(&user.spec).expect("KafkaUser spec as JSON");
    assert_eq!(spec["authentication"]["type"], "scram-sha-512");
    assert_eq!(
        spec["authorization"],
        json!({
            "type": "simple",
            "acls": [
                { "resource": { "type": "topic", "name": topic, "patternType": "literal" },
                  "operations": ["Read", "Write"] },
                { "resource": { "type": "group", "name": "secure-writers", "patternType": "literal" },
                  "operations": ["Read"] },
            ],
        })
    );

    // Play Strimzi's Topic Operator: the topic is Ready, so what is missing is the credentials.
    let topics: Api<KafkaTopic> = Api::namespaced(env.client.clone(), &kafka_ns);
    let kafka_topic =
        first_labelled("a KafkaTopic in the Kafka namespace", &topics, &selector).await;
    topics
        .patch_status(
            &kafka_topic.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({
                "status": {
                    "conditions": [{
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                    }],
                    "observedGeneration": kafka_topic.metadata.generation,
                },
            })),
        )
        .await
        .expect("patching the KafkaTopic's status");
    let pending = env
        .stream_until("secure", "BackendReady=False, CredentialsPending", |s| {
            condition(s, "BackendReady").is_some_and(|c| c.reason == "CredentialsPending")
        })
        .await;
    let message = &condition(&pending, "BackendReady")
        .expect("condition")
        .message;
    assert!(
        message.contains(&username) && message.contains("my-cluster-cluster-ca-cert"),
        "the condition names what is missing: {message}"
    );

    // Play Strimzi: the User Operator's Secret and the Cluster Operator's CA Secret.
    let kafka_secrets: Api<Secret> = Api::namespaced(env.client.clone(), &kafka_ns);
    put_secret(&kafka_secrets, &username, "password", "first-password").await;
    put_secret(
        &kafka_secrets,
        "my-cluster-cluster-ca-cert",
        "ca.crt",
        "-----BEGIN CERTIFICATE-----",
    )
    .await;

    let copied_data = |secret: &Secret| {
        let data = secret.data.clone().unwrap_or_default();
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        };
        (text("password"), text("ca.crt"))
    };
    let copied: Secret = env.child("secure-kafka-credentials").await;
    env.stream_until(
        "secure",
        "BackendReady=True once the credentials are copied",
        |s| condition_is(s, "BackendReady", "True"),
    )
    .await;
    let created = env.streams().get("secure").await.expect("the stream");
    assert_controlled_by(&copied.metadata, &created);
    assert_eq!(
        copied_data(&copied),
        (
            Some("first-password".to_owned()),
            Some("-----BEGIN CERTIFICATE-----".to_owned())
        )
    );
    let credentials_hash = |deployment: &Deployment| {
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("metricstream.dev/credentials-hash").cloned())
    };
    let deployments: Api<Deployment> = env.api();
    let first_hash = {
        let deployments = &deployments;
        eventually(
            "the ingest pods carry the credentials hash",
            || async move {
                let ingest = deployments.get_opt("secure-ingest").await.ok()??;
                credentials_hash(&ingest)
            },
        )
        .await
    };
    let ingest: Deployment = env.child("secure-ingest").await;
    let config: ConfigMap = env.child("secure-config").await;
    let data = config.data.unwrap_or_default();
    assert_eq!(data["METRICSTREAM_KAFKA_SECURITY_PROTOCOL"], "sasl-ssl");
    assert_eq!(data["METRICSTREAM_KAFKA_SASL_USERNAME"], username);
    let volumes = ingest
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.volumes)
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
            .any(|name| name == "secure-kafka-credentials"),
        "{volumes:?}"
    );

    // Strimzi rotates the password: the copy follows and the workloads roll.
    put_secret(&kafka_secrets, &username, "password", "second-password").await;
    {
        let deployments = &deployments;
        let first_hash = &first_hash;
        eventually("a new credentials hash after the rotation", || async move {
            let ingest = deployments.get_opt("secure-ingest").await.ok()??;
            credentials_hash(&ingest).filter(|hash| hash != first_hash)
        })
        .await;
    }
    let copied: Secret = env.child("secure-kafka-credentials").await;
    assert_eq!(copied_data(&copied).0.as_deref(), Some("second-password"));

    // Deletion (Retain): the KafkaTopic stays, the KafkaUser — credentials — goes.
    env.streams()
        .delete("secure", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "secure").await;
    env.gone(users.clone(), &username).await;
    env.assert_operator_running();
}

/// Switching file → kafka (admin) with deletionPolicy Delete prunes the queue volume; deleting
/// the stream lets the garbage collector delete its owned children.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_backend_switch_prunes_and_deletion_collects_children() {
    let bootstrap = kafka_bootstrap();
    let mut env = Env::start("switch", false).await;
    let mut spec = file_spec(2);
    spec["deletionPolicy"] = json!("Delete");
    let created = env.create_stream("sw", spec).await;
    let queue: PersistentVolumeClaim = env.child("sw-queue").await;
    // Under Delete the data volumes are owned too.
    assert_controlled_by(&queue.metadata, &created);

    let topic = format!("metricstream-envtest-{}", unique_suffix());
    env.merge_spec(
        "sw",
        json!({
            "backend": "kafka",
            "file": null,
            "kafka": {
                "bootstrapServers": bootstrap,
                "topic": topic,
                "topicManagement": "admin",
            },
        }),
    )
    .await
    .expect("switching the backend to kafka");
    let pvcs: Api<PersistentVolumeClaim> = env.api();
    {
        let pvcs = &pvcs;
        // The pvc-protection finalizer may hold the object a little while: deleting is enough.
        eventually("the queue PVC to be deleted", || async move {
            match pvcs.get_opt("sw-queue").await.ok()? {
                None => Some(()),
                Some(pvc) => pvc.metadata.deletion_timestamp.map(|_| ()),
            }
        })
        .await;
    }
    env.stream_until("sw", "BackendReady=True on kafka", |s| {
        observed(s) && condition_is(s, "BackendReady", "True")
    })
    .await;
    let config: ConfigMap = env.child("sw-config").await;
    assert_eq!(
        config
            .data
            .as_ref()
            .and_then(|d| d.get("METRICSTREAM_BACKEND"))
            .map(String::as_str),
        Some("kafka"),
        "{config:?}"
    );
    assert!(partitions_of(&bootstrap, &topic).await.is_some());

    env.streams()
        .delete("sw", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "sw").await;
    // kube-controller-manager's garbage collector deletes what the stream owned.
    env.gone(env.api::<ConfigMap>(), "sw-config").await;
    env.gone(env.api::<Service>(), "sw-ingest").await;
    env.gone(env.api::<Deployment>(), "sw-ingest").await;
    env.gone(env.api::<Deployment>(), "sw-consumer").await;
    env.assert_operator_running();
}

/// A Kafka-backend stream on a Strimzi topic in `kafka_ns` whose ingest spills.
fn spilling_spec(kafka_ns: &str, spill: Value) -> Value {
    json!({
        "backend": "kafka",
        "partitions": 2,
        "kafka": {
            "bootstrapServers": "my-cluster-kafka-bootstrap:9092",
            "topicManagement": "strimzi",
            "strimzi": { "cluster": "my-cluster", "namespace": kafka_ns },
            "spill": spill,
        },
        "ingest": { "replicas": 2 },
    })
}

/// The value of `name` in the first container's own `env` of a pod template.
fn own_env(template: &k8s_openapi::api::core::v1::PodTemplateSpec, name: &str) -> Option<String> {
    template.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|var| var.name == name)
        .and_then(|var| var.value.clone())
}

/// The spill claims of ingest pods `ordinals` of stream `stream` still exist, not being deleted.
async fn assert_claims_kept(env: &Env, stream: &str, ordinals: std::ops::Range<u32>, why: &str) {
    let claims: Api<PersistentVolumeClaim> = env.api();
    for ordinal in ordinals {
        let name = format!("spill-{stream}-ingest-{ordinal}");
        let claim = claims
            .get_opt(&name)
            .await
            .expect("GET")
            .unwrap_or_else(|| panic!("{name} is gone: {why}"));
        assert_eq!(claim.metadata.deletion_timestamp, None, "{name}: {why}");
    }
}

/// The IngestAvailable condition once the status describes the current spec and `check` holds.
async fn ingest_condition(env: &Env, name: &str, check: impl Fn(&Condition) -> bool) -> Condition {
    let stream = env
        .stream_until(name, "IngestAvailable for the current generation", |s| {
            observed(s) && condition(s, "IngestAvailable").is_some_and(&check)
        })
        .await;
    condition(&stream, "IngestAvailable")
        .cloned()
        .expect("IngestAvailable")
}

/// Spill on: the ingest is a StatefulSet (no Deployment) whose pods mount a claim each, made by
/// kube-controller-manager's StatefulSet controller from the template, never managed (so never
/// pruned) by the operator and kept when the StatefulSet scales down or goes; the ingest's
/// status reads the StatefulSet; scaling updates the live StatefulSet. Spill off: the Deployment is back and the StatefulSet pruned, its claims kept;
/// spill on again adopts the same claims. Deleting the stream leaves the claims too.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_spill_runs_the_ingest_as_a_stateful_set_and_off_brings_the_deployment_back() {
    let mut env = Env::start("spill", true).await;
    let kafka_ns = env.extra_namespace("kafka").await;
    let on = json!({ "enabled": true, "size": "256Mi", "storageClass": "fast-ssd" });
    let created = env
        .create_stream("sp", spilling_spec(&kafka_ns, on.clone()))
        .await;

    let stateful_set: StatefulSet = env.child("sp-ingest").await;
    assert_labels(&stateful_set.metadata, "sp");
    assert_controlled_by(&stateful_set.metadata, &created);
    let spec = stateful_set.spec.clone().expect("spec");
    assert_eq!(spec.replicas, Some(2));
    assert_eq!(spec.service_name.as_deref(), Some("sp-ingest"));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let retention = spec
        .persistent_volume_claim_retention_policy
        .clone()
        .expect("a claim retention policy");
    assert_eq!(
        (
            retention.when_scaled.as_deref(),
            retention.when_deleted.as_deref()
        ),
        (Some("Retain"), Some("Retain"))
    );
    assert_eq!(
        own_env(&spec.template, "METRICSTREAM_SPILL_DIR").as_deref(),
        Some("/var/lib/metricstream/spill")
    );
    assert_eq!(
        own_env(&spec.template, "METRICSTREAM_SPILL_MAX_BYTES").as_deref(),
        Some("241591910"),
        "90 % of 256Mi"
    );
    let templates = spec
        .volume_claim_templates
        .clone()
        .expect("a claim template");
    assert_eq!(templates.len(), 1);
    assert_eq!(templates[0].metadata.name.as_deref(), Some("spill"));
    let deployments: Api<Deployment> = env.api();
    assert!(
        deployments
            .get_opt("sp-ingest")
            .await
            .expect("GET")
            .is_none(),
        "no ingest Deployment while spill is on"
    );
    env.child::<Deployment>("sp-consumer").await;

    // The StatefulSet controller makes a claim per pod from the template.
    let claims: Api<PersistentVolumeClaim> = env.api();
    let mut claim_uids = Vec::new();
    for ordinal in 0..2 {
        let claim: PersistentVolumeClaim = env.child(&format!("spill-sp-ingest-{ordinal}")).await;
        let labels = claim.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("metricstream.dev/stream").map(String::as_str),
            Some("sp")
        );
        assert!(
            !labels.contains_key("app.kubernetes.io/managed-by"),
            "the operator does not manage (or prune) spill claims: {labels:?}"
        );
        assert_eq!(
            claim.metadata.owner_references, None,
            "Retain: the claim outlives the StatefulSet"
        );
        let claim_spec = claim.spec.clone().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast-ssd"));
        let size = claim_spec
            .resources
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").cloned())
            .map(|q| q.0);
        assert_eq!(size.as_deref(), Some("256Mi"));
        claim_uids.push(claim.metadata.uid.clone().expect("uid"));
    }
    let available = ingest_condition(&env, "sp", |c| c.reason != "DeploymentMissing").await;
    assert!(
        available.message.contains("replicas of sp-ingest"),
        "the ingest's condition reads the StatefulSet: {available:?}"
    );

    // Scaling applies to the live StatefulSet (its claim template unchanged, so the API server
    // takes the update); a new ordinal gets a claim, and scaling down keeps every claim.
    let stateful_sets: Api<StatefulSet> = env.api();
    let scaled_to = |replicas: i32| {
        let stateful_sets = stateful_sets.clone();
        move || {
            let stateful_sets = stateful_sets.clone();
            async move {
                let live = stateful_sets.get("sp-ingest").await.ok()?;
                let status = live.status?;
                (live.spec?.replicas == Some(replicas)
                    && status.observed_generation == live.metadata.generation
                    && status.replicas == replicas)
                    .then_some(())
            }
        }
    };
    env.merge_spec("sp", json!({ "ingest": { "replicas": 3 } }))
        .await
        .expect("scaling the ingest up");
    eventually("the StatefulSet at 3 replicas", scaled_to(3)).await;
    let claim: PersistentVolumeClaim = env.child("spill-sp-ingest-2").await;
    claim_uids.push(claim.metadata.uid.clone().expect("uid"));
    env.merge_spec("sp", json!({ "ingest": { "replicas": 1 } }))
        .await
        .expect("scaling the ingest down");
    eventually("the StatefulSet at 1 replica", scaled_to(1)).await;
    assert_claims_kept(
        &env,
        "sp",
        1..3,
        "a scaled-down ordinal's claim waits for it",
    )
    .await;

    // Off: the Deployment takes over, the StatefulSet goes, its claims stay.
    env.merge_spec("sp", json!({ "kafka": { "spill": { "enabled": false } } }))
        .await
        .expect("turning spill off");
    let ingest: Deployment = env.child("sp-ingest").await;
    assert_controlled_by(&ingest.metadata, &created);
    assert_eq!(
        own_env(
            &ingest.spec.clone().expect("spec").template,
            "METRICSTREAM_SPILL_DIR"
        ),
        None
    );
    env.gone(env.api::<StatefulSet>(), "sp-ingest").await;
    let available = ingest_condition(&env, "sp", |c| c.message.contains("Deployment")).await;
    assert_eq!(available.status, "False", "no kubelet: {available:?}");
    assert_claims_kept(&env, "sp", 0..3, "it may hold acknowledged data").await;

    // On again: the StatefulSet is back, the Deployment pruned, the same claims adopted.
    env.merge_spec("sp", json!({ "kafka": { "spill": on } }))
        .await
        .expect("turning spill on again");
    env.child::<StatefulSet>("sp-ingest").await;
    deleted(&deployments, "sp-ingest").await;
    for (ordinal, uid) in claim_uids.iter().enumerate() {
        let claim = claims
            .get(&format!("spill-sp-ingest-{ordinal}"))
            .await
            .expect("the claim");
        assert_eq!(claim.metadata.uid.as_ref(), Some(uid), "the same claim");
    }

    // Deleting the stream leaves the claims for the user.
    env.streams()
        .delete("sp", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "sp").await;
    env.gone(env.api::<StatefulSet>(), "sp-ingest").await;
    assert_claims_kept(&env, "sp", 0..3, "the claims outlive the stream").await;
    env.assert_operator_running();
}

/// What the API server and the operator refuse of a spill: with the file backend (CEL); a new
/// size or StorageClass while it stays on (a CEL transition rule: the claims keep theirs), while
/// turning it off with a new size at once is fine; a size that is no quantity, which CEL does not
/// check, in the operator's `Ready=False InvalidSpec` condition with the field named.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_spill_is_refused_with_the_file_backend_and_its_size_is_fixed_while_on() {
    let mut env = Env::start("spillcel", true).await;
    let kafka_ns = env.extra_namespace("kafka").await;

    let mut file = file_spec(2);
    file["kafka"] = json!({
        "bootstrapServers": "my-cluster-kafka-bootstrap:9092",
        "topicManagement": "external",
        "spill": { "enabled": true },
    });
    assert_refused(
        env.try_create_stream("filespill", file.clone()).await,
        "spill with the file backend",
        "spec.kafka.spill is for the kafka backend only",
    );
    // A disabled spill block on a file stream is harmless.
    file["kafka"]["spill"] = json!({ "enabled": false });
    env.create_stream("filenospill", file).await;

    env.create_stream(
        "fixed",
        spilling_spec(&kafka_ns, json!({ "enabled": true, "size": "256Mi" })),
    )
    .await;
    for change in [
        json!({ "size": "512Mi" }),
        json!({ "storageClass": "fast-ssd" }),
    ] {
        assert_refused(
            env.merge_spec("fixed", json!({ "kafka": { "spill": change } }))
                .await,
            &format!("{change} while spill is on"),
            "cannot change while spill is enabled",
        );
    }
    env.merge_spec(
        "fixed",
        json!({ "kafka": { "spill": { "enabled": false, "size": "512Mi" } } }),
    )
    .await
    .expect("a new size with spill turned off");

    env.create_stream(
        "badsize",
        spilling_spec(&kafka_ns, json!({ "enabled": true, "size": "lots" })),
    )
    .await;
    let stream = env
        .stream_until("badsize", "Ready=False InvalidSpec", |s| {
            observed(s) && condition(s, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = condition(&stream, "Ready").expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.kafka.spill.size \"lots\""),
        "{ready:?}"
    );
    let statefulsets: Api<StatefulSet> = env.api();
    assert!(
        statefulsets
            .get_opt("badsize-ingest")
            .await
            .expect("GET")
            .is_none(),
        "nothing is built from an invalid spec"
    );
    env.assert_operator_running();
}

/// The ports of a NetworkPolicy's ingress rules, and whether each names its sources.
fn policy_rules(policy: &NetworkPolicy) -> Vec<(Vec<i32>, Option<Value>)> {
    let rules = policy
        .spec
        .as_ref()
        .and_then(|spec| spec.ingress.clone())
        .unwrap_or_default();
    rules
        .iter()
        .map(|rule| {
            let ports = rule
                .ports
                .iter()
                .flatten()
                .map(|port| match port.port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p)) => p,
                    ref other => panic!("a numeric port, got {other:?}"),
                })
                .collect();
            let from = rule
                .from
                .as_ref()
                .map(|from| serde_json::to_value(from).expect("JSON"));
            (ports, from)
        })
        .collect()
}

/// Waits until `name` of kind K is gone or being deleted.
async fn deleted<K>(api: &Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let kind = K::kind(&Default::default()).into_owned();
    eventually(&format!("{kind} {name} to be deleted"), || async move {
        match api.get_opt(name).await.ok()? {
            None => Some(()),
            Some(object) => object.meta().deletion_timestamp.as_ref().map(|_| ()),
        }
    })
    .await;
}

/// Cluster posture: a Kafka-backend stream gets NetworkPolicies (ingest port from anywhere, the
/// admin port only from the namespaces of --metrics-namespace-selector) and a budget for its
/// ingest pods, owned like every child, repaired when edited or deleted, pruned when the spec
/// (file backend: no budget) or the operator's settings (--network-policies=false) stop
/// wanting them, and collected with the stream.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_network_policies_and_budgets_are_owned_repaired_and_pruned() {
    let selector = "kubernetes.io/metadata.name in (monitoring,observability)";
    // The operator's own namespace (POD_NAMESPACE in a cluster) may read the consumers' /readyz.
    let flags = [
        "--metrics-namespace-selector",
        selector,
        "--lease-namespace",
        "metricstream-system",
    ];
    let mut env = Env::start_with("posture", true, &flags).await;
    let kafka_ns = env.extra_namespace("kafka").await;
    let created = env
        .create_stream(
            "pst",
            json!({
                "backend": "kafka",
                "partitions": 2,
                "kafka": {
                    "bootstrapServers": "my-cluster-kafka-bootstrap:9092",
                    "topicManagement": "strimzi",
                    "strimzi": { "cluster": "my-cluster", "namespace": kafka_ns },
                },
                "ingest": { "replicas": 2 },
                "consumer": { "replicas": 2 },
            }),
        )
        .await;

    let ingest_policy: NetworkPolicy = env.child("pst-ingest").await;
    let consumer_policy: NetworkPolicy = env.child("pst-consumer").await;
    let budget: PodDisruptionBudget = env.child("pst-ingest").await;
    for meta in [
        &ingest_policy.metadata,
        &consumer_policy.metadata,
        &budget.metadata,
    ] {
        assert_labels(meta, "pst");
        assert_controlled_by(meta, &created);
    }
    let scrapers = Some(json!([{
        "namespaceSelector": {
            "matchExpressions": [{
                "key": "kubernetes.io/metadata.name",
                "operator": "In",
                "values": ["monitoring", "observability"],
            }],
        },
    }]));
    assert_eq!(
        policy_rules(&ingest_policy),
        [(vec![8080], None), (vec![9090], scrapers.clone())],
        "ingest: its port from anywhere, the admin port from the scrapers"
    );
    let mut scrapers_and_operator = scrapers.clone().expect("peers");
    scrapers_and_operator
        .as_array_mut()
        .expect("a list")
        .push(json!({ "namespaceSelector": {
            "matchLabels": { "kubernetes.io/metadata.name": "metricstream-system" },
        } }));
    assert_eq!(
        policy_rules(&consumer_policy),
        [(vec![9090], Some(scrapers_and_operator.clone()))],
        "consumer: only the admin port, from the scrapers and the operator (SinkAvailable)"
    );
    let ingest: Deployment = env.child("pst-ingest").await;
    let pod_labels = ingest
        .spec
        .as_ref()
        .and_then(|spec| spec.template.metadata.as_ref())
        .and_then(|meta| meta.labels.clone())
        .expect("ingest pod labels");
    let policy_selects = ingest_policy
        .spec
        .as_ref()
        .and_then(|spec| spec.pod_selector.as_ref())
        .and_then(|selector| selector.match_labels.clone())
        .expect("a pod selector");
    assert!(
        policy_selects
            .iter()
            .all(|(key, value)| pod_labels.get(key) == Some(value)),
        "the policy {policy_selects:?} selects the ingest pods {pod_labels:?}"
    );
    let budget_spec = budget.spec.clone().expect("a budget spec");
    assert_eq!(
        budget_spec.max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert_eq!(
        budget_spec.unhealthy_pod_eviction_policy.as_deref(),
        Some("AlwaysAllow")
    );
    assert_eq!(
        budget_spec.selector.and_then(|s| s.match_labels),
        ingest
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone())
    );
    // Consumers share the sink volume: no budget.
    assert!(
        env.api::<PodDisruptionBudget>()
            .get_opt("pst-consumer")
            .await
            .expect("reading")
            .is_none()
    );

    // Repair: a deleted budget comes back, edits to the policy and the budget are reverted.
    env.api::<PodDisruptionBudget>()
        .delete("pst-ingest", &DeleteParams::default())
        .await
        .expect("deleting the budget");
    let budgets: Api<PodDisruptionBudget> = env.api();
    let old_uid = budget.uid();
    {
        let (budgets, old_uid) = (&budgets, &old_uid);
        eventually("the budget to be recreated", || async move {
            let uid = budgets.get_opt("pst-ingest").await.ok()??.uid();
            (uid.is_some() && uid != *old_uid).then_some(())
        })
        .await;
    }
    env.api::<NetworkPolicy>()
        .patch(
            "pst-consumer",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ingress": [{}] } })),
        )
        .await
        .expect("opening the consumer policy to everything");
    budgets
        .patch(
            "pst-ingest",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "maxUnavailable": 2 } })),
        )
        .await
        .expect("loosening the budget");
    let policies: Api<NetworkPolicy> = env.api();
    {
        let consumer_sources = Some(scrapers_and_operator.clone());
        let (policies, budgets, consumer_sources) = (&policies, &budgets, &consumer_sources);
        eventually("the policy and the budget to be reverted", || async move {
            let policy = policies.get("pst-consumer").await.ok()?;
            let budget = budgets.get("pst-ingest").await.ok()?;
            let max = budget.spec?.max_unavailable;
            let one = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
            (policy_rules(&policy) == [(vec![9090], consumer_sources.clone())] && max == Some(one))
                .then_some(())
        })
        .await;
    }

    // Prune by spec: on the file backend every pod moves with the volume, so the budget goes.
    env.merge_spec(
        "pst",
        json!({ "backend": "file", "kafka": null, "file": { "storage": "1Gi" } }),
    )
    .await
    .expect("switching to the file backend");
    deleted(&budgets, "pst-ingest").await;
    assert!(
        policies
            .get_opt("pst-ingest")
            .await
            .expect("reading")
            .is_some(),
        "the policies stay"
    );

    // Prune by the operator's settings: switched off, the policies go.
    env.restart_operator(&["--network-policies=false"]);
    deleted(&policies, "pst-ingest").await;
    deleted(&policies, "pst-consumer").await;
    env.assert_operator_running();

    // Switched on again, they come back; deleting the stream collects them.
    env.restart_operator(&[]);
    let recreated: NetworkPolicy = env.child("pst-ingest").await;
    assert_eq!(
        policy_rules(&recreated)[1].1,
        Some(json!([{ "namespaceSelector": {} }])),
        "the default: pods of every namespace"
    );
    env.streams()
        .delete("pst", &DeleteParams::default())
        .await
        .expect("deleting the stream");
    env.gone(env.streams(), "pst").await;
    env.gone(env.api::<NetworkPolicy>(), "pst-ingest").await;
    env.gone(env.api::<NetworkPolicy>(), "pst-consumer").await;
    env.assert_operator_running();
}

/// What the operator last wrote to one object: the `time` of its field manager's entries.
fn operator_writes(meta: &kube::core::ObjectMeta) -> Vec<String> {
    meta.managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|m| m.manager.as_deref() == Some("metricstream-operator"))
        .map(|m| {
            format!(
                "{}{}@{}",
                m.operation.as_deref().unwrap_or("?"),
                m.subresource.as_deref().unwrap_or(""),
                m.time.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
            )
        })
        .collect()
}

/// Everything the operator writes for stream `name`: the stream's resourceVersion (only the
/// operator and this test write it) and, per child, the operator's managedFields times and the
/// Deployments' generations (kube-controller-manager also writes children's status).
async fn write_snapshot(env: &Env, name: &str) -> BTreeMap<String, String> {
    let mut snapshot = BTreeMap::new();
    let stream = env.streams().get(name).await.expect("reading the stream");
    snapshot.insert(
        "MetricStream".into(),
        format!(
            "rv={} {:?}",
            stream.resource_version().unwrap_or_default(),
            operator_writes(&stream.metadata)
        ),
    );
    let config = env
        .api::<ConfigMap>()
        .get(&format!("{name}-config"))
        .await
        .expect("reading the ConfigMap");
    snapshot.insert(
        "ConfigMap".into(),
        format!(
            "rv={} {:?}",
            config.resource_version().unwrap_or_default(),
            operator_writes(&config.metadata)
        ),
    );
    let service = env
        .api::<Service>()
        .get(&format!("{name}-ingest"))
        .await
        .expect("reading the Service");
    snapshot.insert(
        "Service".into(),
        format!("{:?}", operator_writes(&service.metadata)),
    );
    for role in ["ingest", "consumer"] {
        let deployment = env
            .api::<Deployment>()
            .get(&format!("{name}-{role}"))
            .await
            .expect("reading a Deployment");
        snapshot.insert(
            format!("Deployment {role}"),
            format!(
                "generation={:?} {:?}",
                deployment.metadata.generation,
                operator_writes(&deployment.metadata)
            ),
        );
    }
    for role in ["ingest", "consumer"] {
        let policy = env
            .api::<NetworkPolicy>()
            .get(&format!("{name}-{role}"))
            .await
            .expect("reading a NetworkPolicy");
        snapshot.insert(
            format!("NetworkPolicy {role}"),
            format!(
                "rv={} {:?}",
                policy.resource_version().unwrap_or_default(),
                operator_writes(&policy.metadata)
            ),
        );
    }
    for volume in ["queue", "sink"] {
        let pvc = env
            .api::<PersistentVolumeClaim>()
            .get(&format!("{name}-{volume}"))
            .await
            .expect("reading a PVC");
        snapshot.insert(
            format!("PVC {volume}"),
            format!("{:?}", operator_writes(&pvc.metadata)),
        );
    }
    snapshot
}

/// An operator with nothing to do writes nothing: no reconcile storm.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_an_idle_operator_makes_no_writes_for_a_minute() {
    let mut env = Env::start("idle", false).await;
    env.create_stream("idle", file_spec(2)).await;
    env.stream_until("idle", "a status with all four conditions", |s| {
        observed(s)
            && [
                "Ready",
                "BackendReady",
                "IngestAvailable",
                "ConsumerAvailable",
            ]
            .iter()
            .all(|c| condition(s, c).is_some())
    })
    .await;
    // Settled: the stream's resourceVersion stays put for 5 s (kube-controller-manager's first
    // Deployment status updates may legitimately change the status once more).
    let quiet = Duration::from_secs(5);
    let mut last = write_snapshot(&env, "idle").await;
    let mut since = Instant::now();
    let settling = Instant::now();
    while since.elapsed() < quiet {
        assert!(
            settling.elapsed() < DEADLINE,
            "the operator did not settle (5 s without a write) within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
        let now = write_snapshot(&env, "idle").await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }

    let before = write_snapshot(&env, "idle").await;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        env.assert_operator_running();
        let now = write_snapshot(&env, "idle").await;
        assert_eq!(
            now,
            before,
            "the operator wrote after {:?} of idleness",
            window.elapsed()
        );
    }
}

/// Writes `status` on pod `name` as kubelet or the scheduler would (no kubelet and no scheduler
/// run here).
async fn set_pod_status(pods: &Api<Pod>, name: &str, status: Value) {
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("writing the status of pod {name}: {e}"));
}

/// Waits for a Warning Event on MetricStream `stream` with `reason` whose note contains every
/// one of `words`, and returns its note.
async fn warning_event(env: &Env, stream: &str, reason: &str, words: &[&str]) -> String {
    let events: Api<Event> = env.api();
    eventually(
        &format!("a Warning Event {reason} on MetricStream {stream} saying {words:?}"),
        || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await.ok()?;
                list.items.into_iter().find_map(|event| {
                    let note = event.note.clone().unwrap_or_default();
                    let regarding = event.regarding.as_ref()?;
                    (event.type_.as_deref() == Some("Warning")
                        && event.reason.as_deref() == Some(reason)
                        && regarding.kind.as_deref() == Some("MetricStream")
                        && regarding.name.as_deref() == Some(stream)
                        && words.iter().all(|word| note.contains(word)))
                    .then_some(note)
                })
            }
        },
    )
    .await
}

/// The ingest container's status as kubelet writes it, in a pod of phase `phase`.
fn kubelet_status(phase: &str, state: Value, last_state: Value, restarts: i32) -> Value {
    json!({
        "phase": phase,
        "conditions": [
            { "type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-03T07:10:02Z" },
            { "type": "Ready", "status": "False", "lastTransitionTime": "2026-12-03T07:10:02Z",
              "reason": "ContainersNotReady", "message": "containers with unready status: [ingest]" },
            { "type": "ContainersReady", "status": "False", "lastTransitionTime": "2026-12-03T07:10:02Z",
              "reason": "ContainersNotReady", "message": "containers with unready status: [ingest]" },
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T07:10:02Z" }
        ],
        "containerStatuses": [{
            "name": "ingest",
            "image": "metricstream:dev",
            "imageID": "",
            "ready": false,
            "started": false,
            "restartCount": restarts,
            "state": state,
            "lastState": last_state,
        }],
    })
}

/// What kubelet and the scheduler say about a workload's pods reaches the stream: the test
/// plays them (no kubelet or scheduler run here) on the pods kube-controller-manager's
/// ReplicaSets made. A missing image and then a crash loop of the ingest, an unbound volume
/// keeping the consumer unscheduled: each becomes the condition's reason, a message naming the
/// pod and quoting kubelet, and a Warning Event.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane: KUBECONFIG from hack/envtest.sh up (make test runs it)"]
async fn envtest_pod_problems_reach_the_conditions_and_warning_events() {
    let mut env = Env::start("pods", false).await;
    env.create_stream("pods", file_spec(1)).await;
    env.stream_until("pods", "a first status", observed).await;
    let pods: Api<Pod> = env.api();
    let ingest = first_labelled(
        "the ingest pod",
        &pods,
        "metricstream.dev/stream=pods,app.kubernetes.io/component=ingest",
    )
    .await
    .name_any();

    let never_pulled =
        "Container image \"metricstream:dev\" is not present with pull policy of Never";
    set_pod_status(
        &pods,
        &ingest,
        kubelet_status(
            "Pending",
            json!({ "waiting": { "reason": "ErrImageNeverPull", "message": never_pulled } }),
            json!({}),
            0,
        ),
    )
    .await;
    let stream = env
        .stream_until("pods", "IngestAvailable=False, ImageUnavailable", |s| {
            condition(s, "IngestAvailable").is_some_and(|c| c.reason == "ImageUnavailable")
        })
        .await;
    let message = &condition(&stream, "IngestAvailable")
        .expect("IngestAvailable")
        .message;
    assert_eq!(
        message,
        &format!(
            "0/1 replicas of pods-ingest available: pod {ingest} container ingest: \
             ErrImageNeverPull: {never_pulled}"
        )
    );
    assert!(
        condition(&stream, "Ready").is_some_and(|c| c.message.contains("ErrImageNeverPull")),
        "{:?}",
        condition(&stream, "Ready")
    );
    warning_event(
        &env,
        "pods",
        "ImageUnavailable",
        &[&ingest, "ErrImageNeverPull"],
    )
    .await;

    // The image is fixed and the binary crashes: kubelet backs off, and the last termination
    // (its message the log's tail, by FallbackToLogsOnError) says why.
    let crash = json!({ "terminated": {
        "exitCode": 2,
        "reason": "Error",
        "message": "Error: METRICSTREAM_PARTITIONS: invalid digit found in string\n",
        "startedAt": "2026-12-03T07:11:40Z",
        "finishedAt": "2026-12-03T07:11:41Z",
        "containerID": "containerd://4f1c2e"
    }});
    set_pod_status(
        &pods,
        &ingest,
        kubelet_status(
            "Running",
            json!({ "waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off 40s restarting failed container=ingest pod={ingest}_{}", env.ns),
            }}),
            crash.clone(),
            3,
        ),
    )
    .await;
    let stream = env
        .stream_until("pods", "IngestAvailable=False, PodCrashLooping", |s| {
            condition(s, "IngestAvailable").is_some_and(|c| c.reason == "PodCrashLooping")
        })
        .await;
    let message = &condition(&stream, "IngestAvailable")
        .expect("IngestAvailable")
        .message;
    assert_eq!(
        message,
        &format!(
            "0/1 replicas of pods-ingest available: pod {ingest} container ingest: \
             CrashLoopBackOff, last exit code 2 (Error): Error: METRICSTREAM_PARTITIONS: invalid \
             digit found in string"
        )
    );
    warning_event(
        &env,
        "pods",
        "PodCrashLooping",
        &[
            &ingest,
            "exit code 2 (Error)",
            "invalid digit found in string",
        ],
    )
    .await;

    // The same crash again, later in kubelet's back-off: no status write, no second Event.
    let before = env.streams().get("pods").await.expect("the stream");
    set_pod_status(
        &pods,
        &ingest,
        kubelet_status(
            "Running",
            json!({ "waiting": {
                "reason": "CrashLoopBackOff",
                "message": format!("back-off 2m40s restarting failed container=ingest pod={ingest}_{}", env.ns),
            }}),
            crash.clone(),
            7,
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = env.streams().get("pods").await.expect("the stream");
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "a restart of the same crash changed the stream: {:?}",
        after.status
    );
    let crash_events: Vec<Event> = env
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("listing Events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("PodCrashLooping"))
        .collect();
    assert!(
        crash_events.len() == 1 && crash_events[0].series.is_none(),
        "one PodCrashLooping Event, published once: {crash_events:?}"
    );

    // The consumer's pod waits for its volumes: the scheduler's verdict.
    let consumer = first_labelled(
        "the consumer pod",
        &pods,
        "metricstream.dev/stream=pods,app.kubernetes.io/component=consumer",
    )
    .await
    .name_any();
    let unbound = "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. \
                   preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.";
    set_pod_status(
        &pods,
        &consumer,
        json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": null,
                "lastTransitionTime": "2026-12-03T07:10:02Z",
                "reason": "Unschedulable",
                "message": unbound,
            }],
        }),
    )
    .await;
    let stream = env
        .stream_until("pods", "ConsumerAvailable=False, PodUnschedulable", |s| {
            condition(s, "ConsumerAvailable").is_some_and(|c| c.reason == "PodUnschedulable")
        })
        .await;
    assert_eq!(
        condition(&stream, "ConsumerAvailable").map(|c| c.message.clone()),
        Some(format!(
            "0/1 replicas of pods-consumer available: pod {consumer} cannot be scheduled \
             (Unschedulable): {unbound}"
        ))
    );
    warning_event(
        &env,
        "pods",
        "PodUnschedulable",
        &[&consumer, "unbound immediate"],
    )
    .await;
    // And the volumes themselves: neither is bound (no PersistentVolume controller runs here).
    let backend = condition(&stream, "BackendReady").expect("BackendReady");
    assert_eq!(
        (backend.status.as_str(), backend.reason.as_str()),
        ("False", "VolumePending"),
        "{backend:?}"
    );
    assert!(
        backend
            .message
            .contains("queue volume pods-queue is Pending")
            && backend.message.contains("sink volume pods-sink is Pending"),
        "{}",
        backend.message
    );
    env.assert_operator_running();
}

// ---- the Helm chart's RBAC --------------------------------------------------------------------

/// `helm template` of the chart (HELM from hack/tools.sh), parsed into documents.
fn render_chart(release: &str, namespace: &str, sets: &[&str]) -> Vec<Value> {
    let helm = std::env::var_os("HELM").filter(|h| !h.is_empty()).expect(
        "HELM must name a helm binary: run `bash hack/tools.sh install` and export the HELM=... \
         line it prints (make test does this)",
    );
    let chart = repo_root().join("charts/metricstream-operator");
    let mut command = Command::new(helm);
    command.args(["template", release]).arg(&chart).args([
        "--namespace",
        namespace,
        "--kube-version",
        "1.34.4",
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("running helm template");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let yaml = String::from_utf8(output.stdout).expect("helm prints UTF-8");
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|document| serde::Deserialize::deserialize(document).expect("helm renders YAML"))
        .filter(|document: &Value| !document.is_null())
        .collect()
}

fn kubectl() -> PathBuf {
    std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .map(PathBuf::from)
        .expect(
            "KUBECTL must name kubectl: `hack/envtest.sh up` prints K8S_BIN=<dir> holding it \
             (make test exports KUBECTL)",
        )
}

fn kubectl_run(args: &[&str]) -> String {
    let output = Command::new(kubectl())
        .args(args)
        .output()
        .expect("running kubectl");
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The operator, given nothing but what the chart grants and sets (its ServiceAccount's RBAC in
/// namespaced mode with leader election, the Deployment's environment), reconciles a file-backed,
/// a Strimzi-backed and a spilling stream (a StatefulSet, pruned when spill is turned off)
/// without a single Forbidden: the chart's RBAC is enough.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs a control plane and helm: KUBECONFIG, KUBECTL and HELM (make test provides them)"]
async fn envtest_the_operator_runs_on_the_charts_rbac_and_environment_alone() {
    let mut env = Env::without_operator("rbac", true).await;
    let kafka_ns = env.extra_namespace("kafka").await;
    let release = format!("rbac-{}", unique_suffix());
    let ns = env.ns.clone();
    let rendered = render_chart(
        &release,
        &ns,
        &[
            &format!("watchNamespace={ns}"),
            "replicaCount=2",
            "crds.install=false",
        ],
    );

    // Apply the ServiceAccount and RBAC for real, as `helm install` would.
    let rbac_kinds = [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let rbac: Vec<&Value> = rendered
        .iter()
        .filter(|document| rbac_kinds.contains(&document["kind"].as_str().unwrap_or_default()))
        .collect();
    let rbac_file = env._dir.path().join("rbac.yaml");
    std::fs::write(
        &rbac_file,
        rbac.iter()
            .map(|document| serde_yaml::to_string(document).expect("YAML"))
            .collect::<Vec<_>>()
            .join("---\n"),
    )
    .expect("write the chart's RBAC");
    kubectl_run(&["apply", "-f", rbac_file.to_str().expect("UTF-8")]);
    let cluster_scoped: Vec<String> = rbac
        .iter()
        .filter(|document| {
            document["kind"]
                .as_str()
                .is_some_and(|kind| kind.starts_with("Cluster"))
        })
        .map(|document| {
            format!(
                "{}/{}",
                document["kind"].as_str().unwrap_or_default().to_lowercase(),
                document["metadata"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect();

    // The operator as the chart runs it: its ServiceAccount (impersonated), its environment.
    let deployment = rendered
        .iter()
        .find(|document| document["kind"] == "Deployment")
        .expect("the chart renders the operator Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let service_account = pod["serviceAccountName"]
        .as_str()
        .expect("a serviceAccountName");
    let kubeconfig_path = std::env::var("KUBECONFIG").expect(NEEDS_KUBECONFIG);
    let mut kubeconfig: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&kubeconfig_path).expect("read the kubeconfig"),
    )
    .expect("the kubeconfig is YAML");
    for user in kubeconfig["users"]
        .as_sequence_mut()
        .expect("the kubeconfig has users")
    {
        user["user"]["as"] = format!("system:serviceaccount:{ns}:{service_account}").into();
    }
    let impersonating = env._dir.path().join("kubeconfig-as-operator");
    std::fs::write(
        &impersonating,
        serde_yaml::to_string(&kubeconfig).expect("YAML"),
    )
    .expect("write the impersonating kubeconfig");

    let container = &pod["containers"][0];
    let mut operator = Command::new(operator_binary());
    operator
        .args(
            container["args"]
                .as_array()
                .expect("the operator container has args")
                .iter()
                .map(|arg| arg.as_str().expect("a string arg")),
        )
        .env("KUBECONFIG", &impersonating)
        .env("HOSTNAME", "operator-under-test")
        // The controller reports a failing watch (e.g. a forbidden one) only at debug level.
        .env(
            "RUST_LOG",
            "info,metricstream_operator=debug,kube_runtime=debug",
        );
    for variable in container["env"].as_array().expect("the container has env") {
        let name = variable["name"].as_str().expect("an env name");
        let value = if name == "POD_NAMESPACE" {
            assert_eq!(
                variable["valueFrom"]["fieldRef"]["fieldPath"],
                "metadata.namespace"
            );
            ns.clone()
        } else if name == "METRICSTREAM_ADMIN_LISTEN" {
            format!("127.0.0.1:{}", free_port())
        } else {
            variable["value"].as_str().expect("an env value").to_owned()
        };
        operator.env(name, value);
    }
    env.spawn_operator(operator);

    env.create_stream("files", file_spec(2)).await;
    env.create_stream(
        "topics",
        json!({
            "backend": "kafka",
            "partitions": 3,
            "kafka": {
                "bootstrapServers": "my-cluster-kafka-bootstrap:9092",
                "topicManagement": "strimzi",
                "strimzi": { "cluster": "my-cluster", "namespace": kafka_ns },
            },
        }),
    )
    .await;
    env.create_stream(
        "spills",
        spilling_spec(&kafka_ns, json!({ "enabled": true })),
    )
    .await;
    for name in ["files-config", "topics-config"] {
        env.child::<ConfigMap>(name).await;
    }
    env.child::<StatefulSet>("spills-ingest").await;
    for name in [
        "files-ingest",
        "files-consumer",
        "topics-ingest",
        "topics-consumer",
    ] {
        env.child::<Deployment>(name).await;
    }
    env.child::<Service>("files-ingest").await;
    for name in ["files-queue", "files-sink", "topics-sink"] {
        env.child::<PersistentVolumeClaim>(name).await;
    }
    for name in [
        "files-ingest",
        "files-consumer",
        "topics-ingest",
        "topics-consumer",
    ] {
        env.child::<NetworkPolicy>(name).await;
    }
    env.child::<PodDisruptionBudget>("topics-ingest").await;
    let topics: Api<KafkaTopic> = Api::namespaced(env.client.clone(), &kafka_ns);
    eventually("the KafkaTopic in the Kafka namespace", || {
        let topics = topics.clone();
        async move {
            let list = topics.list(&ListParams::default()).await.ok()?;
            (!list.items.is_empty()).then_some(())
        }
    })
    .await;
    for name in ["files", "topics", "spills"] {
        env.stream_until(name, "a status for the current generation", observed)
            .await;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), &ns);
    let lease_name = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|variables| {
            variables
                .iter()
                .find(|variable| variable["name"] == "METRICSTREAM_LEASE_NAME")
        })
        .and_then(|variable| variable["value"].as_str())
        .expect("two replicas render a lease name")
        .to_owned();
    let lease = leases
        .get(&lease_name)
        .await
        .unwrap_or_else(|e| panic!("the Lease {lease_name}: {e}"));
    assert_eq!(
        lease.spec.and_then(|spec| spec.holder_identity).as_deref(),
        Some("operator-under-test")
    );
    // Pruning and releasing data under the same rights: the Kafka stream moves to the file
    // backend, so its budget is deleted and its (retained) KafkaTopic let go by a patch.
    env.merge_spec(
        "topics",
        json!({ "backend": "file", "kafka": null, "file": { "storage": "1Gi" } }),
    )
    .await
    .expect("switching topics to the file backend");
    deleted(&env.api::<PodDisruptionBudget>(), "topics-ingest").await;
    eventually("the KafkaTopic to be let go", || {
        let topics = topics.clone();
        async move {
            // The stream `topics`' topic (`spills` has one too, kept).
            let mine = ListParams::default().labels("metricstream.dev/owner-name=topics");
            let list = topics.list(&mine).await.ok()?;
            (!list.items.is_empty()
                && list.items.iter().all(|topic| {
                    topic
                        .annotations()
                        .get("metricstream.dev/retained")
                        .is_some_and(|v| v == "true")
                }))
            .then_some(())
        }
    })
    .await;
    env.child::<PersistentVolumeClaim>("topics-queue").await;
    // Spill off: the ingest StatefulSet is pruned for a Deployment.
    env.merge_spec(
        "spills",
        json!({ "kafka": { "spill": { "enabled": false } } }),
    )
    .await
    .expect("turning spill off");
    env.child::<Deployment>("spills-ingest").await;
    deleted(&env.api::<StatefulSet>(), "spills-ingest").await;
    env.assert_operator_running();
    let log = std::fs::read_to_string(&env.log).unwrap_or_default();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something the chart does not grant:\n{}",
        env.log_tail()
    );

    for object in cluster_scoped {
        let _ = Command::new(kubectl())
            .args(["delete", "--ignore-not-found", &object])
            .output();
    }
}
