//! Reading chunks back: one at a time, as ordered streams, and many at once grouped by
//! pack for restores. Every chunk is decrypted, decompressed (bounded by its indexed
//! size) and checked against its id; decryption runs off the async threads.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::error::{Error, Result};
use crate::id::{ChunkId, Id};
use crate::index_table::ChunkLocation;
use crate::pack::{self, BlobEntry};
use crate::repository::Repository;

/// A run of blobs of one pack read at once: (pack, start, end, blobs).
type Span = (Id, u64, u64, Vec<(ChunkId, ChunkLocation)>);

impl Repository {
    /// Reads, decrypts and verifies one chunk (trying every stored copy).
    pub async fn read_chunk(&self, id: &ChunkId) -> Result<Bytes> {
        let mut last_err = Error::ChunkNotFound(*id);
        for loc in self.locate(id) {
            match self.read_chunk_at(id, &loc).await {
                Ok(b) => return Ok(b),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    pub(crate) async fn read_chunk_at(&self, id: &ChunkId, loc: &ChunkLocation) -> Result<Bytes> {
        let path = pack::pack_path(&loc.pack);
        let sealed = match self
            .storage()
            .read_range(&path, loc.offset as u64, loc.length as u64)
            .await
        {
            Ok(b) => b,
            Err(Error::MissingObject { .. }) => {
                return Err(Error::DamagedChunk {
                    chunk: *id,
                    pack: loc.pack,
                    reason: "the pack is missing".into(),
                });
            }
            Err(Error::Corrupt { reason, .. }) => {
                return Err(Error::DamagedChunk {
                    chunk: *id,
                    pack: loc.pack,
                    reason,
                });
            }
            Err(e) => return Err(e),
        };
        let inner = self.inner.clone();
        let id2 = *id;
        let raw_length = loc.raw_length;
        let data = tokio::task::spawn_blocking(move || {
            pack::open_blob(&inner.keys, &id2, &sealed, raw_length)
        })
        .await
        .map_err(|e| Error::task("decrypting a chunk", e))?;
        data.map_err(|reason| Error::DamagedChunk {
            chunk: *id,
            pack: loc.pack,
            reason,
        })
    }

    /// Reads many chunks the way a restore needs them: grouped by pack and read in large
    /// sequential spans (adjacent blobs with small gaps merged, at most `SPAN_MAX` bytes),
    /// `concurrency` spans at a time, each span's blobs decrypted and verified off the
    /// async threads. Yields `(id, plaintext)` in pack order, each id once. Far fewer and
    /// larger reads than one `read_chunk` per chunk: on a cold cache or object storage
    /// this is the difference between seeking and streaming. A span that cannot be read
    /// or a blob that fails to verify falls back to `read_chunk` (other copies), whose
    /// error names the damaged chunk and pack.
    pub fn read_chunks_by_pack(
        &self,
        ids: &[ChunkId],
        concurrency: usize,
    ) -> Result<impl futures::Stream<Item = Result<Vec<(ChunkId, Bytes)>>> + '_> {
        const SPAN_MAX: u64 = 4 << 20;
        const GAP_MAX: u64 = 256 << 10;
        let mut located: Vec<(ChunkId, ChunkLocation)> = Vec::with_capacity(ids.len());
        let mut seen = std::collections::HashSet::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            let loc = self
                .locate(id)
                .into_iter()
                .next()
                .ok_or(Error::ChunkNotFound(*id))?;
            located.push((*id, loc));
        }
        located.sort_by_key(|(_, l)| (l.pack, l.offset));
        // Spans: (pack, start, end, blobs). Both the bytes read and the plaintext they
        // decode to stay under SPAN_MAX, which bounds memory per span in flight.
        let mut spans: Vec<Span> = Vec::new();
        let mut span_raw = 0u64;
        for (id, loc) in located {
            let (start, end) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
            match spans.last_mut() {
                Some((pack, s, e, blobs))
                    if *pack == loc.pack
                        && start >= *s
                        && start <= *e + GAP_MAX
                        && end.max(*e) - *s <= SPAN_MAX
                        && span_raw + loc.raw_length as u64 <= SPAN_MAX =>
                {
                    *e = (*e).max(end);
                    span_raw += loc.raw_length as u64;
                    blobs.push((id, loc));
                }
                _ => {
                    span_raw = loc.raw_length as u64;
                    spans.push((loc.pack, start, end, vec![(id, loc)]));
                }
            }
        }
        Ok(futures::stream::iter(spans)
            .map(move |(pack, start, end, blobs)| async move {
                let path = pack::pack_path(&pack);
                let span = self.storage().read_range(&path, start, end - start).await;
                let inner = self.inner.clone();
                let decoded: Vec<(ChunkId, Option<Bytes>)> =
                    tokio::task::spawn_blocking(move || {
                        blobs
                            .into_iter()
                            .map(|(id, loc)| {
                                let data = span.as_ref().ok().and_then(|span| {
                                    let from = usize::try_from(loc.offset as u64 - start).ok()?;
                                    let sealed = span.get(from..from + loc.length as usize)?;
                                    pack::open_blob(&inner.keys, &id, sealed, loc.raw_length).ok()
                                });
                                (id, data)
                            })
                            .collect()
                    })
                    .await
                    .map_err(|e| Error::task("decrypting chunks", e))?;
                let mut out = Vec::with_capacity(decoded.len());
                for (id, data) in decoded {
                    let data = match data {
                        Some(d) => d,
                        None => self.read_chunk(&id).await?,
                    };
                    out.push((id, data));
                }
                Ok(out)
            })
            .buffered(concurrency.max(1)))
    }

    /// Reads several chunks and concatenates them in order (at most
    /// [`limits::MAX_STREAM`](crate::limits::MAX_STREAM) bytes).
    pub async fn read_stream(&self, ids: &[ChunkId]) -> Result<Vec<u8>> {
        self.read_stream_limited(ids, crate::limits::MAX_STREAM)
            .await
    }

    /// Reads several chunks and concatenates them in order, refusing (before reading
    /// anything) a stream the index says is larger than `max_bytes`.
    pub async fn read_stream_limited(&self, ids: &[ChunkId], max_bytes: u64) -> Result<Vec<u8>> {
        let mut size = 0u64;
        for id in ids {
            let loc = self.locate(id);
            let first = loc.first().ok_or(Error::ChunkNotFound(*id))?;
            size += first.raw_length as u64;
            if size > max_bytes {
                return Err(Error::StreamTooLarge {
                    size: ids
                        .iter()
                        .filter_map(|i| self.locate(i).first().map(|l| l.raw_length as u64))
                        .sum(),
                    limit: max_bytes,
                });
            }
        }
        // By index: a closure over references makes this future not provably Send to
        // callers that spawn it (the operator's controllers).
        let parts: Vec<Bytes> = futures::stream::iter(0..ids.len())
            .map(|i| self.read_chunk(&ids[i]))
            .buffered(4)
            .try_collect()
            .await?;
        let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out)
    }

    /// Reads the blob list stored at the end of a pack (only its tail is fetched).
    pub async fn read_pack_header(&self, pack: &Id, size: u64) -> Result<Vec<BlobEntry>> {
        let path = pack::pack_path(pack);
        if size < pack::TRAILER_LEN as u64 {
            return Err(Error::corrupt(
                &path,
                format!("truncated: only {size} bytes"),
            ));
        }
        let storage = self.storage();
        let trailer = storage
            .read_range(
                &path,
                size - pack::TRAILER_LEN as u64,
                pack::TRAILER_LEN as u64,
            )
            .await?;
        let start = pack::header_start(&trailer, size).map_err(|r| Error::corrupt(&path, r))?;
        let sealed = storage
            .read_range(&path, start, size - pack::TRAILER_LEN as u64 - start)
            .await?;
        let entries =
            pack::open_header(self.keys(), pack, &sealed).map_err(|r| Error::corrupt(&path, r))?;
        pack::check_bounds(&entries, start).map_err(|r| Error::corrupt(&path, r))?;
        Ok(entries)
    }
}
