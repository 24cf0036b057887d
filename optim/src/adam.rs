//! Adam and AdamW.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::mem::MaybeUninit;

use tessera_tensor::Tensor;

use crate::{gradients, Error, Optimizer, Parameter, Rates, Result};

#[derive(Clone, Debug)]
struct Moments {
    step: u64,
    m: Tensor,
    v: Tensor,
}

/// Adam (Kingma and Ba, 2015) and, with decoupled weight decay, AdamW (Loshchilov and
/// Hutter, 2019), as `torch.optim.Adam` / `AdamW` (single-tensor implementation), per
/// parameter at step `t`:
///
/// ```text
/// p ← p · (1 - lr·wd)                  (AdamW)      g ← g + wd·p   (Adam)
/// m ← m + (1 - β1)(g - m)
/// v ← β2·v + (1 - β2)·g·g
/// p ← p - lr/(1 - β1^t) · m / (√v / √(1 - β2^t) + ε)
/// ```
///
/// The bias corrections are computed in f64, as PyTorch does in Python.
///
/// ```
/// use tessera_optim::{Adam, AdamConfig};
/// let opt = Adam::with(AdamConfig { weight_decay: 0.05, ..AdamConfig::adamw(1e-3) });
/// assert!(opt.config.decoupled && opt.config.weight_decay == 0.05);
/// ```
#[derive(Clone, Debug)]
pub struct Adam {
    /// The settings; [`Optimizer::set_lr`] and [`Optimizer::set_momentum`] (β1) change
    /// them as a scheduler steps.
    pub config: AdamConfig,
    /// Parameters exempt from weight decay (a second PyTorch parameter group with
    /// `weight_decay=0`, as timm puts biases, norms and embeddings).
    pub no_decay: BTreeSet<String>,
    /// Per-parameter factors of the learning rate (PyTorch parameter groups with their
    /// own `lr`, as timm's layer-wise decay makes them); a parameter not named here has
    /// factor 1. The decoupled weight decay is scaled with it, as in PyTorch.
    pub lr_scale: BTreeMap<String, f64>,
    state: HashMap<String, Moments>,
}

/// The settings of [`Adam`], by `torch.optim.Adam`'s names: presets for Adam, AdamW and
/// the Transformer paper, the other fields set by name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The learning rate.
    pub lr: f64,
    /// β1, β2.
    pub betas: (f32, f32),
    /// ε.
    pub eps: f32,
    /// Weight decay (L2 for Adam, decoupled for AdamW).
    pub weight_decay: f32,
    /// Decoupled weight decay (AdamW).
    pub decoupled: bool,
}

impl AdamConfig {
    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn adam(lr: f64) -> AdamConfig {
        AdamConfig {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, weight decay 0.01.
    pub fn adamw(lr: f64) -> AdamConfig {
        AdamConfig {
            weight_decay: 0.01,
            decoupled: true,
            ..AdamConfig::adam(lr)
        }
    }

    /// The Transformer's settings: betas (0.9, 0.98), eps 1e-9 ("Attention Is All You
    /// Need", section 5.3).
    pub fn transformer(lr: f64) -> AdamConfig {
        AdamConfig {
            betas: (0.9, 0.98),
            eps: 1e-9,
            ..AdamConfig::adam(lr)
        }
    }
}

impl Adam {
    /// Adam with the settings of `config`, every parameter decayed at rate 1.
    pub fn with(config: AdamConfig) -> Adam {
        Adam {
            config,
            no_decay: BTreeSet::new(),
            lr_scale: BTreeMap::new(),
            state: HashMap::new(),
        }
    }

    /// Adam with PyTorch's defaults ([`AdamConfig::adam`]).
    pub fn new(lr: f64) -> Adam {
        Adam::with(AdamConfig::adam(lr))
    }

    /// AdamW with PyTorch's defaults ([`AdamConfig::adamw`]).
    pub fn adamw(lr: f64) -> Adam {
        Adam::with(AdamConfig::adamw(lr))
    }

    /// The Transformer paper's Adam ([`AdamConfig::transformer`]).
    pub fn transformer(lr: f64) -> Adam {
        Adam::with(AdamConfig::transformer(lr))
    }

    /// Exempts the named parameters from weight decay.
    ///
    /// ```
    /// use tessera_optim::Adam;
    /// let opt = Adam::adamw(1e-3).without_decay(["pos_embed", "head.bias"]);
    /// assert!(opt.no_decay.contains("pos_embed"));
    /// ```
    pub fn without_decay<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Adam {
        self.no_decay.extend(names.into_iter().map(Into::into));
        self
    }

    /// Scales the learning rate of each named parameter by its factor.
    ///
    /// ```
    /// use tessera_optim::Adam;
    /// let opt = Adam::adamw(1e-3).with_lr_scale([("blocks.0.attn.qkv.weight", 0.5)]);
    /// assert_eq!(opt.lr_scale["blocks.0.attn.qkv.weight"], 0.5);
    /// ```
    pub fn with_lr_scale<S: Into<String>>(
        mut self,
        scales: impl IntoIterator<Item = (S, f64)>,
    ) -> Adam {
        self.lr_scale
            .extend(scales.into_iter().map(|(n, s)| (n.into(), s)));
        self
    }
}

/// The elements of `t` in row-major order, borrowed when it is contiguous.
fn elements(t: &Tensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(t.to_vec()),
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[(String, Parameter)]) -> Result<()> {
        let c = self.config;
        let grads = gradients(params, if c.decoupled { "AdamW" } else { "Adam" })?;
        let (b1, b2) = c.betas;
        let mut updates = Vec::with_capacity(grads.len());
        for (name, p, g) in grads {
            let lr = c.lr * self.lr_scale.get(&name).copied().unwrap_or(1.0);
            let mut value = p.value();
            let wd = if self.no_decay.contains(&name) {
                0.0
            } else {
                c.weight_decay
            };
            let g = if wd != 0.0 && !c.decoupled {
                g.add(&value.mul_scalar(wd))?
            } else {
                g
            };
            if wd != 0.0 && c.decoupled {
                value = value.mul_scalar((1.0 - lr * wd as f64) as f32);
            }
            let prev = self.state.get(&name);
            let step = prev.map_or(0, |s| s.step) + 1;
            let bc1 = 1.0 - (b1 as f64).powi(step as i32);
            let bc2 = 1.0 - (b2 as f64).powi(step as i32);
            let step_size = (lr / bc1) as f32;
            let bc2_sqrt = bc2.sqrt() as f32;
            let (w1, scale, eps) = ((1.0 - b1 as f64) as f32, (1.0 - b2 as f64) as f32, c.eps);
            // One pass over the elements, with the operations (and roundings) of
            // PyTorch's single-tensor Adam in its order:
            // m = lerp(m, g, 1 - β1); v = β2 v + (1 - β2) g²;
            // x += (-lr / bc1) m / (√v / √bc2 + ε).
            let (x, g) = (elements(&value), elements(&g));
            let n = x.len();
            let (m0, v0) = match prev {
                Some(s) => (elements(&s.m), elements(&s.v)),
                None => (vec![0.0; n].into(), vec![0.0; n].into()),
            };
            // The kernel writes every element of the three outputs: no zeroing first.
            let (mut m, mut v, mut new) = (
                Vec::<f32>::with_capacity(n),
                Vec::<f32>::with_capacity(n),
                Vec::<f32>::with_capacity(n),
            );
            let k = Constants {
                w1,
                b2,
                scale,
                bc2_sqrt,
                eps,
                step_size,
            };
            let slices = Slices {
                x: &x,
                g: &g,
                m0: &m0,
                v0: &v0,
                m: &mut m.spare_capacity_mut()[..n],
                v: &mut v.spare_capacity_mut()[..n],
                new: &mut new.spare_capacity_mut()[..n],
            };
            update(slices, k);
            // SAFETY: `update` wrote elements 0..n of each (its loop covers every index
            // below `x.len()` = n), inside the capacity reserved above.
            unsafe {
                m.set_len(n);
                v.set_len(n);
                new.set_len(n);
            }
            let shape = value.shape();
            let (m, v, new) = (
                Tensor::from_vec(m, shape)?,
                Tensor::from_vec(v, shape)?,
                Tensor::from_vec(new, shape)?,
            );
            updates.push((name, p, new, Moments { step, m, v }));
        }
        for (name, p, new, moments) in updates {
            p.set(new)?;
            self.state.insert(name, moments);
        }
        Ok(())
    }

    fn rates(&mut self) -> Rates<'_> {
        Rates {
            lr: &mut self.config.lr,
            momentum: &mut self.config.betas.0,
        }
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (n, s) in &self.state {
            out.insert(format!("{n}.step"), Tensor::scalar(s.step as f32));
            out.insert(format!("{n}.exp_avg"), s.m.clone());
            out.insert(format!("{n}.exp_avg_sq"), s.v.clone());
        }
        out
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut names: Vec<&str> = Vec::new();
        for key in state.keys() {
            let name = key
                .strip_suffix(".step")
                .or_else(|| key.strip_suffix(".exp_avg_sq"))
                .or_else(|| key.strip_suffix(".exp_avg"))
                .ok_or_else(|| Error::State(format!("unexpected Adam state entry {key:?}")))?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let mut loaded = HashMap::new();
        for name in names {
            let get = |suffix: &str| {
                state
                    .get(&format!("{name}.{suffix}"))
                    .cloned()
                    .ok_or_else(|| Error::State(format!("missing {name}.{suffix}")))
            };
            let step = get("step")?.to_scalar()? as u64;
            loaded.insert(
                name.to_string(),
                Moments {
                    step,
                    m: get("exp_avg")?,
                    v: get("exp_avg_sq")?,
                },
            );
        }
        self.state = loaded;
        Ok(())
    }
}

/// The constants of one parameter's Adam update.
#[derive(Clone, Copy)]
struct Constants {
    /// `1 - β1`, the weight of the gradient in the first moment.
    w1: f32,
    /// `β2`.
    b2: f32,
    /// `1 - β2`.
    scale: f32,
    /// `√(1 - β2^t)`.
    bc2_sqrt: f32,
    /// `ε`.
    eps: f32,
    /// `lr / (1 - β1^t)`.
    step_size: f32,
}

/// One parameter's elements in an Adam update: the value `x`, its gradient `g` and
/// moments `m0`, `v0` are read; the new moments `m`, `v` and value `new` written, every
/// element of them (they need not be initialised). All seven have the same length.
struct Slices<'a> {
    x: &'a [f32],
    g: &'a [f32],
    m0: &'a [f32],
    v0: &'a [f32],
    m: &'a mut [MaybeUninit<f32>],
    v: &'a mut [MaybeUninit<f32>],
    new: &'a mut [MaybeUninit<f32>],
}

/// One Adam update of every element, with PyTorch's operations in its order, in vectors
/// as wide as the CPU has (each width gives the same results).
fn update(s: Slices<'_>, k: Constants) {
    #[inline(always)]
    fn run(s: Slices<'_>, k: Constants) {
        let n = s.x.len();
        let (x, g, m0, v0) = (s.x, &s.g[..n], &s.m0[..n], &s.v0[..n]);
        let (m, v, new) = (&mut s.m[..n], &mut s.v[..n], &mut s.new[..n]);
        for i in 0..n {
            let (a, gi) = (m0[i], g[i]);
            let mi = if k.w1 < 0.5 {
                a + k.w1 * (gi - a)
            } else {
                gi - (gi - a) * (1.0 - k.w1)
            };
            let vi = v0[i] * k.b2 + k.scale * gi * gi;
            let denom = vi.sqrt() / k.bc2_sqrt + k.eps;
            new[i].write(x[i] + (mi * -k.step_size) / denom);
            m[i].write(mi);
            v[i].write(vi);
        }
    }
    tessera_tensor::widest!(run(s, k))
}
