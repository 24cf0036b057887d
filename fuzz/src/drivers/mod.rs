//! The drivers, by the crate whose parsers they feed: checkpoints and their metadata
//! ([`tensor`]), data files ([`data`]) and text ([`text`]).

pub mod data;
pub mod tensor;
pub mod text;

use std::path::{Path, PathBuf};

/// Writes `bytes` to `dir/name` and returns the path (a write error is a harness
/// failure, not the parser's: it panics).
pub(crate) fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}

/// An error as the message a driver returns.
pub(crate) fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}
