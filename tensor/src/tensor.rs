//! The [`Tensor`] type: shared f32 storage plus a strided layout, and its views.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::iter::{for_each_run, write_map1};
use crate::shape::{broadcast_strides, contiguous_strides, numel, Dim, Dims};

/// An n-dimensional array of `f32`.
///
/// A `Tensor` is a handle: an [`Arc`] to its storage plus a shape, strides and an offset.
/// Cloning it is cheap and never copies data. It is immutable from the outside; every
/// operation returns a new tensor. Views (`reshape` of a contiguous tensor, `permute`,
/// `transpose`, `narrow`, `slice`, `broadcast_to`, `expand`, `squeeze`, `unsqueeze`)
/// share storage with their source; `contiguous`, `concat`, `stack` and the index
/// operations copy.
///
/// ```
/// use tessera_tensor::Tensor;
/// let a = Tensor::from_vec(vec![1., 2., 3., 4., 5., 6.], &[2, 3])?;
/// let t = a.t()?;                       // [3, 2] view, no copy
/// assert_eq!(t.shape(), &[3, 2]);
/// assert_eq!(t.to_vec(), vec![1., 4., 2., 5., 3., 6.]);
/// let b = (&a + &Tensor::from_vec(vec![10., 20., 30.], &[3])?)?; // broadcast
/// assert_eq!(b.to_vec(), vec![11., 22., 33., 14., 25., 36.]);
/// # Ok::<(), tessera_tensor::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Vec<f32>>,
    shape: Dims,
    strides: Dims,
    offset: usize,
}

impl Tensor {
    // ------------------------------------------------------------------ constructors

    /// Builds a tensor from row-major data; errors when `data.len()` differs from the
    /// number of elements of `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape);
        if data.len() != n {
            return Err(Error::ElementCount {
                op: "from_vec",
                shape: shape.into(),
                expected: n,
                got: data.len(),
            });
        }
        Ok(Tensor::from_contiguous(data, shape))
    }

    /// Builds a tensor from a slice (copied), as [`Tensor::from_vec`].
    pub fn from_slice(data: &[f32], shape: &[usize]) -> Result<Tensor> {
        Tensor::from_vec(data.to_vec(), shape)
    }

    /// Wraps row-major data whose length is known to match `shape`.
    pub(crate) fn from_contiguous(data: Vec<f32>, shape: &[usize]) -> Tensor {
        debug_assert_eq!(data.len(), numel(shape));
        Tensor {
            storage: Arc::new(data),
            strides: contiguous_strides(shape),
            shape: Dims::from_slice(shape),
            offset: 0,
        }
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::from_contiguous(vec![value], &[])
    }

    /// A tensor filled with `value`.
    ///
    /// # Panics
    /// Like `vec![value; n]`, when the element count cannot be allocated. The other
    /// constructors that take only a shape (`zeros`, `ones`, `rand`, `randn`, `eye`) share
    /// this: they allocate what they are asked for.
    pub fn full(shape: &[usize], value: f32) -> Tensor {
        Tensor::from_contiguous(vec![value; numel(shape)], shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    /// A tensor of ones.
    pub fn ones(shape: &[usize]) -> Tensor {
        Tensor::full(shape, 1.0)
    }

    /// A tensor of zeros with the shape of `self`.
    pub fn zeros_like(&self) -> Tensor {
        Tensor::zeros(&self.shape)
    }

    /// A tensor of ones with the shape of `self`.
    pub fn ones_like(&self) -> Tensor {
        Tensor::ones(&self.shape)
    }

    /// `[start, start + step, ...]` below `end`, as `torch.arange`.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// assert_eq!(Tensor::arange(0.0, 2.0, 0.5)?.to_vec(), vec![0.0, 0.5, 1.0, 1.5]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn arange(start: f32, end: f32, step: f32) -> Result<Tensor> {
        if step == 0.0 || !step.is_finite() || !start.is_finite() || !end.is_finite() {
            return Err(Error::invalid(
                "arange",
                format!("start {start}, end {end} and step {step} must be finite, step non-zero"),
            ));
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let data: Vec<f32> = (0..n).map(|i| start + i as f32 * step).collect();
        Ok(Tensor::from_contiguous(data, &[n]))
    }

    /// The `n x n` identity matrix.
    pub fn eye(n: usize) -> Tensor {
        let mut data = vec![0.0; n * n];
        for i in 0..n {
            data[i * n + i] = 1.0;
        }
        Tensor::from_contiguous(data, &[n, n])
    }

    // ------------------------------------------------------------------ accessors

    /// The size of each axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The step in storage elements between neighbours along each axis (0 on broadcast axes).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The position of the first element in the storage.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// An error unless `len`, the number of entries of `what`, is the rank: one entry
    /// per axis.
    fn one_per_axis(&self, op: &'static str, what: &str, len: usize) -> Result<()> {
        if len != self.rank() {
            let shape = self.shape();
            let msg = format!("{what} has {len} entries for shape {shape:?}, one per axis");
            return Err(Error::invalid(op, msg));
        }
        Ok(())
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// Size of one axis (negative axes count from the back).
    pub fn dim<D: Dim>(&self, axis: D) -> Result<usize> {
        Ok(self.shape[axis.to_axis(self.rank(), "dim")?])
    }

    /// Whether the elements lie in storage in row-major order without gaps.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// Whether two tensors share the same storage (one is a view of the other).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The whole underlying storage (including elements this view does not reach).
    pub fn storage(&self) -> &[f32] {
        &self.storage
    }

    /// The elements as a slice when the tensor is contiguous, `None` otherwise.
    pub fn as_slice(&self) -> Option<&[f32]> {
        self.is_contiguous()
            .then(|| &self.storage[self.offset..self.offset + self.numel()])
    }

    /// The elements in row-major order, copied.
    pub fn to_vec(&self) -> Vec<f32> {
        if let Some(s) = self.as_slice() {
            return s.to_vec();
        }
        self.map_collect(|x| x)
    }

    /// The elements in row-major order, taking the storage without a copy when this
    /// tensor is its only, compact owner (a freshly computed result), copying otherwise.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0, 2.0], &[2])?;
    /// assert_eq!(x.into_vec(), vec![1.0, 2.0]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn into_vec(self) -> Vec<f32> {
        if self.offset == 0 && self.is_contiguous() && self.storage.len() == self.numel() {
            match Arc::try_unwrap(self.storage) {
                Ok(v) => v,
                Err(shared) => shared.to_vec(),
            }
        } else {
            self.to_vec()
        }
    }

    /// The single value of a one-element tensor.
    pub fn to_scalar(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::invalid(
                "to_scalar",
                format!("expected one element, got shape {:?}", self.shape()),
            ));
        }
        Ok(self.storage[self.offset])
    }

    /// The element at a multi-index.
    pub fn get(&self, index: &[usize]) -> Result<f32> {
        self.one_per_axis("get", &format!("index {index:?}"), index.len())?;
        let mut off = self.offset;
        for (ax, ((&i, &d), &s)) in index.iter().zip(&self.shape).zip(&self.strides).enumerate() {
            if i >= d {
                return Err(Error::IndexOutOfRange {
                    op: "get",
                    index: i,
                    axis: ax,
                    size: d,
                });
            }
            off += i * s;
        }
        Ok(self.storage[off])
    }

    /// Unpacks the shape of a rank-1 tensor.
    pub fn dims1(&self) -> Result<usize> {
        match self.shape() {
            &[a] => Ok(a),
            s => Err(Error::rank("dims1", "1", s)),
        }
    }

    /// Unpacks the shape of a rank-2 tensor: `let (rows, cols) = x.dims2()?;`.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.shape() {
            &[a, b] => Ok((a, b)),
            s => Err(Error::rank("dims2", "2", s)),
        }
    }

    /// Unpacks the shape of a rank-3 tensor.
    pub fn dims3(&self) -> Result<(usize, usize, usize)> {
        match self.shape() {
            &[a, b, c] => Ok((a, b, c)),
            s => Err(Error::rank("dims3", "3", s)),
        }
    }

    /// Unpacks the shape of a rank-4 tensor.
    pub fn dims4(&self) -> Result<(usize, usize, usize, usize)> {
        match self.shape() {
            &[a, b, c, d] => Ok((a, b, c, d)),
            s => Err(Error::rank("dims4", "4", s)),
        }
    }

    // ------------------------------------------------------------------ internal helpers

    /// A view of the same storage with another layout.
    fn with_layout(&self, shape: Dims, strides: Dims, offset: usize) -> Tensor {
        Tensor {
            storage: Arc::clone(&self.storage),
            shape,
            strides,
            offset,
        }
    }

    /// `f` applied to every element, in row-major order.
    pub(crate) fn map_collect(&self, f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
        let n = self.numel();
        if let Some(s) = self.as_slice() {
            if n >= crate::parallel::PAR_MIN_ELEMS {
                // SAFETY: `s` has `n` elements, so it reaches past every chunk and the
                // loop writes each chunk whole.
                return unsafe {
                    crate::parallel::fill(n, |lo, chunk| {
                        for (d, &x) in chunk.iter_mut().zip(&s[lo..]) {
                            d.write(f(x));
                        }
                    })
                };
            }
            return s.iter().map(|&x| f(x)).collect();
        }
        let src: &[f32] = &self.storage;
        // A strided or broadcast view (a transpose, a bias expanded to a matrix): each
        // chunk of the output walks the runs and writes the part of each that falls
        // inside it.
        // SAFETY: the runs cover positions 0..n in order, so every position of the
        // chunk lies in exactly one run and is written once.
        unsafe {
            crate::parallel::fill(n, |lo, chunk| {
                let hi = lo + chunk.len();
                let mut pos = 0;
                for_each_run(&self.shape, [&self.strides], [self.offset], |r| {
                    let (start, end) = (pos.max(lo), (pos + r.len).min(hi));
                    if start < end {
                        let off = r.offsets[0] + (start - pos) * r.strides[0];
                        let dst = &mut chunk[start - lo..end - lo];
                        write_map1(dst, src, off, r.strides[0], &f);
                    }
                    pos += r.len;
                });
            })
        }
    }

    /// The contiguous data of this tensor: borrowed when already contiguous, else copied.
    pub(crate) fn contiguous_data(&self) -> std::borrow::Cow<'_, [f32]> {
        match self.as_slice() {
            Some(s) => std::borrow::Cow::Borrowed(s),
            None => std::borrow::Cow::Owned(self.map_collect(|x| x)),
        }
    }

    // ------------------------------------------------------------------ views

    /// A row-major copy, or `self` (no copy) when already contiguous.
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        Tensor::from_contiguous(self.map_collect(|x| x), &self.shape)
    }

    /// The same elements with a new shape, as `torch.reshape`: a view when the tensor is
    /// contiguous, a copy otherwise. See [`Tensor::reshape_infer`] for a `-1` entry.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n = numel(shape);
        if n != self.numel() {
            return Err(Error::ElementCount {
                op: "reshape",
                shape: shape.into(),
                expected: n,
                got: self.numel(),
            });
        }
        let src = if self.is_contiguous() {
            self.clone()
        } else {
            self.contiguous()
        };
        Ok(src.with_layout(
            Dims::from_slice(shape),
            contiguous_strides(shape),
            src.offset,
        ))
    }

    /// Like [`Tensor::reshape`] with a `-1` entry inferred from the others.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::zeros(&[4, 6]);
    /// assert_eq!(x.reshape_infer(&[2, -1, 3])?.shape(), &[2, 4, 3]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let unknown: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] == -1).collect();
        if unknown.len() > 1 || shape.iter().any(|&d| d < -1) {
            return Err(Error::invalid(
                "reshape",
                format!("shape {shape:?} may hold one -1 and no other negative size"),
            ));
        }
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if let Some(&i) = unknown.first() {
            if known == 0 || !self.numel().is_multiple_of(known) {
                return Err(Error::invalid(
                    "reshape",
                    format!("cannot infer -1 in {shape:?} for {} elements", self.numel()),
                ));
            }
            out[i] = self.numel() / known;
        }
        self.reshape(&out)
    }

    /// Like [`Tensor::reshape`] but never copies: errors when the tensor is not contiguous.
    pub fn view(&self, shape: &[usize]) -> Result<Tensor> {
        if !self.is_contiguous() {
            return Err(Error::NotContiguous {
                op: "view",
                shape: self.shape().into(),
                strides: self.strides.to_vec(),
            });
        }
        self.reshape(shape)
    }

    /// Flattens to one axis.
    pub fn flatten_all(&self) -> Tensor {
        self.reshape(&[self.numel()])
            .expect("the element count is unchanged")
    }

    /// Reorders the axes: output axis `i` is input axis `order[i]`. A view.
    pub fn permute<D: Dim>(&self, order: &[D]) -> Result<Tensor> {
        self.one_per_axis("permute", "order", order.len())?;
        let mut seen = [false; 64];
        let mut shape = Dims::new();
        let mut strides = Dims::new();
        for &d in order {
            let ax = d.to_axis(self.rank(), "permute")?;
            if seen[ax] {
                return Err(Error::invalid(
                    "permute",
                    format!("axis {ax} appears twice in the order"),
                ));
            }
            seen[ax] = true;
            shape.push(self.shape[ax]);
            strides.push(self.strides[ax]);
        }
        Ok(self.with_layout(shape, strides, self.offset))
    }

    /// Swaps two axes. A view.
    pub fn transpose<D: Dim>(&self, a: D, b: D) -> Result<Tensor> {
        let a = a.to_axis(self.rank(), "transpose")?;
        let b = b.to_axis(self.rank(), "transpose")?;
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        shape.swap(a, b);
        strides.swap(a, b);
        Ok(self.with_layout(shape, strides, self.offset))
    }

    /// The transpose of the last two axes (of a rank ≥ 2 tensor). A view.
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::rank("t", "at least 2", self.shape()));
        }
        self.transpose(-2, -1)
    }

    /// `len` elements of `axis` from `start`. A view.
    pub fn narrow<D: Dim>(&self, axis: D, start: usize, len: usize) -> Result<Tensor> {
        let ax = axis.to_axis(self.rank(), "narrow")?;
        let size = self.shape[ax];
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} exceeds axis {ax} of size {size}",
                    start.saturating_add(len)
                ),
            ));
        }
        let mut shape = self.shape.clone();
        shape[ax] = len;
        let offset = if len == 0 {
            self.offset
        } else {
            self.offset + start * self.strides[ax]
        };
        Ok(self.with_layout(shape, self.strides.clone(), offset))
    }

    /// Elements `start, start + step, ...` below `end` along `axis`. A view.
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::arange(0.0, 10.0, 1.0)?;
    /// assert_eq!(x.slice(0, 1, 8, 3)?.to_vec(), vec![1.0, 4.0, 7.0]);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    pub fn slice<D: Dim>(&self, axis: D, start: usize, end: usize, step: usize) -> Result<Tensor> {
        let ax = axis.to_axis(self.rank(), "slice")?;
        let size = self.shape[ax];
        if step == 0 || start > end || end > size {
            return Err(Error::invalid(
                "slice",
                format!("range {start}..{end} step {step} is invalid for axis {ax} of size {size}"),
            ));
        }
        let len = (end - start).div_ceil(step);
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        shape[ax] = len;
        strides[ax] *= step;
        let offset = if len == 0 {
            self.offset
        } else {
            self.offset + start * self.strides[ax]
        };
        Ok(self.with_layout(shape, strides, offset))
    }

    /// A view with the given shape under NumPy broadcasting: new leading axes and axes of
    /// size 1 are repeated with stride 0, without copying.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        let strides = broadcast_strides(&self.shape, &self.strides, shape, "broadcast_to")?;
        Ok(self.with_layout(Dims::from_slice(shape), strides, self.offset))
    }

    /// `torch.Tensor.expand`: as [`Tensor::broadcast_to`], where `-1` keeps an axis' size.
    pub fn expand(&self, shape: &[isize]) -> Result<Tensor> {
        if shape.len() < self.rank() {
            return Err(Error::invalid(
                "expand",
                format!("target {shape:?} has fewer axes than {:?}", self.shape()),
            ));
        }
        let lead = shape.len() - self.rank();
        let mut target = Vec::with_capacity(shape.len());
        for (i, &d) in shape.iter().enumerate() {
            target.push(match d {
                -1 if i >= lead => self.shape[i - lead],
                d if d >= 0 => d as usize,
                _ => {
                    return Err(Error::invalid(
                        "expand",
                        format!("size {d} at axis {i} of {shape:?} is invalid"),
                    ))
                }
            });
        }
        self.broadcast_to(&target)
    }

    /// Removes an axis of size 1. A view.
    pub fn squeeze<D: Dim>(&self, axis: D) -> Result<Tensor> {
        let ax = axis.to_axis(self.rank(), "squeeze")?;
        if self.shape[ax] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "axis {ax} of shape {:?} has size {}, not 1",
                    self.shape(),
                    self.shape[ax]
                ),
            ));
        }
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        shape.remove(ax);
        strides.remove(ax);
        Ok(self.with_layout(shape, strides, self.offset))
    }

    /// Inserts an axis of size 1 before `axis` (`axis` may equal the rank). A view.
    pub fn unsqueeze<D: Dim>(&self, axis: D) -> Result<Tensor> {
        let ax = axis.to_axis(self.rank() + 1, "unsqueeze")?;
        let mut shape = self.shape.clone();
        let mut strides = self.strides.clone();
        let stride = if ax < self.rank() {
            self.strides[ax] * self.shape[ax]
        } else {
            1
        };
        shape.insert(ax, 1);
        strides.insert(ax, stride);
        Ok(self.with_layout(shape, strides, self.offset))
    }

    // ------------------------------------------------------------------ ndarray interop

    /// A zero-copy `ndarray` view of this tensor (with the `ndarray` feature).
    ///
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 2., 3., 4.], &[2, 2])?.t()?;
    /// let v = x.as_ndarray();
    /// assert_eq!(v[[0, 1]], 3.0);
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    #[cfg(feature = "ndarray")]
    pub fn as_ndarray(&self) -> ndarray::ArrayViewD<'_, f32> {
        use ndarray::{ArrayViewD, IxDyn, ShapeBuilder};
        let shape = IxDyn(&self.shape).strides(IxDyn(&self.strides));
        if self.numel() == 0 {
            return ArrayViewD::from_shape(IxDyn(&self.shape), &[]).expect("empty view");
        }
        // SAFETY: every index reachable through shape and strides lies in
        // `storage[offset..]` (an invariant kept by every view constructor above), the
        // storage outlives the returned borrow, and a read-only view may alias (stride 0).
        unsafe { ArrayViewD::from_shape_ptr(shape, self.storage.as_ptr().add(self.offset)) }
    }

    /// An owned `ndarray` copy (with the `ndarray` feature).
    #[cfg(feature = "ndarray")]
    pub fn to_ndarray(&self) -> ndarray::ArrayD<f32> {
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&self.shape), self.to_vec())
            .expect("shape matches data")
    }

    /// A tensor from an `ndarray` (copied into row-major order when needed; with the
    /// `ndarray` feature).
    #[cfg(feature = "ndarray")]
    pub fn from_ndarray<S, D>(array: &ndarray::ArrayBase<S, D>) -> Tensor
    where
        S: ndarray::Data<Elem = f32>,
        D: ndarray::Dimension,
    {
        let shape = array.shape().to_vec();
        let data = match array.as_slice() {
            Some(s) => s.to_vec(),
            None => array.iter().copied().collect(),
        };
        Tensor::from_contiguous(data, &shape)
    }
}

/// Tensors with more elements than this print the first and last [`FMT_EDGE`] entries
/// of each long axis around a `...` (the alternate form `{:#}` prints everything).
const FMT_ELIDE_ABOVE: usize = 500;
/// Entries printed at each end of an elided axis.
const FMT_EDGE: usize = 3;

impl Tensor {
    /// Nested brackets, rows on their own lines, a blank line between blocks of rank 3
    /// and above (numpy's and ndarray's layout); each element through `f32`'s `Display`,
    /// so a precision (`{:.3}`) applies to every element.
    fn fmt_elements(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = f.alternate() || self.numel() <= FMT_ELIDE_ABOVE;
        self.fmt_axis(f, 0, self.offset, full)
    }

    fn fmt_axis(
        &self,
        f: &mut fmt::Formatter<'_>,
        axis: usize,
        offset: usize,
        full: bool,
    ) -> fmt::Result {
        let rank = self.shape.len();
        if axis == rank {
            return fmt::Display::fmt(&self.storage[offset], f);
        }
        let n = self.shape[axis];
        let elide = !full && n > 2 * FMT_EDGE;
        f.write_str("[")?;
        for i in 0..n {
            if elide && i >= FMT_EDGE && i < n - FMT_EDGE {
                if i == FMT_EDGE {
                    self.fmt_separator(f, axis)?;
                    f.write_str("...")?;
                }
                continue;
            }
            if i > 0 {
                self.fmt_separator(f, axis)?;
            }
            self.fmt_axis(f, axis + 1, offset + i * self.strides[axis], full)?;
        }
        f.write_str("]")
    }

    /// What goes between two entries of `axis`: `", "` in a row, else a line break (two
    /// or more between blocks) and an indent under the opening bracket.
    fn fmt_separator(&self, f: &mut fmt::Formatter<'_>, axis: usize) -> fmt::Result {
        let below = self.shape.len() - axis - 1;
        if below == 0 {
            return f.write_str(", ");
        }
        f.write_str(",")?;
        for _ in 0..below.min(2) {
            f.write_str("\n")?;
        }
        for _ in 0..=axis {
            f.write_str(" ")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{:?} ", self.shape())?;
        self.fmt_elements(f)
    }
}

impl fmt::Display for Tensor {
    /// ```
    /// use tessera_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1., 2.5, 3., 4.], &[2, 2])?;
    /// assert_eq!(x.to_string(), "[[1, 2.5],\n [3, 4]]");
    /// assert_eq!(format!("{x:.1}"), "[[1.0, 2.5],\n [3.0, 4.0]]");
    /// let long = Tensor::arange(0.0, 1000.0, 1.0)?;
    /// assert_eq!(long.to_string(), "[0, 1, 2, ..., 997, 998, 999]");
    /// # Ok::<(), tessera_tensor::Error>(())
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_elements(f)
    }
}

impl PartialEq for Tensor {
    /// Equal shapes and equal elements (`NaN != NaN`).
    fn eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape && self.to_vec() == other.to_vec()
    }
}
