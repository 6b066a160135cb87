//! The CRD's partition bound is `metricstream_backend::MAX_PARTITIONS`, in the schema and in the
//! prose the schema's description comes from (a doc comment cannot name the constant).

use kube::CustomResourceExt;
use metricstream_backend::MAX_PARTITIONS;
use metricstream_operator::crd::MetricStream;

#[test]
fn the_crd_bounds_partitions_by_max_partitions() {
    let crd = serde_json::to_value(MetricStream::crd()).expect("serialize the CRD");
    let partitions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["partitions"];
    assert_eq!(
        partitions["maximum"].as_f64(),
        Some(f64::from(MAX_PARTITIONS)),
        "{partitions}"
    );
    let description = partitions["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&format!("1..={MAX_PARTITIONS}")),
        "{description}"
    );
}
