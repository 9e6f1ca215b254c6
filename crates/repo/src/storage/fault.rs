//! A storage decorator that injects faults at a chosen write, for tests that prove a
//! writer interrupted at *any* write leaves a repository that checks clean (feature
//! `fault-injection`; test equipment, not part of the product build).
//!
//! Every write counts: a whole-object write, each part of a streamed object, and each
//! streamed object's close. [`Fault::None`] only counts, so a test first learns how many
//! writes a run makes and then replays it with the fault at each of them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;

use super::{Location, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Error, Result};

/// Which fault to inject, at which write (counted from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: writes are only counted.
    None,
    /// Write `n` fails with a storage error; later writes succeed (a transient fault).
    FailWrite(u64),
    /// Writes up to `n` complete; then the process is gone: every later operation fails
    /// and nothing is cleaned up (kill -9 right after write `n`).
    KillAfter(u64),
    /// Write `n` leaves only the first half of its object under the final name (a store
    /// without atomic writes), then the process is gone as with [`Fault::KillAfter`].
    TornWrite(u64),
    /// Write `n` and every later write fail with
    /// [`Error::StorageFull`](crate::Error::StorageFull) (reads keep working).
    FullFrom(u64),
}

/// The fault-injecting decorator around any storage.
pub struct FaultyStorage {
    state: Arc<State>,
}

/// What the decorator and its streamed writers share.
struct State {
    inner: Arc<dyn Storage>,
    fault: Fault,
    writes: AtomicU64,
    killed: AtomicBool,
    torn: std::sync::Mutex<Option<String>>,
    /// A torn object is being written (the kill happened; its prefix is on the way).
    tearing: AtomicBool,
    torn_written: tokio::sync::Notify,
}

enum Verdict {
    Proceed,
    Fail(Error),
    Tear,
}

impl FaultyStorage {
    /// Wraps `inner`, injecting `fault`.
    pub fn new(inner: Arc<dyn Storage>, fault: Fault) -> Arc<FaultyStorage> {
        Arc::new(FaultyStorage {
            state: Arc::new(State {
                inner,
                fault,
                writes: AtomicU64::new(0),
                killed: AtomicBool::new(false),
                torn: std::sync::Mutex::new(None),
                tearing: AtomicBool::new(false),
                torn_written: tokio::sync::Notify::new(),
            }),
        })
    }

    /// Writes attempted so far.
    pub fn writes(&self) -> u64 {
        self.state.writes.load(Ordering::SeqCst)
    }

    /// True once a kill or torn write happened.
    pub fn killed(&self) -> bool {
        self.state.killed()
    }

    /// The object a [`Fault::TornWrite`] left half-written, once it happened.
    pub fn torn_path(&self) -> Option<String> {
        self.state
            .torn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until a torn object is completely in place (the write that tears may run
    /// in a background task that outlives the failed operation).
    pub async fn settled(&self) {
        loop {
            let written = self.state.torn_written.notified();
            if !self.state.tearing.load(Ordering::SeqCst) {
                return;
            }
            written.await;
        }
    }
}

impl State {
    fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    fn injected(&self, path: &str, what: &str) -> Error {
        Error::Storage {
            location: self.inner.location().to_string(),
            path: path.to_string(),
            source: format!("injected fault: {what}").into(),
        }
    }

    fn alive(&self, path: &str) -> Result<()> {
        if self.killed() {
            return Err(self.injected(path, "the process was killed"));
        }
        Ok(())
    }

    /// Counts one write and decides its fate.
    fn on_write(&self, path: &str) -> Verdict {
        if self.killed() {
            return Verdict::Fail(self.injected(path, "the process was killed"));
        }
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        match self.fault {
            Fault::FailWrite(k) if n == k => Verdict::Fail(self.injected(path, "write failed")),
            Fault::KillAfter(k) if n > k => {
                self.killed.store(true, Ordering::SeqCst);
                Verdict::Fail(self.injected(path, "the process was killed"))
            }
            Fault::TornWrite(k) if n == k => {
                // Dead from this instant: nothing else reaches the store.
                self.tearing.store(true, Ordering::SeqCst);
                *self.torn.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_string());
                self.killed.store(true, Ordering::SeqCst);
                Verdict::Tear
            }
            Fault::TornWrite(k) if n > k => {
                self.killed.store(true, Ordering::SeqCst);
                Verdict::Fail(self.injected(path, "the process was killed"))
            }
            Fault::FullFrom(k) if n >= k => Verdict::Fail(Error::StorageFull {
                location: self.inner.location().to_string(),
                path: path.to_string(),
            }),
            _ => Verdict::Proceed,
        }
    }

    /// Leaves the first half of `data` under `path`, then dies.
    async fn tear(&self, path: &str, data: Bytes) -> Result<()> {
        self.publish_torn(path, data.slice(..data.len() / 2)).await
    }

    /// Leaves exactly `prefix` under `path`, then dies.
    async fn publish_torn(&self, path: &str, prefix: Bytes) -> Result<()> {
        let _ = self.inner.write_new(path, prefix).await;
        self.tearing.store(false, Ordering::SeqCst);
        self.torn_written.notify_waiters();
        Err(self.injected(path, "the process was killed mid-write"))
    }
}

impl Storage for FaultyStorage {
    fn location(&self) -> &Location {
        self.state.inner.location()
    }
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            self.state.alive(path)?;
            self.state.inner.read(path).await
        })
    }
    fn read_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(async move {
            self.state.alive(path)?;
            self.state.inner.read_range(path, offset, len).await
        })
    }
    fn write_new<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.state.on_write(path) {
                Verdict::Proceed => self.state.inner.write_new(path, data).await,
                Verdict::Fail(e) => Err(e),
                Verdict::Tear => self.state.tear(path, data).await,
            }
        })
    }
    fn create<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>>> {
        Box::pin(async move {
            self.state.alive(path)?;
            if self.state.inner.stat(path).await?.is_some() {
                return Err(Error::ObjectExists {
                    location: self.state.inner.location().to_string(),
                    path: path.to_string(),
                });
            }
            let w: Box<dyn ObjectWriter> = Box::new(FaultyWriter {
                storage: self.state.clone(),
                path: path.to_string(),
                buffer: BytesMut::new(),
            });
            Ok(w)
        })
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>> {
        Box::pin(async move {
            self.state.alive(prefix)?;
            self.state.inner.list(prefix).await
        })
    }
    fn stat<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>>> {
        Box::pin(async move {
            self.state.alive(path)?;
            self.state.inner.stat(path).await
        })
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.state.alive(path)?;
            self.state.inner.delete(path).await
        })
    }
}

/// A streamed object through the decorator: parts are kept and published with one
/// whole-object write at close, so a fault at any part leaves nothing (or, torn, a
/// prefix) under the name.
struct FaultyWriter {
    storage: Arc<State>,
    path: String,
    buffer: BytesMut,
}

impl ObjectWriter for FaultyWriter {
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.storage.on_write(&self.path) {
                Verdict::Proceed => {
                    self.buffer.extend_from_slice(&data);
                    Ok(())
                }
                Verdict::Fail(e) => Err(e),
                Verdict::Tear => {
                    // What reached the store: the parts so far and half of this one.
                    self.buffer.extend_from_slice(&data[..data.len() / 2]);
                    let so_far = std::mem::take(&mut self.buffer).freeze();
                    self.storage.publish_torn(&self.path, so_far).await
                }
            }
        })
    }
    fn close(&mut self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let data = std::mem::take(&mut self.buffer).freeze();
            match self.storage.on_write(&self.path) {
                Verdict::Proceed => self.storage.inner.write_new(&self.path, data).await,
                Verdict::Fail(e) => Err(e),
                Verdict::Tear => self.storage.tear(&self.path, data).await,
            }
        })
    }
}
