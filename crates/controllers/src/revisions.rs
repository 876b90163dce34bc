//! ControllerRevisions, the history of a StatefulSet's or DaemonSet's pod templates (upstream's
//! `controller_history`). Each revision holds one template as upstream writes it
//! (`data: {"spec": {"template": {..., "$patch": "replace"}}}`), a `revision` number, and the
//! label `controller-revision-hash`; it is named `<owner>-<hash>` with the Deployment's template
//! hash, so the same template always finds the same revision. A template that comes back (a
//! rollback) gets its old revision renumbered as the newest, as upstream does. History beyond
//! `revisionHistoryLimit` is deleted oldest first, never a revision that pods still run.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::deployment::{normalized, template_hash};
use crate::owned;

/// The label a revision and the pods made from it carry.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// Collisions tried before giving up until the next pass.
const MAX_COLLISIONS: i32 = 8;

/// An owner's history as one pass sees it.
pub(crate) struct History {
    /// Every revision the owner has, oldest first.
    pub revisions: Vec<ControllerRevision>,
    /// The index of the revision of the owner's current template.
    pub update: usize,
    /// The hash collisions met (the owner's `status.collisionCount`).
    pub collisions: i32,
}

impl History {
    /// The revision of the owner's current template.
    pub fn update(&self) -> &ControllerRevision {
        &self.revisions[self.update]
    }

    /// The revision named `name`, if the owner has it.
    pub fn named(&self, name: &str) -> Option<&ControllerRevision> {
        self.revisions.iter().find(|r| r.name_any() == name)
    }
}

/// A revision's hash label.
pub(crate) fn hash_of(revision: &ControllerRevision) -> String {
    revision
        .labels()
        .get(HASH_LABEL)
        .cloned()
        .unwrap_or_default()
}

/// The pod template a revision holds.
pub(crate) fn template_of(revision: &ControllerRevision) -> PodTemplateSpec {
    let mut template = revision
        .data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template"))
        .cloned()
        .unwrap_or_default();
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    serde_json::from_value(template).unwrap_or_default()
}

/// The owner's revisions, with one for `template` (created or renumbered as the newest).
pub(crate) async fn sync<K>(
    api: &Api<ControllerRevision>,
    owner: &K,
    template: &PodTemplateSpec,
    collisions: i32,
) -> Result<History, kube::Error>
where
    K: Resource<DynamicType = ()>,
{
    let uid = owner.uid().unwrap_or_default();
    let mut revisions: Vec<ControllerRevision> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| {
            r.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    revisions.sort_by_key(|r| r.revision);
    let newest = revisions.last().map_or(0, |r| r.revision);
    let wanted = normalized(template);
    if let Some(index) = revisions
        .iter()
        .position(|r| normalized(&template_of(r)) == wanted)
    {
        if revisions[index].revision < newest {
            let patch = json!({"revision": newest + 1});
            let renumbered = api
                .patch(
                    &revisions[index].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            revisions.remove(index);
            revisions.push(renumbered);
            return Ok(History {
                update: revisions.len() - 1,
                revisions,
                collisions,
            });
        }
        return Ok(History {
            revisions,
            update: index,
            collisions,
        });
    }
    let mut collisions = collisions;
    loop {
        let revision = new_revision(owner, template, newest + 1, collisions);
        match api.create(&PostParams::default(), &revision).await {
            Ok(made) => {
                revisions.push(made);
                return Ok(History {
                    update: revisions.len() - 1,
                    revisions,
                    collisions,
                });
            }
            Err(kube::Error::Api(status)) if status.code == 409 && collisions < MAX_COLLISIONS => {
                let existing = api.get(&revision.name_any()).await?;
                let ours = existing.owner_references().iter().any(|o| o.uid == uid);
                if ours && normalized(&template_of(&existing)) == wanted {
                    // Made by a pass whose list this one did not see.
                    revisions.push(existing);
                    return Ok(History {
                        update: revisions.len() - 1,
                        revisions,
                        collisions,
                    });
                }
                collisions += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The revision of `template`, numbered `number`.
fn new_revision<K>(
    owner: &K,
    template: &PodTemplateSpec,
    number: i64,
    collisions: i32,
) -> ControllerRevision
where
    K: Resource<DynamicType = ()>,
{
    let hash = template_hash(template, collisions);
    let mut labels: BTreeMap<String, String> = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.clone());
    let mut data = serde_json::to_value(template).unwrap_or_default();
    if let Some(map) = data.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", owner.name_any())),
            namespace: owner.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owned::controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(json!({"spec": {"template": data}}))),
        revision: number,
    }
}

/// Deletes the oldest revisions beyond `limit`, sparing the names in `live`.
pub(crate) async fn truncate(
    api: &Api<ControllerRevision>,
    history: &History,
    live: &BTreeSet<String>,
    limit: i32,
) {
    let spare = |r: &&ControllerRevision| {
        let name = r.name_any();
        name == history.update().name_any() || live.contains(&name)
    };
    let old: Vec<&ControllerRevision> = history.revisions.iter().filter(|r| !spare(r)).collect();
    let surplus = old
        .len()
        .saturating_sub(usize::try_from(limit).unwrap_or(0));
    for revision in old.into_iter().take(surplus) {
        if let Err(error) = owned::delete_read(api, revision).await {
            tracing::debug!(revision = %revision.name_any(), %error, "deleting an old revision failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSet;

    #[test]
    fn a_revision_should_hold_its_template_in_upstreams_form_and_give_it_back() {
        let set: StatefulSet = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "n", "uid": "u"}}),
        )
        .unwrap();
        let template: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        }))
        .unwrap();
        let revision = new_revision(&set, &template, 3, 0);
        let data = revision.data.as_ref().unwrap().0.clone();
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(revision.revision, 3);
        assert_eq!(
            revision.name_any(),
            format!("web-{}", hash_of(&revision)),
            "named after its hash"
        );
        assert_eq!(normalized(&template_of(&revision)), normalized(&template));
    }
}
