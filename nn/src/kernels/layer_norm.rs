//! Layer normalisation as one operation: one pass per row for the forward pass, the
//! backward pass written out, rows shared among the threads. It is tested against the
//! composition `layer_norm_reference` (and PyTorch's fixtures in `tests/layers.rs`).

use std::mem::MaybeUninit;

use tessera_tensor::Tensor;

use super::rows::{self, par_parts, ROWS_PER_PART};
use crate::{Parameter, Result, Var};

/// `(x - mean) / √(var + eps) · γ + β` over the last axis of `x` (`d` features, already
/// checked by the caller), as one differentiable operation.
pub(crate) fn layer_norm(x: &Var, weight: &Parameter, bias: &Parameter, eps: f32) -> Result<Var> {
    let d = weight.value().numel();
    // One pass per row, rows shared among the threads; the backward rule is
    // written out (see LayerNormBackward).
    let xv = x.value().contiguous();
    let xs = xv.as_slice().expect("contiguous");
    let (gamma, beta) = (weight.value(), bias.value());
    let (g, b) = (gamma.to_vec(), beta.to_vec());
    let rows = xs.len() / d;
    // x̂ is kept for the backward pass only when one can follow (not under no_grad).
    let keep = tessera_autograd::is_grad_enabled();
    // Every element of the three outputs is written below: no pass to zero them first.
    let n_xhat = if keep { xs.len() } else { 0 };
    let (mut y, mut xhat, mut rstd) = (
        Vec::with_capacity(xs.len()),
        Vec::with_capacity(n_xhat),
        Vec::with_capacity(rows),
    );
    let part = ROWS_PER_PART * d;
    let mut xhat_parts = xhat.spare_capacity_mut()[..n_xhat].chunks_mut(part);
    let parts: Vec<_> = xs
        .chunks(part)
        .zip(y.spare_capacity_mut()[..xs.len()].chunks_mut(part))
        .map(|p| (p, xhat_parts.next()))
        .zip(rstd.spare_capacity_mut()[..rows].chunks_mut(ROWS_PER_PART))
        .collect();
    // Each part's loops compiled for the widest vectors the CPU has (same results).
    let (gs, bs) = (&g[..], &b[..]);
    par_parts(parts, |(((xs, y), xhat), rstd)| {
        tessera_tensor::widest!(forward_rows(xs, y, xhat, rstd, gs, bs, eps))
    });
    // SAFETY: the parts cover every row, and `forward_rows` wrote each row of `y`, of
    // `xhat` (when kept) and of `rstd`.
    unsafe {
        y.set_len(xs.len());
        xhat.set_len(n_xhat);
        rstd.set_len(rows);
    }
    let value = Tensor::from_vec(y, x.shape())?;
    let backward = LayerNormBackward {
        xhat,
        rstd,
        gamma: g,
        d,
    };
    Ok(Var::custom(
        value,
        &[x.clone(), weight.var(), bias.var()],
        std::sync::Arc::new(backward),
    ))
}

/// The forward pass over whole rows of `xs` (`d = g.len()` features each): `y`, the
/// rows' `1/σ` into `rstd` and, when kept, `x̂` into `xhat`, every element written.
#[inline(always)]
fn forward_rows(
    xs: &[f32],
    y: &mut [MaybeUninit<f32>],
    mut xhat: Option<&mut [MaybeUninit<f32>]>,
    rstd: &mut [MaybeUninit<f32>],
    g: &[f32],
    b: &[f32],
    eps: f32,
) {
    let d = g.len();
    for (r, ((xr, yr), rs_out)) in xs
        .chunks_exact(d)
        .zip(y.chunks_exact_mut(d))
        .zip(rstd.iter_mut())
        .enumerate()
    {
        let mean = rows::sum(xr) / d as f32;
        let var = rows::sum_sq_dev(xr, mean) / d as f32;
        let rs = 1.0 / (var + eps).sqrt();
        rs_out.write(rs);
        if let Some(xhat) = xhat.as_deref_mut() {
            let hr = &mut xhat[r * d..(r + 1) * d];
            for k in 0..d {
                let h = (xr[k] - mean) * rs;
                hr[k].write(h);
                yr[k].write(h * g[k] + b[k]);
            }
        } else {
            for k in 0..d {
                yr[k].write((xr[k] - mean) * rs * g[k] + b[k]);
            }
        }
    }
}

/// The same layer norm as a composition of autograd's operations: what
/// [`layer_norm`] is tested against.
#[cfg(test)]
fn layer_norm_reference(x: &Var, weight: &Var, bias: &Var, eps: f32) -> Result<Var> {
    let mean = x.mean(&[-1], true)?;
    let centred = x.sub(&mean)?;
    let var = centred.square().mean(&[-1], true)?;
    let normed = centred.div(&var.add_scalar(eps).sqrt())?;
    Ok(normed.mul(weight)?.add(bias)?)
}

/// LayerNorm's gradients, with `x̂ = (x - μ) / σ` and `dx̂ = dy ⊙ γ`:
/// `dx = (dx̂ - mean(dx̂) - x̂ ⊙ mean(dx̂ ⊙ x̂)) / σ`, `dγ = Σ_rows dy ⊙ x̂`,
/// `dβ = Σ_rows dy`.
#[derive(Debug)]
struct LayerNormBackward {
    /// `x̂` row by row (empty when the forward ran without gradients: no backward follows).
    xhat: Vec<f32>,
    rstd: Vec<f32>,
    gamma: Vec<f32>,
    /// Features per row (never 0: the forward pass rejects an empty last axis).
    d: usize,
}

impl tessera_autograd::Function for LayerNormBackward {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let d = self.d;
        let gv = g.contiguous();
        let gs = gv.as_slice().expect("contiguous");
        // Every element of dx is written below: no pass to zero it first.
        let mut dx = Vec::with_capacity(gs.len());
        // Per part of rows: dγ and dβ partial sums, added up in order afterwards.
        let part = ROWS_PER_PART * d;
        let nparts = gs.len().div_ceil(part).max(1);
        let mut partial = vec![0.0f32; nparts * 2 * d];
        let parts: Vec<_> = gs
            .chunks(part)
            .zip(self.xhat.chunks(part))
            .zip(dx.spare_capacity_mut()[..gs.len()].chunks_mut(part))
            .zip(self.rstd.chunks(ROWS_PER_PART))
            .zip(partial.chunks_mut(2 * d))
            .collect();
        // Each part's loops compiled for the widest vectors the CPU has (same results).
        let gamma = &self.gamma[..];
        par_parts(parts, |((((gs, xhat), dx), rstd), sums)| {
            tessera_tensor::widest!(backward_rows(gs, xhat, dx, rstd, sums, gamma))
        });
        // SAFETY: the parts cover every row, and `backward_rows` wrote each row of dx.
        unsafe { dx.set_len(gs.len()) };
        let mut dgamma = vec![0.0f32; d];
        let mut dbeta = vec![0.0f32; d];
        for sums in partial.chunks_exact(2 * d) {
            for k in 0..d {
                dgamma[k] += sums[k];
                dbeta[k] += sums[d + k];
            }
        }
        Ok(vec![
            Some(Tensor::from_vec(dx, g.shape())?),
            Some(Tensor::from_vec(dgamma, &[d])?),
            Some(Tensor::from_vec(dbeta, &[d])?),
        ])
    }
}

/// The backward pass over whole rows of `gs` (`d = gamma.len()` features each): `dx`
/// (every element written), and the rows' `dγ` and `dβ` added to the two halves of
/// `sums`.
#[inline(always)]
fn backward_rows(
    gs: &[f32],
    xhat: &[f32],
    dx: &mut [MaybeUninit<f32>],
    rstd: &[f32],
    sums: &mut [f32],
    gamma: &[f32],
) {
    let d = gamma.len();
    let (dgamma, dbeta) = sums.split_at_mut(d);
    let mut dxhat = vec![0.0f32; d];
    for (((gr, hr), dxr), &rs) in gs
        .chunks_exact(d)
        .zip(xhat.chunks_exact(d))
        .zip(dx.chunks_exact_mut(d))
        .zip(rstd)
    {
        for k in 0..d {
            dxhat[k] = gr[k] * gamma[k];
            dgamma[k] += gr[k] * hr[k];
            dbeta[k] += gr[k];
        }
        let m1 = rows::sum(&dxhat) / d as f32;
        let m2 = rows::dot(&dxhat, hr) / d as f32;
        for k in 0..d {
            dxr[k].write((dxhat[k] - m1 - hr[k] * m2) * rs);
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_tensor::{Rng, Tensor};

    use super::*;

    /// The kernel equals the composition in value and in every gradient, over rows that
    /// span several parts (64 rows each) and a width that is not a multiple of 8.
    #[test]
    fn kernel_equals_the_composition() {
        let mut rng = Rng::seed(5);
        let (rows, d) = (150, 13);
        let weight = Parameter::new(Tensor::randn(&[d], 1.0, 0.5, &mut rng));
        let bias = Parameter::new(Tensor::randn(&[d], 0.0, 0.5, &mut rng));
        let x = Tensor::randn(&[rows / 3, 3, d], 0.5, 2.0, &mut rng);
        let r = Var::constant(Tensor::randn(&[rows / 3, 3, d], 0.0, 1.0, &mut rng));
        let run = |fused: bool| {
            weight.zero_grad();
            bias.zero_grad();
            let xv = Var::parameter(x.clone());
            let y = if fused {
                layer_norm(&xv, &weight, &bias, 1e-5).unwrap()
            } else {
                layer_norm_reference(&xv, &weight.var(), &bias.var(), 1e-5).unwrap()
            };
            y.mul(&r).unwrap().sum_all().backward().unwrap();
            [
                y.value().clone(),
                xv.grad().unwrap(),
                weight.grad().unwrap(),
                bias.grad().unwrap(),
            ]
        };
        let (fused, plain) = (run(true), run(false));
        for (what, (a, b)) in ["y", "dx", "dweight", "dbias"]
            .iter()
            .zip(fused.iter().zip(&plain))
        {
            let worst = a
                .to_vec()
                .iter()
                .zip(b.to_vec())
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 2e-4, "{what}: differs by {worst}");
        }
    }
}
