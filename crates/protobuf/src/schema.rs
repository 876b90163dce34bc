//! The shape of the generated field table and lookups into it.

use crate::generated::table::MESSAGES;

/// One protobuf message: its fields, sorted by number.
pub(crate) struct Message {
    /// Lower-case dotted name: the k8s-pb module path and struct name.
    pub name: &'static str,
    /// Fields sorted by number.
    pub fields: &'static [Field],
}

/// One field of a message.
pub(crate) struct Field {
    /// The protobuf field number.
    pub number: u32,
    /// The field's JSON name; empty for a Go struct embedded with `json:",inline"`, whose
    /// fields belong to the enclosing object.
    pub json: &'static str,
    /// What the field holds.
    pub ty: Type,
    /// Whether the field is a list.
    pub repeated: bool,
}

/// What a field holds.
pub(crate) enum Type {
    /// A UTF-8 string.
    Str,
    /// Bytes, base64 in JSON.
    Bytes,
    /// A varint holding an int32.
    I32,
    /// A varint holding an int64.
    I64,
    /// A varint holding a bool.
    Bool,
    /// A 64-bit float.
    F64,
    /// Another message, by name.
    Message(&'static str),
    /// A map from strings to the given value type.
    Map(&'static Type),
}

/// The message with this lower-case dotted name.
pub(crate) fn message(name: &str) -> Option<&'static Message> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .and_then(|i| MESSAGES.get(i))
}

impl Message {
    /// The field with this number.
    pub fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields
            .binary_search_by(|f| f.number.cmp(&number))
            .ok()
            .and_then(|i| self.fields.get(i))
    }
}
