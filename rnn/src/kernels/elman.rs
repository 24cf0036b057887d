//! The Elman network's closed-form backpropagation through time on raw GEMMs: the
//! forward sweep, the softmax and cross-entropy of every step at once, and the backward
//! sweep `δ_t = (Vᵀ(ŷ_t - y_t) + Wᵀ δ_{t+1}) ⊙ (1 - S_t²)` with the parameter gradients
//! as one product each over all steps. The derivation is the documentation of the
//! [`crate::elman`] module; the plain composition this replaces is autograd through the
//! unrolled graph, [`Elman::loss`], and `tests/elman.rs` holds the two together (and
//! both to finite differences).
//!
//! Sequences are independent, so with more than one thread the batch is split between
//! threads: each runs the whole recursion on its rows, and the parameter gradients are
//! summed at the end.

use std::sync::Mutex;

use tessera_tensor::{
    exp_slice, num_threads, parallel_for, tanh_slice, IndexTensor, MatRef, Tensor,
};

use super::mat;
use crate::elman::{Bptt, Elman, ElmanGrads, SeqInput};
use crate::Result;

/// The loss and gradients of [`Elman::bptt`], for inputs it has checked: `x` of `[B, T]`
/// steps, `targets` `[B, T]` below the classes, `h0` `[B, d]`.
pub(crate) fn bptt(
    model: &Elman,
    x: SeqInput<'_>,
    targets: &IndexTensor,
    h0: Option<&Tensor>,
    b: usize,
    t: usize,
) -> Result<Bptt> {
    let (d, k, n) = (model.hidden_size(), model.output_size(), model.input_size());
    let weights = Weights {
        w: model.w.value().to_vec(),
        w_t: model.w.value().t()?.to_vec(),
        u_t: model.u.value().t()?.to_vec(),
        b_s: model.b_s.value().to_vec(),
        v: model.v.value().to_vec(),
        b_y: model.b_y.value().to_vec(),
        d,
        k,
        n,
    };
    let h0 = h0.map(|h| h.to_vec());
    let dense = match x {
        SeqInput::Dense(x) => Some(x.to_vec()),
        SeqInput::Ids(_) => None,
    };
    let job = Job {
        ids: match x {
            SeqInput::Ids(ids) => Some(ids.data()),
            SeqInput::Dense(_) => None,
        },
        dense: dense.as_deref(),
        targets: targets.data(),
        h0: h0.as_deref(),
        b,
        t,
    };
    // Enough rows per thread to keep each thread's products efficient.
    let parts = num_threads().min(b / 4).max(1);
    let results: Mutex<Vec<Option<Part>>> = Mutex::new((0..parts).map(|_| None).collect());
    parallel_for(parts, |p| {
        let (lo, hi) = (b * p / parts, b * (p + 1) / parts);
        let part = weights.run(&job, lo, hi);
        if let Ok(mut r) = results.lock() {
            r[p] = Some(part);
        }
    });
    let parts: Vec<Part> = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    let mut total = parts[0].clone();
    for p in &parts[1..] {
        total.loss += p.loss;
        for (a, b) in [
            (&mut total.dw, &p.dw),
            (&mut total.du_t, &p.du_t),
            (&mut total.db_s, &p.db_s),
            (&mut total.dv, &p.dv),
            (&mut total.db_y, &p.db_y),
        ] {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        }
        total.dh0.extend_from_slice(&p.dh0);
        total.last.extend_from_slice(&p.last);
    }
    let du = Tensor::from_vec(total.du_t, &[n, d])?.t()?.contiguous();
    Ok(Bptt {
        loss: total.loss,
        grads: ElmanGrads {
            w: Tensor::from_vec(total.dw, &[d, d])?,
            u: du,
            b_s: Tensor::from_vec(total.db_s, &[d])?,
            v: Tensor::from_vec(total.dv, &[k, d])?,
            b_y: Tensor::from_vec(total.db_y, &[k])?,
            h0: Tensor::from_vec(total.dh0, &[b, d])?,
        },
        last_state: Tensor::from_vec(total.last, &[b, d])?,
    })
}

/// The parameters as plain row-major buffers (`U` transposed, so that column `x_t` of
/// `U` is a contiguous row).
struct Weights {
    w: Vec<f32>,
    /// `Wᵀ`, row-major: the forward products read it with unit stride.
    w_t: Vec<f32>,
    u_t: Vec<f32>,
    b_s: Vec<f32>,
    v: Vec<f32>,
    b_y: Vec<f32>,
    d: usize,
    k: usize,
    n: usize,
}

/// One batch, shared by the threads.
struct Job<'a> {
    ids: Option<&'a [usize]>,
    dense: Option<&'a [f32]>,
    targets: &'a [usize],
    h0: Option<&'a [f32]>,
    b: usize,
    t: usize,
}

/// Reused buffers of [`Weights::run`]: the states `S_0..S_T`, the output gradients and
/// the `δ_t`.
#[derive(Default)]
struct Workspace {
    s: Vec<f32>,
    dq: Vec<f32>,
    delta: Vec<f32>,
    shifted: Vec<f32>,
}

thread_local! {
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// The loss and gradients of a range of batch rows.
#[derive(Clone)]
struct Part {
    loss: f32,
    dw: Vec<f32>,
    du_t: Vec<f32>,
    db_s: Vec<f32>,
    dv: Vec<f32>,
    db_y: Vec<f32>,
    dh0: Vec<f32>,
    last: Vec<f32>,
}

/// `c = alpha a b + beta c` on this thread (the batch is already split between threads).
fn mm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    tessera_tensor::gemm(alpha, a, b, beta, c, 1).expect(super::SHAPES);
}

/// `Σ_r x_r ⊗ y_r` over the first `rows` rows of `x` (`[rows, xc]`) and `y`
/// (`[rows, yc]`): the `[xc, yc]` product `xᵀ y`.
fn outer_sum(x: &[f32], xc: usize, y: &[f32], yc: usize, rows: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; xc * yc];
    mm(
        1.0,
        mat(x, 0, xc, rows, 1, xc),
        mat(y, 0, rows, yc, yc, 1),
        0.0,
        &mut out,
    );
    out
}

/// `Σ_rows` of a `[rows, cols]` buffer.
fn column_sums(data: &[f32], cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; cols];
    for row in data.chunks_exact(cols) {
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
    out
}

impl Weights {
    /// Forward and backward sweeps for batch rows `lo..hi`. Buffers are time-major:
    /// block `t` of `s` holds `S_t` for the rows (`s` has `T + 1` blocks, `S_0` first).
    fn run(&self, job: &Job<'_>, lo: usize, hi: usize) -> Part {
        // The large buffers are kept per thread and reused from call to call: fresh
        // megabyte-sized allocations would cost page faults and zeroing on every step.
        WORKSPACE.with(|w| {
            let mut w = w.borrow_mut();
            self.run_in(job, lo, hi, &mut w)
        })
    }

    fn run_in(&self, job: &Job<'_>, lo: usize, hi: usize, work: &mut Workspace) -> Part {
        let (d, k, n, t_len) = (self.d, self.k, self.n, job.t);
        let rows = hi - lo;
        let blk = rows * d;
        let inv_b = 1.0 / job.b as f32;

        // Forward: S_t = tanh(S_{t-1} Wᵀ + x_t Uᵀ + b_s).
        let Workspace {
            s,
            dq,
            delta,
            shifted,
        } = work;
        // Every element is written before it is read, except S_0.
        s.resize((t_len + 1) * blk, 0.0);
        dq.resize(t_len * rows * k, 0.0);
        delta.resize(t_len * blk, 0.0);
        let (s, dq, delta) = (
            &mut s[..(t_len + 1) * blk],
            &mut dq[..t_len * rows * k],
            &mut delta[..t_len * blk],
        );
        match job.h0 {
            Some(h0) => s[..blk].copy_from_slice(&h0[lo * d..hi * d]),
            None => s[..blk].fill(0.0),
        }
        let w_t = mat(&self.w_t, 0, d, d, d, 1);
        let mut pre = vec![0.0f32; blk];
        for t in 0..t_len {
            for (r, row) in pre.chunks_exact_mut(d).enumerate() {
                row.copy_from_slice(&self.b_s);
                if let Some(ids) = job.ids {
                    let id = ids[(lo + r) * t_len + t];
                    row.iter_mut()
                        .zip(&self.u_t[id * d..(id + 1) * d])
                        .for_each(|(p, &u)| *p += u);
                }
            }
            if let Some(x) = job.dense {
                // x_t for rows lo..hi: row r at ((lo + r) T + t) n.
                let xt = mat(x, (lo * t_len + t) * n, rows, n, t_len * n, 1);
                mm(1.0, xt, mat(&self.u_t, 0, n, d, d, 1), 1.0, &mut pre);
            }
            let (prev, next) = s.split_at_mut((t + 1) * blk);
            mm(1.0, mat(prev, t * blk, rows, d, d, 1), w_t, 1.0, &mut pre);
            tanh_slice(&pre, &mut next[..blk]);
        }

        // Output layer on all steps at once: q = S Vᵀ + b_y, then ŷ - y (scaled by 1/B).
        let states = &s[blk..];
        mm(
            1.0,
            mat(states, 0, t_len * rows, d, d, 1),
            mat(&self.v, 0, d, k, 1, d),
            0.0,
            dq,
        );
        // Softmax in three passes over the whole block (one long exp, not one per row).
        let mut loss = 0.0f64;
        shifted.resize(dq.len(), 0.0);
        let shifted = &mut shifted[..dq.len()];
        let mut picked = vec![0.0f32; t_len * rows];
        for (i, (row, sh)) in dq
            .chunks_exact(k)
            .zip(shifted.chunks_exact_mut(k))
            .enumerate()
        {
            let (t, r) = (i / rows, i % rows);
            let target = job.targets[(lo + r) * t_len + t];
            sh.iter_mut()
                .zip(row.iter().zip(&self.b_y))
                .for_each(|(e, (&q, &b))| *e = q + b);
            let m = sh.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            sh.iter_mut().for_each(|e| *e -= m);
            picked[i] = sh[target];
        }
        exp_slice(shifted, dq);
        for (i, row) in dq.chunks_exact_mut(k).enumerate() {
            let (t, r) = (i / rows, i % rows);
            let target = job.targets[(lo + r) * t_len + t];
            // -log ŷ[target] = log Σ_c e^(q_c - m) - (q[target] - m).
            let sum: f32 = row.iter().sum();
            loss += f64::from(sum.ln() - picked[i]);
            let scale = inv_b / sum;
            row.iter_mut().for_each(|q| *q *= scale);
            row[target] -= inv_b;
        }
        // ∂E/∂V = Σ_t (ŷ_t - y_t) ⊗ S_t: [K, TB] · [TB, d].
        let dv = outer_sum(dq, k, states, d, t_len * rows);
        let db_y = column_sums(dq, k);
        // Vᵀ(ŷ_t - y_t) for every step: [TB, K] · [K, d].
        mm(
            1.0,
            mat(dq, 0, t_len * rows, k, k, 1),
            mat(&self.v, 0, k, d, d, 1),
            0.0,
            delta,
        );

        // Backward through time: δ_t = (Vᵀ(ŷ_t - y_t) + Wᵀ δ_{t+1}) ⊙ (1 - S_t²).
        let w = mat(&self.w, 0, d, d, d, 1);
        for t in (0..t_len).rev() {
            let (head, tail) = delta.split_at_mut((t + 1) * blk);
            let cur = &mut head[t * blk..];
            if t + 1 < t_len {
                mm(1.0, mat(tail, 0, rows, d, d, 1), w, 1.0, cur);
            }
            let st = &s[(t + 1) * blk..(t + 2) * blk];
            cur.iter_mut()
                .zip(st)
                .for_each(|(g, &sv)| *g *= 1.0 - sv * sv);
        }
        // ∂E/∂S_0 = Wᵀ δ_1.
        let mut dh0 = vec![0.0f32; blk];
        mm(1.0, mat(delta, 0, rows, d, d, 1), w, 0.0, &mut dh0);
        // ∂E/∂W = Σ_t δ_t ⊗ S_{t-1}: [d, TB] · [TB, d].
        let dw = outer_sum(delta, d, s, d, t_len * rows);
        let db_s = column_sums(delta, d);
        // ∂E/∂U = Σ_t δ_t ⊗ x_t, kept transposed ([n, d]).
        let mut du_t = vec![0.0f32; n * d];
        if let Some(ids) = job.ids {
            for (i, row) in delta.chunks_exact(d).enumerate() {
                let (t, r) = (i / rows, i % rows);
                let id = ids[(lo + r) * t_len + t];
                du_t[id * d..(id + 1) * d]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(a, &g)| *a += g);
            }
        }
        if let Some(x) = job.dense {
            for t in 0..t_len {
                let xt_t = mat(x, (lo * t_len + t) * n, n, rows, 1, t_len * n);
                mm(
                    1.0,
                    xt_t,
                    mat(delta, t * blk, rows, d, d, 1),
                    1.0,
                    &mut du_t,
                );
            }
        }
        Part {
            loss: (loss / job.b as f64) as f32,
            dw,
            du_t,
            db_s,
            dv,
            db_y,
            dh0,
            last: s[t_len * blk..].to_vec(),
        }
    }
}
