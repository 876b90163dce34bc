//! Who is calling: the identity in a verified client certificate (CN = user, O = groups), or
//! anonymous. Service-account tokens and RBAC come later; today every authenticated user may do
//! everything and anonymous callers only reach the health and version endpoints.

use rustls::pki_types::CertificateDer;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The groups, including `system:authenticated`.
    pub groups: Vec<String>,
}

/// The caller of a request, put into the request's extensions by the TLS layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller(pub Option<User>);

/// Reads the user from the first (leaf) client certificate; rustls has already verified it
/// against the cluster CA.
pub fn from_certificates(certs: Option<&[CertificateDer<'_>]>) -> Caller {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Caller(None);
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Caller(None);
    };
    let subject = cert.subject();
    let Some(name) = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    else {
        return Caller(None);
    };
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    Caller(Some(User {
        name: name.to_string(),
        groups,
    }))
}
