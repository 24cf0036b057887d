//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use std::collections::{BTreeMap, HashMap};

use tessera_tensor::Tensor;

use crate::{gradients, Error, Optimizer, Parameter, Result};

/// SGD as `torch.optim.SGD` (single-tensor implementation), per parameter:
///
/// ```text
/// g ← g + wd·p                         (weight decay)
/// b ← g                   on the first step with momentum
/// b ← μ·b + (1 - τ)·g     afterwards   (τ: dampening)
/// g ← g + μ·b  (Nesterov)   or   g ← b
/// p ← p - lr·g
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    lr: f64,
    /// Momentum μ (0: none).
    pub momentum: f32,
    /// Dampening τ of the momentum.
    pub dampening: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f32,
    buffers: HashMap<String, Tensor>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Sgd {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: HashMap::new(),
        }
    }

    /// Sets the momentum.
    pub fn with_momentum(mut self, momentum: f32) -> Sgd {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening.
    pub fn with_dampening(mut self, dampening: f32) -> Sgd {
        self.dampening = dampening;
        self
    }

    /// Turns Nesterov momentum on.
    pub fn with_nesterov(mut self, nesterov: bool) -> Sgd {
        self.nesterov = nesterov;
        self
    }

    /// Sets the weight decay.
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Sgd {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[(String, Parameter)]) -> Result<()> {
        let grads = gradients(params, "SGD")?;
        let mut updates = Vec::with_capacity(grads.len());
        for (name, p, g) in grads {
            let value = p.value();
            let mut g = if self.weight_decay != 0.0 {
                g.add(&value.mul_scalar(self.weight_decay))?
            } else {
                g
            };
            if self.momentum != 0.0 {
                let buf = match self.buffers.get(&name) {
                    None => g.clone(),
                    Some(b) => b
                        .mul_scalar(self.momentum)
                        .add(&g.mul_scalar(1.0 - self.dampening))?,
                };
                g = if self.nesterov {
                    g.add(&buf.mul_scalar(self.momentum))?
                } else {
                    buf.clone()
                };
                updates.push((
                    name,
                    p,
                    value.add(&g.mul_scalar(-(self.lr as f32)))?,
                    Some(buf),
                ));
            } else {
                updates.push((name, p, value.add(&g.mul_scalar(-(self.lr as f32)))?, None));
            }
        }
        for (name, p, new, buf) in updates {
            p.set(new)?;
            if let Some(b) = buf {
                self.buffers.insert(name, b);
            }
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f64) {
        self.momentum = momentum as f32;
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.buffers
            .iter()
            .map(|(n, b)| (format!("{n}.momentum_buffer"), b.clone()))
            .collect()
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut buffers = HashMap::new();
        for (key, t) in state {
            let name = key
                .strip_suffix(".momentum_buffer")
                .ok_or_else(|| Error::State(format!("unexpected SGD state entry {key:?}")))?;
            buffers.insert(name.to_string(), t.clone());
        }
        self.buffers = buffers;
        Ok(())
    }
}
