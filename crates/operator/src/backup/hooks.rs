//! Hooks: commands run in the application's pods through the API server's exec, before
//! the snapshots (quiesce) and after them (unquiesce). The Application's hook groups run
//! in the order listed, each in its selected pods sorted by name; then Velero's pod
//! annotations (`pre.hook.backup.velero.io/command`, `.../container`, `.../on-error`,
//! `.../timeout`, likewise `post.`) as Velero documents them. Each execution has a
//! timeout (default 30 s) and an on-error policy: `Fail` ends the backup Failed (the post
//! hooks still run), `Continue` records the failure and goes on.

use std::time::Duration;

use coffer_api::{ApplicationSpec, ExecHook, Hook, ItemKind, OnError, Severity, StatusItem};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, ListParams};
use kube::{Client, ResourceExt};
use tokio::io::AsyncReadExt;

use crate::error::{KubeContext, Result};
use crate::selector;

/// Before or after the snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Quiesce.
    Pre,
    /// Unquiesce.
    Post,
}

impl Phase {
    fn velero_prefix(self) -> &'static str {
        match self {
            Phase::Pre => "pre.hook.backup.velero.io",
            Phase::Post => "post.hook.backup.velero.io",
        }
    }
    fn word(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
        }
    }
}

/// What running the hooks of one phase gave.
#[derive(Debug, Default)]
pub struct HookOutcome {
    /// Executions attempted.
    pub attempted: u32,
    /// Executions failed.
    pub failed: u32,
    /// One item per failure.
    pub items: Vec<StatusItem>,
    /// Set when a failure had policy Fail: why the backup fails.
    pub fatal: Option<String>,
}

/// One hook to run in one pod.
pub(crate) struct Execution {
    pub(crate) hook_name: String,
    pub(crate) namespace: String,
    pub(crate) pod: String,
    pub(crate) container: String,
    pub(crate) exec: ExecHook,
}

/// Runs the hooks of `phase`. With `stop_at_fatal` (pre hooks) the first failure of
/// policy Fail ends the run; post hooks always all run.
pub async fn run(
    client: &Client,
    app: &ApplicationSpec,
    namespaces: &[String],
    phase: Phase,
    default_timeout: Duration,
) -> Result<HookOutcome> {
    let executions = plan(client, app, namespaces, phase).await?;
    let mut out = HookOutcome::default();
    for x in executions {
        out.attempted += 1;
        let timeout = match &x.exec.timeout {
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) => d,
                Err(_) => {
                    out.failed += 1;
                    let reason = format!(
                        "{} hook {:?}: timeout {t:?} is not a duration (use 30s, 2m)",
                        phase.word(),
                        x.hook_name
                    );
                    record_failure(&mut out, &x, reason);
                    continue;
                }
            },
            None => default_timeout,
        };
        if let Err(reason) = exec(client, &x, timeout).await {
            out.failed += 1;
            let reason = format!(
                "{} hook {:?} in pod {}/{} container {} ({}): {reason}",
                phase.word(),
                x.hook_name,
                x.namespace,
                x.pod,
                x.container,
                shell_words(&x.exec.command)
            );
            record_failure(&mut out, &x, reason);
            if out.fatal.is_some() && phase == Phase::Pre {
                break;
            }
        }
    }
    Ok(out)
}

fn record_failure(out: &mut HookOutcome, x: &Execution, reason: String) {
    let fatal = x.exec.on_error == OnError::Fail;
    out.items.push(StatusItem {
        kind: ItemKind::Hook,
        // A failed hook is an error either way (the backup is at best PartiallyFailed);
        // the policy decides whether the workflow goes on.
        severity: Severity::Error,
        name: format!("{}/{}", x.pod, x.hook_name),
        namespace: Some(x.namespace.clone()),
        reason: reason.clone(),
    });
    if fatal && out.fatal.is_none() {
        out.fatal = Some(reason);
    }
}

/// Every execution of `phase`, in order: hook groups as listed (pods by name), then the
/// Velero annotations of the application's pods (by namespace and name).
async fn plan(
    client: &Client,
    app: &ApplicationSpec,
    namespaces: &[String],
    phase: Phase,
) -> Result<Vec<Execution>> {
    let mut out = Vec::new();
    for group in &app.hooks {
        let hooks: &[Hook] = match phase {
            Phase::Pre => &group.pre,
            Phase::Post => &group.post,
        };
        if hooks.is_empty() {
            continue;
        }
        let nss = if group.namespaces.is_empty() {
            namespaces.to_vec()
        } else {
            group.namespaces.clone()
        };
        for ns in nss {
            let lp = list_params(group.label_selector.as_ref())?;
            for pod in running_pods(client, &ns, &lp).await? {
                for h in hooks {
                    let container = h
                        .exec
                        .container
                        .clone()
                        .unwrap_or_else(|| first_container(&pod));
                    out.push(Execution {
                        hook_name: group.name.clone(),
                        namespace: ns.clone(),
                        pod: pod.name_any(),
                        container,
                        exec: h.exec.clone(),
                    });
                }
            }
        }
    }
    // Velero's annotations on the application's pods.
    let prefix = phase.velero_prefix();
    let lp = list_params(app.selection.label_selector.as_ref())?;
    for ns in namespaces {
        for pod in running_pods(client, ns, &lp).await? {
            let a = pod.annotations();
            let Some(cmd) = a.get(&format!("{prefix}/command")) else {
                continue;
            };
            let command = parse_velero_command(cmd);
            let on_error = match a.get(&format!("{prefix}/on-error")).map(String::as_str) {
                Some("Continue") => OnError::Continue,
                _ => OnError::Fail,
            };
            out.push(Execution {
                hook_name: format!("{prefix}/command"),
                namespace: ns.clone(),
                pod: pod.name_any(),
                container: a
                    .get(&format!("{prefix}/container"))
                    .cloned()
                    .unwrap_or_else(|| first_container(&pod)),
                exec: ExecHook {
                    container: None,
                    command,
                    on_error,
                    timeout: a.get(&format!("{prefix}/timeout")).cloned(),
                },
            });
        }
    }
    Ok(out)
}

/// A listing restricted to `sel` (everything without one).
pub(crate) fn list_params(
    sel: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Result<ListParams> {
    let lp = ListParams::default();
    Ok(match sel.map(selector::to_query).transpose()?.flatten() {
        Some(q) => lp.labels(&q),
        None => lp,
    })
}

/// Velero's command annotation: a JSON array, or one command word.
pub(crate) fn parse_velero_command(s: &str) -> Vec<String> {
    serde_json::from_str::<Vec<String>>(s).unwrap_or_else(|_| vec![s.to_string()])
}

pub(crate) fn first_container(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default()
}

async fn running_pods(client: &Client, ns: &str, lp: &ListParams) -> Result<Vec<Pod>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut pods: Vec<Pod> = api
        .list(lp)
        .await
        .kube_ctx(|| format!("listing the pods of namespace {ns}"))?
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .collect();
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// Runs one execution; Err is the reason it failed, in words.
pub(crate) async fn exec(
    client: &Client,
    x: &Execution,
    timeout: Duration,
) -> std::result::Result<(), String> {
    if x.exec.command.is_empty() {
        return Err("the hook has no command".into());
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &x.namespace);
    let params = AttachParams::default()
        .container(x.container.clone())
        .stdout(true)
        .stderr(true);
    let run = async {
        let mut p = api
            .exec(&x.pod, x.exec.command.clone(), &params)
            .await
            .map_err(|e| format!("exec failed: {e}"))?;
        let mut stdout = p.stdout();
        let mut stderr = p.stderr();
        let status = p.take_status();
        let read = |s: Option<tokio::io::ReadHalf<tokio::io::SimplexStream>>| async move {
            let mut buf = Vec::new();
            if let Some(mut s) = s {
                let _ = s.read_to_end(&mut buf).await;
            }
            String::from_utf8_lossy(&buf).into_owned()
        };
        let (_out, err) = tokio::join!(read(stdout.take()), read(stderr.take()));
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = p.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Success") => Ok(()),
            Some(s) => {
                let code = s
                    .details
                    .as_ref()
                    .and_then(|d| d.causes.as_ref())
                    .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
                    .and_then(|c| c.message.clone());
                let err = err.trim();
                Err(match code {
                    Some(c) => format!(
                        "exit code {c}{}",
                        if err.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ", stderr: {}",
                                crate::context::truncate(err.to_string(), 300)
                            )
                        }
                    ),
                    None => s.message.unwrap_or_else(|| "failed".into()),
                })
            }
            None => Err("the exec stream ended without a status".into()),
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs())),
    }
}

/// A command as a person would type it.
pub(crate) fn shell_words(cmd: &[String]) -> String {
    cmd.iter()
        .map(|w| {
            if w.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
                && !w.is_empty()
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velero_command_forms_and_shell_words() {
        assert_eq!(
            parse_velero_command(r#"["/bin/sh","-c","echo hi"]"#),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            parse_velero_command("/sbin/fsfreeze"),
            vec!["/sbin/fsfreeze"]
        );
        assert_eq!(
            shell_words(&["sh".into(), "-c".into(), "echo it's".into()]),
            r"sh -c 'echo it'\''s'"
        );
    }
}
