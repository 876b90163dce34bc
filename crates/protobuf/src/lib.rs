//! Kubernetes' protobuf encoding, decoded to JSON.
//!
//! client-go's typed clients (kubectl create/run/expose, controllers built on client-go) send
//! request bodies as `application/vnd.kubernetes.protobuf`: the magic bytes `k8s\0`, then a
//! `runtime.Unknown` envelope naming apiVersion and kind around the object's own message. skiff
//! keeps objects as JSON, so the API server turns such bodies into the JSON the same client would
//! have sent, and answers in JSON (client-go accepts JSON responses).
//!
//! The field numbers come from `generated::table`, generated from the k8s-pb crate (see
//! `scripts/gen-protobuf-table`). Decoding never panics: malformed input is a [`ProtobufError`].

mod decode;
mod envelope;
mod generated;
mod schema;
mod special;

pub use envelope::{MEDIA_TYPE, decode_object};

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    NoMagic,
    /// The envelope names a type skiff has no message for.
    #[error("no protobuf message is known for {api_version}, Kind={kind}")]
    UnknownType {
        /// The envelope's apiVersion.
        api_version: String,
        /// The envelope's kind.
        kind: String,
    },
    /// The wire bytes are malformed.
    #[error("malformed protobuf: {0}")]
    Wire(String),
    /// Messages nest deeper than the decoder allows.
    #[error("protobuf messages nest deeper than {0} levels")]
    TooDeep(usize),
    /// An embedded raw JSON value (RawExtension, JSON, FieldsV1) is not valid JSON.
    #[error("embedded raw JSON is invalid: {0}")]
    RawJson(String),
}

impl From<prost::DecodeError> for ProtobufError {
    fn from(error: prost::DecodeError) -> Self {
        Self::Wire(error.to_string())
    }
}
