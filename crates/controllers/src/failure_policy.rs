//! A Job's `podFailurePolicy` (upstream's `matchPodFailurePolicy`): the first rule that matches
//! a failed pod decides what its failure means — `FailJob` fails the Job at once, `Ignore` does
//! not count it against `backoffLimit`, `Count` (and `FailIndex`, which needs per-index back-off
//! limits skiff does not have yet) counts it as usual. A rule matches by a container's non-zero
//! exit code (`onExitCodes`, optionally of one container) or by the pod's conditions
//! (`onPodConditions`, e.g. `DisruptionTarget` for a pod evicted or preempted).

use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// What a failed pod's failure means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The Job fails, with this message.
    FailJob(String),
    /// The failure is not counted.
    Ignore,
    /// The failure counts against `backoffLimit`.
    Count,
}

/// The verdict of `policy` on the failed `pod`.
pub(crate) fn judge(policy: &PodFailurePolicy, pod: &Pod) -> Verdict {
    for (index, rule) in policy.rules.iter().enumerate() {
        let Some(reason) = matching(rule, pod) else {
            continue;
        };
        return match rule.action.as_str() {
            "FailJob" => {
                Verdict::FailJob(format!("{reason} matching FailJob rule at index {index}"))
            }
            "Ignore" => Verdict::Ignore,
            _ => Verdict::Count,
        };
    }
    Verdict::Count
}

/// Why `rule` matches `pod`, in upstream's words, if it does.
fn matching(rule: &PodFailurePolicyRule, pod: &Pod) -> Option<String> {
    let pod_name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let status = pod.status.as_ref()?;
    if let Some(codes) = rule.on_exit_codes.as_ref() {
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            if codes
                .container_name
                .as_deref()
                .is_some_and(|n| n != container.name)
            {
                continue;
            }
            let Some(code) = container
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code)
            else {
                continue;
            };
            let listed = codes.values.contains(&code);
            let matches = match codes.operator.as_str() {
                "In" => listed,
                "NotIn" => !listed,
                _ => false,
            };
            if code != 0 && matches {
                return Some(format!(
                    "Container {} for pod {pod_name} failed with exit code {code}",
                    container.name
                ));
            }
        }
        return None;
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    rule.on_pod_conditions
        .iter()
        .flatten()
        .find(|wanted| {
            conditions
                .iter()
                .any(|c| c.type_ == wanted.type_ && c.status == wanted.status)
        })
        .map(|wanted| {
            format!("Pod {pod_name} has condition {} ", wanted.type_)
                .trim_end()
                .to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rules: serde_json::Value) -> PodFailurePolicy {
        serde_json::from_value(json!({ "rules": rules })).unwrap()
    }

    fn failed(code: i32, conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n"},
            "status": {"phase": "Failed", "conditions": conditions, "containerStatuses": [
                {"name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_first_matching_rule_should_decide_in_upstreams_words() {
        let policy = policy(json!([
            {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1]}},
        ]));
        assert_eq!(
            judge(&policy, &failed(42, json!([]))),
            Verdict::FailJob(
                "Container main for pod n/p failed with exit code 42 matching FailJob rule at index 0"
                    .into()
            )
        );
        assert_eq!(
            judge(
                &policy,
                &failed(1, json!([{"type": "DisruptionTarget", "status": "True"}]))
            ),
            Verdict::Ignore
        );
        assert_eq!(judge(&policy, &failed(3, json!([]))), Verdict::Count);
        assert_eq!(
            judge(&policy, &failed(1, json!([]))),
            Verdict::Count,
            "no rule matches"
        );
    }
}
