//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

use std::collections::{BTreeMap, HashMap};

use tessera_tensor::Tensor;

use crate::{gradients, Error, Optimizer, Parameter, Rates, Result};

/// SGD as `torch.optim.SGD` (single-tensor implementation), per parameter:
///
/// ```text
/// g ← g + wd·p                         (weight decay)
/// b ← g                   on the first step with momentum
/// b ← μ·b + (1 - τ)·g     afterwards   (τ: dampening)
/// g ← g + μ·b  (Nesterov)   or   g ← b
/// p ← p - lr·g
/// ```
///
/// ```
/// use tessera_optim::{Sgd, SgdConfig};
/// let opt = Sgd::with(SgdConfig { momentum: 0.9, nesterov: true, ..SgdConfig::new(0.05) });
/// assert_eq!((opt.config.lr, opt.config.momentum), (0.05, 0.9));
/// ```
#[derive(Clone, Debug)]
pub struct Sgd {
    /// The settings; [`Optimizer::set_lr`] and [`Optimizer::set_momentum`] change them
    /// as a scheduler steps.
    pub config: SgdConfig,
    buffers: HashMap<String, Tensor>,
}

/// The settings of [`Sgd`], by `torch.optim.SGD`'s names; [`SgdConfig::new`] gives its
/// defaults for a learning rate, and the others are set by name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// The learning rate.
    pub lr: f64,
    /// Momentum μ (default 0: none).
    pub momentum: f32,
    /// Dampening τ of the momentum (default 0).
    pub dampening: f32,
    /// Nesterov momentum (default off).
    pub nesterov: bool,
    /// L2 weight decay added to the gradient (default 0).
    pub weight_decay: f32,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`: no momentum, dampening or weight decay.
    pub fn new(lr: f64) -> SgdConfig {
        SgdConfig {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

impl Sgd {
    /// Plain SGD with learning rate `lr` ([`SgdConfig::new`]).
    pub fn new(lr: f64) -> Sgd {
        Sgd::with(SgdConfig::new(lr))
    }

    /// SGD with the settings of `config`.
    pub fn with(config: SgdConfig) -> Sgd {
        Sgd {
            config,
            buffers: HashMap::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[(String, Parameter)]) -> Result<()> {
        let grads = gradients(params, "SGD")?;
        let c = self.config;
        let mut updates = Vec::with_capacity(grads.len());
        for (name, p, g) in grads {
            let value = p.value();
            let mut g = if c.weight_decay != 0.0 {
                g.add(&value.mul_scalar(c.weight_decay))?
            } else {
                g
            };
            if c.momentum != 0.0 {
                let buf = match self.buffers.get(&name) {
                    None => g.clone(),
                    Some(b) => b
                        .mul_scalar(c.momentum)
                        .add(&g.mul_scalar(1.0 - c.dampening))?,
                };
                g = if c.nesterov {
                    g.add(&buf.mul_scalar(c.momentum))?
                } else {
                    buf.clone()
                };
                updates.push((
                    name,
                    p,
                    value.add(&g.mul_scalar(-(c.lr as f32)))?,
                    Some(buf),
                ));
            } else {
                updates.push((name, p, value.add(&g.mul_scalar(-(c.lr as f32)))?, None));
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

    fn rates(&mut self) -> Rates<'_> {
        Rates {
            lr: &mut self.config.lr,
            momentum: &mut self.config.momentum,
        }
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
