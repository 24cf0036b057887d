//! Scaled dot-product and multi-head attention ("Attention Is All You Need", 3.2), shared
//! by the Transformer and the Vision Transformer.

use tessera_tensor::{Rng, Tensor};

use crate::kernels::packed_self_attention;
use crate::{Error, Init, Parameter, Result, Var, VarBuilder};

/// A mask on attention scores `[..., Tq, Tk]` (broadcast over batch and heads).
#[derive(Clone, Debug)]
pub enum AttnMask {
    /// 1 where a query may attend to a key, 0 where it may not (the score becomes -inf).
    Keep(Tensor),
    /// Added to the scores (0 or -inf, or any bias).
    Additive(Tensor),
}

impl AttnMask {
    /// The causal mask of a decoder: query `i` attends to keys `0..=i`.
    pub fn causal(t: usize) -> AttnMask {
        let keep: Vec<f32> = (0..t * t)
            .map(|p| ((p % t) <= (p / t)) as u8 as f32)
            .collect();
        AttnMask::Keep(Tensor::from_vec(keep, &[t, t]).expect("t x t elements"))
    }

    /// PyTorch's boolean mask: `true` where attention is **not** allowed (the score
    /// becomes -inf), `false` where it is, in row-major order of `shape`. Stored as the
    /// equivalent [`AttnMask::Keep`].
    ///
    /// ```
    /// use tessera_nn::AttnMask;
    /// // Two keys of three are padding (PyTorch's `key_padding_mask = [[F, T, T]]`).
    /// let mask = AttnMask::from_bool(&[false, true, true], &[1, 3])?;
    /// let AttnMask::Keep(keep) = &mask else { unreachable!() };
    /// assert_eq!(keep.to_vec(), [1.0, 0.0, 0.0]);
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn from_bool(mask: &[bool], shape: &[usize]) -> Result<AttnMask> {
        let keep = mask.iter().map(|&m| (!m) as u8 as f32).collect();
        Ok(AttnMask::Keep(Tensor::from_vec(keep, shape)?))
    }

    /// The shape of the mask's tensor.
    pub fn shape(&self) -> &[usize] {
        match self {
            AttnMask::Keep(t) | AttnMask::Additive(t) => t.shape(),
        }
    }

    /// The mask as an additive bias: itself, or 0 where a [`AttnMask::Keep`] keeps and
    /// -inf where it does not.
    pub(crate) fn additive(&self) -> Result<Tensor> {
        Ok(match self {
            AttnMask::Additive(bias) => bias.clone(),
            AttnMask::Keep(keep) => keep
                .zeros_like()
                .masked_fill(&keep.eq_scalar(0.0), f32::NEG_INFINITY)?,
        })
    }

    /// The one mask over scores `[B, H, L, S]` that PyTorch's `MultiheadAttention`
    /// builds from an `attn_mask` (`[L, S]`, or `[B·H, L, S]` as PyTorch's 3-D masks,
    /// or any shape that broadcasts to `[B, H, L, S]`) and a `key_padding_mask`
    /// (`[B, S]`). Two [`AttnMask::Keep`] masks combine as a product; otherwise both are
    /// turned into additive biases and added, as PyTorch does. Errors name the mask and
    /// the shape expected.
    ///
    /// ```
    /// use tessera_nn::AttnMask;
    /// let causal = AttnMask::causal(3);
    /// let padding = AttnMask::from_bool(&[false, false, true, false, false, false], &[2, 3])?;
    /// let mask = AttnMask::merge(Some(&causal), Some(&padding), [2, 4, 3, 3])?.unwrap();
    /// assert_eq!(mask.shape(), &[2, 1, 3, 3]);
    /// assert!(AttnMask::merge(Some(&causal), None, [2, 4, 3, 5]).is_err());
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn merge(
        attn_mask: Option<&AttnMask>,
        key_padding_mask: Option<&AttnMask>,
        [b, h, l, s]: [usize; 4],
    ) -> Result<Option<AttnMask>> {
        const OP: &str = "MultiHeadAttention";
        let attn = match attn_mask {
            None => None,
            Some(m) => {
                let shape = m.shape();
                let bad = || {
                    let expected = format!("attn_mask [{l}, {s}] or [{}, {l}, {s}]", b * h);
                    Error::shape(OP, expected, shape)
                };
                let target = match shape.len() {
                    2 if shape == [l, s] => None,
                    3 if shape == [b * h, l, s] => Some([b, h, l, s]),
                    4 if shape
                        .iter()
                        .zip([b, h, l, s])
                        .all(|(&d, want)| d == 1 || d == want) =>
                    {
                        None
                    }
                    _ => return Err(bad()),
                };
                Some(match target {
                    Some(t) => m.map(|x| x.reshape(&t))?,
                    None => m.clone(),
                })
            }
        };
        let padding = match key_padding_mask {
            None => None,
            Some(m) if m.shape() == [b, s] => Some(m.map(|x| x.reshape(&[b, 1, 1, s]))?),
            Some(m) => {
                let expected = format!("key_padding_mask [{b}, {s}]");
                return Err(Error::shape(OP, expected, m.shape()));
            }
        };
        Ok(match (attn, padding) {
            (None, m) | (m, None) => m,
            (Some(AttnMask::Keep(a)), Some(AttnMask::Keep(p))) => Some(AttnMask::Keep(a.mul(&p)?)),
            (Some(a), Some(p)) => Some(AttnMask::Additive(a.additive()?.add(&p.additive()?)?)),
        })
    }

    /// [`AttnMask::merge`] of `attn_mask`, or of the causal mask when `causal` and no
    /// mask is given, with the key padding: PyTorch's `is_causal` hint, which builds the
    /// mask it stands for.
    pub(crate) fn merge_causal(
        attn_mask: Option<&AttnMask>,
        causal: bool,
        key_padding_mask: Option<&AttnMask>,
        dims: [usize; 4],
    ) -> Result<Option<AttnMask>> {
        let built = (causal && attn_mask.is_none()).then(|| AttnMask::causal(dims[2]));
        AttnMask::merge(attn_mask.or(built.as_ref()), key_padding_mask, dims)
    }

    /// The same kind of mask over `f(tensor)`.
    fn map(&self, f: impl FnOnce(&Tensor) -> tessera_tensor::Result<Tensor>) -> Result<AttnMask> {
        Ok(match self {
            AttnMask::Keep(t) => AttnMask::Keep(f(t)?),
            AttnMask::Additive(t) => AttnMask::Additive(f(t)?),
        })
    }

    fn apply(&self, scores: &Var) -> Result<Var> {
        Ok(match self {
            AttnMask::Keep(keep) => scores.masked_fill(&keep.eq_scalar(0.0), f32::NEG_INFINITY)?,
            AttnMask::Additive(bias) => scores.add(&Var::constant(bias.clone()))?,
        })
    }
}

/// `softmax(Q Kᵀ / √d_k + mask) V`, with dropout on the probabilities (after the softmax,
/// as the paper). Returns the output and, when `return_probs`, the probabilities.
///
/// # Shapes
/// `q [..., Tq, d]`, `k [..., Tk, d]`, `v [..., Tk, dv]` -> `[..., Tq, dv]`; probabilities
/// `[..., Tq, Tk]`.
pub fn scaled_dot_product_attention(
    q: &Var,
    k: &Var,
    v: &Var,
    mask: Option<&AttnMask>,
    dropout: Option<(f32, &mut Rng)>,
    return_probs: bool,
) -> Result<(Var, Option<Tensor>)> {
    let d = *q
        .shape()
        .last()
        .ok_or_else(|| Error::shape("attention", "queries [..., Tq, d]", q.shape()))?;
    let scores = q
        .matmul(&k.transpose(-2, -1)?)?
        .mul_scalar(1.0 / (d as f32).sqrt()); // [.., Tq, Tk]
    let scores = match mask {
        Some(m) => m.apply(&scores)?,
        None => scores,
    };
    let probs = scores.softmax(-1)?;
    let kept = probs.value().clone();
    let probs = match dropout {
        Some((p, rng)) => probs.dropout(p, true, rng)?,
        None => probs,
    };
    Ok((probs.matmul(v)?, return_probs.then_some(kept)))
}

/// The arguments of PyTorch's `MultiheadAttention.forward` besides the inputs, for
/// [`MultiHeadAttention::forward_with`]. The default is PyTorch's: no masks,
/// `need_weights = true`, `average_attn_weights = true`, `is_causal = false`.
#[derive(Clone, Copy, Debug)]
pub struct AttnOptions<'a> {
    /// `[L, S]` or `[B·H, L, S]` (or a shape that broadcasts to `[B, H, L, S]`):
    /// boolean ([`AttnMask::from_bool`], true = not allowed) or additive.
    pub attn_mask: Option<&'a AttnMask>,
    /// `[B, S]`: boolean (true = the key is padding) or additive.
    pub key_padding_mask: Option<&'a AttnMask>,
    /// Return the attention weights.
    pub need_weights: bool,
    /// Return them averaged over the heads, `[B, L, S]`, rather than per head,
    /// `[B, H, L, S]`.
    pub average_attn_weights: bool,
    /// Query `i` attends to keys `0..=i`. With an `attn_mask`, that mask is used as
    /// given (PyTorch's hint); without one, the causal mask is built (where PyTorch
    /// requires the mask too).
    pub is_causal: bool,
}

impl Default for AttnOptions<'_> {
    fn default() -> Self {
        AttnOptions {
            attn_mask: None,
            key_padding_mask: None,
            need_weights: true,
            average_attn_weights: true,
            is_causal: false,
        }
    }
}

/// How a multi-head attention names its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttnNames {
    /// PyTorch's `nn.MultiheadAttention`: `in_proj_weight`, `in_proj_bias`,
    /// `out_proj.weight`, `out_proj.bias`.
    Torch,
    /// timm's ViT `Attention`: `qkv.weight`, `qkv.bias`, `proj.weight`, `proj.bias`.
    Timm,
}

impl AttnNames {
    /// The names of the packed input weight and bias and of the output weight and bias.
    fn names(self) -> [&'static str; 4] {
        match self {
            AttnNames::Torch => [
                "in_proj_weight",
                "in_proj_bias",
                "out_proj.weight",
                "out_proj.bias",
            ],
            AttnNames::Timm => ["qkv.weight", "qkv.bias", "proj.weight", "proj.bias"],
        }
    }
}

/// The query/key/value projection weights of a [`MultiHeadAttention`].
#[derive(Clone, Debug)]
pub enum QkvWeights {
    /// One `[3E, E]` matrix, rows in the order q, k, v (PyTorch's `in_proj_weight`,
    /// timm's `qkv.weight`).
    Packed(Parameter),
    /// Separate matrices `[H·d_k, E]`, `[H·d_k, kdim]`, `[H·d_v, vdim]` (PyTorch's
    /// `q_proj_weight`, `k_proj_weight`, `v_proj_weight`, used when keys or values have
    /// another width; `H·d_k = H·d_v = E` in PyTorch, other head widths as in the
    /// paper's Table 3 row (B)).
    Separate(Parameter, Parameter, Parameter),
}

/// Multi-head attention: query/key/value projections ([`QkvWeights`]) with one packed
/// bias (`[3E]`, or `[2H·d_k + H·d_v]`), heads of width `E/H` (or `d_k`, `d_v`), and an
/// output projection `[E, H·d_v]`.
///
/// # Shapes
/// `query [B, Tq, E]`, `key [B, Tk, kdim]`, `value [B, Tk, vdim]` -> `[B, Tq, E]`
/// (`kdim = vdim = E` for packed weights).
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    /// The q, k, v projection weights.
    pub qkv: QkvWeights,
    /// `[3E]` (`[2H·d_k + H·d_v]`).
    pub in_proj_bias: Parameter,
    /// `[E, E]` (`[E, H·d_v]`).
    pub out_proj_weight: Parameter,
    /// `[E]`.
    pub out_proj_bias: Parameter,
    /// Number of heads.
    pub heads: usize,
}

impl MultiHeadAttention {
    /// PyTorch's initialisation: Xavier-uniform input projection, zero biases, the output
    /// projection uniform in `±1/√E`.
    ///
    /// ```
    /// use tessera_nn::{AttnNames, MultiHeadAttention, Var, VarBuilder, VarMap};
    /// use tessera_tensor::{Rng, Tensor};
    /// let vars = VarMap::new();
    /// let vb = VarBuilder::from_rng(&vars, Rng::seed(0));
    /// let mha = MultiHeadAttention::new(&vb.pp("attn"), 8, 2, AttnNames::Timm)?;
    /// let x = Var::constant(Tensor::randn(&[3, 5, 8], 0.0, 1.0, &mut Rng::seed(1)));
    /// let (y, probs) = mha.forward_qkv(&x, &x, &x, None, None, true)?;
    /// assert_eq!(y.shape(), &[3, 5, 8]);
    /// // Each query's probabilities over the keys sum to 1.
    /// let p = probs.unwrap();
    /// assert!((p.to_vec()[..5].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    /// assert_eq!(vars.names(), ["attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"]);
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn new(vb: &VarBuilder, embed: usize, heads: usize, names: AttnNames) -> Result<Self> {
        let out = Init::default_bias(embed);
        let xavier = Init::XavierUniform { gain: 1.0 };
        MultiHeadAttention::with_init(vb, embed, heads, names, xavier, out)
    }

    /// Packed projections whose input weight is drawn by `qkv` and output weight by
    /// `out` (biases zero), named as `names` says.
    pub fn with_init(
        vb: &VarBuilder,
        embed: usize,
        heads: usize,
        names: AttnNames,
        qkv: Init,
        out: Init,
    ) -> Result<Self> {
        if heads == 0 || !embed.is_multiple_of(heads) {
            return Err(indivisible_heads(embed, heads));
        }
        let [w, b, ow, ob] = names.names();
        Ok(MultiHeadAttention {
            qkv: QkvWeights::Packed(vb.param(w, &[3 * embed, embed], qkv)?),
            in_proj_bias: vb.param(b, &[3 * embed], Init::Zeros)?,
            out_proj_weight: vb.param(ow, &[embed, embed], out)?,
            out_proj_bias: vb.param(ob, &[embed], Init::Zeros)?,
            heads,
        })
    }

    /// PyTorch's `nn.MultiheadAttention(embed, heads, kdim=kdim, vdim=vdim)`: separate
    /// Xavier-uniform projections, zero biases. Names follow PyTorch.
    pub fn with_kv_dims(
        vb: &VarBuilder,
        embed: usize,
        heads: usize,
        kdim: usize,
        vdim: usize,
    ) -> Result<Self> {
        if heads == 0 || !embed.is_multiple_of(heads) {
            return Err(indivisible_heads(embed, heads));
        }
        MultiHeadAttention::separate(vb, embed, heads, [embed, kdim, vdim], [embed, embed])
    }

    /// `H` heads of `d_k` query/key and `d_v` value features each, projecting from and
    /// back to `embed` features (the paper's Table 3 row (B) varies `d_k`). Separate
    /// Xavier-uniform projections (PyTorch's names `q_proj_weight`, ...), zero biases.
    pub fn with_head_dims(
        vb: &VarBuilder,
        embed: usize,
        heads: usize,
        d_k: usize,
        d_v: usize,
    ) -> Result<Self> {
        if heads == 0 || d_k == 0 || d_v == 0 {
            return Err(Error::setting(
                "MultiHeadAttention",
                "heads, d_k, d_v",
                format!("{heads}, {d_k}, {d_v}"),
                "all positive",
            ));
        }
        let widths = [embed; 3];
        MultiHeadAttention::separate(vb, embed, heads, widths, [heads * d_k, heads * d_v])
    }

    /// Separate projections from inputs of `[q, k, v]` widths to `[H·d_k, H·d_v]`
    /// features, PyTorch's names.
    fn separate(
        vb: &VarBuilder,
        embed: usize,
        heads: usize,
        [qdim, kdim, vdim]: [usize; 3],
        [qk, v]: [usize; 2],
    ) -> Result<Self> {
        let xavier = Init::XavierUniform { gain: 1.0 };
        Ok(MultiHeadAttention {
            qkv: QkvWeights::Separate(
                vb.param("q_proj_weight", &[qk, qdim], xavier.clone())?,
                vb.param("k_proj_weight", &[qk, kdim], xavier.clone())?,
                vb.param("v_proj_weight", &[v, vdim], xavier)?,
            ),
            in_proj_bias: vb.param("in_proj_bias", &[2 * qk + v], Init::Zeros)?,
            out_proj_weight: vb.param("out_proj.weight", &[embed, v], Init::default_bias(v))?,
            out_proj_bias: vb.param("out_proj.bias", &[embed], Init::Zeros)?,
            heads,
        })
    }

    /// Output features of the query/key and of the value projections (`H·d_k`, `H·d_v`).
    pub fn proj_dims(&self) -> (usize, usize) {
        match &self.qkv {
            QkvWeights::Packed(w) => {
                let e = w.value().shape()[0] / 3;
                (e, e)
            }
            QkvWeights::Separate(q, _, v) => (q.value().shape()[0], v.value().shape()[0]),
        }
    }

    /// The `[out, in]` weight that projects queries (0), keys (1) or values (2).
    fn weight(&self, part: usize) -> Result<Var> {
        Ok(match &self.qkv {
            QkvWeights::Packed(w) => {
                let e = w.value().shape()[0] / 3;
                w.var().narrow(0, part * e, e)?
            }
            QkvWeights::Separate(q, k, v) => [q, k, v][part].var(),
        })
    }

    /// Projects `x [B, T, in]` for `part` and splits heads: `[B, H, T, out/H]`.
    fn project(&self, x: &Var, part: usize) -> Result<Var> {
        let w = self.weight(part)?; // (out, in)
        let e = w.shape()[0];
        let offset = self.proj_dims().0 * part;
        let width = w.shape()[1];
        if x.shape().len() != 3 || x.shape()[2] != width {
            let what = ["query", "key", "value"][part];
            return Err(Error::shape(
                "MultiHeadAttention",
                format!("{what} [B, T, {width}]"),
                x.shape(),
            ));
        }
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let bias = self.in_proj_bias.var().narrow(0, offset, e)?; // (out)
        let y = bias.addmm(&x.reshape(&[b * t, width])?, &w.transpose(0, 1)?)?;
        Ok(y.reshape(&[b, t, self.heads, e / self.heads])?
            .permute(&[0, 2, 1, 3])?) // (B, H, T, hs)
    }

    /// Attention of `query` over `key`/`value`; returns the output and, on request, the
    /// per-head probabilities `[B, H, Tq, Tk]`.
    pub fn forward_qkv(
        &self,
        query: &Var,
        key: &Var,
        value: &Var,
        mask: Option<&AttnMask>,
        dropout: Option<(f32, &mut Rng)>,
        return_probs: bool,
    ) -> Result<(Var, Option<Tensor>)> {
        if let QkvWeights::Packed(w) = &self.qkv {
            let empty = query.shape().iter().take(2).any(|&d| d == 0);
            if dropout.is_none() && !empty && query.same(key) && key.same(value) {
                return self.self_attend(query, w, mask, return_probs);
            }
        }
        let (k, v) = self.project_kv(key, value)?;
        let q = self.project(query, 0)?;
        let (ctx, probs) = scaled_dot_product_attention(&q, &k, &v, mask, dropout, return_probs)?;
        Ok((self.merge_heads(&ctx)?, probs))
    }

    /// PyTorch's `MultiheadAttention.forward(query, key, value, key_padding_mask,
    /// need_weights, attn_mask, average_attn_weights, is_causal)` with `batch_first`:
    /// the masks merged as PyTorch merges them ([`AttnMask::merge`]), and the weights,
    /// when `need_weights`, averaged over the heads (`[B, L, S]`) or per head
    /// (`[B, H, L, S]`). The weights are those before dropout (PyTorch returns them
    /// after; the two agree in evaluation).
    ///
    /// ```
    /// use tessera_nn::{AttnMask, AttnNames, AttnOptions, MultiHeadAttention, Var, VarMap};
    /// use tessera_tensor::{Rng, Tensor};
    /// let (mha, _) = VarMap::build(&mut Rng::seed(0), |vb| MultiHeadAttention::new(vb, 8, 2, AttnNames::Torch))?;
    /// let x = Var::constant(Tensor::randn(&[1, 3, 8], 0.0, 1.0, &mut Rng::seed(1)));
    /// // The last key is padding: no query gives it weight.
    /// let padding = AttnMask::from_bool(&[false, false, true], &[1, 3])?;
    /// let options = AttnOptions { key_padding_mask: Some(&padding), ..AttnOptions::default() };
    /// let (y, weights) = mha.forward_with(&x, &x, &x, &options, None)?;
    /// let weights = weights.unwrap();
    /// assert_eq!((y.shape(), weights.shape()), (&[1, 3, 8][..], &[1, 3, 3][..]));
    /// assert!(weights.to_vec().iter().skip(2).step_by(3).all(|&w| w == 0.0));
    /// # Ok::<(), tessera_nn::Error>(())
    /// ```
    pub fn forward_with(
        &self,
        query: &Var,
        key: &Var,
        value: &Var,
        options: &AttnOptions,
        dropout: Option<(f32, &mut Rng)>,
    ) -> Result<(Var, Option<Tensor>)> {
        let (&[b, l, _], &[_, s, _]) = (query.shape(), key.shape()) else {
            let got = if query.shape().len() == 3 {
                key.shape()
            } else {
                query.shape()
            };
            return Err(Error::shape(
                "MultiHeadAttention",
                "query [B, L, E], key [B, S, kdim]",
                got,
            ));
        };
        let mask = AttnMask::merge_causal(
            options.attn_mask,
            options.is_causal,
            options.key_padding_mask,
            [b, self.heads, l, s],
        )?;
        let (y, probs) = self.forward_qkv(
            query,
            key,
            value,
            mask.as_ref(),
            dropout,
            options.need_weights,
        )?;
        let probs = match probs {
            Some(p) if options.average_attn_weights => Some(p.mean(&[1], false)?),
            p => p,
        };
        Ok((y, probs))
    }

    /// Self-attention without dropout: one product projects q, k and v together, and
    /// [`packed_self_attention`] attends within the packed result.
    fn self_attend(
        &self,
        x: &Var,
        w: &Parameter,
        mask: Option<&AttnMask>,
        return_probs: bool,
    ) -> Result<(Var, Option<Tensor>)> {
        let width = w.value().shape()[1];
        if x.shape().len() != 3 || x.shape()[2] != width {
            return Err(Error::shape(
                "MultiHeadAttention",
                format!("query [B, T, {width}]"),
                x.shape(),
            ));
        }
        let (b, t) = (x.shape()[0], x.shape()[1]);
        let qkv = self
            .in_proj_bias
            .var()
            .addmm(&x.reshape(&[b * t, width])?, &w.var().transpose(0, 1)?)?; // [B·T, 3E]
        let (ctx, probs) = packed_self_attention(&qkv, b, self.heads, mask, return_probs)?;
        Ok((self.project_out(&ctx, b, t)?, probs))
    }

    /// The output projection of the heads side by side, `[B·T, H·d_v]` -> `[B, T, E]`.
    fn project_out(&self, ctx: &Var, b: usize, t: usize) -> Result<Var> {
        let out = self
            .out_proj_bias
            .var()
            .addmm(ctx, &self.out_proj_weight.var().transpose(0, 1)?)?;
        let embed = self.out_proj_weight.value().shape()[0];
        Ok(out.reshape(&[b, t, embed])?)
    }

    /// The keys and values projected and split into heads, `[B, H, Tk, d_k]` and
    /// `[B, H, Tk, d_v]`: what a decoder caches (once for the encoder's memory, one step
    /// at a time for its own past).
    pub fn project_kv(&self, key: &Var, value: &Var) -> Result<(Var, Var)> {
        Ok((self.project(key, 1)?, self.project(value, 2)?))
    }

    /// Attention of `query` `[B, Tq, E]` over keys and values already projected by
    /// [`MultiHeadAttention::project_kv`] (possibly several calls concatenated along
    /// axis 2), as in evaluation: no dropout, no probabilities. This is the step of
    /// cached decoding.
    pub fn attend(&self, query: &Var, k: &Var, v: &Var, mask: Option<&AttnMask>) -> Result<Var> {
        let q = self.project(query, 0)?;
        let (ctx, _) = scaled_dot_product_attention(&q, k, v, mask, None, false)?;
        self.merge_heads(&ctx)
    }

    /// The heads of `ctx` `[B, H, Tq, d_v]` side by side and projected to `[B, Tq, E]`.
    fn merge_heads(&self, ctx: &Var) -> Result<Var> {
        let &[b, _, tq, _] = ctx.shape() else {
            return Err(Error::shape(
                "MultiHeadAttention",
                "context [B, H, T, d_v]",
                ctx.shape(),
            ));
        };
        let (_, e) = self.proj_dims();
        let ctx = ctx.permute(&[0, 2, 1, 3])?.reshape(&[b * tq, e])?; // (B·Tq, H·d_v)
        self.project_out(&ctx, b, tq)
    }
}

/// The error of a width that `heads` heads do not divide.
fn indivisible_heads(embed: usize, heads: usize) -> Error {
    Error::setting(
        "MultiHeadAttention",
        "heads",
        heads,
        format!("a positive divisor of the embedding size {embed}"),
    )
}
