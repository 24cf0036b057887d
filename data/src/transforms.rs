//! Crops, flips and normalisation of `[.., H, W]` images (torchvision's transforms).

use tessera_tensor::{Rng, Tensor};

use crate::{Error, Result};

/// Height and width of a `[.., H, W]` tensor, or an error naming `what`.
fn hw(x: &Tensor, what: &'static str) -> Result<(usize, usize)> {
    match x.shape() {
        [.., h, w] => Ok((*h, *w)),
        s => Err(Error::Invalid {
            what,
            msg: format!("expected a tensor of rank 2 or more ([.., H, W]), got shape {s:?}"),
        }),
    }
}

/// The `h × w` window at `(top, left)` of the last two axes, copied.
fn window(x: &Tensor, top: usize, left: usize, h: usize, w: usize) -> Result<Tensor> {
    let rank = x.rank();
    Ok(x.narrow(rank - 2, top, h)?
        .narrow(rank - 1, left, w)?
        .contiguous())
}

/// Python's `round` (halves to even) of `n / 2`.
fn half_round_even(n: usize) -> usize {
    let m = n / 2;
    if n % 2 == 1 && m % 2 == 1 {
        m + 1
    } else {
        m
    }
}

/// The central `h × w` window of a `[.., H, W]` image, placed as torchvision's
/// `center_crop` places it: top `int(round((H - h) / 2.0))`, left likewise (Python's
/// `round`, halves to even). A crop larger than the image is an error (torchvision pads
/// instead).
///
/// ```
/// use tessera_data::center_crop;
/// use tessera_tensor::Tensor;
/// let img = Tensor::arange(0.0, 25.0, 1.0)?.reshape(&[1, 5, 5])?;
/// // (5 - 2) / 2 = 1.5 rounds to 2 (halves to even).
/// let c = center_crop(&img, 2, 2)?;
/// assert_eq!(c.to_vec(), vec![12.0, 13.0, 17.0, 18.0]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn center_crop(image: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (ih, iw) = hw(image, "center_crop")?;
    if h == 0 || w == 0 || h > ih || w > iw {
        return Err(Error::Invalid {
            what: "center_crop",
            msg: format!(
                "a {h}×{w} crop does not fit a {ih}×{iw} image (shape {:?})",
                image.shape()
            ),
        });
    }
    window(
        image,
        half_round_even(ih - h),
        half_round_even(iw - w),
        h,
        w,
    )
}

/// A random `h × w` window of a `[.., H, W]` image padded with `padding` zeros on every
/// side, as torchvision's `RandomCrop(size, padding)`: top and left are uniform in
/// `0..=H + 2·padding - h` and `0..=W + 2·padding - w`.
///
/// ```
/// use tessera_data::random_crop;
/// use tessera_tensor::{Rng, Tensor};
/// let img = Tensor::ones(&[1, 28, 28]);
/// let c = random_crop(&img, 28, 28, 4, &mut Rng::seed(0))?;
/// assert_eq!(c.shape(), &[1, 28, 28]);
/// assert!(c.to_vec().iter().all(|&v| v == 0.0 || v == 1.0));
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn random_crop(
    image: &Tensor,
    h: usize,
    w: usize,
    padding: usize,
    rng: &mut Rng,
) -> Result<Tensor> {
    let (ih, iw) = hw(image, "random_crop")?;
    let (ph, pw) = (ih + 2 * padding, iw + 2 * padding);
    if h == 0 || w == 0 || h > ph || w > pw {
        return Err(Error::Invalid {
            what: "random_crop",
            msg: format!(
                "a {h}×{w} crop does not fit a {ih}×{iw} image padded by {padding} ({ph}×{pw})"
            ),
        });
    }
    let top = rng.below(ph - h + 1);
    let left = rng.below(pw - w + 1);
    if padding == 0 {
        return window(image, top, left, h, w);
    }
    let data = crate::data_of(image);
    let planes = data.len() / (ih * iw).max(1);
    let mut out = vec![0.0f32; planes * h * w];
    for p in 0..planes {
        let src = &data[p * ih * iw..(p + 1) * ih * iw];
        let dst = &mut out[p * h * w..(p + 1) * h * w];
        for y in 0..h {
            // Row y of the crop is row top + y of the padded image.
            let sy = (top + y) as isize - padding as isize;
            if sy < 0 || sy >= ih as isize {
                continue;
            }
            for x in 0..w {
                let sx = (left + x) as isize - padding as isize;
                if sx >= 0 && sx < iw as isize {
                    dst[y * w + x] = src[sy as usize * iw + sx as usize];
                }
            }
        }
    }
    let mut shape = image.shape().to_vec();
    let rank = shape.len();
    shape[rank - 2] = h;
    shape[rank - 1] = w;
    Ok(Tensor::from_vec(out, &shape)?)
}

/// A `[.., H, W]` image mirrored left to right (torchvision's `hflip`).
///
/// ```
/// use tessera_data::hflip;
/// use tessera_tensor::Tensor;
/// let img = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[1, 2, 3])?;
/// assert_eq!(hflip(&img)?.to_vec(), vec![3., 2., 1., 6., 5., 4.]);
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn hflip(image: &Tensor) -> Result<Tensor> {
    let (_, w) = hw(image, "hflip")?;
    let mut out = crate::data_of(image).into_owned();
    if w > 0 {
        for row in out.chunks_exact_mut(w) {
            row.reverse();
        }
    }
    Ok(Tensor::from_vec(out, image.shape())?)
}

/// `(x - mean[c]) / std[c]` per channel of a `[C, H, W]` image or a `[B, C, H, W]` batch
/// (torchvision's `Normalize`). The lengths of `mean` and `std` must equal `C`, and
/// every `std` must be positive.
///
/// ```
/// use tessera_data::normalize;
/// use tessera_tensor::Tensor;
/// let img = Tensor::from_vec(vec![0.5, 1.0, 0.0, 0.25], &[2, 1, 2])?;
/// let n = normalize(&img, &[0.5, 0.0], &[0.5, 0.25])?;
/// assert_eq!(n.to_vec(), vec![0.0, 1.0, 0.0, 1.0]);
/// assert!(normalize(&img, &[0.5; 3], &[0.5; 3]).is_err()); // 3 values for 2 channels
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn normalize(image: &Tensor, mean: &[f32], std: &[f32]) -> Result<Tensor> {
    let shape = image.shape();
    let c = match shape {
        [c, _, _] | [_, c, _, _] => *c,
        s => {
            return Err(Error::Invalid {
                what: "normalize",
                msg: format!("expected a [C, H, W] image or a [B, C, H, W] batch, got shape {s:?}"),
            })
        }
    };
    if mean.len() != c || std.len() != c {
        return Err(Error::Invalid {
            what: "normalize",
            msg: format!(
                "{} means and {} standard deviations for {c} channels (shape {shape:?})",
                mean.len(),
                std.len()
            ),
        });
    }
    if let Some((i, s)) = std
        .iter()
        .enumerate()
        .find(|(_, &s)| s.is_nan() || s <= 0.0)
    {
        return Err(Error::Invalid {
            what: "normalize",
            msg: format!("standard deviation {s} of channel {i} is not positive"),
        });
    }
    let plane = shape[shape.len() - 2] * shape[shape.len() - 1];
    let mut out = crate::data_of(image).into_owned();
    if plane > 0 {
        for (k, chunk) in out.chunks_exact_mut(plane).enumerate() {
            let (m, s) = (mean[k % c], std[k % c]);
            for v in chunk {
                *v = (*v - m) / s;
            }
        }
    }
    Ok(Tensor::from_vec(out, shape)?)
}
