//! `coffer volume backup|restore` and `coffer diff`: the data mover from the CLI.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use coffer_repo::{ParentChoice, SharedProgress, SnapshotKind};
use coffer_volume::{block, fs};

use crate::common::{self, RepoOpts};
use crate::repo_cmd::human_bytes;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Back up a block device, raw image or directory tree.
    Backup(BackupArgs),
    /// Restore a volume snapshot.
    Restore(RestoreArgs),
}

#[derive(Args)]
pub struct BackupArgs {
    /// Block device, image file or directory.
    pub path: PathBuf,
    /// Treat PATH as a block volume (default for files and block devices).
    #[arg(long, conflicts_with = "fs")]
    pub block: bool,
    /// Treat PATH as a directory tree (default for directories).
    #[arg(long)]
    pub fs: bool,
    #[arg(long = "tag", value_name = "K=V")]
    pub tags: Vec<String>,
    /// Parent snapshot id, or "auto" (newest with the same kind, path and tags).
    #[arg(long, value_name = "ID|auto")]
    pub parent: Option<String>,
    /// JSON file of changed byte ranges since the parent: [{"offset":N,"length":N},...].
    #[arg(long, value_name = "FILE")]
    pub changed_ranges: Option<PathBuf>,
    /// Read everything, even image files and files the parent shows unchanged (same size,
    /// times and inode).
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// Snapshot id (prefix) or "latest".
    pub id: String,
    /// Where to restore: a file, block device or directory.
    #[arg(long)]
    pub target: PathBuf,
    /// File-system snapshots: restore only paths matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Block snapshots: write only the blocks that differ from the existing target.
    #[arg(long)]
    pub delta: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DiffArgs {
    pub a: String,
    pub b: String,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(opts: &RepoOpts, cmd: VolumeCommand) -> Result<()> {
    match cmd {
        VolumeCommand::Backup(a) => backup(opts, a).await,
        VolumeCommand::Restore(a) => restore(opts, a).await,
    }
}

async fn backup(opts: &RepoOpts, a: BackupArgs) -> Result<()> {
    let meta = std::fs::metadata(&a.path)
        .with_context(|| format!("cannot back up {}", a.path.display()))?;
    let is_block = if a.block {
        true
    } else if a.fs {
        false
    } else {
        meta.is_file() || meta.file_type().is_block_device()
    };
    if is_block && meta.is_dir() {
        bail!(
            "{} is a directory: use --fs (or no flag) for directory trees",
            a.path.display()
        );
    }
    let tags = common::parse_tags(&a.tags)?;
    let repo = opts.open().await?;
    let source = block::canonical(&a.path);
    let kind = if is_block {
        SnapshotKind::Block
    } else {
        SnapshotKind::Fs
    };
    let parent = repo
        .resolve_parent(
            &ParentChoice::from_flag(a.parent.as_deref()),
            &kind,
            &source.display().to_string(),
            &tags,
        )
        .await?;
    let changed_ranges = match (&a.changed_ranges, is_block) {
        (Some(_), false) => bail!("--changed-ranges applies to block volumes only"),
        (Some(f), true) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let ranges =
                coffer_cbt::parse_changed_ranges(&text).with_context(|| f.display().to_string())?;
            Some(ranges.into_iter().map(Into::into).collect())
        }
        (None, _) => None,
    };
    let human = |s: &coffer_volume::BackupSummary| {
        format!(
            "snapshot {} of {} ({}): read {}, added {} in {:.1}s{}",
            &s.snapshot_id[..8],
            s.source,
            human_bytes(s.bytes_total),
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_new),
            s.duration_s,
            s.parent
                .as_ref()
                .map(|p| format!(", parent {}", &p[..8]))
                .unwrap_or_default()
        )
    };
    with_progress("backup", a.json, human, |progress| async {
        if is_block {
            block::backup(
                &repo,
                block::BlockBackup {
                    source: &source,
                    tags,
                    parent,
                    changed_ranges,
                    allocated_ranges: None,
                    force: a.force,
                    progress,
                },
            )
            .await
        } else {
            fs::backup(
                &repo,
                fs::FsBackup {
                    source: &source,
                    tags,
                    parent,
                    force: a.force,
                    progress,
                },
            )
            .await
        }
    })
    .await
    .map(drop)
}

/// Runs a volume operation with a progress bar (on a terminal) and prints its result:
/// JSON with `--json`, else one human line. Returns the result for further checks.
async fn with_progress<T, F, Fut>(
    label: &str,
    json: bool,
    human: impl FnOnce(&T) -> String,
    run: F,
) -> Result<T>
where
    T: serde::Serialize,
    F: FnOnce(SharedProgress) -> Fut,
    Fut: std::future::Future<Output = coffer_volume::Result<T>>,
{
    let bar = common::ProgressBars::new(label);
    let result = run(bar.clone()).await;
    bar.finish();
    let summary = result?;
    if json {
        common::print_json(&summary)?;
    } else {
        println!("{}", human(&summary));
    }
    Ok(summary)
}

/// Fails (after the summary was printed) when a restore refused entries, naming them; the
/// reasons were reported as warnings while it ran and are in `refused` of `--json`.
fn refused_entries(s: &coffer_volume::RestoreSummary) -> Result<()> {
    const NAMED: usize = 10;
    if s.refused.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = s
        .refused
        .iter()
        .take(NAMED)
        .map(|r| format!("{:?}", r.path))
        .collect();
    if s.refused.len() > NAMED {
        names.push(format!("and {} more", s.refused.len() - NAMED));
    }
    bail!(
        "restore of snapshot {} refused {} entr{} (damaged or unsafe metadata, or a directory in the way in the target): {}; everything else was restored. The warnings above give each reason; `coffer check` reports damaged snapshots",
        &s.snapshot_id[..8],
        s.refused.len(),
        if s.refused.len() == 1 { "y" } else { "ies" },
        names.join(", ")
    )
}

async fn restore(opts: &RepoOpts, a: RestoreArgs) -> Result<()> {
    let repo = opts.open().await?;
    let snap = repo.find_snapshot(&a.id).await?;
    match &snap.kind {
        SnapshotKind::Block if !a.include.is_empty() => {
            bail!("--include applies to file-system snapshots only")
        }
        SnapshotKind::Fs if a.delta => bail!("--delta applies to block snapshots only"),
        SnapshotKind::Block | SnapshotKind::Fs => {}
        other => bail!(
            "snapshot {} is a {other} snapshot; `coffer volume restore` restores block and fs snapshots",
            snap.id.short()
        ),
    }
    let human = |s: &coffer_volume::RestoreSummary| {
        format!(
            "restored snapshot {} to {}: wrote {} of {} in {:.1}s",
            &s.snapshot_id[..8],
            s.target,
            human_bytes(s.bytes_written),
            human_bytes(s.bytes_total),
            s.duration_s
        )
    };
    let summary = with_progress("restore", a.json, human, |progress| async {
        if snap.kind == SnapshotKind::Block {
            block::restore(
                &repo,
                &snap,
                block::BlockRestore {
                    target: &a.target,
                    delta: a.delta,
                    progress,
                },
            )
            .await
        } else {
            fs::restore(
                &repo,
                &snap,
                fs::FsRestore {
                    target: &a.target,
                    include: a.include.clone(),
                    progress,
                },
            )
            .await
        }
    })
    .await?;
    refused_entries(&summary)
}

pub async fn diff(opts: &RepoOpts, a: DiffArgs) -> Result<()> {
    let repo = opts.open().await?;
    let x = repo.find_snapshot(&a.a).await?;
    let y = repo.find_snapshot(&a.b).await?;
    if x.kind != y.kind {
        bail!(
            "cannot diff a {} snapshot with a {} snapshot",
            x.kind,
            y.kind
        );
    }
    match x.kind.as_str() {
        "block" => {
            let ranges = coffer_cbt::repository::diff(&repo, &x, &y).await?;
            if a.json {
                return common::print_json(&ranges);
            }
            let total: u64 = ranges.iter().map(|r| r.length).sum();
            for r in &ranges {
                println!("{:>14} {:>12}", r.offset, r.length);
            }
            println!("{} changed range(s), {}", ranges.len(), human_bytes(total));
        }
        "fs" => {
            let changes = fs::diff(&repo, &x, &y).await?;
            if a.json {
                return common::print_json(&changes);
            }
            for c in &changes {
                let mark = match c.change {
                    fs::ChangeKind::Added => "+",
                    fs::ChangeKind::Removed => "-",
                    fs::ChangeKind::Modified => "M",
                    fs::ChangeKind::Metadata => "U",
                };
                println!("{mark} {}", c.path);
            }
            println!("{} change(s)", changes.len());
        }
        other => bail!("diff supports block and fs snapshots, not {other}"),
    }
    Ok(())
}
