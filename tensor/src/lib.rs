//! # tessera-tensor
//!
//! N-dimensional `f32` tensors: the bottom layer of tessera.
//!
//! - [`Tensor`]: a cheap-to-clone handle on shared storage with a shape, strides and an
//!   offset. Views (reshape, permute, transpose, narrow, slice, broadcast, squeeze,
//!   unsqueeze) never copy.
//! - Element-wise arithmetic and functions with NumPy broadcasting, comparisons to 0/1
//!   masks, `where_` and `masked_fill` (PyTorch's names: the
//!   table in the crate's README maps the rest).
//! - Reductions over any axes (`sum`, `mean`, `max`, `min`, `var`, `argmax`), stable
//!   `softmax` and `log_softmax`.
//! - [`Tensor::matmul`] with `torch.matmul` semantics on a fast, threaded GEMM
//!   ([`gemm()`]) that takes transposed operands without copying.
//! - Index operations (`index_select`, `gather`, `scatter_add`, `index_add`, `concat`,
//!   `stack`) with [`IndexTensor`]; im2col ([`Tensor::unfold2d`]) and col2im.
//! - Seedable random tensors ([`Rng`]) and safetensors files ([`SafeTensorsFile`],
//!   [`save_safetensors`]).
//! - Kernels chosen at run time for the CPU: [`isa()`] names the instruction set they
//!   use (AVX-512, AVX2 or the baseline), which `TESSERA_MAX_ISA` or [`set_max_isa`]
//!   caps; [`set_num_threads`] or `TESSERA_NUM_THREADS` sets their threads.
//!
//! Every fallible operation returns [`Result`]; errors name the operation and the
//! shapes involved.
//!
//! ```
//! use tessera_tensor::{Rng, Tensor};
//! let mut rng = Rng::seed(0);
//! let x = Tensor::randn(&[4, 16], 0.0, 1.0, &mut rng);
//! let w = Tensor::randn(&[8, 16], 0.0, 0.1, &mut rng);
//! let b = Tensor::zeros(&[8]);
//! let y = x.matmul(&w.t()?)?.add(&b)?.relu();      // a linear layer
//! let p = y.softmax(-1)?;
//! let rows = p.sum(&[-1], false)?.to_vec();
//! assert!(rows.iter().all(|s| (s - 1.0).abs() < 1e-6));
//! # Ok::<(), tessera_tensor::Error>(())
//! ```
#![warn(missing_docs)]

mod conv;
mod elementwise;
mod error;
#[cfg(target_arch = "x86_64")]
mod gemm_avx2;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
mod index;
mod io;
mod isa;
mod iter;
mod matmul;
mod parallel;
mod random;
mod reduce;
mod shape;
mod tensor;
mod vmath;

pub use conv::Window2d;
pub use elementwise::{
    exp_scalar, gelu_erf_scalar, gelu_grad_scalar, gelu_tanh_scalar, sigmoid_scalar,
};
pub use error::{Error, Result, ShapeDisplay};
pub use index::IndexTensor;
pub use io::{
    load_safetensors, safetensors_bytes, safetensors_bytes_as, save_safetensors,
    save_safetensors_as, write_atomic, Precision, SafeTensorsFile,
};
pub use isa::{isa, l2_cache_bytes, set_max_isa, Isa, MAX_ISA_ENV};
pub use matmul::{gemm, gemm_with, GemmKernel, MatRef};
pub use parallel::{num_threads, parallel_for, set_num_threads};
pub use random::Rng;
pub use shape::{broadcast_shape, contiguous_strides, numel, Dim, Dims};
pub use tensor::Tensor;
pub use vmath::{exp_slice, gelu_grad_slice, gelu_slice, sigmoid_slice, tanh_slice};

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
