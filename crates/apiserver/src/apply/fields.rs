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

/// The fields `value` sets, below `prefix`.
pub fn collect(value: &Value, shape: &Shape, prefix: &mut Path, out: &mut FieldSet) {
    match (shape.kind(value), value) {
        (Kind::Struct | Kind::Map, Value::Object(map)) if !map.is_empty() => {
            if shape.kind(value) == Kind::Map && !prefix.is_empty() {
                out.insert([prefix.as_slice(), &[".".to_string()]].concat());
            }
            for (key, child) in map {
                prefix.push(format!("f:{key}"));
                collect(child, &shape.child(key), prefix, out);
                prefix.pop();
            }
        }
        (Kind::Set, Value::Array(items)) => {
            for item in items {
                prefix.push(format!("v:{item}"));
                out.insert(prefix.clone());
                prefix.pop();
            }
        }
        (Kind::MapList(keys), Value::Array(items)) => {
            let item_shape = shape.items();
            for item in items {
                prefix.push(key_element(item, &keys));
                out.insert([prefix.as_slice(), &[".".to_string()]].concat());
                if let Value::Object(fields) = item {
                    for (key, child) in fields {
                        prefix.push(format!("f:{key}"));
                        collect(child, &item_shape.child(key), prefix, out);
                        prefix.pop();
                    }
                }
                prefix.pop();
            }
        }
        _ => {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
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
