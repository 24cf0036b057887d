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
    /// Starts [`Communicator::all_reduce_sum`] of `buf` and returns while the sum is
    /// still under way where the implementation can (MPI's non-blocking all-reduce), so
    /// that the caller computes meanwhile; [`PendingSum::wait`] gives the summed
    /// buffer back. Every rank must start its sums in the same order. The default sums
    /// before it returns.
    fn start_all_reduce_sum(&self, buf: Vec<f32>) -> Result<Box<dyn PendingSum + '_>> {
        let mut buf = buf;
        self.all_reduce_sum(&mut buf)?;
        Ok(Box::new(Summed(buf)))
    }
}

/// A sum over the ranks under way ([`Communicator::start_all_reduce_sum`]).
pub trait PendingSum {
    /// Lets the sum advance without waiting for it (an MPI implementation moves a
    /// non-blocking collective on only inside its own calls); `true` once it is done.
    fn test(&mut self) -> Result<bool>;
    /// Waits for the sum and returns the buffer, which now holds it.
    fn wait(self: Box<Self>) -> Result<Vec<f32>>;
}

/// A sum already done.
struct Summed(Vec<f32>);

impl PendingSum for Summed {
    fn test(&mut self) -> Result<bool> {
        Ok(true)
    }
    fn wait(self: Box<Self>) -> Result<Vec<f32>> {
        Ok(self.0)
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
        fn start_all_reduce_sum(&$self, buf: Vec<f32>) -> Result<Box<dyn PendingSum + '_>> {
            $inner.start_all_reduce_sum(buf)
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
/// nothing changes (not even a scale of 1). [`GradientReducer::backward`] does the
/// same while backward runs.
pub fn all_reduce_gradients(
    comm: &dyn Communicator,
    params: &[(String, Parameter)],
    scale: f32,
) -> Result<()> {
    GradientReducer::new(comm, params, scale).finish()
}

/// Gradients summed over the ranks bucket by bucket as backward produces them, as
/// PyTorch's `DistributedDataParallel` reducer does: the parameters are grouped, in
/// reverse order (the order backward finishes them in), into buckets of at most
/// [`Communicator::bucket_bytes`] (a larger parameter alone in its bucket, sent in
/// pieces of that size); a bucket's sum starts
/// ([`Communicator::start_all_reduce_sum`]) as soon as the gradients of all its
/// parameters are final and the buckets before it have started, so the sums travel
/// while backward computes the rest. The result is [`all_reduce_gradients`]'s.
///
/// ```
/// use tessera_autograd::Parameter;
/// use tessera_optim::{GradientReducer, Local};
/// use tessera_tensor::Tensor;
/// let w = Parameter::new(Tensor::ones(&[3]));
/// let params = vec![("w".to_string(), w.clone())];
/// let loss = w.var().mul_scalar(2.0).sum_all();
/// GradientReducer::new(&Local, &params, 1.0).backward(&loss)?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![2.0; 3]);
/// # Ok::<(), tessera_optim::Error>(())
/// ```
pub struct GradientReducer<'a> {
    comm: &'a dyn Communicator,
    params: &'a [(String, Parameter)],
    scale: f32,
    /// The element count of each parameter.
    numels: Vec<usize>,
    /// The most floats sent in one sum.
    cap: usize,
    /// Each bucket's parameters (indices into `params`).
    buckets: Vec<Vec<usize>>,
    /// The bucket of each parameter.
    bucket_of: Vec<usize>,
    /// Per bucket, how many of its parameters are not yet final.
    waiting: Vec<usize>,
    /// The sums started, bucket by bucket (several pieces for a large parameter).
    started: Vec<Vec<Box<dyn PendingSum + 'a>>>,
    /// The first error of a sum started from the backward hook.
    error: Option<Error>,
}

impl std::fmt::Debug for GradientReducer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GradientReducer")
            .field("ranks", &self.comm.size())
            .field("buckets", &self.buckets)
            .field("started", &self.started.len())
            .finish()
    }
}

impl<'a> GradientReducer<'a> {
    /// A reducer of the gradients of `params`, each scaled by `scale` (this rank's
    /// share of the batch) before the sum.
    pub fn new(
        comm: &'a dyn Communicator,
        params: &'a [(String, Parameter)],
        scale: f32,
    ) -> GradientReducer<'a> {
        let cap = (comm.bucket_bytes() / std::mem::size_of::<f32>()).max(1);
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut filled = 0;
        let mut bucket_of = vec![0; params.len()];
        let numels: Vec<usize> = params.iter().map(|(_, p)| p.value().numel()).collect();
        for (i, &n) in numels.iter().enumerate().rev() {
            if buckets.is_empty() || (filled + n > cap && filled > 0) {
                buckets.push(Vec::new());
                filled = 0;
            }
            filled += n;
            bucket_of[i] = buckets.len() - 1;
            buckets.last_mut().expect("a bucket was opened").push(i);
        }
        let waiting = buckets.iter().map(Vec::len).collect();
        GradientReducer {
            comm,
            params,
            scale,
            numels,
            cap,
            buckets,
            bucket_of,
            waiting,
            started: Vec::new(),
            error: None,
        }
    }

    /// Backpropagates from `loss` (a one-element value), summing each bucket over the
    /// ranks once its gradients are final, then waits for the sums and installs them.
    /// With one rank it is [`Var::backward`](tessera_autograd::Var::backward).
    pub fn backward(mut self, loss: &tessera_autograd::Var) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(loss.backward()?);
        }
        let params: Vec<Parameter> = self.params.iter().map(|(_, p)| p.clone()).collect();
        loss.backward_with_hook(&params, &mut |i| self.ready(i))?;
        self.finish()
    }

    /// Parameter `i`'s gradient is final: starts every bucket that is now complete
    /// and next in order, and lets the sums under way advance.
    fn ready(&mut self, i: usize) {
        let b = self.bucket_of[i];
        self.waiting[b] = self.waiting[b].saturating_sub(1);
        while self.error.is_none()
            && self.started.len() < self.buckets.len()
            && self.waiting[self.started.len()] == 0
        {
            if let Err(e) = self.start_next() {
                self.error = Some(e);
            }
        }
        for piece in self.started.iter_mut().flatten() {
            if let Err(e) = piece.test() {
                self.error.get_or_insert(e);
            }
        }
    }

    /// Starts the sum of the next bucket: a flag per parameter (1 where it has a
    /// gradient), then its gradients times the scale, in pieces of the bucket size.
    fn start_next(&mut self) -> Result<()> {
        let members = &self.buckets[self.started.len()];
        let grads: Vec<Option<Tensor>> = members.iter().map(|&i| self.params[i].1.grad()).collect();
        let numel: usize = members.iter().map(|&i| self.numels[i]).sum();
        let mut flat = Vec::with_capacity(members.len() + numel);
        flat.extend(grads.iter().map(|g| f32::from(u8::from(g.is_some()))));
        for (g, &i) in grads.iter().zip(members) {
            match g {
                Some(g) => match g.as_slice() {
                    Some(s) => flat.extend(s.iter().map(|&x| x * self.scale)),
                    None => flat.extend(g.to_vec().into_iter().map(|x| x * self.scale)),
                },
                None => flat.extend(std::iter::repeat_n(0.0, self.numels[i])),
            }
        }
        let mut pieces = Vec::new();
        if flat.len() <= self.cap {
            pieces.push(self.comm.start_all_reduce_sum(flat)?);
        } else {
            for piece in flat.chunks(self.cap) {
                pieces.push(self.comm.start_all_reduce_sum(piece.to_vec())?);
            }
        }
        self.started.push(pieces);
        Ok(())
    }

    /// Starts the buckets not started yet (in order), waits for every sum and
    /// installs the summed gradients.
    pub fn finish(mut self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        while self.started.len() < self.buckets.len() {
            self.start_next()?;
        }
        for (members, pieces) in self.buckets.iter().zip(std::mem::take(&mut self.started)) {
            let mut flat = Vec::new();
            for piece in pieces {
                let summed = piece.wait()?;
                if flat.is_empty() {
                    flat = summed;
                } else {
                    flat.extend_from_slice(&summed);
                }
            }
            let (flags, mut rest) = flat.split_at(members.len());
            for (&i, &flag) in members.iter().zip(flags) {
                let p = &self.params[i].1;
                let (mine, tail) = rest.split_at(self.numels[i]);
                rest = tail;
                if flag > 0.0 {
                    p.set_grad(Tensor::from_vec(mine.to_vec(), p.value().shape())?)?;
                }
            }
        }
        Ok(())
    }
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

    /// Two ranks that hold the same values: a sum doubles the buffer. Each start
    /// records how many of `watched` had a gradient by then.
    struct Twins {
        watched: Vec<Parameter>,
        starts: std::cell::RefCell<Vec<(usize, usize)>>,
        bytes: usize,
    }

    impl Communicator for Twins {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
            buf.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        }
        fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
            buf.iter_mut().for_each(|x| *x *= 2.0);
            Ok(())
        }
        fn broadcast(&self, _: &mut [f32], root: usize) -> Result<()> {
            check_root(root, 2)
        }
        fn broadcast_bytes(&self, _: &mut [u8], root: usize) -> Result<()> {
            check_root(root, 2)
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn bucket_bytes(&self) -> usize {
            self.bytes
        }
        fn start_all_reduce_sum(&self, buf: Vec<f32>) -> Result<Box<dyn PendingSum + '_>> {
            let done = self.watched.iter().filter(|p| p.grad().is_some()).count();
            self.starts.borrow_mut().push((buf.len(), done));
            let mut buf = buf;
            self.all_reduce_sum(&mut buf)?;
            Ok(Box::new(Summed(buf)))
        }
    }

    /// A chain of three layers `y = w3 (w2 (w1 x))` and its loss.
    fn chain() -> Result<(Vec<(String, Parameter)>, tessera_autograd::Var)> {
        let params: Vec<(String, Parameter)> = (1..=3)
            .map(|i| {
                let w =
                    Tensor::from_vec((0..4).map(|j| (i * 4 + j) as f32 / 10.0).collect(), &[2, 2]);
                Ok((format!("w{i}"), Parameter::new(w?)))
            })
            .collect::<Result<_>>()?;
        let mut h = tessera_autograd::Var::constant(Tensor::from_vec(vec![1.0, -2.0], &[1, 2])?);
        for (_, w) in &params {
            h = h.matmul(&w.var())?.tanh();
        }
        Ok((params, h.sum_all()))
    }

    #[test]
    fn buckets_start_while_backward_runs_and_sum_as_after_it() -> Result<()> {
        // Reference: backward, then the whole reduction.
        let (params, loss) = chain()?;
        loss.backward()?;
        let watched: Vec<Parameter> = params.iter().map(|(_, p)| p.clone()).collect();
        let twins = Twins {
            watched,
            starts: Default::default(),
            bytes: 4 * 5,
        };
        all_reduce_gradients(&twins, &params, 0.5)?;
        let want: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, p)| p.grad().unwrap().to_vec())
            .collect();
        // Buckets of 5 floats hold one 2x2 weight each (and its flag): w3, w2, w1.
        assert_eq!(*twins.starts.borrow(), vec![(5, 3); 3]);

        let (params, loss) = chain()?;
        let twins = Twins {
            watched: params.iter().map(|(_, p)| p.clone()).collect(),
            starts: Default::default(),
            bytes: 4 * 5,
        };
        GradientReducer::new(&twins, &params, 0.5).backward(&loss)?;
        // w3's bucket starts when only w3 has its gradient, w2's with two.
        assert_eq!(*twins.starts.borrow(), vec![(5, 1), (5, 2), (5, 3)]);
        let got: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, p)| p.grad().unwrap().to_vec())
            .collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn a_parameter_larger_than_a_bucket_goes_in_pieces() -> Result<()> {
        let (params, loss) = chain()?;
        loss.backward()?;
        let before: Vec<Vec<f32>> = params
            .iter()
            .map(|(_, p)| p.grad().unwrap().to_vec())
            .collect();
        let twins = Twins {
            watched: Vec::new(),
            starts: Default::default(),
            bytes: 4 * 3,
        };
        all_reduce_gradients(&twins, &params, 1.0)?;
        // Each 2x2 weight alone in a bucket of 5 floats, sent as 3 + 2.
        assert_eq!(
            twins
                .starts
                .borrow()
                .iter()
                .map(|s| s.0)
                .collect::<Vec<_>>(),
            [3, 2, 3, 2, 3, 2]
        );
        for ((_, p), b) in params.iter().zip(before) {
            let doubled: Vec<f32> = b.iter().map(|x| 2.0 * x).collect();
            assert_eq!(p.grad().unwrap().to_vec(), doubled);
        }
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
