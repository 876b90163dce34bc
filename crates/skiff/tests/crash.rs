//! Crash safety: SIGKILL a process that is writing to the embedded store at random moments, 20
//! times, and prove after each restart that every write it acknowledged is present and that
//! revisions never went backwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use skiff_store::Store;
use skiff_store::sqlite::SqliteStore;

const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_should_survive_sigkill() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let mut last_revision = 0;
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["debug", "write-loop", "--writers", "16", "--tag"])
            .arg(round.to_string())
            .arg("--data-dir")
            .arg(data_dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        // Kill at a random moment once writes are flowing.
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(rng.random_range(30..400)));
        child.kill().unwrap(); // SIGKILL, to the child we started.
        child.wait().unwrap();
        let lines = reader.join().unwrap();

        // What the killed process acknowledged: the final state of each key.
        let mut expected: HashMap<String, (String, i64)> = HashMap::new();
        let mut max_acked = 0;
        for line in &lines {
            let mut parts = line.split(' ');
            let (Some(kind), Some(key), Some(revision)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue; // a line torn by the kill
            };
            let Ok(revision) = revision.parse::<i64>() else {
                continue;
            };
            let value = match kind {
                "create" => key.to_string(),
                _ => format!("{key}+updated"),
            };
            max_acked = max_acked.max(revision);
            let entry = expected
                .entry(key.to_string())
                .or_insert((value.clone(), revision));
            if revision >= entry.1 {
                *entry = (value, revision);
            }
        }
        total_acked += lines.len();

        let store = SqliteStore::open(&data_dir.path().join("db")).unwrap();
        let current = store.current_revision().await.unwrap();
        assert!(
            current >= max_acked && current >= last_revision,
            "round {round}: revision {current} after restart, acknowledged up to {max_acked}, \
             previously {last_revision}"
        );
        for (key, (value, revision)) in &expected {
            let (kv, _) = store.get(key, None).await.unwrap();
            let kv = kv.unwrap_or_else(|| panic!("round {round}: acknowledged {key} is missing"));
            // Exactly the acknowledged version, or the one later write the writer makes to a key
            // (its update), which may have been durable but not yet acknowledged at the kill.
            if kv.mod_revision == *revision {
                assert_eq!(kv.value, value.as_bytes(), "round {round}: {key}");
            } else {
                assert!(
                    kv.mod_revision > *revision,
                    "round {round}: {key} went back"
                );
                assert_eq!(
                    kv.value,
                    format!("{key}+updated").as_bytes(),
                    "round {round}"
                );
            }
        }
        last_revision = current;
        eprintln!(
            "round {round}: killed after {:?}, {} acknowledged writes verified, revision {current}",
            started.elapsed(),
            lines.len()
        );
    }
    assert!(
        total_acked > 1000,
        "the writer made progress ({total_acked} acks)"
    );
}
