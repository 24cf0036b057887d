//! Fast paths, apart from the readable layers: each is one differentiable operation with
//! a backward pass written out by hand, and each is tested against the plain composition
//! of autograd's operations that it replaces.
//!
//! - [`layer_norm`]: one pass per row, rows shared among the threads (composition:
//!   `layer_norm::layer_norm_reference`).
//! - [`packed_self_attention`]: self-attention over one packed q/k/v projection
//!   (composition: the general path of `MultiHeadAttention`).
//! - `rows`: the row-wise helpers both use.

mod attention;
mod layer_norm;
pub(crate) mod rows;

pub(crate) use attention::packed_self_attention;
pub(crate) use layer_norm::layer_norm;
