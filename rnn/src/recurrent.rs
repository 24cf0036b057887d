//! PyTorch-compatible recurrent layers: `nn.RNN` (tanh or ReLU), `nn.LSTM`, `nn.GRU`
//! (the equations are in [`Recurrent`]'s documentation).
//!
//! The file reads in the order of the equations: the configuration and the state, one
//! cell as written ([`Recurrent::forward_stepwise`] records it step by step), then the
//! stack. [`Recurrent::forward`] and [`Recurrent::forward_ids`] run each layer and
//! direction as one fused operation instead (a kernel with its backward pass through
//! time written out, in `kernels/recurrent.rs`), checked against the step-by-step
//! recording.

use serde::{Deserialize, Serialize};
use tessera_autograd::{Parameter, Var};
use tessera_nn::{Init, Params, VarBuilder, VarMap};
use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::kernels::recurrent::{self as fused, LayerOut};
use crate::{build_with_rng, check_ids, Error, Result};

/// The kind of recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
/// [`RecurrentConfig::new`] gives PyTorch's defaults; the other fields are set as
/// PyTorch's keyword arguments are, by name:
///
/// ```
/// use tessera_rnn::{Mode, RecurrentConfig};
/// let config = RecurrentConfig {
///     num_layers: 2,
///     bidirectional: true,
///     ..RecurrentConfig::new(Mode::Gru, 3, 4)
/// };
/// assert_eq!(config.directions(), 2);
/// let json = serde_json::to_string(&config).unwrap();
/// assert!(json.starts_with(r#"{"mode":"gru","input_size":3,"hidden_size":4,"num_layers":2"#));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecurrentConfig {
    /// The cell.
    pub mode: Mode,
    /// Features of each input step.
    pub input_size: usize,
    /// Features of the state.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    pub num_layers: usize,
    /// Whether the cells have `b_ih` and `b_hh` (default true).
    pub bias: bool,
    /// Inputs and outputs as `[B, T, F]`, otherwise `[T, B, F]` (default false).
    pub batch_first: bool,
    /// A second, time-reversed direction per layer (default false).
    pub bidirectional: bool,
}

impl RecurrentConfig {
    /// One layer, with biases, time-major, one direction (PyTorch's defaults).
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

    fn kind(&self) -> &'static str {
        match self {
            State::Hidden(_) => "an h state",
            State::Lstm { .. } => "an (h, c) state",
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

/// The weights of one layer in one direction, and the cell they make.
#[derive(Clone, Debug)]
struct Weights {
    w_ih: Parameter,
    w_hh: Parameter,
    b_ih: Option<Parameter>,
    b_hh: Option<Parameter>,
}

impl Weights {
    /// Creates `weight_ih_l{layer}`, `weight_hh_l{layer}` (and the biases), with the
    /// suffix `_reverse` for the second direction: PyTorch's initialisation, every weight
    /// and bias uniform in `±1/√hidden`.
    fn build(
        vb: &VarBuilder,
        config: &RecurrentConfig,
        layer: usize,
        reverse: bool,
    ) -> Result<Weights> {
        let (h, g) = (config.hidden_size, config.mode.gates());
        let input = if layer == 0 {
            config.input_size
        } else {
            h * config.directions()
        };
        let k = 1.0 / (h as f32).sqrt();
        let init = Init::Uniform { lo: -k, hi: k };
        let suffix = if reverse { "_reverse" } else { "" };
        let param = |kind: &str, shape: &[usize]| {
            vb.param(&format!("{kind}_l{layer}{suffix}"), shape, init.clone())
        };
        Ok(Weights {
            w_ih: param("weight_ih", &[g * h, input])?,
            w_hh: param("weight_hh", &[g * h, h])?,
            b_ih: config
                .bias
                .then(|| param("bias_ih", &[g * h]))
                .transpose()?,
            b_hh: config
                .bias
                .then(|| param("bias_hh", &[g * h]))
                .transpose()?,
        })
    }

    /// One step of the cell, the equations of the [`Recurrent`] documentation as
    /// written: `xw` is this step's `x_t W_ihᵀ` `[B, G·H]`, `h` and (LSTM) `c` the state
    /// `[B, H]`. Returns the new `h` and (LSTM) `c`.
    fn step(&self, mode: Mode, xw: &Var, h: &Var, c: Option<&Var>) -> Result<(Var, Option<Var>)> {
        let hsz = h.shape()[1];
        let mut gi = xw.clone();
        if let Some(b) = &self.b_ih {
            gi = gi.add(&b.var())?;
        }
        let mut gh = h.matmul(&self.w_hh.var().transpose(0, 1)?)?;
        if let Some(b) = &self.b_hh {
            gh = gh.add(&b.var())?;
        }
        // Gate k of a stacked [B, G·H] pre-activation: [B, H].
        let gate = |g: &Var, k: usize| -> Result<Var> { Ok(g.narrow(1, k * hsz, hsz)?) };
        Ok(match mode {
            Mode::RnnTanh => (gi.add(&gh)?.tanh(), None),
            Mode::RnnRelu => (gi.add(&gh)?.relu(), None),
            Mode::Lstm => {
                let g = gi.add(&gh)?;
                let (ig, fg) = (gate(&g, 0)?.sigmoid(), gate(&g, 1)?.sigmoid());
                let (gg, og) = (gate(&g, 2)?.tanh(), gate(&g, 3)?.sigmoid());
                let c = c.ok_or(Error::StateKind {
                    op: "Recurrent",
                    expected: "an (h, c) state",
                    got: "an h state",
                })?;
                let cn = fg.mul(c)?.add(&ig.mul(&gg)?)?;
                (og.mul(&cn.tanh())?, Some(cn))
            }
            Mode::Gru => {
                let r = gate(&gi, 0)?.add(&gate(&gh, 0)?)?.sigmoid();
                let z = gate(&gi, 1)?.add(&gate(&gh, 1)?)?.sigmoid();
                let n = gate(&gi, 2)?.add(&r.mul(&gate(&gh, 2)?)?)?.tanh();
                // h' = (1 - z) n + z h = n + z (h - n).
                (n.add(&z.mul(&h.sub(&n)?)?)?, None)
            }
        })
    }

    /// The cell over every step, recorded step by step. `xw` is `x W_ihᵀ` of all steps,
    /// time-major `[T·B, G·H]`; the states come back in time order as `[T, B, H]`.
    fn stepwise(
        &self,
        mode: Mode,
        xw: &Var,
        h0: Var,
        c0: Option<Var>,
        t: usize,
        reverse: bool,
    ) -> Result<LayerOut> {
        let b = h0.shape()[0];
        let (mut h, mut c) = (h0, c0);
        let mut out: Vec<Option<Var>> = vec![None; t];
        for step in 0..t {
            let i = if reverse { t - 1 - step } else { step };
            // Step i's rows of the time-major projection: [B, G·H].
            let (hn, cn) = self.step(mode, &xw.narrow(0, i * b, b)?, &h, c.as_ref())?;
            out[i] = Some(hn.unsqueeze(0)?);
            (h, c) = (hn, cn);
        }
        // T × [1, B, H] -> [T, B, H].
        let steps: Vec<Var> = out.into_iter().flatten().collect();
        let refs: Vec<&Var> = steps.iter().collect();
        Ok(LayerOut {
            hs: Var::concat(&refs, 0)?,
            h_n: h,
            c_n: c,
        })
    }

    /// The same as [`Weights::stepwise`], as one fused operation: the biases added to
    /// the projection of all steps at once (`b_hh` too, but for the GRU, whose `b_hn`
    /// sits inside the reset product), then the kernel.
    fn fused(
        &self,
        mode: Mode,
        xw: Var,
        h0: Var,
        c0: Option<Var>,
        t: usize,
        reverse: bool,
    ) -> Result<LayerOut> {
        let (b, h) = (h0.shape()[0], h0.shape()[1]);
        let gru = mode == Mode::Gru;
        let mut xg = xw;
        if let Some(bias) = &self.b_ih {
            xg = xg.add(&bias.var())?;
        }
        if let (false, Some(bias)) = (gru, &self.b_hh) {
            xg = xg.add(&bias.var())?;
        }
        // [T·B, G·H] -> [T, B, G·H].
        let xg = xg.reshape(&[t, b, mode.gates() * h])?;
        let b_hh = if gru {
            self.b_hh.as_ref().map(|p| p.var())
        } else {
            None
        };
        fused::layer(
            mode,
            &xg,
            &self.w_hh.var(),
            b_hh.as_ref(),
            &h0,
            c0.as_ref(),
            reverse,
        )
    }
}

/// A stack of recurrent layers with PyTorch's semantics and parameter names.
///
/// The LSTM is Hochreiter & Schmidhuber's ("Long Short-Term Memory", *Neural
/// Computation* 9, 1997) with the forget gate of Gers, Schmidhuber & Cummins (2000); the
/// GRU is Cho et al.'s ("Learning Phrase Representations using RNN Encoder-Decoder for
/// Statistical Machine Translation", 2014), with PyTorch's placement of `b_hn` inside
/// the reset product.
///
/// The cells, for one layer and direction (`x_t` the layer's input, `h` and `c` the
/// state; rows are batch elements, so products are `x Wᵀ`):
///
/// ```text
/// RNN    h' = act(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)                   act = tanh or relu
/// LSTM   [i f g o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh                 (PyTorch's order)
///        i, f, o = σ(·),  g = tanh(·),  c' = f ⊙ c + i ⊙ g,  h' = o ⊙ tanh(c')
/// GRU    [r z n]: r = σ(x W_irᵀ + b_ir + h W_hrᵀ + b_hr)
///                 z = σ(x W_izᵀ + b_iz + h W_hzᵀ + b_hz)
///                 n = tanh(x W_inᵀ + b_in + r ⊙ (h W_hnᵀ + b_hn))
///        h' = (1 - z) ⊙ n + z ⊙ h
/// ```
///
/// Layer `l > 0` reads the outputs of layer `l - 1` (both directions concatenated when
/// bidirectional). Parameters are named as PyTorch names them, layer by layer and
/// direction by direction: `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`,
/// `weight_ih_l0_reverse`, ..., with the gates stacked in the first axis
/// (`[gates·hidden, input]`).
///
/// PyTorch equivalent: `nn.RNN`, `nn.LSTM`, `nn.GRU`.
///
/// ```
/// use tessera_autograd::Var;
/// use tessera_nn::Params;
/// use tessera_rnn::{Mode, Recurrent, RecurrentConfig};
/// use tessera_tensor::{Rng, Tensor};
/// let mut rng = Rng::seed(0);
/// let config = RecurrentConfig {
///     num_layers: 2,
///     batch_first: true,
///     ..RecurrentConfig::new(Mode::Lstm, 3, 5)
/// };
/// let lstm = Recurrent::new(config, &mut rng)?;
/// let x = Var::constant(Tensor::randn(&[2, 7, 3], 0.0, 1.0, &mut rng));
/// let out = lstm.forward(&x, None)?;
/// assert_eq!(out.output.shape(), &[2, 7, 5]);
/// assert_eq!(out.state.h().shape(), &[2, 2, 5]);
/// assert_eq!(lstm.named_parameters()[0].0, "weight_ih_l0");
/// // 4 gates of 5: 4·5·3 + 4·5·5 + 2·4·5 in the first layer, 4·5·5 + 4·5·5 + 2·4·5 in
/// // the second.
/// assert_eq!(lstm.num_parameters(), 200 + 240);
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Recurrent {
    config: RecurrentConfig,
    /// `layers[layer][direction]`.
    layers: Vec<Vec<Weights>>,
    vars: VarMap,
}

/// The input of the first layer, time-major: token ids (`t·B + b`) or `[T, B, input]`.
enum Input {
    Ids(Vec<usize>),
    Dense(Var),
}

/// How each layer and direction runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// One fused operation ([`Weights::fused`]).
    Fused,
    /// Recorded cell by cell ([`Weights::stepwise`]).
    Stepwise,
}

impl Recurrent {
    /// A stack in a store of its own, with PyTorch's initialisation drawn from `rng`:
    /// every weight and bias uniform in `±1/√hidden`.
    pub fn new(config: RecurrentConfig, rng: &mut Rng) -> Result<Recurrent> {
        build_with_rng(rng, |vb| Recurrent::build(vb, config))
    }

    /// A stack whose parameters are created at `vb`'s path (`weight_ih_l0`, ... below
    /// it), initialised as [`Recurrent::new`] says.
    pub fn build(vb: &VarBuilder, config: RecurrentConfig) -> Result<Recurrent> {
        for (name, value) in [
            ("input_size", config.input_size),
            ("hidden_size", config.hidden_size),
            ("num_layers", config.num_layers),
        ] {
            if value == 0 {
                return Err(Error::setting("Recurrent", name, value, "at least 1"));
            }
        }
        let layers = (0..config.num_layers)
            .map(|l| {
                (0..config.directions())
                    .map(|dir| Weights::build(vb, &config, l, dir == 1))
                    .collect()
            })
            .collect::<Result<_>>()?;
        Ok(Recurrent {
            config,
            layers,
            vars: vb.vars().clone(),
        })
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

    /// Runs the stack over `x` from `state` (zero when `None`).
    ///
    /// Each layer and direction is one fused operation: the input projection of all
    /// steps in one product, the recurrence and its backward pass written out, the
    /// recurrent weight gradient in one product over all steps.
    ///
    /// # Shapes
    /// `x`: `[B, T, input]` when batch-first, else `[T, B, input]`; `state`: `h` (and `c`)
    /// `[layers · directions, B, hidden]` -> output `[B, T, directions · hidden]` (or
    /// `[T, B, directions · hidden]`) and the final state of `state`'s shapes.
    pub fn forward(&self, x: &Var, state: Option<&State>) -> Result<RecurrentOutput> {
        let (b, t) = self.dense_dims(x)?;
        self.run(Input::Dense(self.time_major(x)?), b, t, state, Path::Fused)
    }

    /// The same computation as [`Recurrent::forward`], recorded cell by cell from
    /// autograd's element-wise operations: the equations of the [`Recurrent`]
    /// documentation as written, slower, and an independent check of the fused path.
    ///
    /// # Shapes
    /// As [`Recurrent::forward`].
    pub fn forward_stepwise(&self, x: &Var, state: Option<&State>) -> Result<RecurrentOutput> {
        let (b, t) = self.dense_dims(x)?;
        self.run(
            Input::Dense(self.time_major(x)?),
            b,
            t,
            state,
            Path::Stepwise,
        )
    }

    /// Runs the stack over token ids read as one-hot vectors of `input_size`: `x_t
    /// W_ihᵀ` of the first layer is a row lookup in `W_ihᵀ`, not a product.
    ///
    /// # Shapes
    /// `ids`: `[B, T]` when batch-first, else `[T, B]`; the rest as [`Recurrent::forward`].
    pub fn forward_ids(&self, ids: &IndexTensor, state: Option<&State>) -> Result<RecurrentOutput> {
        const OP: &str = "Recurrent::forward_ids";
        let c = &self.config;
        let layout = if c.batch_first {
            "ids [B, T ≥ 1]"
        } else {
            "ids [T ≥ 1, B]"
        };
        let &[d0, d1] = ids.shape() else {
            return Err(Error::shape(OP, layout, ids.shape()));
        };
        check_ids(OP, "token id", ids.data(), c.input_size)?;
        let (b, t) = if c.batch_first { (d0, d1) } else { (d1, d0) };
        if t == 0 {
            return Err(Error::shape(OP, layout, ids.shape()));
        }
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
        self.run(Input::Ids(time_major), b, t, state, Path::Fused)
    }

    /// `(B, T)` of a dense input, checked.
    fn dense_dims(&self, x: &Var) -> Result<(usize, usize)> {
        let c = &self.config;
        match x.shape() {
            &[d0, d1, f] if f == c.input_size && (if c.batch_first { d1 } else { d0 }) > 0 => {
                Ok(if c.batch_first { (d0, d1) } else { (d1, d0) })
            }
            s => {
                let layout = if c.batch_first { "[B, T" } else { "[T, B" };
                Err(Error::shape(
                    "Recurrent::forward",
                    format!("input {layout}, {}] with T ≥ 1", c.input_size),
                    s,
                ))
            }
        }
    }

    /// A dense input as `[T, B, input]`.
    fn time_major(&self, x: &Var) -> Result<Var> {
        Ok(if self.config.batch_first {
            // [B, T, F] -> [T, B, F].
            x.transpose(0, 1)?
        } else {
            x.clone()
        })
    }

    /// Checks `state` against the batch, or makes the zero state.
    fn state_or_zero(&self, state: Option<&State>, batch: usize) -> Result<State> {
        const OP: &str = "Recurrent::forward";
        let Some(state) = state else {
            return Ok(self.zero_state(batch));
        };
        let c = &self.config;
        let want = [c.num_layers * c.directions(), batch, c.hidden_size];
        let tensors: Vec<(&str, &Var)> = match (state, c.mode) {
            (State::Lstm { h, c }, Mode::Lstm) => vec![("h", h), ("c", c)],
            (State::Hidden(h), m) if m != Mode::Lstm => vec![("h", h)],
            _ => {
                return Err(Error::StateKind {
                    op: OP,
                    expected: self.zero_state(0).kind(),
                    got: state.kind(),
                })
            }
        };
        for (name, v) in tensors {
            if v.shape() != want {
                return Err(Error::shape(
                    OP,
                    format!("state {name} {want:?}"),
                    v.shape(),
                ));
            }
        }
        Ok(state.clone())
    }

    /// The stack: layer `l > 0` reads layer `l - 1`'s outputs (both directions
    /// concatenated), each layer and direction run by `path`.
    fn run(
        &self,
        input: Input,
        b: usize,
        t: usize,
        state: Option<&State>,
        path: Path,
    ) -> Result<RecurrentOutput> {
        let c = &self.config;
        let h = c.hidden_size;
        let state = self.state_or_zero(state, b)?;
        // Entry idx of a stacked state: [layers · directions, B, H] -> [B, H].
        let initial =
            |v: &Var, idx: usize| -> Result<Var> { Ok(v.narrow(0, idx, 1)?.reshape(&[b, h])?) };
        let (mut finals_h, mut finals_c) = (Vec::new(), Vec::new());
        // The current layer's input, time-major [T, B, F].
        let mut x: Option<Var> = None;
        for (l, directions) in self.layers.iter().enumerate() {
            let mut outs: Vec<Var> = Vec::with_capacity(directions.len());
            for (dir, weights) in directions.iter().enumerate() {
                let idx = l * c.directions() + dir;
                let h0 = initial(state.h(), idx)?;
                let c0 = match &state {
                    State::Lstm { c: cs, .. } => Some(initial(cs, idx)?),
                    State::Hidden(_) => None,
                };
                // x_t W_ihᵀ of every step in one product: [T·B, G·H].
                let w_ih_t = weights.w_ih.var().transpose(0, 1)?;
                let xw = match (&input, &x) {
                    (Input::Ids(ids), None) => w_ih_t.index_select(0, ids)?,
                    (Input::Dense(v), None) => {
                        v.reshape(&[t * b, c.input_size])?.matmul(&w_ih_t)?
                    }
                    (_, Some(prev)) => prev.reshape(&[t * b, prev.shape()[2]])?.matmul(&w_ih_t)?,
                };
                let out = match path {
                    Path::Fused => weights.fused(c.mode, xw, h0, c0, t, dir == 1)?,
                    Path::Stepwise => weights.stepwise(c.mode, &xw, h0, c0, t, dir == 1)?,
                };
                finals_h.push(out.h_n.unsqueeze(0)?);
                if let Some(cn) = out.c_n {
                    finals_c.push(cn.unsqueeze(0)?);
                }
                outs.push(out.hs);
            }
            // [T, B, H] per direction -> [T, B, directions · H].
            x = Some(match outs.as_slice() {
                [fwd, bwd] => Var::concat(&[fwd, bwd], 2)?,
                _ => outs.swap_remove(0),
            });
        }
        let x = x.unwrap_or_else(|| unreachable!("a stack has at least one layer"));
        // [T, B, F] -> [B, T, F] when batch-first.
        let output = if c.batch_first { x.transpose(0, 1)? } else { x };
        // The final states stacked as PyTorch lays them out: [layers · directions, B, H].
        let hr: Vec<&Var> = finals_h.iter().collect();
        let h_n = Var::concat(&hr, 0)?;
        let state = if c.mode == Mode::Lstm {
            let cr: Vec<&Var> = finals_c.iter().collect();
            State::Lstm {
                h: h_n,
                c: Var::concat(&cr, 0)?,
            }
        } else {
            State::Hidden(h_n)
        };
        Ok(RecurrentOutput { output, state })
    }
}

impl Params for Recurrent {
    /// The store the stack was built into: its own for [`Recurrent::new`], the enclosing
    /// model's for [`Recurrent::build`].
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}
