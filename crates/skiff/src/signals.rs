//! The end of a foreground subcommand: SIGINT (Ctrl-C) or SIGTERM.

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn terminated() {
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
