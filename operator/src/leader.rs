//! Leader election on a `coordination.k8s.io/v1` Lease, so several operator replicas can run and
//! exactly one reconciles. The holder renews every third of the lease duration; a replica takes
//! over only a lease whose holder stopped renewing for a whole lease duration. Every write is a
//! replace guarded by resourceVersion, so two candidates can never both win.
//!
//! The leader that cannot renew for `renew_deadline` (two thirds of the duration, before anyone
//! else may take over) steps down: the caller stops the controller and exits non-zero, and
//! Kubernetes restarts it as a candidate.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub duration: Duration,
}

impl LeaseSettings {
    fn renew_every(&self) -> Duration {
        self.duration / 3
    }
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lost the lease {lease} to {holder}")]
    Lost { lease: String, holder: String },
    #[error("could not renew the lease {lease} for {waited:?}: {last_error}")]
    RenewFailed {
        lease: String,
        waited: Duration,
        last_error: String,
    },
}

/// Who holds the lease after one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Held,
    HeldBy(String),
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Waits until this replica holds the lease (`true`) or `shutdown` fires (`false`).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> bool {
        let mut last_holder = None;
        loop {
            match self.try_hold().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "became the leader");
                    return true;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.settings.name, %holder, "standing by: another replica leads");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "trying to acquire the lease failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew_every()) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// Keeps renewing the lease. Returns `Ok` when `shutdown` fires (still holding the lease:
    /// stop the work, then [`release`](Self::release) it), or the reason leadership ended.
    pub async fn hold(&self, shutdown: &CancellationToken) -> Result<(), LeaderError> {
        let mut last_renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew_every()) => {}
                // The caller stops the controller, then calls `release`.
                _ = shutdown.cancelled() => return Ok(()),
            }
            match self.try_hold().await {
                Ok(Attempt::Held) => last_renewed = Instant::now(),
                Ok(Attempt::HeldBy(holder)) => {
                    return Err(LeaderError::Lost {
                        lease: self.settings.name.clone(),
                        holder,
                    });
                }
                Err(error) => {
                    let waited = last_renewed.elapsed();
                    tracing::warn!(%error, ?waited, "renewing the lease failed");
                    if waited >= self.settings.renew_deadline() {
                        return Err(LeaderError::RenewFailed {
                            lease: self.settings.name.clone(),
                            waited,
                            last_error: error.to_string(),
                        });
                    }
                }
            }
        }
    }

    /// Hands the lease back on a clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.settings.name, "released the lease"),
            Err(error) => tracing::warn!(%error, "releasing the lease failed"),
        }
    }

    /// One attempt to create, renew or take over the lease.
    async fn try_hold(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let me = &self.settings.identity;
        let duration_seconds = i32::try_from(self.settings.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    Ok(Attempt::HeldBy("another candidate".into()))
                }
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me {
            if let Some(holder) = holder
                && !expired(spec, now)
            {
                return Ok(Attempt::HeldBy(holder));
            }
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(me.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(duration_seconds);
        // The replace carries the resourceVersion we read: a concurrent writer makes it a
        // conflict, never a second leader.
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(status)) if status.is_conflict() && !held_by_me => {
                Ok(Attempt::HeldBy("another candidate".into()))
            }
            Err(error) => Err(error),
        }
    }
}

/// A lease is free once its holder has not renewed it for a whole lease duration.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    now.duration_since(renewed.0) > duration
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(renewed_seconds_ago: i64, duration: i32) -> (LeaseSpec, Timestamp) {
        let now = Timestamp::from_second(1_000_000).expect("time");
        let renewed = Timestamp::from_second(1_000_000 - renewed_seconds_ago).expect("time");
        (
            LeaseSpec {
                holder_identity: Some("other".into()),
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            },
            now,
        )
    }

    #[test]
    fn a_lease_expires_one_duration_after_its_last_renewal() {
        let (fresh, now) = spec(10, 15);
        assert!(!expired(&fresh, now));
        let (stale, now) = spec(16, 15);
        assert!(expired(&stale, now));
        assert!(expired(&LeaseSpec::default(), now), "never renewed");
    }

    #[test]
    fn the_leader_renews_well_before_anyone_may_take_over() {
        let settings = LeaseSettings {
            name: "l".into(),
            namespace: "n".into(),
            identity: "me".into(),
            duration: Duration::from_secs(15),
        };
        assert_eq!(settings.renew_every(), Duration::from_secs(5));
        assert_eq!(settings.renew_deadline(), Duration::from_secs(10));
    }
}
