//! How long-running work reports what it is doing.
//!
//! Engines never print. A backup, restore, check or prune reports through [`Progress`],
//! and whoever started it decides what the reports become: the CLI draws bars on a
//! terminal (and logs otherwise), the operator writes them into a resource's status and
//! its metrics. Every method has a default that ignores the report, so an implementation
//! takes only what it shows.
//!
//! Reports are cheap calls made from any thread (engines call them from blocking tasks
//! too), so implementations keep them to an atomic add or a short lock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a stage's counts measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Bytes of data (read, written, verified).
    Bytes,
    /// Items: files, objects, packs, snapshots.
    Items,
}

/// The receiver of an engine's progress reports.
pub trait Progress: Send + Sync {
    /// A stage of the work begins (for example "reading", "writing", "verifying"); its
    /// counts are in `unit`, `total` when known in advance. Counts restart at zero.
    fn stage(&self, _name: &str, _unit: Unit, _total: Option<u64>) {}
    /// The stage's total became known or grew (a walk found more to do).
    fn set_total(&self, _total: u64) {}
    /// `n` more units of the stage are done.
    fn advance(&self, _n: u64) {}
    /// One item failed or needs attention, and the work goes on: `item` names it (a path,
    /// an object, a pack) and `message` says what is wrong.
    fn warn(&self, _item: &str, _message: &str) {}
}

/// A shared reference to a progress receiver, as engines hold it.
pub type SharedProgress = Arc<dyn Progress>;

/// Ignores every report.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A receiver that ignores everything, as a [`SharedProgress`].
pub fn none() -> SharedProgress {
    Arc::new(NoProgress)
}

/// Counts reports in atomics for a reader that samples them (a progress bar redrawn
/// every few hundred milliseconds, a status written every few seconds).
#[derive(Debug, Default)]
pub struct Counters {
    /// The current stage's total (0 while unknown).
    pub total: AtomicU64,
    /// Units done in the current stage.
    pub done: AtomicU64,
    /// Warnings reported so far, over all stages.
    pub warnings: AtomicU64,
    stage: Mutex<Option<(String, Unit)>>,
    messages: Mutex<Vec<(String, String)>>,
}

impl Counters {
    /// New counters, shared.
    pub fn new() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    /// The current stage and its unit, if one began.
    pub fn current_stage(&self) -> Option<(String, Unit)> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// (done, total) of the current stage.
    pub fn position(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// The warnings reported so far: (item, message).
    pub fn warnings(&self) -> Vec<(String, String)> {
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Progress for Counters {
    fn stage(&self, name: &str, unit: Unit, total: Option<u64>) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = Some((name.to_string(), unit));
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total.unwrap_or(0), Ordering::Relaxed);
    }
    fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
    }
    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
    fn warn(&self, item: &str, message: &str) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        self.messages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((item.to_string(), message.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_follow_stages() {
        let c = Counters::new();
        let p: SharedProgress = c.clone();
        p.stage("reading", Unit::Bytes, Some(10));
        p.advance(4);
        assert_eq!(c.position(), (4, 10));
        p.stage("writing", Unit::Items, None);
        assert_eq!(c.position(), (0, 0));
        p.set_total(3);
        p.advance(3);
        p.warn("a/b", "permission denied");
        assert_eq!(c.position(), (3, 3));
        assert_eq!(
            c.current_stage(),
            Some(("writing".to_string(), Unit::Items))
        );
        assert_eq!(
            c.warnings(),
            vec![("a/b".to_string(), "permission denied".to_string())]
        );
    }
}
