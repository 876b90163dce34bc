//! Registry credentials from a pod's `imagePullSecrets`, as kubelet's credential keyring finds
//! them: Secrets of type `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`, an `auths` map)
//! or `kubernetes.io/dockercfg` (`.dockercfg`, the map itself), each entry keyed by a registry
//! (`registry.example.com:5000`, `https://index.docker.io/v1/`, with or without a scheme and a
//! path) and holding `auth` (base64 of `user:password`) or `username` and `password`. The
//! entries whose registry is the image's are tried in the order found; Docker Hub answers to
//! its several names.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::runtime::api;

/// The names Docker Hub goes by, in image references and in credential files.
const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// The registry host (with its port) an image reference names: its first part when that
/// looks like a host (a dot, a port, or `localhost`), Docker Hub otherwise.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// A credential file's key as a host: no scheme, no path.
fn host_of(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

fn same_registry(key: &str, registry: &str) -> bool {
    let host = host_of(key);
    host.eq_ignore_ascii_case(registry)
        || (DOCKER_HUB.contains(&host) && DOCKER_HUB.contains(&registry))
}

/// The entries of one pull secret: (registry key, entry).
fn entries(secret: &Secret) -> Vec<(String, Value)> {
    let data = secret.data.as_ref();
    let parsed = |key: &str| {
        data.and_then(|d| d.get(key))
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes.0).ok())
    };
    let map = parsed(".dockerconfigjson")
        .and_then(|config| config.get("auths").cloned())
        .or_else(|| parsed(".dockercfg"));
    match map {
        Some(Value::Object(map)) => map.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// One entry as CRI's `AuthConfig`; `None` if it holds no credential.
fn auth_config(entry: &Value) -> Option<api::AuthConfig> {
    let text = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (mut username, mut password) = (text("username"), text("password"));
    if let Some(decoded) = entry
        .get("auth")
        .and_then(Value::as_str)
        .and_then(|auth| base64::engine::general_purpose::STANDARD.decode(auth).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        && let Some((user, pass)) = decoded.split_once(':')
    {
        username = user.to_string();
        password = pass.to_string();
    }
    let identity_token = text("identitytoken");
    if username.is_empty() && password.is_empty() && identity_token.is_empty() {
        return None;
    }
    // No server address, as kubelet's keyring sends none: containerd would otherwise send the
    // credential only to a host that parses out of it equal to the one it pulls from (not
    // `registry-1.docker.io` for `https://index.docker.io/v1/`, nor a mirror).
    Some(api::AuthConfig {
        username,
        password,
        identity_token,
        ..api::AuthConfig::default()
    })
}

/// The credentials `secrets` (the pod's pull secrets, in order) hold for `image`'s registry.
pub fn credentials(image: &str, secrets: &[Secret]) -> Vec<api::AuthConfig> {
    let registry = registry_of(image);
    secrets
        .iter()
        .flat_map(entries)
        .filter(|(key, _)| same_registry(key, registry))
        .filter_map(|(_, entry)| auth_config(&entry))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secret(key: &str, config: Value) -> Secret {
        let encoded = base64::engine::general_purpose::STANDARD.encode(config.to_string());
        serde_json::from_value(json!({"metadata": {"name": "pull"}, "data": {key: encoded}}))
            .unwrap()
    }

    #[test]
    fn images_should_name_their_registry() {
        assert_eq!(registry_of("busybox:1.36"), "docker.io");
        assert_eq!(registry_of("library/busybox"), "docker.io");
        assert_eq!(registry_of("ghcr.io/org/app:1"), "ghcr.io");
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }

    #[test]
    fn credentials_should_be_found_for_the_images_registry_only() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let json_config = secret(
            ".dockerconfigjson",
            json!({"auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "registry.example.com:5000": {"username": "u", "password": "p"},
                "empty.example.com": {}}}),
        );
        let hub = credentials("busybox:1.36", std::slice::from_ref(&json_config));
        assert_eq!(hub.len(), 1);
        assert_eq!(
            (hub[0].username.as_str(), hub[0].password.as_str()),
            ("robot", "s3cret")
        );
        assert_eq!(hub[0].server_address, "", "as kubelet's keyring sends it");
        let private = credentials(
            "registry.example.com:5000/team/app:2",
            std::slice::from_ref(&json_config),
        );
        assert_eq!(
            (private[0].username.as_str(), private[0].password.as_str()),
            ("u", "p")
        );
        assert!(credentials("ghcr.io/x/y", std::slice::from_ref(&json_config)).is_empty());
        assert!(credentials("empty.example.com/x", &[json_config]).is_empty());
        // The older format: the map itself.
        let legacy = secret(".dockercfg", json!({"quay.io": {"auth": auth}}));
        assert_eq!(credentials("quay.io/a/b", &[legacy])[0].username, "robot");
    }
}
