//! What to do for one pod, pure (kubelet's `computePodActions`): from the pod as the API holds
//! it and what the runtime holds for it, decide whether its sandbox must be (re)made or
//! stopped, which container starts next (init containers one at a time, in order, then every
//! app container), which instances must be killed, and why containers wait (crash back-off).
//! The worker carries the plan out and asks again; every decision is made on a fresh look at
//! the runtime, so a restarted agent simply continues.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::observed::{Instance, PodRuntime, RunState};
use super::status::{self, Phase};

/// A container to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// Its name.
    pub name: String,
    /// Whether it is an init container.
    pub init: bool,
    /// The restart count the new instance carries.
    pub restart_count: u32,
}

/// Why a container is not running, for its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    /// Upstream's reason (`CrashLoopBackOff`, ...).
    pub reason: String,
    /// What a person reads.
    pub message: String,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Sandboxes to stop (with every container in them).
    pub stop_sandboxes: Vec<String>,
    /// Make a new sandbox, with this attempt number.
    pub new_sandbox: Option<u32>,
    /// Running instances to kill: (id, container name).
    pub kill: Vec<(String, String)>,
    /// Containers to start, in order.
    pub start: Vec<Start>,
    /// Containers held back, by name.
    pub waiting: BTreeMap<String, Waiting>,
    /// Dead instances to remove: (id, container name, restart count).
    pub remove: Vec<(String, String, u32)>,
}

/// What the plan is made from.
pub struct Input<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// What the runtime holds for it.
    pub runtime: &'a PodRuntime,
    /// Crash back-off, keyed `{uid}/{container}`.
    pub backoff: &'a Backoff,
    /// When the agent first saw an instance (by id) exited.
    pub exited_at: &'a dyn Fn(&str) -> Option<Instant>,
    /// Now.
    pub now: Instant,
    /// Whether the agent ended the pod (past its deadline, evicted): it runs no more.
    pub ended: bool,
}

/// The key of a container's back-off.
pub fn backoff_key(uid: &str, container: &str) -> String {
    format!("{uid}/{container}")
}

/// Whether an init container keeps running beside the app containers (a sidecar).
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

impl Input<'_> {
    fn restart_policy(&self) -> &str {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
    }

    /// The newest instance of `name` in `sandbox`.
    fn current<'r>(&'r self, sandbox: &str, name: &str) -> Option<&'r Instance> {
        self.runtime
            .instances
            .iter()
            .find(|i| i.sandbox == sandbox && i.name == name)
    }

    fn next_restart_count(&self, name: &str) -> u32 {
        self.runtime
            .latest(name)
            .map_or(0, |i| i.restart_count.saturating_add(1))
    }

    /// Restart `instance` (exited) now, or say how long it waits.
    fn restart(&self, plan: &mut Plan, instance: &Instance, init: bool) {
        let key = backoff_key(&self.pod.uid().unwrap_or_default(), &instance.name);
        let failed = (self.exited_at)(&instance.id).unwrap_or(self.now);
        match self.backoff.remaining(&key, failed, self.now) {
            Some(_) => {
                let delay = self.backoff.delay(&key).unwrap_or(Duration::ZERO);
                plan.waiting.insert(
                    instance.name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {} restarting failed container={} pod={}_{}({})",
                            go_duration(delay),
                            instance.name,
                            self.pod.name_any(),
                            self.pod.namespace().unwrap_or_default(),
                            self.pod.uid().unwrap_or_default()
                        ),
                    },
                );
            }
            None => plan.start.push(Start {
                name: instance.name.clone(),
                init,
                restart_count: self.next_restart_count(&instance.name),
            }),
        }
    }
}

/// A duration as Go prints it (`10s`, `2m40s`, `5m0s`), as back-off messages show it.
pub fn go_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        format!("{seconds}s")
    } else {
        format!("{}m{}s", seconds / 60, seconds % 60)
    }
}

/// Kills every running instance and stops every ready sandbox.
fn stop_everything(input: &Input<'_>, plan: &mut Plan) {
    for instance in input
        .runtime
        .instances
        .iter()
        .filter(|i| matches!(i.state, RunState::Running | RunState::Created))
    {
        plan.kill.push((instance.id.clone(), instance.name.clone()));
    }
    for sandbox in input.runtime.sandboxes.iter().filter(|s| s.ready) {
        plan.stop_sandboxes.push(sandbox.id.clone());
    }
}

/// kubelet's container garbage collection (`MaxPerPodContainer` 1): of each container's
/// exited instances only the newest is kept (for its status and `logs --previous`); older
/// ones go with their logs, so a container that keeps crashing does not pile them up.
fn dead_beyond_the_newest(runtime: &PodRuntime) -> Vec<(String, String, u32)> {
    let mut seen = std::collections::HashSet::new();
    runtime
        .instances
        .iter()
        .filter(|i| i.state == RunState::Exited)
        .filter(|i| !seen.insert(i.name.as_str()))
        .map(|i| (i.id.clone(), i.name.clone(), i.restart_count))
        .collect()
}

/// What to do for the pod now.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = input.pod.spec.as_ref() else {
        return plan;
    };
    if input.pod.metadata.deletion_timestamp.is_some() {
        stop_everything(input, &mut plan);
        return plan;
    }
    let phase = status::phase(input.pod, input.runtime);
    if input.ended || matches!(phase, Phase::Succeeded | Phase::Failed) {
        // A finished pod keeps its containers (for their logs) but gives back its sandbox.
        stop_everything(input, &mut plan);
        return plan;
    }
    let Some(sandbox) = input.runtime.sandbox().filter(|s| s.ready) else {
        // No sandbox, or it died: start over in a new one (what ran before is killed).
        stop_everything(input, &mut plan);
        plan.new_sandbox = Some(input.runtime.sandbox().map_or(0, |s| s.attempt + 1));
        return plan;
    };
    plan.remove = dead_beyond_the_newest(input.runtime);
    // Instances of older sandboxes that still run are stopped.
    for instance in input.runtime.instances.iter().filter(|i| {
        i.sandbox != sandbox.id && matches!(i.state, RunState::Running | RunState::Created)
    }) {
        plan.kill.push((instance.id.clone(), instance.name.clone()));
    }
    let policy = input.restart_policy();
    for init in spec.init_containers.iter().flatten() {
        let sidecar = is_sidecar(init);
        match input.current(&sandbox.id, &init.name) {
            None => {
                plan.start.push(Start {
                    name: init.name.clone(),
                    init: true,
                    restart_count: input.next_restart_count(&init.name),
                });
                return plan;
            }
            Some(instance) => match instance.state {
                RunState::Running if sidecar => {}
                RunState::Running | RunState::Created | RunState::Unknown => return plan,
                RunState::Exited if !sidecar && instance.exit_code == 0 => {}
                RunState::Exited => {
                    if !sidecar && policy == "Never" {
                        return plan;
                    }
                    input.restart(&mut plan, instance, true);
                    return plan;
                }
            },
        }
    }
    for container in &spec.containers {
        match input.current(&sandbox.id, &container.name) {
            None => plan.start.push(Start {
                name: container.name.clone(),
                init: false,
                restart_count: input.next_restart_count(&container.name),
            }),
            Some(instance) if instance.state == RunState::Exited => {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => instance.exit_code != 0,
                    _ => true,
                };
                if restart {
                    input.restart(&mut plan, instance, false);
                }
            }
            Some(_) => {}
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str, name: &str, restart_count: u32, state: RunState) -> Instance {
        Instance {
            id: id.into(),
            sandbox: "s".into(),
            name: name.into(),
            restart_count,
            state,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 1,
            reason: String::new(),
            message: String::new(),
            image: String::new(),
            image_ref: String::new(),
        }
    }

    #[test]
    fn only_the_newest_dead_instance_of_each_container_should_be_kept() {
        let runtime = PodRuntime {
            // Newest first, as the runtime is read.
            instances: vec![
                instance("c3", "crashing", 3, RunState::Running),
                instance("c2", "crashing", 2, RunState::Exited),
                instance("c1", "crashing", 1, RunState::Exited),
                instance("c0", "crashing", 0, RunState::Exited),
                instance("i0", "init", 0, RunState::Exited),
            ],
            ..PodRuntime::default()
        };
        assert_eq!(
            dead_beyond_the_newest(&runtime),
            [
                ("c1".to_string(), "crashing".to_string(), 1),
                ("c0".to_string(), "crashing".to_string(), 0)
            ]
        );
    }
}
