//! OpenAPI: `/openapi/v3` (the index) with one document per group version, and `/openapi/v2`
//! (one Swagger 2.0 document), generated from the k8s-openapi types' schemas (schemars) and
//! annotated with the list-semantics table (`x-kubernetes-list-type`, `-list-map-keys`,
//! `-patch-strategy`, `-patch-merge-key`), with the paths, verbs and parameters this server
//! serves. kubectl uses them for `explain`, to learn that `fieldValidation` is supported (so
//! `--validate` is done server-side), and to compute strategic merge patches.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::registry::Registry;
use crate::schemas::{self, Register};
use crate::types::with_type;

/// The OpenAPI documents: v3 per group version (keyed by `api/v1` or `apis/{group}/{version}`,
/// each with its content hash) and the one v2 document.
pub struct Documents {
    /// OpenAPI v3 documents with their hashes.
    pub v3: BTreeMap<String, (Value, String)>,
    /// The Swagger 2.0 document.
    pub v2: Value,
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
            "application/strategic-merge-patch+json": {"schema": body},
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
    let mut generator = schemas::generator();
    let mut paths = Map::new();
    let mut kinds = Vec::new();
    for info in &registry.in_group_version(group, version) {
        if let Some(schema) = with_type(&info.group, &info.kind, &mut Register(&mut generator)) {
            paths_for(info, &schema, &mut paths);
            kinds.push((schema, info.clone()));
        }
    }
    let custom: Vec<_> = registry
        .custom()
        .iter()
        .filter(|c| c.info.group == group && c.info.version == version)
        .cloned()
        .collect();
    let object_meta = if custom.is_empty() {
        String::new()
    } else {
        generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>();
        <k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as schemars::JsonSchema>::schema_name()
            .into_owned()
    };
    let mut schemas = generator.take_definitions(true);
    for (name, definition) in schemas.iter_mut() {
        schemas::annotate(name, definition);
    }
    for resource in custom {
        let name = custom_schema_name(&resource.info);
        paths_for(&resource.info, &name, &mut paths);
        schemas.insert(name.clone(), custom_definition(&resource, &object_meta));
        kinds.push((name, resource.info.clone()));
    }
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

/// Upstream's name for a custom kind's schema: the reversed group, version, kind
/// (`com.example.v1.SMTPCredentials`).
fn custom_schema_name(info: &ResourceInfo) -> String {
    let group: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", group.join("."), info.version, info.kind)
}

/// A custom kind's schema: its openAPIV3Schema with the standard apiVersion, kind and metadata.
fn custom_definition(resource: &crate::registry::CustomResource, object_meta: &str) -> Value {
    let mut definition = resource
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(map) = definition.as_object_mut() {
        let properties = map.entry("properties").or_insert_with(|| json!({}));
        if let Some(properties) = properties.as_object_mut() {
            properties.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            properties.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            properties.insert(
                "metadata".into(),
                json!({"allOf": [{"$ref": format!("#/components/schemas/{object_meta}")}], "description": "Standard object's metadata."}),
            );
        }
    }
    definition
}

fn hash(value: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// Builds every document.
pub fn documents(registry: &Registry) -> Documents {
    let mut v3 = BTreeMap::new();
    let mut versions: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (group, group_versions) in registry.groups() {
        versions.extend(group_versions.into_iter().map(|v| (group.clone(), v)));
    }
    for (group, version) in &versions {
        let doc = document(registry, group, version);
        let key = if group.is_empty() {
            format!("api/{version}")
        } else {
            format!("apis/{group}/{version}")
        };
        let h = hash(&doc);
        v3.insert(key, (doc, h));
    }
    let v2 = swagger(&v3);
    Documents { v3, v2 }
}

/// Rewrites OpenAPI v3 references (`#/components/schemas/`) as Swagger 2.0 ones
/// (`#/definitions/`).
fn v2_refs(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                *r = r.replace("#/components/schemas/", "#/definitions/");
            }
            map.values_mut().for_each(v2_refs);
        }
        Value::Array(items) => items.iter_mut().for_each(v2_refs),
        _ => {}
    }
}

/// The Swagger 2.0 form of an OpenAPI v3 operation.
fn v2_operation(op: &Value) -> Value {
    let mut parameters: Vec<Value> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| json!({"name": p["name"], "in": p["in"], "description": p["description"], "type": "string", "uniqueItems": true}))
        .collect();
    let consumes: Vec<String> = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(schema) = op
        .pointer("/requestBody/content")
        .and_then(Value::as_object)
        .and_then(|c| c.values().next())
    {
        parameters.push(
            json!({"name": "body", "in": "body", "required": true, "schema": schema["schema"]}),
        );
    }
    let mut v2 = json!({
        "description": op["description"],
        "operationId": op["operationId"],
        "parameters": parameters,
        "produces": ["application/json", "application/yaml"],
        "responses": {"200": {"description": "OK", "schema": op.pointer("/responses/200/content/application~1json/schema")}},
        "x-kubernetes-action": op["x-kubernetes-action"],
        "x-kubernetes-group-version-kind": op["x-kubernetes-group-version-kind"],
    });
    if !consumes.is_empty() {
        v2["consumes"] = json!(consumes);
    }
    v2
}

/// One Swagger 2.0 document with every group version's paths and definitions.
fn swagger(v3: &BTreeMap<String, (Value, String)>) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for (doc, _) in v3.values() {
        if let Some(doc_paths) = doc["paths"].as_object() {
            for (path, item) in doc_paths {
                let mut v2_item = Map::new();
                for (verb, op) in item.as_object().into_iter().flatten() {
                    if verb == "parameters" {
                        let params: Vec<Value> = op.as_array().into_iter().flatten()
                            .map(|p| json!({"name": p["name"], "in": "path", "required": true, "type": "string", "uniqueItems": true}))
                            .collect();
                        v2_item.insert(verb.clone(), json!(params));
                    } else {
                        v2_item.insert(verb.clone(), v2_operation(op));
                    }
                }
                paths.insert(path.clone(), Value::Object(v2_item));
            }
        }
        if let Some(schemas) = doc
            .pointer("/components/schemas")
            .and_then(Value::as_object)
        {
            for (name, schema) in schemas {
                definitions
                    .entry(name.clone())
                    .or_insert_with(|| schema.clone());
            }
        }
    }
    let mut doc = json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": crate::KUBERNETES_VERSION},
        "paths": paths,
        "definitions": definitions,
    });
    v2_refs(&mut doc);
    doc
}

/// `/openapi/v3`: where each group version's document is.
pub fn index(docs: &Documents) -> Value {
    let paths: Map<String, Value> = docs
        .v3
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
