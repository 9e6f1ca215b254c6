//! The repository controller: opens each BackupRepository and ClusterBackupRepository
//! (creating it with `initialize: true`), and reports `status.phase` Ready or
//! Unavailable with a message that says what is wrong, `lastCheckedTime`, the snapshot
//! count and the size. A Ready repository is checked again every
//! [`OperatorConfig::repository_check_interval`](crate::config::OperatorConfig), an
//! Unavailable one sooner.

use std::sync::Arc;
use std::time::Duration;

use coffer_api::{
    Backup, BackupRepository, BackupSpec, BackupStatus, ClusterBackupRepository, RepositoryKind,
    RepositoryPhase, RepositoryRef, RepositorySettings, RepositoryStatus,
};
use coffer_repo::Repository;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
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
    let reference = RepositoryRef {
        name: obj.name_any(),
        kind: RepositoryKind::BackupRepository,
    };
    let status = check(
        &ctx,
        &obj.spec.settings,
        &ns,
        obj.metadata.generation,
        Some((&reference, Some(ns.as_str()))),
    )
    .await;
    let api: Api<BackupRepository> = Api::namespaced(ctx.client.clone(), &ns);
    finish(&ctx, &*obj, &api, status).await
}

async fn reconcile_cluster(obj: Arc<ClusterBackupRepository>, ctx: Arc<Context>) -> Result<Action> {
    let reference = RepositoryRef {
        name: obj.name_any(),
        kind: RepositoryKind::ClusterBackupRepository,
    };
    let status = check(
        &ctx,
        &obj.spec.settings,
        &ctx.config.namespace,
        obj.metadata.generation,
        Some((&reference, None)),
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
    sync: Option<(&RepositoryRef, Option<&str>)>,
) -> RepositoryStatus {
    let now = Some(crate::time::now());
    let opened = async {
        let access = RepositoryAccess::resolve(&ctx.client, settings, secret_ns).await?;
        let (repo, created) = access.open_or_init(&ctx.open_options()).await?;
        if let Some((reference, namespace)) = sync {
            // A Backup that cannot be synced is reported, and does not make the
            // repository unavailable.
            if let Err(e) = sync_backups(ctx, &repo, reference, namespace).await {
                tracing::warn!(error = %e, "syncing backups from the repository failed");
            }
        }
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

pub use coffer_repo::human_bytes;

/// Annotation on a Backup created from a manifest found in a repository (its id).
pub const SYNCED_ANNOTATION: &str = "coffer.dev/synced-from-manifest";

/// Creates a Backup object (phase as recorded, status from the manifest) for every backup
/// manifest in the repository that has none in the cluster: a new cluster pointed at an
/// old repository sees its backups. `namespace` limits it to the manifests of one
/// namespace (a namespaced repository serves only its own). Returns how many it made.
pub async fn sync_backups(
    ctx: &Context,
    repo: &Repository,
    reference: &RepositoryRef,
    namespace: Option<&str>,
) -> Result<u32> {
    let mut made = 0;
    for snap in repo.list_snapshots().await? {
        if snap.kind.as_str() != crate::backup::manifest::KIND {
            continue;
        }
        let Some((ns, name)) = snap
            .tags
            .get(crate::mover::BACKUP_TAG)
            .and_then(|t| t.split_once('/'))
        else {
            continue;
        };
        if namespace.is_some_and(|n| n != ns) {
            continue;
        }
        let backups: Api<Backup> = Api::namespaced(ctx.client.clone(), ns);
        if backups
            .get_opt(name)
            .await
            .kube_ctx(|| format!("reading Backup {ns}/{name}"))?
            .is_some()
        {
            continue;
        }
        let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
        if namespaces
            .get_opt(ns)
            .await
            .kube_ctx(|| format!("reading namespace {ns}"))?
            .is_none()
        {
            // Its namespace is not in this cluster (yet): nothing to show it in.
            continue;
        }
        let id = snap.id.to_string();
        let m = crate::backup::manifest::read(repo, &id).await?;
        let mut b = Backup::new(
            name,
            BackupSpec {
                application: None,
                selection: Some(m.application.clone()),
                repository: reference.clone(),
                labels: m.labels.clone(),
                ..Default::default()
            },
        );
        b.metadata.namespace = Some(ns.to_string());
        b.metadata.annotations = Some([(SYNCED_ANNOTATION.to_string(), id.clone())].into());
        b.metadata.labels = Some([("coffer.dev/synced".to_string(), "true".to_string())].into());
        match backups.create(&Default::default(), &b).await {
            Ok(_) => {}
            Err(e) if crate::error::is_conflict(&e) => continue,
            Err(e) => return Err(e).kube_ctx(|| format!("creating Backup {ns}/{name}")),
        }
        let status = BackupStatus {
            phase: Some(m.phase),
            message: Some(format!(
                "synced from the repository (manifest {})",
                &id[..8]
            )),
            start_time: m.start_time.map(crate::time::from_chrono),
            completion_time: Some(crate::time::from_chrono(m.completion_time)),
            hooks: Some(m.hooks.clone()),
            items: m.items.clone(),
            resources_snapshot: m.resources_snapshot.clone(),
            volumes: m.volumes.clone(),
            manifest: Some(id.clone()),
            size: Some(human_bytes(m.volumes.iter().map(|v| v.bytes_new).sum())),
            ..Default::default()
        };
        let patch =
            json!({"apiVersion": coffer_api::API_VERSION, "kind": "Backup", "status": status});
        backups
            .patch_status(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .kube_ctx(|| format!("writing the status of Backup {ns}/{name}"))?;
        made += 1;
    }
    Ok(made)
}

/// Compile-time check: the futures the controllers spawn are Send for any lifetime (a
/// closure over references inside a stream breaks that, and only shows at the spawn).
#[allow(dead_code)]
fn send_probe(repo: &Repository, ctx: &Context, r: &RepositoryRef) {
    fn s<T: Send>(_: T) {}
    s(sync_backups(ctx, repo, r, None));
}
