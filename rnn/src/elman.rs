//! The Elman network of the course notes, with its gradients derived by hand.
//!
//! # The model
//!
//! For a sequence `x_1 .. x_T` and a state `S_0` (zero unless given):
//!
//! ```text
//! S_t = tanh(W S_{t-1} + U x_t + b_s)        W: d×d, U: d×n, b_s: d
//! ŷ_t = softmax(V S_t + b_y)                 V: K×d, b_y: K
//! E_t = -Σ_k y_{t,k} log ŷ_{t,k}             (y_t one-hot: the next token)
//! E   = Σ_t E_t                              (averaged over the batch)
//! ```
//!
//! With token ids as input, `U x_t` for a one-hot `x_t` is column `x_t` of `U`: a
//! lookup, not a product.
//!
//! # Backpropagation through time, in closed form
//!
//! Write `q_t = V S_t + b_y` for the logits and `z_t = W S_{t-1} + U x_t + b_s` for the
//! pre-activation. The derivation of the notes, step by step:
//!
//! 1. Softmax followed by cross-entropy has the famous simple derivative
//!    `∂E_t/∂q_t = ŷ_t - y_t`: the notes get it from the softmax Jacobian
//!    (`ŷ_l(1 - ŷ_l)` on the diagonal, `-ŷ_k ŷ_l` off it) and `Σ_k y_k = 1`.
//! 2. `q_t` is linear in `V` and `b_y`, so
//!    `∂E/∂V = Σ_t (ŷ_t - y_t) ⊗ S_t` (a `K×d` outer product per step) and
//!    `∂E/∂b_y = Σ_t (ŷ_t - y_t)`.
//! 3. `S_t` reaches `E` twice: through `ŷ_t`, and through `S_{t+1}` (which depends on it
//!    by `W`). With `δ_t = ∂E/∂z_t`, the error carried back through time is
//!
//!    ```text
//!    δ_T = Vᵀ(ŷ_T - y_T) ⊙ (1 - S_T²)
//!    δ_t = (Vᵀ(ŷ_t - y_t) + Wᵀ δ_{t+1}) ⊙ (1 - S_t²)
//!    ```
//!
//!    (`1 - S_t²` is `tanh′` at `z_t`, written through its output).
//! 4. `z_t` is linear in `W`, `U` and `b_s`, so every step adds its share:
//!    `∂E/∂W = Σ_t δ_t ⊗ S_{t-1}`, `∂E/∂U = Σ_t δ_t ⊗ x_t`, `∂E/∂b_s = Σ_t δ_t`, and the
//!    gradient for the initial state is `∂E/∂S_0 = Wᵀ δ_1`.
//!
//! # Where the notes are loose
//!
//! The notes expand `∂E_3/∂W` by the chain rule as
//! `Σ_{r=0}^{t} ∂S_t/∂S_r · ∂S_r/∂W` (right), then write the result as
//! `Vᵀ ⊙ (ŷ_3 - y_3) ⊙ (1 - S_3²) ⊙ S_rᵀ` and its next term with one more
//! `Wᵀ(…) ⊙ (1 - S_r²)`: there the sum over `r` has been dropped (every earlier step
//! contributes, and the total is a sum of such terms, one per `r`), and `⊙` stands for
//! two different things. The correct form keeps matrix-vector products for the chain
//! (`Vᵀ(ŷ_t - y_t)`, `Wᵀ δ`), the element-wise product only for `tanh′`, and an outer
//! product (`⊗`) with `S_{r-1}` at the end:
//! `∂E_3/∂W = Σ_{r=1}^{3} δ_r^{(3)} ⊗ S_{r-1}` with
//! `δ_3^{(3)} = Vᵀ(ŷ_3 - y_3) ⊙ (1 - S_3²)` and
//! `δ_{r}^{(3)} = Wᵀ δ_{r+1}^{(3)} ⊙ (1 - S_r²)`. Summing over `E_t` and collecting
//! terms by `r` gives the single recursion of step 3, which is what [`Elman::bptt`]
//! computes: one backward sweep, `O(T)` instead of `O(T²)`.
//!
//! # Layout
//!
//! Batches are rows: `S_t` is `[B, d]` and the code computes `S_t = tanh(S_{t-1} Wᵀ +
//! x_t Uᵀ + b_s)`, the same equations transposed. Parameters keep the notes' shapes and
//! names (`W`, `U`, `b_s`, `V`, `b_y`).

use std::sync::Mutex;

use tessera_autograd::{Parameter, Var};
use tessera_nn::Params;
use tessera_tensor::{
    exp_slice, gemm, num_threads, parallel_for, tanh_slice, IndexTensor, MatRef, Rng, Tensor,
};

use crate::{input_err, mat, Result};

/// A batch of input sequences.
#[derive(Clone, Copy, Debug)]
pub enum SeqInput<'a> {
    /// Token ids `[B, T]`; `U x_t` is column `x_t` of `U`.
    Ids(&'a IndexTensor),
    /// Dense vectors `[B, T, n]`.
    Dense(&'a Tensor),
}

impl SeqInput<'_> {
    /// `(B, T)`, after checking the input against the model's input size.
    fn dims(&self, input: usize, what: &'static str) -> Result<(usize, usize)> {
        match self {
            SeqInput::Ids(ids) => {
                let &[b, t] = ids.shape() else {
                    return Err(input_err(
                        what,
                        format!("expected ids [B, T], got {:?}", ids.shape()),
                    ));
                };
                if let Some(&bad) = ids.data().iter().find(|&&i| i >= input) {
                    return Err(input_err(
                        what,
                        format!("token id {bad} is outside the input size {input}"),
                    ));
                }
                Ok((b, t))
            }
            SeqInput::Dense(x) => match x.shape() {
                &[b, t, n] if n == input => Ok((b, t)),
                s => Err(input_err(
                    what,
                    format!("expected input [B, T, {input}], got {s:?}"),
                )),
            },
        }
    }
}

/// The Elman network `S_t = tanh(W S_{t-1} + U x_t + b_s)`, `ŷ_t = softmax(V S_t + b_y)`
/// (see the [module documentation](self) for the derivation of its gradients).
///
/// Parameters are named as in the notes: `W [d, d]`, `U [d, n]`, `b_s [d]`, `V [K, d]`,
/// `b_y [K]`.
#[derive(Clone, Debug)]
pub struct Elman {
    /// Recurrent weights `[d, d]`.
    pub w: Parameter,
    /// Input weights `[d, n]`.
    pub u: Parameter,
    /// State bias `[d]`.
    pub b_s: Parameter,
    /// Output weights `[K, d]`.
    pub v: Parameter,
    /// Output bias `[K]`.
    pub b_y: Parameter,
}

/// The gradients of [`Elman`]'s parameters (and of the initial state), as computed by
/// [`Elman::bptt`].
#[derive(Clone, Debug)]
pub struct ElmanGrads {
    /// `∂E/∂W = Σ_t δ_t ⊗ S_{t-1}`.
    pub w: Tensor,
    /// `∂E/∂U = Σ_t δ_t ⊗ x_t`.
    pub u: Tensor,
    /// `∂E/∂b_s = Σ_t δ_t`.
    pub b_s: Tensor,
    /// `∂E/∂V = Σ_t (ŷ_t - y_t) ⊗ S_t`.
    pub v: Tensor,
    /// `∂E/∂b_y = Σ_t (ŷ_t - y_t)`.
    pub b_y: Tensor,
    /// `∂E/∂S_0 = Wᵀ δ_1`, `[B, d]`.
    pub h0: Tensor,
}

impl ElmanGrads {
    /// The parameter gradients with the parameters' names.
    pub fn named(&self) -> [(&'static str, &Tensor); 5] {
        [
            ("W", &self.w),
            ("U", &self.u),
            ("b_s", &self.b_s),
            ("V", &self.v),
            ("b_y", &self.b_y),
        ]
    }

    /// Stores the gradients in `model`'s parameters (replacing what was there), ready
    /// for an optimizer step.
    pub fn write_to(&self, model: &Elman) -> Result<()> {
        model.w.set_grad(self.w.clone())?;
        model.u.set_grad(self.u.clone())?;
        model.b_s.set_grad(self.b_s.clone())?;
        model.v.set_grad(self.v.clone())?;
        model.b_y.set_grad(self.b_y.clone())?;
        Ok(())
    }
}

/// What [`Elman::bptt`] returns.
#[derive(Clone, Debug)]
pub struct Bptt {
    /// `E = Σ_t E_t`, averaged over the batch.
    pub loss: f32,
    /// The gradients of `E`.
    pub grads: ElmanGrads,
    /// `S_T`, `[B, d]`: the state to carry into the next chunk.
    pub last_state: Tensor,
}

impl Elman {
    /// A network with `input` inputs (the vocabulary for token ids), `hidden` state
    /// units and `output` classes; weights uniform in `±1/√hidden` (PyTorch's `nn.RNN`
    /// rule), biases zero.
    pub fn new(input: usize, hidden: usize, output: usize, rng: &mut Rng) -> Elman {
        let k = 1.0 / (hidden.max(1) as f32).sqrt();
        Elman {
            w: Parameter::new(Tensor::rand(&[hidden, hidden], -k, k, rng)),
            u: Parameter::new(Tensor::rand(&[hidden, input], -k, k, rng)),
            b_s: Parameter::new(Tensor::zeros(&[hidden])),
            v: Parameter::new(Tensor::rand(&[output, hidden], -k, k, rng)),
            b_y: Parameter::new(Tensor::zeros(&[output])),
        }
    }

    /// A network from given tensors, checked against each other.
    pub fn from_tensors(
        w: Tensor,
        u: Tensor,
        b_s: Tensor,
        v: Tensor,
        b_y: Tensor,
    ) -> Result<Elman> {
        let d = w.shape().first().copied().unwrap_or(0);
        let k = v.shape().first().copied().unwrap_or(0);
        let ok = w.shape() == [d, d]
            && u.rank() == 2
            && u.shape()[0] == d
            && b_s.shape() == [d]
            && v.shape() == [k, d]
            && b_y.shape() == [k];
        if !ok {
            return Err(input_err(
                "Elman::from_tensors",
                format!(
                    "expected W [d, d], U [d, n], b_s [d], V [K, d], b_y [K]; got W {:?}, U {:?}, b_s {:?}, V {:?}, b_y {:?}",
                    w.shape(), u.shape(), b_s.shape(), v.shape(), b_y.shape()
                ),
            ));
        }
        Ok(Elman {
            w: Parameter::new(w),
            u: Parameter::new(u),
            b_s: Parameter::new(b_s),
            v: Parameter::new(v),
            b_y: Parameter::new(b_y),
        })
    }

    /// `n`, the input size.
    pub fn input_size(&self) -> usize {
        self.u.value().shape()[1]
    }

    /// `d`, the state size.
    pub fn hidden_size(&self) -> usize {
        self.w.value().shape()[0]
    }

    /// `K`, the number of classes.
    pub fn output_size(&self) -> usize {
        self.v.value().shape()[0]
    }

    fn check_h0(&self, h0: &[usize], b: usize, what: &'static str) -> Result<()> {
        let d = self.hidden_size();
        if h0 != [b, d] {
            return Err(input_err(
                what,
                format!("expected initial state [{b}, {d}], got {h0:?}"),
            ));
        }
        Ok(())
    }

    /// The unrolled network on autograd variables: logits `[B, T, K]` (before the
    /// softmax) and the last state `S_T` `[B, d]`. `h0` is `S_0` (zero when `None`).
    pub fn forward(&self, x: SeqInput<'_>, h0: Option<&Var>) -> Result<(Var, Var)> {
        let (b, t) = x.dims(self.input_size(), "Elman::forward")?;
        let d = self.hidden_size();
        if t == 0 {
            return Err(input_err("Elman::forward", "empty sequence (T = 0)".into()));
        }
        let mut s = match h0 {
            Some(h) => {
                self.check_h0(h.shape(), b, "Elman::forward")?;
                h.clone()
            }
            None => Var::constant(Tensor::zeros(&[b, d])),
        };
        let (w_t, u_t) = (self.w.var().transpose(0, 1)?, self.u.var().transpose(0, 1)?);
        let b_s = self.b_s.var();
        let mut states = Vec::with_capacity(t);
        for step in 0..t {
            let ux = match x {
                SeqInput::Ids(ids) => {
                    let col: Vec<usize> = (0..b).map(|i| ids.data()[i * t + step]).collect();
                    u_t.index_select(0, &col)?
                }
                SeqInput::Dense(x) => {
                    let xt = x.narrow(1, step, 1)?.reshape(&[b, x.shape()[2]])?;
                    Var::constant(xt).matmul(&u_t)?
                }
            };
            s = s.matmul(&w_t)?.add(&ux)?.add(&b_s)?.tanh();
            states.push(s.unsqueeze(1)?);
        }
        let refs: Vec<&Var> = states.iter().collect();
        let all = Var::concat(&refs, 1)?.reshape(&[b * t, d])?;
        let logits = all
            .matmul(&self.v.var().transpose(0, 1)?)?
            .add(&self.b_y.var())?
            .reshape(&[b, t, self.output_size()])?;
        Ok((logits, s))
    }

    /// `E = Σ_t E_t` averaged over the batch, as an autograd variable (call
    /// `backward()` on it for the autograd gradients), and the last state.
    /// `targets` are class ids `[B, T]`.
    pub fn loss(
        &self,
        x: SeqInput<'_>,
        targets: &IndexTensor,
        h0: Option<&Var>,
    ) -> Result<(Var, Var)> {
        let (logits, last) = self.forward(x, h0)?;
        let (b, t, k) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
        if targets.shape() != [b, t] {
            return Err(input_err(
                "Elman::loss",
                format!("expected targets [{b}, {t}], got {:?}", targets.shape()),
            ));
        }
        let flat = IndexTensor::from_vec(targets.data().to_vec());
        let mean = tessera_nn::cross_entropy(&logits.reshape(&[b * t, k])?, &flat, 0.0, None)?;
        Ok((mean.mul_scalar(t as f32), last))
    }

    /// The loss and its gradients by the closed-form backpropagation through time of
    /// the [module documentation](self), without autograd. `targets` are class ids
    /// `[B, T]`; `h0` is `S_0` (zero when `None`), treated as a constant of this chunk
    /// (truncated BPTT: its gradient is reported in [`ElmanGrads::h0`] but goes no
    /// further).
    ///
    /// With more than one thread (see `tessera_tensor::set_num_threads`) the batch is
    /// split between threads: sequences are independent, so each thread runs the whole
    /// recursion on its rows and the parameter gradients are summed at the end.
    pub fn bptt(
        &self,
        x: SeqInput<'_>,
        targets: &IndexTensor,
        h0: Option<&Tensor>,
    ) -> Result<Bptt> {
        let (b, t) = x.dims(self.input_size(), "Elman::bptt")?;
        let (d, k, n) = (self.hidden_size(), self.output_size(), self.input_size());
        if t == 0 || b == 0 {
            return Err(input_err(
                "Elman::bptt",
                format!("empty batch [B, T] = [{b}, {t}]"),
            ));
        }
        if targets.shape() != [b, t] {
            return Err(input_err(
                "Elman::bptt",
                format!("expected targets [{b}, {t}], got {:?}", targets.shape()),
            ));
        }
        if let Some(&bad) = targets.data().iter().find(|&&c| c >= k) {
            return Err(input_err(
                "Elman::bptt",
                format!("target {bad} is outside the {k} classes"),
            ));
        }
        if let Some(h) = h0 {
            self.check_h0(h.shape(), b, "Elman::bptt")?;
        }
        let weights = Weights {
            w: self.w.value().to_vec(),
            w_t: self.w.value().t()?.to_vec(),
            u_t: self.u.value().t()?.to_vec(),
            b_s: self.b_s.value().to_vec(),
            v: self.v.value().to_vec(),
            b_y: self.b_y.value().to_vec(),
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
}

impl Params for Elman {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        let name = |n: &str| {
            if prefix.is_empty() {
                n.to_string()
            } else {
                format!("{prefix}.{n}")
            }
        };
        out.push((name("W"), self.w.clone()));
        out.push((name("U"), self.u.clone()));
        out.push((name("b_s"), self.b_s.clone()));
        out.push((name("V"), self.v.clone()));
        out.push((name("b_y"), self.b_y.clone()));
    }
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

/// `c = alpha a b + beta c` on one thread; the shapes are built by this module, so a
/// mismatch is a bug.
fn mm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    gemm(alpha, a, b, beta, c, 1).expect("Elman::bptt builds matching shapes");
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
        let mut dv = vec![0.0f32; k * d];
        mm(
            1.0,
            mat(dq, 0, k, t_len * rows, 1, k),
            mat(states, 0, t_len * rows, d, d, 1),
            0.0,
            &mut dv,
        );
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
        let mut dw = vec![0.0f32; d * d];
        mm(
            1.0,
            mat(delta, 0, d, t_len * rows, 1, d),
            mat(s, 0, t_len * rows, d, d, 1),
            0.0,
            &mut dw,
        );
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
