//! Decoders reserve memory by what their input holds, never by the lengths it claims:
//! every allocation made while decoding hostile inputs of a few hundred bytes is counted
//! (a counting global allocator, per thread) and must stay small.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use coffer_volume::block::BlockMap;
use coffer_volume::fs::{Entry, FileChunk, Kind, decode_tree, encode_tree};

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The largest single allocation `f` makes on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|l| l.set(0));
    f();
    LARGEST.with(|l| l.get())
}

fn sample_entry() -> Entry {
    Entry {
        path: b"dir/file".to_vec(),
        kind: Kind::File,
        mode: 0o100644,
        uid: 1000,
        gid: 1000,
        mtime_ns: 1,
        atime_ns: 2,
        ctime_ns: 3,
        ino: 4,
        size: 10,
        rdev: 0,
        target: Vec::new(),
        xattrs: vec![(b"user.a".to_vec().into(), b"v".to_vec().into())],
        chunks: vec![FileChunk {
            offset: 0,
            len: 10,
            id: [9; 32],
        }],
    }
}

/// Every MessagePack array, map, bin and str header in `encoded` in turn replaced by one
/// of the same kind claiming 2^32 - 1 elements or bytes.
fn huge_claims(encoded: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (at, &b) in encoded.iter().enumerate() {
        let (marker, header_len) = match b {
            0x90..=0x9f => (0xdd, 1),
            0x80..=0x8f => (0xdf, 1),
            0xa0..=0xbf => (0xdb, 1),
            0xc4 => (0xc6, 2),
            _ => continue,
        };
        let mut v = encoded.to_vec();
        v.splice(at..at + header_len, [marker, 0xff, 0xff, 0xff, 0xff]);
        out.push(v);
    }
    out
}

#[test]
fn file_tree_claims_reserve_nothing_they_do_not_hold() {
    let encoded = encode_tree(&[sample_entry(), sample_entry()]);
    let inputs = huge_claims(&encoded);
    assert!(inputs.len() >= 8, "{}", inputs.len());
    for input in inputs {
        // (A replaced byte inside an integer may still decode to something: only the
        // allocations matter here; the property tests check the errors.)
        let largest = largest_allocation(|| drop(decode_tree(&input)));
        assert!(
            largest <= 16 << 10,
            "decoding {} bytes allocated {largest} bytes at once",
            input.len()
        );
    }
}

#[test]
fn block_map_claims_reserve_nothing_they_do_not_hold() {
    // Headers whose block count agrees with a huge volume size, over a few records.
    for (volume_size, block_size) in [
        (290u64 << 40, 1u32 << 20),
        (u64::MAX, 4096),
        (u64::MAX, 1),
        (1 << 50, 1 << 26),
    ] {
        let n = volume_size.div_ceil(block_size.max(1) as u64);
        let mut map = b"CBMP0001".to_vec();
        map.extend_from_slice(&volume_size.to_le_bytes());
        map.extend_from_slice(&block_size.to_le_bytes());
        map.extend_from_slice(&n.to_le_bytes());
        map.extend_from_slice(&[0u8; 100]);
        let mut result = None;
        let largest = largest_allocation(|| result = Some(BlockMap::decode(&map)));
        assert!(result.unwrap().is_err());
        assert!(largest <= 4 << 10, "allocated {largest} bytes at once");
    }
    // A sound map of 100 blocks reserves for those 100.
    let map = BlockMap {
        volume_size: 100 * 4096,
        block_size: 4096,
        blocks: vec![None; 100],
    }
    .encode();
    let mut decoded = None;
    let largest = largest_allocation(|| decoded = Some(BlockMap::decode(&map)));
    assert_eq!(decoded.unwrap().unwrap().blocks.len(), 100);
    assert!(largest <= 100 * 33, "{largest}");
}
