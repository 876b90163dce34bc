//! `/openapi/v2` as protobuf: the gnostic `openapi.v2.Document` message
//! (github.com/google/gnostic-models, `openapiv2/OpenAPIv2.proto`) encoded from the same Swagger
//! 2.0 JSON document that is served as JSON, as kube-openapi's handler does with gnostic's
//! `ParseDocument` + `proto.Marshal`. kubectl asks for this form
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`) for client-side validation —
//! of every `kind: List` document — and parses it with kube-openapi's `pkg/util/proto`.
//!
//! The encoder walks the JSON by the Swagger 2.0 structure: a key the message has no field for
//! is left out (gnostic would refuse it; OpenAPI v3 leftovers such as `oneOf` or `nullable`
//! have no field), `x-` keys become vendor extensions. Free-form values (`default`, `enum`,
//! `example`, extensions) are gnostic's `Any` with their `yaml` text, which is written as JSON
//! (JSON is YAML's flow style; kube-openapi reads it with a YAML parser). Message fields are
//! written whenever the JSON has them, even empty: kube-openapi tells `properties: {}` (an
//! object kind) from no properties (a map) by presence.

use serde_json::{Map, Value};

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LENGTH_DELIMITED: u64 = 2;

/// One message being written.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8 & 0x7f) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn key(&mut self, field: u32, wire: u64) {
        self.varint((u64::from(field) << 3) | wire);
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, LENGTH_DELIMITED);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// A proto3 string: the empty string is the default and is not written.
    fn string(&mut self, field: u32, value: Option<&Value>) {
        if let Some(s) = value.and_then(Value::as_str)
            && !s.is_empty()
        {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A repeated string from a JSON array of strings (or one string).
    fn strings(&mut self, field: u32, value: Option<&Value>) {
        match value {
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    self.bytes(field, s.as_bytes());
                }
            }
            Some(Value::String(s)) => self.bytes(field, s.as_bytes()),
            _ => {}
        }
    }

    fn boolean(&mut self, field: u32, value: Option<&Value>) {
        if value.and_then(Value::as_bool) == Some(true) {
            self.key(field, VARINT);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, value: Option<&Value>) {
        let number = value.and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)));
        if let Some(n) = number
            && n != 0
        {
            self.key(field, VARINT);
            // Two's complement, as protobuf encodes a negative int64.
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, value: Option<&Value>) {
        if let Some(f) = value.and_then(Value::as_f64)
            && f != 0.0
        {
            self.key(field, FIXED64);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, message: Message) {
        self.bytes(field, &message.0);
    }

    /// gnostic's `Any` with the value's YAML (here: JSON) text in `yaml` (field 2).
    fn any(&mut self, field: u32, value: Option<&Value>) {
        if let Some(value) = value {
            let mut any = Message::default();
            any.bytes(2, value.to_string().as_bytes());
            self.message(field, any);
        }
    }

    /// `repeated Any` from a JSON array.
    fn anys(&mut self, field: u32, value: Option<&Value>) {
        for item in value.and_then(Value::as_array).into_iter().flatten() {
            self.any(field, Some(item));
        }
    }

    /// `repeated NamedAny vendor_extension`: every `x-` key of `object`.
    fn extensions(&mut self, field: u32, object: &Map<String, Value>) {
        for (name, value) in object.iter().filter(|(k, _)| k.starts_with("x-")) {
            let mut named = Message::default();
            named.bytes(1, name.as_bytes());
            named.any(2, Some(value));
            self.message(field, named);
        }
    }
}

/// Encodes a Swagger 2.0 document as an `openapi.v2.Document`.
pub fn document(doc: &Value) -> Vec<u8> {
    let mut out = Message::default();
    let Some(doc) = doc.as_object() else {
        return out.0;
    };
    out.string(1, doc.get("swagger"));
    if let Some(info) = doc.get("info").and_then(Value::as_object) {
        out.message(2, info_message(info));
    }
    out.string(3, doc.get("host"));
    out.string(4, doc.get("basePath"));
    out.strings(5, doc.get("schemes"));
    out.strings(6, doc.get("consumes"));
    out.strings(7, doc.get("produces"));
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut message = Message::default();
        message.extensions(1, paths);
        for (path, item) in paths.iter().filter(|(k, _)| !k.starts_with("x-")) {
            if let Some(item) = item.as_object() {
                let mut named = Message::default();
                named.bytes(1, path.as_bytes());
                named.message(2, path_item(item));
                message.message(2, named);
            }
        }
        out.message(8, message);
    }
    if let Some(definitions) = doc.get("definitions").and_then(Value::as_object) {
        out.message(9, named_schemas(definitions));
    }
    if let Some(docs) = doc.get("externalDocs").and_then(Value::as_object) {
        out.message(15, external_docs(docs));
    }
    out.extensions(16, doc);
    out.0
}

fn info_message(info: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.string(1, info.get("title"));
    m.string(2, info.get("version"));
    m.string(3, info.get("description"));
    m.string(4, info.get("termsOfService"));
    if let Some(contact) = info.get("contact").and_then(Value::as_object) {
        let mut c = Message::default();
        c.string(1, contact.get("name"));
        c.string(2, contact.get("url"));
        c.string(3, contact.get("email"));
        c.extensions(4, contact);
        m.message(5, c);
    }
    if let Some(license) = info.get("license").and_then(Value::as_object) {
        let mut l = Message::default();
        l.string(1, license.get("name"));
        l.string(2, license.get("url"));
        l.extensions(3, license);
        m.message(6, l);
    }
    m.extensions(7, info);
    m
}

fn external_docs(docs: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.string(1, docs.get("description"));
    m.string(2, docs.get("url"));
    m.extensions(3, docs);
    m
}

/// A `PathItem`: `$ref`, one `Operation` per verb, the shared parameters.
fn path_item(item: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.string(1, item.get("$ref"));
    for (field, verb) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(verb).and_then(Value::as_object) {
            m.message(field, operation(op));
        }
    }
    parameters(&mut m, 9, item.get("parameters"));
    m.extensions(10, item);
    m
}

fn operation(op: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.strings(1, op.get("tags"));
    m.string(2, op.get("summary"));
    m.string(3, op.get("description"));
    if let Some(docs) = op.get("externalDocs").and_then(Value::as_object) {
        m.message(4, external_docs(docs));
    }
    m.string(5, op.get("operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    parameters(&mut m, 8, op.get("parameters"));
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut r = Message::default();
        for (code, value) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
            let Some(value) = value.as_object() else {
                continue;
            };
            let mut response_value = Message::default();
            if value.contains_key("$ref") {
                response_value.message(2, json_reference(value));
            } else {
                let mut response = Message::default();
                response.string(1, value.get("description"));
                if let Some(schema) = value.get("schema").and_then(Value::as_object) {
                    let mut item = Message::default();
                    item.message(1, schema_message(schema));
                    response.message(2, item);
                }
                response.extensions(5, value);
                response_value.message(1, response);
            }
            let mut named = Message::default();
            named.bytes(1, code.as_bytes());
            named.message(2, response_value);
            r.message(1, named);
        }
        r.extensions(2, responses);
        m.message(9, r);
    }
    m.strings(10, op.get("schemes"));
    m.boolean(11, op.get("deprecated"));
    m.extensions(13, op);
    m
}

fn json_reference(value: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.string(1, value.get("$ref"));
    m.string(2, value.get("description"));
    m
}

/// `repeated ParametersItem`: a parameter (body or not) or a reference to one.
fn parameters(m: &mut Message, field: u32, value: Option<&Value>) {
    for p in value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        let mut item = Message::default();
        if p.contains_key("$ref") {
            item.message(2, json_reference(p));
        } else {
            item.message(1, parameter(p));
        }
        m.message(field, item);
    }
}

/// A `Parameter`: `BodyParameter` for `in: body`, else the `NonBodyParameter` of its place.
fn parameter(p: &Map<String, Value>) -> Message {
    let mut parameter = Message::default();
    let place = p.get("in").and_then(Value::as_str).unwrap_or_default();
    if place == "body" {
        let mut body = Message::default();
        body.string(1, p.get("description"));
        body.string(2, p.get("name"));
        body.string(3, p.get("in"));
        body.boolean(4, p.get("required"));
        if let Some(schema) = p.get("schema").and_then(Value::as_object) {
            body.message(5, schema_message(schema));
        }
        body.extensions(6, p);
        parameter.message(1, body);
        return parameter;
    }
    // header 1, formData 2, query 3, path 4; query and formData have `allowEmptyValue` (5), so
    // their type-and-constraint fields start one later.
    let (which, base) = match place {
        "header" => (1, 5),
        "formData" => (2, 6),
        "path" => (4, 5),
        _ => (3, 6),
    };
    let mut sub = Message::default();
    sub.boolean(1, p.get("required"));
    sub.string(2, p.get("in"));
    sub.string(3, p.get("description"));
    sub.string(4, p.get("name"));
    if base == 6 {
        sub.boolean(5, p.get("allowEmptyValue"));
    }
    primitive_fields(&mut sub, p, base);
    let mut non_body = Message::default();
    non_body.message(which, sub);
    parameter.message(2, non_body);
    parameter
}

/// The fields that `PrimitivesItems` and the non-body parameter schemas share, in the same
/// order from `base`: type, format, items, collectionFormat, default, maximum,
/// exclusiveMaximum, minimum, exclusiveMinimum, maxLength, minLength, pattern, maxItems,
/// minItems, uniqueItems, enum, multipleOf, then the vendor extensions.
fn primitive_fields(m: &mut Message, p: &Map<String, Value>, base: u32) {
    m.string(base, p.get("type"));
    m.string(base + 1, p.get("format"));
    if let Some(items) = p.get("items").and_then(Value::as_object) {
        let mut nested = Message::default();
        primitive_fields(&mut nested, items, 1);
        m.message(base + 2, nested);
    }
    m.string(base + 3, p.get("collectionFormat"));
    m.any(base + 4, p.get("default"));
    m.double(base + 5, p.get("maximum"));
    m.boolean(base + 6, p.get("exclusiveMaximum"));
    m.double(base + 7, p.get("minimum"));
    m.boolean(base + 8, p.get("exclusiveMinimum"));
    m.int64(base + 9, p.get("maxLength"));
    m.int64(base + 10, p.get("minLength"));
    m.string(base + 11, p.get("pattern"));
    m.int64(base + 12, p.get("maxItems"));
    m.int64(base + 13, p.get("minItems"));
    m.boolean(base + 14, p.get("uniqueItems"));
    m.anys(base + 15, p.get("enum"));
    m.double(base + 16, p.get("multipleOf"));
    m.extensions(base + 17, p);
}

/// `Definitions` and `Properties` alike: `repeated NamedSchema additional_properties = 1`.
fn named_schemas(schemas: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    for (name, schema) in schemas {
        let mut named = Message::default();
        named.bytes(1, name.as_bytes());
        if let Some(schema) = schema.as_object() {
            named.message(2, schema_message(schema));
        }
        m.message(1, named);
    }
    m
}

/// A `Schema`.
fn schema_message(s: &Map<String, Value>) -> Message {
    let mut m = Message::default();
    m.string(1, s.get("$ref"));
    m.string(2, s.get("format"));
    m.string(3, s.get("title"));
    m.string(4, s.get("description"));
    m.any(5, s.get("default"));
    m.double(6, s.get("multipleOf"));
    m.double(7, s.get("maximum"));
    m.boolean(8, s.get("exclusiveMaximum"));
    m.double(9, s.get("minimum"));
    m.boolean(10, s.get("exclusiveMinimum"));
    m.int64(11, s.get("maxLength"));
    m.int64(12, s.get("minLength"));
    m.string(13, s.get("pattern"));
    m.int64(14, s.get("maxItems"));
    m.int64(15, s.get("minItems"));
    m.boolean(16, s.get("uniqueItems"));
    m.int64(17, s.get("maxProperties"));
    m.int64(18, s.get("minProperties"));
    m.strings(19, s.get("required"));
    m.anys(20, s.get("enum"));
    match s.get("additionalProperties") {
        Some(Value::Object(schema)) => {
            let mut item = Message::default();
            item.message(1, schema_message(schema));
            m.message(21, item);
        }
        Some(Value::Bool(allowed)) => {
            // A oneof member is written even when false.
            let mut item = Message::default();
            item.key(2, VARINT);
            item.varint(u64::from(*allowed));
            m.message(21, item);
        }
        _ => {}
    }
    if let Some(types) = s.get("type")
        && (types.is_string() || types.is_array())
    {
        let mut item = Message::default();
        item.strings(1, Some(types));
        m.message(22, item);
    }
    let items: Vec<&Map<String, Value>> = match s.get("items") {
        Some(Value::Object(one)) => vec![one],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    };
    if s.contains_key("items") {
        let mut item = Message::default();
        for schema in items {
            item.message(1, schema_message(schema));
        }
        m.message(23, item);
    }
    for schema in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
    {
        m.message(24, schema_message(schema));
    }
    if let Some(properties) = s.get("properties").and_then(Value::as_object) {
        m.message(25, named_schemas(properties));
    }
    m.string(26, s.get("discriminator"));
    m.boolean(27, s.get("readOnly"));
    if let Some(xml) = s.get("xml").and_then(Value::as_object) {
        let mut x = Message::default();
        x.string(1, xml.get("name"));
        x.string(2, xml.get("namespace"));
        x.string(3, xml.get("prefix"));
        x.boolean(4, xml.get("attribute"));
        x.boolean(5, xml.get("wrapped"));
        x.extensions(6, xml);
        m.message(28, x);
    }
    if let Some(docs) = s.get("externalDocs").and_then(Value::as_object) {
        m.message(29, external_docs(docs));
    }
    m.any(30, s.get("example"));
    m.extensions(31, s);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One decoded field: a varint, a fixed64 or length-delimited bytes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Wire<'a> {
        Varint(u64),
        Fixed64(u64),
        Bytes(&'a [u8]),
    }

    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return value;
            }
            shift += 7;
        }
    }

    /// A tiny protobuf decoder: every (field number, value) in order.
    fn fields(bytes: &[u8]) -> Vec<(u32, Wire<'_>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let key = varint(bytes, &mut at);
            let field = (key >> 3) as u32;
            let value = match key & 7 {
                0 => Wire::Varint(varint(bytes, &mut at)),
                1 => {
                    let raw = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
                    at += 8;
                    Wire::Fixed64(raw)
                }
                2 => {
                    let len = varint(bytes, &mut at) as usize;
                    at += len;
                    Wire::Bytes(&bytes[at - len..at])
                }
                other => panic!("unexpected wire type {other}"),
            };
            out.push((field, value));
        }
        assert_eq!(at, bytes.len(), "no trailing bytes");
        out
    }

    fn all(bytes: &[u8], field: u32) -> Vec<&[u8]> {
        fields(bytes)
            .into_iter()
            .filter(|(f, _)| *f == field)
            .map(|(_, v)| match v {
                Wire::Bytes(b) => b,
                other => panic!("field {field} is {other:?}"),
            })
            .collect()
    }

    fn one(bytes: &[u8], field: u32) -> Option<&[u8]> {
        let found = all(bytes, field);
        assert!(found.len() <= 1, "field {field} repeated");
        found.first().copied()
    }

    fn text(bytes: &[u8], field: u32) -> Option<&str> {
        one(bytes, field).map(|b| std::str::from_utf8(b).unwrap())
    }

    fn texts(bytes: &[u8], field: u32) -> Vec<&str> {
        all(bytes, field)
            .into_iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    /// `repeated NamedX` as (name, value bytes).
    fn named(bytes: &[u8], field: u32) -> Vec<(&str, &[u8])> {
        all(bytes, field)
            .into_iter()
            .map(|n| {
                (
                    text(n, 1).unwrap_or_default(),
                    one(n, 2).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// An `Any`'s value, read back from its `yaml` text.
    fn any_value(any: &[u8]) -> Value {
        serde_json::from_str(text(any, 2).unwrap()).unwrap()
    }

    fn extensions(bytes: &[u8], field: u32) -> Map<String, Value> {
        named(bytes, field)
            .into_iter()
            .map(|(name, any)| (name.to_string(), any_value(any)))
            .collect()
    }

    fn definitions(doc: &[u8]) -> Vec<(&str, &[u8])> {
        named(one(doc, 9).unwrap(), 1)
    }

    #[test]
    fn schema_fields_should_be_encoded_with_gnostic_field_numbers() {
        let doc = json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": "v1.34.0"},
            "paths": {},
            "definitions": {
                "io.k8s.api.core.v1.ConfigMap": {
                    "description": "ConfigMap holds configuration data.",
                    "type": "object",
                    "required": ["a", "b"],
                    "properties": {
                        "data": {"type": "object", "additionalProperties": {"type": "string"}},
                        "ports": {
                            "type": "array",
                            "items": {"$ref": "#/definitions/Port"},
                            "x-kubernetes-patch-strategy": "merge",
                            "x-kubernetes-patch-merge-key": "containerPort",
                        },
                        "mode": {"type": "integer", "format": "int32", "default": 420, "minimum": -1.5, "enum": [1, "two"]},
                        "open": {"type": "object", "additionalProperties": false},
                        "empty": {"type": "object", "properties": {}},
                    },
                    "x-kubernetes-group-version-kind": [{"group": "", "kind": "ConfigMap", "version": "v1"}],
                },
            },
        });
        let bytes = document(&doc);
        assert_eq!(text(&bytes, 1), Some("2.0"));
        let info = one(&bytes, 2).unwrap();
        assert_eq!(
            (text(info, 1), text(info, 2)),
            (Some("Kubernetes"), Some("v1.34.0"))
        );
        assert!(one(&bytes, 8).is_some(), "paths present even when empty");

        let defs = definitions(&bytes);
        assert_eq!(defs.len(), 1);
        let (name, cm) = defs[0];
        assert_eq!(name, "io.k8s.api.core.v1.ConfigMap");
        assert_eq!(text(cm, 4), Some("ConfigMap holds configuration data."));
        assert_eq!(texts(one(cm, 22).unwrap(), 1), ["object"]);
        assert_eq!(texts(cm, 19), ["a", "b"]);
        assert_eq!(
            extensions(cm, 31)["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "ConfigMap", "version": "v1"}])
        );

        let properties: BTreeMap<&str, &[u8]> =
            named(one(cm, 25).unwrap(), 1).into_iter().collect();
        let data = properties["data"];
        let additional = one(data, 21).unwrap();
        assert_eq!(
            texts(one(one(additional, 1).unwrap(), 22).unwrap(), 1),
            ["string"]
        );

        let ports = properties["ports"];
        let items = all(one(ports, 23).unwrap(), 1);
        assert_eq!(items.len(), 1);
        assert_eq!(text(items[0], 1), Some("#/definitions/Port"));
        let ext = extensions(ports, 31);
        assert_eq!(ext["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(ext["x-kubernetes-patch-merge-key"], "containerPort");

        let mode = properties["mode"];
        assert_eq!(text(mode, 2), Some("int32"));
        assert_eq!(any_value(one(mode, 5).unwrap()), json!(420));
        let enums: Vec<Value> = all(mode, 20).into_iter().map(any_value).collect();
        assert_eq!(enums, [json!(1), json!("two")]);
        let minimum = fields(mode).into_iter().find(|(f, _)| *f == 9).unwrap().1;
        assert_eq!(minimum, Wire::Fixed64((-1.5f64).to_bits()));

        let open = one(properties["open"], 21).unwrap();
        assert_eq!(
            fields(open),
            [(2, Wire::Varint(0))],
            "additionalProperties: false"
        );
        assert_eq!(
            one(properties["empty"], 25),
            Some(&[][..]),
            "empty properties are present"
        );
    }

    #[test]
    fn parameters_and_responses_should_be_encoded_by_their_place() {
        let doc = json!({
            "swagger": "2.0",
            "paths": {"/api/v1/namespaces/{namespace}/configmaps": {
                "post": {
                    "operationId": "postConfigMap",
                    "consumes": ["application/json"],
                    "parameters": [
                        {"name": "dryRun", "in": "query", "type": "string", "uniqueItems": true},
                        {"name": "body", "in": "body", "required": true, "schema": {"$ref": "#/definitions/X"}},
                    ],
                    "responses": {"200": {"description": "OK", "schema": {"$ref": "#/definitions/X"}}},
                    "x-kubernetes-action": "post",
                },
                "parameters": [{"name": "namespace", "in": "path", "required": true, "type": "string"}],
            }},
            "definitions": {"X": {"type": "object"}},
        });
        let bytes = document(&doc);
        let paths = named(one(&bytes, 8).unwrap(), 2);
        let (path, item) = paths[0];
        assert_eq!(path, "/api/v1/namespaces/{namespace}/configmaps");
        let post = one(item, 4).unwrap();
        assert_eq!(text(post, 5), Some("postConfigMap"));
        assert_eq!(texts(post, 7), ["application/json"]);
        assert_eq!(extensions(post, 13)["x-kubernetes-action"], "post");
        let params = all(post, 8);
        // ParametersItem.parameter → Parameter.non_body_parameter → query_parameter_sub_schema.
        let query = one(one(one(params[0], 1).unwrap(), 2).unwrap(), 3).unwrap();
        assert_eq!(
            (text(query, 4), text(query, 6)),
            (Some("dryRun"), Some("string"))
        );
        assert!(
            fields(query).contains(&(20, Wire::Varint(1))),
            "uniqueItems"
        );
        let body = one(one(params[1], 1).unwrap(), 1).unwrap();
        assert_eq!(text(body, 2), Some("body"));
        assert_eq!(text(one(body, 5).unwrap(), 1), Some("#/definitions/X"));
        let responses = named(one(post, 9).unwrap(), 1);
        assert_eq!(responses[0].0, "200");
        let response = one(responses[0].1, 1).unwrap();
        assert_eq!(text(response, 1), Some("OK"));
        let schema = one(one(response, 2).unwrap(), 1).unwrap();
        assert_eq!(text(schema, 1), Some("#/definitions/X"));
        let path_param = one(one(one(all(item, 9)[0], 1).unwrap(), 2).unwrap(), 4).unwrap();
        assert_eq!(
            (text(path_param, 4), text(path_param, 5)),
            (Some("namespace"), Some("string"))
        );
    }

    /// Checks a schema as kube-openapi's `pkg/util/proto` `ParseSchema` does, which fails the
    /// whole document (and with it kubectl's validation) on the first error.
    fn parse_as_kube_openapi(schema: &[u8], path: &str, models: &BTreeMap<&str, &[u8]>) {
        let types = one(schema, 22).map(|t| texts(t, 1)).unwrap_or_default();
        let properties = one(schema, 25);
        if let Some(reference) = text(schema, 1) {
            assert!(
                properties.is_none_or(|p| all(p, 1).is_empty()),
                "{path}: embedded type beside $ref"
            );
            assert!(
                types.is_empty(),
                "{path}: definition reference can't have a type"
            );
            let name = reference
                .strip_prefix("#/definitions/")
                .unwrap_or_else(|| panic!("{path}: reference to non-definition {reference}"));
            assert!(models.contains_key(name), "{path}: unknown model {name}");
            return;
        }
        for any in all(schema, 20).into_iter().chain(one(schema, 5)) {
            any_value(any);
        }
        for (_, any) in named(schema, 31) {
            any_value(any);
        }
        let walk_properties = |p: &[u8]| {
            for (name, sub) in named(p, 1) {
                parse_as_kube_openapi(sub, &format!("{path}.{name}"), models);
            }
        };
        match types.as_slice() {
            [] => {
                if let Some(p) = properties {
                    walk_properties(p);
                }
            }
            ["object"] => match (properties, one(schema, 21).and_then(|a| one(a, 1))) {
                (Some(p), _) => walk_properties(p),
                (None, Some(sub)) => parse_as_kube_openapi(sub, &format!("{path}{{}}"), models),
                (None, None) => {}
            },
            ["array"] => {
                let items = one(schema, 23).map(|i| all(i, 1)).unwrap_or_default();
                assert_eq!(
                    items.len(),
                    1,
                    "{path}: array should have exactly one sub-item"
                );
                parse_as_kube_openapi(items[0], &format!("{path}[]"), models);
            }
            [primitive] => assert!(
                ["string", "number", "integer", "boolean"].contains(primitive),
                "{path}: unknown primitive type {primitive}"
            ),
            _ => panic!("{path}: definitions with multiple types aren't supported"),
        }
    }

    #[test]
    fn served_v2_document_should_parse_as_kube_openapi_models() {
        let registry = crate::registry::Registry::builtin();
        let docs = crate::openapi::documents(&registry);
        let (bytes, _) = docs.v2_proto();
        assert_eq!(text(bytes, 1), Some("2.0"));
        let defs = definitions(bytes);
        assert_eq!(
            defs.len(),
            docs.v2["definitions"].as_object().unwrap().len(),
            "every definition"
        );
        let models: BTreeMap<&str, &[u8]> = defs.iter().copied().collect();
        for (name, schema) in &defs {
            parse_as_kube_openapi(schema, name, &models);
        }
        let cm = models["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(
            extensions(cm, 31)["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "ConfigMap", "version": "v1"}])
        );
        // The v2 form refers to ObjectMeta directly, so validation follows it.
        let properties: BTreeMap<&str, &[u8]> =
            named(one(cm, 25).unwrap(), 1).into_iter().collect();
        assert_eq!(
            text(properties["metadata"], 1),
            Some("#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
        let paths = named(one(bytes, 8).unwrap(), 2);
        assert_eq!(paths.len(), docs.v2["paths"].as_object().unwrap().len());
    }

    fn custom(kind: &str, schema: Option<Value>) -> crate::registry::CustomResource {
        crate::registry::CustomResource {
            info: skiff_apimachinery::ResourceInfo {
                group: "e2e.example.com".into(),
                version: "v1".into(),
                kind: kind.into(),
                plural: format!("{}s", kind.to_lowercase()),
                singular: kind.to_lowercase(),
                scope: skiff_apimachinery::resources::Scope::Namespaced,
                short_names: vec![],
                categories: vec![],
                verbs: skiff_apimachinery::resources::CRUD_VERBS
                    .iter()
                    .map(|v| v.to_string())
                    .collect(),
                subresources: vec![],
            },
            schema,
            rules: None,
            columns: vec![],
            scale: None,
            storage: true,
        }
    }

    #[test]
    fn custom_kinds_should_be_published_in_upstream_v2_form() {
        let registry = crate::registry::Registry::builtin();
        registry.set_custom(vec![
            custom(
                "Mailbox",
                Some(json!({"type": "object", "properties": {"spec": {
                    "type": "object",
                    "required": ["host", "note"],
                    "properties": {
                        "host": {"type": "string"},
                        "note": {"type": "string", "nullable": true},
                        "port": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"a": {"type": "string"}}},
                        "list": {"type": "array", "x-kubernetes-preserve-unknown-fields": true, "items": {"type": "string"}},
                    },
                }}})),
            ),
            custom("Open", None),
            custom(
                "Loose",
                Some(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"spec": {"type": "object"}}})),
            ),
        ]);
        let docs = crate::openapi::documents(&registry);
        let defs = &docs.v2["definitions"];
        let mailbox = &defs["com.example.e2e.v1.Mailbox"];
        let spec = &mailbox["properties"]["spec"];
        assert_eq!(
            spec["required"],
            json!(["host"]),
            "nullable fields are not required"
        );
        assert_eq!(spec["properties"]["note"], json!({}));
        assert_eq!(
            spec["properties"]["port"],
            json!({"x-kubernetes-int-or-string": true})
        );
        assert_eq!(
            spec["properties"]["extra"],
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            spec["properties"]["list"],
            json!({"x-kubernetes-preserve-unknown-fields": true})
        );
        assert_eq!(
            mailbox["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(
            mailbox["x-kubernetes-group-version-kind"],
            json!([{"group": "e2e.example.com", "version": "v1", "kind": "Mailbox"}])
        );
        for kind in ["Open", "Loose"] {
            let definition = &defs[format!("com.example.e2e.v1.{kind}")];
            assert_eq!(definition["type"], "object", "{kind}");
            assert!(
                definition.get("properties").is_none(),
                "{kind}: {definition}"
            );
        }
        // The v3 documents keep the schemas as given.
        let v3 = &docs.v3["apis/e2e.example.com/v1"].0;
        let v3_spec =
            &v3["components"]["schemas"]["com.example.e2e.v1.Mailbox"]["properties"]["spec"];
        assert_eq!(v3_spec["required"], json!(["host", "note"]));

        let (bytes, _) = docs.v2_proto();
        let models: BTreeMap<&str, &[u8]> = definitions(bytes).into_iter().collect();
        for (name, schema) in &models {
            parse_as_kube_openapi(schema, name, &models);
        }
    }

    use std::collections::BTreeMap;
}
