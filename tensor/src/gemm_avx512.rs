//! The AVX-512 micro-kernel of the BLIS-style GEMM in `gemm_avx2.rs`: the same packed
//! A slivers (6 rows) and blocking, B slivers twice as wide (32 columns, two 16-lane
//! vectors) in twelve 16-lane accumulators. Per step of k it issues as many
//! instructions as the AVX2 kernel for twice the multiply-adds.

use std::arch::x86_64::*;

use crate::gemm_avx2::micro_kernel;

/// Columns of the micro-tile (two 16-lane vectors).
pub(crate) const NR: usize = 32;

micro_kernel! {
    /// The AVX-512 micro-kernel: `6 x 32` tiles in twelve 16-lane accumulators.
    pub(crate) fn kernel, features "avx512f", columns NR, lanes 16,
    _mm512_setzero_ps, _mm512_loadu_ps, _mm512_storeu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
    _mm512_mul_ps, _mm512_add_ps
}
