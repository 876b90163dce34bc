//! Renders a stored object as lists and watches send it without decoding it: the stored JSON
//! is what this server wrote (compact, fields in upstream's order, no `resourceVersion`), so the
//! object's fields are copied as text and only the resource version is written in, where
//! ObjectMeta's field order puts it. Anything else (JSON written otherwise, fields out of
//! order) is left to the decoding path, which gives the same bytes.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use skiff_store::Revision;

use crate::storage;

/// An object's fields, each value as its JSON text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// The rendered object: `{"kind":…,"apiVersion":…}` then the rest, where the rest starts, and
/// where `metadata`'s value lies in the rest.
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub split: usize,
    pub metadata: Option<(usize, usize)>,
}

/// Renders `stored` with `revision` as its resource version, if it is JSON as this server
/// writes it; `None` otherwise.
pub fn render(stored: &[u8], revision: Revision) -> Option<Rendered> {
    if !compact(stored) {
        return None;
    }
    let Fields(fields) = serde_json::from_slice(stored).ok()?;
    // Upstream's order: kind, apiVersion, metadata, the rest, status last.
    let rank = |key: &str| match key {
        "kind" => 0,
        "apiVersion" => 1,
        "metadata" => 2,
        "status" => 4,
        _ => 3,
    };
    if !fields.iter().map(|(k, _)| rank(k)).is_sorted() || has_duplicates(&fields) {
        return None;
    }
    let mut out = Vec::with_capacity(stored.len() + 32);
    let types = fields.iter().take_while(|(k, _)| rank(k) < 2).count();
    write_fields(&fields[..types], &mut out, |_, raw, out| {
        out.extend_from_slice(raw.get().as_bytes());
        Some(())
    })?;
    let split = out.len();
    let mut metadata = None;
    write_fields(&fields[types..], &mut out, |key, raw, out| {
        let start = out.len();
        if key == "metadata" {
            write_metadata(raw, revision, out)?;
            metadata = Some((start - split, out.len() - split));
        } else {
            out.extend_from_slice(raw.get().as_bytes());
        }
        Some(())
    })?;
    Some(Rendered {
        bytes: out,
        split,
        metadata,
    })
}

/// Writes `fields` as one JSON object, each value by `value`.
fn write_fields(
    fields: &[(String, &RawValue)],
    out: &mut Vec<u8>,
    mut value: impl FnMut(&str, &RawValue, &mut Vec<u8>) -> Option<()>,
) -> Option<()> {
    out.push(b'{');
    for (at, (key, raw)) in fields.iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).ok()?;
        out.push(b':');
        value(key, raw, out)?;
    }
    out.push(b'}');
    Some(())
}

/// Writes the metadata with `resourceVersion` in ObjectMeta's order.
fn write_metadata(raw: &RawValue, revision: Revision, out: &mut Vec<u8>) -> Option<()> {
    let Fields(fields) = serde_json::from_str(raw.get()).ok()?;
    if !fields
        .iter()
        .map(|(k, _)| storage::meta_rank(k))
        .is_sorted()
        || has_duplicates(&fields)
    {
        return None;
    }
    let version = format!("\"{revision}\"");
    let version = RawValue::from_string(version).ok()?;
    let rank = storage::meta_rank("resourceVersion");
    let at = fields
        .iter()
        .position(|(k, _)| storage::meta_rank(k) >= rank)
        .unwrap_or(fields.len());
    let mut with_version: Vec<(String, &RawValue)> = Vec::with_capacity(fields.len() + 1);
    with_version.extend(fields[..at].iter().cloned());
    with_version.push(("resourceVersion".into(), &version));
    with_version.extend(
        fields[at..]
            .iter()
            .filter(|(k, _)| k != "resourceVersion")
            .cloned(),
    );
    write_fields(&with_version, out, |_, raw, out| {
        out.extend_from_slice(raw.get().as_bytes());
        Some(())
    })
}

fn has_duplicates(fields: &[(String, &RawValue)]) -> bool {
    fields
        .iter()
        .enumerate()
        .any(|(at, (key, _))| fields[..at].iter().any(|(k, _)| k == key))
}

/// Whether `json` is written as serde_json writes it: no whitespace outside strings, and in
/// strings only the escapes it uses (`\"`, `\\`, the short control escapes, `\u00XX` for
/// other control characters).
fn compact(json: &[u8]) -> bool {
    let mut in_string = false;
    let mut at = 0;
    while at < json.len() {
        let byte = json[at];
        at += 1;
        if !in_string {
            match byte {
                b'"' => in_string = true,
                b' ' | b'\n' | b'\r' | b'\t' => return false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = false,
            b'\\' => match json.get(at) {
                Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => at += 1,
                Some(b'u') => {
                    let control = json.get(at + 1..at + 5).is_some_and(|hex| {
                        hex.starts_with(b"00")
                            && matches!(hex[2], b'0' | b'1')
                            && matches!(hex[3], b'0'..=b'9' | b'a'..=b'f')
                    });
                    if !control {
                        return false;
                    }
                    at += 5;
                }
                _ => return false,
            },
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_this_server_writes_should_be_copied_and_anything_else_left_to_decoding() {
        let written = serde_json::to_vec(&serde_json::json!({"kind": "Pod", "metadata":
            {"name": "p", "uid": "u", "labels": {"a": "\u{1f}é\\"}}, "spec": {}}))
        .unwrap();
        let rendered = render(&written, 7).unwrap();
        assert_eq!(
            String::from_utf8(rendered.bytes).unwrap(),
            r#"{"kind":"Pod"}{"metadata":{"name":"p","uid":"u","resourceVersion":"7","labels":{"a":"\u001fé\\"}},"spec":{}}"#
        );
        assert!(render(br#"{"kind": "Pod"}"#, 7).is_none());
        assert!(render(br#"{"kind":"P\u001F"}"#, 7).is_none());
        assert!(render(br#"{"kind":"P\/"}"#, 7).is_none());
        assert!(render(br#"{"metadata":{"uid":"u","name":"p"}}"#, 7).is_none());
    }
}
