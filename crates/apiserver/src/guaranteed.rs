//! The one write path of every existing object, upstream's `GuaranteedUpdate`: read the object,
//! let the caller decide from it (write a new version, edit it in place, delete it, or fail with
//! an `ApiError`), commit with a compare-and-swap on the revision read, and on a conflict read
//! again and decide again. Update, patch, apply, scale, status, binding, finalize and delete
//! all go through [`guaranteed_update`], so they share its rules:
//! - a write with an explicit `resourceVersion` precondition is not retried: a stale one is 409;
//! - a write that leaves a deleting object without finalizers removes the object;
//! - a write that changes nothing is no write (no new revision, no watch event); an edit in
//!   place is trusted to change the object and is not compared;
//! - after a commit, the resource's hooks run (custom resources are re-served after a CRD
//!   changes, a Service's ClusterIP is given back when it is removed).
//!
//! The first attempt decides on the watch cache's copy of the object when it has one, as
//! upstream starts from its cached object (`cachedExistingObject`): the compare-and-swap on the
//! revision decided on catches a stale copy, and whatever a stale copy could have made wrong is
//! decided again on the store's state — a conflict, an error of the verb's own, a precondition on
//! another revision, a write that would change nothing. Dry runs, which commit nothing that could
//! catch a stale copy, read the store.
//!
//! Store errors become API errors here, through the one mapping `storage::api_error`.

use serde_json::{Value, json};
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{KeyValue, Revision, StoreError};

use crate::allocation;
use crate::crd;
use crate::objects::{meta_mut, same_fields};
use crate::state::ApiState;
use crate::storage;

/// How many times a write without a precondition is tried before it answers 409.
pub const RETRIES: usize = 16;

/// What a write decides from the object it read.
pub enum Decision<'a> {
    /// Store this version: a compare-and-swap on `precondition` when given (a stale one is a
    /// 409, not retried), else on the revision read (retried on conflicts).
    Write {
        /// The new version.
        object: Value,
        /// The caller's `resourceVersion` precondition.
        precondition: Option<Revision>,
    },
    /// Store the object read, changed in place by this edit (a compare-and-swap on the
    /// revision read, retried on conflicts). The object is not copied: for a small change to a
    /// large object (a binding) the copy cost more than the rest. The edit must change the
    /// object: it is not compared with the version read, so it is always a new revision.
    Edit(Box<dyn FnOnce(&mut Value) + Send + 'a>),
    /// Remove the object (a compare-and-swap on the revision read).
    Delete,
}

/// What a guaranteed update did (or, in a dry run, would have done).
#[derive(Debug)]
pub enum Outcome {
    /// The object as stored, with its resourceVersion (the old one when nothing changed), and
    /// the bytes stored (none when nothing was).
    Written(Value, Option<storage::Stored>),
    /// The object as it was removed, with the deletion's revision as its resourceVersion.
    Deleted(Value),
}

impl Outcome {
    /// The object either way.
    pub fn object(&self) -> &Value {
        match self {
            Self::Written(object, _) | Self::Deleted(object) => object,
        }
    }

    /// What the write stored, if it stored something.
    pub fn stored(&self) -> Option<&storage::Stored> {
        match self {
            Self::Written(_, stored) => stored.as_ref(),
            Self::Deleted(_) => None,
        }
    }
}

/// Keeps what a write stored for the object's next write, when the object has a status (see
/// [`crate::recent_writes`]).
pub fn remember(state: &ApiState, info: &ResourceInfo, key: &str, outcome: Outcome) {
    if let Outcome::Written(object, Some(stored)) = outcome
        && info.has_subresource("status")
    {
        let now = state.clock.now();
        state
            .recent_writes
            .remember(key, stored.revision, object, now);
    }
}

/// Where the object is and how the write is made.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    /// The object's resource.
    pub info: &'a ResourceInfo,
    /// The object's store key.
    pub key: &'a str,
    /// The object, as errors name it.
    pub target: &'a Target,
    /// Decide and report, but commit nothing.
    pub dry_run: bool,
}

/// Reads the object at `key` (404 when absent).
pub async fn current(
    state: &ApiState,
    key: &str,
    target: &Target,
) -> Result<(KeyValue, Value), ApiError> {
    let (kv, _) = state
        .store
        .get(key, None)
        .await
        .map_err(|e| storage::api_error(e, target))?;
    let kv = kv.ok_or_else(|| ApiError::NotFound(target.clone()))?;
    let object = storage::decode(&kv)?;
    Ok((kv, object))
}

/// The object at `key` as this server last wrote it, else the watch cache's copy, with its
/// revision, if either has one.
fn cached(state: &ApiState, key: &str) -> Option<(Revision, Value)> {
    if let Some(written) = state.recent_writes.take(key, state.clock.now()) {
        return Some(written);
    }
    let object = state.watch_cache.get(key)?.to_value().ok()?;
    let revision = object
        .pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()?;
    Some((revision, object))
}

/// Reads, decides, commits; retries the whole on conflicts unless the decision carried a
/// precondition. `decide` sees the object's revision and the decoded object, and may be called
/// more than once.
pub async fn guaranteed_update<'d, F>(
    state: &ApiState,
    site: Site<'_>,
    mut decide: F,
) -> Result<Outcome, ApiError>
where
    F: FnMut(Revision, &Value) -> Result<Decision<'d>, ApiError>,
{
    let mut try_cache = !site.dry_run;
    for _ in 0..RETRIES {
        let found = if try_cache {
            cached(state, site.key)
        } else {
            None
        };
        try_cache = false;
        let from_cache = found.is_some();
        let (revision, old) = match found {
            Some(found) => found,
            None => {
                let (kv, old) = current(state, site.key, site.target).await?;
                (kv.mod_revision, old)
            }
        };
        let decision = match decide(revision, &old) {
            Ok(decision) => decision,
            Err(_) if from_cache => continue,
            Err(error) => return Err(error),
        };
        let precondition = match &decision {
            Decision::Write { precondition, .. } => *precondition,
            Decision::Edit(_) | Decision::Delete => None,
        };
        if from_cache && precondition.is_some_and(|p| p != revision) {
            continue;
        }
        match commit(state, &site, revision, old, decision, from_cache).await {
            Ok(outcome) => {
                if !site.dry_run {
                    after_commit(state, site.info, &outcome).await;
                }
                return Ok(outcome);
            }
            Err(Failed::Stale) => {}
            Err(Failed::Store(StoreError::Conflict { .. }))
                if precondition.is_none() || from_cache => {}
            Err(Failed::Store(error)) => return Err(storage::api_error(error, site.target)),
            Err(Failed::Api(_)) if from_cache => {}
            Err(Failed::Api(error)) => return Err(error),
        }
    }
    Err(ApiError::Conflict(site.target.clone()))
}

/// Why a commit did not happen.
enum Failed {
    Store(StoreError),
    Api(ApiError),
    /// The write would change nothing, judged on the watch cache's copy, which may be stale.
    Stale,
}

impl From<ApiError> for Failed {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

/// Whether `object` is being deleted and nothing holds it any more: no finalizers, and no
/// grace period left to run (a pod being deleted gracefully stays until its node, or a
/// deletion with grace 0, says it is done — upstream's `ShouldDeleteDuringUpdate`).
fn finalized(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some()
        && object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|grace| grace == 0)
        && object
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        && !spec_finalizers_pending(object)
}

/// Whether a namespace still waits for `spec.finalizers` (the namespace controller's work).
pub fn spec_finalizers_pending(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Namespace")
        && object
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
}

fn stamp(object: &mut Value, revision: Revision) -> Result<(), ApiError> {
    meta_mut(object)?.insert("resourceVersion".into(), json!(revision.to_string()));
    Ok(())
}

async fn commit(
    state: &ApiState,
    site: &Site<'_>,
    revision: Revision,
    old: Value,
    decision: Decision<'_>,
    from_cache: bool,
) -> Result<Outcome, Failed> {
    let (new, precondition, old) = match decision {
        Decision::Delete => return delete(state, site, old, revision).await,
        Decision::Write {
            object,
            precondition,
        } => (object, precondition, Some(old)),
        Decision::Edit(edit) => {
            // An edit always changes the object: the old version is kept only where the
            // write's allocations compare it with the new one.
            let kept = allocation::compares_versions(site.info).then(|| old.clone());
            let mut new = old;
            edit(&mut new);
            (new, None, kept)
        }
    };
    if finalized(&new) {
        return delete(state, site, new, precondition.unwrap_or(revision)).await;
    }
    let read = Read {
        revision,
        old: old.as_ref(),
        from_cache,
    };
    write(state, site, read, new, precondition).await
}

/// Removes the object (`removed`, as it goes) with a compare-and-swap on `expected`.
async fn delete(
    state: &ApiState,
    site: &Site<'_>,
    mut removed: Value,
    expected: Revision,
) -> Result<Outcome, Failed> {
    if site.dry_run {
        return Ok(Outcome::Deleted(removed));
    }
    if is_crd(site.info) {
        let purged = crd::purge(state, &removed).await?;
        tracing::info!(
            key = site.key,
            objects = purged,
            "CRD deleted with its objects"
        );
    }
    let (revision, _) = state
        .store
        .delete(site.key, Some(expected))
        .await
        .map_err(Failed::Store)?;
    stamp(&mut removed, revision)?;
    Ok(Outcome::Deleted(removed))
}

/// The state a write was decided on.
struct Read<'a> {
    revision: Revision,
    /// The object read; none after an edit in place, unless the write's allocations compare
    /// it with the new version (an edit always changes the object).
    old: Option<&'a Value>,
    from_cache: bool,
}

async fn write(
    state: &ApiState,
    site: &Site<'_>,
    read: Read<'_>,
    mut new: Value,
    precondition: Option<Revision>,
) -> Result<Outcome, Failed> {
    let expected = precondition.unwrap_or(read.revision);
    // A write that changes nothing is not a write: no new revision, no watch event. Field
    // order does not count, nor do the times of managedFields entries (upstream keeps the old
    // ones when nothing else changed), so a controller re-applying the same object settles.
    if let Some(old) = read.old
        && expected == read.revision
        && unchanged(old, &new)
    {
        if read.from_cache {
            return Err(Failed::Stale);
        }
        let meta = meta_mut(&mut new)?;
        meta.insert("resourceVersion".into(), json!(read.revision.to_string()));
        if let Some(fields) = old.pointer("/metadata/managedFields") {
            meta.insert("managedFields".into(), fields.clone());
        }
        return Ok(Outcome::Written(new, None));
    }
    if site.dry_run {
        return Ok(Outcome::Written(new, None));
    }
    let taken = match read.old {
        Some(old) => allocation::allocate_update(state, site.info, &mut new, old).await?,
        None => allocation::Allocation::default(),
    };
    let encoded = storage::encode(&new)?;
    let revision = match state
        .store
        .update(site.key, encoded.bytes.clone(), expected)
        .await
    {
        Ok(revision) => revision,
        Err(error) => {
            allocation::release(state, taken).await;
            return Err(Failed::Store(error));
        }
    };
    if let Some(old) = read.old {
        allocation::release_replaced(state, old, &new).await;
    }
    stamp(&mut new, revision)?;
    Ok(Outcome::Written(
        new,
        Some(storage::Stored { encoded, revision }),
    ))
}

/// Whether `new` says what `stored` says: the same fields (in any order), but for the resource
/// version and the times of managedFields entries.
fn unchanged(stored: &Value, new: &Value) -> bool {
    let (Some(stored), Some(new)) = (stored.as_object(), new.as_object()) else {
        return stored == new;
    };
    same_fields(stored, new, |key, a, b| match key {
        "metadata" => match (a.as_object(), b.as_object()) {
            (Some(a), Some(b)) => same_fields(a, b, |key, a, b| match key {
                "resourceVersion" => true,
                "managedFields" => same_entries(a, b),
                _ => a == b,
            }),
            _ => a == b,
        },
        _ => a == b,
    })
}

/// Whether two managedFields lists say the same but for their entries' times.
fn same_entries(a: &Value, b: &Value) -> bool {
    match (a.as_array(), b.as_array()) {
        (Some(a), Some(b)) => {
            a.len() == b.len()
                && a.iter()
                    .zip(b)
                    .all(|(x, y)| match (x.as_object(), y.as_object()) {
                        (Some(x), Some(y)) => {
                            same_fields(x, y, |key, p, q| key == "time" || p == q)
                        }
                        _ => x == y,
                    })
        }
        _ => a == b,
    }
}

/// Whether `info` is the CustomResourceDefinition resource.
pub fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.kind == "CustomResourceDefinition"
}

/// After a CRD write: serve what it now defines before answering.
pub async fn crd_written(state: &ApiState, info: &ResourceInfo) {
    if is_crd(info)
        && let Err(error) = crd::refresh(state).await
    {
        tracing::warn!(%error, "refreshing custom resources failed; the CRD watch retries");
    }
}

/// The hooks that follow a committed write of `info`.
async fn after_commit(state: &ApiState, info: &ResourceInfo, outcome: &Outcome) {
    if let Outcome::Deleted(object) = outcome {
        allocation::release_for(state, object).await;
    }
    crd_written(state, info).await;
}

/// Upstream's UID precondition (`storage.Preconditions.Check`): the stored `object` must have
/// `uid`, or the write is a 409 naming both. A PUT whose body carries a uid asks for it, as
/// does a delete with `preconditions.uid`.
pub fn check_uid_precondition(uid: &str, object: &Value, target: &Target) -> Result<(), ApiError> {
    let stored = crate::objects::meta_str(object, "uid").unwrap_or_default();
    if stored == uid {
        return Ok(());
    }
    Err(ApiError::ConflictMessage {
        target: target.clone(),
        message: format!(
            "Operation cannot be fulfilled on {} \"{}\": Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}",
            target.qualified(),
            target.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use skiff_store::Store;
    use skiff_store::memory::MemoryStore;

    use super::*;
    use crate::state::Inner;

    const KEY: &str = "/registry/core/configmaps/default/c";

    fn config_map(value: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c","namespace":"default"}},"data":{{"k":"{value}"}}}}"#
        ))
    }

    /// A server whose watch cache holds `c` at `k: old`, while its store has moved on to
    /// `k: new` at a later revision: a cache that has not caught up yet.
    async fn stale_cache() -> (ApiState, Revision) {
        let behind: Arc<dyn Store> = Arc::new(MemoryStore::new());
        behind.create(KEY, config_map("old")).await.unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let first = store.create(KEY, config_map("old")).await.unwrap();
        let current = store.update(KEY, config_map("new"), first).await.unwrap();
        let watch_cache = crate::watch_cache::WatchCache::start(behind, 100)
            .await
            .unwrap();
        for _ in 0..100 {
            if watch_cache.get(KEY).is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (state(store, watch_cache), current)
    }

    fn state(store: Arc<dyn Store>, watch_cache: Arc<crate::watch_cache::WatchCache>) -> ApiState {
        ApiState::new(Inner {
            store,
            registry: crate::registry::Registry::builtin(),
            clock: Arc::new(crate::clock::SystemClock),
            tokens: Arc::new(crate::tokens::Tokens::ephemeral().unwrap()),
            watch_cache,
            advertise: "127.0.0.1:6443".into(),
            recent_deletions: crate::recent_deletions::RecentDeletions::default(),
            recent_writes: crate::recent_writes::RecentWrites::default(),
            kubelet: None,
            join_secret: None,
            ca_cert: None,
            openapi: std::sync::RwLock::new(None),
            service_network: crate::allocation::ServiceNetwork::default(),
        })
    }

    fn site<'a>(info: &'a ResourceInfo, target: &'a Target) -> Site<'a> {
        Site {
            info,
            key: KEY,
            target,
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn a_write_or_edit_decided_on_a_stale_cached_copy_should_be_made_again_on_the_stores() {
        for edit in [false, true] {
            let (state, current) = stale_cache().await;
            let target = Target::new("", "configmaps", "c");
            let info = state.registry.find("", "v1", "configmaps").unwrap();
            let mut seen = Vec::new();
            let outcome = guaranteed_update(&state, site(&info, &target), |revision, old| {
                seen.push((revision, old["data"]["k"].clone()));
                let add = |object: &mut Value| object["data"]["k2"] = json!("added");
                if edit {
                    return Ok(Decision::Edit(Box::new(add)));
                }
                let mut new = old.clone();
                add(&mut new);
                Ok(Decision::Write {
                    object: new,
                    precondition: None,
                })
            })
            .await
            .unwrap();
            assert_eq!(seen.len(), 2, "edit {edit}: {seen:?}");
            assert_eq!(seen[0].1, "old");
            assert_eq!(seen[1], (current, json!("new")));
            let expected = json!({"k": "new", "k2": "added"});
            assert_eq!(outcome.object()["data"], expected);
            let (kv, _) = state.store.get(KEY, None).await.unwrap();
            let stored = storage::decode(&kv.unwrap()).unwrap();
            assert_eq!(stored["data"], expected);
            assert_eq!(
                stored["metadata"]["resourceVersion"],
                outcome.object()["metadata"]["resourceVersion"]
            );
        }
    }

    #[tokio::test]
    async fn an_edit_of_a_service_should_allocate_and_give_back_its_node_ports() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let key = "/registry/core/services/default/s";
        let service = r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"s","namespace":"default"},"spec":{"type":"ClusterIP","ports":[{"port":80,"protocol":"TCP"}]}}"#;
        store.create(key, Bytes::from(service)).await.unwrap();
        let watch_cache = crate::watch_cache::WatchCache::start(Arc::clone(&store), 100)
            .await
            .unwrap();
        let state = state(store, watch_cache);
        let info = state.registry.find("", "v1", "services").unwrap();
        let target = Target::new("", "services", "s");
        let site = Site {
            key,
            ..site(&info, &target)
        };
        let set_type = |kind: &'static str| {
            move |_: Revision, _: &Value| {
                Ok(Decision::Edit(Box::new(move |service: &mut Value| {
                    service["spec"]["type"] = json!(kind);
                    if let Some(port) = service["spec"]["ports"][0].as_object_mut() {
                        port.remove("nodePort");
                    }
                })))
            }
        };
        let taken = guaranteed_update(&state, site, set_type("NodePort"))
            .await
            .unwrap();
        let port = taken.object()["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .expect("a NodePort is allocated");
        let port_key = format!("/registry/skiff/servicenodeports/{port}");
        assert!(state.store.get(&port_key, None).await.unwrap().0.is_some());
        guaranteed_update(&state, site, set_type("ClusterIP"))
            .await
            .unwrap();
        assert!(
            state.store.get(&port_key, None).await.unwrap().0.is_none(),
            "the NodePort is given back"
        );
    }

    #[tokio::test]
    async fn a_write_that_changes_nothing_on_a_stale_copy_should_still_be_written() {
        let (state, _) = stale_cache().await;
        let target = Target::new("", "configmaps", "c");
        let info = state.registry.find("", "v1", "configmaps").unwrap();
        // Sets k back to "old": nothing, on the cached copy; a change, on the store's.
        let outcome = guaranteed_update(&state, site(&info, &target), |_, old| {
            let mut new = old.clone();
            new["data"]["k"] = json!("old");
            Ok(Decision::Write {
                object: new,
                precondition: None,
            })
        })
        .await
        .unwrap();
        let (kv, _) = state.store.get(KEY, None).await.unwrap();
        assert_eq!(storage::decode(&kv.unwrap()).unwrap()["data"]["k"], "old");
        assert_eq!(outcome.object()["data"]["k"], "old");
    }

    #[tokio::test]
    async fn a_precondition_on_the_stores_revision_should_hold_though_the_cache_is_behind() {
        let (state, current) = stale_cache().await;
        let target = Target::new("", "configmaps", "c");
        let info = state.registry.find("", "v1", "configmaps").unwrap();
        let mut refused_once = false;
        let outcome = guaranteed_update(&state, site(&info, &target), |revision, old| {
            // A verb's own check, made on what it reads: the stale copy fails it.
            if old["data"]["k"] != "new" {
                refused_once = true;
                return Err(ApiError::Conflict(target.clone()));
            }
            assert_eq!(revision, current);
            let mut new = old.clone();
            new["data"]["k"] = json!("newer");
            Ok(Decision::Write {
                object: new,
                precondition: Some(current),
            })
        })
        .await
        .unwrap();
        assert!(refused_once);
        assert_eq!(outcome.object()["data"]["k"], "newer");
    }

    #[test]
    fn a_write_differing_only_in_key_order_or_managed_field_times_should_be_unchanged() {
        let stored = json!({"kind":"Secret","metadata":{"name":"s","resourceVersion":"7","managedFields":[{"manager":"m","time":"2026-01-01T00:00:00Z"}]},"type":"Opaque","data":{"k":"dg=="}});
        let reordered = json!({"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"m","time":"2026-01-01T00:00:09Z"}]},"data":{"k":"dg=="},"type":"Opaque"});
        assert!(unchanged(&stored, &reordered));
        let changed = json!({"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"m","time":"2026-01-01T00:00:09Z"}]},"data":{"k":"dw=="},"type":"Opaque"});
        assert!(!unchanged(&stored, &changed));
        let other_manager = json!({"kind":"Secret","metadata":{"name":"s","managedFields":[{"manager":"n","time":"2026-01-01T00:00:00Z"}]},"type":"Opaque","data":{"k":"dg=="}});
        assert!(!unchanged(&stored, &other_manager));
        let more_metadata = json!({"kind":"Secret","metadata":{"name":"s","uid":"u","managedFields":[{"manager":"m","time":"2026-01-01T00:00:00Z"}]},"type":"Opaque","data":{"k":"dg=="}});
        assert!(!unchanged(&stored, &more_metadata));
    }

    #[test]
    fn a_deleting_object_without_finalizers_should_count_as_finalized() {
        let deleting = json!({"metadata": {"deletionTimestamp": "t", "finalizers": []}});
        assert!(finalized(&deleting));
        let held = json!({"metadata": {"deletionTimestamp": "t", "finalizers": ["x"]}});
        assert!(!finalized(&held));
        let namespace = json!({"kind": "Namespace", "metadata": {"deletionTimestamp": "t"},
            "spec": {"finalizers": ["kubernetes"]}});
        assert!(!finalized(&namespace));
        assert!(!finalized(&json!({"metadata": {}})));
        let graceful =
            json!({"metadata": {"deletionTimestamp": "t", "deletionGracePeriodSeconds": 30}});
        assert!(!finalized(&graceful), "a pod in its grace period stays");
        let over = json!({"metadata": {"deletionTimestamp": "t", "deletionGracePeriodSeconds": 0}});
        assert!(finalized(&over));
    }
}
