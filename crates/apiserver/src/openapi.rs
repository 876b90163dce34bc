//! OpenAPI v3: `/openapi/v3` (the index) and one document per group version, generated from the
//! k8s-openapi types' schemas (schemars), with the paths, verbs and parameters this server
//! serves. kubectl uses them for `explain` and to learn that `fieldValidation` is supported
//! (so `--validate` is done server-side).
//!
//! The schemas carry no list semantics yet (list-type, map keys, patch strategy): PATCH
//! operations therefore do not advertise strategic merge patch, and kubectl computes its patches
//! from its own compiled-in types instead.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::registry::Registry;
use crate::types::{KindVisitor, with_type};

/// The OpenAPI documents of every group version, keyed by `api/v1` or `apis/{group}/{version}`,
/// each with its content hash.
pub type Documents = BTreeMap<String, (Value, String)>;

struct Register<'a>(&'a mut SchemaGenerator);

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

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": format!("{name} of the object"), "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(info: &ResourceInfo, action: &str, schema: &str, writes: bool) -> Value {
    let mut parameters = Vec::new();
    if writes {
        parameters.push(query("dryRun", "When present, indicates that modifications should not be persisted. Valid values: All."));
        parameters.push(query(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
        ));
        parameters.push(query("fieldValidation", "How the server handles unknown or duplicate fields: Ignore, Warn (the default) or Strict."));
    }
    if matches!(action, "list" | "watchlist") {
        for (name, description) in [
            (
                "labelSelector",
                "A selector to restrict the list of returned objects by their labels.",
            ),
            (
                "fieldSelector",
                "A selector to restrict the list of returned objects by their fields.",
            ),
            (
                "limit",
                "The maximum number of responses to return for a list call.",
            ),
            (
                "continue",
                "The continue option should be set when retrieving more results from the server.",
            ),
            (
                "resourceVersion",
                "Sets a constraint on what resource versions a request may be served from.",
            ),
            ("watch", "Watch for changes to the described resources."),
            ("timeoutSeconds", "Timeout for the list/watch call."),
        ] {
            parameters.push(query(name, description));
        }
    }
    let mut op = json!({
        "description": format!("{action} {}", info.kind),
        "operationId": format!("{action}{}", info.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(schema)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
    });
    if action == "patch" {
        let body = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
        op["requestBody"] = json!({"content": {
            "application/json-patch+json": {"schema": body},
            "application/merge-patch+json": {"schema": body},
        }, "required": true});
    } else if matches!(action, "post" | "put") {
        op["requestBody"] = json!({"content": {"application/json": {"schema": schema_ref(schema)}}, "required": true});
    }
    op
}

fn paths_for(info: &ResourceInfo, schema: &str, paths: &mut Map<String, Value>) {
    let base = if info.group.is_empty() {
        format!("/api/{}", info.version)
    } else {
        format!("/apis/{}/{}", info.group, info.version)
    };
    let (collection, scope_params) = if info.namespaced() {
        (
            format!("{base}/namespaces/{{namespace}}/{}", info.plural),
            vec![path_param("namespace")],
        )
    } else {
        (format!("{base}/{}", info.plural), vec![])
    };
    let mut list_item = Map::new();
    if info.allows("list") {
        list_item.insert("get".into(), operation(info, "list", schema, false));
    }
    if info.allows("create") {
        list_item.insert("post".into(), operation(info, "post", schema, true));
    }
    if info.allows("deletecollection") {
        list_item.insert(
            "delete".into(),
            operation(info, "deletecollection", schema, false),
        );
    }
    list_item.insert("parameters".into(), json!(scope_params));
    paths.insert(collection.clone(), Value::Object(list_item));
    if !info.allows("get") {
        return;
    }
    let mut item = Map::new();
    item.insert("get".into(), operation(info, "get", schema, false));
    if info.allows("update") {
        item.insert("put".into(), operation(info, "put", schema, true));
    }
    if info.allows("patch") {
        item.insert("patch".into(), operation(info, "patch", schema, true));
    }
    if info.allows("delete") {
        item.insert("delete".into(), operation(info, "delete", schema, false));
    }
    let mut params = scope_params;
    params.push(path_param("name"));
    item.insert("parameters".into(), json!(params));
    paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
}

fn document(registry: &Registry, group: &str, version: &str) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for info in registry.in_group_version(group, version) {
        if let Some(schema) = with_type(&info.group, &info.kind, &mut Register(&mut generator)) {
            paths_for(info, &schema, &mut paths);
            kinds.push((schema, info.clone()));
        }
    }
    let mut schemas = generator.take_definitions(true);
    for (schema, info) in kinds {
        if let Some(Value::Object(definition)) = schemas.get_mut(&schema) {
            definition.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": info.group, "version": info.version, "kind": info.kind}]),
            );
        }
    }
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.Patch".into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn hash(value: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// Builds every group version's document.
pub fn documents(registry: &Registry) -> Documents {
    let mut docs = Documents::new();
    let mut versions: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (group, group_versions) in registry.groups() {
        versions.extend(group_versions.into_iter().map(|v| (group.clone(), v)));
    }
    for (group, version) in versions {
        let doc = document(registry, &group, &version);
        let key = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let h = hash(&doc);
        docs.insert(key, (doc, h));
    }
    docs
}

/// `/openapi/v3`: where each group version's document is.
pub fn index(docs: &Documents) -> Value {
    let paths: Map<String, Value> = docs
        .iter()
        .map(|(key, (_, h))| {
            (
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={h}")}),
            )
        })
        .collect();
    json!({"paths": paths})
}
