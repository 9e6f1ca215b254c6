//! Coffer's operator (DESIGN.md layer 6): the controllers that run backups inside the
//! cluster, and the data mover they start in pods.
//!
//! - [`repository`]: BackupRepository / ClusterBackupRepository opened (created when
//!   asked) and their status kept current.
//! - [`backup`]: the backup workflow, step by step, resumable after a restart.
//! - [`restore`]: the restore workflow (objects through the resources layer, volumes
//!   through the populator).
//! - [`populator`]: Coffer's volume populator, filling PVCs whose `dataSourceRef` names a
//!   VolumeBackup.
//! - [`mover`]: what a data-mover pod runs (`coffer mover backup|restore`).
//! - [`leader`]: one active replica (a Lease); [`metrics`]: Prometheus metrics.
//!
//! It owns the workflows and the objects they create (snapshots, mover PVCs and pods,
//! VolumeBackups, the backup manifest, prime PVCs). It does not own the formats or the data movement
//! (the repo, volume and resources layers do), nor the API types (`coffer-api`), nor
//! process concerns such as flags, signals and logging (the CLI).

pub mod backup;
pub mod config;
pub mod context;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod mover;
pub mod names;
pub mod populator;
pub mod repository;
pub mod restore;
pub mod restore_pod;
pub mod selector;
pub mod time;

use std::sync::Arc;

pub use config::{Deadlines, OperatorConfig};
pub use error::{Error, Result};

use kube::Client;
use kube::runtime::events::Reporter;

/// Runs the operator until a controller stops or (with leader election) the Lease is
/// lost; the caller exits then, and the pod's restart starts over as a candidate.
pub async fn run(client: Client, config: OperatorConfig) -> Result<String> {
    let metrics = Arc::new(metrics::Metrics::new());
    let elector = leader::LeaderElector::new(client.clone(), &config.namespace, &config.identity);
    if config.leader_election {
        tracing::info!(identity = %config.identity, "waiting for the leader Lease");
        elector.acquire().await?;
        tracing::info!("leader: starting the controllers");
    }
    metrics.leader.set(1);
    // Served by the leader only: its counters are the ones that count, and replicas that
    // share a network (the test cluster's node) do not compete for the port.
    if let Some(addr) = config.metrics_addr {
        match metrics::serve(addr, metrics.clone()).await {
            Ok(bound) => tracing::info!(%bound, "serving /metrics"),
            // Another process holds the port: the operator works without its metrics
            // endpoint rather than not at all.
            Err(e) => tracing::error!(%addr, error = %e, "cannot serve /metrics"),
        }
    }
    let ctx = Arc::new(context::Context {
        client,
        reporter: Reporter {
            controller: "coffer-operator".into(),
            instance: Some(config.identity.clone()),
        },
        config: config.clone(),
        metrics,
        failing_since: Default::default(),
    });
    let controllers = async {
        futures::join!(
            repository::controller::run(ctx.clone()),
            backup::run(ctx.clone()),
            restore::run(ctx.clone()),
            populator::run(ctx.clone())
        );
        "the controllers stopped".to_string()
    };
    let reason = if config.leader_election {
        tokio::select! {
            r = controllers => r,
            r = elector.hold() => r,
        }
    } else {
        controllers.await
    };
    Ok(reason)
}
