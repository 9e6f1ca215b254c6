//! `--include`: which entries of a tree a restore selects.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::tree::{Entry, Kind};
use crate::{Error, Result};

/// Which entries `--include` globs select: matches, their ancestors, and the contents of
/// matched directories (hard links pull in their first name too).
pub(crate) fn select(entries: &[Entry], include: &[String]) -> Result<Vec<bool>> {
    if include.is_empty() {
        return Ok(vec![true; entries.len()]);
    }
    let mut b = globset::GlobSetBuilder::new();
    for g in include {
        let glob = globset::GlobBuilder::new(g.trim_start_matches('/'))
            .literal_separator(false)
            .build()
            .map_err(|e| Error::Invalid(format!("--include {g:?}: {e}")))?;
        b.add(glob);
    }
    let set = b.build().map_err(|e| Error::Invalid(e.to_string()))?;
    let mut sel = vec![false; entries.len()];
    let mut matched_dirs: Vec<Vec<u8>> = Vec::new();
    let index: HashMap<&[u8], usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_slice(), i))
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let p = Path::new(OsStr::from_bytes(&e.path));
        let inside = matched_dirs
            .iter()
            .any(|d| e.path.starts_with(d) && e.path.get(d.len()) == Some(&b'/'));
        if inside || (!e.path.is_empty() && set.is_match(p)) {
            sel[i] = true;
            if e.kind == Kind::Dir {
                matched_dirs.push(e.path.clone());
            }
            if e.kind == Kind::Hardlink
                && let Some(&j) = index.get(e.target.as_slice())
            {
                sel[j] = true;
            }
        }
    }
    // Ancestors of everything selected.
    for i in 0..entries.len() {
        if !sel[i] {
            continue;
        }
        let mut p = entries[i].path.as_slice();
        while let Some(pos) = p.iter().rposition(|&c| c == b'/') {
            p = &p[..pos];
            if let Some(&j) = index.get(p) {
                sel[j] = true;
            }
        }
        if let Some(&j) = index.get(&b""[..]) {
            sel[j] = true;
        }
    }
    // A hard link's first name may come after nothing selected it; sel covers it above.
    Ok(sel)
}
