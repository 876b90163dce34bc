//! How API objects live in the store: one key per object
//! (`/registry/{group}/{plural}/{namespace}/{name}`, core group spelled `core`), JSON values
//! without `metadata.resourceVersion` (the store's modification revision *is* the resource
//! version and is put back on every read), and the single mapping from store errors to API
//! errors.

use std::cell::Cell;

use bytes::Bytes;
use serde_json::Value;
use skiff_apimachinery::status::Target;
use skiff_apimachinery::{ApiError, ResourceInfo};
use skiff_store::{KeyValue, Revision, StoreError};

/// Every API object lives under this prefix.
pub const ROOT: &str = "/registry/";

/// The key prefix of a resource, optionally narrowed to one namespace.
pub fn prefix(info: &ResourceInfo, namespace: Option<&str>) -> String {
    let group = if info.group.is_empty() {
        "core"
    } else {
        info.group.as_str()
    };
    match namespace {
        Some(ns) if info.namespaced() => format!("{ROOT}{group}/{}/{ns}/", info.plural),
        _ => format!("{ROOT}{group}/{}/", info.plural),
    }
}

/// The key of one object.
pub fn key(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", prefix(info, namespace))
}

/// Decodes a stored object and stamps its resource version.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(&kv.value, kv.mod_revision)
}

/// Decodes stored bytes and stamps `revision` as the resource version.
pub fn decode_at(bytes: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("stored object is not JSON: {e}")))?;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        // In its place among the stored (ordered) fields, so nothing needs to move. Stored
        // objects have none; one that does loses it first (`shift_insert` may only move an
        // existing key to an index below the map's length).
        meta.shift_remove("resourceVersion");
        let rank = meta_rank("resourceVersion");
        let at = meta
            .keys()
            .position(|key| meta_rank(key) > rank)
            .unwrap_or(meta.len());
        meta.shift_insert(
            at,
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    canonical_order(&mut object);
    Ok(object)
}

/// Go's field order of ObjectMeta, which upstream's JSON follows.
const META_ORDER: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Where `key` goes among ObjectMeta's fields (fields Go does not know go last).
pub fn meta_rank(key: &str) -> usize {
    META_ORDER
        .iter()
        .position(|f| *f == key)
        .unwrap_or(META_ORDER.len())
}

/// Whether `map`'s keys start with those of `first` it has, in that order.
fn ordered(map: &serde_json::Map<String, Value>, first: &[&str]) -> bool {
    let rank = |key: &str| first.iter().position(|f| *f == key).unwrap_or(first.len());
    map.keys().map(|k| rank(k)).is_sorted()
}

fn reorder(map: &mut serde_json::Map<String, Value>, first: &[&str]) {
    // Already in order (as every object this server wrote): nothing to move.
    if ordered(map, first) {
        return;
    }
    let mut ordered = serde_json::Map::with_capacity(map.len());
    for key in first {
        // Shifted out, so the rest keep their order.
        if let Some((k, v)) = map.shift_remove_entry(*key) {
            ordered.insert(k, v);
        }
    }
    ordered.append(map);
    *map = ordered;
}

/// Whether an object's fields are in upstream's order already (see [`canonical_order`]).
pub fn is_canonical(object: &Value) -> bool {
    let Some(map) = object.as_object() else {
        return true;
    };
    let meta_ordered = map
        .get("metadata")
        .and_then(Value::as_object)
        .is_none_or(|meta| ordered(meta, &META_ORDER));
    let status_last =
        !map.contains_key("status") || map.keys().next_back().is_some_and(|k| k == "status");
    meta_ordered && status_last && ordered(map, &["kind", "apiVersion", "metadata"])
}

/// Puts an object's fields in upstream's order: `kind`, `apiVersion`, `metadata` (in
/// ObjectMeta's order), then the rest as given, with `status` last.
pub fn canonical_order(object: &mut Value) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        reorder(meta, &META_ORDER);
    }
    reorder(map, &["kind", "apiVersion", "metadata"]);
    if map.keys().next_back().is_some_and(|last| last != "status")
        && let Some((k, v)) = map.shift_remove_entry("status")
    {
        map.insert(k, v);
    }
}

/// An object encoded for storage.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The JSON: no resource version, fields in upstream's order.
    pub bytes: Bytes,
    /// Where in `bytes` the metadata's `resourceVersion` goes (the end of the field before it,
    /// or just inside the metadata's `{`); `None` when the object has no metadata map.
    pub version_at: Option<usize>,
}

/// Encodes an object for storage, without its resource version, its fields in upstream's
/// order (see [`canonical_order`]; what the watch cache copies without decoding), noting where
/// the resource version goes.
pub fn encode(object: &Value) -> Result<Encoded, ApiError> {
    let slot = Slot::default();
    let mut out = Counted {
        out: Vec::with_capacity(1024),
        slot: &slot,
    };
    let ordered = Ordered {
        object,
        resource_version: false,
        slot: Some(&slot),
    };
    serde::Serialize::serialize(&ordered, &mut serde_json::Serializer::new(&mut out))
        .map_err(|e| ApiError::Internal(format!("encoding object: {e}")))?;
    Ok(Encoded {
        bytes: Bytes::from(out.out),
        version_at: slot.version_at.get(),
    })
}

/// Where an encoding stands: the bytes written so far, and the resource version's place once
/// passed.
#[derive(Default)]
struct Slot {
    written: Cell<usize>,
    version_at: Cell<Option<usize>>,
}

/// A writer that keeps [`Slot::written`] up to date (serde_json writes every token through).
struct Counted<'a> {
    out: Vec<u8>,
    slot: &'a Slot,
}

impl std::io::Write for Counted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        self.slot.written.set(self.out.len());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes a write stored and the revision it stored them at: enough to answer the write
/// with the object as a read would send it, without encoding it again.
#[derive(Clone, Debug)]
pub struct Stored {
    /// What [`encode`] made of the object.
    pub encoded: Encoded,
    /// The object's new resource version.
    pub revision: Revision,
}

impl Stored {
    /// The object's JSON as a read sends it (what the watch cache renders from the stored
    /// bytes): the stored bytes with the resource version written in its place. `None` when
    /// the encoding noted no place for it.
    pub fn whole(&self) -> Option<Vec<u8>> {
        let bytes = &self.encoded.bytes;
        let at = self.encoded.version_at?;
        let (before, after) = (bytes.get(..at)?, bytes.get(at..)?);
        // A field before it ends where the version goes; one after it starts with its comma.
        let first = before.ends_with(b"{");
        let last = after.starts_with(b"}");
        let mut out = Vec::with_capacity(bytes.len() + 40);
        out.extend_from_slice(before);
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(b"\"resourceVersion\":\"");
        out.extend_from_slice(self.revision.to_string().as_bytes());
        out.push(b'"');
        if first && !last {
            out.push(b',');
        }
        out.extend_from_slice(after);
        Some(out)
    }
}

/// An object written with its fields in upstream's order, as [`canonical_order`] puts them,
/// without copying it.
pub fn in_order(object: &Value) -> impl serde::Serialize + '_ {
    Ordered {
        object,
        resource_version: true,
        slot: None,
    }
}

/// An object in upstream's order: `kind`, `apiVersion`, `metadata` (in ObjectMeta's order,
/// with `resourceVersion` or, as stored, without), the other fields as given, `status` last.
struct Ordered<'a> {
    object: &'a Value,
    resource_version: bool,
    /// Where to note the resource version's place (when it is left out).
    slot: Option<&'a Slot>,
}

/// An object's `metadata` in ObjectMeta's order, with or without `resourceVersion`.
struct OrderedMeta<'a> {
    meta: &'a serde_json::Map<String, Value>,
    resource_version: bool,
    slot: Option<&'a Slot>,
}

impl serde::Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(map) = self.object.as_object() else {
            return self.object.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for key in ["kind", "apiVersion"] {
            if let Some(value) = map.get(key) {
                out.serialize_entry(key, value)?;
            }
        }
        match map.get("metadata") {
            Some(Value::Object(meta)) => {
                let meta = OrderedMeta {
                    meta,
                    resource_version: self.resource_version,
                    slot: self.slot,
                };
                out.serialize_entry("metadata", &meta)?;
            }
            Some(other) => out.serialize_entry("metadata", other)?,
            None => {}
        }
        for (key, value) in map
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion" | "metadata" | "status"))
        {
            out.serialize_entry(key, value)?;
        }
        if let Some(status) = map.get("status") {
            out.serialize_entry("status", status)?;
        }
        out.end()
    }
}

impl serde::Serialize for OrderedMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut out = serializer.serialize_map(None)?;
        for key in META_ORDER {
            if key == "resourceVersion" && !self.resource_version {
                if let Some(slot) = self.slot {
                    slot.version_at.set(Some(slot.written.get()));
                }
                continue;
            }
            if let Some(value) = self.meta.get(key) {
                out.serialize_entry(key, value)?;
            }
        }
        for (key, value) in self
            .meta
            .iter()
            .filter(|(k, _)| !META_ORDER.contains(&k.as_str()))
        {
            out.serialize_entry(key, value)?;
        }
        out.end()
    }
}

/// Maps a store error about `target` to the API error clients expect.
pub fn api_error(error: StoreError, target: &Target) -> ApiError {
    match error {
        StoreError::NotFound { .. } => ApiError::NotFound(target.clone()),
        StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(target.clone()),
        StoreError::Conflict { .. } => ApiError::Conflict(target.clone()),
        StoreError::Compacted { requested } => {
            ApiError::Expired(format!("too old resource version: {requested}"))
        }
        StoreError::FutureRevision { requested, current } => ApiError::Timeout(format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::ValueTooLarge { .. } => ApiError::TooLarge {
            limit: skiff_store::MAX_VALUE_BYTES,
        },
        StoreError::InvalidKey { reason } => ApiError::BadRequest(reason),
        StoreError::Closed
        | StoreError::Locked { .. }
        | StoreError::Etcd { .. }
        | StoreError::EtcdUnavailable(_) => {
            ApiError::Unavailable(format!("the datastore is unavailable: {error}"))
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// Parses a `resourceVersion` parameter or field.
pub fn parse_revision(value: &str) -> Result<Revision, ApiError> {
    value
        .parse::<Revision>()
        .ok()
        .filter(|r| *r >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version \"{value}\"")))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn objects_should_be_stored_in_upstreams_field_order_without_their_resource_version() {
        let object = json!({"status": {"phase": "Running"}, "apiVersion": "v1",
            "spec": {"b": 1, "a": 2}, "metadata": {"labels": {"x": "y"}, "zz": 1, "uid": "u",
            "resourceVersion": "5", "name": "p"}, "kind": "Pod"});
        let stored = encode(&object).unwrap().bytes;
        assert_eq!(
            std::str::from_utf8(&stored).unwrap(),
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u","labels":{"x":"y"},"zz":1},"spec":{"b":1,"a":2},"status":{"phase":"Running"}}"#
        );
        let decoded = decode_at(&stored, 9).unwrap();
        assert!(is_canonical(&decoded));
        assert_eq!(
            serde_json::to_string(&decoded).unwrap(),
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u","resourceVersion":"9","labels":{"x":"y"},"zz":1},"spec":{"b":1,"a":2},"status":{"phase":"Running"}}"#
        );
    }

    #[test]
    fn a_stored_resource_version_should_give_way_to_the_revision_read() {
        for stored in [
            r#"{"kind":"K","metadata":{"name":"n","resourceVersion":"3"}}"#,
            r#"{"kind":"K","metadata":{"resourceVersion":"3","name":"n","labels":{}}}"#,
        ] {
            let decoded = decode_at(stored.as_bytes(), 9).unwrap();
            assert_eq!(decoded["metadata"]["resourceVersion"], "9");
            assert!(is_canonical(&decoded), "{decoded}");
        }
    }

    #[test]
    fn canonical_order_should_keep_the_other_fields_as_given() {
        let mut object = json!({"x": 1, "status": {}, "kind": "K", "y": 2,
            "metadata": {"b": 1, "name": "n", "a": 2, "uid": "u", "c": 3}, "z": 3});
        canonical_order(&mut object);
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            r#"{"kind":"K","metadata":{"name":"n","uid":"u","b":1,"a":2,"c":3},"x":1,"y":2,"z":3,"status":{}}"#
        );
        assert_eq!(
            serde_json::to_string(&in_order(
                &json!({"x": 1, "status": {}, "kind": "K", "y": 2,
                "metadata": {"b": 1, "name": "n", "a": 2, "uid": "u", "c": 3}, "z": 3})
            ))
            .unwrap(),
            serde_json::to_string(&object).unwrap(),
            "the order objects are stored in"
        );
    }

    #[test]
    fn an_object_written_in_order_should_read_as_one_put_in_order() {
        let object = json!({"status": {"phase": "Running"}, "apiVersion": "v1",
            "spec": {"b": 1, "a": 2}, "metadata": {"labels": {"x": "y"}, "zz": 1, "uid": "u",
            "resourceVersion": "5", "name": "p"}, "kind": "Pod"});
        let mut reordered = object.clone();
        canonical_order(&mut reordered);
        assert_eq!(
            serde_json::to_string(&in_order(&object)).unwrap(),
            serde_json::to_string(&reordered).unwrap()
        );
    }
}
