//! `coffer dev ...`: developer tools (the local test cluster).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum DevCommand {
    /// Run a local test cluster in the foreground: the real control plane (from
    /// KUBEBUILDER_ASSETS) with a simulated node and CSI storage, until SIGINT/SIGTERM.
    /// Writes DIR/kubeconfig for kubectl and coffer.
    Cluster {
        /// Directory for the cluster's files (certificates, etcd, logs, volumes, kubeconfig).
        #[arg(long)]
        dir: PathBuf,
        /// The coffer binary that containers with a Coffer image run (default: this binary).
        #[arg(long, env = "COFFER_BIN")]
        coffer_bin: Option<PathBuf>,
    },
}

pub async fn run(cmd: DevCommand) -> anyhow::Result<()> {
    match cmd {
        DevCommand::Cluster { dir, coffer_bin } => cluster(dir, coffer_bin).await,
    }
}

async fn cluster(dir: PathBuf, coffer_bin: Option<PathBuf>) -> anyhow::Result<()> {
    let coffer_bin = coffer_bin.or_else(|| std::env::current_exe().ok());
    let options = coffer_testcluster::Options {
        coffer_bin,
        ..Default::default()
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    let cluster = tokio::select! {
        c = coffer_testcluster::TestCluster::start_with(&dir, options) => c?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted during start-up"),
        _ = term.recv() => anyhow::bail!("terminated during start-up"),
    };
    println!(
        "cluster ready in {:.1}s: {}\nkubeconfig: {}\nexport KUBECONFIG={}",
        cluster.startup_time().as_secs_f64(),
        cluster.server_url(),
        cluster.kubeconfig_path().display(),
        cluster.kubeconfig_path().display()
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping the cluster");
    cluster.stop().await;
    Ok(())
}
