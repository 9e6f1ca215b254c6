//! zstd compression of chunks and metadata objects, with decompression bounded by what
//! the frame declares and by a limit the caller sets: a small hostile object never
//! expands into gigabytes.

use crate::error::{Error, Result};

/// Compression of chunk payloads, chosen at `repo init`; the first plaintext byte of every
/// chunk says which was used ([`RAW`] or [`ZSTD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd at this level (-7..=22).
    Zstd(i32),
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd(3)),
            _ => {
                if let Some(l) = s.strip_prefix("zstd:")
                    && let Ok(level) = l.parse::<i32>()
                    && (-7..=22).contains(&level)
                {
                    return Ok(Compression::Zstd(level));
                }
                Err(Error::InvalidOption {
                    option: "compression",
                    reason: format!("{s:?}: use zstd, zstd:LEVEL (-7..22) or none"),
                })
            }
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

/// Compression byte: the rest of the plaintext is stored as is.
pub const RAW: u8 = 0;
/// Compression byte: the rest of the plaintext is one zstd frame with its content size.
pub const ZSTD: u8 = 1;

/// Compression contexts are costly to set up (tables of up to megabytes, cleared on
/// creation) and large to keep, so a few are shared: at most one per core, which is also
/// as many compressions as can usefully run at once. A thread that finds none free waits.
struct CompressorPool {
    /// Idle contexts with the level each was last set to, and how many exist.
    idle: std::sync::Mutex<(Vec<(i32, zstd::bulk::Compressor<'static>)>, usize)>,
    freed: std::sync::Condvar,
    max: usize,
}

static COMPRESSORS: std::sync::LazyLock<CompressorPool> =
    std::sync::LazyLock::new(|| CompressorPool {
        idle: std::sync::Mutex::new((Vec::new(), 0)),
        freed: std::sync::Condvar::new(),
        max: std::thread::available_parallelism().map_or(2, |n| n.get()),
    });

thread_local! {
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// One-shot zstd compression of `data` into `out` (a standard frame with its content
/// size); None when it does not fit.
pub(crate) fn compress_into(level: i32, data: &[u8], out: &mut [u8]) -> Option<usize> {
    let pool = &*COMPRESSORS;
    let (mut set_to, mut ctx) = {
        let mut guard = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let (idle, created) = &mut *guard;
            if let Some(pos) = idle.iter().position(|(l, _)| *l == level) {
                break idle.swap_remove(pos);
            }
            if let Some(any) = idle.pop() {
                break any;
            }
            if *created < pool.max {
                *created += 1;
                drop(guard);
                match zstd::bulk::Compressor::new(level) {
                    Ok(c) => break (level, c),
                    Err(_) => {
                        pool.idle.lock().unwrap_or_else(|e| e.into_inner()).1 -= 1;
                        return None;
                    }
                }
            }
            guard = pool.freed.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    };
    let mut n = None;
    if set_to == level || ctx.set_compression_level(level).is_ok() {
        set_to = level;
        n = ctx.compress_to_buffer(data, out).ok();
    }
    pool.idle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .0
        .push((set_to, ctx));
    pool.freed.notify_one();
    n
}

/// Compresses `data` whole into one frame that records its content size, with a context
/// of its own (metadata objects are written from async tasks, which must not wait for
/// the chunk compressors); None when that fails (out of memory): the caller stores the
/// data raw.
pub(crate) fn compress(level: i32, data: &[u8]) -> Option<Vec<u8>> {
    zstd::bulk::compress(data, level).ok()
}

/// Decompresses exactly one zstd frame whose declared content size is at most `limit`
/// (and equals `expected` when given) into a buffer of that size. Frames without a
/// declared size, with trailing bytes, or that decode to another length are refused, so
/// the allocation is known before any byte is decoded.
pub(crate) fn decompress_bounded(
    frame: &[u8],
    expected: Option<usize>,
    limit: usize,
) -> std::result::Result<Vec<u8>, String> {
    let declared = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) => n,
        Ok(None) => return Err("zstd frame does not declare its size".into()),
        Err(_) => return Err("not a zstd frame".into()),
    };
    if declared > limit as u64 {
        return Err(format!(
            "zstd frame declares {declared} bytes, more than the {limit} allowed"
        ));
    }
    let declared = declared as usize;
    if let Some(e) = expected
        && e != declared
    {
        return Err(format!(
            "zstd frame declares {declared} bytes where {e} are expected"
        ));
    }
    match zstd::zstd_safe::find_frame_compressed_size(frame) {
        Ok(n) if n == frame.len() => {}
        Ok(_) => return Err("bytes follow the zstd frame".into()),
        Err(_) => return Err("truncated or damaged zstd frame".into()),
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let Some(ctx) = d.as_mut() else {
            return Err("no zstd context".to_string());
        };
        let mut out = Vec::with_capacity(declared);
        ctx.decompress_to_buffer(frame, &mut out)
            .map_err(|e| format!("decompression failed: {e}"))?;
        if out.len() != declared {
            return Err(format!(
                "zstd frame decodes to {} bytes, not the {declared} it declares",
                out.len()
            ));
        }
        Ok(out)
    })
}

/// A cheap pre-check that skips compressing data that will not shrink (random or already
/// compressed): compress a small sample at the fastest level and see if it shrinks.
pub(crate) fn looks_compressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 16 * 1024;
    if data.len() <= 2 * SAMPLE {
        return true;
    }
    let mid = data.len() / 2;
    let samples = [
        &data[..SAMPLE],
        &data[mid..mid + SAMPLE],
        &data[data.len() - SAMPLE..],
    ];
    let mut out = [0u8; SAMPLE * 97 / 100];
    samples
        .iter()
        .any(|s| compress_into(1, s, &mut out).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bounded_round_trip_and_bombs() {
        let data = b"abc".repeat(10_000);
        let frame = compress(3, &data).unwrap();
        assert_eq!(decompress_bounded(&frame, None, 1 << 20).unwrap(), data);
        assert_eq!(
            decompress_bounded(&frame, Some(data.len()), data.len()).unwrap(),
            data
        );
        // Over the limit, or not the expected size: refused before decoding.
        assert!(decompress_bounded(&frame, None, data.len() - 1).is_err());
        assert!(decompress_bounded(&frame, Some(5), 1 << 20).is_err());
        // A bomb: 256 MiB of zeros in a few kB; refused under a 1 MiB limit.
        let zeros = vec![0u8; 256 << 20];
        let bomb = compress(19, &zeros).unwrap();
        drop(zeros);
        assert!(bomb.len() < 64 << 10);
        assert!(decompress_bounded(&bomb, None, 1 << 20).is_err());
        // Trailing bytes, truncation, a frame without its size.
        let mut trailing = frame.clone();
        trailing.push(0);
        assert!(decompress_bounded(&trailing, None, 1 << 20).is_err());
        assert!(decompress_bounded(&frame[..frame.len() - 1], None, 1 << 20).is_err());
        let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        std::io::Write::write_all(&mut enc, &data).unwrap();
        let sizeless = enc.finish().unwrap();
        assert!(decompress_bounded(&sizeless, None, 1 << 20).is_err());
    }

    proptest! {
        #![proptest_config(crate::limits::proptest_config())]

        #[test]
        fn decompress_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress_bounded(&bytes, None, 1 << 16);
        }

        #[test]
        fn mutated_frames_error_or_round_trip(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = compress(3, &data).unwrap();
            prop_assert_eq!(decompress_bounded(&frame, Some(data.len()), 4096).unwrap(), data.clone());
            let mut bad = frame.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            if let Ok(out) = decompress_bounded(&bad, None, 4096) {
                prop_assert!(out.len() <= 4096);
            }
            let c = cut.index(frame.len());
            prop_assert!(decompress_bounded(&frame[..c], None, 4096).is_err());
        }
    }
}
