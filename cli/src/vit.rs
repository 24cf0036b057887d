//! `tessera vit`: train, evaluate and inspect Vision Transformers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use tessera_data::{Dataset, Epoch, ImageSets, Loader};
use tessera_nn::Params;
use tessera_tensor::{Rng, Tensor};
use tessera_vit::{
    batches, eval_loader, evaluate, evaluate_with, load_pretrained, prepare_image, read_image,
    top_k, train_loader, viz, Arch, Augment, CheckpointConfig, FineTune, GlobalPool, Hybrid,
    Pretrained, Source, SourceFormat, TimmEval, TrainConfig, Trainer, VisionTransformer, VitConfig,
    NORMALIZE, SOURCE_KEY,
};

use crate::train::{choice, Eval, Mode, Plan, Run, RunArgs, Step, Task};

/// `tessera vit` subcommands.
#[derive(Subcommand, Debug)]
pub enum VitCommand {
    /// Print the exact parameter count of every preset (224×224, 1,000 classes, timm's
    /// layout) beside the paper's rounded Table 1 column.
    Params(ParamsArgs),
    /// Train a ViT from scratch on an image dataset (or the built-in shapes).
    ///
    /// --data takes a folder of IDX files (MNIST, Fashion-MNIST: train-images-idx3-ubyte
    /// and t10k-images-idx3-ubyte, gzip or not), a CSV of pixels (a square grey image and
    /// the label last, gzip or not), or a folder with one sub-folder of images per class.
    /// Without --data, a generated set of eight kinds of shapes is used. The test set is
    /// --test, the IDX folder's t10k files, or 10% held out.
    ///
    /// AdamW, linear warmup then cosine decay, label smoothing, gradient clipping;
    /// accuracy on the test set after every epoch. Writes OUT/checkpoint.safetensors
    /// (model, optimizer, step; atomically) after every epoch and on Ctrl-C,
    /// OUT/model.safetensors at the end, OUT/metrics.jsonl and OUT/metrics.png.
    Train(Box<TrainArgs>),
    /// Loss and accuracy of a checkpoint on a dataset, with the accuracy of each class.
    Eval(EvalArgs),
    /// The most probable classes of image files (PNG, JPEG, ...).
    Predict(PredictArgs),
    /// The paper's pictures from a checkpoint, as PNG files: position-embedding
    /// similarity, principal components of the patch filters, mean attention distance
    /// per head against depth, attention rollout over an image.
    Viz(VizArgs),
}

/// Arguments of `tessera vit params`.
#[derive(Args, Debug)]
pub struct ParamsArgs {
    /// Output classes (0: no head, as timm's `num_classes=0`).
    #[arg(long, default_value_t = 1000)]
    classes: usize,
}

/// Where images come from.
#[derive(Args, Debug, Clone, serde::Serialize)]
pub struct DataArgs {
    /// Images: an IDX folder, a CSV file or an image folder (default: the built-in
    /// shapes). `train` learns from them; `eval` and `viz` use their test part (--test,
    /// else an IDX folder's t10k files, else the 10% that `train` held out).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Test data (default: the IDX folder's t10k files, else 10% of --data).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Image folders: skip files that do not decode (listed) instead of failing.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    skip_bad: bool,
}

/// Arguments of `tessera vit train`.
#[derive(Args, Debug, serde::Serialize)]
pub struct TrainArgs {
    #[command(flatten)]
    #[serde(flatten)]
    data: DataArgs,
    /// Train on the first N images of each class only (in the data's order): a few-label
    /// run that is the same every time.
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    per_class: Option<usize>,
    /// Input size (default: the data's; images are resized to it).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    image_size: Option<usize>,
    /// Start from pretrained weights: a tessera checkpoint or model file, or a timm ViT
    /// state dict as timm publishes it (model.safetensors). The architecture is the
    /// file's (--preset names it where its shapes do not say it all); a different
    /// --image-size resamples the position embeddings, other classes get a new
    /// zero-initialised head, grey images a first convolution summed over its channels.
    #[arg(long, conflicts_with_all = ["patch", "dim", "depth", "mlp", "pool", "hybrid_width"])]
    init_from: Option<PathBuf>,
    /// The model by timm's name (vit_tiny_patch16_224, vit_base_patch16_384, ...) or the
    /// paper's (B/16); the shape flags override it. With --init-from: the architecture
    /// of the file.
    #[arg(long)]
    preset: Option<String>,
    /// With --init-from: a new zero-initialised head even where the number of classes is
    /// the same (a new label set, as the paper fine-tunes).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    reset_head: bool,
    /// Train the head only (a linear probe); the rest keeps its weights.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    freeze_backbone: bool,
    /// Layer-wise learning-rate decay (as BEiT and timm): block i learns at
    /// lr·decay^(depth-i), the embeddings at lr·decay^(depth+1), the head at lr.
    #[arg(long, value_parser = crate::ranges::fraction::<f64>(), allow_negative_numbers = true)]
    layer_decay: Option<f64>,
    /// Patch size P (default 4, or the preset's).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    patch: Option<usize>,
    /// Token width D (default 96, or the preset's).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    dim: Option<usize>,
    /// Encoder blocks (default 6, or the preset's).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    depth: Option<usize>,
    /// Attention heads (default 4, or the preset's; with --init-from, for a file whose
    /// width and depth no preset has).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    heads: Option<usize>,
    /// MLP width (default 2·D, or the preset's 4·D).
    #[arg(long, value_parser = crate::ranges::at_least_one::<usize>())]
    mlp: Option<usize>,
    /// Pooling before the head: token (the class token; default) or avg (the mean of
    /// the patch tokens).
    #[arg(long, value_parser = choice::<PoolName>("pool"))]
    pool: Option<PoolName>,
    /// Hybrid input: the width of a ResNet-style stem (default 0: plain patches).
    #[arg(long)]
    hybrid_width: Option<usize>,
    /// Hybrid input: convolution stages after the stem.
    #[arg(long, default_value_t = 1)]
    hybrid_stages: usize,
    /// Passes over the training data.
    #[arg(long, default_value_t = 10, value_parser = crate::ranges::at_least_one::<u64>())]
    epochs: u64,
    /// Images per batch.
    #[arg(long, default_value_t = 128, value_parser = crate::ranges::at_least_one::<usize>())]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = crate::ranges::positive::<f64>(), allow_negative_numbers = true)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.05, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    weight_decay: f32,
    /// Warmup, in epochs (may be fractional).
    #[arg(long, default_value_t = 1.0, value_parser = crate::ranges::non_negative::<f64>(), allow_negative_numbers = true)]
    warmup_epochs: f64,
    /// Label smoothing.
    #[arg(long, default_value_t = 0.1, value_parser = crate::ranges::fraction::<f32>(), allow_negative_numbers = true)]
    label_smoothing: f32,
    /// Global gradient-norm clip (0: no clipping).
    #[arg(long, default_value_t = 1.0, value_parser = crate::ranges::non_negative::<f32>(), allow_negative_numbers = true)]
    clip: f32,
    /// Augmentation: random crops after zero padding by this many pixels (0: none).
    #[arg(long, default_value_t = 0)]
    crop_padding: usize,
    /// Augmentation: random horizontal flips.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t)]
    flip: bool,
    /// Stop after this many steps in total (for tests and quick looks).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Save the checkpoint every this many steps (default: at the end of every epoch).
    #[arg(long, value_parser = crate::ranges::at_least_one::<u64>())]
    save_every: Option<u64>,
    /// Background threads that decode and augment batches.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    #[command(flatten)]
    #[serde(flatten)]
    run: RunArgs,
}

/// The choices of `--pool`.
#[derive(Clone, Copy, Debug, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum PoolName {
    Token,
    Avg,
}

/// The model of `eval`, `predict` and `viz`.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// A checkpoint or model file written by `tessera vit train`, or a timm ViT state
    /// dict (model.safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// For a timm state dict: the model by timm's name (vit_base_patch16_224, ...);
    /// without it the shape is read off the tensors.
    #[arg(long)]
    preset: Option<String>,
    /// For a timm state dict whose width and depth no preset has: its attention heads.
    #[arg(long, conflicts_with = "preset", value_parser = crate::ranges::at_least_one::<usize>())]
    heads: Option<usize>,
}

impl ModelArgs {
    /// The model, where it came from and the file's metadata.
    fn open(&self) -> Result<Pretrained> {
        let arch = match &self.preset {
            Some(p) => Arch::Preset(p),
            None => Arch::Infer {
                num_heads: self.heads,
            },
        };
        Ok(load_pretrained(&self.checkpoint, arch)?)
    }
}

/// How image files become model inputs (`predict`, `viz`).
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// tessera (the shorter side resized, bilinear, a centre crop, (x - 0.5) / 0.5: how
    /// `vit train` prepares images), augreg (timm's evaluation transform of the paper's
    /// and augreg ViTs: Pillow's bicubic resize to size / crop-pct, a centre crop, mean
    /// and std 0.5) or imagenet (the same with ImageNet's mean and std, crop 0.875).
    /// Default: tessera for tessera checkpoints, augreg for timm state dicts.
    #[arg(long, value_parser = choice::<PreprocessName>("preprocess"))]
    preprocess: Option<PreprocessName>,
    /// With augreg or imagenet: the fraction of the resized image kept by the crop
    /// (timm's crop_pct; default 0.9 at 224, 1.0 squashed above, 0.875 for imagenet).
    #[arg(long, value_parser = crate::ranges::fraction::<f64>(), allow_negative_numbers = true)]
    crop_pct: Option<f64>,
}

/// The choices of `--preprocess`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PreprocessName {
    Tessera,
    Augreg,
    Imagenet,
}

impl ImageArgs {
    /// timm's transform for a model of `size`, or `None` for tessera's own.
    fn transform(&self, source: &Source, size: usize) -> Option<TimmEval> {
        let default = match source.format {
            SourceFormat::Tessera => PreprocessName::Tessera,
            SourceFormat::Timm => PreprocessName::Augreg,
        };
        let t = match self.preprocess.unwrap_or(default) {
            PreprocessName::Tessera => return None,
            PreprocessName::Augreg => TimmEval::augreg(size),
            PreprocessName::Imagenet => TimmEval::imagenet(),
        };
        Some(match self.crop_pct {
            Some(crop_pct) => TimmEval { crop_pct, ..t },
            None => t,
        })
    }
}

/// Arguments of `tessera vit eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    threads: crate::train::Threads,
    #[command(flatten)]
    data: DataArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 256, value_parser = crate::ranges::at_least_one::<usize>())]
    batch: usize,
}

/// Arguments of `tessera vit predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    threads: crate::train::Threads,
    #[command(flatten)]
    image: ImageArgs,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Class names, one a line (or WordNet synset ids with imagenet_synset_to_lemma.txt
    /// beside the file). Default: the checkpoint's; for a 1,000-class head without
    /// names, ImageNet-1k's from $TESSERA_DATA/imagenet-1k or ../shared/data/imagenet-1k
    /// where they are.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 5, value_parser = crate::ranges::at_least_one::<usize>())]
    top_k: usize,
}

/// Arguments of `tessera vit viz`.
#[derive(Args, Debug)]
pub struct VizArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    threads: crate::train::Threads,
    /// Output folder for the PNG files.
    #[arg(long, default_value = "runs/vit/viz")]
    out: PathBuf,
    /// The image of the rollout picture (default: the first test image of --data).
    #[arg(long)]
    image: Option<PathBuf>,
    #[command(flatten)]
    image_args: ImageArgs,
    #[command(flatten)]
    data: DataArgs,
    /// Images over which the attention distances are averaged.
    #[arg(long, default_value_t = 64, value_parser = crate::ranges::at_least_one::<usize>())]
    samples: usize,
    /// The class that the gradient saliency and integrated gradients explain (default:
    /// the model's prediction for the image).
    #[arg(long)]
    class: Option<usize>,
    /// Points on the path from the black image to the image for integrated gradients.
    #[arg(long, default_value_t = 64, value_parser = crate::ranges::at_least_one::<usize>())]
    ig_steps: usize,
}

/// Runs `tessera vit ...`.
pub fn run(cmd: &VitCommand) -> Result<()> {
    match cmd {
        VitCommand::Params(a) => params(a),
        VitCommand::Train(a) => train(a),
        VitCommand::Eval(a) => eval(a),
        VitCommand::Predict(a) => predict(a),
        VitCommand::Viz(a) => viz_cmd(a),
    }
}

fn params(a: &ParamsArgs) -> Result<()> {
    println!(
        "{:<6} {:>5} {:>6} {:>6} {:>6} {:>14}  paper (Table 1)",
        "model", "D", "depth", "heads", "MLP", "parameters"
    );
    for preset in VitConfig::presets() {
        let name = preset.short;
        let c = VitConfig {
            num_classes: a.classes,
            ..(preset.config)()
        };
        if c.img_size != 224 {
            continue;
        }
        let paper = match name.split('/').next() {
            Some("B") => "86M",
            Some("L") => "307M",
            Some("H") => "632M",
            _ => "-",
        };
        println!(
            "{name:<6} {:>5} {:>6} {:>6} {:>6} {:>14}  {paper}",
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.mlp_hidden_dim(),
            c.num_parameters()
        );
    }
    println!(
        "The paper's Table 1 gives one rounded count per size (its patch size and head are not \
         stated): B/16 rounds to its 86M and H/14 with a 1,000-class head to its 632M; L/16 \
         has 304M against its 307M, which L/32 matches. Ti and S are timm's additions. timm creates H/14 without a \
         head by default (630,764,800; --classes 0)."
    );
    Ok(())
}

/// The training and test sets of `a` (the built-in shapes without `--data`), with the
/// files an image folder skipped listed on stderr.
fn open_data(a: &DataArgs, seed: u64) -> Result<ImageSets> {
    let sets = match &a.data {
        None => ImageSets::shapes(seed)?,
        Some(path) => ImageSets::open(path, a.test.as_deref(), a.skip_bad, seed)?,
    };
    for (p, why) in &sets.skipped {
        eprintln!("skipped {}: {why}", p.display());
    }
    Ok(sets)
}

/// A Vision Transformer learning to classify images; an evaluation on the test set
/// after every epoch.
struct ImageTask {
    trainer: Trainer,
    data: ImageSets,
    train: Loader,
    test: Loader,
    /// The batches left in the current epoch.
    batches: Option<Epoch>,
    per_epoch: u64,
    /// Steps between checkpoints.
    save_every: u64,
    total: u64,
    meta: HashMap<String, String>,
    /// Where the weights came from and what fine-tuning changed.
    notes: Vec<String>,
}

fn train(a: &TrainArgs) -> Result<()> {
    // Pretrained weights are read, and checked against the size asked for, before the
    // run's folder is made: a bad file or size writes nothing.
    let pretrained = match (&a.init_from, a.run.resume) {
        (Some(path), false) => Some(open_pretrained(a, path)?),
        _ => None,
    };
    let run = Run::start(&a.run, "vit", a)?;
    // On --resume, the data and augmentation come from the checkpoint.
    let get = |k: &str| {
        run.resumed
            .as_ref()
            .and_then(|m| m.get(k).map(PathBuf::from))
    };
    let data_args = DataArgs {
        data: get("data.path").or(a.data.data.clone()),
        test: get("data.test").or(a.data.test.clone()),
        skip_bad: a.data.skip_bad,
    };
    let stored_train = match &run.resumed {
        Some(meta) => {
            tessera_nn::get_json::<CheckpointConfig>(meta, tessera_nn::CONFIG_KEY, &run.checkpoint)?
                .train
        }
        None => None,
    };
    let seed = stored_train.map_or(a.run.seed, |t| t.seed);
    let augment = Augment {
        crop_padding: run.stored("data.crop_padding", a.crop_padding)?,
        flip: run.stored("data.flip", a.flip)?,
    };
    let epochs = a.epochs;
    let mut data = open_data(&data_args, seed)?;
    if let Some(n) = a.per_class {
        let few = tessera_data::Subset::first_per_class(data.train.clone(), n)?;
        data.train = std::sync::Arc::new(few);
    }
    let [channels, h, w] = data.train.image_shape();
    // The pretrained weights a run starts from, and what fine-tuning changed in them.
    let mut source = run
        .resumed
        .as_ref()
        .and_then(|m| m.get(SOURCE_KEY))
        .map(|s| serde_json::from_str::<Source>(s))
        .transpose()
        .with_context(|| format!("{}: {SOURCE_KEY}", run.checkpoint.display()))?;
    let mut notes = Vec::new();
    let trainer = if run.resumed.is_some() {
        // The budget and the learning rate may change on --resume: the cosine schedule
        // then runs to the new end.
        let mut trainer = Trainer::resume(&run.checkpoint)?.0;
        let per_epoch = (data.train.len() / trainer.config.batch_size) as u64;
        trainer.config.total_steps = epochs * per_epoch;
        (trainer.config.lr, trainer.config.min_lr) = (a.lr, a.lr / 100.0);
        trainer
    } else {
        let classes = data.train.classes();
        let (model, from, changes) = initial_model(a, pretrained, channels, classes, h.min(w))?;
        (source, notes) = (from, changes);
        let per_epoch = (data.train.len() / a.batch) as u64;
        if per_epoch == 0 {
            let n = data.train.len();
            bail!("--batch {} is larger than the {n} training images", a.batch);
        }
        let tc = TrainConfig {
            lr: a.lr,
            min_lr: a.lr / 100.0,
            weight_decay: a.weight_decay,
            warmup_steps: (a.warmup_epochs * per_epoch as f64).round() as u64,
            total_steps: a.epochs * per_epoch,
            label_smoothing: a.label_smoothing,
            clip_norm: a.clip,
            batch_size: a.batch,
            seed: a.run.seed,
            freeze_backbone: a.freeze_backbone,
            layer_decay: a.layer_decay,
        };
        Trainer::new(model, tc)?
    };
    let c = *trainer.model.config();
    if c.in_chans != channels || c.num_classes != data.train.classes() {
        bail!(
            "the checkpoint's model takes {} channels and {} classes; the data has {channels} and {}",
            c.in_chans,
            c.num_classes,
            data.train.classes()
        );
    }
    let batch = trainer.config.batch_size;
    let (size, workers) = (c.img_size, a.workers);
    run.check_split("--batch", batch)?;
    let train = train_loader(data.train.clone(), size, batch, seed, workers, augment)?
        .shard(run.rank(), run.ranks())?;
    let test = eval_loader(data.test.clone(), size, batch.max(256), workers)?
        .shard(run.rank(), run.ranks())?;
    let per_epoch = train.num_batches() as u64;
    let total = trainer
        .config
        .total_steps
        .min(a.max_steps.unwrap_or(u64::MAX));
    let mut meta = HashMap::from([
        ("data.name".to_string(), data.name.clone()),
        (
            "class_names".to_string(),
            serde_json::to_string(&data.train.class_names())?,
        ),
        (
            "data.crop_padding".to_string(),
            augment.crop_padding.to_string(),
        ),
        ("data.flip".to_string(), augment.flip.to_string()),
        ("data.epochs".to_string(), epochs.to_string()),
        ("normalize".to_string(), NORMALIZE.to_string()),
    ]);
    if let Some(src) = &source {
        meta.insert(SOURCE_KEY.to_string(), serde_json::to_string(src)?);
        let from = format!("from {}, {}", src.path, src.format);
        notes.insert(0, from);
    }
    let paths = [
        ("data.path", &data_args.data),
        ("data.test", &data_args.test),
    ];
    for (key, path) in paths {
        if let Some(p) = path {
            meta.insert(key.into(), p.display().to_string());
        }
    }
    let batches = None;
    run.train(&mut ImageTask {
        trainer,
        data,
        train,
        test,
        batches,
        per_epoch,
        save_every: a.save_every.unwrap_or(per_epoch),
        total,
        meta,
        notes,
    })
}

/// The pretrained weights of --init-from, checked against --image-size.
fn open_pretrained(a: &TrainArgs, path: &Path) -> Result<Pretrained> {
    let arch = match (&a.preset, a.heads) {
        (Some(_), Some(_)) => bail!("--heads is the preset's with --init-from and --preset"),
        (Some(p), None) => Arch::Preset(p),
        (None, heads) => Arch::Infer { num_heads: heads },
    };
    let p = load_pretrained(path, arch)?;
    if let Some(size) = a.image_size {
        VitConfig {
            img_size: size,
            ..*p.model.config()
        }
        .validate()
        .with_context(|| format!("--image-size {size} for the model of {}", path.display()))?;
    }
    Ok(p)
}

/// The model a new run starts from: pretrained weights (--init-from) adapted to the
/// data, or a fresh model of the preset and the shape flags; where pretrained weights
/// came from and what fine-tuning changed in them.
fn initial_model(
    a: &TrainArgs,
    pretrained: Option<Pretrained>,
    channels: usize,
    classes: usize,
    data_size: usize,
) -> Result<(VisionTransformer, Option<Source>, Vec<String>)> {
    if let Some(mut p) = pretrained {
        let task = FineTune {
            img_size: a.image_size.unwrap_or(p.model.config().img_size),
            in_chans: channels,
            num_classes: classes,
            new_head: a.reset_head,
        };
        let changes = task.apply(&mut p.model)?;
        return Ok((p.model, Some(p.source), changes));
    }
    if a.reset_head {
        bail!("--reset-head replaces the head of pretrained weights: give --init-from");
    }
    let base = match &a.preset {
        Some(name) => VitConfig::preset(name)?,
        None => VitConfig {
            img_size: data_size,
            patch_size: 4,
            embed_dim: 96,
            depth: 6,
            num_heads: 4,
            mlp_ratio: 2.0,
            ..VitConfig::default()
        },
    };
    let config = VitConfig {
        img_size: a.image_size.unwrap_or(base.img_size),
        patch_size: a.patch.unwrap_or(base.patch_size),
        in_chans: channels,
        embed_dim: a.dim.unwrap_or(base.embed_dim),
        depth: a.depth.unwrap_or(base.depth),
        num_heads: a.heads.unwrap_or(base.num_heads),
        mlp_dim: a.mlp,
        num_classes: classes,
        global_pool: match a.pool.unwrap_or(PoolName::Token) {
            PoolName::Token => GlobalPool::Token,
            PoolName::Avg => GlobalPool::Avg,
        },
        hybrid: a.hybrid_width.filter(|&w| w > 0).map(|width| Hybrid {
            width,
            stages: a.hybrid_stages,
        }),
        ..base
    };
    Ok((
        VisionTransformer::new(config, &mut Rng::seed(a.run.seed))?,
        None,
        Vec::new(),
    ))
}

impl Task for ImageTask {
    fn plan(&self) -> Plan {
        Plan {
            steps: self.total,
            eval_every: self.per_epoch,
            eval_at_start: false,
            save_every: self.save_every,
            unit: "img/s",
            rate_key: "images_per_s",
        }
    }

    fn steps_done(&self) -> u64 {
        self.trainer.progress.step
    }

    fn describe(&self) -> Vec<String> {
        let (d, t, c) = (&self.data, &self.trainer, self.trainer.model.config());
        let hybrid = c.hybrid.map_or(String::new(), |h| {
            format!(", hybrid stem width {} with {} stages", h.width, h.stages)
        });
        let mut lines = vec![
            format!(
                "{}: {} training images, {} test images, {} classes, {:?}",
                d.name,
                d.train.len(),
                d.test.len(),
                c.num_classes,
                d.train.image_shape()
            ),
            format!(
                "ViT {0}x{0} patch {1} ({2} tokens), D {3}, depth {4}, heads {5}, MLP {6}{hybrid}: {7} parameters; {8} steps of {9} images per epoch; from step {10}",
                c.img_size,
                c.patch_size,
                c.num_tokens(),
                c.embed_dim,
                c.depth,
                c.num_heads,
                c.mlp_hidden_dim(),
                t.model.num_parameters(),
                self.per_epoch,
                t.config.batch_size,
                t.progress.step
            ),
        ];
        lines.extend(self.notes.iter().map(|n| format!("  {n}")));
        if t.config.freeze_backbone {
            lines.push("  backbone frozen: only the head trains".to_string());
        }
        if let Some(d) = t.config.layer_decay {
            lines.push(format!("  layer-wise learning-rate decay {d}"));
        }
        lines
    }

    fn named_parameters(&self) -> Vec<(String, tessera_optim::Parameter)> {
        self.trainer.model.named_parameters()
    }

    fn step(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Step> {
        let b = loop {
            if self.batches.is_none() {
                let (s, n) = (self.trainer.progress.step, self.per_epoch);
                self.batches = Some(self.train.epoch_from(s / n, (s % n) as usize)?);
            }
            match self.batches.as_mut().and_then(Iterator::next) {
                Some(b) => break b?,
                None => self.batches = None,
            }
        };
        let s = self.trainer.step_with(&b.images, &b.labels, comm)?;
        // Where the run stands, as the checkpoint records it.
        let (done, n) = (self.trainer.progress.step, self.per_epoch);
        (self.trainer.progress.epoch, self.trainer.progress.position) = (done / n, done % n);
        let (loss, lr, items, correct) = (s.loss, Some(s.lr), s.images, Some(s.correct));
        Ok(Step {
            loss,
            lr,
            items,
            correct,
        })
    }

    fn evaluate(&mut self, comm: &dyn tessera_optim::Communicator) -> Result<Eval> {
        let ev = evaluate_with(&self.trainer.model, batches(&self.test), comm)?;
        let epoch = self.trainer.progress.step as f64 / self.per_epoch as f64;
        let summary = format!(
            "test loss {:.4} acc {:5.2}%  epoch {epoch:>6.2}",
            ev.loss,
            100.0 * ev.accuracy
        );
        let metrics = [
            ("test_loss", ev.loss.into()),
            ("test_acc", ev.accuracy.into()),
            ("epoch", epoch.into()),
        ];
        Ok(Eval::new(summary, metrics))
    }

    fn save(&self, checkpoint: &Path) -> Result<()> {
        Ok(self.trainer.save(checkpoint, &self.meta)?)
    }

    /// The model alone, for `vit eval`, `predict` and `viz`: OUT/model.safetensors.
    fn finish(&mut self, out: &Path, _: Mode) -> Result<Vec<PathBuf>> {
        let path = out.join("model.safetensors");
        tessera_vit::save_model(&self.trainer.model, &path, &self.meta)?;
        Ok(vec![path])
    }
}

fn class_names(meta: &HashMap<String, String>, classes: usize) -> Vec<String> {
    meta.get("class_names")
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .filter(|v| v.len() == classes)
        .unwrap_or_else(|| (0..classes).map(|k| k.to_string()).collect())
}

fn eval(a: &EvalArgs) -> Result<()> {
    a.threads.apply();
    let Pretrained {
        model,
        metadata: meta,
        ..
    } = a.model.open()?;
    let data = open_data(&a.data, 0)?;
    let c = model.config();
    if data.test.image_shape()[0] != c.in_chans || data.test.classes() > c.num_classes {
        bail!(
            "the model takes {} channels and {} classes; {} has {} and {}",
            c.in_chans,
            c.num_classes,
            data.name,
            data.test.image_shape()[0],
            data.test.classes()
        );
    }
    let test = eval_loader(data.test.clone(), c.img_size, a.batch, 1)?;
    let ev = evaluate(&model, batches(&test))?;
    let (loss, acc) = (ev.loss, 100.0 * ev.accuracy);
    println!(
        "{}: {} images, loss {loss:.4}, accuracy {acc:.2}%",
        data.test_name, ev.images
    );
    for (k, name) in class_names(&meta, c.num_classes).iter().enumerate() {
        if let (Some(acc), (right, seen)) = (ev.class_accuracy(k), ev.per_class[k]) {
            println!("  {name:<14} {:>6.2}%  ({right}/{seen})", 100.0 * acc);
        }
    }
    Ok(())
}

fn predict(a: &PredictArgs) -> Result<()> {
    a.threads.apply();
    let Pretrained {
        model,
        source,
        metadata: meta,
    } = a.model.open()?;
    let timm = a.image.transform(&source, model.config().img_size);
    let classes = model.config().num_classes;
    let names = match &a.labels {
        Some(file) => {
            let names = tessera_data::read_class_names(file)?;
            if names.len() != classes {
                bail!(
                    "{}: {} class names for a head of {classes} classes",
                    file.display(),
                    names.len()
                );
            }
            names
        }
        None if classes == 1000 && !meta.contains_key("class_names") => match imagenet_names() {
            Some(file) => tessera_data::read_class_names(file)?,
            None => class_names(&meta, classes),
        },
        None => class_names(&meta, classes),
    };
    for path in &a.images {
        let (x, how) = read_image(path, model.config(), timm.as_ref())?;
        let top = top_k(&model, &x.unsqueeze(0)?, a.top_k)?;
        println!("{} ({how})", path.display());
        for (k, p) in &top[0] {
            println!("  {:>6.2}%  {}", 100.0 * p, names[*k]);
        }
    }
    Ok(())
}

/// ImageNet-1k's class list where it lies: `$TESSERA_DATA/imagenet-1k` or
/// `../shared/data/imagenet-1k`.
fn imagenet_names() -> Option<PathBuf> {
    let roots = [
        std::env::var_os("TESSERA_DATA").map(PathBuf::from),
        Some(PathBuf::from("../shared/data")),
    ];
    roots
        .into_iter()
        .flatten()
        .map(|r| {
            r.join("imagenet-1k")
                .join(tessera_data::IMAGENET_1K_SYNSETS)
        })
        .find(|p| p.is_file())
}

fn viz_cmd(a: &VizArgs) -> Result<()> {
    a.threads.apply();
    let Pretrained { model, source, .. } = a.model.open()?;
    let size = model.config().img_size;
    let timm = a.image_args.transform(&source, size);
    // Images for the attention distance: the test set's (or shapes), prepared.
    let data = open_data(&a.data, 0)?;
    let n = a.samples.clamp(1, data.test.len());
    let mut imgs = Vec::with_capacity(n);
    for i in 0..n {
        imgs.push(prepare_image(data.test.get(i)?.image, size)?);
    }
    let image = match &a.image {
        Some(path) => read_image(path, model.config(), timm.as_ref())?.0,
        None => imgs[0].clone(),
    };
    let images = Tensor::stack(&imgs.iter().collect::<Vec<_>>(), 0)?;
    let written = viz::save_figures(&model, &images, &image, a.class, a.ig_steps, &a.out)?;
    for p in &written {
        println!("wrote {}", p.display());
    }
    Ok(())
}
