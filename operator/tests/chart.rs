//! The Helm chart (charts/metricstream-operator) and the examples, checked with the real tools:
//! `helm lint` and `helm template` with default and non-default values, kubeconform in strict
//! mode against offline schemas (Kubernetes, our CRD, Strimzi's), `kubectl apply
//! --dry-run=server` against the local control plane, shellcheck over the scripts and hadolint
//! over the Dockerfile.
//!
//! The tools come from `hack/tools.sh install` (`make test` runs it and exports HELM,
//! KUBECONFORM, KUBECONFORM_K8S_SCHEMAS, KUBECONFORM_CRD_SCHEMAS, SHELLCHECK and HADOLINT); the
//! server-side test also needs KUBECONFIG and KUBECTL from `hack/envtest.sh up`. Without them the
//! tests are ignored, and fail with a message naming what is missing when run anyway.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use metricstream_operator::rbac::{self, Scope};
use serde::Deserialize;
use serde_json::Value;

const NEEDS_CONTROL_PLANE: &str =
    "needs a control plane: KUBECONFIG and KUBECTL from hack/envtest.sh up (make test runs it)";
const KUBERNETES_VERSION: &str = "1.34.4";
const NON_DEFAULT_VALUES: &str = "ci/namespaced-ha-values.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate lives in the workspace")
        .to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("charts/metricstream-operator")
}

/// A tool's path from the environment variable `hack/tools.sh` prints.
fn tool(variable: &str) -> PathBuf {
    match std::env::var_os(variable) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "{variable} is not set: run `bash hack/tools.sh install` and export the {variable}=... \
             line it prints (make test does this)"
        ),
    }
}

fn run<I, S>(program: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args).current_dir(repo());
    command
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", program.display()))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_success(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}",
        output.status,
        text(output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `helm template` of the chart with extra arguments (values files, --set).
fn helm_template(extra: &[&str]) -> Output {
    let chart = chart();
    let mut args = vec![
        "template",
        "metricstream",
        chart.to_str().expect("a UTF-8 path"),
        "--namespace",
        "metricstream-system",
        "--kube-version",
        KUBERNETES_VERSION,
    ];
    args.extend_from_slice(extra);
    run(&tool("HELM"), args)
}

fn render(extra: &[&str]) -> String {
    assert_success("helm template", &helm_template(extra))
}

fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("valid YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn kinds(documents: &[Value]) -> BTreeSet<String> {
    documents
        .iter()
        .map(|document| document["kind"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> &'a Value {
    documents
        .iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among: {:?}", kinds(documents)))
}

fn env_of(deployment: &Value, variable: &str) -> Option<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("the operator container has env")
        .iter()
        .find(|entry| entry["name"] == variable)
        .map(|entry| entry["value"].as_str().unwrap_or_default().to_owned())
}

/// The `resources` of every rule of a (Cluster)Role.
fn rule_resources(role: &Value) -> BTreeSet<String> {
    role["rules"]
        .as_array()
        .expect("the role has rules")
        .iter()
        .flat_map(|rule| rule["resources"].as_array().cloned().unwrap_or_default())
        .map(|resource| resource.as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The verbs a role grants on `resource`, over all its rules.
fn verbs_on(role: &Value, resource: &str) -> BTreeSet<String> {
    role["rules"]
        .as_array()
        .expect("the role has rules")
        .iter()
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|resources| resources.iter().any(|r| r == resource))
        })
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .map(|verb| verb.as_str().unwrap_or_default().to_owned())
        .collect()
}

fn app_version() -> String {
    let chart_yaml = fs::read_to_string(chart().join("Chart.yaml")).expect("read Chart.yaml");
    let chart: Value = serde_yaml::from_str(&chart_yaml).expect("Chart.yaml is YAML");
    chart["appVersion"]
        .as_str()
        .expect("Chart.yaml has appVersion")
        .to_owned()
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_lints_cleanly_with_default_and_non_default_values() {
    let helm = tool("HELM");
    let chart = chart();
    let chart = chart.to_str().expect("a UTF-8 path");
    assert_success(
        "helm lint (defaults)",
        &run(&helm, ["lint", "--strict", chart]),
    );
    let values = format!("{chart}/{NON_DEFAULT_VALUES}");
    assert_success(
        "helm lint (non-default values)",
        &run(&helm, ["lint", "--strict", chart, "--values", &values]),
    );
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_defaults_render_a_cluster_wide_single_operator_with_the_crd() {
    let rendered = documents(&render(&[]));
    assert_eq!(
        kinds(&rendered),
        BTreeSet::from(
            [
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "Deployment",
                "NetworkPolicy",
                "Pod",
                "Service",
                "ServiceAccount"
            ]
            .map(String::from)
        ),
        "default render"
    );

    let deployment = find(
        &rendered,
        "Deployment",
        "metricstream-metricstream-operator",
    );
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["strategy"]["type"], "Recreate",
        "one replica without leader election must never overlap another"
    );
    let image = format!("ghcr.io/metricstream/metricstream:{}", app_version());
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        image.as_str()
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_WORKLOAD_IMAGE").as_deref(),
        Some(image.as_str()),
        "workloads run the operator's image by default"
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_LEADER_ELECTION").as_deref(),
        Some("false")
    );
    assert_eq!(env_of(deployment, "METRICSTREAM_WATCH_NAMESPACE"), None);
    assert_eq!(
        env_of(deployment, "METRICSTREAM_NETWORK_POLICIES").as_deref(),
        Some("true"),
        "streams get NetworkPolicies by default"
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_METRICS_NAMESPACE_SELECTOR").as_deref(),
        Some("{}"),
        "scrapers in every namespace by default"
    );
    // One replica: no budget, which could only block a drain.
    let policy = find(
        &rendered,
        "NetworkPolicy",
        "metricstream-metricstream-operator",
    );
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"],
        "the policy selects the operator's pods"
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress"])
    );
    let test_pod = find(
        &rendered,
        "Pod",
        "metricstream-metricstream-operator-test-readyz",
    );
    let test_labels = &test_pod["metadata"]["labels"];
    assert_eq!(
        policy["spec"]["ingress"],
        serde_json::json!([{
            "from": [
                { "namespaceSelector": {} },
                { "podSelector": { "matchLabels": {
                    "app.kubernetes.io/name": test_labels["app.kubernetes.io/name"],
                    "app.kubernetes.io/instance": test_labels["app.kubernetes.io/instance"],
                } } },
            ],
            "ports": [{ "port": 9090, "protocol": "TCP" }],
        }]),
        "only the admin port, from pods of any namespace and the helm test pod"
    );
    let selector = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("a selector");
    assert!(
        selector
            .iter()
            .any(|(key, value)| &test_labels[key.as_str()] != value),
        "the helm test pod {test_labels} is no operator replica to the Service, policy and budget"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );

    let role = find(
        &rendered,
        "ClusterRole",
        "metricstream-metricstream-operator",
    );
    let resources = rule_resources(role);
    for resource in [
        "metricstreams",
        "metricstreams/status",
        "metricstreams/finalizers",
        "configmaps",
        "services",
        "persistentvolumeclaims",
        "deployments",
        "statefulsets",
        "events",
        "kafkatopics",
        "kafkausers",
    ] {
        assert!(resources.contains(resource), "ClusterRole lacks {resource}");
    }
    assert!(
        !resources.contains("leases"),
        "no Lease rights without leader election: {resources:?}"
    );
    // Secrets: the credentials copy is written, listed to prune and deleted; Strimzi's are read
    // by name. Never watched: the operator does not cache Secrets.
    let secret_verbs = verbs_on(role, "secrets");
    assert_eq!(
        secret_verbs,
        BTreeSet::from(["create", "delete", "get", "list", "patch"].map(String::from)),
        "{secret_verbs:?}"
    );

    // The CRD the chart installs is the committed one, kept on uninstall, and its numbers and
    // strings survived the template's YAML round trip.
    let crd = find(
        &rendered,
        "CustomResourceDefinition",
        "metricstreams.metricstream.dev",
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let committed: Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("crds/metricstream.yaml")).expect("read the CRD"),
    )
    .expect("the CRD is YAML");
    assert_eq!(
        numbers_as_floats(&crd["spec"]),
        numbers_as_floats(&committed["spec"])
    );
}

/// The Prometheus Operator object that `<key>.enabled=true` adds, rendered with
/// `<key>.labels.release=prometheus`: in the release namespace, with that extra label.
fn monitoring_object(key: &str, kind: &str, name: &str) -> Value {
    let rendered = documents(&render(&[
        "--set",
        &format!("{key}.enabled=true,{key}.labels.release=prometheus"),
    ]));
    let object = find(&rendered, kind, name).clone();
    assert_eq!(object["metadata"]["namespace"], "metricstream-system");
    assert_eq!(object["metadata"]["labels"]["release"], "prometheus");
    object
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_prometheus_rule_ships_the_rule_file_promtool_tests_verbatim() {
    let rule = monitoring_object(
        "prometheusRule",
        "PrometheusRule",
        "metricstream-metricstream-operator",
    );
    // `make rules-check` runs promtool on files/alerts.yaml: the chart must ship exactly it,
    // its `{{ $labels }}` templates untouched by Helm.
    let file: Value = serde_yaml::from_str(
        &fs::read_to_string(chart().join("files/alerts.yaml")).expect("read files/alerts.yaml"),
    )
    .expect("files/alerts.yaml is YAML");
    assert_eq!(rule["spec"]["groups"], file["groups"]);
    let summary = &file["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .find(|rule| rule["alert"].is_string())
        .expect("an alert")["annotations"]["summary"];
    assert!(
        summary
            .as_str()
            .is_some_and(|summary| summary.contains("{{ $labels.")),
        "{summary}"
    );
    // Off by default: the default render's kinds are checked exactly above.
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_pod_monitor_selects_the_operators_workload_pods_and_labels_their_stream() {
    use metricstream_operator::labels;
    use metricstream_operator::reconcile::build::{COMPONENT_CONSUMER, COMPONENT_INGEST};

    let monitor = monitoring_object(
        "workloadMonitor",
        "PodMonitor",
        "metricstream-metricstream-operator-workloads",
    );
    let spec = &monitor["spec"];
    // No watchNamespace: the operator makes pods in every namespace.
    assert_eq!(spec["namespaceSelector"]["any"], true);

    // The selector matches the labels the operator stamps on both workloads' pods, and only
    // theirs (not the operator's own pod, which Helm manages).
    let match_labels = spec["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for component in [COMPONENT_INGEST, COMPONENT_CONSUMER] {
        let pod_labels = labels::standard("web", component);
        for (key, value) in match_labels {
            assert_eq!(
                pod_labels.get(key).map(String::as_str),
                value.as_str(),
                "{component} pods: {key}"
            );
        }
    }
    assert_eq!(match_labels[labels::MANAGED_BY], labels::MANAGER_VALUE);
    let expressions = spec["selector"]["matchExpressions"]
        .as_array()
        .expect("matchExpressions");
    let component = expressions
        .iter()
        .find(|expression| expression["key"] == labels::COMPONENT)
        .expect("a component expression");
    assert_eq!(component["operator"], "In");
    assert_eq!(
        component["values"],
        serde_json::json!([COMPONENT_INGEST, COMPONENT_CONSUMER])
    );

    // The admin port by the name the built pod spec gives it, and the labels the alert rules
    // group by (docs/alerts.md): the stream from the pods' label, and the namespace.
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .expect("podMetricsEndpoints");
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let endpoint = &endpoints[0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "30s");
    let stream_source = format!(
        "__meta_kubernetes_pod_label_{}",
        labels::STREAM.replace(['.', '/', '-'], "_")
    );
    let relabelings = endpoint["relabelings"].as_array().expect("relabelings");
    for (source, target) in [
        (stream_source.as_str(), "stream"),
        ("__meta_kubernetes_namespace", "namespace"),
    ] {
        assert!(
            relabelings
                .iter()
                .any(
                    |relabeling| relabeling["sourceLabels"] == serde_json::json!([source])
                        && relabeling["targetLabel"] == target
                ),
            "no relabeling of {source} into {target}: {relabelings:?}"
        );
    }

    // With watchNamespace, only that namespace has workload pods.
    let rendered = documents(&render(&[
        "--set",
        "workloadMonitor.enabled=true,watchNamespace=apps",
    ]));
    let monitor = find(
        &rendered,
        "PodMonitor",
        "metricstream-metricstream-operator-workloads",
    );
    assert_eq!(
        monitor["spec"]["namespaceSelector"],
        serde_json::json!({"matchNames": ["apps"]})
    );
    // Off by default: the default render's kinds are checked exactly above.
}

/// The dashboard files the chart ships (files/dashboards/*.json): file name and text.
fn dashboard_files() -> Vec<(String, String)> {
    let dir = chart().join("files/dashboards");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("read {}: {error}", dir.display()))
        .map(|entry| entry.expect("list files/dashboards").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .map(|path| {
            let name = path
                .file_name()
                .and_then(OsStr::to_str)
                .expect("a UTF-8 file name")
                .to_owned();
            (name, fs::read_to_string(&path).expect("read a dashboard"))
        })
        .collect();
    files.sort();
    files
}

/// What the dashboards promise docs/dashboards.md: Grafana dashboards whose every query goes
/// to the `datasource` variable (a Prometheus one), with `namespace` and `stream` variables
/// from `label_values`, and only row, timeseries and stat panels.
fn assert_grafana_dashboard(file: &str, dashboard: &Value) {
    assert!(
        dashboard["uid"].is_string() && dashboard["title"].is_string(),
        "{file}"
    );
    assert!(dashboard["schemaVersion"].is_u64(), "{file}: schemaVersion");
    let variables = dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: templating.list"));
    let variable = |name: &str| {
        variables
            .iter()
            .find(|variable| variable["name"] == name)
            .unwrap_or_else(|| panic!("{file}: no `{name}` variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource", "{file}");
    assert_eq!(datasource["query"], "prometheus", "{file}");
    for name in ["namespace", "stream"] {
        let variable = variable(name);
        assert_eq!(variable["type"], "query", "{file}: {name}");
        assert!(
            variable["definition"]
                .as_str()
                .is_some_and(|query| query.starts_with("label_values(")),
            "{file}: {name} comes from label_values: {variable}"
        );
    }
    let panels: Vec<&Value> = dashboard["panels"]
        .as_array()
        .unwrap_or_else(|| panic!("{file}: panels"))
        .iter()
        .flat_map(|panel| {
            std::iter::once(panel).chain(panel["panels"].as_array().into_iter().flatten())
        })
        .collect();
    let mut queries = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        match panel["type"].as_str() {
            Some("row") => continue,
            Some("timeseries" | "stat") => {}
            other => panic!("{file}: panel {title:?} is a {other:?}"),
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{file}: panel {title:?}"
        );
        let targets = panel["targets"].as_array().expect("a panel has targets");
        assert!(!targets.is_empty(), "{file}: panel {title:?} has no query");
        for target in targets {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{file}: panel {title:?}"
            );
            assert!(
                target["expr"].as_str().is_some_and(|expr| !expr.is_empty()),
                "{file}: panel {title:?}"
            );
            queries += 1;
        }
    }
    assert!(queries >= 5, "{file}: {queries} queries");
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_dashboards_ship_every_dashboard_file_verbatim_with_the_sidecars_label() {
    let files = dashboard_files();
    assert!(files.len() >= 2, "files/dashboards: {files:?}");
    let config_maps = |rendered: &[Value]| -> Vec<Value> {
        rendered
            .iter()
            .filter(|document| document["kind"] == "ConfigMap")
            .cloned()
            .collect()
    };

    // The defaults the grafana chart's sidecar looks for: label grafana_dashboard="1", in the
    // release namespace; one ConfigMap per file, holding the file as it is.
    let rendered = documents(&render(&["--set", "dashboards.enabled=true"]));
    let maps = config_maps(&rendered);
    assert_eq!(maps.len(), files.len(), "{maps:?}");
    for (name, text) in &files {
        let map = maps
            .iter()
            .find(|map| map["data"][name.as_str()].is_string())
            .unwrap_or_else(|| panic!("no ConfigMap holds {name}"));
        assert_eq!(map["metadata"]["namespace"], "metricstream-system");
        assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
        assert!(map["metadata"]["annotations"].is_null(), "{map}");
        assert_eq!(
            map["data"].as_object().map(|data| data.len()),
            Some(1),
            "{name}"
        );
        let shipped = map["data"][name.as_str()].as_str().expect("a string");
        assert_eq!(shipped, text.trim_end(), "{name} is shipped verbatim");
        let dashboard: Value = serde_json::from_str(shipped)
            .unwrap_or_else(|error| panic!("{name} is not JSON: {error}"));
        assert_grafana_dashboard(name, &dashboard);
    }
    let titles: BTreeSet<String> = files
        .iter()
        .map(|(_, text)| {
            serde_json::from_str::<Value>(text).expect("JSON")["title"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for title in ["MetricStream / Overview", "MetricStream / Operator"] {
        assert!(titles.contains(title), "{titles:?}");
    }

    // Another sidecar's label, a namespace it watches, its folder annotation.
    let rendered = documents(&render(&[
        "--set",
        "dashboards.enabled=true,dashboards.label=example.com/dashboard,\
         dashboards.labelValue=metricstream,dashboards.namespace=monitoring,\
         dashboards.annotations.grafana_folder=MetricStream",
    ]));
    let maps = config_maps(&rendered);
    assert_eq!(maps.len(), files.len());
    for map in &maps {
        assert_eq!(map["metadata"]["namespace"], "monitoring");
        assert_eq!(
            map["metadata"]["labels"]["example.com/dashboard"],
            "metricstream"
        );
        assert!(map["metadata"]["labels"]["grafana_dashboard"].is_null());
        assert_eq!(
            map["metadata"]["annotations"],
            serde_json::json!({"grafana_folder": "MetricStream"})
        );
    }
    // Off by default: the default render's kinds are checked exactly above (no ConfigMap).
}

/// The committed CRD writes `maximum: 1024.0` and Helm's round trip `1024`: equal as schema
/// values, so numbers are compared as floats.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(number) => number.as_f64().map(Value::from).unwrap_or(Value::Null),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, field)| (key.clone(), numbers_as_floats(field)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_non_default_values_render_a_namespaced_elected_operator() {
    let rendered = documents(&render(&["--values", &chart_values_path()]));
    let found = kinds(&rendered);
    assert!(
        !found.contains("CustomResourceDefinition"),
        "crds.install=false"
    );
    assert!(found.contains("ServiceMonitor"), "serviceMonitor.enabled");
    assert!(found.contains("PrometheusRule"), "prometheusRule.enabled");
    assert!(found.contains("PodMonitor"), "workloadMonitor.enabled");
    assert!(found.contains("ConfigMap"), "dashboards.enabled");

    let deployment = find(
        &rendered,
        "Deployment",
        "metricstream-metricstream-operator",
    );
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert!(
        deployment["spec"]["strategy"].is_null(),
        "with leader election the default rolling update is safe"
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_LEADER_ELECTION").as_deref(),
        Some("true"),
        "two replicas switch leader election on"
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_LEASE_NAME").as_deref(),
        Some("metricstream-metricstream-operator")
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_LEASE_DURATION").as_deref(),
        Some("20")
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_WATCH_NAMESPACE").as_deref(),
        Some("apps")
    );
    assert_eq!(
        env_of(deployment, "METRICSTREAM_ADMIN_LISTEN").as_deref(),
        Some("0.0.0.0:9191")
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/metricstream/metricstream@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "metricstream-controller"
    );

    // Posture: the scrape namespaces reach the operator's policy and, verbatim, the operator's
    // flag (which parses them as the chart passes them); two replicas get a budget.
    let selector = serde_json::json!({
        "matchLabels": { "kubernetes.io/metadata.name": "monitoring" },
        "matchExpressions": [{ "key": "team", "operator": "NotIn", "values": ["sandbox"] }],
    });
    let policy = find(
        &rendered,
        "NetworkPolicy",
        "metricstream-metricstream-operator",
    );
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"],
        selector
    );
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 9191);
    let flag = env_of(deployment, "METRICSTREAM_METRICS_NAMESPACE_SELECTOR")
        .expect("the selector is passed to the operator");
    let parsed = metricstream_operator::config::parse_label_selector(&flag)
        .unwrap_or_else(|error| panic!("the operator refuses the chart's {flag}: {error}"));
    assert_eq!(serde_json::to_value(parsed).expect("JSON"), selector);
    assert_eq!(
        env_of(deployment, "METRICSTREAM_NETWORK_POLICIES").as_deref(),
        Some("false")
    );
    let budget = find(
        &rendered,
        "PodDisruptionBudget",
        "metricstream-metricstream-operator",
    );
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budget["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // The controller's rights end at the watched namespace; only KafkaTopics stay cluster-wide.
    let role = find(&rendered, "Role", "metricstream-metricstream-operator");
    assert_eq!(role["metadata"]["namespace"], "apps");
    assert!(rule_resources(role).contains("deployments"));
    let cluster_roles: Vec<&Value> = rendered
        .iter()
        .filter(|document| document["kind"] == "ClusterRole")
        .collect();
    assert_eq!(cluster_roles.len(), 1, "only the Strimzi ClusterRole");
    assert_eq!(
        rule_resources(cluster_roles[0]),
        BTreeSet::from(["kafkatopics", "kafkausers", "secrets"].map(String::from))
    );
    assert_eq!(
        verbs_on(cluster_roles[0], "secrets"),
        BTreeSet::from(["get".to_owned()]),
        "cluster-wide, Secrets are only read by name"
    );
    assert_eq!(
        verbs_on(role, "secrets"),
        BTreeSet::from(["create", "delete", "get", "list", "patch"].map(String::from)),
        "in the watched namespace: the credentials copy and the Secrets a stream names"
    );
    let lease_role = find(
        &rendered,
        "Role",
        "metricstream-metricstream-operator-leader-election",
    );
    assert_eq!(lease_role["metadata"]["namespace"], "metricstream-system");
    assert_eq!(
        rule_resources(lease_role),
        BTreeSet::from(["leases".to_owned()])
    );
    let binding = find(
        &rendered,
        "RoleBinding",
        "metricstream-metricstream-operator",
    );
    assert_eq!(binding["subjects"][0]["name"], "metricstream-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "metricstream-system");
}

/// The (group, resource, verb) grants of a (Cluster)Role, and the resourceNames of each.
fn grants(role: &Value) -> Grants {
    let strings = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|item| item.as_str().expect("a string").to_owned())
            .collect()
    };
    let mut grants = BTreeSet::new();
    for rule in role["rules"].as_array().expect("the role has rules") {
        let names = strings(&rule["resourceNames"]);
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    grants.insert((group.clone(), resource.clone(), verb, names.clone()));
                }
            }
        }
    }
    grants
}

/// What operator/src/rbac.rs says the operator needs in `scope`, as grants; the Lease's `get`
/// and `update` limited to `lease`.
fn required(scope: Scope, lease: &str) -> Grants {
    rbac::required()
        .into_iter()
        .filter(|access| access.scope == scope)
        .flat_map(|access| {
            let rbac::Access {
                group,
                resource,
                verbs,
                ..
            } = access;
            verbs.into_iter().map(move |verb| {
                let names = if scope == Scope::LeaderElection && verb != "create" {
                    vec![lease.to_owned()]
                } else {
                    Vec::new()
                };
                (group.clone(), resource.clone(), verb.to_owned(), names)
            })
        })
        .collect()
}

type Grants = BTreeSet<(String, String, String, Vec<String>)>;

/// Fails naming what the chart grants beyond the table, and what it lacks.
fn assert_same_grants(what: &str, chart: Grants, needed: Grants) {
    let extra: Vec<_> = chart.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&chart).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{what}: granted but not used by the operator (operator/src/rbac.rs): {extra:?}; \
         used but not granted: {missing:?}"
    );
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_rbac_grants_exactly_what_the_operator_uses() {
    let lease = "metricstream-metricstream-operator";
    // Cluster-wide: one ClusterRole with everything but the Lease.
    let rendered = documents(&render(&["--set", "leaderElection.enabled=true"]));
    let cluster_role = find(&rendered, "ClusterRole", lease);
    let mut expected = required(Scope::Streams, lease);
    expected.extend(required(Scope::KafkaTopics, lease));
    assert_same_grants("the ClusterRole", grants(cluster_role), expected);
    let lease_role = find(&rendered, "Role", &format!("{lease}-leader-election"));
    assert_same_grants(
        "the leader-election Role",
        grants(lease_role),
        required(Scope::LeaderElection, lease),
    );
    // Without KafkaTopics, the rest is unchanged.
    let rendered = documents(&render(&["--set", "rbac.kafkaTopics=false"]));
    assert_same_grants(
        "the ClusterRole without KafkaTopics",
        grants(find(&rendered, "ClusterRole", lease)),
        required(Scope::Streams, lease),
    );

    // One namespace: a Role there, KafkaTopics still cluster-wide, the Lease's own Role.
    let rendered = documents(&render(&["--values", &chart_values_path()]));
    assert_same_grants(
        "the watched namespace's Role",
        grants(find(&rendered, "Role", lease)),
        required(Scope::Streams, lease),
    );
    assert_same_grants(
        "the KafkaTopic ClusterRole",
        grants(find(
            &rendered,
            "ClusterRole",
            &format!("{lease}-kafkatopics"),
        )),
        required(Scope::KafkaTopics, lease),
    );
    assert_same_grants(
        "the namespaced leader-election Role",
        grants(find(&rendered, "Role", &format!("{lease}-leader-election"))),
        required(Scope::LeaderElection, lease),
    );
}

fn chart_values_path() -> String {
    chart()
        .join(NON_DEFAULT_VALUES)
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn chart_rejects_values_its_schema_does_not_allow() {
    for (set, mentions) in [
        ("replicaCount=-1", "replicaCount"),
        ("logFormat=xml", "logFormat"),
        ("replicaCount=two", "replicaCount"),
        ("imagePullPolicy=Always", "imagePullPolicy"),
        ("workloadResources.memoryLimit=lots", "memoryLimit"),
        (
            "networkPolicy.metricsNamespaceSelector.matchLabel.team=obs",
            "matchLabel",
        ),
        ("prometheusRule.enable=true", "enable"),
        ("workloadMonitor.interval=often", "interval"),
        ("dashboards.enable=true", "enable"),
        ("dashboards.labelValue=not valid", "labelValue"),
    ] {
        let output = helm_template(&["--set", set]);
        assert!(
            !output.status.success(),
            "helm template accepted --set {set}"
        );
        assert!(
            text(&output).contains(mentions),
            "the error for --set {set} should name {mentions}:\n{}",
            text(&output)
        );
    }
    let output = helm_template(&[
        "--set",
        "metrics.service.enabled=false,metrics.serviceMonitor.enabled=true",
    ]);
    assert!(!output.status.success());
    assert!(
        text(&output).contains("needs metrics.service.enabled"),
        "{}",
        text(&output)
    );
}

/// Renders the chart with default and non-default values into `dir`, returning the files.
fn render_to_files(dir: &Path, extra_for_non_default: &[&str]) -> Vec<PathBuf> {
    let default = dir.join("chart-default.yaml");
    fs::write(&default, render(&[])).expect("write the default render");
    let non_default = dir.join("chart-non-default.yaml");
    let values = chart_values_path();
    let mut args = vec!["--values", values.as_str()];
    args.extend_from_slice(extra_for_non_default);
    fs::write(&non_default, render(&args)).expect("write the non-default render");
    vec![default, non_default]
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("examples"))
        .expect("read examples/")
        .map(|entry| entry.expect("list examples/").path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples/: {files:?}");
    files
}

fn kubeconform(files: &[PathBuf]) -> Output {
    let k8s_schemas = tool("KUBECONFORM_K8S_SCHEMAS");
    let crd_schemas = tool("KUBECONFORM_CRD_SCHEMAS");
    let mut args: Vec<String> = vec![
        "-strict".into(),
        "-summary".into(),
        "-verbose".into(),
        "-kubernetes-version".into(),
        KUBERNETES_VERSION.into(),
        "-schema-location".into(),
        k8s_schemas.display().to_string(),
        "-schema-location".into(),
        format!(
            "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
            crd_schemas.display()
        ),
    ];
    args.extend(files.iter().map(|file| file.display().to_string()));
    run(&tool("KUBECONFORM"), args)
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn kubeconform_accepts_the_rendered_chart_and_every_example_strictly_offline() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut files = render_to_files(dir.path(), &[]);
    files.extend(examples());
    let output = kubeconform(&files);
    let report = assert_success("kubeconform", &output);
    assert!(
        !report.contains("skipped") || report.contains("Skipped: 0"),
        "kubeconform skipped resources it has no schema for:\n{report}"
    );
    for kind in [
        "CustomResourceDefinition",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "PrometheusRule",
        "PodMonitor",
        "ConfigMap",
        "MetricStream",
        "Kafka",
        "KafkaNodePool",
    ] {
        assert!(
            report.contains(&format!("{kind} ")),
            "kubeconform did not validate a {kind}:\n{report}"
        );
    }
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn kubeconform_rejects_unknown_fields_in_our_crd_and_in_kubernetes_types() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let stream = dir.path().join("stream-typo.yaml");
    let example = fs::read_to_string(repo().join("examples/metricstream-file.yaml"))
        .expect("read the file-backed example");
    fs::write(&stream, example.replace("partitions:", "partitons:"))
        .expect("write the misspelt stream");
    let service = dir.path().join("service-typo.yaml");
    let nodeports = fs::read_to_string(repo().join("examples/ingest-nodeports.yaml"))
        .expect("read the NodePort example");
    fs::write(&service, nodeports.replace("nodePort:", "nodeport:"))
        .expect("write the misspelt Service");
    for file in [stream, service] {
        let output = kubeconform(std::slice::from_ref(&file));
        assert!(
            !output.status.success(),
            "kubeconform accepted {}:\n{}",
            file.display(),
            text(&output)
        );
    }
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn shellcheck_passes_on_every_script() {
    fn shell_scripts(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("list a directory").path();
            if path.is_dir() {
                shell_scripts(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "sh") {
                found.push(path);
            }
        }
    }
    let mut scripts = Vec::new();
    shell_scripts(&repo().join("hack"), &mut scripts);
    scripts.sort();
    scripts.push(repo().join(".ci/run"));
    assert!(scripts.len() >= 5, "scripts: {scripts:?}");
    let mut args = vec![
        "--severity=style".to_owned(),
        "--external-sources".to_owned(),
    ];
    args.extend(scripts.iter().map(|script| script.display().to_string()));
    assert_success("shellcheck", &run(&tool("SHELLCHECK"), args));
}

#[test]
#[ignore = "needs helm, kubeconform, shellcheck and hadolint: hack/tools.sh install (make test runs it)"]
fn hadolint_passes_on_the_dockerfile_and_refuses_a_root_image() {
    let hadolint = tool("HADOLINT");
    let dockerfile = repo().join("Dockerfile");
    assert_success(
        "hadolint Dockerfile",
        &run(&hadolint, [dockerfile.to_str().expect("UTF-8")]),
    );
    // The linter really looks: the same image ending as root is refused (DL3002).
    let dir = tempfile::tempdir().expect("a temporary directory");
    let as_root = dir.path().join("Dockerfile");
    let original = fs::read_to_string(&dockerfile).expect("read the Dockerfile");
    assert!(
        original.contains("USER 65532:65532"),
        "the image runs as 65532"
    );
    fs::write(&as_root, original.replace("USER 65532:65532", "USER root")).expect("write a copy");
    let output = run(&hadolint, [as_root.to_str().expect("UTF-8")]);
    assert!(
        !output.status.success() && text(&output).contains("DL3002"),
        "hadolint accepted a root image:\n{}",
        text(&output)
    );
}

#[test]
#[ignore = "needs a control plane: KUBECONFIG and KUBECTL from hack/envtest.sh up (make test runs it)"]
fn envtest_the_chart_and_the_examples_pass_a_server_side_dry_run() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "{NEEDS_CONTROL_PLANE}"
    );
    let kubectl = tool("KUBECTL");
    // Namespaced objects need their namespace to exist; everything else is only a dry run.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let namespaces = dir.path().join("namespaces.yaml");
    fs::write(
        &namespaces,
        ["metricstream-system", "apps", "metrics", "kafka"]
            .map(|name| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"))
            .join("---\n"),
    )
    .expect("write the namespaces");
    assert_success(
        "kubectl apply namespaces",
        &run(
            &kubectl,
            ["apply", "-f", namespaces.to_str().expect("UTF-8")],
        ),
    );

    // The control plane has no Prometheus Operator CRDs: the ServiceMonitor, the
    // PrometheusRule and the PodMonitor are left out here (kubeconform validates them).
    let mut files = render_to_files(
        dir.path(),
        &[
            "--set",
            "metrics.serviceMonitor.enabled=false,prometheusRule.enabled=false,\
             workloadMonitor.enabled=false",
        ],
    );
    files.extend(examples());
    for file in &files {
        let output = run(
            &kubectl,
            [
                "apply",
                "--dry-run=server",
                "-f",
                file.to_str().expect("UTF-8"),
            ],
        );
        let report = assert_success(
            &format!("kubectl apply --dry-run=server -f {}", file.display()),
            &output,
        );
        assert!(
            report.contains("(server dry run)"),
            "no object of {} was checked by the server:\n{report}",
            file.display()
        );
    }

    // `helm install --dry-run=server` against the control plane: Helm's own checks of the
    // release, and the NOTES.txt a user reads after installing.
    let chart = chart();
    let output = run(
        &tool("HELM"),
        [
            "install",
            "metricstream",
            chart.to_str().expect("UTF-8"),
            "--namespace",
            "metricstream-system",
            "--dry-run=server",
            "--set",
            "crds.install=false",
        ],
    );
    let report = assert_success("helm install --dry-run=server", &output);
    let notes = report
        .split_once("NOTES:")
        .map(|(_, notes)| notes)
        .unwrap_or_else(|| panic!("helm printed no NOTES:\n{report}"));
    for expected in [
        "installed as metricstream-metricstream-operator in namespace metricstream-system",
        "rollout status deployment/metricstream-metricstream-operator",
        "helm test metricstream -n metricstream-system",
        "did not install the MetricStream CRD",
    ] {
        assert!(
            notes.contains(expected),
            "NOTES lack {expected:?}:\n{notes}"
        );
    }
    // The NOTES' example stream is what a user pastes: the server must accept it.
    let pasted = notes
        .split_once("<<'YAML'\n")
        .and_then(|(_, rest)| rest.split_once("\nYAML\n"))
        .map(|(yaml, _)| yaml)
        .unwrap_or_else(|| panic!("NOTES hold no pasteable stream:\n{notes}"));
    let pasted_file = dir.path().join("notes-stream.yaml");
    fs::write(&pasted_file, pasted).expect("write the NOTES stream");
    assert_success(
        "kubectl apply --dry-run=server of the NOTES stream",
        &run(
            &kubectl,
            [
                "apply",
                "--dry-run=server",
                "--namespace",
                "metrics",
                "-f",
                pasted_file.to_str().expect("UTF-8"),
            ],
        ),
    );

    // The server really validates: the CRD's CEL rules reject a stream without its backend block.
    let invalid = dir.path().join("invalid-stream.yaml");
    let example = fs::read_to_string(repo().join("examples/metricstream-file.yaml"))
        .expect("read the file-backed example");
    let without_file_block: String = example
        .lines()
        .filter(|line| {
            !(line.starts_with("  file:")
                || line.starts_with("    storage:")
                || line.starts_with("    durability:"))
        })
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(&invalid, without_file_block).expect("write the invalid stream");
    let output = run(
        &kubectl,
        [
            "apply",
            "--dry-run=server",
            "-f",
            invalid.to_str().expect("UTF-8"),
        ],
    );
    assert!(
        !output.status.success(),
        "the server accepted a file-backed stream without spec.file:\n{}",
        text(&output)
    );
}

#[test]
fn every_example_stream_names_objects_the_other_examples_create() {
    // The examples are one set: the streams' Secret, namespace and Strimzi cluster must exist
    // in the other files, and kind-config.yaml must map their NodePorts.
    let read = |name: &str| {
        fs::read_to_string(repo().join("examples").join(name))
            .unwrap_or_else(|error| panic!("read examples/{name}: {error}"))
    };
    let kafka_stream: Value = serde_yaml::from_str(&read("metricstream-kafka.yaml")).expect("YAML");
    let file_stream: Value = serde_yaml::from_str(&read("metricstream-file.yaml")).expect("YAML");
    let secret: Value = serde_yaml::from_str(&read("token-secret.yaml")).expect("YAML");
    let cluster = documents(&read("kafka-cluster.yaml"));
    let kafka = cluster
        .iter()
        .find(|document| document["kind"] == "Kafka")
        .expect("a Kafka in kafka-cluster.yaml");
    for stream in [&kafka_stream, &file_stream] {
        assert_eq!(
            stream["spec"]["ingest"]["authSecretRef"]["name"],
            secret["metadata"]["name"]
        );
        assert_eq!(
            stream["metadata"]["namespace"],
            secret["metadata"]["namespace"]
        );
    }
    assert_eq!(
        kafka_stream["spec"]["kafka"]["strimzi"]["cluster"],
        kafka["metadata"]["name"]
    );
    assert_eq!(
        kafka_stream["spec"]["kafka"]["strimzi"]["namespace"],
        kafka["metadata"]["namespace"]
    );
    let bootstrap = format!(
        "{}-kafka-bootstrap.{}.svc:9092",
        kafka["metadata"]["name"].as_str().expect("a name"),
        kafka["metadata"]["namespace"]
            .as_str()
            .expect("a namespace")
    );
    assert_eq!(
        kafka_stream["spec"]["kafka"]["bootstrapServers"],
        bootstrap.as_str()
    );

    let kind_config: Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("kind-config.yaml")).expect("read kind-config.yaml"),
    )
    .expect("YAML");
    let mapped: BTreeSet<i64> = kind_config["nodes"][0]["extraPortMappings"]
        .as_array()
        .expect("port mappings")
        .iter()
        .map(|mapping| mapping["containerPort"].as_i64().expect("a port"))
        .collect();
    let node_ports: BTreeSet<i64> = documents(&read("ingest-nodeports.yaml"))
        .iter()
        .map(|service| {
            service["spec"]["ports"][0]["nodePort"]
                .as_i64()
                .expect("a nodePort")
        })
        .collect();
    // kind-config.yaml also maps hack/e2e.sh's remote-write step's ports (its stream's ingest,
    // its store), which no example uses.
    assert!(
        node_ports.is_subset(&mapped),
        "the examples' NodePorts {node_ports:?} are not all mapped by kind-config.yaml: {mapped:?}"
    );
}
