//! One recurrent layer in one direction as a single autograd operation, with its
//! backward pass through time written out (as cuDNN and PyTorch's CPU kernels do).
//!
//! The plain composition it replaces is [`Recurrent::forward_stepwise`]'s cell, the
//! equations of the [`Recurrent`] documentation recorded step by step from autograd's
//! element-wise operations; `tests/pytorch.rs` checks both against PyTorch.
//!
//! Recorded step by step, a sequence of `T` cells costs `T` small weight-gradient
//! products and `T` accumulations of a full `W_hh`-sized gradient. Here the forward pass
//! keeps what the backward pass needs (gate activations, states), the backward pass
//! walks back through time computing only the state gradients, and the gradient of
//! `W_hh` is one product over all steps at the end: `Σ_t dgates_tᵀ h_{t-1}`.
//!
//! The input projection `x_t W_ihᵀ + b_ih` is not part of the operation: the caller
//! computes it for all steps at once (one large product) and passes it in as `xg`
//! `[T, B, G·H]`; for the RNN and the LSTM `b_hh` is folded into it too (it only ever
//! appears added to `b_ih`), while the GRU needs `b_hh` apart (`r ⊙ (W_hn h + b_hn)`).
//!
//! [`Recurrent`]: crate::Recurrent
//! [`Recurrent::forward_stepwise`]: crate::Recurrent::forward_stepwise

use std::sync::Arc;

use tessera_autograd::{Function, Var};
use tessera_tensor::{num_threads, sigmoid_slice, tanh_slice, MatRef, Tensor};

use super::mat;
use crate::recurrent::Mode;
use crate::Result;

/// `c = a b + beta c`, on every thread when the product is large enough to gain.
fn mm(a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    let threads = if a.rows * b.cols * a.cols >= 1 << 18 {
        num_threads()
    } else {
        1
    };
    tessera_tensor::gemm(1.0, a, b, beta, c, threads).expect(super::SHAPES);
}

/// What the backward pass needs, in processing order (entry `s` is the `s`-th step
/// processed: time `s`, or `T - 1 - s` in reverse).
#[derive(Debug)]
struct Saved {
    mode: Mode,
    t: usize,
    b: usize,
    h: usize,
    reverse: bool,
    /// `W_hh` `[G·H, H]`.
    w_hh: Vec<f32>,
    /// Gate activations per step `[T, B, G·H]` (LSTM: i f g o; GRU: r z n; RNN: h).
    acts: Vec<f32>,
    /// The state before each step `[T, B, H]`.
    h_prev: Vec<f32>,
    /// LSTM: the cell state before each step and `tanh(c)` after it; GRU: `W_hn h + b_hn`.
    extra_a: Vec<f32>,
    extra_b: Vec<f32>,
    has_b_hh: bool,
    has_c0: bool,
}

/// The fused layer's output, packed in one tensor: the states of every time `[T, B, H]`
/// (in time order), then the final `h` `[B, H]`, then (LSTM) the final `c` `[B, H]`.
pub(crate) struct LayerOut {
    pub hs: Var,
    pub h_n: Var,
    pub c_n: Option<Var>,
}

/// Runs one layer in one direction. `xg` `[T, B, G·H]`, `w_hh` `[G·H, H]`, `b_hh` (GRU
/// only) `[G·H]`, `h0` and `c0` (LSTM) `[B, H]`.
pub(crate) fn layer(
    mode: Mode,
    xg: &Var,
    w_hh: &Var,
    b_hh: Option<&Var>,
    h0: &Var,
    c0: Option<&Var>,
    reverse: bool,
) -> Result<LayerOut> {
    let (t, b, gh) = (xg.shape()[0], xg.shape()[1], xg.shape()[2]);
    let h = w_hh.shape()[1];
    let g = mode.gates();
    debug_assert_eq!(gh, g * h);
    // Read in place (the projection is contiguous): no copy of the largest input.
    let xg_t = xg.value().contiguous();
    let xg_v = xg_t.as_slice().expect("a contiguous tensor has a slice");
    let w = w_hh.value().to_vec();
    let bias = b_hh.map(|v| v.value().to_vec());
    let blk = b * h;
    let mut acts = vec![0.0f32; t * b * gh];
    let mut h_prev = vec![0.0f32; t * blk];
    let lstm = mode == Mode::Lstm;
    let gru = mode == Mode::Gru;
    let mut extra_a = vec![0.0f32; if lstm || gru { t * blk } else { 0 }];
    let mut extra_b = vec![0.0f32; if lstm { t * blk } else { 0 }];
    let mut hs = vec![0.0f32; t * blk + blk + if lstm { blk } else { 0 }];
    let mut state = h0.value().to_vec();
    let mut cell = c0
        .map(|c| c.value().to_vec())
        .unwrap_or_else(|| vec![0.0; blk]);
    let mut pre = vec![0.0f32; b * gh];
    let mut tmp = vec![0.0f32; gh];
    let w_t = mat(&w, 0, h, gh, 1, h);
    for s in 0..t {
        let i = if reverse { t - 1 - s } else { s };
        h_prev[s * blk..(s + 1) * blk].copy_from_slice(&state);
        // pre = h W_hhᵀ (+ b_hh for the GRU).
        mm(mat(&state, 0, b, h, h, 1), w_t, 0.0, &mut pre);
        if let Some(bias) = &bias {
            for row in pre.chunks_exact_mut(gh) {
                row.iter_mut().zip(bias).for_each(|(p, &bv)| *p += bv);
            }
        }
        let x = &xg_v[i * b * gh..(i + 1) * b * gh];
        let act = &mut acts[s * b * gh..(s + 1) * b * gh];
        for r in 0..b {
            let (xr, pr, ar) = (
                &x[r * gh..(r + 1) * gh],
                &pre[r * gh..(r + 1) * gh],
                &mut act[r * gh..(r + 1) * gh],
            );
            let hr = &mut state[r * h..(r + 1) * h];
            match mode {
                Mode::RnnTanh | Mode::RnnRelu => {
                    tmp.iter_mut()
                        .zip(xr.iter().zip(pr))
                        .for_each(|(o, (&a, &p))| *o = a + p);
                    if mode == Mode::RnnTanh {
                        tanh_slice(&tmp, ar);
                    } else {
                        ar.iter_mut().zip(&tmp).for_each(|(o, &v)| *o = v.max(0.0));
                    }
                    hr.copy_from_slice(ar);
                }
                Mode::Lstm => {
                    tmp.iter_mut()
                        .zip(xr.iter().zip(pr))
                        .for_each(|(o, (&a, &p))| *o = a + p);
                    sigmoid_slice(&tmp[..2 * h], &mut ar[..2 * h]);
                    tanh_slice(&tmp[2 * h..3 * h], &mut ar[2 * h..3 * h]);
                    sigmoid_slice(&tmp[3 * h..], &mut ar[3 * h..]);
                    let cr = &mut cell[r * h..(r + 1) * h];
                    extra_a[s * blk + r * h..s * blk + (r + 1) * h].copy_from_slice(cr);
                    for k in 0..h {
                        cr[k] = ar[h + k] * cr[k] + ar[k] * ar[2 * h + k];
                    }
                    let tc = &mut extra_b[s * blk + r * h..s * blk + (r + 1) * h];
                    tanh_slice(cr, tc);
                    for k in 0..h {
                        hr[k] = ar[3 * h + k] * tc[k];
                    }
                }
                Mode::Gru => {
                    // r, z from x + h parts; n = tanh(x_n + r ⊙ (W_hn h + b_hn)).
                    tmp[..2 * h]
                        .iter_mut()
                        .zip(xr.iter().zip(pr))
                        .for_each(|(o, (&a, &p))| *o = a + p);
                    sigmoid_slice(&tmp[..2 * h], &mut ar[..2 * h]);
                    let hn = &mut extra_a[s * blk + r * h..s * blk + (r + 1) * h];
                    hn.copy_from_slice(&pr[2 * h..]);
                    for k in 0..h {
                        tmp[2 * h + k] = xr[2 * h + k] + ar[k] * hn[k];
                    }
                    tanh_slice(&tmp[2 * h..], &mut ar[2 * h..]);
                    for k in 0..h {
                        let (z, n) = (ar[h + k], ar[2 * h + k]);
                        hr[k] = (1.0 - z) * n + z * hr[k];
                    }
                }
            }
        }
        hs[i * blk..(i + 1) * blk].copy_from_slice(&state);
    }
    hs[t * blk..(t + 1) * blk].copy_from_slice(&state);
    if lstm {
        hs[(t + 1) * blk..].copy_from_slice(&cell);
    }
    let total = hs.len();
    let packed = Tensor::from_vec(hs, &[total])?;
    let saved = Saved {
        mode,
        t,
        b,
        h,
        reverse,
        w_hh: w,
        acts,
        h_prev,
        extra_a,
        extra_b,
        has_b_hh: b_hh.is_some(),
        has_c0: c0.is_some(),
    };
    let mut inputs = vec![xg.clone(), w_hh.clone()];
    inputs.extend(b_hh.cloned());
    inputs.push(h0.clone());
    inputs.extend(c0.cloned());
    let y = Var::custom(packed, &inputs, Arc::new(saved));
    let hs = y.narrow(0, 0, t * blk)?.reshape(&[t, b, h])?;
    let h_n = y.narrow(0, t * blk, blk)?.reshape(&[b, h])?;
    let c_n = if lstm {
        Some(y.narrow(0, (t + 1) * blk, blk)?.reshape(&[b, h])?)
    } else {
        None
    };
    Ok(LayerOut { hs, h_n, c_n })
}

impl Function for Saved {
    fn name(&self) -> &'static str {
        "fused recurrent layer"
    }

    fn backward(&self, g: &Tensor, _y: &Tensor) -> tessera_autograd::Result<Vec<Option<Tensor>>> {
        let (t, b, h) = (self.t, self.b, self.h);
        let gates = self.mode.gates();
        let gh = gates * h;
        let blk = b * h;
        let g_t = g.contiguous();
        let g = g_t.as_slice().expect("a contiguous tensor has a slice");
        let lstm = self.mode == Mode::Lstm;
        let gru = self.mode == Mode::Gru;
        // Gradients flowing into the state and cell after the last step.
        let mut dh = g[t * blk..(t + 1) * blk].to_vec();
        let mut dc = if lstm {
            g[(t + 1) * blk..(t + 2) * blk].to_vec()
        } else {
            Vec::new()
        };
        // d(xg) per time, and d(h W_hhᵀ) per processed step (they differ for the GRU).
        let mut dxg = vec![0.0f32; t * b * gh];
        let mut dgh = if gru {
            vec![0.0f32; t * b * gh]
        } else {
            Vec::new()
        };
        let w = mat(&self.w_hh, 0, gh, h, h, 1);
        let mut dh_prev = vec![0.0f32; blk];
        for s in (0..t).rev() {
            let i = if self.reverse { t - 1 - s } else { s };
            dh.iter_mut()
                .zip(&g[i * blk..(i + 1) * blk])
                .for_each(|(d, &gv)| *d += gv);
            let act = &self.acts[s * b * gh..(s + 1) * b * gh];
            // The gate gradients of this step go where d(xg) of time i lives.
            let da = &mut dxg[i * b * gh..(i + 1) * b * gh];
            for r in 0..b {
                let ar = &act[r * gh..(r + 1) * gh];
                let dar = &mut da[r * gh..(r + 1) * gh];
                let dhr = &mut dh[r * h..(r + 1) * h];
                match self.mode {
                    Mode::RnnTanh => {
                        for k in 0..h {
                            dar[k] = dhr[k] * (1.0 - ar[k] * ar[k]);
                        }
                    }
                    Mode::RnnRelu => {
                        for k in 0..h {
                            dar[k] = if ar[k] > 0.0 { dhr[k] } else { 0.0 };
                        }
                    }
                    Mode::Lstm => {
                        let c_prev = &self.extra_a[s * blk + r * h..s * blk + (r + 1) * h];
                        let tc = &self.extra_b[s * blk + r * h..s * blk + (r + 1) * h];
                        let dcr = &mut dc[r * h..(r + 1) * h];
                        for k in 0..h {
                            let (ig, fg, gg, og) = (ar[k], ar[h + k], ar[2 * h + k], ar[3 * h + k]);
                            let d_o = dhr[k] * tc[k];
                            let dck = dcr[k] + dhr[k] * og * (1.0 - tc[k] * tc[k]);
                            dar[k] = dck * gg * ig * (1.0 - ig);
                            dar[h + k] = dck * c_prev[k] * fg * (1.0 - fg);
                            dar[2 * h + k] = dck * ig * (1.0 - gg * gg);
                            dar[3 * h + k] = d_o * og * (1.0 - og);
                            dcr[k] = dck * fg;
                        }
                    }
                    Mode::Gru => {
                        let hp = &self.h_prev[s * blk + r * h..s * blk + (r + 1) * h];
                        let hn = &self.extra_a[s * blk + r * h..s * blk + (r + 1) * h];
                        let dghr = &mut dgh[s * b * gh + r * gh..s * b * gh + (r + 1) * gh];
                        for k in 0..h {
                            let (rg, zg, ng) = (ar[k], ar[h + k], ar[2 * h + k]);
                            let dn = dhr[k] * (1.0 - zg);
                            let dz = dhr[k] * (hp[k] - ng);
                            let dan = dn * (1.0 - ng * ng);
                            let dr = dan * hn[k];
                            let dar_k = dr * rg * (1.0 - rg);
                            let daz = dz * zg * (1.0 - zg);
                            dar[k] = dar_k;
                            dar[h + k] = daz;
                            dar[2 * h + k] = dan;
                            dghr[k] = dar_k;
                            dghr[h + k] = daz;
                            dghr[2 * h + k] = dan * rg;
                            // The direct path h' = ... + z h.
                            dhr[k] *= zg;
                        }
                    }
                }
            }
            // dh_{prev} = d(h W_hhᵀ) W_hh (+ the GRU's direct path, already in dh).
            let dpre = if gru {
                &dgh[s * b * gh..(s + 1) * b * gh]
            } else {
                &dxg[i * b * gh..(i + 1) * b * gh]
            };
            mm(mat(dpre, 0, b, gh, gh, 1), w, 0.0, &mut dh_prev);
            if gru {
                dh.iter_mut().zip(&dh_prev).for_each(|(d, &p)| *d += p);
            } else {
                dh.copy_from_slice(&dh_prev);
            }
        }
        // dW_hh = Σ_s d(pre)_sᵀ h_prev(s): [G·H, T·B] · [T·B, H], rows in processing order.
        let mut dw = vec![0.0f32; gh * h];
        if gru {
            mm(
                mat(&dgh, 0, gh, t * b, 1, gh),
                mat(&self.h_prev, 0, t * b, h, h, 1),
                0.0,
                &mut dw,
            );
        } else if self.reverse {
            // dxg is in time order; processing order is reversed: pair block i with step T-1-i.
            for s in 0..t {
                let i = t - 1 - s;
                mm(
                    mat(&dxg, i * b * gh, gh, b, 1, gh),
                    mat(&self.h_prev, s * blk, b, h, h, 1),
                    1.0,
                    &mut dw,
                );
            }
        } else {
            mm(
                mat(&dxg, 0, gh, t * b, 1, gh),
                mat(&self.h_prev, 0, t * b, h, h, 1),
                0.0,
                &mut dw,
            );
        }
        let mut out = vec![
            Some(Tensor::from_vec(dxg, &[t, b, gh])?),
            Some(Tensor::from_vec(dw, &[gh, h])?),
        ];
        if self.has_b_hh {
            let mut db = vec![0.0f32; gh];
            for row in dgh.chunks_exact(gh) {
                db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            out.push(Some(Tensor::from_vec(db, &[gh])?));
        }
        out.push(Some(Tensor::from_vec(dh, &[b, h])?));
        if self.has_c0 {
            out.push(Some(Tensor::from_vec(dc, &[b, h])?));
        }
        Ok(out)
    }
}
