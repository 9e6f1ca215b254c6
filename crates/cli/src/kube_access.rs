//! Reaching a cluster from the command line, shared by every command that talks to the
//! API server (`coffer resources ...`, `coffer backup ...`): the `--kubeconfig` and
//! `--context` flags, how they resolve (the way kubectl resolves them), and the hints
//! added to connection errors.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use coffer_resources::{Cluster, ClusterAccess, KubeconfigSource};

/// `--kubeconfig` and `--context`.
#[derive(clap::Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Kubeconfig file (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
}

impl ClusterArgs {
    /// Where the cluster's settings come from: --kubeconfig, else the files KUBECONFIG
    /// lists, else ~/.kube/config when it exists, else the pod's service account.
    pub fn access(&self) -> ClusterAccess {
        let source = if let Some(path) = &self.kubeconfig {
            KubeconfigSource::Files(vec![path.clone()])
        } else if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            KubeconfigSource::Files(
                std::env::split_paths(&list)
                    .filter(|p| !p.as_os_str().is_empty())
                    .collect(),
            )
        } else {
            match std::env::var_os("HOME").map(|h| Path::new(&h).join(".kube/config")) {
                Some(p) if p.exists() => KubeconfigSource::Files(vec![p]),
                _ => KubeconfigSource::InCluster,
            }
        };
        ClusterAccess {
            source,
            context: self.context.clone(),
        }
    }

    /// Connects, with errors that say what to check.
    pub async fn connect(&self) -> anyhow::Result<Cluster> {
        Cluster::connect(&self.access())
            .await
            .map_err(cluster_error)
    }
}

/// The library's error, with the CLI's hint where the user's flags are the likely cause.
pub fn cluster_error(e: coffer_resources::Error) -> anyhow::Error {
    match e {
        e @ coffer_resources::Error::Unreachable { .. } => {
            anyhow!("{e} (check --kubeconfig / KUBECONFIG and that the cluster is up)")
        }
        e @ coffer_resources::Error::Kubeconfig { .. } => {
            anyhow!("{e} (check --kubeconfig, KUBECONFIG and --context)")
        }
        e => e.into(),
    }
}
