//! Periodic compaction, the same policy kube-apiserver applies to etcd: every `interval`, compact
//! to the revision that was current one interval ago. History therefore always covers at least
//! one interval (watchers that reconnect within it resume without relisting), and the store stays
//! bounded by the live data plus one interval of changes.

use std::sync::Arc;
use std::time::Duration;

use crate::{Revision, Store};

/// Runs compaction forever; spawn it and abort the task to stop. Uses `tokio::time`, so tests
/// drive it with a paused clock.
pub async fn run(store: Arc<dyn Store>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous: Option<Revision> = None;
    loop {
        ticker.tick().await;
        if let Some(target) = previous.filter(|r| *r > 0) {
            match store.compact(target).await {
                Ok(()) => {
                    tracing::debug!(backend = store.backend(), revision = target, "compacted")
                }
                Err(error) => {
                    tracing::warn!(backend = store.backend(), %error, "compaction failed");
                }
            }
        }
        match store.current_revision().await {
            Ok(current) => previous = Some(current),
            Err(error) => tracing::warn!(%error, "could not read the current revision"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::{StoreError, StoreResult};
    use bytes::Bytes;

    #[tokio::test(start_paused = true)]
    async fn compactor_should_keep_one_interval_of_history() -> StoreResult<()> {
        let store = Arc::new(MemoryStore::new());
        let first = store.create("/a", Bytes::from_static(b"1")).await?;
        let handle = tokio::spawn(run(store.clone(), Duration::from_secs(300)));
        tokio::time::sleep(Duration::from_secs(301)).await;
        let second = store.update("/a", Bytes::from_static(b"2"), first).await?;
        // One interval later, the revision that was current an interval ago is still readable.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(store.get("/a", Some(first)).await.is_ok());
        // After another interval, history before `second` is gone but `second` is readable.
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(matches!(
            store.get("/a", Some(first)).await,
            Err(StoreError::Compacted { .. })
        ));
        assert_eq!(
            store.get("/a", Some(second)).await?.0.map(|kv| kv.value),
            Some(Bytes::from_static(b"2"))
        );
        handle.abort();
        Ok(())
    }
}
