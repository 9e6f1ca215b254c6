//! Metadata streams written piece by piece.
//!
//! [`Writer::add_stream`] chunks a stream it is given whole. A layer that produces its
//! metadata incrementally (a catalog with one line per stored object) would have to hold
//! all of it first; a [`StreamWriter`] takes it in pieces instead and holds at most one
//! chunk's worth (the chunker's `max`) plus the piece being added.
//!
//! The chunks are exactly those [`Writer::add_stream`] makes of the same bytes, whatever
//! the pieces: FastCDC's cut point after an offset depends only on the `max` bytes that
//! follow it, so a chunk is only cut once that many bytes (or the end of the stream) are
//! buffered behind its start. Equal streams therefore dedup whichever way they were
//! written.

use bytes::Bytes;

use crate::error::Result;
use crate::id::ChunkId;
use crate::pack::BlobKind;
use crate::writer::Writer;

/// A metadata stream being written; [`StreamWriter::finish`] returns its chunk ids.
pub struct StreamWriter {
    writer: Writer,
    kind: BlobKind,
    min: u32,
    avg: u32,
    max: u32,
    /// Bytes not yet cut into chunks.
    buf: Vec<u8>,
    ids: Vec<ChunkId>,
    len: u64,
}

impl StreamWriter {
    /// Starts a stream of blobs of `kind` in `writer`'s session.
    pub fn new(writer: &Writer, kind: BlobKind) -> StreamWriter {
        let p = writer.repository().config().chunker;
        StreamWriter {
            writer: writer.clone(),
            kind,
            min: p.min,
            avg: p.avg,
            max: p.max,
            buf: Vec::new(),
            ids: Vec::new(),
            len: 0,
        }
    }

    /// Appends bytes to the stream, storing every chunk that is complete.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(data);
        self.len += data.len() as u64;
        // A little slack past `max` so that each cut stores at least one chunk without
        // rescanning the buffer for every small piece.
        if self.buf.len() >= self.max as usize + (self.max as usize / 16).max(4096) {
            self.cut(false).await?;
        }
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores what is left and returns the stream's chunk ids in order.
    pub async fn finish(mut self) -> Result<Vec<ChunkId>> {
        self.cut(true).await?;
        Ok(self.ids)
    }

    /// Stores the chunks whose cut point is certain (all of them at the end).
    async fn cut(&mut self, at_end: bool) -> Result<()> {
        let cuts: Vec<(usize, usize)> =
            fastcdc::v2020::FastCDC::new(&self.buf, self.min, self.avg, self.max)
                .map(|c| (c.offset, c.length))
                .collect();
        let mut consumed = 0;
        for (offset, length) in cuts {
            if !at_end && self.buf.len() - offset < self.max as usize {
                break;
            }
            let part = Bytes::copy_from_slice(&self.buf[offset..offset + length]);
            self.ids.push(self.writer.add(self.kind, part).await?.id);
            consumed = offset + length;
        }
        self.buf.drain(..consumed);
        if self.buf.capacity() > 2 * (self.max as usize) {
            self.buf
                .shrink_to(self.max as usize + self.max as usize / 8);
        }
        Ok(())
    }
}
