//! `crds/metricstream.yaml` must be exactly what `metricstream-operator crd` prints, so the CRD
//! users install never drifts from the Rust types the operator reads.

use kube::CustomResourceExt;
use metricstream_operator::crd::MetricStream;

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = serde_yaml::to_string(&MetricStream::crd()).expect("serialize the CRD");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/metricstream.yaml");
    let committed = std::fs::read_to_string(path).expect("read crds/metricstream.yaml");
    assert!(
        generated == committed,
        "crds/metricstream.yaml is out of date: regenerate it with \
         `cargo run -p metricstream-operator -- crd > crds/metricstream.yaml`"
    );
}
