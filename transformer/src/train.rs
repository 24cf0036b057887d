//! Training a translation model as the paper does: batches by token count, Adam
//! (0.9, 0.98, 1e-9) with the warmup schedule, label smoothing; evaluation, checkpoints
//! that resume exactly, and averaging of the last checkpoints.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tessera_autograd::no_grad;
use tessera_data::{pad_sequences, token_batches};
use tessera_nn::Params;
use tessera_optim::{schedule, Adam, Optimizer};
use tessera_tensor::{save_safetensors, IndexTensor, Rng, SafeTensorsFile, Tensor};

use crate::{input_err, Error, Result, Transformer, TransformerConfig};

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

/// Hyperparameters of a [`Trainer`].
#[derive(Clone, Copy, Debug, PartialEq)]
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
    /// is an error and changes nothing.
    pub fn step(&mut self) -> Result<StepStats> {
        let batch = self.corpus.batch(&self.batches[self.position])?;
        let params = self.model.named_parameters();
        for (_, p) in &params {
            p.zero_grad();
        }
        let pad = Some(self.corpus.pad);
        let loss = self
            .model
            .loss(&batch.src, &batch.tgt_in, &batch.tgt_out, pad, true)?;
        let value = loss.value().to_scalar()?;
        if !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                loss: value,
                step: self.step,
            });
        }
        loss.backward()?;
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
            target_tokens: batch.target_tokens,
            lr,
        })
    }

    /// Writes the run (model, `optim.*`, `train.*`; configuration and `metadata` as
    /// metadata) atomically.
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let mut meta = self.model.config().to_metadata();
        meta.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        meta.insert("max_tokens".into(), self.config.max_tokens.to_string());
        meta.insert("warmup".into(), self.config.warmup.to_string());
        meta.insert("lr_factor".into(), self.config.lr_factor.to_string());
        meta.insert("seed".into(), self.config.seed.to_string());
        for (k, v) in [
            ("bos", self.corpus.bos),
            ("eos", self.corpus.eos),
            ("pad", self.corpus.pad),
        ] {
            meta.insert(k.into(), v.to_string());
        }
        let mut tensors: BTreeMap<String, Tensor> = self
            .model
            .named_parameters()
            .into_iter()
            .map(|(n, p)| (n, p.value()))
            .collect();
        tensors.extend(
            self.opt
                .state()
                .into_iter()
                .map(|(k, v)| (format!("optim.{k}"), v)),
        );
        for (k, v) in [
            ("train.step", self.step),
            ("train.epoch", self.epoch),
            ("train.position", self.position as u64),
        ] {
            tensors.insert(
                k.into(),
                Tensor::from_vec(vec![(v >> 20) as f32, (v & 0xF_FFFF) as f32], &[2])?,
            );
        }
        // The dropout generator, as 16-bit pieces (exact in f32).
        let (key, pos) = self.model.rng_state();
        let mut pieces: Vec<f32> = key
            .chunks(2)
            .map(|c| f32::from(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        pieces.extend((0..8).map(|i| ((pos >> (16 * i)) & 0xFFFF) as f32));
        tensors.insert("train.rng".into(), Tensor::from_vec(pieces, &[24])?);
        save_safetensors(
            path,
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(&meta),
        )?;
        Ok(())
    }

    /// Continues a run saved by [`Trainer::save`] on the same corpus.
    pub fn resume(
        path: impl AsRef<Path>,
        corpus: Corpus,
    ) -> Result<(Trainer, HashMap<String, String>)> {
        let path = path.as_ref();
        let (model, mut rest, meta) = load_model(path)?;
        let bad =
            |what: String| input_err("Trainer::resume", format!("{}: {what}", path.display()));
        fn num<T: std::str::FromStr>(meta: &HashMap<String, String>, k: &str) -> Option<T> {
            meta.get(k).and_then(|v| v.parse().ok())
        }
        let config = TrainConfig {
            max_tokens: num(&meta, "max_tokens")
                .ok_or_else(|| bad("no max_tokens: not a training checkpoint".into()))?,
            warmup: num(&meta, "warmup").ok_or_else(|| bad("no warmup".into()))?,
            lr_factor: num(&meta, "lr_factor").ok_or_else(|| bad("no lr_factor".into()))?,
            seed: num(&meta, "seed").ok_or_else(|| bad("no seed".into()))?,
        };
        let mut counter = |k: &str| -> Result<u64> {
            let t = rest
                .remove(k)
                .ok_or_else(|| bad(format!("tensor {k:?} is missing")))?;
            match t.to_vec().as_slice() {
                [hi, lo] => Ok(((*hi as u64) << 20) | *lo as u64),
                _ => Err(bad(format!("tensor {k:?} is malformed"))),
            }
        };
        let (step, epoch, position) = (
            counter("train.step")?,
            counter("train.epoch")?,
            counter("train.position")? as usize,
        );
        let pieces = rest
            .remove("train.rng")
            .ok_or_else(|| bad("tensor \"train.rng\" is missing".into()))?
            .to_vec();
        if pieces.len() != 24
            || pieces
                .iter()
                .any(|&v| !(0.0..65536.0).contains(&v) || v.fract() != 0.0)
        {
            return Err(bad("tensor \"train.rng\" is malformed".into()));
        }
        let mut key = [0u8; 32];
        for (i, &v) in pieces[..16].iter().enumerate() {
            key[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_le_bytes());
        }
        let pos = pieces[16..]
            .iter()
            .enumerate()
            .fold(0u128, |acc, (i, &v)| acc | ((v as u128) << (16 * i)));
        model.set_rng_state(key, pos);
        let optim: BTreeMap<String, Tensor> = rest
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("optim.").map(|s| (s.to_string(), v)))
            .collect();
        let mut opt = Adam::transformer(0.0);
        opt.load_state(&optim)?;
        let batches = epoch_batches(&corpus, &config, epoch)?;
        if position >= batches.len() {
            return Err(bad(format!(
                "position {position} is beyond the {} batches of this corpus",
                batches.len()
            )));
        }
        Ok((
            Trainer {
                model,
                config,
                corpus,
                opt,
                step,
                epoch,
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

/// A model from a checkpoint written by [`Trainer::save`] (or any file with the
/// configuration metadata and the parameters by name): the model, the file's other
/// tensors and its metadata.
#[allow(clippy::type_complexity)]
pub fn load_model(
    path: impl AsRef<Path>,
) -> Result<(
    Transformer,
    BTreeMap<String, Tensor>,
    HashMap<String, String>,
)> {
    let path = path.as_ref();
    let file = SafeTensorsFile::open(path)?;
    let meta = file.metadata()?;
    let config = TransformerConfig::from_metadata(&meta)
        .map_err(|e| input_err("load_model", format!("{}: {e}", path.display())))?;
    let model = Transformer::new(config, &mut Rng::seed(0))?;
    let mut tensors = file.load_all()?;
    for (name, p) in model.named_parameters() {
        let t = tensors.remove(&name).ok_or_else(|| {
            input_err(
                "load_model",
                format!("{}: tensor {name:?} is missing", path.display()),
            )
        })?;
        if t.shape() != p.value().shape() {
            return Err(input_err(
                "load_model",
                format!(
                    "{}: {name:?} has shape {:?}, the model expects {:?}",
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

/// The mean cross-entropy (no smoothing) per target token of `model` on `corpus`.
pub fn evaluate_loss(model: &Transformer, corpus: &Corpus, max_tokens: usize) -> Result<f32> {
    let batches = token_batches(&corpus.lengths(), max_tokens, &mut Rng::seed(0))?;
    let (mut total, mut count) = (0.0f64, 0usize);
    no_grad(|| -> Result<()> {
        for idx in &batches {
            let b = corpus.batch(idx)?;
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
    Ok((total / count.max(1) as f64) as f32)
}

/// The element-wise mean of the parameters of several checkpoints of one model (the
/// paper averages the last 5 or 20), written by name into `model`.
pub fn average_checkpoints(model: &Transformer, paths: &[impl AsRef<Path>]) -> Result<()> {
    if paths.is_empty() {
        return Err(input_err(
            "average_checkpoints",
            "no checkpoint given".into(),
        ));
    }
    let params = model.named_parameters();
    let mut sums: Vec<Vec<f64>> = params
        .iter()
        .map(|(_, p)| vec![0.0; p.value().numel()])
        .collect();
    for path in paths {
        let (m, _, _) = load_model(path)?;
        let theirs = m.named_parameters();
        if theirs.len() != params.len()
            || theirs
                .iter()
                .zip(&params)
                .any(|(a, b)| a.0 != b.0 || a.1.value().shape() != b.1.value().shape())
        {
            return Err(input_err(
                "average_checkpoints",
                format!("{} holds another model", path.as_ref().display()),
            ));
        }
        for (s, (_, p)) in sums.iter_mut().zip(&theirs) {
            s.iter_mut()
                .zip(p.value().to_vec())
                .for_each(|(a, v)| *a += f64::from(v));
        }
    }
    let k = paths.len() as f64;
    for (s, (_, p)) in sums.into_iter().zip(&params) {
        let shape = p.value().shape().to_vec();
        p.set(Tensor::from_vec(
            s.into_iter().map(|v| (v / k) as f32).collect(),
            &shape,
        )?)?;
    }
    Ok(())
}
