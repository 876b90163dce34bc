//! The cluster's PKI: a CA, the API server's serving certificate and the admin's client
//! certificate (group `system:masters`), created on first start in `DATA_DIR/tls` and reused on
//! every later start; and the join token nodes present to get certificates of their own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use skiff_apimachinery::join_token::JoinToken;

/// What can go wrong creating or loading the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Generating or parsing a certificate or key failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// The system's random source failed.
    #[error("no random bytes for the join token")]
    Random,
}

/// PEM-encoded certificates and keys.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA certificate (clients trust it).
    pub ca_cert: String,
    /// The API server's certificate.
    pub server_cert: String,
    /// The API server's private key.
    pub server_key: String,
    /// The admin client certificate.
    pub admin_cert: String,
    /// The admin client key.
    pub admin_key: String,
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let partial = path.with_extension("partial");
    std::fs::write(&partial, contents).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    std::fs::rename(&partial, path).map_err(io)
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .year();
    params.not_before = rcgen::date_time_ymd(i32::from(year) - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(i32::from(year) + years, 1, 1);
}

fn name(common: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// The file listing the names the serving certificate was issued for.
const SERVER_NAMES: &str = "server.names";

/// The names and addresses the serving certificate covers: localhost, the in-cluster names and
/// `hosts`, sorted.
fn server_names(hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
        "::1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// A serving certificate (PEM) and its key for `names`, signed by `issuer`.
fn issue_server(
    names: &[String],
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), PkiError> {
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::default();
    server.distinguished_name = name("skiff-apiserver", None);
    server.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.as_str().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut server, 10);
    let server_cert = server.signed_by(&server_key, issuer)?;
    Ok((server_cert.pem(), server_key.serialize_pem()))
}

/// Loads the PKI from `dir`, creating whatever is missing. `hosts` are the extra names and
/// addresses the serving certificate must cover (besides localhost and the in-cluster names).
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
        "admin.crt",
        "admin.key",
    ];
    if files.iter().all(|f| dir.join(f).exists()) {
        let mut pki = Pki {
            ca_cert: read(&dir.join("ca.crt"))?,
            server_cert: read(&dir.join("server.crt"))?,
            server_key: read(&dir.join("server.key"))?,
            admin_cert: read(&dir.join("admin.crt"))?,
            admin_key: read(&dir.join("admin.key"))?,
        };
        // A serving certificate made for other names (another bind address or service CIDR,
        // or an older skiff) is made again by the same CA: clients keep trusting it.
        let names = server_names(hosts);
        if std::fs::read_to_string(dir.join(SERVER_NAMES)).ok() != Some(names.join("\n")) {
            let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
            let issuer = Issuer::from_ca_cert_pem(&pki.ca_cert, ca_key)?;
            (pki.server_cert, pki.server_key) = issue_server(&names, &issuer)?;
            write(&dir.join("server.key"), &pki.server_key)?;
            write(&dir.join("server.crt"), &pki.server_cert)?;
            write(&dir.join(SERVER_NAMES), &names.join("\n"))?;
            tracing::info!(names = %names.join(","), "serving certificate issued again for new names");
        }
        return Ok(pki);
    }

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = name("skiff-ca", None);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, 10);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let names = server_names(hosts);
    let (server_cert, server_key) = issue_server(&names, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::default();
    // kubeadm's and kind's admin user name, which tools and tests expect.
    admin.distinguished_name = name("kubernetes-admin", Some("system:masters"));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut admin, 10);
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let pki = Pki {
        ca_cert: ca_cert.pem(),
        server_cert,
        server_key,
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
    };
    write(&dir.join("ca.key"), &issuer.key().serialize_pem())?;
    write(&dir.join("ca.crt"), &pki.ca_cert)?;
    write(&dir.join("server.key"), &pki.server_key)?;
    write(&dir.join("server.crt"), &pki.server_cert)?;
    write(&dir.join(SERVER_NAMES), &names.join("\n"))?;
    write(&dir.join("admin.key"), &pki.admin_key)?;
    write(&dir.join("admin.crt"), &pki.admin_cert)?;
    Ok(pki)
}

/// The client certificate and key the API server presents to node agents (kubelet's API), with
/// the name upstream gives it (`kube-apiserver-kubelet-client`, group `system:masters`), made
/// from the CA in `dir` the first time.
pub fn kubelet_client(dir: &Path) -> Result<(String, String), PkiError> {
    let (cert_path, key_path) = (
        dir.join("kubelet-client.crt"),
        dir.join("kubelet-client.key"),
    );
    if cert_path.exists() && key_path.exists() {
        return Ok((read(&cert_path)?, read(&key_path)?));
    }
    let ca_key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read(&dir.join("ca.crt"))?, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("kube-apiserver-kubelet-client", Some("system:masters"));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params, 10);
    let cert = params.signed_by(&key, &issuer)?;
    write(&key_path, &key.serialize_pem())?;
    write(&cert_path, &cert.pem())?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The cluster's join token, kept at `path` (made the first time): a node presents it once to
/// get a client certificate of its own.
pub fn join_token(path: &Path, ca_cert: &str) -> Result<JoinToken, PkiError> {
    let ca_hash: String = ring::digest::digest(&ring::digest::SHA256, ca_cert.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Ok(text) = std::fs::read_to_string(path)
        && let Some(token) = JoinToken::parse(&text)
        && token.ca_hash == ca_hash
    {
        return Ok(token);
    }
    let mut secret = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
        .map_err(|_| PkiError::Random)?;
    let token = JoinToken {
        ca_hash,
        secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
    };
    write(path, &format!("{}\n", token.render()))?;
    Ok(token)
}

/// Writes a kubeconfig that reaches `server` (e.g. `https://127.0.0.1:6443`) as the admin.
pub fn write_admin_kubeconfig(path: &Path, server: &str, pki: &Pki) -> Result<(), PkiError> {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {}
users:
- name: kubernetes-admin
  user:
    client-certificate-data: {}
    client-key-data: {}
contexts:
- name: skiff
  context:
    cluster: skiff
    user: kubernetes-admin
    namespace: default
current-context: skiff
",
        b64(&pki.ca_cert),
        b64(&pki.admin_cert),
        b64(&pki.admin_key)
    );
    write(path, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serving_certificate_for_other_names_should_be_issued_again_by_the_same_ca() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = load_or_create(dir.path(), &["127.0.0.1".into()]).expect("a pki");
        let again = load_or_create(dir.path(), &["127.0.0.1".into()]).expect("a pki");
        assert_eq!(first.server_cert, again.server_cert, "same names: kept");
        let wider =
            load_or_create(dir.path(), &["127.0.0.1".into(), "10.43.0.1".into()]).expect("a pki");
        assert_ne!(
            first.server_cert, wider.server_cert,
            "new names: issued again"
        );
        assert_eq!(first.ca_cert, wider.ca_cert);
        assert_eq!(first.admin_cert, wider.admin_cert);
        // An older data directory without the list of names gets a new certificate once.
        std::fs::remove_file(dir.path().join(SERVER_NAMES)).expect("removed");
        let upgraded =
            load_or_create(dir.path(), &["127.0.0.1".into(), "10.43.0.1".into()]).expect("a pki");
        assert_ne!(upgraded.server_cert, wider.server_cert);
        assert!(dir.path().join(SERVER_NAMES).exists());
    }
}
