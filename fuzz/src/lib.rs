//! # tessera-fuzz
//!
//! Seeded fuzz drivers for every parser of tessera that reads untrusted bytes, on
//! stable Rust: safetensors checkpoints and their metadata, the model checkpoints of
//! the three families, IDX, CIFAR-10, CSV, image files and folders, the BPE JSON, the
//! character vocabulary, TOML run configurations and the text given to `translate` and
//! `sample`.
//!
//! Each driver ([`Driver`]) has real seed files made in code with the library itself,
//! and each case mutates one of them (or draws random bytes) with a ChaCha generator
//! keyed by the parser's name, a seed and the case index ([`input::case_rng`]), so any
//! failure replays from `--parser NAME --seed S --case N`. The runner
//! ([`runner::run_cases`]) runs each input under `catch_unwind`, times it, and measures
//! its largest allocation with [`CountingAlloc`] against
//! [`runner::bound`] (`64 × input + 64 MiB`).
#![warn(missing_docs)]

pub mod alloc;
pub mod drivers;
pub mod input;
pub mod runner;
pub mod seeds;

use std::path::Path;

pub use alloc::CountingAlloc;
pub use input::{CaseRng, Input, Kind, Seed};
pub use runner::{run_cases, Failure, FailureKind, Options, Report};

/// One parser under test.
pub trait Driver {
    /// The seed files inputs are mutated from.
    fn seeds(&self) -> &[Seed];

    /// How many files an input has (the parts of every seed).
    fn parts(&self) -> usize {
        1
    }

    /// A mutation that knows the format (a safetensors header rewritten as JSON, a PNG
    /// chunk changed with its checksum fixed); the default draws a generic one.
    fn mutate(&self, input: &mut Input, rng: &mut CaseRng) {
        if let Some(s) = input.seed {
            let p = rand::Rng::random_range(rng, 0..input.parts.len());
            input::mutate_generic(input, p, self.seeds(), s, rng);
        }
    }

    /// The largest single allocation an input of `len` bytes may make (by default
    /// [`runner::bound`], `64 × len + 64 MiB`).
    fn bound(&self, len: usize) -> usize {
        runner::bound(len)
    }

    /// Runs the parser on `input`, writing its files under `dir` (a folder of this
    /// driver's own). `Ok` when the input was accepted, `Err` with the parser's error
    /// message when it was refused; both are fine, a panic is not.
    fn run(&self, input: &Input, dir: &Path) -> Result<(), String>;
}

/// A parser's entry in [`PARSERS`].
pub struct Entry {
    /// The name given to `--parser`.
    pub name: &'static str,
    /// What the driver feeds, for `--list`.
    pub about: &'static str,
    /// Builds the driver (seeds, models); errors when a seed cannot be made.
    pub make: fn() -> Result<Box<dyn Driver>, String>,
}

/// Every driver, in the order of the report.
pub const PARSERS: &[Entry] = &[
    Entry {
        name: "safetensors",
        about: "SafeTensorsFile::open, names, entries, metadata, get, load_all; metadata_fields",
        make: drivers::tensor::safetensors,
    },
    Entry {
        name: "checkpoint",
        about: "load_checkpoint (strict and not) and VarMap::load into a small model",
        make: drivers::tensor::checkpoint,
    },
    Entry {
        name: "metadata-json",
        about: "TrainProgress, the rnn/transformer/vit configs from a checkpoint's JSON, validate",
        make: drivers::tensor::metadata_json,
    },
    Entry {
        name: "model-load",
        about: "load_model / CharLm::load and the trainers' resume of all three families",
        make: drivers::tensor::model_load,
    },
    Entry {
        name: "idx",
        about: "Idx::open_with_classes on an image file and a label file, then every sample",
        make: drivers::data::idx,
    },
    Entry {
        name: "cifar10",
        about: "Cifar10::open on one and two batch files, then every sample",
        make: drivers::data::cifar10,
    },
    Entry {
        name: "csv",
        about: "CsvImages::open (label first and last), with_classes, open_images on a .csv",
        make: drivers::data::csv,
    },
    Entry {
        name: "image",
        about: "decode_image and load_image, each in one of the colour modes (PNG, JPEG, GIF, ...)",
        make: drivers::data::image,
    },
    Entry {
        name: "image-folder",
        about: "ImageFolder::open (skip and fail) and get, open_images on a folder of two classes",
        make: drivers::data::image_folder,
    },
    Entry {
        name: "bpe",
        about: "Bpe::from_json, then encode, decode and read_bpe",
        make: drivers::text::bpe,
    },
    Entry {
        name: "char-vocab",
        about: "CharVocab::from_text, from_chars, encode, decode; read_vocab; BpttBatches",
        make: drivers::text::char_vocab,
    },
    Entry {
        name: "toml-config",
        about: "a run configuration's TOML: the command's flag table and the public config types",
        make: drivers::text::toml_config,
    },
    Entry {
        name: "text-input",
        about:
            "text to translate and sample: BPE and CharVocab encoding, Corpus, translate, sample",
        make: drivers::text::text_input,
    },
];

/// The entry of parser `name`.
pub fn parser(name: &str) -> Option<&'static Entry> {
    PARSERS.iter().find(|e| e.name == name)
}
