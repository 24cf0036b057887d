//! Resizing as Pillow's `Image.resize` does on 8-bit images (`libImaging/Resample.c`):
//! per axis, filter weights normalised to sum one and turned into 22-bit fixed-point
//! integers; the width first (on the rows the height pass reads), then the height, each
//! pass rounding and clipping to 8 bits. torchvision's `Resize` on a PIL image, and so
//! timm's evaluation transform, is this.

use tessera_tensor::Tensor;

use crate::{Error, Filter, Result};

/// Pillow's `PRECISION_BITS`: `32 - 8 - 2`.
const PRECISION_BITS: u32 = 22;

/// Pillow's bicubic kernel (`a = -0.5`) and its support.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's bilinear (triangle) kernel.
fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights
/// (`precompute_coeffs`, then `normalize_coeffs_8bpc`).
fn coefficients(
    in_size: usize,
    out_size: usize,
    kernel: fn(f64) -> f64,
    support: f64,
) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| kernel((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if ww != 0.0 { k / ww } else { k };
                    let scaled = k * f64::from(1u32 << PRECISION_BITS);
                    if k < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: the fixed-point sum back to 8 bits.
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an image `[C, H, W]` with values in `[0, 1]` to `out_h × out_w` exactly as
/// Pillow's `Image.resize(..., BILINEAR or BICUBIC)` resizes the 8-bit image it stands
/// for: each value is taken as `round(255·x)`, the result is the 8-bit image divided by
/// 255. An image decoded from a PNG or JPEG file (which [`crate::load_image`] gives as
/// `u8 / 255`) thus goes through the very integers Pillow computes, and a model sees
/// what torchvision's `Resize` on a PIL image gives it.
///
/// ```
/// use tessera_data::{resize_pil, Filter};
/// use tessera_tensor::Tensor;
/// let img = Tensor::full(&[3, 10, 20], 128.0 / 255.0);
/// let small = resize_pil(&img, 4, 6, Filter::Bicubic)?;
/// assert_eq!(small.shape(), &[3, 4, 6]);
/// assert!(small.to_vec().iter().all(|&v| v == 128.0 / 255.0)); // a flat image stays flat
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn resize_pil(image: &Tensor, out_h: usize, out_w: usize, filter: Filter) -> Result<Tensor> {
    let &[c, h, w] = image.shape() else {
        return Err(Error::Invalid {
            what: "resize_pil",
            msg: format!("expected an image [C, H, W], got shape {:?}", image.shape()),
        });
    };
    let (kernel, support): (fn(f64) -> f64, f64) = match filter {
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Bilinear => (bilinear, 1.0),
        Filter::Nearest => {
            return Err(Error::Invalid {
                what: "resize_pil",
                msg: "Pillow's nearest resize is not a convolution; use Bilinear or Bicubic"
                    .to_string(),
            })
        }
    };
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::Invalid {
            what: "resize_pil",
            msg: format!("sizes must be positive: {h}×{w} to {out_h}×{out_w}"),
        });
    }
    let px: Vec<u8> = image
        .to_vec()
        .iter()
        .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let horiz = coefficients(w, out_w, kernel, support);
    let vert = coefficients(h, out_h, kernel, support);
    // Pillow resamples the width only on the rows the height pass reads, and skips a
    // pass whose size does not change.
    let (first, last) = if out_h != h {
        let (lo, _) = &vert[0];
        let (hi, k) = &vert[out_h - 1];
        (*lo, hi + k.len())
    } else {
        (0, h)
    };
    let rows = last - first;
    let half = 1i32 << (PRECISION_BITS - 1);
    let mut tmp = vec![0u8; c * rows * out_w];
    for ch in 0..c {
        for y in 0..rows {
            let src = &px[(ch * h + first + y) * w..][..w];
            let dst = &mut tmp[(ch * rows + y) * out_w..][..out_w];
            if out_w == w {
                dst.copy_from_slice(src);
                continue;
            }
            for (xx, (xmin, k)) in horiz.iter().enumerate() {
                let mut ss = half;
                for (i, &kw) in k.iter().enumerate() {
                    ss += i32::from(src[xmin + i]) * kw;
                }
                dst[xx] = clip8(ss);
            }
        }
    }
    let mut out = vec![0f32; c * out_h * out_w];
    for ch in 0..c {
        for yy in 0..out_h {
            let dst = &mut out[(ch * out_h + yy) * out_w..][..out_w];
            if out_h == h {
                let src = &tmp[(ch * rows + yy) * out_w..][..out_w];
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = f32::from(s) / 255.0;
                }
                continue;
            }
            let (ymin, k) = &vert[yy];
            for (xx, d) in dst.iter_mut().enumerate() {
                let mut ss = half;
                for (i, &kw) in k.iter().enumerate() {
                    ss += i32::from(tmp[(ch * rows + ymin - first + i) * out_w + xx]) * kw;
                }
                *d = f32::from(clip8(ss)) / 255.0;
            }
        }
    }
    Ok(Tensor::from_vec(out, &[c, out_h, out_w])?)
}
