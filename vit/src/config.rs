//! The model's shape, and the paper's and timm's configurations.

use crate::{input_err, Result};

/// What the head reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    /// The class token (the paper's and timm's default).
    ClassToken,
    /// The mean of the patch tokens, then the final norm (timm's `global_pool="avg",
    /// class_token=False`, whose norm is named `fc_norm`).
    Mean,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    pub fn convs(&self, channels: usize) -> Vec<(usize, usize, usize, usize)> {
        let mut v = vec![(channels, self.width, 7, 2)];
        let mut c = self.width;
        for i in 0..self.stages {
            let out = self.width << i;
            v.push((c, out, 3, if i == 0 { 1 } else { 2 }));
            c = out;
        }
        v
    }

    /// Trainable parameters of the stem (convolutions without bias, batch-norm γ and β).
    pub fn num_parameters(&self, channels: usize) -> usize {
        self.convs(channels)
            .iter()
            .map(|&(i, o, k, _)| i * o * k * k + 2 * o)
            .sum()
    }
}

/// The shape of a [`crate::VisionTransformer`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VitConfig {
    /// Input height and width.
    pub image_size: usize,
    /// Patch height and width `P`.
    pub patch_size: usize,
    /// Input channels `C`.
    pub channels: usize,
    /// Token width `D`.
    pub embed_dim: usize,
    /// Encoder blocks.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Hidden width of the MLP.
    pub mlp_dim: usize,
    /// Output classes; 0 for no head (the model then returns the pooled features, as
    /// timm's `num_classes=0`).
    pub classes: usize,
    /// Pooling before the head.
    pub pool: Pool,
    /// LayerNorm epsilon (timm: 1e-6).
    pub eps: f32,
    /// A CNN stem whose feature map gives the patches (the hybrid model); `None` cuts
    /// the image itself.
    pub hybrid: Option<Hybrid>,
}

/// `(name, D, depth, heads, MLP, patch)` of the paper's Table 1 (B, L, H) and timm's Ti
/// and S, each with patch sizes 32, 16 and 14 where timm defines them.
pub const PRESETS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("Ti/16", 192, 12, 3, 768, 16),
    ("S/32", 384, 12, 6, 1536, 32),
    ("S/16", 384, 12, 6, 1536, 16),
    ("B/32", 768, 12, 12, 3072, 32),
    ("B/16", 768, 12, 12, 3072, 16),
    ("L/32", 1024, 24, 16, 4096, 32),
    ("L/16", 1024, 24, 16, 4096, 16),
    ("H/14", 1280, 32, 16, 5120, 14),
];

impl VitConfig {
    /// A preset at 224×224 with 1000 classes (ImageNet), e.g. `"B/16"`.
    pub fn preset(name: &str) -> Result<VitConfig> {
        let &(_, d, depth, heads, mlp, p) = PRESETS
            .iter()
            .find(|p| p.0.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                input_err(
                    "VitConfig::preset",
                    format!(
                        "unknown preset {name:?}; the presets are {}",
                        names.join(", ")
                    ),
                )
            })?;
        Ok(VitConfig {
            image_size: 224,
            patch_size: p,
            channels: 3,
            embed_dim: d,
            depth,
            heads,
            mlp_dim: mlp,
            classes: 1000,
            pool: Pool::ClassToken,
            eps: 1e-6,
            hybrid: None,
        })
    }

    /// Pixels per patch side: `P`, or `P` times the stem's reduction for a hybrid.
    pub fn pixels_per_patch(&self) -> usize {
        self.patch_size * self.hybrid.map_or(1, |h| h.reduction())
    }

    /// Patches per side of the grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.pixels_per_patch().max(1)
    }

    /// `N = (image / P)²` (for a hybrid, the positions of the feature map grouped by `P`).
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// Tokens the encoder sees: `N`, plus one for the class token.
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + usize::from(self.pool == Pool::ClassToken)
    }

    /// The configuration as string metadata for a checkpoint.
    pub fn to_metadata(&self) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("model", "tessera-vit".into());
        put("image_size", self.image_size.to_string());
        put("patch_size", self.patch_size.to_string());
        put("channels", self.channels.to_string());
        put("embed_dim", self.embed_dim.to_string());
        put("depth", self.depth.to_string());
        put("heads", self.heads.to_string());
        put("mlp_dim", self.mlp_dim.to_string());
        put("classes", self.classes.to_string());
        put(
            "pool",
            match self.pool {
                Pool::ClassToken => "token",
                Pool::Mean => "avg",
            }
            .into(),
        );
        put("eps", self.eps.to_string());
        if let Some(h) = self.hybrid {
            put("hybrid_width", h.width.to_string());
            put("hybrid_stages", h.stages.to_string());
        }
        m
    }

    /// The configuration read back from [`VitConfig::to_metadata`].
    pub fn from_metadata(m: &std::collections::HashMap<String, String>) -> Result<VitConfig> {
        if m.get("model").map(String::as_str) != Some("tessera-vit") {
            return Err(input_err(
                "VitConfig",
                format!(
                    "not a Vision Transformer checkpoint (model = {:?})",
                    m.get("model")
                ),
            ));
        }
        fn get<T: std::str::FromStr>(
            m: &std::collections::HashMap<String, String>,
            k: &str,
        ) -> Result<T> {
            let v = m
                .get(k)
                .ok_or_else(|| input_err("VitConfig", format!("metadata has no {k:?}")))?;
            v.parse().map_err(|_| {
                input_err(
                    "VitConfig",
                    format!("metadata {k:?} = {v:?} is not a valid value"),
                )
            })
        }
        let pool = match m.get("pool").map(String::as_str) {
            Some("token") => Pool::ClassToken,
            Some("avg") => Pool::Mean,
            other => {
                return Err(input_err(
                    "VitConfig",
                    format!("metadata pool = {other:?}, expected \"token\" or \"avg\""),
                ))
            }
        };
        let hybrid = if m.contains_key("hybrid_width") {
            Some(Hybrid {
                width: get(m, "hybrid_width")?,
                stages: get(m, "hybrid_stages")?,
            })
        } else {
            None
        };
        let c = VitConfig {
            image_size: get(m, "image_size")?,
            patch_size: get(m, "patch_size")?,
            channels: get(m, "channels")?,
            embed_dim: get(m, "embed_dim")?,
            depth: get(m, "depth")?,
            heads: get(m, "heads")?,
            mlp_dim: get(m, "mlp_dim")?,
            classes: get(m, "classes")?,
            pool,
            eps: get(m, "eps")?,
            hybrid,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the numbers against each other.
    pub fn validate(&self) -> Result<()> {
        if let Some(h) = self.hybrid {
            if h.width == 0 {
                return Err(input_err(
                    "VitConfig",
                    "hybrid stem width must be positive".into(),
                ));
            }
        }
        let pp = self.pixels_per_patch();
        if pp == 0 || self.image_size % pp != 0 {
            let what = match self.hybrid {
                Some(h) => format!(
                    "patch size {} on the stem's ÷{} feature map ({pp} pixels)",
                    self.patch_size,
                    h.reduction()
                ),
                None => format!("patch size {}", self.patch_size),
            };
            return Err(input_err(
                "VitConfig",
                format!("{what} does not divide the image size {}", self.image_size),
            ));
        }
        if self.heads == 0 || self.embed_dim % self.heads != 0 {
            return Err(input_err(
                "VitConfig",
                format!("{} heads do not divide D = {}", self.heads, self.embed_dim),
            ));
        }
        if self.channels == 0 || self.mlp_dim == 0 {
            return Err(input_err(
                "VitConfig",
                "channels and MLP width must be positive".into(),
            ));
        }
        Ok(())
    }

    /// The exact number of parameters of the model this configuration builds.
    pub fn num_parameters(&self) -> usize {
        let (d, p) = (self.embed_dim, self.patch_size);
        let (c, stem) = match self.hybrid {
            Some(h) => (h.out_channels(), h.num_parameters(self.channels)),
            None => (self.channels, 0),
        };
        let tokens = self.num_tokens();
        let patch = stem + d * c * p * p + d;
        let cls = if self.pool == Pool::ClassToken { d } else { 0 };
        let pos = tokens * d;
        let block = 2 * 2 * d
            + (3 * d * d + 3 * d)
            + (d * d + d)
            + (d * self.mlp_dim + self.mlp_dim)
            + (self.mlp_dim * d + d);
        let head = if self.classes > 0 {
            d * self.classes + self.classes
        } else {
            0
        };
        patch + cls + pos + self.depth * block + 2 * d + head
    }
}
