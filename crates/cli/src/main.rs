//! The `coffer` binary: the command-line edge over the library crates.
//!
//! Each command group lives in its own module and only parses arguments, calls the
//! library crates and prints results; no repository or Kubernetes logic lives here.

mod backup_cmd;
mod common;
#[cfg(feature = "dev-cluster")]
mod demo;
#[cfg(feature = "dev-cluster")]
mod dev;
mod kube_access;
mod operator_cmd;
mod repo_cmd;
mod resources_cmd;
mod restore_cmd;
mod volume_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Backup and restore for Kubernetes applications"
)]
struct Cli {
    #[command(flatten)]
    repo: common::RepoOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Repository management.
    #[command(subcommand)]
    Repo(repo_cmd::RepoCommand),
    /// Back up or restore one volume.
    #[command(subcommand)]
    Volume(volume_cmd::VolumeCommand),
    /// Back up, inspect and restore Kubernetes objects.
    #[command(subcommand)]
    Resources(Box<resources_cmd::ResourcesCommand>),
    /// Application backups run by the operator: create, get, describe, delete, logs.
    #[command(subcommand)]
    Backup(backup_cmd::BackupCommand),
    /// Application restores run by the operator: create, get, describe, delete, cancel.
    #[command(subcommand)]
    Restore(restore_cmd::RestoreCommand),
    /// Changed byte ranges (block) or changed files (fs) between two snapshots.
    Diff(volume_cmd::DiffArgs),
    /// List snapshots.
    Snapshots(repo_cmd::SnapshotsArgs),
    /// Forget snapshots by id or by a retention policy.
    Forget(repo_cmd::ForgetArgs),
    /// Remove data no snapshot needs (safe while backups run).
    Prune(repo_cmd::PruneArgs),
    /// Verify the repository's structure, and with --read-data every byte.
    Check(repo_cmd::CheckArgs),
    /// Copy snapshots to another repository.
    Copy(repo_cmd::CopyArgs),
    /// Manage key slots (passwords and raw keys).
    #[command(subcommand)]
    Key(repo_cmd::KeyCommand),
    /// Repository statistics.
    Stats(repo_cmd::StatsArgs),
    /// Print Coffer's CustomResourceDefinitions as YAML (what deploy/crds/ holds).
    Crds,
    /// Run the operator: the controllers of Coffer's custom resources (in a pod of the
    /// Deployment from deploy/).
    Operator(operator_cmd::OperatorArgs),
    /// Data-mover work (run by the operator in pods it starts).
    #[command(subcommand)]
    Mover(operator_cmd::MoverCommand),
    /// The main job on the embedded default: a local test cluster, the operator installed
    /// from deploy/, a sample app backed up through a Backup, its volumes restored and
    /// compared, the repository checked.
    #[cfg(feature = "dev-cluster")]
    Demo(demo::DemoArgs),
    /// Developer tools: a local test cluster.
    #[cfg(feature = "dev-cluster")]
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

fn main() -> std::process::ExitCode {
    // Chunk and pack buffers of a MiB and more are allocated on many threads; glibc gives
    // each thread its own heap, which holds freed memory. Two heaps keep peak memory near
    // what is really in use without slowing anything (bench/RESULTS.md).
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // A closed pipe (`coffer crds | head`) ends the process quietly, as it does for other
    // command-line tools, instead of a panic on the next print.
    // SAFETY: restoring the default disposition of a signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Logs only when COFFER_LOG asks for them (e.g. COFFER_LOG=info): errors and results
    // are printed by the commands themselves, one line each; and colours only on a
    // terminal, so that captured output stays plain text.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        let repo = cli.repo;
        match cli.command {
            Command::Repo(cmd) => repo_cmd::run(&repo, cmd).await,
            Command::Volume(c) => volume_cmd::run(&repo, c).await,
            Command::Resources(c) => resources_cmd::run(&repo, *c).await,
            Command::Backup(c) => backup_cmd::run(c).await,
            Command::Restore(c) => restore_cmd::run(c).await,
            Command::Diff(a) => volume_cmd::diff(&repo, a).await,
            Command::Snapshots(a) => repo_cmd::snapshots(&repo, a).await,
            Command::Forget(a) => repo_cmd::forget(&repo, a).await,
            Command::Prune(a) => repo_cmd::prune(&repo, a).await,
            Command::Check(a) => repo_cmd::check(&repo, a).await,
            Command::Copy(a) => repo_cmd::copy(&repo, a).await,
            Command::Key(c) => repo_cmd::key(&repo, c).await,
            Command::Stats(a) => repo_cmd::stats(&repo, a).await,
            Command::Crds => {
                for crd in coffer_api::crds() {
                    print!("---\n{}", coffer_api::crd_yaml(&crd));
                }
                Ok(())
            }
            Command::Operator(a) => operator_cmd::operator(a).await,
            Command::Mover(c) => operator_cmd::mover(&repo, c).await,
            #[cfg(feature = "dev-cluster")]
            Command::Demo(a) => demo::run(a).await,
            #[cfg(feature = "dev-cluster")]
            Command::Dev(cmd) => dev::run(cmd).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
