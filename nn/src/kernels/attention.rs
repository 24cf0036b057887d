//! Self-attention as one operation over a packed projection: the heads read in place,
//! the scale folded into the softmax, the backward pass written out. It is tested
//! against the general path of [`MultiHeadAttention`](crate::MultiHeadAttention), a
//! composition of autograd's operations through
//! [`scaled_dot_product_attention`](crate::scaled_dot_product_attention)
//! (`tests/attention.rs`, `fused_self_attention_equals_the_general_path`).

use std::sync::Arc;

use tessera_autograd::Function;
use tessera_tensor::Tensor;

use super::rows::{self, par_parts, ROWS_PER_PART};
use crate::{AttnMask, Result, Var};

/// Self-attention over one packed projection `[B·T, 3E]` (rows `(b, t)`, columns q, k, v
/// with heads of `E/H` features each), as one differentiable operation: the same
/// `softmax(Q Kᵀ/√d + mask) V` as [`scaled_dot_product_attention`], but with the heads
/// read in place from the packed rows, the scale folded into the softmax and a backward
/// pass written out by hand, which writes the packed gradient directly. Returns
/// `[B·T, E]` (heads side by side) and, on request, the probabilities `[B, H, T, T]`.
pub(crate) fn packed_self_attention(
    qkv: &Var,
    batch: usize,
    heads: usize,
    mask: Option<&AttnMask>,
    return_probs: bool,
) -> Result<(Var, Option<Tensor>)> {
    let x = qkv.value();
    let [q, k, v] = split_heads(x, batch, heads)?;
    let hs = q.shape()[3];
    let scale = 1.0 / (hs as f32).sqrt();
    let scores = q.matmul(&k.transpose(-2, -1)?)?; // [B, H, T, T]
    let probs = match mask {
        None => {
            let shape = scores.shape().to_vec();
            let mut buf = scores.into_vec();
            by_rows(&mut buf, shape[3], |_, row, tmp| {
                softmax_row(row, scale, tmp)
            });
            Tensor::from_vec(buf, &shape)?
        }
        Some(AttnMask::Keep(keep)) => scores
            .mul_scalar(scale)
            .masked_fill(&keep.eq_scalar(0.0), f32::NEG_INFINITY)?
            .softmax(-1)?,
        Some(AttnMask::Additive(bias)) => scores.mul_scalar(scale).add(bias)?.softmax(-1)?,
    };
    let (rows, e) = (x.shape()[0], x.shape()[1] / 3);
    let ctx = probs
        .matmul(&v)? // [B, H, T, hs]
        .permute(&[0, 2, 1, 3])?
        .reshape(&[rows, e])?;
    let function = PackedAttention {
        qkv: x.clone(),
        probs: probs.clone(),
        batch,
        heads,
        scale,
    };
    Ok((
        Var::custom(ctx, std::slice::from_ref(qkv), Arc::new(function)),
        return_probs.then_some(probs),
    ))
}

/// Views of the queries, keys and values `[B, H, T, hs]` inside a packed `[B·T, 3E]`.
fn split_heads(qkv: &Tensor, batch: usize, heads: usize) -> Result<[Tensor; 3]> {
    let (rows, e3) = qkv.dims2()?;
    let (t, hs) = (rows / batch, e3 / 3 / heads);
    let parts = qkv
        .reshape(&[batch, t, 3, heads, hs])?
        .permute(&[2, 0, 3, 1, 4])?; // [3, B, H, T, hs]
    let part = |i| -> Result<Tensor> { Ok(parts.narrow(0, i, 1)?.squeeze(0)?) };
    Ok([part(0)?, part(1)?, part(2)?])
}

/// Runs `f(r, row, scratch)` on every `n`-element row `r` of `buf`, the rows shared
/// among the threads.
fn by_rows(buf: &mut [f32], n: usize, f: impl Fn(usize, &mut [f32], &mut Vec<f32>) + Sync) {
    if n == 0 {
        return;
    }
    let parts: Vec<_> = buf.chunks_mut(ROWS_PER_PART * n).enumerate().collect();
    par_parts(parts, |(i, part)| {
        let mut tmp = Vec::with_capacity(n);
        for (j, row) in part.chunks_exact_mut(n).enumerate() {
            f(i * ROWS_PER_PART + j, row, &mut tmp);
        }
    });
}

/// `softmax(scale · row)` in place, as `Tensor::softmax` of the scaled row: the maximum
/// subtracted first (a NaN anywhere makes the whole row NaN, through the sum).
fn softmax_row(row: &mut [f32], scale: f32, tmp: &mut Vec<f32>) {
    for v in row.iter_mut() {
        *v *= scale;
    }
    let m = rows::max(row);
    tmp.clear();
    tmp.extend(row.iter().map(|&v| v - m));
    tessera_tensor::exp_slice(tmp, row);
    let s = rows::sum(row);
    for v in row.iter_mut() {
        *v /= s;
    }
}

/// The backward rule of [`packed_self_attention`].
#[derive(Debug)]
struct PackedAttention {
    /// The packed projection `[B·T, 3E]`.
    qkv: Tensor,
    /// The softmax probabilities `[B, H, T, T]` (contiguous).
    probs: Tensor,
    batch: usize,
    heads: usize,
    scale: f32,
}

impl Function for PackedAttention {
    fn name(&self) -> &'static str {
        "packed_self_attention"
    }

    /// With `P` the probabilities and `G` the output's gradient per head:
    /// `∂V = Pᵀ G`, `∂P = G Vᵀ`, `∂S = P ⊙ (∂P - rowsum(∂P ⊙ P)) · scale`,
    /// `∂Q = ∂S K`, `∂K = ∂Sᵀ Q`, written back into the packed layout.
    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let [q, k, v] = split_heads(&self.qkv, self.batch, self.heads).map_err(|e| {
            tessera_autograd::Error::CustomGrad {
                op: self.name(),
                msg: e.to_string(),
            }
        })?;
        let (b, h, t, hs) = q.dims4()?;
        let gh = g.reshape(&[b, t, h, hs])?.permute(&[0, 2, 1, 3])?; // [B, H, T, hs]
        let dv = self.probs.transpose(-2, -1)?.matmul(&gh)?;
        let dp = gh.matmul(&v.transpose(-2, -1)?)?; // [B, H, T, T]
        let shape = dp.shape().to_vec();
        let mut ds = dp.into_vec();
        let p = self.probs.contiguous();
        let p = p.as_slice().unwrap_or_default();
        let scale = self.scale;
        let n = shape[3];
        by_rows(&mut ds, n, |r, row, _| {
            let pr = &p[r * n..(r + 1) * n];
            let dot = rows::dot(row, pr);
            for (d, &p) in row.iter_mut().zip(pr) {
                *d = p * (*d - dot) * scale;
            }
        });
        let ds = Tensor::from_vec(ds, &shape)?;
        let dq = ds.matmul(&k)?;
        let dk = ds.transpose(-2, -1)?.matmul(&q)?;
        // [B, H, T, hs] x 3 -> [B, T, 3, H, hs].
        let parts = [dq.contiguous(), dk.contiguous(), dv.contiguous()];
        let src: Vec<&[f32]> = parts
            .iter()
            .map(|x| x.as_slice().unwrap_or_default())
            .collect();
        let mut out = Vec::with_capacity(b * t * 3 * h * hs);
        for bi in 0..b {
            for ti in 0..t {
                for part in &src {
                    for hi in 0..h {
                        let at = ((bi * h + hi) * t + ti) * hs;
                        out.extend_from_slice(&part[at..at + hs]);
                    }
                }
            }
        }
        Ok(vec![Some(Tensor::from_vec(out, &[b * t, 3 * h * hs])?)])
    }
}
