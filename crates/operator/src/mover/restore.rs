//! A restore data mover, as it runs inside its pod (`coffer mover restore`): opens the
//! repository from the Secret the operator made, writes one volume snapshot into the
//! mounted PVC (a directory, or a block device), and prints the outcome as its last line
//! of output, which the operator reads from the pod's log once it has ended. It needs no
//! access to the Kubernetes API: a populator's mover writes into a prime PVC that no one
//! else sees, and its ServiceAccount may read nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use coffer_repo::{Repository, SharedProgress, SnapshotKind};
use coffer_volume::{RestoreSummary, block, fs};

use crate::error::{Error, Result};

/// Where a mover writes a Filesystem volume.
pub const FS_TARGET: &str = "/data";
/// Where a mover writes a Block volume.
pub const BLOCK_TARGET: &str = "/dev/coffer-target";
/// The prefix of the line that carries the outcome (JSON of [`RestoreSummary`]).
pub const RESULT_PREFIX: &str = "coffer-mover-result: ";

/// One volume's restore.
pub struct MoverRestore {
    /// The repository snapshot (id or unique prefix).
    pub snapshot: String,
    /// The mounted volume (a directory) or device.
    pub target: PathBuf,
    /// Block (true) or file tree.
    pub block: bool,
    /// Block only: write only the blocks that differ from what the target holds.
    pub delta: bool,
    /// File tree only: first remove what the target holds and the snapshot does not (a
    /// restore into a volume in use: the volume ends as it was backed up).
    pub delete_extra: bool,
}

/// Restores `m.snapshot` into `m.target`. A snapshot of the wrong kind, a damaged one and
/// a file tree with entries the restore refused are errors: a PVC is populated whole or
/// not at all.
pub async fn run(
    repo: &Repository,
    m: &MoverRestore,
    progress: SharedProgress,
) -> Result<RestoreSummary> {
    let snap = repo.find_snapshot(&m.snapshot).await?;
    let want = if m.block {
        SnapshotKind::Block
    } else {
        SnapshotKind::Fs
    };
    if snap.kind != want {
        return Err(Error::Invalid(format!(
            "snapshot {} is a {} snapshot; this volume needs a {} snapshot (the PVC's volumeMode differs from the backed-up volume's)",
            m.snapshot,
            snap.kind.as_str(),
            want.as_str()
        )));
    }
    let summary = if m.block {
        block::restore(
            repo,
            &snap,
            block::BlockRestore {
                target: &m.target,
                delta: m.delta,
                progress,
            },
        )
        .await?
    } else {
        if m.delete_extra {
            let entries = fs::load_tree(repo, &snap).await?;
            remove_extra(&m.target, &entries)?;
        }
        fs::restore(
            repo,
            &snap,
            fs::FsRestore {
                target: &m.target,
                include: Vec::new(),
                progress,
            },
        )
        .await?
    };
    if !summary.refused.is_empty() {
        let first: Vec<String> = summary
            .refused
            .iter()
            .take(3)
            .map(|r| format!("{}: {}", r.path, r.reason))
            .collect();
        return Err(Error::Failed(format!(
            "{} entries of snapshot {} were refused ({}{}): run `coffer check` on the repository",
            summary.refused.len(),
            m.snapshot,
            first.join("; "),
            if summary.refused.len() > 3 {
                "; ..."
            } else {
                ""
            }
        )));
    }
    Ok(summary)
}

/// Removes every entry under `root` that `entries` (a snapshot's tree) does not hold with
/// the same kind of entry (a directory where the snapshot has a file would stop the
/// restore). Symbolic links are never followed: the walk descends only into real
/// directories, so nothing outside `root` is touched.
fn remove_extra(root: &Path, entries: &[fs::Entry]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let kinds: HashMap<&[u8], fs::Kind> = entries
        .iter()
        .map(|e| (e.path.as_slice(), e.kind))
        .collect();
    let io = |p: &Path, e: std::io::Error| Error::Failed(format!("{}: {e}", p.display()));
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for item in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
            let item = item.map_err(|e| io(&dir, e))?;
            let path = item.path();
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let ft = item.file_type().map_err(|e| io(&path, e))?;
            let wanted = match kinds.get(rel.as_os_str().as_bytes()) {
                None => false,
                Some(fs::Kind::Dir) => ft.is_dir(),
                Some(_) => !ft.is_dir(),
            };
            if wanted {
                if ft.is_dir() {
                    dirs.push(path);
                }
            } else if ft.is_dir() {
                // remove_dir_all does not follow the links inside.
                std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
            } else {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// The line a mover prints last.
pub fn result_line(summary: &RestoreSummary) -> String {
    format!(
        "{RESULT_PREFIX}{}",
        serde_json::to_string(summary).unwrap_or_default()
    )
}

/// The outcome in a mover's log (its last result line), if it printed one.
pub fn parse_result(log: &str) -> Option<RestoreSummary> {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_PREFIX))
        .and_then(|j| serde_json::from_str(j).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_line_round_trips_through_a_log() {
        let s = RestoreSummary {
            snapshot_id: "ab".repeat(32),
            target: "/data".into(),
            bytes_total: 10,
            bytes_written: 7,
            blocks_changed: None,
            files: Some(2),
            duration_s: 0.5,
            refused: Vec::new(),
        };
        let log = format!("restoring\n{}\n", result_line(&s));
        assert_eq!(parse_result(&log), Some(s));
        assert_eq!(parse_result("no result here\n"), None);
    }
}
