//! # tessera-rnn
//!
//! Recurrent networks, from the course notes' Elman network to PyTorch's `nn.RNN`,
//! `nn.LSTM` and `nn.GRU`, and a character-level language model built on them.
//!
//! - [`Elman`]: `S_t = tanh(W S_{t-1} + U x_t + b_s)`, `ŷ_t = softmax(V S_t + b_y)`, with
//!   two gradient paths: autograd through the unrolled graph ([`Elman::loss`]) and the
//!   notes' hand-derived backpropagation through time in closed form ([`Elman::bptt`]).
//! - [`Recurrent`]: multi-layer, optionally bidirectional RNN (tanh or ReLU), LSTM and
//!   GRU with PyTorch's gate orders and parameter names (`weight_ih_l0`,
//!   `bias_hh_l1_reverse`, ...), so a PyTorch `state_dict` saved as safetensors loads.
//! - [`CharLm`]: a character language model (Elman or any [`Recurrent`] cell) trained
//!   by truncated BPTT, evaluated in nats per character, sampled with a temperature.
//!
//! ```
//! use tessera_rnn::{Elman, SeqInput};
//! use tessera_tensor::{IndexTensor, Rng};
//! let mut rng = Rng::seed(0);
//! let model = Elman::new(11, 8, 11, &mut rng);
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
mod elman;
mod fused;
mod recurrent;

pub use charlm::{
    evaluate, sample, Cell, CharLm, CharLmConfig, LmState, StepStats, TrainConfig, TrainState,
};
pub use elman::{Bptt, Elman, ElmanGrads, SeqInput};
pub use recurrent::{Mode, Recurrent, RecurrentConfig, RecurrentOutput, State};

/// Errors of the recurrent models.
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
    /// Text or batching failed.
    #[error(transparent)]
    Data(#[from] tessera_data::Error),
    /// An input that does not fit the model.
    #[error("{what}: {msg}")]
    Input {
        /// The model or function.
        what: &'static str,
        /// What was expected and what came.
        msg: String,
    },
    /// The loss became NaN or infinite; the parameters were left as they were.
    #[error("the loss is {loss} at step {step}; no parameter was changed (lower the learning rate or the clipping norm)")]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The training step.
        step: u64,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// A strided view of `data` for the GEMM: element `(i, j)` at
/// `offset + i·row_stride + j·col_stride`.
pub(crate) fn mat(
    data: &[f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> tessera_tensor::MatRef<'_> {
    tessera_tensor::MatRef {
        data,
        offset,
        rows,
        cols,
        row_stride,
        col_stride,
    }
}

pub(crate) fn input_err(what: &'static str, msg: String) -> Error {
    Error::Input { what, msg }
}
