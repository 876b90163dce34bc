//! Messages whose JSON form is not an object of their fields: timestamps, quantities,
//! int-or-string, raw embedded JSON and single-list wrappers.

use base64::Engine;
use serde_json::{Map, Value};

use crate::ProtobufError;

/// Go's zero `time.Time` as Unix seconds (0001-01-01T00:00:00Z): JSON `null`.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Messages whose field 1 holds raw JSON bytes.
pub(crate) fn is_raw_json(name: &str) -> bool {
    matches!(
        name,
        "apimachinery.pkg.runtime.rawextension"
            | "apimachinery.pkg.apis.meta.v1.fieldsv1"
            | "apiextensions_apiserver.pkg.apis.apiextensions.v1.json"
            | "apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.json"
    )
}

/// Decodes a raw-JSON message: field 1 (length-delimited) parsed as JSON; absent is `null`.
pub(crate) fn raw_json(mut buf: &[u8]) -> Result<Value, ProtobufError> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut value = Value::Null;
    while !buf.is_empty() {
        let (number, wire) = decode_key(&mut buf)?;
        if number == 1 && wire == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut buf)?)
                .map_err(|_| ProtobufError::Wire("length overflows".into()))?;
            let raw = buf
                .get(..len)
                .ok_or_else(|| ProtobufError::Wire("a length runs past the end".into()))?;
            buf = buf.get(len..).unwrap_or_default();
            value = if raw.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(raw).map_err(|e| ProtobufError::RawJson(e.to_string()))?
            };
        } else {
            skip_field(wire, number, &mut buf, DecodeContext::default())?;
        }
    }
    Ok(value)
}

/// Standard base64, as Go's encoding/json writes `[]byte`.
pub(crate) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn int(object: &Map<String, Value>, key: &str) -> i64 {
    object.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Turns a decoded message into its JSON form, for the messages that have a special one.
pub(crate) fn collapse(name: &str, value: Value) -> Value {
    let Value::Object(mut object) = value else {
        return value;
    };
    match name {
        "apimachinery.pkg.apis.meta.v1.time" => time(int(&object, "seconds"), None),
        "apimachinery.pkg.apis.meta.v1.microtime" => {
            time(int(&object, "seconds"), Some(int(&object, "nanos")))
        }
        "apimachinery.pkg.apis.meta.v1.duration" => {
            Value::String(go_duration(int(&object, "duration")))
        }
        "apimachinery.pkg.api.resource.quantity"
        | "apimachinery.pkg.api.resource.quantityvalue" => object
            .remove("string")
            .unwrap_or_else(|| Value::String("0".into())),
        "apimachinery.pkg.apis.meta.v1.objectmeta" => {
            // generation is a plain int64 with omitempty: 0 means unset.
            if object.get("generation") == Some(&Value::from(0)) {
                object.remove("generation");
            }
            Value::Object(object)
        }
        "apimachinery.pkg.util.intstr.intorstring" => {
            if int(&object, "type") == 1 {
                object
                    .remove("strVal")
                    .unwrap_or_else(|| Value::String(String::new()))
            } else {
                Value::from(int(&object, "intVal"))
            }
        }
        "apimachinery.pkg.apis.meta.v1.verbs" => object
            .remove("items")
            .unwrap_or_else(|| Value::Array(Vec::new())),
        n if n.ends_with(".extravalue") => object
            .remove("items")
            .unwrap_or_else(|| Value::Array(Vec::new())),
        n if n.ends_with(".jsonschemapropsorbool") => object
            .remove("schema")
            .unwrap_or_else(|| object.remove("allows").unwrap_or(Value::Bool(false))),
        n if n.ends_with(".jsonschemapropsorarray") => object
            .remove("schema")
            .or_else(|| object.remove("jSonSchemas"))
            .unwrap_or(Value::Null),
        n if n.ends_with(".jsonschemapropsorstringarray") => object
            .remove("schema")
            .or_else(|| object.remove("property"))
            .unwrap_or(Value::Null),
        _ => Value::Object(object),
    }
}

/// RFC 3339 in UTC, as metav1.Time (seconds) or metav1.MicroTime (microseconds) marshal it.
fn time(seconds: i64, nanos: Option<i64>) -> Value {
    // Go writes a zero metav1.Time as an empty message (seconds 0), older encoders as year 1.
    if (seconds == ZERO_TIME_SECONDS || seconds == 0) && nanos.unwrap_or(0) == 0 {
        return Value::Null;
    }
    let Ok(ts) = jiff::Timestamp::from_second(seconds) else {
        return Value::Null;
    };
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Value::String(match nanos {
        Some(n) => format!("{base}.{:06}Z", n.clamp(0, 999_999_999) / 1000),
        None => format!("{base}Z"),
    })
}

/// A nanosecond count as Go's `time.Duration.String()` writes it ("1h2m3.5s", "250ms").
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", decimal(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", decimal(u, 6))
    } else {
        let secs = u / 1_000_000_000;
        let (h, m) = (secs / 3600, secs % 3600 / 60);
        let s = decimal(u % 60_000_000_000, 9);
        match (h, m) {
            (0, 0) => format!("{s}s"),
            (0, m) => format!("{m}m{s}s"),
            (h, m) => format!("{h}h{m}m{s}s"),
        }
    };
    format!("{sign}{body}")
}

/// `value / 10^scale` written with its fraction, trailing zeros trimmed.
fn decimal(value: u64, scale: u32) -> String {
    let unit = 10u64.pow(scale);
    let fraction = format!("{:0width$}", value % unit, width = scale as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", value / unit)
    } else {
        format!("{}.{fraction}", value / unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_should_print_as_go_does() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(1_500), "1.5µs");
        assert_eq!(go_duration(250_000_000), "250ms");
        assert_eq!(go_duration(3_723_500_000_000), "1h2m3.5s");
        assert_eq!(go_duration(-90_000_000_000), "-1m30s");
    }

    #[test]
    fn go_zero_time_should_become_null() {
        assert_eq!(time(ZERO_TIME_SECONDS, None), Value::Null);
        assert_eq!(time(0, None), Value::Null);
        assert_eq!(time(60, None), Value::String("1970-01-01T00:01:00Z".into()));
        assert_eq!(
            time(1, Some(123_456_789)),
            Value::String("1970-01-01T00:00:01.123456Z".into())
        );
    }
}
