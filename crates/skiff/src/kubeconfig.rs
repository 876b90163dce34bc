//! A kube-rs client from a kubeconfig file, for the subcommands that run one component against
//! a cluster (`skiff scheduler`, `skiff sim-nodes`) and for the benchmarks.

use std::path::Path;

use anyhow::Context;

/// A client for the current context of the kubeconfig at `path`.
pub async fn client(path: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("loading the kubeconfig {}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}
