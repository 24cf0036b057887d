//! The crate's one error type.
//!
//! Every variant names the operation that failed and carries the shapes (or indices, or
//! file) involved, so a message reads like
//! `matmul: lhs [2, 3] and rhs [4, 5] are not compatible`.

use std::fmt;
use std::path::PathBuf;

/// A shape as printed in error messages: `[2, 3]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ShapeDisplay(pub Vec<usize>);

impl fmt::Display for ShapeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Debug for ShapeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for ShapeDisplay {
    fn from(s: &[usize]) -> Self {
        ShapeDisplay(s.to_vec())
    }
}

/// Errors returned by tensor operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands whose shapes do not fit the operation.
    #[error("{op}: lhs {lhs} and rhs {rhs} are not compatible")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// Shape of the first operand.
        lhs: ShapeDisplay,
        /// Shape of the second operand.
        rhs: ShapeDisplay,
    },
    /// Shapes that cannot be broadcast together (NumPy rules).
    #[error("{op}: shapes {lhs} and {rhs} cannot be broadcast together")]
    Broadcast {
        /// The operation.
        op: &'static str,
        /// Shape of the first operand.
        lhs: ShapeDisplay,
        /// Shape of the second operand (or the requested target shape).
        rhs: ShapeDisplay,
    },
    /// A tensor of the wrong rank.
    #[error("{op}: expected a tensor of rank {expected}, got shape {got}")]
    Rank {
        /// The operation.
        op: &'static str,
        /// The rank (or description of ranks) expected.
        expected: String,
        /// The shape received.
        got: ShapeDisplay,
    },
    /// An axis outside `-rank..rank`.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange {
        /// The operation.
        op: &'static str,
        /// The axis given.
        axis: isize,
        /// The rank of the tensor.
        rank: usize,
    },
    /// Data whose length does not match the shape it is given.
    #[error("{op}: shape {shape} holds {expected} elements but {got} were given")]
    ElementCount {
        /// The operation.
        op: &'static str,
        /// The requested shape.
        shape: ShapeDisplay,
        /// Number of elements the shape holds.
        expected: usize,
        /// Number of elements provided.
        got: usize,
    },
    /// A view that the strides of the tensor cannot express without a copy.
    #[error("{op}: tensor of shape {shape} with strides {strides:?} is not contiguous; call contiguous() first")]
    NotContiguous {
        /// The operation.
        op: &'static str,
        /// Shape of the tensor.
        shape: ShapeDisplay,
        /// Its strides.
        strides: Vec<usize>,
    },
    /// An index outside the size of the axis it indexes.
    #[error("{op}: index {index} is out of range for axis {axis} of size {size}")]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// The axis indexed.
        axis: usize,
        /// The size of that axis.
        size: usize,
    },
    /// Any other invalid argument, described in words.
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What was expected and what came.
        msg: String,
    },
    /// A safetensors file that cannot be read or written.
    #[error("safetensors {path}: {msg}")]
    SafeTensors {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the crate's [`enum@Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid {
            op,
            msg: msg.into(),
        }
    }

    pub(crate) fn shape_mismatch(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Self {
        Error::ShapeMismatch {
            op,
            lhs: lhs.into(),
            rhs: rhs.into(),
        }
    }

    pub(crate) fn rank(op: &'static str, expected: impl Into<String>, got: &[usize]) -> Self {
        Error::Rank {
            op,
            expected: expected.into(),
            got: got.into(),
        }
    }
}
