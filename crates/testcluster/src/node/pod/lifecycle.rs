//! A pod's life on the node: volumes prepared, init containers then app containers run
//! under the restart policy with back-off, termination with its grace period, and the
//! final deletion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, DeleteParams, Preconditions};

use super::launch::{Launch, VolSource, build_launch};
use super::spawn::spawn_container;
use super::status::{CState, PodRuntime, default_waiting_reason};
use super::volumes::prepare_volumes;
use crate::node::Node;

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

pub(super) async fn run_containers(
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
pub(super) async fn back_off(
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
pub(super) async fn container_loop(
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
pub(super) async fn run_instance(
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
