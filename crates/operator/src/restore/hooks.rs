//! The `Hooks` step: commands run in restored pods once they are Ready (the seed's
//! restore hooks: rebuild an index, warm a cache, check the data). The Restore's hook
//! groups run in the order listed, each in the pods of the target namespaces its selector
//! matches (by name); then Velero's `post.hook.restore.velero.io/*` annotations on the
//! restored pods (`command`, `container`, `on-error`, `exec-timeout`, `wait-timeout`), as
//! Velero documents them. Each waits for its pods to be Ready (`waitTimeout`, default 5
//! minutes; a pod that is not is a failure), runs with a timeout (default 30 s) and an
//! on-error policy: `Fail` ends the restore Failed, `Continue` records the failure (the
//! restore ends PartiallyFailed).
//!
//! The exec itself is the backup hooks' (`crate::backup::hooks`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use coffer_api::{
    ExecHook, HookCounts, ItemKind, OnError, Restore, RestoreStatus, Severity, StatusItem,
};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::backup::hooks::{
    Execution, exec, first_container, list_params, parse_velero_command, shell_words,
};
use crate::context::Context;
use crate::error::{KubeContext, Result};

/// Velero's annotation prefix of restore exec hooks.
const VELERO_PREFIX: &str = "post.hook.restore.velero.io";
/// How long a hook waits for its pods without `waitTimeout`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn pods(ctx: &Context, ns: &str, lp: &ListParams) -> Result<Vec<Pod>> {
    let mut pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(lp)
        .await
        .kube_ctx(|| format!("listing the pods of namespace {ns}"))?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !p.labels().contains_key(crate::names::MOVER_LABEL)
                && !p.name_any().starts_with("coffer-")
        })
        .collect();
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// The pods `lp` selects in `namespaces` once there is at least one and all are Ready, or
/// at `wait`: (the Ready ones, the names of the others).
async fn wait_ready(
    ctx: &Context,
    namespaces: &[String],
    lp: &ListParams,
    wait: Duration,
) -> Result<(Vec<Pod>, Vec<String>)> {
    let deadline = Instant::now() + wait;
    loop {
        let mut all = Vec::new();
        for ns in namespaces {
            all.extend(pods(ctx, ns, lp).await?);
        }
        let done = !all.is_empty() && all.iter().all(ready);
        if done || Instant::now() >= deadline {
            let (ok, not): (Vec<Pod>, Vec<Pod>) = all.into_iter().partition(ready);
            return Ok((
                ok,
                not.iter()
                    .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                    .collect(),
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn duration(text: Option<&str>, default: Duration) -> std::result::Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t)
            .map_err(|_| format!("{t:?} is not a duration (use 30s, 2m)")),
    }
}

/// What the hooks of one restore did.
struct Outcome {
    counts: HookCounts,
    items: Vec<StatusItem>,
    fatal: Option<String>,
}

impl Outcome {
    fn fail(&mut self, on_error: OnError, name: &str, namespace: Option<&str>, reason: String) {
        self.counts.failed += 1;
        self.items.push(StatusItem {
            kind: ItemKind::Hook,
            severity: Severity::Error,
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            reason: reason.clone(),
        });
        if on_error == OnError::Fail && self.fatal.is_none() {
            self.fatal = Some(reason);
        }
    }

    async fn run(&mut self, ctx: &Context, x: Execution, timeout: Duration) {
        self.counts.attempted += 1;
        if let Err(reason) = exec(&ctx.client, &x, timeout).await {
            let reason = format!(
                "restore hook {:?} in pod {}/{} container {} ({}): {reason}",
                x.hook_name,
                x.namespace,
                x.pod,
                x.container,
                shell_words(&x.exec.command)
            );
            self.fail(
                x.exec.on_error,
                &format!("{}/{}", x.pod, x.hook_name),
                Some(&x.namespace),
                reason,
            );
        }
    }
}

/// Runs the restore's hooks; records counts and failures in `st` (a failure of policy
/// Fail in `st.failure`).
pub async fn run(ctx: &Context, r: &Restore, st: &mut RestoreStatus) -> Result<()> {
    let namespaces = st.target_namespaces.clone();
    let mut out = Outcome {
        counts: HookCounts::default(),
        items: Vec::new(),
        fatal: None,
    };
    for group in &r.spec.hooks {
        let lp = list_params(group.label_selector.as_ref())?;
        for h in &group.post {
            let (wait, timeout) = match (
                duration(h.wait_timeout.as_deref(), DEFAULT_WAIT),
                duration(h.exec.timeout.as_deref(), ctx.config.deadlines.hook_default),
            ) {
                (Ok(w), Ok(t)) => (w, t),
                (Err(e), _) | (_, Err(e)) => {
                    out.counts.attempted += 1;
                    out.fail(
                        h.exec.on_error,
                        &group.name,
                        None,
                        format!("restore hook {:?}: {e}", group.name),
                    );
                    continue;
                }
            };
            let (ready, not_ready) = wait_ready(ctx, &namespaces, &lp, wait).await?;
            if ready.is_empty() && not_ready.is_empty() {
                out.items.push(StatusItem {
                    kind: ItemKind::Hook,
                    severity: Severity::Warning,
                    name: group.name.clone(),
                    namespace: None,
                    reason: format!(
                        "restore hook {:?}: no restored pod matched its selector within {}s",
                        group.name,
                        wait.as_secs()
                    ),
                });
            }
            for p in &not_ready {
                out.counts.attempted += 1;
                out.fail(
                    h.exec.on_error,
                    &format!("{p}/{}", group.name),
                    None,
                    format!(
                        "restore hook {:?}: pod {p} was not Ready within {}s",
                        group.name,
                        wait.as_secs()
                    ),
                );
            }
            for pod in ready {
                let x = Execution {
                    hook_name: group.name.clone(),
                    namespace: pod.namespace().unwrap_or_default(),
                    pod: pod.name_any(),
                    container: h
                        .exec
                        .container
                        .clone()
                        .unwrap_or_else(|| first_container(&pod)),
                    exec: h.exec.clone(),
                };
                out.run(ctx, x, timeout).await;
            }
        }
    }
    // Velero's annotations on the restored pods.
    let mut seen = BTreeSet::new();
    for ns in &namespaces {
        for pod in pods(ctx, ns, &ListParams::default()).await? {
            let a = pod.annotations().clone();
            let Some(cmd) = a.get(&format!("{VELERO_PREFIX}/command")) else {
                continue;
            };
            if !seen.insert((ns.clone(), pod.name_any())) {
                continue;
            }
            let on_error = match a
                .get(&format!("{VELERO_PREFIX}/on-error"))
                .map(String::as_str)
            {
                Some("Fail") => OnError::Fail,
                _ => OnError::Continue,
            };
            let name = format!("{VELERO_PREFIX}/command");
            let times = (
                duration(
                    a.get(&format!("{VELERO_PREFIX}/wait-timeout"))
                        .map(String::as_str),
                    DEFAULT_WAIT,
                ),
                duration(
                    a.get(&format!("{VELERO_PREFIX}/exec-timeout"))
                        .map(String::as_str),
                    ctx.config.deadlines.hook_default,
                ),
            );
            let (wait, timeout) = match times {
                (Ok(w), Ok(t)) => (w, t),
                (Err(e), _) | (_, Err(e)) => {
                    out.counts.attempted += 1;
                    out.fail(on_error, &format!("{}/{name}", pod.name_any()), Some(ns), e);
                    continue;
                }
            };
            let lp = ListParams::default().fields(&format!("metadata.name={}", pod.name_any()));
            let (ready, _) = wait_ready(ctx, std::slice::from_ref(ns), &lp, wait).await?;
            let Some(pod) = ready.into_iter().next() else {
                out.counts.attempted += 1;
                out.fail(
                    on_error,
                    &format!("{}/{name}", pod.name_any()),
                    Some(ns),
                    format!(
                        "pod {ns}/{} was not Ready within {}s",
                        pod.name_any(),
                        wait.as_secs()
                    ),
                );
                continue;
            };
            let x = Execution {
                hook_name: name,
                namespace: ns.clone(),
                container: a
                    .get(&format!("{VELERO_PREFIX}/container"))
                    .cloned()
                    .unwrap_or_else(|| first_container(&pod)),
                pod: pod.name_any(),
                exec: ExecHook {
                    container: None,
                    command: parse_velero_command(cmd),
                    on_error,
                    timeout: None,
                },
            };
            out.run(ctx, x, timeout).await;
        }
    }
    st.hooks = Some(out.counts);
    st.items.extend(out.items);
    if let Some(f) = out.fatal {
        st.failure = Some(f);
    }
    Ok(())
}
