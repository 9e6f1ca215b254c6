//! The repository controller: opens each BackupRepository and ClusterBackupRepository
//! (creating it with `initialize: true`), and reports `status.phase` Ready or
//! Unavailable with a message that says what is wrong, `lastCheckedTime`, the snapshot
//! count and the size. A Ready repository is checked again every
//! [`OperatorConfig::repository_check_interval`](crate::config::OperatorConfig), an
//! Unavailable one sooner.

use std::sync::Arc;
use std::time::Duration;

use coffer_api::{
    BackupRepository, ClusterBackupRepository, RepositoryPhase, RepositorySettings,
    RepositoryStatus,
};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::{Error, KubeContext, Result};
use crate::repository::access::{RepositoryAccess, unavailable_message};

/// The field manager of the operator's status writes.
pub const MANAGER: &str = "coffer-operator";

/// Runs both repository controllers until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let namespaced = Controller::new(
        Api::<BackupRepository>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_namespaced, error_policy, ctx.clone())
    .for_each(|_| async {});
    let cluster = Controller::new(
        Api::<ClusterBackupRepository>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile_cluster, error_policy, ctx)
    .for_each(|_| async {});
    futures::join!(namespaced, cluster);
}

fn error_policy<K>(_obj: Arc<K>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "repository reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

async fn reconcile_namespaced(obj: Arc<BackupRepository>, ctx: Arc<Context>) -> Result<Action> {
    let ns = obj.namespace().unwrap_or_default();
    let status = check(&ctx, &obj.spec.settings, &ns, obj.metadata.generation).await;
    let api: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &ns);
    finish(&ctx, &*obj, &api, status).await
}

async fn reconcile_cluster(obj: Arc<ClusterBackupRepository>, ctx: Arc<Context>) -> Result<Action> {
    let status = check(
        &ctx,
        &obj.spec.settings,
        &ctx.config.namespace,
        obj.metadata.generation,
    )
    .await;
    let api: Api<ClusterBackupRepository> = Api::all(ctx.client.clone());
    finish(&ctx, &*obj, &api, status).await
}

async fn finish<K>(ctx: &Context, obj: &K, api: &Api<K>, status: RepositoryStatus) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: HasRepositoryStatus,
{
    let before = obj.repository_status();
    let changed_phase = before.and_then(|s| s.phase) != status.phase
        || before.and_then(|s| s.message.clone()) != status.message;
    let ready = status.phase == Some(RepositoryPhase::Ready);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .kube_ctx(|| format!("writing the status of {} {}", K::kind(&()), obj.name_any()))?;
    if changed_phase {
        let (t, reason) = if ready {
            (EventType::Normal, "RepositoryReady")
        } else {
            (EventType::Warning, "RepositoryUnavailable")
        };
        ctx.event(obj, t, reason, status.message.clone().unwrap_or_default())
            .await;
    }
    Ok(Action::requeue(if ready {
        ctx.config.repository_check_interval
    } else {
        Duration::from_secs(30)
    }))
}

/// Read access to the status of either repository kind.
pub trait HasRepositoryStatus {
    /// The status, if any.
    fn repository_status(&self) -> Option<&RepositoryStatus>;
}

impl HasRepositoryStatus for BackupRepository {
    fn repository_status(&self) -> Option<&RepositoryStatus> {
        self.status.as_ref()
    }
}

impl HasRepositoryStatus for ClusterBackupRepository {
    fn repository_status(&self) -> Option<&RepositoryStatus> {
        self.status.as_ref()
    }
}

/// Opens the repository and says how it is.
async fn check(
    ctx: &Context,
    settings: &RepositorySettings,
    secret_ns: &str,
    generation: Option<i64>,
) -> RepositoryStatus {
    let now = Some(crate::time::now());
    let opened = async {
        let access = RepositoryAccess::resolve(&ctx.client, settings, secret_ns).await?;
        let (repo, created) = access.open_or_init(&ctx.open_options()).await?;
        let stats = repo.stats().await?;
        Ok::<_, Error>((repo.config().id.to_string(), created, stats))
    }
    .await;
    match opened {
        Ok((id, created, stats)) => RepositoryStatus {
            phase: Some(RepositoryPhase::Ready),
            message: Some(if created {
                format!("created a new repository at {}", settings.location)
            } else {
                format!("opened {}", settings.location)
            }),
            last_checked_time: now,
            repository_id: Some(id),
            snapshots: Some(stats.snapshots as u64),
            size: Some(human_bytes(stats.pack_bytes)),
            observed_generation: generation,
            conditions: Vec::new(),
        },
        Err(e) => RepositoryStatus {
            phase: Some(RepositoryPhase::Unavailable),
            message: Some(unavailable_message(&e)),
            last_checked_time: now,
            observed_generation: generation,
            ..Default::default()
        },
    }
}

/// Bytes in binary units ("1.5 GiB").
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
