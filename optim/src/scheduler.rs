//! Learning-rate schedulers as objects, as `torch.optim.lr_scheduler` has them: each holds
//! its epoch counter and the rate it last set, advances with [`LrScheduler::step`], and
//! saves and restores its state.
//!
//! The rates follow PyTorch's own arithmetic, recursive forms included (a
//! `CosineAnnealingLR` multiplies the previous rate by a ratio of cosines, it does not
//! evaluate the closed form), so a trajectory equals PyTorch's to the last bits of an
//! `f64`; `tests/scheduler.rs` checks them against fixtures written by PyTorch and timm.
//!
//! As in PyTorch, a scheduler takes its first step when it is made: right after `new`,
//! [`LrScheduler::get_last_lr`] is the rate of the first optimizer step, and a training
//! loop calls `step` after each optimizer step:
//!
//! ```
//! use tessera_optim::scheduler::{LrScheduler, Scheduler};
//! // StepLR(optimizer with lr 0.1, step_size=2, gamma=0.5)
//! let mut s = Scheduler::step_lr(0.1, 2, 0.5)?;
//! let mut rates = vec![s.get_last_lr()];
//! for _ in 0..4 {
//!     // opt.set_lr(s.get_last_lr()); opt.step(&params)?;
//!     rates.push(s.step()?);
//! }
//! assert_eq!(rates, [0.1, 0.1, 0.05, 0.05, 0.025]);
//! # Ok::<(), tessera_optim::Error>(())
//! ```
//!
//! The pure functions of [`crate::schedule`] give the same rates by step number, for
//! loops that compute the rate from a saved step rather than keep a scheduler.

use std::f64::consts::PI;
use std::fmt;

use crate::{Error, Result};

/// A learning-rate scheduler: PyTorch's `LRScheduler` for one parameter group.
pub trait LrScheduler {
    /// Advances one step (PyTorch's `scheduler.step()`) and returns the new rate, the one
    /// the optimizer uses next. A step past a scheduler's end is an error.
    fn step(&mut self) -> Result<f64>;
    /// The state to save in a checkpoint.
    fn state(&self) -> SchedulerState;
    /// The rate set by the last step (PyTorch's `get_last_lr()[0]`).
    fn get_last_lr(&self) -> f64 {
        self.state().lr
    }
    /// How many steps were taken since the scheduler was made (PyTorch's `last_epoch`).
    fn last_epoch(&self) -> i64 {
        self.state().last_epoch
    }
    /// Restores a saved state; an error if it is not the state of a scheduler of this
    /// shape (a sequence with another number of schedulers).
    fn load_state(&mut self, state: &SchedulerState) -> Result<()>;
}

/// A scheduler's saved state (PyTorch's `state_dict()`, less the settings, which the
/// code that makes the scheduler gives again).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerState {
    /// PyTorch's `last_epoch`.
    pub last_epoch: i64,
    /// PyTorch's `_step_count`.
    pub step_count: u64,
    /// The rate last set.
    pub lr: f64,
    /// The states of the schedulers of a [`SequentialLr`], in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedulers: Vec<SchedulerState>,
}

/// How `OneCycleLR` moves between its rates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anneal {
    /// Half a cosine (PyTorch's default, `"cos"`).
    Cos,
    /// A straight line (`"linear"`).
    Linear,
}

/// The rule of a [`Scheduler`].
enum Rule {
    Lambda(Box<dyn Fn(i64) -> f64 + Send + Sync>),
    Step {
        step_size: i64,
        gamma: f64,
    },
    Linear {
        start: f64,
        end: f64,
        total: i64,
    },
    Cosine {
        t_max: i64,
        eta_min: f64,
    },
    OneCycle {
        total: i64,
        /// `(end step, start rate, end rate)` of each phase.
        phases: Vec<(f64, f64, f64)>,
        anneal: Anneal,
        /// `(base_momentum, max_momentum)`, when the momentum cycles.
        momentum: Option<(f64, f64)>,
    },
    TimmCosine(TimmCosine),
}

impl Rule {
    /// The name of the PyTorch (or timm) class that follows this rule.
    fn name(&self) -> &'static str {
        match self {
            Rule::Lambda(_) => "LambdaLR",
            Rule::Step { .. } => "StepLR",
            Rule::Linear { .. } => "LinearLR",
            Rule::Cosine { .. } => "CosineAnnealingLR",
            Rule::OneCycle { .. } => "OneCycleLR",
            Rule::TimmCosine(_) => "CosineLRScheduler",
        }
    }

    /// An error for settings that the class refuses (`OneCycleLR`'s are checked before
    /// its phases are computed).
    fn check(&self) -> Result<()> {
        let name = self.name();
        match self {
            Rule::Lambda(_) | Rule::OneCycle { .. } => Ok(()),
            Rule::Step { step_size, .. } => positive(name, "step_size", *step_size),
            Rule::Linear { start, end, total } => {
                fraction(name, "start_factor", *start, false)?;
                fraction(name, "end_factor", *end, true)?;
                positive(name, "total_iters", *total)
            }
            Rule::Cosine { t_max, .. } => positive(name, "T_max", *t_max),
            Rule::TimmCosine(c) => {
                positive(name, "t_initial", c.t_initial)?;
                if c.warmup_t < 0 || c.lr_min < 0.0 {
                    let what = format!(
                        "warmup_t and lr_min must be at least 0, got {} and {}",
                        c.warmup_t, c.lr_min
                    );
                    return Err(setting(name, what));
                }
                Ok(())
            }
        }
    }
}

/// The settings of timm's `CosineLRScheduler` (`timm.scheduler.CosineLRScheduler`).
#[derive(Clone, Debug, PartialEq)]
pub struct TimmCosine {
    /// `t_initial`: the length of the first cycle.
    pub t_initial: i64,
    /// `lr_min`.
    pub lr_min: f64,
    /// `cycle_mul`: each cycle this many times longer than the one before.
    pub cycle_mul: f64,
    /// `cycle_decay`: each cycle's peak this many times the one before.
    pub cycle_decay: f64,
    /// `cycle_limit`: after this many cycles the rate stays at `lr_min`.
    pub cycle_limit: i64,
    /// `warmup_t`: steps of linear warmup.
    pub warmup_t: i64,
    /// `warmup_lr_init`: the rate warmup starts from.
    pub warmup_lr_init: f64,
    /// `warmup_prefix`: the cosine starts after warmup rather than under it.
    pub warmup_prefix: bool,
    /// `k_decay`.
    pub k_decay: f64,
}

impl TimmCosine {
    /// timm's defaults for a cycle of `t_initial` steps: no warmup, `lr_min` 0, one cycle.
    pub fn new(t_initial: i64) -> TimmCosine {
        TimmCosine {
            t_initial,
            lr_min: 0.0,
            cycle_mul: 1.0,
            cycle_decay: 1.0,
            cycle_limit: 1,
            warmup_t: 0,
            warmup_lr_init: 0.0,
            warmup_prefix: false,
            k_decay: 1.0,
        }
    }

    /// timm's `_get_lr(t)` for the base rate `base`.
    fn rate(&self, base: f64, t: i64) -> f64 {
        if t < self.warmup_t {
            let step = (base - self.warmup_lr_init) / self.warmup_t as f64;
            return self.warmup_lr_init + t as f64 * step;
        }
        let t = if self.warmup_prefix {
            t - self.warmup_t
        } else {
            t
        } as f64;
        let t0 = self.t_initial as f64;
        let (i, t_i, t_curr) = if self.cycle_mul != 1.0 {
            let m = self.cycle_mul;
            let i = (1.0 - t / t0 * (1.0 - m)).ln() / m.ln();
            let i = i.floor();
            let t_i = m.powf(i) * t0;
            (i, t_i, t - (1.0 - m.powf(i)) / (1.0 - m) * t0)
        } else {
            let i = (t / t0).floor();
            (i, t0, t - t0 * i)
        };
        if i < self.cycle_limit as f64 {
            let peak = base * self.cycle_decay.powf(i);
            let k = self.k_decay;
            self.lr_min
                + 0.5 * (peak - self.lr_min) * (1.0 + (PI * t_curr.powf(k) / t_i.powf(k)).cos())
        } else {
            self.lr_min
        }
    }
}

impl Anneal {
    /// From `from` to `to` at fraction `pct` (PyTorch's `_annealing_cos` and
    /// `_annealing_linear`).
    fn between(self, from: f64, to: f64, pct: f64) -> f64 {
        match self {
            Anneal::Cos => to + (from - to) / 2.0 * ((PI * pct).cos() + 1.0),
            Anneal::Linear => (to - from) * pct + from,
        }
    }
}

/// The `OneCycleLR` phase that step `e` falls in (of `phases`, `(end step, start rate,
/// end rate)` each; past the last end, the last) and how far through it: PyTorch's walk
/// over `_schedule_phases`.
fn phase_at(e: i64, phases: &[(f64, f64, f64)]) -> (usize, f64) {
    let mut start = 0.0;
    for (i, &(end, _, _)) in phases.iter().enumerate() {
        if e as f64 <= end || i + 1 == phases.len() {
            return (i, (e as f64 - start) / (end - start));
        }
        start = end;
    }
    (0, 0.0)
}

/// One of PyTorch's schedulers (and timm's cosine), for one parameter group: made by
/// the constructor of its name, stepped through [`LrScheduler`].
pub struct Scheduler {
    name: &'static str,
    rule: Rule,
    /// PyTorch's `base_lrs[0]` (the group's `initial_lr`).
    base_lr: f64,
    /// The group's current rate, as the rules read it.
    lr: f64,
    last_epoch: i64,
    step_count: u64,
    /// PyTorch's `_is_initial`: true during the step taken when the scheduler is made.
    initial: bool,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("name", &self.name)
            .field("base_lr", &self.base_lr)
            .field("lr", &self.lr)
            .field("last_epoch", &self.last_epoch)
            .finish()
    }
}

fn setting(scheduler: &'static str, what: String) -> Error {
    Error::Schedule { scheduler, what }
}

fn positive(scheduler: &'static str, name: &str, value: i64) -> Result<()> {
    if value <= 0 {
        return Err(setting(
            scheduler,
            format!("{name} must be at least 1, got {value}"),
        ));
    }
    Ok(())
}

/// An error unless `value` lies in [0, 1] (in (0, 1] without `zero`).
fn fraction(scheduler: &'static str, name: &str, value: f64, zero: bool) -> Result<()> {
    let ok = value <= 1.0 && (value > 0.0 || (zero && value == 0.0));
    if !ok {
        let range = if zero { "[0, 1]" } else { "(0, 1]" };
        return Err(setting(
            scheduler,
            format!("{name} must be in {range}, got {value}"),
        ));
    }
    Ok(())
}

impl Scheduler {
    fn make(rule: Rule, lr: f64) -> Result<Scheduler> {
        let name = rule.name();
        rule.check()?;
        if !lr.is_finite() || lr < 0.0 {
            return Err(setting(
                name,
                format!("the learning rate must be finite and at least 0, got {lr}"),
            ));
        }
        let mut s = Scheduler {
            name,
            rule,
            base_lr: lr,
            lr,
            last_epoch: -1,
            step_count: 0,
            initial: false,
        };
        s.initial_step()?;
        Ok(s)
    }

    /// PyTorch's `_initial_step`: the step a scheduler takes when it is made.
    fn initial_step(&mut self) -> Result<()> {
        self.step_count = 0;
        self.initial = true;
        let out = self.advance(None);
        self.initial = false;
        out.map(|_| ())
    }

    /// `LambdaLR(optimizer, lr_lambda)`: the rate is `lr · lambda(epoch)`.
    ///
    /// ```
    /// use tessera_optim::scheduler::{LrScheduler, Scheduler};
    /// let mut s = Scheduler::lambda(0.5, |e| 0.9f64.powi(e as i32))?;
    /// assert_eq!(s.get_last_lr(), 0.5);
    /// assert_eq!(s.step()?, 0.5 * 0.9);
    /// # Ok::<(), tessera_optim::Error>(())
    /// ```
    pub fn lambda(lr: f64, f: impl Fn(i64) -> f64 + Send + Sync + 'static) -> Result<Scheduler> {
        Scheduler::make(Rule::Lambda(Box::new(f)), lr)
    }

    /// The paper's schedule ("Attention Is All You Need", eq. 3) as PyTorch code writes
    /// it: `LambdaLR(optimizer with lr = factor, lambda e: d_model^-0.5 · min((e+1)^-0.5,
    /// (e+1) · warmup^-1.5))`; the rate of the n-th optimizer step is
    /// `factor ·` [`crate::schedule::transformer`]`(n, d_model, warmup)`.
    ///
    /// ```
    /// use tessera_optim::scheduler::{LrScheduler, Scheduler};
    /// use tessera_optim::schedule::transformer;
    /// let mut s = Scheduler::noam(512, 4000, 1.0)?;
    /// assert_eq!(s.get_last_lr(), transformer(1, 512, 4000));
    /// assert_eq!(s.step()?, transformer(2, 512, 4000));
    /// # Ok::<(), tessera_optim::Error>(())
    /// ```
    pub fn noam(d_model: usize, warmup: u64, factor: f64) -> Result<Scheduler> {
        positive("noam", "warmup", warmup as i64)?;
        let f = move |e: i64| crate::schedule::transformer(e.max(0) as u64 + 1, d_model, warmup);
        Scheduler::make(Rule::Lambda(Box::new(f)), factor)
    }

    /// `StepLR(optimizer, step_size, gamma)`: the rate times `gamma` every `step_size`
    /// steps.
    pub fn step_lr(lr: f64, step_size: i64, gamma: f64) -> Result<Scheduler> {
        Scheduler::make(Rule::Step { step_size, gamma }, lr)
    }

    /// `LinearLR(optimizer, start_factor, end_factor, total_iters)`: the factor moves
    /// from `start_factor` to `end_factor` over `total_iters` steps, then stays.
    pub fn linear(
        lr: f64,
        start_factor: f64,
        end_factor: f64,
        total_iters: i64,
    ) -> Result<Scheduler> {
        let rule = Rule::Linear {
            start: start_factor,
            end: end_factor,
            total: total_iters,
        };
        Scheduler::make(rule, lr)
    }

    /// `CosineAnnealingLR(optimizer, T_max, eta_min)`: half a cosine from the rate down to
    /// `eta_min` over `T_max` steps, and up again (PyTorch's recursive form).
    pub fn cosine_annealing(lr: f64, t_max: i64, eta_min: f64) -> Result<Scheduler> {
        Scheduler::make(Rule::Cosine { t_max, eta_min }, lr)
    }

    /// `OneCycleLR(optimizer, max_lr, total_steps, pct_start, anneal_strategy,
    /// div_factor=25, final_div_factor=1e4, three_phase)`: from `max_lr / div_factor` up
    /// to `max_lr` over `pct_start` of the steps, then down to `initial / final_div_factor`
    /// (in three phases: back to the initial rate first). Stepping past `total_steps` is
    /// an error, as in PyTorch. The momentum cycles the other way, between PyTorch's
    /// defaults 0.85 and 0.95 ([`Scheduler::get_last_momentum`],
    /// [`Scheduler::cycle_momentum`]).
    pub fn one_cycle(
        max_lr: f64,
        total_steps: i64,
        pct_start: f64,
        anneal: Anneal,
        div_factor: f64,
        final_div_factor: f64,
        three_phase: bool,
    ) -> Result<Scheduler> {
        positive("OneCycleLR", "total_steps", total_steps)?;
        fraction("OneCycleLR", "pct_start", pct_start, true)?;
        let initial = max_lr / div_factor;
        let min = initial / final_div_factor;
        let (total, up) = (total_steps as f64, pct_start * total_steps as f64);
        let phases = if three_phase {
            vec![
                (up - 1.0, initial, max_lr),
                (2.0 * up - 2.0, max_lr, initial),
                (total - 1.0, initial, min),
            ]
        } else {
            vec![(up - 1.0, initial, max_lr), (total - 1.0, max_lr, min)]
        };
        let rule = Rule::OneCycle {
            total: total_steps,
            phases,
            anneal,
            momentum: None,
        };
        Scheduler::make(rule, initial)?.cycle_momentum(Some((0.85, 0.95)))
    }

    /// `OneCycleLR`'s `cycle_momentum`, `base_momentum` and `max_momentum`: the momentum
    /// (SGD's `momentum`, Adam's `beta1`) goes from `max` down to `base` while the rate
    /// rises, then back up to `max` (staying there in the third phase); `None` turns the
    /// cycling off. An error for another scheduler or when `base > max`.
    ///
    /// ```
    /// use tessera_optim::scheduler::{Anneal, LrScheduler, Scheduler};
    /// use tessera_optim::{Optimizer, Sgd, SgdConfig};
    /// let mut s = Scheduler::one_cycle(0.1, 10, 0.3, Anneal::Linear, 25.0, 1e4, false)?
    ///     .cycle_momentum(Some((0.8, 0.9)))?;
    /// let mut opt = Sgd::with(SgdConfig { momentum: 0.9, ..SgdConfig::new(0.1) });
    /// assert_eq!(s.get_last_momentum(), Some(0.9));
    /// for _ in 0..2 {
    ///     s.step()?;
    /// }
    /// // At the peak of the rate, the momentum is at its lowest.
    /// assert!((s.get_last_momentum().unwrap() - 0.8).abs() < 1e-12);
    /// opt.set_momentum(s.get_last_momentum().unwrap());
    /// assert!((opt.config.momentum - 0.8).abs() < 1e-6);
    /// # Ok::<(), tessera_optim::Error>(())
    /// ```
    pub fn cycle_momentum(mut self, range: Option<(f64, f64)>) -> Result<Scheduler> {
        let Rule::OneCycle { momentum, .. } = &mut self.rule else {
            let what = "only OneCycleLR cycles the momentum".to_string();
            return Err(setting(self.name, what));
        };
        *momentum = match range {
            None => None,
            Some((base, max)) if !(base <= max && base.is_finite() && max.is_finite()) => {
                let what = format!("base_momentum {base} must not exceed max_momentum {max}");
                return Err(setting("OneCycleLR", what));
            }
            range => range,
        };
        Ok(self)
    }

    /// The momentum that `OneCycleLR` sets for the step after the last (PyTorch writes it
    /// into the optimizer: `momentum` for SGD, `betas[0]` for Adam; here
    /// [`Optimizer::set_momentum`](crate::Optimizer::set_momentum) does). `None` for a
    /// scheduler that leaves the momentum alone.
    pub fn get_last_momentum(&self) -> Option<f64> {
        let Rule::OneCycle {
            phases,
            anneal,
            momentum: Some(momentum),
            ..
        } = &self.rule
        else {
            return None;
        };
        let (base, max) = *momentum;
        let (i, pct) = phase_at(self.last_epoch, phases);
        // Down while the rate rises, back up while it falls, flat in a third phase.
        let (from, to) = [(max, base), (base, max), (max, max)][i];
        Some(anneal.between(from, to, pct))
    }

    /// timm's `CosineLRScheduler(optimizer, ...)` stepped once per update
    /// (`step_update`): after `n` steps the rate is timm's `_get_lr(n)`.
    pub fn timm_cosine(lr: f64, settings: TimmCosine) -> Result<Scheduler> {
        Scheduler::make(Rule::TimmCosine(settings), lr)
    }

    /// PyTorch's `_update_lr(epoch)`: one step, or a jump to `epoch` with the closed
    /// form where the rule has one.
    fn advance(&mut self, epoch: Option<i64>) -> Result<f64> {
        match epoch {
            None => self.last_epoch += 1,
            Some(e) => self.last_epoch = e,
        }
        let lr = match epoch {
            Some(_) => match self.closed_form() {
                Some(lr) => lr,
                None => self.get_lr()?,
            },
            None => self.get_lr()?,
        };
        self.lr = lr;
        Ok(lr)
    }

    /// PyTorch's `get_lr()` of this rule at `last_epoch`, from the group's rate `lr`.
    fn get_lr(&self) -> Result<f64> {
        let (e, lr, base) = (self.last_epoch, self.lr, self.base_lr);
        Ok(match &self.rule {
            Rule::Lambda(f) => base * f(e),
            Rule::Step { step_size, gamma } => {
                if e == 0 || e % step_size != 0 {
                    lr
                } else {
                    lr * gamma
                }
            }
            Rule::Linear { start, end, total } => {
                if e == 0 {
                    lr * start
                } else if self.initial || e > *total {
                    lr
                } else {
                    let d = end - start;
                    lr * (1.0 + d / (*total as f64 * start + (e - 1) as f64 * d))
                }
            }
            Rule::Cosine { t_max, eta_min } => {
                let t = *t_max as f64;
                if self.initial {
                    lr
                } else if self.step_count == 1 && e > 0 {
                    eta_min + (base - eta_min) * (1.0 + (e as f64 * PI / t).cos()) / 2.0
                } else if (e - 1 - t_max).rem_euclid(2 * t_max) == 0 {
                    lr + (base - eta_min) * (1.0 - (PI / t).cos()) / 2.0
                } else {
                    (1.0 + (PI * e as f64 / t).cos()) / (1.0 + (PI * (e - 1) as f64 / t).cos())
                        * (lr - eta_min)
                        + eta_min
                }
            }
            Rule::OneCycle {
                total,
                phases,
                anneal,
                ..
            } => {
                if e > *total {
                    let what = format!(
                        "tried to step {e} times; the specified number of total steps is {total}"
                    );
                    return Err(setting(self.name, what));
                }
                let (i, pct) = phase_at(e, phases);
                anneal.between(phases[i].1, phases[i].2, pct)
            }
            Rule::TimmCosine(t) => t.rate(base, e),
        })
    }

    /// PyTorch's `_get_closed_form_lr()`, for the rules that have one.
    fn closed_form(&self) -> Option<f64> {
        let (e, base) = (self.last_epoch, self.base_lr);
        match &self.rule {
            Rule::Step { step_size, gamma } => Some(base * gamma.powi((e / step_size) as i32)),
            Rule::Linear { start, end, total } => {
                Some(base * (start + (end - start) * e.min(*total) as f64 / *total as f64))
            }
            Rule::Cosine { t_max, eta_min } => {
                let t = *t_max as f64;
                Some(eta_min + (base - eta_min) * (1.0 + (PI * e as f64 / t).cos()) / 2.0)
            }
            _ => None,
        }
    }
}

impl LrScheduler for Scheduler {
    fn step(&mut self) -> Result<f64> {
        self.step_count += 1;
        self.advance(None)
    }

    fn state(&self) -> SchedulerState {
        SchedulerState {
            last_epoch: self.last_epoch,
            step_count: self.step_count,
            lr: self.lr,
            schedulers: Vec::new(),
        }
    }

    fn load_state(&mut self, state: &SchedulerState) -> Result<()> {
        if !state.schedulers.is_empty() {
            let what = format!(
                "the saved state is a sequence of {} schedulers, not one",
                state.schedulers.len()
            );
            return Err(setting(self.name, what));
        }
        self.last_epoch = state.last_epoch;
        self.step_count = state.step_count;
        self.lr = state.lr;
        Ok(())
    }
}

/// `SequentialLR(optimizer, schedulers, milestones)`: `schedulers[i]` runs from
/// `milestones[i - 1]` on; at a milestone the next scheduler starts from its epoch 0.
///
/// ```
/// use tessera_optim::scheduler::{LrScheduler, Scheduler, SequentialLr};
/// // Warmup then cosine: LinearLR for 2 steps, then CosineAnnealingLR over 4.
/// let warm = Scheduler::linear(1.0, 0.5, 1.0, 2)?;
/// let cos = Scheduler::cosine_annealing(1.0, 4, 0.0)?;
/// let mut s = SequentialLr::new(vec![warm, cos], vec![2])?;
/// let mut rates = vec![s.get_last_lr()];
/// for _ in 0..4 {
///     rates.push(s.step()?);
/// }
/// assert_eq!(rates[..3], [0.5, 0.75, 1.0]);
/// assert!((rates[4] - 0.5).abs() < 1e-15);
/// # Ok::<(), tessera_optim::Error>(())
/// ```
#[derive(Debug)]
pub struct SequentialLr {
    schedulers: Vec<Scheduler>,
    milestones: Vec<i64>,
    last_epoch: i64,
    lr: f64,
}

impl SequentialLr {
    /// Chains `schedulers`, one more than `milestones` (increasing step numbers), all made
    /// for the same initial rate (the group's `initial_lr`).
    pub fn new(mut schedulers: Vec<Scheduler>, milestones: Vec<i64>) -> Result<SequentialLr> {
        let name = "SequentialLR";
        if schedulers.is_empty() {
            return Err(setting(
                name,
                "expects at least one scheduler, got none".into(),
            ));
        }
        if milestones.len() + 1 != schedulers.len() {
            let what = format!(
                "expects one milestone fewer than schedulers, got {} schedulers and {} milestones",
                schedulers.len(),
                milestones.len()
            );
            return Err(setting(name, what));
        }
        if milestones.windows(2).any(|w| w[0] > w[1]) {
            return Err(setting(
                name,
                format!("milestones must increase, got {milestones:?}"),
            ));
        }
        // The group's initial_lr is set by the first scheduler made for it.
        let initial = schedulers[0].base_lr;
        for s in &mut schedulers {
            s.last_epoch -= 1;
        }
        let first = &mut schedulers[milestones.partition_point(|&m| m <= 0)];
        first.lr = initial;
        first.initial_step()?;
        let lr = first.lr;
        Ok(SequentialLr {
            schedulers,
            milestones,
            last_epoch: 0,
            lr,
        })
    }
}

impl LrScheduler for SequentialLr {
    fn step(&mut self) -> Result<f64> {
        self.last_epoch += 1;
        let idx = self.milestones.partition_point(|&m| m <= self.last_epoch);
        let s = &mut self.schedulers[idx];
        // The schedulers share the group's rate.
        s.lr = self.lr;
        self.lr = if idx > 0 && self.milestones[idx - 1] == self.last_epoch {
            s.advance(Some(0))?
        } else {
            s.step()?
        };
        Ok(self.lr)
    }

    fn state(&self) -> SchedulerState {
        SchedulerState {
            last_epoch: self.last_epoch,
            step_count: 0,
            lr: self.lr,
            schedulers: self.schedulers.iter().map(|s| s.state()).collect(),
        }
    }

    fn load_state(&mut self, state: &SchedulerState) -> Result<()> {
        if state.schedulers.len() != self.schedulers.len() {
            let what = format!(
                "the saved state holds {} schedulers, this sequence {}",
                state.schedulers.len(),
                self.schedulers.len()
            );
            return Err(setting("SequentialLR", what));
        }
        for (s, saved) in self.schedulers.iter_mut().zip(&state.schedulers) {
            s.load_state(saved)?;
        }
        self.last_epoch = state.last_epoch;
        self.lr = state.lr;
        Ok(())
    }
}
