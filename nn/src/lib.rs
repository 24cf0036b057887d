//! # tessera-nn
//!
//! Layers, losses, initialisers and checkpoints over `tessera-autograd`, with PyTorch's
//! weight layouts and parameter names, so a `state_dict` saved as safetensors loads as is.
//!
//! ```
//! use tessera_autograd::Var;
//! use tessera_nn::{cross_entropy, Linear, Module, VarBuilder, VarMap};
//! use tessera_tensor::{IndexTensor, Rng, Tensor};
//! let vars = VarMap::new();
//! let layer = Linear::new(&VarBuilder::from_rng(&vars, Rng::seed(0)), 4, 3, true)?;
//! let x = Var::constant(Tensor::randn(&[2, 4], 0.0, 1.0, &mut Rng::seed(1)));
//! let logits = layer.forward(&x)?;
//! let loss = cross_entropy(&logits, &IndexTensor::from_vec(vec![0, 2]), 0.1, None)?;
//! loss.backward()?;
//! assert_eq!(vars.names(), vec!["weight", "bias"]);
//! assert!(layer.weight.grad().is_some());
//! # Ok::<(), tessera_nn::Error>(())
//! ```
#![warn(missing_docs)]

mod attention;
mod checkpoint;
pub mod init;
mod kernels;
mod layers;
mod loss;
mod transformer;
mod vars;

pub use attention::{
    scaled_dot_product_attention, AttnMask, AttnNames, AttnOptions, MultiHeadAttention, QkvWeights,
};
pub use checkpoint::{
    get_entry, get_json, load_checkpoint, metadata_fields, put_json, save_checkpoint, LoadReport,
    RngState, TrainProgress, CONFIG_KEY, TRAIN_STATE_KEY,
};
pub use layers::{
    Activation, BatchNorm2d, Conv2d, Dropout, Embedding, LayerNorm, Linear, MaxPool2d,
};
pub use loss::{
    cross_entropy, mse_loss, nll_loss, BceWithLogitsLoss, CrossEntropyLoss, MseLoss, NllLoss,
    Reduction,
};
pub use tessera_autograd::{Parameter, Var};
pub use transformer::{
    EncoderIntermediates, FeedForward, Transformer, TransformerDecoder, TransformerDecoderLayer,
    TransformerEncoder, TransformerEncoderLayer, TransformerMasks, TransformerOptions,
};
pub use vars::{BudgetGuard, Init, MemoryBudget, VarBuilder, VarMap};

/// Errors of the layers, losses and checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation or a differentiation step failed. Tensor errors arrive here
    /// too, as [`tessera_autograd::Error::Tensor`], so each kind of error reaches the
    /// caller by one path.
    #[error(transparent)]
    Autograd(#[from] tessera_autograd::Error),
    /// An input whose shape does not fit the layer or loss.
    #[error("{op}: expected {expected}, got shape {got:?}")]
    Shape {
        /// The layer, loss or function.
        op: &'static str,
        /// The shape it takes, as a pattern (`[..., 4]`, `[N, C]`).
        expected: String,
        /// The shape that came.
        got: Vec<usize>,
    },
    /// An image-like input with the wrong number of channels.
    #[error("{op}: expected {expected} input channels, got {got} (input {shape:?})")]
    Channels {
        /// The layer.
        op: &'static str,
        /// The layer's channels.
        expected: usize,
        /// The input's channels.
        got: usize,
        /// The input's shape.
        shape: Vec<usize>,
    },
    /// A class index outside the logits' classes.
    #[error("{op}: target {target} of row {row} is outside {classes} classes")]
    Target {
        /// The loss.
        op: &'static str,
        /// The target.
        target: i64,
        /// Its row.
        row: usize,
        /// The number of classes.
        classes: usize,
    },
    /// A setting or argument outside what the layer or loss accepts.
    #[error("{op}: {name} = {value}: {expected}")]
    Setting {
        /// The layer, loss or function.
        op: &'static str,
        /// The setting.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: String,
    },
    /// Two parameters or buffers built under the same name.
    #[error("the name {name:?} is already taken in this model")]
    DuplicateName {
        /// The full name.
        name: String,
    },
    /// A name the model does not have.
    #[error("the model has no parameter {name:?}")]
    UnknownName {
        /// The full name.
        name: String,
    },
    /// A checkpoint metadata entry that is missing or does not parse.
    #[error("checkpoint {path}: metadata {key:?}: {reason}")]
    Metadata {
        /// The file.
        path: std::path::PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A training checkpoint whose data position lies beyond the data it resumes on
    /// (another corpus, batch size or sequence length than the run that saved it).
    #[error("{}: data position {position} is beyond the {len} {what} of this data", path.display())]
    Position {
        /// The file.
        path: std::path::PathBuf,
        /// The saved position ([`TrainProgress::position`]).
        position: u64,
        /// Batches or chunks per pass over the data given.
        len: usize,
        /// `batches` or `chunks`.
        what: &'static str,
    },
    /// A parameter or buffer too large to allocate (a size from a typo, or from a
    /// corrupt checkpoint's configuration), or too large for a [`MemoryBudget`]: refused
    /// before any memory is touched.
    #[error(
        "{name}: shape {shape:?} needs {}, and the model with it {}: more than the {} {limit}",
        bytes_text(*.bytes),
        bytes_text(*.total),
        bytes_text(*.memory)
    )]
    TooLarge {
        /// The parameter's full name.
        name: String,
        /// The shape asked for.
        shape: Vec<usize>,
        /// Its bytes at the budget's bytes per value (4 without one; `None`: beyond
        /// the address space).
        bytes: Option<usize>,
        /// The model's parameters and buffers with it, likewise.
        total: Option<usize>,
        /// The limit: the machine's memory or the budget (`None`: the address space).
        memory: Option<usize>,
        /// What the limit is, after "more than the N": "of memory this machine has".
        limit: &'static str,
    },
    /// A checkpoint tensor holding NaN or infinite values: broken weights, refused
    /// before they reach the model.
    #[error(
        "checkpoint {path}: tensor {name:?} holds {count} non-finite values (the first, \
         {value}, at flat index {index}); the weights are broken"
    )]
    NonFinite {
        /// The file.
        path: std::path::PathBuf,
        /// The tensor's name.
        name: String,
        /// How many of its values are NaN or infinite.
        count: usize,
        /// The flat index of the first.
        index: usize,
        /// The first such value.
        value: f32,
    },
    /// A model built to load a checkpoint ([`VarBuilder::zeros_for`]) whose
    /// configuration asks for more values than the file holds: a corrupt or hostile
    /// configuration, refused before anything is allocated for it.
    #[error(
        "checkpoint {path}: its configuration describes a model larger than the file: \
         {name} of shape {shape:?} does not fit in the {budget} values its size allows"
    )]
    LargerThanFile {
        /// The file.
        path: std::path::PathBuf,
        /// The values the model could create of this kind (parameters and buffers: the
        /// file's; tensors made from the configuration: at least 2^20).
        budget: usize,
        /// The tensor that did not fit.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
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

/// The machine's physical memory in bytes, where the system says (Unix).
pub fn physical_memory() -> Option<usize> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf reads two system constants and has no other effect.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (pages as usize).checked_mul(size as usize);
        }
    }
    None
}

/// A byte count as people read it: `1.5 GB`, or "more bytes than a 64-bit address space
/// holds" for `None`.
pub fn bytes_text(bytes: Option<usize>) -> String {
    let Some(b) = bytes else {
        return "more bytes than the address space holds".to_string();
    };
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let (mut v, mut u) = (b as f64, 0);
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} bytes")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl From<tessera_tensor::Error> for Error {
    /// A tensor error, as [`Error::Autograd`] holding [`tessera_autograd::Error::Tensor`].
    fn from(e: tessera_tensor::Error) -> Error {
        Error::Autograd(e.into())
    }
}

/// Declares a model crate's error enum, the one pattern of the crates above `nn`: an
/// `Nn(tessera_nn::Error)` variant that every tensor, autograd and layer error reaches
/// by one path (`Error::Nn(tessera_nn::Error::Autograd(..))`), one transparent variant
/// for each other crate named in `from { .. }`, then the crate's own variants. With
/// the enum come `From` for tensor and autograd errors and crate-private `shape` and
/// `setting` constructors that build [`Error::Shape`] and [`Error::Setting`].
///
/// ```
/// tessera_nn::model_error! {
///     /// Errors of a model.
///     pub enum Error {
///         from { Io(std::io::Error) }
///         /// A class id outside the model's range.
///         #[error("class {0} is outside 0..10")]
///         Class(usize),
///     }
/// }
///
/// fn first_row(x: &tessera_tensor::Tensor) -> Result<f32, Error> {
///     if x.shape().len() != 2 {
///         return Err(Error::shape("first_row", "[rows, cols]", x.shape()));
///     }
///     Ok(x.get(&[0, 0])?)
/// }
/// let e = first_row(&tessera_tensor::Tensor::zeros(&[3])).unwrap_err();
/// assert_eq!(e.to_string(), "first_row: expected [rows, cols], got shape [3]");
/// assert!(matches!(e, Error::Nn(tessera_nn::Error::Shape { .. })));
/// assert_eq!(Error::Class(12).to_string(), "class 12 is outside 0..10");
/// ```
#[macro_export]
macro_rules! model_error {
    (
        $(#[$attr:meta])*
        pub enum $error:ident {
            from { $($name:ident($from:ty)),* $(,)? }
            $($variants:tt)*
        }
    ) => {
        $(#[$attr])*
        #[derive(Debug, ::thiserror::Error)]
        #[non_exhaustive]
        pub enum $error {
            /// A tensor operation, differentiation step, layer, loss or checkpoint failed;
            /// or an input whose shape does not fit ([`tessera_nn::Error::Shape`]), or a
            /// setting outside what the model accepts ([`tessera_nn::Error::Setting`]).
            #[error(transparent)]
            Nn(#[from] $crate::Error),
            $(
                #[doc = concat!("An error of `", stringify!($from), "`, passed on as it came.")]
                #[error(transparent)]
                $name(#[from] $from),
            )*
            $($variants)*
        }

        impl ::core::convert::From<$crate::__private::TensorError> for $error {
            fn from(e: $crate::__private::TensorError) -> $error {
                $error::Nn(e.into())
            }
        }

        impl ::core::convert::From<$crate::__private::AutogradError> for $error {
            fn from(e: $crate::__private::AutogradError) -> $error {
                $error::Nn(e.into())
            }
        }

        #[allow(dead_code)]
        impl $error {
            /// A [`tessera_nn::Error::Shape`] error.
            pub(crate) fn shape(
                op: &'static str,
                expected: impl ::core::convert::Into<::std::string::String>,
                got: &[usize],
            ) -> $error {
                $error::Nn($crate::Error::shape(op, expected, got))
            }

            /// A [`tessera_nn::Error::Setting`] error.
            pub(crate) fn setting(
                op: &'static str,
                name: &'static str,
                value: impl ::core::fmt::Display,
                expected: impl ::core::convert::Into<::std::string::String>,
            ) -> $error {
                $error::Nn($crate::Error::setting(op, name, value, expected))
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use tessera_autograd::Error as AutogradError;
    pub use tessera_tensor::Error as TensorError;
}

impl Error {
    /// A [`Error::Shape`] error.
    pub fn shape(op: &'static str, expected: impl Into<String>, got: &[usize]) -> Error {
        Error::Shape {
            op,
            expected: expected.into(),
            got: got.to_vec(),
        }
    }

    /// A [`Error::Setting`] error.
    pub fn setting(
        op: &'static str,
        name: &'static str,
        value: impl std::fmt::Display,
        expected: impl Into<String>,
    ) -> Error {
        Error::Setting {
            op,
            name,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// Something that owns parameters: a model, which keeps the [`VarMap`] its
/// [`VarBuilder`] filled, or a bare `VarMap`.
pub trait Params {
    /// The store of the parameters and buffers, by name.
    fn vars(&self) -> &VarMap;

    /// All parameters with their names, in creation order.
    fn named_parameters(&self) -> Vec<(String, Parameter)> {
        self.vars().named_parameters()
    }

    /// All buffers (state saved with the model but not trained, such as batch-norm
    /// statistics) with their names.
    fn named_buffers(&self) -> Vec<(String, Buffer)> {
        self.vars().named_buffers()
    }

    /// The total number of scalar parameters.
    fn num_parameters(&self) -> usize {
        self.vars().num_parameters()
    }
}

impl Params for VarMap {
    fn vars(&self) -> &VarMap {
        self
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

/// A layer: `forward(&self, x) -> Result<Var>`, the evaluation behaviour, and
/// `forward_t` for layers that behave differently in training (dropout, batch norm).
pub trait Module {
    /// Applies the layer (in evaluation mode).
    fn forward(&self, x: &Var) -> Result<Var>;

    /// Applies the layer; `train` selects the training behaviour. The same as
    /// [`Module::forward`] unless the layer overrides it.
    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        let _ = train;
        self.forward(x)
    }
}

// The README's examples run as documentation tests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
