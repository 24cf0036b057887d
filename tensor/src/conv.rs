//! im2col (`unfold`) and its adjoint col2im (`fold`) for 2-D convolution and for cutting
//! images into patches, with PyTorch's `F.unfold`/`F.fold` layout.
//!
//! For an input `[N, C, H, W]`, `unfold` returns `[N, C·kh·kw, L]` where `L = oh·ow` and
//! row `c·kh·kw + i·kw + j` holds input channel `c` at kernel offset `(i, j)`: the order
//! in which a convolution weight `[D, C, kh, kw]` flattens to `[D, C·kh·kw]`, so a
//! convolution is `weight.reshape([D, C·kh·kw]).matmul(unfold(x))`. With kernel = stride
//! = `P` and no padding, the columns are the image's `P x P` patches.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Geometry of a 2-D sliding window: kernel, stride, zero padding and dilation, each as
/// `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Kernel size.
    pub kernel: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Zeros added on each side.
    pub padding: (usize, usize),
    /// Spacing between kernel taps.
    pub dilation: (usize, usize),
}

impl Window2d {
    /// A `k x k` window with stride 1, no padding, no dilation.
    pub fn square(k: usize) -> Window2d {
        Window2d {
            kernel: (k, k),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
        }
    }

    /// Sets the stride (both axes).
    pub fn with_stride(mut self, s: usize) -> Window2d {
        self.stride = (s, s);
        self
    }

    /// Sets the padding (both axes).
    pub fn with_padding(mut self, p: usize) -> Window2d {
        self.padding = (p, p);
        self
    }

    /// Non-overlapping `p x p` patches (kernel = stride = `p`).
    pub fn patches(p: usize) -> Window2d {
        Window2d::square(p).with_stride(p)
    }

    /// Output height and width for an `h x w` input.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let dim = |n: usize, k: usize, s: usize, p: usize, d: usize| -> Option<usize> {
            if k == 0 || s == 0 || d == 0 {
                return None;
            }
            let span = d * (k - 1) + 1;
            let padded = n + 2 * p;
            (padded >= span).then(|| (padded - span) / s + 1)
        };
        match (
            dim(
                h,
                self.kernel.0,
                self.stride.0,
                self.padding.0,
                self.dilation.0,
            ),
            dim(
                w,
                self.kernel.1,
                self.stride.1,
                self.padding.1,
                self.dilation.1,
            ),
        ) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::invalid(
                "unfold",
                format!("window {self:?} does not fit an input of {h}x{w}"),
            )),
        }
    }
}

/// Visits every (column row, output position) pair with its input coordinate, when in bounds.
fn for_each_tap(
    c: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    win: &Window2d,
    mut f: impl FnMut(usize, usize, usize),
) {
    let (kh, kw) = win.kernel;
    for ch in 0..c {
        for i in 0..kh {
            for j in 0..kw {
                let row = (ch * kh + i) * kw + j;
                for y in 0..oh {
                    let iy =
                        (y * win.stride.0 + i * win.dilation.0) as isize - win.padding.0 as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for x in 0..ow {
                        let ix = (x * win.stride.1 + j * win.dilation.1) as isize
                            - win.padding.1 as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        f(row, y * ow + x, (ch * h + iy as usize) * w + ix as usize);
                    }
                }
            }
        }
    }
}

impl Tensor {
    /// im2col: `[N, C, H, W] -> [N, C·kh·kw, oh·ow]`, as PyTorch's `F.unfold`.
    ///
    /// ```
    /// use tessera_tensor::{Tensor, Window2d};
    /// let img = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
    /// let cols = img.unfold2d(&Window2d::patches(2))?;   // four 2x2 patches
    /// assert_eq!(cols.shape(), &[1, 4, 4]);
    /// // First patch (top-left) is column 0: 0, 1, 4, 5.
    /// assert_eq!(cols.narrow(2, 0, 1)?.to_vec(), vec![0., 1., 4., 5.]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn unfold2d(&self, win: &Window2d) -> Result<Tensor> {
        let (n, c, h, w) = self
            .dims4()
            .map_err(|_| Error::rank("unfold2d", "4 ([N, C, H, W])", self.shape()))?;
        let (oh, ow) = win.output_size(h, w)?;
        let rows = c * win.kernel.0 * win.kernel.1;
        let l = oh * ow;
        let data = self.contiguous_data();
        let mut out = vec![0.0f32; n * rows * l];
        for b in 0..n {
            let src = &data[b * c * h * w..(b + 1) * c * h * w];
            let dst = &mut out[b * rows * l..(b + 1) * rows * l];
            for_each_tap(c, (h, w), (oh, ow), win, |row, pos, from| {
                dst[row * l + pos] = src[from];
            });
        }
        Tensor::from_vec(out, &[n, rows, l])
    }

    /// 2-D max-pooling of `[N, C, H, W]` over `win` (padding never wins, as in PyTorch).
    /// Returns the pooled `[N, C, oh, ow]` tensor and, for each output, the flat
    /// position in the (contiguous) input of the first maximal element, for the backward
    /// pass; a window that covers only padding yields `-inf` and `usize::MAX`.
    ///
    /// ```
    /// use tessera_tensor::{Tensor, Window2d};
    /// let x = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
    /// let (y, at) = x.max_pool2d(&Window2d::patches(2))?;
    /// assert_eq!(y.to_vec(), vec![5., 7., 13., 15.]);
    /// assert_eq!(at, vec![5, 7, 13, 15]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn max_pool2d(&self, win: &Window2d) -> Result<(Tensor, Vec<usize>)> {
        let (n, c, h, w) = self
            .dims4()
            .map_err(|_| Error::rank("max_pool2d", "4 ([N, C, H, W])", self.shape()))?;
        let (oh, ow) = win.output_size(h, w)?;
        let data = self.contiguous_data();
        let l = oh * ow;
        let mut best = vec![f32::NEG_INFINITY; n * c * l];
        let mut at = vec![usize::MAX; n * c * l];
        // Every (plane, tap, output) visit, taps in row-major kernel order: the first
        // maximum wins (NaN wins, as PyTorch).
        for_each_tap(n * c, (h, w), (oh, ow), win, |row, pos, from| {
            let plane = row / (win.kernel.0 * win.kernel.1);
            let o = plane * l + pos;
            let v = data[from];
            if at[o] == usize::MAX || v > best[o] || (v.is_nan() && !best[o].is_nan()) {
                best[o] = v;
                at[o] = from;
            }
        });
        Ok((Tensor::from_vec(best, &[n, c, oh, ow])?, at))
    }

    /// col2im: `[N, C·kh·kw, oh·ow] -> [N, C, H, W]`, summing overlapping taps, as
    /// PyTorch's `F.fold`. The adjoint of [`Tensor::unfold2d`] (its backward).
    pub fn fold2d(&self, (h, w): (usize, usize), win: &Window2d) -> Result<Tensor> {
        let (n, rows, l) = self
            .dims3()
            .map_err(|_| Error::rank("fold2d", "3 ([N, C·kh·kw, L])", self.shape()))?;
        let (oh, ow) = win.output_size(h, w)?;
        let k = win.kernel.0 * win.kernel.1;
        if rows % k != 0 || l != oh * ow {
            return Err(Error::invalid(
                "fold2d",
                format!(
                    "input {:?} does not match kernel {:?} and {oh}x{ow} = {} positions",
                    self.shape(),
                    win.kernel,
                    oh * ow
                ),
            ));
        }
        let c = rows / k;
        let data = self.contiguous_data();
        let mut out = vec![0.0f32; n * c * h * w];
        for b in 0..n {
            let src = &data[b * rows * l..(b + 1) * rows * l];
            let dst = &mut out[b * c * h * w..(b + 1) * c * h * w];
            for_each_tap(c, (h, w), (oh, ow), win, |row, pos, to| {
                dst[to] += src[row * l + pos];
            });
        }
        Tensor::from_vec(out, &[n, c, h, w])
    }
}
