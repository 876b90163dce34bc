//! Node client certificates (upstream's csrapproving and csrsigning controllers, for the one
//! signer nodes need): a CertificateSigningRequest for `kubernetes.io/kube-apiserver-client-kubelet`
//! is approved when a joining node (`system:bootstrappers`) or the node itself asks for
//! `CN=system:node:NAME, O=system:nodes` with client usages only, and an approved one is signed
//! with the cluster CA for a year. Anything else is left for a person (`kubectl certificate
//! approve`) and, once approved, still signed only if it asks for a node's identity.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The usages a node client certificate may ask for.
const ALLOWED_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// The cluster CA, which signs.
#[derive(Clone, Debug)]
pub struct Signer {
    /// Its certificate (PEM).
    pub ca_cert: String,
    /// Its private key (PEM).
    pub ca_key: String,
}

/// A reconcile failed; it is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The API answered with an error.
    #[error("the API: {0}")]
    Api(#[from] kube::Error),
    /// The CA could not sign.
    #[error("signing: {0}")]
    Signing(#[from] rcgen::Error),
}

struct Context {
    client: Client,
    signer: Signer,
}

/// Approves and signs node client certificates until the task is dropped.
pub async fn run(client: Client, signer: Signer) {
    let requests: Api<CertificateSigningRequest> = Api::all(client.clone());
    let context = Arc::new(Context { client, signer });
    Controller::new(requests, watcher::Config::default())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "certificate controller");
            }
        })
        .await;
}

fn error_policy(
    request: Arc<CertificateSigningRequest>,
    error: &CsrError,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(csr = %request.name_any(), %error, "handling a certificate request failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// The node a request's subject names, if it is exactly a node client's
/// (`CN=system:node:NAME`, `O=system:nodes`).
fn requested_node(pem: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, der) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&der.contents)
            .ok()?;
    let subject = &request.certification_request_info.subject;
    let common: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|c| c.as_str().ok())
        .collect();
    let organizations: Vec<&str> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .collect();
    match (common.as_slice(), organizations.as_slice()) {
        ([name], ["system:nodes"]) => name
            .strip_prefix("system:node:")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

/// Whether the request may be approved without a person: a node client certificate asked for
/// by a joining node or by that node itself, with client usages only.
fn auto_approvable(request: &CertificateSigningRequest) -> bool {
    let spec = &request.spec;
    if spec.signer_name != KUBELET_CLIENT_SIGNER {
        return false;
    }
    let Some(node) = requested_node(&spec.request.0) else {
        return false;
    };
    let usages_ok = spec
        .usages
        .iter()
        .flatten()
        .all(|u| ALLOWED_USAGES.contains(&u.as_str()));
    let groups = spec.groups.clone().unwrap_or_default();
    let by_bootstrapper = groups.iter().any(|g| g == "system:bootstrappers");
    let by_itself = spec.username.as_deref() == Some(&format!("system:node:{node}"))
        && groups.iter().any(|g| g == "system:nodes");
    usages_ok && (by_bootstrapper || by_itself)
}

fn condition(request: &CertificateSigningRequest, type_: &str) -> bool {
    request
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// A year of validity from today (UTC midnight).
fn one_year(params: &mut rcgen::CertificateParams) {
    let today = k8s_openapi::jiff::Timestamp::now().to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC);
    let (year, month, day) = (
        i32::from(today.year()),
        u8::try_from(today.month()).unwrap_or(1),
        u8::try_from(today.day()).unwrap_or(1).min(28),
    );
    params.not_before = rcgen::date_time_ymd(year, month, day);
    params.not_after = rcgen::date_time_ymd(year + 1, month, day);
}

/// The PEM certificate for `request_pem`, signed by `signer` as a node client certificate.
fn sign(request_pem: &[u8], signer: &Signer) -> Result<String, rcgen::Error> {
    let text = String::from_utf8_lossy(request_pem);
    let mut request = CertificateSigningRequestParams::from_pem(&text)?;
    let params = &mut request.params;
    params.is_ca = IsCa::NoCa;
    params.subject_alt_names.clear();
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    one_year(params);
    let key = KeyPair::from_pem(&signer.ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(&signer.ca_cert, key)?;
    Ok(request.signed_by(&issuer)?.pem())
}

async fn reconcile(
    request: Arc<CertificateSigningRequest>,
    context: Arc<Context>,
) -> Result<Action, CsrError> {
    let name = request.name_any();
    let api: Api<CertificateSigningRequest> = Api::all(context.client.clone());
    let issued = request
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued || condition(&request, "Denied") || condition(&request, "Failed") {
        return Ok(Action::await_change());
    }
    if !condition(&request, "Approved") {
        if !auto_approvable(&request) {
            return Ok(Action::await_change());
        }
        let mut approved = (*request).clone();
        approved.metadata.managed_fields = None;
        let status = approved.status.get_or_insert_with(Default::default);
        status
            .conditions
            .get_or_insert_with(Vec::new)
            .push(CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("AutoApproved".into()),
                message: Some(
                    "Auto approving kubelet client certificate after SubjectAccessReview.".into(),
                ),
                last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
                ..CertificateSigningRequestCondition::default()
            });
        api.replace_subresource("approval", &name, &PostParams::default(), &approved)
            .await?;
        tracing::info!(csr = %name, "node client certificate request approved");
        // The approval's own event brings the request back to be signed.
        return Ok(Action::await_change());
    }
    if request.spec.signer_name != KUBELET_CLIENT_SIGNER
        || requested_node(&request.spec.request.0).is_none()
    {
        return Ok(Action::await_change());
    }
    let certificate = sign(&request.spec.request.0, &context.signer)?;
    let mut signed = (*request).clone();
    signed.metadata.managed_fields = None;
    signed
        .status
        .get_or_insert_with(Default::default)
        .certificate = Some(ByteString(certificate.into_bytes()));
    api.replace_status(&name, &PostParams::default(), &signed)
        .await?;
    tracing::info!(csr = %name, "node client certificate issued");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DistinguishedName, DnType};

    use super::*;

    fn request_pem(common: &str, organization: &str) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common);
        name.push(DnType::OrganizationName, organization);
        params.distinguished_name = name;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        (pem.into_bytes(), key)
    }

    fn csr(pem: Vec<u8>, username: &str, groups: &[&str]) -> CertificateSigningRequest {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "node-csr-1"},
            "spec": {
                "signerName": KUBELET_CLIENT_SIGNER,
                "request": k8s_openapi::ByteString(pem),
                "usages": ["digital signature", "client auth"],
                "username": username,
                "groups": groups,
            }
        }))
        .unwrap()
    }

    #[test]
    fn only_node_identities_asked_by_joiners_or_the_node_should_be_approved() {
        let (node, _) = request_pem("system:node:n2", "system:nodes");
        assert_eq!(requested_node(&node).as_deref(), Some("n2"));
        let joining = csr(
            node.clone(),
            "system:bootstrap:join",
            &["system:bootstrappers"],
        );
        assert!(auto_approvable(&joining));
        let itself = csr(node.clone(), "system:node:n2", &["system:nodes"]);
        assert!(auto_approvable(&itself));
        let other_node = csr(node.clone(), "system:node:n3", &["system:nodes"]);
        assert!(!auto_approvable(&other_node), "a node asks only for itself");
        let (admin, _) = request_pem("kubernetes-admin", "system:masters");
        let escalating = csr(admin, "system:bootstrap:join", &["system:bootstrappers"]);
        assert!(!auto_approvable(&escalating));
        let mut serving = joining.clone();
        serving.spec.usages = Some(vec!["server auth".into()]);
        assert!(!auto_approvable(&serving));
    }

    #[test]
    fn a_signed_certificate_should_name_the_node_and_chain_to_the_ca() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let signer = Signer {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key.serialize_pem(),
        };
        let (pem, _) = request_pem("system:node:n2", "system:nodes");
        let issued = sign(&pem, &signer).unwrap();
        let (_, der) = x509_parser::pem::parse_x509_pem(issued.as_bytes()).unwrap();
        let cert = der.parse_x509().unwrap();
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=system:node:n2"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let (_, ca_der) = x509_parser::pem::parse_x509_pem(ca_cert.pem().as_bytes()).unwrap();
        let ca_parsed = ca_der.parse_x509().unwrap();
        assert!(cert.verify_signature(Some(ca_parsed.public_key())).is_ok());
    }
}
