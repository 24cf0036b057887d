//! Named parameters, created once: a [`VarMap`] holds a model's parameters and buffers
//! under their PyTorch/timm names, and a [`VarBuilder`] creates each of them at its path
//! with its initialiser (in the spirit of candle's `VarBuilder`).
//!
//! A layer never names itself: the builder's path does (`vb.pp("blocks").pp(3).pp("mlp")`
//! then `Linear::new(&vb.pp("fc1"), ..)` creates `blocks.3.mlp.fc1.weight` and `.bias`),
//! so the names of a checkpoint are the names of the code that built the model.
//!
//! ```
//! use tessera_nn::{Init, Linear, Module, VarBuilder, VarMap, Var};
//! use tessera_tensor::{Rng, Tensor};
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_rng(&vars, Rng::seed(0));
//! let fc = Linear::with_init(&vb.pp("mlp").pp("fc1"), 4, 3, Init::Const(0.5), Some(Init::Zeros))?;
//! let y = fc.forward(&Var::constant(Tensor::ones(&[1, 4])))?;
//! assert_eq!(y.value().to_vec(), vec![2.0, 2.0, 2.0]);
//! assert_eq!(vars.names(), vec!["mlp.fc1.weight", "mlp.fc1.bias"]);
//! assert_eq!(vars.num_parameters(), 15);
//! # Ok::<(), tessera_nn::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_tensor::{Rng, Tensor};

use crate::{init, Buffer, Error, LoadReport, Parameter, Result};

thread_local! {
    static BUDGET: std::cell::RefCell<Option<MemoryBudget>> = const { std::cell::RefCell::new(None) };
}

/// A limit on the memory of the parameters and buffers that builders make on this
/// thread, tighter than the machine's: training holds several values per parameter, so
/// a model that fits in memory may still not train. With a budget in force, a model too
/// large for it is refused at its first parameter beyond the budget, before the rest is
/// built (a large model takes seconds to draw).
///
/// ```
/// use tessera_nn::{Error, Linear, MemoryBudget, VarBuilder, VarMap};
/// use tessera_tensor::Rng;
/// let budget = MemoryBudget {
///     bytes: 1_000_000,
///     bytes_per_value: 16,
///     what: "available to train it (16 bytes a parameter)",
/// };
/// let _guard = budget.enter();
/// let vars = VarMap::new();
/// let vb = VarBuilder::from_rng(&vars, Rng::seed(0));
/// assert!(Linear::new(&vb.pp("small"), 100, 100, true).is_ok()); // 161.6 kB to train
/// let err = Linear::new(&vb.pp("big"), 300, 300, true).unwrap_err();
/// assert!(matches!(err, Error::TooLarge { ref name, .. } if name == "big.weight"));
/// assert!(err.to_string().contains("more than the 1.0 MB available to train it"));
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryBudget {
    /// The bytes that all the values of the store may take, at `bytes_per_value`.
    pub bytes: usize,
    /// What each value costs: 4 to hold an f32; 16 to train it with Adam (the weight,
    /// its gradient and two moments).
    pub bytes_per_value: usize,
    /// What the limit is, as the error says it after "more than the N":
    /// `"available to train it"`.
    pub what: &'static str,
}

impl MemoryBudget {
    /// Puts this budget in force on this thread until the guard is dropped (the budget
    /// before it then returns).
    pub fn enter(self) -> BudgetGuard {
        let previous = BUDGET.with(|b| b.replace(Some(self)));
        BudgetGuard {
            previous,
            _thread: std::marker::PhantomData,
        }
    }

    /// The budget in force on this thread.
    pub fn current() -> Option<MemoryBudget> {
        BUDGET.with(|b| b.borrow().clone())
    }
}

/// Keeps a [`MemoryBudget`] in force on its thread while it lives.
#[must_use = "the budget ends when the guard is dropped"]
#[derive(Debug)]
pub struct BudgetGuard {
    previous: Option<MemoryBudget>,
    // A guard belongs to the thread whose budget it holds.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        BUDGET.with(|b| *b.borrow_mut() = previous);
    }
}

/// How a new parameter's values are drawn (the `torch.nn.init` functions).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element the same value.
    Const(f32),
    /// `U(lo, hi)`.
    Uniform {
        /// Lower bound.
        lo: f32,
        /// Upper bound.
        hi: f32,
    },
    /// `N(mean, std²)`.
    Normal {
        /// Mean.
        mean: f32,
        /// Standard deviation.
        std: f32,
    },
    /// timm's `trunc_normal_(std)`: `N(0, std²)` truncated to `[-2, 2]`.
    TruncNormal {
        /// Standard deviation.
        std: f32,
    },
    /// `kaiming_uniform_(a)` over the fan-in: PyTorch's default for `Linear` and
    /// `Conv2d` weights with `a = √5`.
    KaimingUniform {
        /// Negative slope of the rectifier.
        a: f32,
    },
    /// He normal over the fan-out, `N(0, 2 / fan_out)` (ResNet convolutions).
    KaimingNormalFanOut,
    /// `xavier_uniform_(gain)`.
    XavierUniform {
        /// Gain.
        gain: f32,
    },
}

impl Init {
    /// PyTorch's default bias of a layer with `fan_in` inputs: `U(±1/√fan_in)`.
    pub fn default_bias(fan_in: usize) -> Init {
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        Init::Uniform {
            lo: -bound,
            hi: bound,
        }
    }

    /// A tensor of `shape` drawn from `rng` (constants draw nothing).
    pub fn tensor(&self, shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
        Ok(match *self {
            Init::Zeros => Tensor::zeros(shape),
            Init::Ones => Tensor::ones(shape),
            Init::Const(v) => Tensor::full(shape, v),
            Init::Uniform { lo, hi } => Tensor::rand(shape, lo, hi, rng),
            Init::Normal { mean, std } => Tensor::randn(shape, mean, std, rng),
            Init::TruncNormal { std } => init::trunc_normal(shape, std, rng)?,
            Init::KaimingUniform { a } => init::kaiming_uniform(shape, a, rng)?,
            Init::KaimingNormalFanOut => {
                let (_, fan_out) = init::fans(shape)?;
                Tensor::randn(shape, 0.0, (2.0 / fan_out.max(1) as f32).sqrt(), rng)
            }
            Init::XavierUniform { gain } => init::xavier_uniform(shape, gain, rng)?,
        })
    }
}

/// A named tensor of a model: a trained parameter or a buffer.
#[derive(Clone, Debug)]
enum Slot {
    Param(Parameter),
    Buffer(Buffer),
}

impl Slot {
    fn value(&self) -> Tensor {
        match self {
            Slot::Param(p) => p.value(),
            Slot::Buffer(b) => b.value(),
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    /// In creation order: the order of `named_parameters`, of a saved file's listing
    /// and of an optimizer's state.
    entries: Vec<(String, Slot)>,
    index: HashMap<String, usize>,
}

impl Store {
    fn reindex(&mut self) {
        self.index = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
    }
}

/// The parameters and buffers of a model by name, in creation order: what a
/// [`VarBuilder`] fills, what an optimizer steps and what a checkpoint saves and loads.
///
/// A cheap handle: clones share the same store, and the [`Parameter`]s in it are the
/// ones the layers hold, so a load or an optimizer step is seen by the model at once.
#[derive(Clone, Debug, Default)]
pub struct VarMap(Arc<Mutex<Store>>);

impl VarMap {
    /// An empty store.
    pub fn new() -> VarMap {
        VarMap::default()
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        match self.0.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn insert(&self, name: String, slot: Slot) -> Result<()> {
        let mut store = self.lock();
        if store.index.contains_key(&name) {
            return Err(Error::DuplicateName { name });
        }
        let at = store.entries.len();
        store.index.insert(name.clone(), at);
        store.entries.push((name, slot));
        Ok(())
    }

    /// Builds `T` into a fresh store whose initialisers draw from `rng` (left advanced),
    /// and returns both.
    ///
    /// ```
    /// use tessera_nn::{Linear, VarMap};
    /// use tessera_tensor::Rng;
    /// let (fc, vars) = VarMap::build(&mut Rng::seed(0), |vb| Linear::new(vb, 4, 3, true))?;
    /// assert_eq!(vars.num_parameters(), 4 * 3 + 3);
    /// assert_eq!(fc.weight.value().shape(), &[3, 4]);
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn build<T>(
        rng: &mut Rng,
        build: impl FnOnce(&VarBuilder) -> Result<T>,
    ) -> Result<(T, VarMap)> {
        let vars = VarMap::new();
        let built = VarBuilder::with_rng(&vars, rng, build)?;
        Ok((built, vars))
    }

    /// Adds a parameter under `name`; a name already taken is an error.
    pub fn add_parameter(&self, name: impl Into<String>, p: Parameter) -> Result<()> {
        self.insert(name.into(), Slot::Param(p))
    }

    /// Adds a buffer under `name`; a name already taken is an error.
    pub fn add_buffer(&self, name: impl Into<String>, b: Buffer) -> Result<()> {
        self.insert(name.into(), Slot::Buffer(b))
    }

    /// Every name, parameters and buffers, in creation order.
    pub fn names(&self) -> Vec<String> {
        self.lock().entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// All parameters with their names, in creation order.
    pub fn named_parameters(&self) -> Vec<(String, Parameter)> {
        self.named(|s| match s {
            Slot::Param(p) => Some(p.clone()),
            Slot::Buffer(_) => None,
        })
    }

    /// All buffers with their names, in creation order.
    pub fn named_buffers(&self) -> Vec<(String, Buffer)> {
        self.named(|s| match s {
            Slot::Buffer(b) => Some(b.clone()),
            Slot::Param(_) => None,
        })
    }

    /// The entries that `pick` takes, with their names, in creation order.
    fn named<T>(&self, pick: impl Fn(&Slot) -> Option<T>) -> Vec<(String, T)> {
        self.lock()
            .entries
            .iter()
            .filter_map(|(n, s)| pick(s).map(|v| (n.clone(), v)))
            .collect()
    }

    /// The parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<Parameter> {
        let store = self.lock();
        match store.index.get(name).map(|&i| &store.entries[i].1) {
            Some(Slot::Param(p)) => Some(p.clone()),
            _ => None,
        }
    }

    /// Every value by name, parameters and buffers, in creation order.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.lock()
            .entries
            .iter()
            .map(|(n, s)| (n.clone(), s.value()))
            .collect()
    }

    /// The total number of scalar parameters (buffers not counted).
    pub fn num_parameters(&self) -> usize {
        self.named_parameters()
            .iter()
            .map(|(_, p)| p.value().numel())
            .sum()
    }

    /// Puts `p` in place of the parameter `name` (keeping its position), for a change of
    /// shape such as resampled position embeddings. An unknown name is an error.
    pub fn replace_parameter(&self, name: &str, p: Parameter) -> Result<()> {
        let mut store = self.lock();
        match store.index.get(name).copied() {
            Some(i) => {
                store.entries[i].1 = Slot::Param(p);
                Ok(())
            }
            None => Err(Error::UnknownName {
                name: name.to_string(),
            }),
        }
    }

    /// Removes every entry at `path` or below it (`head` removes `head.weight` and
    /// `head.bias`, not `head_drop.x`), e.g. before a new head is built in its place.
    pub fn remove(&self, path: &str) {
        let mut store = self.lock();
        let below = format!("{path}.");
        store
            .entries
            .retain(|(n, _)| n != path && !n.starts_with(&below));
        store.reindex();
    }

    /// Loads parameters and buffers by name from a safetensors file. Strict: any missing
    /// key, unexpected key or shape mismatch is an error listing all of them, and nothing
    /// is changed. A tensor with NaN or infinite values is an error
    /// ([`Error::NonFinite`]) in both modes, and nothing is changed. Not strict: the matching tensors are loaded and the report of the
    /// rest is returned.
    pub fn load(&self, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
        let path = path.as_ref();
        let file = tessera_tensor::SafeTensorsFile::open(path)?;
        let entries = file.entries();
        let shapes: HashMap<String, Vec<usize>> = entries
            .iter()
            .map(|(n, s, _)| (n.clone(), s.clone()))
            .collect();
        let slots: Vec<(String, Slot)> = self.lock().entries.clone();
        let mut report = LoadReport::default();
        let mut to_load = Vec::new();
        for (name, slot) in &slots {
            let shape = slot.value().shape().to_vec();
            match shapes.get(name) {
                None => report.missing.push(name.clone()),
                Some(s) if *s != shape => report.mismatched.push((name.clone(), shape, s.clone())),
                Some(_) => to_load.push((name, slot)),
            }
        }
        let known: std::collections::HashSet<&str> =
            slots.iter().map(|(n, _)| n.as_str()).collect();
        report.unexpected = shapes
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        report.missing.sort();
        report.unexpected.sort();
        report.mismatched.sort();
        let loaded: std::collections::HashSet<&str> =
            to_load.iter().map(|(n, _)| n.as_str()).collect();
        report.converted = entries
            .iter()
            .filter(|(n, _, dtype)| dtype != "F32" && loaded.contains(n.as_str()))
            .map(|(n, _, dtype)| (n.clone(), dtype.clone()))
            .collect();
        if strict && !report.is_clean() {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                report,
            });
        }
        // Read and check everything first, so a bad file leaves the model untouched.
        let values = to_load
            .iter()
            .map(|(n, _)| file.get(n))
            .collect::<tessera_tensor::Result<Vec<_>>>()?;
        for ((name, _), v) in to_load.iter().zip(&values) {
            // Tensors read from a file are contiguous: no copy is needed to scan them.
            let owned;
            let data = match v.as_slice() {
                Some(s) => s,
                None => {
                    owned = v.to_vec();
                    &owned
                }
            };
            if let Some(index) = data.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    path: path.to_path_buf(),
                    name: name.to_string(),
                    count: data.iter().filter(|x| !x.is_finite()).count(),
                    index,
                    value: data[index],
                });
            }
        }
        for ((_, slot), v) in to_load.iter().zip(values) {
            match slot {
                Slot::Param(p) => p.set(v)?,
                Slot::Buffer(b) => b.set(v),
            }
        }
        Ok(report)
    }

    /// Writes every parameter and buffer by name to a safetensors file (atomically),
    /// with string metadata.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        metadata: Option<&HashMap<String, String>>,
    ) -> Result<()> {
        self.save_with(path, Vec::new(), metadata)
    }

    /// [`VarMap::save`] with more named tensors in the same file: an optimizer's state
    /// beside the model in a training checkpoint.
    pub fn save_with(
        &self,
        path: impl AsRef<Path>,
        extra: Vec<(String, Tensor)>,
        metadata: Option<&HashMap<String, String>>,
    ) -> Result<()> {
        let mut values = self.tensors();
        values.extend(extra);
        tessera_tensor::save_safetensors(
            path,
            values.iter().map(|(n, t)| (n.as_str(), t)),
            metadata,
        )?;
        Ok(())
    }

    /// [`VarMap::save`] in another precision: f16 or bf16 halve the file (a model to
    /// publish; a training checkpoint keeps f32 to resume exactly). [`VarMap::load`]
    /// converts back and says so in [`LoadReport::converted`].
    ///
    /// ```
    /// use tessera_nn::{Linear, VarBuilder, VarMap};
    /// use tessera_tensor::{Precision, Rng};
    /// let vars = VarMap::new();
    /// Linear::new(&VarBuilder::from_rng(&vars, Rng::seed(0)).pp("fc"), 64, 64, true)?;
    /// let dir = std::env::temp_dir().join("tessera-doc-save-as");
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let (full, half) = (dir.join("f32.safetensors"), dir.join("bf16.safetensors"));
    /// vars.save(&full, None)?;
    /// vars.save_as(&half, None, Precision::BF16)?;
    /// let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    /// assert!(size(&half) * 2 < size(&full) + 200); // half the values' bytes
    /// let report = vars.load(&half, true)?;
    /// assert_eq!(report.converted.len(), 2); // fc.weight and fc.bias, from BF16
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn save_as(
        &self,
        path: impl AsRef<Path>,
        metadata: Option<&HashMap<String, String>>,
        precision: tessera_tensor::Precision,
    ) -> Result<()> {
        let values = self.tensors();
        tessera_tensor::save_safetensors_as(
            path,
            values.iter().map(|(n, t)| (n.as_str(), t)),
            metadata,
            precision,
        )?;
        Ok(())
    }
}

/// Where a builder's values come from.
#[derive(Clone, Debug)]
enum Source {
    /// Drawn by each parameter's initialiser.
    Init(Arc<Mutex<Rng>>),
    /// Zeros of the right shapes, for a model whose values come from a checkpoint next:
    /// no random draws, so building a large model for loading is fast.
    Zeros,
}

/// Creates parameters and buffers at a path of a [`VarMap`].
///
/// Parameters are named and created once: a [`VarMap`] holds a model's parameters and buffers
/// under their PyTorch/timm names, and a [`VarBuilder`] creates each of them at its path
/// with its initialiser (in the spirit of candle's `VarBuilder`).
///
/// A layer never names itself: the builder's path does (`vb.pp("blocks").pp(3).pp("mlp")`
/// then `Linear::new(&vb.pp("fc1"), ..)` creates `blocks.3.mlp.fc1.weight` and `.bias`),
/// so the names of a checkpoint are the names of the code that built the model.
///
/// ```
/// use tessera_nn::{Init, Linear, Module, VarBuilder, VarMap, Var};
/// use tessera_tensor::{Rng, Tensor};
/// let vars = VarMap::new();
/// let vb = VarBuilder::from_rng(&vars, Rng::seed(0));
/// let fc = Linear::with_init(&vb.pp("mlp").pp("fc1"), 4, 3, Init::Const(0.5), Some(Init::Zeros))?;
/// let y = fc.forward(&Var::constant(Tensor::ones(&[1, 4])))?;
/// assert_eq!(y.value().to_vec(), vec![2.0, 2.0, 2.0]);
/// assert_eq!(vars.names(), vec!["mlp.fc1.weight", "mlp.fc1.bias"]);
/// assert_eq!(vars.num_parameters(), 15);
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct VarBuilder {
    vars: VarMap,
    path: String,
    source: Source,
    budget: Option<Arc<Budget>>,
}

/// The values a model built to load a checkpoint may still create
/// ([`VarBuilder::zeros_for`]): parameters and buffers, which the file must fill, and
/// tensors made from the configuration ([`VarBuilder::reserve`]).
#[derive(Debug)]
struct Budget {
    /// The checkpoint.
    path: std::path::PathBuf,
    /// What each kind started with: `[stored, made]`.
    total: [usize; 2],
    /// What is left of each.
    left: Mutex<[usize; 2]>,
}

/// The least a model built for a checkpoint may make from its configuration (a sinusoid
/// table), whatever the file's size: 2^20 values.
const MADE_ALLOWANCE: usize = 1 << 20;

impl VarBuilder {
    /// A builder at the root of `vars` whose initialisers draw from `rng`.
    pub fn from_rng(vars: &VarMap, rng: Rng) -> VarBuilder {
        VarBuilder {
            vars: vars.clone(),
            path: String::new(),
            source: Source::Init(Arc::new(Mutex::new(rng))),
            budget: None,
        }
    }

    /// A builder at the root of `vars` that creates zeros of the right shapes and draws
    /// nothing: for a model whose values are loaded next ([`VarMap::load`]).
    pub fn zeros(vars: &VarMap) -> VarBuilder {
        VarBuilder {
            vars: vars.clone(),
            path: String::new(),
            source: Source::Zeros,
            budget: None,
        }
    }

    /// A builder like [`VarBuilder::zeros`] for a model about to load `file`, whose
    /// configuration came from the file too: its parameters may hold no more values
    /// than the file does (a strict load could not fill more), and the tensors it makes
    /// from its configuration ([`VarBuilder::reserve`], such as a sinusoid table) no
    /// more than the file's values or 2^20, whichever is more. A configuration that
    /// asks for more, a corrupt or hostile one announcing a model of terabytes, is an
    /// [`Error::LargerThanFile`] before anything is allocated for it.
    ///
    /// ```
    /// use tessera_nn::{Error, Linear, VarBuilder, VarMap};
    /// use tessera_tensor::{save_safetensors, SafeTensorsFile, Tensor};
    /// let path = std::env::temp_dir().join(format!("tessera-doc-zeros-for-{}", std::process::id()));
    /// save_safetensors(&path, [("w", &Tensor::zeros(&[4, 4]))], None)?;
    /// let file = SafeTensorsFile::open(&path)?;
    /// let vb = VarBuilder::zeros_for(&VarMap::new(), &file);
    /// assert!(Linear::new(&vb.pp("small"), 3, 4, true).is_ok()); // 16 values of 16
    /// let more = Linear::new(&vb.pp("more"), 1, 1, false);
    /// assert!(matches!(more, Err(Error::LargerThanFile { .. })));
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn zeros_for(vars: &VarMap, file: &tessera_tensor::SafeTensorsFile) -> VarBuilder {
        let stored = file.shapes().iter().fold(0usize, |sum, (_, shape)| {
            let size = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            sum.saturating_add(size.unwrap_or(usize::MAX))
        });
        let total = [stored, stored.max(MADE_ALLOWANCE)];
        VarBuilder {
            budget: Some(Arc::new(Budget {
                path: file.path().to_path_buf(),
                total,
                left: Mutex::new(total),
            })),
            ..VarBuilder::zeros(vars)
        }
    }

    /// Counts a tensor `name` of `shape` that the model makes from its configuration,
    /// rather than through [`VarBuilder::param`] (a sinusoid table), against the budget
    /// of a [`VarBuilder::zeros_for`] builder; without a budget it only checks that the
    /// shape's size is a number.
    pub fn reserve(&self, name: &str, shape: &[usize]) -> Result<()> {
        self.charge(name, shape, 1)
    }

    /// Counts `shape` against pool `kind` of the budget (0: stored, 1: made).
    fn charge(&self, name: &str, shape: &[usize], kind: usize) -> Result<()> {
        let too_large = |budget: usize, path: std::path::PathBuf| Error::LargerThanFile {
            path,
            budget,
            name: self.name(name),
            shape: shape.to_vec(),
        };
        let size = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        match (&self.budget, size) {
            // Without a file to compare with, the size is checked against the machine's
            // memory when the tensor is made (`Error::TooLarge`).
            (None, _) => Ok(()),
            (Some(b), size) => {
                let mut left = match b.left.lock() {
                    Ok(l) => l,
                    Err(poisoned) => poisoned.into_inner(),
                };
                match size.filter(|&n| n <= left[kind]) {
                    Some(n) => {
                        left[kind] -= n;
                        Ok(())
                    }
                    None => Err(too_large(b.total[kind], b.path.clone())),
                }
            }
        }
    }

    /// Runs `build` with a builder that draws from `rng`, then leaves `rng` advanced by
    /// what was drawn, as if the draws had been made from it directly.
    pub fn with_rng<T>(
        vars: &VarMap,
        rng: &mut Rng,
        build: impl FnOnce(&VarBuilder) -> Result<T>,
    ) -> Result<T> {
        let shared = Arc::new(Mutex::new(rng.clone()));
        let vb = VarBuilder {
            vars: vars.clone(),
            path: String::new(),
            source: Source::Init(Arc::clone(&shared)),
            budget: None,
        };
        let out = build(&vb);
        *rng = match shared.lock() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        out
    }

    /// The builder one level down: `vb.pp("blocks").pp(3)` is at `blocks.3`.
    pub fn pp(&self, name: impl ToString) -> VarBuilder {
        VarBuilder {
            vars: self.vars.clone(),
            path: self.name(&name.to_string()),
            source: self.source.clone(),
            budget: self.budget.clone(),
        }
    }

    /// The full name of `name` at this builder's path.
    pub fn name(&self, name: &str) -> String {
        VarBuilder::join(&self.path, name)
    }

    /// The full name of `name` at `path` (`blocks.0` and `attn` give `blocks.0.attn`;
    /// an empty path gives `name`).
    ///
    /// ```
    /// use tessera_nn::VarBuilder;
    /// assert_eq!(VarBuilder::join("blocks.0", "attn"), "blocks.0.attn");
    /// assert_eq!(VarBuilder::join("", "head"), "head");
    /// ```
    pub fn join(path: &str, name: &str) -> String {
        if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        }
    }

    /// The path of this builder (empty at the root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The store this builder fills.
    pub fn vars(&self) -> &VarMap {
        &self.vars
    }

    /// Whether values are drawn (false when the builder makes zeros for a load).
    pub fn draws(&self) -> bool {
        matches!(self.source, Source::Init(_))
    }

    /// A tensor of `shape` as the source gives it: drawn by `init`, or zeros. A shape
    /// too large to allocate is an [`Error::TooLarge`], not an abort.
    pub fn tensor(&self, shape: &[usize], init: &Init) -> Result<Tensor> {
        // The size is checked before any memory is asked for: a size from a typo or a
        // corrupt checkpoint must be an error, not an abort (or, where the allocator
        // reserves address space without memory, a machine filling up).
        let numel = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let held: usize = self
            .vars
            .lock()
            .entries
            .iter()
            .map(|(_, s)| s.value().numel())
            .sum();
        let budget = MemoryBudget::current();
        let per_value = budget
            .as_ref()
            .map_or(std::mem::size_of::<f32>(), |b| b.bytes_per_value);
        let bytes = numel.and_then(|n| n.checked_mul(per_value));
        let total = bytes.and_then(|b| b.checked_add(held.checked_mul(per_value)?));
        let (memory, limit) = match budget {
            Some(b) => (Some(b.bytes), b.what),
            None => (crate::physical_memory(), "of memory this machine has"),
        };
        let fits = match (numel, total) {
            (Some(n), Some(t)) if t <= memory.unwrap_or(isize::MAX as usize) => {
                Vec::<f32>::new().try_reserve_exact(n).is_ok()
            }
            _ => false,
        };
        if !fits {
            return Err(Error::TooLarge {
                name: self.path.clone(),
                shape: shape.to_vec(),
                bytes,
                total,
                memory,
                limit,
            });
        }
        match &self.source {
            Source::Init(rng) => {
                let mut rng = match rng.lock() {
                    Ok(r) => r,
                    Err(poisoned) => poisoned.into_inner(),
                };
                init.tensor(shape, &mut rng)
            }
            Source::Zeros => Ok(Tensor::zeros(shape)),
        }
    }

    /// Creates the parameter `name` of `shape`, initialised by `init`, and registers it.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Parameter> {
        self.charge(name, shape, 0)?;
        let tensor = self.tensor(shape, &init).map_err(|e| match e {
            Error::TooLarge {
                shape,
                bytes,
                total,
                memory,
                limit,
                ..
            } => Error::TooLarge {
                name: self.name(name),
                shape,
                bytes,
                total,
                memory,
                limit,
            },
            e => e,
        })?;
        let p = Parameter::new(tensor);
        self.vars.add_parameter(self.name(name), p.clone())?;
        Ok(p)
    }

    /// Registers the buffer `name` with the value `value`.
    pub fn buffer(&self, name: &str, value: Tensor) -> Result<Buffer> {
        self.charge(name, value.shape(), 0)?;
        let b = Buffer::new(value);
        self.vars.add_buffer(self.name(name), b.clone())?;
        Ok(b)
    }
}
