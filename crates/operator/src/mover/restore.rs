//! A restore data mover, as it runs inside its pod (`coffer mover restore`): opens the
//! repository from the Secret the operator made, writes one volume snapshot into the
//! mounted PVC (a directory, or a block device), and prints the outcome as its last line
//! of output, which the operator reads from the pod's log once it has ended. It needs no
//! access to the Kubernetes API: a populator's mover writes into a prime PVC that no one
//! else sees, and its ServiceAccount may read nothing.

use std::path::PathBuf;

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
