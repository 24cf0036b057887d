//! The drivers, by the crate whose parsers they feed: checkpoints and their metadata
//! ([`tensor`]), data files ([`data`]) and text ([`text`]).

pub mod data;
pub mod tensor;
pub mod text;

use std::path::{Path, PathBuf};

use rand::Rng as _;

use crate::input::{mutate_generic, mutate_json, CaseRng, Input, Seed};
use crate::Driver;

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

/// A driver of one JSON document: its seeds, mutated node by node seven times in ten
/// (generically when that fails or otherwise), and the parser to run on it.
pub(crate) struct Json {
    pub seeds: Vec<Seed>,
    pub run: fn(&Input) -> Result<(), String>,
}

impl Driver for Json {
    fn seeds(&self) -> &[Seed] {
        &self.seeds
    }

    fn mutate(&self, input: &mut Input, rng: &mut CaseRng) {
        let Some(s) = input.seed else { return };
        match mutate_json(&input.parts[0], rng) {
            Some(j) if rng.random_bool(0.7) => input.parts[0] = j,
            _ => mutate_generic(input, 0, &self.seeds, s, rng),
        }
    }

    fn run(&self, input: &Input, _: &Path) -> Result<(), String> {
        (self.run)(input)
    }
}
