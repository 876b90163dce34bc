//! Registry mirrors and plain-HTTP registries for the agent's containerd, as its per-registry
//! host files (`certs.d/<registry>/hosts.toml`, read at every pull): `--registry-mirror
//! docker.io=http://127.0.0.1:5000` sends pulls of `docker.io/...` images to that address
//! first (plain HTTP when the URL says `http://`), falling back to the registry itself unless
//! mirrors only are asked for (`--registry-mirrors-only`: nothing beyond the mirrors is ever
//! contacted, not even a name lookup, as the tests on machines without internet need).
//! The files are rewritten at every start, so a mirror removed from the flags is gone.

use std::path::Path;
use std::str::FromStr;

/// One mirror of one registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// The registry's host name as images name it (`docker.io`, `gcr.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Where to pull from instead (`http://127.0.0.1:5000`, `https://mirror.example`).
    pub url: String,
}

impl FromStr for Mirror {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (registry, url) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not REGISTRY=URL"))?;
        let registry = registry.trim();
        let url = url.trim().trim_end_matches('/');
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        if registry.is_empty() || registry.contains('/') || registry.contains('"') {
            return Err(format!("{registry:?} is not a registry host name"));
        }
        if !matches!(scheme, Some("http" | "https")) || url.contains('"') {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        Ok(Mirror {
            registry: registry.to_string(),
            url: url.to_string(),
        })
    }
}

/// Where pulls of `registry` go when no mirror answers.
fn upstream(registry: &str) -> String {
    match registry {
        "docker.io" => "https://registry-1.docker.io".into(),
        other => format!("https://{other}"),
    }
}

/// The `hosts.toml` of `registry` with `urls` tried in order, then the registry itself (or,
/// with `only`, the first mirror again: containerd always has a `server` to fall back to).
fn hosts_toml(registry: &str, urls: &[&str], only: bool) -> String {
    let server = match urls.first() {
        Some(first) if only => (*first).to_string(),
        _ => upstream(registry),
    };
    let mut text = format!(
        "# Written by skiff's node agent from --registry-mirror; rewritten at every start.\nserver = \"{server}\"\n"
    );
    for url in urls {
        text.push_str(&format!(
            "\n[host.\"{url}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
    }
    text
}

/// Writes the host files of `mirrors` into `dir` (containerd's `config_path`), replacing what
/// was there; with `only`, pulls never go beyond the mirrors.
pub fn write(dir: &Path, mirrors: &[Mirror], only: bool) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let mut registries: Vec<&str> = mirrors.iter().map(|m| m.registry.as_str()).collect();
    registries.sort_unstable();
    registries.dedup();
    for registry in registries {
        let urls: Vec<&str> = mirrors
            .iter()
            .filter(|m| m.registry == registry)
            .map(|m| m.url.as_str())
            .collect();
        let own = dir.join(registry);
        std::fs::create_dir_all(&own)?;
        std::fs::write(own.join("hosts.toml"), hosts_toml(registry, &urls, only))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail by panicking

    use super::*;

    #[test]
    fn mirrors_should_parse_and_refuse_what_is_not_a_registry_and_url() {
        assert_eq!(
            "docker.io=http://127.0.0.1:5000/"
                .parse::<Mirror>()
                .unwrap(),
            Mirror {
                registry: "docker.io".into(),
                url: "http://127.0.0.1:5000".into()
            }
        );
        assert!("docker.io".parse::<Mirror>().is_err());
        assert!("docker.io=ftp://x".parse::<Mirror>().is_err());
        assert!("a/b=http://x".parse::<Mirror>().is_err());
    }

    #[test]
    fn host_files_should_list_each_registrys_mirrors_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("stale.io")).unwrap();
        let mirrors: Vec<Mirror> = [
            "docker.io=http://127.0.0.1:5000",
            "gcr.io=http://127.0.0.1:5000",
            "docker.io=https://mirror.example",
        ]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect();
        write(dir.path(), &mirrors, false).unwrap();
        assert!(!dir.path().join("stale.io").exists());
        let docker = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
        assert!(docker.contains("server = \"https://registry-1.docker.io\""));
        let first = docker.find("[host.\"http://127.0.0.1:5000\"]").unwrap();
        let second = docker.find("[host.\"https://mirror.example\"]").unwrap();
        assert!(first < second, "{docker}");
        let gcr = std::fs::read_to_string(dir.path().join("gcr.io/hosts.toml")).unwrap();
        assert!(gcr.contains("server = \"https://gcr.io\""), "{gcr}");
        write(dir.path(), &mirrors, true).unwrap();
        let only = std::fs::read_to_string(dir.path().join("docker.io/hosts.toml")).unwrap();
        assert!(
            only.contains("server = \"http://127.0.0.1:5000\""),
            "{only}"
        );
        assert!(!only.contains("registry-1.docker.io"), "{only}");
    }
}
