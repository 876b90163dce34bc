//! OpenAPI: `/openapi/v3` (the index) with one document per group version, and `/openapi/v2`
//! (one Swagger 2.0 document), generated from the k8s-openapi types' schemas (schemars) and
//! annotated with the list-semantics table (`x-kubernetes-list-type`, `-list-map-keys`,
//! `-patch-strategy`, `-patch-merge-key`), with the paths, verbs and parameters this server
//! serves. kubectl uses them for `explain`, to learn that `fieldValidation` is supported (so
//! `--validate` is done server-side), and to compute strategic merge patches.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use bytes::Bytes;

use serde_json::{Map, Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::registry::Registry;
use crate::schemas::{self, Register};
use crate::types::with_type;

/// The OpenAPI documents: v3 per group version (keyed by `api/v1` or `apis/{group}/{version}`,
/// each with its content hash) and the one v2 document, in JSON and (encoded on first use, kept
/// as long as these documents are) in protobuf.
pub struct Documents {
    /// OpenAPI v3 documents with their hashes.
    pub v3: BTreeMap<String, (Value, String)>,
    /// The Swagger 2.0 document.
    pub v2: Value,
    /// `v2` as a gnostic `openapi.v2.Document` and its entity tag.
    v2_proto: OnceLock<(Bytes, String)>,
}

impl Documents {
    /// The Swagger 2.0 document as protobuf (gnostic's `openapi.v2.Document`) with its ETag.
    pub fn v2_proto(&self) -> &(Bytes, String) {
        self.v2_proto.get_or_init(|| {
            let started = std::time::Instant::now();
            let bytes = crate::openapi_proto::document(&self.v2);
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut hasher);
            let etag = format!("\"{:016X}\"", hasher.finish());
            tracing::debug!(
                bytes = bytes.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "encoded /openapi/v2 as protobuf"
            );
            (Bytes::from(bytes), etag)
        })
    }
}

/// The media type of `/openapi/v2` in protobuf, as kube-openapi answers it.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether `Accept` prefers the protobuf form of `/openapi/v2` to JSON, as kube-openapi's
/// handler decides: clauses by descending `q` (stable), the first that matches either form
/// wins; kube-openapi matches both `…spec.v2@v1.0+protobuf` (what client-go sends) and
/// `…spec.v2.v1.0+protobuf`.
pub fn prefers_protobuf(accept: &str) -> bool {
    let mut clauses: Vec<(f32, String)> = accept
        .split(',')
        .map(|clause| {
            let mut parts = clause.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, media)
        })
        .collect();
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, media) in clauses {
        match media.as_str() {
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
            | "application/com.github.proto-openapi.spec.v2.v1.0+protobuf" => return true,
            "application/json" | "application/*" | "*/*" | "application/yaml" => return false,
            _ => {}
        }
    }
    false
}

/// `GET /openapi/v2` in protobuf when the client asks for it: the encoded document with its
/// `ETag` (and `304 Not Modified` for a matching `If-None-Match`), `Vary: Accept`. `None` for
/// every other request, which the JSON path answers.
pub fn protobuf_response(
    docs: impl FnOnce() -> std::sync::Arc<Documents>,
    parts: &http::request::Parts,
) -> Option<axum::response::Response> {
    use http::{HeaderValue, StatusCode, header};
    if parts.uri.path().trim_end_matches('/') != "/openapi/v2"
        || !matches!(parts.method, http::Method::GET | http::Method::HEAD)
    {
        return None;
    }
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())?;
    if !prefers_protobuf(accept) {
        return None;
    }
    let docs = docs();
    let (bytes, etag) = docs.v2_proto();
    let not_modified = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if not_modified {
        axum::response::Response::new(axum::body::Body::empty())
    } else {
        axum::response::Response::new(axum::body::Body::from(bytes.clone()))
    };
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(V2_PROTOBUF));
    headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    Some(response)
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

/// Adds the fields every object has to a custom kind's schema: apiVersion, kind and `metadata`
/// (as the document's form of a reference to ObjectMeta).
fn add_object_fields(schema: &mut Value, metadata: Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let properties = map.entry("properties").or_insert_with(|| json!({}));
    if let Some(properties) = properties.as_object_mut() {
        properties.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        properties.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        properties.insert("metadata".into(), metadata);
    }
}

/// A custom kind's schema: its openAPIV3Schema with the standard apiVersion, kind and metadata.
fn custom_definition(resource: &crate::registry::CustomResource, object_meta: &str) -> Value {
    let mut definition = resource
        .schema
        .clone()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    add_object_fields(
        &mut definition,
        json!({"allOf": [{"$ref": format!("#/components/schemas/{object_meta}")}], "description": "Standard object's metadata."}),
    );
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
    let custom_v2 = registry
        .custom()
        .iter()
        .map(|resource| {
            (
                custom_schema_name(&resource.info),
                custom_definition_v2(resource),
            )
        })
        .collect();
    let v2 = swagger(&v3, &custom_v2);
    Documents {
        v3,
        v2,
        v2_proto: OnceLock::new(),
    }
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

/// The Swagger 2.0 form of a schema, as upstream publishes it: a reference with siblings
/// (`{"$ref": …, "description": …}`) instead of OpenAPI v3's `{"allOf": [{"$ref": …}], …}`.
/// kube-openapi's proto parser (kubectl's client-side validation) follows only a `$ref`; an
/// `allOf` is an arbitrary value to it, so nothing below it would be checked.
fn v2_schema(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    let single_ref = match map.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 => all[0]
            .as_object()
            .filter(|r| r.len() == 1)
            .and_then(|r| r.get("$ref"))
            .cloned(),
        _ => None,
    };
    if let Some(reference) = single_ref
        && !["$ref", "type", "properties"]
            .iter()
            .any(|k| map.contains_key(*k))
    {
        map.remove("allOf");
        map.insert("$ref".into(), reference);
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(v2_schema);
    }
    match map.get_mut("items") {
        Some(Value::Array(items)) => items.iter_mut().for_each(v2_schema),
        Some(items) => v2_schema(items),
        None => {}
    }
    if let Some(additional) = map.get_mut("additionalProperties") {
        v2_schema(additional);
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(all)) = map.get_mut(key) {
            all.iter_mut().for_each(v2_schema);
        }
    }
    if let Some(not) = map.get_mut("not") {
        v2_schema(not);
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

/// A custom kind's Swagger 2.0 definition, as upstream's CRD builder publishes it for v2: without
/// a schema, or with one that keeps unknown fields at its root, only `type: object` (properties
/// would make kubectl refuse every other field); else the schema made v2-compatible (see
/// [`v2_structural`]) with apiVersion, kind and a `$ref` to ObjectMeta added.
fn custom_definition_v2(resource: &crate::registry::CustomResource) -> Value {
    let preserves = |s: &Value| s["x-kubernetes-preserve-unknown-fields"] == json!(true);
    let mut definition = match &resource.schema {
        Some(schema) if !preserves(schema) => {
            let mut schema = schema.clone();
            v2_structural(&mut schema);
            add_object_fields(
                &mut schema,
                json!({"$ref": format!("#/components/schemas/{}", <k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as schemars::JsonSchema>::schema_name()), "description": "Standard object's metadata."}),
            );
            schema
        }
        _ => json!({"type": "object"}),
    };
    let info = &resource.info;
    definition["x-kubernetes-group-version-kind"] =
        json!([{"group": info.group, "version": info.version, "kind": info.kind}]);
    definition
}

/// Upstream's `ToStructuralOpenAPIV2`: what kubectl's v2 parser cannot take is removed from a
/// structural schema, recursively — the junctors (`allOf`, `oneOf`, `anyOf`, `not`); the type,
/// items and properties of a nullable value; the items and properties of a value that keeps
/// unknown fields; the type of an array left without items; nullable fields from `required`.
fn v2_structural(schema: &mut Value) {
    let Some(map) = schema.as_object_mut() else {
        return;
    };
    for junctor in ["allOf", "oneOf", "anyOf", "not"] {
        map.remove(junctor);
    }
    if map.remove("nullable") == Some(json!(true)) {
        for key in ["type", "items", "properties"] {
            map.remove(key);
        }
    }
    if map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) {
        map.remove("items");
        map.remove("properties");
    }
    if !map.contains_key("items") && map.get("type") == Some(&json!("array")) {
        map.remove("type");
    }
    let nullable = |s: &Value| s["nullable"] == json!(true);
    let nullable_fields: Vec<String> = map
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(_, s)| nullable(s))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(Value::Array(required)) = map.get_mut("required") {
        required.retain(|r| {
            !r.as_str()
                .is_some_and(|r| nullable_fields.iter().any(|f| f == r))
        });
    }
    if map.get("additionalProperties").is_some_and(nullable) {
        map.remove("required");
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        properties.values_mut().for_each(v2_structural);
    }
    if let Some(items) = map.get_mut("items") {
        v2_structural(items);
    }
    if let Some(additional) = map.get_mut("additionalProperties") {
        v2_structural(additional);
    }
}

/// One Swagger 2.0 document with every group version's paths and definitions; the custom
/// kinds' definitions are `custom` (their own v2 form) instead of their v3 schemas.
fn swagger(v3: &BTreeMap<String, (Value, String)>, custom: &BTreeMap<String, Value>) -> Value {
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
                definitions.entry(name.clone()).or_insert_with(|| {
                    let mut schema = custom.get(name).unwrap_or(schema).clone();
                    v2_schema(&mut schema);
                    schema
                });
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn request(accept: &str, if_none_match: Option<&str>) -> http::request::Parts {
        let mut builder = http::Request::get("/openapi/v2").header(http::header::ACCEPT, accept);
        if let Some(tag) = if_none_match {
            builder = builder.header(http::header::IF_NONE_MATCH, tag);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn accept_should_choose_protobuf_only_when_it_ranks_first() {
        assert!(prefers_protobuf(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(prefers_protobuf(
            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf, application/json"
        ));
        assert!(prefers_protobuf(
            "application/json;q=0.5, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(!prefers_protobuf(
            "application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
        assert!(!prefers_protobuf("*/*"));
        assert!(!prefers_protobuf("application/vnd.kubernetes.protobuf"));
    }

    #[test]
    fn openapi_v2_in_protobuf_should_be_served_with_its_media_type_and_etag() {
        let docs = Arc::new(documents(&Registry::builtin()));
        let accept = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
        let response = protobuf_response(|| docs.clone(), &request(accept, None)).unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[http::header::CONTENT_TYPE], V2_PROTOBUF);
        assert_eq!(headers[http::header::VARY], "Accept");
        let etag = headers[http::header::ETAG].to_str().unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        assert_eq!(etag, docs.v2_proto().1);
        // The document starts with `swagger = 1`: "2.0".
        assert!(docs.v2_proto().0.starts_with(b"\x0a\x032.0"));

        let again = protobuf_response(|| docs.clone(), &request(accept, Some(&etag))).unwrap();
        assert_eq!(again.status(), http::StatusCode::NOT_MODIFIED);
        let stale = protobuf_response(|| docs.clone(), &request(accept, Some("\"0\""))).unwrap();
        assert_eq!(stale.status(), http::StatusCode::OK);

        assert!(protobuf_response(|| docs.clone(), &request("application/json", None)).is_none());
        let mut v3 = request(accept, None);
        v3.uri = "/openapi/v3".parse().unwrap();
        assert!(protobuf_response(|| docs.clone(), &v3).is_none());
    }

    #[test]
    fn v2_schemas_should_refer_directly_instead_of_through_all_of() {
        let mut schema = json!({"properties": {
            "metadata": {"allOf": [{"$ref": "#/components/schemas/M"}], "description": "d"},
            "both": {"allOf": [{"$ref": "#/components/schemas/M"}], "type": "object"},
            "list": {"type": "array", "items": {"allOf": [{"$ref": "#/components/schemas/M"}]}},
        }});
        v2_schema(&mut schema);
        assert_eq!(
            schema["properties"]["metadata"],
            json!({"$ref": "#/components/schemas/M", "description": "d"})
        );
        assert!(
            schema["properties"]["both"]["allOf"].is_array(),
            "kept beside a type"
        );
        assert_eq!(
            schema["properties"]["list"]["items"],
            json!({"$ref": "#/components/schemas/M"})
        );
    }
}
