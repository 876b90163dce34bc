//! The Job controller (upstream's `job-controller`): runs a Job's pods until `completions`
//! succeed (or, without `completions`, until one succeeds and the rest end), at most
//! `parallelism` at once; `Indexed` Jobs give each pod its index (`JOB_COMPLETION_INDEX`, the
//! `batch.kubernetes.io/job-completion-index` annotation, hostname `<job>-<index>`) and run
//! every index once. Failed pods are replaced after kubelet-style back-off (10 s doubling, at
//! most 6 min) until `backoffLimit` failures; `activeDeadlineSeconds` and `suspend` stop the
//! running pods. Every pod carries the `batch.kubernetes.io/job-tracking` finalizer, and a
//! finished pod is counted exactly once however often the controller restarts, as upstream
//! does: its uid goes to `status.uncountedTerminatedPods`, then its finalizer goes, then the
//! count moves into `succeeded` or `failed`. A pod deleted before it finished counts as failed.
//! A `podFailurePolicy` judges each failed pod as it is counted ([`crate::failure_policy`]).
//! A finished Job with `ttlSecondsAfterFinished` is deleted once that time is up.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::failure_policy::{self, Verdict};
use crate::owned;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::events::Recorder;

/// The finalizer that keeps a Job's pod until it is counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The label naming a pod's Job by uid.
const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// The annotation (and label) holding an Indexed Job pod's index.
const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Re-creation back-off after failures: 10 s, doubling, at most 6 minutes.
const BACKOFF_BASE: i64 = 10;
const BACKOFF_MAX: i64 = 360;

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(
    client: Client,
    pods: impl futures::Stream<Item = std::sync::Arc<crate::shared_pods::PodSummary>> + Send + 'static,
) {
    let (recorder, events) = owned::recorder(&client, "job-controller");
    let jobs: Api<Job> = Api::all(client.clone());
    let context = Arc::new(Context { client, recorder });
    let work = Controller::new(jobs, watcher::Config::default())
        .with_config(owned::controller_config())
        .owns_shared_stream(pods)
        .run(reconcile, owned::retry, context);
    owned::drive(work, events, "job").await;
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations().get(INDEX)?.parse().ok()
}

fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// Index ranges as upstream writes `completedIndexes` (`1,3-5,7`).
fn ranges(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// Reads `completedIndexes` back.
fn parse_ranges(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(n) = part.parse() {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// The back-off before a new pod after `failures` failures.
fn backoff(failures: i32) -> SignedDuration {
    let exponent = u32::try_from(failures.saturating_sub(1).clamp(0, 10)).unwrap_or(0);
    SignedDuration::from_secs((BACKOFF_BASE << exponent).min(BACKOFF_MAX))
}

impl Context {
    fn note(&self, job: &Job, type_: &'static str, reason: &'static str, message: String) {
        owned::note(&self.recorder, job, type_, reason, message);
    }
}

/// A pod of the Job from its template (with `index` for an Indexed Job).
fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    let name = job.name_any();
    let uid = job.uid().unwrap_or_default();
    metadata.name = None;
    metadata.generate_name = Some(match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    });
    metadata.namespace = job.namespace();
    metadata.owner_references = Some(vec![owned::controller_reference(job)]);
    metadata.finalizers = Some(vec![TRACKING_FINALIZER.into()]);
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.insert(CONTROLLER_UID.into(), uid.clone());
    labels.insert("batch.kubernetes.io/job-name".into(), name.clone());
    labels.insert("controller-uid".into(), uid);
    labels.insert("job-name".into(), name.clone());
    let mut spec = template.spec.unwrap_or_default();
    if let Some(index) = index {
        labels.insert(INDEX.into(), index.to_string());
        metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(INDEX.into(), index.to_string());
        spec.hostname
            .get_or_insert_with(|| format!("{name}-{index}"));
        for container in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            container.env.get_or_insert_with(Vec::new).push(EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: Some(index.to_string()),
                value_from: None,
            });
        }
    }
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

fn condition(type_: &str, reason: &str, message: &str, now: Timestamp) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// When a finished Job is to be deleted (`ttlSecondsAfterFinished` after its end), if ever.
fn expiry(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let status = job.status.as_ref()?;
    let ended = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = ended
        .last_transition_time
        .as_ref()
        .or(status.completion_time.as_ref())?
        .0;
    Timestamp::from_second(at.as_second().saturating_add(i64::from(ttl))).ok()
}

async fn reconcile(job: Arc<Job>, context: Arc<Context>) -> Result<Action, JobError> {
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}")))
        .await?
        .items
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let now = Timestamp::now();
    let mut status = job.status.clone().unwrap_or_default();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut completed: BTreeSet<i32> =
        parse_ranges(status.completed_indexes.as_deref().unwrap_or_default());
    let tracked = |p: &&Pod| p.finalizers().iter().any(|f| f == TRACKING_FINALIZER);

    // 1. Finished pods still holding the finalizer: noted as uncounted, then released, then
    //    counted.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut newly = false;
    for pod in pods.iter().filter(tracked) {
        let finished = matches!(phase(pod), "Succeeded" | "Failed")
            || pod.metadata.deletion_timestamp.is_some();
        let pod_uid = pod.uid().unwrap_or_default();
        if !finished {
            continue;
        }
        let list = if phase(pod) == "Succeeded" {
            uncounted.succeeded.get_or_insert_with(Vec::new)
        } else {
            uncounted.failed.get_or_insert_with(Vec::new)
        };
        if !list.contains(&pod_uid) {
            list.push(pod_uid);
            newly = true;
        }
    }
    if newly {
        status.uncounted_terminated_pods = Some(uncounted.clone());
        write_status(&jobs, &job, &status).await?;
    }
    let listed: BTreeSet<String> = uncounted
        .succeeded
        .iter()
        .flatten()
        .chain(uncounted.failed.iter().flatten())
        .cloned()
        .collect();
    for pod in pods.iter().filter(tracked) {
        if listed.contains(&pod.uid().unwrap_or_default()) {
            let kept: Vec<&String> = pod
                .finalizers()
                .iter()
                .filter(|f| *f != TRACKING_FINALIZER)
                .collect();
            let patch = json!({"metadata": {"resourceVersion": pod.resource_version(), "finalizers": kept}});
            match pods_api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    let by_uid = |u: &String| pods.iter().find(|p| p.uid().as_ref() == Some(u));
    let succeeded_uids = uncounted.succeeded.take().unwrap_or_default();
    let failed_uids = uncounted.failed.take().unwrap_or_default();
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    if indexed {
        for u in &succeeded_uids {
            if let Some(index) = by_uid(u).and_then(index_of) {
                completed.insert(index);
            }
        }
        status.succeeded = Some(count(completed.len()));
        status.completed_indexes = (!completed.is_empty()).then(|| ranges(&completed));
    } else {
        status.succeeded = Some(status.succeeded.unwrap_or(0) + count(succeeded_uids.len()));
    }
    // The pod failure policy judges each newly failed pod once, as it is counted.
    let mut ignored = 0;
    let mut policy_failure: Option<String> = None;
    if let Some(policy) = spec.pod_failure_policy.as_ref() {
        for pod in failed_uids.iter().filter_map(by_uid) {
            match failure_policy::judge(policy, pod) {
                Verdict::Ignore => ignored += 1,
                Verdict::FailJob(message) => {
                    policy_failure.get_or_insert(message);
                }
                Verdict::Count => {}
            }
        }
    }
    status.failed = Some(status.failed.unwrap_or(0) + count(failed_uids.len() - ignored));
    // Empty lists, not absent ones: a merge patch leaves absent fields as they were.
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(Vec::new()),
        failed: Some(Vec::new()),
    });

    // 2. What runs, and what is decided.
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let succeeded = status.succeeded.unwrap_or(0);
    let failed = status.failed.unwrap_or(0);
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let start = status.start_time.as_ref().map(|t| t.0);
    let suspended = spec.suspend == Some(true);
    if start.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }
    let finished_already = has_condition(&job, "Complete") || has_condition(&job, "Failed");
    // TTL after finished (upstream's ttl-after-finished controller): once every pod has been
    // counted and released, the Job (and, through the garbage collector, its pods) goes when
    // its time is up.
    let all_released = pods
        .iter()
        .filter(tracked)
        .all(|p| listed.contains(&p.uid().unwrap_or_default()));
    let mut ttl_wait = None;
    if finished_already
        && all_released
        && let Some(at) = expiry(&job)
    {
        if at <= now {
            owned::delete_read(&jobs, job.as_ref()).await?;
            tracing::info!(job = %job.name_any(), "finished Job deleted after its TTL");
            return Ok(Action::await_change());
        }
        let wait = u64::try_from(at.as_second() - now.as_second())
            .unwrap_or(1)
            .max(1);
        ttl_wait = Some(Duration::from_secs(wait));
    }
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let mut stop_all = false;
    let mut outcome: Option<(&str, &str, &str)> = None;
    if !finished_already {
        let deadline_passed = spec.active_deadline_seconds.is_some_and(|seconds| {
            start.is_some_and(|s| s.as_second().saturating_add(seconds) <= now.as_second())
        });
        let done = match completions {
            Some(wanted) => succeeded >= wanted,
            None => succeeded > 0 && active.is_empty(),
        };
        if done {
            outcome = Some((
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        } else if let Some(message) = policy_failure.as_deref() {
            outcome = Some(("Failed", "PodFailurePolicy", message));
        } else if failed > backoff_limit {
            outcome = Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        } else if deadline_passed {
            outcome = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }
    }
    if let Some((type_, reason, message)) = outcome {
        if type_ == "Complete" {
            conditions.push(condition("SuccessCriteriaMet", reason, message, now));
        } else {
            conditions.push(condition("FailureTarget", reason, message, now));
        }
        conditions.push(condition(type_, reason, message, now));
        status.completion_time = (type_ == "Complete").then_some(Time(now));
        let event_type = if type_ == "Complete" {
            "Normal"
        } else {
            "Warning"
        };
        let event_reason = match reason {
            "BackoffLimitExceeded" => "BackoffLimitExceeded",
            "DeadlineExceeded" => "DeadlineExceeded",
            "PodFailurePolicy" => "PodFailurePolicy",
            _ => "Completed",
        };
        context.note(
            &job,
            event_type,
            event_reason,
            if type_ == "Complete" {
                "Job completed".into()
            } else {
                message.into()
            },
        );
        stop_all = true;
    }
    if finished_already || suspended {
        stop_all = true;
    }
    if suspended && !has_condition(&job, "Suspended") {
        conditions.push(condition("Suspended", "JobSuspended", "Job suspended", now));
    }
    if !suspended {
        conditions.retain(|c| c.type_ != "Suspended");
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);

    // 3. Act: stop everything, or start what is missing.
    let mut requeue = None;
    let mut active_count = active.len();
    if stop_all {
        for pod in &active {
            delete(&pods_api, pod).await;
            context.note(
                &job,
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {}", pod.name_any()),
            );
        }
        active_count = 0;
    } else {
        let wanted_active = match completions {
            Some(wanted) => {
                usize::try_from(parallelism.min((wanted - succeeded).max(0))).unwrap_or(0)
            }
            // Work-queue Jobs: once one pod succeeded, no new ones.
            None if succeeded > 0 => 0,
            None => usize::try_from(parallelism).unwrap_or(0),
        };
        let missing = wanted_active.saturating_sub(active.len());
        let last_failure = pods
            .iter()
            .filter(|p| phase(p) == "Failed")
            .filter_map(|p| {
                p.status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .iter()
                    .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
                    .map(|t| t.0)
                    .max()
            })
            .max();
        let ready_at = last_failure.map(|t| t.checked_add(backoff(failed)).unwrap_or(t));
        if missing > 0 && failed > 0 && ready_at.is_some_and(|at| at > now) {
            let wait = ready_at.map_or(0, |at| (at.as_second() - now.as_second()).max(1));
            requeue = Some(Duration::from_secs(u64::try_from(wait).unwrap_or(1)));
        } else if missing > 0 {
            let indexes: Vec<Option<i32>> = if indexed {
                let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                (0..completions.unwrap_or(1))
                    .filter(|i| !completed.contains(i) && !running.contains(i))
                    .take(missing)
                    .map(Some)
                    .collect()
            } else {
                vec![None; missing]
            };
            for index in indexes {
                match pods_api
                    .create(&PostParams::default(), &new_pod(&job, index))
                    .await
                {
                    Ok(pod) => {
                        active_count += 1;
                        context.note(
                            &job,
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {}", pod.name_any()),
                        );
                    }
                    Err(error) => {
                        let message = owned::refusal(&error);
                        context.note(
                            &job,
                            "Warning",
                            "FailedCreate",
                            format!("Error creating: {message}"),
                        );
                        break;
                    }
                }
            }
        }
    }
    status.active = Some(i32::try_from(active_count).unwrap_or(i32::MAX));
    status.ready = Some(count(
        active
            .iter()
            .filter(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count(),
    ));
    write_status(&jobs, &job, &status).await?;
    // The deadline passes without an event.
    let deadline = spec
        .active_deadline_seconds
        .zip(status.start_time.as_ref().map(|t| t.0))
        .filter(|_| !stop_all)
        .map(|(seconds, s)| (s.as_second() + seconds - now.as_second()).max(1));
    let deadline = deadline.map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1)));
    let requeue = match (requeue, ttl_wait) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(match (requeue, deadline) {
        (Some(a), Some(b)) => Action::requeue(a.min(b)),
        (Some(a), None) | (None, Some(a)) => Action::requeue(a),
        (None, None) => Action::await_change(),
    })
}

async fn delete(pods: &Api<Pod>, pod: &Pod) {
    if let Err(error) = owned::delete_read(pods, pod).await {
        tracing::debug!(pod = %pod.name_any(), %error, "deleting a Job's pod failed");
    }
}

/// Writes `status` unless the Job already says it.
async fn write_status(jobs: &Api<Job>, job: &Job, status: &JobStatus) -> Result<(), kube::Error> {
    if job.status.as_ref() == Some(status) {
        return Ok(());
    }
    owned::patch_status(jobs, &job.name_any(), &json!({"status": status})).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_should_read_and_write_as_upstreams_ranges() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(ranges(&set), "0-2,4,6-7");
        assert_eq!(parse_ranges("0-2,4,6-7"), set);
        assert!(parse_ranges("").is_empty());
    }

    #[test]
    fn back_off_should_double_from_ten_seconds_to_six_minutes() {
        assert_eq!(backoff(1), SignedDuration::from_secs(10));
        assert_eq!(backoff(2), SignedDuration::from_secs(20));
        assert_eq!(backoff(4), SignedDuration::from_secs(80));
        assert_eq!(backoff(10), SignedDuration::from_secs(360));
    }
}
