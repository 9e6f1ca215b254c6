//! Running one pod: volumes, init and app containers as host processes in private mount
//! namespaces, restart policy with back-off, status reporting and graceful deletion.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
    ServiceAccount,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::Node;
use crate::process::{check, isolate_with};

/// One host top-level entry mirrored into the shared container root.
#[derive(Clone, Debug)]
pub struct RootEntry {
    name: String,
    is_dir: bool,
}

/// Creates the shared container root: a mount point (or symlink) for each top-level
/// entry of the host's `/`. Each container bind-mounts the host entries onto these in
/// its own mount namespace and chroots into it, so that volume mount points at new
/// top-level paths (`/data`) never appear on the host.
pub fn prepare_rootfs(rootfs: &Path) -> Result<Vec<RootEntry>> {
    std::fs::create_dir_all(rootfs)?;
    let mut entries = Vec::new();
    for e in std::fs::read_dir("/")? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        let ft = e.file_type()?;
        let target = rootfs.join(&name);
        if ft.is_symlink() {
            let link = std::fs::read_link(e.path())?;
            if std::fs::symlink_metadata(&target).is_err() {
                std::os::unix::fs::symlink(link, &target)?;
            }
        } else if ft.is_dir() {
            std::fs::create_dir_all(&target)?;
            entries.push(RootEntry { name, is_dir: true });
        } else if ft.is_file() {
            if !target.exists() {
                std::fs::File::create(&target)?;
            }
            entries.push(RootEntry {
                name,
                is_dir: false,
            });
        }
    }
    Ok(entries)
}

#[derive(Clone, Debug)]
enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started: DateTime<Utc>,
    },
    Terminated {
        code: i32,
        reason: String,
        message: String,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    },
}

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl CState {
    fn to_json(&self) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if !message.is_empty() {
                    w["message"] = json!(message);
                }
                json!({"waiting": w})
            }
            CState::Running { started } => json!({"running": {"startedAt": ts(started)}}),
            CState::Terminated {
                code,
                reason,
                message,
                started,
                finished,
            } => {
                let mut t = json!({"exitCode": code, "reason": reason, "startedAt": ts(started), "finishedAt": ts(finished)});
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                json!({"terminated": t})
            }
        }
    }
}

struct Ctr {
    name: String,
    image: String,
    init: bool,
    state: CState,
    last: Option<CState>,
    restarts: i32,
    pid: Option<i32>,
    started_once: bool,
    /// Set for exec: the environment and working directory of the running instance.
    env: Vec<(String, String)>,
    workdir: String,
}

/// A running container instance: (pid, environment, working directory).
pub(crate) type RunningInstance = (i32, Vec<(String, String)>, String);

/// A pod as the node runs it.
pub struct PodRuntime {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    dir: PathBuf,
    ctrs: Mutex<Vec<Ctr>>,
    handles: Mutex<Vec<String>>,
    terminate: watch::Sender<Option<i64>>,
    final_phase: Mutex<Option<String>>,
    initialized: AtomicBool,
    start_time: DateTime<Utc>,
    report_lock: tokio::sync::Mutex<()>,
}

impl PodRuntime {
    pub fn new(node: &Node, pod: &Pod) -> Arc<PodRuntime> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut ctrs = Vec::new();
        let waiting = || CState::Waiting {
            reason: default_waiting_reason(&spec).into(),
            message: String::new(),
        };
        for c in spec.init_containers.iter().flatten() {
            ctrs.push(Ctr::new(c, true, waiting()));
        }
        for c in &spec.containers {
            ctrs.push(Ctr::new(c, false, waiting()));
        }
        let (tx, _) = watch::channel(None);
        Arc::new(PodRuntime {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            dir: node.cfg.root.join("pods").join(&uid),
            uid,
            ctrs: Mutex::new(ctrs),
            handles: Mutex::new(Vec::new()),
            terminate: tx,
            final_phase: Mutex::new(None),
            initialized: AtomicBool::new(false),
            start_time: Utc::now(),
            report_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn request_termination(&self, grace: Option<i64>) {
        let grace = grace.unwrap_or(30);
        self.terminate.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(grace);
                true
            } else {
                false
            }
        });
    }

    fn terminating(&self) -> bool {
        self.terminate.borrow().is_some()
    }

    async fn wait_terminate(&self) -> i64 {
        let mut rx = self.terminate.subscribe();
        loop {
            if let Some(g) = *rx.borrow_and_update() {
                return g;
            }
            if rx.changed().await.is_err() {
                return 0;
            }
        }
    }

    /// Sleeps, returning early (true) when termination is requested.
    async fn sleep_or_terminate(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.wait_terminate() => true,
        }
    }

    pub(crate) fn force_kill(&self) {
        self.request_termination(Some(0));
        for g in self.process_groups() {
            crate::process::kill_group(g, libc::SIGKILL);
        }
    }

    pub(crate) fn process_groups(&self) -> Vec<i32> {
        self.ctrs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| c.pid)
            .collect()
    }

    pub(crate) fn pids(&self) -> Vec<i32> {
        self.process_groups()
    }

    pub(crate) fn uses_any(&self, handles: &[String]) -> bool {
        self.handles
            .lock()
            .unwrap()
            .iter()
            .any(|h| handles.contains(h))
    }

    fn log_dir(&self, ctr: &str) -> PathBuf {
        self.dir.join("logs").join(ctr)
    }

    /// The log file of a container (current or previous instance) and whether that
    /// instance is still running.
    pub(crate) fn log_file(&self, ctr: &str, previous: bool) -> Result<(PathBuf, bool), String> {
        let ctrs = self.ctrs.lock().unwrap();
        let c = ctrs
            .iter()
            .find(|c| c.name == ctr)
            .ok_or_else(|| format!("container {ctr} is not valid for pod {}", self.name))?;
        if previous {
            if c.restarts == 0 || c.last.is_none() {
                return Err(format!(
                    "previous terminated container \"{ctr}\" in pod \"{}\" not found",
                    self.name
                ));
            }
            return Ok((
                self.log_dir(ctr).join(format!("{}.log", c.restarts - 1)),
                false,
            ));
        }
        if !c.started_once {
            let reason = match &c.state {
                CState::Waiting { reason, .. } => reason.clone(),
                _ => "ContainerCreating".into(),
            };
            return Err(format!(
                "container \"{ctr}\" in pod \"{}\" is waiting to start: {reason}",
                self.name
            ));
        }
        let running = matches!(c.state, CState::Running { .. });
        Ok((
            self.log_dir(ctr).join(format!("{}.log", c.restarts)),
            running,
        ))
    }

    /// The running instance of a container: (pid, env, working dir).
    pub(crate) fn running(&self, ctr: &str) -> Result<RunningInstance, String> {
        let ctrs = self.ctrs.lock().unwrap();
        let c = ctrs
            .iter()
            .find(|c| c.name == ctr)
            .ok_or_else(|| format!("container {ctr} is not valid for pod {}", self.name))?;
        match (c.pid, &c.state) {
            (Some(pid), CState::Running { .. }) => Ok((pid, c.env.clone(), c.workdir.clone())),
            _ => Err(format!(
                "container {ctr} in pod {} is not running",
                self.name
            )),
        }
    }

    pub(crate) fn default_container(&self) -> Option<String> {
        self.ctrs
            .lock()
            .unwrap()
            .iter()
            .find(|c| !c.init)
            .map(|c| c.name.clone())
    }

    fn set_state(&self, idx: usize, state: CState) {
        let mut ctrs = self.ctrs.lock().unwrap();
        ctrs[idx].set(state);
    }

    /// Records the end of a container instance (or its failure to start).
    fn terminated(&self, idx: usize, st: CState) {
        let mut ctrs = self.ctrs.lock().unwrap();
        let c = &mut ctrs[idx];
        c.pid = None;
        c.started_once = true;
        c.set(st);
    }

    fn status_json(&self, spec_restart: &str) -> Value {
        let ctrs = self.ctrs.lock().unwrap();
        let initialized = self.initialized.load(Ordering::SeqCst);
        let status_of = |c: &Ctr| {
            let ready = matches!(c.state, CState::Running { .. }) && !c.init;
            let mut s = json!({
                "name": c.name, "image": c.image, "imageID": format!("sim://{}", c.image),
                "ready": ready, "restartCount": c.restarts, "state": c.state.to_json(),
                "started": matches!(c.state, CState::Running { .. }),
            });
            if let Some(pid) = c.pid {
                s["containerID"] = json!(format!("sim://{pid}"));
            }
            match &c.last {
                Some(l) => s["lastState"] = l.to_json(),
                None => s["lastState"] = json!({}),
            }
            s
        };
        let init: Vec<Value> = ctrs.iter().filter(|c| c.init).map(status_of).collect();
        let main: Vec<Value> = ctrs.iter().filter(|c| !c.init).map(status_of).collect();
        let all_running = ctrs
            .iter()
            .filter(|c| !c.init)
            .all(|c| matches!(c.state, CState::Running { .. }));
        let any_started = ctrs.iter().filter(|c| !c.init).any(|c| c.started_once);
        let final_phase = self.final_phase.lock().unwrap().clone();
        let phase = match &final_phase {
            Some(p) => p.clone(),
            None if initialized && any_started => "Running".to_string(),
            None => "Pending".to_string(),
        };
        let _ = spec_restart;
        let now = ts(&Utc::now());
        let cond = |t: &str, ok: bool, reason: Option<&str>| {
            let mut c = json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
            if let Some(r) = reason {
                c["reason"] = json!(r);
            }
            c
        };
        let done = final_phase.is_some();
        let ready = all_running && initialized && !done;
        let not_ready_reason = if done {
            Some("PodCompleted")
        } else if ready {
            None
        } else {
            Some("ContainersNotReady")
        };
        json!({
            "phase": phase,
            "conditions": [
                cond("Initialized", initialized, if initialized { None } else { Some("ContainersNotInitialized") }),
                cond("Ready", ready, not_ready_reason),
                cond("ContainersReady", ready, not_ready_reason),
                cond("PodScheduled", true, None),
            ],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": ts(&self.start_time),
            "initContainerStatuses": init,
            "containerStatuses": main,
        })
    }

    async fn report(&self, node: &Node, restart_policy: &str) {
        let _g = self.report_lock.lock().await;
        let status = self.status_json(restart_policy);
        let api: Api<Pod> = Api::namespaced(node.cfg.client.clone(), &self.namespace);
        let patch = Patch::Merge(json!({"metadata": {"uid": self.uid}, "status": status}));
        if let Err(e) = api
            .patch_status(&self.name, &PatchParams::default(), &patch)
            .await
        {
            tracing::debug!(pod = %self.name, "status update: {e}");
        }
    }
}

impl Ctr {
    fn new(c: &Container, init: bool, state: CState) -> Ctr {
        Ctr {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            init,
            state,
            last: None,
            restarts: 0,
            pid: None,
            started_once: false,
            env: Vec::new(),
            workdir: "/".into(),
        }
    }
}

/// What a kubelet reports for containers that have not started: `PodInitializing` in a
/// pod with init containers, else `ContainerCreating`.
fn default_waiting_reason(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    }
}

impl Ctr {
    /// Changes the state; a termination that is left (for a back-off or a restart)
    /// becomes the lastState, as a kubelet reports it.
    fn set(&mut self, state: CState) {
        let old = std::mem::replace(&mut self.state, state);
        if matches!(old, CState::Terminated { .. })
            && !matches!(self.state, CState::Terminated { .. })
        {
            self.last = Some(old);
        }
    }
}

/// Is this image Coffer's own (`coffer`, `*/coffer`, any tag or digest)?
pub fn is_coffer_image(image: &str) -> bool {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo = last.split(':').next().unwrap_or(last);
    repo == "coffer"
}

/// Where a pod volume comes from on the host.
#[derive(Clone, Debug)]
struct VolSource {
    path: PathBuf,
    block: bool,
}

struct Mount {
    src: PathBuf,
    dst: String,
    read_only: bool,
    file: bool,
}

struct Launch {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: String,
    mounts: Vec<Mount>,
    hostname: String,
}

/// Drives one pod from start to its final deletion.
pub async fn run_pod(node: Arc<Node>, rt: Arc<PodRuntime>, pod: Pod) {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let _ = std::fs::create_dir_all(&rt.dir);
    rt.report(&node, &policy).await;

    let vols = loop {
        if rt.terminating() {
            break None;
        }
        match prepare_volumes(&node, &rt, &pod).await {
            Ok(v) => break Some(Arc::new(v)),
            Err(e) => {
                let msg = format!("{e:#}");
                {
                    let mut ctrs = rt.ctrs.lock().unwrap();
                    for c in ctrs.iter_mut() {
                        c.set(CState::Waiting {
                            reason: default_waiting_reason(&spec).into(),
                            message: msg.clone(),
                        });
                    }
                }
                rt.report(&node, &policy).await;
                if rt.sleep_or_terminate(Duration::from_millis(500)).await {
                    break None;
                }
            }
        }
    };

    let work = vols.map(|vols| {
        let (node, rt, pod, policy) = (node.clone(), rt.clone(), pod.clone(), policy.clone());
        tokio::spawn(async move { run_containers(&node, &rt, &pod, &policy, vols).await })
    });

    // Termination: SIGTERM, grace period, SIGKILL, then the final delete.
    let grace = rt.wait_terminate().await;
    let groups = rt.process_groups();
    for g in &groups {
        crate::process::kill_group(*g, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
    while !rt.process_groups().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for g in rt.process_groups() {
        crate::process::kill_group(g, libc::SIGKILL);
    }
    let wait_until = Instant::now() + Duration::from_secs(5);
    while !rt.process_groups().is_empty() && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some(work) = work {
        let _ = tokio::time::timeout(Duration::from_secs(5), work).await;
    }
    final_delete(&node, &pod).await;
    let _ = std::fs::remove_dir_all(&rt.dir);
}

/// Deletes the pod object for good (gracePeriodSeconds=0), as the kubelet does once
/// every container has stopped.
pub async fn final_delete(node: &Node, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(
        node.cfg.client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or("default"),
    );
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(e) = api
        .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
        .await
    {
        tracing::debug!("final delete of pod: {e}");
    }
}

async fn run_containers(
    node: &Arc<Node>,
    rt: &Arc<PodRuntime>,
    pod: &Pod,
    policy: &str,
    vols: Arc<HashMap<String, VolSource>>,
) {
    let spec = pod.spec.clone().unwrap_or_default();
    let n_init = spec.init_containers.as_ref().map(|v| v.len()).unwrap_or(0);
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let mut backoff = Duration::from_secs(1);
        loop {
            if rt.terminating() {
                return;
            }
            let code = match build_launch(node, rt, pod, c, &vols).await {
                Ok(l) => run_instance(node, rt, i, l, policy).await,
                Err(e) => {
                    rt.set_state(
                        i,
                        CState::Waiting {
                            reason: "CreateContainerConfigError".into(),
                            message: format!("{e:#}"),
                        },
                    );
                    rt.report(node, policy).await;
                    if rt.sleep_or_terminate(Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            };
            if code == 0 || rt.terminating() {
                break;
            }
            if policy == "Never" {
                *rt.final_phase.lock().unwrap() = Some("Failed".into());
                rt.report(node, policy).await;
                return;
            }
            if !back_off(node, rt, i, policy, &mut backoff).await {
                return;
            }
        }
    }
    rt.initialized.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for (j, c) in spec.containers.iter().enumerate() {
        let (node, rt, pod, c, vols, policy) = (
            node.clone(),
            rt.clone(),
            pod.clone(),
            c.clone(),
            vols.clone(),
            policy.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            container_loop(&node, &rt, &pod, n_init + j, &c, &vols, &policy).await
        }));
    }
    let results = futures::future::join_all(tasks).await;
    if rt.terminating() {
        return;
    }
    let codes: Vec<i32> = results.into_iter().map(|r| r.unwrap_or(1)).collect();
    let phase = if codes.iter().all(|c| *c == 0) {
        "Succeeded"
    } else {
        "Failed"
    };
    *rt.final_phase.lock().unwrap() = Some(phase.into());
    rt.report(node, policy).await;
}

/// Shows CrashLoopBackOff and waits; false if termination was requested meanwhile.
async fn back_off(
    node: &Node,
    rt: &PodRuntime,
    idx: usize,
    policy: &str,
    backoff: &mut Duration,
) -> bool {
    let name = rt.ctrs.lock().unwrap()[idx].name.clone();
    rt.set_state(
        idx,
        CState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: format!(
                "back-off {}s restarting failed container={name} pod={}",
                backoff.as_secs(),
                rt.name
            ),
        },
    );
    rt.report(node, policy).await;
    if rt.sleep_or_terminate(*backoff).await {
        return false;
    }
    *backoff = (*backoff * 2).min(Duration::from_secs(20));
    rt.ctrs.lock().unwrap()[idx].restarts += 1;
    true
}

/// Runs a container per the restart policy; returns the last exit code.
async fn container_loop(
    node: &Arc<Node>,
    rt: &Arc<PodRuntime>,
    pod: &Pod,
    idx: usize,
    c: &Container,
    vols: &HashMap<String, VolSource>,
    policy: &str,
) -> i32 {
    let mut backoff = Duration::from_secs(1);
    loop {
        if rt.terminating() {
            return 0;
        }
        let launch = match build_launch(node, rt, pod, c, vols).await {
            Ok(l) => l,
            Err(e) => {
                let reason = if e.to_string().contains("no known entrypoint") {
                    "CreateContainerError"
                } else {
                    "CreateContainerConfigError"
                };
                rt.set_state(
                    idx,
                    CState::Waiting {
                        reason: reason.into(),
                        message: format!("{e:#}"),
                    },
                );
                rt.report(node, policy).await;
                if rt.sleep_or_terminate(Duration::from_secs(2)).await {
                    return 0;
                }
                continue;
            }
        };
        let began = Instant::now();
        let code = run_instance(node, rt, idx, launch, policy).await;
        if rt.terminating() {
            return code;
        }
        let restart = match policy {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if !restart {
            return code;
        }
        if began.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        if !back_off(node, rt, idx, policy, &mut backoff).await {
            return code;
        }
    }
}

/// Starts one instance of a container and waits for it to exit; returns its exit code.
async fn run_instance(
    node: &Node,
    rt: &PodRuntime,
    idx: usize,
    launch: Launch,
    policy: &str,
) -> i32 {
    let (name, restarts) = {
        let ctrs = rt.ctrs.lock().unwrap();
        (ctrs[idx].name.clone(), ctrs[idx].restarts)
    };
    let log_dir = rt.log_dir(&name);
    let _ = std::fs::create_dir_all(&log_dir);
    let log_path = log_dir.join(format!("{restarts}.log"));
    let started = Utc::now();
    let spawned = spawn_container(node, &launch, &log_path);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::write(&log_path, b"");
            let finished = Utc::now();
            let st = CState::Terminated {
                code: 128,
                reason: "StartError".into(),
                message: format!("{e:#}"),
                started,
                finished,
            };
            rt.terminated(idx, st);
            rt.report(node, policy).await;
            return 128;
        }
    };
    let pid = child.id().map(|p| p as i32);
    {
        let mut ctrs = rt.ctrs.lock().unwrap();
        let c = &mut ctrs[idx];
        c.pid = pid;
        c.started_once = true;
        c.env = launch.env.clone();
        c.workdir = launch.workdir.clone();
        c.set(CState::Running { started });
    }
    rt.report(node, policy).await;
    let status = child.wait().await;
    let finished = Utc::now();
    let (code, reason) = match status {
        Ok(st) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(0), _) => (0, "Completed"),
                (Some(c), _) => (c, "Error"),
                (None, Some(sig)) => (128 + sig, "Error"),
                _ => (255, "Error"),
            }
        }
        Err(_) => (255, "Error"),
    };
    if let Some(pgid) = pid {
        // Leftover processes of the container (its process group) end with it.
        crate::process::kill_group(pgid, libc::SIGKILL);
    }
    let st = CState::Terminated {
        code,
        reason: reason.into(),
        message: String::new(),
        started,
        finished,
    };
    rt.terminated(idx, st);
    rt.report(node, policy).await;
    code
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| anyhow!("path contains a NUL byte"))
}

/// All prefixes of an absolute path: "/a/b" -> ["/a", "/a/b"].
fn prefixes(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        cur.push('/');
        cur.push_str(part);
        out.push(cur.clone());
    }
    out
}

struct PMount {
    src: CString,
    dirs: Vec<CString>,
    dst: CString,
    file: bool,
    ro: bool,
}

fn spawn_container(node: &Node, launch: &Launch, log: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let rootfs = cstr(&node.rootfs)?;
    let mut root_binds = Vec::new();
    for e in node
        .rootfs_entries
        .get()
        .map(|v| v.as_slice())
        .unwrap_or(&[])
    {
        let _ = e.is_dir;
        root_binds.push((
            cstr(format!("/{}", e.name))?,
            cstr(node.rootfs.join(&e.name))?,
        ));
    }
    let mut mounts = Vec::new();
    let mut sorted: Vec<&Mount> = launch.mounts.iter().collect();
    sorted.sort_by_key(|m| m.dst.matches('/').count());
    for m in sorted {
        let mut dirs = prefixes(&m.dst);
        if m.file {
            dirs.pop();
        }
        mounts.push(PMount {
            src: cstr(&m.src)?,
            dirs: dirs.iter().map(cstr).collect::<Result<_>>()?,
            dst: cstr(&m.dst)?,
            file: m.file,
            ro: m.read_only,
        });
    }
    let workdir_dirs: Vec<CString> = prefixes(&launch.workdir)
        .iter()
        .map(cstr)
        .collect::<Result<_>>()?;
    let workdir = cstr(&launch.workdir)?;
    let slash = cstr("/")?;
    let hostname = cstr(&launch.hostname)?;
    let mut cmd = Command::new(&launch.program);
    cmd.args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe libc calls on data prepared before the fork.
    unsafe {
        isolate_with(&mut cmd, move || {
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::sethostname(
                hostname.as_ptr(),
                hostname.as_bytes().len(),
            ))?;
            check(libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &root_binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
            }
            check(libc::chroot(rootfs.as_ptr()))?;
            check(libc::chdir(slash.as_ptr()))?;
            for m in &mounts {
                for d in &m.dirs {
                    libc::mkdir(d.as_ptr(), 0o755);
                }
                if m.file {
                    let fd = libc::open(
                        m.dst.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
                check(libc::mount(
                    m.src.as_ptr(),
                    m.dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if m.ro {
                    check(libc::mount(
                        std::ptr::null(),
                        m.dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            for d in &workdir_dirs {
                libc::mkdir(d.as_ptr(), 0o755);
            }
            check(libc::chdir(workdir.as_ptr()))?;
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("starting {}", launch.program))
}

/// Starts a process inside a running container (for exec): same mount namespace, root,
/// environment and working directory.
pub(crate) fn spawn_exec(
    pid: i32,
    env: &[(String, String)],
    workdir: &str,
    command: &[String],
    stdin: bool,
) -> Result<Child> {
    let (program, args) = command.split_first().context("exec needs a command")?;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
        .context("container's mount namespace")?;
    let root = std::fs::File::open(format!("/proc/{pid}/root")).context("container's root")?;
    let uts =
        std::fs::File::open(format!("/proc/{pid}/ns/uts")).context("container's UTS namespace")?;
    let utsfd = uts.as_raw_fd();
    use std::os::fd::AsRawFd;
    let (nsfd, rootfd) = (ns.as_raw_fd(), root.as_raw_fd());
    let dot = cstr(".")?;
    let wd = cstr(workdir)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        isolate_with(&mut cmd, move || {
            check(libc::setns(nsfd, libc::CLONE_NEWNS))?;
            check(libc::setns(utsfd, libc::CLONE_NEWUTS))?;
            check(libc::fchdir(rootfd))?;
            check(libc::chroot(dot.as_ptr()))?;
            if libc::chdir(wd.as_ptr()) < 0 {
                libc::chdir(c"/".as_ptr());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("exec {program}"))?;
    drop((ns, root, uts));
    Ok(child)
}

async fn prepare_volumes(
    node: &Node,
    rt: &PodRuntime,
    pod: &Pod,
) -> Result<HashMap<String, VolSource>> {
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = rt.namespace.clone();
    let client = node.cfg.client.clone();
    let mut out = HashMap::new();
    let mut handles = Vec::new();
    let voldir = rt.dir.join("volumes");
    for v in spec.volumes.iter().flatten() {
        let dir = voldir.join(&v.name);
        let claim = if let Some(pvc) = &v.persistent_volume_claim {
            Some(pvc.claim_name.clone())
        } else if v.ephemeral.is_some() {
            Some(format!("{}-{}", rt.name, v.name))
        } else {
            None
        };
        // Volumes of files (ConfigMap, Secret, downward API, projected): written below.
        let files = if let Some(claim) = claim {
            let (path, block, handle) = claim_path(node, &ns, &claim).await?;
            handles.extend(handle);
            out.insert(v.name.clone(), VolSource { path, block });
            continue;
        } else if v.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)?;
            None
        } else if let Some(hp) = &v.host_path {
            let p = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                std::fs::create_dir_all(&p)?;
            }
            out.insert(
                v.name.clone(),
                VolSource {
                    path: p,
                    block: false,
                },
            );
            continue;
        } else if let Some(cm) = &v.config_map {
            let optional = cm.optional.unwrap_or(false);
            let items = cm.items.as_deref();
            let files = config_map_files(&client, &ns, &cm.name, items, optional).await?;
            Some((files, cm.default_mode))
        } else if let Some(sec) = &v.secret {
            let name = sec.secret_name.clone().unwrap_or_default();
            let optional = sec.optional.unwrap_or(false);
            let files = secret_files(&client, &ns, &name, sec.items.as_deref(), optional).await?;
            Some((files, sec.default_mode))
        } else if let Some(dapi) = &v.downward_api {
            let files = downward_files(pod, dapi.items.as_deref().unwrap_or(&[]))?;
            Some((files, dapi.default_mode))
        } else if let Some(proj) = &v.projected {
            let mut files = BTreeMap::new();
            for src in proj.sources.iter().flatten() {
                if let Some(t) = &src.service_account_token {
                    let sa = spec
                        .service_account_name
                        .clone()
                        .unwrap_or_else(|| "default".into());
                    let (audience, expiry) = (t.audience.clone(), t.expiration_seconds);
                    let token = request_token(&client, &ns, &sa, pod, audience, expiry).await?;
                    files.insert(t.path.clone(), (token.into_bytes(), None));
                }
                if let Some(cm) = &src.config_map {
                    // This API server (OpenShift's tree) also projects openshift-service-ca.crt,
                    // whose publisher is disabled here: treat it as optional.
                    let optional =
                        cm.optional.unwrap_or(false) || cm.name == "openshift-service-ca.crt";
                    let items = cm.items.as_deref();
                    files.extend(config_map_files(&client, &ns, &cm.name, items, optional).await?);
                }
                if let Some(s) = &src.secret {
                    let optional = s.optional.unwrap_or(false);
                    let items = s.items.as_deref();
                    files.extend(secret_files(&client, &ns, &s.name, items, optional).await?);
                }
                if let Some(d) = &src.downward_api {
                    files.extend(downward_files(pod, d.items.as_deref().unwrap_or(&[]))?);
                }
            }
            Some((files, proj.default_mode))
        } else {
            bail!(
                "volume {}: this volume type is not supported by the simulated node",
                v.name
            );
        };
        if let Some((files, default_mode)) = files {
            write_files(&dir, &files, default_mode)?;
        }
        out.insert(
            v.name.clone(),
            VolSource {
                path: dir,
                block: false,
            },
        );
    }
    *rt.handles.lock().unwrap() = handles;
    Ok(out)
}

/// Where a bound PVC's volume is on the host: (path, block, volume handle if it is one of
/// the simulated driver's).
async fn claim_path(node: &Node, ns: &str, claim: &str) -> Result<(PathBuf, bool, Option<String>)> {
    let client = node.cfg.client.clone();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get(claim)
        .await
        .with_context(|| format!("PVC {claim}"))?;
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .ok_or_else(|| anyhow!("waiting for PVC {claim} to be bound"))?;
    let pv = Api::<PersistentVolume>::all(client).get(&pv_name).await?;
    let pspec = pv.spec.unwrap_or_default();
    let block = pspec.volume_mode.as_deref() == Some("Block");
    if let Some(csi) = &pspec.csi {
        if csi.driver != crate::DRIVER {
            bail!(
                "PV {pv_name} uses CSI driver {} which the simulated node does not have",
                csi.driver
            );
        }
        let path = node.cfg.volumes.volume_path(&csi.volume_handle, block);
        Ok((path, block, Some(csi.volume_handle.clone())))
    } else if let Some(hp) = &pspec.host_path {
        Ok((PathBuf::from(&hp.path), block, None))
    } else if let Some(local) = &pspec.local {
        Ok((PathBuf::from(&local.path), block, None))
    } else {
        bail!(
            "PV {pv_name} has a volume source the simulated node cannot mount (csi with {}, hostPath and local work)",
            crate::DRIVER
        )
    }
}

async fn request_token(
    client: &kube::Client,
    ns: &str,
    sa: &str,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
) -> Result<String> {
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let mut spec = json!({
        "expirationSeconds": expiration.unwrap_or(3607),
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
    });
    if let Some(a) = audience {
        spec["audiences"] = json!([a]);
    }
    let req =
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
    let tr: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {ns}/{sa}"))?;
    Ok(tr.status.map(|s| s.token).unwrap_or_default())
}

/// Files of a volume: relative path -> (contents, mode of this file if the item sets one).
type Files = BTreeMap<String, (Vec<u8>, Option<i32>)>;

/// Every key as a file of its name, or only the listed keys at their paths and modes
/// (a listed key that is missing is an error unless the source is optional).
fn select_items(
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, (v, None))).collect()),
        Some(items) => {
            let mut out = BTreeMap::new();
            for it in items {
                match data.get(&it.key) {
                    Some(v) => {
                        out.insert(it.path.clone(), (v.clone(), it.mode));
                    }
                    None if optional => {}
                    None => bail!("key {} not found", it.key),
                }
            }
            Ok(out)
        }
    }
}

/// A ConfigMap or Secret that a volume or env refers to; None if missing and optional.
async fn get_source<K>(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<Option<K>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.get_opt(name).await? {
        Some(o) => Ok(Some(o)),
        None if optional => Ok(None),
        None => bail!(
            "{} \"{name}\" not found",
            K::kind(&Default::default()).to_lowercase()
        ),
    }
}

/// A ConfigMap's `data` (what env refers to) and, with `binary`, its `binaryData`
/// (volumes hold both).
async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
    binary: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(cm) = get_source::<ConfigMap>(client, ns, name, optional).await? else {
        return Ok(BTreeMap::new());
    };
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    if binary {
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0)),
        );
    }
    Ok(data)
}

async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let Some(s) = get_source::<Secret>(client, ns, name, optional).await? else {
        return Ok(BTreeMap::new());
    };
    let mut data: BTreeMap<String, Vec<u8>> = s
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    data.extend(
        s.string_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes())),
    );
    Ok(data)
}

async fn config_map_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    let data = config_map_data(client, ns, name, optional, true).await?;
    select_items(data, items, optional).with_context(|| format!("configmap {name}"))
}

async fn secret_files(
    client: &kube::Client,
    ns: &str,
    name: &str,
    items: Option<&[KeyToPath]>,
    optional: bool,
) -> Result<Files> {
    let data = secret_data(client, ns, name, optional).await?;
    select_items(data, items, optional).with_context(|| format!("secret {name}"))
}

fn downward_files(
    pod: &Pod,
    items: &[k8s_openapi::api::core::v1::DownwardAPIVolumeFile],
) -> Result<Files> {
    let mut out = BTreeMap::new();
    for it in items {
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path)?
        } else if it.resource_field_ref.is_some() {
            "0".to_string()
        } else {
            String::new()
        };
        out.insert(it.path.clone(), (value.into_bytes(), it.mode));
    }
    Ok(out)
}

fn fmt_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward-API field path.
fn field_value(pod: &Pod, path: &str) -> Result<String> {
    let md = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let sub = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
    };
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "metadata.labels" => fmt_map(&md.labels.clone().unwrap_or_default()),
        "metadata.annotations" => fmt_map(&md.annotations.clone().unwrap_or_default()),
        "spec.nodeName" => spec.node_name.clone().unwrap_or_default(),
        "spec.serviceAccountName" => spec.service_account_name.clone().unwrap_or_default(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        "status.podIPs" | "status.hostIPs" => "127.0.0.1".into(),
        _ => {
            if let Some(k) = sub("metadata.labels") {
                md.labels
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = sub("metadata.annotations") {
                md.annotations
                    .as_ref()
                    .and_then(|l| l.get(k).cloned())
                    .unwrap_or_default()
            } else {
                bail!("unsupported fieldRef {path}")
            }
        }
    })
}

/// Writes a volume's files; each file gets its item's mode, else the volume's
/// defaultMode, else 0644.
fn write_files(dir: &Path, files: &Files, default_mode: Option<i32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (rel, (data, mode)) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, data)?;
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(mode.or(default_mode).unwrap_or(0o644) as u32),
        )?;
    }
    Ok(())
}

/// `$(VAR)` expansion as Kubernetes does it for command, args and env values.
fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(a) = after.strip_prefix('(') {
            if let Some(end) = a.find(')') {
                let name = &a[..end];
                match env.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        out.push_str("$(");
                        out.push_str(name);
                        out.push(')');
                    }
                }
                rest = &a[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

async fn build_launch(
    node: &Node,
    rt: &PodRuntime,
    pod: &Pod,
    c: &Container,
    vols: &HashMap<String, VolSource>,
) -> Result<Launch> {
    let client = node.cfg.client.clone();
    let ns = &rt.namespace;
    let port = node.cfg.api_port.to_string();
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), rt.name.clone()),
        ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
        ("KUBERNETES_SERVICE_PORT".into(), port.clone()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.clone()),
        ("KUBERNETES_PORT".into(), format!("tcp://127.0.0.1:{port}")),
    ];
    let mut map: HashMap<String, String> = env.iter().cloned().collect();
    let set = |env: &mut Vec<(String, String)>,
               map: &mut HashMap<String, String>,
               k: String,
               v: String| {
        env.retain(|(n, _)| *n != k);
        map.insert(k.clone(), v.clone());
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let mut data = BTreeMap::new();
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            data.extend(config_map_data(&client, ns, &r.name, optional, false).await?);
        }
        if let Some(r) = &from.secret_ref {
            data.extend(secret_data(&client, ns, &r.name, r.optional.unwrap_or(false)).await?);
        }
        for (k, v) in data {
            let v = String::from_utf8_lossy(&v).into();
            set(&mut env, &mut map, format!("{prefix}{k}"), v);
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(vf) = &e.value_from {
            let keyed = if let Some(r) = &vf.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                let files = config_map_data(&client, ns, &r.name, optional, false).await?;
                Some(("ConfigMap", &r.name, &r.key, optional, files))
            } else if let Some(r) = &vf.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                let files = secret_data(&client, ns, &r.name, optional).await?;
                Some(("Secret", &r.name, &r.key, optional, files))
            } else {
                None
            };
            if let Some((kind, name, key, optional, files)) = keyed {
                match files.get(key) {
                    Some(v) => String::from_utf8_lossy(v).into(),
                    None if optional => continue,
                    None => bail!("couldn't find key {key} in {kind} {ns}/{name}"),
                }
            } else if let Some(f) = &vf.field_ref {
                field_value(pod, &f.field_path)?
            } else if vf.resource_field_ref.is_some() {
                "0".into()
            } else {
                String::new()
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &map)
        };
        set(&mut env, &mut map, e.name.clone(), value);
    }
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| expand(s, &map))
        .collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| expand(s, &map)).collect();
    let image = c.image.clone().unwrap_or_default();
    let (program, args) = if let Some((first, rest)) = command.split_first() {
        (first.clone(), rest.iter().cloned().chain(args).collect())
    } else if is_coffer_image(&image) {
        let bin = node.cfg.coffer_bin.clone().ok_or_else(|| {
            anyhow!("image {image} has no known entrypoint: the coffer binary is not configured (set COFFER_BIN or Options::coffer_bin)")
        })?;
        (bin.display().to_string(), args)
    } else {
        bail!(
            "image {image} has no known entrypoint: the simulated node runs no images, give the container a command"
        );
    };
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v = vols
            .get(&m.name)
            .ok_or_else(|| anyhow!("volumeMount {}: no volume of that name", m.name))?;
        let mut src = v.path.clone();
        if let Some(sp) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            src = src.join(sp);
            if !v.block {
                std::fs::create_dir_all(&src)?;
            }
        }
        mounts.push(Mount {
            src,
            dst: m.mount_path.clone(),
            read_only: m.read_only.unwrap_or(false),
            file: v.block,
        });
    }
    for d in c.volume_devices.iter().flatten() {
        let v = vols
            .get(&d.name)
            .ok_or_else(|| anyhow!("volumeDevice {}: no volume of that name", d.name))?;
        mounts.push(Mount {
            src: v.path.clone(),
            dst: d.device_path.clone(),
            read_only: false,
            file: true,
        });
    }
    let workdir = c
        .working_dir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| rt.name.clone());
    Ok(Launch {
        program,
        args,
        env,
        workdir,
        mounts,
        hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coffer_images() {
        assert!(is_coffer_image("coffer"));
        assert!(is_coffer_image("coffer:0.1"));
        assert!(is_coffer_image("ghcr.io/x/coffer:latest"));
        assert!(is_coffer_image("localhost:5000/coffer"));
        assert!(is_coffer_image("reg/coffer@sha256:abc"));
        assert!(!is_coffer_image("busybox"));
        assert!(!is_coffer_image("coffer/other"));
    }

    #[test]
    fn expansion() {
        let env: HashMap<String, String> = [("A".to_string(), "x".to_string())].into();
        assert_eq!(expand("$(A)-$(B)-$$(A)", &env), "x-$(B)-$(A)");
    }
}
