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
        })
    }

    /// `N = (image / P)²`.
    pub fn num_patches(&self) -> usize {
        let g = self.image_size / self.patch_size.max(1);
        g * g
    }

    /// Checks the numbers against each other.
    pub fn validate(&self) -> Result<()> {
        if self.patch_size == 0 || self.image_size % self.patch_size != 0 {
            return Err(input_err(
                "VitConfig",
                format!(
                    "patch size {} does not divide the image size {}",
                    self.patch_size, self.image_size
                ),
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
        let (d, p, c) = (self.embed_dim, self.patch_size, self.channels);
        let tokens = self.num_patches() + usize::from(self.pool == Pool::ClassToken);
        let patch = d * c * p * p + d;
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
