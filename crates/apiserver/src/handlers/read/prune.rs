//! Partial decoding: a JSON object decoded into a [`Value`] holding only the fields a reader
//! needs (a selector's labels and fields, a Table's cells), the rest skipped without being
//! built. Skipping still checks the JSON but allocates nothing, so a list filtered by labels or
//! printed as a Table decodes its objects at a fraction of the cost of whole [`Value`]s.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Which parts of a JSON document to decode.
#[derive(Clone, Debug, PartialEq)]
pub enum Keep {
    /// The whole value.
    All,
    /// Nothing: the value is skipped.
    Drop,
    /// An object's keys or an array's length: every member becomes `null` (what counting
    /// needs).
    Shallow,
    /// An object's fields: those listed by their own rule, the others by `rest`. Applied to an
    /// array, the rule applies to each element; any other value is decoded whole.
    Object {
        /// Fields with a rule of their own.
        fields: Vec<(String, Keep)>,
        /// The rule for every other field.
        rest: Box<Keep>,
    },
}

impl Keep {
    /// An object of which nothing is kept (yet).
    pub fn nothing() -> Self {
        Self::Object {
            fields: Vec::new(),
            rest: Box::new(Self::Drop),
        }
    }

    /// Also keeps the value at `path` (field names from the root; a path crosses arrays, so
    /// `spec.containers.image` is every container's image), whole.
    pub fn add(&mut self, path: &[&str]) {
        self.set(path, Self::All);
    }

    /// Also keeps the shape of the value at `path`: its keys or its length, not their values.
    pub fn add_shallow(&mut self, path: &[&str]) {
        self.set(path, Self::Shallow);
    }

    /// Skips the value at `path`, whatever else is kept.
    pub fn skip(&mut self, path: &[&str]) {
        self.set(path, Self::Drop);
    }

    /// Sets the rule at `path`. A later rule wins, except that [`Keep::Shallow`] never
    /// narrows what is kept.
    fn set(&mut self, path: &[&str], rule: Keep) {
        let Some((first, rest_of_path)) = path.split_first() else {
            self.merge(rule);
            return;
        };
        match self {
            Self::All if rule != Self::Drop => return,
            Self::Shallow => {
                if rule != Self::Drop {
                    *self = Self::All;
                }
                return;
            }
            Self::All | Self::Drop => {
                *self = Self::Object {
                    fields: Vec::new(),
                    rest: Box::new(self.clone()),
                };
            }
            Self::Object { .. } => {}
        }
        let Self::Object { fields, rest } = self else {
            return;
        };
        let index = match fields.iter().position(|(name, _)| name == first) {
            Some(index) => index,
            None => {
                fields.push(((*first).to_string(), (**rest).clone()));
                fields.len() - 1
            }
        };
        fields[index].1.set(rest_of_path, rule);
    }

    fn merge(&mut self, rule: Keep) {
        match (&mut *self, rule) {
            (_, Self::Drop) => *self = Self::Drop,
            (_, Self::All) => *self = Self::All,
            (Self::Drop, Self::Shallow) => *self = Self::Shallow,
            (Self::Object { rest, .. }, Self::Shallow) => rest.merge(Self::Shallow),
            (_, Self::Shallow) => {}
            (_, object @ Self::Object { .. }) => *self = object,
        }
    }

    fn rule(&self, field: &str) -> &Keep {
        match self {
            Self::Object { fields, rest } => fields
                .iter()
                .find(|(name, _)| name == field)
                .map_or(&**rest, |(_, rule)| rule),
            other => other,
        }
    }

    /// Decodes the kept parts of `json`.
    pub fn decode(&self, json: &[u8]) -> Result<Value, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let value = self.deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Keep {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        match self {
            Keep::All => Value::deserialize(deserializer),
            Keep::Drop => {
                IgnoredAny::deserialize(deserializer)?;
                Ok(Value::Null)
            }
            Keep::Shallow | Keep::Object { .. } => deserializer.deserialize_any(Partial(self)),
        }
    }
}

/// A field name, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Decodes an object by its [`Keep::Object`] rule, anything else whole.
struct Partial<'a>(&'a Keep);

impl<'de> Visitor<'de> for Partial<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        if *self.0 == Keep::Shallow {
            while let Some(Key(key)) = map.next_key()? {
                map.next_value::<IgnoredAny>()?;
                out.insert(key.into_owned(), Value::Null);
            }
            return Ok(Value::Object(out));
        }
        while let Some(Key(key)) = map.next_key()? {
            match self.0.rule(&key) {
                Keep::Drop => {
                    map.next_value::<IgnoredAny>()?;
                }
                rule => {
                    let value = map.next_value_seed(rule)?;
                    out.insert(key.into_owned(), value);
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        if *self.0 == Keep::Shallow {
            while seq.next_element::<IgnoredAny>()?.is_some() {
                out.push(Value::Null);
            }
            return Ok(Value::Array(out));
        }
        // An object's rule applies to each element.
        while let Some(value) = seq.next_element_seed(self.0)? {
            out.push(value);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "a", "labels": {"app": "x"}, "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running"},
        })
    }

    #[test]
    fn only_added_paths_should_be_decoded() {
        let mut keep = Keep::nothing();
        keep.add(&["metadata", "labels"]);
        keep.add(&["spec", "nodeName"]);
        let bytes = serde_json::to_vec(&pod()).unwrap();
        assert_eq!(
            keep.decode(&bytes).unwrap(),
            json!({"metadata": {"labels": {"app": "x"}}, "spec": {"nodeName": "n1"}})
        );
    }

    #[test]
    fn skipped_paths_should_be_the_only_ones_missing() {
        let mut keep = Keep::All;
        keep.skip(&["metadata", "managedFields"]);
        let bytes = serde_json::to_vec(&pod()).unwrap();
        let mut expected = pod();
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(keep.decode(&bytes).unwrap(), expected);
    }

    #[test]
    fn a_path_through_an_array_should_apply_to_each_element() {
        let mut keep = Keep::nothing();
        keep.add(&["spec", "containers", "name"]);
        keep.add(&["metadata", "name", "first"]);
        let bytes = br#"{"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}, {"image": "j"}, 5]}}"#;
        assert_eq!(
            keep.decode(bytes).unwrap(),
            json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}, {}, 5]}})
        );
    }

    #[test]
    fn counting_a_field_should_keep_what_else_is_read_of_it() {
        let mut keep = Keep::nothing();
        keep.add(&["items", "name"]);
        keep.add_shallow(&["items"]);
        keep.add_shallow(&["map"]);
        keep.add(&["map", "a"]);
        let bytes = br#"{"items": [{"name": "x", "y": 1}], "map": {"a": {"b": 1}, "c": 2}}"#;
        assert_eq!(
            keep.decode(bytes).unwrap(),
            json!({"items": [{"name": "x", "y": 1}], "map": {"a": {"b": 1}, "c": 2}})
        );
    }

    #[test]
    fn shallow_values_should_keep_their_keys_and_lengths_only() {
        let mut keep = Keep::nothing();
        keep.add_shallow(&["data"]);
        keep.add_shallow(&["list"]);
        keep.add_shallow(&["text"]);
        let bytes = br#"{"data": {"a": "long", "b": {"c": 1}}, "list": [1, [2], {}], "text": "t"}"#;
        assert_eq!(
            keep.decode(bytes).unwrap(),
            json!({"data": {"a": null, "b": null}, "list": [null, null, null], "text": "t"})
        );
    }

    #[test]
    fn escaped_field_names_and_trailing_garbage_should_be_handled() {
        let keep = {
            let mut keep = Keep::nothing();
            keep.add(&["a\"b"]);
            keep
        };
        assert_eq!(
            keep.decode(br#"{"a\"b": 1, "c": [1, {"d": null}]}"#)
                .unwrap(),
            json!({"a\"b": 1})
        );
        assert!(keep.decode(br#"{"a": 1} x"#).is_err());
        assert!(keep.decode(br#"{"a": tru}"#).is_err());
    }
}
