//! # tessera-data
//!
//! Data for tessera models.
//!
//! **Text**: a character vocabulary ([`CharVocab`]) and the batching of one long token
//! stream into parallel streams for truncated backpropagation through time
//! ([`BpttBatches`]); a byte-level BPE vocabulary ([`Bpe`]) and token-count batching of
//! sentence pairs ([`token_batches`]).
//!
//! **Images**: images as `[C, H, W]` `f32` tensors in `[0, 1]` ([`load_image`],
//! [`decode_image`], [`save_png`]); [`resize`] equal to PyTorch's `F.interpolate`
//! (nearest, bilinear, bicubic, with or without antialiasing) on the last two axes of
//! any tensor; torchvision's crops, flips and normalisation; [`patches`] and
//! [`unpatch`] for a ViT's patch tokens.
//!
//! **Datasets and loading**: the [`Dataset`] trait with MNIST/Fashion-MNIST IDX files
//! ([`Idx`]), CIFAR-10 binary batches ([`Cifar10`]), CSV rows ([`CsvImages`]), folders
//! of image files ([`ImageFolder`]), a generated set of shapes that needs no files
//! ([`Shapes`]), [`Subset`]s and a seeded [`split`]; a [`Loader`] that shuffles with a
//! seed, augments deterministically and builds batches on worker threads.
//!
//! **Features** (both on by default): `image` for the image files ([`load_image`],
//! [`decode_image`], [`save_png`], [`ImageFolder`]; the `image` crate's decoders) and
//! `bpe` for [`Bpe`] (the `tokenizers` crate). Everything else, resizing and the IDX,
//! CIFAR-10 and CSV datasets included, needs neither.
//!
//! ```
//! use tessera_data::{BpttBatches, CharVocab};
//! let text = "to be or not to be";
//! let vocab = CharVocab::from_text(text)?;
//! let ids = vocab.encode(text)?;
//! assert_eq!(vocab.decode(&ids)?, text);
//! let batches = BpttBatches::new(&ids, 2, 4)?;     // 2 streams, 4 steps per chunk
//! let (x, y) = batches.chunk(0)?;
//! assert_eq!(x.shape(), &[2, 4]);
//! assert_eq!(y.data()[0], x.data()[1]);            // targets are the next characters
//! # Ok::<(), tessera_data::Error>(())
//! ```
//!
//! ```
//! use std::sync::Arc;
//! use tessera_data::{patches, Loader, Shapes};
//! let data = Arc::new(Shapes::new(64, 32, 0)?);     // 8 classes of generated pictures
//! let loader = Loader::new(data, 16)?.seed(0).workers(1);
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     let tokens = patches(&batch.images, 8)?;      // [16, 16, 192]: 4×4 patches of 3×8×8
//!     assert_eq!(tokens.shape(), &[16, 16, 192]);
//! }
//! # Ok::<(), tessera_data::Error>(())
//! ```
#![warn(missing_docs)]

mod text;

mod batch;
#[cfg(feature = "bpe")]
mod bpe;
#[cfg(feature = "image")]
mod chart;
mod colour;
mod dataset;
mod files;
#[cfg(feature = "image")]
mod folder;
#[cfg(feature = "image")]
mod image;
mod labels;
mod loader;
#[cfg(feature = "image")]
mod open;
mod patches;
mod pil;
mod resize;
mod shapes;
mod transforms;
pub use batch::{pad_sequences, token_batches};
#[cfg(feature = "bpe")]
pub use bpe::{Bpe, SPECIALS};
#[cfg(feature = "image")]
pub use chart::{metrics_picture, Canvas, Chart, ColorBar, DotPanel, DotPlot, Series, Style};
pub use colour::viridis;
pub use dataset::{split, Dataset, Sample, Subset};
pub use files::{Cifar10, CsvImages, Idx, LabelColumn};
#[cfg(feature = "image")]
pub use folder::{ImageFolder, OnBadFile};
#[cfg(feature = "image")]
pub use image::{decode_image, load_image, save_png, ColorMode};
pub use labels::{read_class_names, IMAGENET_1K_SYNSETS, SYNSET_LEMMAS};
pub use loader::{Batch, Epoch, Loader, Transform};
#[cfg(feature = "image")]
pub use open::{open_images, ImageSets};
pub use patches::{patches, unpatch};
pub use pil::resize_pil;
pub use resize::{resize, resize_shorter, Filter};
pub use shapes::Shapes;
pub use text::{
    read_lines, read_parallel, reversal_pairs, split_fraction, BpttBatches, CharVocab, SONNETS,
};
pub use transforms::{center_crop, hflip, normalize, random_crop};

/// Errors of the data layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] tessera_tensor::Error),
    /// Text or ids that do not fit what was asked (with what was expected and what came).
    #[error("{what}: {msg}")]
    Invalid {
        /// The operation.
        what: &'static str,
        /// What was expected and what came.
        msg: String,
    },
    /// An image file that could not be decoded or written (not an image, corrupt,
    /// truncated, an unsupported format).
    #[error("image {path}: {msg}")]
    Image {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// A data file whose contents do not have the expected layout (a wrong magic number,
    /// a truncated record, a CSV line with the wrong number of columns, a label out of
    /// range); the message says what was expected and what came, with the line or record.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What was expected and what came.
        msg: String,
    },
    /// A file that could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// The elements of a tensor in row-major order: borrowed when contiguous, else copied.
pub(crate) fn data_of(t: &tessera_tensor::Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_vec()),
    }
}

/// The bytes of a file, gunzipped when it starts with the gzip magic bytes `1f 8b`
/// (whatever its name). Errors name the file.
pub(crate) fn read_bytes(path: &std::path::Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let raw = std::fs::read(path).map_err(fail)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(fail)?;
        return Ok(out);
    }
    Ok(raw)
}

/// A seed derived from two numbers (SplitMix64's finaliser over their combination), for
/// per-epoch and per-sample generators.
pub(crate) fn mix_seed(a: u64, b: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
