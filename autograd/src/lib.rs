//! # tessera-autograd
//!
//! Reverse-mode automatic differentiation over [`tessera_tensor::Tensor`].
//!
//! A [`Var`] is a tensor that remembers the operation that produced it. Calling
//! [`Var::backward`] on a scalar walks the recorded graph once, in reverse topological
//! order, applying one backward rule per operation, and accumulates the gradient of
//! every leaf created with
//! [`Var::parameter`]. The graph is freed as it is walked. [`no_grad`] turns recording
//! off; [`check_gradients`] compares any function's backward pass with central finite
//! differences.
//!
//! The rules of the built-in operations live together in `backward.rs`, one match arm
//! per operation with its derivative beside it. A fused operation defined by another
//! crate through [`Function`] (layer norm and packed attention in `tessera-nn`, the
//! fused recurrent cells of `tessera-rnn`) carries its own backward rule next to its
//! forward pass, and is tested against the composition of built-in operations it
//! replaces.
//!
//! ```
//! use tessera_autograd::Var;
//! use tessera_tensor::Tensor;
//! // A linear layer and a squared error: L = mean((x Wᵀ + b - t)²).
//! let w = Var::parameter(Tensor::from_vec(vec![0.5, -0.5], &[1, 2])?);
//! let b = Var::parameter(Tensor::zeros(&[1]));
//! let x = Var::constant(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2])?);
//! let t = Var::constant(Tensor::from_vec(vec![1.0, 0.0], &[2, 1])?);
//! let y = x.matmul(&w.transpose(0, 1)?)?.add(&b)?;
//! let loss = y.sub(&t)?.square().mean_all();
//! loss.backward()?;
//! // y = [-0.5, -0.5], residuals r = [-1.5, -0.5]; ∂L/∂b = mean(2 r) = -2.
//! assert_eq!(b.grad().unwrap().to_vec(), vec![-2.0]);
//! # Ok::<(), tessera_autograd::Error>(())
//! ```
#![warn(missing_docs)]

mod backward;
mod gradcheck;
mod ops;
mod var;

pub use gradcheck::{check_gradients, GradCheck};
pub use ops::Function;
pub use var::{is_grad_enabled, no_grad, Parameter, Var};

/// Errors of the differentiation layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed (shapes, indices, files).
    #[error(transparent)]
    Tensor(#[from] tessera_tensor::Error),
    /// `backward()` on a value with more than one element.
    #[error("backward: expected a one-element (scalar) value, got shape {shape:?}; use backward_with for others")]
    NotScalar {
        /// The value's shape.
        shape: Vec<usize>,
    },
    /// A gradient given to `backward_with` whose shape differs from the value's.
    #[error("backward_with: gradient of shape {got:?} for a value of shape {expected:?}")]
    GradShape {
        /// The value's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        got: Vec<usize>,
    },
    /// A new parameter value whose shape differs from the parameter's.
    #[error("Parameter::set: new value of shape {got:?} for a parameter of shape {expected:?}")]
    ValueShape {
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The new value's shape.
        got: Vec<usize>,
    },
    /// `backward` on a value that does not depend on anything requiring a gradient.
    #[error("backward: the value does not depend on any parameter (no graph was recorded)")]
    NoGraph,
    /// A second `backward` through a graph the first one freed.
    #[error("backward: the graph was freed by an earlier backward; recompute the forward pass")]
    GraphFreed,
    /// A lock poisoned by a panic on another thread.
    #[error("a gradient lock was poisoned by a panic on another thread")]
    Poisoned,
    /// A custom operation's backward rule returned gradients that do not fit its inputs.
    #[error("{op}: backward returned {msg}")]
    CustomGrad {
        /// The operation's name.
        op: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// A gradient that disagrees with finite differences.
    #[error("gradient check: input {input}, element {element}: backward gives {analytic}, finite differences {numeric}")]
    GradientMismatch {
        /// Which input.
        input: usize,
        /// Which element of it (row-major).
        element: usize,
        /// The gradient from `backward`.
        analytic: f64,
        /// The central difference.
        numeric: f64,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
