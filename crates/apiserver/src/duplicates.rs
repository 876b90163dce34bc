//! Duplicate fields in a JSON body (`{"a": 1, "a": 2}`), which serde_json silently resolves to
//! the last value: `fieldValidation` reports or rejects them as upstream does.
//!
//! Every write's body passes through here, so the walk allocates little: keys are borrowed from
//! the body (unless escaped), and a field's path is written out only when it is a duplicate,
//! from the chain of its ancestors on the walk's stack.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Objects with more keys than this look keys up in a set instead of scanning them.
const SCANNED: usize = 16;

/// Where a value sits: the root, or its key or index below its parent's place.
#[derive(Clone, Copy)]
enum Place<'a> {
    Root,
    Key(&'a str, &'a Place<'a>),
    Index(usize, &'a Place<'a>),
}

impl Place<'_> {
    /// The path as upstream writes it: `m.x[0].k`.
    fn path(&self) -> String {
        match self {
            Place::Root => String::new(),
            Place::Key(key, Place::Root) => (*key).to_string(),
            Place::Key(key, parent) => format!("{}.{key}", parent.path()),
            Place::Index(index, parent) => format!("{}[{index}]", parent.path()),
        }
    }
}

struct Walk<'a> {
    place: Place<'a>,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// A key, borrowed from the body when it has no escapes.
pub(crate) struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(key))
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

/// The keys of one object seen so far.
#[derive(Default)]
struct Seen<'de> {
    keys: Vec<Cow<'de, str>>,
    set: HashSet<Cow<'de, str>>,
}

impl<'de> Seen<'de> {
    /// Notes `key`; false when it was seen already.
    fn insert(&mut self, key: Cow<'de, str>) -> bool {
        if !self.set.is_empty() {
            return self.set.insert(key);
        }
        if self.keys.contains(&key) {
            return false;
        }
        self.keys.push(key);
        if self.keys.len() > SCANNED {
            self.set.extend(self.keys.drain(..));
        }
        true
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = Seen::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let place = Place::Key(&key, &self.place);
            // A clone of a borrowed key is a pointer.
            if !seen.insert(key.clone()) {
                self.found.push(place.path());
            }
            map.next_value_seed(Walk {
                place,
                found: self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while seq
            .next_element_seed(Walk {
                place: Place::Index(index, &self.place),
                found: self.found,
            })?
            .is_some()
        {
            index += 1;
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The paths of fields that appear twice in the same JSON object (empty for non-JSON input).
pub fn duplicate_fields(json: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let walk = Walk {
        place: Place::Root,
        found: &mut found,
    };
    if walk.deserialize(&mut deserializer).is_err() {
        return Vec::new();
    }
    found
}

#[cfg(test)]
mod tests {
    use super::duplicate_fields;

    #[test]
    fn duplicates_should_be_found_at_every_depth() {
        let body = br#"{"a": 1, "m": {"x": [{"k": 1, "k": 2}], "y": 2, "y": 3}, "a": 2}"#;
        assert_eq!(duplicate_fields(body), ["m.x[0].k", "m.y", "a"]);
        assert!(duplicate_fields(br#"{"a": {"a": 1}}"#).is_empty());
    }

    #[test]
    fn duplicates_should_be_found_among_many_keys_and_escaped_ones() {
        let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        let body = format!("{{\"d\": {{{}, \"k3\": 0, \"k39\": 1}}}}", keys.join(", "));
        assert_eq!(duplicate_fields(body.as_bytes()), ["d.k3", "d.k39"]);
        let escaped = br#"{"l": [1, {"a\u0062": 1, "ab": 2}]}"#;
        assert_eq!(duplicate_fields(escaped), ["l[1].ab"]);
    }
}
