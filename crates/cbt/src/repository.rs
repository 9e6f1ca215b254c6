//! Changed ranges from the repository's own records: two block snapshots of one volume
//! compared block by block through their block maps (equal chunk ids mean equal data), so
//! no volume is read. What `coffer diff` shows for block snapshots.

use coffer_repo::{Repository, Snapshot};
use coffer_volume::block::BlockMap;

use crate::error::{Error, Result};
use crate::ranges::ByteRange;

/// The byte ranges that differ between block snapshots `a` and `b` of one volume,
/// block-granular, sorted, adjacent ranges merged.
pub async fn diff(repo: &Repository, a: &Snapshot, b: &Snapshot) -> Result<Vec<ByteRange>> {
    let ma = BlockMap::load(repo, a).await?;
    let mb = BlockMap::load(repo, b).await?;
    if ma.block_size != mb.block_size {
        return Err(Error::Incomparable(format!(
            "the snapshots use different block sizes ({} and {} bytes)",
            ma.block_size, mb.block_size
        )));
    }
    if ma.volume_size != mb.volume_size {
        return Err(Error::Incomparable(format!(
            "the volumes differ in size ({} and {} bytes); diff compares snapshots of one volume",
            ma.volume_size, mb.volume_size
        )));
    }
    let mut out: Vec<ByteRange> = Vec::new();
    for (i, (x, y)) in ma.blocks.iter().zip(&mb.blocks).enumerate() {
        if x == y {
            continue;
        }
        let offset = i as u64 * ma.block_size as u64;
        let length = ma.block_len(i) as u64;
        match out.last_mut() {
            Some(last) if last.end() == offset => last.length += length,
            _ => out.push(ByteRange { offset, length }),
        }
    }
    Ok(out)
}
