//! The [`Dataset`] trait of labelled images, and subsets of datasets.

use std::sync::Arc;

use tessera_tensor::{Rng, Tensor};

use crate::{Error, Result};

/// One labelled image.
#[derive(Clone, Debug)]
pub struct Sample {
    /// The image, `[C, H, W]` `f32`, values in `[0, 1]` for the built-in datasets.
    pub image: Tensor,
    /// The class, `0..classes`.
    pub label: usize,
}

/// A finite, indexable set of labelled images. Implementations are `Send + Sync` so that
/// a [`Loader`](crate::Loader)'s worker threads can read them at the same time.
///
/// ```
/// use tessera_data::{Dataset, Shapes};
/// let ds = Shapes::new(16, 32, 0)?;
/// assert_eq!(ds.len(), 16);
/// let s = ds.get(3)?;
/// assert_eq!(s.image.shape(), &[3, 32, 32]);
/// assert!(s.label < ds.classes());
/// assert!(ds.get(16).is_err());       // out of range is an error, not a panic
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `i` (decoded, `[C, H, W]`); `i >= len()` is an error.
    fn get(&self, i: usize) -> Result<Sample>;

    /// The label of sample `i`, without decoding its image where the dataset can (the
    /// default decodes it).
    fn label(&self, i: usize) -> Result<usize> {
        Ok(self.get(i)?.label)
    }

    /// Number of classes.
    fn classes(&self) -> usize;

    /// The class names, index order (by default `"0"`, `"1"`, ...).
    fn class_names(&self) -> Vec<String> {
        (0..self.classes()).map(|k| k.to_string()).collect()
    }

    /// The `[C, H, W]` shape of the samples (of the first one where they differ).
    fn image_shape(&self) -> [usize; 3];
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn is_empty(&self) -> bool {
        (**self).is_empty()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        (**self).get(i)
    }
    fn label(&self, i: usize) -> Result<usize> {
        (**self).label(i)
    }
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn class_names(&self) -> Vec<String> {
        (**self).class_names()
    }
    fn image_shape(&self) -> [usize; 3] {
        (**self).image_shape()
    }
}

/// The error for index `i` of a dataset of `len` samples.
pub(crate) fn out_of_range(what: &'static str, i: usize, len: usize) -> Error {
    Error::Invalid {
        what,
        msg: format!("index {i} is out of range for a dataset of {len} samples"),
    }
}

/// Some samples of a dataset, in a given order (`indices[k]` is the underlying index of
/// sample `k`).
#[derive(Clone)]
pub struct Subset {
    /// The underlying dataset.
    pub dataset: Arc<dyn Dataset>,
    /// The underlying indices, in the subset's order.
    pub indices: Vec<usize>,
}

impl std::fmt::Debug for Subset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("len", &self.indices.len())
            .field("of", &self.dataset.len())
            .finish()
    }
}

impl Subset {
    /// The samples `indices` of `dataset`; an index out of range is an error.
    pub fn new(dataset: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        let len = dataset.len();
        if let Some(&i) = indices.iter().find(|&&i| i >= len) {
            return Err(out_of_range("Subset::new", i, len));
        }
        Ok(Subset { dataset, indices })
    }

    /// The first `n` samples of each class of `dataset`, in its order (fewer for a class
    /// that has fewer): a smaller labelled set that keeps the classes balanced and is the
    /// same on every run, as few-label experiments use.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tessera_data::{Dataset, Shapes, Subset};
    /// let shapes: Arc<dyn Dataset> = Arc::new(Shapes::new(80, 16, 0)?);
    /// let few = Subset::first_per_class(shapes, 3)?;
    /// assert_eq!(few.len(), 3 * 8);
    /// # Ok::<(), tessera_data::Error>(())
    /// ```
    pub fn first_per_class(dataset: Arc<dyn Dataset>, n: usize) -> Result<Subset> {
        let mut seen = vec![0usize; dataset.classes()];
        let mut indices = Vec::new();
        for i in 0..dataset.len() {
            let label = dataset.label(i)?;
            if let Some(count) = seen.get_mut(label).filter(|c| **c < n) {
                *count += 1;
                indices.push(i);
            }
        }
        Ok(Subset { dataset, indices })
    }

    /// The index in the underlying dataset of this subset's sample `i`.
    fn inner(&self, op: &'static str, i: usize) -> Result<usize> {
        let n = self.indices.len();
        self.indices
            .get(i)
            .copied()
            .ok_or_else(|| out_of_range(op, i, n))
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, i: usize) -> Result<Sample> {
        self.dataset.get(self.inner("Subset::get", i)?)
    }
    fn label(&self, i: usize) -> Result<usize> {
        self.dataset.label(self.inner("Subset::label", i)?)
    }
    fn classes(&self) -> usize {
        self.dataset.classes()
    }
    fn class_names(&self) -> Vec<String> {
        self.dataset.class_names()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.dataset.image_shape()
    }
}

/// Splits a dataset at random into two disjoint subsets, the first with
/// `floor(fraction · len)` samples, the second with the rest (in a random order fixed by
/// `seed`). `fraction` must lie in `[0, 1]`.
///
/// ```
/// use std::sync::Arc;
/// use tessera_data::{split, Dataset, Shapes};
/// let ds = Arc::new(Shapes::new(100, 16, 0)?);
/// let (train, val) = split(ds, 0.8, 42)?;
/// assert_eq!((train.len(), val.len()), (80, 20));
/// assert!(train.indices.iter().all(|i| !val.indices.contains(i)));
/// # Ok::<(), tessera_data::Error>(())
/// ```
pub fn split(dataset: Arc<dyn Dataset>, fraction: f64, seed: u64) -> Result<(Subset, Subset)> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Invalid {
            what: "split",
            msg: format!("fraction {fraction} is outside [0, 1]"),
        });
    }
    let n = dataset.len();
    let mut order: Vec<usize> = (0..n).collect();
    Rng::seed(seed).shuffle(&mut order);
    let at = (n as f64 * fraction) as usize;
    let rest = order.split_off(at);
    Ok((
        Subset {
            dataset: Arc::clone(&dataset),
            indices: order,
        },
        Subset {
            dataset,
            indices: rest,
        },
    ))
}
