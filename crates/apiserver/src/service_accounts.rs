//! Upstream's ServiceAccount admission for pod creates: the pod's account (`default` unless it
//! names one) must exist, and unless the pod or its account opts out
//! (`automountServiceAccountToken: false`), the pod gets upstream's projected volume
//! `kube-api-access-<5 random>` (a bound service-account token refreshed by its node, the
//! `kube-root-ca.crt` ConfigMap's `ca.crt`, and its namespace) mounted read-only at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container and init container.
//!
//! One deliberate difference: a pod whose account is the `default` one, not created yet, is
//! admitted as if it existed (upstream refuses it with a 403 until the service-account
//! controller has made it, a race every script that creates a namespace and then a pod can
//! lose). Its node fetches the token once the account is there.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use skiff_apimachinery::status::{ApiError, Target};

use crate::state::ApiState;
use crate::storage;

/// Where the token, the CA and the namespace are mounted in every container.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The account a pod runs as when it names none.
const DEFAULT_ACCOUNT: &str = "default";
/// The volume's name before its random suffix.
const VOLUME_PREFIX: &str = "kube-api-access-";
/// The token lifetime upstream asks for (an hour and a few seconds, so that its clients can
/// tell a projected token from a legacy one).
const TOKEN_SECONDS: i64 = 3607;

/// What admission reads of a ServiceAccount; every other field is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Account {
    automount_service_account_token: Option<bool>,
}

/// The account `name` in `namespace`, from the watch cache or (when the cache lacks it, e.g.
/// just created) the store.
async fn account(
    state: &ApiState,
    namespace: &str,
    name: &str,
) -> Result<Option<Account>, ApiError> {
    let info = state
        .registry
        .find("", "v1", "serviceaccounts")
        .ok_or_else(|| ApiError::Internal("serviceaccounts are not registered".into()))?;
    let key = storage::key(&info, Some(namespace), name);
    let decode = |bytes: &[u8]| {
        serde_json::from_slice(bytes)
            .map(Some)
            .map_err(|e| ApiError::Internal(format!("stored service account: {e}")))
    };
    if let Some(cached) = state.watch_cache.get(&key) {
        return decode(cached.item());
    }
    let target = Target::new("", "serviceaccounts", name);
    match state.store.get(&key, None).await {
        Ok((Some(kv), _)) => decode(&kv.value),
        Ok((None, _)) => Ok(None),
        Err(error) => Err(storage::api_error(error, &target)),
    }
}

/// The projected volume upstream injects, named `name`.
fn volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// Whether some container of `spec` already mounts something at [`MOUNT_PATH`].
fn mounted_already(spec: &Map<String, Value>) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        spec.get(*list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("volumeMounts")?.as_array())
            .flatten()
            .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH))
    })
}

/// Admits the pod `object` (named `name` in errors) in `namespace`; `suffix` makes the volume's
/// name.
pub async fn admit(
    state: &ApiState,
    object: &mut Value,
    namespace: &str,
    name: &str,
    suffix: &str,
) -> Result<(), ApiError> {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let wanted = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .unwrap_or(DEFAULT_ACCOUNT)
        .to_string();
    spec.insert("serviceAccountName".into(), json!(wanted));
    spec.insert("serviceAccount".into(), json!(wanted));
    let found = account(state, namespace, &wanted).await?;
    if found.is_none() && wanted != DEFAULT_ACCOUNT {
        return Err(ApiError::Forbidden {
            target: Target::new("", "pods", name),
            message: format!(
                "pods \"{name}\" is forbidden: error looking up service account {namespace}/{wanted}: serviceaccount \"{wanted}\" not found"
            ),
        });
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| found?.automount_service_account_token)
        .unwrap_or(true);
    if !automount || mounted_already(spec) {
        return Ok(());
    }
    let volume_name = format!("{VOLUME_PREFIX}{suffix}");
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if let Some(volumes) = volumes.as_array_mut() {
        volumes.push(volume(&volume_name));
    }
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_object_mut)
        {
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(mounts) = mounts.as_array_mut() {
                mounts.push(mount.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_mount_at_the_path_should_be_left_alone() {
        let spec = json!({"containers": [{"name": "c", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]});
        assert!(mounted_already(spec.as_object().unwrap()));
        let other = json!({"containers": [{"name": "c", "volumeMounts": [{"name": "x", "mountPath": "/data"}]}]});
        assert!(!mounted_already(other.as_object().unwrap()));
    }

    #[test]
    fn an_account_should_be_read_for_its_automount_choice_alone() {
        let stored = br#"{"metadata":{"name":"default","managedFields":[{"manager":"m"}]},"automountServiceAccountToken":false,"secrets":[{"name":"s"}]}"#;
        let account: Account = serde_json::from_slice(stored).unwrap();
        assert_eq!(account.automount_service_account_token, Some(false));
        let silent: Account = serde_json::from_slice(br#"{"metadata":{}}"#).unwrap();
        assert_eq!(silent.automount_service_account_token, None);
    }

    #[test]
    fn the_volume_should_project_token_ca_and_namespace() {
        let v = volume("kube-api-access-abcde");
        let sources = v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .unwrap();
        assert_eq!(sources.len(), 3);
        assert_eq!(
            sources[0].pointer("/serviceAccountToken/expirationSeconds"),
            Some(&json!(3607))
        );
        assert_eq!(
            sources[1].pointer("/configMap/name"),
            Some(&json!("kube-root-ca.crt"))
        );
        assert_eq!(
            sources[2].pointer("/downwardAPI/items/0/fieldRef/fieldPath"),
            Some(&json!("metadata.namespace"))
        );
    }
}
