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
//!   and causal masks, label-smoothed loss and greedy decoding.
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

mod bleu;
pub mod complexity;
mod config;
mod model;
mod train;

pub use bleu::{corpus_bleu, tokenize_13a, Bleu};
pub use config::{preset, Positional, Preset, TransformerConfig, PRESETS};
pub use model::{sinusoidal_encoding, DecoderCache, PadId, Transformer};
pub use train::{
    average_checkpoints, evaluate_loss, load_model, Batch, Corpus, StepStats, TrainConfig, Trainer,
};

/// Errors of the Transformer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] tessera_tensor::Error),
    /// A differentiation step failed.
    #[error(transparent)]
    Autograd(#[from] tessera_autograd::Error),
    /// A layer, loss or checkpoint failed.
    #[error(transparent)]
    Nn(#[from] tessera_nn::Error),
    /// An optimizer step failed.
    #[error(transparent)]
    Optim(#[from] tessera_optim::Error),
    /// Data, vocabulary or batching failed.
    #[error(transparent)]
    Data(#[from] tessera_data::Error),
    /// The loss became NaN or infinite; the parameters were left as they were.
    #[error(
        "the loss is {loss} at step {step}; no parameter was changed (lower the learning rate)"
    )]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The training step.
        step: u64,
    },
    /// An input or configuration that does not fit the model.
    #[error("{what}: {msg}")]
    Input {
        /// The model part or function.
        what: &'static str,
        /// What was expected and what came.
        msg: String,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn input_err(what: &'static str, msg: String) -> Error {
    Error::Input { what, msg }
}
