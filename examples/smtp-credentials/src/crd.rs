//! The `SMTPCredentials` custom resource (`example.skiff.dev/v1`), derived with kube-derive.
//!
//! A user declares where their mail relay is and which account to use; the controller answers
//! with a Secret of the same name holding `host`, `port`, `username` and a generated `password`.
//! [`SMTPCredentials::crd()`] is the CustomResourceDefinition to install, and [`install_crd`]
//! server-side applies it and waits until the API server serves the resource.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, FIELD_MANAGER};

/// How long [`install_crd`] waits for the CRD's `Established` condition.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// The desired state: where the SMTP relay is and which account to use.
#[derive(CustomResource, Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "example.skiff.dev",
    version = "v1",
    kind = "SMTPCredentials",
    plural = "smtpcredentials",
    shortname = "smtpcred",
    namespaced,
    status = "SMTPCredentialsStatus",
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".spec.host"}"#,
    printcolumn = r#"{"name":"Port","type":"integer","jsonPath":".spec.port"}"#,
    printcolumn = r#"{"name":"Username","type":"string","jsonPath":".spec.username"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SMTPCredentialsSpec {
    /// The SMTP relay's host name.
    pub host: String,
    /// The SMTP relay's port (submission, 587, unless told).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The account to log in with.
    pub username: String,
}

fn default_port() -> u16 {
    587
}

/// What the controller observed, written through the status subresource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SMTPCredentialsStatus {
    /// `Ready`: whether the Secret holds the current spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Server-side applies the CRD of [`SMTPCredentials`] and waits until it is established.
pub async fn install_crd(client: &Client) -> Result<(), Error> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = SMTPCredentials::crd();
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await?;
    let established = await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
        Ok(result) => {
            result?;
            Ok(())
        }
        Err(_) => Err(Error::CrdNotEstablished(name)),
    }
}

/// The CRD as YAML, for `smtp-credentials crd | kubectl apply -f -`.
pub fn crd_yaml() -> Result<String, Error> {
    Ok(serde_saphyr::to_string(&SMTPCredentials::crd())?)
}
