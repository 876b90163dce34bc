//! Renders a stored object as lists and watches send it without decoding it: the stored JSON
//! is what this server wrote (compact, fields in upstream's order, no `resourceVersion`), so the
//! object's fields are copied as text and only the resource version is written in, where
//! ObjectMeta's field order puts it. Anything else (JSON written otherwise, fields out of
//! order) is left to the decoding path, which gives the same bytes.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use skiff_store::Revision;

use crate::duplicates::Key;
use crate::storage;

/// An object's or its metadata's fields, each value as its JSON text (keys borrowed from the
/// stored bytes unless escaped).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

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
                while let Some(key) = map.next_key_seed(Key)? {
                    fields.push((key, map.next_value()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A top-level field's value: as its JSON text, or, for `metadata`, as its fields (read in the
/// same pass, so the metadata is not scanned twice).
enum Part<'a> {
    Text(&'a RawValue),
    Metadata(Fields<'a>),
}

/// An object's fields, `metadata`'s apart.
struct Object<'a>(Vec<(Cow<'a, str>, Part<'a>)>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(key) = map.next_key_seed(Key)? {
                    let part = if key == "metadata" {
                        Part::Metadata(map.next_value()?)
                    } else {
                        Part::Text(map.next_value()?)
                    };
                    fields.push((key, part));
                }
                Ok(Object(fields))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
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
    let Object(fields) = serde_json::from_slice(stored).ok()?;
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
    let (types, rest) = fields.split_at(types);
    write_fields(named(types), &mut out, write_part(revision))?;
    let split = out.len();
    let mut metadata = None;
    let mut part = write_part(revision);
    write_fields(named(rest), &mut out, |key, value, out| {
        let start = out.len();
        part(key, value, out)?;
        if key == "metadata" {
            metadata = Some((start - split, out.len() - split));
        }
        Some(())
    })?;
    Some(Rendered {
        bytes: out,
        split,
        metadata,
    })
}

/// Writes a top-level field's value: its text, or the metadata with `revision` written in.
fn write_part(revision: Revision) -> impl FnMut(&str, &Part<'_>, &mut Vec<u8>) -> Option<()> {
    move |_, part, out| match part {
        Part::Text(raw) => {
            out.extend_from_slice(raw.get().as_bytes());
            Some(())
        }
        Part::Metadata(Fields(fields)) => write_metadata(fields, revision, out),
    }
}

/// Each field with its name as a `&str`.
fn named<'a, T>(fields: &'a [(Cow<'_, str>, T)]) -> impl Iterator<Item = (&'a str, &'a T)> {
    fields.iter().map(|(key, value)| (key.as_ref(), value))
}

/// Writes `fields` as one JSON object, each value by `value`.
fn write_fields<'a, T: 'a>(
    fields: impl IntoIterator<Item = (&'a str, T)>,
    out: &mut Vec<u8>,
    mut value: impl FnMut(&str, T, &mut Vec<u8>) -> Option<()>,
) -> Option<()> {
    out.push(b'{');
    for (at, (key, field)) in fields.into_iter().enumerate() {
        if at > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).ok()?;
        out.push(b':');
        value(key, field, out)?;
    }
    out.push(b'}');
    Some(())
}

/// Writes the metadata with `resourceVersion` in ObjectMeta's order.
fn write_metadata<'a>(
    fields: &'a [(Cow<'a, str>, &'a RawValue)],
    revision: Revision,
    out: &mut Vec<u8>,
) -> Option<()> {
    if !fields
        .iter()
        .map(|(k, _)| storage::meta_rank(k))
        .is_sorted()
        || has_duplicates(fields)
    {
        return None;
    }
    let version = format!("\"{revision}\"");
    let rank = storage::meta_rank("resourceVersion");
    let at = fields
        .iter()
        .position(|(k, _)| storage::meta_rank(k) >= rank)
        .unwrap_or(fields.len());
    let text = |(key, raw): (&'a str, &&'a RawValue)| (key, raw.get());
    let with_version = named(&fields[..at])
        .map(text)
        .chain(std::iter::once(("resourceVersion", version.as_str())))
        .chain(
            named(&fields[at..])
                .map(text)
                .filter(|(k, _)| *k != "resourceVersion"),
        );
    write_fields(with_version, out, |_, text, out| {
        out.extend_from_slice(text.as_bytes());
        Some(())
    })
}

fn has_duplicates<T>(fields: &[(Cow<'_, str>, T)]) -> bool {
    fields
        .iter()
        .enumerate()
        .any(|(at, (key, _))| fields[..at].iter().any(|(k, _)| k == key))
}

/// Whether `json` is written as serde_json writes it: no whitespace outside strings, and in
/// strings only the escapes it uses (`\"`, `\\`, the short control escapes, `\u00XX` for
/// other control characters).
fn compact(json: &[u8]) -> bool {
    let mut at = 0;
    while at < json.len() {
        let byte = json[at];
        at += 1;
        match byte {
            b'"' => match string_end(json, at) {
                Some(end) => at = end,
                None => return false,
            },
            b' ' | b'\n' | b'\r' | b'\t' => return false,
            _ => {}
        }
    }
    true
}

/// Where the string whose text starts at `at` ends (just past its closing quote), if its
/// escapes are all ones serde_json writes. The text between escapes is skipped by `memchr`:
/// strings (the data, the managedFields keys) are most of an object's bytes.
fn string_end(json: &[u8], mut at: usize) -> Option<usize> {
    loop {
        at += memchr::memchr2(b'"', b'\\', json.get(at..)?)?;
        if json[at] == b'"' {
            return Some(at + 1);
        }
        match json.get(at + 1)? {
            b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
            b'u' => {
                let hex = json.get(at + 2..at + 6)?;
                let control = hex.starts_with(b"00")
                    && matches!(hex[2], b'0' | b'1')
                    && matches!(hex[3], b'0'..=b'9' | b'a'..=b'f');
                if !control {
                    return None;
                }
                at += 6;
            }
            _ => return None,
        }
    }
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
        let escaped = render(br#"{"kind":"Pod","metadata":{"name":"p"},"a\"b":1}"#, 7).unwrap();
        assert_eq!(
            String::from_utf8(escaped.bytes).unwrap(),
            r#"{"kind":"Pod"}{"metadata":{"name":"p","resourceVersion":"7"},"a\"b":1}"#,
            "an escaped key is written back as it was read"
        );
        assert!(render(br#"{"kind": "Pod"}"#, 7).is_none());
        assert!(render(br#"{"kind":"P\u001F"}"#, 7).is_none());
        assert!(render(br#"{"kind":"P\/"}"#, 7).is_none());
        assert!(render(br#"{"metadata":{"uid":"u","name":"p"}}"#, 7).is_none());
        assert!(render(br#"{"metadata":"text"}"#, 7).is_none());
        assert!(render(br#"{"metadata":{"name":"p"},"metadata":{"name":"q"}}"#, 7).is_none());
        assert!(render(br#"{"metadata":{"name":"p","name":"q"}}"#, 7).is_none());
    }

    #[test]
    fn compactness_should_be_judged_outside_strings_and_by_the_escapes_inside_them() {
        assert!(compact(br#"{"a":"x y\"\n\\","b":[1,"\u001f"]}"#));
        assert!(compact(b"{}"));
        assert!(!compact(br#"{"a": 1}"#));
        assert!(!compact(br#"{"a":"x\"}"#), "unterminated");
        assert!(
            !compact(br#"{"a":"\u00e9"}"#),
            "not an escape serde_json writes"
        );
        assert!(!compact(br#"{"a":"\u00"}"#), "short escape");
        assert!(!compact(br#"{"a":"\/"}"#));
    }
}
