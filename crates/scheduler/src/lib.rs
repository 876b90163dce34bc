//! skiff's scheduler: places each pending pod of `spec.schedulerName: default-scheduler` on a
//! node through the `pods/binding` subresource, and tells a pod that fits nowhere why, in
//! upstream's words and in a sentence for a person. A kube-rs client of the API like every
//! component; one instance leads at a time through the Lease `kube-system/kube-scheduler`.
//!
//! - [`resources`]: what pods request and nodes offer (quantities read by
//!   `skiff_apimachinery::quantity`).
//! - [`cache`]: nodes and what is assigned (or assumed) on each.
//! - [`filters`], [`scores`]: upstream's default filters and scores; [`spread`] and
//!   [`affinity`] count what topology spread and inter-pod affinity need per attempt;
//!   [`volumes`] holds the claims and the node affinity of the volumes they are bound to.
//! - [`decide`]: one placement, pure.
//! - [`preempt`]: which lower-priority pods to evict when a pod fits nowhere, pure;
//!   [`nominations`]: the pods that did, counted on the node they wait for.
//! - [`message`]: the Unschedulable message and the sentence.
//! - [`queue`]: active, backoff and parked pods.
//! - [`run`]: the watch-driven loop.

pub mod affinity;
pub mod cache;
pub mod decide;
pub mod filters;
pub mod message;
pub mod nominations;
pub mod preempt;
pub mod queue;
pub mod resources;
pub mod run;
pub mod scores;
pub mod spread;
pub mod volumes;

pub use run::Options;

/// The component its Events come from.
pub const COMPONENT: &str = "default-scheduler";

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
/// The Lease the schedulers elect their leader with (upstream's name).
pub const LEASE: &str = "kube-scheduler";
/// The Lease's namespace.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A pod's priority (`spec.priority`, set by the API server's Priority admission; 0 without).
pub fn priority_of(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Runs the scheduler whenever this instance leads, until the future is dropped.
pub async fn run(client: kube::Client, options: Options) {
    run_until(client, options, std::future::pending()).await;
}

/// Runs the scheduler whenever this instance leads, until `stop`; then gives the leader Lease
/// up so that another scheduler takes over at once.
pub async fn run_until(client: kube::Client, options: Options, stop: impl Future<Output = ()>) {
    let mut candidate = skiff_client::leader::Candidate::new(
        client.clone(),
        LEASE_NAMESPACE,
        LEASE,
        options.identity.clone(),
    );
    candidate
        .lead_until(|| run::run(client.clone(), options.clone()), stop)
        .await;
}
