//! The AVX-512 micro-kernel of the BLIS-style GEMM in `gemm_avx2.rs`: the same packed
//! A slivers (`6` rows), B slivers twice as wide (`32` columns, two 16-lane vectors) and
//! twelve 16-lane accumulators. Per step of k it loads two vectors of B, broadcasts six
//! values of A and issues twelve fused multiply-adds, each on sixteen lanes: twice the
//! work of the AVX2 kernel's step for the same number of instructions.

use std::arch::x86_64::*;

use crate::gemm_avx2::{store_edge, MR};

/// Columns of the micro-tile (two 16-lane vectors).
pub(crate) const NR: usize = 32;

/// Whether this CPU can run the kernel (checked once).
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f"))
}

/// `C[0..mr, 0..nr] = alpha * A_sliver * B_sliver + beta * C` for one micro-tile.
///
/// `a` is a packed A sliver (step `p` of row `i` at `a + p*MR + i`); step `p` of B's
/// thirty-two columns starts at `b + p*bks` (`bks` is `NR` for a packed sliver, B's
/// row stride for one read in place).
///
/// # Safety
/// AVX-512F must be available; `a` must hold `MR x kc` and `b` reach `NR` columns over
/// `kc` steps; `c` addresses an `mr x nr` tile with row stride `rsc` (`mr <= MR`,
/// `nr <= NR`).
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn kernel(
    kc: usize,
    mut a: *const f32,
    mut b: *const f32,
    bks: usize,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    let mut c00 = _mm512_setzero_ps();
    let mut c01 = _mm512_setzero_ps();
    let mut c10 = _mm512_setzero_ps();
    let mut c11 = _mm512_setzero_ps();
    let mut c20 = _mm512_setzero_ps();
    let mut c21 = _mm512_setzero_ps();
    let mut c30 = _mm512_setzero_ps();
    let mut c31 = _mm512_setzero_ps();
    let mut c40 = _mm512_setzero_ps();
    let mut c41 = _mm512_setzero_ps();
    let mut c50 = _mm512_setzero_ps();
    let mut c51 = _mm512_setzero_ps();
    // Bring the C tile towards L1 while the k loop runs (two cache lines a row).
    for i in 0..mr {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + NR - 1) as *const i8);
    }
    for _ in 0..kc {
        let b0 = _mm512_loadu_ps(b);
        let b1 = _mm512_loadu_ps(b.add(16));
        let a0 = _mm512_set1_ps(*a);
        c00 = _mm512_fmadd_ps(a0, b0, c00);
        c01 = _mm512_fmadd_ps(a0, b1, c01);
        let a1 = _mm512_set1_ps(*a.add(1));
        c10 = _mm512_fmadd_ps(a1, b0, c10);
        c11 = _mm512_fmadd_ps(a1, b1, c11);
        let a2 = _mm512_set1_ps(*a.add(2));
        c20 = _mm512_fmadd_ps(a2, b0, c20);
        c21 = _mm512_fmadd_ps(a2, b1, c21);
        let a3 = _mm512_set1_ps(*a.add(3));
        c30 = _mm512_fmadd_ps(a3, b0, c30);
        c31 = _mm512_fmadd_ps(a3, b1, c31);
        let a4 = _mm512_set1_ps(*a.add(4));
        c40 = _mm512_fmadd_ps(a4, b0, c40);
        c41 = _mm512_fmadd_ps(a4, b1, c41);
        let a5 = _mm512_set1_ps(*a.add(5));
        c50 = _mm512_fmadd_ps(a5, b0, c50);
        c51 = _mm512_fmadd_ps(a5, b1, c51);
        a = a.add(MR);
        b = b.add(bks);
    }
    let acc = [
        [c00, c01],
        [c10, c11],
        [c20, c21],
        [c30, c31],
        [c40, c41],
        [c50, c51],
    ];
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    if mr == MR && nr == NR {
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * rsc);
            for (h, &v) in row.iter().enumerate() {
                let p = dst.add(h * 16);
                let mut r = _mm512_mul_ps(va, v);
                if beta != 0.0 {
                    r = _mm512_fmadd_ps(vb, _mm512_loadu_ps(p), r);
                }
                _mm512_storeu_ps(p, r);
            }
        }
    } else {
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
            _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), row[1]);
        }
        store_edge::<NR>(&tile, c, rsc, alpha, beta, mr, nr);
    }
}
