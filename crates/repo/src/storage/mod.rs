//! Where the repository's objects live: the [`Storage`] trait, its OpenDAL
//! implementation ([`OpendalStorage`], local filesystem and S3), and decorators that wrap
//! any storage (a fault injector for tests, behind the `fault-injection` feature).
//!
//! The repository uses only a handful of operations, and none modifies an object in
//! place: read (whole or a byte range), create-if-absent write (whole, or streamed for
//! large packs), list a prefix, stat, delete. Everything above this module talks to a
//! `dyn Storage`, so a caller can hand [`Repository::open`](crate::Repository::open) any
//! implementation, or wrap one in a decorator (as rustic's backends are wrapped), without
//! the repository knowing.
//!
//! Contract every implementation keeps (the repository's crash safety rests on it):
//! - an object appears under its name whole or not at all: [`Storage::write_new`] and a
//!   streamed object's [`ObjectWriter::close`] either publish all the bytes or nothing;
//! - writes never replace an object: an existing name fails with
//!   [`Error::ObjectExists`](crate::Error::ObjectExists);
//! - a missing object reads as [`Error::MissingObject`](crate::Error::MissingObject), a
//!   full store as [`Error::StorageFull`](crate::Error::StorageFull);
//! - [`Storage::list`] is recursive and returns nothing (not an error) for a prefix that
//!   does not exist; [`Storage::delete`] of a missing object succeeds.

mod location;
mod opendal_storage;

#[cfg(feature = "fault-injection")]
pub mod fault;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::error::Result;

pub use location::Location;
pub use opendal_storage::{OpendalStorage, S3Options, StorageOptions};

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Path relative to the repository root.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the storage reports one.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// The repository's storage. Object paths are relative to the repository root and use
/// `/` as separator (`packs/ab/ab12…`, `snapshots/…`).
pub trait Storage: Send + Sync {
    /// Where the storage is, for messages and for opening the same repository again.
    fn location(&self) -> &Location;

    /// Reads a whole object.
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes>>;

    /// Reads exactly `len` bytes at `offset`; an object too short for them is
    /// [`Error::Corrupt`](crate::Error::Corrupt) (truncated).
    fn read_range<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
        len: u64,
    ) -> BoxFuture<'a, Result<Bytes>>;

    /// Writes a new object, failing with [`Error::ObjectExists`](crate::Error::ObjectExists)
    /// if the name is taken. The object appears whole or not at all.
    fn write_new<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, Result<()>>;

    /// Starts a streamed new object (a pack): its parts are written one by one and it
    /// appears under its name only when [`ObjectWriter::close`] succeeds.
    fn create<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Box<dyn ObjectWriter>>>;

    /// Lists the objects under `prefix` (a directory such as `snapshots/`), recursively.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectInfo>>>;

    /// An object's size and time, or `None` when it does not exist.
    fn stat<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Option<ObjectInfo>>>;

    /// Deletes an object; deleting a missing object succeeds.
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A new object being streamed into storage (see [`Storage::create`]). Dropping it
/// without [`close`](ObjectWriter::close) abandons the object: nothing appears under its
/// name.
pub trait ObjectWriter: Send {
    /// Appends bytes to the object.
    fn write(&mut self, data: Bytes) -> BoxFuture<'_, Result<()>>;
    /// Completes the object: only now does it appear under its name.
    fn close(&mut self) -> BoxFuture<'_, Result<()>>;
}
