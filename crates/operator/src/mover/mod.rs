//! What data-mover pods run: `coffer mover backup` ([`backup`]: a volume's snapshot into
//! the repository, progress reported into its VolumeBackup) and `coffer mover restore`
//! ([`restore`]: a repository snapshot into a mounted PVC, the outcome printed as the
//! pod's last line of output for the operator to read).

pub mod backup;
pub mod restore;

pub use backup::{CbtArgs, MoverBackup, run};

/// Tag naming the PVC (`namespace/name`) a volume snapshot was made from.
pub const PVC_TAG: &str = "coffer.dev/pvc";
/// Tag naming the Backup (`namespace/name`).
pub const BACKUP_TAG: &str = "coffer.dev/backup";
