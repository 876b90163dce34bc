//! The protobuf wire format walked with a message's field table, producing JSON.
//!
//! Go's protobuf marshalling writes every non-pointer field, zero or not. Empty singular strings,
//! zero timestamps and a zero `metadata.generation` are dropped so that the JSON matches what the
//! same client would have sent as JSON (`omitempty`). Other numbers and booleans are kept: the
//! wire does not say whether a zero is a Go value field (`stdin: false`, harmless to keep) or a
//! set pointer (`replicas: 0`, `runAsUser: 0`) that must not fall back to its default.

use prost::bytes::Buf;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
use serde_json::{Map, Value};

use crate::ProtobufError;
use crate::schema::{self, Message, Type};
use crate::special;

/// How deep messages may nest before decoding gives up.
pub(crate) const MAX_DEPTH: usize = 64;

/// Decodes one message's bytes into a JSON value.
pub(crate) fn message(msg: &Message, mut buf: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::TooDeep(MAX_DEPTH));
    }
    if special::is_raw_json(msg.name) {
        return special::raw_json(buf);
    }
    let mut out = Map::new();
    while buf.has_remaining() {
        let (number, wire) = decode_key(&mut buf)?;
        let Some(field) = msg.field(number) else {
            skip_field(wire, number, &mut buf, DecodeContext::default())?;
            continue;
        };
        match (&field.ty, field.repeated) {
            (Type::Map(value_ty), _) => {
                let entry = delimited(&mut buf, wire)?;
                let (key, value) = map_entry(entry, value_ty, depth)?;
                let map = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(map) = map {
                    map.insert(key, value);
                }
            }
            (ty, true) => {
                let items = out
                    .entry(field.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                let Value::Array(items) = items else {
                    continue;
                };
                if wire == WireType::LengthDelimited && is_scalar(ty) {
                    let mut packed = delimited(&mut buf, wire)?;
                    while packed.has_remaining() {
                        items.push(scalar(ty, scalar_wire(ty), &mut packed)?);
                    }
                } else {
                    items.push(value(ty, wire, &mut buf, depth)?);
                }
            }
            (ty, false) => {
                let value = value(ty, wire, &mut buf, depth)?;
                if field.json.is_empty() {
                    // An embedded (`json:",inline"`) struct: its fields belong to this object.
                    if let Value::Object(fields) = value {
                        out.extend(fields);
                    }
                } else if value.is_null() || value.as_str() == Some("") {
                    out.remove(field.json);
                } else {
                    out.insert(field.json.to_string(), value);
                }
            }
        }
    }
    Ok(special::collapse(msg.name, Value::Object(out)))
}

fn is_scalar(ty: &Type) -> bool {
    matches!(ty, Type::I32 | Type::I64 | Type::Bool | Type::F64)
}

fn scalar_wire(ty: &Type) -> WireType {
    match ty {
        Type::F64 => WireType::SixtyFourBit,
        _ => WireType::Varint,
    }
}

fn wrong_wire(wire: WireType) -> ProtobufError {
    ProtobufError::Wire(format!("unexpected wire type {wire:?}"))
}

/// The next length-delimited field's bytes.
fn delimited<'a>(buf: &mut &'a [u8], wire: WireType) -> Result<&'a [u8], ProtobufError> {
    if wire != WireType::LengthDelimited {
        return Err(wrong_wire(wire));
    }
    let len = usize::try_from(decode_varint(buf)?)
        .map_err(|_| ProtobufError::Wire("length overflows".into()))?;
    if len > buf.len() {
        return Err(ProtobufError::Wire("a length runs past the end".into()));
    }
    let (head, tail) = buf.split_at(len);
    *buf = tail;
    Ok(head)
}

fn scalar(ty: &Type, wire: WireType, buf: &mut &[u8]) -> Result<Value, ProtobufError> {
    if wire != scalar_wire(ty) {
        return Err(wrong_wire(wire));
    }
    Ok(match ty {
        Type::F64 => {
            if buf.remaining() < 8 {
                return Err(ProtobufError::Wire("a double runs past the end".into()));
            }
            serde_json::Number::from_f64(buf.get_f64_le()).map_or(Value::Null, Value::Number)
        }
        // Negative int32s are sign-extended to 64 bits on the wire: truncation is the decoding.
        Type::I32 => Value::from(decode_varint(buf)? as i64 as i32),
        Type::Bool => Value::Bool(decode_varint(buf)? != 0),
        _ => Value::from(decode_varint(buf)? as i64),
    })
}

fn value(ty: &Type, wire: WireType, buf: &mut &[u8], depth: usize) -> Result<Value, ProtobufError> {
    match ty {
        Type::Str => {
            let bytes = delimited(buf, wire)?;
            let text = std::str::from_utf8(bytes)
                .map_err(|_| ProtobufError::Wire("a string is not UTF-8".into()))?;
            Ok(Value::String(text.to_string()))
        }
        Type::Bytes => Ok(Value::String(special::base64(delimited(buf, wire)?))),
        Type::Message(name) => {
            let inner = delimited(buf, wire)?;
            let msg = schema::message(name)
                .ok_or_else(|| ProtobufError::Wire(format!("no message named {name}")))?;
            message(msg, inner, depth + 1)
        }
        Type::Map(_) => Err(ProtobufError::Wire("a map inside a map".into())),
        _ => scalar(ty, wire, buf),
    }
}

/// A map entry: key (1) and value (2), each defaulting when absent.
fn map_entry(mut buf: &[u8], ty: &Type, depth: usize) -> Result<(String, Value), ProtobufError> {
    let mut key = String::new();
    let mut val = None;
    while buf.has_remaining() {
        let (number, wire) = decode_key(&mut buf)?;
        match number {
            1 => {
                if let Value::String(k) = value(&Type::Str, wire, &mut buf, depth)? {
                    key = k;
                }
            }
            2 => val = Some(value(ty, wire, &mut buf, depth)?),
            _ => skip_field(wire, number, &mut buf, DecodeContext::default())?,
        }
    }
    let val = match (val, ty) {
        (Some(v), _) => v,
        (None, Type::Message(name)) => {
            let msg = schema::message(name)
                .ok_or_else(|| ProtobufError::Wire(format!("no message named {name}")))?;
            message(msg, &[], depth + 1)?
        }
        (None, _) => Value::String(String::new()),
    };
    Ok((key, val))
}
