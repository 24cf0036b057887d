//! PyTorch-compatible recurrent layers: `nn.RNN` (tanh or ReLU), `nn.LSTM`, `nn.GRU`.
//!
//! The cells, for one layer and direction (`x_t` the layer's input, `h` and `c` the
//! state; rows are batch elements, so products are `x Wᵀ`):
//!
//! ```text
//! RNN    h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)                   act = tanh or relu
//! LSTM   [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh                 (PyTorch's order)
//!        i, f, o = σ(·),  g = tanh(·),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
//! GRU    [r z n]: r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)
//!                 z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
//!                 n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))
//!        h' = (1 - z) ⊙ n + z ⊙ h
//! ```
//!
//! Layer `l > 0` reads the outputs of layer `l - 1` (both directions concatenated when
//! bidirectional). Parameters are named as PyTorch names them, layer by layer and
//! direction by direction: `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`,
//! `weight_ih_l0_reverse`, ..., with the gates stacked in the first axis
//! (`[gates·hidden, input]`).

use tessera_autograd::{Parameter, Var};
use tessera_nn::Params;
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::{input_err, Result};

/// The kind of recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `nn.RNN(nonlinearity="tanh")`.
    RnnTanh,
    /// `nn.RNN(nonlinearity="relu")`.
    RnnRelu,
    /// `nn.LSTM`.
    Lstm,
    /// `nn.GRU`.
    Gru,
}

impl Mode {
    /// Gates stacked in each weight (1, 1, 4, 3).
    pub fn gates(self) -> usize {
        match self {
            Mode::RnnTanh | Mode::RnnRelu => 1,
            Mode::Lstm => 4,
            Mode::Gru => 3,
        }
    }
}

/// The shape of a [`Recurrent`] layer stack, with PyTorch's constructor arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecurrentConfig {
    /// The cell.
    pub mode: Mode,
    /// Features of each input step.
    pub input_size: usize,
    /// Features of the state.
    pub hidden_size: usize,
    /// Stacked layers.
    pub num_layers: usize,
    /// Whether the cells have `b_ih` and `b_hh`.
    pub bias: bool,
    /// Inputs and outputs as `[B, T, F]` (otherwise `[T, B, F]`).
    pub batch_first: bool,
    /// A second, time-reversed direction per layer.
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// One layer, with biases, time-major, one direction.
    pub fn new(mode: Mode, input_size: usize, hidden_size: usize) -> RecurrentConfig {
        RecurrentConfig {
            mode,
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            bidirectional: false,
        }
    }

    /// With `n` stacked layers.
    pub fn layers(mut self, n: usize) -> RecurrentConfig {
        self.num_layers = n;
        self
    }

    /// Inputs and outputs `[B, T, F]`.
    pub fn batch_first(mut self, yes: bool) -> RecurrentConfig {
        self.batch_first = yes;
        self
    }

    /// Two directions per layer.
    pub fn bidirectional(mut self, yes: bool) -> RecurrentConfig {
        self.bidirectional = yes;
        self
    }

    /// With or without biases.
    pub fn bias(mut self, yes: bool) -> RecurrentConfig {
        self.bias = yes;
        self
    }

    /// 1 or 2.
    pub fn directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// The recurrent state: `h` (and `c` for the LSTM), each `[layers · directions, B,
/// hidden]` as PyTorch lays it out (index `layer · directions + direction`).
#[derive(Clone, Debug)]
pub enum State {
    /// RNN and GRU.
    Hidden(Var),
    /// LSTM: hidden and cell state.
    Lstm {
        /// Hidden state.
        h: Var,
        /// Cell state.
        c: Var,
    },
}

impl State {
    /// The hidden state.
    pub fn h(&self) -> &Var {
        match self {
            State::Hidden(h) | State::Lstm { h, .. } => h,
        }
    }

    /// The state with its history cut (truncated BPTT).
    pub fn detach(&self) -> State {
        match self {
            State::Hidden(h) => State::Hidden(h.detach()),
            State::Lstm { h, c } => State::Lstm {
                h: h.detach(),
                c: c.detach(),
            },
        }
    }

    /// The state's tensors (`h`, then `c` for the LSTM).
    pub fn tensors(&self) -> Vec<Tensor> {
        match self {
            State::Hidden(h) => vec![h.value().clone()],
            State::Lstm { h, c } => vec![h.value().clone(), c.value().clone()],
        }
    }
}

/// The output sequence and the final state of [`Recurrent::forward`].
#[derive(Clone, Debug)]
pub struct RecurrentOutput {
    /// `[B, T, directions · hidden]` (batch-first) or `[T, B, directions · hidden]`:
    /// the last layer's state at every step.
    pub output: Var,
    /// The final state of every layer and direction.
    pub state: State,
}

/// The weights of one layer in one direction.
#[derive(Clone, Debug)]
struct Cell {
    w_ih: Parameter,
    w_hh: Parameter,
    b_ih: Option<Parameter>,
    b_hh: Option<Parameter>,
}

/// A stack of recurrent layers with PyTorch's semantics and parameter names (see the
/// [module documentation](self)).
///
/// ```
/// use tessera_autograd::Var;
/// use tessera_nn::Params;
/// use tessera_rnn::{Mode, Recurrent, RecurrentConfig};
/// use tessera_tensor::{Rng, Tensor};
/// let mut rng = Rng::seed(0);
/// let config = RecurrentConfig::new(Mode::Lstm, 3, 5).layers(2).batch_first(true);
/// let lstm = Recurrent::new(config, &mut rng)?;
/// let x = Var::constant(Tensor::randn(&[2, 7, 3], 0.0, 1.0, &mut rng));
/// let out = lstm.forward(&x, None)?;
/// assert_eq!(out.output.shape(), &[2, 7, 5]);
/// assert_eq!(out.state.h().shape(), &[2, 2, 5]);
/// assert_eq!(lstm.named_parameters()[0].0, "weight_ih_l0");
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Recurrent {
    config: RecurrentConfig,
    /// `cells[layer][direction]`.
    cells: Vec<Vec<Cell>>,
}

/// The input of the fused path, time-major: token ids (`t·B + b`) or `[T, B, input]`.
enum FusedInput {
    Ids(Vec<usize>),
    Dense(Var),
}

impl Recurrent {
    /// A stack with PyTorch's initialisation: every weight and bias uniform in
    /// `±1/√hidden`.
    pub fn new(config: RecurrentConfig, rng: &mut Rng) -> Result<Recurrent> {
        if config.input_size == 0 || config.hidden_size == 0 || config.num_layers == 0 {
            return Err(input_err(
                "Recurrent::new",
                format!(
                    "input size ({}), hidden size ({}) and layers ({}) must be positive",
                    config.input_size, config.hidden_size, config.num_layers
                ),
            ));
        }
        let (h, g) = (config.hidden_size, config.mode.gates());
        let k = 1.0 / (h as f32).sqrt();
        let mut uniform = |shape: &[usize]| Parameter::new(Tensor::rand(shape, -k, k, rng));
        let cells = (0..config.num_layers)
            .map(|l| {
                let input = if l == 0 {
                    config.input_size
                } else {
                    h * config.directions()
                };
                (0..config.directions())
                    .map(|_| Cell {
                        w_ih: uniform(&[g * h, input]),
                        w_hh: uniform(&[g * h, h]),
                        b_ih: config.bias.then(|| uniform(&[g * h])),
                        b_hh: config.bias.then(|| uniform(&[g * h])),
                    })
                    .collect()
            })
            .collect();
        Ok(Recurrent { config, cells })
    }

    /// The configuration.
    pub fn config(&self) -> &RecurrentConfig {
        &self.config
    }

    /// The zero state for a batch of `batch`.
    pub fn zero_state(&self, batch: usize) -> State {
        let c = &self.config;
        let zeros = || {
            Var::constant(Tensor::zeros(&[
                c.num_layers * c.directions(),
                batch,
                c.hidden_size,
            ]))
        };
        match c.mode {
            Mode::Lstm => State::Lstm {
                h: zeros(),
                c: zeros(),
            },
            _ => State::Hidden(zeros()),
        }
    }

    fn check_state(&self, state: &State, batch: usize) -> Result<()> {
        let c = &self.config;
        let want = [c.num_layers * c.directions(), batch, c.hidden_size];
        let ok = match (state, c.mode) {
            (State::Lstm { h, c }, Mode::Lstm) => h.shape() == want && c.shape() == want,
            (State::Hidden(h), m) if m != Mode::Lstm => h.shape() == want,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let got: Vec<Vec<usize>> = state.tensors().iter().map(|t| t.shape().to_vec()).collect();
            Err(input_err(
                "Recurrent::forward",
                format!(
                    "expected a {} state of {want:?}, got {got:?}",
                    if c.mode == Mode::Lstm { "(h, c)" } else { "h" }
                ),
            ))
        }
    }

    /// `(B, T)` of a dense input, checked.
    fn dense_dims(&self, x: &Var) -> Result<(usize, usize)> {
        let c = &self.config;
        match x.shape() {
            &[d0, d1, f] if f == c.input_size => {
                Ok(if c.batch_first { (d0, d1) } else { (d1, d0) })
            }
            s => {
                let layout = if c.batch_first { "[B, T" } else { "[T, B" };
                Err(input_err(
                    "Recurrent::forward",
                    format!("expected input {layout}, {}], got {s:?}", c.input_size),
                ))
            }
        }
    }

    /// Runs the stack over `x` (`[B, T, input]` when batch-first, else `[T, B,
    /// input]`) from `state` (zero when `None`).
    ///
    /// Each layer and direction is one fused operation ([`crate::fused`]): the input
    /// projection of all steps in one product, the recurrence and its backward pass
    /// written out, the recurrent weight gradient in one product over all steps.
    pub fn forward(&self, x: &Var, state: Option<&State>) -> Result<RecurrentOutput> {
        let (b, t) = self.dense_dims(x)?;
        let time_major = if self.config.batch_first {
            x.transpose(0, 1)?
        } else {
            x.clone()
        };
        self.run_fused(FusedInput::Dense(time_major), b, t, state)
    }

    /// The same computation as [`Recurrent::forward`], recorded cell by cell from
    /// autograd's element-wise operations: the equations of the
    /// [module documentation](self) as written, slower, and an independent check of
    /// the fused path.
    pub fn forward_stepwise(&self, x: &Var, state: Option<&State>) -> Result<RecurrentOutput> {
        let (b, t) = self.dense_dims(x)?;
        let c = &self.config;
        let time_axis = if c.batch_first { 1 } else { 0 };
        let steps = (0..t)
            .map(|i| Ok(x.narrow(time_axis, i, 1)?.reshape(&[b, c.input_size])?))
            .collect::<Result<Vec<Var>>>()?;
        self.run_stepwise(&steps, b, t, state)
    }

    /// Runs the stack over token ids `[B, T]` (or `[T, B]` when not batch-first) read as
    /// one-hot vectors of `input_size`: `x_t W_ihᵀ` of the first layer is a row lookup
    /// in `W_ihᵀ`, not a product.
    pub fn forward_ids(&self, ids: &IndexTensor, state: Option<&State>) -> Result<RecurrentOutput> {
        let c = &self.config;
        let &[d0, d1] = ids.shape() else {
            return Err(input_err(
                "Recurrent::forward_ids",
                format!("expected ids of rank 2, got {:?}", ids.shape()),
            ));
        };
        if let Some(&bad) = ids.data().iter().find(|&&i| i >= c.input_size) {
            return Err(input_err(
                "Recurrent::forward_ids",
                format!("token id {bad} is outside the input size {}", c.input_size),
            ));
        }
        let (b, t) = if c.batch_first { (d0, d1) } else { (d1, d0) };
        let data = ids.data();
        let time_major: Vec<usize> = (0..t)
            .flat_map(|ti| {
                (0..b).map(move |bi| {
                    if c.batch_first {
                        data[bi * t + ti]
                    } else {
                        data[ti * b + bi]
                    }
                })
            })
            .collect();
        self.run_fused(FusedInput::Ids(time_major), b, t, state)
    }

    /// Checks `state` against the batch, or makes the zero state.
    fn state_or_zero(&self, state: Option<&State>, b: usize) -> Result<State> {
        match state {
            Some(s) => {
                self.check_state(s, b)?;
                Ok(s.clone())
            }
            None => Ok(self.zero_state(b)),
        }
    }

    /// The fused path: per layer and direction, one product for the input projection of
    /// all steps, then one fused operation for the recurrence.
    fn run_fused(
        &self,
        input: FusedInput,
        b: usize,
        t: usize,
        state: Option<&State>,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let h = c.hidden_size;
        if t == 0 {
            return Err(input_err(
                "Recurrent::forward",
                "empty sequence (T = 0)".into(),
            ));
        }
        let state = self.state_or_zero(state, b)?;
        let initial =
            |v: &Var, idx: usize| -> Result<Var> { Ok(v.narrow(0, idx, 1)?.reshape(&[b, h])?) };
        let (mut finals_h, mut finals_c) = (Vec::new(), Vec::new());
        // The current layer's input, time-major [T, B, F].
        let mut x: Option<Var> = None;
        for (l, cells) in self.cells.iter().enumerate() {
            let mut outs: Vec<Var> = Vec::with_capacity(cells.len());
            for (dir, cell) in cells.iter().enumerate() {
                let idx = l * c.directions() + dir;
                let h0 = initial(state.h(), idx)?;
                let c0 = match &state {
                    State::Lstm { c: cs, .. } => Some(initial(cs, idx)?),
                    State::Hidden(_) => None,
                };
                let w_ih_t = cell.w_ih.var().transpose(0, 1)?;
                let mut xg = match (&input, &x) {
                    (FusedInput::Ids(ids), None) => w_ih_t.index_select(0, ids)?,
                    (FusedInput::Dense(v), None) => {
                        v.reshape(&[t * b, c.input_size])?.matmul(&w_ih_t)?
                    }
                    (_, Some(prev)) => prev.reshape(&[t * b, prev.shape()[2]])?.matmul(&w_ih_t)?,
                };
                if let Some(bias) = &cell.b_ih {
                    xg = xg.add(&bias.var())?;
                }
                let gru = c.mode == Mode::Gru;
                if let (false, Some(bias)) = (gru, &cell.b_hh) {
                    xg = xg.add(&bias.var())?;
                }
                let xg = xg.reshape(&[t, b, c.mode.gates() * h])?;
                let b_hh = if gru {
                    cell.b_hh.as_ref().map(|p| p.var())
                } else {
                    None
                };
                let out = crate::fused::layer(
                    c.mode,
                    &xg,
                    &cell.w_hh.var(),
                    b_hh.as_ref(),
                    &h0,
                    c0.as_ref(),
                    dir == 1,
                )?;
                finals_h.push(out.h_n.unsqueeze(0)?);
                if let Some(cn) = out.c_n {
                    finals_c.push(cn.unsqueeze(0)?);
                }
                outs.push(out.hs);
            }
            x = Some(match outs.as_slice() {
                [fwd, bwd] => Var::concat(&[fwd, bwd], 2)?,
                _ => outs
                    .pop()
                    .ok_or_else(|| input_err("Recurrent", "a layer without directions".into()))?,
            });
        }
        let x = x.ok_or_else(|| input_err("Recurrent", "a stack without layers".into()))?;
        let output = if c.batch_first { x.transpose(0, 1)? } else { x };
        Ok(RecurrentOutput {
            output,
            state: self.final_state(&finals_h, &finals_c)?,
        })
    }

    fn run_stepwise(
        &self,
        input: &[Var],
        b: usize,
        t: usize,
        state: Option<&State>,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let h = c.hidden_size;
        if t == 0 {
            return Err(input_err(
                "Recurrent::forward",
                "empty sequence (T = 0)".into(),
            ));
        }
        let zero;
        let state = match state {
            Some(s) => {
                self.check_state(s, b)?;
                s
            }
            None => {
                zero = self.zero_state(b);
                &zero
            }
        };
        let initial =
            |v: &Var, idx: usize| -> Result<Var> { Ok(v.narrow(0, idx, 1)?.reshape(&[b, h])?) };
        let project = |steps: &[Var], cell: &Cell| -> Result<Vec<Var>> {
            let w = cell.w_ih.var().transpose(0, 1)?;
            steps.iter().map(|x| Ok(x.matmul(&w)?)).collect()
        };
        let (mut finals_h, mut finals_c) = (Vec::new(), Vec::new());
        let mut steps: Vec<Var> = Vec::new();
        for (l, cells) in self.cells.iter().enumerate() {
            let mut per_dir: Vec<Vec<Var>> = Vec::with_capacity(cells.len());
            for (dir, cell) in cells.iter().enumerate() {
                let idx = l * c.directions() + dir;
                let h0 = initial(state.h(), idx)?;
                let c0 = match state {
                    State::Lstm { c: cs, .. } => Some(initial(cs, idx)?),
                    State::Hidden(_) => None,
                };
                // Layer 0 reads the input, every later layer the previous one's outputs.
                let xs = match (&input, l) {
                    (x, 0) => project(x, cell)?,
                    _ => project(&steps, cell)?,
                };
                let (hs, hn, cn) = self.direction(cell, &xs, h0, c0, dir == 1)?;
                finals_h.push(hn.unsqueeze(0)?);
                if let Some(cn) = cn {
                    finals_c.push(cn.unsqueeze(0)?);
                }
                per_dir.push(hs);
            }
            steps = match per_dir.as_slice() {
                [fwd, bwd] => (0..t)
                    .map(|i| Ok(Var::concat(&[&fwd[i], &bwd[i]], 1)?))
                    .collect::<Result<Vec<Var>>>()?,
                _ => per_dir.pop().unwrap_or_default(),
            };
        }
        self.finish(steps, b, t, finals_h, finals_c)
    }

    /// The final states of every layer and direction stacked as PyTorch lays them out.
    fn final_state(&self, finals_h: &[Var], finals_c: &[Var]) -> Result<State> {
        let hr: Vec<&Var> = finals_h.iter().collect();
        let h = Var::concat(&hr, 0)?;
        Ok(if self.config.mode == Mode::Lstm {
            let cr: Vec<&Var> = finals_c.iter().collect();
            State::Lstm {
                h,
                c: Var::concat(&cr, 0)?,
            }
        } else {
            State::Hidden(h)
        })
    }

    fn finish(
        &self,
        steps: Vec<Var>,
        b: usize,
        t: usize,
        finals_h: Vec<Var>,
        finals_c: Vec<Var>,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let axis = if c.batch_first { 1 } else { 0 };
        let parts = steps
            .iter()
            .map(|s| s.unsqueeze(axis))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let refs: Vec<&Var> = parts.iter().collect();
        let output = Var::concat(&refs, axis)?;
        debug_assert_eq!(output.shape()[axis], t);
        debug_assert_eq!(output.shape()[1 - axis], b);
        Ok(RecurrentOutput {
            output,
            state: self.final_state(&finals_h, &finals_c)?,
        })
    }

    /// One layer in one direction over the projected inputs `xs[t] = x_t W_ihᵀ`:
    /// the state at every step (in time order), the final `h` and (LSTM) `c`.
    fn direction(
        &self,
        cell: &Cell,
        xs: &[Var],
        h0: Var,
        c0: Option<Var>,
        reverse: bool,
    ) -> Result<(Vec<Var>, Var, Option<Var>)> {
        let hsz = self.config.hidden_size;
        let t = xs.len();
        let w_hh = cell.w_hh.var().transpose(0, 1)?;
        let b_ih = cell.b_ih.as_ref().map(|p| p.var());
        let b_hh = cell.b_hh.as_ref().map(|p| p.var());
        let mut h = h0;
        let mut c = c0;
        let mut out: Vec<Option<Var>> = vec![None; t];
        for step in 0..t {
            let i = if reverse { t - 1 - step } else { step };
            let mut gi = xs[i].clone();
            if let Some(b) = &b_ih {
                gi = gi.add(b)?;
            }
            let mut gh = h.matmul(&w_hh)?;
            if let Some(b) = &b_hh {
                gh = gh.add(b)?;
            }
            let gate = |g: &Var, k: usize| -> Result<Var> { Ok(g.narrow(1, k * hsz, hsz)?) };
            h = match self.config.mode {
                Mode::RnnTanh => gi.add(&gh)?.tanh(),
                Mode::RnnRelu => gi.add(&gh)?.relu(),
                Mode::Lstm => {
                    let g = gi.add(&gh)?;
                    let (ig, fg) = (gate(&g, 0)?.sigmoid(), gate(&g, 1)?.sigmoid());
                    let (gg, og) = (gate(&g, 2)?.tanh(), gate(&g, 3)?.sigmoid());
                    let prev = c.take().ok_or_else(|| {
                        input_err("Recurrent", "LSTM without a cell state".into())
                    })?;
                    let cn = fg.mul(&prev)?.add(&ig.mul(&gg)?)?;
                    let hn = og.mul(&cn.tanh())?;
                    c = Some(cn);
                    hn
                }
                Mode::Gru => {
                    let r = gate(&gi, 0)?.add(&gate(&gh, 0)?)?.sigmoid();
                    let z = gate(&gi, 1)?.add(&gate(&gh, 1)?)?.sigmoid();
                    let n = gate(&gi, 2)?.add(&r.mul(&gate(&gh, 2)?)?)?.tanh();
                    // h' = (1 - z) n + z h = n + z (h - n).
                    n.add(&z.mul(&h.sub(&n)?)?)?
                }
            };
            out[i] = Some(h.clone());
        }
        let out = out.into_iter().flatten().collect();
        Ok((out, h, c))
    }
}

impl Params for Recurrent {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        for (l, cells) in self.cells.iter().enumerate() {
            for (dir, cell) in cells.iter().enumerate() {
                let suffix = if dir == 1 { "_reverse" } else { "" };
                let name = |kind: &str| {
                    let n = format!("{kind}_l{l}{suffix}");
                    if prefix.is_empty() {
                        n
                    } else {
                        format!("{prefix}.{n}")
                    }
                };
                out.push((name("weight_ih"), cell.w_ih.clone()));
                out.push((name("weight_hh"), cell.w_hh.clone()));
                if let Some(b) = &cell.b_ih {
                    out.push((name("bias_ih"), b.clone()));
                }
                if let Some(b) = &cell.b_hh {
                    out.push((name("bias_hh"), b.clone()));
                }
            }
        }
    }
}
