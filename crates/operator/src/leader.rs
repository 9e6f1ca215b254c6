//! Leader election with a coordination.k8s.io Lease, so that of several operator
//! replicas only one acts. kube-rs has no leader election of its own; this is the
//! client-go algorithm reduced to what one Lease needs: take the Lease when it is free or
//! expired (an optimistic update guarded by resourceVersion), renew it well before it
//! expires, and stop acting the moment a renewal fails past the lease's duration, so that
//! two replicas never act at once.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{KubeContext, Result, is_conflict, is_not_found};

/// The Lease's name.
pub const LEASE_NAME: &str = "coffer-operator";

/// One replica's handle on the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    identity: String,
    /// How long a Lease is valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
}

impl LeaderElector {
    /// An elector for `identity` on the Lease in `namespace`.
    pub fn new(client: Client, namespace: &str, identity: &str) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(4),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<()> {
        loop {
            if self.try_acquire_or_renew().await? {
                return Ok(());
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Renews the Lease until renewing fails for longer than the lease's duration (or
    /// another replica took it); then returns, and the caller must stop acting.
    pub async fn hold(&self) -> String {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return "another replica holds the Lease".into(),
                Err(e) => {
                    // Stop before the Lease can expire, so that the next holder never
                    // overlaps with this one.
                    if last_ok.elapsed() + self.renew_every >= self.lease_duration {
                        return format!("cannot renew the Lease: {e}");
                    }
                    tracing::warn!(error = %e, "renewing the Lease failed; retrying");
                }
            }
        }
    }

    /// One attempt: true when this replica holds the Lease afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Utc::now();
        let existing = match self.api.get(LEASE_NAME).await {
            Ok(l) => Some(l),
            Err(e) if is_not_found(&e) => None,
            Err(e) => return Err(e).kube_ctx(|| format!("reading Lease {LEASE_NAME}")),
        };
        let secs = self.lease_duration.as_secs() as i32;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(crate::time::now_micro()),
                    renew_time: Some(crate::time::now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e).kube_ctx(|| format!("creating Lease {LEASE_NAME}")),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renewed = spec
            .renew_time
            .as_ref()
            .map(|t| crate::time::to_chrono(&t.0));
        let duration = spec.lease_duration_seconds.unwrap_or(secs) as i64;
        let expired = renewed.is_none_or(|r| (now - r).num_milliseconds() > duration * 1000);
        if holder != self.identity && !holder.is_empty() && !expired {
            return Ok(false);
        }
        if holder != self.identity {
            spec.acquire_time = Some(crate::time::now_micro());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.renew_time = Some(crate::time::now_micro());
        spec.lease_duration_seconds = Some(secs);
        // replace() sends the resourceVersion read above: a concurrent change makes it a
        // 409 and this replica does not hold the Lease.
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e).kube_ctx(|| format!("updating Lease {LEASE_NAME}")),
        }
    }
}
