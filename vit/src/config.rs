//! The model's shape, with timm's field names, and the paper's and timm's
//! configurations as named presets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the head reads (timm's `global_pool`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalPool {
    /// `"token"`: the class token, read after the final `norm` (the paper's and timm's
    /// default).
    #[default]
    Token,
    /// `"avg"`: the mean of the patch tokens, then the final norm (timm's
    /// `global_pool="avg", class_token=False`, whose norm is named `fc_norm`). The model
    /// has no class token.
    Avg,
}

impl GlobalPool {
    /// timm's name of the value: `"token"` or `"avg"`.
    pub fn as_str(self) -> &'static str {
        match self {
            GlobalPool::Token => "token",
            GlobalPool::Avg => "avg",
        }
    }
}

impl fmt::Display for GlobalPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GlobalPool {
    type Err = Error;

    /// `"token"` or `"avg"` (timm's values).
    ///
    /// ```
    /// use tessera_vit::GlobalPool;
    /// assert_eq!("avg".parse::<GlobalPool>()?, GlobalPool::Avg);
    /// assert!("max".parse::<GlobalPool>().is_err());
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<GlobalPool> {
        match s {
            "token" => Ok(GlobalPool::Token),
            "avg" => Ok(GlobalPool::Avg),
            other => Err(Error::setting(
                "GlobalPool",
                "global_pool",
                format!("{other:?}"),
                "must be \"token\" or \"avg\"",
            )),
        }
    }
}

/// The hybrid input of the paper (section 3.1): the "patches" are the positions of a CNN
/// feature map. The stem here is ResNet's: a 7×7 stride-2 convolution, batch norm, ReLU
/// and a 3×3 stride-2 max-pool (÷4), then `stages` stages of a 3×3 convolution
/// (stride 1 for the first, 2 after it), batch norm and ReLU, the width doubling each
/// stage. With 3 stages the map is the image ÷16, as ViT-R50+B/16's. The patch
/// embedding then cuts the map into `patch_size` patches (1 for the paper's 1×1).
///
/// Parameter names: `patch_embed.backbone.stem.conv`, `patch_embed.backbone.stem.norm`,
/// `patch_embed.backbone.stages.{i}.conv`, `patch_embed.backbone.stages.{i}.norm`
/// (timm's `HybridEmbed` around a ResNet-like backbone), then `patch_embed.proj`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hybrid {
    /// Channels of the stem (and of the first stage).
    pub width: usize,
    /// Convolution stages after the stem.
    pub stages: usize,
}

impl Hybrid {
    /// How much smaller than the image the feature map is: 4 for the stem, then ×2 for
    /// every stage after the first.
    pub fn reduction(&self) -> usize {
        4 << self.stages.saturating_sub(1)
    }

    /// Channels of the feature map.
    pub fn out_channels(&self) -> usize {
        self.width << self.stages.saturating_sub(1)
    }

    /// `(in, out, kernel, stride)` of each convolution, stem first.
    pub fn convs(&self, in_chans: usize) -> Vec<(usize, usize, usize, usize)> {
        let mut v = vec![(in_chans, self.width, 7, 2)];
        let mut c = self.width;
        for i in 0..self.stages {
            let out = self.width << i;
            v.push((c, out, 3, if i == 0 { 1 } else { 2 }));
            c = out;
        }
        v
    }

    /// Trainable parameters of the stem (convolutions without bias, batch-norm γ and β).
    pub fn num_parameters(&self, in_chans: usize) -> usize {
        self.convs(in_chans)
            .iter()
            .map(|&(i, o, k, _)| i * o * k * k + 2 * o)
            .sum()
    }
}

/// The shape of a [`crate::VisionTransformer`], with the names of timm's
/// `VisionTransformer` arguments. The default is timm's (and the paper's ViT-B/16 at
/// 224×224 with 1,000 classes).
///
/// ```
/// use tessera_vit::{GlobalPool, VitConfig};
/// let c = VitConfig { img_size: 32, patch_size: 4, num_classes: 10, ..VitConfig::vit_tiny_patch16_224() };
/// assert_eq!((c.num_patches(), c.num_tokens(), c.mlp_hidden_dim()), (64, 65, 768));
/// assert_eq!(c.global_pool, GlobalPool::Token);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Input height and width (default 224).
    pub img_size: usize,
    /// Patch height and width `P` (default 16).
    pub patch_size: usize,
    /// Input channels `C` (default 3).
    pub in_chans: usize,
    /// Token width `D` (default 768).
    pub embed_dim: usize,
    /// Encoder blocks (default 12).
    pub depth: usize,
    /// Attention heads (default 12).
    pub num_heads: usize,
    /// Hidden width of the MLP over `D` (default 4.0; timm takes `int(D · mlp_ratio)`).
    pub mlp_ratio: f64,
    /// The MLP's hidden width, when given exactly instead of by `mlp_ratio` (default
    /// `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_dim: Option<usize>,
    /// Output classes (default 1000); 0 for no head (the model then returns the pooled
    /// features, as timm's `num_classes=0`).
    pub num_classes: usize,
    /// What the head reads (default [`GlobalPool::Token`]).
    pub global_pool: GlobalPool,
    /// LayerNorm epsilon (timm's ViT: 1e-6).
    pub eps: f32,
    /// A CNN stem whose feature map gives the patches (the hybrid model); `None` (the
    /// default) cuts the image itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hybrid: Option<Hybrid>,
}

impl Default for VitConfig {
    /// timm's `VisionTransformer()` defaults: [`VitConfig::vit_base_patch16_224`].
    fn default() -> VitConfig {
        VitConfig::vit_base_patch16_224()
    }
}

/// A named configuration: timm's model name, the paper's short name and the
/// constructor (see [`VitConfig::presets`]).
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// timm's model name (`vit_base_patch16_224`).
    pub name: &'static str,
    /// The paper's short name, size and patch (`B/16`), with `@384` for the 384×384
    /// fine-tuning resolution (`B/16@384`).
    pub short: &'static str,
    /// The configuration.
    pub config: fn() -> VitConfig,
}

/// Every preset, in the order of the paper's Table 1 (timm's Ti and S first).
const PRESETS: &[Preset] = &[
    Preset {
        name: "vit_tiny_patch16_224",
        short: "Ti/16",
        config: VitConfig::vit_tiny_patch16_224,
    },
    Preset {
        name: "vit_tiny_patch16_384",
        short: "Ti/16@384",
        config: VitConfig::vit_tiny_patch16_384,
    },
    Preset {
        name: "vit_small_patch32_224",
        short: "S/32",
        config: VitConfig::vit_small_patch32_224,
    },
    Preset {
        name: "vit_small_patch32_384",
        short: "S/32@384",
        config: VitConfig::vit_small_patch32_384,
    },
    Preset {
        name: "vit_small_patch16_224",
        short: "S/16",
        config: VitConfig::vit_small_patch16_224,
    },
    Preset {
        name: "vit_small_patch16_384",
        short: "S/16@384",
        config: VitConfig::vit_small_patch16_384,
    },
    Preset {
        name: "vit_base_patch32_224",
        short: "B/32",
        config: VitConfig::vit_base_patch32_224,
    },
    Preset {
        name: "vit_base_patch32_384",
        short: "B/32@384",
        config: VitConfig::vit_base_patch32_384,
    },
    Preset {
        name: "vit_base_patch16_224",
        short: "B/16",
        config: VitConfig::vit_base_patch16_224,
    },
    Preset {
        name: "vit_base_patch16_384",
        short: "B/16@384",
        config: VitConfig::vit_base_patch16_384,
    },
    Preset {
        name: "vit_large_patch32_224",
        short: "L/32",
        config: VitConfig::vit_large_patch32_224,
    },
    Preset {
        name: "vit_large_patch32_384",
        short: "L/32@384",
        config: VitConfig::vit_large_patch32_384,
    },
    Preset {
        name: "vit_large_patch16_224",
        short: "L/16",
        config: VitConfig::vit_large_patch16_224,
    },
    Preset {
        name: "vit_large_patch16_384",
        short: "L/16@384",
        config: VitConfig::vit_large_patch16_384,
    },
    Preset {
        name: "vit_huge_patch14_224",
        short: "H/14",
        config: VitConfig::vit_huge_patch14_224,
    },
];

impl VitConfig {
    /// A plain ViT of timm's layout: 3 channels, 1,000 classes, class token, MLP ratio
    /// 4, LayerNorm eps 1e-6.
    const fn timm(
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
        patch_size: usize,
        img_size: usize,
    ) -> VitConfig {
        VitConfig {
            img_size,
            patch_size,
            in_chans: 3,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: 4.0,
            mlp_dim: None,
            num_classes: 1000,
            global_pool: GlobalPool::Token,
            eps: 1e-6,
            hybrid: None,
        }
    }

    /// ViT-Ti/16 at 224×224: D 192, 12 blocks, 3 heads, MLP 768 (not in the paper's
    /// Table 1; DeiT-Ti's shape, timm's `vit_tiny_patch16_224`), 5,717,416 parameters.
    pub const fn vit_tiny_patch16_224() -> VitConfig {
        VitConfig::timm(192, 12, 3, 16, 224)
    }

    /// ViT-Ti/16 at 384×384 (timm's `vit_tiny_patch16_384`).
    pub const fn vit_tiny_patch16_384() -> VitConfig {
        VitConfig::timm(192, 12, 3, 16, 384)
    }

    /// ViT-S/32 at 224×224: D 384, 12 blocks, 6 heads, MLP 1536 (not in the paper's
    /// Table 1; DeiT-S's shape, timm's `vit_small_patch32_224`).
    pub const fn vit_small_patch32_224() -> VitConfig {
        VitConfig::timm(384, 12, 6, 32, 224)
    }

    /// ViT-S/32 at 384×384 (timm's `vit_small_patch32_384`).
    pub const fn vit_small_patch32_384() -> VitConfig {
        VitConfig::timm(384, 12, 6, 32, 384)
    }

    /// ViT-S/16 at 224×224: D 384, 12 blocks, 6 heads, MLP 1536 (not in the paper's
    /// Table 1; timm's `vit_small_patch16_224`), 22,050,664 parameters.
    pub const fn vit_small_patch16_224() -> VitConfig {
        VitConfig::timm(384, 12, 6, 16, 224)
    }

    /// ViT-S/16 at 384×384 (timm's `vit_small_patch16_384`).
    pub const fn vit_small_patch16_384() -> VitConfig {
        VitConfig::timm(384, 12, 6, 16, 384)
    }

    /// ViT-B/32 at 224×224: the paper's Table 1 row ViT-Base (D 768, 12 layers, MLP
    /// 3072, 12 heads) with 32×32 patches (timm's `vit_base_patch32_224`), 88,224,232
    /// parameters.
    pub const fn vit_base_patch32_224() -> VitConfig {
        VitConfig::timm(768, 12, 12, 32, 224)
    }

    /// ViT-B/32 at 384×384 (Table 1 row ViT-Base; timm's `vit_base_patch32_384`).
    pub const fn vit_base_patch32_384() -> VitConfig {
        VitConfig::timm(768, 12, 12, 32, 384)
    }

    /// ViT-B/16 at 224×224: the paper's Table 1 row ViT-Base (D 768, 12 layers, MLP
    /// 3072, 12 heads, 86M) with 16×16 patches (timm's `vit_base_patch16_224`),
    /// 86,567,656 parameters.
    ///
    /// ```
    /// let c = tessera_vit::VitConfig::vit_base_patch16_224();
    /// assert_eq!(c.num_parameters(), 86_567_656);
    /// ```
    pub const fn vit_base_patch16_224() -> VitConfig {
        VitConfig::timm(768, 12, 12, 16, 224)
    }

    /// ViT-B/16 at 384×384 (Table 1 row ViT-Base; timm's `vit_base_patch16_384`).
    pub const fn vit_base_patch16_384() -> VitConfig {
        VitConfig::timm(768, 12, 12, 16, 384)
    }

    /// ViT-L/32 at 224×224: the paper's Table 1 row ViT-Large (D 1024, 24 layers, MLP
    /// 4096, 16 heads, 307M) with 32×32 patches (timm's `vit_large_patch32_224`).
    pub const fn vit_large_patch32_224() -> VitConfig {
        VitConfig::timm(1024, 24, 16, 32, 224)
    }

    /// ViT-L/32 at 384×384 (Table 1 row ViT-Large; timm's `vit_large_patch32_384`).
    pub const fn vit_large_patch32_384() -> VitConfig {
        VitConfig::timm(1024, 24, 16, 32, 384)
    }

    /// ViT-L/16 at 224×224: the paper's Table 1 row ViT-Large (D 1024, 24 layers, MLP
    /// 4096, 16 heads) with 16×16 patches (timm's `vit_large_patch16_224`),
    /// 304,326,632 parameters.
    pub const fn vit_large_patch16_224() -> VitConfig {
        VitConfig::timm(1024, 24, 16, 16, 224)
    }

    /// ViT-L/16 at 384×384 (Table 1 row ViT-Large; timm's `vit_large_patch16_384`).
    pub const fn vit_large_patch16_384() -> VitConfig {
        VitConfig::timm(1024, 24, 16, 16, 384)
    }

    /// ViT-H/14 at 224×224: the paper's Table 1 row ViT-Huge (D 1280, 32 layers, MLP
    /// 5120, 16 heads, 632M) with 14×14 patches (timm's `vit_huge_patch14_224`),
    /// 632,045,800 parameters with the 1,000-class head (timm creates it without a head
    /// by default: `num_classes: 0`, 630,764,800).
    pub const fn vit_huge_patch14_224() -> VitConfig {
        VitConfig::timm(1280, 32, 16, 14, 224)
    }

    /// Every preset: timm's name, the paper's short name and the configuration.
    pub fn presets() -> &'static [Preset] {
        PRESETS
    }

    /// A preset by timm's name (`"vit_base_patch16_224"`) or the paper's short name
    /// (`"B/16"`, `"B/16@384"`; any case).
    ///
    /// ```
    /// use tessera_vit::VitConfig;
    /// assert_eq!(VitConfig::preset("B/16")?, VitConfig::vit_base_patch16_224());
    /// assert_eq!(VitConfig::preset("vit_large_patch16_384")?.img_size, 384);
    /// assert!(VitConfig::preset("B/8").unwrap_err().to_string().contains("unknown preset"));
    /// # Ok::<(), tessera_vit::Error>(())
    /// ```
    pub fn preset(name: &str) -> Result<VitConfig> {
        PRESETS
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name) || p.short.eq_ignore_ascii_case(name))
            .map(|p| (p.config)())
            .ok_or_else(|| Error::UnknownPreset {
                name: name.to_string(),
                known: PRESETS.iter().map(|p| p.short).collect(),
            })
    }

    /// The MLP's hidden width: `mlp_dim`, or `int(D · mlp_ratio)` as timm computes it.
    pub fn mlp_hidden_dim(&self) -> usize {
        self.mlp_dim
            .unwrap_or((self.embed_dim as f64 * self.mlp_ratio) as usize)
    }

    /// Whether the model has a class token (with [`GlobalPool::Token`]).
    pub fn class_token(&self) -> bool {
        self.global_pool == GlobalPool::Token
    }

    /// Pixels per patch side: `P`, or `P` times the stem's reduction for a hybrid.
    pub fn pixels_per_patch(&self) -> usize {
        self.patch_size * self.hybrid.map_or(1, |h| h.reduction())
    }

    /// Patches per side of the grid.
    pub fn grid(&self) -> usize {
        self.img_size / self.pixels_per_patch().max(1)
    }

    /// `N = (img_size / P)²` (for a hybrid, the positions of the feature map grouped by
    /// `P`).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Tokens the encoder sees: `N`, plus one for the class token.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + usize::from(self.class_token())
    }

    /// Checks the numbers against each other.
    pub fn validate(&self) -> Result<()> {
        const OP: &str = "VitConfig";
        if let Some(h) = self.hybrid {
            if h.width == 0 {
                return Err(Error::setting(OP, "hybrid.width", 0, "must be positive"));
            }
        }
        let pp = self.pixels_per_patch();
        if pp == 0 || !self.img_size.is_multiple_of(pp) {
            let expected = match self.hybrid {
                Some(h) => format!(
                    "on the stem's ÷{} feature map ({pp} pixels), must divide img_size {}",
                    h.reduction(),
                    self.img_size
                ),
                None => format!("must divide img_size {}", self.img_size),
            };
            return Err(Error::setting(OP, "patch_size", self.patch_size, expected));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(Error::setting(
                OP,
                "num_heads",
                self.num_heads,
                format!("must divide embed_dim {}", self.embed_dim),
            ));
        }
        if self.in_chans == 0 {
            return Err(Error::setting(OP, "in_chans", 0, "must be positive"));
        }
        if self.mlp_hidden_dim() == 0 {
            return Err(Error::setting(
                OP,
                "mlp_ratio",
                self.mlp_ratio,
                format!(
                    "the MLP width (mlp_dim {:?}, or embed_dim {} · mlp_ratio) must be positive",
                    self.mlp_dim, self.embed_dim
                ),
            ));
        }
        Ok(())
    }

    /// The exact number of parameters of the model this configuration builds.
    pub fn num_parameters(&self) -> usize {
        let (d, p, hidden) = (self.embed_dim, self.patch_size, self.mlp_hidden_dim());
        let (c, stem) = match self.hybrid {
            Some(h) => (h.out_channels(), h.num_parameters(self.in_chans)),
            None => (self.in_chans, 0),
        };
        let patch = stem + d * c * p * p + d;
        let cls = if self.class_token() { d } else { 0 };
        let pos = self.num_tokens() * d;
        let block = 2 * 2 * d
            + (3 * d * d + 3 * d)
            + (d * d + d)
            + (d * hidden + hidden)
            + (hidden * d + d);
        let head = if self.num_classes > 0 {
            d * self.num_classes + self.num_classes
        } else {
            0
        };
        patch + cls + pos + self.depth * block + 2 * d + head
    }
}
