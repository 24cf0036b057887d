//! A BLIS-style single-precision GEMM for x86-64 CPUs with AVX2 and FMA.
//!
//! The structure is the one of Goto and van de Geijn ("Anatomy of high-performance matrix
//! multiplication", 2008) and BLIS: the product is cut into `KC`-deep slabs; for each,
//! a block of up to [`mc()`] rows of A (half of one core's L2) is packed into `MR`-tall
//! row slivers, and B is packed one `NR`-wide column sliver at a time; a `6 x 16`
//! micro-kernel then multiplies every A sliver of the block by that B sliver (which
//! stays in L1) into twelve 8-lane accumulators: per step of k it loads two vectors of
//! B, broadcasts six values of A and issues twelve fused multiply-adds.
//!
//! Where A fits in one block, each B sliver is packed right before its use and serves
//! the whole of A, so B is read once from wherever it lives (a weight streamed from
//! memory at batch 1 included) and no packed panel of B competes with the A block for
//! L2. Where A takes several blocks, B is packed once, whole, ahead of them (as BLIS
//! packs a panel of B for its L3), and every block reads the packed slivers.
//!
//! Packing reads the operands through their row and column strides, so a transposed
//! view costs nothing extra; a B that is a transposed weight (`x · Wᵀ`) is packed in
//! 8 x 8 blocks transposed in registers. A small row-major B is read in place, and so
//! is a row-major A when B is narrow (the micro-kernel takes A's strides).
//! The kernel runs on one thread; `matmul.rs` gives each thread its own band of C.
//!
//! The blocking is shared with the AVX-512 micro-kernel (`gemm_avx512.rs`, 6 x 32
//! tiles), and both micro-kernels are one body ([`micro_kernel!`]) over either
//! instruction set's intrinsics.

use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::parallel::SendPtr;

/// Rows of the micro-tile (of both kernels).
pub(crate) const MR: usize = 6;
/// Columns of the micro-tile (two 8-lane vectors).
const NR: usize = 16;
/// Depth of a slab: one A sliver (6 x 256 x 4 B = 6 KiB) plus one B sliver (16 KiB) fit in L1.
const KC: usize = 256;
/// Most rows of a packed A block where the CPU does not report its L2 size (2,048 x 256
/// x 4 B = 2 MiB), and the most on any CPU.
const MC_MAX: usize = 2048;
/// Fewest rows of a packed A block.
const MC_MIN: usize = 8 * MR;

/// Most rows of a packed A block: as many whole slivers as fill half of one core's L2
/// (the rest holds the B slivers and C), so that every B sliver sweeps the block from
/// L2. 252 rows for a 512 KiB L2. A product with more rows than that packs B once,
/// whole, ahead of its blocks (see [`sgemm`]). The measurements that chose this rule
/// are in the crate's README (section GEMM).
fn mc() -> usize {
    static MC: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MC.get_or_init(|| {
        crate::isa::l2_cache_bytes().map_or(MC_MAX, |l2| {
            (l2 / 2 / (KC * 4) / MR * MR).clamp(MC_MIN, MC_MAX)
        })
    })
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
    static PACK_SHARED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A B operand packed whole, ahead of a product whose bands of C all read it, so that
/// each band does not pack it again: slab by slab (depth [`KC`]), each slab sliver by
/// sliver in the layout of [`pack`] (`NR x kc` elements a sliver, zero past the last
/// column). The slab at depth `pc` starts at element `pc * columns`, `columns` being
/// `n` rounded up to whole slivers.
#[derive(Clone, Copy)]
pub(crate) struct PackedB {
    ptr: *const f32,
    columns: usize,
}

// SAFETY: the packed buffer is only read once packed, and outlives the parallel product
// (see `with_packed_b`).
unsafe impl Send for PackedB {}
unsafe impl Sync for PackedB {}

/// An A operand packed whole, ahead of a product whose bands of C (bands of columns)
/// all read it: block by block (the blocks of at most [`mc()`] rows that [`sgemm`] cuts),
/// each block slab by slab (depth [`KC`]), each slab in the layout of [`pack`] (`MR x
/// kc` elements a sliver, zero past the last row).
#[derive(Clone, Copy)]
pub(crate) struct PackedA {
    ptr: *const f32,
}

// SAFETY: as for `PackedB`.
unsafe impl Send for PackedA {}
unsafe impl Sync for PackedA {}

impl PackedA {
    /// Where the slab at depth `pc` of the block that starts at element `base` and
    /// holds `slivers` slivers starts.
    fn offset(base: usize, slivers: usize, pc: usize) -> usize {
        base + pc * slivers * MR
    }

    /// The slab at depth `pc` of the block that starts at element `base` and holds
    /// `slivers` slivers.
    fn slab(self, base: usize, slivers: usize, pc: usize) -> *const f32 {
        self.ptr.wrapping_add(Self::offset(base, slivers, pc))
    }
}

impl PackedB {
    /// Where sliver `jr..jr + NR` of the slab at depth `pc` (`kc` deep) starts, in a
    /// B of `columns` columns (whole slivers).
    fn offset(columns: usize, pc: usize, jr: usize, kc: usize) -> usize {
        pc * columns + jr * kc
    }

    /// Sliver `jr..jr + NR` of the slab at depth `pc` (`kc` deep).
    fn sliver(self, pc: usize, jr: usize, kc: usize) -> *const f32 {
        self.ptr
            .wrapping_add(Self::offset(self.columns, pc, jr, kc))
    }
}

/// The rows `i0..i1` of block `blk` of `blocks` in an `m`-row A.
fn block_rows(m: usize, blk: usize, blocks: usize) -> (usize, usize) {
    // Inner edges on whole slivers: only the last block may end in a partial one.
    let edge = |b: usize| {
        if b == blocks {
            m
        } else {
            ((m * b / blocks).div_ceil(MR) * MR).min(m)
        }
    };
    (edge(blk), edge(blk + 1))
}

/// Fills this thread's shared packing buffer (`len` elements) by `fill(t, buffer)` for
/// `t` in `0..tasks` on the crate's threads, each task writing its own part, then runs
/// `f` on the filled buffer.
fn with_shared_buffer<R>(
    len: usize,
    tasks: usize,
    fill: impl Fn(usize, SendPtr) + Sync,
    f: impl FnOnce(*const f32) -> R,
) -> R {
    with_buffer(&PACK_SHARED, len, |buf| {
        let out = SendPtr(buf.as_mut_ptr());
        crate::parallel::run_split(tasks, |t| fill(t, out));
        f(buf.as_ptr())
    })
}

/// Packs the `m x k` operand `a` whole into this thread's shared buffer, in the
/// layout of [`PackedA`], its slivers split among `tasks` tasks on the crate's
/// threads, and runs `f` on the result.
///
/// # Safety
/// `a` must address an `m x k` matrix through its strides; `m, k > 0`; the module's
/// instruction set must be available.
pub(crate) unsafe fn with_packed_a<R>(
    m: usize,
    k: usize,
    a: Strided,
    tasks: usize,
    f: impl FnOnce(PackedA) -> R,
) -> R {
    let blocks = m.div_ceil(mc());
    let padded = (0..blocks)
        .map(|blk| {
            let (i0, i1) = block_rows(m, blk, blocks);
            (i1 - i0).div_ceil(MR) * MR
        })
        .sum::<usize>();
    let fill = |t: usize, out: SendPtr| {
        // The whole of `a` (Sync), not its raw pointer field.
        let src = a;
        let mut base = 0;
        for blk in 0..blocks {
            let (i0, i1) = block_rows(m, blk, blocks);
            let slivers = (i1 - i0).div_ceil(MR);
            let (s0, s1) = (slivers * t / tasks, slivers * (t + 1) / tasks);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                if s0 < s1 {
                    let lines = Strided {
                        // SAFETY: row i0 + s0·MR < i1 and step pc lie inside A.
                        ptr: unsafe { src.ptr.add((i0 + s0 * MR) * src.rs + pc * src.cs) },
                        ..src
                    };
                    // SAFETY: slivers s0..s1 of this block's slab at pc lie inside
                    // the buffer, and each task writes its own slivers.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.get()
                                .add(PackedA::offset(base, slivers, pc) + s0 * MR * kc),
                            (s1 - s0) * MR * kc,
                        )
                    };
                    pack::<MR>(lines, (i1 - i0 - s0 * MR).min((s1 - s0) * MR), kc, dst);
                }
            }
            base += slivers * MR * k;
        }
    };
    with_shared_buffer(padded * k, tasks, fill, |ptr| f(PackedA { ptr }))
}

/// Whether [`sgemm`] packs A (rather than reading it in place) for a product of `n`
/// columns with the AVX-512 kernel (`wide`) or the AVX2 one, so that packing it once
/// for several bands of columns pays.
pub(crate) fn packs_a(wide: bool, a: Strided, n: usize) -> bool {
    let in_place = n <= A_DIRECT_MAX_N && (a.cs == 1 || (wide && a.rs == 1));
    !in_place
}

/// Whether [`sgemm`] packs B sliver by sliver (rather than reading it in place), so that
/// packing it once for several bands of C pays.
pub(crate) fn packs_b(k: usize, n: usize, b: Strided) -> bool {
    !(k * n <= DIRECT_MAX && b.cs == 1)
}

/// Packs sliver `jr..jr + W` of the `k x n` operand `b`'s slab at depth `pc` (`kc`
/// deep) into `out` (`W x kc` elements, zero past column `n`).
///
/// # Safety
/// `b` must address a `k x n` matrix through its strides, `pc < k`, `jr < n`.
unsafe fn pack_b_sliver<const W: usize>(
    b: Strided,
    n: usize,
    pc: usize,
    jr: usize,
    kc: usize,
    out: &mut [f32],
) {
    // B is read as its transpose: its columns are the lines.
    let lines = Strided {
        ptr: b.ptr.add(pc * b.rs + jr * b.cs),
        rs: b.cs,
        cs: b.rs,
    };
    pack::<W>(lines, W.min(n - jr), kc, out);
}

/// Packs the `k x n` operand `b` whole for the `wide` (AVX-512) or AVX2 kernel into
/// this thread's shared buffer, in the layout of [`PackedB`], its slivers split among
/// `tasks` tasks on the crate's threads, and runs `f` on the result.
///
/// # Safety
/// `b` must address a `k x n` matrix through its strides; `k, n > 0`; the module's
/// instruction set must be available.
pub(crate) unsafe fn with_packed_b<R>(
    wide: bool,
    k: usize,
    n: usize,
    b: Strided,
    tasks: usize,
    f: impl FnOnce(PackedB) -> R,
) -> R {
    let nr = if wide { crate::gemm_avx512::NR } else { NR };
    let slivers = n.div_ceil(nr);
    let columns = slivers * nr;
    let fill = |t: usize, out: SendPtr| {
        // The whole of `b` (Sync), not its raw pointer field.
        let src = b;
        let (s0, s1) = (slivers * t / tasks, slivers * (t + 1) / tasks);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            for jr in (s0..s1).map(|s| s * nr) {
                // SAFETY: sliver jr of the slab at pc lies inside the buffer (`columns *
                // k` elements) and inside B; each task writes its own slivers.
                unsafe {
                    let dst = std::slice::from_raw_parts_mut(
                        out.get().add(PackedB::offset(columns, pc, jr, kc)),
                        nr * kc,
                    );
                    if wide {
                        pack_b_sliver::<{ crate::gemm_avx512::NR }>(src, n, pc, jr, kc, dst);
                    } else {
                        pack_b_sliver::<NR>(src, n, pc, jr, kc, dst);
                    }
                }
            }
        }
    };
    with_shared_buffer(columns * k, tasks, fill, |ptr| f(PackedB { ptr, columns }))
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
        if W.is_multiple_of(8) && width == W && src.cs == 1 {
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
        } else if W == MR && width == W && src.cs == 1 {
            // Rows contiguous along k (a row-major A): 6 x 8 blocks transposed in
            // registers into 48 consecutive elements (eight steps of six).
            while p0 + 8 <= kc {
                // SAFETY: lines l0 .. l0+6 and steps p0 .. p0+8 lie inside the block;
                // the sliver holds steps p0 .. p0+8 (48 elements from p0*6); this module
                // runs only where AVX2 is available.
                unsafe {
                    transpose6x8(
                        src.ptr.add(l0 * src.rs + p0),
                        src.rs,
                        sliver.as_mut_ptr().add(p0 * W),
                    )
                };
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
    for (i, v) in transposed(r).iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * rd), *v);
    }
}

/// Writes the 6 x 8 block at `src` (rows `rs` apart) column by column to the 48
/// elements at `dst`: `dst[c * 6 + r] = src[r * rs + c]`.
///
/// # Safety
/// AVX2 must be available; `src` must be valid for 6 rows of 8 elements, `dst` for 48.
#[target_feature(enable = "avx2")]
unsafe fn transpose6x8(src: *const f32, rs: usize, dst: *mut f32) {
    let zero = _mm256_setzero_ps();
    let r: [__m256; 8] = std::array::from_fn(|i| {
        if i < 6 {
            _mm256_loadu_ps(src.add(i * rs))
        } else {
            zero
        }
    });
    let c = transposed(r);
    // Column c holds six values and two zeros; each store's last two lanes are
    // overwritten by the next one, and the last column stores six lanes only.
    for (i, v) in c[..7].iter().enumerate() {
        _mm256_storeu_ps(dst.add(i * 6), *v);
    }
    let six = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, 0, 0);
    _mm256_maskstore_ps(dst.add(42), six, c[7]);
}

/// The transpose of eight 8-lane rows: lane `r` of result `c` is lane `c` of row `r`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transposed(r: [__m256; 8]) -> [__m256; 8] {
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
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

/// Defines a `MR x NR` micro-kernel, `NR` two vectors of `LANES` lanes, from one
/// instruction set's intrinsics: the AVX2 kernel below and the AVX-512 one of
/// `gemm_avx512.rs` are this one body.
///
/// The kernel computes `C[0..mr, 0..nr] = alpha * A_sliver * B_sliver + beta * C
/// (+ bias)` for one micro-tile, the optional bias a row of `nr` values added to every
/// row. Step `p` of row `i` of the A sliver is at `a + i*ars + p*aks`: a packed sliver
/// has `ars = 1`, `aks = MR`; six rows of A read in place have A's row and column
/// strides (`aks = 1` for a row-major A, `ars = 1` for a column-major one). Step `p` of
/// B's `NR` columns starts at `b + p*bks` (`bks` is `NR` for a packed sliver, B's row
/// stride for one read in place). Per step of k it loads two vectors of B, broadcasts
/// six values of A and issues twelve fused multiply-adds.
///
/// Safety of the kernel: its target features must be available; `a` must reach
/// `MR` rows over `kc` steps and `b` `NR` columns over `kc` steps; `c` addresses an
/// `mr x nr` tile with row stride `rsc` (`mr <= MR`, `nr <= NR`); `bias`, unless null,
/// `nr` elements (added to every row of the tile as it is written).
macro_rules! micro_kernel {
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident, features $feature:literal, columns $nr:expr, lanes $lanes:expr,
        $zero:ident, $load:ident, $store:ident, $splat:ident, $fma:ident, $mul:ident,
        $add:ident
    ) => {
        $(#[$attr])*
        #[target_feature(enable = $feature)]
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name(
            kc: usize,
            a: *const f32,
            ars: usize,
            aks: usize,
            mut b: *const f32,
            bks: usize,
            c: *mut f32,
            rsc: usize,
            alpha: f32,
            beta: f32,
            bias: *const f32,
            mr: usize,
            nr: usize,
        ) {
            const W: usize = $nr;
            const L: usize = $lanes;
            use $crate::gemm_avx2::MR;
            let mut c00 = $zero();
            let mut c01 = $zero();
            let mut c10 = $zero();
            let mut c11 = $zero();
            let mut c20 = $zero();
            let mut c21 = $zero();
            let mut c30 = $zero();
            let mut c31 = $zero();
            let mut c40 = $zero();
            let mut c41 = $zero();
            let mut c50 = $zero();
            let mut c51 = $zero();
            // Bring the C tile towards L1 while the k loop runs.
            for i in 0..mr {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + W - 1) as *const i8);
            }
            // The six rows of the sliver, each stepped by `aks` along k.
            let rows = [
                a,
                a.add(ars),
                a.add(2 * ars),
                a.add(3 * ars),
                a.add(4 * ars),
                a.add(5 * ars),
            ];
            let mut off = 0;
            for _ in 0..kc {
                let b0 = $load(b);
                let b1 = $load(b.add(L));
                let a0 = $splat(*rows[0].add(off));
                c00 = $fma(a0, b0, c00);
                c01 = $fma(a0, b1, c01);
                let a1 = $splat(*rows[1].add(off));
                c10 = $fma(a1, b0, c10);
                c11 = $fma(a1, b1, c11);
                let a2 = $splat(*rows[2].add(off));
                c20 = $fma(a2, b0, c20);
                c21 = $fma(a2, b1, c21);
                let a3 = $splat(*rows[3].add(off));
                c30 = $fma(a3, b0, c30);
                c31 = $fma(a3, b1, c31);
                let a4 = $splat(*rows[4].add(off));
                c40 = $fma(a4, b0, c40);
                c41 = $fma(a4, b1, c41);
                let a5 = $splat(*rows[5].add(off));
                c50 = $fma(a5, b0, c50);
                c51 = $fma(a5, b1, c51);
                off += aks;
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
            let va = $splat(alpha);
            let vb = $splat(beta);
            if mr == MR && nr == W {
                for (i, row) in acc.iter().enumerate() {
                    let dst = c.add(i * rsc);
                    for (h, &v) in row.iter().enumerate() {
                        let p = dst.add(h * L);
                        let mut r = $mul(va, v);
                        if beta != 0.0 {
                            r = $fma(vb, $load(p), r);
                        }
                        if !bias.is_null() {
                            r = $add(r, $load(bias.add(h * L)));
                        }
                        $store(p, r);
                    }
                }
            } else {
                let mut tile = [0.0f32; MR * W];
                for (i, row) in acc.iter().enumerate() {
                    $store(tile.as_mut_ptr().add(i * W), row[0]);
                    $store(tile.as_mut_ptr().add(i * W + L), row[1]);
                }
                // The partial tiles at C's edges, element by element.
                for i in 0..mr {
                    for j in 0..nr {
                        let p = c.add(i * rsc + j);
                        let v = alpha * tile[i * W + j];
                        let v = if beta != 0.0 { v + beta * *p } else { v };
                        *p = if bias.is_null() { v } else { v + *bias.add(j) };
                    }
                }
            }
        }
    };
}
pub(crate) use micro_kernel;

micro_kernel! {
    /// The AVX2 micro-kernel: `6 x 16` tiles in twelve 8-lane accumulators.
    fn kernel, features "avx2,fma", columns NR, lanes 8,
    _mm256_setzero_ps, _mm256_loadu_ps, _mm256_storeu_ps, _mm256_set1_ps, _mm256_fmadd_ps,
    _mm256_mul_ps, _mm256_add_ps
}

/// A micro-kernel: `kernel(kc, a, ars, aks, b, bks, c, rsc, alpha, beta, bias, mr, nr)` as
/// [`kernel`].
type Kernel = unsafe fn(
    usize,
    *const f32,
    usize,
    usize,
    *const f32,
    usize,
    *mut f32,
    usize,
    f32,
    f32,
    *const f32,
    usize,
    usize,
);

/// B operands up to this many elements are read in place when their layout allows:
/// they sit in L2, and packing them would cost more than it saves.
const DIRECT_MAX: usize = 64 * 1024;

/// Products with at most this many columns read a row-major A in place rather than
/// packing it. Packing costs a pass over A; reading in place costs six strided streams
/// each time a B sliver sweeps the A block. Measured on Zen 4, one thread, AVX-512
/// kernel, medians of four alternating runs: 4160 x 192 x 192 +16-20%, 197 x 3072 x 768
/// +3%, 256³ +4%, but 4160 x 192 x 576 -4% and 1576 x 768 x 2304 -9%.
///
/// The AVX-512 kernel reads a column-major A (a transposed operand, as in the weight
/// gradient `dYᵀ · X`) in place under the same bound: each step of k takes the six
/// adjacent elements of one column. Zen 4, one thread, the weight gradients inside W3
/// and W4 (all calls of a shape over 12 steps, two alternating runs): 768 x 4160 x 192
/// 95-98 to 104 GFLOP/s, 576 x 4160 x 192 +6%, 192 x 4160 x 192 +6%, 8,000 x 1,024 x
/// 256 +3-5%, 1,024² x 256 +3%. With more columns, in isolation, level or behind (768 x
/// 1,576 x 3,072 -4%). The AVX2 kernel, with half the multiply-adds per element of A,
/// lost 2-18% on such shapes (8-18% on all but 256 x 1,024 x 256), and packs it.
const A_DIRECT_MAX_N: usize = 256;

/// `C = alpha * A * B + beta * C` with C row-major (`rsc` elements between rows), on the
/// calling thread.
///
/// Blocks of at most [`mc()`] rows of A (split evenly, on whole slivers), slabs of depth
/// `KC`; per slab the A block is packed once, then each `NR`-wide sliver of B is packed
/// (or read in place, or read from B packed whole ahead of several blocks) and
/// multiplied by every A sliver of the block while it sits in L1.
///
/// With `wide`, the AVX-512 micro-kernel of `gemm_avx512.rs` (32 columns a sliver),
/// else the AVX2 one. An operand in `packed` is read from there instead of being packed
/// here. A `bias` (unless null) is a row of `n` values added to every row of C.
///
/// # Safety
/// [`isa()`](crate::isa) must be at least `Isa::Avx2` (with `wide`, `Isa::Avx512`); `a` must address
/// an `m x k` and `b` a `k x n` matrix through their strides, `c` an `m x n` matrix with
/// row stride `rsc`, not overlapping either; `m, n, k > 0`; `bias` null or valid for
/// `n` reads; an operand in `packed` must be this product's, packed for this kernel,
/// and still alive.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    wide: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Strided,
    b: Strided,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    bias: *const f32,
    packed: Packed,
) {
    use crate::gemm_avx512 as avx512;
    // With more rows than one block, each B sliver packed right before its use would be
    // packed again for every block: B is packed once, whole, ahead of them.
    if matches!(packed, Packed::Neither) && m > mc() && packs_b(k, n, b) {
        return with_packed_b(wide, k, n, b, 1, |packed| {
            sgemm(
                wide,
                m,
                n,
                k,
                alpha,
                a,
                b,
                beta,
                c,
                rsc,
                bias,
                Packed::B(packed),
            )
        });
    }
    if wide {
        blocked::<{ avx512::NR }>(
            avx512::kernel,
            m,
            n,
            k,
            alpha,
            a,
            b,
            beta,
            c,
            rsc,
            bias,
            packed,
        )
    } else {
        blocked::<NR>(kernel, m, n, k, alpha, a, b, beta, c, rsc, bias, packed)
    }
}

/// The operand that a product reads packed ahead (by [`with_packed_a`] or
/// [`with_packed_b`]), if any: the other one it packs itself.
#[derive(Clone, Copy)]
pub(crate) enum Packed {
    /// Nothing packed ahead.
    Neither,
    /// A, packed for the product's `m` and `k`.
    A(PackedA),
    /// B, packed for the product's `k` and `n` and the same kernel.
    B(PackedB),
}

/// [`sgemm`] around the micro-kernel `kernel`, whose tiles are `MR x NR`.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked<const NR: usize>(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Strided,
    b: Strided,
    beta: f32,
    c: *mut f32,
    rsc: usize,
    bias: *const f32,
    packed: Packed,
) {
    let (packed_a, packed_b) = match packed {
        Packed::Neither => (None, None),
        Packed::A(a) => (Some(a), None),
        Packed::B(b) => (None, Some(b)),
    };
    // A small row-major B is read in place; otherwise each sliver is packed, so the
    // kernel reads its sixteen columns as two adjacent vectors per step.
    let b_direct = !packs_b(k, n, b) && packed_b.is_none();
    // A row-major A (or, for the AVX-512 kernel, a column-major one) is read in place,
    // six rows at a time, when B has few slivers (each sliver reads the whole A block
    // again); only a partial last sliver is packed (zero-padded), so the kernel never
    // reads past A's last row.
    let a_direct = !packs_a(NR == crate::gemm_avx512::NR, a, n) && packed_a.is_none();
    let blocks = m.div_ceil(mc());
    // Where block `blk` starts in a packed-ahead A.
    let mut block_base = 0;
    for blk in 0..blocks {
        let (i0, i1) = block_rows(m, blk, blocks);
        let mb = i1 - i0;
        let slivers_a = mb.div_ceil(MR);
        let in_place = if a_direct { mb / MR } else { 0 };
        let this_base = block_base;
        block_base += slivers_a * MR * k;
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let beta_eff = if pc == 0 { beta } else { 1.0 };
            // The bias is added once, by the first slab.
            let bias_slab = if pc == 0 { bias } else { std::ptr::null() };
            let a_block = Strided {
                ptr: a.ptr.add(i0 * a.rs + pc * a.cs),
                ..a
            };
            let rest = Strided {
                ptr: a_block.ptr.wrapping_add(in_place * MR * a.rs),
                ..a_block
            };
            let own_len = if packed_a.is_some() {
                0
            } else {
                (slivers_a - in_place) * MR * kc
            };
            with_buffer(&PACK_A, own_len, |abuf| {
                let apacked = match packed_a {
                    Some(packed) => packed.slab(this_base, slivers_a, pc),
                    None => {
                        pack::<MR>(rest, mb - in_place * MR, kc, abuf);
                        abuf.as_ptr()
                    }
                };
                with_buffer(&PACK_B, NR * kc, |bbuf| {
                    for jr in (0..n).step_by(NR) {
                        let nr = NR.min(n - jr);
                        let bias_sliver = if bias_slab.is_null() {
                            bias_slab
                        } else {
                            bias_slab.add(jr)
                        };
                        let first = b.ptr.add(pc * b.rs + jr * b.cs);
                        // The last sliver, when partial, is packed (zero-padded) so the
                        // kernel never reads past B's last column.
                        let (bp, bks) = if let Some(packed) = packed_b {
                            (packed.sliver(pc, jr, kc), NR)
                        } else if b_direct && nr == NR {
                            (first, b.rs)
                        } else {
                            pack_b_sliver::<NR>(b, n, pc, jr, kc, bbuf);
                            (bbuf.as_ptr(), NR)
                        };
                        // The next sliver's lines, when they run along k (a transposed
                        // weight), are short separate streams that the hardware does not
                        // prefetch, and a sliver packed ahead sits in a shared cache
                        // level: fetch either a few cache lines per micro-tile. Lines of
                        // `chunks` cache lines (16 elements each), `stride` apart.
                        let (next, lines, stride, chunks) = match packed_b {
                            Some(packed) if jr + NR < n => {
                                (packed.sliver(pc, jr + NR, kc), 1, 0, (NR * kc).div_ceil(16))
                            }
                            None if b.rs == 1 && !b_direct && jr + NR < n => (
                                first.add(NR * b.cs),
                                (n - jr - NR).min(NR),
                                b.cs,
                                kc.div_ceil(16),
                            ),
                            _ => (first, 0, 0, 1),
                        };
                        let total = lines * chunks;
                        let per_tile = total.div_ceil(slivers_a);
                        let (mut line, mut chunk, mut left) = (0, 0, total);
                        for s in 0..slivers_a {
                            let ir = s * MR;
                            for _ in 0..per_tile.min(left) {
                                // Inside the next sliver (of B, or of the packed B).
                                let p = next.add(line * stride + chunk * 16) as *const i8;
                                _mm_prefetch::<_MM_HINT_T2>(p);
                                chunk += 1;
                                if chunk == chunks {
                                    chunk = 0;
                                    line += 1;
                                }
                            }
                            left -= per_tile.min(left);
                            let (ap, ars, aks) = if s < in_place {
                                (a_block.ptr.add(ir * a.rs), a.rs, a.cs)
                            } else {
                                (apacked.add((s - in_place) * MR * kc), 1, MR)
                            };
                            kernel(
                                kc,
                                ap,
                                ars,
                                aks,
                                bp,
                                bks,
                                c.add((i0 + ir) * rsc + jr),
                                rsc,
                                alpha,
                                beta_eff,
                                bias_sliver,
                                MR.min(mb - ir),
                                nr,
                            );
                        }
                    }
                });
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
