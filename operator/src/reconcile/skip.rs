//! When a child's server-side apply can be skipped (the decision is pure).
//!
//! For each stream (by uid) the operator remembers, per child, a fingerprint of the desired
//! object it last applied successfully and the version of the child that apply returned. A
//! later reconcile skips the apply when all of these hold:
//!
//! - the desired object's fingerprint is unchanged (same spec, same operator settings);
//! - the child is in the watch cache and shows the version the apply returned, i.e. nobody
//!   deleted or changed it since. A ConfigMap, Service, NetworkPolicy or PVC is compared by
//!   resourceVersion. A Deployment's (or PodDisruptionBudget's) resourceVersion moves with
//!   every status update kube-controller-manager makes, so it is compared by uid,
//!   `metadata.generation` (any spec edit, a scale), labels and ownerReferences;
//! - the child is not being deleted;
//! - the last apply is younger than half the resync period, so the periodic resync always
//!   applies everything.
//!
//! What this can miss until the next full apply (at most one resync later): a change to a
//! Deployment's metadata annotations, which bumps no generation, and anything the watch cache
//! has not seen yet when it lags behind a change (a lagging cache that shows an older version
//! or no object at all makes the apply run, never skip). A deleted child is missing from the
//! cache, so it is always re-applied at once.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use kube::api::ObjectMeta;
use serde::Serialize;

/// What is compared to tell whether a child changed since the operator applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Version {
    /// ConfigMaps, Services, PVCs: any write changes it.
    Resource(String),
    /// Deployments: the spec's generation and a hash of uid, labels and ownerReferences.
    Generation { generation: i64, meta: u64 },
}

impl Version {
    /// The version of a live child, or `None` when it is being deleted or carries no version
    /// (then the apply runs).
    pub fn of(meta: &ObjectMeta, by_generation: bool) -> Option<Self> {
        if meta.deletion_timestamp.is_some() {
            return None;
        }
        if by_generation {
            Some(Self::Generation {
                generation: meta.generation?,
                meta: fingerprint(&(&meta.uid, &meta.labels, &meta.owner_references)),
            })
        } else {
            meta.resource_version.clone().map(Self::Resource)
        }
    }
}

/// A child as last applied: the desired object's fingerprint, the version the apply returned,
/// and when.
#[derive(Clone, Debug)]
pub struct Mark {
    pub fingerprint: u64,
    pub version: Version,
    pub applied_at: Instant,
}

/// Whether the apply of a child can be skipped; see the module documentation.
pub fn may_skip(
    mark: Option<&Mark>,
    fingerprint: u64,
    live: Option<&Version>,
    now: Instant,
    full_apply_every: Duration,
) -> bool {
    let (Some(mark), Some(live)) = (mark, live) else {
        return false;
    };
    mark.fingerprint == fingerprint
        && &mark.version == live
        && now.saturating_duration_since(mark.applied_at) < full_apply_every
}

fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of a desired object: a hash of its JSON.
pub fn fingerprint<K: Serialize>(object: &K) -> u64 {
    match serde_json::to_vec(object) {
        Ok(json) => hash(&json),
        // Never equal to a recorded fingerprint of a serializable object in practice; the
        // apply would fail to serialize it anyway.
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    const EVERY: Duration = Duration::from_secs(150);

    fn meta(uid: &str, resource_version: &str, generation: i64) -> ObjectMeta {
        ObjectMeta {
            name: Some("s-ingest".into()),
            uid: Some(uid.into()),
            resource_version: Some(resource_version.into()),
            generation: Some(generation),
            labels: Some([("metricstream.dev/stream".into(), "s".into())].into()),
            owner_references: Some(vec![OwnerReference {
                uid: "stream-uid".into(),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    fn mark(fingerprint: u64, version: Version, applied_at: Instant) -> Mark {
        Mark {
            fingerprint,
            version,
            applied_at,
        }
    }

    #[test]
    fn an_unchanged_child_is_skipped_until_the_full_apply_is_due() {
        let now = Instant::now();
        let applied = Version::of(&meta("a", "10", 1), false);
        let m = mark(7, applied.clone().expect("version"), now);
        assert!(may_skip(Some(&m), 7, applied.as_ref(), now, EVERY));
        let later = now + EVERY;
        assert!(
            !may_skip(Some(&m), 7, applied.as_ref(), later, EVERY),
            "full apply due"
        );
    }

    #[test]
    fn anything_unknown_or_changed_is_applied() {
        let now = Instant::now();
        let applied = Version::of(&meta("a", "10", 1), false).expect("version");
        let m = mark(7, applied.clone(), now);
        assert!(
            !may_skip(None, 7, Some(&applied), now, EVERY),
            "never applied"
        );
        assert!(
            !may_skip(Some(&m), 8, Some(&applied), now, EVERY),
            "new spec"
        );
        assert!(!may_skip(Some(&m), 7, None, now, EVERY), "deleted");
        let edited = Version::of(&meta("a", "11", 1), false);
        assert!(
            !may_skip(Some(&m), 7, edited.as_ref(), now, EVERY),
            "edited"
        );
        let recreated = Version::of(&meta("b", "12", 1), false);
        assert!(!may_skip(Some(&m), 7, recreated.as_ref(), now, EVERY));
        let mut deleting = meta("a", "10", 1);
        deleting.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(Version::of(&deleting, false), None, "being deleted");
        assert_eq!(Version::of(&deleting, true), None, "being deleted");
    }

    #[test]
    fn a_deployment_is_compared_by_generation_labels_and_owners() {
        let now = Instant::now();
        let applied = Version::of(&meta("a", "10", 1), true).expect("version");
        let m = mark(7, applied, now);
        let skip =
            |live: &ObjectMeta| may_skip(Some(&m), 7, Version::of(live, true).as_ref(), now, EVERY);
        let mut status_update = meta("a", "15", 1);
        status_update.annotations =
            Some([("deployment.kubernetes.io/revision".into(), "1".into())].into());
        assert!(skip(&status_update), "status and revision annotation");
        assert!(!skip(&meta("a", "16", 2)), "spec edit or scale");
        assert!(!skip(&meta("b", "17", 1)), "recreated");
        let mut relabelled = meta("a", "18", 1);
        relabelled.labels = None;
        assert!(!skip(&relabelled), "labels");
        let mut orphaned = meta("a", "19", 1);
        orphaned.owner_references = None;
        assert!(!skip(&orphaned), "ownerReferences");
    }

    #[test]
    fn fingerprints_follow_the_desired_object() {
        let a = meta("a", "1", 1);
        let mut b = a.clone();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.labels = None;
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
