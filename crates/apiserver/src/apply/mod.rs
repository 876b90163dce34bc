//! Server-side apply and field ownership (`metadata.managedFields`).
//!
//! Every write records which manager set which fields: an apply replaces its manager's `Apply`
//! entry with the fields of the applied configuration; a create, update or patch gives the
//! fields it changed to its manager's `Update` entry and takes them from everyone else. An apply
//! that would change a field another manager owns is a 409 naming each field, unless `force`
//! takes them over; fields a manager stops applying are removed when no one else owns them.
//! This is a field-set model of upstream's structured-merge-diff, hand-written because no Rust
//! crate implements it.

pub mod fields;
pub mod shape;
mod update;

use serde_json::{Map, Value, json};
use skiff_apimachinery::ApiError;
use skiff_apimachinery::status::{Cause, Target};

use fields::{
    FieldSet, Path, Paths, Sink, Tree, collect, from_fields_v1, get, remove, to_fields_v1,
};
use shape::{Kind, Shape};

/// One `managedFields` entry.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Value,
    subresource: String,
    fields: FieldSet,
}

impl Entry {
    fn new(writer: &Writer<'_>, operation: &str, fields: FieldSet) -> Entry {
        Entry {
            manager: writer.manager.clone(),
            operation: operation.to_string(),
            api_version: writer.api_version.clone(),
            time: json!(writer.now),
            subresource: writer.subresource.to_string(),
            fields,
        }
    }

    fn parse(value: &Value) -> Option<Entry> {
        Some(Entry {
            manager: value.get("manager")?.as_str()?.to_string(),
            operation: value.get("operation")?.as_str()?.to_string(),
            api_version: value
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            time: value.get("time").cloned().unwrap_or(Value::Null),
            subresource: value
                .get("subresource")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            fields: value
                .get("fieldsV1")
                .map(from_fields_v1)
                .unwrap_or_default(),
        })
    }

    fn to_value(&self) -> Value {
        entry_value(
            &self.manager,
            &self.operation,
            &self.api_version,
            self.time.clone(),
            &self.subresource,
            to_fields_v1(&self.fields),
        )
    }

    fn same(&self, manager: &str, operation: &str, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// Who is writing, and how.
pub struct Writer<'a> {
    /// The field manager.
    pub manager: String,
    /// The object's apiVersion as written.
    pub api_version: String,
    /// Now, RFC 3339.
    pub now: &'a str,
    /// `status`, or empty for the main resource.
    pub subresource: &'a str,
    /// The write resets `status` (a write of the main resource of a kind with a status
    /// subresource), so it takes no status field, as upstream strips reset fields from
    /// ownership: a pod's creator does not own the `status.phase` its defaults set.
    pub resets_status: bool,
    /// The write changes nothing but `status` (a built-in kind's status subresource: the rest
    /// is kept as stored, and a default it gains belongs to no one), so only `status` is
    /// compared and only status fields are taken.
    pub only_status: bool,
}

impl Writer<'_> {
    /// Whether this write may take the field `path`: not a status field it resets, nor a
    /// field outside the status it writes only.
    fn may_own(&self, path: &Path) -> bool {
        let in_status = path.first().is_some_and(|f| f == "f:status");
        !(self.resets_status && in_status || self.only_status && !in_status)
    }
}

/// A `managedFields` entry as stored. Built field by field: `json!` would copy `fields_v1`
/// (it serializes its values), and an object's first entry names every field it sets.
fn entry_value(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: Value,
    subresource: &str,
    fields_v1: Value,
) -> Value {
    let mut entry = Map::with_capacity(7);
    entry.insert("manager".into(), Value::String(manager.into()));
    entry.insert("operation".into(), Value::String(operation.into()));
    entry.insert("apiVersion".into(), Value::String(api_version.into()));
    entry.insert("time".into(), time);
    entry.insert("fieldsType".into(), Value::String("FieldsV1".into()));
    entry.insert("fieldsV1".into(), fields_v1);
    if !subresource.is_empty() {
        entry.insert("subresource".into(), Value::String(subresource.into()));
    }
    Value::Object(entry)
}

fn entries(object: &Value) -> Vec<Entry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::parse)
        .collect()
}

fn store_entries(object: &mut Value, entries: Vec<Entry>) {
    let values: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(Entry::to_value)
        .collect();
    set_entries(object, values);
}

fn set_entries(object: &mut Value, values: Vec<Value>) {
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if values.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(values));
        }
    }
}

/// The fields an object sets that managers own: everything but the server's own metadata.
fn owned_fields(object: &Value, shape: &Shape) -> FieldSet {
    let mut out = Paths::default();
    walk_owned(object, shape, false, &mut out);
    out.set
}

/// Walks the fields of `object` that managers own into `out`; `status` too unless
/// `without_status`.
fn walk_owned(object: &Value, shape: &Shape, without_status: bool, out: &mut impl Sink) {
    let root = match object.as_object() {
        Some(map) if matches!(shape.kind(object), Kind::Struct | Kind::Map) => map,
        _ => return collect(object, shape, out),
    };
    for (key, value) in root {
        match (key.as_str(), value) {
            ("kind" | "apiVersion", _) => {}
            ("status", _) if without_status => {}
            ("metadata", Value::Object(meta)) => {
                let meta_shape = shape.child("metadata");
                out.push("f:metadata".into());
                for (key, value) in meta
                    .iter()
                    .filter(|(k, _)| update::OWNED_METADATA.contains(&k.as_str()))
                {
                    out.push(format!("f:{key}"));
                    collect(value, &meta_shape.child(key), out);
                    out.pop();
                }
                out.pop();
            }
            _ => {
                out.push(format!("f:{key}"));
                collect(value, &shape.child(key), out);
                out.pop();
            }
        }
    }
}

/// The managedFields of a new object that names none: one entry of `writer`'s with every field
/// it may own, the FieldsV1 tree built as the object is walked.
fn record_create(new: &mut Value, shape: &Shape, writer: &Writer<'_>) {
    let mut tree = Tree::default();
    walk_owned(new, shape, writer.resets_status, &mut tree);
    let entries = if tree.is_empty() {
        Vec::new()
    } else {
        vec![entry_value(
            &writer.manager,
            "Update",
            &writer.api_version,
            json!(writer.now),
            writer.subresource,
            tree.into_fields_v1(),
        )]
    };
    set_entries(new, entries);
}

/// The manager a request without `fieldManager` writes as: its user agent's program name.
pub fn default_manager(user_agent: Option<&str>) -> String {
    user_agent
        .and_then(|ua| ua.split('/').next())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

/// Records a create, update or patch by `writer`: the fields that differ from `old` (all fields
/// for a create) become the writer's, and no one else's. A write of the main resource that sets
/// `managedFields` to something new (kubectl's upgrade from client-side to server-side apply
/// does, with a JSON patch) starts from those entries, as upstream's; otherwise from the
/// stored ones, so a client that drops the field cannot erase ownership.
pub fn record_update(new: &mut Value, old: Option<&Value>, shape: &Shape, writer: &Writer<'_>) {
    let given = new.pointer("/metadata/managedFields");
    let gives_entries = given
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty());
    let replaced = writer.subresource.is_empty()
        && gives_entries
        && given != old.and_then(|o| o.pointer("/metadata/managedFields"));
    // An update of a stored object walks only what it changed (`update.rs`), unless the
    // entries are the caller's own.
    if let Some(old) = old.filter(|_| !replaced)
        && update::record(new, old, shape, writer)
    {
        return;
    }
    if old.is_none() && !gives_entries {
        return record_create(new, shape, writer);
    }
    record_whole(new, old, shape, writer, replaced);
}

/// [`record_update`] by a walk of the whole object: every field of `new` is looked up in `old`.
/// `replaced`: the entries are `new`'s own (else `old`'s).
fn record_whole(
    new: &mut Value,
    old: Option<&Value>,
    shape: &Shape,
    writer: &Writer<'_>,
    replaced: bool,
) {
    let mut list = match old {
        Some(old) if !replaced => entries(old),
        _ => entries(new),
    };
    let new_fields = owned_fields(new, shape);
    let changed: FieldSet = match old {
        None => new_fields
            .iter()
            .filter(|p| writer.may_own(p))
            .cloned()
            .collect(),
        Some(old) => new_fields
            .iter()
            .filter(|p| writer.may_own(p))
            .filter(|p| {
                // A map or list item itself (`.`) changes only by appearing.
                if p.last().is_some_and(|e| e == ".") {
                    get(old, p).is_none()
                } else {
                    get(new, p) != get(old, p)
                }
            })
            .cloned()
            .collect(),
    };
    for entry in &mut list {
        // Fields gone from the object are owned by no one.
        entry.fields.retain(|p| has_member(&new_fields, p));
        if !entry.same(&writer.manager, "Update", writer.subresource) {
            entry.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| e.same(&writer.manager, "Update", writer.subresource))
        {
            Some(entry) => {
                entry.fields.extend(changed);
                entry.time = json!(writer.now);
                entry.api_version.clone_from(&writer.api_version);
            }
            None => list.push(Entry::new(writer, "Update", changed)),
        }
    }
    store_entries(new, list);
}

/// Whether `set` holds the field `path`. A map or list item is one member whether it is empty
/// (`[f:data]`, FieldsV1 `f:data: {}`) or has children (`[f:data, .]`, FieldsV1
/// `f:data: {".": {}, ...}`): an apply of `data: {}` and then of `data: {k: v}` keeps `data`.
fn has_member(set: &FieldSet, path: &Path) -> bool {
    if set.contains(path) {
        return true;
    }
    match path.split_last() {
        Some((last, parent)) if last == "." => set.contains(parent),
        _ => {
            let mut with_dot = path.clone();
            with_dot.push(".".to_string());
            set.contains(&with_dot)
        }
    }
}

/// Shows a path as upstream names fields in conflicts: `.spec.replicas`,
/// `.spec.containers[name="web"].image`.
fn show(path: &Path) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(field) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(field);
        } else if let Some(key) = element.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let parts: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(value) = element.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Merges an applied configuration into the live object by the schema's list and map rules.
fn merge(live: &mut Value, applied: &Value, shape: &Shape) {
    match (shape.kind(applied), live, applied) {
        (Kind::Struct | Kind::Map, Value::Object(live), Value::Object(applied)) => {
            for (key, value) in applied {
                match live.get_mut(key) {
                    Some(existing) if !value.is_null() => merge(existing, value, &shape.child(key)),
                    _ => {
                        live.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Kind::Set, Value::Array(live), Value::Array(applied)) => {
            for item in applied {
                if !live.contains(item) {
                    live.push(item.clone());
                }
            }
        }
        (Kind::MapList(keys), Value::Array(live), Value::Array(applied)) => {
            let item_shape = shape.items();
            for item in applied {
                let matches = |l: &Value| keys.iter().all(|k| l.get(k) == item.get(k));
                match live.iter_mut().find(|l| matches(l)) {
                    Some(existing) => merge(existing, item, &item_shape),
                    None => live.push(item.clone()),
                }
            }
        }
        (_, live, applied) => *live = applied.clone(),
    }
}

/// Server-side apply of `applied` by `writer` onto `live` (`None`: the object does not exist).
/// Returns the object to store, with managedFields updated.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    shape: &Shape,
    writer: &Writer<'_>,
    force: bool,
    target: &Target,
) -> Result<Value, ApiError> {
    let applied_fields = owned_fields(applied, shape);
    let Some(live) = live else {
        let mut object = applied.clone();
        store_entries(
            &mut object,
            vec![Entry::new(writer, "Apply", applied_fields)],
        );
        return Ok(object);
    };
    let mut list = entries(live);
    let mut conflicts = Vec::new();
    for entry in list.iter().filter(|e| e.manager != writer.manager) {
        for path in applied_fields.intersection(&entry.fields) {
            // A map or list item itself (`.`) is shared, never a conflicting value.
            if path.last().is_some_and(|e| e != ".") && get(live, path) != get(applied, path) {
                conflicts.push(Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!(
                        "conflict with \"{}\"{}{}",
                        entry.manager,
                        if entry.operation == "Apply" {
                            String::new()
                        } else {
                            format!(" using {}", entry.api_version)
                        },
                        if entry.subresource.is_empty() {
                            String::new()
                        } else {
                            format!(" with subresource \"{}\"", entry.subresource)
                        }
                    ),
                    field: show(path),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApiError::ApplyConflict {
            target: target.clone(),
            causes: conflicts,
        });
    }
    let taken: FieldSet = conflicts
        .iter()
        .flat_map(|c| applied_fields.iter().filter(move |p| show(p) == c.field))
        .cloned()
        .collect();
    for entry in &mut list {
        if entry.manager != writer.manager {
            entry.fields.retain(|p| !taken.contains(p));
        }
    }
    let mut object = live.clone();
    merge(&mut object, applied, shape);
    // Fields this manager applied before and no longer does, owned by no one else, go.
    let previous = list
        .iter()
        .find(|e| e.same(&writer.manager, "Apply", writer.subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others: FieldSet = list
        .iter()
        .filter(|e| !e.same(&writer.manager, "Apply", writer.subresource))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut dropped: Vec<&Path> = previous
        .iter()
        .filter(|p| !has_member(&applied_fields, p))
        .filter(|p| {
            !others
                .iter()
                .any(|o| o.starts_with(p.strip_suffix(&[".".to_string()]).unwrap_or(p)))
        })
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for path in &dropped {
        remove(&mut object, path);
    }
    // A map or list emptied by those removals goes too, unless someone owns it.
    let owned: FieldSet = others.union(&applied_fields).cloned().collect();
    for path in dropped {
        for end in (1..path.len()).rev() {
            let ancestor = &path[..end];
            if ancestor.last().is_some_and(|e| !e.starts_with("f:")) {
                continue;
            }
            let empty = match get(&object, ancestor) {
                Some(Value::Object(map)) => map.is_empty(),
                Some(Value::Array(items)) => items.is_empty(),
                _ => false,
            };
            if !empty || owned.iter().any(|o| o.starts_with(ancestor)) {
                break;
            }
            remove(&mut object, ancestor);
        }
    }
    list.retain(|e| !e.same(&writer.manager, "Apply", writer.subresource));
    list.push(Entry::new(writer, "Apply", applied_fields));
    store_entries(&mut object, list);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer {
            manager: manager.to_string(),
            api_version: "apps/v1".into(),
            now: "2026-01-01T00:00:00Z",
            subresource: "",
            resets_status: false,
            only_status: false,
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image}]}}}})
    }

    #[test]
    fn apply_should_record_fields_conflict_and_force() {
        let shape = Shape::builtin("apps", "Deployment");
        let target = Target::new("apps", "deployments", "web");
        let created = apply(
            None,
            &deployment(1, "a"),
            &shape,
            &writer("alice"),
            false,
            &target,
        )
        .unwrap();
        let fields = &created["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(
            fields["f:metadata"]["f:labels"],
            json!({".": {}, "f:app": {}})
        );
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        // Bob changes replicas: a conflict naming the field, then forced.
        let error = apply(
            Some(&created),
            &deployment(3, "a"),
            &shape,
            &writer("bob"),
            false,
            &target,
        )
        .unwrap_err();
        let ApiError::ApplyConflict { causes, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, ".spec.replicas");
        assert_eq!(
            error.to_string(),
            "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
        );
        let forced = apply(
            Some(&created),
            &deployment(3, "a"),
            &shape,
            &writer("bob"),
            true,
            &target,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        let alice = &forced["metadata"]["managedFields"][0];
        assert_eq!(alice["manager"], "alice");
        assert!(alice["fieldsV1"]["f:spec"].get("f:replicas").is_none());
    }

    #[test]
    fn fields_no_longer_applied_should_be_removed_unless_shared() {
        let shape = Shape::builtin("", "ConfigMap");
        let target = Target::new("", "configmaps", "c");
        let first = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let live = apply(None, &first, &shape, &writer("alice"), false, &target).unwrap();
        let second = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let after = apply(
            Some(&live),
            &second,
            &shape,
            &writer("alice"),
            false,
            &target,
        )
        .unwrap();
        assert_eq!(after["data"], json!({"a": "1"}));
    }

    #[test]
    fn a_create_should_record_the_entry_the_whole_walk_records() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "d", "uid": "u", "labels": {"app": "web", "tier": ""},
                "annotations": {}, "finalizers": [], "ownerReferences": [{"uid": "o", "name": "rs", "kind": "ReplicaSet", "apiVersion": "apps/v1", "controller": true}]},
            "spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 53, "protocol": "UDP"}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                 "args": ["-v", "-v"], "resources": {}},
                {"name": "side", "image": "busybox", "command": []}],
                "volumes": [{"name": "data", "emptyDir": {}}], "nodeSelector": {"disk": "ssd"},
                "tolerations": [{"key": "k", "operator": "Exists"}, {"key": "k", "operator": "Exists"}]},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}});
        let config_map =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        let empty = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": []}});
        let cases = [
            (pod, Shape::builtin("", "Pod")),
            (deployment(2, "a"), Shape::builtin("apps", "Deployment")),
            (config_map, Shape::builtin("", "ConfigMap")),
            (empty, Shape::builtin("", "ConfigMap")),
        ];
        for (object, shape) in cases {
            for resets_status in [false, true] {
                let writer = Writer {
                    resets_status,
                    ..writer("creator")
                };
                let mut whole = object.clone();
                record_whole(&mut whole, None, &shape, &writer, false);
                let mut create = object.clone();
                record_create(&mut create, &shape, &writer);
                assert_eq!(
                    serde_json::to_string(&create).unwrap(),
                    serde_json::to_string(&whole).unwrap()
                );
            }
        }
    }

    #[test]
    fn updates_should_take_the_fields_they_change() {
        let shape = Shape::builtin("", "ConfigMap");
        let mut created = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        record_update(
            &mut created,
            None,
            &shape,
            &Writer {
                manager: "kubectl-create".into(),
                api_version: "v1".into(),
                now: "t",
                subresource: "",
                resets_status: false,
                only_status: false,
            },
        );
        let mut edited = created.clone();
        edited["data"]["a"] = json!("2");
        edited["data"]["b"] = json!("3");
        record_update(
            &mut edited,
            Some(&created),
            &shape,
            &Writer {
                manager: "kubectl-edit".into(),
                api_version: "v1".into(),
                now: "t",
                subresource: "",
                resets_status: false,
                only_status: false,
            },
        );
        let managed = edited["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(managed.len(), 2);
        assert_eq!(managed[0]["fieldsV1"], json!({"f:data": {".": {}}}));
        assert_eq!(
            managed[1]["fieldsV1"],
            json!({"f:data": {"f:a": {}, "f:b": {}}})
        );
    }
}
