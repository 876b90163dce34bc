//! Field sets: which fields of an object a manager owns, as paths of FieldsV1 elements
//! (`f:name`, `k:{"name":"web"}`, `v:"a"`, and `.` for a map or list item itself), with the
//! conversions to and from the FieldsV1 JSON tree stored in `metadata.managedFields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::shape::{Kind, Shape};

/// One owned field: its path from the object's root.
pub type Path = Vec<String>;

/// A set of owned fields.
pub type FieldSet = BTreeSet<Path>;

/// The key fields of a list item (those of `keys` it has, in that order).
pub fn key_fields(item: &Value, keys: &[String]) -> Map<String, Value> {
    let mut map = Map::new();
    for key in keys {
        if let Some(v) = item.get(key) {
            map.insert(key.clone(), v.clone());
        }
    }
    map
}

/// The `k:` element of a list item's key fields.
pub fn key_text(key: &Map<String, Value>) -> String {
    let mut text = String::from("k:");
    // Writing JSON into a String cannot fail: every map key is a string.
    if let Ok(json) = serde_json::to_string(key) {
        text.push_str(&json);
    }
    text
}

/// The `k:` element naming a list item by its key fields.
fn key_element(item: &Value, keys: &[String]) -> String {
    key_text(&key_fields(item, keys))
}

/// Where the first item of `items` with every field of `key` is (how a `k:` element finds its
/// item).
pub fn position_keyed(items: &[Value], key: &Map<String, Value>) -> Option<usize> {
    items
        .iter()
        .position(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
}

/// The first item of `items` with every field of `key`.
pub fn find_keyed<'a>(items: &'a [Value], key: &Map<String, Value>) -> Option<&'a Value> {
    position_keyed(items, key).map(|at| &items[at])
}

/// Where a walk of an object puts the fields it finds: the path grows and shrinks an element at
/// a time, and [`Sink::field`] marks the path as one field.
pub trait Sink {
    /// Goes down to `element`.
    fn push(&mut self, element: String);
    /// Goes back up.
    fn pop(&mut self);
    /// The path is a field.
    fn field(&mut self);
    /// Whether the path is the object's root.
    fn at_root(&self) -> bool;
}

/// A [`Sink`] that gathers a [`FieldSet`].
#[derive(Default)]
pub struct Paths {
    prefix: Path,
    /// The fields found.
    pub set: FieldSet,
}

impl Sink for Paths {
    fn push(&mut self, element: String) {
        self.prefix.push(element);
    }

    fn pop(&mut self) {
        self.prefix.pop();
    }

    fn field(&mut self) {
        self.set.insert(self.prefix.clone());
    }

    fn at_root(&self) -> bool {
        self.prefix.is_empty()
    }
}

/// A [`Sink`] that builds the FieldsV1 tree itself, what [`to_fields_v1`] makes of the set
/// [`Paths`] gathers, without a path per field (an object's first entry, at its create): each
/// element of the path holds the children found under it so far, and goes into its parent when
/// it is popped, if it is a field or holds one. Children are sorted as a set's tree is.
#[derive(Default)]
pub struct Tree {
    /// The path: each element, its children so far, and whether it is itself a field.
    path: Vec<(String, Map<String, Value>, bool)>,
    root: Map<String, Value>,
}

impl Tree {
    /// Whether no field was found.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The FieldsV1 tree.
    pub fn into_fields_v1(mut self) -> Value {
        self.root.sort_keys();
        Value::Object(self.root)
    }
}

/// Puts `children` under `element` of `parent`, merged with what is there (two list items
/// with the same key name one node, as in a set).
fn merge_node(parent: &mut Map<String, Value>, element: String, children: Map<String, Value>) {
    match parent.entry(element) {
        serde_json::map::Entry::Occupied(mut existing) => {
            if let Value::Object(existing) = existing.get_mut() {
                for (element, grandchildren) in children {
                    if let Value::Object(grandchildren) = grandchildren {
                        merge_node(existing, element, grandchildren);
                    }
                }
                existing.sort_keys();
            }
        }
        serde_json::map::Entry::Vacant(vacant) => {
            vacant.insert(Value::Object(children));
        }
    }
}

impl Sink for Tree {
    fn push(&mut self, element: String) {
        self.path.push((element, Map::new(), false));
    }

    fn pop(&mut self) {
        let Some((element, mut children, is_field)) = self.path.pop() else {
            return;
        };
        if !is_field && children.is_empty() {
            return;
        }
        children.sort_keys();
        let parent = match self.path.last_mut() {
            Some((_, parent, _)) => parent,
            None => &mut self.root,
        };
        merge_node(parent, element, children);
    }

    fn field(&mut self) {
        if let Some((_, _, is_field)) = self.path.last_mut() {
            *is_field = true;
        }
    }

    fn at_root(&self) -> bool {
        self.path.is_empty()
    }
}

/// Marks `element` below the path as a field.
fn field_below(out: &mut impl Sink, element: String) {
    out.push(element);
    out.field();
    out.pop();
}

/// The fields `value` sets, below the sink's path.
pub fn collect(value: &Value, shape: &Shape, out: &mut impl Sink) {
    match (shape.kind(value), value) {
        (Kind::Struct | Kind::Map, Value::Object(map)) if !map.is_empty() => {
            if shape.kind(value) == Kind::Map && !out.at_root() {
                field_below(out, ".".to_string());
            }
            for (key, child) in map {
                out.push(format!("f:{key}"));
                collect(child, &shape.child(key), out);
                out.pop();
            }
        }
        (Kind::Set, Value::Array(items)) => {
            for item in items {
                field_below(out, format!("v:{item}"));
            }
        }
        (Kind::MapList(keys), Value::Array(items)) => {
            let item_shape = shape.items();
            for item in items {
                out.push(key_element(item, &keys));
                field_below(out, ".".to_string());
                if let Value::Object(fields) = item {
                    for (key, child) in fields {
                        out.push(format!("f:{key}"));
                        collect(child, &item_shape.child(key), out);
                        out.pop();
                    }
                }
                out.pop();
            }
        }
        _ => {
            if !out.at_root() {
                out.field();
            }
        }
    }
}

/// The FieldsV1 tree of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for element in path {
            let entry = node.entry(element.clone()).or_insert_with(|| json!({}));
            match entry.as_object_mut() {
                Some(next) => node = next,
                None => break,
            }
        }
    }
    Value::Object(root)
}

/// The set a FieldsV1 tree describes.
pub fn from_fields_v1(tree: &Value) -> FieldSet {
    fn walk(node: &Map<String, Value>, prefix: &mut Path, out: &mut FieldSet) {
        for (element, child) in node {
            prefix.push(element.clone());
            match child.as_object() {
                Some(children) if !children.is_empty() => walk(children, prefix, out),
                _ => {
                    out.insert(prefix.clone());
                }
            }
            prefix.pop();
        }
    }
    let mut out = FieldSet::new();
    if let Some(map) = tree.as_object() {
        walk(map, &mut Vec::new(), &mut out);
    }
    out
}

fn find_item(items: &[Value], element: &str) -> Option<usize> {
    if let Some(key) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return position_keyed(items, &key);
    }
    let value: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
    items.iter().position(|item| *item == value)
}

/// The value at `path` (a `.` element names its parent).
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = object;
    for element in path {
        current = match element.as_str() {
            "." => current,
            e if e.starts_with("f:") => current.get(&e[2..])?,
            e => {
                let items = current.as_array()?;
                items.get(find_item(items, e)?)?
            }
        };
    }
    Some(current)
}

/// Removes the field or list item at `path`; a `.` path removes a list item only.
pub fn remove(object: &mut Value, path: &[String]) {
    let (path, is_item) = match path.split_last() {
        Some((last, rest)) if last == "." => (rest, true),
        _ => (path, false),
    };
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if is_item && last.starts_with("f:") {
        return;
    }
    let mut parent = object;
    for element in parent_path {
        let next = match element.as_str() {
            "." => continue,
            e if e.starts_with("f:") => parent.get_mut(&e[2..]),
            e => {
                let index = parent.as_array().and_then(|items| find_item(items, e));
                match index {
                    Some(i) => parent.get_mut(i),
                    None => None,
                }
            }
        };
        match next {
            Some(next) => parent = next,
            None => return,
        }
    }
    if let Some(field) = last.strip_prefix("f:") {
        if let Some(map) = parent.as_object_mut() {
            map.remove(field);
        }
    } else if let Some(items) = parent.as_array_mut()
        && let Some(i) = find_item(items, last)
    {
        items.remove(i);
    }
}
