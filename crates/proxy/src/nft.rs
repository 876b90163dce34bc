//! Running `nft -f -` with a script: the one way the proxy (and the node agent's guard) changes
//! nftables, each script one atomic transaction.

use tokio::io::AsyncWriteExt;

/// `nft` could not run, or refused the script.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The program could not run.
    #[error("running nft")]
    Run(#[source] std::io::Error),
    /// It refused the script.
    #[error("nft refused the rules: {0}")]
    Refused(String),
}

/// Applies `script` in one transaction.
pub async fn apply(script: &str) -> Result<(), NftError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(NftError::Run)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(NftError::Run)?;
    }
    let output = child.wait_with_output().await.map_err(NftError::Run)?;
    if !output.status.success() {
        return Err(NftError::Refused(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(())
}
