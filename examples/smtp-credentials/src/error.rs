//! The one error type of the operator.

/// Why installing the CRD or reconciling an `SMTPCredentials` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Secret of that name exists and carries no ownerReference to this object: the
    /// controller never takes over a Secret it did not create.
    #[error("Secret {name} exists and is not managed by SMTPCredentials {name}")]
    SecretNotManaged {
        /// The name shared by the Secret and the `SMTPCredentials`.
        name: String,
    },
    /// The object lacks metadata the API server always sets (namespace, uid).
    #[error("SMTPCredentials {name} has no {field}")]
    MissingMetadata {
        /// The object's name.
        name: String,
        /// The missing `metadata` field.
        field: &'static str,
    },
    /// A request to the API server failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Waiting for the CRD failed.
    #[error("waiting for the CRD: {0}")]
    Wait(#[from] kube::runtime::wait::Error),
    /// The CRD did not become `Established` in time.
    #[error("CustomResourceDefinition {0} was not established in time")]
    CrdNotEstablished(String),
    /// The CRD could not be written as YAML.
    #[error("writing YAML: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}
