//! A BLIS-style single-precision GEMM for x86-64 CPUs with AVX2 and FMA.
//!
//! The structure is the one of Goto and van de Geijn ("Anatomy of high-performance matrix
//! multiplication", 2008) and BLIS: the product is cut into `KC`-deep slabs; for each,
//! a `KC x NC` panel of B is packed into `NR`-wide column slivers (kept in L3/L2) and an
//! `MC x KC` block of A into `MR`-tall row slivers (kept in L2); a `6 x 16` micro-kernel
//! then multiplies one A sliver by one B sliver (which sits in L1) into twelve 8-lane
//! accumulators: per step of k it loads two vectors of B, broadcasts six values of A and
//! issues twelve fused multiply-adds.
//!
//! Packing reads the operands through their row and column strides, so a transposed
//! view costs nothing extra; a B that is a transposed weight (`x · Wᵀ`) is packed in
//! 8 x 8 blocks transposed in registers. A row-major A is not packed at all (the kernel
//! reads its six rows in place), nor is a small row-major B; products with few rows in
//! A use narrower B panels, which stay in L2.
//! The kernel runs on one thread; `matmul.rs` gives each thread its own band of C.

use std::arch::x86_64::*;
use std::cell::RefCell;

/// Rows of the micro-tile.
const MR: usize = 6;
/// Columns of the micro-tile (two 8-lane vectors).
const NR: usize = 16;
/// Depth of a slab: one A sliver (6 x 256 x 4 B = 6 KiB) plus one B sliver (16 KiB) fit in L1.
const KC: usize = 256;
/// Rows of a packed A block: 96 x 256 x 4 B = 96 KiB, inside L2.
const MC: usize = 96;
/// Columns of a packed B panel: 256 x 2048 x 4 B = 2 MiB.
const NC: usize = 2048;
/// Products whose A has at most this many rows...
const SMALL_M: usize = 4 * MC;
/// ...use B panels of this many columns: 256 x 256 x 4 B = 256 KiB, inside L2.
const NC_SMALL_M: usize = 256;

/// Whether this CPU can run the kernel (checked once).
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// A strided read-only operand: element `(i, j)` at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

// SAFETY: the pointer is only read, and the caller keeps the data alive and unmodified
// for the whole product.
unsafe impl Send for Strided {}
unsafe impl Sync for Strided {}

thread_local! {
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `lines` lines of depth `kc` into `W`-wide slivers: sliver `s`, step `p` holds
/// `src(s*W + i, p)` for `i < W`, zero past `lines`. Element `(i, p)` of `src` is at
/// `ptr + i*rs + p*cs`: for A the lines are rows; for B they are columns (B read as its
/// transpose), so one routine packs both.
fn pack<const W: usize>(src: Strided, lines: usize, kc: usize, out: &mut [f32]) {
    for (s, sliver) in out.chunks_exact_mut(W * kc).enumerate() {
        let l0 = s * W;
        let width = W.min(lines - l0);
        let mut p0 = 0;
        if W % 8 == 0 && width == W && src.cs == 1 {
            // Lines contiguous along k (B a transposed weight): 8 x 8 blocks, eight
            // vector loads transposed in registers into eight vector stores.
            while p0 + 8 <= kc {
                for h in (0..W).step_by(8) {
                    // SAFETY: lines l0+h .. l0+h+8 and steps p0 .. p0+8 lie inside the
                    // block; the sliver holds steps p0 .. p0+8 of all W lines; this
                    // module runs only where AVX2 is available.
                    unsafe {
                        transpose8(
                            src.ptr.add((l0 + h) * src.rs + p0),
                            src.rs,
                            sliver.as_mut_ptr().add(p0 * W + h),
                            W,
                        )
                    };
                }
                p0 += 8;
            }
        }
        for p in p0..kc {
            let dst = &mut sliver[p * W..(p + 1) * W];
            // SAFETY: (l0 + i, p) for i < width lies inside the block the caller described.
            unsafe {
                let first = src.ptr.add(l0 * src.rs + p * src.cs);
                if src.rs == 1 && width == W {
                    std::ptr::copy_nonoverlapping(first, dst.as_mut_ptr(), W);
                } else if width == W {
                    // A full sliver of strided lines: `W` loads, unrolled, no branch.
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = *first.add(i * src.rs);
                    }
                } else {
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = if i < width {
                            *first.add(i * src.rs)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }
}

/// Writes the transpose of the 8 x 8 block at `src` (rows `rs` apart) to `dst` (rows
/// `rd` apart): `dst[c * rd + r] = src[r * rs + c]`.
///
/// # Safety
/// AVX2 must be available; both blocks must be valid for 8 rows of 8 elements.
#[target_feature(enable = "avx2")]
unsafe fn transpose8(src: *const f32, rs: usize, dst: *mut f32, rd: usize) {
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * rs)));
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let c = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (i, v) in c.iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * rd), *v);
    }
}

/// `C[0..mr, 0..nr] = alpha * A_sliver * B_sliver + beta * C` for one micro-tile.
///
/// # Safety
/// AVX2 and FMA must be available; `a` must reach `MR` rows and `b` `NR` columns over
/// `kc` steps; `c` addresses an `mr x nr` tile with row stride `rsc` (`mr <= MR`,
/// `nr <= NR`).
///
/// `UNIT_RS` is true when the sliver's rows are adjacent (`rs == 1`: a packed sliver, or
/// a column-major A read in place): its six loads per step then sit at constant offsets
/// of one pointer. Otherwise (a row-major A read in place, `ks == 1`) the six row
/// offsets are computed once, so a step costs one pointer increment rather than a chain
/// of additions of a run-time stride.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel<const UNIT_RS: bool>(
    kc: usize,
    a: Sliver,
    b: Sliver,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
    mr: usize,
    nr: usize,
) {
    let mut c00 = _mm256_setzero_ps();
    let mut c01 = _mm256_setzero_ps();
    let mut c10 = _mm256_setzero_ps();
    let mut c11 = _mm256_setzero_ps();
    let mut c20 = _mm256_setzero_ps();
    let mut c21 = _mm256_setzero_ps();
    let mut c30 = _mm256_setzero_ps();
    let mut c31 = _mm256_setzero_ps();
    let mut c40 = _mm256_setzero_ps();
    let mut c41 = _mm256_setzero_ps();
    let mut c50 = _mm256_setzero_ps();
    let mut c51 = _mm256_setzero_ps();
    // Bring the C tile towards L1 while the k loop runs.
    for i in 0..mr {
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + NR - 1) as *const i8);
    }
    // Offsets of the six rows from the sliver's pointer, and its step along k.
    let (ars, aks) = if UNIT_RS { (1, a.ks) } else { (a.rs, 1) };
    let rows = [0, ars, 2 * ars, 3 * ars, 4 * ars, 5 * ars];
    let bks = b.ks;
    let (mut a, mut b) = (a.ptr, b.ptr);
    for _ in 0..kc {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        let a0 = _mm256_broadcast_ss(&*a);
        c00 = _mm256_fmadd_ps(a0, b0, c00);
        c01 = _mm256_fmadd_ps(a0, b1, c01);
        let a1 = _mm256_broadcast_ss(&*a.add(rows[1]));
        c10 = _mm256_fmadd_ps(a1, b0, c10);
        c11 = _mm256_fmadd_ps(a1, b1, c11);
        let a2 = _mm256_broadcast_ss(&*a.add(rows[2]));
        c20 = _mm256_fmadd_ps(a2, b0, c20);
        c21 = _mm256_fmadd_ps(a2, b1, c21);
        let a3 = _mm256_broadcast_ss(&*a.add(rows[3]));
        c30 = _mm256_fmadd_ps(a3, b0, c30);
        c31 = _mm256_fmadd_ps(a3, b1, c31);
        let a4 = _mm256_broadcast_ss(&*a.add(rows[4]));
        c40 = _mm256_fmadd_ps(a4, b0, c40);
        c41 = _mm256_fmadd_ps(a4, b1, c41);
        let a5 = _mm256_broadcast_ss(&*a.add(rows[5]));
        c50 = _mm256_fmadd_ps(a5, b0, c50);
        c51 = _mm256_fmadd_ps(a5, b1, c51);
        a = a.add(aks);
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
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    if mr == MR && nr == NR {
        for (i, row) in acc.iter().enumerate() {
            let dst = c.add(i * rsc);
            for (h, &v) in row.iter().enumerate() {
                let p = dst.add(h * 8);
                let mut r = _mm256_mul_ps(va, v);
                if beta != 0.0 {
                    r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(p), r);
                }
                _mm256_storeu_ps(p, r);
            }
        }
    } else {
        let mut tile = [0.0f32; MR * NR];
        for (i, row) in acc.iter().enumerate() {
            _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR), row[0]);
            _mm256_storeu_ps(tile.as_mut_ptr().add(i * NR + 8), row[1]);
        }
        for i in 0..mr {
            for j in 0..nr {
                let p = c.add(i * rsc + j);
                let v = alpha * tile[i * NR + j];
                *p = if beta != 0.0 { v + beta * *p } else { v };
            }
        }
    }
}

/// Where the kernel reads one sliver: `MR` rows of A (row `i`, step `p` at
/// `ptr + i*rs + p*ks`) or `NR` columns of B (column `j`, step `p` at `ptr + j + p*ks`).
#[derive(Clone, Copy)]
struct Sliver {
    ptr: *const f32,
    rs: usize,
    ks: usize,
}

/// Multiplies an A block by a B panel, given as sliver lists, into C.
///
/// # Safety
/// As [`kernel`], for every micro-tile of the block.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel(
    mc: usize,
    nc: usize,
    kc: usize,
    a: &[Sliver],
    b: &[Sliver],
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    for (sj, &bs) in b.iter().enumerate() {
        let jr = sj * NR;
        let nr = NR.min(nc - jr);
        for (si, &as_) in a.iter().enumerate() {
            let ir = si * MR;
            let mr = MR.min(mc - ir);
            if as_.rs == 1 {
                kernel::<true>(kc, as_, bs, c.add(ir * rsc + jr), rsc, alpha, beta, mr, nr);
            } else {
                kernel::<false>(kc, as_, bs, c.add(ir * rsc + jr), rsc, alpha, beta, mr, nr);
            }
        }
    }
}

/// B operands up to this many elements are read in place when their layout allows:
/// they sit in L2, and packing them would cost more than it saves.
const DIRECT_MAX: usize = 64 * 1024;

/// The slivers of `lines` lines of depth `kc` (lines and layout as for [`pack`]): read
/// in place when `direct`, else packed into `buf`. A partial last sliver is always
/// packed, so the kernel never reads past the last line.
fn slivers<const W: usize>(
    src: Strided,
    lines: usize,
    kc: usize,
    direct: bool,
    buf: &mut [f32],
) -> Vec<Sliver> {
    let count = lines.div_ceil(W);
    let full = if direct { lines / W } else { 0 };
    let mut v: Vec<Sliver> = (0..full)
        .map(|s| Sliver {
            // SAFETY: line s*W lies inside the block.
            ptr: unsafe { src.ptr.add(s * W * src.rs) },
            rs: src.rs,
            ks: src.cs,
        })
        .collect();
    let rest = Strided {
        // SAFETY: line full*W lies inside the block (or is one past its end with no
        // slivers left to pack).
        ptr: src.ptr.wrapping_add(full * W * src.rs),
        ..src
    };
    let packed = count - full;
    pack::<W>(rest, lines - full * W, kc, &mut buf[..packed * W * kc]);
    v.extend((0..packed).map(|s| Sliver {
        ptr: buf[s * W * kc..].as_ptr(),
        rs: 1,
        ks: W,
    }));
    v
}

/// `C = alpha * A * B + beta * C` with C row-major (`rsc` elements between rows), on the
/// calling thread: slabs of depth `KC`, B panels of `NC` columns, A blocks of `MC` rows.
///
/// # Safety
/// [`available`] must be true; `a` must address an `m x k` and `b` a `k x n` matrix
/// through their strides, `c` an `m x n` matrix with row stride `rsc`, not overlapping
/// either; `m, n, k > 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Strided,
    b: Strided,
    beta: f32,
    c: *mut f32,
    rsc: usize,
) {
    // A row-major A is read in place: the kernel walks its six rows with one pointer
    // and fixed offsets, which costs no more than a packed sliver, and each A block is
    // used by every B sliver of the panel while it sits in L2 either way.
    let a_direct = a.cs == 1;
    // A small row-major B too; a large one is packed, since its slivers are reused by
    // every A sliver and must stay in L1.
    let b_direct = k * n <= DIRECT_MAX && b.cs == 1;
    // With few rows in A, each B panel serves few A blocks and is mostly streamed in
    // once: narrower panels then stay in L2 between the blocks that share them.
    let nc_max = if m <= SMALL_M { NC_SMALL_M } else { NC };
    for jc in (0..n).step_by(nc_max) {
        let nc = nc_max.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            let b_panel = Strided {
                ptr: b.ptr.add(pc * b.rs + jc * b.cs),
                ..b
            };
            with_buffer(&PACK_B, nc.div_ceil(NR) * NR * kc, |bbuf| {
                // B is read as its transpose: its columns are the lines.
                let b_lines = Strided {
                    ptr: b_panel.ptr,
                    rs: b_panel.cs,
                    cs: b_panel.rs,
                };
                let bsl = slivers::<NR>(b_lines, nc, kc, b_direct, bbuf);
                for i0 in (0..m).step_by(MC) {
                    let mc = MC.min(m - i0);
                    let a_block = Strided {
                        ptr: a.ptr.add(i0 * a.rs + pc * a.cs),
                        ..a
                    };
                    with_buffer(&PACK_A, mc.div_ceil(MR) * MR * kc, |abuf| {
                        let asl = slivers::<MR>(a_block, mc, kc, a_direct, abuf);
                        macro_kernel(
                            mc,
                            nc,
                            kc,
                            &asl,
                            &bsl,
                            c.add(i0 * rsc + jc),
                            rsc,
                            alpha,
                            beta_eff,
                        );
                    });
                }
            });
        }
    }
}

/// Runs `f` on a thread-local scratch buffer of `len` elements (a fresh one if this
/// thread's buffer is already in use further up its stack).
fn with_buffer<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}
