//! The fast paths, apart from the readable code. Each one computes what a plain
//! composition of autograd operations computes, and the tests hold them to it:
//!
//! - [`recurrent`]: one recurrent layer in one direction as a single autograd operation
//!   with its backward pass through time written out. Its plain composition is the
//!   cell-by-cell recording of [`Recurrent::forward_stepwise`](crate::Recurrent::forward_stepwise);
//!   `tests/pytorch.rs` checks both paths against PyTorch.
//! - [`elman`]: the Elman network's closed-form backpropagation through time (the
//!   derivation of the [`crate::elman`] module) on raw GEMMs, the batch split between
//!   threads. Its plain composition is autograd through the unrolled graph,
//!   [`Elman::loss`](crate::Elman::loss); `tests/elman.rs` checks the two against each
//!   other and against finite differences.

pub(crate) mod elman;
pub(crate) mod recurrent;

use tessera_tensor::MatRef;

/// A strided view of `data` for the GEMM: element `(i, j)` at
/// `offset + i·row_stride + j·col_stride`.
pub(crate) fn mat(
    data: &[f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> MatRef<'_> {
    MatRef {
        data,
        offset,
        rows,
        cols,
        row_stride,
        col_stride,
    }
}

/// What a failed product of the kernels means: the kernels build the shapes, so a
/// mismatch is a bug.
pub(crate) const SHAPES: &str = "the recurrent kernels build matching shapes";
