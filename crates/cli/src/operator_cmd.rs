//! `coffer operator` (the in-cluster controllers) and `coffer mover ...` (what a
//! data-mover pod runs): flags and the pod's environment read here, the work done by
//! crates/operator.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::common::{self, RepoOpts};

/// `coffer operator`.
#[derive(Args)]
pub struct OperatorArgs {
    /// The namespace the operator runs in (its Lease lives there).
    #[arg(long, env = "POD_NAMESPACE", default_value = "coffer-system")]
    namespace: String,
    /// This replica's identity (the Lease holder).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The image data-mover pods run.
    #[arg(long, env = "COFFER_MOVER_IMAGE", default_value = "coffer:latest")]
    mover_image: String,
    /// At most this many data-mover pods at once.
    #[arg(long, default_value_t = 4)]
    max_movers: usize,
    /// Serve /metrics and /healthz here ("" to not serve them).
    #[arg(long, env = "COFFER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: String,
    /// Act at once instead of taking the leader Lease (one replica only).
    #[arg(long)]
    no_leader_election: bool,
}

pub async fn operator(a: OperatorArgs) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the API server (in a pod: its ServiceAccount; else KUBECONFIG)")?;
    let identity = a
        .identity
        .unwrap_or_else(|| format!("coffer-operator-{}", std::process::id()));
    let mut config = coffer_operator::OperatorConfig::new(
        a.namespace,
        identity,
        common::client_options().cache_dir,
    );
    config.mover_image = a.mover_image;
    config.max_movers = a.max_movers.max(1);
    config.leader_election = !a.no_leader_election;
    config.metrics_addr = if a.metrics_addr.is_empty() {
        None
    } else {
        Some(
            a.metrics_addr
                .parse::<SocketAddr>()
                .with_context(|| format!("--metrics-addr {:?} is not HOST:PORT", a.metrics_addr))?,
        )
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        r = coffer_operator::run(client, config) => {
            let reason = r?;
            bail!("operator stopped: {reason}")
        }
        _ = term.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// `coffer mover ...`.
#[derive(Subcommand)]
pub enum MoverCommand {
    /// Back one volume up into the repository and report into its VolumeBackup (run by
    /// the operator in a data-mover pod).
    Backup(MoverBackupArgs),
    /// Restore one volume snapshot into a mounted PVC (run by the volume populator in a
    /// data-mover pod); the last line of output is the outcome as JSON.
    Restore(MoverRestoreArgs),
}

#[derive(Args)]
pub struct MoverRestoreArgs {
    /// The repository snapshot (id or unique prefix).
    #[arg(long)]
    snapshot: String,
    /// The mounted volume (directory) or block device to write.
    #[arg(long)]
    target: PathBuf,
    /// What the volume is.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Block only: write only the blocks that differ from what the target holds.
    #[arg(long)]
    delta: bool,
    /// File tree only: first remove what the target holds and the snapshot does not.
    #[arg(long)]
    delete: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Fs,
    Block,
}

#[derive(Args)]
pub struct MoverBackupArgs {
    /// The VolumeBackup to report into.
    #[arg(long)]
    volume_backup: String,
    /// Its namespace.
    #[arg(long)]
    namespace: String,
    /// The mounted volume (directory) or block device.
    #[arg(long)]
    source: PathBuf,
    /// What the volume is.
    #[arg(long, value_enum)]
    mode: Mode,
    /// The repository snapshot unchanged data comes from.
    #[arg(long)]
    parent: Option<String>,
    /// The SnapshotMetadata service (host:port).
    #[arg(long, requires_all = ["cbt_ca_file", "cbt_token_file", "cbt_target"])]
    cbt_address: Option<String>,
    /// Its CA certificate (PEM).
    #[arg(long)]
    cbt_ca_file: Option<PathBuf>,
    /// An audience-scoped ServiceAccount token for it.
    #[arg(long)]
    cbt_token_file: Option<PathBuf>,
    /// The VolumeSnapshot being copied.
    #[arg(long)]
    cbt_target: Option<String>,
    /// The CSI handle of the base snapshot (changed blocks since it are read).
    #[arg(long)]
    cbt_base: Option<String>,
}

pub async fn mover(repo: &RepoOpts, cmd: MoverCommand) -> Result<()> {
    match cmd {
        MoverCommand::Backup(a) => {
            let client = kube::Client::try_default()
                .await
                .context("cannot reach the API server")?;
            let repository = repo.open().await?;
            let cbt = match a.cbt_address {
                Some(address) => Some(coffer_operator::mover::CbtArgs {
                    address,
                    ca_file: a.cbt_ca_file.expect("required by clap"),
                    token_file: a.cbt_token_file.expect("required by clap"),
                    target: a.cbt_target.expect("required by clap"),
                    base: a.cbt_base,
                    audience: String::new(),
                }),
                None => None,
            };
            let status = coffer_operator::mover::run(
                &repository,
                client,
                coffer_operator::mover::MoverBackup {
                    volume_backup: a.volume_backup,
                    namespace: a.namespace,
                    source: a.source,
                    block: matches!(a.mode, Mode::Block),
                    parent: a.parent,
                    cbt,
                    pod: std::env::var("POD_NAME").ok(),
                },
            )
            .await?;
            common::print_json(&status)
        }
        MoverCommand::Restore(a) => {
            let repository = repo.open().await?;
            let block = matches!(a.mode, Mode::Block);
            if a.delta && !block {
                bail!("--delta applies to block volumes only");
            }
            if a.delete && block {
                bail!("--delete applies to file trees only");
            }
            let counters = coffer_repo::progress::Counters::new();
            // Progress in the pod's log every ten seconds (`kubectl logs`).
            let reporter = {
                let c = counters.clone();
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                        let (done, total) = c.position();
                        eprintln!(
                            "restored {} of {}",
                            coffer_repo::human_bytes(done),
                            coffer_repo::human_bytes(total)
                        );
                    }
                })
            };
            let summary = coffer_operator::mover::restore::run(
                &repository,
                &coffer_operator::mover::restore::MoverRestore {
                    snapshot: a.snapshot,
                    target: a.target,
                    block,
                    delta: a.delta,
                    delete_extra: a.delete,
                },
                counters,
            )
            .await;
            reporter.abort();
            let summary = summary?;
            println!("{}", coffer_operator::mover::restore::result_line(&summary));
            Ok(())
        }
    }
}
