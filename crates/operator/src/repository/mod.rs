//! Repositories as the cluster sees them: BackupRepository and ClusterBackupRepository
//! objects opened (and created when asked), their status kept current, and the access
//! the backup workflow and the data movers use.

pub mod access;
pub mod controller;

pub use access::{RepositoryAccess, settings_of, unavailable_message};
