//! A live object rendered once, when its change arrives, as the JSON the API sends for it: the
//! same bytes serve every list item and every watch event of that version of the object, however
//! many clients read them. Rendering happens once per change; sending is a copy.

use serde_json::{Map, Value};

/// An object as lists and watches send it.
///
/// The bytes are two JSON objects back to back: `{"kind":…,"apiVersion":…}`, then the rest of
/// the object (its `item`), which is how typed lists carry their items. A watch event carries
/// the whole object: both, joined.
#[derive(Debug)]
pub struct CachedObject {
    key: Box<str>,
    bytes: Box<[u8]>,
    /// Where the item starts in `bytes`.
    split: u32,
    /// Where `metadata`'s value lies in the item.
    metadata: Option<(u32, u32)>,
}

impl CachedObject {
    /// Renders a decoded object (fields in upstream's order, resource version stamped, as
    /// [`crate::storage::decode`] returns it).
    pub fn new(key: &str, object: &Value) -> Self {
        let empty = Map::new();
        let map = object.as_object().unwrap_or(&empty);
        let mut out = Vec::with_capacity(512);
        write_fields(
            map.iter().filter(|(k, _)| is_type_field(k)),
            &mut out,
            &mut None,
        );
        let split = out.len();
        let mut metadata = None;
        write_fields(
            map.iter().filter(|(k, _)| !is_type_field(k)),
            &mut out,
            &mut metadata,
        );
        let relative = |at: usize| u32::try_from(at - split).ok();
        Self {
            key: key.into(),
            bytes: out.into_boxed_slice(),
            split: u32::try_from(split).unwrap_or(0),
            metadata: metadata.and_then(|(start, end)| Some((relative(start)?, relative(end)?))),
        }
    }

    /// Renders a stored object with `revision` as its resource version: its fields copied as
    /// text when it is JSON as this server writes it (`stored.rs`), else decoded and rendered.
    pub fn from_stored(
        key: &str,
        stored: &[u8],
        revision: skiff_store::Revision,
    ) -> Result<Self, skiff_apimachinery::ApiError> {
        let Some(rendered) = super::stored::render(stored, revision) else {
            return Ok(Self::new(
                key,
                &crate::storage::decode_at(stored, revision)?,
            ));
        };
        let offset = |at: usize| u32::try_from(at).ok();
        Ok(Self {
            key: key.into(),
            bytes: rendered.bytes.into_boxed_slice(),
            split: u32::try_from(rendered.split).unwrap_or(0),
            metadata: rendered
                .metadata
                .and_then(|(start, end)| Some((offset(start)?, offset(end)?))),
        })
    }

    /// The object's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's JSON without `kind` and `apiVersion`, as typed lists carry their items.
    pub fn item(&self) -> &[u8] {
        &self.bytes[self.split as usize..]
    }

    /// `{"kind":…,"apiVersion":…}`, whichever of the two the object has.
    fn type_fields(&self) -> &[u8] {
        &self.bytes[..self.split as usize]
    }

    /// The JSON of the object's `metadata`, if it has one.
    pub fn metadata(&self) -> Option<&[u8]> {
        let (start, end) = self.metadata?;
        self.item().get(start as usize..end as usize)
    }

    /// About the size of the whole object's JSON (a byte or two over).
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Appends the whole object's JSON, `kind` and `apiVersion` first.
    pub fn write_whole(&self, out: &mut Vec<u8>) {
        let head = self.type_fields();
        let item = self.item();
        if head.len() <= 2 {
            out.extend_from_slice(item);
            return;
        }
        out.extend_from_slice(&head[..head.len() - 1]);
        if item.len() > 2 {
            out.push(b',');
            out.extend_from_slice(&item[1..]);
        } else {
            out.push(b'}');
        }
    }

    /// The JSON a read sends for an object stored as `stored` at `revision`: what
    /// [`Self::write_whole`] writes for it.
    pub fn whole_from_stored(
        stored: &[u8],
        revision: skiff_store::Revision,
    ) -> Result<Vec<u8>, skiff_apimachinery::ApiError> {
        // Not kept: the key names nothing.
        let object = Self::from_stored("", stored, revision)?;
        let mut whole = Vec::with_capacity(object.size());
        object.write_whole(&mut whole);
        Ok(whole)
    }

    /// The whole object, decoded.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut whole = Vec::with_capacity(self.size());
        self.write_whole(&mut whole);
        serde_json::from_slice(&whole)
    }
}

fn is_type_field(key: &str) -> bool {
    key == "kind" || key == "apiVersion"
}

/// Writes `fields` as one JSON object, noting where `metadata`'s value lies.
fn write_fields<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    out: &mut Vec<u8>,
    metadata: &mut Option<(usize, usize)>,
) {
    out.push(b'{');
    let mut first = true;
    for (key, value) in fields {
        if !first {
            out.push(b',');
        }
        first = false;
        // Writing JSON values into a Vec cannot fail: every map key is a string.
        let _ = serde_json::to_writer(&mut *out, key);
        out.push(b':');
        let start = out.len();
        let _ = serde_json::to_writer(&mut *out, value);
        if key == "metadata" {
            *metadata = Some((start, out.len()));
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The fast rendering of stored bytes must equal decoding them and rendering the object.
    fn same_as_decoded(stored: &[u8]) {
        let fast = CachedObject::from_stored("k", stored, 42).unwrap();
        let slow = CachedObject::new("k", &crate::storage::decode_at(stored, 42).unwrap());
        assert_eq!(
            String::from_utf8_lossy(&fast.bytes),
            String::from_utf8_lossy(&slow.bytes)
        );
        assert_eq!((fast.split, fast.metadata), (slow.split, slow.metadata));
    }

    #[test]
    fn stored_objects_should_render_as_their_decoded_form_renders() {
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "d",
                "uid": "u", "generation": 2, "creationTimestamp": "t", "labels": {"a": "b"},
                "managedFields": [{"manager": "m"}]}, "spec": {"x": [1, 2.5, -0.0, 1e21, "é\n\"q\"\u{0001}"]},
                "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "only"}}),
            json!({"kind": "Namespace", "metadata": {}, "spec": {}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "out of order"}}),
            json!({"kind": "ConfigMap", "metadata": {"uid": "u", "name": "meta out of order"}}),
            json!({"kind": "X", "metadata": {"name": "a", "zz": 1, "resourceVersion": "9"}, "status": {}, "spec": {}}),
            json!({"kind": "X", "metadata": "not an object"}),
            json!({"kind": "X"}),
            json!({}),
        ];
        for object in objects {
            same_as_decoded(&serde_json::to_vec(&object).unwrap());
        }
        same_as_decoded(b"{ \"kind\": \"Spaced\", \"metadata\": {\"name\": \"a\"} }");
        same_as_decoded(br#"{"kind":"Dup","kind":"Twice","metadata":{"name":"a"}}"#);
        same_as_decoded(br#"{"kind":"Esc\u00e9","metadata":{"name":"a"}}"#);
    }

    #[test]
    fn a_written_object_should_be_sent_as_its_encoding_renders_it() {
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "d",
                "uid": "u", "labels": {"a": "b"}, "managedFields": [{"manager": "m"}]},
                "spec": {"x": [1, 2.5, 1e21, "é\n\"q\"\u{0001}"]}, "status": {"phase": "Running"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"},
                "metadata": {"uid": "u", "name": "out of order"}}),
        ];
        for mut object in objects {
            let bytes = crate::storage::encode(&object).unwrap().bytes;
            object["metadata"]["resourceVersion"] = json!("42");
            let sent = serde_json::to_vec(&crate::storage::in_order(&object)).unwrap();
            assert_eq!(
                String::from_utf8(CachedObject::whole_from_stored(&bytes, 42).unwrap()).unwrap(),
                String::from_utf8(sent).unwrap()
            );
        }
    }

    #[test]
    fn a_written_object_with_its_version_in_place_should_be_what_the_cache_renders() {
        let objects = [
            json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "namespace": "d",
                "uid": "u", "resourceVersion": "3", "generation": 2, "labels": {"a": "b"},
                "managedFields": [{"manager": "m"}]}, "spec": {"x": "é\n\u{0001}"},
                "status": {"phase": "Running"}}),
            json!({"apiVersion": "v1", "data": {"k": "v"}, "metadata": {"uid": "u", "name": "n"}}),
            json!({"kind": "Only", "metadata": {"name": "n"}}),
            json!({"kind": "Generation", "metadata": {"generation": 1, "zz": "unknown"}}),
            json!({"kind": "Unknown", "metadata": {"zz": 1}, "spec": {}}),
            json!({"metadata": {}, "spec": {"a": 1}}),
            json!({"kind": "Empty", "apiVersion": "v1", "metadata": {}}),
        ];
        for object in objects {
            let stored = crate::storage::Stored {
                encoded: crate::storage::encode(&object).unwrap(),
                revision: 1234,
            };
            let cached = CachedObject::whole_from_stored(&stored.encoded.bytes, 1234).unwrap();
            assert_eq!(
                String::from_utf8(stored.whole().unwrap()).unwrap(),
                String::from_utf8(cached).unwrap(),
                "{object}"
            );
        }
        for without_place in [json!({"kind": "NoMeta"}), json!({"metadata": "text"})] {
            assert_eq!(
                crate::storage::encode(&without_place).unwrap().version_at,
                None
            );
        }
    }

    fn whole(object: &CachedObject) -> Value {
        let mut out = Vec::new();
        object.write_whole(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn whole_object_should_round_trip_with_type_fields_first() {
        let object = json!({
            "kind": "ConfigMap",
            "apiVersion": "v1",
            "metadata": {"name": "a", "resourceVersion": "7"},
            "data": {"k": "v"},
        });
        let cached = CachedObject::new("/registry/configmaps/default/a", &object);
        let mut out = Vec::new();
        cached.write_whole(&mut out);
        assert_eq!(out, serde_json::to_vec(&object).unwrap());
        assert_eq!(cached.to_value().unwrap(), object);
        assert_eq!(
            cached.item(),
            br#"{"metadata":{"name":"a","resourceVersion":"7"},"data":{"k":"v"}}"#
        );
        assert_eq!(
            cached.metadata().unwrap(),
            br#"{"name":"a","resourceVersion":"7"}"#
        );
    }

    #[test]
    fn objects_without_type_fields_or_other_fields_should_render_whole() {
        let bare = json!({"metadata": {"name": "a"}});
        assert_eq!(whole(&CachedObject::new("k", &bare)), bare);
        let only_type = json!({"kind": "Thing", "apiVersion": "x/v1"});
        assert_eq!(whole(&CachedObject::new("k", &only_type)), only_type);
        let empty = json!({});
        let cached = CachedObject::new("k", &empty);
        assert_eq!(whole(&cached), empty);
        assert!(cached.metadata().is_none());
    }
}
