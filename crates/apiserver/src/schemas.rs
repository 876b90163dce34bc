//! The OpenAPI schemas of the built-in types (from k8s-openapi through schemars), built once,
//! annotated with the list semantics of `skiff_apimachinery::lists`. Strategic merge patch walks
//! objects alongside these schemas to find each list's merge key; OpenAPI serves them.

use std::collections::HashMap;
use std::sync::OnceLock;

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use skiff_apimachinery::lists::{ListSemantics, list_semantics};
use skiff_apimachinery::resources::builtin;

use crate::types::{KindVisitor, with_type};

/// Registers a kind's schema (and everything it references) and returns its name.
pub struct Register<'a>(pub &'a mut SchemaGenerator);

impl KindVisitor for Register<'_> {
    type Output = String;
    fn visit<T>(&mut self) -> String
    where
        T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    {
        self.0.subschema_for::<T>();
        T::schema_name().into_owned()
    }
}

/// A generator whose references point at `#/components/schemas/` (OpenAPI v3).
pub fn generator() -> SchemaGenerator {
    SchemaSettings::openapi3().into_generator()
}

/// Adds the list-semantics extensions to the properties of definition `name`.
pub fn annotate(name: &str, definition: &mut Value) {
    let Some(properties) = definition
        .get_mut("properties")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (field, schema) in properties.iter_mut() {
        let Some(semantics) = list_semantics(name, field) else {
            if schema.get("type") == Some(&json!("array")) {
                schema["x-kubernetes-list-type"] = json!("atomic");
            }
            continue;
        };
        schema["x-kubernetes-list-type"] = json!(semantics.list_type);
        if !semantics.map_keys.is_empty() {
            schema["x-kubernetes-list-map-keys"] = json!(semantics.map_keys);
        }
        if let Some(strategy) = semantics.patch_strategy {
            schema["x-kubernetes-patch-strategy"] = json!(strategy);
        }
        if let Some(key) = semantics.merge_key {
            schema["x-kubernetes-patch-merge-key"] = json!(key);
        }
    }
}

struct Index {
    definitions: Map<String, Value>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut generator = generator();
        for info in builtin() {
            with_type(&info.group, &info.kind, &mut Register(&mut generator));
        }
        let mut definitions = generator.take_definitions(true);
        for (name, definition) in definitions.iter_mut() {
            annotate(name, definition);
        }
        Index { definitions }
    })
}

/// The schema name of a built-in kind, e.g. `io.k8s.api.core.v1.Pod`.
pub fn root_name(group: &str, kind: &str) -> Option<String> {
    struct Name;
    impl KindVisitor for Name {
        type Output = String;
        fn visit<T>(&mut self) -> String
        where
            T: serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
        {
            T::schema_name().into_owned()
        }
    }
    with_type(group, kind, &mut Name)
}

/// The definition a schema refers to (`$ref`, possibly inside `allOf`).
fn referenced(schema: &Value) -> Option<&str> {
    let direct = schema.get("$ref").and_then(Value::as_str);
    let wrapped = || {
        schema
            .get("allOf")?
            .as_array()?
            .iter()
            .find_map(|s| s.get("$ref").and_then(Value::as_str))
    };
    direct.or_else(wrapped).and_then(|r| r.rsplit('/').next())
}

/// A property of a built-in definition, resolved once for the walks of strategic merge patch
/// and server-side apply, which ask about every field they pass.
#[derive(Debug)]
pub struct Property {
    /// The property's schema, as written in its definition.
    pub schema: &'static Value,
    /// The name of the definition of its value (for a list: of its items), if it has one.
    pub definition: Option<&'static str>,
    /// How it merges, if it is a list that is not atomic.
    pub semantics: Option<ListSemantics>,
}

/// Every definition's properties, by definition name and property name.
type Properties = HashMap<&'static str, HashMap<&'static str, Property>>;

fn properties() -> &'static Properties {
    static PROPERTIES: OnceLock<Properties> = OnceLock::new();
    PROPERTIES.get_or_init(|| {
        let definitions = &index().definitions;
        let resolve = |property: &Value| {
            let name = referenced(property.get("items").unwrap_or(property))?;
            definitions.get_key_value(name).map(|(k, _)| k.as_str())
        };
        definitions
            .iter()
            .map(|(parent, definition)| {
                let fields = definition
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(field, schema)| {
                        let property = Property {
                            schema,
                            definition: resolve(schema),
                            semantics: list_semantics(parent, field),
                        };
                        (field.as_str(), property)
                    })
                    .collect();
                (parent.as_str(), fields)
            })
            .collect()
    })
}

/// Property `field` of definition `parent`, if it has one.
pub fn property(parent: &str, field: &str) -> Option<&'static Property> {
    properties().get(parent)?.get(field)
}

/// The schema name of field `field` of an object of schema `parent` (for a list: of its items).
pub fn field_schema(parent: &str, field: &str) -> Option<&'static str> {
    property(parent, field)?.definition
}

/// The interned name of a definition (`'static`, for walking).
pub fn field_schema_owned(name: &str) -> Option<&'static str> {
    index()
        .definitions
        .get_key_value(name)
        .map(|(k, _)| k.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_in_the_list_table_should_be_a_property_of_its_schema() {
        for (name, field) in skiff_apimachinery::lists::fields() {
            let property = property(name, field);
            assert!(
                property.is_some_and(|p| p.semantics.is_some()),
                "{name}.{field} is not a property of a k8s-openapi schema"
            );
        }
    }

    #[test]
    fn field_schemas_should_follow_references_and_list_items() {
        assert_eq!(
            root_name("", "Pod").as_deref(),
            Some("io.k8s.api.core.v1.Pod")
        );
        assert_eq!(
            field_schema("io.k8s.api.core.v1.Pod", "spec"),
            Some("io.k8s.api.core.v1.PodSpec")
        );
        assert_eq!(
            field_schema("io.k8s.api.core.v1.PodSpec", "containers"),
            Some("io.k8s.api.core.v1.Container")
        );
        let ports = &index().definitions["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(ports["x-kubernetes-patch-merge-key"], "containerPort");
    }
}
