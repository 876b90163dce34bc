//! One task per pod (kubelet's pod workers): it owns everything about its pod — the latest pod
//! from the API, what the runtime holds for it, back-offs, why containers wait, the status last
//! written — and, woken by a change of either or by a back-off running out, carries out the plan
//! (`plan.rs`), writes the status when it changed, and when the pod is being deleted, stops its
//! containers with their grace period and deletes it from the API (uid-conditional) once nothing
//! runs. A pod the API no longer has is torn down. Nothing here needs the API to keep pods
//! running: with the API gone, crashed containers are still restarted from the last known spec
//! and sources, and status writes wait.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use skiff_client::events::{Note, Recorder};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admission::{self, HostPorts, Rejection};
use super::backoff::Backoff;
use super::ending::{self, Ending};
use super::env::{self, Sources};
use super::hooks::{self, Hook};
use super::observed::{self, PodRuntime, RunState, StatusCache};
use super::plan::{self, Input, Start, Waiting};
use super::probes::{self, Outcome, Probes, Verdict};
use super::pull_secrets;
use super::{config, status, termination, volumes};
use crate::cgroups;
use crate::runtime::{Runtime, RuntimeError};

/// What every pod worker shares.
pub struct Shared {
    /// The API.
    pub client: Client,
    /// The container runtime.
    pub runtime: Arc<dyn Runtime>,
    /// This node's name.
    pub node: String,
    /// This node's address.
    pub node_ip: String,
    /// The runtime's name (`containerd`), for container ids.
    pub runtime_name: String,
    /// Where pod logs go.
    pub logs: PathBuf,
    /// Where pods' volumes live.
    pub pods: PathBuf,
    /// The agent's cgroup, parent of every pod's.
    pub node_slice: String,
    /// Where Events go.
    pub recorder: Recorder,
    /// How often volume files are written again from their sources.
    pub sync_frequency: Duration,
    /// The cluster DNS pods are pointed at.
    pub dns: super::dns::ClusterDns,
    /// The host ports the admitted pods hold.
    pub host_ports: HostPorts,
    /// Whether secret, downwardAPI and projected volumes are tmpfs mounts (always, but in
    /// tests of the agent that cannot mount).
    pub secrets_in_memory: bool,
}

/// What a pod worker is told.
#[derive(Debug)]
pub enum Message {
    /// The pod as the API holds it now.
    Pod(Box<Pod>),
    /// What the runtime held for it when a relist began (at the instant given).
    Runtime(PodRuntime, Instant),
    /// The API no longer has it.
    Gone,
}

/// The shortest grace period a container gets (upstream's `minimumGracePeriodInSeconds`).
const MIN_GRACE: i64 = 2;
/// How soon a failed status write is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// How often emptyDir volumes with a size limit are measured (kubelet's eviction manager's
/// housekeeping period).
const DISK_CHECK_EVERY: Duration = Duration::from_secs(10);
/// Rounds of plan and action per wake-up (a new sandbox, then its containers, ...).
const ROUNDS: usize = 6;
/// How long a postStart hook may run.
const POST_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One pod's worker.
pub struct Worker {
    shared: Arc<Shared>,
    uid: String,
    pod: Option<Pod>,
    runtime: PodRuntime,
    /// Whether the runtime has been read for this pod (until then, nothing is done).
    seen: bool,
    backoff: Backoff,
    image_backoff: Backoff,
    /// Why containers could not start, by name (image, config, create and start errors).
    failures: BTreeMap<String, Waiting>,
    /// The last image pull error of each container, which its back-off message repeats.
    pull_errors: HashMap<String, String>,
    exited_at: HashMap<String, Instant>,
    written: Option<Value>,
    retry_status: bool,
    ips: HashMap<String, String>,
    sources: Sources,
    /// When the volumes' files were last written from their sources.
    volumes_written: Option<Instant>,
    /// When this worker last began reading the runtime itself.
    refreshed_at: Option<Instant>,
    statuses: StatusCache,
    probes: Probes,
    /// Whether the pod was admitted on the node (or found running there).
    admitted: bool,
    /// Why the agent ended the pod (past its deadline, evicted), once it did.
    ended: Option<Ending>,
    /// When the pod's emptyDir volumes were last measured against their limits.
    disk_checked_at: Option<Instant>,
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(MIN_GRACE)
}

fn find_container<'p>(pod: &'p Pod, name: &str, init: bool) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    if init {
        spec.init_containers
            .as_ref()?
            .iter()
            .find(|c| c.name == name)
    } else {
        spec.containers.iter().find(|c| c.name == name)
    }
}

/// Whether a status says the same as another but for its times.
fn same_status(a: &Value, b: &Value) -> bool {
    fn strip(value: &Value) -> Value {
        let mut value = value.clone();
        if let Some(map) = value.as_object_mut() {
            map.remove("startTime");
        }
        if let Some(conditions) = value.get_mut("conditions").and_then(Value::as_array_mut) {
            for condition in conditions.iter_mut().filter_map(Value::as_object_mut) {
                condition.remove("lastTransitionTime");
            }
        }
        value
    }
    strip(a) == strip(b)
}

impl Worker {
    /// A worker for the pod `uid` (`pod`: `None` for runtime objects of a pod the API no longer
    /// has; `runtime`: `None` until the runtime has been read).
    pub fn new(
        shared: Arc<Shared>,
        uid: String,
        pod: Option<Pod>,
        runtime: Option<PodRuntime>,
    ) -> Self {
        Worker {
            shared,
            uid,
            pod,
            seen: runtime.is_some(),
            runtime: runtime.unwrap_or_default(),
            backoff: Backoff::default(),
            image_backoff: Backoff::default(),
            failures: BTreeMap::new(),
            pull_errors: HashMap::new(),
            exited_at: HashMap::new(),
            written: None,
            retry_status: false,
            ips: HashMap::new(),
            sources: Sources::default(),
            volumes_written: None,
            refreshed_at: None,
            statuses: StatusCache::default(),
            probes: Probes::default(),
            admitted: false,
            ended: None,
            disk_checked_at: None,
        }
    }

    /// Runs until the pod is gone (deleted from the API, or torn down) or the inbox closes.
    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Message>) {
        loop {
            if self.sync().await {
                return;
            }
            let wake = self.next_wake();
            tokio::select! {
                message = inbox.recv() => match message {
                    Some(message) => self.apply(message),
                    None => return,
                },
                () = sleep_until(wake) => {}
            }
            while let Ok(message) = inbox.try_recv() {
                self.apply(message);
            }
        }
    }

    fn apply(&mut self, message: Message) {
        match message {
            Message::Pod(pod) => self.pod = Some(*pod),
            Message::Runtime(runtime, taken) => {
                // A relist that began before this worker last read the runtime itself knows
                // less than the worker (it may predate containers the worker just made).
                if self.refreshed_at.is_none_or(|at| taken >= at) {
                    self.runtime = runtime;
                }
                self.seen = true;
            }
            Message::Gone => self.pod = None,
        }
    }

    /// When to look again without being told: a back-off running out, a status to retry.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake: Option<Instant> = self.retry_status.then_some(now + RETRY);
        if let Some(pod) = &self.pod {
            for instance in self
                .runtime
                .instances
                .iter()
                .filter(|i| i.state == RunState::Exited)
            {
                let key = plan::backoff_key(&self.uid, &instance.name);
                let failed = self.exited_at.get(&instance.id).copied().unwrap_or(now);
                if let Some(left) = self.backoff.remaining(&key, failed, now) {
                    let at = now + left;
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            if let Some(at) = self.probes.next_wake() {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            if let Some(at) = self.volumes_due() {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
            if self.ended.is_none() && pod.metadata.deletion_timestamp.is_none() {
                // (A deadline already past ended the pod in this pass, or never applies: a
                // finished pod.)
                if let Some(left) = ending::deadline(pod).and_then(|at| {
                    Duration::try_from(jiff::Timestamp::now().duration_until(at)).ok()
                }) {
                    let at = now + left;
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
                if let Some(at) = self
                    .disk_checked_at
                    .filter(|_| ending::has_limited_empty_dir(pod))
                {
                    let at = at + DISK_CHECK_EVERY;
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                }
            }
            if !self.failures.is_empty() && pod.metadata.deletion_timestamp.is_none() {
                // Image pulls and missing sources are tried again on their own.
                let at = now + Duration::from_secs(5);
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        wake
    }

    fn note(
        &self,
        pod: &Pod,
        type_: &'static str,
        reason: &'static str,
        message: String,
        container: Option<(&str, bool)>,
    ) {
        self.shared.recorder.record(Note {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: self.uid.clone(),
            type_,
            reason,
            message,
            field_path: container.map(|(name, init)| {
                if init {
                    format!("spec.initContainers{{{name}}}")
                } else {
                    format!("spec.containers{{{name}}}")
                }
            }),
            object: None,
        });
    }

    /// Reads what the runtime holds for this pod again.
    async fn refresh(&mut self) -> Result<(), RuntimeError> {
        self.refreshed_at = Some(Instant::now());
        let mut pods = observed::observe(
            self.shared.runtime.as_ref(),
            &self.shared.node,
            Some(&self.uid),
            &mut self.statuses,
        )
        .await?;
        self.runtime = pods.remove(&self.uid).unwrap_or_default();
        Ok(())
    }

    /// One wake-up: act until there is nothing more to do now; `true` when the pod is gone.
    async fn sync(&mut self) -> bool {
        if !self.seen {
            return false;
        }
        let Some(pod) = self.pod.clone() else {
            self.shared.host_ports.release(&self.uid);
            return self.tear_down().await;
        };
        if let Some(gone) = self.admit(&pod).await {
            return gone;
        }
        if pod.metadata.deletion_timestamp.is_none() {
            self.check_ending(&pod).await;
        }
        if pod.metadata.deletion_timestamp.is_none() && self.ended.is_none() {
            self.probe(&pod).await;
        }
        let now = Instant::now();
        for instance in self
            .runtime
            .instances
            .iter()
            .filter(|i| i.state == RunState::Exited)
        {
            self.exited_at.entry(instance.id.clone()).or_insert(now);
        }
        let mut waiting = BTreeMap::new();
        for _ in 0..ROUNDS {
            let exited_at = |id: &str| self.exited_at.get(id).copied();
            let plan = plan::plan(&Input {
                pod: &pod,
                runtime: &self.runtime,
                backoff: &self.backoff,
                exited_at: &exited_at,
                now: Instant::now(),
                ended: self.ended.is_some(),
            });
            waiting.clone_from(&plan.waiting);
            for (name, wait) in &plan.waiting {
                if wait.reason == "CrashLoopBackOff" {
                    let message = format!(
                        "Back-off restarting failed container {name} in pod {}_{}({})",
                        pod.name_any(),
                        pod.namespace().unwrap_or_default(),
                        self.uid
                    );
                    let init = find_container(&pod, name, true).is_some();
                    self.note(&pod, "Warning", "BackOff", message, Some((name, init)));
                }
            }
            let acted = self.carry_out(&pod, &plan).await;
            if !acted {
                break;
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(pod = %pod.name_any(), %error, "reading the pod's containers failed");
                break;
            }
            let now = Instant::now();
            for instance in self
                .runtime
                .instances
                .iter()
                .filter(|i| i.state == RunState::Exited)
            {
                self.exited_at.entry(instance.id.clone()).or_insert(now);
            }
        }
        // Start failures stand until the container runs.
        self.failures.retain(|name, _| {
            !self
                .runtime
                .latest(name)
                .is_some_and(|i| i.state == RunState::Running)
        });
        for (name, failure) in &self.failures {
            waiting
                .entry(name.clone())
                .or_insert_with(|| failure.clone());
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if !deleting && self.volumes_due().is_some_and(|at| at <= Instant::now()) {
            self.resync_volumes(&pod).await;
        }
        let nothing_runs =
            !self.runtime.any_running() && !self.runtime.sandboxes.iter().any(|s| s.ready);
        // Containers this pass started are tracked before the status is written, so one
        // without probes is ready in the same status that says Running, as kubelet's is (a
        // second write a moment later would fail a client's read-then-replace of the pod).
        self.probes.track(&pod, &self.runtime, Instant::now());
        self.write_status(&pod, &waiting, deleting && nothing_runs)
            .await;
        if deleting && nothing_runs {
            return self.finish(&pod).await;
        }
        false
    }

    /// kubelet's admission, once, before the worker makes anything for its pod; a pod that
    /// finished or is being deleted gives its host ports back (kubelet's active pods leave both
    /// out). `Some(gone)` when the pod must not run here: rejected, or finished (its API phase
    /// Succeeded or Failed) before this worker saw anything of it run — such a pod is never
    /// started again, only removed from the API once deleted.
    async fn admit(&mut self, pod: &Pod) -> Option<bool> {
        let finished = status::finished_in_api(pod);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        if self.admitted {
            if finished || deleting {
                self.shared.host_ports.release(&self.uid);
            }
            return None;
        }
        if !self.runtime.sandboxes.is_empty() || !self.runtime.instances.is_empty() {
            // (A finished or departing pod found after a restart holds no port.)
            if !finished && !deleting {
                self.shared.host_ports.hold(&self.uid, pod);
            }
            self.admitted = true;
            return None;
        }
        if finished {
            return Some(deleting && self.finish(pod).await);
        }
        if deleting {
            return None;
        }
        match self.shared.host_ports.admit(&self.uid, pod) {
            Ok(()) => {
                self.admitted = true;
                None
            }
            Err(rejection) => {
                self.reject(pod, &rejection).await;
                Some(false)
            }
        }
    }

    /// Ends the pod if the API says an earlier agent did, its active deadline ran out, or an
    /// emptyDir volume grew past its limit (measured every [`DISK_CHECK_EVERY`]); a new ending
    /// gets an Event.
    async fn check_ending(&mut self, pod: &Pod) {
        if self.ended.is_some() {
            return;
        }
        if let Some(recorded) = ending::recorded(pod) {
            self.ended = Some(recorded);
            return;
        }
        // A finished pod stays as it finished.
        if status::finished_in_api(pod)
            || matches!(
                status::phase(pod, &self.runtime),
                status::Phase::Succeeded | status::Phase::Failed
            )
        {
            return;
        }
        let mut found = ending::past_deadline(pod, jiff::Timestamp::now());
        let now = Instant::now();
        if found.is_none()
            && ending::has_limited_empty_dir(pod)
            && self
                .disk_checked_at
                .is_none_or(|at| now >= at + DISK_CHECK_EVERY)
        {
            self.disk_checked_at = Some(now);
            // A walk of files the pod controls: off the async threads.
            let (pod, pods, uid) = (pod.clone(), self.shared.pods.clone(), self.uid.clone());
            found = tokio::task::spawn_blocking(move || {
                ending::empty_dir_over_limit(&pod, &pods, &uid)
            })
            .await
            .ok()
            .flatten();
        }
        if let Some(ending) = found {
            tracing::info!(pod = %pod.name_any(), reason = ending.reason, message = %ending.message, "ending the pod");
            self.note(
                pod,
                ending.event_type(),
                ending.reason,
                ending.message.clone(),
                None,
            );
            self.ended = Some(ending);
        }
    }

    /// A strategic merge patch of the pod's status.
    async fn patch_status(&self, pod: &Pod, patch: &Value) -> Result<Pod, kube::Error> {
        let pods: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    }

    /// Marks the pod Failed as kubelet's `rejectPod` does, with an Event.
    async fn reject(&mut self, pod: &Pod, rejection: &Rejection) {
        let patch = json!({"metadata": {"uid": self.uid}, "status": {
            "phase": "Failed", "reason": admission::REASON, "message": rejection.status_message()}});
        match self.patch_status(pod, &patch).await {
            Ok(_) => {
                self.retry_status = false;
                tracing::info!(pod = %pod.name_any(), detail = %rejection.detail, "pod rejected: its host ports are taken");
                self.note(
                    pod,
                    "Warning",
                    admission::REASON,
                    rejection.event_message(),
                    None,
                );
            }
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => {
                self.retry_status = false;
            }
            Err(error) => {
                tracing::debug!(pod = %pod.name_any(), %error, "rejecting the pod failed; retrying");
                self.retry_status = true;
            }
        }
    }

    /// Runs the probes that are due; kills instances their liveness or startup probe gave up
    /// on (their restart policy brings them back).
    async fn probe(&mut self, pod: &Pod) {
        let now = Instant::now();
        self.probes.track(pod, &self.runtime, now);
        let due = self.probes.due(pod, now);
        if due.is_empty() {
            return;
        }
        let sandbox = self
            .runtime
            .sandbox()
            .filter(|s| s.ready)
            .map(|s| s.id.clone());
        let pod_ip = match &sandbox {
            Some(id) => self.sandbox_ip(id).await.unwrap_or_default(),
            None => String::new(),
        };
        let runtime = Arc::clone(&self.shared.runtime);
        let results = futures::future::join_all(
            due.iter()
                .map(|d| probes::run(runtime.as_ref(), d, &pod_ip)),
        )
        .await;
        let mut killed = false;
        for (due, (outcome, output)) in due.iter().zip(results) {
            let kind = due.kind.word();
            let message = match outcome {
                Outcome::Passed => None,
                Outcome::Failed => Some(format!("{kind} probe failed: {output}")),
                Outcome::Unknown => Some(format!(
                    "{kind} probe errored and resulted in unknown state: {output}"
                )),
            };
            if let Some(message) = message {
                self.note(
                    pod,
                    "Warning",
                    "Unhealthy",
                    message,
                    Some((&due.container, false)),
                );
            }
            if self.probes.record(due, outcome, Instant::now()) == Verdict::Kill {
                self.note(
                    pod,
                    "Normal",
                    "Killing",
                    format!(
                        "Container {} failed {} probe, will be restarted",
                        due.container,
                        kind.to_lowercase()
                    ),
                    Some((&due.container, false)),
                );
                let grace = due
                    .probe
                    .termination_grace_period_seconds
                    .unwrap_or_else(|| grace_seconds(pod));
                if let Err(error) = runtime.stop_container(&due.instance, grace).await {
                    tracing::warn!(container = %due.container, %error, "killing an unhealthy container failed");
                }
                killed = true;
            }
        }
        if killed && let Err(error) = self.refresh().await {
            tracing::warn!(pod = %pod.name_any(), %error, "reading the pod's containers failed");
        }
    }

    /// Carries out a plan; returns whether anything was done.
    async fn carry_out(&mut self, pod: &Pod, plan: &plan::Plan) -> bool {
        let runtime = Arc::clone(&self.shared.runtime);
        let mut acted = false;
        let grace = grace_seconds(pod);
        let pod_ip = self.known_pod_ip();
        let described = self.described(pod);
        let kills = plan.kill.iter().map(|(id, name)| {
            self.note(
                pod,
                "Normal",
                "Killing",
                format!("Stopping container {name}"),
                Some((name, false)),
            );
            let runtime = Arc::clone(&runtime);
            let container = find_container(pod, name, false).cloned();
            let (pod_ip, described) = (&pod_ip, &described);
            async move {
                // The preStop hook first, within the grace period; the rest of it is the
                // container's to stop in.
                let began = Instant::now();
                let full = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
                let target = hooks::Target {
                    instance: id,
                    pod_ip,
                    pod: described,
                };
                let hook = match &container {
                    Some(container) => {
                        hooks::run(runtime.as_ref(), container, Hook::PreStop, &target, full).await
                    }
                    None => Ok(()),
                };
                let spent = i64::try_from(began.elapsed().as_secs()).unwrap_or(grace);
                let left = (grace - spent).max(MIN_GRACE);
                if let Err(error) = runtime.stop_container(id, left).await {
                    tracing::warn!(container = %name, %error, "stopping a container failed");
                }
                hook.err().map(|message| (name.clone(), message))
            }
        });
        let killed: Vec<Option<(String, String)>> = futures::future::join_all(kills).await;
        acted |= !killed.is_empty();
        for (name, message) in killed.into_iter().flatten() {
            let reason = Hook::PreStop.failed_reason();
            self.note(pod, "Warning", reason, message, Some((&name, false)));
        }
        for (id, name, restarts) in &plan.remove {
            match runtime.remove_container(id).await {
                Ok(()) => {
                    let logs = Path::new(&config::log_directory(&self.shared.logs, pod)).join(name);
                    crate::log_rotation::remove_instance(&logs, *restarts);
                    acted = true;
                }
                Err(error) if error.is_not_found() => {}
                Err(error) => {
                    tracing::warn!(container = %name, %error, "removing a dead container failed");
                }
            }
        }
        for sandbox in &plan.stop_sandboxes {
            if let Err(error) = runtime.stop_sandbox(sandbox).await {
                tracing::warn!(%sandbox, %error, "stopping a pod sandbox failed");
            }
            acted = true;
        }
        if let Some(attempt) = plan.new_sandbox {
            acted |= self.new_sandbox(pod, attempt).await;
        }
        for start in &plan.start {
            if !self.start(pod, start).await {
                break;
            }
            acted = true;
        }
        acted
    }

    async fn new_sandbox(&mut self, pod: &Pod, attempt: u32) -> bool {
        let key = format!("{}/sandbox", self.uid);
        let now = Instant::now();
        if self.image_backoff.waiting(&key, now) {
            return false;
        }
        if attempt > 0 {
            self.note(
                pod,
                "Normal",
                "SandboxChanged",
                "Pod sandbox changed, it will be killed and re-created.".into(),
                None,
            );
        }
        let config = config::sandbox(
            &self.shared.node,
            pod,
            attempt,
            &self.shared.logs,
            &self.shared.node_slice,
            &self.shared.dns,
        );
        if let Err(error) = std::fs::create_dir_all(&config.log_directory) {
            tracing::warn!(%error, "creating the pod's log directory failed");
        }
        match self.shared.runtime.run_sandbox(config).await {
            Ok(_) => true,
            Err(error) => {
                self.image_backoff.next(&key, now);
                self.note(
                    pod,
                    "Warning",
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {error}"),
                    None,
                );
                false
            }
        }
    }

    /// Makes sure the container's image is there; `false` (and why, in `failures`) if not.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &Container,
        init: bool,
        sandbox: &k8s_cri::v1::PodSandboxConfig,
    ) -> bool {
        let image = container.image.clone().unwrap_or_default();
        let name = container.name.as_str();
        let policy = container.image_pull_policy.clone().unwrap_or_else(|| {
            let tag = image.rsplit('/').next().unwrap_or("");
            if image.contains('@') || (tag.contains(':') && !tag.ends_with(":latest")) {
                "IfNotPresent".into()
            } else {
                "Always".into()
            }
        });
        let present = match self.shared.runtime.image_status(&image).await {
            Ok(present) => present.is_some(),
            Err(error) => {
                self.fail(
                    name,
                    "ImageInspectError",
                    format!("Failed to inspect image \"{image}\": {error}"),
                );
                return false;
            }
        };
        if present && policy != "Always" {
            self.note(
                pod,
                "Normal",
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
                Some((name, init)),
            );
            return true;
        }
        if !present && policy == "Never" {
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.note(
                pod,
                "Warning",
                "ErrImageNeverPull",
                message.clone(),
                Some((name, init)),
            );
            self.fail(name, "ErrImageNeverPull", message);
            return false;
        }
        let key = format!("{}_{image}", self.uid);
        let now = Instant::now();
        if self.image_backoff.waiting(&key, now) {
            let previous = self.pull_errors.get(name).cloned().unwrap_or_default();
            self.note(
                pod,
                "Normal",
                "BackOff",
                format!("Back-off pulling image \"{image}\""),
                Some((name, init)),
            );
            self.fail(
                name,
                "ImagePullBackOff",
                format!("Back-off pulling image \"{image}\": ErrImagePull: {previous}"),
            );
            return false;
        }
        self.note(
            pod,
            "Normal",
            "Pulling",
            format!("Pulling image \"{image}\""),
            Some((name, init)),
        );
        let started = std::time::Instant::now();
        match self.pull_with_credentials(pod, &image, sandbox).await {
            Ok(_) => {
                let took = started.elapsed().as_secs_f64();
                self.note(
                    pod,
                    "Normal",
                    "Pulled",
                    format!("Successfully pulled image \"{image}\" in {took:.3}s ({took:.3}s including waiting)."),
                    Some((name, init)),
                );
                true
            }
            Err(error) => {
                self.image_backoff.next(&key, now);
                let message = match &error {
                    RuntimeError::Call { status, .. } => format!(
                        "rpc error: code = {:?} desc = {}",
                        status.code(),
                        status.message()
                    ),
                    other => other.to_string(),
                };
                self.note(
                    pod,
                    "Warning",
                    "Failed",
                    format!("Failed to pull image \"{image}\": {message}"),
                    Some((name, init)),
                );
                self.note(
                    pod,
                    "Warning",
                    "Failed",
                    "Error: ErrImagePull".into(),
                    Some((name, init)),
                );
                self.pull_errors.insert(name.to_string(), message.clone());
                self.fail(name, "ErrImagePull", message);
                false
            }
        }
    }

    /// Pulls `image` as kubelet does: with each credential the pod's pull secrets hold for its
    /// registry in turn until one works (the last error if none does), or without any if they
    /// hold none.
    async fn pull_with_credentials(
        &self,
        pod: &Pod,
        image: &str,
        sandbox: &crate::runtime::api::PodSandboxConfig,
    ) -> Result<String, RuntimeError> {
        let secrets: Vec<k8s_openapi::api::core::v1::Secret> = pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
            .filter_map(|reference| self.sources.secrets.get(&reference.name).cloned().flatten())
            .collect();
        let credentials = pull_secrets::credentials(image, &secrets);
        let runtime = self.shared.runtime.as_ref();
        if credentials.is_empty() {
            return runtime.pull_image(image, None, sandbox).await;
        }
        let mut last = None;
        for auth in &credentials {
            match runtime.pull_image(image, Some(auth), sandbox).await {
                Ok(reference) => return Ok(reference),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or(RuntimeError::Incomplete {
            call: "PullImage",
            what: "a credential",
        }))
    }

    /// A container that could not be made or started: kubelet's `Failed` Event
    /// (`Error: ...`), and the reason its status waits with.
    fn refuse(&mut self, pod: &Pod, container: (&str, bool), reason: &str, message: String) {
        self.note(
            pod,
            "Warning",
            "Failed",
            format!("Error: {message}"),
            Some(container),
        );
        self.fail(container.0, reason, message);
    }

    fn fail(&mut self, container: &str, reason: &str, message: String) {
        self.failures.insert(
            container.to_string(),
            Waiting {
                reason: reason.into(),
                message,
            },
        );
    }

    /// Reads the ConfigMaps and Secrets the pod uses; keeps the last copies when the API cannot
    /// be reached (a container restarted while the control plane is down still gets them).
    async fn read_sources(&mut self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        let (maps, secrets) = env::referenced(pod);
        let config_maps: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &namespace);
        for name in maps {
            match config_maps.get_opt(&name).await {
                Ok(found) => {
                    self.sources.config_maps.insert(name, found);
                }
                Err(error) => {
                    tracing::debug!(%error, configmap = %name, "reading a ConfigMap failed; using the last copy")
                }
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &namespace);
        for name in secrets {
            match secret_api.get_opt(&name).await {
                Ok(found) => {
                    self.sources.secrets.insert(name, found);
                }
                Err(error) => {
                    tracing::debug!(%error, secret = %name, "reading a Secret failed; using the last copy")
                }
            }
        }
        self.request_tokens(pod).await;
        if self.sources.api_service.is_none() {
            let services: Api<Service> = Api::namespaced(self.shared.client.clone(), "default");
            if let Ok(service) = services.get("kubernetes").await {
                self.sources.api_service = Some(service);
            }
        }
    }

    /// With service links (the default), the namespace's Services, which become variables:
    /// read when a container is about to start. A container never starts without them (as
    /// kubelet's, a failed list is an error); the last list stands in once there is one.
    async fn read_services(&mut self, pod: &Pod) -> Result<(), String> {
        if pod.spec.as_ref().and_then(|s| s.enable_service_links) == Some(false) {
            return Ok(());
        }
        let namespace = pod.namespace().unwrap_or_default();
        let services: Api<Service> = Api::namespaced(self.shared.client.clone(), &namespace);
        match services.list(&ListParams::default()).await {
            Ok(list) => {
                self.sources.services = Some(list.items);
                Ok(())
            }
            Err(_) if self.sources.services.is_some() => Ok(()),
            Err(error) => Err(format!(
                "failed to list services when setting up env vars: {error}"
            )),
        }
    }

    /// Asks for the service-account tokens the pod's projected volumes want, bound to the pod,
    /// when there is none yet or the last is 80 % through its life. A failure keeps the last
    /// token while it lasts.
    async fn request_tokens(&mut self, pod: &Pod) {
        let namespace = pod.namespace().unwrap_or_default();
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.shared.client.clone(), &namespace);
        for key in env::tokens_wanted(pod) {
            let now = std::time::Instant::now();
            if let Some(Ok(token)) = self.sources.tokens.get(&key)
                && token.refresh_at > now
            {
                continue;
            }
            let (audience, seconds) = key.clone();
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience]
                    },
                    expiration_seconds: Some(seconds),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(pod.name_any()),
                        uid: Some(self.uid.clone()),
                    }),
                },
                ..TokenRequest::default()
            };
            let fetched = accounts
                .create_token_request(&account, &PostParams::default(), &request)
                .await;
            let entry = match fetched {
                Ok(response) => {
                    let token = response.status.map(|s| s.token).unwrap_or_default();
                    let life = Duration::from_secs(u64::try_from(seconds).unwrap_or(3600));
                    Ok(env::Token {
                        token,
                        refresh_at: now + life.mul_f64(0.8),
                    })
                }
                Err(error) => {
                    tracing::debug!(%error, %account, "requesting a service-account token failed");
                    match self.sources.tokens.remove(&key) {
                        // Still good for a while: keep it, ask again soon.
                        Some(Ok(mut last)) => {
                            last.refresh_at = now + Duration::from_secs(5);
                            Ok(last)
                        }
                        _ => Err(error.to_string()),
                    }
                }
            };
            self.sources.tokens.insert(key, entry);
        }
    }

    /// When the pod's volume files are to be written again: a while after the last time, or
    /// when a token is due for renewal. `None` while no container has been started with them,
    /// and once the pod finished.
    fn volumes_due(&self) -> Option<Instant> {
        let written = self.volumes_written?;
        // A finished pod's files are not kept current: its containers will not run again.
        let finished = self.ended.is_some()
            || self.pod.as_ref().is_some_and(|pod| {
                matches!(
                    status::phase(pod, &self.runtime),
                    status::Phase::Succeeded | status::Phase::Failed
                )
            });
        if finished {
            return None;
        }
        let mut due = written + self.shared.sync_frequency;
        for token in self.sources.tokens.values().flatten() {
            due = due.min(Instant::from_std(token.refresh_at));
        }
        Some(due)
    }

    /// Reads the pod's sources again and rewrites its volumes' files (a changed ConfigMap
    /// reaches running containers; tokens are renewed).
    async fn resync_volumes(&mut self, pod: &Pod) {
        self.read_sources(pod).await;
        let pod_ip = self.known_pod_ip();
        let addresses = volumes::VolumeContext {
            host_ip: &self.shared.node_ip,
            pod_ip: &pod_ip,
            secrets_in_memory: self.shared.secrets_in_memory,
        };
        if let Err(error) =
            volumes::prepare(pod, &self.shared.pods, &self.uid, &self.sources, &addresses)
        {
            tracing::debug!(pod = %pod.name_any(), %error, "refreshing the pod's volumes failed");
        }
        self.volumes_written = Some(Instant::now());
    }

    /// Pulls, creates and starts one container; `false` when it could not (and why is noted).
    async fn start(&mut self, pod: &Pod, start: &Start) -> bool {
        let Some(container) = find_container(pod, &start.name, start.init).cloned() else {
            return false;
        };
        let Some(sandbox) = self.runtime.sandbox().filter(|s| s.ready).cloned() else {
            return false;
        };
        let init = start.init;
        let name = container.name.clone();
        let sandbox_config = config::sandbox(
            &self.shared.node,
            pod,
            sandbox.attempt,
            &self.shared.logs,
            &self.shared.node_slice,
            &self.shared.dns,
        );
        // (The sources first: the image's pull secrets are among them.)
        self.read_sources(pod).await;
        let services = self.read_services(pod).await;
        if !self
            .ensure_image(pod, &container, init, &sandbox_config)
            .await
        {
            return false;
        }
        let pod_ip = self.sandbox_ip(&sandbox.id).await.unwrap_or_default();
        let addresses = volumes::VolumeContext {
            host_ip: &self.shared.node_ip,
            pod_ip: &pod_ip,
            secrets_in_memory: self.shared.secrets_in_memory,
        };
        let prepared = services
            .and_then(|()| {
                volumes::prepare(pod, &self.shared.pods, &self.uid, &self.sources, &addresses)
            })
            .and_then(|paths| volumes::mounts(pod, &container, &paths))
            .and_then(|mounts| {
                env::environment(
                    pod,
                    &container,
                    &self.sources,
                    &self.shared.node_ip,
                    &pod_ip,
                )
                .map(|environment| (environment, mounts))
            });
        let prepared = prepared.and_then(|(environment, mut mounts)| {
            let path = container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| termination::DEFAULT_PATH.into());
            if !path.is_empty() {
                let pod_dir = volumes::pod_directory(&self.shared.pods, &self.uid);
                let file = termination::create_file(&pod_dir, &name, start.restart_count)?;
                mounts.push(crate::runtime::api::Mount {
                    container_path: path,
                    host_path: file.display().to_string(),
                    ..crate::runtime::api::Mount::default()
                });
            }
            Ok((environment, mounts))
        });
        let (environment, mounts) = match prepared {
            Ok(prepared) => {
                if volumes::refreshed(pod) {
                    self.volumes_written = Some(Instant::now());
                }
                prepared
            }
            Err(message) => {
                self.refuse(pod, (&name, init), "CreateContainerConfigError", message);
                return false;
            }
        };
        if start.restart_count > 0 {
            self.backoff
                .next(&plan::backoff_key(&self.uid, &name), Instant::now());
        }
        let config = config::container(
            &self.shared.node,
            pod,
            &container,
            start.restart_count,
            environment,
            mounts,
        );
        let id = match self
            .shared
            .runtime
            .create_container(&sandbox.id, config, sandbox_config)
            .await
        {
            Ok(id) => id,
            Err(error) => {
                let message = error.to_string();
                self.refuse(pod, (&name, init), "CreateContainerError", message);
                return false;
            }
        };
        self.note(
            pod,
            "Normal",
            "Created",
            format!("Created container: {name}"),
            Some((&name, init)),
        );
        if let Err(error) = self.shared.runtime.start_container(&id).await {
            let message = error.to_string();
            self.refuse(pod, (&name, init), "RunContainerError", message);
            return false;
        }
        self.note(
            pod,
            "Normal",
            "Started",
            format!("Started container {name}"),
            Some((&name, init)),
        );
        self.failures.remove(&name);
        let described = self.described(pod);
        let target = hooks::Target {
            instance: &id,
            pod_ip: &pod_ip,
            pod: &described,
        };
        let runtime = Arc::clone(&self.shared.runtime);
        let hook = hooks::run(
            runtime.as_ref(),
            &container,
            Hook::PostStart,
            &target,
            POST_START_TIMEOUT,
        );
        if let Err(message) = hook.await {
            self.note(
                pod,
                "Warning",
                Hook::PostStart.failed_reason(),
                message,
                Some((&name, init)),
            );
            // Killed, as kubelet does; its restart policy decides what comes next.
            if let Err(error) = runtime.stop_container(&id, grace_seconds(pod)).await {
                tracing::warn!(container = %name, %error, "killing a container whose postStart hook failed failed");
            }
        }
        true
    }

    /// `name_namespace(uid)`, as upstream names a pod in its messages.
    fn described(&self, pod: &Pod) -> String {
        format!(
            "{}_{}({})",
            pod.name_any(),
            pod.namespace().unwrap_or_default(),
            self.uid
        )
    }

    /// The pod's IP, if its sandbox's is known.
    fn known_pod_ip(&self) -> String {
        self.runtime
            .sandbox()
            .and_then(|s| self.ips.get(&s.id).cloned())
            .unwrap_or_default()
    }

    async fn sandbox_ip(&mut self, id: &str) -> Option<String> {
        if let Some(ip) = self.ips.get(id) {
            return Some(ip.clone());
        }
        // A host-network pod has the node's address (the runtime reports none for it).
        if self
            .pod
            .as_ref()
            .and_then(|p| p.spec.as_ref()?.host_network)
            .unwrap_or(false)
        {
            let ip = self.shared.node_ip.clone();
            self.ips.insert(id.to_string(), ip.clone());
            return Some(ip);
        }
        let status = self.shared.runtime.sandbox_status(id).await.ok()?;
        let ip = status.network.map(|n| n.ip).filter(|ip| !ip.is_empty())?;
        self.ips.insert(id.to_string(), ip.clone());
        Some(ip)
    }

    /// Writes the pod's status if it changed since the last write.
    async fn write_status(
        &mut self,
        pod: &Pod,
        waiting: &BTreeMap<String, Waiting>,
        terminal: bool,
    ) {
        let sandbox = self
            .runtime
            .sandbox()
            .filter(|s| s.ready)
            .map(|s| s.id.clone());
        let pod_ip = match &sandbox {
            Some(id) => self.sandbox_ip(id).await,
            None => None,
        };
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let context = status::Context {
            runtime_name: &self.shared.runtime_name,
            host_ip: &self.shared.node_ip,
            pod_ip: pod_ip.as_deref(),
            waiting,
            probes: &self.probes,
            now: &now,
            ended: self.ended.as_ref(),
        };
        let value = status::status(pod, &self.runtime, &context, terminal);
        if self
            .written
            .as_ref()
            .is_some_and(|w| same_status(w, &value))
        {
            self.retry_status = false;
            return;
        }
        let patch = json!({"metadata": {"uid": self.uid}, "status": value});
        match self.patch_status(pod, &patch).await {
            Ok(_) => {
                self.written = Some(value);
                self.retry_status = false;
            }
            Err(kube::Error::Api(status)) if status.code == 404 => self.retry_status = false,
            // The pod of this name is another one now (deleted and created again): this
            // worker's status is not its to write.
            Err(kube::Error::Api(status))
                if status.code == 422 && status.message.contains("metadata.uid") =>
            {
                self.retry_status = false
            }
            Err(error) => {
                tracing::debug!(pod = %pod.name_any(), %error, "writing the pod's status failed; retrying");
                self.retry_status = true;
            }
        }
    }

    /// Removes the pod's containers, sandboxes, volumes and cgroup from the node.
    async fn clean_up(&mut self) {
        let runtime = Arc::clone(&self.shared.runtime);
        for instance in &self.runtime.instances {
            if let Err(error) = runtime.remove_container(&instance.id).await
                && !error.is_not_found()
            {
                tracing::warn!(container = %instance.id, %error, "removing a container failed");
            }
        }
        for sandbox in &self.runtime.sandboxes {
            let _ = runtime.stop_sandbox(&sandbox.id).await;
            if let Err(error) = runtime.remove_sandbox(&sandbox.id).await
                && !error.is_not_found()
            {
                tracing::warn!(sandbox = %sandbox.id, %error, "removing a pod sandbox failed");
            }
        }
        let pod_dir = volumes::pod_directory(&self.shared.pods, &self.uid);
        super::tmpfs::unmount_below(&pod_dir);
        let _ = std::fs::remove_dir_all(pod_dir);
        // Its logs too (`NAMESPACE_NAME_UID`), as kubelet removes a removed pod's.
        let suffix = format!("_{}", self.uid);
        for entry in std::fs::read_dir(&self.shared.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        cgroups::remove_pod(&self.shared.node_slice, &self.uid);
        self.backoff.forget(&self.uid);
        self.image_backoff.forget(&self.uid);
    }

    /// A pod being deleted whose containers all stopped: clean up, then delete it from the API
    /// (grace 0, conditional on its uid). `true` once it is gone.
    async fn finish(&mut self, pod: &Pod) -> bool {
        self.clean_up().await;
        let pods: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name_any(), &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => true,
            Err(error) => {
                tracing::debug!(pod = %pod.name_any(), %error, "deleting the pod failed; retrying");
                self.retry_status = true;
                false
            }
        }
    }

    /// Runtime objects of a pod the API no longer has: stop and remove them all.
    async fn tear_down(&mut self) -> bool {
        let runtime = Arc::clone(&self.shared.runtime);
        for instance in self
            .runtime
            .instances
            .iter()
            .filter(|i| i.state == RunState::Running)
        {
            let _ = runtime.stop_container(&instance.id, MIN_GRACE).await;
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(pod = %self.uid, %error, "reading a removed pod's containers failed");
            return false;
        }
        self.clean_up().await;
        tracing::info!(pod = %self.uid, name = %self.runtime.name, "removed the containers of a pod the API no longer has");
        true
    }
}

impl Drop for Worker {
    /// A pod whose worker ends (deleted, torn down) gives its host ports back.
    fn drop(&mut self) {
        self.shared.host_ports.release(&self.uid);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
