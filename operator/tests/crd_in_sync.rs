//! `crds/metricstream.yaml` and the Helm chart's copy must be exactly what
//! `metricstream-operator crd` prints, so the CRD users install never drifts from the Rust types
//! the operator reads.

use kube::CustomResourceExt;
use metricstream_operator::crd::MetricStream;

fn assert_matches_generated(relative_path: &str) {
    let generated = serde_yaml::to_string(&MetricStream::crd()).expect("serialize the CRD");
    let path = format!("{}/../{relative_path}", env!("CARGO_MANIFEST_DIR"));
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {path}: {error}"));
    assert!(
        generated == committed,
        "{relative_path} is out of date: regenerate it with \
         `cargo run -p metricstream-operator -- crd > {relative_path}`"
    );
}

#[test]
fn committed_crd_matches_the_rust_types() {
    assert_matches_generated("crds/metricstream.yaml");
}

#[test]
fn the_chart_installs_the_same_crd() {
    assert_matches_generated("charts/metricstream-operator/files/metricstream-crd.yaml");
}
