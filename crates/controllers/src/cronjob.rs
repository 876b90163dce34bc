//! The CronJob controller (upstream's `cronjob-controller` v2): at each time the schedule names
//! (standard 5 fields with robfig's semantics — day of month OR day of week — and `@hourly`,
//! `@daily`, `@midnight`, ...; in `timeZone`, UTC by default), it creates the Job
//! `<cronjob>-<minutes since the epoch>`: the name comes from the scheduled time, so a crash and
//! a retry can never create a Job twice. `concurrencyPolicy` Allow, Forbid (skip while one runs)
//! or Replace (delete the running ones first); `startingDeadlineSeconds` (a start missed by more
//! is skipped, and only the times within it count as missed); more than 100 missed times give
//! upstream's `TooManyMissedTimes` warning; `suspend`; successful and failed history limits.
//! An invalid schedule or time zone is a Warning Event (`InvalidSchedule`, `UnknownTimeZone`)
//! and nothing runs. The clock is injected.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::tz::TimeZone;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::events::Recorder;

use crate::clock::Clock;
use crate::owned;

/// Missed start times beyond which upstream warns.
const TOO_MANY_MISSED: usize = 100;
/// The annotation a Job carries with the time it was scheduled for.
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum CronJobError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    recorder: Recorder,
    clock: Clock,
}

/// Runs the controller, reading the time from `clock`, until the task is dropped.
pub async fn run(client: Client, clock: Clock) {
    let (recorder, events) = owned::recorder(&client, "cronjob-controller");
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let context = Arc::new(Context {
        client,
        recorder,
        clock,
    });
    let work = Controller::new(cronjobs, watcher::Config::default())
        .with_config(owned::controller_config())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, context);
    owned::drive(work, events, "cronjob").await;
}

fn error_policy(cronjob: Arc<CronJob>, error: &CronJobError, _: Arc<Context>) -> Action {
    tracing::warn!(cronjob = %cronjob.name_any(), %error, "syncing a CronJob failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Parses a schedule as Kubernetes takes it: five fields or a descriptor, no seconds, no
/// `L`/`W`/`#` (which croner would take and robfig does not), no `TZ=` (the `timeZone` field
/// says it).
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    let trimmed = schedule.trim();
    let expanded = match trimmed {
        "@midnight" => "@daily",
        other => other,
    };
    if expanded.starts_with("TZ=") || expanded.starts_with("CRON_TZ=") {
        return Err("TZ is not allowed in the schedule; use spec.timeZone".into());
    }
    if !expanded.starts_with('@') {
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {expanded:?}",
                fields.len()
            ));
        }
        if fields
            .iter()
            .any(|f| f.contains('?') || f.split(',').any(is_extension))
        {
            return Err(format!("unsupported syntax in {expanded:?}"));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(expanded)
        .map_err(|e| e.to_string())
}

/// Whether a field uses croner's extensions (`L`, `5W`, `FRI#2`), not month or day names.
fn is_extension(field: &str) -> bool {
    let upper = field.to_ascii_uppercase();
    upper == "L"
        || upper.ends_with("LW")
        || upper.ends_with('L') && upper[..upper.len() - 1].chars().all(|c| c.is_ascii_digit())
        || upper.ends_with('W') && upper[..upper.len() - 1].chars().all(|c| c.is_ascii_digit())
        || upper.contains('#')
}

/// The start times in `(after, now]`, oldest first, at most `TOO_MANY_MISSED + 1` of them
/// (enough to know there were too many), and the next one after `now`.
fn times(
    cron: &Cron,
    zone: &TimeZone,
    after: Timestamp,
    now: Timestamp,
) -> (Vec<Timestamp>, Option<Timestamp>) {
    let mut due = Vec::new();
    let mut next = None;
    for time in cron.iter_after(after.to_zoned(zone.clone())) {
        let instant = time.timestamp();
        if instant > now {
            next = Some(instant);
            break;
        }
        due.push(instant);
        if due.len() > TOO_MANY_MISSED {
            // Skip ahead: only the most recent one and the next matter.
            let recent = cron
                .find_previous_occurrence(&now.to_zoned(zone.clone()), true)
                .map(|t| t.timestamp())
                .ok();
            due.extend(recent);
            next = cron
                .find_next_occurrence(&now.to_zoned(zone.clone()), false)
                .map(|t| t.timestamp())
                .ok();
            break;
        }
    }
    (due, next)
}

/// The Job's name for a start at `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: Some(job.name_any()),
        namespace: job.namespace(),
        uid: job.uid(),
        resource_version: job.resource_version(),
        ..ObjectReference::default()
    }
}

/// The Job for the start at `scheduled`.
fn new_job(cronjob: &CronJob, scheduled: Timestamp) -> Job {
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(job_name(&cronjob.name_any(), scheduled));
    metadata.namespace = cronjob.namespace();
    metadata.owner_references = Some(vec![owned::controller_reference(cronjob)]);
    metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SCHEDULED_AT.into(), scheduled.to_string());
    Job {
        metadata,
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

async fn reconcile(cronjob: Arc<CronJob>, context: Arc<Context>) -> Result<Action, CronJobError> {
    if cronjob.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = cronjob.namespace().unwrap_or_default();
    let uid = cronjob.uid().unwrap_or_default();
    let spec = cronjob.spec.clone().unwrap_or_default();
    let now = context.clock.now();
    let note = |type_, reason, message: String| {
        owned::note(&context.recorder, cronjob.as_ref(), type_, reason, message);
    };
    let jobs_api: Api<Job> = Api::namespaced(context.client.clone(), &namespace);
    let mut jobs: Vec<Job> = jobs_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let mut status = cronjob.status.clone().unwrap_or_default();
    // Jobs the last pass saw running that have finished since.
    let was_active: Vec<String> = status
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.uid.clone())
        .collect();
    for job in &jobs {
        if let Some(kind) = finished(job)
            && job.uid().is_some_and(|u| was_active.contains(&u))
        {
            note(
                "Normal",
                "SawCompletedJob",
                format!("Saw completed job: {}, status: {kind}", job.name_any()),
            );
        }
    }
    // Active: the owned Jobs that have not finished.
    let active: Vec<&Job> = jobs
        .iter()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    status.active = (!active.is_empty()).then(|| active.iter().map(|j| reference(j)).collect());
    if let Some(last) = jobs
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0)
    {
        status.last_successful_time = Some(last);
    }
    clean_up(&jobs_api, &jobs, &spec, &note).await;

    let cron = match parse_schedule(&spec.schedule) {
        Ok(cron) => cron,
        Err(error) => {
            note(
                "Warning",
                "InvalidSchedule",
                format!("invalid schedule: {} : {error}", spec.schedule),
            );
            write_status(&context.client, &cronjob, &status).await?;
            return Ok(Action::await_change());
        }
    };
    let zone = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(name) => match TimeZone::get(name) {
            Ok(zone) => zone,
            Err(_) => {
                note(
                    "Warning",
                    "UnknownTimeZone",
                    format!("invalid timeZone: {name:?}"),
                );
                write_status(&context.client, &cronjob, &status).await?;
                return Ok(Action::await_change());
            }
        },
    };
    let created = cronjob
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(now, |t| t.0);
    let mut earliest = status.last_schedule_time.as_ref().map_or(created, |t| t.0);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let bound = Timestamp::from_second(now.as_second() - deadline).unwrap_or(now);
        earliest = earliest.max(bound);
    }
    let (due, next) = times(&cron, &zone, earliest, now);
    let requeue = next.map_or(Action::await_change(), |at| {
        let wait = (at.as_second() - now.as_second()).max(1);
        Action::requeue(Duration::from_secs(u64::try_from(wait).unwrap_or(60)))
    });
    if spec.suspend == Some(true) {
        write_status(&context.client, &cronjob, &status).await?;
        return Ok(Action::await_change());
    }
    let Some(&scheduled) = due.last() else {
        write_status(&context.client, &cronjob, &status).await?;
        return Ok(requeue);
    };
    if due.len() > TOO_MANY_MISSED {
        note(
            "Warning",
            "TooManyMissedTimes",
            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
        );
    }
    let name = job_name(&cronjob.name_any(), scheduled);
    let already = jobs.iter().any(|j| j.name_any() == name);
    match spec.concurrency_policy.as_deref() {
        _ if already => {}
        Some("Forbid") if !active.is_empty() => {
            note("Normal", "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into());
            write_status(&context.client, &cronjob, &status).await?;
            return Ok(requeue);
        }
        Some("Replace") => {
            for job in &active {
                let params = DeleteParams::background();
                match jobs_api.delete(&job.name_any(), &params).await {
                    Ok(_) => note(
                        "Normal",
                        "SuccessfulDelete",
                        format!("Deleted job {}", job.name_any()),
                    ),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            status.active = None;
        }
        _ => {}
    }
    if !already {
        match jobs_api
            .create(&PostParams::default(), &new_job(&cronjob, scheduled))
            .await
        {
            Ok(job) => {
                note(
                    "Normal",
                    "SuccessfulCreate",
                    format!("Created job {}", job.name_any()),
                );
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(reference(&job));
            }
            // Made by an earlier pass that crashed before writing its status.
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(error) => {
                note(
                    "Warning",
                    "FailedCreate",
                    format!("Error creating job: {}", owned::refusal(&error)),
                );
                return Err(error.into());
            }
        }
    }
    status.last_schedule_time = Some(Time(scheduled));
    write_status(&context.client, &cronjob, &status).await?;
    Ok(requeue)
}

/// Deletes the oldest finished Jobs beyond the history limits (3 successful, 1 failed).
async fn clean_up(
    api: &Api<Job>,
    jobs: &[Job],
    spec: &k8s_openapi::api::batch::v1::CronJobSpec,
    note: &impl Fn(&'static str, &'static str, String),
) {
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs.iter().filter(|j| finished(j) == Some(kind)).collect();
        let surplus = done
            .len()
            .saturating_sub(usize::try_from(limit).unwrap_or(0));
        for job in done.into_iter().take(surplus) {
            match api
                .delete(&job.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => note(
                    "Normal",
                    "SuccessfulDelete",
                    format!("Deleted job {}", job.name_any()),
                ),
                Err(error) => {
                    tracing::debug!(job = %job.name_any(), %error, "removing an old Job failed")
                }
            }
        }
    }
}

async fn write_status(
    client: &Client,
    cronjob: &CronJob,
    status: &k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), kube::Error> {
    if cronjob.status.as_ref() == Some(status) {
        return Ok(());
    }
    let api: Api<CronJob> =
        Api::namespaced(client.clone(), &cronjob.namespace().unwrap_or_default());
    // Absent lists are written as empty ones: a merge patch leaves absent fields as they were.
    let mut value = json!({"status": status});
    if status.active.is_none() {
        value["status"]["active"] = json!(null);
    }
    owned::patch_status(&api, &cronjob.name_any(), &value).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn schedules_should_parse_as_kubernetes_takes_them() {
        for good in [
            "*/5 * * * *",
            "0 9 * * MON-FRI",
            "@hourly",
            "@daily",
            "@midnight",
            "30 2 1 JAN *",
        ] {
            assert!(parse_schedule(good).is_ok(), "{good}");
        }
        for bad in [
            "* * * * * *",
            "0 0 L * *",
            "0 0 ? * MON#2",
            "TZ=UTC 0 0 * * *",
            "nonsense",
            "61 * * * *",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn day_of_month_and_day_of_week_should_be_either_as_robfig_reads_them() {
        // The 13th of the month, or any Friday.
        let cron = parse_schedule("0 0 13 * FRI").unwrap();
        let (due, _) = times(
            &cron,
            &TimeZone::UTC,
            at("2026-11-01T00:00:00Z"),
            at("2026-11-14T00:00:00Z"),
        );
        let days: Vec<String> = due.iter().map(|t| t.to_string()).collect();
        assert_eq!(days, ["2026-11-06T00:00:00Z", "2026-11-13T00:00:00Z"]);
    }

    #[test]
    fn missed_times_should_be_bounded_and_the_next_one_known() {
        let cron = parse_schedule("* * * * *").unwrap();
        let (due, next) = times(
            &cron,
            &TimeZone::UTC,
            at("2026-01-01T00:00:00Z"),
            at("2026-01-02T00:00:30Z"),
        );
        assert!(due.len() > TOO_MANY_MISSED);
        assert_eq!(
            due.last().map(ToString::to_string).as_deref(),
            Some("2026-01-02T00:00:00Z")
        );
        assert_eq!(
            next.map(|t| t.to_string()).as_deref(),
            Some("2026-01-02T00:01:00Z")
        );
        assert_eq!(
            job_name("backup", at("2026-01-02T00:00:00Z")),
            "backup-29455200"
        );
    }

    #[test]
    fn a_time_zone_should_move_the_start() {
        let cron = parse_schedule("0 9 * * *").unwrap();
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let (due, _) = times(
            &cron,
            &zone,
            at("2026-06-01T00:00:00Z"),
            at("2026-06-01T12:00:00Z"),
        );
        assert_eq!(
            due.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["2026-06-01T07:00:00Z"]
        );
    }
}
