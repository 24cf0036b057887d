//! [`Var`]: a tensor that remembers how it was computed, and the reverse pass.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tessera_tensor::Tensor;

use crate::backward::backward_rule;
use crate::ops::Op;
use crate::{Error, Result};

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` without recording operations: results are constants, and nothing is kept for
/// a backward pass (PyTorch's `torch.no_grad()`). Nested calls and panics restore the
/// previous mode.
///
/// ```
/// use tessera_autograd::{no_grad, Var};
/// use tessera_tensor::Tensor;
/// let w = Var::parameter(Tensor::ones(&[2]));
/// let y = no_grad(|| w.mul_scalar(3.0));
/// assert!(!y.requires_grad());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// Whether operations are being recorded on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

struct Node {
    id: usize,
    value: Tensor,
    requires_grad: bool,
    /// Created by the user (a parameter or an input), not by an operation.
    is_leaf: bool,
    /// How the value was computed; taken (freeing the graph) by `backward`.
    op: Mutex<Option<Op>>,
    /// Accumulated gradient of a leaf that requires one (shared by the successive
    /// values of one [`Parameter`]).
    grad: Arc<Mutex<Option<Tensor>>>,
}

/// A differentiable value: a [`Tensor`] plus, when it was computed from values that
/// require gradients, the operation that made it.
///
/// Cloning is cheap (an `Arc`). `Var` is `Send + Sync`.
///
/// ```
/// use tessera_autograd::Var;
/// use tessera_tensor::Tensor;
/// // y = Σ (w · x)², dy/dw = 2 (w · x) · x
/// let w = Var::parameter(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
/// let x = Var::constant(Tensor::from_vec(vec![3.0, 4.0], &[2])?);
/// let y = w.mul(&x)?.square().sum_all();
/// y.backward()?;
/// assert_eq!(w.grad().unwrap().to_vec(), vec![18.0, 64.0]);
/// # Ok::<(), tessera_autograd::Error>(())
/// ```
#[derive(Clone)]
pub struct Var(Arc<Node>);

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var(shape {:?}, requires_grad {}, leaf {})",
            self.shape(),
            self.0.requires_grad,
            self.0.is_leaf
        )
    }
}

impl Var {
    fn new(value: Tensor, requires_grad: bool, is_leaf: bool, op: Option<Op>) -> Var {
        Var::with_grad_slot(value, requires_grad, is_leaf, op, Arc::default())
    }

    fn with_grad_slot(
        value: Tensor,
        requires_grad: bool,
        is_leaf: bool,
        op: Option<Op>,
        grad: Arc<Mutex<Option<Tensor>>>,
    ) -> Var {
        Var(Arc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            value,
            requires_grad,
            is_leaf,
            op: Mutex::new(op),
            grad,
        }))
    }

    /// A leaf that requires a gradient (a trainable parameter).
    pub fn parameter(value: Tensor) -> Var {
        Var::new(value, true, true, None)
    }

    /// A leaf that needs no gradient (an input, a target, a mask).
    pub fn constant(value: Tensor) -> Var {
        Var::new(value, false, true, None)
    }

    /// The result of an operation on `inputs`: recorded when gradients are enabled and
    /// some input requires one, a constant otherwise.
    pub(crate) fn from_op(value: Tensor, op: Op) -> Var {
        let track = is_grad_enabled() && op.inputs().iter().any(|v| v.requires_grad());
        if track {
            Var::new(value, true, false, Some(op))
        } else {
            Var::new(value, false, false, None)
        }
    }

    /// Whether `self` and `other` are handles of the same variable (not merely equal
    /// values).
    pub fn same(&self, other: &Var) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.0.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.0.value.shape()
    }

    /// Whether a gradient flows to this value.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    /// Whether the user created this value (rather than an operation).
    pub fn is_leaf(&self) -> bool {
        self.0.is_leaf
    }

    /// The gradient accumulated in this leaf by `backward` calls, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0.grad.lock().ok().and_then(|g| g.clone())
    }

    /// Forgets the accumulated gradient (gradients accumulate across `backward` calls
    /// until zeroed, as in PyTorch).
    pub fn zero_grad(&self) {
        if let Ok(mut g) = self.0.grad.lock() {
            *g = None;
        }
    }

    /// The same value cut from the graph: a constant.
    pub fn detach(&self) -> Var {
        Var::constant(self.0.value.clone())
    }

    pub(crate) fn id(&self) -> usize {
        self.0.id
    }

    /// Backpropagates from this scalar (one-element) value: fills the gradient of every
    /// leaf that requires one, in one reverse topological pass, and frees the graph.
    pub fn backward(&self) -> Result<()> {
        self.backward_with_hook(&[], &mut |_| {})
    }

    /// Backpropagates with a given gradient of this value (same shape).
    pub fn backward_with(&self, grad: Tensor) -> Result<()> {
        self.run_backward(grad, &HashMap::new(), &mut |_| {})
    }

    /// [`Var::backward`], calling `ready(i)` as soon as the gradient of `params[i]` is
    /// final (every operation that uses it has passed its gradient back), while the
    /// rest of the pass is still to run: where a data-parallel step starts summing a
    /// bucket of gradients over the processes while backward goes on, as PyTorch's
    /// `DistributedDataParallel` does with its gradient hooks. The parameters come
    /// ready in the reverse of the order their values were used in; one that does not
    /// lead to `self` is never reported.
    ///
    /// ```
    /// use tessera_autograd::Parameter;
    /// use tessera_tensor::Tensor;
    /// let (a, b) = (Parameter::new(Tensor::ones(&[2])), Parameter::new(Tensor::ones(&[2])));
    /// // a is used first, so its gradient is final last.
    /// let y = a.var().mul_scalar(2.0).mul(&b.var())?.sum_all();
    /// let mut order = Vec::new();
    /// y.backward_with_hook(&[a.clone(), b.clone()], &mut |i| order.push(i))?;
    /// assert_eq!(order, vec![1, 0]);
    /// assert_eq!(a.grad().unwrap().to_vec(), vec![2.0, 2.0]);
    /// # Ok::<(), tessera_autograd::Error>(())
    /// ```
    pub fn backward_with_hook(
        &self,
        params: &[Parameter],
        ready: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if self.value().numel() != 1 {
            return Err(Error::NotScalar {
                shape: self.shape().to_vec(),
            });
        }
        let index: HashMap<usize, usize> = params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.current().id(), i))
            .collect();
        self.run_backward(Tensor::ones(self.shape()), &index, ready)
    }

    /// The reverse pass: `ready(index[id])` once the leaf `id`'s gradient is final.
    fn run_backward(
        &self,
        grad: Tensor,
        index: &HashMap<usize, usize>,
        ready: &mut dyn FnMut(usize),
    ) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::GradShape {
                expected: self.shape().to_vec(),
                got: grad.shape().to_vec(),
            });
        }
        if !self.requires_grad() {
            return Err(Error::NoGraph);
        }
        let order = self.topological_order()?;
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(self.id(), grad);
        for var in order.iter().rev() {
            let Some(g) = grads.remove(&var.id()) else {
                continue;
            };
            if var.is_leaf() {
                let mut slot = var.0.grad.lock().map_err(|_| Error::Poisoned)?;
                *slot = Some(match slot.take() {
                    Some(acc) => acc.add(&g)?,
                    None => g,
                });
                drop(slot);
                if let Some(&i) = index.get(&var.id()) {
                    ready(i);
                }
                continue;
            }
            let op = var
                .0
                .op
                .lock()
                .map_err(|_| Error::Poisoned)?
                .take()
                .ok_or(Error::GraphFreed)?;
            for (input, gi) in backward_rule(&op, &g, var.value())? {
                if !input.requires_grad() {
                    continue;
                }
                let merged = match grads.remove(&input.id()) {
                    Some(acc) => acc.add(&gi)?,
                    None => gi,
                };
                grads.insert(input.id(), merged);
            }
        }
        Ok(())
    }

    /// Every value that requires a gradient and leads to `self`, inputs before outputs.
    fn topological_order(&self) -> Result<Vec<Var>> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        // Iterative post-order DFS: (var, children pushed?).
        let mut stack = vec![(self.clone(), false)];
        while let Some((var, expanded)) = stack.pop() {
            if expanded {
                order.push(var);
                continue;
            }
            if !seen.insert(var.id()) {
                continue;
            }
            let inputs: Vec<Var> = {
                let op = var.0.op.lock().map_err(|_| Error::Poisoned)?;
                match op.as_ref() {
                    Some(op) => op.inputs().into_iter().cloned().collect(),
                    None if !var.is_leaf() => return Err(Error::GraphFreed),
                    None => Vec::new(),
                }
            };
            stack.push((var, true));
            // Leaves first, so that they come off the stack after the other inputs'
            // subgraphs: each leaf then stands just before its consumer, and the reverse
            // pass finishes its gradient as early as the graph allows (what
            // `backward_with_hook` reports as it goes). The other nodes keep their order.
            for leaves in [true, false] {
                for input in &inputs {
                    if input.is_leaf() == leaves
                        && input.requires_grad()
                        && !seen.contains(&input.id())
                    {
                        stack.push((input.clone(), false));
                    }
                }
            }
        }
        Ok(order)
    }
}

/// A trainable value that an optimizer updates: a shared cell holding the current leaf
/// [`Var`]. Layers keep clones of it and read [`Parameter::var`] in every forward pass;
/// [`Parameter::set`] installs the next value. The gradient slot is kept across values,
/// so gradients accumulate until [`Parameter::zero_grad`], as in PyTorch.
///
/// ```
/// use tessera_autograd::Parameter;
/// use tessera_tensor::Tensor;
/// let p = Parameter::new(Tensor::from_vec(vec![1.0, 2.0], &[2])?);
/// p.var().square().sum_all().backward()?;
/// let g = p.grad().unwrap();                        // [2, 4]
/// p.set(p.value().sub(&g.mul_scalar(0.5))?)?;       // one SGD step, lr 0.5
/// assert_eq!(p.value().to_vec(), vec![0.0, 0.0]);
/// # Ok::<(), tessera_autograd::Error>(())
/// ```
#[derive(Clone)]
pub struct Parameter(Arc<Mutex<Var>>);

impl std::fmt::Debug for Parameter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parameter(shape {:?})", self.value().shape())
    }
}

impl Parameter {
    /// A parameter with an initial value.
    pub fn new(value: Tensor) -> Parameter {
        Parameter(Arc::new(Mutex::new(Var::parameter(value))))
    }

    fn current(&self) -> Var {
        match self.0.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current value as a leaf of the graph, for a forward pass.
    pub fn var(&self) -> Var {
        self.current()
    }

    /// The current value.
    pub fn value(&self) -> Tensor {
        self.current().value().clone()
    }

    /// The accumulated gradient, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.current().grad()
    }

    /// Forgets the accumulated gradient.
    pub fn zero_grad(&self) {
        self.current().zero_grad()
    }

    /// Replaces the accumulated gradient (gradient clipping, gradients from elsewhere).
    pub fn set_grad(&self, grad: Tensor) -> Result<()> {
        let var = self.current_shaped(&grad, |expected, got| Error::GradShape { expected, got })?;
        let mut slot = var.0.grad.lock().map_err(|_| Error::Poisoned)?;
        *slot = Some(grad);
        Ok(())
    }

    /// The current variable, if `t` has its shape; otherwise the error that `mismatch`
    /// makes of the expected and the given shape.
    fn current_shaped(
        &self,
        t: &Tensor,
        mismatch: fn(Vec<usize>, Vec<usize>) -> Error,
    ) -> Result<Var> {
        let var = self.current();
        if t.shape() != var.shape() {
            return Err(mismatch(var.shape().to_vec(), t.shape().to_vec()));
        }
        Ok(var)
    }

    /// Installs a new value of the same shape (an optimizer step, a checkpoint load).
    pub fn set(&self, value: Tensor) -> Result<()> {
        let old =
            self.current_shaped(&value, |expected, got| Error::ValueShape { expected, got })?;
        let fresh = Var::with_grad_slot(value, true, true, None, Arc::clone(&old.0.grad));
        match self.0.lock() {
            Ok(mut v) => *v = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(())
    }
}
