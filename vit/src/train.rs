//! Training and evaluation: AdamW with linear warmup then cosine decay, label
//! smoothing, gradient clipping, checkpoints that resume exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tessera_autograd::no_grad;
use tessera_nn::{cross_entropy, Params};
use tessera_optim::{clip_grad_norm, schedule, Adam, Optimizer};
use tessera_tensor::{save_safetensors, IndexTensor, Rng, SafeTensorsFile, Tensor};

use crate::{input_err, Result, VisionTransformer, VitConfig};

/// Hyperparameters of a [`Trainer`].
#[derive(Clone, Copy, Debug, PartialEq)]
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

    fn to_metadata(self, m: &mut HashMap<String, String>) {
        let mut put = |k: &str, v: String| {
            m.insert(format!("train.{k}"), v);
        };
        put("lr", self.lr.to_string());
        put("min_lr", self.min_lr.to_string());
        put("weight_decay", self.weight_decay.to_string());
        put("warmup_steps", self.warmup_steps.to_string());
        put("total_steps", self.total_steps.to_string());
        put("label_smoothing", self.label_smoothing.to_string());
        put("clip_norm", self.clip_norm.to_string());
        put("batch_size", self.batch_size.to_string());
        put("seed", self.seed.to_string());
    }

    fn from_metadata(m: &HashMap<String, String>) -> Result<TrainConfig> {
        fn get<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str) -> Result<T> {
            let key = format!("train.{k}");
            let v = m.get(&key).ok_or_else(|| {
                input_err(
                    "TrainConfig",
                    format!("metadata has no {key:?}: not a training checkpoint"),
                )
            })?;
            v.parse()
                .map_err(|_| input_err("TrainConfig", format!("metadata {key:?} = {v:?}")))
        }
        Ok(TrainConfig {
            lr: get(m, "lr")?,
            min_lr: get(m, "min_lr")?,
            weight_decay: get(m, "weight_decay")?,
            warmup_steps: get(m, "warmup_steps")?,
            total_steps: get(m, "total_steps")?,
            label_smoothing: get(m, "label_smoothing")?,
            clip_norm: get(m, "clip_norm")?,
            batch_size: get(m, "batch_size")?,
            seed: get(m, "seed")?,
        })
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

/// A training run: the model, AdamW's state and the step. The data position is the
/// step itself: with a fixed batch size and a seeded loader, step `s` reads batch
/// `s mod batches_per_epoch` of epoch `s / batches_per_epoch`.
pub struct Trainer {
    /// The model.
    pub model: VisionTransformer,
    /// Hyperparameters.
    pub config: TrainConfig,
    opt: Adam,
    /// Steps taken.
    pub step: u64,
}

/// Parameters timm exempts from weight decay: every 1-D tensor (biases, norms) and the
/// class token and position embedding.
fn no_decay(model: &VisionTransformer) -> Vec<String> {
    model
        .named_parameters()
        .into_iter()
        .filter(|(n, p)| p.value().shape().len() <= 1 || n == "cls_token" || n == "pos_embed")
        .map(|(n, _)| n)
        .collect()
}

fn optimizer(model: &VisionTransformer, config: &TrainConfig) -> Adam {
    Adam::adamw(config.lr)
        .with_weight_decay(config.weight_decay)
        .without_decay(no_decay(model))
}

/// Labels as an index tensor, checked against the number of classes.
fn label_tensor(labels: &[usize], classes: usize, images: usize) -> Result<IndexTensor> {
    if labels.len() != images {
        return Err(input_err(
            "Trainer",
            format!("{} labels for {images} images", labels.len()),
        ));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
        return Err(input_err(
            "Trainer",
            format!("label {bad} is out of range for {classes} classes"),
        ));
    }
    Ok(IndexTensor::from_vec(labels.to_vec()))
}

/// Row-wise argmax of logits `[B, K]`.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>> {
    let (b, k) = logits.dims2()?;
    let v = logits.to_vec();
    Ok((0..b)
        .map(|i| {
            let row = &v[i * k..(i + 1) * k];
            let mut best = 0;
            for (j, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = j;
                }
            }
            best
        })
        .collect())
}

impl Trainer {
    /// A run from step 0.
    pub fn new(model: VisionTransformer, config: TrainConfig) -> Result<Trainer> {
        if model.config().classes == 0 {
            return Err(input_err(
                "Trainer",
                "the model has no head (0 classes); give it one with reset_head".into(),
            ));
        }
        if config.batch_size == 0 || config.total_steps == 0 {
            return Err(input_err(
                "Trainer",
                "batch size and total steps must be positive".into(),
            ));
        }
        let opt = optimizer(&model, &config);
        Ok(Trainer {
            model,
            config,
            opt,
            step: 0,
        })
    }

    /// One batch of images `[B, C, H, W]` with their labels: loss, gradients, clipping,
    /// the scheduled learning rate, AdamW. A non-finite loss is an error and changes
    /// nothing.
    pub fn step(&mut self, images: &Tensor, labels: &[usize]) -> Result<StepStats> {
        let b = images.shape().first().copied().unwrap_or(0);
        let targets = label_tensor(labels, self.model.config().classes, b)?;
        let params = self.model.named_parameters();
        for (_, p) in &params {
            p.zero_grad();
        }
        let logits = self.model.forward(images, true)?;
        let loss = cross_entropy(&logits, &targets, self.config.label_smoothing, None)?;
        let value = loss.value().to_scalar()?;
        if !value.is_finite() {
            return Err(input_err(
                "Trainer",
                format!(
                    "the loss is {value} at step {}; the parameters are left as they were",
                    self.step + 1
                ),
            ));
        }
        let correct = argmax_rows(logits.value())?
            .iter()
            .zip(labels)
            .filter(|(a, b)| a == b)
            .count();
        loss.backward()?;
        let grad_norm = if self.config.clip_norm > 0.0 {
            clip_grad_norm(&params, self.config.clip_norm)?
        } else {
            clip_grad_norm(&params, f32::INFINITY)?
        };
        let lr = self.config.lr_at(self.step + 1);
        self.opt.set_lr(lr);
        self.opt.step(&params)?;
        self.step += 1;
        Ok(StepStats {
            loss: value,
            correct,
            images: b,
            lr,
            grad_norm,
        })
    }

    /// Writes the run (parameters, buffers, `optim.*`, `train.step`; model and training
    /// configuration and `metadata` as metadata) atomically.
    pub fn save(&self, path: impl AsRef<Path>, metadata: &HashMap<String, String>) -> Result<()> {
        let mut meta = self.model.config().to_metadata();
        self.config.to_metadata(&mut meta);
        meta.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut tensors = model_tensors(&self.model);
        tensors.extend(
            self.opt
                .state()
                .into_iter()
                .map(|(k, v)| (format!("optim.{k}"), v)),
        );
        let s = self.step;
        tensors.insert(
            "train.step".into(),
            Tensor::from_vec(vec![(s >> 20) as f32, (s & 0xF_FFFF) as f32], &[2])?,
        );
        save_safetensors(
            path,
            tensors.iter().map(|(n, t)| (n.as_str(), t)),
            Some(&meta),
        )?;
        Ok(())
    }

    /// Continues a run saved by [`Trainer::save`].
    pub fn resume(path: impl AsRef<Path>) -> Result<(Trainer, HashMap<String, String>)> {
        let path = path.as_ref();
        let (model, mut rest, meta) = load_model(path)?;
        let bad =
            |what: String| input_err("Trainer::resume", format!("{}: {what}", path.display()));
        let config = TrainConfig::from_metadata(&meta).map_err(|e| bad(e.to_string()))?;
        let step = match rest.remove("train.step").map(|t| t.to_vec()).as_deref() {
            Some([hi, lo]) => ((*hi as u64) << 20) | *lo as u64,
            Some(_) => return Err(bad("tensor \"train.step\" is malformed".into())),
            None => return Err(bad("tensor \"train.step\" is missing".into())),
        };
        let state: BTreeMap<String, Tensor> = rest
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix("optim.").map(|s| (s.to_string(), v)))
            .collect();
        let mut opt = optimizer(&model, &config);
        opt.load_state(&state)?;
        Ok((
            Trainer {
                model,
                config,
                opt,
                step,
            },
            meta,
        ))
    }
}

/// Parameters and buffers by name.
fn model_tensors(model: &VisionTransformer) -> BTreeMap<String, Tensor> {
    let mut t: BTreeMap<String, Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(n, p)| (n, p.value()))
        .collect();
    t.extend(
        model
            .named_buffers()
            .into_iter()
            .map(|(n, b)| (n, b.value())),
    );
    t
}

/// Writes a model alone (parameters, buffers, configuration as metadata) atomically.
pub fn save_model(
    model: &VisionTransformer,
    path: impl AsRef<Path>,
    metadata: &HashMap<String, String>,
) -> Result<()> {
    let mut meta = model.config().to_metadata();
    meta.extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    let tensors = model_tensors(model);
    save_safetensors(
        path,
        tensors.iter().map(|(n, t)| (n.as_str(), t)),
        Some(&meta),
    )?;
    Ok(())
}

/// A model from a file written by [`Trainer::save`] or [`save_model`]: the model, the
/// file's other tensors and its metadata. Missing tensors, wrong shapes and files of
/// other models are errors naming the file.
#[allow(clippy::type_complexity)]
pub fn load_model(
    path: impl AsRef<Path>,
) -> Result<(
    VisionTransformer,
    BTreeMap<String, Tensor>,
    HashMap<String, String>,
)> {
    let path = path.as_ref();
    let err = |msg: String| input_err("load_model", format!("{}: {msg}", path.display()));
    let file = SafeTensorsFile::open(path)?;
    let meta = file.metadata()?;
    let config = VitConfig::from_metadata(&meta).map_err(|e| err(e.to_string()))?;
    let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
    let mut tensors = file.load_all()?;
    let mut take = |name: &str, want: &[usize]| -> Result<Tensor> {
        let t = tensors
            .remove(name)
            .ok_or_else(|| err(format!("tensor {name:?} is missing")))?;
        if t.shape() != want {
            return Err(err(format!(
                "{name:?} has shape {:?}, the model expects {want:?}",
                t.shape()
            )));
        }
        Ok(t)
    };
    for (name, p) in model.named_parameters() {
        p.set(take(&name, p.value().shape())?)?;
    }
    for (name, b) in model.named_buffers() {
        b.set(take(&name, b.value().shape())?);
    }
    Ok((model, tensors, meta))
}

/// Loss and accuracy over a set of batches.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean cross-entropy (no smoothing).
    pub loss: f64,
    /// Fraction of images whose largest logit is the label.
    pub accuracy: f64,
    /// Images seen.
    pub images: usize,
}

/// Evaluates `model` (evaluation mode, no gradients) on batches of `(images, labels)`.
/// An empty set is an error.
pub fn evaluate<I>(model: &VisionTransformer, batches: I) -> Result<Evaluation>
where
    I: IntoIterator<Item = Result<(Tensor, Vec<usize>)>>,
{
    let (mut loss, mut correct, mut n) = (0.0f64, 0usize, 0usize);
    for batch in batches {
        let (images, labels) = batch?;
        let b = images.shape().first().copied().unwrap_or(0);
        let targets = label_tensor(&labels, model.config().classes, b)?;
        let logits = no_grad(|| model.forward(&images, false))?;
        let l = no_grad(|| cross_entropy(&logits, &targets, 0.0, None))?;
        loss += l.value().to_scalar()? as f64 * b as f64;
        correct += argmax_rows(logits.value())?
            .iter()
            .zip(&labels)
            .filter(|(a, b)| a == b)
            .count();
        n += b;
    }
    if n == 0 {
        return Err(input_err("evaluate", "no images to evaluate".into()));
    }
    Ok(Evaluation {
        loss: loss / n as f64,
        accuracy: correct as f64 / n as f64,
        images: n,
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
