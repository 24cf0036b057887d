//! # tessera-data
//!
//! Data for tessera models. This release holds the text side of the character-level
//! language model: a character vocabulary ([`CharVocab`]) and the batching of one long
//! token stream into parallel streams for truncated backpropagation through time
//! ([`BpttBatches`]).
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
#![warn(missing_docs)]

mod text;

mod batch;
mod bpe;
pub use batch::{pad_sequences, token_batches};
pub use bpe::{Bpe, SPECIALS};
pub use text::{read_lines, split_fraction, BpttBatches, CharVocab, SONNETS};

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
