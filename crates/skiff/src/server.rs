//! `skiff server`: the control plane. Opens the store (embedded SQLite, or etcd), keeps it
//! compacted, serves the Kubernetes API over HTTPS, runs the controllers in-process (as kube-rs
//! clients of that API) and prints where the admin kubeconfig is.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_apiserver::clock::SystemClock;

use crate::{DatastoreArgs, datastore};

/// How often the store is compacted (kube-apiserver's default for etcd).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Options of `skiff server`.
#[derive(clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    datastore: DatastoreArgs,
    /// The address the API listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The API's HTTPS port.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
}

/// Runs the control plane until SIGINT or SIGTERM.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.datastore.data_dir).with_context(|| {
        format!(
            "creating the data directory {}",
            args.datastore.data_dir.display()
        )
    })?;
    let store = datastore::open(&args.datastore).await?;
    let compactor = tokio::spawn(skiff_store::compactor::run(
        Arc::clone(&store),
        COMPACTION_INTERVAL,
    ));
    let config = skiff_apiserver::Config {
        data_dir: args.datastore.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
    };
    let server = skiff_apiserver::start(config, store, Arc::new(SystemClock))
        .await
        .context("starting the API server")?;
    let client = skiff_client::in_process(
        skiff_apiserver::for_component(server.router.clone(), "controllers"),
        "default",
    );
    let controllers = tokio::spawn(skiff_controllers::run(client));
    // Whoever started us may have closed our stdout: that is no reason to stop.
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "skiff is running: the Kubernetes API is at https://{}\nkubeconfig: {}\n  export KUBECONFIG={}",
        server.address,
        server.kubeconfig.display(),
        server.kubeconfig.display()
    );
    let _ = out.flush();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("skiff: shutting down");
    controllers.abort();
    server.stop();
    compactor.abort();
    Ok(())
}
