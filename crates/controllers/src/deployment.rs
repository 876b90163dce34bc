//! The Deployment controller (upstream's `deployment-controller`): a Deployment owns one
//! ReplicaSet per pod template it has had, named `<deployment>-<pod-template-hash>`, where the
//! hash is taken from the template, so the same template always maps to the same ReplicaSet
//! (and a rollback to an earlier template finds its ReplicaSet again). Each pass reads the
//! Deployment's ReplicaSets live, then: creates the new ReplicaSet if the template has none;
//! scales by the strategy — `Recreate` (old ones to zero, then the new one up once no old pod
//! runs) or `RollingUpdate` (the new one up while the total stays within `replicas + maxSurge`,
//! old ones down while at least `replicas - maxUnavailable` pods stay available, as upstream's
//! `reconcileNewReplicaSet` / `reconcileOldReplicaSets` count them); keeps revision annotations
//! and at most `revisionHistoryLimit` old ReplicaSets; and writes the status once, with the
//! `Available` and `Progressing` conditions (`NewReplicaSetAvailable`,
//! `ProgressDeadlineExceeded`) in upstream's words. A paused Deployment is left as it is, its
//! status aside. Rollback and restart are client-side in kubectl (they change the template).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::owned;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_client::events::Recorder;

/// The label and the ReplicaSet name suffix a template's hash goes in.
pub const HASH_LABEL: &str = "pod-template-hash";
/// The annotation holding a ReplicaSet's (and its Deployment's) revision.
const REVISION: &str = "deployment.kubernetes.io/revision";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

struct Context {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller until the task is dropped.
pub async fn run(client: Client) {
    let (recorder, events) = owned::recorder(&client, "deployment-controller");
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let context = Arc::new(Context { client, recorder });
    let work = Controller::new(deployments, watcher::Config::default())
        .with_config(owned::controller_config())
        .owns(sets, watcher::Config::default())
        .run(reconcile, owned::retry, context);
    owned::drive(work, events, "deployment").await;
}

/// A template as JSON without the hash label, and without what a template may carry or not
/// and mean the same (`false`, empty objects and lists, nulls: Go's zero values, which upstream's
/// semantic comparison does not see), so that equal templates compare and hash equal.
pub(crate) fn normalized(template: &PodTemplateSpec) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !strip(v));
                map.is_empty()
            }
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| {
                    strip(v);
                });
                items.is_empty()
            }
            serde_json::Value::Bool(b) => !*b,
            serde_json::Value::Null => true,
            _ => false,
        }
    }
    let mut value = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(serde_json::Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    strip(&mut value);
    value
}

/// The hash of a pod template (FNV-1a over its normalized JSON, and the collision count),
/// written with upstream's alphabet of letters and digits that spell no words.
pub fn template_hash(template: &PodTemplateSpec, collisions: i32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u32 = 0x811c_9dc5;
    let text = normalized(template).to_string();
    for byte in text.bytes().chain(collisions.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|b| char::from(ALPHABET[usize::from(b) % ALPHABET.len()]))
        .collect()
}

fn replicas_of(set: &ReplicaSet) -> i32 {
    set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// The pods a ReplicaSet may still have: its `spec.replicas`, or more while its controller has
/// not yet removed those it was scaled down from (its status still counts them). What the
/// surge is measured against, so that pods never outnumber `replicas + maxSurge`.
fn pods_of(set: &ReplicaSet) -> i32 {
    replicas_of(set).max(set.status.as_ref().map_or(0, |s| s.replicas))
}

/// The available pods a ReplicaSet keeps: its status' count, but no more than it is scaled to
/// (a status not yet updated after a scale-down still counts pods that are going). What the
/// availability budget is measured against, so that a stale status never lets too many go.
fn lasting_available(set: &ReplicaSet) -> i32 {
    available_of(set).min(replicas_of(set))
}

fn available_of(set: &ReplicaSet) -> i32 {
    set.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn revision_of(object: &impl ResourceExt) -> i64 {
    object
        .annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// `maxSurge` or `maxUnavailable` for `replicas`: a number, or a percentage rounded up (surge)
/// or down (unavailable).
fn resolve(value: Option<&IntOrString>, replicas: i32, round_up: bool, default: &str) -> i32 {
    let value = value
        .cloned()
        .unwrap_or(IntOrString::String(default.into()));
    match value {
        IntOrString::Int(n) => n.max(0),
        IntOrString::String(text) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            let scaled = i64::from(replicas) * percent;
            let value = if round_up {
                (scaled + 99) / 100
            } else {
                scaled / 100
            };
            i32::try_from(value).unwrap_or(i32::MAX).max(0)
        }
    }
}

/// (maxSurge, maxUnavailable) of a rolling update; both zero would stall it, so unavailable
/// becomes one (upstream's `ResolveFenceposts`).
fn fenceposts(deployment: &Deployment, replicas: i32) -> (i32, i32) {
    let rolling = deployment
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(
        rolling.and_then(|r| r.max_surge.as_ref()),
        replicas,
        true,
        "25%",
    );
    let unavailable = resolve(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        false,
        "25%",
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

impl Context {
    fn note(&self, deployment: &Deployment, reason: &'static str, message: String) {
        owned::note(&self.recorder, deployment, "Normal", reason, message);
    }

    /// Sets the ReplicaSet's replicas (and the Deployment's wanted numbers on it).
    async fn scale(
        &self,
        deployment: &Deployment,
        set: &ReplicaSet,
        to: i32,
        max_surge: i32,
    ) -> Result<(), kube::Error> {
        let from = replicas_of(set);
        if from == to {
            return Ok(());
        }
        let wanted = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1);
        let sets: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let patch = json!({
            "metadata": {"annotations": {
                "deployment.kubernetes.io/desired-replicas": wanted.to_string(),
                "deployment.kubernetes.io/max-replicas": (wanted + max_surge).to_string(),
            }},
            "spec": {"replicas": to},
        });
        sets.patch(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let direction = if to > from { "up" } else { "down" };
        self.note(
            deployment,
            "ScalingReplicaSet",
            format!(
                "Scaled {direction} replica set {} from {from} to {to}",
                set.name_any()
            ),
        );
        Ok(())
    }
}

/// The ReplicaSet for the Deployment's current template, `revision`, with `replicas`.
fn new_replica_set(
    deployment: &Deployment,
    hash: &str,
    revision: i64,
    replicas: i32,
) -> ReplicaSet {
    let spec = deployment.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let metadata = template.metadata.get_or_insert_with(ObjectMeta::default);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(HASH_LABEL.into(), hash.into());
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let wanted = spec.replicas.unwrap_or(1);
    let (surge, _) = fenceposts(deployment, wanted);
    // The Deployment's own annotations (a change-cause, say) go along, as upstream copies them.
    let mut annotations: BTreeMap<String, String> = deployment
        .annotations()
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("deployment.kubernetes.io/")
                && k.as_str() != "kubectl.kubernetes.io/last-applied-configuration"
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    annotations.extend([
        (REVISION.to_string(), revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas".into(),
            wanted.to_string(),
        ),
        (
            "deployment.kubernetes.io/max-replicas".into(),
            (wanted + surge).to_string(),
        ),
    ]);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", deployment.name_any())),
            namespace: deployment.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owned::controller_reference(deployment)]),
            ..ObjectMeta::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

async fn reconcile(
    deployment: Arc<Deployment>,
    context: Arc<Context>,
) -> Result<Action, DeploymentError> {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = deployment.namespace().unwrap_or_default();
    let uid = deployment.uid().unwrap_or_default();
    let spec = deployment.spec.clone().unwrap_or_default();
    let sets_api: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let Some(selector) = crate::pods::selector(&spec.selector) else {
        tracing::debug!(deployment = %deployment.name_any(), "an empty or invalid selector selects nothing");
        return Ok(Action::await_change());
    };
    // Its ReplicaSets carry its template's labels, which its selector selects.
    let mut sets: Vec<ReplicaSet> = sets_api
        .list(&ListParams::default().labels_from(&selector))
        .await?
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| {
            s.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let wanted = spec.replicas.unwrap_or(1);
    let paused = spec.paused == Some(true);
    let template = normalized(&spec.template);
    let current = sets.iter().position(|s| {
        s.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| normalized(t) == template)
    });
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let (surge, unavailable) = if recreate {
        (0, 0)
    } else {
        fenceposts(&deployment, wanted)
    };
    let max_revision = sets.iter().map(revision_of).max().unwrap_or(0);
    let mut created_new = false;
    let new_index = match current {
        Some(index) => {
            // The current template's ReplicaSet is the newest revision (a rollback makes an
            // old one current again).
            let revision = revision_of(&sets[index]);
            if revision < max_revision && !paused {
                let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
                sets[index] = sets_api
                    .patch(
                        &sets[index].name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
            }
            Some(index)
        }
        None if paused => None,
        None => {
            let collisions = deployment
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0);
            let hash = template_hash(&spec.template, collisions);
            let old_total: i32 = sets.iter().map(pods_of).sum();
            // Recreate starts the new ReplicaSet once the old pods are gone; a rolling update
            // within the surge.
            let initial = if recreate {
                if old_total > 0 { 0 } else { wanted }
            } else {
                (wanted + surge - old_total).clamp(0, wanted)
            };
            let set = new_replica_set(&deployment, &hash, max_revision + 1, initial);
            match sets_api.create(&PostParams::default(), &set).await {
                Ok(made) => {
                    context.note(
                        &deployment,
                        "ScalingReplicaSet",
                        format!(
                            "Scaled up replica set {} from 0 to {initial}",
                            made.name_any()
                        ),
                    );
                    created_new = true;
                    sets.push(made);
                    Some(sets.len() - 1)
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // A ReplicaSet of that name that is not this template's: another hash.
                    bump_collisions(&context.client, &deployment, collisions).await?;
                    return Ok(Action::requeue(Duration::from_millis(100)));
                }
                Err(error) => return Err(error.into()),
            }
        }
    };
    if !paused && let Some(new_index) = new_index {
        let new = sets[new_index].clone();
        let old: Vec<ReplicaSet> = sets
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != new_index)
            .map(|(_, s)| s.clone())
            .collect();
        if recreate {
            for set in old.iter().filter(|s| replicas_of(s) > 0) {
                context.scale(&deployment, set, 0, 0).await?;
            }
            let old_running: i32 = old
                .iter()
                .map(|s| s.status.as_ref().map_or(0, |st| st.replicas))
                .sum();
            if old.iter().all(|s| replicas_of(s) == 0) && old_running == 0 {
                context.scale(&deployment, &new, wanted, 0).await?;
            }
        } else if !created_new {
            roll(
                &context,
                &deployment,
                &new,
                &old,
                wanted,
                surge,
                unavailable,
            )
            .await?;
        }
        clean_up(&context, &deployment, &sets, new_index).await;
    }
    write_status(
        &context.client,
        &deployment,
        &sets,
        new_index,
        wanted,
        unavailable,
    )
    .await?;
    // The progress deadline passes without an event of its own.
    Ok(match spec.progress_deadline_seconds {
        Some(seconds) if !complete(&sets, new_index, wanted) => Action::requeue(
            Duration::from_secs(u64::try_from(seconds).unwrap_or(600).clamp(1, 30)),
        ),
        _ => Action::await_change(),
    })
}

/// One step of a rolling update: the new ReplicaSet up within the surge, then old ones down
/// within the availability budget — first their pods that are not available (they serve
/// nothing), then available ones while `replicas - maxUnavailable` stay available (upstream's
/// `reconcileNewReplicaSet`, `cleanupUnhealthyReplicas` and
/// `scaleDownOldReplicaSetsForRollingUpdate`).
async fn roll(
    context: &Context,
    deployment: &Deployment,
    new: &ReplicaSet,
    old: &[ReplicaSet],
    wanted: i32,
    surge: i32,
    unavailable: i32,
) -> Result<(), kube::Error> {
    let mut new_replicas = replicas_of(new);
    let old_total: i32 = old.iter().map(replicas_of).sum();
    let old_pods: i32 = old.iter().map(pods_of).sum();
    if new_replicas > wanted {
        context.scale(deployment, new, wanted, surge).await?;
        new_replicas = wanted;
    } else if new_replicas < wanted {
        let room = wanted + surge - (pods_of(new).max(new_replicas) + old_pods);
        if room > 0 {
            let to = (new_replicas + room).min(wanted);
            context.scale(deployment, new, to, surge).await?;
            new_replicas = to;
        }
    }
    if old_total == 0 {
        return Ok(());
    }
    let min_available = wanted - unavailable;
    let new_unavailable = (new_replicas - available_of(new)).max(0);
    let budget = new_replicas + old_total - min_available - new_unavailable;
    if budget <= 0 {
        return Ok(());
    }
    let mut oldest_first: Vec<(ReplicaSet, i32)> = old
        .iter()
        .filter(|s| replicas_of(s) > 0)
        .map(|s| (s.clone(), replicas_of(s)))
        .collect();
    oldest_first.sort_by_key(|(s, _)| {
        (
            s.metadata.creation_timestamp.as_ref().map(|t| t.0),
            revision_of(s),
        )
    });
    // Their pods that are not available first.
    let mut cleaned = 0;
    for (set, replicas) in &mut oldest_first {
        let unhealthy = (*replicas - available_of(set)).max(0);
        let cut = unhealthy.min(budget - cleaned);
        if cut > 0 {
            context
                .scale(deployment, set, *replicas - cut, surge)
                .await?;
            *replicas -= cut;
            cleaned += cut;
        }
    }
    // Then available ones, as long as enough stay available.
    let available_now: i32 = lasting_available(new)
        + oldest_first
            .iter()
            .map(|(set, replicas)| lasting_available(set).min(*replicas))
            .sum::<i32>();
    let mut left = available_now - min_available;
    for (set, replicas) in &oldest_first {
        if left <= 0 {
            break;
        }
        let cut = (*replicas).min(left);
        if cut > 0 {
            context
                .scale(deployment, set, replicas - cut, surge)
                .await?;
            left -= cut;
        }
    }
    Ok(())
}

/// Deletes the oldest ReplicaSets with nothing left beyond `revisionHistoryLimit`.
async fn clean_up(
    context: &Context,
    deployment: &Deployment,
    sets: &[ReplicaSet],
    new_index: usize,
) {
    let limit = deployment
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let mut idle: Vec<&ReplicaSet> = sets
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            *i != new_index
                && replicas_of(s) == 0
                && s.status.as_ref().is_none_or(|st| st.replicas == 0)
        })
        .map(|(_, s)| s)
        .collect();
    let surplus = idle
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    idle.sort_by_key(|s| revision_of(*s));
    let api: Api<ReplicaSet> = Api::namespaced(
        context.client.clone(),
        &deployment.namespace().unwrap_or_default(),
    );
    for set in idle.into_iter().take(surplus) {
        if let Err(error) = api.delete(&set.name_any(), &DeleteParams::default()).await {
            tracing::debug!(replicaset = %set.name_any(), %error, "removing an old ReplicaSet failed");
        }
    }
}

async fn bump_collisions(
    client: &Client,
    deployment: &Deployment,
    was: i32,
) -> Result<(), kube::Error> {
    let api: Api<Deployment> =
        Api::namespaced(client.clone(), &deployment.namespace().unwrap_or_default());
    let patch = json!({"status": {"collisionCount": was + 1}});
    api.patch_status(
        &deployment.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// Whether the rollout is done: the new ReplicaSet has every replica, updated and available,
/// and no old pod is left.
fn complete(sets: &[ReplicaSet], new_index: Option<usize>, wanted: i32) -> bool {
    let Some(new) = new_index.and_then(|i| sets.get(i)) else {
        return false;
    };
    let updated = new.status.as_ref().map_or(0, |s| s.replicas);
    let total: i32 = sets
        .iter()
        .map(|s| s.status.as_ref().map_or(0, |st| st.replicas))
        .sum();
    updated == wanted && available_of(new) >= wanted && total == wanted
}

fn condition(
    deployment: &Deployment,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    let was = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == type_));
    let same = was.is_some_and(|w| w.status == status && w.reason.as_deref() == Some(reason));
    let transition = match was {
        Some(w) if w.status == status => w.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: transition,
        last_update_time: if same {
            was.and_then(|w| w.last_update_time.clone())
        } else {
            Some(Time(now))
        },
    }
}

async fn write_status(
    client: &Client,
    deployment: &Deployment,
    sets: &[ReplicaSet],
    new_index: Option<usize>,
    wanted: i32,
    unavailable: i32,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(f).sum::<i32>();
    let replicas = sum(&|s| s.status.as_ref().map_or(0, |st| st.replicas));
    let ready = sum(&|s| {
        s.status
            .as_ref()
            .and_then(|st| st.ready_replicas)
            .unwrap_or(0)
    });
    let available = sum(&available_of);
    let new = new_index.and_then(|i| sets.get(i));
    let updated = new.map_or(0, |s| s.status.as_ref().map_or(0, |st| st.replicas));
    let available_condition = if available >= wanted - unavailable {
        condition(
            deployment,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        )
    } else {
        condition(
            deployment,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        )
    };
    let name = new.map(ResourceExt::name_any).unwrap_or_default();
    let previous_progress = deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"));
    let deadline = deployment
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds);
    let progressing = if complete(sets, new_index, wanted) {
        condition(
            deployment,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{name}\" has successfully progressed."),
            now,
        )
    } else if let (Some(seconds), Some(last)) = (
        deadline,
        previous_progress.and_then(|p| p.last_update_time.as_ref()),
    ) && last.0.as_second().saturating_add(i64::from(seconds)) < now.as_second()
        && previous_progress.is_some_and(|p| p.reason.as_deref() != Some("NewReplicaSetAvailable"))
    {
        condition(
            deployment,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{name}\" has timed out progressing."),
            now,
        )
    } else {
        let reason = if previous_progress.is_none() {
            "NewReplicaSetCreated"
        } else {
            "ReplicaSetUpdated"
        };
        let message = if reason == "NewReplicaSetCreated" {
            format!("Created new replica set \"{name}\"")
        } else {
            format!("ReplicaSet \"{name}\" is progressing.")
        };
        // Progress is only news when the numbers move: keep the last update time otherwise.
        let mut c = condition(deployment, "Progressing", "True", reason, message, now);
        let moved = deployment.status.as_ref().is_none_or(|s| {
            s.updated_replicas.unwrap_or(0) != updated
                || s.available_replicas.unwrap_or(0) != available
        });
        if !moved && let Some(p) = previous_progress {
            c.last_update_time = p.last_update_time.clone();
        }
        c
    };
    let status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((wanted - available).max(0)),
        conditions: Some(vec![available_condition, progressing]),
        collision_count: deployment.status.as_ref().and_then(|s| s.collision_count),
        terminating_replicas: None,
    };
    let api: Api<Deployment> =
        Api::namespaced(client.clone(), &deployment.namespace().unwrap_or_default());
    if deployment.status.as_ref() != Some(&status) {
        owned::patch_status(&api, &deployment.name_any(), &json!({"status": status})).await?;
    }
    // The Deployment's revision is its current ReplicaSet's.
    let revision = new.map(|n| revision_of(n).to_string());
    if let Some(revision) = revision
        && deployment.annotations().get(REVISION) != Some(&revision)
    {
        let annotate = json!({"metadata": {"annotations": {REVISION: revision}}});
        api.patch(
            &deployment.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&annotate),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_template_should_always_hash_the_same_and_another_differently() {
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.14.2"}]}}))
        .unwrap();
        let again = template.clone();
        assert_eq!(template_hash(&template, 0), template_hash(&again, 0));
        assert_ne!(template_hash(&template, 0), template_hash(&template, 1));
        let mut other = template.clone();
        other.spec.as_mut().unwrap().containers[0].image = Some("nginx:1.29".into());
        assert_ne!(template_hash(&template, 0), template_hash(&other, 0));
        // Zero values written out or left out are the same template.
        let explicit: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web", "pod-template-hash": "x"}},
            "spec": {"hostNetwork": false, "containers": [
                {"name": "web", "image": "nginx:1.14.2", "stdin": false, "tty": false}]}}))
        .unwrap();
        assert_eq!(normalized(&explicit), normalized(&template));
        assert_eq!(template_hash(&explicit, 0), template_hash(&template, 0));
        let hash = template_hash(&template, 0);
        assert!(
            hash.bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)),
            "{hash}"
        );
    }

    #[test]
    fn surge_should_round_up_and_unavailability_down() {
        let deployment: Deployment = serde_json::from_value(json!({"spec": {
            "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}))
        .unwrap();
        assert_eq!(fenceposts(&deployment, 10), (3, 2));
        assert_eq!(fenceposts(&deployment, 1), (1, 0));
        let zero: Deployment = serde_json::from_value(json!({"spec": {
            "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}))
        .unwrap();
        assert_eq!(fenceposts(&zero, 5), (0, 1));
    }
}
