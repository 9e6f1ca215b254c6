//! Byte ranges: what changed in a block volume, as every source reports it.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `length` bytes starting at `offset`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

impl ByteRange {
    /// The byte after the last one (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }
}

impl From<ByteRange> for Range<u64> {
    fn from(r: ByteRange) -> Range<u64> {
        r.offset..r.end()
    }
}

impl From<Range<u64>> for ByteRange {
    fn from(r: Range<u64>) -> ByteRange {
        ByteRange {
            offset: r.start,
            length: r.end.saturating_sub(r.start),
        }
    }
}

/// Parses a changed-ranges JSON document: `[{"offset": N, "length": N}, ...]`, in any
/// order, overlaps allowed; returns them sorted and merged. A range that ends past
/// `u64::MAX` is refused.
pub fn parse_changed_ranges(text: &str) -> Result<Vec<ByteRange>> {
    let ranges: Vec<ByteRange> = serde_json::from_str(text).map_err(|e| {
        Error::BadRanges(format!(
            "{e} (expected a JSON array of {{\"offset\": BYTES, \"length\": BYTES}})"
        ))
    })?;
    if let Some(r) = ranges
        .iter()
        .find(|r| r.offset.checked_add(r.length).is_none())
    {
        return Err(Error::BadRanges(format!(
            "range at offset {} with length {} ends past the largest possible volume",
            r.offset, r.length
        )));
    }
    Ok(coalesce(ranges))
}

/// Sorts ranges and merges the ones that overlap or touch; empty ranges are dropped.
pub fn coalesce(ranges: impl IntoIterator<Item = ByteRange>) -> Vec<ByteRange> {
    let mut v: Vec<ByteRange> = ranges.into_iter().filter(|r| r.length > 0).collect();
    v.sort_unstable();
    let mut out: Vec<ByteRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.offset <= last.end() => {
                let end = last.end().max(r.end());
                last.length = end - last.offset;
            }
            _ => out.push(r),
        }
    }
    out
}

/// Checks and collects ranges as a server streams them: each must be non-empty, start at
/// or after the end of the previous one (the protocol promises strictly increasing,
/// non-overlapping ranges) and end within the volume. Adjacent ranges are merged, so a
/// volume reported block by block costs memory in proportion to its changed extents, not
/// its blocks.
#[derive(Debug, Default)]
pub(crate) struct RangeCollector {
    pub(crate) ranges: Vec<ByteRange>,
    /// The end of the last range received (where a resumed call starts).
    pub(crate) next_offset: u64,
}

impl RangeCollector {
    pub(crate) fn push(&mut self, offset: i64, size: i64, capacity: u64) -> Result<(), String> {
        let (Ok(offset), Ok(size)) = (u64::try_from(offset), u64::try_from(size)) else {
            return Err(format!("negative range ({offset}, {size})"));
        };
        if size == 0 {
            return Err(format!("empty range at offset {offset}"));
        }
        let end = offset
            .checked_add(size)
            .filter(|e| *e <= capacity)
            .ok_or_else(|| {
                format!("range at {offset} of {size} bytes ends past the volume's {capacity} bytes")
            })?;
        if offset < self.next_offset {
            return Err(format!(
                "range at {offset} starts before the end of the previous one ({})",
                self.next_offset
            ));
        }
        match self.ranges.last_mut() {
            Some(last) if last.end() == offset => last.length += size,
            _ => self.ranges.push(ByteRange {
                offset,
                length: size,
            }),
        }
        self.next_offset = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(offset: u64, length: u64) -> ByteRange {
        ByteRange { offset, length }
    }

    #[test]
    fn parse_sorts_merges_and_refuses_overflow() {
        let got = parse_changed_ranges(
            r#"[{"offset": 8192, "length": 4096}, {"offset": 0, "length": 4096},
                {"offset": 4096, "length": 10}, {"offset": 100000, "length": 0}]"#,
        )
        .unwrap();
        assert_eq!(got, vec![r(0, 4106), r(8192, 4096)]);
        let err = parse_changed_ranges(r#"[{"offset": 18446744073709551615, "length": 2}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ends past"), "{err}");
        let err = parse_changed_ranges("{}").unwrap_err().to_string();
        assert!(err.contains("expected a JSON array"), "{err}");
    }

    #[test]
    fn collector_checks_the_protocol() {
        let mut c = RangeCollector::default();
        c.push(0, 4096, 1 << 20).unwrap();
        c.push(4096, 4096, 1 << 20).unwrap();
        c.push(12288, 4096, 1 << 20).unwrap();
        assert_eq!(c.ranges, vec![r(0, 8192), r(12288, 4096)]);
        assert_eq!(c.next_offset, 16384);
        assert!(c.push(8192, 4096, 1 << 20).unwrap_err().contains("before"));
        assert!(c.push(20000, 0, 1 << 20).unwrap_err().contains("empty"));
        assert!(c.push(-1, 10, 1 << 20).unwrap_err().contains("negative"));
        assert!(c.push(1 << 20, 1, 1 << 20).unwrap_err().contains("past"));
        assert!(c.push(i64::MAX - 10, 100, i64::MAX as u64).is_err());
    }

    proptest! {
        #[test]
        fn coalesce_covers_exactly_the_same_bytes(
            input in proptest::collection::vec((0u64..10_000, 0u64..500), 0..40)
        ) {
            let ranges: Vec<ByteRange> = input.iter().map(|&(o, l)| r(o, l)).collect();
            let out = coalesce(ranges.clone());
            // Sorted, disjoint and not touching.
            for w in out.windows(2) {
                prop_assert!(w[0].end() < w[1].offset);
            }
            for byte in 0..10_500u64 {
                let inside_in = ranges.iter().any(|r| r.offset <= byte && byte < r.end());
                let inside_out = out.iter().any(|r| r.offset <= byte && byte < r.end());
                prop_assert_eq!(inside_in, inside_out);
            }
        }
    }
}
