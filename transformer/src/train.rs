//! Training a translation model as the paper does: batches by token count, Adam
//! (0.9, 0.98, 1e-9) with the warmup schedule, label smoothing; evaluation, checkpoints
//! that resume exactly, and averaging of the last checkpoints.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_autograd::no_grad;
use tessera_data::{pad_sequences, token_batches};
use tessera_nn::{get_json, put_json, Params, TrainProgress, TRAIN_STATE_KEY};
use tessera_optim::{
    check_loss, schedule, shard, sum_over_ranks, Adam, Communicator, GradientReducer, Local,
    Optimizer,
};
use tessera_tensor::{IndexTensor, Rng, SafeTensorsFile};

use crate::checkpoint::{load_model, read_config, CheckpointConfig, SpecialIds};
use crate::{Error, Result, Transformer};

/// Source and target token ids of sentence pairs (without `bos`/`eos`), and the special
/// ids the model uses around them.
#[derive(Clone, Debug)]
pub struct Corpus {
    /// `(source, target)` ids.
    pub pairs: Vec<(Vec<usize>, Vec<usize>)>,
    /// Begin-of-sequence id (first target input).
    pub bos: usize,
    /// End-of-sequence id (ends sources and targets).
    pub eos: usize,
    /// Padding id.
    pub pad: usize,
}

#[cfg(feature = "bpe")]
impl Corpus {
    /// Sentence pairs encoded by `bpe`, keeping the pairs whose source and target are not
    /// empty and leave room for `bos`/`eos` within `max_len` positions.
    pub fn encode(
        bpe: &tessera_data::Bpe,
        pairs: &[(String, String)],
        max_len: usize,
    ) -> Result<Corpus> {
        let mut out = Vec::with_capacity(pairs.len());
        for (s, t) in pairs {
            let (s, t) = (bpe.encode(s)?, bpe.encode(t)?);
            if s.len() < max_len && t.len() < max_len && !s.is_empty() && !t.is_empty() {
                out.push((s, t));
            }
        }
        Ok(Corpus {
            pairs: out,
            bos: bpe.bos(),
            eos: bpe.eos(),
            pad: bpe.pad(),
        })
    }
}

/// One batch: source `[B, S]` (ids then `eos`), target input `[B, T]` (`bos` then ids)
/// and target output `[B, T]` (ids then `eos`), padded.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, S]`.
    pub src: IndexTensor,
    /// `[B, T]`.
    pub tgt_in: IndexTensor,
    /// `[B, T]`.
    pub tgt_out: IndexTensor,
    /// Non-padding target tokens.
    pub target_tokens: usize,
}

impl Corpus {
    /// The batch of pairs `indices`.
    pub fn batch(&self, indices: &[usize]) -> Result<Batch> {
        let src: Vec<&[usize]> = indices
            .iter()
            .map(|&i| self.pairs[i].0.as_slice())
            .collect();
        let tgt: Vec<&[usize]> = indices
            .iter()
            .map(|&i| self.pairs[i].1.as_slice())
            .collect();
        Ok(Batch {
            src: pad_sequences(&src, &[], &[self.eos], self.pad)?,
            tgt_in: pad_sequences(&tgt, &[self.bos], &[], self.pad)?,
            tgt_out: pad_sequences(&tgt, &[], &[self.eos], self.pad)?,
            target_tokens: tgt.iter().map(|t| t.len() + 1).sum(),
        })
    }

    /// `(source + 1, target + 1)` lengths, as batched.
    fn lengths(&self) -> Vec<(usize, usize)> {
        self.pairs
            .iter()
            .map(|(s, t)| (s.len() + 1, t.len() + 1))
            .collect()
    }
}

/// Hyperparameters of a [`Trainer`]: data, serialised as the `train` part of a training
/// checkpoint's `config` entry ([`CheckpointConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Padded source + target tokens per batch (the paper: about 50,000).
    pub max_tokens: usize,
    /// Warmup steps of the schedule (the paper: 4000).
    pub warmup: u64,
    /// Factor on the schedule `d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`.
    pub lr_factor: f64,
    /// Seed of the batch order (each epoch reshuffles from it).
    pub seed: u64,
}

/// What one [`Trainer::step`] reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The label-smoothed loss of the batch.
    pub loss: f32,
    /// Non-padding target tokens in the batch.
    pub target_tokens: usize,
    /// The learning rate used.
    pub lr: f64,
}

/// A training run: the model, Adam's state, the step, the epoch and position in it.
pub struct Trainer {
    /// The model.
    pub model: Transformer,
    /// Hyperparameters.
    pub config: TrainConfig,
    corpus: Corpus,
    opt: Adam,
    /// Steps taken.
    pub step: u64,
    /// Completed passes over the data.
    pub epoch: u64,
    position: usize,
    batches: Vec<Vec<usize>>,
}

impl Trainer {
    /// A run from step 0.
    pub fn new(model: Transformer, corpus: Corpus, config: TrainConfig) -> Result<Trainer> {
        let batches = epoch_batches(&corpus, &config, 0)?;
        Ok(Trainer {
            model,
            config,
            corpus,
            opt: Adam::transformer(0.0),
            step: 0,
            epoch: 0,
            position: 0,
            batches,
        })
    }

    /// Batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches.len()
    }

    /// One batch: loss, gradients, the scheduled learning rate, Adam. A non-finite loss
    /// is an error ([`tessera_optim::Error::NonFiniteLoss`], as [`Error::Optim`]) and
    /// changes nothing.
    pub fn step(&mut self) -> Result<StepStats> {
        self.step_with(&Local)
    }

    /// [`Trainer::step`] as one rank of a data-parallel run over `comm`: this rank
    /// takes sentence pairs `rank`, `rank + size`, ... of the batch ([`shard`]; none
    /// when the batch has fewer pairs than ranks), the gradients are averaged over the
    /// target tokens of all ranks, and the loss and token count of the returned stats
    /// are those of the whole batch. With [`Local`] this is [`Trainer::step`].
    pub fn step_with(&mut self, comm: &dyn Communicator) -> Result<StepStats> {
        let mine = shard(&self.batches[self.position], comm.rank(), comm.size());
        let params = self.model.named_parameters();
        for (_, p) in &params {
            p.zero_grad();
        }
        let pad = Some(self.corpus.pad);
        let (loss, value, tokens) = if mine.is_empty() {
            (None, 0.0, 0)
        } else {
            let batch = self.corpus.batch(&mine)?;
            let loss = self
                .model
                .loss(&batch.src, &batch.tgt_in, &batch.tgt_out, pad, true)?;
            let value = loss.value().to_scalar()?;
            (Some(loss), value, batch.target_tokens)
        };
        let tf = tokens as f64;
        let [n, sum] = sum_over_ranks(comm, [tf, f64::from(value) * tf])?;
        let value = if comm.size() == 1 {
            value
        } else {
            (sum / n) as f32
        };
        check_loss(value, self.step)?;
        let reducer = GradientReducer::new(comm, &params, (tf / n) as f32);
        match loss {
            Some(loss) => reducer.backward(&loss)?,
            None => reducer.finish()?,
        }
        let lr = self.config.lr_factor
            * schedule::transformer(
                self.step + 1,
                self.model.config().d_model,
                self.config.warmup,
            );
        self.opt.set_lr(lr);
        self.opt.step(&params)?;
        self.step += 1;
        self.position += 1;
        if self.position == self.batches.len() {
            self.epoch += 1;
            self.position = 0;
            self.batches = epoch_batches(&self.corpus, &self.config, self.epoch)?;
        }
        Ok(StepStats {
            loss: value,
            target_tokens: n as usize,
            lr,
        })
    }

    /// Writes the run atomically: the model's parameters and the optimizer's state
    /// (`optim.*`) as tensors; the kind tag, one `config` entry (model, hyperparameters,
    /// special ids), one `train_state` entry (step, epoch, position, dropout generator)
    /// and the caller's `metadata` as metadata.
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let config = CheckpointConfig {
            model: *self.model.config(),
            train: Some(self.config),
            ids: Some(SpecialIds {
                bos: self.corpus.bos,
                eos: self.corpus.eos,
                pad: self.corpus.pad,
            }),
        };
        let mut meta = config.metadata(metadata)?;
        let progress = TrainProgress {
            step: self.step,
            epoch: self.epoch,
            position: self.position as u64,
            rng: Some(self.model.rng_state()),
        };
        put_json(&mut meta, TRAIN_STATE_KEY, &progress)?;
        let state = self.opt.checkpoint_state();
        Ok(self.model.vars().save_with(path, state, Some(&meta))?)
    }

    /// Continues a run saved by [`Trainer::save`] on the same corpus; returns it with the
    /// file's metadata.
    pub fn resume(
        path: impl AsRef<Path>,
        corpus: Corpus,
    ) -> Result<(Trainer, HashMap<String, String>)> {
        let path = path.as_ref();
        let (saved, _) = read_config(path)?;
        let not_training = |missing| Error::NotTraining {
            path: path.to_path_buf(),
            missing,
        };
        let config = saved.train.ok_or_else(|| not_training("config.train"))?;
        let (model, meta) = load_model(path)?;
        if !meta.contains_key(TRAIN_STATE_KEY) {
            return Err(not_training(TRAIN_STATE_KEY));
        }
        let progress: TrainProgress = get_json(&meta, TRAIN_STATE_KEY, path)?;
        if let Some(rng) = progress.rng {
            model.set_rng_state(rng);
        }
        let mut opt = Adam::transformer(0.0);
        opt.load_checkpoint_state(&SafeTensorsFile::open(path)?)?;
        let batches = epoch_batches(&corpus, &config, progress.epoch)?;
        let position = progress.position_within(path, batches.len(), "batches")?;
        Ok((
            Trainer {
                model,
                config,
                corpus,
                opt,
                step: progress.step,
                epoch: progress.epoch,
                position,
                batches,
            },
            meta,
        ))
    }
}

fn epoch_batches(corpus: &Corpus, config: &TrainConfig, epoch: u64) -> Result<Vec<Vec<usize>>> {
    let mut rng = Rng::seed(
        config
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(epoch),
    );
    Ok(token_batches(
        &corpus.lengths(),
        config.max_tokens,
        &mut rng,
    )?)
}

/// The mean cross-entropy (no smoothing) per target token of `model` on `corpus`.
pub fn evaluate_loss(model: &Transformer, corpus: &Corpus, max_tokens: usize) -> Result<f32> {
    evaluate_loss_with(model, corpus, max_tokens, &Local)
}

/// [`evaluate_loss`] shared between the ranks of `comm` (data-parallel evaluation):
/// rank `r` takes batches `r`, `r + R`, ... of the same batching, and the sums of the
/// losses and of the target tokens are added over the ranks, so every rank gets the
/// mean over the whole corpus: [`evaluate_loss`]'s figure, up to the order of the sums.
pub fn evaluate_loss_with(
    model: &Transformer,
    corpus: &Corpus,
    max_tokens: usize,
    comm: &dyn Communicator,
) -> Result<f32> {
    let batches = token_batches(&corpus.lengths(), max_tokens, &mut Rng::seed(0))?;
    let (mut total, mut count) = (0.0f64, 0usize);
    no_grad(|| -> Result<()> {
        for idx in shard(&batches, comm.rank(), comm.size()) {
            let b = corpus.batch(&idx)?;
            let logits = model.forward(&b.src, &b.tgt_in, Some(corpus.pad), false)?;
            let (n, t, v) = (logits.shape()[0], logits.shape()[1], logits.shape()[2]);
            let logp = logits
                .value()
                .reshape(&[n * t, v])?
                .log_softmax(-1)?
                .to_vec();
            for (i, &y) in b.tgt_out.data().iter().enumerate() {
                if y != corpus.pad {
                    total -= f64::from(logp[i * v + y]);
                    count += 1;
                }
            }
        }
        Ok(())
    })?;
    let [total, count] = sum_over_ranks(comm, [total, count as f64])?;
    Ok((total / count.max(1.0)) as f32)
}
