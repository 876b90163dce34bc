//! Joining a cluster with its join token (kubelet's TLS bootstrap, in k3s's shape): fetch the
//! cluster CA from `/cacerts` over a connection not yet trusted, and trust it only if its
//! SHA-256 is the one the token carries; then, with the token's secret as bearer token, ask for
//! a client certificate (`CN=system:node:NAME`, `O=system:nodes`) through a
//! CertificateSigningRequest, wait until the control plane signs it, and write a kubeconfig that
//! uses it. The key never leaves the node; the token is needed once.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use skiff_apimachinery::join_token::JoinToken;

/// The signer of node client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long the control plane has to sign.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(120);
/// The kubeconfig a joined node keeps in its data directory.
pub const KUBECONFIG: &str = "node.kubeconfig";

/// Joining failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The token is not a join token.
    #[error("the token is not a skiff join token (K10<hash>::join:<secret>)")]
    Token,
    /// The server could not be reached or answered with an error.
    #[error("asking the server")]
    Api(#[source] kube::Error),
    /// The server's CA is not the one the token names.
    #[error(
        "the server's CA does not match the token (its SHA-256 is {found}): wrong server or token"
    )]
    CaMismatch {
        /// The hash of what the server sent.
        found: String,
    },
    /// The CA the server sent is not a PEM certificate.
    #[error("the server's CA is not a PEM certificate")]
    CaFormat,
    /// The key or the request could not be made.
    #[error("making the certificate request")]
    Certificate(#[from] rcgen::Error),
    /// The request was denied, failed, or not signed in time.
    #[error("the certificate request {name} was not signed: {why}")]
    NotSigned {
        /// The CertificateSigningRequest.
        name: String,
        /// Why.
        why: String,
    },
    /// A file could not be written.
    #[error("writing {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), BootstrapError> {
    let failed = |source| BootstrapError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents).map_err(failed)?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode)).map_err(failed)?;
    std::fs::rename(&partial, path).map_err(failed)
}

/// The cluster CA's PEM from `server`, checked against the token's hash.
async fn fetch_ca(server: &http::Uri, token: &JoinToken) -> Result<String, BootstrapError> {
    let mut config = kube::Config::new(server.clone());
    // Not trusted yet: the hash in the token decides.
    config.accept_invalid_certs = true;
    let client = kube::Client::try_from(config).map_err(BootstrapError::Api)?;
    let request = http::Request::get("/cacerts")
        .body(Vec::new())
        .map_err(|e| BootstrapError::Api(kube::Error::HttpError(e)))?;
    let pem = client
        .request_text(request)
        .await
        .map_err(BootstrapError::Api)?;
    let found = sha256_hex(pem.as_bytes());
    if found != token.ca_hash {
        return Err(BootstrapError::CaMismatch { found });
    }
    Ok(pem)
}

/// A client of `server` trusting `ca_pem`, authenticated by the token's secret.
fn token_client(
    server: &http::Uri,
    ca_pem: &str,
    token: &JoinToken,
) -> Result<kube::Client, BootstrapError> {
    let (_, der) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|_| BootstrapError::CaFormat)?;
    let mut config = kube::Config::new(server.clone());
    config.root_cert = Some(vec![der.contents]);
    config.auth_info.token = Some(token.secret.clone().into());
    kube::Client::try_from(config).map_err(BootstrapError::Api)
}

/// Waits until the request `name` carries a certificate.
async fn signed(
    api: &Api<CertificateSigningRequest>,
    name: &str,
) -> Result<String, BootstrapError> {
    let deadline = tokio::time::Instant::now() + SIGNING_TIMEOUT;
    loop {
        let request = api.get(name).await.map_err(BootstrapError::Api)?;
        let status = request.status.unwrap_or_default();
        if let Some(certificate) = status.certificate.filter(|c| !c.0.is_empty()) {
            return Ok(String::from_utf8_lossy(&certificate.0).into_owned());
        }
        let refused = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True");
        if let Some(condition) = refused {
            return Err(BootstrapError::NotSigned {
                name: name.to_string(),
                why: format!(
                    "{}: {}",
                    condition.type_,
                    condition.message.clone().unwrap_or_default()
                ),
            });
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BootstrapError::NotSigned {
                name: name.to_string(),
                why: "not approved and signed within 2 minutes (is a control plane running its controllers?)".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Joins the cluster at `server` as the node `node` with the join token `token`; writes the
/// node's key, certificate, the cluster CA and a kubeconfig using them under `dir`, and returns
/// the kubeconfig's path.
pub async fn join(
    server: &str,
    token: &str,
    node: &str,
    dir: &Path,
) -> Result<PathBuf, BootstrapError> {
    let token = JoinToken::parse(token).ok_or(BootstrapError::Token)?;
    let uri: http::Uri = server
        .parse()
        .map_err(|e| BootstrapError::Api(kube::Error::HttpError(http::Error::from(e))))?;
    let ca = fetch_ca(&uri, &token).await?;
    let client = token_client(&uri, &ca, &token)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, format!("system:node:{node}"));
    subject.push(DnType::OrganizationName, "system:nodes");
    params.distinguished_name = subject;
    let request_pem = params.serialize_request(&key)?.pem()?;
    let name = format!(
        "node-csr-{node}-{}",
        &sha256_hex(request_pem.as_bytes())[..8]
    );
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let request = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            signer_name: SIGNER.into(),
            request: ByteString(request_pem.into_bytes()),
            usages: Some(vec!["digital signature".into(), "client auth".into()]),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    api.create(&PostParams::default(), &request)
        .await
        .map_err(BootstrapError::Api)?;
    tracing::info!(csr = %name, "asked for the node's client certificate");
    let certificate = signed(&api, &name).await?;
    let pki = dir.join("pki");
    let (ca_path, cert_path, key_path) = (
        pki.join("ca.crt"),
        pki.join("node.crt"),
        pki.join("node.key"),
    );
    write(&ca_path, &ca, 0o644)?;
    write(&cert_path, &certificate, 0o644)?;
    write(&key_path, &key.serialize_pem(), 0o600)?;
    let kubeconfig = dir.join(KUBECONFIG);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: system:node:{node}\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: system:node:{node}\ncurrent-context: skiff\n",
        ca_path.display(),
        cert_path.display(),
        key_path.display()
    );
    write(&kubeconfig, &text, 0o600)?;
    tracing::info!(kubeconfig = %kubeconfig.display(), "joined the cluster");
    Ok(kubeconfig)
}
