//! Strimzi's CRDs as `hack/strimzi-crds.sh` generates them from Strimzi's artifacts on Maven
//! Central (`io.strimzi:api` and `io.strimzi:crd-generator`), which `make test` hands to the
//! control plane, the kubeconform schemas and the envtest tests in place of a copy of Strimzi's
//! published files.
//!
//! Both tests read `STRIMZI_CRDS_DIR` (the directory the script prints; `make test` sets it) and
//! fail, naming what is missing, without it; a bare `cargo test` ignores them. The comparison
//! with Strimzi's published files needs a copy of them at `../shared/strimzi-1.2.0-crds` beside
//! the repository: where there is none (a user's clone), it says so and checks nothing more.
//!
//! ```text
//! eval "export $(hack/strimzi-crds.sh | tail -n 1)"
//! cargo test -p metricstream-operator --test strimzi_crds -- --include-ignored --nocapture
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

const NEEDS_STRIMZI_CRDS_DIR: &str = "STRIMZI_CRDS_DIR is not set: run `hack/strimzi-crds.sh` and \
     export the STRIMZI_CRDS_DIR=<dir> it prints last (make test does this)";
/// Strimzi's published files, where a copy of them is beside the repository.
const PUBLISHED_RELATIVE: &str = "../../shared/strimzi-1.2.0-crds";

/// The CRDs the project uses: file name, kind, plural.
const CRDS: [(&str, &str, &str); 4] = [
    ("040-Crd-kafka.yaml", "Kafka", "kafkas"),
    ("043-Crd-kafkatopic.yaml", "KafkaTopic", "kafkatopics"),
    ("044-Crd-kafkauser.yaml", "KafkaUser", "kafkausers"),
    (
        "045-Crd-kafkanodepool.yaml",
        "KafkaNodePool",
        "kafkanodepools",
    ),
];

fn generated_dir() -> PathBuf {
    match std::env::var_os("STRIMZI_CRDS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!("{NEEDS_STRIMZI_CRDS_DIR}"),
    }
}

fn published_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(PUBLISHED_RELATIVE)
}

/// Says why a check cannot run here. Written to stderr itself, not through `eprintln!`, which
/// the test harness captures and shows only for failing tests: a passing test that checked
/// nothing must not look like one that checked.
fn cannot_run_here(message: &str) {
    let _ = writeln!(std::io::stderr().lock(), "strimzi_crds: {message}");
}

fn read(path: &Path) -> (String, Value) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("parsing {} as YAML: {e}", path.display()));
    (text, value)
}

/// Where `a` and `b` differ, as JSON-pointer-like paths (at most `limit` of them).
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => differences(x, y, &format!("{path}/{key}"), out, limit),
                    (Some(_), None) => out.push(format!("{path}/{key}: only in the generated CRD")),
                    (None, _) => out.push(format!("{path}/{key}: only in the published CRD")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                differences(x, y, &format!("{path}/{i}"), out, limit);
            }
        }
        _ => out.push(format!("{path}: generated {a}, published {b}")),
    }
    if out.len() > limit {
        out.truncate(limit);
    }
}

/// What the operator, the chart and the envtest tests rely on: each file is its kind's CRD in
/// kafka.strimzi.io, namespaced, with the single version v1, served and stored.
#[test]
#[ignore = "needs STRIMZI_CRDS_DIR from hack/strimzi-crds.sh (make test runs it)"]
fn generated_crds_describe_strimzis_kinds() {
    let dir = generated_dir();
    for (file, kind, plural) in CRDS {
        let path = dir.join(file);
        let (_, crd) = read(&path);
        let at = |pointer: &str| {
            crd.pointer(pointer)
                .unwrap_or_else(|| panic!("{}: no {pointer}", path.display()))
                .clone()
        };
        assert_eq!(at("/apiVersion"), "apiextensions.k8s.io/v1", "{file}");
        assert_eq!(at("/kind"), "CustomResourceDefinition", "{file}");
        assert_eq!(
            at("/metadata/name"),
            Value::from(format!("{plural}.kafka.strimzi.io")),
            "{file}"
        );
        assert_eq!(at("/spec/group"), "kafka.strimzi.io", "{file}");
        assert_eq!(at("/spec/names/kind"), kind, "{file}");
        assert_eq!(at("/spec/names/plural"), plural, "{file}");
        assert_eq!(at("/spec/scope"), "Namespaced", "{file}");
        let versions = at("/spec/versions");
        let versions = versions.as_array().expect("spec.versions is a list");
        assert_eq!(versions.len(), 1, "{file}: versions {versions:?}");
        assert_eq!(versions[0]["name"], "v1", "{file}");
        assert_eq!(versions[0]["served"], true, "{file}");
        assert_eq!(versions[0]["storage"], true, "{file}");
        assert!(
            versions[0]
                .pointer("/schema/openAPIV3Schema/properties/spec")
                .is_some(),
            "{file}: no schema for spec"
        );
    }
}

/// The generated CRDs against Strimzi's published ones, where a copy of those is at hand: the
/// `spec` identical after parsing, `metadata.name` equal (labels are reported, not required).
#[test]
#[ignore = "needs STRIMZI_CRDS_DIR from hack/strimzi-crds.sh (make test runs it)"]
fn generated_crds_match_the_published_ones() {
    let generated = generated_dir();
    let published = published_dir();
    if !published.is_dir() {
        cannot_run_here(&format!(
            "the comparison with Strimzi's published CRDs cannot run here: there is no copy of \
             them at {} (../shared/strimzi-1.2.0-crds beside the repository; a user's clone has \
             none). The generated CRDs in {} were only checked for their kinds, group, scope and \
             versions (generated_crds_describe_strimzis_kinds).",
            published.display(),
            generated.display()
        ));
        return;
    }
    let canonical = |p: &Path| {
        p.canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    if canonical(&generated) == canonical(&published) {
        cannot_run_here(&format!(
            "the comparison cannot run: STRIMZI_CRDS_DIR is the published copy itself ({}), not \
             what hack/strimzi-crds.sh generates",
            published.display()
        ));
        return;
    }

    let mut failures = Vec::new();
    for (file, _, _) in CRDS {
        let (generated_text, generated_crd) = read(&generated.join(file));
        let (published_text, published_crd) = read(&published.join(file));
        let mut diffs = Vec::new();
        differences(
            &generated_crd["spec"],
            &published_crd["spec"],
            "spec",
            &mut diffs,
            20,
        );
        if generated_crd["metadata"]["name"] != published_crd["metadata"]["name"] {
            diffs.push(format!(
                "metadata/name: generated {}, published {}",
                generated_crd["metadata"]["name"], published_crd["metadata"]["name"]
            ));
        }
        let labels = if generated_crd["metadata"]["labels"] == published_crd["metadata"]["labels"] {
            "same labels".to_owned()
        } else {
            format!(
                "labels differ (not required): generated {}, published {}",
                generated_crd["metadata"]["labels"], published_crd["metadata"]["labels"]
            )
        };
        let bytes = if generated_text == published_text {
            "byte-identical"
        } else {
            "not byte-identical"
        };
        if diffs.is_empty() {
            eprintln!("strimzi_crds: {file}: spec and metadata.name equal; {labels}; {bytes}");
        } else {
            failures.push(format!("{file}:\n  {}", diffs.join("\n  ")));
        }
    }
    assert!(
        failures.is_empty(),
        "the generated CRDs ({}) differ from Strimzi's published ones ({}):\n{}",
        generated.display(),
        published.display(),
        failures.join("\n")
    );
    eprintln!(
        "strimzi_crds: {} generated CRDs match the published ones in {}",
        CRDS.len(),
        published.display()
    );
}
