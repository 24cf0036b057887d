//! Shapes, strides, axes and the broadcasting rule.

use crate::error::{Error, Result};
use smallvec::SmallVec;

/// Inline storage for shapes and strides: no heap allocation up to rank 6.
pub type Dims = SmallVec<[usize; 6]>;

/// An axis argument: a `usize` counts from the front, a negative `i32`/`isize`/`i64`
/// counts from the back (`-1` is the last axis), as in PyTorch and NumPy.
///
/// ```
/// use tessera_tensor::Tensor;
/// let x = Tensor::zeros(&[2, 3, 4]);
/// assert_eq!(x.sum(&[-1], false)?.shape(), &[2, 3]);
/// assert_eq!(x.sum(&[1usize], true)?.shape(), &[2, 1, 4]);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub trait Dim: Copy {
    /// Resolves the axis for a tensor of rank `rank`, naming `op` in the error.
    fn to_axis(self, rank: usize, op: &'static str) -> Result<usize>;
}

impl Dim for usize {
    fn to_axis(self, rank: usize, op: &'static str) -> Result<usize> {
        if self < rank {
            Ok(self)
        } else {
            Err(Error::AxisOutOfRange {
                op,
                axis: self as isize,
                rank,
            })
        }
    }
}

macro_rules! signed_dim {
    ($($t:ty),*) => {$(
        impl Dim for $t {
            fn to_axis(self, rank: usize, op: &'static str) -> Result<usize> {
                let r = rank as i64;
                let a = self as i64;
                let resolved = if a < 0 { a + r } else { a };
                if resolved >= 0 && resolved < r {
                    Ok(resolved as usize)
                } else {
                    Err(Error::AxisOutOfRange { op, axis: self as isize, rank })
                }
            }
        }
    )*};
}
signed_dim!(i32, isize, i64);

/// Resolves a list of axes, rejecting duplicates; returns them sorted ascending.
pub(crate) fn resolve_axes<D: Dim>(axes: &[D], rank: usize, op: &'static str) -> Result<Dims> {
    let mut out: Dims = SmallVec::new();
    for &a in axes {
        let ax = a.to_axis(rank, op)?;
        if out.contains(&ax) {
            return Err(Error::invalid(op, format!("axis {ax} is given twice")));
        }
        out.push(ax);
    }
    out.sort_unstable();
    Ok(out)
}

/// Row-major (C order) strides of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Dims {
    let mut strides: Dims = smallvec::smallvec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d;
    }
    strides
}

/// Number of elements of a shape (1 for the scalar shape `[]`); saturates at
/// `usize::MAX` instead of overflowing, so an impossible shape is reported as a size
/// mismatch rather than a panic.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().fold(1usize, |acc, &d| acc.saturating_mul(d))
}

/// The shape two shapes broadcast to under NumPy's rule: align from the right; each pair
/// of sizes must be equal or contain a 1.
///
/// ```
/// use tessera_tensor::broadcast_shape;
/// assert_eq!(broadcast_shape(&[8, 1, 6], &[7, 1], "add")?.as_slice(), &[8, 7, 6]);
/// assert!(broadcast_shape(&[2, 3], &[4, 3], "add").is_err());
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
pub fn broadcast_shape(a: &[usize], b: &[usize], op: &'static str) -> Result<Dims> {
    let rank = a.len().max(b.len());
    let mut out: Dims = smallvec::smallvec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() {
            1
        } else {
            a[i - (rank - a.len())]
        };
        let db = if i < rank - b.len() {
            1
        } else {
            b[i - (rank - b.len())]
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::Broadcast {
                op,
                lhs: a.into(),
                rhs: b.into(),
            });
        };
    }
    Ok(out)
}

/// Strides that read a tensor of `shape`/`strides` as if it had shape `target`
/// (stride 0 on broadcast axes). `target` must be a valid broadcast of `shape`.
pub(crate) fn broadcast_strides(
    shape: &[usize],
    strides: &[usize],
    target: &[usize],
    op: &'static str,
) -> Result<Dims> {
    let mismatch = || Error::Broadcast {
        op,
        lhs: shape.into(),
        rhs: target.into(),
    };
    if target.len() < shape.len() {
        return Err(mismatch());
    }
    let lead = target.len() - shape.len();
    let mut out: Dims = smallvec::smallvec![0; target.len()];
    for i in 0..shape.len() {
        let t = target[lead + i];
        if shape[i] == t {
            out[lead + i] = if t == 1 { 0 } else { strides[i] };
        } else if shape[i] == 1 {
            out[lead + i] = 0;
        } else {
            return Err(mismatch());
        }
    }
    Ok(out)
}
