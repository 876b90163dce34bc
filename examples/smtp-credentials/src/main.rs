//! `smtp-credentials`: runs the SMTPCredentials controller against the cluster of the current
//! kubeconfig (or the in-cluster service account); `smtp-credentials crd` prints the CRD.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match std::env::args().nth(1).as_deref() {
        Some("crd") => smtp_credentials::crd_yaml().map(|yaml| print!("{yaml}")),
        None | Some("run") => run().await,
        Some(other) => {
            eprintln!("unknown command {other:?}; usage: smtp-credentials [run|crd]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("smtp-credentials: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), smtp_credentials::Error> {
    let client = kube::Client::try_default().await?;
    tokio::select! {
        result = smtp_credentials::run(client) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
