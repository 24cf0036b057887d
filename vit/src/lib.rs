//! # tessera-vit
//!
//! The Vision Transformer (Dosovitskiy et al., 2021), the third model family of the
//! course notes: an image `H × W × C` is cut into `N = HW/P²` patches, each flattened to
//! `P²C` values and projected linearly to `D` (a stride-`P` convolution, as timm computes
//! it); a learned class token is prepended and learned position embeddings
//! `E_pos ∈ R^{(N+1)×D}` are added; pre-norm Transformer encoder blocks (multi-head
//! self-attention, GELU MLP) follow, then a final LayerNorm and a linear head on the class
//! token (or on the mean of the patch tokens).
//!
//! Parameter names are timm's (`patch_embed.proj.weight`, `cls_token`, `pos_embed`,
//! `blocks.0.attn.qkv.weight`, `blocks.0.mlp.fc1.weight`, `norm.weight`, `head.weight`),
//! so a timm ViT saved as safetensors loads as is.
//!
//! ```
//! use tessera_nn::Params;
//! use tessera_tensor::{Rng, Tensor};
//! use tessera_vit::{VisionTransformer, VitConfig};
//! // timm's ViT-Ti/16 at 224×224 with 1000 classes: 5,717,416 parameters.
//! assert_eq!(VitConfig::preset("Ti/16")?.num_parameters(), 5_717_416);
//! let config = VitConfig { image_size: 8, patch_size: 4, embed_dim: 8, depth: 1, heads: 2, mlp_dim: 16, classes: 3, ..VitConfig::preset("Ti/16")? };
//! let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
//! let x = Tensor::rand(&[2, 3, 8, 8], 0.0, 1.0, &mut Rng::seed(1));
//! assert_eq!(model.forward(&x, false)?.shape(), &[2, 3]);
//! # Ok::<(), tessera_vit::Error>(())
//! ```
#![warn(missing_docs)]

mod config;
mod model;
mod train;
pub mod viz;

pub use config::{Hybrid, Pool, VitConfig, PRESETS};
pub use model::VisionTransformer;
pub use train::{
    argmax_rows, evaluate, load_model, save_model, top_k, Evaluation, StepStats, TrainConfig,
    Trainer,
};

/// Errors of the Vision Transformer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] tessera_tensor::Error),
    /// A differentiation step failed.
    #[error(transparent)]
    Autograd(#[from] tessera_autograd::Error),
    /// A layer, loss or checkpoint failed.
    #[error(transparent)]
    Nn(#[from] tessera_nn::Error),
    /// An optimizer step failed.
    #[error(transparent)]
    Optim(#[from] tessera_optim::Error),
    /// An input or configuration that does not fit the model.
    #[error("{what}: {msg}")]
    Input {
        /// The model part or function.
        what: &'static str,
        /// What was expected and what came.
        msg: String,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn input_err(what: &'static str, msg: String) -> Error {
    Error::Input { what, msg }
}
