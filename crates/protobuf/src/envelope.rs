//! The `k8s\0` + `runtime.Unknown` envelope, and which message a (apiVersion, kind) names.

use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use serde_json::{Map, Value};

use crate::ProtobufError;
use crate::decode;
use crate::schema;

/// The media type client-go sends protobuf bodies with.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Decodes a whole protobuf request body into the JSON object it stands for, with `apiVersion`
/// and `kind` first.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let mut buf = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while !buf.is_empty() {
        let (number, wire) = decode_key(&mut buf)?;
        match (number, wire) {
            (1, WireType::LengthDelimited) => {
                let mut meta = length_delimited(&mut buf)?;
                while !meta.is_empty() {
                    let (n, w) = decode_key(&mut meta)?;
                    match (n, w) {
                        (1, WireType::LengthDelimited) => api_version = text(&mut meta)?,
                        (2, WireType::LengthDelimited) => kind = text(&mut meta)?,
                        _ => skip_field(w, n, &mut meta, DecodeContext::default())?,
                    }
                }
            }
            (2, WireType::LengthDelimited) => raw = length_delimited(&mut buf)?,
            (3, WireType::LengthDelimited) => {
                let encoding = text(&mut buf)?;
                if !encoding.is_empty() {
                    return Err(ProtobufError::Wire(format!(
                        "content encoding {encoding:?} is not supported"
                    )));
                }
            }
            _ => skip_field(wire, number, &mut buf, DecodeContext::default())?,
        }
    }
    let message = message_for(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownType {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let Value::Object(fields) = decode::message(message, raw, 0)? else {
        return Err(ProtobufError::Wire(format!(
            "{kind} did not decode to an object"
        )));
    };
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    object.extend(fields);
    Ok(Value::Object(object))
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], ProtobufError> {
    let len = usize::try_from(decode_varint(buf)?)
        .map_err(|_| ProtobufError::Wire("length overflows".into()))?;
    let head = buf
        .get(..len)
        .ok_or_else(|| ProtobufError::Wire("a length runs past the end".into()))?;
    *buf = buf.get(len..).unwrap_or_default();
    Ok(head)
}

fn text(buf: &mut &[u8]) -> Result<String, ProtobufError> {
    let bytes = length_delimited(buf)?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ProtobufError::Wire("a string is not UTF-8".into()))
}

/// The k8s-pb module holding an API group's messages.
fn module(group: &str) -> String {
    match group {
        "" => "api.core".into(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".into(),
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration".into(),
        "internal.apiserver.k8s.io" => "api.apiserverinternal".into(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".into(),
        other => format!("api.{}", other.split('.').next().unwrap_or(other)),
    }
}

/// The message for an apiVersion and kind; options kinds (DeleteOptions, ...) that every group
/// version carries fall back to meta/v1.
fn message_for(api_version: &str, kind: &str) -> Option<&'static schema::Message> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = kind.to_ascii_lowercase();
    schema::message(&format!("{}.{version}.{kind}", module(group)))
        .or_else(|| schema::message(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

#[cfg(test)]
mod tests {
    use prost::encoding::{encode_key, encode_varint};
    use serde_json::json;

    use super::*;

    fn bytes_field(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
        encode_key(number, WireType::LengthDelimited, out);
        encode_varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
        encode_key(number, WireType::Varint, out);
        encode_varint(value, out);
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut meta = Vec::new();
        bytes_field(&mut meta, 1, api_version.as_bytes());
        bytes_field(&mut meta, 2, kind.as_bytes());
        let mut out = MAGIC.to_vec();
        bytes_field(&mut out, 1, &meta);
        bytes_field(&mut out, 2, raw);
        bytes_field(&mut out, 3, b"");
        bytes_field(&mut out, 4, b"");
        out
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(&mut out, 1, key.as_bytes());
        bytes_field(&mut out, 2, value);
        out
    }

    /// ObjectMeta as Go writes it: every non-pointer field, the zero creationTimestamp included.
    fn metadata(name: &str) -> Vec<u8> {
        let mut zero_time = Vec::new();
        varint_field(&mut zero_time, 1, (-62_135_596_800i64) as u64);
        varint_field(&mut zero_time, 2, 0);
        let mut meta = Vec::new();
        bytes_field(&mut meta, 1, name.as_bytes());
        bytes_field(&mut meta, 2, b"");
        bytes_field(&mut meta, 3, b"");
        varint_field(&mut meta, 7, 0);
        varint_field(&mut meta, 10, 0);
        bytes_field(&mut meta, 8, &zero_time);
        bytes_field(&mut meta, 11, &entry("app", b"web"));
        meta
    }

    #[test]
    fn configmap_should_decode_to_the_json_kubectl_would_send() {
        let mut raw = Vec::new();
        bytes_field(&mut raw, 1, &metadata("cm1"));
        bytes_field(&mut raw, 2, &entry("a", b"1"));
        bytes_field(&mut raw, 2, &entry("empty", b""));
        bytes_field(&mut raw, 3, &entry("bin", &[0xff, 0x00]));
        varint_field(&mut raw, 99, 7); // unknown fields are skipped
        let value = decode_object(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            value,
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm1", "deletionGracePeriodSeconds": 0, "labels": {"app": "web"}},
                "data": {"a": "1", "empty": ""},
                "binaryData": {"bin": "/wA="},
            })
        );
    }

    #[test]
    fn service_ports_should_keep_int_or_string_and_negative_numbers() {
        let mut named = Vec::new();
        varint_field(&mut named, 1, 1);
        bytes_field(&mut named, 3, b"http");
        let mut port = Vec::new();
        bytes_field(&mut port, 1, b"web");
        varint_field(&mut port, 3, 80);
        bytes_field(&mut port, 4, &named);
        let mut numeric = Vec::new();
        varint_field(&mut numeric, 1, 0);
        varint_field(&mut numeric, 2, 8080);
        let mut other = Vec::new();
        varint_field(&mut other, 3, 81);
        bytes_field(&mut other, 4, &numeric);
        varint_field(&mut other, 5, (-1i64) as u64);
        let mut spec = Vec::new();
        bytes_field(&mut spec, 1, &port);
        bytes_field(&mut spec, 1, &other);
        bytes_field(&mut spec, 2, &entry("app", b"web"));
        let mut raw = Vec::new();
        bytes_field(&mut raw, 1, &metadata("svc"));
        bytes_field(&mut raw, 2, &spec);
        let value = decode_object(&envelope("v1", "Service", &raw)).unwrap();
        assert_eq!(
            value["spec"],
            json!({
                "ports": [
                    {"name": "web", "port": 80, "targetPort": "http"},
                    {"port": 81, "targetPort": 8080, "nodePort": -1},
                ],
                "selector": {"app": "web"},
            })
        );
    }

    #[test]
    fn repeated_numbers_should_decode_packed_or_not() {
        // PodSpec.securityContext (14) -> PodSecurityContext.supplementalGroups (4): int64s.
        let mut packed = Vec::new();
        for v in [1u64, 300, 5] {
            encode_varint(v, &mut packed);
        }
        let mut context = Vec::new();
        bytes_field(&mut context, 4, &packed);
        varint_field(&mut context, 4, 7);
        let mut spec = Vec::new();
        bytes_field(&mut spec, 14, &context);
        let mut raw = Vec::new();
        bytes_field(&mut raw, 2, &spec);
        let value = decode_object(&envelope("v1", "Pod", &raw)).unwrap();
        assert_eq!(
            value["spec"]["securityContext"]["supplementalGroups"],
            json!([1, 300, 5, 7])
        );
        let mut options = Vec::new();
        bytes_field(&mut options, 5, b"All");
        let value = decode_object(&envelope("v1", "DeleteOptions", &options)).unwrap();
        assert_eq!(value["dryRun"], json!(["All"]));
    }

    #[test]
    fn embedded_structs_should_be_flattened() {
        // Volume{name, VolumeSource inline{configMap: ConfigMapVolumeSource{LocalObjectReference
        // inline{name}}}}: JSON has no volumeSource or localObjectReference level.
        let mut reference = Vec::new();
        bytes_field(&mut reference, 1, b"settings");
        let mut config_map = Vec::new();
        bytes_field(&mut config_map, 1, &reference);
        let mut source = Vec::new();
        bytes_field(&mut source, 19, &config_map);
        let mut volume = Vec::new();
        bytes_field(&mut volume, 1, b"config");
        bytes_field(&mut volume, 2, &source);
        let mut spec = Vec::new();
        bytes_field(&mut spec, 1, &volume);
        let mut raw = Vec::new();
        bytes_field(&mut raw, 2, &spec);
        let value = decode_object(&envelope("v1", "Pod", &raw)).unwrap();
        assert_eq!(
            value["spec"]["volumes"],
            json!([{"name": "config", "configMap": {"name": "settings"}}])
        );
    }

    #[test]
    fn malformed_bodies_should_be_errors_not_panics() {
        assert!(matches!(decode_object(b"{}"), Err(ProtobufError::NoMagic)));
        assert!(matches!(
            decode_object(&envelope("v1", "Nope", b"")),
            Err(ProtobufError::UnknownType { .. })
        ));
        let mut truncated = envelope("v1", "ConfigMap", &metadata("x"));
        truncated.truncate(truncated.len() - 6);
        assert!(decode_object(&truncated).is_err());
        for cut in 0..40 {
            let body = envelope("v1", "Pod", &metadata("p"));
            let _ = decode_object(&body[..cut.min(body.len())]);
        }
    }

    #[test]
    fn deep_nesting_should_be_refused() {
        // JSONSchemaProps.items -> JSONSchemaPropsOrArray.schema -> JSONSchemaProps ...
        let mut inner = Vec::new();
        for _ in 0..200 {
            let mut or_array = Vec::new();
            bytes_field(&mut or_array, 1, &inner);
            let mut props = Vec::new();
            bytes_field(&mut props, 24, &or_array);
            inner = props;
        }
        let mut validation = Vec::new();
        bytes_field(&mut validation, 1, &inner);
        let body = envelope(
            "apiextensions.k8s.io/v1",
            "CustomResourceValidation",
            &validation,
        );
        assert!(matches!(
            decode_object(&body),
            Err(ProtobufError::TooDeep(_))
        ));
    }
}
