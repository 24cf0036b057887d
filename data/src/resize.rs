//! Resampling the last two axes of a tensor, equal to PyTorch's
//! `torch.nn.functional.interpolate(x, size=(h, w), mode=..., align_corners=False,
//! antialias=...)` on `float32`.
//!
//! The resize is separable: per output index of each axis, a list of input indices and
//! weights is computed once (as PyTorch's `UpSampleKernel.cpp` computes them, in `f32`),
//! then rows are resampled (the width), then columns (the height). The sums run in the
//! same order as PyTorch's, so results agree to a few units in the last place.

use tessera_tensor::Tensor;

use crate::{Error, Result};

/// The resampling kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// PyTorch's `mode="nearest"`: output `i` takes input `floor(i · in / out)`.
    Nearest,
    /// `mode="bilinear"`: the triangle kernel `max(0, 1 - |x|)`.
    Bilinear,
    /// `mode="bicubic"`: Keys' cubic convolution kernel, with `a = -0.75` without
    /// antialiasing and `a = -0.5` with it (as PyTorch and PIL).
    Bicubic,
}

/// Input indices and weights for each output index along one axis.
#[derive(Clone, Debug)]
pub(crate) struct AxisTaps {
    /// `spans[o]` is the range of `index` and `weight` that output `o` sums over.
    spans: Vec<(usize, usize)>,
    index: Vec<usize>,
    weight: Vec<f32>,
}

impl AxisTaps {
    fn new() -> AxisTaps {
        AxisTaps {
            spans: Vec::new(),
            index: Vec::new(),
            weight: Vec::new(),
        }
    }

    fn push(&mut self, taps: impl IntoIterator<Item = (usize, f32)>) {
        let start = self.index.len();
        for (i, w) in taps {
            self.index.push(i);
            self.weight.push(w);
        }
        self.spans.push((start, self.index.len()));
    }

    fn taps(&self, o: usize) -> (&[usize], &[f32]) {
        let (a, b) = self.spans[o];
        (&self.index[a..b], &self.weight[a..b])
    }
}

/// Keys' cubic for `|x| <= 1` (PyTorch's `cubic_convolution1`).
fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}

/// Keys' cubic for `1 < |x| < 2` (PyTorch's `cubic_convolution2`).
fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// The antialiasing kernels (PyTorch's `aa_filter`).
fn aa_filter(filter: Filter, x: f32) -> f32 {
    let x = x.abs();
    match filter {
        Filter::Bilinear => {
            if x < 1.0 {
                1.0 - x
            } else {
                0.0
            }
        }
        _ => {
            const A: f32 = -0.5;
            if x < 1.0 {
                cubic1(x, A)
            } else if x < 2.0 {
                cubic2(x, A)
            } else {
                0.0
            }
        }
    }
}

/// PyTorch's `guard_index_and_lambda`: the integer part (at most `size - 1`) and the
/// fraction clamped to `[0, 1]`.
fn guard(real: f32, size: usize) -> (i64, f32) {
    let index = (real.floor() as i64).min(size as i64 - 1);
    let lambda = (real - index as f32).clamp(0.0, 1.0);
    (index, lambda)
}

/// Indices and weights for resampling an axis of `input` elements to `output`.
pub(crate) fn axis_taps(input: usize, output: usize, filter: Filter, antialias: bool) -> AxisTaps {
    let mut taps = AxisTaps::new();
    // area_pixel_compute_scale: in / out, in the operation's type (f32).
    let scale = input as f32 / output as f32;
    let last = input as i64 - 1;
    let clampi = |i: i64| i.clamp(0, last) as usize;
    if antialias && filter != Filter::Nearest {
        // HelperInterpBase::_compute_indices_min_size_weights_aa, with its mixed
        // float/double arithmetic written out.
        let interp = if filter == Filter::Bilinear { 2.0 } else { 4.0 };
        let support = if scale >= 1.0 {
            ((interp * 0.5) * scale as f64) as f32
        } else {
            (interp * 0.5) as f32
        };
        let max_size = (support.ceil() as i64) * 2 + 1;
        let invscale = if scale >= 1.0 {
            (1.0 / scale as f64) as f32
        } else {
            1.0
        };
        let mut w = Vec::with_capacity(max_size as usize);
        for o in 0..output {
            let center = (scale as f64 * (o as f64 + 0.5)) as f32;
            let xmin = ((((center - support) as f64) + 0.5) as i64).max(0);
            let xmax = ((((center + support) as f64) + 0.5) as i64).min(input as i64);
            let xsize = (xmax - xmin).clamp(0, max_size);
            w.clear();
            let mut total = 0.0f32;
            for j in 0..xsize {
                let x = (((j + xmin) as f32 - center) as f64 + 0.5) * invscale as f64;
                let v = aa_filter(filter, x as f32);
                w.push(v);
                total += v;
            }
            if total != 0.0 {
                for v in w.iter_mut() {
                    *v /= total;
                }
            }
            taps.push(w.iter().enumerate().map(|(j, &v)| (xmin as usize + j, v)));
        }
        return taps;
    }
    for o in 0..output {
        match filter {
            Filter::Nearest => {
                // HelperInterpNearest: floor(o · scale), at most in - 1.
                let src = (o as f32 * scale).floor() as i64;
                taps.push([(clampi(src), 1.0)]);
            }
            Filter::Bilinear => {
                if input == output {
                    taps.push([(o, 1.0), (o, 0.0)]);
                    continue;
                }
                let real = (scale * (o as f32 + 0.5) - 0.5).max(0.0);
                let (i0, l1) = guard(real, input);
                let i1 = i0 + i64::from(i0 < last);
                taps.push([(clampi(i0), 1.0 - l1), (clampi(i1), l1)]);
            }
            Filter::Bicubic => {
                const A: f32 = -0.75;
                let real = scale * (o as f32 + 0.5) - 0.5;
                let (i0, t) = guard(real, input);
                let w = [
                    cubic2(t + 1.0, A),
                    cubic1(t, A),
                    cubic1(1.0 - t, A),
                    cubic2(2.0 - t, A),
                ];
                taps.push((0..4).map(|j| (clampi(i0 - 1 + j as i64), w[j])));
            }
        }
    }
    taps
}

/// Resamples the last axis of `src` (`rows` rows of `width`) into `dst` (`rows` rows of
/// `taps.spans.len()`).
fn resample_rows(src: &[f32], width: usize, taps: &AxisTaps, dst: &mut [f32]) {
    let out_w = taps.spans.len();
    for (row, out) in src.chunks_exact(width).zip(dst.chunks_exact_mut(out_w)) {
        for (o, d) in out.iter_mut().enumerate() {
            let (idx, w) = taps.taps(o);
            let mut t = row[idx[0]] * w[0];
            for k in 1..idx.len() {
                t += row[idx[k]] * w[k];
            }
            *d = t;
        }
    }
}

/// Resamples the rows of one `[height, width]` plane into `[out_h, width]`.
fn resample_cols(src: &[f32], width: usize, taps: &AxisTaps, dst: &mut [f32]) {
    for (o, out) in dst.chunks_exact_mut(width).enumerate() {
        let (idx, w) = taps.taps(o);
        let first = &src[idx[0] * width..(idx[0] + 1) * width];
        for (d, &s) in out.iter_mut().zip(first) {
            *d = s * w[0];
        }
        for k in 1..idx.len() {
            let row = &src[idx[k] * width..(idx[k] + 1) * width];
            let wk = w[k];
            for (d, &s) in out.iter_mut().zip(row) {
                *d += s * wk;
            }
        }
    }
}

/// Resizes the last two axes of `x` (any rank ≥ 2: `[H, W]`, `[C, H, W]`,
/// `[B, C, H, W]`, `[1, D, h, w]`, ...) to `out_h × out_w`.
///
/// Numerically equal (within a few float32 rounding steps: at most 2.5e-6 on
/// unit-normal inputs in the tests) to PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode=..., align_corners=False,
/// antialias=antialias)` on `float32`:
///
/// - source coordinates are `(i + 0.5) · in / out - 0.5` (half-pixel centres);
/// - `Bicubic` uses `a = -0.75` and clamps indices at the border without antialiasing,
///   and `a = -0.5` with renormalised weights with it (the kernel PIL and timm's
///   `resample_abs_pos_embed` use);
/// - with `antialias`, when an axis shrinks by a factor `s > 1` the kernel is stretched
///   by `s` (support `s` for bilinear, `2s` for bicubic), so every input pixel
///   contributes (what PIL and torchvision's `Resize` do);
/// - values are not clamped: bicubic may overshoot the input range.
///
/// `Nearest` with `antialias` is an error, as in PyTorch. Output sizes must be positive.
///
/// ```
/// use tessera_data::{resize, Filter};
/// use tessera_tensor::Tensor;
/// let x = Tensor::from_vec(vec![0.0, 1.0, 2.0, 3.0], &[1, 1, 2, 2])?;
/// // torch: F.interpolate(x, size=(1, 1), mode="bilinear", antialias=True) == 1.5
/// let y = resize(&x, 1, 1, Filter::Bilinear, true)?;
/// assert_eq!(y.to_vec(), vec![1.5]);
/// // Upsampling 1×2 → 1×4 without antialiasing: sources -0.25, 0.25, 0.75, 1.25.
/// let r = Tensor::from_vec(vec![0.0, 1.0], &[1, 2])?;
/// assert_eq!(resize(&r, 1, 4, Filter::Bilinear, false)?.to_vec(), vec![0.0, 0.25, 0.75, 1.0]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn resize(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    filter: Filter,
    antialias: bool,
) -> Result<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    if rank < 2 {
        return Err(Error::Invalid {
            what: "resize",
            msg: format!("expected a tensor of rank 2 or more ([.., H, W]), got shape {shape:?}"),
        });
    }
    let (h, w) = (shape[rank - 2], shape[rank - 1]);
    if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
        return Err(Error::Invalid {
            what: "resize",
            msg: format!(
                "input {h}×{w} (shape {shape:?}) and output {out_h}×{out_w} must be non-empty"
            ),
        });
    }
    if antialias && filter == Filter::Nearest {
        return Err(Error::Invalid {
            what: "resize",
            msg: "antialiasing is defined for the bilinear and bicubic filters, not nearest".into(),
        });
    }
    let mut out_shape = shape.to_vec();
    out_shape[rank - 2] = out_h;
    out_shape[rank - 1] = out_w;
    if (out_h, out_w) == (h, w) {
        return Ok(x.contiguous());
    }
    let planes: usize = shape[..rank - 2].iter().product();
    let data = crate::data_of(x);
    // An axis whose size does not change is left alone (its weights are the identity).
    let row_taps = (out_w != w).then(|| axis_taps(w, out_w, filter, antialias));
    let col_taps = (out_h != h).then(|| axis_taps(h, out_h, filter, antialias));
    let one_plane = |p: usize, dst: &mut [f32]| {
        let src = &data[p * h * w..(p + 1) * h * w];
        match (&row_taps, &col_taps) {
            (Some(rt), Some(ct)) => {
                let mut tmp = vec![0.0f32; h * out_w];
                resample_rows(src, w, rt, &mut tmp);
                resample_cols(&tmp, out_w, ct, dst);
            }
            (Some(rt), None) => resample_rows(src, w, rt, dst),
            (None, Some(ct)) => resample_cols(src, w, ct, dst),
            (None, None) => dst.copy_from_slice(src),
        }
    };
    let out_plane = out_h * out_w;
    let mut out = vec![0.0f32; planes * out_plane];
    let work = planes * (out_plane + h * out_w);
    if planes >= 2 && work >= 1 << 16 && tessera_tensor::num_threads() > 1 {
        // Planes in parallel, in as many contiguous groups as threads.
        let groups = tessera_tensor::num_threads().min(planes);
        let parts: Vec<std::sync::Mutex<&mut [f32]>> = {
            let mut rest: &mut [f32] = &mut out;
            let mut parts = Vec::with_capacity(groups);
            for g in 0..groups {
                let n = planes * (g + 1) / groups - planes * g / groups;
                let (head, tail) = rest.split_at_mut(n * out_plane);
                parts.push(std::sync::Mutex::new(head));
                rest = tail;
            }
            parts
        };
        tessera_tensor::parallel_for(groups, |g| {
            let first = planes * g / groups;
            let mut guard = match parts[g].lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            for (k, dst) in guard.chunks_exact_mut(out_plane).enumerate() {
                one_plane(first + k, dst);
            }
        });
    } else {
        for (p, dst) in out.chunks_exact_mut(out_plane).enumerate() {
            one_plane(p, dst);
        }
    }
    Ok(Tensor::from_vec(out, &out_shape)?)
}

/// Resizes a `[.., H, W]` image so that its shorter side becomes `size`, keeping the
/// aspect ratio, as torchvision's `Resize(size)` with an integer size: the longer side
/// becomes `int(size · long / short)` (truncated). Antialiased for the bilinear and
/// bicubic filters (torchvision's default for tensors since 0.17).
///
/// ```
/// use tessera_data::{resize_shorter, Filter};
/// use tessera_tensor::Tensor;
/// let img = Tensor::zeros(&[3, 300, 451]);
/// let small = resize_shorter(&img, 224, Filter::Bilinear)?;
/// assert_eq!(small.shape(), &[3, 224, 336]); // int(224 * 451 / 300) = 336
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn resize_shorter(image: &Tensor, size: usize, filter: Filter) -> Result<Tensor> {
    let shape = image.shape();
    let rank = shape.len();
    if rank < 2 || size == 0 {
        return Err(Error::Invalid {
            what: "resize_shorter",
            msg: format!(
                "expected a [.., H, W] tensor and a positive size, got shape {shape:?} and size {size}"
            ),
        });
    }
    let (h, w) = (shape[rank - 2], shape[rank - 1]);
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    if short == 0 {
        return Err(Error::Invalid {
            what: "resize_shorter",
            msg: format!("the image is empty: shape {shape:?}"),
        });
    }
    let new_long = ((size * long) as f64 / short as f64) as usize;
    let (out_h, out_w) = if w <= h {
        (new_long, size)
    } else {
        (size, new_long)
    };
    resize(image, out_h, out_w, filter, filter != Filter::Nearest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(7, 12), (16, 7), (14, 24), (9, 5), (3, 1)] {
            for f in [Filter::Bilinear, Filter::Bicubic] {
                for aa in [false, true] {
                    let t = axis_taps(i, o, f, aa);
                    for k in 0..o {
                        let s: f32 = t.taps(k).1.iter().sum();
                        assert!(
                            (s - 1.0).abs() < 1e-5,
                            "{i}->{o} {f:?} aa={aa} out {k}: {s}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn antialias_widens_the_kernel_when_shrinking() {
        // 16 → 4 (scale 4): the bilinear support is 4 either side, so output 1 (centre
        // 6) reads inputs 2..=9 (PyTorch: xmin = int(6 - 4 + 0.5) = 2, xmax = int(10.5) = 10).
        let t = axis_taps(16, 4, Filter::Bilinear, true);
        let (idx, w) = t.taps(1);
        assert_eq!(idx, &[2, 3, 4, 5, 6, 7, 8, 9]);
        // Triangle weights 1 - |j + 0.5 - 6| / 4 = 1/8, 3/8, 5/8, 7/8, 7/8, ... over 4.
        let want = [1., 3., 5., 7., 7., 5., 3., 1.].map(|v: f32| v / 32.0);
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-7);
        }
    }
}
