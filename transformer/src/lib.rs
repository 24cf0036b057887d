//! # tessera-transformer
//!
//! The Transformer of "Attention Is All You Need" (Vaswani et al., 2017): token
//! embeddings scaled by `√d_model` plus sinusoidal (or learned) positions, an encoder of
//! `N` layers of multi-head self-attention and a position-wise feed-forward network, a
//! decoder that adds masked self-attention and encoder-decoder attention, every sublayer
//! wrapped as `LayerNorm(x + Dropout(Sublayer(x)))`, and a pre-softmax projection tied to
//! the shared embedding.
//!
//! - [`TransformerConfig`] and [`PRESETS`]: every configuration of the paper's Table 3,
//!   with the exact parameter count of the model as built
//!   ([`TransformerConfig::num_parameters`]).
//! - [`Transformer`]: the model, with PyTorch's `nn.Transformer` parameter names, padding
//!   and causal masks and the label-smoothed loss; its parameters are created, named
//!   and initialised once by a [`tessera_nn::VarBuilder`].
//! - Decoding ([`Transformer::greedy`], [`Transformer::beam_search`]) on an incremental
//!   decoder with a key/value cache ([`DecoderCache`]).
//! - [`ablation`]: Table 3's rows applied to a smaller base model, and the table of
//!   their measurements (`tessera transformer ablate`).
//! - [`Trainer`]: the paper's training recipe, with checkpoints that resume exactly
//!   ([`CheckpointConfig`] in their `config` metadata entry).
//!
//! ```
//! use tessera_nn::Params;
//! use tessera_tensor::{IndexTensor, Rng};
//! use tessera_transformer::{preset, Transformer, TransformerConfig};
//! // Table 3's base model with a shared vocabulary of 37,000: 63,082,496 parameters.
//! assert_eq!(preset("base")?.config(37_000).num_parameters(), 63_082_496);
//! // A small model, run once.
//! let config = TransformerConfig::small(20, 16, 2, 32, 1);
//! let model = Transformer::new(config, &mut Rng::seed(0))?;
//! assert_eq!(model.num_parameters(), config.num_parameters());
//! let src = IndexTensor::new(vec![1, 2, 3, 4, 5, 6], &[2, 3])?;
//! let tgt = IndexTensor::new(vec![1, 7, 8, 1, 9, 9], &[2, 3])?;
//! let logits = model.forward(&src, &tgt, None, false)?;
//! assert_eq!(logits.shape(), &[2, 3, 20]);
//! # Ok::<(), tessera_transformer::Error>(())
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;

pub mod ablation;
mod bleu;
mod checkpoint;
pub mod complexity;
mod config;
mod decode;
mod model;
mod train;

pub use bleu::{
    corpus_bleu, corpus_bleu_with, corpus_chrf, sentence_bleu, sentence_chrf, tokenize_13a, Bleu,
    BleuOptions, ChrfOptions, Smooth, Tokenize,
};
#[cfg(feature = "bpe")]
pub use checkpoint::read_bpe;
pub use checkpoint::{
    average_checkpoints, load_model, read_config, CheckpointConfig, SpecialIds, BPE_KEY, MODEL_KEY,
    MODEL_TAG,
};
pub use config::{preset, Positional, Preset, TransformerConfig, PRESETS};
pub use decode::DecoderCache;
pub use model::{sinusoidal_encoding, PadId, Transformer};
pub use train::{
    evaluate_loss, evaluate_loss_with, Batch, Corpus, StepStats, TrainConfig, Trainer,
};

tessera_nn::model_error! {
    /// Errors of the Transformer.
    pub enum Error {
        from { Optim(tessera_optim::Error), Data(tessera_data::Error) }
        /// A number of items that does not fit (tokens per sequence, hypotheses per
        /// reference).
        #[error("{op}: expected {expected} {what}, got {got}")]
        Count {
            /// The model part or function.
            op: &'static str,
            /// What is counted.
            what: &'static str,
            /// How many it takes.
            expected: usize,
            /// How many came.
            got: usize,
        },
        /// A preset name that is not a row of Table 3.
        #[error("unknown preset {name:?}; the presets are {}", known.join(", "))]
        UnknownPreset {
            /// The name asked for.
            name: String,
            /// The presets there are.
            known: Vec<&'static str>,
        },
        /// A name that is neither a row nor a group of rows of Table 3.
        #[error("unknown Table 3 row {name:?}; the rows are {}", known.join(", "))]
        UnknownRow {
            /// The name asked for.
            name: String,
            /// The groups and their rows.
            known: Vec<String>,
        },
        /// A checkpoint of another kind of model (its `model` metadata entry is not
        /// [`MODEL_TAG`]).
        #[error(
            "{}: not a Transformer checkpoint (its model entry is {})",
            path.display(),
            found.as_deref().map_or("absent".to_string(), |m| format!("{m:?}"))
        )]
        NotTransformer {
            /// The file.
            path: PathBuf,
            /// Its `model` entry, if any.
            found: Option<String>,
        },
        /// A model checkpoint where a training checkpoint is needed.
        #[error("{}: not a training checkpoint (it has no {missing} entry)", path.display())]
        NotTraining {
            /// The file.
            path: PathBuf,
            /// The entry it lacks.
            missing: &'static str,
        },
    }
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
