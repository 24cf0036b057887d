//! # tessera-rnn
//!
//! Recurrent networks, from the course notes' Elman network to PyTorch's `nn.RNN`,
//! `nn.LSTM` and `nn.GRU`, and a character-level language model built on them.
//!
//! - [`Elman`]: `S_t = tanh(W S_{t-1} + U x_t + b_s)`, `ŷ_t = softmax(V S_t + b_y)`, with
//!   two gradient paths: autograd through the unrolled graph ([`Elman::loss`]) and the
//!   notes' hand-derived backpropagation through time in closed form ([`Elman::bptt`];
//!   the derivation is the documentation of the [`elman`] module).
//! - [`Recurrent`]: multi-layer, optionally bidirectional RNN (tanh or ReLU), LSTM and
//!   GRU with PyTorch's gate orders and parameter names (`weight_ih_l0`,
//!   `bias_hh_l1_reverse`, ...), so a PyTorch `state_dict` saved as safetensors loads.
//! - [`CharLm`]: a character language model (Elman or any [`Recurrent`] cell) trained
//!   by truncated BPTT ([`TrainState`]), evaluated in nats per character, sampled with a
//!   temperature.
//!
//! Every parameter is created once, at its name, by a [`tessera_nn::VarBuilder`]; a
//! model keeps the [`tessera_nn::VarMap`] it was built into (see [`tessera_nn::Params`]).
//! The fast paths (the fused recurrent layer, the closed-form BPTT on raw GEMMs) live
//! in a private `kernels` module, each checked in the tests against the plain
//! composition it replaces ([`Recurrent::forward_stepwise`], [`Elman::loss`]).
//!
//! ```
//! use tessera_rnn::{Elman, SeqInput};
//! use tessera_tensor::{IndexTensor, Rng};
//! let mut rng = Rng::seed(0);
//! let model = Elman::new(11, 8, 11, &mut rng)?;
//! let x = IndexTensor::new((0..36).map(|i| i % 11).collect(), &[4, 9])?;
//! let y = IndexTensor::new((1..37).map(|i| i % 11).collect(), &[4, 9])?;
//! // The closed-form gradients and autograd's agree.
//! let explicit = model.bptt(SeqInput::Ids(&x), &y, None)?;
//! let (loss, _) = model.loss(SeqInput::Ids(&x), &y, None)?;
//! loss.backward()?;
//! let auto = model.w.grad().unwrap();
//! assert!(explicit.grads.w.sub(&auto)?.abs().max_all().unwrap() < 1e-5);
//! # Ok::<(), tessera_rnn::Error>(())
//! ```
#![warn(missing_docs)]

mod charlm;
pub mod elman;
mod kernels;
mod recurrent;
mod train;

use std::path::PathBuf;

use tessera_nn::{VarBuilder, VarMap};

pub use charlm::{
    evaluate, evaluate_with, read_vocab, sample, Cell, CharLm, CharLmConfig, LmState, MODEL_TAG,
    VOCAB_KEY,
};
pub use elman::{Bptt, Elman, ElmanGrads, SeqInput};
pub use recurrent::{Mode, Recurrent, RecurrentConfig, RecurrentOutput, State};
pub use train::{StepStats, TrainConfig, TrainState};

tessera_nn::model_error! {
    /// Errors of the recurrent models.
    pub enum Error {
        from { Optim(tessera_optim::Error), Data(tessera_data::Error) }
        /// A token id or a target class outside the model's range.
        #[error("{op}: {what} {id} is outside 0..{limit}")]
        Id {
            /// The model or function.
            op: &'static str,
            /// `token id` or `target`.
            what: &'static str,
            /// The id.
            id: usize,
            /// The number of ids the model has (input size or classes).
            limit: usize,
        },
        /// A recurrent state of the wrong kind: `h` given where `(h, c)` is needed, or the
        /// state of another cell.
        #[error("{op}: expected {expected}, got {got}")]
        StateKind {
            /// The model or function.
            op: &'static str,
            /// The state it takes.
            expected: &'static str,
            /// The state that came.
            got: &'static str,
        },
        /// A cell name that is not one of [`Cell`]'s.
        #[error("unknown cell {name:?}; expected elman, rnn, lstm or gru")]
        UnknownCell {
            /// The name given.
            name: String,
        },
        /// A file that is not a character language model checkpoint (its `model` entry is
        /// absent or another model's).
        #[error(
            "{path}: not a character language model checkpoint (its model entry is {})",
            model.as_deref().map_or("absent".to_string(), |m| format!("{m:?}"))
        )]
        NotCharLm {
            /// The file.
            path: PathBuf,
            /// Its `model` metadata entry.
            model: Option<String>,
        },
        /// A training checkpoint whose carried state does not fit its model.
        #[error("{path}: the carried state has {got} tensors; a {cell} model carries {expected}")]
        Carry {
            /// The file.
            path: PathBuf,
            /// The model's cell.
            cell: &'static str,
            /// Tensors the cell's state has.
            expected: usize,
            /// Tensors the file has.
            got: usize,
        },
    }
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Runs `build` with a builder at the root of a fresh store whose initialisers draw from
/// `rng` (left advanced by what was drawn), as [`VarBuilder::with_rng`] does, keeping the
/// crate's own errors.
pub(crate) fn build_with_rng<T>(
    rng: &mut tessera_tensor::Rng,
    build: impl FnOnce(&VarBuilder) -> Result<T>,
) -> Result<T> {
    let mut built = None;
    VarBuilder::with_rng(&VarMap::new(), rng, |vb| {
        built = Some(build(vb));
        Ok(())
    })?;
    built.unwrap_or_else(|| unreachable!("VarBuilder::with_rng runs its closure"))
}

/// [`Error::Id`] for the first of `ids` at or above `limit`.
pub(crate) fn check_ids(
    op: &'static str,
    what: &'static str,
    ids: &[usize],
    limit: usize,
) -> Result<()> {
    match ids.iter().find(|&&i| i >= limit) {
        Some(&id) => Err(Error::Id {
            op,
            what,
            id,
            limit,
        }),
        None => Ok(()),
    }
}

/// The mean cross-entropy of `logits` `[B, T, K]` against class ids `targets` `[B, T]`.
pub(crate) fn sequence_cross_entropy(
    op: &'static str,
    logits: &tessera_autograd::Var,
    targets: &tessera_tensor::IndexTensor,
) -> Result<tessera_autograd::Var> {
    let (b, t, k) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
    if targets.shape() != [b, t] {
        return Err(Error::shape(
            op,
            format!("targets [{b}, {t}]"),
            targets.shape(),
        ));
    }
    let flat = tessera_tensor::IndexTensor::from_vec(targets.data().to_vec());
    Ok(tessera_nn::cross_entropy(
        &logits.reshape(&[b * t, k])?,
        &flat,
        0.0,
        None,
    )?)
}

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
