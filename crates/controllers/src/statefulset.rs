//! The StatefulSet controller (upstream's `statefulset-controller`): pods with stable names
//! `<set>-<ordinal>` (ordinals from `spec.ordinals.start`), each with its own
//! PersistentVolumeClaims `<claim>-<set>-<ordinal>` from the `volumeClaimTemplates`, its
//! hostname, and the set's `serviceName` as subdomain. Each pass reads the set's pods live, then,
//! as upstream's `updateStatefulSet`:
//!
//! 1. creates missing ordinals and deletes finished pods so they are made again — with
//!    `OrderedReady` one at a time, lowest first, each waiting until every lower one is Running
//!    and Ready (and available after `minReadySeconds`); with `Parallel` all at once;
//! 2. deletes pods above the wanted ordinals, highest first (one at a time, once the others are
//!    healthy, unless `Parallel`), handing their claims to them first when
//!    `persistentVolumeClaimRetentionPolicy.whenScaled` is `Delete`;
//! 3. rolls a template change out with `RollingUpdate`: the highest ordinal at or above
//!    `partition` that runs an older revision is deleted, one at a time, each waiting for the
//!    previous to be healthy again (`OnDelete` leaves it to the user; a pod deleted by hand comes
//!    back at the new revision).
//!
//! Templates are kept as ControllerRevisions ([`crate::revisions`]); a pod's
//! `controller-revision-hash` label names the revision it was made from, and pods below the
//! partition are made from `status.currentRevision`. The status (`replicas`, `readyReplicas`,
//! `availableReplicas`, `currentReplicas`, `updatedReplicas`, both revisions, `observedGeneration`,
//! `collisionCount`) is written once per pass, only when it changed; when every pod runs the
//! update revision and is ready, it becomes the current revision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::owned;
use crate::pods::{
    PodIndex, adopt, available, controller_of, is_active, is_finished, ready_since, release,
};
use crate::revisions::{self, HASH_LABEL, History};
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

/// The label naming a StatefulSet pod (what a per-pod Service selects).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum StatefulSetError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
}

/// What a pass works with.
type Context = crate::pods::Keeper;

/// Runs the controller until the task is dropped.
pub async fn run(
    client: Client,
    index: PodIndex,
    pods: impl futures::Stream<Item = std::sync::Arc<crate::shared_pods::PodSummary>> + Send + 'static,
) {
    let (context, events) =
        crate::pods::Keeper::new(client.clone(), "statefulset-controller", index);
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let work = Controller::new(sets, watcher::Config::default())
        .with_config(owned::controller_config())
        .owns_shared_stream(pods)
        .run(reconcile, owned::retry, context);
    owned::drive(work, events, "statefulset").await;
}

/// The ordinal in a pod's name, if it is one of `set`'s names.
fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let digits = pod.strip_prefix(set)?.strip_prefix('-')?;
    if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
        return None;
    }
    digits.parse().ok()
}

/// The revision a pod was made from.
fn revision_label(pod: &Pod) -> Option<&str> {
    pod.labels().get(HASH_LABEL).map(String::as_str)
}

/// The claim of template `claim` for the pod of `ordinal`.
fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// What one pass settles.
struct Plan {
    /// The first ordinal.
    start: i32,
    /// One past the last wanted ordinal.
    end: i32,
    /// `OrderedReady`: one pod at a time.
    monotonic: bool,
    /// `OnDelete`: template changes wait for the user to delete pods.
    on_delete: bool,
    /// Ordinals below `start + partition` keep the current revision.
    partition: i32,
    /// Seconds a Ready pod waits before it counts as available.
    min_ready: i64,
    /// The time of the pass.
    now: Timestamp,
}

impl Plan {
    fn of(set: &StatefulSet, now: Timestamp) -> Self {
        let spec = set.spec.clone().unwrap_or_default();
        let start = spec.ordinals.and_then(|o| o.start).unwrap_or(0);
        let strategy = spec.update_strategy.unwrap_or_default();
        Plan {
            start,
            end: start.saturating_add(spec.replicas.unwrap_or(1).max(0)),
            monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
            on_delete: strategy.type_.as_deref() == Some("OnDelete"),
            partition: strategy
                .rolling_update
                .and_then(|r| r.partition)
                .unwrap_or(0)
                .max(0),
            min_ready: i64::from(spec.min_ready_seconds.unwrap_or(0)),
            now,
        }
    }

    fn healthy(&self, pod: &Pod) -> bool {
        pod.metadata.deletion_timestamp.is_none() && available(pod, self.min_ready, self.now)
    }
}

async fn reconcile(
    set: Arc<StatefulSet>,
    context: Arc<Context>,
) -> Result<Action, StatefulSetError> {
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = set.spec.clone().unwrap_or_default();
    let Some(selector) = crate::pods::selector(&spec.selector) else {
        tracing::debug!(statefulset = %set.name_any(), "an empty or invalid selector selects nothing");
        return Ok(Action::await_change());
    };
    let name = set.name_any();
    let namespace = set.namespace().unwrap_or_default();
    let uid = set.uid().unwrap_or_default();
    let pods_api: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let mut pods: BTreeMap<i32, Pod> = BTreeMap::new();
    for pod in crate::pods::selected(&pods_api, &selector).await? {
        let Some(ordinal) = ordinal_of(&name, &pod.name_any()) else {
            continue;
        };
        match controller_of(&pod) {
            Some(owner) if owner.uid == uid => {
                pods.insert(ordinal, pod);
            }
            None if is_active(&pod) => {
                if let Some(adopted) = adopt(&pods_api, &pod, set.as_ref()).await {
                    pods.insert(ordinal, adopted);
                }
            }
            _ => {}
        }
    }
    for stray in context.index.strayed(&namespace, &uid, &selector) {
        release(&pods_api, stray.as_ref(), &uid).await;
    }
    let revisions_api: Api<ControllerRevision> =
        Api::namespaced(context.client.clone(), &namespace);
    let collisions = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let history = revisions::sync(&revisions_api, set.as_ref(), &spec.template, collisions).await?;
    let update = history.update().name_any();
    let current = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref())
        .filter(|c| history.named(c).is_some())
        .map_or_else(|| update.clone(), str::to_string);
    let plan = Plan::of(&set, Timestamp::now());
    let pass = Pass {
        context: &context,
        set: &set,
        pods_api: &pods_api,
        history: &history,
        current: &current,
        plan: &plan,
    };
    // OrderedReady waits for every wanted pod before removing or replacing any; Parallel
    // removes surplus pods at once.
    let mut settled = pass.replicas(&pods).await;
    if settled || !plan.monotonic {
        settled = pass.condemned(&pods).await && settled;
    }
    if settled && !plan.on_delete {
        pass.roll(&pods).await;
    }
    let live: BTreeSet<String> = pods
        .values()
        .filter_map(revision_label)
        .map(str::to_string)
        .chain([current.clone()])
        .collect();
    let limit = spec.revision_history_limit.unwrap_or(10);
    revisions::truncate(&revisions_api, &history, &live, limit).await;
    let status = status(&set, &pods, &plan, &current, &update, history.collisions);
    owned::write_status(&context.client, set.as_ref(), set.status.as_ref(), status).await?;
    let waiting = pods
        .values()
        .any(|p| ready_since(p).is_some() && !available(p, plan.min_ready, plan.now));
    Ok(if waiting {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}

/// One pass over a StatefulSet's pods.
struct Pass<'a> {
    context: &'a Context,
    set: &'a StatefulSet,
    pods_api: &'a Api<Pod>,
    history: &'a History,
    current: &'a str,
    plan: &'a Plan,
}

impl Pass<'_> {
    /// Makes the wanted ordinals exist; whether nothing is left to wait for.
    async fn replicas(&self, pods: &BTreeMap<i32, Pod>) -> bool {
        let mut settled = true;
        for ordinal in self.plan.start..self.plan.end {
            let healthy = match pods.get(&ordinal) {
                None => {
                    self.create(ordinal).await;
                    false
                }
                Some(pod) if is_finished(pod) && pod.metadata.deletion_timestamp.is_none() => {
                    self.delete(pod).await;
                    false
                }
                Some(pod) => self.plan.healthy(pod),
            };
            if !healthy {
                settled = false;
                if self.plan.monotonic {
                    tracing::debug!(statefulset = %self.set.name_any(), ordinal, "waiting for the pod to be Running and Ready");
                    break;
                }
            }
        }
        settled
    }

    /// Deletes pods above the wanted ordinals; whether none is left.
    async fn condemned(&self, pods: &BTreeMap<i32, Pod>) -> bool {
        let condemned: Vec<&Pod> = pods
            .iter()
            .rev()
            .filter(|(o, _)| **o < self.plan.start || **o >= self.plan.end)
            .map(|(_, p)| p)
            .collect();
        for pod in &condemned {
            if pod.metadata.deletion_timestamp.is_some() {
                if self.plan.monotonic {
                    break;
                }
                continue;
            }
            self.release_claims(pod).await;
            self.delete(pod).await;
            if self.plan.monotonic {
                break;
            }
        }
        condemned.is_empty()
    }

    /// Deletes the highest pod at or above the partition that runs an older revision, once
    /// every pod is healthy.
    async fn roll(&self, pods: &BTreeMap<i32, Pod>) {
        let update = self.history.update().name_any();
        let floor = self.plan.start.saturating_add(self.plan.partition);
        if pods.values().any(|p| !self.plan.healthy(p)) {
            return;
        }
        if let Some(outdated) = pods
            .range(floor..self.plan.end)
            .rev()
            .map(|(_, p)| p)
            .find(|p| revision_label(p) != Some(update.as_str()))
        {
            self.delete(outdated).await;
        }
    }

    /// Creates the pod of `ordinal` (and its claims first).
    async fn create(&self, ordinal: i32) {
        let set_name = self.set.name_any();
        let pod_name = format!("{set_name}-{ordinal}");
        let revision = if ordinal < self.plan.start.saturating_add(self.plan.partition)
            && !self.plan.on_delete
        {
            self.history
                .named(self.current)
                .unwrap_or(self.history.update())
        } else {
            self.history.update()
        };
        if let Err(message) = self.create_claims(ordinal, &pod_name).await {
            self.context.note(
                self.set,
                "Warning",
                "FailedCreate",
                format!("create Claim for Pod {pod_name} in StatefulSet {set_name} failed error: {message}"),
            );
            return;
        }
        let pod = new_pod(
            self.set,
            &revisions::template_of(revision),
            &revision.name_any(),
            ordinal,
        );
        match self.pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => self.context.note(
                self.set,
                "Normal",
                "SuccessfulCreate",
                format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
            ),
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => self.context.note(
                self.set,
                "Warning",
                "FailedCreate",
                format!(
                    "create Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                    owned::refusal(&error)
                ),
            ),
        }
    }

    /// Creates the claims of the pod of `ordinal` that do not exist yet.
    async fn create_claims(&self, ordinal: i32, pod_name: &str) -> Result<(), String> {
        let set_name = self.set.name_any();
        let namespace = self.set.namespace().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.context.client.clone(), &namespace);
        for claim in new_claims(self.set, ordinal) {
            let claim_name = claim.name_any();
            match claims.create(&PostParams::default(), &claim).await {
                Ok(_) => self.context.note(
                    self.set,
                    "Normal",
                    "SuccessfulCreate",
                    format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
                    ),
                ),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(owned::refusal(&error)),
            }
        }
        Ok(())
    }

    /// Hands a condemned pod's claims to it when the set deletes claims on scale-down, so
    /// they go with it.
    async fn release_claims(&self, pod: &Pod) {
        let policy = self
            .set
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref())
            .and_then(|p| p.when_scaled.as_deref());
        if policy != Some("Delete") {
            return;
        }
        let Some(ordinal) = ordinal_of(&self.set.name_any(), &pod.name_any()) else {
            return;
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(
            self.context.client.clone(),
            &self.set.namespace().unwrap_or_default(),
        );
        for claim in new_claims(self.set, ordinal) {
            let reference = OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: pod.uid().unwrap_or_default(),
                controller: None,
                block_owner_deletion: None,
            };
            let Ok(existing) = claims.get(&claim.name_any()).await else {
                continue;
            };
            let mut owners = existing.owner_references().to_vec();
            if owners.iter().any(|o| o.uid == reference.uid) {
                continue;
            }
            owners.push(reference);
            let patch = json!({"metadata": {"ownerReferences": owners}});
            if let Err(error) = claims
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                tracing::debug!(claim = %claim.name_any(), %error, "handing a claim to its pod failed");
            }
        }
    }

    /// Deletes `pod` (if it is still the one read).
    async fn delete(&self, pod: &Pod) {
        let set_name = self.set.name_any();
        let pod_name = pod.name_any();
        match owned::delete_read(self.pods_api, pod).await {
            Ok(()) => self.context.note(
                self.set,
                "Normal",
                "SuccessfulDelete",
                format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
            ),
            Err(error) => self.context.note(
                self.set,
                "Warning",
                "FailedDelete",
                format!(
                    "delete Pod {pod_name} in StatefulSet {set_name} failed error: {}",
                    owned::refusal(&error)
                ),
            ),
        }
    }
}

/// The pod of `ordinal` from `template` (of revision `revision`).
fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Pod {
    let set_name = set.name_any();
    let pod_name = format!("{set_name}-{ordinal}");
    let mut metadata = template.metadata.clone().unwrap_or_default();
    metadata.name = Some(pod_name.clone());
    metadata.generate_name = None;
    metadata.namespace = set.namespace();
    metadata.owner_references = Some(vec![owned::controller_reference(set)]);
    let labels = metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), pod_name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(pod_name);
    if let Some(service) = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    for claim in set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let volume_name = claim.name_any();
        let volume = Volume {
            name: volume_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&volume_name, &set_name, ordinal),
                read_only: None,
            }),
            ..Volume::default()
        };
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.retain(|v| v.name != volume_name);
        volumes.push(volume);
    }
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The claims of the pod of `ordinal`, from the set's templates.
fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let set_name = set.name_any();
    let spec = set.spec.clone().unwrap_or_default();
    let delete_with_set = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
    spec.volume_claim_templates
        .unwrap_or_default()
        .into_iter()
        .map(|template| {
            let mut labels = template.labels().clone();
            labels.extend(selector_labels.clone());
            let owners = delete_with_set.then(|| {
                let mut reference = owned::controller_reference(set);
                reference.controller = None;
                vec![reference]
            });
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&template.name_any(), &set_name, ordinal)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owners,
                    ..ObjectMeta::default()
                },
                spec: template.spec,
                status: None,
            }
        })
        .collect()
}

/// The status the pass observed.
fn status(
    set: &StatefulSet,
    pods: &BTreeMap<i32, Pod>,
    plan: &Plan,
    current: &str,
    update: &str,
    collisions: i32,
) -> StatefulSetStatus {
    let count = |keep: &dyn Fn(&Pod) -> bool| {
        i32::try_from(pods.values().filter(|p| keep(p)).count()).unwrap_or(i32::MAX)
    };
    let replicas = count(&|_| true);
    let ready = count(&|p| ready_since(p).is_some());
    let updated = count(&|p| revision_label(p) == Some(update));
    let mut current_replicas = count(&|p| revision_label(p) == Some(current));
    let mut current = current.to_string();
    if !plan.on_delete && updated == replicas && ready == replicas {
        current = update.to_string();
        current_replicas = updated;
    }
    StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| available(p, plan.min_ready, plan.now))),
        current_replicas: Some(current_replicas),
        updated_replicas: Some(updated),
        current_revision: Some(current),
        update_revision: Some(update.to_string()),
        observed_generation: set.metadata.generation,
        collision_count: Some(collisions),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_sets_own_names_should_give_an_ordinal() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
    }

    #[test]
    fn a_pod_should_carry_its_identity_its_revision_and_its_claims() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "n", "uid": "u"},
            "spec": {
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}
            }
        }))
        .unwrap();
        let template = set.spec.as_ref().unwrap().template.clone();
        let pod = new_pod(&set, &template, "db-abc", 2);
        assert_eq!(pod.name_any(), "db-2");
        let labels = pod.labels();
        assert_eq!(labels[POD_NAME_LABEL], "db-2");
        assert_eq!(labels[POD_INDEX_LABEL], "2");
        assert_eq!(labels[HASH_LABEL], "db-abc");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let volume = &spec.volumes.unwrap()[0];
        assert_eq!(
            volume.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-db-2"
        );
        let claims = new_claims(&set, 2);
        assert_eq!(claims[0].name_any(), "data-db-2");
        assert_eq!(claims[0].labels()["app"], "db");
        assert_eq!(
            claims[0].owner_references()[0].kind,
            "StatefulSet",
            "whenDeleted: Delete lets the garbage collector take the claim with the set"
        );
    }
}
