//! Training a [`CharLm`] by truncated backpropagation through time: the state is carried
//! from one chunk to the next and cut from its history at the boundary (char-rnn's
//! recipe), the objective is the mean cross-entropy per character, the update Adam after
//! global gradient-norm clipping.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_autograd::Var;
use tessera_data::BpttBatches;
use tessera_nn::{get_json, put_json, Params, TrainProgress, CONFIG_KEY, TRAIN_STATE_KEY};
use tessera_optim::{
    all_reduce_gradients, check_loss, clip_grad_norm, clip_limit, shard, sum_over_ranks, Adam,
    Communicator, Local, Optimizer,
};
use tessera_tensor::{IndexTensor, Tensor};

use crate::charlm::{Cell, CharLm, CharLmConfig, LmState};
use crate::recurrent::State;
use crate::{Error, Result};

/// Statistics of one training step.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean cross-entropy per character of the chunk (before the update).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Hyperparameters of [`TrainState`]; a training checkpoint keeps them in its `config`
/// entry, under `train`, beside the [`CharLmConfig`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Parallel streams per chunk.
    pub batch: usize,
    /// Steps per chunk (the truncation length).
    pub seq: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Global gradient-norm clip (0: no clipping).
    pub clip: f32,
}

/// The `config` entry of a checkpoint: the model's configuration, and the training
/// settings where the file is a training checkpoint
/// (`{"cell":"lstm","vocab":65,"hidden":512,"layers":1,"train":{"batch":32,...}}`).
#[derive(Serialize, Deserialize)]
struct SavedConfig {
    #[serde(flatten)]
    model: CharLmConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    train: Option<TrainConfig>,
}

/// Everything a training run needs to continue: the model, Adam's state, the step, the
/// position in the data and the carried state. Saved to and restored from one
/// safetensors file, so a resumed run continues exactly.
///
/// ```
/// use std::collections::HashMap;
/// use tessera_rnn::{Cell, CharLm, CharLmConfig, TrainConfig, TrainState};
/// use tessera_tensor::Rng;
/// let model = CharLm::new(CharLmConfig { cell: Cell::Elman, vocab: 3, hidden: 4, layers: 1 }, &mut Rng::seed(0))?;
/// let ids: Vec<usize> = (0..100).map(|i| i % 3).collect();
/// let config = TrainConfig { batch: 2, seq: 8, lr: 1e-2, clip: 5.0 };
/// let mut run = TrainState::new(model, &ids, config)?;
/// let first = run.step()?.loss;
/// for _ in 0..30 {
///     run.step()?;
/// }
/// assert!(run.step()?.loss < first);
/// // 32 steps over 6 chunks a pass: 5 passes done, 2 chunks into the sixth.
/// assert_eq!((run.progress().step, run.progress().epoch, run.progress().position), (32, 5, 2));
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("run.safetensors");
/// run.save(&path, &HashMap::new())?;
/// let (resumed, _) = TrainState::resume(&path, &ids)?;
/// assert_eq!(resumed.progress(), run.progress());
/// # Ok::<(), tessera_rnn::Error>(())
/// ```
#[derive(Debug)]
pub struct TrainState {
    /// The model.
    pub model: CharLm,
    /// Hyperparameters.
    pub config: TrainConfig,
    opt: Adam,
    batches: BpttBatches,
    /// Steps taken.
    pub step: u64,
    epoch: u64,
    chunk: usize,
    carry: Option<LmState>,
}

impl TrainState {
    /// Sets the learning rate of the steps to come (a resumed run that continues with
    /// another rate); the checkpoint records it.
    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
        self.opt.set_lr(lr);
    }

    /// A run from step 0 over `ids`.
    pub fn new(model: CharLm, ids: &[usize], config: TrainConfig) -> Result<TrainState> {
        let batches = BpttBatches::new(ids, config.batch, config.seq)?;
        Ok(TrainState {
            model,
            config,
            opt: Adam::new(config.lr),
            batches,
            step: 0,
            epoch: 0,
            chunk: 0,
            carry: None,
        })
    }

    /// Chunks per pass over the data.
    pub fn chunks_per_epoch(&self) -> usize {
        self.batches.num_chunks()
    }

    /// Where the run stands: steps taken, passes completed, chunks taken in this pass
    /// (the `train_state` entry of a checkpoint).
    pub fn progress(&self) -> TrainProgress {
        TrainProgress {
            step: self.step,
            epoch: self.epoch,
            position: self.chunk as u64,
            rng: None,
        }
    }

    /// One chunk: loss, gradients, clipping, Adam. At the end of the data the next step
    /// starts again from the first chunk with a zero state. A non-finite loss is
    /// [`tessera_optim::Error::NonFiniteLoss`] and changes nothing.
    pub fn step(&mut self) -> Result<StepStats> {
        self.step_with(&Local)
    }

    /// [`TrainState::step`] as one rank of a data-parallel run over `comm`: this rank
    /// takes streams `rank`, `rank + size`, ... of the chunk ([`shard`]), the
    /// gradients are averaged over all streams of all ranks before clipping, and the
    /// carried state is gathered whole again after the step, so every rank holds (and
    /// a checkpoint saves) the state of all streams. The loss is the mean over all
    /// streams. With [`Local`] this is [`TrainState::step`].
    pub fn step_with(&mut self, comm: &dyn Communicator) -> Result<StepStats> {
        let (x, y) = self.batches.chunk(self.chunk)?;
        let (rank, size) = (comm.rank(), comm.size());
        let (loss, next, streams) = if size == 1 {
            let (loss, next) = self.model.loss_and_grads(&x, &y, self.carry.as_ref())?;
            (loss, next, self.config.batch)
        } else {
            let all: Vec<usize> = (0..self.config.batch).collect();
            let rows = shard(&all, rank, size);
            let carry = match &self.carry {
                Some(c) => Some(map_state(c, |t, axis| Ok(t.index_select(axis, &rows)?))?),
                None => None,
            };
            let (x, y) = (select_rows(&x, &rows)?, select_rows(&y, &rows)?);
            let (loss, next) = self.model.loss_and_grads(&x, &y, carry.as_ref())?;
            // The whole state again: each rank's streams in place, summed over ranks.
            let whole = map_state(&next, |t, axis| {
                let mut shape = t.shape().to_vec();
                shape[axis] = self.config.batch;
                let mut v = Tensor::zeros(&shape).index_add(axis, &rows, t)?.to_vec();
                comm.all_reduce_sum(&mut v)?;
                Ok(Tensor::from_vec(v, &shape)?)
            })?;
            (loss, whole, rows.len())
        };
        let [n, sum] = sum_over_ranks(comm, [streams as f64, f64::from(loss) * streams as f64])?;
        let loss = if size == 1 { loss } else { (sum / n) as f32 };
        check_loss(loss, self.step)?;
        let params = self.model.named_parameters();
        all_reduce_gradients(comm, &params, (streams as f64 / n) as f32)?;
        let grad_norm = clip_grad_norm(&params, clip_limit(self.config.clip))?;
        self.opt.step(&params)?;
        self.step += 1;
        self.chunk += 1;
        if self.chunk == self.batches.num_chunks() {
            self.chunk = 0;
            self.epoch += 1;
            self.carry = None;
        } else {
            self.carry = Some(next);
        }
        Ok(StepStats { loss, grad_norm })
    }

    /// Writes the whole run state atomically: the model, Adam's state (`optim.*`) and
    /// the carried state (`train.carry.0`, `train.carry.1`) as tensors; as metadata the
    /// caller's `metadata`, then `model`, `config` (the model's configuration and, under
    /// `train`, the [`TrainConfig`]) and `train_state` (the [`TrainProgress`]), as JSON.
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let mut extra: BTreeMap<String, Tensor> = self.opt.checkpoint_state().into_iter().collect();
        if let Some(c) = &self.carry {
            for (i, t) in c.tensors().into_iter().enumerate() {
                extra.insert(format!("train.carry.{i}"), t);
            }
        }
        let config = SavedConfig {
            model: *self.model.config(),
            train: Some(self.config),
        };
        let mut meta = self.model.metadata(&config, metadata)?;
        put_json(&mut meta, TRAIN_STATE_KEY, &self.progress())?;
        self.model.write(path.as_ref(), &extra, &meta)
    }

    /// Continues a run saved by [`TrainState::save`] over the same `ids`; the
    /// hyperparameters come from the file. Returns the state and the file's metadata.
    pub fn resume(
        path: impl AsRef<Path>,
        ids: &[usize],
    ) -> Result<(TrainState, HashMap<String, String>)> {
        let path = path.as_ref();
        let (model, mut tensors, meta) = CharLm::load(path)?;
        let saved: SavedConfig = get_json(&meta, CONFIG_KEY, path)?;
        let config = saved.train.ok_or_else(|| tessera_nn::Error::Metadata {
            path: path.to_path_buf(),
            key: CONFIG_KEY.to_string(),
            reason: "no training settings: a model file, not a training checkpoint".into(),
        })?;
        let progress: TrainProgress = get_json(&meta, TRAIN_STATE_KEY, path)?;
        let carry_t: Vec<Tensor> = (0..2)
            .filter_map(|i| tensors.remove(&format!("train.carry.{i}")))
            .collect();
        let cell = model.config().cell;
        let wanted = if cell == Cell::Lstm { 2 } else { 1 };
        let carry = match carry_t.len() {
            0 => None,
            n if n != wanted => {
                return Err(Error::Carry {
                    path: path.to_path_buf(),
                    cell: cell.name(),
                    expected: wanted,
                    got: n,
                })
            }
            _ => Some(match cell {
                Cell::Elman => LmState::Elman(carry_t[0].clone()),
                Cell::Lstm => LmState::Stack(State::Lstm {
                    h: Var::constant(carry_t[0].clone()),
                    c: Var::constant(carry_t[1].clone()),
                }),
                Cell::Rnn | Cell::Gru => {
                    LmState::Stack(State::Hidden(Var::constant(carry_t[0].clone())))
                }
            }),
        };
        let mut opt = Adam::new(config.lr);
        opt.load_checkpoint_state(&tessera_tensor::SafeTensorsFile::open(path)?)?;
        let batches = BpttBatches::new(ids, config.batch, config.seq)?;
        let chunk = progress.position_within(path, batches.num_chunks(), "chunks")?;
        Ok((
            TrainState {
                model,
                config,
                opt,
                batches,
                step: progress.step,
                epoch: progress.epoch,
                chunk,
                carry,
            },
            meta,
        ))
    }
}

/// Rows `rows` of ids `[B, T]`.
pub(crate) fn select_rows(ids: &IndexTensor, rows: &[usize]) -> Result<IndexTensor> {
    let t = ids.shape().get(1).copied().unwrap_or(1);
    let data = ids.data();
    let picked = rows
        .iter()
        .flat_map(|&r| data[r * t..(r + 1) * t].iter().copied())
        .collect();
    Ok(IndexTensor::new(picked, &[rows.len(), t]).map_err(tessera_nn::Error::from)?)
}

/// `state` with `f(tensor, batch axis)` applied to each of its tensors: the Elman
/// state is `[B, d]`, a stack's `[layers, B, H]`.
fn map_state(
    state: &LmState,
    f: impl Fn(&Tensor, usize) -> tessera_optim::Result<Tensor>,
) -> Result<LmState> {
    Ok(match state {
        LmState::Elman(h) => LmState::Elman(f(h, 0)?),
        LmState::Stack(State::Hidden(h)) => {
            LmState::Stack(State::Hidden(Var::constant(f(h.value(), 1)?)))
        }
        LmState::Stack(State::Lstm { h, c }) => LmState::Stack(State::Lstm {
            h: Var::constant(f(h.value(), 1)?),
            c: Var::constant(f(c.value(), 1)?),
        }),
    })
}
