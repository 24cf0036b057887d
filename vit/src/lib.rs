//! # tessera-vit
//!
//! The Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words"),
//! the third model family of the course notes: an image `H × W × C` is cut into
//! `N = HW/P²` patches, each flattened to `P²C` values and projected linearly to `D` (a
//! stride-`P` convolution, as timm computes it); a learned class token is prepended and
//! learned position embeddings `E_pos ∈ R^{(N+1)×D}` are added; pre-norm Transformer
//! encoder blocks (multi-head self-attention, GELU MLP) follow, then a final LayerNorm
//! and a linear head on the class token (or on the mean of the patch tokens).
//!
//! Parameters are created once, at construction, by a [`tessera_nn::VarBuilder`] at
//! timm's names (`patch_embed.proj.weight`, `cls_token`, `pos_embed`,
//! `blocks.0.attn.qkv.weight`, `blocks.0.mlp.fc1.weight`, `norm.weight`, `head.weight`),
//! so a timm ViT saved as safetensors loads as is. Configurations use timm's names too
//! ([`VitConfig`], with a constructor per timm model such as
//! [`VitConfig::vit_base_patch16_224`]).
//!
//! Pretrained weights, tessera's or a timm state dict as published, load with
//! [`load_pretrained`] (the architecture read off the tensors or named by a preset);
//! [`FineTune`] adapts them to a task as the paper's section 3.2 does (position
//! embeddings resampled to a new resolution, a zero-initialised head), and
//! [`TimmEval`] prepares image files exactly as timm's evaluation transform.
//!
//! ```
//! use tessera_nn::Params;
//! use tessera_tensor::{Rng, Tensor};
//! use tessera_vit::{VisionTransformer, VitConfig};
//! // timm's vit_tiny_patch16_224 (1000 classes): 5,717,416 parameters.
//! assert_eq!(VitConfig::vit_tiny_patch16_224().num_parameters(), 5_717_416);
//! let config = VitConfig {
//!     img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2, mlp_ratio: 2.0,
//!     num_classes: 3, ..VitConfig::vit_tiny_patch16_224()
//! };
//! let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
//! assert_eq!(model.num_parameters(), config.num_parameters());
//! let x = Tensor::rand(&[2, 3, 8, 8], 0.0, 1.0, &mut Rng::seed(1));
//! assert_eq!(model.forward(&x, false)?.shape(), &[2, 3]);
//! # Ok::<(), tessera_vit::Error>(())
//! ```
#![warn(missing_docs)]

mod checkpoint;
mod config;
mod hybrid;
mod input;
mod model;
mod pretrained;
mod train;
pub mod viz;

pub use checkpoint::{load_model, save_model, CheckpointConfig, MODEL_KIND};
pub use config::{GlobalPool, Hybrid, Preset, VitConfig};
#[cfg(feature = "image")]
pub use input::read_image;
pub use input::{
    batches, eval_loader, prepare_image, train_loader, Augment, CropMode, TimmEval, NORMALIZE,
};
pub use model::VisionTransformer;
pub use pretrained::{
    infer_config, layer_decay_scales, load_pretrained, Arch, FineTune, Pretrained, Source,
    SourceFormat, SOURCE_KEY,
};
pub use train::{
    argmax_rows, evaluate, evaluate_with, top_k, Evaluation, StepStats, TrainConfig, Trainer,
};

tessera_nn::model_error! {
    /// Errors of the Vision Transformer.
    pub enum Error {
        from { Optim(tessera_optim::Error), Data(tessera_data::Error) }
        /// A preset name that is neither timm's nor the paper's.
        #[error("unknown preset {name:?}; the presets are {}", known.join(", "))]
        UnknownPreset {
            /// The name asked for.
            name: String,
            /// The paper's short names of the presets.
            known: Vec<&'static str>,
        },
        /// A file that is not the weights of a Vision Transformer, or whose tensors do not
        /// fit the model asked for.
        #[error("{}: {reason}", path.display())]
        Weights {
            /// The file.
            path: std::path::PathBuf,
            /// What was expected and what came.
            reason: String,
        },
        /// A set of batches without images.
        #[error("{op}: no images")]
        Empty {
            /// The function.
            op: &'static str,
        },
    }
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
