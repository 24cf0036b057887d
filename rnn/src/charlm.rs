//! A character language model: the Elman network or a [`Recurrent`] stack with a
//! linear decoder (char-rnn: A. Karpathy, "The Unreasonable Effectiveness of Recurrent
//! Neural Networks", 2015; A. Graves, "Generating Sequences With Recurrent Neural
//! Networks", 2013), evaluated in nats per character and sampled with a temperature.
//! Its training by truncated backpropagation through time is [`crate::TrainState`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_autograd::{no_grad, Var};
use tessera_data::{BpttBatches, CharVocab};
use tessera_nn::{get_json, put_json, Linear, Module, Params, VarBuilder, VarMap, CONFIG_KEY};
use tessera_optim::{shard, sum_over_ranks, Communicator, Local};
use tessera_tensor::{save_safetensors, IndexTensor, Rng, SafeTensorsFile, Tensor};

use crate::elman::{Elman, SeqInput};
use crate::recurrent::{Mode, Recurrent, RecurrentConfig, State};
use crate::train::select_rows;
use crate::{build_with_rng, sequence_cross_entropy, Error, Result};

/// The `model` metadata entry of a character language model checkpoint, the tag that
/// says what kind of file it is.
pub const MODEL_TAG: &str = "tessera-rnn/charlm";

/// The metadata key of the character vocabulary a model was trained with (its
/// characters in index order, [`CharVocab::as_string`]).
pub const VOCAB_KEY: &str = "vocab";

/// The character vocabulary kept in the metadata `meta` of the checkpoint `path`.
///
/// ```
/// use std::collections::HashMap;
/// use tessera_rnn::{read_vocab, VOCAB_KEY};
/// let meta = HashMap::from([(VOCAB_KEY.to_string(), "ab".to_string())]);
/// assert_eq!(read_vocab(&meta, "m.safetensors")?.len(), 2);
/// assert!(read_vocab(&HashMap::new(), "m.safetensors").is_err());
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
pub fn read_vocab(meta: &HashMap<String, String>, path: impl AsRef<Path>) -> Result<CharVocab> {
    let chars = tessera_nn::get_entry(meta, VOCAB_KEY, path.as_ref(), "character vocabulary")?;
    Ok(CharVocab::from_chars(chars)?)
}

/// The recurrent cell of a [`CharLm`] (serialised in lower case: `"lstm"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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

    /// A cell by its name, in any case.
    fn from_str(s: &str) -> Result<Cell> {
        match s.to_ascii_lowercase().as_str() {
            "elman" => Ok(Cell::Elman),
            "rnn" => Ok(Cell::Rnn),
            "lstm" => Ok(Cell::Lstm),
            "gru" => Ok(Cell::Gru),
            _ => Err(Error::UnknownCell {
                name: s.to_string(),
            }),
        }
    }
}

/// The shape of a [`CharLm`]; a checkpoint keeps it as the JSON of its `config` entry.
///
/// ```
/// use tessera_rnn::{Cell, CharLmConfig};
/// let config = CharLmConfig { cell: Cell::Lstm, vocab: 65, hidden: 512, layers: 1 };
/// let json = serde_json::to_string(&config).unwrap();
/// assert_eq!(json, r#"{"cell":"lstm","vocab":65,"hidden":512,"layers":1}"#);
/// assert_eq!(serde_json::from_str::<CharLmConfig>(&json).unwrap(), config);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// `W`, `U`, `b_s`, `V`, `b_y`: the notes' network, its own decoder.
    Elman(Elman),
    /// `rnn.weight_ih_l0`, ..., `decoder.weight`, `decoder.bias`.
    Stack { rnn: Recurrent, decoder: Linear },
}

/// A character language model: the [`Elman`] network, or a [`Recurrent`] stack (`rnn`)
/// with a linear decoder (`decoder`) from its state to the next character's logits
/// (char-rnn: A. Karpathy, "The Unreasonable Effectiveness of Recurrent Neural
/// Networks", 2015; A. Graves, "Generating Sequences With Recurrent Neural Networks",
/// 2013).
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
    vars: VarMap,
}

impl CharLm {
    /// A freshly initialised model in a store of its own, drawn from `rng`.
    pub fn new(config: CharLmConfig, rng: &mut Rng) -> Result<CharLm> {
        build_with_rng(rng, |vb| CharLm::build(vb, config))
    }

    /// The model's parameters created at `vb`'s path: the Elman network's `W`, `U`,
    /// `b_s`, `V`, `b_y`, or `rnn.*` (PyTorch's names) and `decoder.weight`,
    /// `decoder.bias`.
    pub fn build(vb: &VarBuilder, config: CharLmConfig) -> Result<CharLm> {
        const OP: &str = "CharLm";
        for (name, value) in [
            ("vocab", config.vocab),
            ("hidden", config.hidden),
            ("layers", config.layers),
        ] {
            if value == 0 {
                return Err(Error::setting(OP, name, value, "at least 1"));
            }
        }
        let net = match config.cell {
            Cell::Elman => {
                if config.layers != 1 {
                    return Err(Error::setting(
                        OP,
                        "layers",
                        config.layers,
                        "1: the Elman network has one layer",
                    ));
                }
                Net::Elman(Elman::build(vb, config.vocab, config.hidden, config.vocab)?)
            }
            cell => {
                let mode = match cell {
                    Cell::Lstm => Mode::Lstm,
                    Cell::Gru => Mode::Gru,
                    _ => Mode::RnnTanh,
                };
                let rc = RecurrentConfig {
                    num_layers: config.layers,
                    batch_first: true,
                    ..RecurrentConfig::new(mode, config.vocab, config.hidden)
                };
                Net::Stack {
                    rnn: Recurrent::build(&vb.pp("rnn"), rc)?,
                    decoder: Linear::new(&vb.pp("decoder"), config.hidden, config.vocab, true)?,
                }
            }
        };
        Ok(CharLm {
            config,
            net,
            vars: vb.vars().clone(),
        })
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
            (Net::Elman(_), Some(_)) => Err(Error::StateKind {
                op: "CharLm",
                expected: "the Elman network's state",
                got: "a recurrent stack's state",
            }),
            (Net::Stack { .. }, Some(_)) => Err(Error::StateKind {
                op: "CharLm",
                expected: "a recurrent stack's state",
                got: "the Elman network's state",
            }),
        }
    }

    /// The mean cross-entropy per character of targets `y` given inputs `x`, with its
    /// gradients stored in the parameters (replacing earlier ones), and the final state,
    /// detached: the start of the next chunk.
    ///
    /// # Shapes
    /// `x`, `y`: character ids `[B, T]` -> (loss, state for a batch of `B`).
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
                let out = rnn.forward_ids(x, s)?;
                let logits = decoder.forward(&out.output)?;
                let loss = sequence_cross_entropy("CharLm", &logits, y)?;
                loss.backward()?;
                Ok((
                    loss.value().to_scalar()?,
                    LmState::Stack(out.state.detach()),
                ))
            }
        }
    }

    /// Logits for inputs `x` and the final state, without gradients.
    ///
    /// # Shapes
    /// `x`: character ids `[B, T]` -> (logits `[B, T, vocab]`, state for a batch of `B`).
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

    /// Writes the model (and `extra` tensors) atomically. The metadata holds the
    /// caller's `metadata` (a vocabulary, a text source, ...), then the model's own
    /// entries, which win over the caller's: `model` ([`MODEL_TAG`]) and `config` (the
    /// [`CharLmConfig`] as JSON).
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        extra: &BTreeMap<String, Tensor>,
        metadata: &HashMap<String, String>,
    ) -> Result<()> {
        let meta = self.metadata(&self.config, metadata)?;
        self.write(path.as_ref(), extra, &meta)
    }

    /// `metadata`, then `model` and `config` (`config` as JSON).
    pub(crate) fn metadata(
        &self,
        config: &impl Serialize,
        metadata: &HashMap<String, String>,
    ) -> Result<HashMap<String, String>> {
        let mut meta = metadata.clone();
        meta.insert("model".to_string(), MODEL_TAG.to_string());
        put_json(&mut meta, CONFIG_KEY, config)?;
        Ok(meta)
    }

    /// Writes the parameters and `extra` atomically with `meta`.
    pub(crate) fn write(
        &self,
        path: &Path,
        extra: &BTreeMap<String, Tensor>,
        meta: &HashMap<String, String>,
    ) -> Result<()> {
        let values = self.vars.tensors();
        let all = values
            .iter()
            .map(|(n, t)| (n.as_str(), t))
            .chain(extra.iter().map(|(n, t)| (n.as_str(), t)));
        save_safetensors(path, all, Some(meta))?;
        Ok(())
    }

    /// Reads a model written by [`CharLm::save`] (or a training checkpoint): the model,
    /// the other tensors of the file (by name) and the metadata. The model is built
    /// without random draws and filled from the file; a missing parameter or a shape
    /// that does not fit is an error that lists them all. A file of an earlier version
    /// of tessera, with its settings as separate entries instead of one `config`, is an
    /// error that says so.
    #[allow(clippy::type_complexity)]
    pub fn load(
        path: impl AsRef<Path>,
    ) -> Result<(CharLm, BTreeMap<String, Tensor>, HashMap<String, String>)> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let meta = file.metadata()?;
        if meta.get("model").map(String::as_str) != Some(MODEL_TAG) {
            return Err(Error::NotCharLm {
                path: path.to_path_buf(),
                model: meta.get("model").cloned(),
            });
        }
        let config: CharLmConfig = get_json(&meta, CONFIG_KEY, path)?;
        // No larger than the file can fill: the configuration comes from the file too.
        let model = CharLm::build(&VarBuilder::zeros_for(&VarMap::new(), &file), config)?;
        let mut report = model.vars.load(path, false)?;
        // The file's other tensors (optimizer state, carried state) are the extras.
        let extra = std::mem::take(&mut report.unexpected);
        if !report.is_clean() {
            return Err(tessera_nn::Error::Checkpoint {
                path: path.to_path_buf(),
                report,
            }
            .into());
        }
        let extra = extra
            .into_iter()
            .map(|name| Ok((name.clone(), file.get(&name)?)))
            .collect::<Result<_>>()?;
        Ok((model, extra, meta))
    }
}

impl Params for CharLm {
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}

/// The mean cross-entropy in nats per character of `model` on `ids`, read as `batch`
/// streams of `seq`-step chunks with the state carried across chunks (as in training).
///
/// ```
/// use tessera_rnn::{evaluate, Cell, CharLm, CharLmConfig};
/// use tessera_tensor::Rng;
/// let config = CharLmConfig { cell: Cell::Gru, vocab: 4, hidden: 8, layers: 1 };
/// let lm = CharLm::new(config, &mut Rng::seed(0))?;
/// let ids: Vec<usize> = (0..200).map(|i| i % 4).collect();
/// // Untrained: close to ln 4 nats per character.
/// assert!((evaluate(&lm, &ids, 4, 10)? - 4f32.ln()).abs() < 0.2);
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
pub fn evaluate(model: &CharLm, ids: &[usize], batch: usize, seq: usize) -> Result<f32> {
    evaluate_with(model, ids, batch, seq, &Local)
}

/// [`evaluate`] shared between the ranks of `comm` (data-parallel evaluation): rank
/// `r` reads streams `r`, `r + R`, ... (with fewer streams than ranks, the last ranks
/// read none), and the sums of the losses and of the characters are added over the
/// ranks, so every rank gets the mean over all streams: [`evaluate`]'s figure, up to
/// the order of the sums.
pub fn evaluate_with(
    model: &CharLm,
    ids: &[usize],
    batch: usize,
    seq: usize,
    comm: &dyn Communicator,
) -> Result<f32> {
    let batches = BpttBatches::new(ids, batch, seq)?;
    let rows = shard(
        &(0..batch).collect::<Vec<usize>>(),
        comm.rank(),
        comm.size(),
    );
    let mut state = None;
    let (mut total, mut count) = (0.0f64, 0usize);
    // A rank without streams reads no chunk, but still takes part in the sum.
    let chunks = if rows.is_empty() {
        0
    } else {
        batches.num_chunks()
    };
    for k in 0..chunks {
        let (x, y) = batches.chunk(k)?;
        let (x, y) = if rows.len() == batch {
            (x, y)
        } else {
            (select_rows(&x, &rows)?, select_rows(&y, &rows)?)
        };
        let (logits, next) = model.logits(&x, state.as_ref())?;
        let v = logits.shape()[2];
        let logp = logits.reshape(&[y.numel(), v])?.log_softmax(-1)?.to_vec();
        for (i, &c) in y.data().iter().enumerate() {
            total -= f64::from(logp[i * v + c]);
        }
        count += y.numel();
        state = Some(next);
    }
    let [total, count] = sum_over_ranks(comm, [total, count as f64])?;
    Ok((total / count) as f32)
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
        return Err(Error::setting(
            "sample",
            "prompt",
            "[]",
            "at least one character",
        ));
    }
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(Error::setting(
            "sample",
            "temperature",
            temperature,
            "finite and ≥ 0",
        ));
    }
    let x = IndexTensor::new(prompt.to_vec(), &[1, prompt.len()])?;
    let (logits, mut state) = model.logits(&x, None)?;
    let v = model.config.vocab;
    let mut last: Vec<f32> = logits.to_vec()[(prompt.len() - 1) * v..].to_vec();
    let mut out = Vec::with_capacity(length);
    for _ in 0..length {
        let next = if temperature == 0.0 {
            Tensor::from_vec(last.clone(), &[v])?
                .argmax(0, false)?
                .data()[0]
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
