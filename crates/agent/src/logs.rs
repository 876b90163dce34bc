//! Container logs as kubelet serves them: the CRI log files the runtime writes
//! (`{logs}/{namespace}_{pod}_{uid}/{container}/{restarts}.log`, each line
//! `<RFC 3339 time> <stream> <P|F> <text>`, a `P` line being part of a longer one) read back as
//! the container printed them, with `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`,
//! `limitBytes`, `previous` (the instance before the current one) and `follow` (new lines as
//! they are written, until the container stops or is restarted).

use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::pods::labels;
use crate::runtime::{Runtime, RuntimeError, api};

/// What a log request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// Keep sending new lines.
    pub follow: bool,
    /// The previous instance's log.
    pub previous: bool,
    /// Only the last lines.
    pub tail: Option<usize>,
    /// At most this many bytes.
    pub limit: Option<u64>,
    /// Only lines written since.
    pub since: Option<Timestamp>,
    /// Prefix each line with its time.
    pub timestamps: bool,
}

impl Query {
    /// Reads kubelet's query parameters (`now` for `sinceSeconds`).
    pub fn parse(query: &str, now: Timestamp) -> Result<Query, String> {
        let mut out = Query::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
            let flag = || value == "true" || value == "1";
            let number = || {
                value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| format!("{key} must be a non-negative number, not {value:?}"))
            };
            match key {
                "follow" => out.follow = flag(),
                "previous" => out.previous = flag(),
                "timestamps" => out.timestamps = flag(),
                "tailLines" => out.tail = Some(usize::try_from(number()?).unwrap_or(usize::MAX)),
                "limitBytes" => out.limit = Some(u64::try_from(number()?).unwrap_or(u64::MAX)),
                "sinceSeconds" => {
                    let seconds = jiff::SignedDuration::from_secs(number()?);
                    out.since = Some(now.checked_sub(seconds).unwrap_or(now));
                }
                "sinceTime" => {
                    let decoded = value.replace("%3A", ":").replace("%2B", "+");
                    out.since = Some(
                        decoded
                            .parse()
                            .map_err(|_| format!("sinceTime must be RFC 3339, not {value:?}"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// One line of a CRI log file, as the container wrote it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// When it was written.
    pub time: Option<Timestamp>,
    /// The text, with its newline when the line is complete.
    pub text: String,
}

/// Parses one CRI log line.
pub fn parse_line(raw: &str) -> Option<Line> {
    let mut parts = raw.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or("");
    let complete = tag.split(':').next() == Some("F");
    let mut text = content.to_string();
    if complete {
        text.push('\n');
    }
    Some(Line {
        time: time.parse().ok(),
        text,
    })
}

fn render(line: &Line, query: &Query) -> String {
    match (query.timestamps, line.time) {
        (true, Some(at)) => format!("{} {}", at.strftime("%Y-%m-%dT%H:%M:%S.%9fZ"), line.text),
        _ => line.text.clone(),
    }
}

/// The log directory of the pod `namespace/name` (the newest, should several pods of that name
/// have run), with the pod's uid.
pub fn pod_directory(logs: &Path, namespace: &str, name: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("{namespace}_{name}_");
    std::fs::read_dir(logs)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let uid = file.strip_prefix(&prefix)?.to_string();
            let modified = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((modified, e.path(), uid))
        })
        .max_by_key(|(modified, _, _)| *modified)
        .map(|(_, path, uid)| (path, uid))
}

/// The id of the running `restarts`-th instance of a pod's container on `node` (`None`: it
/// does not run).
pub async fn running_instance_id(
    runtime: &dyn Runtime,
    node: &str,
    uid: &str,
    container: &str,
    restarts: u32,
) -> Result<Option<String>, RuntimeError> {
    let containers = runtime.list_containers(Some(uid)).await?;
    Ok(containers
        .into_iter()
        .find(|c| {
            c.labels.get(labels::AGENT).map(String::as_str) == Some(node)
                && c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
                && c.metadata.as_ref().is_some_and(|m| m.attempt == restarts)
                && c.state == api::ContainerState::ContainerRunning as i32
        })
        .map(|c| c.id))
}

/// Whether the `restarts`-th instance of a pod's container still runs (when the runtime cannot
/// say, it is taken to: a follower keeps following).
pub async fn instance_running(
    runtime: &dyn Runtime,
    node: &str,
    uid: &str,
    container: &str,
    restarts: u32,
) -> bool {
    running_instance_id(runtime, node, uid, container, restarts)
        .await
        .map_or(true, |id| id.is_some())
}

/// The log files of a container, oldest instance first, with their restart counts.
pub fn instance_files(container: &Path) -> Vec<(u32, PathBuf)> {
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(container)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_suffix(".log")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files
}

/// The log's lines so far (filtered by `since`, cut to `tail`), and where the file ended.
pub fn read_existing(path: &Path, query: &Query) -> std::io::Result<(Vec<String>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut lines: Vec<String> = Vec::new();
    let mut reader = std::io::BufReader::new(&mut file);
    let mut raw = String::new();
    let mut offset = 0u64;
    loop {
        raw.clear();
        let read = reader.read_line(&mut raw)?;
        if read == 0 || !raw.ends_with('\n') {
            break;
        }
        offset += read as u64;
        let Some(line) = parse_line(raw.trim_end_matches(['\n', '\r'])) else {
            continue;
        };
        if query
            .since
            .is_some_and(|since| line.time.is_some_and(|t| t < since))
        {
            continue;
        }
        lines.push(render(&line, query));
    }
    if let Some(tail) = query.tail {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    Ok((lines, offset))
}

/// Sends `text` unless the limit is reached; `false` when the stream must end.
async fn send(out: &mpsc::Sender<Bytes>, text: String, left: &mut Option<u64>) -> bool {
    let mut bytes = Bytes::from(text);
    if let Some(left) = left.as_mut() {
        if *left == 0 {
            return false;
        }
        let keep = usize::try_from(*left)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        bytes.truncate(keep);
        *left -= keep as u64;
    }
    out.send(bytes).await.is_ok()
}

/// Streams a container's log file into `out` (see the module's note); `running` says whether the
/// instance still runs, for `follow`.
pub async fn stream<F, Fut>(path: PathBuf, query: Query, out: mpsc::Sender<Bytes>, running: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let (lines, offset) = match read_existing(&path, &query) {
        Ok(read) => read,
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "reading a log failed");
            return;
        }
    };
    let mut left = query.limit;
    for line in lines {
        if !send(&out, line, &mut left).await {
            return;
        }
    }
    if !query.follow {
        return;
    }
    // Followed through an open file, so a rotation (the file renamed away, a new one at the
    // path) loses nothing: the old file is read to its end before the new one is taken.
    let Ok(mut file) = std::fs::File::open(&path) else {
        return;
    };
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut idle = 0u32;
    loop {
        let Ok(read) = file.read_to_end(&mut pending) else {
            return;
        };
        let complete = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |at| at + 1);
        let text = String::from_utf8_lossy(&pending[..complete]).into_owned();
        for raw in text.lines() {
            if let Some(line) = parse_line(raw)
                && !send(&out, render(&line, &query), &mut left).await
            {
                return;
            }
        }
        pending.drain(..complete);
        if read > 0 {
            idle = 0;
            continue;
        }
        if rotated(&path, &file)
            && let Ok(next) = std::fs::File::open(&path)
        {
            file = next;
            pending.clear();
            continue;
        }
        idle += 1;
        // Once a second without news: is the container still there to write more?
        if idle.is_multiple_of(4) && !running().await {
            return;
        }
        if out.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether the file at `path` is another one than `open` (the log was rotated).
fn rotated(path: &Path, open: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), open.metadata()) {
        (Ok(now), Ok(ours)) => now.ino() != ours.ino() || now.dev() != ours.dev(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_should_come_back_as_written() {
        let full = parse_line("2026-12-04T21:00:00.123456789Z stdout F hello world").unwrap();
        assert_eq!(full.text, "hello world\n");
        assert!(full.time.is_some());
        let partial = parse_line("2026-12-04T21:00:00Z stderr P part").unwrap();
        assert_eq!(partial.text, "part");
        let empty = parse_line("2026-12-04T21:00:00Z stdout F").unwrap();
        assert_eq!(empty.text, "\n");
    }

    #[test]
    fn tail_since_and_timestamps_should_shape_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2026-12-04T21:00:00Z stdout F one\n2026-12-04T21:00:01Z stdout F two\n2026-12-04T21:00:02.5Z stderr F three\n2026-12-04T21:00:03Z stdout P unfinish",
        )
        .unwrap();
        let now: Timestamp = "2026-12-04T21:00:04Z".parse().unwrap();
        let read = |q: &str| {
            read_existing(&path, &Query::parse(q, now).unwrap())
                .unwrap()
                .0
        };
        assert_eq!(read(""), ["one\n", "two\n", "three\n"]);
        assert_eq!(read("tailLines=1"), ["three\n"]);
        assert_eq!(read("sinceSeconds=3"), ["two\n", "three\n"]);
        assert_eq!(
            read("tailLines=1&timestamps=true"),
            ["2026-12-04T21:00:02.500000000Z three\n"]
        );
        assert!(Query::parse("tailLines=x", now).is_err());
    }
}
