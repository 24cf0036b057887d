//! What data-parallel training needs of the other processes: a [`Communicator`]
//! (sum over ranks, broadcast from one rank), the single-process [`Local`] one, and
//! the steps every trainer takes with it: averaging gradients in buckets
//! ([`all_reduce_gradients`]), starting from one rank's parameters
//! ([`broadcast_parameters`]), checking that the ranks agree ([`check_same`]) and
//! giving each rank its part of a batch ([`shard`]).
//!
//! The model crates see only this trait; `tessera-distributed` implements it on MPI.

use crate::{Error, Parameter, Result};
use tessera_tensor::Tensor;

/// DDP's default gradient bucket: 25 MiB (`bucket_cap_mb=25`).
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// The group of processes (ranks) that train one model together, each on its part of
/// every batch. Every rank must make the same calls in the same order (they are
/// collective); a call that only some ranks make waits for the others.
pub trait Communicator {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank by the element-wise sum of all ranks' `buf`s (of
    /// equal length).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Communicator::all_reduce_sum`] in `f64`, for counts and metrics.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Replaces `buf` on every rank by rank `root`'s `buf` (of equal length).
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// [`Communicator::broadcast`] of bytes.
    fn broadcast_bytes(&self, buf: &mut [u8], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// The most bytes of gradients reduced in one call (default
    /// [`DEFAULT_BUCKET_BYTES`]).
    fn bucket_bytes(&self) -> usize {
        DEFAULT_BUCKET_BYTES
    }
}

/// One process alone: rank 0 of 1; every collective leaves its buffer as it is.
///
/// ```
/// use tessera_optim::{Communicator, Local};
/// let mut buf = [1.0f32, 2.0];
/// Local.all_reduce_sum(&mut buf)?;
/// assert_eq!((Local.rank(), Local.size(), buf), (0, 1, [1.0, 2.0]));
/// # Ok::<(), tessera_optim::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Communicator for Local {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn broadcast_bytes(&self, _: &mut [u8], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// A communicator that reduces gradients in buckets of another size (at least one
/// `f32`): `WithBuckets::new(mpi, 4 << 20)`.
///
/// ```
/// use tessera_optim::{Communicator, Local, WithBuckets};
/// assert_eq!(WithBuckets::new(Local, 1 << 20).bucket_bytes(), 1 << 20);
/// assert_eq!(WithBuckets::new(Local, 0).bucket_bytes(), 4);
/// ```
#[derive(Clone, Debug)]
pub struct WithBuckets<C> {
    inner: C,
    bytes: usize,
}

impl<C: Communicator> WithBuckets<C> {
    /// `inner` with buckets of `bytes` (rounded up to one `f32`).
    pub fn new(inner: C, bytes: usize) -> WithBuckets<C> {
        let bytes = bytes.max(std::mem::size_of::<f32>());
        WithBuckets { inner, bytes }
    }
}

/// Forwards every call to `$inner` except `bucket_bytes`, which is `$bucket`.
macro_rules! forward {
    ($self:ident, $inner:expr, $bucket:expr) => {
        fn rank(&$self) -> usize {
            $inner.rank()
        }
        fn size(&$self) -> usize {
            $inner.size()
        }
        fn all_reduce_sum(&$self, buf: &mut [f32]) -> Result<()> {
            $inner.all_reduce_sum(buf)
        }
        fn all_reduce_sum_f64(&$self, buf: &mut [f64]) -> Result<()> {
            $inner.all_reduce_sum_f64(buf)
        }
        fn broadcast(&$self, buf: &mut [f32], root: usize) -> Result<()> {
            $inner.broadcast(buf, root)
        }
        fn broadcast_bytes(&$self, buf: &mut [u8], root: usize) -> Result<()> {
            $inner.broadcast_bytes(buf, root)
        }
        fn barrier(&$self) -> Result<()> {
            $inner.barrier()
        }
        fn bucket_bytes(&$self) -> usize {
            $bucket
        }
    };
}

impl<C: Communicator> Communicator for WithBuckets<C> {
    forward!(self, self.inner, self.bytes);
}

impl<C: Communicator + ?Sized> Communicator for &C {
    forward!(self, (**self), (**self).bucket_bytes());
}

impl<C: Communicator + ?Sized> Communicator for std::rc::Rc<C> {
    forward!(self, (**self), (**self).bucket_bytes());
}

/// An error unless `root` is a rank of a group of `size`.
pub fn check_root(root: usize, size: usize) -> Result<()> {
    if root < size {
        Ok(())
    } else {
        Err(Error::Communication {
            op: "broadcast",
            reason: format!("root rank {root} is not one of the {size} ranks"),
        })
    }
}

/// Rank `rank`'s part of a batch of `items` split over `size` ranks: items `rank`,
/// `rank + size`, `rank + 2·size`, ... (as PyTorch's `DistributedSampler` strides).
/// Where `size` does not divide the batch, the first `len % size` ranks take one item
/// more; a rank past the batch's end takes none.
///
/// ```
/// let batch = [10, 11, 12, 13, 14];
/// assert_eq!(tessera_optim::shard(&batch, 0, 2), vec![10, 12, 14]);
/// assert_eq!(tessera_optim::shard(&batch, 1, 2), vec![11, 13]);
/// ```
pub fn shard<T: Clone>(items: &[T], rank: usize, size: usize) -> Vec<T> {
    items
        .iter()
        .skip(rank)
        .step_by(size.max(1))
        .cloned()
        .collect()
}

/// Sums `values` over the ranks (one small all-reduce): what a step's loss, item
/// count and correct count become over the whole batch.
pub fn sum_over_ranks<const N: usize>(
    comm: &dyn Communicator,
    values: [f64; N],
) -> Result<[f64; N]> {
    let mut v = values;
    if comm.size() > 1 {
        comm.all_reduce_sum_f64(&mut v)?;
    }
    Ok(v)
}

/// Replaces every rank's gradients by the sum over ranks of `scale` times its
/// gradients: with `scale` = this rank's share of the batch (its items over all
/// items), the gradient of the loss's mean over the whole batch, as one process would
/// compute it. The gradients travel in buckets of at most
/// [`Communicator::bucket_bytes`]. A parameter without a gradient counts as a zero
/// gradient on that rank; one that has none on every rank keeps none. With one rank
/// nothing changes (not even a scale of 1).
pub fn all_reduce_gradients(
    comm: &dyn Communicator,
    params: &[(String, Parameter)],
    scale: f32,
) -> Result<()> {
    if comm.size() == 1 {
        return Ok(());
    }
    // Whether each parameter has a gradient (1.0), then every gradient, flattened.
    let grads: Vec<Option<Tensor>> = params.iter().map(|(_, p)| p.grad()).collect();
    let numels: Vec<usize> = params.iter().map(|(_, p)| p.value().numel()).collect();
    let mut flat = Vec::with_capacity(params.len() + numels.iter().sum::<usize>());
    flat.extend(grads.iter().map(|g| f32::from(u8::from(g.is_some()))));
    for (g, &n) in grads.iter().zip(&numels) {
        match g {
            Some(g) => match g.as_slice() {
                Some(s) => flat.extend(s.iter().map(|&x| x * scale)),
                None => flat.extend(g.to_vec().into_iter().map(|x| x * scale)),
            },
            None => flat.extend(std::iter::repeat_n(0.0, n)),
        }
    }
    let per_bucket = (comm.bucket_bytes() / std::mem::size_of::<f32>()).max(1);
    for bucket in flat.chunks_mut(per_bucket) {
        comm.all_reduce_sum(bucket)?;
    }
    let (flags, mut rest) = flat.split_at(params.len());
    for (((_, p), &n), &flag) in params.iter().zip(&numels).zip(flags) {
        let (mine, tail) = rest.split_at(n);
        rest = tail;
        if flag > 0.0 {
            p.set_grad(Tensor::from_vec(mine.to_vec(), p.value().shape())?)?;
        }
    }
    Ok(())
}

/// Gives every rank rank `root`'s parameter values (the start of a data-parallel run:
/// every rank then steps from the same point). The parameters must agree in shape
/// ([`check_same`] checks that first).
pub fn broadcast_parameters(
    comm: &dyn Communicator,
    params: &[(String, Parameter)],
    root: usize,
) -> Result<()> {
    if comm.size() == 1 {
        return check_root(root, 1);
    }
    let values: Vec<Tensor> = params.iter().map(|(_, p)| p.value()).collect();
    let mut flat: Vec<f32> = Vec::with_capacity(values.iter().map(Tensor::numel).sum());
    for v in &values {
        match v.as_slice() {
            Some(s) => flat.extend_from_slice(s),
            None => flat.extend(v.to_vec()),
        }
    }
    let per_bucket = (comm.bucket_bytes() / std::mem::size_of::<f32>()).max(1);
    for bucket in flat.chunks_mut(per_bucket) {
        comm.broadcast(bucket, root)?;
    }
    let mut rest = flat.as_slice();
    for ((_, p), v) in params.iter().zip(&values) {
        let (mine, tail) = rest.split_at(v.numel());
        rest = tail;
        p.set(Tensor::from_vec(mine.to_vec(), v.shape())?)?;
    }
    Ok(())
}

/// A description of `params` for [`check_same`]: one line per parameter, its name and
/// shape.
pub fn describe_parameters(params: &[(String, Parameter)]) -> String {
    let mut text = String::new();
    for (name, p) in params {
        text.push_str(&format!("{name} {:?}\n", p.value().shape()));
    }
    text
}

/// Checks that every rank has the same `text` as rank 0 (a configuration, the
/// parameters' names and shapes): [`Error::RanksDisagree`] on every rank otherwise,
/// naming the ranks that differ and the first line where this rank and rank 0 part.
pub fn check_same(comm: &dyn Communicator, what: &str, text: &str) -> Result<()> {
    let size = comm.size();
    if size == 1 {
        return Ok(());
    }
    let rank = comm.rank();
    let mut len = (text.len() as u64).to_le_bytes();
    comm.broadcast_bytes(&mut len, 0)?;
    let root_len = u64::from_le_bytes(len) as usize;
    let mut root = if rank == 0 {
        text.as_bytes().to_vec()
    } else {
        vec![0u8; root_len]
    };
    comm.broadcast_bytes(&mut root, 0)?;
    let root = String::from_utf8_lossy(&root).into_owned();
    let mut differs = vec![0.0f64; size];
    differs[rank] = f64::from(u8::from(root != text));
    comm.all_reduce_sum_f64(&mut differs)?;
    let ranks: Vec<usize> = (0..size).filter(|&r| differs[r] > 0.0).collect();
    if ranks.is_empty() {
        return Ok(());
    }
    let detail = if rank == 0 {
        "rank 0's copy is the one the others are compared with".to_string()
    } else if root == text {
        format!("rank {rank} agrees with rank 0")
    } else {
        let (root_line, this_line) = first_difference(&root, text);
        format!("rank 0 has {root_line:?} where rank {rank} has {this_line:?}")
    };
    Err(Error::RanksDisagree {
        what: what.to_string(),
        ranks,
        detail,
    })
}

/// The first line where `a` and `b` differ (`"-"` for a missing line).
fn first_difference(a: &str, b: &str) -> (String, String) {
    let (mut la, mut lb) = (a.lines(), b.lines());
    loop {
        match (la.next(), lb.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (None, None) => return (String::new(), String::new()),
            (x, y) => {
                let show = |l: Option<&str>| l.unwrap_or("-").to_string();
                return (show(x), show(y));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_once() {
        let batch: Vec<usize> = (0..7).collect();
        let mut all: Vec<usize> = (0..3).flat_map(|r| shard(&batch, r, 3)).collect();
        all.sort();
        assert_eq!(all, batch);
        assert_eq!(shard(&batch, 0, 3).len(), 3);
        assert_eq!(shard(&batch, 2, 3).len(), 2);
        assert!(shard(&[1, 2], 3, 4).is_empty());
    }

    #[test]
    fn one_rank_changes_nothing() -> Result<()> {
        let p = Parameter::new(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
        p.set_grad(Tensor::from_vec(vec![0.5, -0.5], &[2])?)?;
        let params = vec![("p".to_string(), p.clone())];
        all_reduce_gradients(&Local, &params, 0.25)?;
        assert_eq!(p.grad().unwrap().to_vec(), vec![0.5, -0.5]);
        broadcast_parameters(&Local, &params, 0)?;
        check_same(&Local, "the model", "anything")?;
        assert!(broadcast_parameters(&Local, &params, 1).is_err());
        Ok(())
    }

    #[test]
    fn first_difference_names_the_lines() {
        let (a, b) = first_difference("x [2]\ny [3]\n", "x [2]\ny [4]\n");
        assert_eq!((a.as_str(), b.as_str()), ("y [3]", "y [4]"));
        let (a, b) = first_difference("x [2]\n", "x [2]\nz [1]\n");
        assert_eq!((a.as_str(), b.as_str()), ("-", "z [1]"));
    }
}
