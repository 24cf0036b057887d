//! Matrix products: the crate's GEMM entry point and `Tensor::matmul`.
//!
//! [`gemm()`] is the one function through which every product goes, so its backend can
//! change without touching callers. [`GemmKernel::Auto`] picks, at run time:
//!
//! - on x86-64 CPUs with AVX2 and FMA, the crate's own BLIS-style kernel
//!   (`gemm_avx2.rs`: packed panels, a 6 x 16 micro-kernel; with AVX-512F the 6 x 32
//!   micro-kernel of `gemm_avx512.rs` in the same blocking) for products above 512³
//!   multiply-adds, and for products by a transposed B (`x · Wᵀ`) with at least 8 rows
//!   in A and 64·64·32 multiply-adds;
//! - otherwise the `gemm` crate, built with its `x86-v4` feature, which itself picks
//!   AVX-512, AVX2 or SSE kernels on x86-64 and NEON on aarch64.
//!
//! So one binary is fast and correct on all of them. `matrixmultiply` is a third
//! backend, on request, with the crate's `matrixmultiply` feature. Operands are passed with their row and column strides; a
//! transposed view is multiplied without a copy. With several threads, each thread
//! computes its own band of C (the operand that all bands share packed once, ahead,
//! for the own kernels), except where the depth dwarfs both sides of C (a weight
//! gradient, summed over every token of the batch): there each thread takes a part of
//! the depth and the parts are added. `tensor/README.md` has the measurements behind
//! these choices.

use crate::error::{Error, Result};
use crate::parallel::{self, SendPtr};
use crate::shape::{broadcast_shape, broadcast_strides, Dims};
use crate::tensor::Tensor;

#[cfg(target_arch = "x86_64")]
use crate::gemm_avx2::Packed;
/// An operand packed ahead of a product: only the own x86-64 kernels take one.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
enum Packed {
    Neither,
}

/// Products with fewer multiply-adds than this run on one thread: splitting them costs
/// more than it saves. (The crossover was about 192³ when the threads came from rayon;
/// the spinning team of `parallel.rs` starts work sooner, and the threshold was lowered
/// to 96³ with it.)
const PARALLEL_MIN_MACS: usize = 96 * 96 * 96;

/// ...except matrix-vector products (at most [`GEMV_MAX_ROWS`] rows of A, as in decoding
/// one token at a time), which are bound by reading B from memory, not by arithmetic:
/// with B of this many elements or more (256 KiB) they are split among the threads,
/// whose cores read B side by side. W6 (cached decoding) on two threads, seven
/// alternating pairs of runs: tokens/s +12% in the median pair (-4% to +48%).
const GEMV_PARALLEL_MIN_B: usize = 64 * 1024;
/// The most rows of A for which a product counts as matrix-vector.
const GEMV_MAX_ROWS: usize = 4;

/// Products with more multiply-adds than this go to the crate's own AVX2 kernel when the
/// CPU has one, smaller ones to the gemm crate (the faster on each side, measured)...
const LARGE_MACS: usize = 512 * 512 * 512;
/// ...except products by a column-major B (a transposed weight, `x · Wᵀ`) with at least
/// this many rows in A and this many multiply-adds: there the own kernel leads at every
/// size measured from 8 x 768 x 768 up (+8-35%). Below (one row, or the 32 x 64 x 32
/// products of small attention heads) neither gains.
const TRANSPOSED_B_MIN_ROWS: usize = 8;
/// The multiply-adds from which a product by a transposed B goes to the own kernel.
const TRANSPOSED_B_MIN_MACS: usize = 64 * 64 * 32;

/// Products at least this many times deeper than either side of C are split along the
/// depth (one part per thread, summed at the end) rather than into bands of C: a band
/// packs the whole of the operand it shares with the other bands, and for a weight
/// gradient `dYᵀ · X` over 4,160 tokens that operand is the larger one. W4 on two
/// threads, five alternating pairs: 155.3 against 148.5 images/s in the median pair
/// (+4% to +13%). Matrix-vector products keep their split by columns: cut along the
/// depth, cached decoding (W6) lost 1-7% on two threads.
const SPLIT_DEPTH_MIN_RATIO: usize = 4;
/// The least depth of each part of such a split (one slab of the own kernel).
const SPLIT_DEPTH_MIN_PART: usize = 256;

/// A read-only strided matrix: element `(i, j)` is `data[offset + i*row_stride + j*col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The storage the matrix lives in.
    pub data: &'a [f32],
    /// Position of element `(0, 0)`.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Step between rows.
    pub row_stride: usize,
    /// Step between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major matrix over a whole slice.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<MatRef<'a>> {
        let m = MatRef {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        };
        m.check("MatRef::row_major")?;
        Ok(m)
    }

    fn check(&self, op: &'static str) -> Result<()> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last =
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        if last >= self.data.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "a {}x{} matrix at offset {} with strides ({}, {}) reaches element {last} \
                     of a buffer of {}",
                    self.rows,
                    self.cols,
                    self.offset,
                    self.row_stride,
                    self.col_stride,
                    self.data.len()
                ),
            ));
        }
        Ok(())
    }

    /// The operand as the own kernels read it: first element and strides.
    #[cfg(target_arch = "x86_64")]
    fn strided(&self) -> crate::gemm_avx2::Strided {
        crate::gemm_avx2::Strided {
            ptr: self.data[self.offset..].as_ptr(),
            rs: self.row_stride,
            cs: self.col_stride,
        }
    }

    /// Whether a stride of 0 makes several elements share storage (the backend needs
    /// distinct elements).
    fn aliased(&self) -> bool {
        (self.rows > 1 && self.row_stride == 0) || (self.cols > 1 && self.col_stride == 0)
    }

    fn compact(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.rows * self.cols);
        for i in 0..self.rows {
            for j in 0..self.cols {
                v.push(self.data[self.offset + i * self.row_stride + j * self.col_stride]);
            }
        }
        v
    }
}

/// Which GEMM implementation [`gemm_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum GemmKernel {
    /// The fastest available on this CPU (what [`gemm()`] and `matmul` use).
    #[default]
    Auto,
    /// The crate's own AVX2 + FMA kernel; an error on CPUs without those features or
    /// with the kernels capped below AVX2 ([`set_max_isa`](crate::set_max_isa)).
    Avx2Fma,
    /// The crate's own AVX-512F kernel (the AVX2 kernel's blocking, tiles twice as
    /// wide); an error on CPUs without AVX-512 or with the kernels capped below it.
    Avx512,
    /// The `gemm` crate (run-time selected AVX-512, AVX2, SSE or NEON kernels).
    Gemm,
    /// The `matrixmultiply` crate (run-time selected AVX-512, AVX2+FMA, SSE or NEON
    /// kernels); available with the `matrixmultiply` feature, an error without it.
    MatrixMultiply,
}

impl GemmKernel {
    /// Whether this kernel can run on this CPU, is compiled in and is not above the cap
    /// on the instruction set ([`isa`](crate::isa())).
    pub fn is_available(self) -> bool {
        match self {
            GemmKernel::Auto | GemmKernel::Gemm => true,
            GemmKernel::Avx2Fma => avx2_available(),
            GemmKernel::Avx512 => avx512_available(),
            GemmKernel::MatrixMultiply => cfg!(feature = "matrixmultiply"),
        }
    }
}

/// Whether the crate's own AVX2 kernel may run (never on other architectures, where
/// [`isa`](crate::isa()) is the baseline).
fn avx2_available() -> bool {
    crate::isa() >= crate::Isa::Avx2
}

/// Whether `backend` is one of the crate's own kernels, which take a bias and an
/// operand packed ahead for several bands.
fn is_own(backend: GemmKernel) -> bool {
    matches!(backend, GemmKernel::Avx2Fma | GemmKernel::Avx512)
}

/// Whether the crate's own AVX-512 kernel may run.
fn avx512_available() -> bool {
    crate::isa() >= crate::Isa::Avx512
}

/// `C = alpha·A·B + beta·C`, with `A` `m x k`, `B` `k x n` and `C` a row-major `m x n`
/// buffer; `threads` bounds the threads used (1: the calling thread only).
///
/// With `beta = 0`, `C` is overwritten and its previous content (even NaN) is ignored.
///
/// ```
/// use tessera_tensor::{gemm, MatRef};
/// let a = [1., 2., 3., 4.];          // [[1, 2], [3, 4]]
/// let b = [5., 6., 7., 8.];          // [[5, 6], [7, 8]]
/// let mut c = [0.0f32; 4];
/// gemm(1.0, MatRef::row_major(&a, 2, 2)?, MatRef::row_major(&b, 2, 2)?, 0.0, &mut c, 1)?;
/// assert_eq!(c, [19., 22., 43., 50.]);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    threads: usize,
) -> Result<()> {
    gemm_with(GemmKernel::Auto, alpha, a, b, beta, c, threads)
}

/// [`gemm()`] with a chosen implementation, for comparing kernels.
///
/// ```
/// use tessera_tensor::{gemm_with, GemmKernel, MatRef};
/// let a = [1., 2., 3., 4.];
/// let mut c = [0.0f32; 4];
/// let m = MatRef::row_major(&a, 2, 2)?;
/// gemm_with(GemmKernel::Gemm, 1.0, m, m, 0.0, &mut c, 1)?;
/// assert_eq!(c, [7., 10., 15., 22.]);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub fn gemm_with(
    kernel: GemmKernel,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut [f32],
    threads: usize,
) -> Result<()> {
    // SAFETY: `c` is an exclusively borrowed, initialised buffer of `c.len()` elements.
    unsafe {
        gemm_into(
            kernel,
            alpha,
            a,
            b,
            beta,
            None,
            c.as_mut_ptr(),
            c.len(),
            threads,
        )
    }
}

/// [`gemm_with`] into a raw output buffer, which may be uninitialised when `beta == 0`
/// (every element is then written), plus an optional `bias` row of `n` values added to
/// every row of C: `C = alpha * A * B + beta * C + bias`. The own kernels add the bias
/// as they write C (no pass of its own, C not read when `beta == 0`).
///
/// # Safety
/// `c` must be valid for writes of `c_len` elements, not aliased by `a` or `b`, and
/// initialised when `beta != 0`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into(
    kernel: GemmKernel,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    bias: Option<&[f32]>,
    c: *mut f32,
    c_len: usize,
    threads: usize,
) -> Result<()> {
    if !kernel.is_available() {
        return Err(Error::invalid(
            "gemm",
            if kernel == GemmKernel::MatrixMultiply {
                format!("the {kernel:?} kernel needs the crate's `matrixmultiply` feature")
            } else {
                format!(
                    "the {kernel:?} kernel needs a wider instruction set: {} is the widest \
                     the kernels may use here (the CPU's, or the cap of TESSERA_MAX_ISA)",
                    crate::isa()
                )
            },
        ));
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::shape_mismatch(
            "gemm",
            &[a.rows, a.cols],
            &[b.rows, b.cols],
        ));
    }
    if c_len != m * n {
        return Err(Error::invalid(
            "gemm",
            format!(
                "output buffer holds {c_len} elements, a {m}x{n} result needs {}",
                m * n
            ),
        ));
    }
    a.check("gemm")?;
    b.check("gemm")?;
    if let Some(bias) = bias {
        if bias.len() != n {
            return Err(Error::invalid(
                "gemm",
                format!(
                    "a bias row of {} values for a product of {n} columns",
                    bias.len()
                ),
            ));
        }
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 || alpha == 0.0 {
        if beta == 0.0 {
            std::ptr::write_bytes(c, 0, c_len);
        } else {
            for i in 0..c_len {
                *c.add(i) *= beta;
            }
        }
        if let Some(bias) = bias {
            for i in 0..c_len {
                *c.add(i) += bias[i % n];
            }
        }
        return Ok(());
    }
    // The backend reads distinct elements only: compact a broadcast (stride-0) operand.
    let a_store;
    let a = if a.aliased() {
        a_store = a.compact();
        MatRef::row_major(&a_store, m, k)?
    } else {
        a
    };
    let b_store;
    let b = if b.aliased() {
        b_store = b.compact();
        MatRef::row_major(&b_store, k, n)?
    } else {
        b
    };
    let threads =
        if m * n * k >= PARALLEL_MIN_MACS || (m <= GEMV_MAX_ROWS && k * n >= GEMV_PARALLEL_MIN_B) {
            threads.max(1)
        } else {
            1
        };
    // Measured on an AVX2 machine (tensor/README.md): the gemm crate is ahead on
    // products up to 512³ with a row-major B, the crate's own kernel beyond and on a
    // transposed B (matrixmultiply trails both).
    let macs = m * n * k;
    let transposed_b = b.row_stride == 1 && b.col_stride != 1;
    let own = macs > LARGE_MACS
        || (transposed_b && m >= TRANSPOSED_B_MIN_ROWS && macs >= TRANSPOSED_B_MIN_MACS);
    // Where AVX-512F is present the own kernel runs its 16-lane micro-kernel: on Zen 4
    // (512-bit FMAs issued as two halves) level with the AVX2 one or up to 10% ahead;
    // on cores with two 512-bit FMA units it has twice the AVX2 kernel's peak.
    let backend = match kernel {
        GemmKernel::Auto if own && avx512_available() => GemmKernel::Avx512,
        GemmKernel::Auto if own && avx2_available() => GemmKernel::Avx2Fma,
        GemmKernel::Auto => GemmKernel::Gemm,
        chosen => chosen,
    };
    if threads > 1
        && m > GEMV_MAX_ROWS
        && k >= SPLIT_DEPTH_MIN_RATIO * m.max(n)
        && k >= threads * SPLIT_DEPTH_MIN_PART
    {
        split_depth(backend, alpha, a, b, beta, bias, c, threads);
        return Ok(());
    }
    // Bands of C along its longer side, each an independent product. The own kernels
    // pack the operand the bands share once for all of them (below), and cut two bands
    // per thread when they stay wide (edges then on multiples of 48, whole micro-tiles
    // of both kernels), so a thread that starts late takes fewer; three when B has 512²
    // or more elements (measured on two threads of an earlier host: W1 at 512-2048 and
    // ViT-B/16 at batch 8 gained 2-15%, while W4's products, with B of 192 x 768 at
    // most, lost 3% with three). The other backends (the gemm crate, matrixmultiply)
    // pack it again in every band, so they take one band per thread: measured in
    // tensor/README.md.
    let c = SendPtr(c);
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    let per_thread = if threads > 1 && is_own(backend) && len >= threads * 2 * 96 {
        if k * n >= 512 * 512 {
            3
        } else {
            2
        }
    } else {
        1
    };
    let tasks = (threads * per_thread).min(len.div_ceil(16)).max(1);
    let align = if per_thread > 1 { 48 } else { 1 };
    let edge = |t: usize| {
        if t == tasks {
            len
        } else {
            ((len * t / tasks + align / 2) / align * align).min(len)
        }
    };
    let band = |t: usize, packed: Packed| {
        let (lo, hi) = (edge(t), edge(t + 1));
        if lo == hi {
            return;
        }
        let (a_band, b_band, c_off, bias_band) = if by_rows {
            let rows = MatRef {
                offset: a.offset + lo * a.row_stride,
                rows: hi - lo,
                ..a
            };
            (rows, b, lo * n, bias)
        } else {
            let cols = MatRef {
                offset: b.offset + lo * b.col_stride,
                cols: hi - lo,
                ..b
            };
            (a, cols, lo, bias.map(|bias| &bias[lo..hi]))
        };
        // SAFETY: the band lies inside A (or B), as `check` proved for the whole; bands
        // of C are disjoint parts of the caller's buffer, which has row stride n.
        unsafe {
            serial(
                backend,
                alpha,
                a_band,
                b_band,
                beta,
                bias_band,
                c.get().add(c_off),
                n,
                packed,
            )
        }
    };
    // Bands of rows share all of B, bands of columns all of A: where the own kernel
    // would pack the shared operand in every band, it is packed once, its slivers
    // shared among the threads, and every band reads it.
    // SAFETY (the block): A and B are in bounds (`check`) and non-empty; the backend's
    // instruction set is available (tested above); the packed operand lives until
    // every band has ended.
    #[cfg(target_arch = "x86_64")]
    if tasks > 1 && is_own(backend) {
        use crate::gemm_avx2::{packs_a, packs_b, with_packed_a, with_packed_b};
        let bands = |packed: Packed| parallel::run_split(tasks, |t| band(t, packed));
        if by_rows {
            if packs_b(k, n, b.strided()) {
                let wide = backend == GemmKernel::Avx512;
                with_packed_b(wide, k, n, b.strided(), threads, |p| bands(Packed::B(p)));
                return Ok(());
            }
        } else {
            let widest = (0..tasks).map(|t| edge(t + 1) - edge(t)).max().unwrap_or(n);
            if packs_a(backend == GemmKernel::Avx512, a.strided(), widest) {
                with_packed_a(m, k, a.strided(), threads, |p| bands(Packed::A(p)));
                return Ok(());
            }
        }
    }
    parallel::run_split(tasks, |t| band(t, Packed::Neither));
    Ok(())
}

/// `C = alpha * A * B + beta * C` with the depth cut into `parts` contiguous parts, one
/// per task: part 0 accumulates into C, each other part writes its own scratch matrix,
/// and the scratch matrices are then added to C, rows shared among the tasks. Each task
/// packs only its own slices of A and B.
///
/// # Safety
/// As [`serial`], with `c` addressing the whole `m x n` result (row stride `n`) and
/// `parts >= 2`.
#[allow(clippy::too_many_arguments)]
unsafe fn split_depth(
    backend: GemmKernel,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    bias: Option<&[f32]>,
    c: *mut f32,
    parts: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // Not zeroed: each part writes its matrix whole (beta = 0 never reads C) before the
    // sum below reads it.
    let mut scratch = Vec::<f32>::with_capacity((parts - 1) * m * n);
    let (c, partial) = (SendPtr(c), SendPtr(scratch.as_mut_ptr()));
    // Inner edges on multiples of 16: whole cache lines of a row-major A.
    let edge = |t: usize| {
        if t == parts {
            k
        } else {
            k * t / parts / 16 * 16
        }
    };
    parallel::run_split(parts, |t| {
        let (lo, hi) = (edge(t), edge(t + 1));
        let a_part = MatRef {
            offset: a.offset + lo * a.col_stride,
            cols: hi - lo,
            ..a
        };
        let b_part = MatRef {
            offset: b.offset + lo * b.row_stride,
            rows: hi - lo,
            ..b
        };
        let (dst, beta, bias) = if t == 0 {
            (c.get(), beta, bias)
        } else {
            (partial.get().wrapping_add((t - 1) * m * n), 0.0, None)
        };
        // SAFETY: the parts lie inside A and B (`lo <= hi <= k`, and `k >= parts * 256`
        // keeps every part non-empty); each task writes only its own matrix.
        unsafe {
            serial(
                backend,
                alpha,
                a_part,
                b_part,
                beta,
                bias,
                dst,
                n,
                Packed::Neither,
            )
        }
    });
    let rows = m.div_ceil(parts);
    parallel::run_split(parts, |t| {
        let (r0, r1) = ((t * rows).min(m), ((t + 1) * rows).min(m));
        if r0 == r1 {
            return;
        }
        let len = (r1 - r0) * n;
        for p in 0..parts - 1 {
            // SAFETY: rows r0..r1 of C and of scratch matrix p, disjoint between tasks and
            // written whole by the parallel section above, which has ended.
            let (out, add) = unsafe {
                (
                    std::slice::from_raw_parts_mut(c.get().add(r0 * n), len),
                    std::slice::from_raw_parts(partial.get().add(p * m * n + r0 * n), len),
                )
            };
            for (o, x) in out.iter_mut().zip(add) {
                *o += x;
            }
        }
    });
}

/// One product on the calling thread with the chosen backend.
///
/// # Safety
/// `a` and `b` must be in bounds (`MatRef::check`), non-empty and not aliased (no zero
/// strides); `c` must address a writable `a.rows x b.cols` matrix with row stride `rsc`,
/// initialised when `beta != 0`; a `bias` must hold `b.cols` values; an `Avx2Fma` or
/// `Avx512` backend must be available.
#[allow(clippy::too_many_arguments)]
unsafe fn serial(
    backend: GemmKernel,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    bias: Option<&[f32]>,
    c: *mut f32,
    rsc: usize,
    packed: Packed,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let pa = a.data.as_ptr().add(a.offset);
    let pb = b.data.as_ptr().add(b.offset);
    // The other backends take no bias: C becomes `beta * C + bias` first, and the
    // product is added to it.
    let own = is_own(backend);
    let beta = match bias {
        Some(bias) if !own => {
            for i in 0..m {
                // Raw writes: with beta = 0, C may be uninitialised.
                let row = c.add(i * rsc);
                if beta == 0.0 {
                    std::ptr::copy_nonoverlapping(bias.as_ptr(), row, n);
                } else {
                    for (j, &y) in bias.iter().enumerate() {
                        *row.add(j) = beta * *row.add(j) + y;
                    }
                }
            }
            1.0
        }
        _ => beta,
    };
    match backend {
        #[cfg(target_arch = "x86_64")]
        GemmKernel::Avx2Fma | GemmKernel::Avx512 => {
            let wide = backend == GemmKernel::Avx512;
            let bias = bias.map_or(std::ptr::null(), <[f32]>::as_ptr);
            let (sa, sb) = (a.strided(), b.strided());
            crate::gemm_avx2::sgemm(wide, m, n, k, alpha, sa, sb, beta, c, rsc, bias, packed);
        }
        #[cfg(feature = "matrixmultiply")]
        GemmKernel::MatrixMultiply => matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            pa,
            a.row_stride as isize,
            a.col_stride as isize,
            pb,
            b.row_stride as isize,
            b.col_stride as isize,
            beta,
            c,
            rsc as isize,
            1,
        ),
        // The gemm crate's `alpha` scales the destination and its `beta` the product.
        _ => gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            rsc as isize,
            beta != 0.0,
            pa,
            a.col_stride as isize,
            a.row_stride as isize,
            pb,
            b.col_stride as isize,
            b.row_stride as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        ),
    }
}

impl Tensor {
    /// Matrix product with `torch.matmul` semantics: 1-D operands are promoted to a row
    /// (lhs) or a column (rhs) and the added axis removed afterwards; leading (batch)
    /// axes broadcast. Transposed and other strided operands reach the GEMM without a
    /// copy; batches run in parallel when the matrices are small.
    ///
    /// # Shapes
    /// `[..., m, k] x [..., k, n] -> [broadcast(...), m, n]`.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?;
    /// let c = a.matmul(&a.t()?)?;           // [2, 2], no copy of the transpose
    /// assert_eq!(c.to_vec(), vec![14., 32., 32., 77.]);
    /// let q = Tensor::ones(&[4, 8, 2, 3]);
    /// let k = Tensor::ones(&[8, 3, 5]);
    /// assert_eq!(q.matmul(&k)?.shape(), &[4, 8, 2, 5]);
    /// assert!(a.matmul(&a).is_err());
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let op = "matmul";
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::shape_mismatch(op, self.shape(), rhs.shape()));
        }
        let lhs_vec = self.rank() == 1;
        let rhs_vec = rhs.rank() == 1;
        let a = if lhs_vec {
            self.unsqueeze(0)?
        } else {
            self.clone()
        };
        let b = if rhs_vec {
            rhs.unsqueeze(1)?
        } else {
            rhs.clone()
        };
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            return Err(Error::shape_mismatch(op, self.shape(), rhs.shape()));
        }
        let batch = broadcast_shape(&a.shape()[..ra - 2], &b.shape()[..rb - 2], op)
            .map_err(|_| Error::shape_mismatch(op, self.shape(), rhs.shape()))?;
        let bsa = broadcast_strides(&a.shape()[..ra - 2], &a.strides()[..ra - 2], &batch, op)?;
        let bsb = broadcast_strides(&b.shape()[..rb - 2], &b.strides()[..rb - 2], &batch, op)?;
        let nb: usize = batch.iter().product();

        // Storage offset of every batch entry of each operand.
        let mut offs = Vec::with_capacity(nb);
        let mut idx: Dims = smallvec::smallvec![0; batch.len()];
        for _ in 0..nb {
            let oa: usize = idx.iter().zip(&bsa).map(|(i, s)| i * s).sum();
            let ob: usize = idx.iter().zip(&bsb).map(|(i, s)| i * s).sum();
            offs.push((a.offset() + oa, b.offset() + ob));
            for ax in (0..batch.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < batch[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        let (ars, acs) = (a.strides()[ra - 2], a.strides()[ra - 1]);
        let (brs, bcs) = (b.strides()[rb - 2], b.strides()[rb - 1]);
        let mat = |data, offset, rows, cols, rs, cs| MatRef {
            data,
            offset,
            rows,
            cols,
            row_stride: rs,
            col_stride: cs,
        };
        let total = nb * m * n;
        // Every element is written by the GEMM (beta = 0), so the buffer starts uninitialised.
        let mut out: Vec<f32> = Vec::with_capacity(total);
        let base = SendPtr(out.as_mut_ptr());
        let (da, db) = (a.storage(), b.storage());
        let product = |i: usize, threads: usize| -> Result<()> {
            let (oa, ob) = offs[i];
            // SAFETY: entry i owns elements i*m*n .. (i+1)*m*n of the buffer's capacity.
            unsafe {
                gemm_into(
                    GemmKernel::Auto,
                    1.0,
                    mat(da, oa, m, k, ars, acs),
                    mat(db, ob, k, n, brs, bcs),
                    0.0,
                    None,
                    base.get().add(i * m * n),
                    m * n,
                    threads,
                )
            }
        };
        if total > 0 {
            let small = m * n * k < PARALLEL_MIN_MACS;
            let threads = parallel::num_threads();
            if threads == 1 || (nb == 1 && small) {
                // Nothing to split: stay on the calling thread.
                (0..nb).try_for_each(|i| product(i, 1))?;
            } else if nb > 1 && (small || nb >= 2 * threads) {
                // Small products, or enough of them to go round: runs of whole products
                // that the threads take one by one (one parallel region instead of one
                // per product).
                let tasks = (threads * 4).min(nb);
                let failure = std::sync::Mutex::new(None);
                parallel::run_split(tasks, |t| {
                    let (lo, hi) = (nb * t / tasks, nb * (t + 1) / tasks);
                    if let Err(e) = (lo..hi).try_for_each(|i| product(i, 1)) {
                        if let Ok(mut f) = failure.lock() {
                            f.get_or_insert(e);
                        }
                    }
                });
                if let Some(e) = failure.into_inner().ok().flatten() {
                    return Err(e);
                }
            } else {
                (0..nb).try_for_each(|i| product(i, threads))?;
            }
            // SAFETY: every product succeeded, so all `total` elements were written.
            unsafe { out.set_len(total) };
        }
        let mut shape: Dims = batch;
        if !lhs_vec {
            shape.push(m);
        }
        if !rhs_vec {
            shape.push(n);
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `self + a·b` for matrices `a [m, k]` and `b [k, n]`, with `self` broadcast to
    /// `[m, n]` (PyTorch's `addmm`; typically a bias row added to every row of the
    /// product). The product accumulates onto the broadcast `self` instead of onto
    /// zeros, so the sum costs no pass over the output of its own.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2])?;
    /// let w = Tensor::eye(2);
    /// let bias = Tensor::from_vec(vec![10., 20.], &[2])?;
    /// assert_eq!(bias.addmm(&x, &w)?.to_vec(), vec![11., 22., 13., 24.]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn addmm(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = "addmm";
        if a.rank() != 2 || b.rank() != 2 || a.shape()[1] != b.shape()[0] {
            return Err(Error::shape_mismatch(op, a.shape(), b.shape()));
        }
        let (m, n) = (a.shape()[0], b.shape()[1]);
        let full = self
            .broadcast_to(&[m, n])
            .map_err(|_| Error::shape_mismatch(op, self.shape(), &[m, n]))?;
        fn mat(t: &Tensor) -> MatRef<'_> {
            MatRef {
                data: t.storage(),
                offset: t.offset(),
                rows: t.shape()[0],
                cols: t.shape()[1],
                row_stride: t.strides()[0],
                col_stride: t.strides()[1],
            }
        }
        let threads = parallel::num_threads();
        // A row repeated down C (a layer's bias) is added by the GEMM as it writes C.
        if full.strides()[0] == 0 && (full.strides()[1] == 1 || n == 1) {
            let row = &full.storage()[full.offset()..full.offset() + n];
            let mut out = Vec::with_capacity(m * n);
            // SAFETY: with beta = 0 the GEMM writes all m·n elements of the capacity
            // (or fails, and the length stays 0).
            unsafe {
                let (a, b) = (mat(a), mat(b));
                gemm_into(
                    GemmKernel::Auto,
                    1.0,
                    a,
                    b,
                    0.0,
                    Some(row),
                    out.as_mut_ptr(),
                    m * n,
                    threads,
                )?;
                out.set_len(m * n);
            }
            return Ok(Tensor::from_contiguous(out, &[m, n]));
        }
        let mut out = full.to_vec();
        gemm(1.0, mat(a), mat(b), 1.0, &mut out, threads)?;
        Ok(Tensor::from_contiguous(out, &[m, n]))
    }
}
