//! Linear, Embedding, LayerNorm and Dropout, with PyTorch's layouts and names.

use std::sync::{Arc, Mutex, MutexGuard};

use tessera_tensor::{IndexTensor, Rng, Tensor};

use crate::{Buffer, Error, Init, Module, Parameter, Result, Var, VarBuilder};

/// `y = x Wᵀ + b` (PyTorch's `nn.Linear`; weight `[out, in]`, parameters `weight`,
/// `bias`).
///
/// # Shapes
/// `[..., in] -> [..., out]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Parameter,
    /// `[out]`, when present.
    pub bias: Option<Parameter>,
}

impl Linear {
    /// PyTorch's initialisation: weight and bias uniform in `±1/√in`.
    ///
    /// ```
    /// use tessera_nn::{Linear, Module, Var, VarBuilder, VarMap};
    /// use tessera_tensor::{Rng, Tensor};
    /// let vars = VarMap::new();
    /// let fc = Linear::new(&VarBuilder::from_rng(&vars, Rng::seed(0)).pp("fc"), 4, 3, true)?;
    /// let y = fc.forward(&Var::constant(Tensor::zeros(&[2, 5, 4])))?;
    /// assert_eq!(y.shape(), &[2, 5, 3]);
    /// // A zero input gives the bias.
    /// assert_eq!(y.value().to_vec()[..3], fc.bias.as_ref().unwrap().value().to_vec()[..]);
    /// assert_eq!(vars.names(), vec!["fc.weight", "fc.bias"]);
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn new(vb: &VarBuilder, input: usize, output: usize, bias: bool) -> Result<Linear> {
        let weight = Init::KaimingUniform { a: 5f32.sqrt() };
        Linear::with_init(
            vb,
            input,
            output,
            weight,
            bias.then(|| Init::default_bias(input)),
        )
    }

    /// A layer whose weight is drawn by `weight` and whose bias (when `bias` is `Some`)
    /// by the given initialiser.
    pub fn with_init(
        vb: &VarBuilder,
        input: usize,
        output: usize,
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Linear> {
        Ok(Linear {
            weight: vb.param("weight", &[output, input], weight)?,
            bias: bias.map(|b| vb.param("bias", &[output], b)).transpose()?,
        })
    }
}

impl Module for Linear {
    fn forward(&self, x: &Var) -> Result<Var> {
        let w = self.weight.var();
        let in_features = w.shape()[1];
        if x.shape().last() != Some(&in_features) {
            return Err(Error::shape(
                "Linear",
                format!("input [..., {in_features}]"),
                x.shape(),
            ));
        }
        // [..., in] as [rows, in] · [in, out].
        let lead: Vec<usize> = x.shape()[..x.shape().len() - 1].to_vec();
        let rows: usize = lead.iter().product();
        let x = x.reshape(&[rows, in_features])?;
        let wt = w.transpose(0, 1)?;
        let y = match &self.bias {
            Some(b) => b.var().addmm(&x, &wt)?,
            None => x.matmul(&wt)?,
        };
        let mut shape = lead;
        shape.push(w.shape()[0]);
        Ok(y.reshape(&shape)?)
    }
}

/// A lookup table (PyTorch's `nn.Embedding`, parameter `weight [num, dim]`), optionally
/// with a padding index whose row starts at zero and receives no gradient.
///
/// # Shapes
/// ids `[...]` -> `[..., dim]`.
///
/// ```
/// use tessera_nn::{Embedding, VarMap};
/// use tessera_tensor::{IndexTensor, Rng};
/// let (emb, _) = VarMap::build(&mut Rng::seed(0), |vb| Embedding::new(vb, 10, 4, Some(0)))?;
/// let y = emb.forward_ids(&IndexTensor::new(vec![0, 3, 3], &[1, 3])?)?;
/// assert_eq!(y.shape(), &[1, 3, 4]);
/// let rows = y.value().to_vec();
/// assert_eq!(rows[..4], [0.0; 4]); // the padding row starts at zero
/// assert_eq!(rows[4..8], rows[8..12]); // the same id, the same row
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[num_embeddings, dim]`.
    pub weight: Parameter,
    /// Row that padding tokens map to.
    pub padding_idx: Option<usize>,
}

impl Embedding {
    /// PyTorch's initialisation: `N(0, 1)`, the padding row zero.
    pub fn new(
        vb: &VarBuilder,
        num: usize,
        dim: usize,
        padding_idx: Option<usize>,
    ) -> Result<Embedding> {
        if let Some(p) = padding_idx {
            if p >= num {
                return Err(Error::setting(
                    "Embedding",
                    "padding index",
                    p,
                    format!("below the {num} embeddings"),
                ));
            }
        }
        let weight = vb.param(
            "weight",
            &[num, dim],
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        )?;
        if let Some(p) = padding_idx {
            let mut w = weight.value().to_vec();
            w[p * dim..(p + 1) * dim].fill(0.0);
            weight.set(Tensor::from_vec(w, &[num, dim])?)?;
        }
        Ok(Embedding {
            weight,
            padding_idx,
        })
    }

    /// Looks up `ids`: `[...] -> [..., dim]`. Ids out of range are an error naming them.
    pub fn forward_ids(&self, ids: &IndexTensor) -> Result<Var> {
        let w = self.weight.var();
        let dim = w.shape()[1];
        let rows = w.index_select(0, ids.data())?; // [n, dim]
        let rows = match self.padding_idx {
            // Zero the padding positions' gradient (their value is the zero row).
            Some(p) => {
                let keep: Vec<f32> = ids.data().iter().map(|&i| (i != p) as u8 as f32).collect();
                let keep = Tensor::from_vec(keep, &[ids.numel(), 1])?;
                rows.mul(&Var::constant(keep))?
            }
            None => rows,
        };
        let mut shape = ids.shape().to_vec();
        shape.push(dim);
        Ok(rows.reshape(&shape)?)
    }
}

/// Layer normalisation over the last axis (PyTorch's `nn.LayerNorm(d)`, parameters
/// `weight`, `bias`): `(x - mean) / √(var + eps) · γ + β`, with the biased variance and
/// `eps` inside the root. `eps` is 1e-5 by default (PyTorch); timm's ViT uses 1e-6.
///
/// # Shapes
/// `[..., d] -> [..., d]`.
///
/// ```
/// use tessera_nn::{LayerNorm, Module, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// let (ln, _) = VarMap::build(&mut Rng::seed(0), |vb| LayerNorm::new(vb, 2, 0.0))?;
/// let y = ln.forward(&Var::constant(Tensor::from_vec(vec![1.0, 3.0], &[1, 2])?))?;
/// // mean 2, biased variance 1: (x - 2) / 1.
/// assert_eq!(y.value().to_vec(), vec![-1.0, 1.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// γ, `[d]`.
    pub weight: Parameter,
    /// β, `[d]`.
    pub bias: Parameter,
    /// Added to the variance.
    pub eps: f32,
}

impl LayerNorm {
    /// γ = 1, β = 0.
    pub fn new(vb: &VarBuilder, dim: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: vb.param("weight", &[dim], Init::Ones)?,
            bias: vb.param("bias", &[dim], Init::Zeros)?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Var) -> Result<Var> {
        let d = self.weight.value().numel();
        if d == 0 || x.shape().last() != Some(&d) {
            return Err(Error::shape(
                "LayerNorm",
                format!("input [..., {d}]"),
                x.shape(),
            ));
        }
        crate::kernels::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Inverted dropout (PyTorch's `nn.Dropout`): in training each element is zeroed with
/// probability `p` and the others scaled by `1/(1 - p)`; in evaluation
/// ([`Module::forward`]) it is the identity.
///
/// The masks are drawn from a generator that clones of the layer share: a model whose
/// layers hold clones of one `Dropout` draws from one stream, whose state it saves with
/// [`Dropout::rng`] and restores in a resumed run.
///
/// # Shapes
/// Any shape, unchanged.
///
/// ```
/// use tessera_nn::{Dropout, Module, Var};
/// use tessera_tensor::Tensor;
/// let drop = Dropout::new(0.5, 0);
/// let x = Var::constant(Tensor::ones(&[1000]));
/// assert_eq!(drop.forward(&x)?.value().to_vec(), vec![1.0; 1000]);
/// let kept = drop.forward_t(&x, true)?.value().to_vec();
/// assert!(kept.iter().all(|&v| v == 0.0 || v == 2.0));
/// let zeros = kept.iter().filter(|&&v| v == 0.0).count();
/// assert!((400..600).contains(&zeros), "{zeros}");
/// // A clone draws from the same generator: the next mask differs from the first.
/// let again = drop.clone().forward_t(&x, true)?.value().to_vec();
/// assert_ne!(kept, again);
/// # Ok::<(), tessera_nn::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f32,
    rng: Arc<Mutex<Rng>>,
}

impl Dropout {
    /// Dropout with probability `p`, masks drawn from `Rng::seed(seed)`.
    pub fn new(p: f32, seed: u64) -> Dropout {
        Dropout {
            p,
            rng: Arc::new(Mutex::new(Rng::seed(seed))),
        }
    }

    /// The generator the masks are drawn from (shared with the layer's clones), locked:
    /// to save its state, restore it, or draw other random choices from the same stream.
    pub fn rng(&self) -> MutexGuard<'_, Rng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A dropout of probability `p` that draws from this one's generator.
    pub fn with_p(&self, p: f32) -> Dropout {
        Dropout {
            p,
            rng: Arc::clone(&self.rng),
        }
    }
}

impl Module for Dropout {
    /// Evaluation: the identity.
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.clone())
    }

    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        if !train || self.p == 0.0 {
            return Ok(x.clone());
        }
        Ok(x.dropout(self.p, true, &mut self.rng())?)
    }
}

/// 2-D convolution (PyTorch's `nn.Conv2d`, weight `[out, in, kh, kw]`, bias `[out]`),
/// computed as im2col followed by one matrix product.
///
/// # Shapes
/// `[N, in, H, W] -> [N, out, oh, ow]`, `oh = (H + 2·padding - kernel) / stride + 1`.
///
/// ```
/// use tessera_nn::{Conv2d, Init, Module, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// // A 2x2 box filter of ones, stride 2: each output sums a 2x2 block.
/// let (conv, _) = VarMap::build(&mut Rng::seed(0), |vb| {
///     Conv2d::with_init(vb, [1, 1, 2, 2, 0], Init::Ones, None)
/// })?;
/// let x = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
/// let y = conv.forward(&Var::constant(x))?;
/// assert_eq!(y.shape(), &[1, 1, 2, 2]);
/// assert_eq!(y.value().to_vec(), vec![10.0, 18.0, 42.0, 50.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// `[out, in, kh, kw]`.
    pub weight: Parameter,
    /// `[out]`, when present.
    pub bias: Option<Parameter>,
    /// Stride, padding and dilation (the kernel size comes from the weight).
    pub window: tessera_tensor::Window2d,
}

impl Conv2d {
    /// PyTorch's initialisation: weight and bias uniform in `±1/√(in·kh·kw)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &VarBuilder,
        input: usize,
        output: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<Conv2d> {
        let fan_in = input * kernel * kernel;
        let weight = Init::KaimingUniform { a: 5f32.sqrt() };
        let bias = bias.then(|| Init::default_bias(fan_in));
        Conv2d::with_init(vb, [input, output, kernel, stride, padding], weight, bias)
    }

    /// A convolution of `[input, output, kernel, stride, padding]` whose weight is drawn
    /// by `weight` and whose bias (when `bias` is `Some`) by the given initialiser.
    pub fn with_init(
        vb: &VarBuilder,
        [input, output, kernel, stride, padding]: [usize; 5],
        weight: Init,
        bias: Option<Init>,
    ) -> Result<Conv2d> {
        Ok(Conv2d {
            weight: vb.param("weight", &[output, input, kernel, kernel], weight)?,
            bias: bias.map(|b| vb.param("bias", &[output], b)).transpose()?,
            window: tessera_tensor::Window2d::square(kernel)
                .with_stride(stride)
                .with_padding(padding),
        })
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        let w = self.weight.var();
        let (d, c, kh, kw) = w.value().dims4()?;
        let (n, h, wd) = nchw("Conv2d", x, c)?;
        let window = tessera_tensor::Window2d {
            kernel: (kh, kw),
            ..self.window
        };
        let (oh, ow) = window.output_size(h, wd)?;
        let cols = x.unfold2d(&window)?; // (N, C·kh·kw, L)
        let y = w.reshape(&[d, c * kh * kw])?.matmul(&cols)?; // (N, D, L)
        let y = match &self.bias {
            Some(b) => y.add(&b.var().reshape(&[d, 1])?)?,
            None => y,
        };
        Ok(y.reshape(&[n, d, oh, ow])?)
    }
}

/// 2-D max-pooling (PyTorch's `nn.MaxPool2d`).
///
/// # Shapes
/// `[N, C, H, W] -> [N, C, oh, ow]`.
///
/// ```
/// use tessera_nn::{MaxPool2d, Module, Var};
/// use tessera_tensor::Tensor;
/// let x = Tensor::arange(0.0, 16.0, 1.0)?.reshape(&[1, 1, 4, 4])?;
/// let y = MaxPool2d::new(2, 2).forward(&Var::constant(x))?;
/// assert_eq!(y.value().to_vec(), vec![5.0, 7.0, 13.0, 15.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct MaxPool2d {
    /// Kernel, stride, padding, dilation.
    pub window: tessera_tensor::Window2d,
}

impl MaxPool2d {
    /// A `kernel x kernel` pool with the given stride (PyTorch's default stride is the
    /// kernel size).
    pub fn new(kernel: usize, stride: usize) -> MaxPool2d {
        MaxPool2d {
            window: tessera_tensor::Window2d::square(kernel).with_stride(stride),
        }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(x.max_pool2d(&self.window)?)
    }
}

/// Batch normalisation over `[N, C, H, W]` (PyTorch's `nn.BatchNorm2d`; parameters
/// `weight`, `bias`; buffers `running_mean`, `running_var`, `num_batches_tracked`).
///
/// Training normalises with the batch's mean and biased variance over `(N, H, W)` and
/// moves the running statistics by `momentum` (the running variance takes the unbiased
/// batch variance); evaluation normalises with the running statistics.
///
/// # Shapes
/// `[N, C, H, W] -> [N, C, H, W]`.
///
/// ```
/// use tessera_nn::{BatchNorm2d, Module, Var, VarMap};
/// use tessera_tensor::{Rng, Tensor};
/// let (bn, _) = VarMap::build(&mut Rng::seed(0), |vb| BatchNorm2d::new(vb, 1))?;
/// let x = Var::constant(Tensor::from_vec(vec![1.0, 3.0], &[2, 1, 1, 1])?);
/// let y = bn.forward_t(&x, true)?; // batch mean 2, biased variance 1
/// assert!((y.value().to_vec()[0] + 1.0).abs() < 1e-4);
/// // The running mean moved by momentum 0.1 towards 2.
/// assert!((bn.running_mean.value().to_vec()[0] - 0.2).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    /// γ, `[C]`.
    pub weight: Parameter,
    /// β, `[C]`.
    pub bias: Parameter,
    /// `[C]`.
    pub running_mean: Buffer,
    /// `[C]`.
    pub running_var: Buffer,
    /// Number of training batches seen.
    pub num_batches_tracked: Buffer,
    /// Added to the variance.
    pub eps: f32,
    /// Weight of the new batch in the running statistics.
    pub momentum: f32,
}

impl BatchNorm2d {
    /// PyTorch's defaults: γ = 1, β = 0, running mean 0 and variance 1, eps 1e-5,
    /// momentum 0.1.
    pub fn new(vb: &VarBuilder, channels: usize) -> Result<BatchNorm2d> {
        Ok(BatchNorm2d {
            weight: vb.param("weight", &[channels], Init::Ones)?,
            bias: vb.param("bias", &[channels], Init::Zeros)?,
            running_mean: vb.buffer("running_mean", Tensor::zeros(&[channels]))?,
            running_var: vb.buffer("running_var", Tensor::ones(&[channels]))?,
            num_batches_tracked: vb.buffer("num_batches_tracked", Tensor::scalar(0.0))?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }
}

impl Module for BatchNorm2d {
    /// Evaluation: normalised by the running statistics.
    fn forward(&self, x: &Var) -> Result<Var> {
        self.forward_t(x, false)
    }

    fn forward_t(&self, x: &Var, train: bool) -> Result<Var> {
        let c = self.weight.value().numel();
        let (n, h, w) = nchw("BatchNorm2d", x, c)?;
        let per_channel = |t: Tensor| t.reshape(&[1, c, 1, 1]);
        let (mean, var) = if train {
            let count = n * h * w;
            if count < 2 {
                return Err(Error::shape(
                    "BatchNorm2d (training)",
                    "more than one value per channel",
                    x.shape(),
                ));
            }
            let mean = x.mean(&[0, 2, 3], true)?; // (1, C, 1, 1)
            let var = x.sub(&mean)?.square().mean(&[0, 2, 3], true)?;
            let m = self.momentum;
            let unbiased = var.value().mul_scalar(count as f32 / (count - 1) as f32);
            let rm = self
                .running_mean
                .value()
                .mul_scalar(1.0 - m)
                .add(&mean.value().reshape(&[c])?.mul_scalar(m))?;
            let rv = self
                .running_var
                .value()
                .mul_scalar(1.0 - m)
                .add(&unbiased.reshape(&[c])?.mul_scalar(m))?;
            self.running_mean.set(rm);
            self.running_var.set(rv);
            self.num_batches_tracked
                .set(self.num_batches_tracked.value().add_scalar(1.0));
            (mean, var)
        } else {
            (
                Var::constant(per_channel(self.running_mean.value())?),
                Var::constant(per_channel(self.running_var.value())?),
            )
        };
        let norm = x.sub(&mean)?.div(&var.add_scalar(self.eps).sqrt())?;
        let gamma = self.weight.var().reshape(&[1, c, 1, 1])?;
        let beta = self.bias.var().reshape(&[1, c, 1, 1])?;
        Ok(norm.mul(&gamma)?.add(&beta)?)
    }
}

/// An element-wise activation as a layer.
///
/// # Shapes
/// Any shape, unchanged.
///
/// ```
/// use tessera_nn::{Activation, Module, Var};
/// use tessera_tensor::Tensor;
/// let x = Var::constant(Tensor::from_vec(vec![-1.0, 2.0], &[2])?);
/// assert_eq!(Activation::Relu.forward(&x)?.value().to_vec(), vec![0.0, 2.0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// Exact GELU `x Φ(x)`.
    Gelu,
    /// GELU's tanh approximation.
    GeluTanh,
    /// Hyperbolic tangent.
    Tanh,
    /// Logistic sigmoid.
    Sigmoid,
}

impl Module for Activation {
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu(),
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
        })
    }
}

/// The batch size, height and width of an `[N, C, H, W]` input with `c` channels.
fn nchw(op: &'static str, x: &Var, c: usize) -> Result<(usize, usize, usize)> {
    let (n, cx, h, w) = x
        .value()
        .dims4()
        .map_err(|_| Error::shape(op, format!("input [N, {c}, H, W]"), x.shape()))?;
    if cx != c {
        return Err(Error::Channels {
            op,
            expected: c,
            got: cx,
            shape: x.shape().to_vec(),
        });
    }
    Ok((n, h, w))
}
