//! Leader election through a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: whoever holds an unexpired Lease leads, renews it every [`RETRY`], and stops leading
//! (its work is dropped, hence cancelled) when it could not renew within [`RENEW_DEADLINE`].
//! Candidates take over a Lease whose record has not changed for its `leaseDurationSeconds` as
//! *they* observed it (a local monotonic clock, so clock skew between machines cannot make two
//! leaders). Every change of the Lease is a compare-and-swap on its resourceVersion, so two
//! candidates can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// How long a Lease counts after its last renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long a leader keeps leading without a successful renewal.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews and candidates retry.
pub const RETRY: Duration = Duration::from_secs(2);

/// This process's identity in a Lease: host name and a random uuid, as client-go's
/// `hostname_uuid` tells instances apart (a process id is not enough: containers all run as
/// pid 1). Drawn once per process.
pub fn identity() -> String {
    static IDENTITY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IDENTITY
        .get_or_init(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}_{}", uuid::Uuid::new_v4())
        })
        .clone()
}

/// What identifies one Lease record: its holder and renew time.
type Record = (Option<String>, Option<MicroTime>);

/// One candidate for the Lease `namespace/name`.
pub struct Candidate {
    leases: Api<Lease>,
    name: String,
    identity: String,
    /// The last Lease record seen (holder, renew time) and when it was first seen.
    observed: Option<(Record, Instant)>,
}

impl Candidate {
    /// A candidate named `identity` for the Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Candidate {
            leases: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity,
            observed: None,
        }
    }

    /// Runs `work` whenever this candidate leads, until `work` ends on its own. Losing the
    /// Lease drops the running `work`; it is started afresh on the next win.
    pub async fn lead<F, W>(&mut self, mut work: F)
    where
        F: FnMut() -> W,
        W: Future<Output = ()>,
    {
        loop {
            while !self.try_acquire_or_renew().await {
                tokio::time::sleep(RETRY).await;
            }
            tracing::info!(lease = %self.name, identity = %self.identity, "became the leader");
            let running = work();
            tokio::pin!(running);
            let mut renewed = Instant::now();
            let mut tick = tokio::time::interval_at(Instant::now() + RETRY, RETRY);
            loop {
                tokio::select! {
                    () = &mut running => return,
                    _ = tick.tick() => {
                        if self.try_acquire_or_renew().await {
                            renewed = Instant::now();
                        } else if renewed.elapsed() > RENEW_DEADLINE {
                            break;
                        }
                    }
                }
            }
            tracing::warn!(lease = %self.name, identity = %self.identity, "lost the lease; stopped leading");
        }
    }

    /// Runs `work` whenever this candidate leads (see [`Candidate::lead`]) until `stop`, then
    /// gives the Lease up, as client-go's `ReleaseOnCancel`: a successor takes over at once
    /// instead of waiting out the lease.
    pub async fn lead_until<F, W>(&mut self, work: F, stop: impl Future<Output = ()>)
    where
        F: FnMut() -> W,
        W: Future<Output = ()>,
    {
        tokio::select! {
            () = self.lead(work) => {}
            () = stop => {}
        }
        self.release().await;
    }

    /// Gives the Lease up if this candidate holds it: no holder, a one-second duration.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        lease.spec = Some(LeaseSpec {
            lease_duration_seconds: Some(1),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: spec.lease_transitions,
            ..LeaseSpec::default()
        });
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "gave the lease up")
            }
            Err(error) => tracing::debug!(lease = %self.name, %error, "giving the lease up failed"),
        }
    }

    /// One round of client-go's `tryAcquireOrRenew`: whether this candidate holds the Lease
    /// afterwards. API errors count as "not now" and are logged.
    pub async fn try_acquire_or_renew(&mut self) -> bool {
        match self.round().await {
            Ok(held) => held,
            Err(error) => {
                tracing::debug!(lease = %self.name, %error, "leader election round failed");
                false
            }
        }
    }

    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None, now)),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let seen_at = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let held_by_other = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty())
            && !ours
            && seen_at.elapsed() < duration;
        if held_by_other {
            return Ok(false);
        }
        lease.spec = Some(self.record(Some(&spec), now));
        match self
            .leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The Lease's spec with this candidate holding it, from the `current` one: a renewal when
    /// this candidate held it already, else a transition.
    fn record(&self, current: Option<&LeaseSpec>, now: MicroTime) -> LeaseSpec {
        let current = current.cloned().unwrap_or_default();
        if current.holder_identity.as_deref() == Some(self.identity.as_str()) {
            return LeaseSpec {
                renew_time: Some(now),
                ..current
            };
        }
        let had_holder = current
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(current.lease_transitions.unwrap_or(0) + i32::from(had_holder)),
            ..LeaseSpec::default()
        }
    }
}
