//! What the node knows of a pod and reports: container states (waiting, running,
//! terminated, with the last termination), restart counts, conditions and phase, written
//! to the pod's status as a kubelet writes it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::node::Node;

#[derive(Clone, Debug)]
pub(super) enum CState {
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

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl CState {
    pub(super) fn to_json(&self) -> Value {
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

pub(super) struct Ctr {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) init: bool,
    pub(super) state: CState,
    pub(super) last: Option<CState>,
    pub(super) restarts: i32,
    pub(super) pid: Option<i32>,
    pub(super) started_once: bool,
    /// Set for exec: the environment and working directory of the running instance.
    pub(super) env: Vec<(String, String)>,
    pub(super) workdir: String,
}

/// A running container instance: (pid, environment, working directory).
pub(crate) type RunningInstance = (i32, Vec<(String, String)>, String);

/// A pod as the node runs it.
pub struct PodRuntime {
    /// The pod's uid.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    pub(super) dir: PathBuf,
    pub(super) ctrs: Mutex<Vec<Ctr>>,
    pub(super) handles: Mutex<Vec<String>>,
    pub(super) terminate: watch::Sender<Option<i64>>,
    pub(super) final_phase: Mutex<Option<String>>,
    pub(super) initialized: AtomicBool,
    pub(super) start_time: DateTime<Utc>,
    pub(super) report_lock: tokio::sync::Mutex<()>,
}

impl PodRuntime {
    /// The runtime of a pod that has not started, its containers waiting.
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

    pub(super) fn terminating(&self) -> bool {
        self.terminate.borrow().is_some()
    }

    pub(super) async fn wait_terminate(&self) -> i64 {
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
    pub(super) async fn sleep_or_terminate(&self, d: Duration) -> bool {
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

    pub(super) fn log_dir(&self, ctr: &str) -> PathBuf {
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

    pub(super) fn set_state(&self, idx: usize, state: CState) {
        let mut ctrs = self.ctrs.lock().unwrap();
        ctrs[idx].set(state);
    }

    /// Records the end of a container instance (or its failure to start).
    pub(super) fn terminated(&self, idx: usize, st: CState) {
        let mut ctrs = self.ctrs.lock().unwrap();
        let c = &mut ctrs[idx];
        c.pid = None;
        c.started_once = true;
        c.set(st);
    }

    pub(super) fn status_json(&self, spec_restart: &str) -> Value {
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

    pub(super) async fn report(&self, node: &Node, restart_policy: &str) {
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
    pub(super) fn new(c: &Container, init: bool, state: CState) -> Ctr {
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
pub(super) fn default_waiting_reason(spec: &k8s_openapi::api::core::v1::PodSpec) -> &'static str {
    if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
        "PodInitializing"
    } else {
        "ContainerCreating"
    }
}

impl Ctr {
    /// Changes the state; a termination that is left (for a back-off or a restart)
    /// becomes the lastState, as a kubelet reports it.
    pub(super) fn set(&mut self, state: CState) {
        let old = std::mem::replace(&mut self.state, state);
        if matches!(old, CState::Terminated { .. })
            && !matches!(self.state, CState::Terminated { .. })
        {
            self.last = Some(old);
        }
    }
}
