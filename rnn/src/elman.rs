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
//!
//! [`Elman::forward`] and [`Elman::loss`] are these equations recorded on autograd
//! variables; [`Elman::bptt`] checks its inputs and hands them to a kernel that runs the
//! two sweeps above on raw matrix products, the batch split between threads.

use tessera_autograd::{Parameter, Var};
use tessera_nn::{Init, Params, VarBuilder, VarMap};
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::{build_with_rng, check_ids, sequence_cross_entropy, Error, Result};

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
    fn dims(&self, input: usize, op: &'static str) -> Result<(usize, usize)> {
        match self {
            SeqInput::Ids(ids) => {
                let &[b, t] = ids.shape() else {
                    return Err(Error::shape(op, "ids [B, T]", ids.shape()));
                };
                check_ids(op, "token id", ids.data(), input)?;
                Ok((b, t))
            }
            SeqInput::Dense(x) => match x.shape() {
                &[b, t, n] if n == input => Ok((b, t)),
                s => Err(Error::shape(op, format!("input [B, T, {input}]"), s)),
            },
        }
    }
}

/// The Elman network `S_t = tanh(W S_{t-1} + U x_t + b_s)`, `ŷ_t = softmax(V S_t + b_y)`
/// (J. L. Elman, "Finding Structure in Time", *Cognitive Science* 14, 1990; see the
/// [module documentation](self) for the derivation of its gradients).
///
/// Parameters are named as in the notes: `W [d, d]`, `U [d, n]`, `b_s [d]`, `V [K, d]`,
/// `b_y [K]`.
///
/// ```
/// use tessera_autograd::Var;
/// use tessera_nn::Params;
/// use tessera_rnn::{Elman, SeqInput};
/// use tessera_tensor::{IndexTensor, Rng, Tensor};
/// let model = Elman::new(5, 3, 5, &mut Rng::seed(0))?;
/// assert_eq!(model.vars().names(), ["W", "U", "b_s", "V", "b_y"]);
/// // With U = 0 and b_s = 0 the state stays 0, and every class is equally likely.
/// model.u.set(Tensor::zeros(&[3, 5]))?;
/// let x = IndexTensor::new(vec![0, 1, 2, 3], &[2, 2])?;
/// let (logits, last) = model.forward(SeqInput::Ids(&x), None)?;
/// assert_eq!(logits.shape(), &[2, 2, 5]);
/// assert_eq!(last.value().to_vec(), vec![0.0; 6]);
/// let (loss, _) = model.loss(SeqInput::Ids(&x), &x, None)?;
/// // Two steps of ln 5 each.
/// assert!((loss.value().to_scalar()? - 2.0 * 5f32.ln()).abs() < 1e-5);
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
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
    vars: VarMap,
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
    /// units and `output` classes, in a store of its own; weights uniform in
    /// `±1/√hidden` (PyTorch's `nn.RNN` rule) drawn from `rng`, biases zero.
    pub fn new(input: usize, hidden: usize, output: usize, rng: &mut Rng) -> Result<Elman> {
        build_with_rng(rng, |vb| Elman::build(vb, input, hidden, output))
    }

    /// The network's parameters created at `vb`'s path (`W`, `U`, `b_s`, `V`, `b_y`
    /// below it), initialised as [`Elman::new`] says.
    pub fn build(vb: &VarBuilder, input: usize, hidden: usize, output: usize) -> Result<Elman> {
        for (name, value) in [("input", input), ("hidden", hidden), ("output", output)] {
            if value == 0 {
                return Err(Error::setting("Elman", name, value, "at least 1"));
            }
        }
        let k = 1.0 / (hidden as f32).sqrt();
        let uniform = Init::Uniform { lo: -k, hi: k };
        Ok(Elman {
            w: vb.param("W", &[hidden, hidden], uniform.clone())?,
            u: vb.param("U", &[hidden, input], uniform.clone())?,
            b_s: vb.param("b_s", &[hidden], Init::Zeros)?,
            v: vb.param("V", &[output, hidden], uniform)?,
            b_y: vb.param("b_y", &[output], Init::Zeros)?,
            vars: vb.vars().clone(),
        })
    }

    /// A network from given tensors, checked against each other.
    pub fn from_tensors(
        w: Tensor,
        u: Tensor,
        b_s: Tensor,
        v: Tensor,
        b_y: Tensor,
    ) -> Result<Elman> {
        const OP: &str = "Elman::from_tensors";
        let d = w.shape().first().copied().unwrap_or(0);
        let k = v.shape().first().copied().unwrap_or(0);
        let n = u.shape().get(1).copied().unwrap_or(0);
        for (ok, expected, got) in [
            (w.shape() == [d, d], "W [d, d]".to_string(), w.shape()),
            (u.shape() == [d, n], format!("U [{d}, n]"), u.shape()),
            (b_s.shape() == [d], format!("b_s [{d}]"), b_s.shape()),
            (v.shape() == [k, d], format!("V [K, {d}]"), v.shape()),
            (b_y.shape() == [k], format!("b_y [{k}]"), b_y.shape()),
        ] {
            if !ok {
                return Err(Error::shape(OP, expected, got));
            }
        }
        let model = Elman::build(&VarBuilder::zeros(&VarMap::new()), n, d, k)?;
        for (p, value) in [
            (&model.w, w),
            (&model.u, u),
            (&model.b_s, b_s),
            (&model.v, v),
            (&model.b_y, b_y),
        ] {
            p.set(value)?;
        }
        Ok(model)
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

    fn check_h0(&self, h0: &[usize], b: usize, op: &'static str) -> Result<()> {
        let d = self.hidden_size();
        if h0 != [b, d] {
            return Err(Error::shape(op, format!("initial state [{b}, {d}]"), h0));
        }
        Ok(())
    }

    /// The unrolled network on autograd variables: logits (before the softmax) and the
    /// last state `S_T`. `h0` is `S_0` (zero when `None`).
    ///
    /// # Shapes
    /// `x`: ids `[B, T]` or dense `[B, T, n]`; `h0`: `[B, d]` ->
    /// (logits `[B, T, K]`, `S_T` `[B, d]`).
    pub fn forward(&self, x: SeqInput<'_>, h0: Option<&Var>) -> Result<(Var, Var)> {
        const OP: &str = "Elman::forward";
        let (b, t) = x.dims(self.input_size(), OP)?;
        let d = self.hidden_size();
        if t == 0 {
            return Err(Error::shape(OP, "at least one step [B, T ≥ 1]", &[b, t]));
        }
        let mut s = match h0 {
            Some(h) => {
                self.check_h0(h.shape(), b, OP)?;
                h.clone()
            }
            None => Var::constant(Tensor::zeros(&[b, d])),
        };
        let (w_t, u_t) = (self.w.var().transpose(0, 1)?, self.u.var().transpose(0, 1)?);
        let b_s = self.b_s.var();
        let mut states = Vec::with_capacity(t);
        for step in 0..t {
            // U x_t: [B, d], a row lookup in Uᵀ for token ids.
            let ux = match x {
                SeqInput::Ids(ids) => {
                    let col: Vec<usize> = (0..b).map(|i| ids.data()[i * t + step]).collect();
                    u_t.index_select(0, &col)?
                }
                SeqInput::Dense(x) => {
                    // x_t: [B, 1, n] -> [B, n].
                    let xt = x.narrow(1, step, 1)?.reshape(&[b, x.shape()[2]])?;
                    Var::constant(xt).matmul(&u_t)?
                }
            };
            // S_t = tanh(S_{t-1} Wᵀ + x_t Uᵀ + b_s): [B, d].
            s = s.matmul(&w_t)?.add(&ux)?.add(&b_s)?.tanh();
            states.push(s.unsqueeze(1)?);
        }
        // [B, T, d] -> [B·T, d].
        let refs: Vec<&Var> = states.iter().collect();
        let all = Var::concat(&refs, 1)?.reshape(&[b * t, d])?;
        // q = S Vᵀ + b_y: [B·T, K] -> [B, T, K].
        let logits = all
            .matmul(&self.v.var().transpose(0, 1)?)?
            .add(&self.b_y.var())?
            .reshape(&[b, t, self.output_size()])?;
        Ok((logits, s))
    }

    /// `E = Σ_t E_t` averaged over the batch, as an autograd variable (call
    /// `backward()` on it for the autograd gradients), and the last state.
    ///
    /// # Shapes
    /// `x`: ids `[B, T]` or dense `[B, T, n]`; `targets`: class ids `[B, T]`; `h0`:
    /// `[B, d]` -> (`E` `[]`, `S_T` `[B, d]`).
    pub fn loss(
        &self,
        x: SeqInput<'_>,
        targets: &IndexTensor,
        h0: Option<&Var>,
    ) -> Result<(Var, Var)> {
        let (logits, last) = self.forward(x, h0)?;
        let t = logits.shape()[1];
        let mean = sequence_cross_entropy("Elman::loss", &logits, targets)?;
        Ok((mean.mul_scalar(t as f32), last))
    }

    /// The loss and its gradients by the closed-form backpropagation through time of
    /// the [module documentation](self), without autograd. `h0` is `S_0` (zero when
    /// `None`), treated as a constant of this chunk (truncated BPTT: its gradient is
    /// reported in [`ElmanGrads::h0`] but goes no further).
    ///
    /// With more than one thread (see `tessera_tensor::set_num_threads`) the batch is
    /// split between threads: sequences are independent, so each thread runs the whole
    /// recursion on its rows and the parameter gradients are summed at the end.
    ///
    /// # Shapes
    /// `x`: ids `[B, T]` or dense `[B, T, n]`; `targets`: class ids `[B, T]`; `h0`:
    /// `[B, d]` -> gradients of the parameters' shapes, `S_T` `[B, d]`.
    pub fn bptt(
        &self,
        x: SeqInput<'_>,
        targets: &IndexTensor,
        h0: Option<&Tensor>,
    ) -> Result<Bptt> {
        const OP: &str = "Elman::bptt";
        let (b, t) = x.dims(self.input_size(), OP)?;
        if t == 0 || b == 0 {
            return Err(Error::shape(
                OP,
                "a non-empty batch [B ≥ 1, T ≥ 1]",
                &[b, t],
            ));
        }
        if targets.shape() != [b, t] {
            return Err(Error::shape(
                OP,
                format!("targets [{b}, {t}]"),
                targets.shape(),
            ));
        }
        check_ids(OP, "target", targets.data(), self.output_size())?;
        if let Some(h) = h0 {
            self.check_h0(h.shape(), b, OP)?;
        }
        crate::kernels::elman::bptt(self, x, targets, h0, b, t)
    }
}

impl Params for Elman {
    /// The store the network was built into: its own for [`Elman::new`], the enclosing
    /// model's for [`Elman::build`].
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}
