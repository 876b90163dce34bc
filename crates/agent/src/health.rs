//! The node's conditions as kubelet decides them, from what the machine and the runtime say:
//! MemoryPressure, DiskPressure and PIDPressure against kubelet's default hard eviction
//! thresholds (`memory.available<100Mi`, `nodefs.available<10%`, `nodefs.inodesFree<5%`; kubelet
//! sets no PID threshold by default, skiff uses fewer than 10 % of `pid_max` free), and Ready,
//! False with upstream's reason and message while the runtime or its network is not ready or
//! does not answer (within [`RUNTIME_ANSWER`]: a hung runtime must not hold up the Lease).
//! Each message also says the measured figure in plain words. [`Settled`] holds a pressure
//! condition True for kubelet's `evictionPressureTransitionPeriod` after it was last measured,
//! and keeps a pressure condition's words while its status stands, so a figure that moves
//! neither flaps the condition nor rewrites the Node every pass.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::runtime::{Runtime, api};

/// kubelet's `memory.available` hard eviction threshold.
const MEMORY_AVAILABLE_MIN_KIB: u64 = 100 * 1024;
/// kubelet's `nodefs.available` threshold: a share of the filesystem.
const DISK_AVAILABLE_MIN: f64 = 0.10;
/// kubelet's `nodefs.inodesFree` threshold.
const INODES_FREE_MIN: f64 = 0.05;
/// PIDs free below this share of `pid_max` is pressure.
const PIDS_FREE_MIN: f64 = 0.10;

/// How long the runtime's `Status` may take before the runtime counts as down.
const RUNTIME_ANSWER: Duration = Duration::from_secs(2);
/// kubelet's `evictionPressureTransitionPeriod`.
const PRESSURE_HOLD: Duration = Duration::from_secs(300);

/// What was measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// `MemAvailable`, KiB (`None`: unreadable).
    pub memory_available_kib: Option<u64>,
    /// The data directory's filesystem: bytes (available, total), inodes (free, total).
    pub disk: Option<((u64, u64), (u64, u64))>,
    /// Tasks (threads) running and `pid_max`.
    pub pids: Option<(u64, u64)>,
    /// Why the runtime is not ready (kubelet's words), if it is not.
    pub runtime_problem: Option<String>,
}

/// One condition: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// `MemoryPressure`, `DiskPressure`, `PIDPressure` or `Ready`.
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    /// Upstream's reason.
    pub reason: &'static str,
    /// Upstream's message, with the figure behind it.
    pub message: String,
}

/// Measures the machine (memory, the filesystem of `data_dir`, PIDs) and asks the runtime.
pub async fn sample(data_dir: &Path, runtime: &dyn Runtime) -> Sample {
    let runtime_problem = match tokio::time::timeout(RUNTIME_ANSWER, runtime.conditions()).await {
        Ok(Ok(conditions)) => not_ready(&conditions),
        Ok(Err(error)) => Some(format!("container runtime is down: {error}")),
        Err(_) => Some(format!(
            "container runtime is down: it did not answer within {} s",
            RUNTIME_ANSWER.as_secs()
        )),
    };
    Sample {
        memory_available_kib: memory_available_kib(),
        disk: disk(data_dir),
        pids: pids(),
        runtime_problem,
    }
}

/// kubelet's words for a runtime that reports itself or its network not ready.
fn not_ready(conditions: &[api::RuntimeCondition]) -> Option<String> {
    let find = |type_: &str| conditions.iter().find(|c| c.r#type == type_);
    let describe = |c: &api::RuntimeCondition| {
        format!(
            "{}={} reason:{} message:{}",
            c.r#type, c.status, c.reason, c.message
        )
    };
    match find("RuntimeReady") {
        None => {
            return Some(
                "container runtime not ready: it reports no RuntimeReady condition".into(),
            );
        }
        Some(runtime) if !runtime.status => {
            return Some(format!(
                "container runtime not ready: {}",
                describe(runtime)
            ));
        }
        Some(_) => {}
    }
    if let Some(network) = find("NetworkReady").filter(|c| !c.status) {
        return Some(format!(
            "container runtime network not ready: {}",
            describe(network)
        ));
    }
    None
}

fn memory_available_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The size of the filesystem holding `path`, bytes.
pub fn filesystem_bytes(path: &Path) -> Option<u64> {
    disk(path).map(|((_, total), _)| total)
}

fn disk(path: &Path) -> Option<((u64, u64), (u64, u64))> {
    let stat = rustix::fs::statvfs(path).ok()?;
    let bytes = |blocks: u64| blocks.saturating_mul(stat.f_frsize);
    Some((
        (bytes(stat.f_bavail), bytes(stat.f_blocks)),
        (stat.f_favail, stat.f_files),
    ))
}

fn pids() -> Option<(u64, u64)> {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // The fourth field of loadavg is running/total tasks, as kubelet's PID stats read it.
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let total: u64 = loadavg
        .split_whitespace()
        .nth(3)?
        .split('/')
        .nth(1)?
        .parse()
        .ok()?;
    Some((total, max))
}

fn percent(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

/// The four conditions for `sample`.
pub fn conditions(sample: &Sample) -> Vec<Condition> {
    let memory = match sample.memory_available_kib {
        Some(kib) if kib < MEMORY_AVAILABLE_MIN_KIB => Condition {
            type_: "MemoryPressure",
            status: "True",
            reason: "KubeletHasInsufficientMemory",
            message: format!(
                "kubelet has insufficient memory available: {} MiB available, below the eviction threshold of {} MiB",
                kib / 1024,
                MEMORY_AVAILABLE_MIN_KIB / 1024
            ),
        },
        _ => Condition {
            type_: "MemoryPressure",
            status: "False",
            reason: "KubeletHasSufficientMemory",
            message: "kubelet has sufficient memory available".into(),
        },
    };
    let disk_short = sample
        .disk
        .and_then(|((available, total), (free, inodes))| {
            let share = |part: u64, whole: u64| part as f64 / whole.max(1) as f64;
            if total > 0 && share(available, total) < DISK_AVAILABLE_MIN {
                Some(format!(
                    "{} of the node's filesystem is free, below the eviction threshold of {}",
                    percent(share(available, total)),
                    percent(DISK_AVAILABLE_MIN)
                ))
            } else if inodes > 0 && share(free, inodes) < INODES_FREE_MIN {
                Some(format!(
                    "{} of the node's inodes are free, below the eviction threshold of {}",
                    percent(share(free, inodes)),
                    percent(INODES_FREE_MIN)
                ))
            } else {
                None
            }
        });
    let disk = match disk_short {
        Some(why) => Condition {
            type_: "DiskPressure",
            status: "True",
            reason: "KubeletHasDiskPressure",
            message: format!("kubelet has disk pressure: {why}"),
        },
        None => Condition {
            type_: "DiskPressure",
            status: "False",
            reason: "KubeletHasNoDiskPressure",
            message: "kubelet has no disk pressure".into(),
        },
    };
    let pids = match sample.pids {
        Some((used, max)) if (max.saturating_sub(used) as f64) < max as f64 * PIDS_FREE_MIN => {
            Condition {
                type_: "PIDPressure",
                status: "True",
                reason: "KubeletHasInsufficientPID",
                message: format!(
                    "kubelet has insufficient PID available: {used} of {max} in use, fewer than {} free",
                    percent(PIDS_FREE_MIN)
                ),
            }
        }
        _ => Condition {
            type_: "PIDPressure",
            status: "False",
            reason: "KubeletHasSufficientPID",
            message: "kubelet has sufficient PID available".into(),
        },
    };
    let ready = match &sample.runtime_problem {
        Some(problem) => Condition {
            type_: "Ready",
            status: "False",
            reason: "KubeletNotReady",
            message: problem.clone(),
        },
        None => Condition {
            type_: "Ready",
            status: "True",
            reason: "KubeletReady",
            message: "kubelet is posting ready status".into(),
        },
    };
    vec![memory, disk, pids, ready]
}

/// The conditions last reported, for [`Settled::settle`].
#[derive(Debug, Default)]
pub struct Settled {
    /// Each pressure condition as reported, and when it was last measured True.
    held: Vec<(Condition, Instant)>,
}

impl Settled {
    /// The conditions to report at `now` for the `measured` ones: a pressure condition stays
    /// True until [`PRESSURE_HOLD`] after it was last measured True, and keeps the words it
    /// had while its status and reason stand. Ready is reported as measured.
    pub fn settle(&mut self, measured: Vec<Condition>, now: Instant) -> Vec<Condition> {
        measured
            .into_iter()
            .map(|condition| {
                if condition.type_ == "Ready" {
                    return condition;
                }
                let Some((held, seen)) = self
                    .held
                    .iter_mut()
                    .find(|(h, _)| h.type_ == condition.type_)
                else {
                    self.held.push((condition.clone(), now));
                    return condition;
                };
                let pressure = condition.status == "True";
                if pressure {
                    *seen = now;
                }
                let holding =
                    !pressure && held.status == "True" && now.duration_since(*seen) < PRESSURE_HOLD;
                if !holding && (held.status != condition.status || held.reason != condition.reason)
                {
                    *held = condition;
                }
                held.clone()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_should_hold_for_the_transition_period_and_keep_its_words() {
        let start = Instant::now();
        let mut settled = Settled::default();
        let mut sample = healthy();
        let pressure_of = |all: Vec<Condition>| {
            all.into_iter()
                .find(|c| c.type_ == "MemoryPressure")
                .unwrap()
        };
        assert_eq!(
            pressure_of(settled.settle(conditions(&sample), start)).status,
            "False"
        );
        sample.memory_available_kib = Some(50 * 1024);
        let first = pressure_of(settled.settle(conditions(&sample), start));
        assert_eq!(first.status, "True");
        // Another figure, the same words.
        sample.memory_available_kib = Some(40 * 1024);
        let later = start + Duration::from_secs(10);
        assert_eq!(
            pressure_of(settled.settle(conditions(&sample), later)),
            first
        );
        // Relieved, but held True for the period after the last pressure.
        sample.memory_available_kib = Some(4 << 20);
        let relieved = later + Duration::from_secs(200);
        assert_eq!(
            pressure_of(settled.settle(conditions(&sample), relieved)).status,
            "True"
        );
        let past = later + PRESSURE_HOLD;
        assert_eq!(
            pressure_of(settled.settle(conditions(&sample), past)).status,
            "False"
        );
    }

    fn healthy() -> Sample {
        Sample {
            memory_available_kib: Some(4 << 20),
            disk: Some(((50 << 30, 100 << 30), (900_000, 1_000_000))),
            pids: Some((500, 4_194_304)),
            runtime_problem: None,
        }
    }

    fn status_of(sample: &Sample, type_: &str) -> Condition {
        conditions(sample)
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn a_healthy_node_should_report_no_pressure_and_ready() {
        let all = conditions(&healthy());
        assert_eq!(
            all.iter().map(|c| (c.type_, c.status)).collect::<Vec<_>>(),
            [
                ("MemoryPressure", "False"),
                ("DiskPressure", "False"),
                ("PIDPressure", "False"),
                ("Ready", "True")
            ]
        );
        assert_eq!(all[3].reason, "KubeletReady");
    }

    #[test]
    fn thresholds_should_be_kubelets_defaults() {
        let mut low_memory = healthy();
        low_memory.memory_available_kib = Some(99 * 1024);
        let memory = status_of(&low_memory, "MemoryPressure");
        assert_eq!(
            (memory.status, memory.reason),
            ("True", "KubeletHasInsufficientMemory")
        );
        assert!(memory.message.contains("99 MiB available"), "{memory:?}");
        low_memory.memory_available_kib = Some(101 * 1024);
        assert_eq!(status_of(&low_memory, "MemoryPressure").status, "False");

        let mut full = healthy();
        full.disk = Some(((9 << 30, 100 << 30), (900_000, 1_000_000)));
        let disk = status_of(&full, "DiskPressure");
        assert_eq!(
            (disk.status, disk.reason),
            ("True", "KubeletHasDiskPressure")
        );
        assert!(
            disk.message.contains("9 % of the node's filesystem"),
            "{disk:?}"
        );
        full.disk = Some(((50 << 30, 100 << 30), (40_000, 1_000_000)));
        assert!(
            status_of(&full, "DiskPressure")
                .message
                .contains("inodes are free")
        );

        let mut crowded = healthy();
        crowded.pids = Some((3_900_000, 4_194_304));
        let pids = status_of(&crowded, "PIDPressure");
        assert_eq!(
            (pids.status, pids.reason),
            ("True", "KubeletHasInsufficientPID")
        );
    }

    #[test]
    fn a_runtime_or_network_not_ready_should_make_the_node_not_ready() {
        let network = api::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "cni plugin not initialized".into(),
        };
        let runtime = api::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            ..api::RuntimeCondition::default()
        };
        let problem = not_ready(&[runtime.clone(), network]);
        assert_eq!(
            problem.as_deref(),
            Some(
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized"
            )
        );
        assert_eq!(not_ready(&[runtime]), None);
        let mut down = healthy();
        down.runtime_problem = problem;
        let ready = status_of(&down, "Ready");
        assert_eq!((ready.status, ready.reason), ("False", "KubeletNotReady"));
    }

    #[test]
    fn this_machine_should_be_measurable() {
        let dir = std::env::temp_dir();
        let ((available, total), _) = disk(&dir).unwrap();
        assert!(total > 0 && available <= total);
        assert!(memory_available_kib().unwrap() > 0);
        let (used, max) = pids().unwrap();
        assert!(used > 0 && max > used);
    }
}
