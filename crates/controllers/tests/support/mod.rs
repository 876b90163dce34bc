//! What the controllers' in-process tests share.

use std::time::Duration;

/// Polls `check` every 50 ms until it holds, for up to 30 s.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_for(what, 30, check).await;
}

/// Polls `check` every 50 ms until it holds, for up to `seconds`.
#[allow(dead_code)] // not every test binary waits longer
pub async fn eventually_for<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..seconds * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
