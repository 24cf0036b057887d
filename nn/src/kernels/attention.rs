//! Self-attention as one operation over a packed projection: the heads read in place,
//! the scale folded into the softmax, the backward pass written out. It is tested
//! against the general path of [`MultiHeadAttention`](crate::MultiHeadAttention), a
//! composition of autograd's operations through
//! [`scaled_dot_product_attention`](crate::scaled_dot_product_attention)
//! (`tests/attention.rs`, `fused_self_attention_equals_the_general_path`).

use std::cell::RefCell;
use std::sync::{Arc, Mutex};

use tessera_autograd::Function;
use tessera_tensor::{gemm_with, GemmKernel, MatRef, Tensor};

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
    let Some(mask) = mask else {
        let sizes = [batch, heads, q.shape()[2], hs];
        return head_by_head(qkv, sizes, scale, return_probs);
    };
    let scores = q.matmul(&k.transpose(-2, -1)?)?.mul_scalar(scale); // [B, H, T, T]
    let probs = match mask {
        AttnMask::Keep(keep) => scores
            .masked_fill(&keep.eq_scalar(0.0), f32::NEG_INFINITY)?
            .softmax(-1)?,
        AttnMask::Additive(bias) => scores.add(bias)?.softmax(-1)?,
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

/// Unmasked attention one head at a time, each head's work done while its scores sit
/// in cache: `S = Q Kᵀ`, `P = softmax(scale · S)` row by row, `P V` written into the
/// head's columns of the context. The heads are shared among the threads, each product
/// runs on the thread that took its head, and the probabilities are kept (`[B, H, T,
/// T]`) only for a backward pass or the caller; without them every head reuses one
/// buffer per thread. Each product is the one `Tensor::matmul` runs on the head's
/// views (the same kernel, the same order of sums). `[batch, heads, t, hs]` are the
/// sizes that [`split_heads`] found in `qkv`.
fn head_by_head(
    qkv: &Var,
    [batch, heads, t, hs]: [usize; 4],
    scale: f32,
    return_probs: bool,
) -> Result<(Var, Option<Tensor>)> {
    let x = qkv.value().contiguous();
    let (rows, e) = (batch * t, heads * hs);
    let width = 3 * e;
    let xs = x.as_slice().unwrap_or_default();
    let track = tessera_autograd::is_grad_enabled() && qkv.requires_grad();
    let keep = track || return_probs;
    let tasks = batch * heads;
    let mut probs = vec![0.0f32; if keep { tasks * t * t } else { 0 }];
    let mut ctx = vec![0.0f32; rows * e];
    let (probs_at, ctx_at) = (Shared(probs.as_mut_ptr()), Shared(ctx.as_mut_ptr()));
    let failed = Mutex::new(None);
    tessera_tensor::parallel_for(tasks, |task| {
        let (b, h) = (task / heads, task % heads);
        let first = b * t * width + h * hs;
        let head = |scores: &mut [f32], out: &mut [f32]| -> tessera_tensor::Result<()> {
            let (q, k, v) = (first, first + e, first + 2 * e);
            let q = MatRef {
                data: xs,
                offset: q,
                rows: t,
                cols: hs,
                row_stride: width,
                col_stride: 1,
            };
            let kt = MatRef {
                data: xs,
                offset: k,
                rows: hs,
                cols: t,
                row_stride: 1,
                col_stride: width,
            };
            let v = MatRef {
                data: xs,
                offset: v,
                rows: t,
                cols: hs,
                row_stride: width,
                col_stride: 1,
            };
            gemm_with(GemmKernel::Auto, 1.0, q, kt, 0.0, scores, 1)?;
            softmax_rows(scores, t, scale);
            let p = MatRef::row_major(scores, t, t)?;
            gemm_with(GemmKernel::Auto, 1.0, p, v, 0.0, out, 1)?;
            for (i, row) in out.chunks_exact(hs).enumerate() {
                // SAFETY: row `b·t + i`, columns `h·hs..(h+1)·hs` of the `rows x e`
                // context lie inside it, and no other head writes them.
                unsafe {
                    let dst = ctx_at.get().add((b * t + i) * e + h * hs);
                    std::ptr::copy_nonoverlapping(row.as_ptr(), dst, hs);
                }
            }
            Ok(())
        };
        let need = hs * t + if keep { 0 } else { t * t };
        let in_buffer = |scratch: &mut Vec<f32>| {
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let (out, own) = scratch[..need].split_at_mut(hs * t);
            if keep {
                // SAFETY: head `task`'s `t x t` block of the probabilities, written by
                // this task alone.
                let scores = unsafe {
                    std::slice::from_raw_parts_mut(probs_at.get().add(task * t * t), t * t)
                };
                head(scores, out)
            } else {
                head(own, out)
            }
        };
        // A fresh buffer if this thread's is in use further up its stack.
        let done = SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => in_buffer(&mut scratch),
            Err(_) => in_buffer(&mut Vec::new()),
        });
        if let Err(err) = done {
            if let Ok(mut slot) = failed.lock() {
                slot.get_or_insert(err);
            }
        }
    });
    if let Some(err) = failed.into_inner().ok().flatten() {
        return Err(err.into());
    }
    let ctx = Tensor::from_vec(ctx, &[rows, e])?;
    let probs = if keep {
        Some(Tensor::from_vec(probs, &[batch, heads, t, t])?)
    } else {
        None
    };
    let out = match &probs {
        Some(p) if track => {
            let function = PackedAttention {
                qkv: x.clone(),
                probs: p.clone(),
                batch,
                heads,
                scale,
            };
            Var::custom(ctx, std::slice::from_ref(qkv), Arc::new(function))
        }
        _ => Var::constant(ctx),
    };
    Ok((out, if return_probs { probs } else { None }))
}

thread_local! {
    /// One head's output and, when the probabilities are not kept, its scores.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// A pointer into a buffer whose disjoint parts the tasks write.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: each task writes its own part of the buffer, which outlives the tasks.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn get(self) -> *mut f32 {
        self.0
    }
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

/// `softmax(scale · row)` of every `n`-element row of `buf`, in place, with the widest
/// vectors the CPU has.
fn softmax_rows(buf: &mut [f32], n: usize, scale: f32) {
    let run = |buf: &mut [f32], n: usize, scale: f32| each_softmax_row(buf, n, scale);
    tessera_tensor::widest!(run(buf, n, scale))
}

/// The body of [`softmax_rows`], inlined into each of its compiled copies.
#[inline(always)]
fn each_softmax_row(buf: &mut [f32], n: usize, scale: f32) {
    for row in buf.chunks_exact_mut(n) {
        softmax_row(row, scale);
    }
}

/// `softmax(scale · row)` in place, as `Tensor::softmax` of the scaled row: the maximum
/// subtracted first (a NaN anywhere makes the whole row NaN, through the sum). The
/// largest scaled element is the scaled largest one (`scale > 0`, and rounding keeps
/// order), so the row is scaled inside the one pass that exponentiates it.
#[inline(always)]
fn softmax_row(row: &mut [f32], scale: f32) {
    let m = rows::max(row) * scale;
    for v in row.iter_mut() {
        *v = tessera_tensor::exp_scalar(*v * scale - m);
    }
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
