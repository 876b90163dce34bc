//! Field ownership of an update or patch of a stored object, walking only what changed.
//!
//! The rules are [`super::record_update`]'s: the fields the write changed become its manager's
//! `Update` entry's and no one else's, and fields gone from the object are owned by no one. A
//! whole-object walk computes every field of the new object, then looks each one up in the old
//! one; here one walk of new and old together stops at equal subtrees and finds the *regions*
//! that differ. Only there can a field have changed, appeared or gone, so only there are the
//! fields collected, compared and checked for membership, and only entries that own something in
//! a region are parsed and rewritten: every other entry is kept as stored (the stored entries
//! name only fields the stored object has, and nothing outside the regions changed).
//!
//! A list whose items cannot be told apart by their keys (two items with the same key fields)
//! makes the regions unreliable: [`record`] then answers `false` and the caller walks the whole
//! object.

use serde_json::{Map, Value};

use super::fields::{
    FieldSet, Path, find_keyed, key_fields, key_text, position_keyed as first_match,
};
use super::shape::{Kind, Shape};
use super::{Entry, Writer, has_member};

/// The fields of the object's metadata that managers own (the rest is the server's).
pub const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

/// Records the update of `old` into `new` by `writer`, starting from `old`'s entries. Returns
/// `false`, changing nothing, when a list's items are ambiguous (see the module's note).
pub fn record(new: &mut Value, old: &Value, shape: &Shape, writer: &Writer<'_>) -> bool {
    let (Some(new_map), Some(old_map)) = (new.as_object(), old.as_object()) else {
        return false;
    };
    let mut walk = Walk::default();
    if writer.only_status {
        walk.field(
            "status",
            new_map.get("status"),
            old_map.get("status"),
            shape,
            &mut Vec::new(),
        );
    } else {
        walk.roots(new_map, old_map, shape);
    }
    if walk.ambiguous {
        return false;
    }
    for root in walk.found.clone() {
        let root = &root;
        let new_node = node(new, root);
        let old_node = node(old, root);
        let mut prefix = root.clone();
        walk.collect_changed(new_node, old_node, &shape_at(shape, root), &mut prefix);
    }
    if walk.ambiguous {
        return false;
    }
    walk.changed.retain(|path| writer.may_own(path));
    let stored: &[Value] = old
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    // Entries kept as stored are moved from `new` when it holds the stored ones (a patch's
    // copy, a status write), not copied.
    let mut given = match new.pointer_mut("/metadata/managedFields") {
        Some(Value::Array(given)) if given.as_slice() == stored => std::mem::take(given),
        _ => Vec::new(),
    };
    let entries = walk.entries(stored, &mut given, new, shape, writer);
    if let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
    true
}

/// What the walk found.
#[derive(Default)]
struct Walk {
    /// The paths of the regions where new and old differ.
    found: Vec<Path>,
    /// Every owned field of the new object inside those regions.
    region: FieldSet,
    /// The fields inside them whose value changed (or that appeared).
    changed: FieldSet,
    /// A keyed list with two items of the same key was met.
    ambiguous: bool,
}

impl Walk {
    /// Finds the regions of the object's owned fields (all but `kind`, `apiVersion` and the
    /// server's metadata) where `new` and `old` differ.
    fn roots(&mut self, new: &Map<String, Value>, old: &Map<String, Value>, shape: &Shape) {
        let mut prefix = Vec::new();
        for (key, value) in new {
            match key.as_str() {
                "kind" | "apiVersion" => {}
                "metadata" => self.metadata_roots(Some(value), old.get(key), shape, &mut prefix),
                _ => self.field(key, Some(value), old.get(key), shape, &mut prefix),
            }
        }
        for (key, value) in old.iter().filter(|(k, _)| !new.contains_key(*k)) {
            match key.as_str() {
                "kind" | "apiVersion" => {}
                "metadata" => self.metadata_roots(None, Some(value), shape, &mut prefix),
                _ => self.field(key, None, Some(value), shape, &mut prefix),
            }
        }
    }

    fn metadata_roots(
        &mut self,
        new: Option<&Value>,
        old: Option<&Value>,
        shape: &Shape,
        prefix: &mut Path,
    ) {
        let shape = shape.child("metadata");
        prefix.push("f:metadata".into());
        for key in OWNED_METADATA {
            let new = new.and_then(|m| m.get(key));
            let old = old.and_then(|m| m.get(key));
            self.field(key, new, old, &shape, prefix);
        }
        prefix.pop();
    }

    /// Diffs field `key` of a struct or map.
    fn field(
        &mut self,
        key: &str,
        new: Option<&Value>,
        old: Option<&Value>,
        parent: &Shape,
        prefix: &mut Path,
    ) {
        // Equal (or absent) fields hold no region: no shape or path needed for them.
        if new == old {
            return;
        }
        prefix.push(format!("f:{key}"));
        self.diff(new, old, &parent.child(key), prefix);
        prefix.pop();
    }

    /// Diffs two versions of the node at `prefix`, noting where they differ.
    fn diff(&mut self, new: Option<&Value>, old: Option<&Value>, shape: &Shape, prefix: &mut Path) {
        // [`Self::field`] has passed over equal nodes.
        let (Some(new), Some(old)) = (new, old) else {
            return self.found.push(prefix.clone());
        };
        let kind = shape.kind(new);
        if kind != shape.kind(old) {
            return self.found.push(prefix.clone());
        }
        match (kind, new, old) {
            (Kind::Struct | Kind::Map, Value::Object(n), Value::Object(o))
                if !n.is_empty() && !o.is_empty() =>
            {
                for (key, value) in n {
                    self.field(key, Some(value), o.get(key), shape, prefix);
                }
                for (key, value) in o.iter().filter(|(k, _)| !n.contains_key(*k)) {
                    self.field(key, None, Some(value), shape, prefix);
                }
            }
            (Kind::MapList(keys), Value::Array(n), Value::Array(o)) => {
                let item_shape = shape.items();
                let keyed = |items: &[Value]| -> Option<Vec<Map<String, Value>>> {
                    let keys: Vec<Map<String, Value>> =
                        items.iter().map(|i| key_fields(i, &keys)).collect();
                    // Each item must be the first (and only) one its key finds.
                    let unique = keys
                        .iter()
                        .enumerate()
                        .all(|(at, key)| first_match(items, key) == Some(at));
                    unique.then_some(keys)
                };
                let (Some(new_keys), Some(old_keys)) = (keyed(n), keyed(o)) else {
                    self.ambiguous = true;
                    return;
                };
                for (item, key) in n.iter().zip(&new_keys) {
                    prefix.push(key_text(key));
                    match first_match(o, key) {
                        Some(at) => self.diff_item(item, &o[at], &item_shape, prefix),
                        None => self.found.push(prefix.clone()),
                    }
                    prefix.pop();
                }
                for key in old_keys.iter().filter(|k| first_match(n, k).is_none()) {
                    prefix.push(key_text(key));
                    self.found.push(prefix.clone());
                    prefix.pop();
                }
            }
            _ => self.found.push(prefix.clone()),
        }
    }

    /// Diffs two versions of one keyed list item.
    fn diff_item(&mut self, new: &Value, old: &Value, shape: &Shape, prefix: &mut Path) {
        if new == old {
            return;
        }
        let (Value::Object(n), Value::Object(o)) = (new, old) else {
            return self.found.push(prefix.clone());
        };
        for (key, value) in n {
            self.field(key, Some(value), o.get(key), shape, prefix);
        }
        for (key, value) in o.iter().filter(|(k, _)| !n.contains_key(*k)) {
            self.field(key, None, Some(value), shape, prefix);
        }
    }

    /// Collects the owned fields of `new` (the node at `prefix`, if any) into the region, and
    /// those that differ from `old` into the changed fields: what a whole-object walk collects
    /// there, and what looking each field up in the old object finds changed.
    fn collect_changed(
        &mut self,
        new: Option<&Value>,
        old: Option<&Value>,
        shape: &Shape,
        prefix: &mut Path,
    ) {
        let Some(new) = new else { return };
        // A keyed list item or a set's value, named by its key or value.
        if let Some(last) = prefix.last()
            && (last.starts_with("k:") || last.starts_with("v:"))
        {
            if last.starts_with("v:") {
                self.insert(prefix.clone(), old.is_none());
            } else {
                self.item(new, old, shape, prefix);
            }
            return;
        }
        match (shape.kind(new), new) {
            (kind @ (Kind::Struct | Kind::Map), Value::Object(map)) if !map.is_empty() => {
                if kind == Kind::Map && !prefix.is_empty() {
                    let mut itself = prefix.clone();
                    itself.push(".".into());
                    self.insert(itself, old.is_none());
                }
                for (key, child) in map {
                    prefix.push(format!("f:{key}"));
                    self.collect_changed(
                        Some(child),
                        old.and_then(|o| o.get(key)),
                        &shape.child(key),
                        prefix,
                    );
                    prefix.pop();
                }
            }
            (Kind::Set, Value::Array(items)) => {
                let old_items = old.and_then(Value::as_array);
                for item in items {
                    prefix.push(format!("v:{item}"));
                    let kept = old_items.is_some_and(|o| o.contains(item));
                    self.insert(prefix.clone(), !kept);
                    prefix.pop();
                }
            }
            (Kind::MapList(keys), Value::Array(items)) => {
                let item_shape = shape.items();
                let old_items = old.and_then(Value::as_array);
                for item in items {
                    let key = key_fields(item, &keys);
                    if first_match(items, &key).is_none_or(|at| !std::ptr::eq(&items[at], item)) {
                        self.ambiguous = true;
                        return;
                    }
                    let old_item = old_items.and_then(|o| find_keyed(o, &key));
                    prefix.push(key_text(&key));
                    self.item(item, old_item, &item_shape, prefix);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    let changed = old != Some(new);
                    self.insert(prefix.clone(), changed);
                }
            }
        }
    }

    /// Collects one keyed list item (at `prefix`, its key element last).
    fn item(&mut self, new: &Value, old: Option<&Value>, shape: &Shape, prefix: &mut Path) {
        let mut itself = prefix.clone();
        itself.push(".".into());
        self.insert(itself, old.is_none());
        if let Value::Object(fields) = new {
            for (key, child) in fields {
                prefix.push(format!("f:{key}"));
                self.collect_changed(
                    Some(child),
                    old.and_then(|o| o.get(key)),
                    &shape.child(key),
                    prefix,
                );
                prefix.pop();
            }
        }
    }

    fn insert(&mut self, path: Path, changed: bool) {
        if changed {
            self.changed.insert(path.clone());
        }
        self.region.insert(path);
    }

    /// The new `managedFields`: `stored` with ownership inside the regions brought up to date.
    /// `given` is a copy of `stored` to take the entries kept from, or empty. A new entry takes
    /// the changed fields with it.
    fn entries(
        &mut self,
        stored: &[Value],
        given: &mut [Value],
        new: &Value,
        shape: &Shape,
        writer: &Writer<'_>,
    ) -> Vec<Value> {
        let mut out = Vec::with_capacity(stored.len() + 1);
        let mut recorded = self.changed.is_empty();
        for (at, value) in stored.iter().enumerate() {
            let mine = is_writers(value, writer);
            let touched = value
                .get("fieldsV1")
                .is_some_and(|tree| self.found.iter().any(|root| touches(tree, root)));
            let extend = mine && !recorded;
            if !touched && !extend {
                out.push(match given.get_mut(at) {
                    Some(copy) => copy.take(),
                    None => value.clone(),
                });
                continue;
            }
            let Some(mut entry) = Entry::parse(value) else {
                continue;
            };
            if touched {
                entry.fields.retain(|p| self.owned_in(new, shape, p));
                if !mine {
                    entry.fields.retain(|p| !self.changed.contains(p));
                }
            }
            if extend {
                entry.fields.extend(self.changed.iter().cloned());
                entry.time = Value::String(writer.now.to_string());
                entry.api_version.clone_from(&writer.api_version);
                recorded = true;
            }
            if !entry.fields.is_empty() {
                out.push(entry.to_value());
            }
        }
        if !recorded {
            let changed = std::mem::take(&mut self.changed);
            out.push(Entry::new(writer, "Update", changed).to_value());
        }
        out
    }

    /// Whether the new object still has the owned field `path`.
    fn owned_in(&self, new: &Value, shape: &Shape, path: &Path) -> bool {
        if self.found.iter().any(|root| path.starts_with(root)) {
            return has_member(&self.region, path);
        }
        let bare = match path.split_last() {
            Some((last, rest)) if last == "." => rest,
            _ => path.as_slice(),
        };
        if self
            .found
            .iter()
            .any(|root| root.len() > bare.len() && root.starts_with(bare))
        {
            return owns_node(new, shape, bare);
        }
        true
    }
}

/// Whether `value` is the writer's own `Update` entry.
fn is_writers(value: &Value, writer: &Writer<'_>) -> bool {
    let text = |field: &str| value.get(field).and_then(Value::as_str);
    text("manager") == Some(writer.manager.as_str())
        && text("operation") == Some("Update")
        && text("subresource").unwrap_or_default() == writer.subresource
}

/// Whether a FieldsV1 tree owns something at or under `root`, or owns an ancestor of it as a
/// whole.
fn touches(tree: &Value, root: &Path) -> bool {
    let mut node = tree;
    for element in root {
        let Some(map) = node.as_object() else {
            return false;
        };
        if map.is_empty() {
            return true;
        }
        match map.get(element) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}

/// Whether the node at `path` (an ancestor of a changed region) is itself an owned field of
/// `object`: a list item or set value that exists, a value that is not a non-empty struct,
/// map or list of items, or a non-empty granular map (owned as `.`).
fn owns_node(object: &Value, shape: &Shape, path: &[String]) -> bool {
    let Some(node) = node(object, path) else {
        return false;
    };
    if path
        .last()
        .is_some_and(|l| l.starts_with("k:") || l.starts_with("v:"))
    {
        return true;
    }
    match (shape_at(shape, path).kind(node), node) {
        (kind @ (Kind::Struct | Kind::Map), Value::Object(map)) if !map.is_empty() => {
            kind == Kind::Map && !path.is_empty()
        }
        (Kind::Set | Kind::MapList(_), Value::Array(_)) => false,
        _ => true,
    }
}

/// The node at `path` (no `.` elements).
fn node<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    super::fields::get(object, path)
}

/// The shape of the node at `path`, as the field walk reaches it.
fn shape_at(root: &Shape, path: &[String]) -> Shape {
    let mut shape = root.clone();
    for element in path {
        shape = match element.strip_prefix("f:") {
            Some(key) => shape.child(key),
            None => shape.items(),
        };
    }
    shape
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use serde_json::json;

    use super::super::record_whole;
    use super::*;

    fn writer<'a>(manager: &str, subresource: &'a str) -> Writer<'a> {
        Writer {
            manager: manager.into(),
            api_version: "v1".into(),
            now: "2026-12-04T00:00:00Z",
            subresource,
            resets_status: false,
            only_status: subresource == "status",
        }
    }

    fn pod() -> Value {
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": "p", "namespace": "default", "uid": "u",
                "labels": {"app": "web"}, "finalizers": ["a/b"]},
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}]},
                ],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "nodeSelector": {"disk": "ssd"},
            },
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False"}]},
        })
    }

    /// One random edit of a pod: what clients, controllers and kubelets do to pods.
    fn edit(object: &mut Value, rng: &mut StdRng) {
        let n = rng.random_range(0..100);
        match rng.random_range(0..16) {
            0 => object["metadata"]["labels"][format!("l{}", n % 4)] = json!(format!("v{n}")),
            1 => {
                if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
                    labels.remove(&format!("l{}", n % 4));
                }
            }
            2 => object["metadata"]["annotations"] = json!({format!("a{}", n % 3): "x"}),
            3 => {
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("annotations");
                }
            }
            4 => object["metadata"]["labels"] = json!({}),
            5 => object["spec"]["containers"][0]["image"] = json!(format!("nginx:{}", n % 3)),
            6 => {
                let containers = object["spec"]["containers"].as_array_mut().unwrap();
                let name = format!("side{n}");
                if containers.len() < 3 && !containers.iter().any(|c| c["name"] == name) {
                    containers.push(json!({"name": name, "image": "busybox"}));
                } else {
                    containers.pop();
                }
            }
            7 => {
                object["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80 + n % 2, "protocol": "TCP"}, {"containerPort": 9000, "protocol": "UDP"}])
            }
            8 => object["status"]["phase"] = json!(["Pending", "Running", "Succeeded"][n % 3]),
            9 => {
                let kind = ["Ready", "ContainersReady", "Initialized"][n % 3];
                let conditions = object["status"]["conditions"].as_array_mut().unwrap();
                match conditions.iter_mut().find(|c| c["type"] == kind) {
                    Some(c) => c["status"] = json!(if n % 2 == 0 { "True" } else { "False" }),
                    None => conditions.push(json!({"type": kind, "status": "True"})),
                }
            }
            10 => {
                object["status"]["containerStatuses"] = json!([{"name": "web", "ready": n % 2 == 0,
                "restartCount": n % 3, "state": {"running": {"startedAt": "t"}}}])
            }
            11 => object["metadata"]["finalizers"] = json!(["a/b", format!("c/{}", n % 2)]),
            12 => {
                object["spec"]["nodeSelector"] = if n % 2 == 0 {
                    json!({})
                } else {
                    json!({"disk": format!("d{n}")})
                }
            }
            13 => {
                object["spec"]["tolerations"] =
                    json!([{"key": format!("k{}", n % 2), "operator": "Exists"}])
            }
            14 => {
                if let Some(spec) = object["spec"].as_object_mut() {
                    spec.remove("nodeSelector");
                }
            }
            _ => {
                object["spec"]["containers"][0]["env"] =
                    json!([{"name": "A", "value": format!("{n}")}])
            }
        }
    }

    #[test]
    fn a_walk_of_what_changed_should_record_what_a_walk_of_the_whole_object_records() {
        let shape = Shape::builtin("", "Pod");
        let managers = [
            ("kubectl", ""),
            ("kubelet", "status"),
            ("controller", ""),
            ("kubectl", "status"),
        ];
        let pods = crate::test_support::builtin_info("pods");
        for seed in 0..40 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut stored = pod();
            record_whole(&mut stored, None, &shape, &writer("creator", ""), false);
            for step in 0..40 {
                let mut new = stored.clone();
                for _ in 0..rng.random_range(1..4) {
                    edit(&mut new, &mut rng);
                }
                let (manager, subresource) = managers[rng.random_range(0..managers.len())];
                let writer = writer(manager, subresource);
                if writer.only_status {
                    // What a status write keeps as stored stays so.
                    crate::objects::prepare_update(&pods, &mut new, &stored, Some(subresource))
                        .unwrap();
                }
                let mut whole = new.clone();
                record_whole(&mut whole, Some(&stored), &shape, &writer, false);
                let mut walked = new;
                assert!(record(&mut walked, &stored, &shape, &writer));
                assert_eq!(
                    walked["metadata"].get("managedFields"),
                    whole["metadata"].get("managedFields"),
                    "seed {seed} step {step}"
                );
                stored = whole;
            }
        }
    }

    #[test]
    fn keyed_items_that_share_a_key_should_be_left_to_the_whole_walk() {
        let shape = Shape::builtin("", "Pod");
        let mut stored = pod();
        record_whole(&mut stored, None, &shape, &writer("creator", ""), false);
        let mut new = stored.clone();
        new["spec"]["containers"] =
            json!([{"name": "web", "image": "a"}, {"name": "web", "image": "b"}]);
        assert!(!record(&mut new, &stored, &shape, &writer("editor", "")));
    }

    #[test]
    fn entries_owning_nothing_that_changed_should_be_kept_as_stored() {
        let shape = Shape::builtin("", "Pod");
        let mut created = pod();
        let status = created.as_object_mut().unwrap().remove("status").unwrap();
        record_whole(&mut created, None, &shape, &writer("creator", ""), false);
        let mut stored = created.clone();
        stored["status"] = status;
        assert!(record(
            &mut stored,
            &created,
            &shape,
            &writer("kubelet", "status")
        ));
        let creator = stored["metadata"]["managedFields"][0].clone();
        let mut new = stored.clone();
        new["status"]["phase"] = json!("Running");
        assert!(record(
            &mut new,
            &stored,
            &shape,
            &writer("kubelet", "status")
        ));
        let entries = new["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[0], creator);
        assert_eq!(entries[1]["manager"], "kubelet");
        assert_eq!(
            entries[1]["fieldsV1"]["f:status"]["f:phase"],
            json!({}),
            "{entries:?}"
        );
    }
}
