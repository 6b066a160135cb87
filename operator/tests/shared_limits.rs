//! The CRD's bounds that the workloads share come from `metricstream_backend`: the partition
//! count (in the schema and in the prose its description comes from, as a doc comment cannot
//! name the constant) and the consumer group's length.

use kube::CustomResourceExt;
use metricstream_backend::{MAX_GROUP_LEN, MAX_PARTITIONS};
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

#[test]
fn the_crd_bounds_the_consumer_group_by_max_group_len() {
    let crd = serde_json::to_value(MetricStream::crd()).expect("serialize the CRD");
    let group = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["consumer"]["properties"]["group"];
    assert_eq!(
        group["maxLength"].as_u64(),
        u64::try_from(MAX_GROUP_LEN).ok(),
        "{group}"
    );
}
