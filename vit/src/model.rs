//! The Vision Transformer with timm's parameter names.

use tessera_autograd::{Parameter, Var};
use tessera_nn::{
    AttnNames, BatchNorm2d, Buffer, Conv2d, LayerNorm, Linear, MaxPool2d, Module, ModuleT,
    MultiHeadAttention, Params,
};
use tessera_tensor::{Rng, Tensor, Window2d};

use crate::config::{Hybrid, Pool, VitConfig};
use crate::{input_err, Result};

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// One pre-norm encoder block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`, the MLP
/// `fc2(GELU(fc1(x)))` (timm's `Block`: `norm1`, `attn.qkv`, `attn.proj`, `norm2`,
/// `mlp.fc1`, `mlp.fc2`).
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: MultiHeadAttention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn new(c: &VitConfig, rng: &mut Rng) -> Result<Block> {
        Ok(Block {
            norm1: LayerNorm::new(c.embed_dim, c.eps),
            attn: MultiHeadAttention::new(c.embed_dim, c.heads, AttnNames::Timm, rng)?,
            norm2: LayerNorm::new(c.embed_dim, c.eps),
            fc1: Linear::new(c.embed_dim, c.mlp_dim, true, rng),
            fc2: Linear::new(c.mlp_dim, c.embed_dim, true, rng),
        })
    }

    /// The block's output and, on request, its attention probabilities `[B, H, T, T]`.
    fn forward(&self, x: &Var, probs: bool) -> Result<(Var, Option<Tensor>)> {
        let h = self.norm1.forward(x)?;
        let (a, p) = self.attn.forward_qkv(&h, &h, &h, None, None, probs)?;
        let x = x.add(&a)?;
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu())?;
        Ok((x.add(&h)?, p))
    }
}

/// A convolution without bias, batch norm and ReLU.
#[derive(Debug)]
struct ConvBn {
    conv: Conv2d,
    norm: BatchNorm2d,
}

impl ConvBn {
    fn forward(&self, x: &Var, train: bool) -> Result<Var> {
        Ok(self.norm.forward_t(&self.conv.forward(x)?, train)?.relu())
    }
}

impl Params for ConvBn {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.conv.collect_params(&join(prefix, "conv"), out);
        self.norm.collect_params(&join(prefix, "norm"), out);
    }

    fn collect_buffers(&self, prefix: &str, out: &mut Vec<(String, Buffer)>) {
        self.norm.collect_buffers(&join(prefix, "norm"), out);
    }
}

/// The hybrid model's CNN (see [`Hybrid`]): stem, max-pool, stages.
#[derive(Debug)]
struct Backbone {
    stem: ConvBn,
    pool: MaxPool2d,
    stages: Vec<ConvBn>,
}

impl Backbone {
    fn new(h: Hybrid, channels: usize, rng: &mut Rng) -> Backbone {
        let mut convs = h.convs(channels).into_iter().map(|(i, o, k, s)| {
            let conv = Conv2d::new(i, o, k, s, k / 2, false, rng);
            // He (fan-out) initialisation, as ResNets use.
            let std = (2.0 / (o * k * k) as f32).sqrt();
            let w = Tensor::randn(&[o, i, k, k], 0.0, std, rng);
            conv.weight.set(w).expect("same shape");
            ConvBn {
                conv,
                norm: BatchNorm2d::new(o),
            }
        });
        let stem = convs.next().expect("the stem is the first convolution");
        Backbone {
            stem,
            pool: MaxPool2d {
                window: Window2d::square(3).with_stride(2).with_padding(1),
            },
            stages: convs.collect(),
        }
    }

    fn forward(&self, x: &Var, train: bool) -> Result<Var> {
        let mut x = self.pool.forward(&self.stem.forward(x, train)?)?;
        for s in &self.stages {
            x = s.forward(&x, train)?;
        }
        Ok(x)
    }
}

impl Params for Backbone {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.stem.collect_params(&join(prefix, "stem"), out);
        for (i, s) in self.stages.iter().enumerate() {
            s.collect_params(&join(prefix, &format!("stages.{i}")), out);
        }
    }

    fn collect_buffers(&self, prefix: &str, out: &mut Vec<(String, Buffer)>) {
        self.stem.collect_buffers(&join(prefix, "stem"), out);
        for (i, s) in self.stages.iter().enumerate() {
            s.collect_buffers(&join(prefix, &format!("stages.{i}")), out);
        }
    }
}

impl Params for Block {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        self.norm1.collect_params(&join(prefix, "norm1"), out);
        self.attn.collect_params(&join(prefix, "attn"), out);
        self.norm2.collect_params(&join(prefix, "norm2"), out);
        self.fc1.collect_params(&join(prefix, "mlp.fc1"), out);
        self.fc2.collect_params(&join(prefix, "mlp.fc2"), out);
    }
}

/// The Vision Transformer (see the [crate documentation](crate)).
#[derive(Debug)]
pub struct VisionTransformer {
    config: VitConfig,
    backbone: Option<Backbone>,
    patch_embed: Conv2d,
    cls_token: Option<Parameter>,
    pos_embed: Parameter,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Option<Linear>,
}

impl VisionTransformer {
    /// A model with timm's initialisation: position embedding and class token
    /// truncated-normal (std 0.02, class token 1e-6), linear layers truncated-normal
    /// (std 0.02) with zero biases, the patch projection as a linear layer of `P²C` inputs.
    pub fn new(config: VitConfig, rng: &mut Rng) -> Result<VisionTransformer> {
        config.validate()?;
        let c = &config;
        let d = c.embed_dim;
        let tokens = c.num_tokens();
        let trunc = |shape: &[usize], std: f32, rng: &mut Rng| -> Result<Tensor> {
            Ok(tessera_nn::init::trunc_normal(shape, std, rng)?)
        };
        let mut blocks = Vec::with_capacity(c.depth);
        for _ in 0..c.depth {
            let b = Block::new(c, rng)?;
            for lin in [&b.fc1, &b.fc2] {
                lin.weight
                    .set(trunc(lin.weight.value().shape(), 0.02, rng)?)?;
                if let Some(bias) = &lin.bias {
                    bias.set(Tensor::zeros(bias.value().shape()))?;
                }
            }
            blocks.push(b);
        }
        let head = if c.classes > 0 {
            let head = Linear::new(d, c.classes, true, rng);
            head.weight.set(trunc(&[c.classes, d], 0.02, rng)?)?;
            if let Some(b) = &head.bias {
                b.set(Tensor::zeros(&[c.classes]))?;
            }
            Some(head)
        } else {
            None
        };
        let backbone = c.hybrid.map(|h| Backbone::new(h, c.channels, rng));
        let embed_in = c.hybrid.map_or(c.channels, |h| h.out_channels());
        Ok(VisionTransformer {
            config,
            backbone,
            patch_embed: Conv2d::new(embed_in, d, c.patch_size, c.patch_size, 0, true, rng),
            cls_token: (c.pool == Pool::ClassToken)
                .then(|| Parameter::new(Tensor::randn(&[1, 1, d], 0.0, 1e-6, rng))),
            pos_embed: Parameter::new(trunc(&[1, tokens, d], 0.02, rng)?),
            blocks,
            norm: LayerNorm::new(d, c.eps),
            head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Replaces the head by a new one for `classes` outputs (0: no head), initialised as
    /// [`VisionTransformer::new`] does: what fine-tuning on a new label set starts from.
    pub fn reset_head(&mut self, classes: usize, rng: &mut Rng) -> Result<()> {
        let d = self.config.embed_dim;
        self.head = if classes > 0 {
            let head = Linear::new(d, classes, true, rng);
            head.weight
                .set(tessera_nn::init::trunc_normal(&[classes, d], 0.02, rng)?)?;
            if let Some(b) = &head.bias {
                b.set(Tensor::zeros(&[classes]))?;
            }
            Some(head)
        } else {
            None
        };
        self.config.classes = classes;
        Ok(())
    }

    /// The learned position embedding `[1, T, D]`.
    pub fn pos_embed(&self) -> &Parameter {
        &self.pos_embed
    }

    /// The patch projection's weights `[D, C, P, P]`.
    pub fn patch_weight(&self) -> Tensor {
        self.patch_embed.weight.value()
    }

    /// Prepares the model for images of `image_size × image_size` (fine-tuning at a
    /// higher resolution, the paper's section 3.2): the position embeddings of the patch
    /// grid are resampled to the new grid exactly as timm's `resample_abs_pos_embed`
    /// does (bicubic, antialiased, `F.interpolate` semantics), the class token's is
    /// kept. The patch size stays, so the sequence grows.
    ///
    /// ```
    /// use tessera_tensor::Rng;
    /// use tessera_vit::{VisionTransformer, VitConfig};
    /// let c = VitConfig { image_size: 16, patch_size: 4, embed_dim: 8, depth: 1, heads: 2, mlp_dim: 16, classes: 3, ..VitConfig::preset("Ti/16")? };
    /// let mut model = VisionTransformer::new(c, &mut Rng::seed(0))?;
    /// model.resample_pos_embed(24)?;
    /// assert_eq!(model.pos_embed().value().shape(), &[1, 1 + 36, 8]);
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn resample_pos_embed(&mut self, image_size: usize) -> Result<()> {
        let c = self.config;
        let mut new = c;
        new.image_size = image_size;
        new.validate()?;
        let (g0, g1, d) = (c.grid(), new.grid(), c.embed_dim);
        let prefix = usize::from(c.pool == Pool::ClassToken);
        let pos = self.pos_embed.value();
        let grid = pos
            .narrow(1, prefix, g0 * g0)?
            .reshape(&[1, g0, g0, d])?
            .permute(&[0, 3, 1, 2])?
            .contiguous();
        let grid = tessera_data::resize(&grid, g1, g1, tessera_data::Filter::Bicubic, true)
            .map_err(|e| input_err("resample_pos_embed", e.to_string()))?;
        let grid = grid.permute(&[0, 2, 3, 1])?.reshape(&[1, g1 * g1, d])?;
        let pos = if prefix == 1 {
            Tensor::concat(&[&pos.narrow(1, 0, 1)?, &grid], 1)?
        } else {
            grid
        };
        self.set_pos_embed(pos, image_size)
    }

    /// Replaces the position embedding (and the image size it implies).
    fn set_pos_embed(&mut self, pos: Tensor, image_size: usize) -> Result<()> {
        let mut config = self.config;
        config.image_size = image_size;
        config.validate()?;
        let want = [1, config.num_tokens(), config.embed_dim];
        if pos.shape() != want {
            return Err(input_err(
                "VisionTransformer",
                format!("position embedding {:?} does not fit {want:?}", pos.shape()),
            ));
        }
        self.pos_embed = Parameter::new(pos);
        self.config = config;
        Ok(())
    }

    /// The token sequence before the encoder: patch projections `[B, N, D]`, the class
    /// token prepended, the position embedding added: `[B, N + 1, D]`. `train` only
    /// matters for the hybrid stem's batch norm.
    pub fn embed(&self, images: &Tensor, train: bool) -> Result<Var> {
        let c = &self.config;
        let &[b, ch, h, w] = images.shape() else {
            return Err(input_err(
                "VisionTransformer",
                format!("expected images [B, C, H, W], got {:?}", images.shape()),
            ));
        };
        if ch != c.channels || h != c.image_size || w != c.image_size {
            return Err(input_err(
                "VisionTransformer",
                format!(
                    "expected images [B, {}, {}, {}], got {:?}",
                    c.channels,
                    c.image_size,
                    c.image_size,
                    images.shape()
                ),
            ));
        }
        let d = c.embed_dim;
        let n = c.num_patches();
        let x = Var::constant(images.clone());
        let x = match &self.backbone {
            Some(cnn) => cnn.forward(&x, train)?,
            None => x,
        };
        // [B, D, H/P, W/P] -> [B, N, D].
        let x = self.patch_embed.forward(&x)?;
        let x = x.reshape(&[b, d, n])?.transpose(1, 2)?;
        let x = match &self.cls_token {
            Some(cls) => Var::concat(&[&cls.var().broadcast_to(&[b, 1, d])?, &x], 1)?,
            None => x,
        };
        Ok(x.add(&self.pos_embed.var())?)
    }

    /// Logits `[B, classes]` for images `[B, C, H, W]` (the pooled features `[B, D]`
    /// when the model has no head). `train` selects batch norm's training behaviour in
    /// the hybrid stem.
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Var> {
        Ok(self.run(images, train, false)?.0)
    }

    /// Evaluation-mode logits and the attention probabilities of every block,
    /// `[B, heads, T, T]` each (token 0 is the class token when there is one): what the
    /// attention-distance and rollout pictures read.
    pub fn forward_with_attention(&self, images: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let (out, probs) = tessera_autograd::no_grad(|| self.run(images, false, true))?;
        Ok((out.value().clone(), probs))
    }

    fn run(&self, images: &Tensor, train: bool, want_probs: bool) -> Result<(Var, Vec<Tensor>)> {
        let mut x = self.embed(images, train)?;
        let mut probs = Vec::new();
        for block in &self.blocks {
            let (y, p) = block.forward(&x, want_probs)?;
            x = y;
            probs.extend(p);
        }
        // timm: the class token is read after the final norm; mean pooling comes first
        // and the norm (then named `fc_norm`) after it.
        let pooled = match self.config.pool {
            Pool::ClassToken => self.norm.forward(&x)?.narrow(1, 0, 1)?.squeeze(1)?,
            Pool::Mean => self.norm.forward(&x.mean(&[1], false)?)?,
        };
        let out = match &self.head {
            Some(h) => h.forward(&pooled)?,
            None => pooled,
        };
        Ok((out, probs))
    }
}

impl Params for VisionTransformer {
    fn collect_buffers(&self, prefix: &str, out: &mut Vec<(String, Buffer)>) {
        if let Some(cnn) = &self.backbone {
            cnn.collect_buffers(&join(prefix, "patch_embed.backbone"), out);
        }
    }

    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
        if let Some(cnn) = &self.backbone {
            cnn.collect_params(&join(prefix, "patch_embed.backbone"), out);
        }
        self.patch_embed
            .collect_params(&join(prefix, "patch_embed.proj"), out);
        if let Some(cls) = &self.cls_token {
            out.push((join(prefix, "cls_token"), cls.clone()));
        }
        out.push((join(prefix, "pos_embed"), self.pos_embed.clone()));
        for (i, b) in self.blocks.iter().enumerate() {
            b.collect_params(&join(prefix, &format!("blocks.{i}")), out);
        }
        let norm = if self.config.pool == Pool::Mean {
            "fc_norm"
        } else {
            "norm"
        };
        self.norm.collect_params(&join(prefix, norm), out);
        if let Some(h) = &self.head {
            h.collect_params(&join(prefix, "head"), out);
        }
    }
}
