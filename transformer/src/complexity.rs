//! Table 1 of the paper made measurable: one layer of each kind of sequence model,
//! built at a given length `n` and width `d`, with its cost counted and timed.
//!
//! | layer | complexity per layer | sequential operations | maximum path length |
//! |---|---|---|---|
//! | self-attention | O(n²·d) | O(1) | O(1) |
//! | recurrent | O(n·d²) | O(n) | O(n) |
//! | convolutional | O(k·n·d²) | O(1) | O(log_k(n)) |
//! | self-attention (restricted) | O(r·n·d) | O(1) | O(n/r) |
//!
//! Each layer here is the part that makes the row differ, single-headed and without the
//! `n·d²` projections all of them share: `softmax(X Xᵀ/√d) X` for self-attention;
//! `h_t = tanh(W h_{t-1} + U x_t)` step by step for the recurrent layer; a
//! convolution of kernel `k` over the sequence (`d` channels in and out, as one GEMM on
//! the unfolded input) for the convolutional one; and attention to the `r` positions
//! centred on each query for the restricted one.
//!
//! ```
//! use tessera_tensor::Rng;
//! use tessera_transformer::complexity::{Layer, LayerKind};
//!
//! # fn main() -> Result<(), tessera_transformer::Error> {
//! let kind = LayerKind::Convolutional { k: 3 };
//! let layer = Layer::new(kind, 64, &mut Rng::seed(0))?;
//! let x = tessera_tensor::Tensor::randn(&[100, 64], 0.0, 1.0, &mut Rng::seed(1));
//! assert_eq!(layer.forward(&x)?.shape(), &[100, 64]);
//! assert_eq!(kind.multiply_adds(100, 64), 3.0 * 100.0 * 64.0 * 64.0);
//! assert_eq!(kind.max_path_length(100), 99); // centred kernels reach one position per layer
//! # Ok(())
//! # }
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tessera_tensor::{parallel_for, Rng, Tensor};

use crate::{Error, Result};

/// The name of the layers in errors.
const OP: &str = "complexity layer";

/// The four rows of the paper's Table 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    /// Every position attends to every position.
    SelfAttention,
    /// An Elman layer run over the positions one after the other.
    Recurrent,
    /// A convolution of kernel width `k` over the sequence.
    Convolutional {
        /// Kernel width.
        k: usize,
    },
    /// Every position attends to the `r` positions centred on it.
    Restricted {
        /// Neighbourhood size.
        r: usize,
    },
}

impl LayerKind {
    /// The row's name, with its parameter.
    pub fn name(&self) -> String {
        match self {
            LayerKind::SelfAttention => "self-attention".into(),
            LayerKind::Recurrent => "recurrent".into(),
            LayerKind::Convolutional { k } => format!("convolutional (k={k})"),
            LayerKind::Restricted { r } => format!("restricted self-attention (r={r})"),
        }
    }

    /// The row of the paper's Table 1: complexity per layer, minimum sequential
    /// operations, maximum path length.
    fn table_1(&self) -> [&'static str; 3] {
        match self {
            LayerKind::SelfAttention => ["O(n²·d)", "O(1)", "O(1)"],
            LayerKind::Recurrent => ["O(n·d²)", "O(n)", "O(n)"],
            LayerKind::Convolutional { .. } => ["O(k·n·d²)", "O(1)", "O(log_k(n))"],
            LayerKind::Restricted { .. } => ["O(r·n·d)", "O(1)", "O(n/r)"],
        }
    }

    /// The paper's complexity per layer.
    pub fn complexity(&self) -> &'static str {
        self.table_1()[0]
    }

    /// The paper's minimum number of sequential operations.
    pub fn sequential(&self) -> &'static str {
        self.table_1()[1]
    }

    /// The paper's maximum path length between two positions.
    pub fn path(&self) -> &'static str {
        self.table_1()[2]
    }

    /// Multiply-adds of the layer as built here at length `n` and width `d`: `2n²d`
    /// for self-attention (scores and the weighted sum), `2nd²` for the recurrent layer
    /// (input and recurrent products), `k·n·d²` for the convolution and `2·r·n·d` for the
    /// restricted attention (`r` scores and `r` weighted rows per position, ignoring the
    /// clipped windows at the ends; computed in blocks of queries, it spends about
    /// twice that to run at GEMM speed).
    pub fn multiply_adds(&self, n: usize, d: usize) -> f64 {
        let (n, d) = (n as f64, d as f64);
        match *self {
            LayerKind::SelfAttention => 2.0 * n * n * d,
            LayerKind::Recurrent => 2.0 * n * d * d,
            LayerKind::Convolutional { k } => k as f64 * n * d * d,
            LayerKind::Restricted { r } => 2.0 * r as f64 * n * d,
        }
    }

    /// Operations that must run one after the other in this layer: `n` time steps for
    /// the recurrent layer, one for the others.
    pub fn sequential_operations(&self, n: usize) -> usize {
        match self {
            LayerKind::Recurrent => n,
            _ => 1,
        }
    }

    /// Layers a signal needs to travel between the two ends of a sequence of `n`
    /// positions (the recurrent layer: `n - 1` steps within one layer). Windows are
    /// centred, so a convolution reaches `⌊(k-1)/2⌋` positions per layer and needs
    /// `⌈(n-1)/⌊(k-1)/2⌋⌉` layers; the paper's `O(log_k(n))` is for dilated
    /// convolutions. `usize::MAX` when the window never reaches a neighbour (`k` or `r`
    /// of 1).
    pub fn max_path_length(&self, n: usize) -> usize {
        let span = n.saturating_sub(1);
        let layers = |w: usize| {
            let reach = (w / 2).min(w.saturating_sub(1) - w / 2);
            match (span, reach) {
                (0, _) => 0,
                (_, 0) => usize::MAX,
                _ => span.div_ceil(reach),
            }
        };
        match *self {
            LayerKind::SelfAttention => usize::from(n > 1),
            LayerKind::Recurrent => span,
            LayerKind::Convolutional { k } => layers(k),
            LayerKind::Restricted { r } => layers(r),
        }
    }
}

/// One layer of a [`LayerKind`] with random weights, at width `d`.
pub struct Layer {
    kind: LayerKind,
    d: usize,
    /// `U` and `W` (recurrent, `[d, d]` each) or the unfolded kernel (`[k·d, d]`).
    weights: Vec<Tensor>,
}

impl Layer {
    /// A layer of width `d` with weights drawn from `N(0, 1/fan_in)`.
    pub fn new(kind: LayerKind, d: usize, rng: &mut Rng) -> Result<Layer> {
        let bad = |name, value| Error::setting(OP, name, value, "at least 1");
        if d == 0 {
            return Err(bad("the width d", d));
        }
        let std = |fan_in: usize| (1.0 / fan_in as f32).sqrt();
        let weights = match kind {
            LayerKind::SelfAttention => vec![],
            LayerKind::Recurrent => vec![
                Tensor::randn(&[d, d], 0.0, std(d), rng),
                Tensor::randn(&[d, d], 0.0, std(d), rng),
            ],
            LayerKind::Convolutional { k } => {
                if k == 0 {
                    return Err(bad("the kernel width k", k));
                }
                vec![Tensor::randn(&[k * d, d], 0.0, std(k * d), rng)]
            }
            LayerKind::Restricted { r } => {
                if r == 0 {
                    return Err(bad("the neighbourhood r", r));
                }
                vec![]
            }
        };
        Ok(Layer { kind, d, weights })
    }

    /// The layer's kind.
    pub fn kind(&self) -> LayerKind {
        self.kind
    }

    /// Runs the layer on a sequence `x` of shape `[n, d]`; the output has the same shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        if d != self.d || n == 0 {
            let expected = format!("a sequence [n >= 1, {}]", self.d);
            return Err(Error::shape(OP, expected, x.shape()));
        }
        let x = x.contiguous();
        Ok(match self.kind {
            LayerKind::SelfAttention => {
                let scores = x.matmul(&x.t()?)?.mul_scalar(1.0 / (d as f32).sqrt());
                scores.softmax(1)?.matmul(&x)?
            }
            LayerKind::Recurrent => {
                let (u, w) = (&self.weights[0], &self.weights[1]);
                let ux = x.matmul(u)?;
                let mut h = Tensor::zeros(&[1, d]);
                let mut out = Vec::with_capacity(n * d);
                for t in 0..n {
                    h = h.matmul(w)?.add(&ux.narrow(0, t, 1)?)?.tanh();
                    out.extend_from_slice(h.as_slice().expect("a fresh tensor is contiguous"));
                }
                Tensor::from_vec(out, &[n, d])?
            }
            LayerKind::Convolutional { k } => {
                // Unfold: row t holds x[t - k/2 .. t - k/2 + k] (zeros outside), then
                // one GEMM with the [k·d, d] kernel.
                let xs = x.as_slice().expect("contiguous");
                let mut cols = vec![0.0f32; n * k * d];
                for t in 0..n {
                    for j in 0..k {
                        let s = t as isize + j as isize - (k / 2) as isize;
                        if s >= 0 && (s as usize) < n {
                            let s = s as usize;
                            cols[(t * k + j) * d..(t * k + j + 1) * d]
                                .copy_from_slice(&xs[s * d..(s + 1) * d]);
                        }
                    }
                }
                Tensor::from_vec(cols, &[n, k * d])?.matmul(&self.weights[0])?
            }
            LayerKind::Restricted { r } => restricted_attention(&x, r)?,
        })
    }

    /// The fastest of `repeats` forward passes on a random `[n, d]` sequence (after one
    /// warm-up pass).
    pub fn time(&self, n: usize, repeats: usize, rng: &mut Rng) -> Result<Duration> {
        let x = Tensor::randn(&[n, self.d], 0.0, 1.0, rng);
        self.forward(&x)?;
        let mut best = Duration::MAX;
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            std::hint::black_box(self.forward(&x)?);
            best = best.min(t.elapsed());
        }
        Ok(best)
    }
}

/// Attention of every position `i` to positions `i - r/2 ..= i - r/2 + r - 1` (clipped
/// to the sequence), with `x` as queries, keys and values. Queries go in blocks of
/// `b = max(r, 32)`: a block's scores against the `b + r - 1` keys its windows span are
/// one GEMM, the positions outside each query's window are masked, so the layer costs
/// about `2·(b + r)·n·d` multiply-adds at GEMM speed, linear in `n`.
fn restricted_attention(x: &Tensor, r: usize) -> Result<Tensor> {
    let (n, d) = x.dims2()?;
    let b = r.max(32);
    let blocks = n.div_ceil(b);
    let scale = 1.0 / (d as f32).sqrt();
    let parts: Vec<Mutex<Result<Vec<f32>>>> = (0..blocks).map(|_| Mutex::new(Ok(vec![]))).collect();
    parallel_for(blocks, |blk| {
        *parts[blk].lock().expect("no task panics") = attend_block(x, blk * b, b, r, scale);
    });
    let mut out = Vec::with_capacity(n * d);
    for part in parts {
        out.extend(part.into_inner().expect("no task panics")?);
    }
    Ok(Tensor::from_vec(out, &[n, d])?)
}

/// The rows `q0..q0 + b` of [`restricted_attention`].
fn attend_block(x: &Tensor, q0: usize, b: usize, r: usize, scale: f32) -> Result<Vec<f32>> {
    let n = x.dims2()?.0;
    let window = |i: usize| (i.saturating_sub(r / 2), (i + r - r / 2).min(n));
    let q1 = (q0 + b).min(n);
    let (k0, k1) = (window(q0).0, window(q1 - 1).1);
    let keys = x.narrow(0, k0, k1 - k0)?;
    let scores = x.narrow(0, q0, q1 - q0)?.matmul(&keys.t()?)?;
    let mut s = scores.to_vec();
    let w = k1 - k0;
    for (i, row) in (q0..q1).zip(s.chunks_mut(w)) {
        let (lo, hi) = window(i);
        let mut max = f32::NEG_INFINITY;
        for (j, v) in row.iter_mut().enumerate() {
            if (lo..hi).contains(&(k0 + j)) {
                *v *= scale;
                max = max.max(*v);
            } else {
                *v = f32::NEG_INFINITY;
            }
        }
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    let probs = Tensor::from_vec(s, &[q1 - q0, w])?;
    Ok(probs.matmul(&keys)?.to_vec())
}
