//! # tessera-optim
//!
//! Optimizers over named [`Parameter`]s with PyTorch's exact update order, so that a
//! trajectory matches `torch.optim` step for step; learning-rate schedules as pure
//! functions of the step; global-norm gradient clipping.
//!
//! ```
//! use tessera_autograd::Parameter;
//! use tessera_optim::{Adam, Optimizer};
//! use tessera_tensor::Tensor;
//! let w = Parameter::new(Tensor::from_vec(vec![1.0, -1.0], &[2])?);
//! let params = vec![("w".to_string(), w.clone())];
//! let mut opt = Adam::new(0.1);
//! for _ in 0..3 {
//!     w.zero_grad();
//!     w.var().square().sum_all().backward()?;   // minimise Σ w²
//!     opt.step(&params)?;
//! }
//! assert!(w.value().to_vec().iter().all(|v| v.abs() < 0.75));
//! # Ok::<(), tessera_optim::Error>(())
//! ```
#![warn(missing_docs)]

mod adam;
mod clip;
mod comm;
pub mod schedule;
pub mod scheduler;
mod sgd;

use std::collections::BTreeMap;

pub use adam::{Adam, AdamConfig};
pub use clip::{clip_grad_norm, clip_limit};
pub use comm::{
    all_reduce_gradients, broadcast_parameters, check_root, check_same, describe_parameters, shard,
    sum_over_ranks, Communicator, GradientReducer, Local, PendingSum, WithBuckets,
    DEFAULT_BUCKET_BYTES,
};
pub use sgd::{Sgd, SgdConfig};
pub use tessera_autograd::Parameter;
use tessera_tensor::{SafeTensorsFile, Tensor};

/// Errors of the optimizers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or parameter operation failed (tensor errors arrive as
    /// [`tessera_autograd::Error::Tensor`], so each kind reaches the caller by one path).
    #[error(transparent)]
    Autograd(#[from] tessera_autograd::Error),
    /// A gradient or update that is not finite: the step is refused and no parameter
    /// changes.
    #[error("{what}: parameter {name:?} has a non-finite {which}; no parameter was changed")]
    NonFinite {
        /// The operation.
        what: &'static str,
        /// The parameter.
        name: String,
        /// "gradient" or "update".
        which: &'static str,
    },
    /// The loss of a training step is NaN or infinite; no parameter was changed.
    #[error("the loss is {loss} at step {step}; no parameter was changed (lower the learning rate or the clipping norm)")]
    NonFiniteLoss {
        /// The loss value.
        loss: f32,
        /// The training step.
        step: u64,
    },
    /// A collective operation between the ranks of a data-parallel run failed.
    #[error("{op}: {reason}")]
    Communication {
        /// The operation (`all_reduce`, `broadcast`).
        op: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The ranks of a data-parallel run do not hold the same thing (the model, the
    /// configuration): reported on every rank.
    #[error("the ranks do not agree on {what}: rank(s) {ranks:?} differ from rank 0; {detail}")]
    RanksDisagree {
        /// What was compared.
        what: String,
        /// The ranks whose copy differs from rank 0's.
        ranks: Vec<usize>,
        /// Where the reporting rank's copy parts from rank 0's (`rank 0 has "x [2]"
        /// where rank 1 has "x [3]"`), or that it agrees.
        detail: String,
    },
    /// A learning-rate scheduler's setting outside its range, a step past its end, or a
    /// saved state of another shape.
    #[error("{scheduler}: {what}")]
    Schedule {
        /// The scheduler, by PyTorch's name (`OneCycleLR`).
        scheduler: &'static str,
        /// What was expected and what came.
        what: String,
    },
    /// Saved optimizer state that does not fit the parameters.
    #[error("optimizer state: {0}")]
    State(String),
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<tessera_tensor::Error> for Error {
    fn from(e: tessera_tensor::Error) -> Error {
        Error::Autograd(e.into())
    }
}

/// [`Error::NonFiniteLoss`] unless `loss` is finite: what every trainer checks before it
/// steps, so that a diverged run stops the same way everywhere.
///
/// ```
/// assert!(tessera_optim::check_loss(0.7, 3).is_ok());
/// let err = tessera_optim::check_loss(f32::NAN, 3).unwrap_err();
/// assert!(err.to_string().starts_with("the loss is NaN at step 3"));
/// ```
pub fn check_loss(loss: f32, step: u64) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFiniteLoss { loss, step })
    }
}

/// The settings of an [`Optimizer`] that schedules change between steps, as PyTorch's
/// schedulers write them into `optimizer.param_groups`.
///
/// ```
/// use tessera_optim::{Optimizer, Sgd, SgdConfig};
/// let mut opt = Sgd::with(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) });
/// *opt.rates().lr = 0.05;
/// opt.set_momentum(0.8);
/// assert_eq!((opt.config.lr, opt.config.momentum), (0.05, 0.8));
/// ```
#[derive(Debug)]
pub struct Rates<'a> {
    /// The learning rate (`lr`).
    pub lr: &'a mut f64,
    /// The momentum: SGD's `momentum`, Adam's `betas[0]`.
    pub momentum: &'a mut f32,
}

/// An optimizer over named parameters.
pub trait Optimizer {
    /// Updates every parameter that has a gradient. Parameters without one are skipped
    /// (as PyTorch skips `grad is None`). Gradients are first checked: if any is not
    /// finite, nothing changes and an error names the parameter.
    fn step(&mut self, params: &[(String, Parameter)]) -> Result<()>;
    /// The settings a schedule changes between steps, in place (`*opt.rates().lr` is
    /// the learning rate of the next step).
    fn rates(&mut self) -> Rates<'_>;
    /// Sets the learning rate (what a schedule does before each step).
    fn set_lr(&mut self, lr: f64) {
        *self.rates().lr = lr;
    }
    /// Sets the momentum, as PyTorch's `OneCycleLR` does: SGD's `momentum`, Adam's
    /// `beta1`.
    fn set_momentum(&mut self, momentum: f64) {
        *self.rates().momentum = momentum as f32;
    }
    /// The optimizer's state as named tensors (moments, step counts), for checkpoints.
    fn state(&self) -> BTreeMap<String, Tensor>;
    /// Restores a state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()>;

    /// [`Optimizer::state`] as the entries of a training checkpoint: each name under
    /// [`STATE_PREFIX`], beside the model's parameters.
    fn checkpoint_state(&self) -> Vec<(String, Tensor)> {
        let state = self.state().into_iter();
        state
            .map(|(k, v)| (format!("{STATE_PREFIX}{k}"), v))
            .collect()
    }

    /// Restores the state kept in the training checkpoint `file` by
    /// [`Optimizer::checkpoint_state`]; the file's other entries are left alone.
    fn load_checkpoint_state(&mut self, file: &SafeTensorsFile) -> Result<()> {
        let mut state = BTreeMap::new();
        for name in file.names() {
            if let Some(k) = name.strip_prefix(STATE_PREFIX) {
                state.insert(k.to_string(), file.get(&name)?);
            }
        }
        self.load_state(&state)
    }
}

/// The prefix of an optimizer's state among the entries of a training checkpoint
/// (`optim.exp_avg.fc1.weight`).
pub const STATE_PREFIX: &str = "optim.";

/// The gradients of `params` that exist, checked finite, by name.
pub(crate) fn gradients(
    params: &[(String, Parameter)],
    what: &'static str,
) -> Result<Vec<(String, Parameter, Tensor)>> {
    let mut out = Vec::with_capacity(params.len());
    for (name, p) in params {
        if let Some(g) = p.grad() {
            if !all_finite(&g) {
                return Err(Error::NonFinite {
                    what,
                    name: name.clone(),
                    which: "gradient",
                });
            }
            out.push((name.clone(), p.clone(), g));
        }
    }
    Ok(out)
}

/// Whether every element is finite, reading contiguous tensors in place.
pub(crate) fn all_finite(t: &Tensor) -> bool {
    match t.as_slice() {
        Some(s) => finite_slice(s),
        None => finite_slice(&t.to_vec()),
    }
}

/// Whether every element of `s` is finite: blocks of 4,096 tested without stopping early
/// (so that the test vectorises, in the widest vectors the CPU has), stopping at the
/// first block with an infinity or a NaN.
fn finite_slice(s: &[f32]) -> bool {
    #[inline(always)]
    fn run(s: &[f32]) -> bool {
        // An exponent of all ones is an infinity or a NaN.
        const EXPONENT: u32 = 0x7f80_0000;
        s.chunks(4096).all(|block| {
            block
                .iter()
                .fold(true, |ok, v| ok & (v.to_bits() & EXPONENT != EXPONENT))
        })
    }
    tessera_tensor::widest!(run(s))
}

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::finite_slice;

    /// Infinities and NaNs are found in any block and at any place in it; the largest
    /// and the subnormal finite numbers are finite.
    #[test]
    fn finite_slice_finds_every_non_finite_value() {
        let mut v = vec![1.0f32; 9000];
        v[17] = f32::MAX;
        v[4099] = f32::MIN_POSITIVE / 2.0;
        v[8999] = -f32::MAX;
        assert!(finite_slice(&v));
        assert!(finite_slice(&[]));
        for at in [0, 4095, 4096, 8191, 8999] {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
                let mut w = v.clone();
                w[at] = bad;
                assert!(!finite_slice(&w), "{bad} at {at}");
            }
        }
    }
}
