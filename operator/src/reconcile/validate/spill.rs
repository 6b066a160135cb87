//! The ingest's spill (`spec.kafka.spill`) → a [`SpillPlan`], or an [`InvalidSpill`] naming what
//! is wrong. The CRD's CEL rule refuses spill with the file backend at admission; this repeats it
//! for an older installed CRD and adds what CEL cannot see: the size's syntax, a spill too small
//! for one request, and stream names too long for a StatefulSet's pods.

use super::quantity::parse_quantity;
use crate::crd::{Backend, MetricStreamSpec};
use crate::labels::is_dns_subdomain;

/// The share of a spill volume the ingest may fill, in per cent. The rest is headroom for what
/// the spill's own count of bytes does not see: the file system's overhead (metadata, reserved
/// blocks) and segments whose records were replayed but which retention has not deleted yet.
pub const SPILL_FILL_PERCENT: u64 = 90;

/// Longest stream name with spill on. The ingest is then the StatefulSet `<name>-ingest`, and
/// the StatefulSet controller labels its pods `controller-revision-hash: <statefulset>-<hash>`
/// (a hash of up to 10 characters), a label value of at most 63 characters.
pub const MAX_SPILL_NAME_LEN: usize = 63 - "-ingest".len() - "-0123456789".len();

/// The spill of a stream that has it on.
#[derive(Clone, Debug, PartialEq)]
pub struct SpillPlan {
    /// The size of each ingest pod's spill volume, as the spec gives it.
    pub size: String,
    /// StorageClass of the spill volumes; the cluster default when `None`.
    pub storage_class: Option<String>,
    /// What the ingest may spill: [`SPILL_FILL_PERCENT`] of the size, in whole bytes.
    pub max_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpill {
    #[error(
        "spec.kafka.spill is for the kafka backend only: the file backend's queue is already on a volume"
    )]
    NotKafka,
    #[error(
        "spec.kafka.spill.size {0:?} is not a Kubernetes quantity greater than zero (e.g. 1Gi)"
    )]
    BadSize(String),
    #[error(
        "spec.kafka.spill.size {size} lets the ingest spill {max_bytes} bytes ({SPILL_FILL_PERCENT} %), less than one request of spec.ingest.maxBodyBytes ({max_body_bytes})"
    )]
    TooSmall {
        size: String,
        max_bytes: u64,
        max_body_bytes: i64,
    },
    #[error("spec.kafka.spill.storageClass {0:?} is not a valid name")]
    BadStorageClass(String),
    #[error(
        "name {name:?} is too long for spill: the ingest is then the StatefulSet `<name>-ingest`, whose pods' controller-revision-hash label allows names of at most {MAX_SPILL_NAME_LEN} characters"
    )]
    NameTooLong { name: String },
}

/// The spill of the stream `name` with `spec`; `None` when it is off. `spec.ingest.maxBodyBytes`
/// must already be valid.
pub fn spill_plan(spec: &MetricStreamSpec, name: &str) -> Result<Option<SpillPlan>, InvalidSpill> {
    let Some(spill) = spec.kafka.as_ref().and_then(|kafka| kafka.spill.as_ref()) else {
        return Ok(None);
    };
    if !spill.enabled {
        return Ok(None);
    }
    if spec.backend != Backend::Kafka {
        return Err(InvalidSpill::NotKafka);
    }
    if name.len() > MAX_SPILL_NAME_LEN {
        return Err(InvalidSpill::NameTooLong {
            name: name.to_owned(),
        });
    }
    let bytes = parse_quantity(&spill.size)
        .filter(|bytes| *bytes > 0.0)
        .ok_or_else(|| InvalidSpill::BadSize(spill.size.clone()))?;
    let max_bytes = fill_limit(bytes);
    if max_bytes < spec.ingest.max_body_bytes.unsigned_abs() {
        return Err(InvalidSpill::TooSmall {
            size: spill.size.clone(),
            max_bytes,
            max_body_bytes: spec.ingest.max_body_bytes,
        });
    }
    if let Some(class) = &spill.storage_class
        && !is_dns_subdomain(class)
    {
        return Err(InvalidSpill::BadStorageClass(class.clone()));
    }
    Ok(Some(SpillPlan {
        size: spill.size.clone(),
        storage_class: spill.storage_class.clone(),
        max_bytes,
    }))
}

/// [`SPILL_FILL_PERCENT`] of a volume of `bytes`, rounded down to whole bytes (in u128: an
/// exbibyte times 90 does not fit in a u64).
fn fill_limit(bytes: f64) -> u64 {
    let whole = bytes.floor() as u128;
    u64::try_from(whole * u128::from(SPILL_FILL_PERCENT) / 100).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{SpillSpec, TopicManagement};
    use crate::reconcile::fixtures::{file_stream, kafka_stream};

    fn with_spill(mut spec: MetricStreamSpec, spill: SpillSpec) -> MetricStreamSpec {
        let kafka = spec.kafka.get_or_insert_with(|| {
            kafka_stream(TopicManagement::Admin)
                .spec
                .kafka
                .expect("kafka")
        });
        kafka.spill = Some(spill);
        spec
    }

    fn enabled(size: &str) -> SpillSpec {
        SpillSpec {
            enabled: true,
            size: size.into(),
            storage_class: None,
        }
    }

    #[test]
    fn the_ingest_may_fill_ninety_per_cent_of_its_volume() {
        let spec = with_spill(kafka_stream(TopicManagement::Admin).spec, enabled("1Gi"));
        let plan = spill_plan(&spec, "web").expect("valid").expect("on");
        assert_eq!(plan.size, "1Gi");
        assert_eq!(plan.max_bytes, 1024 * 1024 * 1024 * 9 / 10);
        assert_eq!(plan.max_bytes, 966_367_641, "rounded down to whole bytes");
        assert_eq!(plan.storage_class, None);
        assert_eq!(fill_limit(1000.0), 900);
        // 1.5 EiB is 1 729 382 256 910 270 464 bytes, past what u64 arithmetic could take times 90.
        assert_eq!(fill_limit(1.5 * 1024f64.powi(6)), 1_556_444_031_219_243_417);
        assert_eq!(fill_limit(1e30), u64::MAX, "saturates rather than wraps");
    }

    #[test]
    fn spill_off_or_absent_plans_nothing_on_either_backend() {
        let kafka = kafka_stream(TopicManagement::Strimzi).spec;
        assert_eq!(spill_plan(&kafka, "web"), Ok(None), "absent");
        let off = SpillSpec {
            size: "not a size".into(),
            ..SpillSpec::default()
        };
        assert_eq!(
            spill_plan(&with_spill(kafka, off.clone()), "web"),
            Ok(None),
            "disabled: its settings are not looked at"
        );
        assert_eq!(
            spill_plan(&with_spill(file_stream().spec, off), "web"),
            Ok(None),
            "a file stream may carry a disabled spill"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let kafka = || kafka_stream(TopicManagement::Admin).spec;
        let file = with_spill(file_stream().spec, enabled("1Gi"));
        assert_eq!(spill_plan(&file, "web"), Err(InvalidSpill::NotKafka));
        for size in ["lots", "0", "-1Gi", "1 Gi"] {
            assert_eq!(
                spill_plan(&with_spill(kafka(), enabled(size)), "web"),
                Err(InvalidSpill::BadSize(size.into())),
                "{size}"
            );
        }
        // maxBodyBytes is 1 MiB by default: 1 MiB of volume leaves 90 % of that.
        assert_eq!(
            spill_plan(&with_spill(kafka(), enabled("1Mi")), "web"),
            Err(InvalidSpill::TooSmall {
                size: "1Mi".into(),
                max_bytes: 943_718,
                max_body_bytes: 1024 * 1024,
            })
        );
        // The least size that holds one such request (docs/operator.md says so).
        assert!(spill_plan(&with_spill(kafka(), enabled("1165085")), "web").is_ok());
        assert!(matches!(
            spill_plan(&with_spill(kafka(), enabled("1165084")), "web"),
            Err(InvalidSpill::TooSmall { .. })
        ));
        let classless = SpillSpec {
            storage_class: Some("Fast SSD".into()),
            ..enabled("1Gi")
        };
        assert_eq!(
            spill_plan(&with_spill(kafka(), classless), "web"),
            Err(InvalidSpill::BadStorageClass("Fast SSD".into()))
        );
        let longest = "a".repeat(MAX_SPILL_NAME_LEN);
        assert!(spill_plan(&with_spill(kafka(), enabled("1Gi")), &longest).is_ok());
        let too_long = "a".repeat(MAX_SPILL_NAME_LEN + 1);
        assert_eq!(
            spill_plan(&with_spill(kafka(), enabled("1Gi")), &too_long),
            Err(InvalidSpill::NameTooLong { name: too_long })
        );
    }

    #[test]
    fn the_longest_name_keeps_the_revision_label_within_63_characters() {
        let statefulset = format!("{}-ingest", "a".repeat(MAX_SPILL_NAME_LEN));
        // The controller's hash: a u32 in decimal, re-encoded character by character.
        let revision = format!("{statefulset}-{}", u32::MAX);
        assert_eq!(revision.len(), 63);
    }
}
