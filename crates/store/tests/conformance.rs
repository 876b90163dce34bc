//! One conformance suite for every store backend: memory, SQLite and etcd (a private etcd is
//! started as a child process per test). The etcd tests need an `etcd` binary, so they are
//! `#[ignore = "needs etcd"]`: `cargo test -- --include-ignored` (as `./scripts/test` runs it)
//! includes them, and they fail, not skip, when no `etcd` is on PATH.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::etcd::EtcdStore;
use skiff_store::etcd_process::{EtcdProcess, etcd_available};
use skiff_store::memory::MemoryStore;
use skiff_store::sqlite::{SqliteOptions, SqliteStore};
use skiff_store::{
    Event, EventKind, MAX_VALUE_BYTES, RangeRequest, Revision, Store, StoreError, WatchStream,
};

/// A small watch ring, so the embedded backends' lag handling is exercised.
const RING: usize = 256;

struct Backend {
    store: Arc<dyn Store>,
    _guard: Box<dyn Any + Send>,
}

async fn memory() -> Backend {
    Backend {
        store: Arc::new(MemoryStore::with_watch_capacity(RING)),
        _guard: Box::new(()),
    }
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        watch_capacity: RING,
    };
    let store = SqliteStore::open_with(dir.path(), options).expect("open sqlite");
    Backend {
        store: Arc::new(store),
        _guard: Box::new(dir),
    }
}

async fn etcd() -> Backend {
    assert!(
        etcd_available(),
        "this test needs an `etcd` binary on PATH (./scripts/install-deps installs it)"
    );
    let process = tokio::task::spawn_blocking(EtcdProcess::start)
        .await
        .expect("join")
        .expect("start etcd");
    let store = EtcdStore::connect_with(process.endpoint(), RING)
        .await
        .expect("connect etcd");
    Backend {
        store: Arc::new(store),
        _guard: Box::new(process),
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(stream: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("stream open")
        .expect("an event, not an error")
}

/// Reads events under `prefix` after `after` until revision `until`, resuming on `WatchLagged`
/// exactly as a real client would. Returns the events and how many times it had to resume.
async fn collect_until(
    store: &dyn Store,
    prefix: &str,
    after: Revision,
    until: Revision,
) -> (Vec<Event>, usize) {
    let mut events = Vec::new();
    let mut resumes = 0;
    let mut last = after;
    let mut stream = store.watch(prefix, last).await.expect("watch");
    while last < until {
        let item = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("progress within 20 s")
            .expect("stream open");
        match item {
            Ok(event) => {
                assert!(event.revision() > last, "events must be in order");
                last = event.revision();
                events.push(event);
            }
            Err(StoreError::WatchLagged { resume_after }) => {
                assert_eq!(
                    resume_after, last,
                    "resume point is the last delivered event"
                );
                resumes += 1;
                stream = store.watch(prefix, last).await.expect("resume watch");
            }
            Err(other) => panic!("unexpected watch error: {other}"),
        }
    }
    (events, resumes)
}

mod cases {
    use super::*;

    pub async fn create_should_assign_increasing_revisions(b_: &Backend) {
        let s = &*b_.store;
        let start = s.current_revision().await.unwrap();
        let r1 = s.create("/t/a", b("1")).await.unwrap();
        let r2 = s.create("/t/b", b("2")).await.unwrap();
        assert!(r1 > start && r2 == r1 + 1);
        assert_eq!(s.current_revision().await.unwrap(), r2);
        let (kv, at) = s.get("/t/a", None).await.unwrap();
        let kv = kv.unwrap();
        assert_eq!(
            (kv.value, kv.create_revision, kv.mod_revision),
            (b("1"), r1, r1)
        );
        assert_eq!(at, r2);
    }

    pub async fn create_should_fail_when_key_exists(b_: &Backend) {
        let s = &*b_.store;
        s.create("/t/a", b("1")).await.unwrap();
        let err = s.create("/t/a", b("2")).await.unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { ref key } if key == "/t/a"));
        assert_eq!(s.get("/t/a", None).await.unwrap().0.unwrap().value, b("1"));
    }

    pub async fn get_should_read_past_revisions(b_: &Backend) {
        let s = &*b_.store;
        let r1 = s.create("/t/a", b("1")).await.unwrap();
        let r2 = s.update("/t/a", b("2"), r1).await.unwrap();
        let (r3, _) = s.delete("/t/a", None).await.unwrap();
        assert_eq!(
            s.get("/t/a", Some(r1)).await.unwrap().0.unwrap().value,
            b("1")
        );
        let v2 = s.get("/t/a", Some(r2)).await.unwrap().0.unwrap();
        assert_eq!(
            (v2.value, v2.create_revision, v2.mod_revision),
            (b("2"), r1, r2)
        );
        assert_eq!(s.get("/t/a", Some(r3)).await.unwrap().0, None);
        assert_eq!(s.get("/t/a", None).await.unwrap().0, None);
        let future = s.get("/t/a", Some(r3 + 100)).await.unwrap_err();
        assert!(
            matches!(future, StoreError::FutureRevision { .. }),
            "{future}"
        );
    }

    pub async fn update_should_compare_and_swap(b_: &Backend) {
        let s = &*b_.store;
        let r1 = s.create("/t/a", b("1")).await.unwrap();
        let r2 = s.update("/t/a", b("2"), r1).await.unwrap();
        let err = s.update("/t/a", b("stale"), r1).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { expected, actual, .. } if expected == r1 && actual == r2),
            "{err}"
        );
        let missing = s.update("/t/missing", b("x"), r1).await.unwrap_err();
        assert!(matches!(missing, StoreError::NotFound { .. }), "{missing}");
        assert_eq!(s.get("/t/a", None).await.unwrap().0.unwrap().value, b("2"));
        let kv = s.get("/t/a", None).await.unwrap().0.unwrap();
        assert_eq!(kv.create_revision, r1, "updates keep the create revision");
    }

    pub async fn delete_should_be_guarded_and_return_previous_value(b_: &Backend) {
        let s = &*b_.store;
        let r1 = s.create("/t/a", b("1")).await.unwrap();
        let r2 = s.update("/t/a", b("2"), r1).await.unwrap();
        let err = s.delete("/t/a", Some(r1)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict { actual, .. } if actual == r2),
            "{err}"
        );
        let (r3, prev) = s.delete("/t/a", Some(r2)).await.unwrap();
        assert!(r3 > r2);
        assert_eq!((prev.value, prev.mod_revision), (b("2"), r2));
        let again = s.delete("/t/a", None).await.unwrap_err();
        assert!(matches!(again, StoreError::NotFound { .. }), "{again}");
        // A re-created key starts a new life.
        let r4 = s.create("/t/a", b("new")).await.unwrap();
        assert_eq!(
            s.get("/t/a", None)
                .await
                .unwrap()
                .0
                .unwrap()
                .create_revision,
            r4
        );
    }

    pub async fn range_should_isolate_prefixes(b_: &Backend) {
        let s = &*b_.store;
        for key in ["/a", "/a/1", "/a/2", "/ab", "/ab/1", "/b/1", "/a/"] {
            s.create(key, b(key)).await.unwrap();
        }
        let keys = |r: skiff_store::RangeResponse| -> Vec<String> {
            r.kvs.into_iter().map(|kv| kv.key).collect()
        };
        let under_a = RangeRequest {
            prefix: "/a/".into(),
            ..Default::default()
        };
        assert_eq!(
            keys(s.range(under_a).await.unwrap()),
            ["/a/", "/a/1", "/a/2"]
        );
        let all = RangeRequest::default();
        assert_eq!(s.range(all).await.unwrap().kvs.len(), 7);
        let none = RangeRequest {
            prefix: "/c".into(),
            ..Default::default()
        };
        assert!(s.range(none).await.unwrap().kvs.is_empty());
    }

    pub async fn range_should_paginate_at_one_revision(b_: &Backend) {
        let s = &*b_.store;
        for i in 0..25 {
            s.create(&format!("/p/{i:03}"), b(&i.to_string()))
                .await
                .unwrap();
        }
        let mut request = RangeRequest {
            prefix: "/p/".into(),
            limit: Some(10),
            ..Default::default()
        };
        let first = s.range(request.clone()).await.unwrap();
        assert!(first.more);
        assert_eq!(first.kvs.len(), 10);
        // Writes between pages must not show up in later pages.
        s.create("/p/0105", b("late")).await.unwrap();
        let last = s.get("/p/024", None).await.unwrap().0.unwrap();
        s.delete("/p/024", Some(last.mod_revision)).await.unwrap();
        let mut seen: Vec<String> = first.kvs.iter().map(|kv| kv.key.clone()).collect();
        request.revision = Some(first.revision);
        request.start_after = seen.last().cloned();
        loop {
            let page = s.range(request.clone()).await.unwrap();
            assert_eq!(page.revision, first.revision);
            seen.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            request.start_after = seen.last().cloned();
        }
        let expected: Vec<String> = (0..25).map(|i| format!("/p/{i:03}")).collect();
        assert_eq!(seen, expected);
    }

    pub async fn values_up_to_limit_should_round_trip(b_: &Backend) {
        let s = &*b_.store;
        let big = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
        let r = s.create("/t/big", big.clone()).await.unwrap();
        assert_eq!(s.get("/t/big", None).await.unwrap().0.unwrap().value, big);
        let too_big = Bytes::from(vec![7u8; MAX_VALUE_BYTES + 1]);
        let err = s.create("/t/bigger", too_big.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
        let err = s.update("/t/big", too_big, r).await.unwrap_err();
        assert!(matches!(err, StoreError::ValueTooLarge { .. }), "{err}");
        let empty = s.create("", b("x")).await.unwrap_err();
        assert!(matches!(empty, StoreError::InvalidKey { .. }), "{empty}");
    }

    pub async fn watch_should_deliver_ordered_events_with_previous_values(b_: &Backend) {
        let s = &*b_.store;
        let start = s.current_revision().await.unwrap();
        let mut w = s.watch("/w/", start).await.unwrap();
        let r1 = s.create("/w/a", b("1")).await.unwrap();
        s.create("/other", b("x")).await.unwrap();
        let r2 = s.update("/w/a", b("2"), r1).await.unwrap();
        let (r3, _) = s.delete("/w/a", None).await.unwrap();
        let e1 = next_event(&mut w).await;
        assert_eq!(
            (e1.kind, e1.revision(), e1.prev.clone()),
            (EventKind::Put, r1, None)
        );
        assert_eq!(e1.kv.value, b("1"));
        let e2 = next_event(&mut w).await;
        assert_eq!(
            (e2.kind, e2.revision(), e2.kv.value.clone()),
            (EventKind::Put, r2, b("2"))
        );
        let prev = e2.prev.unwrap();
        assert_eq!((prev.value, prev.mod_revision), (b("1"), r1));
        let e3 = next_event(&mut w).await;
        assert_eq!(
            (e3.kind, e3.revision(), e3.kv.key.as_str()),
            (EventKind::Delete, r3, "/w/a")
        );
        assert_eq!(e3.prev.unwrap().value, b("2"));
    }

    pub async fn watch_should_resume_from_any_uncompacted_revision(b_: &Backend) {
        let s = &*b_.store;
        let start = s.current_revision().await.unwrap();
        let mut revisions = Vec::new();
        for i in 0..30 {
            revisions.push(s.create(&format!("/r/{i}"), b("v")).await.unwrap());
        }
        let last = *revisions.last().unwrap();
        for (i, from) in std::iter::once(start).chain(revisions.clone()).enumerate() {
            let (events, _) = collect_until(s, "/r/", from, last).await;
            let got: Vec<Revision> = events.iter().map(Event::revision).collect();
            assert_eq!(got, revisions[i..], "resuming after {from}");
        }
    }

    pub async fn compacted_revisions_should_fail_reads_and_watches(b_: &Backend) {
        let s = &*b_.store;
        let r1 = s.create("/c/a", b("1")).await.unwrap();
        let r2 = s.update("/c/a", b("2"), r1).await.unwrap();
        s.create("/c/gone", b("x")).await.unwrap();
        s.delete("/c/gone", None).await.unwrap();
        let r5 = s.update("/c/a", b("3"), r2).await.unwrap();
        s.compact(r5 - 1).await.unwrap();
        s.compact(r5 - 1).await.unwrap(); // idempotent
        let err = s.get("/c/a", Some(r1)).await.unwrap_err();
        assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
        let err = s
            .range(RangeRequest {
                prefix: "/c/".into(),
                revision: Some(r1),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Compacted { .. }), "{err}");
        match s.watch("/c/", r1 - 1).await {
            Err(StoreError::Compacted { .. }) => {}
            Err(other) => panic!("expected Compacted, got {other}"),
            Ok(mut w) => match w.next().await {
                Some(Err(StoreError::Compacted { .. } | StoreError::WatchLagged { .. })) => {}
                other => panic!("expected a compacted watch, got {other:?}"),
            },
        }
        // The compacted revision itself and everything after stay readable and watchable.
        assert_eq!(
            s.get("/c/a", Some(r5 - 1)).await.unwrap().0.unwrap().value,
            b("2")
        );
        assert_eq!(s.get("/c/gone", Some(r5 - 1)).await.unwrap().0, None);
        let (events, _) = collect_until(s, "/c/", r5 - 1, r5).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].prev.as_ref().unwrap().value, b("2"));
        let err = s.compact(r5 + 10).await.unwrap_err();
        assert!(matches!(err, StoreError::FutureRevision { .. }), "{err}");
    }

    pub async fn concurrent_writes_should_get_unique_gapless_revisions(b_: &Backend) {
        let s = &b_.store;
        let start = s.current_revision().await.unwrap();
        let mut tasks = Vec::new();
        for w in 0..32 {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..20 {
                    let key = format!("/cw/{w}/{i}");
                    let r = s.create(&key, b("v")).await.unwrap();
                    revs.push(s.update(&key, b("w"), r).await.unwrap());
                    revs.push(r);
                }
                revs
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        let unique: BTreeSet<Revision> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "revisions are unique");
        let expected: BTreeSet<Revision> = (start + 1..=start + all.len() as i64).collect();
        assert_eq!(unique, expected, "no gaps");
    }

    pub async fn concurrent_cas_should_let_exactly_one_writer_win(b_: &Backend) {
        let s = &b_.store;
        let r = s.create("/cas", b("0")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(async move {
                s.update("/cas", b(&i.to_string()), r).await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::Conflict { .. }) => {}
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!(wins, 1);
        let mut creates = Vec::new();
        for _ in 0..16 {
            let s = Arc::clone(s);
            creates.push(tokio::spawn(async move { s.create("/once", b("x")).await }));
        }
        let mut created = 0;
        for task in creates {
            if task.await.unwrap().is_ok() {
                created += 1;
            }
        }
        assert_eq!(created, 1);
    }

    pub async fn many_watchers_should_see_the_same_sequence(b_: &Backend) {
        let s = &b_.store;
        let start = s.current_revision().await.unwrap();
        let mut watchers = Vec::new();
        for _ in 0..200 {
            watchers.push(s.watch("/mw/", start).await.unwrap());
        }
        let writer = {
            let s = Arc::clone(s);
            tokio::spawn(async move {
                let mut revs = Vec::new();
                for i in 0..100 {
                    revs.push(s.create(&format!("/mw/{i}"), b("v")).await.unwrap());
                }
                revs
            })
        };
        let expected = writer.await.unwrap();
        let last = *expected.last().unwrap();
        let mut readers = Vec::new();
        for mut w in watchers {
            let s = Arc::clone(s);
            readers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while got.last().is_none_or(|r| *r < last) {
                    match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
                        Ok(Some(Ok(e))) => got.push(e.revision()),
                        Ok(Some(Err(StoreError::WatchLagged { resume_after }))) => {
                            w = s.watch("/mw/", resume_after).await.unwrap();
                        }
                        other => panic!("watcher failed: {other:?}"),
                    }
                }
                got
            }));
        }
        for reader in readers {
            assert_eq!(reader.await.unwrap(), expected);
        }
    }

    pub async fn slow_watcher_should_end_with_resumable_error_and_lose_nothing(b_: &Backend) {
        let s = &b_.store;
        let start = s.current_revision().await.unwrap();
        let mut slow = s.watch("/slow/", start).await.unwrap();
        // Let it deliver one event, so it is live (past catch-up), then stop reading.
        let first = s.create("/slow/first", b("v")).await.unwrap();
        assert_eq!(next_event(&mut slow).await.revision(), first);
        let n = RING * 4;
        let mut tasks = Vec::new();
        for w in 0..16 {
            let s = Arc::clone(s);
            tasks.push(tokio::spawn(async move {
                for i in 0..n / 16 {
                    s.create(&format!("/slow/{w}/{i}"), b("v")).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let last = s.current_revision().await.unwrap();
        let mut got = vec![first];
        let mut lagged = false;
        while *got.last().unwrap() < last {
            match tokio::time::timeout(Duration::from_secs(20), slow.next())
                .await
                .expect("progress")
            {
                Some(Ok(e)) => got.push(e.revision()),
                Some(Err(StoreError::WatchLagged { resume_after })) => {
                    assert_eq!(resume_after, *got.last().unwrap());
                    lagged = true;
                    slow = s.watch("/slow/", resume_after).await.unwrap();
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            lagged,
            "a watcher {n} events behind must be ended, not buffered"
        );
        let expected: Vec<Revision> = (first..=last).collect();
        assert_eq!(got, expected, "nothing lost");
    }

    pub async fn watch_from_future_revision_should_only_see_later_writes(b_: &Backend) {
        let s = &*b_.store;
        let now = s.current_revision().await.unwrap();
        let mut w = s.watch("/f/", now + 2).await.unwrap();
        s.create("/f/1", b("1")).await.unwrap();
        s.create("/f/2", b("2")).await.unwrap();
        let r3 = s.create("/f/3", b("3")).await.unwrap();
        assert_eq!(next_event(&mut w).await.revision(), r3);
    }

    pub async fn watch_should_isolate_prefixes(b_: &Backend) {
        let s = &*b_.store;
        let now = s.current_revision().await.unwrap();
        let mut w = s.watch("/iso/a/", now).await.unwrap();
        s.create("/iso/ab", b("no")).await.unwrap();
        s.create("/iso/a", b("no")).await.unwrap();
        let r = s.create("/iso/a/x", b("yes")).await.unwrap();
        let e = next_event(&mut w).await;
        assert_eq!((e.revision(), e.kv.key.as_str()), (r, "/iso/a/x"));
    }

    pub async fn range_at_past_revision_should_show_deleted_keys(b_: &Backend) {
        let s = &*b_.store;
        let r1 = s.create("/h/a", b("1")).await.unwrap();
        s.create("/h/b", b("1")).await.unwrap();
        let r3 = s.update("/h/a", b("2"), r1).await.unwrap();
        s.delete("/h/b", None).await.unwrap();
        let past = s
            .range(RangeRequest {
                prefix: "/h/".into(),
                revision: Some(r3),
                ..Default::default()
            })
            .await
            .unwrap();
        let got: Vec<(String, Bytes)> = past.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(
            got,
            [("/h/a".to_string(), b("2")), ("/h/b".to_string(), b("1"))]
        );
        let now = s
            .range(RangeRequest {
                prefix: "/h/".into(),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!((now.kvs.len(), now.more), (1, false));
    }
}

macro_rules! suite {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = super::$backend().await;
                    super::cases::$case(&backend).await;
                }
            )*
        }
    };
    (#[ignore = $why:literal] $backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = $why]
                async fn $case() {
                    let backend = super::$backend().await;
                    super::cases::$case(&backend).await;
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($case:ident),* $(,)?) => {
        suite!(memory: $($case),*);
        suite!(sqlite: $($case),*);
        suite!(#[ignore = "needs etcd"] etcd: $($case),*);
    };
}

all_backends!(
    create_should_assign_increasing_revisions,
    create_should_fail_when_key_exists,
    get_should_read_past_revisions,
    update_should_compare_and_swap,
    delete_should_be_guarded_and_return_previous_value,
    range_should_isolate_prefixes,
    range_should_paginate_at_one_revision,
    values_up_to_limit_should_round_trip,
    watch_should_deliver_ordered_events_with_previous_values,
    watch_should_resume_from_any_uncompacted_revision,
    compacted_revisions_should_fail_reads_and_watches,
    concurrent_writes_should_get_unique_gapless_revisions,
    concurrent_cas_should_let_exactly_one_writer_win,
    many_watchers_should_see_the_same_sequence,
    slow_watcher_should_end_with_resumable_error_and_lose_nothing,
    watch_from_future_revision_should_only_see_later_writes,
    watch_should_isolate_prefixes,
    range_at_past_revision_should_show_deleted_keys,
);
