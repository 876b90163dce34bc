//! Pods the agent itself ends, as kubelet does: a pod active on the node longer than its
//! `activeDeadlineSeconds` (`DeadlineExceeded`, kubelet's active-deadline handler), and a pod
//! whose emptyDir volume on disk holds more than its `sizeLimit` (`Evicted`, kubelet's eviction
//! manager). Such a pod's containers are stopped, it never runs again, and its status says
//! Failed with the reason and upstream's message. The API's word is kept: a pod the API already
//! holds as Failed for one of these reasons (an agent before a restart ended it) stays ended.

use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::volumes;

/// The reason of a pod past its active deadline.
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// The reason of an evicted pod.
pub const EVICTED: &str = "Evicted";
/// Upstream's message for a pod past its deadline.
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why the agent ended a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    /// Upstream's reason.
    pub reason: &'static str,
    /// What a person reads (upstream's message).
    pub message: String,
}

impl Ending {
    /// The type of its Event: kubelet's active-deadline handler reports a Normal one, its
    /// eviction manager a Warning.
    pub fn event_type(&self) -> &'static str {
        if self.reason == EVICTED {
            "Warning"
        } else {
            "Normal"
        }
    }
}

/// When the pod's active deadline runs out: its start time plus `activeDeadlineSeconds`.
pub fn deadline(pod: &Pod) -> Option<jiff::Timestamp> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let started = pod.status.as_ref()?.start_time.as_ref()?.0;
    started
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .ok()
}

/// The ending of a pod whose active deadline ran out by `now`.
pub fn past_deadline(pod: &Pod, now: jiff::Timestamp) -> Option<Ending> {
    (deadline(pod)? <= now).then(|| Ending {
        reason: DEADLINE_EXCEEDED,
        message: DEADLINE_MESSAGE.into(),
    })
}

/// Whether the pod has an emptyDir volume on disk with a size limit (worth measuring).
pub fn has_limited_empty_dir(pod: &Pod) -> bool {
    limited_empty_dirs(pod).next().is_some()
}

/// The pod's emptyDir volumes on disk with a size limit: (name, the limit as written, bytes).
fn limited_empty_dirs(pod: &Pod) -> impl Iterator<Item = (&str, &str, u64)> {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let empty = volume.empty_dir.as_ref()?;
            // A memory-backed one is a tmpfs of that size: it cannot grow past it.
            if empty.medium.as_deref() == Some("Memory") {
                return None;
            }
            let limit = &empty.size_limit.as_ref()?.0;
            let bytes = skiff_apimachinery::quantity::milli(limit).ok()? / 1000;
            Some((
                volume.name.as_str(),
                limit.as_str(),
                u64::try_from(bytes).ok()?,
            ))
        })
}

/// The eviction of the pod `uid` (its files under `pods`) if one of its emptyDir volumes holds
/// more than its limit.
pub fn empty_dir_over_limit(pod: &Pod, pods: &Path, uid: &str) -> Option<Ending> {
    limited_empty_dirs(pod).find_map(|(name, limit, bytes)| {
        (usage(&volumes::empty_dir(pods, uid, name)) > bytes).then(|| Ending {
            reason: EVICTED,
            message: format!("Usage of EmptyDir volume \"{name}\" exceeds the limit \"{limit}\". "),
        })
    })
}

/// The ending the API already holds for the pod (an earlier agent ended it).
pub fn recorded(pod: &Pod) -> Option<Ending> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Failed") {
        return None;
    }
    let reason = match status.reason.as_deref()? {
        DEADLINE_EXCEEDED => DEADLINE_EXCEEDED,
        EVICTED => EVICTED,
        _ => return None,
    };
    Some(Ending {
        reason,
        message: status.message.clone().unwrap_or_default(),
    })
}

/// The disk space the files below `dir` take, as `du` counts it (allocated blocks, links not
/// followed, other file systems included as kubelet's `du` does).
fn usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir()
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            total += usage(&entry.path());
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: serde_json::Value, status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec, "status": status}))
            .unwrap()
    }

    #[test]
    fn a_pod_should_be_past_its_deadline_only_after_start_plus_the_seconds() {
        let pod = pod(
            json!({"activeDeadlineSeconds": 30, "containers": []}),
            json!({"startTime": "2026-12-05T10:00:00Z"}),
        );
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(past_deadline(&pod, at("2026-12-05T10:00:29Z")), None);
        let ending = past_deadline(&pod, at("2026-12-05T10:00:30Z")).unwrap();
        assert_eq!(ending.reason, "DeadlineExceeded");
        assert_eq!(
            ending.message,
            "Pod was active on the node longer than the specified deadline"
        );
    }

    #[test]
    fn an_empty_dir_over_its_limit_should_evict_and_a_memory_one_should_not_be_measured() {
        let pods = tempfile::tempdir().unwrap();
        let pod = pod(
            json!({"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {"sizeLimit": "64Ki"}},
                {"name": "ram", "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}}]}),
            json!({}),
        );
        assert!(has_limited_empty_dir(&pod));
        let dir = volumes::empty_dir(pods.path(), "u1", "scratch");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("small"), vec![1u8; 16 * 1024]).unwrap();
        assert_eq!(empty_dir_over_limit(&pod, pods.path(), "u1"), None);
        std::fs::write(dir.join("big"), vec![1u8; 64 * 1024]).unwrap();
        let ending = empty_dir_over_limit(&pod, pods.path(), "u1").unwrap();
        assert_eq!(ending.reason, "Evicted");
        assert_eq!(
            ending.message,
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"64Ki\". "
        );
    }

    #[test]
    fn an_ending_the_api_holds_should_be_kept() {
        let evicted = pod(
            json!({"containers": []}),
            json!({"phase": "Failed", "reason": "Evicted", "message": "m"}),
        );
        assert_eq!(recorded(&evicted).map(|e| e.reason), Some("Evicted"));
        let other = pod(
            json!({"containers": []}),
            json!({"phase": "Failed", "reason": "NodePorts"}),
        );
        assert_eq!(recorded(&other), None);
    }
}
