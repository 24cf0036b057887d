//! Reductions over any set of axes, and the numerically stable softmax family.
//!
//! Every reduction first brings the reduced axes together: when they already form one
//! block of a contiguous tensor the data is read in place as `[outer, r, inner]`;
//! otherwise the kept axes are permuted to the front and the reduced ones to the back
//! (one copy), giving `[outer, r, 1]`.

use std::borrow::Cow;

use crate::error::{Error, Result};
use crate::index::IndexTensor;
use crate::parallel;
use crate::shape::{resolve_axes, Dim, Dims};
use crate::tensor::Tensor;

/// The reduced axes of a tensor laid out as `[outer, r, inner]`.
struct Plan<'a> {
    data: Cow<'a, [f32]>,
    outer: usize,
    r: usize,
    inner: usize,
    /// Output shape with the reduced axes kept as size 1.
    keep_shape: Dims,
    /// Output shape with the reduced axes removed.
    drop_shape: Dims,
}

impl Plan<'_> {
    fn out_shape(&self, keepdim: bool) -> &[usize] {
        if keepdim {
            &self.keep_shape
        } else {
            &self.drop_shape
        }
    }
}

fn plan<'a, D: Dim>(x: &'a Tensor, axes: &[D], op: &'static str) -> Result<Plan<'a>> {
    let shape = x.shape();
    let axes = resolve_axes(axes, x.rank(), op)?;
    let mut keep_shape = Dims::from_slice(shape);
    let mut drop_shape = Dims::new();
    for (i, &d) in shape.iter().enumerate() {
        if axes.contains(&i) {
            keep_shape[i] = 1;
        } else {
            drop_shape.push(d);
        }
    }
    let r: usize = axes.iter().map(|&a| shape[a]).product();
    let consecutive = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if axes.is_empty() || consecutive {
        let (lo, hi) = match (axes.first(), axes.last()) {
            (Some(&lo), Some(&hi)) => (lo, hi + 1),
            _ => (x.rank(), x.rank()),
        };
        return Ok(Plan {
            data: x.contiguous_data(),
            outer: shape[..lo].iter().product(),
            r,
            inner: shape[hi..].iter().product(),
            keep_shape,
            drop_shape,
        });
    }
    let order: Vec<usize> = (0..x.rank())
        .filter(|i| !axes.contains(i))
        .chain(axes.iter().copied())
        .collect();
    let data = Cow::Owned(x.permute(&order)?.to_vec());
    Ok(Plan {
        data,
        outer: drop_shape.iter().product(),
        r,
        inner: 1,
        keep_shape,
        drop_shape,
    })
}

/// Sum of a contiguous slice with eight independent accumulators (vectorises, and rounds
/// less than a single running sum).
#[inline(always)]
pub(crate) fn sum_slice(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &x in rest {
        s += x;
    }
    s
}

/// Folds `[outer, r, inner]` over `r` with `f`, starting from `init`.
///
/// Large folds split the outputs among the threads, each output folded over `r` in the
/// same order as on one thread: the result does not depend on the thread count.
fn fold(p: &Plan<'_>, init: f32, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let (outer, r, inner) = (p.outer, p.r, p.inner);
    let total = outer * inner;
    let mut out = vec![init; total];
    // Outputs `lo..hi` (flat indices into `[outer, inner]`), row of `r` by row.
    let fold_range = |acc: &mut [f32], lo: usize, hi: usize| {
        let mut j = lo;
        while j < hi {
            let (o, i0) = (j / inner, j % inner);
            let i1 = inner.min(i0 + hi - j);
            let acc = &mut acc[j - lo..j - lo + i1 - i0];
            let block = &p.data[o * r * inner..(o + 1) * r * inner];
            for row in block.chunks_exact(inner).take(r) {
                for (a, &x) in acc.iter_mut().zip(&row[i0..i1]) {
                    *a = f(*a, x);
                }
            }
            j += i1 - i0;
        }
    };
    let tasks = if outer * r * inner >= 2 * parallel::PAR_MIN_ELEMS {
        parallel::num_threads().min(total.div_ceil(16))
    } else {
        1
    };
    if tasks <= 1 {
        fold_range(&mut out, 0, total);
        return out;
    }
    let base = parallel::SendPtr(out.as_mut_ptr());
    parallel::run_split(tasks, |t| {
        // Edges on multiples of 16 outputs, whole cache lines of a row.
        let edge = |t: usize| {
            if t == tasks {
                total
            } else {
                total * t / tasks / 16 * 16
            }
        };
        let (lo, hi) = (edge(t), edge(t + 1));
        // SAFETY: tasks write disjoint ranges of `out`, which outlives `run_split`.
        let acc = unsafe { std::slice::from_raw_parts_mut(base.get().add(lo), hi - lo) };
        fold_range(acc, lo, hi);
    });
    out
}

/// `f` on every `r`-element row of `lines`; inlined, with `f`, into the copies that
/// [`widest!`](crate::widest) compiles.
#[inline(always)]
fn each_row(lines: &mut [f32], r: usize, f: impl Fn(&mut [f32])) {
    for row in lines.chunks_exact_mut(r) {
        f(row);
    }
}

/// `exp(x - max) / Σ exp(x - max)` of one line, in place.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, max_nan);
    for v in row.iter_mut() {
        *v = crate::vmath::exp(*v - m);
    }
    let s = sum_slice(row);
    for v in row.iter_mut() {
        *v /= s;
    }
}

/// `(x - max) - log Σ exp(x - max)` of one line, in place.
#[inline(always)]
fn log_softmax_row(row: &mut [f32]) {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, max_nan);
    let s: f32 = row.iter().map(|&v| crate::vmath::exp(v - m)).sum();
    // (x - m) - log s, not x - (m + log s): the latter loses the small term next to a
    // large m.
    let log_s = s.ln();
    for v in row.iter_mut() {
        *v = (*v - m) - log_s;
    }
}

#[inline(always)]
fn max_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b > a || b.is_nan() {
        b
    } else {
        a
    }
}

fn min_nan(a: f32, b: f32) -> f32 {
    if a.is_nan() || b < a || b.is_nan() {
        b
    } else {
        a
    }
}

impl Tensor {
    /// Sum over `axes` (negative axes count from the back); `keepdim` keeps them as size 1.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?;
    /// assert_eq!(x.sum(&[0], false)?.to_vec(), vec![5., 7., 9.]);
    /// assert_eq!(x.sum(&[-1], true)?.shape(), &[2, 1]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn sum<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Tensor> {
        let p = plan(self, axes, "sum")?;
        let out = if p.inner == 1 {
            p.data
                .chunks_exact(p.r.max(1))
                .take(p.outer)
                .map(sum_slice)
                .collect::<Vec<_>>()
        } else {
            fold(&p, 0.0, |a, x| a + x)
        };
        let out = if p.r == 0 {
            vec![0.0; p.outer * p.inner]
        } else {
            out
        };
        Ok(Tensor::from_contiguous(out, p.out_shape(keepdim)))
    }

    /// Sum of all elements, as a rank-0 tensor.
    pub fn sum_all(&self) -> Tensor {
        Tensor::scalar(sum_slice(&self.contiguous_data()))
    }

    /// Mean over `axes`.
    pub fn mean<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Tensor> {
        let axes_r = resolve_axes(axes, self.rank(), "mean")?;
        let n: usize = axes_r.iter().map(|&a| self.shape()[a]).product();
        Ok(self.sum(axes, keepdim)?.div_scalar(n as f32))
    }

    /// Mean of all elements, as a rank-0 tensor.
    pub fn mean_all(&self) -> Tensor {
        let n = self.numel() as f32;
        Tensor::scalar(sum_slice(&self.contiguous_data()) / n)
    }

    /// Maximum over `axes` (NaN propagates, as in PyTorch). Errors on an empty axis.
    pub fn max<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Tensor> {
        self.extreme(axes, keepdim, "max", f32::NEG_INFINITY, max_nan)
    }

    /// Minimum over `axes` (NaN propagates). Errors on an empty axis.
    pub fn min<D: Dim>(&self, axes: &[D], keepdim: bool) -> Result<Tensor> {
        self.extreme(axes, keepdim, "min", f32::INFINITY, min_nan)
    }

    /// [`Tensor::max`] or [`Tensor::min`]: `pick` folded over `axes` from `init`, which
    /// an empty axis would return, so it is an error instead.
    fn extreme<D: Dim>(
        &self,
        axes: &[D],
        keepdim: bool,
        op: &'static str,
        init: f32,
        pick: impl Fn(f32, f32) -> f32 + Sync,
    ) -> Result<Tensor> {
        let p = plan(self, axes, op)?;
        if p.r == 0 && p.outer * p.inner > 0 {
            return Err(Error::invalid(op, "cannot reduce an axis of size 0"));
        }
        let out = fold(&p, init, pick);
        Ok(Tensor::from_contiguous(out, p.out_shape(keepdim)))
    }

    /// Largest element of the whole tensor (NaN propagates); `None` when empty.
    pub fn max_all(&self) -> Option<f32> {
        let d = self.contiguous_data();
        let first = *d.first()?;
        Some(d.iter().copied().fold(first, max_nan))
    }

    /// Smallest element of the whole tensor (NaN propagates); `None` when empty.
    pub fn min_all(&self) -> Option<f32> {
        let d = self.contiguous_data();
        let first = *d.first()?;
        Some(d.iter().copied().fold(first, min_nan))
    }

    /// Variance over `axes` with `correction` (1: unbiased, as `torch.var`'s default;
    /// 0: population variance, as layer norm uses). Two passes: mean, then squared
    /// deviations.
    pub fn var<D: Dim>(&self, axes: &[D], correction: usize, keepdim: bool) -> Result<Tensor> {
        let mean = self.mean(axes, true)?;
        let dev = self.sub(&mean)?.square();
        let n: usize = resolve_axes(axes, self.rank(), "var")?
            .iter()
            .map(|&a| self.shape()[a])
            .product();
        let denom = n.saturating_sub(correction) as f32;
        Ok(dev.sum(axes, keepdim)?.div_scalar(denom))
    }

    fn arg_reduce(
        &self,
        axis: impl Dim,
        keepdim: bool,
        op: &'static str,
        better: impl Fn(f32, f32) -> bool,
    ) -> Result<IndexTensor> {
        let p = plan(self, &[axis], op)?;
        if p.r == 0 && p.outer * p.inner > 0 {
            return Err(Error::invalid(op, "cannot reduce an axis of size 0"));
        }
        let (r, inner) = (p.r, p.inner);
        let mut out = Vec::with_capacity(p.outer * inner);
        for o in 0..p.outer {
            for i in 0..inner {
                let base = o * r * inner + i;
                let mut best = 0usize;
                let mut best_v = p.data[base];
                for j in 1..r {
                    let v = p.data[base + j * inner];
                    if !best_v.is_nan() && (v.is_nan() || better(v, best_v)) {
                        best = j;
                        best_v = v;
                    }
                }
                out.push(best);
            }
        }
        IndexTensor::new(out, p.out_shape(keepdim))
    }

    /// Index of the largest element along `axis` (the first one on ties; a NaN counts
    /// as largest, as in PyTorch).
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 9., 3., 7., 2., 8.], &[2, 3])?;
    /// assert_eq!(x.argmax(-1, false)?.data(), &[1, 2]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn argmax(&self, axis: impl Dim, keepdim: bool) -> Result<IndexTensor> {
        self.arg_reduce(axis, keepdim, "argmax", |v, best| v > best)
    }

    /// Index of the smallest element along `axis` (first on ties; NaN counts as smallest).
    pub fn argmin(&self, axis: impl Dim, keepdim: bool) -> Result<IndexTensor> {
        self.arg_reduce(axis, keepdim, "argmin", |v, best| v < best)
    }

    /// `f` on every line of the tensor along `axis`, in place on a copy. Where the lines
    /// are contiguous (the last axis, or one followed only by axes of size 1), all of
    /// them run in one call compiled for the widest vectors ([`widest!`](crate::widest)),
    /// `f` inlined into it.
    fn along_axis<F: Fn(&mut [f32]) + Copy>(
        &self,
        axis: impl Dim,
        op: &'static str,
        f: F,
    ) -> Result<Tensor> {
        let p = plan(self, &[axis], op)?;
        let (outer, r, inner) = (p.outer, p.r, p.inner);
        let mut out = p.data.into_owned();
        if inner == 1 {
            if r > 0 {
                let lines = &mut out[..outer * r];
                let run = |lines: &mut [f32], r: usize| each_row(lines, r, f);
                crate::widest!(run(lines, r))
            }
        } else {
            let mut line = vec![0.0f32; r];
            for o in 0..outer {
                for i in 0..inner {
                    let base = o * r * inner + i;
                    for j in 0..r {
                        line[j] = out[base + j * inner];
                    }
                    f(&mut line);
                    for j in 0..r {
                        out[base + j * inner] = line[j];
                    }
                }
            }
        }
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    /// Softmax along `axis`, `exp(x - max) / Σ exp(x - max)`: finite and exact for inputs
    /// as large as ±1e4.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1e4, 0.0, -1e4], &[3])?;
    /// assert_eq!(x.softmax(0)?.to_vec(), vec![1.0, 0.0, 0.0]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn softmax(&self, axis: impl Dim) -> Result<Tensor> {
        self.along_axis(axis, "softmax", softmax_row)
    }

    /// Log-softmax along `axis`, `(x - max) - log Σ exp(x - max)`.
    pub fn log_softmax(&self, axis: impl Dim) -> Result<Tensor> {
        self.along_axis(axis, "log_softmax", log_softmax_row)
    }

    /// `log Σ exp(x)` over `axis`, computed stably.
    pub fn logsumexp(&self, axis: impl Dim, keepdim: bool) -> Result<Tensor> {
        let m = self.max(&[axis], true)?;
        // Rows that are all -inf keep -inf instead of producing NaN.
        let m_safe = m.map(|v| if v.is_finite() { v } else { 0.0 });
        let s = self.sub(&m_safe)?.exp().sum(&[axis], true)?.log();
        let out = s.add(&m_safe)?;
        if keepdim {
            Ok(out)
        } else {
            out.squeeze(axis)
        }
    }
}
