//! The Vision Transformer with timm's parameter names.

use tessera_autograd::{Parameter, Var};
use tessera_nn::{AttnNames, Conv2d, LayerNorm, Linear, Module, MultiHeadAttention, Params};
use tessera_tensor::{Rng, Tensor};

use crate::config::{Pool, VitConfig};
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

    fn forward(&self, x: &Var) -> Result<Var> {
        let h = self.norm1.forward(x)?;
        let x = x.add(&self.attn.forward_qkv(&h, &h, &h, None, None, false)?.0)?;
        let h = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.gelu())?;
        Ok(x.add(&h)?)
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
        let tokens = c.num_patches() + usize::from(c.pool == Pool::ClassToken);
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
        Ok(VisionTransformer {
            config,
            patch_embed: Conv2d::new(c.channels, d, c.patch_size, c.patch_size, 0, true, rng),
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

    /// The token sequence before the encoder: patch projections `[B, N, D]`, the class
    /// token prepended, the position embedding added: `[B, N + 1, D]`.
    pub fn embed(&self, images: &Tensor) -> Result<Var> {
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
        // [B, D, H/P, W/P] -> [B, N, D].
        let x = self.patch_embed.forward(&Var::constant(images.clone()))?;
        let x = x.reshape(&[b, d, n])?.transpose(1, 2)?;
        let x = match &self.cls_token {
            Some(cls) => Var::concat(&[&cls.var().broadcast_to(&[b, 1, d])?, &x], 1)?,
            None => x,
        };
        Ok(x.add(&self.pos_embed.var())?)
    }

    /// Logits `[B, classes]` for images `[B, C, H, W]` (the pooled features `[B, D]`
    /// when the model has no head).
    pub fn forward(&self, images: &Tensor, _train: bool) -> Result<Var> {
        let mut x = self.embed(images)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // timm: the class token is read after the final norm; mean pooling comes first
        // and the norm (then named `fc_norm`) after it.
        let pooled = match self.config.pool {
            Pool::ClassToken => self.norm.forward(&x)?.narrow(1, 0, 1)?.squeeze(1)?,
            Pool::Mean => self.norm.forward(&x.mean(&[1], false)?)?,
        };
        match &self.head {
            Some(h) => Ok(h.forward(&pooled)?),
            None => Ok(pooled),
        }
    }
}

impl Params for VisionTransformer {
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>) {
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
