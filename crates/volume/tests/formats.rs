//! Property tests of the metadata formats (block map, file tree) and of the tree's
//! validation: round trips are exact, and arbitrary or damaged bytes (bit flips,
//! truncations, huge length fields) give an error, never a panic.
//!
//! Cases per property: proptest's default (256), or `PROPTEST_CASES=N`; CI runs
//! `PROPTEST_CASES=4000 cargo nextest run -p coffer-volume --test formats` in seconds.

use coffer_repo::Id;
use coffer_volume::block::BlockMap;
use coffer_volume::fs::validate::check_path;
use coffer_volume::fs::{Entry, FileChunk, Kind, Validation, decode_tree, encode_tree};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => Just(Kind::File),
        3 => Just(Kind::Dir),
        1 => Just(Kind::Symlink),
        1 => Just(Kind::Hardlink),
        1 => Just(Kind::CharDev),
        1 => Just(Kind::BlockDev),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::Socket),
    ]
}

/// Path bytes from a small alphabet, so that separators, dots, repeats and NULs are
/// common, and now and then any byte.
fn path() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(b'a'),
            2 => Just(b'b'),
            3 => Just(b'/'),
            2 => Just(b'.'),
            1 => Just(0u8),
            1 => any::<u8>(),
        ],
        0..8,
    )
}

fn chunk() -> impl Strategy<Value = FileChunk> {
    (0u64..64, 0u32..16, any::<[u8; 32]>()).prop_map(|(offset, len, id)| FileChunk {
        offset,
        len,
        id,
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        (path(), kind(), any::<u32>(), any::<u32>(), any::<u32>()),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<u64>()),
        (0u64..80, any::<u64>(), path()),
        prop::collection::vec(
            (
                prop::collection::vec(any::<u8>(), 0..6),
                prop::collection::vec(any::<u8>(), 0..6),
            ),
            0..3,
        ),
        prop::collection::vec(chunk(), 0..4),
    )
        .prop_map(
            |(
                (path, kind, mode, uid, gid),
                (mtime_ns, atime_ns, ctime_ns, ino),
                (size, rdev, target),
                xattrs,
                chunks,
            )| {
                Entry {
                    path,
                    kind,
                    mode,
                    uid,
                    gid,
                    mtime_ns,
                    atime_ns,
                    ctime_ns,
                    ino,
                    size,
                    rdev,
                    target,
                    xattrs: xattrs
                        .into_iter()
                        .map(|(n, v)| (n.into(), v.into()))
                        .collect(),
                    chunks,
                }
            },
        )
}

/// Trees that are often valid: a root, then entries whose paths are sorted.
fn tree() -> impl Strategy<Value = Vec<Entry>> {
    (any::<bool>(), prop::collection::vec(entry(), 0..24)).prop_map(|(sorted, mut entries)| {
        if sorted {
            entries.sort_by(|a, b| {
                a.path
                    .split(|&c| c == b'/')
                    .cmp(b.path.split(|&c| c == b'/'))
            });
            let mut root = entries
                .first()
                .cloned()
                .unwrap_or_else(|| Entry::new(Vec::new(), Kind::Dir, 0o40755));
            root.path.clear();
            root.kind = Kind::Dir;
            root.chunks.clear();
            entries.insert(0, root);
        }
        entries
    })
}

fn block_map() -> impl Strategy<Value = BlockMap> {
    (12u32..=26, 0usize..40, 1u64..=4096, any::<u64>()).prop_flat_map(
        |(shift, n, last_frac, seed)| {
            let block_size = 1u32 << shift;
            let volume_size = if n == 0 {
                0
            } else {
                (n as u64 - 1) * block_size as u64 + (block_size as u64 * last_frac).div_ceil(4096)
            };
            prop::collection::vec(prop::option::of(any::<[u8; 32]>()), n).prop_map(move |blocks| {
                BlockMap {
                    volume_size,
                    block_size,
                    blocks: blocks
                        .into_iter()
                        .map(|b| {
                            b.map(|mut id| {
                                id[0] ^= seed as u8;
                                Id(id)
                            })
                        })
                        .collect(),
                }
            })
        },
    )
}

/// A damaged copy of `b`.
#[derive(Clone, Debug)]
enum Damage {
    /// Flip bit `bit` of byte `at`.
    Flip { at: usize, bit: u8 },
    /// Keep only the first `len` bytes.
    Truncate { len: usize },
    /// Put a MessagePack length header claiming 2^32 - 1 at `at` (array, map, bin, str).
    HugeLength {
        at: usize,
        marker: u8,
        replace: bool,
    },
    /// Overwrite 8 bytes at `at` with a huge little-endian number (block map fields).
    HugeField { at: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
        any::<usize>().prop_map(|len| Damage::Truncate { len }),
        (
            any::<usize>(),
            prop::sample::select(vec![0xddu8, 0xdf, 0xc6, 0xdb]),
            any::<bool>()
        )
            .prop_map(|(at, marker, replace)| Damage::HugeLength {
                at,
                marker,
                replace
            }),
        any::<usize>().prop_map(|at| Damage::HugeField { at }),
    ]
}

fn apply(b: &[u8], d: &Damage) -> Vec<u8> {
    let mut out = b.to_vec();
    if out.is_empty() {
        return out;
    }
    match *d {
        Damage::Flip { at, bit } => {
            let at = at % out.len();
            out[at] ^= 1 << bit;
        }
        Damage::Truncate { len } => out.truncate(len % out.len()),
        Damage::HugeLength {
            at,
            marker,
            replace,
        } => {
            let at = at % out.len();
            let header = [marker, 0xff, 0xff, 0xff, 0xff];
            if replace {
                let end = (at + 5).min(out.len());
                out.splice(at..end, header);
            } else {
                out.splice(at..at, header);
            }
        }
        Damage::HugeField { at } => {
            let at = at % out.len();
            let end = (at + 8).min(out.len());
            out.splice(at..end, u64::MAX.to_le_bytes()[..end - at].iter().copied());
        }
    }
    out
}

/// What a restore or check does with a decoded tree: validation must not panic either,
/// and what it accepts must obey the rules.
fn validate_and_verify(entries: &[Entry]) {
    let v = Validation::of(entries);
    let mut last_accepted: Option<&[u8]> = None;
    for (i, e) in entries.iter().enumerate() {
        if !v.is_accepted(i) {
            continue;
        }
        if let Some(last) = last_accepted {
            assert!(
                last.split(|&c| c == b'/')
                    .cmp(e.path.split(|&c| c == b'/'))
                    .is_lt(),
                "accepted entries out of order: {last:?} then {:?}",
                e.path
            );
        }
        last_accepted = Some(&e.path);
        match v.parent(i) {
            None => {
                assert_eq!(i, 0);
                assert!(e.path.is_empty() && e.kind == Kind::Dir);
            }
            Some(p) => {
                assert!(p < i);
                assert!(v.is_accepted(p));
                assert_eq!(entries[p].kind, Kind::Dir);
                check_path(&e.path).unwrap();
                let parent: &[u8] = match e.path.iter().rposition(|&c| c == b'/') {
                    Some(k) => &e.path[..k],
                    None => b"",
                };
                assert_eq!(entries[p].path, parent);
            }
        }
        if e.kind == Kind::File {
            let mut end = 0;
            for c in &e.chunks {
                assert!(c.len > 0 && c.offset >= end);
                end = c.offset + c.len as u64;
            }
            assert!(end <= e.size);
        } else {
            assert!(e.chunks.is_empty());
        }
    }
    for &(l, f) in v.links() {
        let (l, f) = (l as usize, f as usize);
        assert!(f < l && v.is_accepted(l) && v.is_accepted(f));
        assert_eq!(entries[f].kind, Kind::File);
        assert_eq!(entries[f].path, entries[l].target);
    }
    for &(i, _) in v.problems() {
        assert!(!v.is_accepted(i as usize));
    }
}

proptest! {
    #[test]
    fn file_tree_round_trips(entries in tree()) {
        let encoded = encode_tree(&entries);
        prop_assert_eq!(decode_tree(&encoded).unwrap(), entries);
    }

    #[test]
    fn block_map_round_trips(map in block_map()) {
        let encoded = map.encode();
        prop_assert_eq!(BlockMap::decode(&encoded).unwrap(), map);
    }

    #[test]
    fn validation_accepts_only_what_the_rules_allow(entries in tree()) {
        validate_and_verify(&entries);
    }

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(entries) = decode_tree(&bytes) {
            validate_and_verify(&entries);
        }
        let _ = BlockMap::decode(&bytes);
        let mut with_magic = b"CBMP0001".to_vec();
        with_magic.extend_from_slice(&bytes);
        let _ = BlockMap::decode(&with_magic);
    }

    #[test]
    fn damaged_file_trees_are_errors_not_panics(entries in tree(), d in damage()) {
        let encoded = encode_tree(&entries);
        let damaged = apply(&encoded, &d);
        match decode_tree(&damaged) {
            Ok(decoded) => {
                // MessagePack is prefix-free: no strict prefix decodes.
                prop_assert!(!matches!(d, Damage::Truncate { .. }), "a truncated tree decoded");
                validate_and_verify(&decoded);
            }
            Err(e) => prop_assert!(e.to_string().contains("file tree")),
        }
    }

    #[test]
    fn damaged_block_maps_are_errors_not_panics(map in block_map(), d in damage()) {
        let encoded = map.encode();
        let damaged = apply(&encoded, &d);
        match BlockMap::decode(&damaged) {
            Ok(decoded) => {
                prop_assert!(!matches!(d, Damage::Truncate { .. }), "a truncated map decoded");
                prop_assert_eq!(decoded.blocks.len() as u64, decoded.volume_size.div_ceil(decoded.block_size as u64));
            }
            Err(e) => prop_assert!(e.to_string().contains("block map")),
        }
    }
}

#[test]
fn huge_claimed_lengths_are_errors() {
    let tree = vec![Entry::new(Vec::new(), Kind::Dir, 0o40755)];
    let mut encoded = encode_tree(&tree);
    assert_eq!(encoded[0], 0x91, "a one-entry tree starts with fixarray(1)");
    encoded.splice(0..1, [0xdd, 0xff, 0xff, 0xff, 0xff]);
    let err = decode_tree(&encoded).unwrap_err().to_string();
    assert!(err.contains("entry 1"), "{err}");

    // The block map of a 290 TB volume in 1 MiB blocks, with nothing behind the header.
    let mut map = b"CBMP0001".to_vec();
    let blocks: u64 = 290 << 20;
    map.extend_from_slice(&(blocks << 20).to_le_bytes());
    map.extend_from_slice(&(1u32 << 20).to_le_bytes());
    map.extend_from_slice(&blocks.to_le_bytes());
    let err = BlockMap::decode(&map).unwrap_err().to_string();
    assert!(err.contains("only 0 bytes of records follow"), "{err}");
    // Block size 1 (once a capacity overflow) and other sizes out of range.
    for bs in [0u32, 1, 2048, 4097, 128 << 20] {
        let mut map = b"CBMP0001".to_vec();
        map.extend_from_slice(&u64::MAX.to_le_bytes());
        map.extend_from_slice(&bs.to_le_bytes());
        map.extend_from_slice(&u64::MAX.to_le_bytes());
        let err = BlockMap::decode(&map).unwrap_err().to_string();
        assert!(
            err.contains("is not a power of two from 4096"),
            "{bs}: {err}"
        );
    }
}
