//! A character-level language model: the Elman network or a [`Recurrent`] stack with a
//! linear decoder, trained by truncated backpropagation through time.
//!
//! The training objective is the mean cross-entropy per character (nats per
//! character, what validation reports); the state is carried from one chunk to the
//! next and cut from its history at the boundary (char-rnn's recipe).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tessera_autograd::{no_grad, Var};
use tessera_data::BpttBatches;
use tessera_nn::{Linear, Module, Params};
use tessera_optim::{clip_grad_norm, Adam, Optimizer};
use tessera_tensor::{save_safetensors, IndexTensor, Rng, SafeTensorsFile, Tensor};

use crate::elman::{Elman, SeqInput};
use crate::recurrent::{Mode, Recurrent, RecurrentConfig, State};
use crate::{input_err, Error, Result};

/// The recurrent cell of a [`CharLm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// The notes' Elman network (one layer, one bias, trained by the closed-form BPTT).
    Elman,
    /// `nn.RNN` (tanh), with a linear decoder.
    Rnn,
    /// `nn.LSTM`, with a linear decoder.
    Lstm,
    /// `nn.GRU`, with a linear decoder.
    Gru,
}

impl Cell {
    /// The lower-case name (`elman`, `rnn`, `lstm`, `gru`).
    pub fn name(self) -> &'static str {
        match self {
            Cell::Elman => "elman",
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

impl std::str::FromStr for Cell {
    type Err = Error;
    fn from_str(s: &str) -> Result<Cell> {
        match s.to_ascii_lowercase().as_str() {
            "elman" => Ok(Cell::Elman),
            "rnn" => Ok(Cell::Rnn),
            "lstm" => Ok(Cell::Lstm),
            "gru" => Ok(Cell::Gru),
            _ => Err(input_err(
                "Cell",
                format!("unknown cell {s:?}; expected elman, rnn, lstm or gru"),
            )),
        }
    }
}

/// The shape of a [`CharLm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CharLmConfig {
    /// The cell.
    pub cell: Cell,
    /// Characters in the vocabulary.
    pub vocab: usize,
    /// State size.
    pub hidden: usize,
    /// Stacked layers (1 for the Elman network).
    pub layers: usize,
}

impl CharLmConfig {
    /// The configuration as checkpoint metadata.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            ("model".to_string(), "tessera-rnn/charlm".to_string()),
            ("cell".to_string(), self.cell.name().to_string()),
            ("vocab_size".to_string(), self.vocab.to_string()),
            ("hidden".to_string(), self.hidden.to_string()),
            ("layers".to_string(), self.layers.to_string()),
        ])
    }

    /// The configuration read back from checkpoint metadata.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<CharLmConfig> {
        if meta.get("model").map(String::as_str) != Some("tessera-rnn/charlm") {
            return Err(input_err(
                "CharLmConfig",
                format!(
                    "not a character language model checkpoint (model = {:?})",
                    meta.get("model")
                ),
            ));
        }
        let num = |key: &str| -> Result<usize> {
            meta.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| {
                input_err(
                    "CharLmConfig",
                    format!("metadata {key:?} is missing or not a number"),
                )
            })
        };
        let cell = meta
            .get("cell")
            .ok_or_else(|| input_err("CharLmConfig", "metadata \"cell\" is missing".into()))?
            .parse()?;
        Ok(CharLmConfig {
            cell,
            vocab: num("vocab_size")?,
            hidden: num("hidden")?,
            layers: num("layers")?,
        })
    }
}

/// The carried state of a [`CharLm`]: `S_t` of the Elman network, or a [`State`].
#[derive(Clone, Debug)]
pub enum LmState {
    /// The Elman network's `[B, d]` state.
    Elman(Tensor),
    /// A recurrent stack's state.
    Stack(State),
}

impl LmState {
    /// The tensors of the state (for checkpoints).
    pub fn tensors(&self) -> Vec<Tensor> {
        match self {
            LmState::Elman(h) => vec![h.clone()],
            LmState::Stack(s) => s.tensors(),
        }
    }
}

#[derive(Clone, Debug)]
enum Net {
    Elman(Elman),
    Stack { rnn: Recurrent, decoder: Linear },
}

/// A character language model.
///
/// ```
/// use tessera_rnn::{Cell, CharLm, CharLmConfig};
/// use tessera_tensor::{IndexTensor, Rng};
/// let mut rng = Rng::seed(0);
/// let lm = CharLm::new(CharLmConfig { cell: Cell::Lstm, vocab: 5, hidden: 8, layers: 1 }, &mut rng)?;
/// let x = IndexTensor::new(vec![0, 1, 2, 3, 4, 0], &[2, 3])?;
/// let y = IndexTensor::new(vec![1, 2, 3, 4, 0, 1], &[2, 3])?;
/// let (loss, _state) = lm.loss_and_grads(&x, &y, None)?;
/// assert!((loss - 5f32.ln()).abs() < 0.3); // about ln(vocab) before training
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CharLm {
    config: CharLmConfig,
    net: Net,
}

impl CharLm {
    /// A freshly initialised model.
    pub fn new(config: CharLmConfig, rng: &mut Rng) -> Result<CharLm> {
        if config.vocab == 0 || config.hidden == 0 || config.layers == 0 {
            return Err(input_err(
                "CharLm::new",
                format!("vocabulary, hidden size and layers must be positive: {config:?}"),
            ));
        }
        let net = match config.cell {
            Cell::Elman => {
                if config.layers != 1 {
                    return Err(input_err(
                        "CharLm::new",
                        format!("the Elman network has one layer, not {}", config.layers),
                    ));
                }
                Net::Elman(Elman::new(config.vocab, config.hidden, config.vocab, rng))
            }
            cell => {
                let mode = match cell {
                    Cell::Lstm => Mode::Lstm,
                    Cell::Gru => Mode::Gru,
                    _ => Mode::RnnTanh,
                };
                let rc = RecurrentConfig::new(mode, config.vocab, config.hidden)
                    .layers(config.layers)
                    .batch_first(true);
                Net::Stack {
                    rnn: Recurrent::new(rc, rng)?,
                    decoder: Linear::new(config.hidden, config.vocab, true, rng),
                }
            }
        };
        Ok(CharLm { config, net })
    }

    /// The configuration.
    pub fn config(&self) -> &CharLmConfig {
        &self.config
    }

    fn check_state(&self, state: Option<&LmState>) -> Result<()> {
        match (&self.net, state) {
            (_, None)
            | (Net::Elman(_), Some(LmState::Elman(_)))
            | (Net::Stack { .. }, Some(LmState::Stack(_))) => Ok(()),
            _ => Err(input_err(
                "CharLm",
                format!(
                    "a state of another cell was given to a {} model",
                    self.config.cell.name()
                ),
            )),
        }
    }

    /// The mean cross-entropy per character of targets `y` given inputs `x` (both
    /// `[B, T]`), with its gradients stored in the parameters (replacing earlier ones),
    /// and the final state, detached: the start of the next chunk.
    pub fn loss_and_grads(
        &self,
        x: &IndexTensor,
        y: &IndexTensor,
        state: Option<&LmState>,
    ) -> Result<(f32, LmState)> {
        self.check_state(state)?;
        let t = x.shape().get(1).copied().unwrap_or(1).max(1) as f32;
        match &self.net {
            Net::Elman(m) => {
                let h0 = match state {
                    Some(LmState::Elman(h)) => Some(h),
                    _ => None,
                };
                let out = m.bptt(SeqInput::Ids(x), y, h0)?;
                // The notes' E sums over time; the per-character mean divides by T.
                let mut g = out.grads;
                for gt in [&mut g.w, &mut g.u, &mut g.b_s, &mut g.v, &mut g.b_y] {
                    *gt = gt.mul_scalar(1.0 / t);
                }
                g.write_to(m)?;
                Ok((out.loss / t, LmState::Elman(out.last_state)))
            }
            Net::Stack { rnn, decoder } => {
                for (_, p) in self.named_parameters() {
                    p.zero_grad();
                }
                let s = match state {
                    Some(LmState::Stack(s)) => Some(s),
                    _ => None,
                };
                let (loss, last) = stack_loss(rnn, decoder, x, y, s)?;
                loss.backward()?;
                Ok((loss.value().to_scalar()?, LmState::Stack(last.detach())))
            }
        }
    }

    /// Logits `[B, T, vocab]` for inputs `x` `[B, T]` and the final state, without
    /// gradients.
    pub fn logits(&self, x: &IndexTensor, state: Option<&LmState>) -> Result<(Tensor, LmState)> {
        self.check_state(state)?;
        no_grad(|| match &self.net {
            Net::Elman(m) => {
                let h0 = match state {
                    Some(LmState::Elman(h)) => Some(Var::constant(h.clone())),
                    _ => None,
                };
                let (logits, last) = m.forward(SeqInput::Ids(x), h0.as_ref())?;
                Ok((logits.value().clone(), LmState::Elman(last.value().clone())))
            }
            Net::Stack { rnn, decoder } => {
                let s = match state {
                    Some(LmState::Stack(s)) => Some(s),
                    _ => None,
                };
                let out = rnn.forward_ids(x, s)?;
                Ok((
                    decoder.forward(&out.output)?.value().clone(),
                    LmState::Stack(out.state.detach()),
                ))
            }
        })
    }

    /// Writes the model (and `extra` tensors, such as optimizer state) atomically, with
    /// the configuration and `metadata` as safetensors metadata.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        extra: &BTreeMap<String, Tensor>,
        metadata: &HashMap<String, String>,
    ) -> Result<()> {
        let mut meta = self.config.to_metadata();
        meta.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        let params = self.named_parameters();
        let values: Vec<(String, Tensor)> =
            params.iter().map(|(n, p)| (n.clone(), p.value())).collect();
        let all = values
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .chain(extra.iter().map(|(n, t)| (n.as_str(), t)));
        save_safetensors(path, all, Some(&meta))?;
        Ok(())
    }

    /// Reads a model written by [`CharLm::save`]: the model, the other tensors of the
    /// file (by name) and the metadata.
    #[allow(clippy::type_complexity)]
    pub fn load(
        path: impl AsRef<Path>,
    ) -> Result<(CharLm, BTreeMap<String, Tensor>, HashMap<String, String>)> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let meta = file.metadata()?;
        let config = CharLmConfig::from_metadata(&meta)
            .map_err(|e| input_err("CharLm::load", format!("{}: {e}", path.display())))?;
        let model = CharLm::new(config, &mut Rng::seed(0))?;
        let mut tensors = file.load_all()?;
        for (name, p) in model.named_parameters() {
            let t = tensors.remove(&name).ok_or_else(|| {
                input_err(
                    "CharLm::load",
                    format!("{}: tensor {name:?} is missing", path.display()),
                )
            })?;
            if t.shape() != p.value().shape() {
                return Err(input_err(
                    "CharLm::load",
                    format!(
                        "{}: tensor {name:?} has shape {:?}, the model expects {:?}",
                        path.display(),
                        t.shape(),
                        p.value().shape()
                    ),
                ));
            }
            p.set(t)?;
        }
        Ok((model, tensors, meta))
    }
}

fn stack_loss(
    rnn: &Recurrent,
    decoder: &Linear,
    x: &IndexTensor,
    y: &IndexTensor,
    s: Option<&State>,
) -> Result<(Var, State)> {
    let out = rnn.forward_ids(x, s)?;
    let logits = decoder.forward(&out.output)?;
    let (b, t, v) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
    if y.shape() != [b, t] {
        return Err(input_err(
            "CharLm",
            format!("expected targets [{b}, {t}], got {:?}", y.shape()),
        ));
    }
    let flat = IndexTensor::from_vec(y.data().to_vec());
    let loss = tessera_nn::cross_entropy(&logits.reshape(&[b * t, v])?, &flat, 0.0, None)?;
    Ok((loss, out.state))
}

impl Params for CharLm {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, tessera_autograd::Parameter)>) {
        match &self.net {
            Net::Elman(m) => m.collect_params(prefix, out),
            Net::Stack { rnn, decoder } => {
                let p = |n: &str| {
                    if prefix.is_empty() {
                        n.to_string()
                    } else {
                        format!("{prefix}.{n}")
                    }
                };
                rnn.collect_params(&p("rnn"), out);
                decoder.collect_params(&p("decoder"), out);
            }
        }
    }
}

/// The mean cross-entropy in nats per character of `model` on `ids`, read as `batch`
/// streams of `seq`-step chunks with the state carried across chunks (as in training).
pub fn evaluate(model: &CharLm, ids: &[usize], batch: usize, seq: usize) -> Result<f32> {
    let batches = BpttBatches::new(ids, batch, seq)?;
    let mut state = None;
    let (mut total, mut count) = (0.0f64, 0usize);
    for k in 0..batches.num_chunks() {
        let (x, y) = batches.chunk(k)?;
        let (logits, next) = model.logits(&x, state.as_ref())?;
        let v = logits.shape()[2];
        let logp = logits.reshape(&[y.numel(), v])?.log_softmax(-1)?.to_vec();
        for (i, &c) in y.data().iter().enumerate() {
            total -= f64::from(logp[i * v + c]);
        }
        count += y.numel();
        state = Some(next);
    }
    Ok((total / count as f64) as f32)
}

/// `length` characters after `prompt` (ids; at least one), each drawn from
/// `softmax(logits / temperature)` (the most likely one when `temperature` is 0).
pub fn sample(
    model: &CharLm,
    prompt: &[usize],
    length: usize,
    temperature: f32,
    rng: &mut Rng,
) -> Result<Vec<usize>> {
    if prompt.is_empty() {
        return Err(input_err(
            "sample",
            "the prompt is empty; give at least one character".into(),
        ));
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(input_err(
            "sample",
            format!("temperature {temperature} must be finite and ≥ 0"),
        ));
    }
    let x = IndexTensor::new(prompt.to_vec(), &[1, prompt.len()])?;
    let (logits, mut state) = model.logits(&x, None)?;
    let v = model.config.vocab;
    let mut last: Vec<f32> = logits.to_vec()[(prompt.len() - 1) * v..].to_vec();
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        let next = if temperature == 0.0 {
            last.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &l)| {
                    if l > bv {
                        (i, l)
                    } else {
                        (bi, bv)
                    }
                })
                .0
        } else {
            let m = last.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
            let p: Vec<f64> = last
                .iter()
                .map(|&l| f64::from((l - m) / temperature).exp())
                .collect();
            let total: f64 = p.iter().sum();
            let mut u = f64::from(rng.uniform()) * total;
            let mut pick = v - 1;
            for (i, &pi) in p.iter().enumerate() {
                if u < pi {
                    pick = i;
                    break;
                }
                u -= pi;
            }
            pick
        };
        out.push(next);
        let (logits, s) = model.logits(&IndexTensor::new(vec![next], &[1, 1])?, Some(&state))?;
        state = s;
        last = logits.to_vec();
    }
    Ok(out)
}

/// Statistics of one training step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean cross-entropy per character of the chunk (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Hyperparameters of [`TrainState`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Parallel streams per chunk.
    pub batch: usize,
    /// Steps per chunk (the truncation length).
    pub seq: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Global gradient-norm clip.
    pub clip: f32,
}

/// Everything a training run needs to continue: the model, Adam's state, the step, the
/// position in the data and the carried state. Saved to and restored from one
/// safetensors file, so a resumed run continues exactly.
pub struct TrainState {
    /// The model.
    pub model: CharLm,
    /// Hyperparameters.
    pub config: TrainConfig,
    opt: Adam,
    batches: BpttBatches,
    /// Steps taken.
    pub step: u64,
    chunk: usize,
    carry: Option<LmState>,
}

impl TrainState {
    /// A run from step 0 over `ids`.
    pub fn new(model: CharLm, ids: &[usize], config: TrainConfig) -> Result<TrainState> {
        let batches = BpttBatches::new(ids, config.batch, config.seq)?;
        Ok(TrainState {
            model,
            config,
            opt: Adam::new(config.lr),
            batches,
            step: 0,
            chunk: 0,
            carry: None,
        })
    }

    /// Chunks per pass over the data.
    pub fn chunks_per_epoch(&self) -> usize {
        self.batches.num_chunks()
    }

    /// One chunk: loss, gradients, clipping, Adam. At the end of the data the next step
    /// starts again from the first chunk with a zero state. A non-finite loss is an
    /// error and changes nothing.
    pub fn step(&mut self) -> Result<StepStats> {
        let (x, y) = self.batches.chunk(self.chunk)?;
        let (loss, next) = self.model.loss_and_grads(&x, &y, self.carry.as_ref())?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                loss,
                step: self.step,
            });
        }
        let params = self.model.named_parameters();
        let grad_norm = clip_grad_norm(&params, self.config.clip)?;
        self.opt.step(&params)?;
        self.step += 1;
        self.chunk += 1;
        if self.chunk == self.batches.num_chunks() {
            self.chunk = 0;
            self.carry = None;
        } else {
            self.carry = Some(next);
        }
        Ok(StepStats { loss, grad_norm })
    }

    /// Writes the whole run state atomically (model, `optim.*`, `train.*` tensors;
    /// configuration and `metadata` as metadata).
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let mut extra: BTreeMap<String, Tensor> = self
            .opt
            .state()
            .into_iter()
            .map(|(k, v)| (format!("optim.{k}"), v))
            .collect();
        extra.insert(
            "train.step".into(),
            Tensor::from_vec(split_u64(self.step), &[2])?,
        );
        extra.insert(
            "train.chunk".into(),
            Tensor::from_vec(split_u64(self.chunk as u64), &[2])?,
        );
        if let Some(c) = &self.carry {
            for (i, t) in c.tensors().into_iter().enumerate() {
                extra.insert(format!("train.carry.{i}"), t);
            }
        }
        let mut meta = metadata.clone();
        meta.insert("batch".into(), self.config.batch.to_string());
        meta.insert("seq".into(), self.config.seq.to_string());
        meta.insert("lr".into(), self.config.lr.to_string());
        meta.insert("clip".into(), self.config.clip.to_string());
        self.model.save(path, &extra, &meta)
    }

    /// Continues a run saved by [`TrainState::save`] over the same `ids`; the
    /// hyperparameters come from the file. Returns the state and the file's metadata.
    pub fn resume(
        path: impl AsRef<Path>,
        ids: &[usize],
    ) -> Result<(TrainState, HashMap<String, String>)> {
        let path = path.as_ref();
        let (model, mut tensors, meta) = CharLm::load(path)?;
        let bad =
            |what: &str| input_err("TrainState::resume", format!("{}: {what}", path.display()));
        let num = |k: &str| {
            meta.get(k)
                .ok_or_else(|| bad(&format!("metadata {k:?} is missing")))
        };
        let config = TrainConfig {
            batch: num("batch")?.parse().map_err(|_| bad("bad batch"))?,
            seq: num("seq")?.parse().map_err(|_| bad("bad seq"))?,
            lr: num("lr")?.parse().map_err(|_| bad("bad lr"))?,
            clip: num("clip")?.parse().map_err(|_| bad("bad clip"))?,
        };
        let mut counter = |k: &str| -> Result<u64> {
            let t = tensors.remove(k).ok_or_else(|| {
                bad(&format!(
                    "tensor {k:?} is missing: not a training checkpoint"
                ))
            })?;
            join_u64(&t.to_vec()).ok_or_else(|| bad(&format!("tensor {k:?} is malformed")))
        };
        let step = counter("train.step")?;
        let chunk = counter("train.chunk")? as usize;
        let carry_t: Vec<Tensor> = (0..2)
            .filter_map(|i| tensors.remove(&format!("train.carry.{i}")))
            .collect();
        let carry = match (model.config.cell, carry_t.len()) {
            (_, 0) => None,
            (Cell::Elman, 1) => Some(LmState::Elman(carry_t[0].clone())),
            (Cell::Lstm, 2) => Some(LmState::Stack(State::Lstm {
                h: Var::constant(carry_t[0].clone()),
                c: Var::constant(carry_t[1].clone()),
            })),
            (Cell::Rnn | Cell::Gru, 1) => Some(LmState::Stack(State::Hidden(Var::constant(
                carry_t[0].clone(),
            )))),
            _ => return Err(bad("the carried state does not fit the model")),
        };
        let optim: BTreeMap<String, Tensor> = tensors
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("optim.").map(|s| (s.to_string(), v)))
            .collect();
        let mut opt = Adam::new(config.lr);
        opt.load_state(&optim)?;
        let batches = BpttBatches::new(ids, config.batch, config.seq)?;
        if chunk >= batches.num_chunks() {
            return Err(bad(&format!(
                "data position {chunk} is beyond the {} chunks of this text",
                batches.num_chunks()
            )));
        }
        Ok((
            TrainState {
                model,
                config,
                opt,
                batches,
                step,
                chunk,
                carry,
            },
            meta,
        ))
    }
}

/// A counter as two exactly representable f32 halves (safetensors holds f32 here).
fn split_u64(v: u64) -> Vec<f32> {
    vec![(v >> 20) as f32, (v & 0xF_FFFF) as f32]
}

fn join_u64(v: &[f32]) -> Option<u64> {
    match v {
        [hi, lo] if *hi >= 0.0 && *lo >= 0.0 && hi.fract() == 0.0 && lo.fract() == 0.0 => {
            Some(((*hi as u64) << 20) | *lo as u64)
        }
        _ => None,
    }
}
