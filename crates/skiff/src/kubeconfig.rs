//! A kube-rs client from a kubeconfig file, for the subcommands that run one component against
//! a cluster (`skiff scheduler`, `skiff sim-nodes`) and for the benchmarks.

use std::path::Path;

use anyhow::Context;

/// A client for the current context of the kubeconfig at `path`.
pub async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(config(path).await?)?)
}

/// The client configuration of the current context of the kubeconfig at `path`.
pub async fn config(path: &Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading the kubeconfig {}", path.display()))
}

/// The PEM of the cluster CA the kubeconfig at `path` trusts (its current context's).
pub fn certificate_authority(path: &Path) -> anyhow::Result<Vec<u8>> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let context = kubeconfig
        .current_context
        .as_deref()
        .and_then(|name| kubeconfig.contexts.iter().find(|c| c.name == name))
        .and_then(|c| c.context.as_ref())
        .context("the kubeconfig has no current context")?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .context("the kubeconfig's context names no cluster")?;
    if let Some(data) = &cluster.certificate_authority_data {
        use base64::Engine;
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("decoding certificate-authority-data");
    }
    let file = cluster
        .certificate_authority
        .as_deref()
        .context("the kubeconfig's cluster has no certificate authority")?;
    std::fs::read(file).with_context(|| format!("reading {file}"))
}
