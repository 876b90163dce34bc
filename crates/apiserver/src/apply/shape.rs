//! What a node of an object is for server-side apply: a struct, a granular map, an atomic value,
//! or a list that is atomic, a set, or a map keyed by some of its items' fields. Built-in kinds
//! answer from the k8s-openapi schemas and the list-semantics table; custom kinds from their
//! CRD's structural schema; anything unknown is a struct whose lists are atomic.

use serde_json::Value;

use crate::schemas;

/// How a node merges and is owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Fields owned one by one; no `.` entry.
    Struct,
    /// Keys owned one by one, plus the map itself (`.`).
    Map,
    /// Owned and replaced as a whole.
    Atomic,
    /// A list owned as a whole.
    AtomicList,
    /// A list of scalars, each owned by value (`v:`).
    Set,
    /// A list of objects, each owned by its keys (`k:`).
    MapList(Vec<String>),
}

/// Where in a schema a node sits.
#[derive(Clone, Debug)]
pub enum Shape {
    /// A built-in kind: the node's definition name, and the list semantics it was reached by.
    Builtin {
        /// The definition of this node (for a list: of its items).
        definition: Option<&'static str>,
        /// Kind decided by the parent (maps, lists).
        kind: Kind,
    },
    /// A custom kind: the node's structural schema.
    Custom(Value),
    /// Nothing known.
    Unknown,
}

impl Shape {
    /// The root of a built-in kind, if it has a schema.
    pub fn builtin(group: &str, kind: &str) -> Self {
        match schemas::root_name(group, kind) {
            Some(name) => Self::Builtin {
                definition: schemas::field_schema_owned(&name),
                kind: Kind::Struct,
            },
            None => Self::Unknown,
        }
    }

    /// How this node merges, given its value.
    pub fn kind(&self, value: &Value) -> Kind {
        match self {
            Self::Builtin { kind, .. } => match (kind, value) {
                (Kind::Struct, Value::Array(_)) => Kind::AtomicList,
                (Kind::Struct, Value::Object(_)) => Kind::Struct,
                (Kind::Struct, _) => Kind::Atomic,
                (other, _) => other.clone(),
            },
            Self::Custom(schema) => custom_kind(schema, value),
            Self::Unknown => match value {
                Value::Object(_) => Kind::Struct,
                Value::Array(_) => Kind::AtomicList,
                _ => Kind::Atomic,
            },
        }
    }

    /// The shape of field (or map key) `key` of this node.
    pub fn child(&self, key: &str) -> Shape {
        match self {
            Self::Builtin {
                definition: Some(parent),
                kind: Kind::Struct,
            } => {
                let property = schemas::property(parent, key);
                let kind = if let Some(list) = property.and_then(|p| p.semantics) {
                    match list.list_type {
                        "set" => Kind::Set,
                        "map" => {
                            Kind::MapList(list.map_keys.iter().map(|k| k.to_string()).collect())
                        }
                        _ => Kind::AtomicList,
                    }
                } else if property.is_some_and(|p| p.schema.get("additionalProperties").is_some()) {
                    Kind::Map
                } else {
                    Kind::Struct
                };
                Self::Builtin {
                    definition: property.and_then(|p| p.definition),
                    kind,
                }
            }
            Self::Builtin { .. } => Self::Unknown,
            Self::Custom(schema) => {
                let sub = schema
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
                sub.map_or(Self::Unknown, |s| Self::Custom(s.clone()))
            }
            Self::Unknown => Self::Unknown,
        }
    }

    /// The shape of this list's items.
    pub fn items(&self) -> Shape {
        match self {
            Self::Builtin { definition, .. } => Self::Builtin {
                definition: *definition,
                kind: Kind::Struct,
            },
            Self::Custom(schema) => schema
                .get("items")
                .map_or(Self::Unknown, |s| Self::Custom(s.clone())),
            Self::Unknown => Self::Unknown,
        }
    }
}

fn custom_kind(schema: &Value, value: &Value) -> Kind {
    match value {
        Value::Object(_) => {
            if schema.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic") {
                Kind::Atomic
            } else if schema
                .get("additionalProperties")
                .is_some_and(Value::is_object)
            {
                Kind::Map
            } else {
                Kind::Struct
            }
        }
        Value::Array(_) => match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => Kind::Set,
            Some("map") => Kind::MapList(
                schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect(),
            ),
            _ => Kind::AtomicList,
        },
        _ => Kind::Atomic,
    }
}
