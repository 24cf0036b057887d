//! Cutting images into non-overlapping square patches (the ViT's tokens) and back.

use tessera_tensor::Tensor;

use crate::{Error, Result};

/// Batch size, channels, height, width of `[B, C, H, W]` or `[C, H, W]` (batch 1), and
/// whether the batch axis was there.
fn bchw(x: &Tensor, what: &'static str) -> Result<(usize, usize, usize, usize, bool)> {
    match *x.shape() {
        [b, c, h, w] => Ok((b, c, h, w, true)),
        [c, h, w] => Ok((1, c, h, w, false)),
        ref s => Err(Error::Invalid {
            what,
            msg: format!("expected a [B, C, H, W] batch or a [C, H, W] image, got shape {s:?}"),
        }),
    }
}

fn check_divides(p: usize, h: usize, w: usize, what: &'static str) -> Result<()> {
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::Invalid {
            what,
            msg: format!("patch size {p} must divide the image height {h} and width {w}"),
        });
    }
    Ok(())
}

/// The `p × p` patches of a `[B, C, H, W]` batch as `[B, N, C·p·p]` tokens
/// (`N = (H/p)·(W/p)`; a `[C, H, W]` image gives `[N, C·p·p]`).
///
/// Patches come in row-major grid order (patch `n` is grid row `n / (W/p)`, column
/// `n % (W/p)`), and each patch is flattened in `(c, i, j)` order, so that
/// `patches(x, p) @ W.reshape(D, C·p·p)ᵀ + b` equals the stride-`p` convolution with
/// weights `W` of shape `[D, C, p, p]`, flattened and transposed: timm's `PatchEmbed`
/// (`proj(x).flatten(2).transpose(1, 2)`). A `p` that does not divide `H` and `W` is an
/// error naming `p`, `H` and `W`.
///
/// ```
/// use tessera_data::{patches, unpatch};
/// use tessera_tensor::Tensor;
/// let x = Tensor::arange(0.0, 32.0, 1.0)?.reshape(&[1, 2, 4, 4])?;
/// let t = patches(&x, 2)?;
/// assert_eq!(t.shape(), &[1, 4, 8]);
/// // Patch 1 is the top-right 2×2 block: channel 0 then channel 1, rows then columns.
/// assert_eq!(t.to_vec()[8..16], [2., 3., 6., 7., 18., 19., 22., 23.]);
/// assert_eq!(unpatch(&t, 2, 4, 4, 2)?, x);
/// assert!(patches(&x, 3).is_err()); // 3 does not divide 4
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn patches(x: &Tensor, p: usize) -> Result<Tensor> {
    let (b, c, h, w, batched) = bchw(x, "patches")?;
    check_divides(p, h, w, "patches")?;
    let (gh, gw) = (h / p, w / p);
    let (n, d) = (gh * gw, c * p * p);
    let src = crate::data_of(x);
    let mut out = vec![0.0f32; b * n * d];
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                let token = &mut out[((bi * n) + gy * gw + gx) * d..][..d];
                for ci in 0..c {
                    for i in 0..p {
                        let row = ((bi * c + ci) * h + gy * p + i) * w + gx * p;
                        token[(ci * p + i) * p..][..p].copy_from_slice(&src[row..row + p]);
                    }
                }
            }
        }
    }
    let shape: &[usize] = if batched { &[b, n, d] } else { &[n, d] };
    Ok(Tensor::from_vec(out, shape)?)
}

/// The inverse of [`patches`]: `[B, N, C·p·p]` tokens (or `[N, C·p·p]`) back to a
/// `[B, C, h, w]` batch (or a `[C, h, w]` image). The token count and width must be
/// those of a `c × h × w` image cut into `p × p` patches.
pub fn unpatch(tokens: &Tensor, c: usize, h: usize, w: usize, p: usize) -> Result<Tensor> {
    check_divides(p, h, w, "unpatch")?;
    let (gh, gw) = (h / p, w / p);
    let (n, d) = (gh * gw, c * p * p);
    let (b, batched) = match *tokens.shape() {
        [b, tn, td] if tn == n && td == d => (b, true),
        [tn, td] if tn == n && td == d => (1, false),
        ref s => {
            return Err(Error::Invalid {
                what: "unpatch",
                msg: format!(
                    "a {c}×{h}×{w} image in {p}×{p} patches has {n} tokens of {d}: expected \
                     [B, {n}, {d}] or [{n}, {d}], got shape {s:?}"
                ),
            })
        }
    };
    let src = crate::data_of(tokens);
    let mut out = vec![0.0f32; b * c * h * w];
    for bi in 0..b {
        for gy in 0..gh {
            for gx in 0..gw {
                let token = &src[((bi * n) + gy * gw + gx) * d..][..d];
                for ci in 0..c {
                    for i in 0..p {
                        let row = ((bi * c + ci) * h + gy * p + i) * w + gx * p;
                        out[row..row + p].copy_from_slice(&token[(ci * p + i) * p..][..p]);
                    }
                }
            }
        }
    }
    let shape: &[usize] = if batched { &[b, c, h, w] } else { &[c, h, w] };
    Ok(Tensor::from_vec(out, shape)?)
}
