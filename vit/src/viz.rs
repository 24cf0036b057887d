//! What the paper's figures 7 and 6 show, computed from a model: the similarity of the
//! position embeddings, the principal components of the patch-embedding filters, the
//! mean attention distance of every head, and attention rollout; and two attributions
//! that follow the gradient back to the pixels: gradient saliency (Simonyan et al.,
//! 2014) and integrated gradients (Sundararajan et al., 2017).
//!
//! Each function returns numbers or an image tensor `[C, H, W]` in `[0, 1]`; writing
//! them as PNG is the caller's (for example `tessera_data::save_png`), or, with the
//! feature `image`, [`save_figures`] writes all of them as framed pictures.

use tessera_autograd::{no_grad, Var};
pub use tessera_data::viridis;
use tessera_data::{resize, Filter};
use tessera_tensor::Tensor;

use crate::{Error, Result, VisionTransformer};

/// Cosine similarity of every patch's position embedding with every other's:
/// `[g, g, g, g]` where `[i, j, k, l]` is the similarity of patch `(i, j)` with patch
/// `(k, l)` (the paper's figure 7, centre). The class token's embedding is left out.
pub fn position_similarity(model: &VisionTransformer) -> Result<Tensor> {
    let c = model.config();
    let g = c.grid();
    let n = g * g;
    let d = c.embed_dim;
    let pos = model.pos_embed().value().to_vec();
    let skip = usize::from(c.class_token());
    let rows: Vec<&[f32]> = (0..n)
        .map(|p| &pos[(skip + p) * d..(skip + p + 1) * d])
        .collect();
    let norms: Vec<f32> = rows
        .iter()
        .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12))
        .collect();
    let mut out = vec![0.0f32; n * n];
    for a in 0..n {
        for b in 0..n {
            let dot: f32 = rows[a].iter().zip(rows[b]).map(|(x, y)| x * y).sum();
            out[a * n + b] = dot / (norms[a] * norms[b]);
        }
    }
    Ok(Tensor::from_vec(out, &[g, g, g, g])?)
}

/// The similarity grid of [`position_similarity`] as one picture: a `g × g` grid of
/// tiles (tile `(i, j)` shows patch `(i, j)`'s similarity with every patch), each cell
/// `scale` pixels, tiles separated by one white pixel, values from -1 to 1 in the
/// viridis colour map.
pub fn position_similarity_image(model: &VisionTransformer, scale: usize) -> Result<Tensor> {
    let sim = position_similarity(model)?;
    let g = sim.shape()[0];
    let s = scale.max(1);
    let tile = g * s;
    let size = g * tile + (g - 1);
    let v = sim.to_vec();
    let mut img = vec![1.0f32; 3 * size * size];
    for i in 0..g {
        for j in 0..g {
            let (y0, x0) = (i * (tile + 1), j * (tile + 1));
            for k in 0..g {
                for l in 0..g {
                    let value = v[((i * g + j) * g + k) * g + l];
                    let rgb = viridis((value + 1.0) / 2.0);
                    for dy in 0..s {
                        for dx in 0..s {
                            let (y, x) = (y0 + k * s + dy, x0 + l * s + dx);
                            for (ch, &c) in rgb.iter().enumerate() {
                                img[(ch * size + y) * size + x] = c;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(img, &[3, size, size])?)
}

/// Eigenvalues (descending) and eigenvectors (columns of the returned row-major
/// `n × n` matrix) of a symmetric matrix, by cyclic Jacobi rotations.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let total: f64 = a.iter().map(|x| x * x).sum();
        if off <= 1e-22 * total.max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                let t = sign / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (col, &i) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + col] = v[k * n + i];
        }
    }
    (values, vectors)
}

/// The first `k` principal components of the patch-embedding filters (the paper's
/// figure 7, left): the `D` rows of the projection `[D, C·P·P]` are centred, and the
/// top eigenvectors of their covariance are returned as `[k, C, P, P]`, with the
/// fraction of the variance each explains. (For a hybrid model the "filters" act on
/// the feature map's channels, not on pixels.)
pub fn filter_components(model: &VisionTransformer, k: usize) -> Result<(Tensor, Vec<f32>)> {
    let w = model.patch_weight();
    let &[d, c, p, q] = w.shape() else {
        return Err(Error::shape(
            "filter_components",
            "patch weights [D, C, P, P]",
            w.shape(),
        ));
    };
    let n = c * p * q;
    let x: Vec<f64> = w.to_vec().iter().map(|&v| v as f64).collect();
    let mut mean = vec![0.0f64; n];
    for r in 0..d {
        for j in 0..n {
            mean[j] += x[r * n + j] / d as f64;
        }
    }
    let mut cov = vec![0.0f64; n * n];
    for r in 0..d {
        let row: Vec<f64> = (0..n).map(|j| x[r * n + j] - mean[j]).collect();
        for i in 0..n {
            for j in 0..n {
                cov[i * n + j] += row[i] * row[j] / d as f64;
            }
        }
    }
    let (values, vectors) = symmetric_eigen(cov, n);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum::<f64>().max(1e-300);
    let k = k.min(n);
    let mut out = Vec::with_capacity(k * n);
    for col in 0..k {
        out.extend((0..n).map(|i| vectors[i * n + col] as f32));
    }
    let explained = values[..k]
        .iter()
        .map(|v| (v.max(0.0) / total) as f32)
        .collect();
    Ok((Tensor::from_vec(out, &[k, c, p, q])?, explained))
}

/// The components of [`filter_components`] as one picture: a row-major grid of
/// `columns` tiles, each component scaled to `[0, 1]` on its own and shown as RGB (or
/// grey for one channel), each pixel `scale × scale`.
pub fn filter_components_image(
    model: &VisionTransformer,
    k: usize,
    columns: usize,
    scale: usize,
) -> Result<Tensor> {
    let (comp, _) = filter_components(model, k)?;
    let &[k, c, p, q] = comp.shape() else {
        unreachable!("filter_components returns [k, C, P, P]")
    };
    let cols = columns.clamp(1, k.max(1));
    let rows = k.div_ceil(cols);
    let s = scale.max(1);
    let (th, tw) = (p * s, q * s);
    let (h, w) = (rows * (th + 1) - 1, cols * (tw + 1) - 1);
    let out_c = if c == 3 { 3 } else { 1 };
    let mut img = vec![1.0f32; out_c * h * w];
    let v = comp.to_vec();
    for t in 0..k {
        let tile = &v[t * c * p * q..(t + 1) * c * p * q];
        let (lo, hi) = tile
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let range = (hi - lo).max(1e-12);
        let (y0, x0) = ((t / cols) * (th + 1), (t % cols) * (tw + 1));
        for ch in 0..out_c {
            for i in 0..p {
                for j in 0..q {
                    // One channel shown: the mean over the input channels.
                    let value = if out_c == 3 {
                        tile[(ch * p + i) * q + j]
                    } else {
                        (0..c).map(|cc| tile[(cc * p + i) * q + j]).sum::<f32>() / c as f32
                    };
                    let value = if out_c == 3 {
                        (value - lo) / range
                    } else {
                        let m = tile
                            .iter()
                            .map(|x| x.abs())
                            .fold(0.0f32, f32::max)
                            .max(1e-12);
                        0.5 + 0.5 * value / m
                    };
                    for dy in 0..s {
                        for dx in 0..s {
                            img[(ch * h + y0 + i * s + dy) * w + x0 + j * s + dx] = value;
                        }
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(img, &[out_c, h, w])?)
}

/// The mean attention distance of every head, `[depth][heads]`, in pixels (the paper's
/// figure 7, right): for each head, the distance between a query patch and each key
/// patch, weighted by the attention between them and averaged over the query patches
/// and the images. The class token is left out on both sides and the weights over the
/// patch keys are renormalised to sum to one.
pub fn mean_attention_distance(
    model: &VisionTransformer,
    images: &Tensor,
) -> Result<Vec<Vec<f32>>> {
    let c = model.config();
    let g = c.grid();
    let n = g * g;
    let skip = usize::from(c.class_token());
    let pix = c.pixels_per_patch() as f32;
    let dist: Vec<f32> = (0..n * n)
        .map(|i| {
            let (a, b) = (i / n, i % n);
            let (ya, xa) = ((a / g) as f32, (a % g) as f32);
            let (yb, xb) = ((b / g) as f32, (b % g) as f32);
            pix * ((ya - yb).powi(2) + (xa - xb).powi(2)).sqrt()
        })
        .collect();
    let (_, probs) = model.forward_with_attention(images)?;
    let mut out = Vec::with_capacity(probs.len());
    for a in &probs {
        let &[b, h, t, _] = a.shape() else {
            unreachable!("attention probabilities are [B, H, T, T]")
        };
        let v = a.to_vec();
        let mut heads = vec![0.0f32; h];
        for (head, acc) in heads.iter_mut().enumerate() {
            let mut sum = 0.0f64;
            for img in 0..b {
                let base = (img * h + head) * t * t;
                for q in 0..n {
                    let row = &v[base + (skip + q) * t + skip..base + (skip + q) * t + t];
                    let mass: f32 = row.iter().sum::<f32>().max(1e-12);
                    let d: f32 = row
                        .iter()
                        .zip(&dist[q * n..(q + 1) * n])
                        .map(|(w, d)| w * d)
                        .sum();
                    sum += (d / mass) as f64;
                }
            }
            *acc = (sum / (b * n) as f64) as f32;
        }
        out.push(heads);
    }
    Ok(out)
}

/// Attention rollout (Abnar and Zuidema, 2020; the paper's figure 6) for one image
/// `[C, H, W]`: in every block the heads' attention is averaged, the identity added for
/// the residual (`0.5·A + 0.5·I`) and the rows renormalised; the product over the
/// blocks is read at the class token's row (or, with mean pooling, averaged over the
/// patch rows) and returned as a `[g, g]` map scaled to a maximum of 1.
pub fn attention_rollout(model: &VisionTransformer, image: &Tensor) -> Result<Tensor> {
    let shape = image.shape().to_vec();
    if shape.len() != 3 {
        return Err(Error::shape(
            "attention_rollout",
            "one image [C, H, W]",
            &shape,
        ));
    }
    let c = model.config();
    let g = c.grid();
    let skip = usize::from(c.class_token());
    let (_, probs) = model.forward_with_attention(&image.unsqueeze(0)?)?;
    let t = c.num_tokens();
    let mut rollout: Vec<f64> = (0..t * t)
        .map(|i| if i / t == i % t { 1.0 } else { 0.0 })
        .collect();
    for a in &probs {
        let h = a.shape()[1];
        let v = a.to_vec();
        let mut m = vec![0.0f64; t * t];
        for head in 0..h {
            for (i, x) in m.iter_mut().enumerate() {
                *x += v[head * t * t + i] as f64 / h as f64;
            }
        }
        for i in 0..t {
            m[i * t + i] += 1.0;
            let s: f64 = m[i * t..(i + 1) * t].iter().sum();
            for x in &mut m[i * t..(i + 1) * t] {
                *x /= s;
            }
        }
        // rollout ← m · rollout (later blocks on the left).
        let mut next = vec![0.0f64; t * t];
        for i in 0..t {
            for k in 0..t {
                let mik = m[i * t + k];
                for j in 0..t {
                    next[i * t + j] += mik * rollout[k * t + j];
                }
            }
        }
        rollout = next;
    }
    let mut map = vec![0.0f64; g * g];
    if skip == 1 {
        map.copy_from_slice(&rollout[1..t]);
    } else {
        for i in 0..t {
            for (j, x) in map.iter_mut().enumerate() {
                *x += rollout[i * t + j] / t as f64;
            }
        }
    }
    let max = map.iter().copied().fold(0.0f64, f64::max).max(1e-300);
    Ok(Tensor::from_vec(
        map.iter().map(|&x| (x / max) as f32).collect(),
        &[g, g],
    )?)
}

/// The picture of a rollout `map` `[g, g]` (from [`attention_rollout`]) over the
/// model input `image` `[C, S, S]` (normalised with [`NORMALIZE`](crate::NORMALIZE)):
/// the image, scaled up to about 224 pixels, beside the same image weighted by the map
/// resized to it (bilinear). Grey images become RGB; the result is `[3, s, 2s]`.
pub fn rollout_image(image: &Tensor, map: &Tensor) -> Result<Tensor> {
    let img = shown_image("rollout_image", image)?;
    let size = img.shape()[1];
    let heat = resize(&map.unsqueeze(0)?, size, size, Filter::Bilinear, false)?;
    let masked = img.mul(&heat)?;
    Ok(Tensor::concat(&[&img, &masked], 2)?)
}

/// One image `[C, H, W]` checked against the model's input.
fn one_image(op: &'static str, model: &VisionTransformer, image: &Tensor) -> Result<()> {
    let c = model.config();
    let want = [c.in_chans, c.img_size, c.img_size];
    if image.shape() != want {
        let expected = format!("one image {want:?}");
        return Err(Error::shape(op, &expected, image.shape()));
    }
    Ok(())
}

/// The class an attribution explains: `class`, checked against the head, or the
/// largest of the image's `logits` (`[1, classes]`, computed only when needed).
fn explained_class(
    op: &'static str,
    model: &VisionTransformer,
    class: Option<usize>,
    logits: impl FnOnce() -> Result<Tensor>,
) -> Result<usize> {
    let classes = model.config().num_classes;
    if classes == 0 {
        return Err(Error::setting(op, "num_classes", 0, "a model with a head"));
    }
    match class {
        Some(k) if k >= classes => Err(Error::setting(
            op,
            "class",
            k,
            format!("below the {classes} classes"),
        )),
        Some(k) => Ok(k),
        None => Ok(logits()?.argmax(-1, false)?.data()[0]),
    }
}

/// `∂ logit_class / ∂ images` for a batch `[B, C, H, W]`, with the logits and the class
/// ([`explained_class`] of the first image's logits): one forward and one backward pass
/// for the whole batch (each image's logit depends on that image alone).
fn input_gradients(
    op: &'static str,
    model: &VisionTransformer,
    images: &Tensor,
    class: Option<usize>,
) -> Result<(Tensor, Vec<f32>, usize)> {
    let x = Var::parameter(images.clone());
    let logits = model.forward_var(&x, false)?; // [B, classes]
    let class = explained_class(op, model, class, || Ok(logits.value().narrow(0, 0, 1)?))?;
    let picked = logits.narrow(1, class, 1)?; // [B, 1]
    let values = picked.value().to_vec();
    picked.sum_all().backward()?;
    let grad = x.grad().unwrap_or_else(|| images.zeros_like());
    Ok((grad, values, class))
}

/// Gradient saliency (Simonyan, Vedaldi and Zisserman, 2014, "Deep Inside
/// Convolutional Networks"): for one image `[C, H, W]`, the largest absolute value over
/// the channels of `∂ logit_class / ∂ pixel`, `[H, W]`, scaled to a maximum of 1.
/// `class` is the model's prediction unless given. Returns the map and the class.
///
/// ```
/// use tessera_tensor::{Rng, Tensor};
/// use tessera_vit::{viz, VisionTransformer, VitConfig};
/// let config = VitConfig { img_size: 8, patch_size: 4, in_chans: 1, embed_dim: 8, depth: 2,
///     num_heads: 2, mlp_ratio: 2.0, num_classes: 3, ..VitConfig::default() };
/// let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
/// let c = model.config();
/// let image = Tensor::randn(&[c.in_chans, c.img_size, c.img_size], 0.0, 1.0, &mut Rng::seed(1));
/// let (map, class) = viz::gradient_saliency(&model, &image, None)?;
/// assert_eq!(map.shape(), &[c.img_size, c.img_size]);
/// assert!(class < c.num_classes);
/// assert_eq!(map.to_vec().iter().cloned().fold(0.0, f32::max), 1.0);
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn gradient_saliency(
    model: &VisionTransformer,
    image: &Tensor,
    class: Option<usize>,
) -> Result<(Tensor, usize)> {
    const OP: &str = "gradient_saliency";
    one_image(OP, model, image)?;
    let (grad, _, class) = input_gradients(OP, model, &image.unsqueeze(0)?, class)?;
    let map = grad.squeeze(0)?.abs().max(&[0], false)?; // [H, W]
    Ok((scaled_to_max(&map)?, class))
}

/// `map / max(map)` (unchanged when the maximum is not positive).
fn scaled_to_max(map: &Tensor) -> Result<Tensor> {
    let max = map.to_vec().into_iter().fold(0.0f32, f32::max);
    Ok(if max > 0.0 {
        map.mul_scalar(1.0 / max)
    } else {
        map.clone()
    })
}

/// What [`integrated_gradients`] returns.
#[derive(Clone, Debug)]
pub struct IntegratedGradients {
    /// Per pixel and channel, `(x - x') · mean_k ∂F(x' + (k/m)(x - x'))/∂x`,
    /// `[C, H, W]`.
    pub attributions: Tensor,
    /// The class explained.
    pub class: usize,
    /// `F(x)`, the image's logit for the class.
    pub logit: f32,
    /// `F(x')`, the baseline's.
    pub baseline_logit: f32,
}

impl IntegratedGradients {
    /// How far the attributions are from the completeness axiom (they sum to
    /// `F(x) - F(x')`), as a fraction of `|F(x) - F(x')|`: the error of the Riemann sum,
    /// which more steps reduce (Sundararajan et al. suggest checking it is within 5%).
    pub fn completeness_gap(&self) -> f32 {
        let total: f64 = self.attributions.to_vec().iter().map(|&a| a as f64).sum();
        let diff = (self.logit - self.baseline_logit) as f64;
        ((total - diff).abs() / diff.abs().max(1e-12)) as f32
    }

    /// The attributions as a map `[H, W]`: the absolute values summed over the channels,
    /// scaled to a maximum of 1.
    pub fn map(&self) -> Result<Tensor> {
        scaled_to_max(&self.attributions.abs().sum(&[0], false)?)
    }
}

/// Integrated gradients (Sundararajan, Taly and Yan, 2017, "Axiomatic Attribution for
/// Deep Networks") of one image `[C, H, W]` against `baseline` (by default the black
/// image, `-1` after the input normalisation): the gradients of the class logit at
/// `steps` points on the straight path from the baseline to the image (the right
/// Riemann sum, points `k/m`, `k = 1..m`), averaged and multiplied by `x - x'`. The
/// points run through the model in batches of 16.
///
/// ```
/// use tessera_tensor::{Rng, Tensor};
/// use tessera_vit::{viz, VisionTransformer, VitConfig};
/// let config = VitConfig { img_size: 8, patch_size: 4, in_chans: 1, embed_dim: 8, depth: 2,
///     num_heads: 2, mlp_ratio: 2.0, num_classes: 3, ..VitConfig::default() };
/// let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
/// let c = model.config();
/// let image = Tensor::randn(&[c.in_chans, c.img_size, c.img_size], 0.0, 1.0, &mut Rng::seed(1));
/// let ig = viz::integrated_gradients(&model, &image, None, None, 64)?;
/// assert_eq!(ig.attributions.shape(), image.shape());
/// // Completeness: the attributions add up to F(x) - F(baseline).
/// assert!(ig.completeness_gap() < 0.05, "{}", ig.completeness_gap());
/// # Ok::<(), tessera_vit::Error>(())
/// ```
pub fn integrated_gradients(
    model: &VisionTransformer,
    image: &Tensor,
    baseline: Option<&Tensor>,
    class: Option<usize>,
    steps: usize,
) -> Result<IntegratedGradients> {
    const OP: &str = "integrated_gradients";
    one_image(OP, model, image)?;
    if steps == 0 {
        return Err(Error::setting(OP, "steps", 0, "at least 1"));
    }
    let black;
    let baseline = match baseline {
        Some(b) => {
            if b.shape() != image.shape() {
                let expected = format!("a baseline of the image's shape {:?}", image.shape());
                return Err(Error::shape(OP, &expected, b.shape()));
            }
            b
        }
        None => {
            black = Tensor::full(image.shape(), -1.0);
            &black
        }
    };
    let class = explained_class(OP, model, class, || {
        Ok(no_grad(|| model.forward(&image.unsqueeze(0)?, false))?
            .value()
            .clone())
    })?;
    let delta = image.sub(baseline)?;
    let mut sum = image.zeros_like();
    let mut logit = 0.0;
    const CHUNK: usize = 16;
    for start in (1..=steps).step_by(CHUNK) {
        let ks: Vec<usize> = (start..=(start + CHUNK - 1).min(steps)).collect();
        let points = ks
            .iter()
            .map(|&k| baseline.add(&delta.mul_scalar(k as f32 / steps as f32)))
            .collect::<tessera_tensor::Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = points.iter().collect();
        let points = Tensor::stack(&refs, 0)?;
        let (grads, values, _) = input_gradients(OP, model, &points, Some(class))?;
        sum = sum.add(&grads.sum(&[0], false)?)?;
        if ks.last() == Some(&steps) {
            logit = *values.last().unwrap_or(&0.0);
        }
    }
    let baseline_logit = no_grad(|| model.forward(&baseline.unsqueeze(0)?, false))?
        .value()
        .to_vec()[class];
    Ok(IntegratedGradients {
        attributions: delta.mul(&sum)?.mul_scalar(1.0 / steps as f32),
        class,
        logit,
        baseline_logit,
    })
}

/// The picture of an attribution `map` `[h, w]` in `[0, 1]` (from
/// [`gradient_saliency`] or [`IntegratedGradients::map`]) over the model input `image`
/// `[C, S, S]`: the image, scaled up to about 224 pixels, beside the map in the viridis
/// colours at the same size. The result is `[3, s, 2s]`.
pub fn attribution_image(image: &Tensor, map: &Tensor) -> Result<Tensor> {
    let left = shown_image("attribution_image", image)?;
    let size = left.shape()[1];
    let &[h, w] = map.shape() else {
        return Err(Error::shape(
            "attribution_image",
            "a map [h, w]",
            map.shape(),
        ));
    };
    let mut rgb = vec![0.0f32; 3 * h * w];
    for (i, &v) in map.to_vec().iter().enumerate() {
        let [r, g, b] = viridis(v.clamp(0.0, 1.0));
        rgb[i] = r;
        rgb[h * w + i] = g;
        rgb[2 * h * w + i] = b;
    }
    let colours = Tensor::from_vec(rgb, &[3, h, w])?;
    let right = resize(&colours, size, size, Filter::Nearest, false)?;
    Ok(Tensor::concat(&[&left, &right], 2)?)
}

/// The model input `image` `[1 or 3, S, S]` as RGB in `[0, 1]`, scaled up to about 224
/// pixels (nearest neighbour).
fn shown_image(op: &'static str, image: &Tensor) -> Result<Tensor> {
    let shape = image.shape().to_vec();
    if shape.len() != 3 || (shape[0] != 1 && shape[0] != 3) || shape[1] == 0 {
        return Err(Error::shape(op, "an image [1 or 3, S, S]", &shape));
    }
    let size = shape[1] * (224 / shape[1]).max(1);
    let img = image
        .mul_scalar(crate::NORMALIZE)
        .add_scalar(crate::NORMALIZE);
    let img = if shape[0] == 1 {
        Tensor::concat(&[&img, &img, &img], 0)?
    } else {
        img
    };
    Ok(resize(&img, size, size, Filter::Nearest, false)?)
}

/// Every picture of this module for `model`, framed with a title, a note and, where the
/// colours carry a scale, a colour bar, as PNG files in `dir` (made if absent):
/// `position_similarity.png`, `filter_components.png`, `attention_distance.png` (over
/// the prepared `images` `[N, C, H, W]`), `attention_rollout.png`,
/// `gradient_saliency.png` and `integrated_gradients.png` (of `image` `[C, H, W]`, for
/// `class` or the predicted one, with `ig_steps` steps from a black image). Returns the
/// files written, in that order.
///
/// ```
/// use tessera_tensor::{Rng, Tensor};
/// use tessera_vit::{viz, VisionTransformer, VitConfig};
/// let config = VitConfig { img_size: 8, patch_size: 4, embed_dim: 8, depth: 1, num_heads: 2,
///                          num_classes: 3, ..VitConfig::default() };
/// let model = VisionTransformer::new(config, &mut Rng::seed(0))?;
/// let images = Tensor::rand(&[2, 3, 8, 8], 0.0, 1.0, &mut Rng::seed(1));
/// let image = images.narrow(0, 0, 1)?.squeeze(0)?;
/// let dir = std::env::temp_dir().join("tessera-vit-figures-doc");
/// let written = viz::save_figures(&model, &images, &image, None, 4, &dir)?;
/// assert_eq!(written.len(), 6);
/// assert!(written.iter().all(|p| p.is_file()));
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), tessera_vit::Error>(())
/// ```
#[cfg(feature = "image")]
pub fn save_figures(
    model: &VisionTransformer,
    images: &Tensor,
    image: &Tensor,
    class: Option<usize>,
    ig_steps: usize,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>> {
    use tessera_data::{Canvas, Chart, ColorBar, Series, Style};
    let bar = |low, name, high| ColorBar {
        map: viridis,
        low,
        name,
        high,
    };
    std::fs::create_dir_all(dir).map_err(|e| tessera_data::Error::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let c = *model.config();
    let g = c.grid();
    let mut written = Vec::new();
    let save = |name: &str, canvas: Canvas| -> Result<std::path::PathBuf> {
        let path = dir.join(name);
        canvas.save(&path)?;
        Ok(path)
    };
    let pos = position_similarity_image(model, (96 / g.max(1)).max(2))?;
    let note = format!("tile (row, column): that patch's cosine similarity with all {g}x{g}");
    let scale = bar("-1", "cosine similarity", "1");
    let title = "Position embedding similarity";
    written.push(save(
        "position_similarity.png",
        Canvas::framed(&pos, title, &note, Some(&scale))?,
    )?);
    let k = (c.in_chans * c.patch_size * c.patch_size).min(28);
    let filters = filter_components_image(model, k, 7, (64 / c.patch_size).max(4))?;
    let note = format!("the first {k}, row by row, each scaled to its own range");
    let title = "Principal components of the patch filters";
    written.push(save(
        "filter_components.png",
        Canvas::framed(&filters, title, &note, None)?,
    )?);
    let dist = mean_attention_distance(model, images)?;
    let chart = Chart {
        title: "mean attention distance".into(),
        x_label: "network depth (block)".into(),
        y_label: "distance (pixels)".into(),
        series: (0..c.num_heads)
            .map(|h| Series {
                name: format!("head {}", h + 1),
                points: dist
                    .iter()
                    .enumerate()
                    .map(|(l, d)| ((l + 1) as f64, f64::from(d[h])))
                    .collect(),
                style: Style::Points,
            })
            .collect(),
        ..Chart::default()
    };
    let path = dir.join("attention_distance.png");
    chart.save(&path)?;
    written.push(path);
    let map = attention_rollout(model, image)?;
    let note = "left: the input; right: the input weighted by the attention that flows to \
                the class token (dark: little)";
    let picture = rollout_image(image, &map)?;
    written.push(save(
        "attention_rollout.png",
        Canvas::framed(&picture, "Attention rollout", note, None)?,
    )?);
    let (map, predicted) = gradient_saliency(model, image, class)?;
    let note =
        format!("right: the largest |d logit / d pixel| over the channels, class {predicted}");
    let picture = attribution_image(image, &map)?;
    let scale = bar("0", "relative gradient", "1");
    written.push(save(
        "gradient_saliency.png",
        Canvas::framed(&picture, "Gradient saliency", &note, Some(&scale))?,
    )?);
    let ig = integrated_gradients(model, image, None, class, ig_steps)?;
    let note = format!(
        "right: |attribution| over the channels, class {}, {ig_steps} steps from black; \
         attributions off F(x) - F(black) = {:.3} by {:.1}%",
        ig.class,
        ig.logit - ig.baseline_logit,
        100.0 * ig.completeness_gap()
    );
    let picture = attribution_image(image, &ig.map()?)?;
    let scale = bar("0", "relative attribution", "1");
    written.push(save(
        "integrated_gradients.png",
        Canvas::framed(&picture, "Integrated gradients", &note, Some(&scale))?,
    )?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::symmetric_eigen;

    #[test]
    fn jacobi_gives_eigenpairs() {
        let n = 6;
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = ((i * 7 + j * 3) as f64).sin();
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (values, vectors) = symmetric_eigen(a.clone(), n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        for col in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|k| a[i * n + k] * vectors[k * n + col]).sum();
                assert!((av - values[col] * vectors[i * n + col]).abs() < 1e-9);
            }
            let norm: f64 = (0..n).map(|k| vectors[k * n + col].powi(2)).sum();
            assert!((norm - 1.0).abs() < 1e-9);
        }
    }
}
