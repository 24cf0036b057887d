//! Training and evaluation: AdamW with linear warmup then cosine decay, label
//! smoothing, gradient clipping, checkpoints that resume exactly.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_autograd::{no_grad, Parameter};
use tessera_nn::{
    cross_entropy, get_json, Params, TrainProgress, VarBuilder, VarMap, TRAIN_STATE_KEY,
};
use tessera_optim::{
    check_loss, clip_grad_norm, clip_limit, schedule, sum_over_ranks, Adam, AdamConfig,
    Communicator, GradientReducer, Local, Optimizer,
};
use tessera_tensor::{IndexTensor, Tensor};

use crate::checkpoint::{load_weights, metadata, read_config, CheckpointConfig};
use crate::{Error, Result, VisionTransformer};

/// Hyperparameters of a [`Trainer`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Peak learning rate (reached at the end of the warmup).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// AdamW's decoupled weight decay (not applied to biases, norms, the class token
    /// and the position embedding, as timm).
    pub weight_decay: f32,
    /// Steps of linear warmup (from `lr / warmup` to `lr`).
    pub warmup_steps: u64,
    /// Total steps: the cosine decay ends here.
    pub total_steps: u64,
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f32,
    /// Largest global gradient norm (0: no clipping).
    pub clip_norm: f32,
    /// Images per batch.
    pub batch_size: usize,
    /// Seed of the data order and augmentation.
    pub seed: u64,
    /// Train the head only (a linear probe): the rest of the model keeps its weights,
    /// and a hybrid stem's batch norm its running statistics.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// Layer-wise learning-rate decay (BEiT's, timm's `layer_decay`): the learning
    /// rate of block `i` is scaled by `decay^(depth - i)`, that of the embeddings by
    /// `decay^(depth + 1)`; the head keeps it ([`crate::layer_decay_scales`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
}

impl Default for TrainConfig {
    /// A recipe for small ViTs trained from scratch: lr 1e-3, weight decay 0.05,
    /// label smoothing 0.1, clipping at 1, batch 128.
    fn default() -> TrainConfig {
        TrainConfig {
            lr: 1e-3,
            min_lr: 1e-5,
            weight_decay: 0.05,
            warmup_steps: 200,
            total_steps: 2000,
            label_smoothing: 0.1,
            clip_norm: 1.0,
            batch_size: 128,
            seed: 0,
            freeze_backbone: false,
            layer_decay: None,
        }
    }
}

impl TrainConfig {
    /// The learning rate of (1-based) step `step`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let warmup = self.warmup_steps.min(self.total_steps);
        schedule::warmup_cosine(
            step,
            self.lr,
            1.0 / warmup.max(1) as f64,
            warmup,
            self.total_steps.saturating_sub(warmup),
            self.min_lr,
        )
    }
}

/// What one [`Trainer::step`] reports.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// The (label-smoothed) loss of the batch.
    pub loss: f32,
    /// Images of the batch whose largest logit is the label.
    pub correct: usize,
    /// Images in the batch.
    pub images: usize,
    /// The learning rate used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f32,
}

/// A training run: the model, AdamW's state and the progress.
///
/// [`Trainer::step`] advances `progress.step`; the epoch, the position in it and the
/// data generator's state are the data loop's to keep in `progress` (the trainer does
/// not see the data), and [`Trainer::save`] writes them as they are. With a fixed batch
/// size and a seeded loader, step `s` reads batch `s mod batches_per_epoch` of epoch
/// `s / batches_per_epoch`.
pub struct Trainer {
    /// The model.
    pub model: VisionTransformer,
    /// Hyperparameters.
    pub config: TrainConfig,
    opt: Adam,
    /// Steps taken, and where the data loop stands.
    pub progress: TrainProgress,
}

/// Parameters timm exempts from weight decay: every 1-D tensor (biases, norms) and the
/// class token and position embedding.
fn no_decay(model: &VisionTransformer) -> Vec<String> {
    let tokens = [model.param_name("cls_token"), model.param_name("pos_embed")];
    model
        .named_parameters()
        .into_iter()
        .filter(|(n, p)| p.value().shape().len() <= 1 || tokens.contains(n))
        .map(|(n, _)| n)
        .collect()
}

fn optimizer(model: &VisionTransformer, config: &TrainConfig) -> Adam {
    let settings = AdamConfig {
        weight_decay: config.weight_decay,
        ..AdamConfig::adamw(config.lr)
    };
    let opt = Adam::with(settings).without_decay(no_decay(model));
    match config.layer_decay {
        Some(decay) => opt.with_lr_scale(crate::layer_decay_scales(model, decay)),
        None => opt,
    }
}

/// The parameters a step of `config` trains: all of them, or the head's alone.
fn trained(model: &VisionTransformer, config: &TrainConfig) -> Vec<(String, Parameter)> {
    let all = model.named_parameters();
    if !config.freeze_backbone {
        return all;
    }
    let head = crate::pretrained::head_names(model);
    all.into_iter().filter(|(n, _)| head.contains(n)).collect()
}

/// Labels as an index tensor, checked against the images and the number of classes.
fn label_tensor(
    op: &'static str,
    labels: &[usize],
    classes: usize,
    images: usize,
) -> Result<IndexTensor> {
    if labels.len() != images {
        return Err(Error::shape(
            op,
            format!("labels [{images}] (one per image)"),
            &[labels.len()],
        ));
    }
    if let Some((row, &target)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(tessera_nn::Error::Target {
            op,
            target: target as i64,
            row,
            classes,
        }
        .into());
    }
    Ok(IndexTensor::from_vec(labels.to_vec()))
}

/// Row-wise argmax of logits `[B, K]` ([`Tensor::argmax`] along the classes: the first
/// on ties, a NaN counts as largest).
///
/// ```
/// use tessera_tensor::Tensor;
/// let logits = Tensor::from_vec(vec![0.1, 0.7, 0.2, 0.9, 0.0, 0.1], &[2, 3])?;
/// assert_eq!(tessera_vit::argmax_rows(&logits)?, vec![1, 0]);
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    logits.dims2()?;
    Ok(logits.argmax(1, false)?.data().to_vec())
}

/// Images whose largest logit is their label.
fn count_correct(logits: &Tensor, labels: &[usize]) -> Result<usize> {
    Ok(argmax_rows(logits)?
        .iter()
        .zip(labels)
        .filter(|(a, b)| a == b)
        .count())
}

impl Trainer {
    /// A run from step 0.
    pub fn new(model: VisionTransformer, config: TrainConfig) -> Result<Trainer> {
        if model.config().num_classes == 0 {
            return Err(Error::setting(
                "Trainer",
                "num_classes",
                0,
                "the model needs a head to train; give it one with reset_head",
            ));
        }
        for (name, value) in [
            ("batch_size", config.batch_size as u64),
            ("total_steps", config.total_steps),
        ] {
            if value == 0 {
                return Err(Error::setting("Trainer", name, 0, "must be positive"));
            }
        }
        if let Some(decay) = config.layer_decay.filter(|d| !(*d > 0.0 && *d <= 1.0)) {
            return Err(Error::setting(
                "Trainer",
                "layer_decay",
                decay,
                "must be in (0, 1]",
            ));
        }
        let opt = optimizer(&model, &config);
        Ok(Trainer {
            model,
            config,
            opt,
            progress: TrainProgress::default(),
        })
    }

    /// One batch of images `[B, C, H, W]` with their labels: loss, gradients, clipping,
    /// the scheduled learning rate, AdamW. A non-finite loss is
    /// [`tessera_optim::Error::NonFiniteLoss`] (as [`Error::Optim`]) and changes
    /// nothing.
    pub fn step(&mut self, images: &Tensor, labels: &[usize]) -> Result<StepStats> {
        self.step_with(images, labels, &Local)
    }

    /// [`Trainer::step`] as one rank of a data-parallel run over `comm`: `images` are
    /// this rank's part of the batch (at least one image), the gradients are averaged
    /// over the images of all ranks before clipping, and the loss, the correct count
    /// and the image count of the returned stats are those of the whole batch. With
    /// [`Local`] this is [`Trainer::step`].
    pub fn step_with(
        &mut self,
        images: &Tensor,
        labels: &[usize],
        comm: &dyn Communicator,
    ) -> Result<StepStats> {
        let b = images.shape().first().copied().unwrap_or(0);
        let targets = label_tensor("Trainer", labels, self.model.config().num_classes, b)?;
        let params = trained(&self.model, &self.config);
        for (_, p) in &self.model.named_parameters() {
            p.zero_grad();
        }
        let logits = if self.config.freeze_backbone {
            // The backbone is a constant: no graph through it, no batch statistics.
            let features = no_grad(|| self.model.forward_features(images, false))?;
            let features = tessera_autograd::Var::constant(features.value().clone());
            self.model.forward_head(&features)?
        } else {
            self.model.forward(images, true)?
        };
        let loss = cross_entropy(&logits, &targets, self.config.label_smoothing, None)?;
        let value = loss.value().to_scalar()?;
        let correct = count_correct(logits.value(), labels)?;
        let (bf, value_b) = (b as f64, f64::from(value) * b as f64);
        let [n, sum, right] = sum_over_ranks(comm, [bf, value_b, correct as f64])?;
        let value = if comm.size() == 1 {
            value
        } else {
            (sum / n) as f32
        };
        let step = self.progress.step + 1;
        check_loss(value, step)?;
        GradientReducer::new(comm, &params, (bf / n) as f32).backward(&loss)?;
        let grad_norm = clip_grad_norm(&params, clip_limit(self.config.clip_norm))?;
        let lr = self.config.lr_at(step);
        self.opt.set_lr(lr);
        self.opt.step(&params)?;
        self.progress.step = step;
        Ok(StepStats {
            loss: value,
            correct: right as usize,
            images: n as usize,
            lr,
            grad_norm,
        })
    }

    /// Writes the run atomically: parameters, buffers and AdamW's state (`optim.*`);
    /// as metadata the kind (`model`), the model's and the run's configuration
    /// (`config`), the progress (`train_state`) and the caller's `extra` entries.
    pub fn save(&self, path: impl AsRef<Path>, extra: &HashMap<String, String>) -> Result<()> {
        let config = CheckpointConfig {
            model: *self.model.config(),
            train: Some(self.config),
        };
        let meta = metadata(&config, Some(&self.progress), extra)?;
        let state = self.opt.checkpoint_state();
        Ok(self.model.vars().save_with(path, state, Some(&meta))?)
    }

    /// Continues a run saved by [`Trainer::save`]; also returns the file's metadata. A
    /// model file (no training settings) and a file of an earlier version are errors
    /// naming the file and the entry; nothing is written.
    pub fn resume(path: impl AsRef<Path>) -> Result<(Trainer, HashMap<String, String>)> {
        let path = path.as_ref();
        let (file, meta, stored) = read_config(path)?;
        let config = stored.train.ok_or_else(|| tessera_nn::Error::Metadata {
            path: path.to_path_buf(),
            key: tessera_nn::CONFIG_KEY.to_string(),
            reason: "no training settings: a model file, not a training checkpoint".to_string(),
        })?;
        let progress: TrainProgress = get_json(&meta, TRAIN_STATE_KEY, path)?;
        let vars = VarMap::new();
        let model = VisionTransformer::build(&VarBuilder::zeros_for(&vars, &file), stored.model)?;
        load_weights(&vars, path)?;
        let mut opt = optimizer(&model, &config);
        opt.load_checkpoint_state(&file)?;
        Ok((
            Trainer {
                model,
                config,
                opt,
                progress,
            },
            meta,
        ))
    }
}

/// Loss and accuracy over a set of batches.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy (no smoothing).
    pub loss: f64,
    /// Fraction of images whose largest logit is the label.
    pub accuracy: f64,
    /// Images seen.
    pub images: usize,
    /// Per class `k`: `(right, seen)`, the images of class `k` classified as `k` and
    /// all images of class `k`.
    pub per_class: Vec<(usize, usize)>,
}

impl Evaluation {
    /// The accuracy on class `k` (`None` where the set has no image of it).
    pub fn class_accuracy(&self, k: usize) -> Option<f64> {
        match self.per_class.get(k) {
            Some(&(right, seen)) if seen > 0 => Some(right as f64 / seen as f64),
            _ => None,
        }
    }
}

/// Evaluates `model` (evaluation mode, no gradients) on batches of `(images, labels)`.
/// An empty set is an error.
pub fn evaluate<I>(model: &VisionTransformer, batches: I) -> Result<Evaluation>
where
    I: IntoIterator<Item = Result<(Tensor, Vec<usize>)>>,
{
    evaluate_with(model, batches, &Local)
}

/// [`evaluate`] shared between the ranks of `comm` (data-parallel evaluation): each
/// rank passes its own part of the set (a [`Loader`](tessera_data::Loader) with
/// [`shard`](tessera_data::Loader::shard), whose batches may be empty on some ranks),
/// and the sums of the losses, the images and the per-class counts are added over the
/// ranks, so every rank gets the figures of the whole set: [`evaluate`]'s, up to the
/// order of the sums. A set empty on every rank is an error.
pub fn evaluate_with<I>(
    model: &VisionTransformer,
    batches: I,
    comm: &dyn Communicator,
) -> Result<Evaluation>
where
    I: IntoIterator<Item = Result<(Tensor, Vec<usize>)>>,
{
    let classes = model.config().num_classes;
    // The loss sum, then (right, seen) per class.
    let mut sums = vec![0.0f64; 1 + 2 * classes];
    for batch in batches {
        let (images, labels) = batch?;
        if labels.is_empty() {
            continue;
        }
        let b = images.shape().first().copied().unwrap_or(0);
        let targets = label_tensor("evaluate", &labels, classes, b)?;
        let logits = no_grad(|| model.forward(&images, false))?;
        let l = no_grad(|| cross_entropy(&logits, &targets, 0.0, None))?;
        sums[0] += l.value().to_scalar()? as f64 * b as f64;
        for (&p, &k) in argmax_rows(logits.value())?.iter().zip(&labels) {
            sums[1 + 2 * k] += f64::from(u8::from(p == k));
            sums[2 + 2 * k] += 1.0;
        }
    }
    if comm.size() > 1 {
        comm.all_reduce_sum_f64(&mut sums)?;
    }
    let per_class: Vec<(usize, usize)> = sums[1..]
        .chunks_exact(2)
        .map(|c| (c[0] as usize, c[1] as usize))
        .collect();
    let n: usize = per_class.iter().map(|c| c.1).sum();
    if n == 0 {
        return Err(Error::Empty { op: "evaluate" });
    }
    let correct: usize = per_class.iter().map(|c| c.0).sum();
    Ok(Evaluation {
        loss: sums[0] / n as f64,
        accuracy: correct as f64 / n as f64,
        images: n,
        per_class,
    })
}

/// The `k` most probable classes of each image, `(class, probability)` in descending
/// order.
pub fn top_k(
    model: &VisionTransformer,
    images: &Tensor,
    k: usize,
) -> Result<Vec<Vec<(usize, f32)>>> {
    let logits = no_grad(|| model.forward(images, false))?;
    let probs = logits.value().softmax(-1)?;
    let (b, classes) = probs.dims2()?;
    let v = probs.to_vec();
    Ok((0..b)
        .map(|i| {
            let mut row: Vec<(usize, f32)> = v[i * classes..(i + 1) * classes]
                .iter()
                .copied()
                .enumerate()
                .collect();
            row.sort_by(|a, b| b.1.total_cmp(&a.1));
            row.truncate(k.min(classes));
            row
        })
        .collect())
}
