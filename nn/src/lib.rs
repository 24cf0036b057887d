//! # tessera-nn
//!
//! Layers, losses, initialisers and checkpoints over `tessera-autograd`, with PyTorch's
//! weight layouts and parameter names, so a `state_dict` saved as safetensors loads as is.
//!
//! ```
//! use tessera_autograd::Var;
//! use tessera_nn::{cross_entropy, Linear, Module, Params};
//! use tessera_tensor::{IndexTensor, Rng, Tensor};
//! let mut rng = Rng::seed(0);
//! let layer = Linear::new(4, 3, true, &mut rng);
//! let x = Var::constant(Tensor::randn(&[2, 4], 0.0, 1.0, &mut rng));
//! let logits = layer.forward(&x)?;
//! let loss = cross_entropy(&logits, &IndexTensor::from_vec(vec![0, 2]), 0.1, None)?;
//! loss.backward()?;
//! let names: Vec<String> = layer.named_parameters().into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, vec!["weight", "bias"]);
//! # Ok::<(), tessera_nn::Error>(())
//! ```
#![warn(missing_docs)]

mod attention;
mod checkpoint;
pub mod init;
mod layers;
mod loss;
mod rows;

pub use attention::{
    scaled_dot_product_attention, AttnMask, AttnNames, MultiHeadAttention, QkvWeights,
};
pub use checkpoint::{load_checkpoint, save_checkpoint, LoadReport};
pub use layers::{
    Activation, BatchNorm2d, Conv2d, Dropout, Embedding, LayerNorm, Linear, MaxPool2d,
};
pub use loss::{cross_entropy, mse_loss, nll_loss};
pub use tessera_autograd::{Parameter, Var};

/// Errors of the layers, losses and checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] tessera_tensor::Error),
    /// A differentiation step failed.
    #[error(transparent)]
    Autograd(#[from] tessera_autograd::Error),
    /// An input that does not fit the layer or loss.
    #[error("{layer}: {msg}")]
    Input {
        /// The layer or loss.
        layer: &'static str,
        /// What was expected and what came.
        msg: String,
    },
    /// A checkpoint whose names or shapes do not match the model (strict loading).
    #[error("checkpoint {path}: {report}")]
    Checkpoint {
        /// The file.
        path: std::path::PathBuf,
        /// Every missing key, unexpected key and shape mismatch.
        report: LoadReport,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Something that owns parameters, reachable by hierarchical names
/// (`blocks.0.attn.qkv.weight`), in a deterministic order.
pub trait Params {
    /// Appends this object's parameters to `out`, each name prefixed by `prefix`.
    fn collect_params(&self, prefix: &str, out: &mut Vec<(String, Parameter)>);

    /// Appends this object's buffers (state saved with the model but not trained, such
    /// as batch-norm statistics) to `out`. None by default.
    fn collect_buffers(&self, _prefix: &str, _out: &mut Vec<(String, Buffer)>) {}

    /// All buffers with their names.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        let mut out = Vec::new();
        self.collect_buffers("", &mut out);
        out
    }

    /// All parameters with their names, in declaration order.
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        let mut out = Vec::new();
        self.collect_params("", &mut out);
        out
    }

    /// The total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.named_parameters()
            .iter()
            .map(|(_, p)| p.value().numel())
            .sum()
    }
}

/// A tensor saved with a model but not trained (batch norm's running statistics): a
/// shared cell, updated in training and read in evaluation.
#[derive(Clone, Debug)]
pub struct Buffer(std::sync::Arc<std::sync::Mutex<tessera_tensor::Tensor>>);

impl Buffer {
    /// A buffer with an initial value.
    pub fn new(value: tessera_tensor::Tensor) -> Buffer {
        Buffer(std::sync::Arc::new(std::sync::Mutex::new(value)))
    }

    /// The current value.
    pub fn value(&self) -> tessera_tensor::Tensor {
        match self.0.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the value.
    pub fn set(&self, value: tessera_tensor::Tensor) {
        match self.0.lock() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// A layer: `forward(&self, x) -> Result<Var>`.
pub trait Module: Params {
    /// Applies the layer.
    fn forward(&self, x: &Var) -> Result<Var>;
}

/// A layer whose behaviour differs between training and evaluation (dropout).
pub trait ModuleT: Params {
    /// Applies the layer; `train` selects the training behaviour.
    fn forward_t(&self, x: &Var, train: bool) -> Result<Var>;
}

/// `prefix.name`, or `name` at the top.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
