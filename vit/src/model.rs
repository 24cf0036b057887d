//! The Vision Transformer, in the paper's order (Dosovitskiy et al., 2021, section 3.1,
//! equations 1 to 4): patches and their linear projection, the class token, position
//! embeddings, the encoder blocks, the head. Names are timm's, by construction.

use tessera_autograd::{Parameter, Var};
use tessera_nn::{
    AttnNames, Init, LayerNorm, Linear, Module, MultiHeadAttention, Params, VarBuilder, VarMap,
};
use tessera_tensor::{Rng, Tensor};

use crate::config::{GlobalPool, VitConfig};
use crate::hybrid::Backbone;
use crate::{Error, Result};

/// timm's initialiser of every linear layer of the MLPs and of the head: truncated
/// normal, std 0.02, zero bias.
const TRUNC_002: Init = Init::TruncNormal { std: 0.02 };

/// Patches and their linear projection (the paper's equation 1, `x_p E`): a stride-`P`
/// convolution with `[D, C, P, P]` weights (`proj`), as timm's `PatchEmbed` computes it;
/// for the hybrid model (section 3.1, timm's `HybridEmbed`) the patches are cut from a
/// CNN's feature map (`backbone`).
///
/// # Shapes
/// `[B, C, H, W] -> [B, N, D]`, `N = (H/P)·(W/P)` (the feature map's for a hybrid).
#[derive(Debug)]
struct PatchEmbed {
    backbone: Option<Backbone>,
    proj: tessera_nn::Conv2d,
}

impl PatchEmbed {
    /// PyTorch's default initialisation of the projection (timm keeps it).
    fn new(vb: &VarBuilder, c: &VitConfig) -> tessera_nn::Result<PatchEmbed> {
        let backbone = c
            .hybrid
            .map(|h| Backbone::new(&vb.pp("backbone"), h, c.in_chans))
            .transpose()?;
        let in_chans = c.hybrid.map_or(c.in_chans, |h| h.out_channels());
        let (d, p) = (c.embed_dim, c.patch_size);
        let proj = tessera_nn::Conv2d::new(&vb.pp("proj"), in_chans, d, p, p, 0, true)?;
        Ok(PatchEmbed { backbone, proj })
    }

    /// `train` matters for the hybrid stem's batch norm only.
    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        let x = match &self.backbone {
            Some(cnn) => cnn.forward_t(x, train)?,
            None => x.clone(),
        };
        let x = self.proj.forward(&x)?; // (B, D, H/P, W/P)
        let (b, d) = (x.shape()[0], x.shape()[1]);
        let n = x.shape()[2] * x.shape()[3];
        Ok(x.reshape(&[b, d, n])?.transpose(1, 2)?) // (B, N, D)
    }
}

/// The MLP of an encoder block (the paper's section 3.1: two layers with a GELU
/// non-linearity): `fc2(GELU(fc1(x)))` (timm's `Mlp`: `fc1`, `fc2`).
///
/// # Shapes
/// `[B, T, D] -> [B, T, D]`.
#[derive(Debug)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(vb: &VarBuilder, dim: usize, hidden: usize) -> tessera_nn::Result<Mlp> {
        Ok(Mlp {
            fc1: Linear::with_init(&vb.pp("fc1"), dim, hidden, TRUNC_002, Some(Init::Zeros))?,
            fc2: Linear::with_init(&vb.pp("fc2"), hidden, dim, TRUNC_002, Some(Init::Zeros))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Var) -> tessera_nn::Result<Var> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu())
    }
}

/// One pre-norm encoder block (the paper's equations 2 and 3): `x + MSA(LN(x))`, then
/// `x + MLP(LN(x))` (timm's `Block`: `norm1`, `attn.qkv`, `attn.proj`, `norm2`,
/// `mlp.fc1`, `mlp.fc2`). The attention has PyTorch's initialisation.
///
/// # Shapes
/// `[B, T, D] -> [B, T, D]`.
#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    attn: MultiHeadAttention,
    norm2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn new(vb: &VarBuilder, c: &VitConfig) -> tessera_nn::Result<Block> {
        let d = c.embed_dim;
        Ok(Block {
            norm1: LayerNorm::new(&vb.pp("norm1"), d, c.eps)?,
            attn: MultiHeadAttention::new(&vb.pp("attn"), d, c.num_heads, AttnNames::Timm)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), d, c.eps)?,
            mlp: Mlp::new(&vb.pp("mlp"), d, c.mlp_hidden_dim())?,
        })
    }

    /// The block's output and, on request, its attention probabilities `[B, H, T, T]`.
    fn forward_probs(&self, x: &Var, probs: bool) -> tessera_nn::Result<(Var, Option<Tensor>)> {
        let h = self.norm1.forward(x)?;
        let (a, p) = self.attn.forward_qkv(&h, &h, &h, None, None, probs)?;
        let x = x.add(&a)?;
        let y = x.add(&self.mlp.forward(&self.norm2.forward(&x)?)?)?;
        Ok((y, p))
    }
}

impl Module for Block {
    fn forward(&self, x: &Var) -> tessera_nn::Result<Var> {
        Ok(self.forward_probs(x, false)?.0)
    }
}

/// The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words",
/// section 3.1; see the [crate documentation](crate)), with timm's parameter names and
/// initialisation.
///
/// PyTorch equivalent: `timm.models.vision_transformer.VisionTransformer`.
#[derive(Debug)]
pub struct VisionTransformer {
    config: VitConfig,
    vars: VarMap,
    /// The path the model was built at (empty at the root of its store).
    path: String,
    patch_embed: PatchEmbed,
    cls_token: Option<Parameter>,
    pos_embed: Parameter,
    blocks: Vec<Block>,
    /// `norm`, or `fc_norm` after mean pooling.
    norm: LayerNorm,
    head: Option<Linear>,
}

impl VisionTransformer {
    /// A model with timm's initialisation, drawn from `rng` (left advanced): position
    /// embedding truncated-normal (std 0.02), class token normal (std 1e-6), MLP and
    /// head weights truncated-normal (std 0.02) with zero biases, the patch projection
    /// and the attention with PyTorch's defaults. Each parameter is drawn once.
    pub fn new(config: VitConfig, rng: &mut Rng) -> Result<VisionTransformer> {
        config.validate()?;
        let vars = VarMap::new();
        Ok(VarBuilder::with_rng(&vars, rng, |vb| {
            VisionTransformer::build_valid(vb, config)
        })?)
    }

    /// A model whose parameters and buffers `vb` creates at its path: drawn by their
    /// initialisers, or zeros for a model that is loaded next ([`VarBuilder::zeros`],
    /// which draws nothing).
    ///
    /// ```
    /// use tessera_nn::{Params, VarBuilder, VarMap};
    /// use tessera_vit::{VisionTransformer, VitConfig};
    /// let vars = VarMap::new();
    /// let c = VitConfig { img_size: 8, patch_size: 4, depth: 1, embed_dim: 8, num_heads: 2, ..Default::default() };
    /// let model = VisionTransformer::build(&VarBuilder::zeros(&vars), c)?;
    /// assert_eq!(vars.names()[..4], ["patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"]);
    /// assert_eq!(model.num_parameters(), c.num_parameters());
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn build(vb: &VarBuilder, config: VitConfig) -> Result<VisionTransformer> {
        config.validate()?;
        Ok(VisionTransformer::build_valid(vb, config)?)
    }

    /// [`VisionTransformer::build`] of a validated configuration.
    fn build_valid(vb: &VarBuilder, config: VitConfig) -> tessera_nn::Result<VisionTransformer> {
        let c = &config;
        let d = c.embed_dim;
        // Equation 1: patches, their projection, the class token, the position embedding.
        let patch_embed = PatchEmbed::new(&vb.pp("patch_embed"), c)?;
        let cls_token = c
            .class_token()
            .then(|| {
                vb.param(
                    "cls_token",
                    &[1, 1, d],
                    Init::Normal {
                        mean: 0.0,
                        std: 1e-6,
                    },
                )
            })
            .transpose()?;
        let pos_embed = vb.param("pos_embed", &[1, c.num_tokens(), d], TRUNC_002)?;
        // Equations 2 and 3: the encoder.
        let blocks = (0..c.depth)
            .map(|i| Block::new(&vb.pp("blocks").pp(i), c))
            .collect::<tessera_nn::Result<Vec<_>>>()?;
        // Equation 4: the final norm, then the head.
        let norm_name = match c.global_pool {
            GlobalPool::Token => "norm",
            GlobalPool::Avg => "fc_norm",
        };
        let norm = LayerNorm::new(&vb.pp(norm_name), d, c.eps)?;
        let head = build_head(vb, d, c.num_classes)?;
        Ok(VisionTransformer {
            config,
            vars: vb.vars().clone(),
            path: vb.path().to_string(),
            patch_embed,
            cls_token,
            pos_embed,
            blocks,
            norm,
            head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// The full name of the model's parameter `name` in its store (`name` itself unless
    /// the model was built below the root of a larger model).
    pub(crate) fn param_name(&self, name: &str) -> String {
        VarBuilder::join(&self.path, name)
    }

    /// The learned position embedding `[1, T, D]`.
    pub fn pos_embed(&self) -> &Parameter {
        &self.pos_embed
    }

    /// The patch projection's weights `[D, C, P, P]`.
    pub fn patch_weight(&self) -> Tensor {
        self.patch_embed.proj.weight.value()
    }

    /// Replaces the head by a new one for `num_classes` outputs (0: no head), drawn from
    /// `rng` as [`VisionTransformer::new`] draws it: what fine-tuning on a new label set
    /// starts from. The old `head` leaves the store.
    pub fn reset_head(&mut self, num_classes: usize, rng: &mut Rng) -> Result<()> {
        self.vars.remove(&self.param_name("head"));
        let d = self.config.embed_dim;
        self.head = VarBuilder::with_rng(&self.vars, rng, |root| {
            build_head(&root.pp(&self.path), d, num_classes)
        })?;
        self.config.num_classes = num_classes;
        Ok(())
    }

    /// Prepares the model for images of `img_size × img_size` (fine-tuning at a higher
    /// resolution, the paper's section 3.2): the position embeddings of the patch grid
    /// are resampled to the new grid exactly as timm's `resample_abs_pos_embed` does
    /// (bicubic, antialiased, `F.interpolate` semantics), the class token's is kept. The
    /// patch size stays, so the sequence grows.
    ///
    /// ```
    /// use tessera_tensor::Rng;
    /// use tessera_vit::{VisionTransformer, VitConfig};
    /// let c = VitConfig { img_size: 16, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3, ..VitConfig::vit_tiny_patch16_224() };
    /// let mut model = VisionTransformer::new(c, &mut Rng::seed(0))?;
    /// model.resample_pos_embed(24)?;
    /// assert_eq!(model.pos_embed().value().shape(), &[1, 1 + 36, 8]);
    /// assert_eq!(model.config().img_size, 24);
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn resample_pos_embed(&mut self, img_size: usize) -> Result<()> {
        let c = self.config;
        let new = VitConfig { img_size, ..c };
        new.validate()?;
        let (g0, g1, d) = (c.grid(), new.grid(), c.embed_dim);
        let prefix = usize::from(c.class_token());
        let pos = self.pos_embed.value();
        let grid = pos
            .narrow(1, prefix, g0 * g0)? // (1, g0·g0, D)
            .reshape(&[1, g0, g0, d])?
            .permute(&[0, 3, 1, 2])? // (1, D, g0, g0)
            .contiguous();
        let grid = tessera_data::resize(&grid, g1, g1, tessera_data::Filter::Bicubic, true)?;
        let grid = grid.permute(&[0, 2, 3, 1])?.reshape(&[1, g1 * g1, d])?; // (1, g1·g1, D)
        let pos = if prefix == 1 {
            Tensor::concat(&[&pos.narrow(1, 0, 1)?, &grid], 1)?
        } else {
            grid
        };
        let want = [1, new.num_tokens(), d];
        if pos.shape() != want {
            return Err(Error::shape(
                "resample_pos_embed",
                format!("{want:?}"),
                pos.shape(),
            ));
        }
        let pos = Parameter::new(pos);
        self.vars
            .replace_parameter(&self.param_name("pos_embed"), pos.clone())?;
        self.pos_embed = pos;
        self.config = new;
        Ok(())
    }

    /// Replaces the head by a zero-initialised one of `num_classes` outputs (0: no head):
    /// the paper's fine-tuning head ("we remove the pre-trained prediction head and
    /// attach a zero-initialized D × K feedforward layer", section 3.2). The old `head`
    /// leaves the store.
    ///
    /// ```
    /// use tessera_tensor::{Rng, Tensor};
    /// use tessera_vit::{VisionTransformer, VitConfig};
    /// let c = VitConfig { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3, ..Default::default() };
    /// let mut model = VisionTransformer::new(c, &mut Rng::seed(0))?;
    /// model.zero_head(5)?;
    /// let logits = model.forward(&Tensor::ones(&[1, 3, 8, 8]), false)?;
    /// assert_eq!(logits.value().to_vec(), vec![0.0; 5]);
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn zero_head(&mut self, num_classes: usize) -> Result<()> {
        self.vars.remove(&self.param_name("head"));
        let d = self.config.embed_dim;
        let vb = VarBuilder::zeros(&self.vars);
        self.head = build_head(&vb.pp(&self.path), d, num_classes)?;
        self.config.num_classes = num_classes;
        Ok(())
    }

    /// Adapts the first convolution (the patch projection, or the hybrid stem's first
    /// convolution) to images of `in_chans` channels, as timm's `adapt_input_conv` does
    /// when a pretrained model is created with another `in_chans`: to one channel the
    /// filters are summed over their channels; from three channels to `n` they are
    /// repeated `⌈n/3⌉` times, cut to `n` channels and scaled by `3/n`. Other changes
    /// are an error.
    ///
    /// ```
    /// use tessera_tensor::Rng;
    /// use tessera_vit::{VisionTransformer, VitConfig};
    /// let c = VitConfig { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, num_classes: 3, ..Default::default() };
    /// let mut model = VisionTransformer::new(c, &mut Rng::seed(0))?;
    /// let rgb = model.patch_weight();
    /// model.adapt_in_chans(1)?;
    /// let grey = model.patch_weight();
    /// assert_eq!(grey.shape(), &[8, 1, 4, 4]);
    /// assert_eq!(grey.to_vec(), rgb.sum(&[1], true)?.to_vec());
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn adapt_in_chans(&mut self, in_chans: usize) -> Result<()> {
        let from = self.config.in_chans;
        if from == in_chans {
            return Ok(());
        }
        let new = VitConfig {
            in_chans,
            ..self.config
        };
        new.validate()?;
        let name = self.param_name(match self.patch_embed.backbone {
            Some(_) => "patch_embed.backbone.stem.conv.weight",
            None => "patch_embed.proj.weight",
        });
        let conv = match &mut self.patch_embed.backbone {
            Some(cnn) => cnn.first_conv_mut(),
            None => &mut self.patch_embed.proj,
        };
        let w = conv.weight.value(); // [O, from, k, k]
        let adapted = if in_chans == 1 && from <= 3 {
            w.sum(&[1], true)?
        } else if from == 3 {
            let copies = vec![&w; in_chans.div_ceil(3)];
            Tensor::concat(&copies, 1)?
                .narrow(1, 0, in_chans)?
                .mul_scalar(3.0 / in_chans as f32)
        } else {
            return Err(Error::setting(
                "VisionTransformer::adapt_in_chans",
                "in_chans",
                in_chans,
                format!(
                    "a {from}-channel stem converts to 1 channel, and only a 3-channel stem \
                     to others (as timm's adapt_input_conv)"
                ),
            ));
        };
        let p = Parameter::new(adapted.contiguous());
        self.vars.replace_parameter(&name, p.clone())?;
        conv.weight = p;
        self.config = new;
        Ok(())
    }

    /// The token sequence before the encoder (the paper's equation 1): patch projections
    /// `[B, N, D]`, the class token prepended, the position embedding added. `train` only
    /// matters for the hybrid stem's batch norm.
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> [B, T, D]`, `T = N + 1` with a class token, else `N`.
    pub fn embed(&self, images: &Tensor, train: bool) -> Result<Var> {
        self.embed_var(&Var::constant(images.clone()), train)
    }

    /// [`VisionTransformer::embed`] of images given as a variable, so that gradients
    /// reach them (saliency maps, integrated gradients, adversarial examples).
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> [B, T, D]`.
    pub fn embed_var(&self, images: &Var, train: bool) -> Result<Var> {
        let c = &self.config;
        let (ch, s) = (c.in_chans, c.img_size);
        let shape = images.shape();
        if shape.len() != 4 || shape[1..] != [ch, s, s] {
            let expected = format!("images [B, {ch}, {s}, {s}]");
            return Err(Error::shape("VisionTransformer", expected, shape));
        }
        let b = shape[0];
        let x = self.patch_embed.forward_t(images, train)?; // (B, N, D)
        let d = c.embed_dim;
        let x = match &self.cls_token {
            Some(cls) => Var::concat(&[&cls.var().broadcast_to(&[b, 1, d])?, &x], 1)?, // (B, N+1, D)
            None => x,
        };
        Ok(x.add(&self.pos_embed.var())?)
    }

    /// The encoder's output (timm's `forward_features`): [`VisionTransformer::embed`],
    /// the blocks, then the final `norm` (with mean pooling timm applies its `fc_norm`
    /// after pooling, in [`VisionTransformer::forward_head`]).
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> [B, T, D]`.
    pub fn forward_features(&self, images: &Tensor, train: bool) -> Result<Var> {
        Ok(self
            .features(&Var::constant(images.clone()), train, false)?
            .0)
    }

    /// timm's `forward_intermediates(x, indices, norm, output_fmt="NLC",
    /// return_prefix_tokens=True)`: the final features (as
    /// [`VisionTransformer::forward_features`]) and the output of each block in `indices`
    /// (counted from 0; in block order, as timm returns them), the class token first; with
    /// `norm`, each passed through the
    /// final `norm` as timm does. Images are a variable, so gradients reach them.
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> ([B, T, D], indices.len() × [B, T, D])`.
    pub fn forward_intermediates(
        &self,
        images: &Var,
        indices: &[usize],
        norm: bool,
    ) -> Result<(Var, Vec<Var>)> {
        let depth = self.blocks.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= depth) {
            let expected = format!("block indices below the depth {depth}");
            return Err(Error::shape("forward_intermediates", expected, &[bad]));
        }
        let mut out = Vec::with_capacity(indices.len());
        let x = self.run_blocks(images, false, false, |i, x, _| {
            if indices.contains(&i) {
                out.push(x.clone());
            }
        })?;
        if norm {
            out = out
                .iter()
                .map(|x| self.norm.forward(x))
                .collect::<tessera_nn::Result<_>>()?;
        }
        Ok((x, out))
    }

    /// The pooled features before the head (timm's `forward_head(x, pre_logits=True)`):
    /// the class token, or the mean of the tokens followed by `fc_norm`.
    ///
    /// # Shapes
    /// `features [B, T, D] -> [B, D]`.
    pub fn forward_pre_logits(&self, features: &Var) -> Result<Var> {
        Ok(match self.config.global_pool {
            GlobalPool::Token => features.narrow(1, 0, 1)?.squeeze(1)?, // (B, D)
            GlobalPool::Avg => self.norm.forward(&features.mean(&[1], false)?)?, // (B, D)
        })
    }

    /// Logits for images given as a variable, so that `∂loss/∂image` exists (evaluation
    /// mode unless `train`).
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> [B, num_classes]`.
    pub fn forward_var(&self, images: &Var, train: bool) -> Result<Var> {
        self.forward_head(&self.features(images, train, false)?.0)
    }

    /// Pooling and the head (timm's `forward_head`): the class token, or the mean of the
    /// tokens followed by `fc_norm`, then the linear head (none with 0 classes).
    ///
    /// # Shapes
    /// `features [B, T, D] -> [B, num_classes]` (`[B, D]` without a head).
    pub fn forward_head(&self, features: &Var) -> Result<Var> {
        let pooled = self.forward_pre_logits(features)?;
        Ok(match &self.head {
            Some(h) => h.forward(&pooled)?,
            None => pooled,
        })
    }

    /// Logits for images (the pooled features when the model has no head). `train`
    /// selects batch norm's training behaviour in the hybrid stem.
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> [B, num_classes]` (`[B, D]` without a head).
    pub fn forward(&self, images: &Tensor, train: bool) -> Result<Var> {
        self.forward_head(&self.forward_features(images, train)?)
    }

    /// Evaluation-mode logits and the attention probabilities of every block (token 0
    /// is the class token when there is one): what the attention-distance and rollout
    /// pictures read.
    ///
    /// # Shapes
    /// `images [B, C, H, W] -> ([B, num_classes], depth × [B, num_heads, T, T])`.
    pub fn forward_with_attention(&self, images: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        tessera_autograd::no_grad(|| {
            let (x, probs) = self.features(&Var::constant(images.clone()), false, true)?;
            Ok((self.forward_head(&x)?.value().clone(), probs))
        })
    }

    /// Embedding, blocks and (with the class token) the final norm; on request the
    /// attention probabilities of every block.
    fn features(&self, images: &Var, train: bool, want_probs: bool) -> Result<(Var, Vec<Tensor>)> {
        let mut probs = Vec::new();
        let x = self.run_blocks(images, train, want_probs, |_, _, p| probs.extend(p))?;
        Ok((x, probs))
    }

    /// Embedding, the blocks and (with the class token) the final norm, calling `each`
    /// with every block's index, output and (on request) attention probabilities.
    fn run_blocks(
        &self,
        images: &Var,
        train: bool,
        want_probs: bool,
        mut each: impl FnMut(usize, &Var, Option<Tensor>),
    ) -> Result<Var> {
        let mut x = self.embed_var(images, train)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let (y, p) = block.forward_probs(&x, want_probs)?;
            x = y;
            each(i, &x, p);
        }
        if self.config.global_pool == GlobalPool::Token {
            x = self.norm.forward(&x)?;
        }
        Ok(x)
    }
}

impl Params for VisionTransformer {
    fn vars(&self) -> &VarMap {
        &self.vars
    }
}

/// The linear head at `head`, truncated-normal (std 0.02) with a zero bias; none for 0
/// classes.
fn build_head(
    vb: &VarBuilder,
    dim: usize,
    num_classes: usize,
) -> tessera_nn::Result<Option<Linear>> {
    (num_classes > 0)
        .then(|| {
            Linear::with_init(
                &vb.pp("head"),
                dim,
                num_classes,
                TRUNC_002,
                Some(Init::Zeros),
            )
        })
        .transpose()
}
