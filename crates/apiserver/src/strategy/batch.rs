//! The batch group's strategies: Jobs and CronJobs.

use serde_json::{Value, json};

use super::defaulting::{object_at, pod_spec, set_default, template};
use super::{GENERIC, Strategy};

/// The strategy of jobs.
pub(super) const JOB: Strategy = Strategy {
    defaults: job_defaults,
    orphans_by_default: true,
    ..GENERIC
};

/// A Job's parallelism, completions, back-off limit, completion mode and suspension.
fn job_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "parallelism", json!(1));
        if spec.get("completions").is_none() && spec.get("parallelism") == Some(&json!(1)) {
            spec.insert("completions".into(), json!(1));
        }
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
    }
    template(object);
}

/// The strategy of cron jobs.
pub(super) const CRON_JOB: Strategy = Strategy {
    defaults: cron_job_defaults,
    ..GENERIC
};

/// A CronJob's concurrency policy, suspension, history limits and job template.
fn cron_job_defaults(object: &mut Value) {
    if let Some(spec) = object_at(object, "spec") {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    }
    if let Some(spec) = object
        .pointer_mut("/spec/jobTemplate/spec/template")
        .and_then(|t| object_at(t, "spec"))
    {
        pod_spec(spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_should_get_one_completion_only_when_parallelism_is_one() {
        let mut single = json!({"spec": {}});
        (JOB.defaults)(&mut single);
        assert_eq!(single["spec"]["completions"], 1);
        assert_eq!(single["spec"]["backoffLimit"], 6);
        let mut parallel = json!({"spec": {"parallelism": 3}});
        (JOB.defaults)(&mut parallel);
        assert!(parallel["spec"].get("completions").is_none());
        let mut cron = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        (CRON_JOB.defaults)(&mut cron);
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(
            cron.pointer("/spec/jobTemplate/spec/template/spec/dnsPolicy"),
            Some(&json!("ClusterFirst"))
        );
    }
}
