//! Integer index tensors and the operations that index with them: `index_select`,
//! `index_add`, `gather`, `scatter_add`, and the copies `concat` and `stack`.

use crate::error::{Error, Result};
use crate::shape::{contiguous_strides, numel, Dim, Dims};
use crate::tensor::Tensor;

/// A row-major n-dimensional array of `usize` indices: token ids, class targets,
/// `argmax` results, `gather`/`scatter_add` positions.
///
/// ```
/// use tessera_tensor::IndexTensor;
/// let ids = IndexTensor::new(vec![3, 1, 4, 1], &[2, 2])?;
/// assert_eq!(ids.shape(), &[2, 2]);
/// assert!(IndexTensor::new(vec![1, 2, 3], &[2, 2]).is_err());
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexTensor {
    data: Vec<usize>,
    shape: Dims,
}

impl IndexTensor {
    /// Indices with a shape; errors when the length does not match.
    pub fn new(data: Vec<usize>, shape: &[usize]) -> Result<IndexTensor> {
        if data.len() != numel(shape) {
            return Err(Error::ElementCount {
                op: "IndexTensor::new",
                shape: shape.into(),
                expected: numel(shape),
                got: data.len(),
            });
        }
        Ok(IndexTensor {
            data,
            shape: Dims::from_slice(shape),
        })
    }

    /// A rank-1 index tensor.
    pub fn from_vec(data: Vec<usize>) -> IndexTensor {
        let n = data.len();
        IndexTensor {
            data,
            shape: Dims::from_slice(&[n]),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The indices in row-major order.
    pub fn data(&self) -> &[usize] {
        &self.data
    }

    /// Consumes the tensor, returning its indices.
    pub fn into_vec(self) -> Vec<usize> {
        self.data
    }

    /// Number of indices.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The same indices with another shape of the same size.
    pub fn reshape(&self, shape: &[usize]) -> Result<IndexTensor> {
        IndexTensor::new(self.data.clone(), shape)
    }

    /// The indices as an `f32` tensor (exact below 2²⁴).
    pub fn to_tensor(&self) -> Tensor {
        Tensor::from_contiguous(self.data.iter().map(|&i| i as f32).collect(), &self.shape)
    }
}

/// Calls `f(multi_index, linear_position)` for every position of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize], usize)) {
    let n = numel(shape);
    let mut idx: Dims = smallvec::smallvec![0; shape.len()];
    for pos in 0..n {
        f(&idx, pos);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
}

/// Checks the shapes of a `gather`/`scatter_add` index against the tensor it indexes.
fn check_index_shape(
    op: &'static str,
    index: &IndexTensor,
    target: &[usize],
    axis: usize,
) -> Result<()> {
    if index.shape().len() != target.len()
        || (0..target.len()).any(|d| d != axis && index.shape()[d] > target[d])
    {
        return Err(Error::invalid(
            op,
            format!(
                "index of shape {:?} does not fit a tensor of shape {target:?} along axis {axis} \
                 (same rank, and no larger on the other axes)",
                index.shape()
            ),
        ));
    }
    Ok(())
}

impl Tensor {
    /// The entries `indices` along `axis` (`torch.index_select`); an embedding lookup is
    /// `weight.index_select(0, ids)`.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let w = Tensor::from_vec(vec![0., 1., 10., 11., 20., 21.], &[3, 2])?;
    /// assert_eq!(w.index_select(0, &[2, 0, 2])?.to_vec(), vec![20., 21., 0., 1., 20., 21.]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn index_select(&self, axis: impl Dim, indices: &[usize]) -> Result<Tensor> {
        let ax = axis.to_axis(self.rank(), "index_select")?;
        let size = self.shape()[ax];
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(Error::IndexOutOfRange {
                op: "index_select",
                index: bad,
                axis: ax,
                size,
            });
        }
        let outer: usize = self.shape()[..ax].iter().product();
        let inner: usize = self.shape()[ax + 1..].iter().product();
        let data = self.contiguous_data();
        let mut out = Vec::with_capacity(outer * indices.len() * inner);
        for o in 0..outer {
            for &i in indices {
                let start = (o * size + i) * inner;
                out.extend_from_slice(&data[start..start + inner]);
            }
        }
        let mut shape = Dims::from_slice(self.shape());
        shape[ax] = indices.len();
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// `self` plus `src` added at `indices` along `axis` (`torch.index_add`); repeated
    /// indices accumulate. This is the adjoint of [`Tensor::index_select`].
    pub fn index_add(&self, axis: impl Dim, indices: &[usize], src: &Tensor) -> Result<Tensor> {
        let op = "index_add";
        let ax = axis.to_axis(self.rank(), op)?;
        let mut expected = Dims::from_slice(self.shape());
        expected[ax] = indices.len();
        if src.shape() != expected.as_slice() {
            return Err(Error::shape_mismatch(op, self.shape(), src.shape()));
        }
        let size = self.shape()[ax];
        if let Some(&bad) = indices.iter().find(|&&i| i >= size) {
            return Err(Error::IndexOutOfRange {
                op,
                index: bad,
                axis: ax,
                size,
            });
        }
        let outer: usize = self.shape()[..ax].iter().product();
        let inner: usize = self.shape()[ax + 1..].iter().product();
        let mut out = self.to_vec();
        let s = src.contiguous_data();
        for o in 0..outer {
            for (j, &i) in indices.iter().enumerate() {
                let dst = (o * size + i) * inner;
                let from = (o * indices.len() + j) * inner;
                for (d, &v) in out[dst..dst + inner].iter_mut().zip(&s[from..from + inner]) {
                    *d += v;
                }
            }
        }
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    /// `out[i][j][k] = self[i][index[i][j][k]][k]` for `axis = 1` (`torch.gather`); the
    /// output has the index's shape.
    ///
    /// ```
    /// use tessera_tensor::{IndexTensor, Tensor};
    /// let logp = Tensor::from_vec(vec![0.1, 0.2, 0.7, 0.5, 0.4, 0.1], &[2, 3])?;
    /// let targets = IndexTensor::new(vec![2, 0], &[2, 1])?;
    /// assert_eq!(logp.gather(1, &targets)?.to_vec(), vec![0.7, 0.5]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn gather(&self, axis: impl Dim, index: &IndexTensor) -> Result<Tensor> {
        let op = "gather";
        let ax = axis.to_axis(self.rank(), op)?;
        check_index_shape(op, index, self.shape(), ax)?;
        let size = self.shape()[ax];
        let (data, strides) = (self.storage(), self.strides());
        let mut out = Vec::with_capacity(index.numel());
        for_each_target(op, index, ax, size, |idx, i| {
            let mut off = self.offset();
            for (d, (&k, &s)) in idx.iter().zip(strides).enumerate() {
                off += if d == ax { i * s } else { k * s };
            }
            out.push(data[off]);
        })?;
        Ok(Tensor::from_contiguous(out, index.shape()))
    }

    /// `self` with `src[i][j][k]` added at `[i][index[i][j][k]][k]` for `axis = 1`
    /// (`torch.scatter_add`); the adjoint of [`Tensor::gather`].
    pub fn scatter_add(&self, axis: impl Dim, index: &IndexTensor, src: &Tensor) -> Result<Tensor> {
        let op = "scatter_add";
        let ax = axis.to_axis(self.rank(), op)?;
        check_index_shape(op, index, self.shape(), ax)?;
        if src.rank() != index.shape().len()
            || index.shape().iter().zip(src.shape()).any(|(i, s)| i > s)
        {
            return Err(Error::shape_mismatch(op, index.shape(), src.shape()));
        }
        let size = self.shape()[ax];
        let mut out = self.to_vec();
        let out_strides = contiguous_strides(self.shape());
        let (sdata, sstrides) = (src.storage(), src.strides());
        for_each_target(op, index, ax, size, |idx, i| {
            let mut dst = 0;
            let mut from = src.offset();
            for (d, &k) in idx.iter().enumerate() {
                dst += if d == ax { i } else { k } * out_strides[d];
                from += k * sstrides[d];
            }
            out[dst] += sdata[from];
        })?;
        Ok(Tensor::from_contiguous(out, self.shape()))
    }

    /// Joins tensors along an existing axis; all other sizes must agree.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let a = Tensor::ones(&[2, 1]);
    /// let b = Tensor::zeros(&[2, 3]);
    /// assert_eq!(Tensor::concat(&[&a, &b], 1)?.shape(), &[2, 4]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn concat(tensors: &[&Tensor], axis: impl Dim) -> Result<Tensor> {
        let op = "concat";
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid(op, "needs at least one tensor"))?;
        let ax = axis.to_axis(first.rank(), op)?;
        let mut shape = Dims::from_slice(first.shape());
        shape[ax] = 0;
        for t in tensors {
            let ok = t.rank() == first.rank()
                && (0..t.rank()).all(|d| d == ax || t.shape()[d] == first.shape()[d]);
            if !ok {
                return Err(Error::shape_mismatch(op, first.shape(), t.shape()));
            }
            shape[ax] += t.shape()[ax];
        }
        let outer: usize = shape[..ax].iter().product();
        let inner: usize = shape[ax + 1..].iter().product();
        let parts: Vec<_> = tensors.iter().map(|t| t.contiguous_data()).collect();
        let mut out = Vec::with_capacity(numel(&shape));
        for o in 0..outer {
            for (t, d) in tensors.iter().zip(&parts) {
                let block = t.shape()[ax] * inner;
                out.extend_from_slice(&d[o * block..(o + 1) * block]);
            }
        }
        Ok(Tensor::from_contiguous(out, &shape))
    }

    /// Stacks tensors of one shape along a new axis.
    pub fn stack(tensors: &[&Tensor], axis: impl Dim) -> Result<Tensor> {
        let first = tensors
            .first()
            .ok_or_else(|| Error::invalid("stack", "needs at least one tensor"))?;
        let ax = axis.to_axis(first.rank() + 1, "stack")?;
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            return Err(Error::shape_mismatch("stack", first.shape(), t.shape()));
        }
        let expanded = tensors
            .iter()
            .map(|t| t.unsqueeze(ax))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = expanded.iter().collect();
        Tensor::concat(&refs, ax)
    }
}

/// Calls `f(position, target)` for every position of `index` in row-major order, where
/// `target = index[position]` is the coordinate along `axis` (of size `size`) that the
/// position names; the first target out of range is the error, and `f` is not called
/// for it.
fn for_each_target(
    op: &'static str,
    index: &IndexTensor,
    axis: usize,
    size: usize,
    mut f: impl FnMut(&[usize], usize),
) -> Result<()> {
    let mut err = None;
    for_each_index(index.shape(), |idx, pos| {
        let i = index.data()[pos];
        if i < size {
            f(idx, i);
        } else {
            err.get_or_insert(Error::IndexOutOfRange {
                op,
                index: i,
                axis,
                size,
            });
        }
    });
    err.map_or(Ok(()), Err)
}
