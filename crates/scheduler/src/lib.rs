//! skiff's scheduler: places each pending pod of `spec.schedulerName: default-scheduler` on a
//! node through the `pods/binding` subresource, and tells a pod that fits nowhere why, in
//! upstream's words and in a sentence for a person. A kube-rs client of the API like every
//! component; one instance leads at a time through the Lease `kube-system/kube-scheduler`.
//!
//! - [`quantity`], [`resources`]: what pods request and nodes offer.
//! - [`cache`]: nodes and what is assigned (or assumed) on each.
//! - [`filters`], [`scores`]: upstream's default filters and scores; [`spread`] and
//!   [`affinity`] count what topology spread and inter-pod affinity need per attempt.
//! - [`decide`]: one placement, pure.
//! - [`message`]: the Unschedulable message and the sentence.
//! - [`queue`]: active, backoff and parked pods.
//! - [`events`]: the Scheduled and FailedScheduling Events.
//! - [`run`]: the watch-driven loop.

pub mod affinity;
pub mod cache;
pub mod decide;
pub mod events;
pub mod filters;
pub mod message;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod run;
pub mod scores;
pub mod spread;

pub use run::Options;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// The Lease the schedulers elect their leader with (upstream's name).
pub const LEASE: &str = "kube-scheduler";
/// The Lease's namespace.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// Runs the scheduler whenever this instance leads, until the future is dropped.
pub async fn run(client: kube::Client, options: Options) {
    let mut candidate = skiff_client::leader::Candidate::new(
        client.clone(),
        LEASE_NAMESPACE,
        LEASE,
        options.identity.clone(),
    );
    candidate
        .lead(|| run::run(client.clone(), options.clone()))
        .await;
}
