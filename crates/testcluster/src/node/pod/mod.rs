//! Running one pod: volumes, init and app containers as host processes in private mount
//! namespaces, restart policy with back-off, status reporting and graceful deletion.
//!
//! [`lifecycle`] drives a pod from start to deletion; [`status`] holds and reports its
//! state; [`volumes`] prepares its volumes on the host; [`launch`] resolves what each
//! container runs; [`spawn`] starts the processes.

mod launch;
mod lifecycle;
mod spawn;
mod status;
mod volumes;

pub use lifecycle::{final_delete, run_pod};
pub(crate) use spawn::spawn_exec;
pub use spawn::{RootEntry, prepare_rootfs};
pub use status::PodRuntime;
